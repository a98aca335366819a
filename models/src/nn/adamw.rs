//! The AdamW update (spec §8.2), as `torch.optim.AdamW`, with `grad` the gradient of `p`.

use mmada_ir::{BinaryOp, Graph, NodeId, Result, UnaryOp};

/// One AdamW update (decoupled weight decay, as `torch.optim.AdamW`):
/// `p ← p − lr·wd·p`; `m ← β1 m + (1−β1) g`; `v ← β2 v + (1−β2) g²`;
/// `p ← p − lr · (m / bc1) / (sqrt(v / bc2) + eps)`, where `lr`, `bc1 = 1 − β1^t` and
/// `bc2 = 1 − β2^t` are f32 scalars fed per step. Returns (p, m, v).
#[allow(clippy::too_many_arguments)]
pub fn adamw(
    g: &mut Graph,
    p: NodeId,
    grad: NodeId,
    m: NodeId,
    v: NodeId,
    lr: NodeId,
    bc1: NodeId,
    bc2: NodeId,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
) -> Result<(NodeId, NodeId, NodeId)> {
    let decay = g.binary_scalar(BinaryOp::Mul, lr, weight_decay)?;
    let pd = g.mul(p, decay)?;
    let p1 = g.sub(p, pd)?;
    let m_a = g.binary_scalar(BinaryOp::Mul, m, betas.0)?;
    let g_a = g.binary_scalar(BinaryOp::Mul, grad, 1.0 - betas.0)?;
    let m_new = g.add2(m_a, g_a)?;
    let g2 = g.mul(grad, grad)?;
    let v_a = g.binary_scalar(BinaryOp::Mul, v, betas.1)?;
    let g2_a = g.binary_scalar(BinaryOp::Mul, g2, 1.0 - betas.1)?;
    let v_new = g.add2(v_a, g2_a)?;
    let mh = g.div(m_new, bc1)?;
    let vh = g.div(v_new, bc2)?;
    let den = g.unary(UnaryOp::Sqrt, vh)?;
    let den = g.binary_scalar(BinaryOp::Add, den, eps)?;
    let upd = g.div(mh, den)?;
    let upd = g.mul(upd, lr)?;
    let p_new = g.sub(p1, upd)?;
    Ok((p_new, m_new, v_new))
}
