//! Bidirectional scaled dot-product attention ([`Op::Attention`]): the operand rule, the fused
//! node's builder, and the same computation from primitive ops ([`Graph::attention_unfused`],
//! which defines the op's semantics and is what the `fuse_attention` pass recognises). Its
//! backward is in [`crate::attention_grad`].

use crate::error::{IrError, Result};
use crate::{BinaryOp, DType, Graph, NodeId, Op, ReduceOp, Shape};

/// The shapes of an attention: batch, query heads, K/V heads, query rows, keys, head dims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionDims {
    /// Batch.
    pub b: usize,
    /// Query heads.
    pub h: usize,
    /// Key/value heads (divides `h`).
    pub hk: usize,
    /// Query rows.
    pub t: usize,
    /// Keys.
    pub s: usize,
    /// Query/key head dim.
    pub d: usize,
    /// Value head dim.
    pub dv: usize,
}

impl AttentionDims {
    /// The dims of q `[B, H, T, D]`, k `[B, Hk, S, D]`, v `[B, Hk, S, Dv]`.
    pub fn of(q: &Shape, k: &Shape, v: &Shape) -> std::result::Result<Self, String> {
        if q.rank() != 4 || k.rank() != 4 || v.rank() != 4 {
            return Err(format!(
                "q, k, v must be [B, H, T, D], [B, Hk, S, D], [B, Hk, S, Dv]; got {q}, {k}, {v}"
            ));
        }
        let (b, h, t, d) = (q.0[0], q.0[1], q.0[2], q.0[3]);
        let (hk, s) = (k.0[1], k.0[2]);
        if k.0[0] != b || v.0[0] != b || v.0[1] != hk || v.0[2] != s || k.0[3] != d {
            return Err(format!(
                "q {q}, k {k}, v {v}: batch, K/V heads, keys or head dim disagree"
            ));
        }
        if hk == 0 || !h.is_multiple_of(hk) {
            return Err(format!(
                "{h} query heads are not a multiple of {hk} K/V heads"
            ));
        }
        Ok(AttentionDims {
            b,
            h,
            hk,
            t,
            s,
            d,
            dv: v.0[3],
        })
    }

    /// Query heads per K/V head.
    pub fn group(&self) -> usize {
        self.h / self.hk
    }
}

/// The operand rule of [`Op::Attention`]: the result's dtype and shape.
pub fn check(
    operands: &[(DType, &Shape)],
    scale: f64,
    masked: bool,
) -> std::result::Result<(DType, Shape), String> {
    let (dq, sq) = operands[0];
    let (dk, sk) = operands[1];
    let (dv, sv) = operands[2];
    if !dq.is_float() || dk != dq || dv != dq {
        return Err(format!(
            "q, k, v must share one float dtype, got {dq}, {dk}, {dv}"
        ));
    }
    if !scale.is_finite() {
        return Err(format!("scale must be finite, got {scale}"));
    }
    let dims = AttentionDims::of(sq, sk, sv)?;
    if masked {
        let (dm, sm) = operands[3];
        if dm != DType::Bool || sm.0[..] != [dims.b, dims.s] {
            return Err(format!(
                "the key mask must be bool [{}, {}], got {dm}{sm}",
                dims.b, dims.s
            ));
        }
    }
    Ok((dq, Shape(vec![dims.b, dims.h, dims.t, dims.dv])))
}

pub(crate) fn bad(msg: String) -> IrError {
    IrError::BadOperands {
        op: "attention".into(),
        msg,
        operands: String::new(),
    }
}

impl Graph {
    /// The fused attention node (see [`Op::Attention`]).
    pub fn attention(
        &mut self,
        q: NodeId,
        k: NodeId,
        v: NodeId,
        key_mask: Option<NodeId>,
        scale: f64,
    ) -> Result<NodeId> {
        let op = Op::Attention {
            scale,
            masked: key_mask.is_some(),
        };
        let mut operands = vec![q, k, v];
        operands.extend(key_mask);
        self.add(op, &operands)
    }

