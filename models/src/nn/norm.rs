//! Normalisations: RMSNorm (the transformer, spec §1.2), LayerNorm (CLIP) and group norm
//! (MAGVIT-v2, spec §7).

use super::{bad, compute_dtype, dtype_of, shape_of};
use mmada_ir::{BinaryOp, Graph, NodeId, Result, UnaryOp};

/// RMSNorm over the last axis: `w ⊙ (x / sqrt(mean(x²) + eps))`, computed in f32 (or f64)
/// and cast back to x's dtype before the weight (spec §1.2).
pub fn rms_norm(g: &mut Graph, x: NodeId, w: NodeId, eps: f64) -> Result<NodeId> {
    let dt = dtype_of(g, x)?;
    let cd = compute_dtype(dt);
    let xf = g.cast(x, cd)?;
    let sq = g.mul(xf, xf)?;
    let ms = g.mean(sq, -1, true)?;
    let e = g.binary_scalar(BinaryOp::Add, ms, eps)?;
    let r = g.unary(UnaryOp::Rsqrt, e)?;
    let n = g.mul(xf, r)?;
    let n = g.cast(n, dt)?;
    let w = g.cast(w, dt)?;
    g.mul(n, w)
}

/// LayerNorm over the last axis with affine `w`, `b` (biased variance, as PyTorch):
/// `(x − mean) / sqrt(var + eps) · w + b`, computed in f32 (or f64) and cast back to x's dtype.
pub fn layer_norm(g: &mut Graph, x: NodeId, w: NodeId, b: NodeId, eps: f64) -> Result<NodeId> {
    let dt = dtype_of(g, x)?;
    let cd = compute_dtype(dt);
    let xf = g.cast(x, cd)?;
    let mean = g.mean(xf, -1, true)?;
    let d = g.sub(xf, mean)?;
    let d2 = g.mul(d, d)?;
    let var = g.mean(d2, -1, true)?;
    let ve = g.binary_scalar(BinaryOp::Add, var, eps)?;
    let r = g.unary(UnaryOp::Rsqrt, ve)?;
    let y = g.mul(d, r)?;
    let y = g.cast(y, dt)?;
    let w = g.cast(w, dt)?;
    let b = g.cast(b, dt)?;
    let y = g.mul(y, w)?;
    g.add2(y, b)
}

/// Group normalisation of `[N, C, H, W]` over `groups` channel groups with affine `gamma`,
/// `beta` of shape `[C]` (biased variance, as PyTorch).
pub fn group_norm(
    g: &mut Graph,
    x: NodeId,
    gamma: NodeId,
    beta: NodeId,
    groups: usize,
    eps: f64,
) -> Result<NodeId> {
    let s = shape_of(g, x)?;
    if s.rank() != 4 || groups == 0 || !s.0[1].is_multiple_of(groups) {
        return Err(bad("group_norm", format!("{s} with {groups} groups")));
    }
    let (n, c, h, w) = (s.0[0], s.0[1], s.0[2], s.0[3]);
    let xg = g.reshape(x, [n, groups, c / groups * h * w])?;
    let mean = g.mean(xg, -1, true)?;
    let d = g.sub(xg, mean)?;
    let d2 = g.mul(d, d)?;
    let var = g.mean(d2, -1, true)?;
    let ve = g.binary_scalar(BinaryOp::Add, var, eps)?;
    let r = g.unary(UnaryOp::Rsqrt, ve)?;
    let y = g.mul(d, r)?;
    let y = g.reshape(y, [n, c, h, w])?;
    let g4 = g.reshape(gamma, [1, c, 1, 1])?;
    let b4 = g.reshape(beta, [1, c, 1, 1])?;
    let y = g.mul(y, g4)?;
    g.add2(y, b4)
}
