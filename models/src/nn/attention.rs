//! The transformer's attention and MLP: RoPE, bidirectional attention with a key mask, SwiGLU
//! (spec §1.1–1.3).

use super::{bad, compute_dtype, dtype_of, shape_of};
use mmada_ir::{DType, Graph, NodeId, Result, UnaryOp};

/// Rotary position embedding, rotate-half style (spec §1.2): x of shape `[..., T, hd]`,
/// positions 0..T-1, `inv_freq[i] = θ^(-2i/hd)`, `a' = a cos − b sin`, `b' = b cos + a sin`
/// for the halves a, b. Computed in f32 (or f64).
pub fn rope(g: &mut Graph, x: NodeId, theta: f64) -> Result<NodeId> {
    rope_from(g, x, theta, None)
}

/// [`rope`] for positions `start, start + 1, …` with `start` an i64 scalar node (a block of
/// a longer sequence, the cached sampler's form); the angles are computed exactly as for the
/// whole sequence (integer positions are exact in f32 below 2^24).
pub fn rope_from(g: &mut Graph, x: NodeId, theta: f64, start: Option<NodeId>) -> Result<NodeId> {
    let s = shape_of(g, x)?;
    let r = s.rank();
    if r < 2 || !s.0[r - 1].is_multiple_of(2) {
        return Err(bad(
            "rope",
            format!("needs [..., T, even head dim], got {s}"),
        ));
    }
    let (t, hd) = (s.0[r - 2], s.0[r - 1]);
    let dt = dtype_of(g, x)?;
    let cd = compute_dtype(dt);
    let xf = g.cast(x, cd)?;
    let inv: Vec<f64> = (0..hd / 2)
        .map(|i| {
            let v = 1.0 / theta.powf(2.0 * i as f64 / hd as f64);
            if cd == DType::F32 {
                v as f32 as f64
            } else {
                v
            }
        })
        .collect();
    let inv = g.constant_f64(cd, [1, hd / 2], inv)?;
    let mut pos = g.iota(cd, [t, 1], 0)?;
    if let Some(st) = start {
        let st = g.cast(st, cd)?;
        let st = g.broadcast_to(st, [t, 1])?;
        pos = g.add2(pos, st)?;
    }
    let ang = g.mul(pos, inv)?; // [t, hd/2]
    let ang = g.concat(&[ang, ang], -1)?; // [t, hd]
    let cos = g.unary(UnaryOp::Cos, ang)?;
    let sin = g.unary(UnaryOp::Sin, ang)?;
    let a = g.slice_axis(xf, -1, 0, hd / 2)?;
    let b = g.slice_axis(xf, -1, hd / 2, hd)?;
    let nb = g.unary(UnaryOp::Neg, b)?;
    let rot = g.concat(&[nb, a], -1)?;
    let xc = g.mul(xf, cos)?;
    let rs = g.mul(rot, sin)?;
    let y = g.add2(xc, rs)?;
    g.cast(y, dt)
}

/// Bidirectional scaled dot-product attention over `[B, H, T, hd]` tensors (no causal mask),
/// as one fused [`mmada_ir::Op::Attention`] node. With `key_mask` (bool `[B, S]`, true =
/// attend), disallowed keys get the dtype's lowest value added to their scores, as the reference's
/// boolean attention bias does (spec §1.3).
pub fn attention(
    g: &mut Graph,
    q: NodeId,
    k: NodeId,
    v: NodeId,
    key_mask: Option<NodeId>,
    scale: f64,
) -> Result<NodeId> {
    // The op's operand rule checks the shapes (and names the mask shape it expects).
    g.attention(q, k, v, key_mask, scale)
}

/// The LLaDA/MMaDA MLP (spec §1.1): `ff_out(silu(ff_proj(x)) ⊙ up_proj(x))`, weights `[out, in]`.
pub fn swiglu(
    g: &mut Graph,
    x: NodeId,
    ff_proj: NodeId,
    up_proj: NodeId,
    ff_out: NodeId,
) -> Result<NodeId> {
    let gate = g.linear(x, ff_proj)?;
    let gate = g.silu(gate)?;
    let up = g.linear(x, up_proj)?;
    let h = g.mul(gate, up)?;
    g.linear(h, ff_out)
}