    /// The dims of an attention over these operands.
    pub(crate) fn attention_dims(&self, q: NodeId, k: NodeId, v: NodeId) -> Result<AttentionDims> {
        let shape = |id| self.try_node(id).map(|n| n.shape.clone());
        AttentionDims::of(&shape(q)?, &shape(k)?, &shape(v)?).map_err(bad)
    }

    /// K or V `[B, Hk, S, X]` repeated to `[B, H, S, X]` (head `h` reads `h / group`).
    pub(crate) fn expand_heads(&mut self, x: NodeId, dims: &AttentionDims) -> Result<NodeId> {
        if dims.hk == dims.h {
            return Ok(x);
        }
        let s = self.try_node(x)?.shape.clone();
        let (b, hk, n, w) = (s.0[0], s.0[1], s.0[2], s.0[3]);
        let x = self.reshape(x, [b, hk, 1, n, w])?;
        let x = self.broadcast_to(x, [b, hk, dims.group(), n, w])?;
        self.reshape(x, [b, dims.h, n, w])
    }

    /// A gradient `[B, H, S, X]` of expanded K or V summed back to `[B, Hk, S, X]`.
    pub(crate) fn sum_heads(&mut self, gx: NodeId, dims: &AttentionDims) -> Result<NodeId> {
        if dims.hk == dims.h {
            return Ok(gx);
        }
        let s = self.try_node(gx)?.shape.clone();
        let (b, n, w) = (s.0[0], s.0[2], s.0[3]);
        let gx = self.reshape(gx, [b, dims.hk, dims.group(), n, w])?;
        self.reduce(ReduceOp::Sum, gx, &[2], false)
    }

    /// The attention probabilities `softmax(scale · q kᵀ + bias)` `[B, H, T, S]`, k expanded.
    fn attention_probs(
        &mut self,
        q: NodeId,
        kx: NodeId,
        key_mask: Option<NodeId>,
        scale: f64,
    ) -> Result<NodeId> {
        let scores = self.attention_scores(q, kx, key_mask, scale)?;
        self.softmax(scores, -1)
    }

    /// The attention scores `scale · q kᵀ + bias` `[B, H, T, S]` in q's dtype, k expanded.
    pub(crate) fn attention_scores(
        &mut self,
        q: NodeId,
        kx: NodeId,
        key_mask: Option<NodeId>,
        scale: f64,
    ) -> Result<NodeId> {
        let kt = self.transpose(kx)?;
        let scores = self.matmul(q, kt)?;
        let mut scores = self.binary_scalar(BinaryOp::Mul, scores, scale)?;
        if let Some(m) = key_mask {
            let ss = self.try_node(scores)?.shape.clone(); // [B, H, T, S]
            let dt = self.try_node(scores)?.dtype;
            let zero = self.full(dt, 0.0, Shape::scalar())?;
            let neg = self.full(dt, dt.lowest(), Shape::scalar())?;
            let m4 = self.reshape(m, [ss.0[0], 1, 1, ss.0[3]])?;
            let m4 = self.broadcast_to(m4, ss.clone())?;
            let bias = self.where_(m4, zero, neg)?;
            scores = self.add2(scores, bias)?;
        }
        Ok(scores)
    }

    /// Attention from primitive ops: `softmax(scale · q kᵀ + bias) · v`, with K/V heads
    /// repeated for grouped heads and the dtype's minimum added at masked keys. This is the
    /// definition of [`Op::Attention`]; the model's graphs were written this way before the
    /// fused op existed, and the `fuse_attention` pass turns this form into it.
    pub fn attention_unfused(
        &mut self,
        q: NodeId,
        k: NodeId,
        v: NodeId,
        key_mask: Option<NodeId>,
        scale: f64,
    ) -> Result<NodeId> {
        let dims = self.attention_dims(q, k, v)?;
        let kx = self.expand_heads(k, &dims)?;
        let vx = self.expand_heads(v, &dims)?;
        let p = self.attention_probs(q, kx, key_mask, scale)?;
        self.matmul(p, vx)
    }
}
