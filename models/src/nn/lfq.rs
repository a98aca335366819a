//! Lookup-free quantisation of MAGVIT-v2 (spec §7): latents to codes and back.

use super::{bad, dtype_of, shape_of};
use mmada_ir::{BinaryOp, CompareOp, DType, Graph, NodeId, ReduceOp, Result, Shape};

/// LFQ quantisation (spec §7): per position of `z [B, C, h, w]`, bit c = z_c > 0, code =
/// Σ bit_c · 2^(C−1−c) (channel 0 most significant), raster order → i64 `[B, h·w]`.
pub fn lfq_codes(g: &mut Graph, z: NodeId) -> Result<NodeId> {
    let s = shape_of(g, z)?;
    if s.rank() != 4 || s.0[1] > 62 {
        return Err(bad(
            "lfq_codes",
            format!("needs [B, C ≤ 62, h, w], got {s}"),
        ));
    }
    let (b, c, h, w) = (s.0[0], s.0[1], s.0[2], s.0[3]);
    let dt = dtype_of(g, z)?;
    let zero = g.full(dt, 0.0, Shape::scalar())?;
    let bits = g.compare(CompareOp::Gt, z, zero)?;
    let bits = g.cast(bits, DType::I64)?;
    let pw: Vec<f64> = (0..c).map(|i| (1u64 << (c - 1 - i)) as f64).collect();
    let pw = g.constant_f64(DType::I64, [1, c, 1, 1], pw)?;
    let weighted = g.mul(bits, pw)?;
    let code = g.reduce(ReduceOp::Sum, weighted, &[1], false)?;
    g.reshape(code, [b, h * w])
}

/// LFQ decoding (spec §7): codes `[B, h·w]` → ±1 f32 `[B, C, h, w]`,
/// `q_c = 2·((k >> (C−1−c)) & 1) − 1`.
pub fn lfq_decode(g: &mut Graph, codes: NodeId, bits: usize, h: usize, w: usize) -> Result<NodeId> {
    let s = shape_of(g, codes)?;
    if s.rank() != 2 || s.0[1] != h * w {
        return Err(bad("lfq_decode", format!("codes {s} vs {h}x{w}")));
    }
    let b = s.0[0];
    let k = g.cast(codes, DType::I64)?;
    let k = g.reshape(k, [b, 1, h, w])?;
    let k = g.broadcast_to(k, [b, bits, h, w])?;
    let pw: Vec<f64> = (0..bits).map(|i| (1u64 << (bits - 1 - i)) as f64).collect();
    let pw = g.constant_f64(DType::I64, [1, bits, 1, 1], pw)?;
    let q = g.div(k, pw)?;
    let q = g.binary_scalar(BinaryOp::Rem, q, 2.0)?;
    let q = g.cast(q, DType::F32)?;
    let q = g.binary_scalar(BinaryOp::Mul, q, 2.0)?;
    g.binary_scalar(BinaryOp::Sub, q, 1.0)
}
