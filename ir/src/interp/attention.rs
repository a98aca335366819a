//! Reference semantics of [`crate::Op::Attention`]: the graph
//! [`crate::Graph::attention_unfused`] builds, interpreted on the operands. The fused op is
//! *defined* as that computation, so the interpreter gives the fused and the unfused form the
//! same values, rounding for rounding.

use crate::error::Result;
use crate::{AttentionPart, Graph, Tensor};
use indexmap::IndexMap;

/// Evaluates an attention node on its operands (q, k, v and, when `masked`, the key mask).
pub(super) fn attention(operands: &[&Tensor], scale: f64, masked: bool) -> Result<Tensor> {
    let mut g = Graph::new();
    let names = ["q", "k", "v", "key_mask"];
    let mut ids = Vec::with_capacity(operands.len());
    let mut inputs = IndexMap::new();
    for (t, name) in operands.iter().zip(names) {
        ids.push(g.input(name, t.dtype(), t.shape().clone())?);
        inputs.insert(name.to_string(), (*t).clone());
    }
    let mask = masked.then(|| ids[3]);
    let o = g.attention_unfused(ids[0], ids[1], ids[2], mask, scale)?;
    g.set_output("o", o)?;
    let mut out = super::interpret(&g, &inputs)?;
    out.shift_remove("o")
        .ok_or_else(|| super::eval_err("attention graph has no output".into()))
}

/// Evaluates an attention-backward piece on its operands (see [`crate::Op::AttentionGrad`]):
/// the graph [`crate::Graph::attention_grad_unfused`] builds.
pub(super) fn attention_grad(
    operands: &[&Tensor],
    scale: f64,
    masked: bool,
    part: AttentionPart,
) -> Result<Tensor> {
    let mut g = Graph::new();
    let names: &[&str] = if part == AttentionPart::Stats {
        &["q", "k", "key_mask"]
    } else {
        &["q", "k", "v", "d_o", "stats", "delta", "key_mask"]
    };
    let mut ids = Vec::with_capacity(operands.len());
    let mut inputs = IndexMap::new();
    for (t, name) in operands.iter().zip(names) {
        ids.push(g.input(name, t.dtype(), t.shape().clone())?);
        inputs.insert(name.to_string(), (*t).clone());
    }
    let plain = names.len() - 1;
    let mask = masked.then(|| ids[plain]);
    let y = g.attention_grad_unfused(part, &ids[..plain], mask, scale)?;
    g.set_output("y", y)?;
    let mut out = super::interpret(&g, &inputs)?;
    out.shift_remove("y")
        .ok_or_else(|| super::eval_err("attention backward graph has no output".into()))
}
