//! The backward of [`Op::Attention`] in FlashAttention-2's form: three [`Op::AttentionGrad`]
//! pieces that recompute the probabilities instead of keeping them, so neither the forward nor
//! the backward holds a `[B, H, T, S]` buffer.
//!
//! With scores `s = scale · q kᵀ + bias` (the forward's, in its dtype), the row statistics
//! `m = max s`, `l = Σ exp(s − m)` ([`AttentionPart::Stats`]), `p = exp(s − m) / l`, the output
//! gradient `dO` and `Δ = rowsum(dO ⊙ O)` (FlashAttention-2's preprocess, equal to
//! `rowsum(p ⊙ dO vᵀ)`):
//! - `dS = p ⊙ (dO vᵀ − Δ)`;
//! - `dQ = scale · dS k` ([`AttentionPart::Q`], per query row);
//! - `dK = scale · dSᵀ q`, `dV = pᵀ dO`, packed as `dK | dV` ([`AttentionPart::Kv`], per key
//!   row; grouped K/V heads sum over their query heads).
//!
//! The statistics are kept as `(m, l)` rather than one log-sum-exp so that a row whose keys are
//! all masked (every score the dtype's lowest value) keeps the forward's uniform `1/S`: `m + ln
//! l` would round back to `m` there. Everything after the scores is f32 (f64 for f64 operands,
//! [`stat_dtype`]); the gradients round to q's dtype. [`Graph::attention_grad_unfused`] writes each piece with primitive ops and is
//! its semantics (the interpreter evaluates it).

use crate::attention::bad;
use crate::error::Result;
use crate::{AttentionDims, AttentionPart, DType, Graph, NodeId, Op, Shape};

/// The dtype of the statistics and Δ for operands of `dt`: f32, or f64 for f64 operands.
pub fn stat_dtype(dt: DType) -> DType {
    if dt == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// The operand rule of [`Op::AttentionGrad`]: the result's dtype and shape.
pub fn check(
    operands: &[(DType, &Shape)],
    scale: f64,
    masked: bool,
    part: AttentionPart,
) -> std::result::Result<(DType, Shape), String> {
    if !scale.is_finite() {
        return Err(format!("scale must be finite, got {scale}"));
    }
    let (dq, sq) = operands[0];
    let (dk, sk) = operands[1];
    let (dims, rest) = if part == AttentionPart::Stats {
        // No values: the dims with k standing in for v.
        if !dq.is_float() || dk != dq {
            return Err(format!("q, k must share one float dtype, got {dq}, {dk}"));
        }
        (AttentionDims::of(sq, sk, sk)?, 2)
    } else {
        let (dv, sv) = operands[2];
        if !dq.is_float() || dk != dq || dv != dq {
            return Err(format!(
                "q, k, v must share one float dtype, got {dq}, {dk}, {dv}"
            ));
        }
        let dims = AttentionDims::of(sq, sk, sv)?;
        let (dd, sd) = operands[3];
        let want = [dims.b, dims.h, dims.t, dims.dv];
        if dd != dq || sd.0[..] != want {
            return Err(format!(
                "the output gradient must be {dq}{}, got {dd}{sd}",
                Shape(want.to_vec())
            ));
        }
        for (i, what, want) in [
            (4, "statistics", vec![dims.b, dims.h, dims.t, 2]),
            (5, "Δ", vec![dims.b, dims.h, dims.t]),
        ] {
            let (dt, s) = operands[i];
            if dt != stat_dtype(dq) || s.0 != want {
                return Err(format!(
                    "the {what} must be {}{}, got {dt}{s}",
                    stat_dtype(dq),
                    Shape(want)
                ));
            }
        }
        (dims, 6)
    };
    if dims.s == 0 {
        return Err("attention's backward needs at least one key".into());
    }
    if masked {
        let (dm, sm) = operands[rest];
        if dm != DType::Bool || sm.0[..] != [dims.b, dims.s] {
            return Err(format!(
                "the key mask must be bool [{}, {}], got {dm}{sm}",
                dims.b, dims.s
            ));
        }
    }
    let shape = match part {
        AttentionPart::Stats => vec![dims.b, dims.h, dims.t, 2],
        AttentionPart::Q => vec![dims.b, dims.h, dims.t, dims.d],
        AttentionPart::Kv => vec![dims.b, dims.hk, dims.s, dims.d + dims.dv],
    };
    let dtype = if part == AttentionPart::Stats {
        stat_dtype(dq)
    } else {
        dq
    };
    Ok((dtype, Shape(shape)))
}

impl Graph {
    /// An [`Op::AttentionGrad`] node: `operands` are q, k (Stats) or q, k, v, dO, stats, Δ
    /// (Q, Kv), then the key mask when there is one.
    pub fn attention_grad(
        &mut self,
        part: AttentionPart,
        operands: &[NodeId],
        key_mask: Option<NodeId>,
        scale: f64,
    ) -> Result<NodeId> {
        let op = Op::AttentionGrad {
            scale,
            masked: key_mask.is_some(),
            part,
        };
        let mut all = operands.to_vec();
        all.extend(key_mask);
        self.add(op, &all)
    }

    /// The [`Op::AttentionGrad`] piece `part` from primitive ops (its semantics); operands as
    /// for [`Graph::attention_grad`].
    pub fn attention_grad_unfused(
        &mut self,
        part: AttentionPart,
        operands: &[NodeId],
        key_mask: Option<NodeId>,
        scale: f64,
    ) -> Result<NodeId> {
        let (q, k) = (operands[0], operands[1]);
        let v = if part == AttentionPart::Stats {
            k
        } else {
            operands[2]
        };
        let dims = self.attention_dims(q, k, v)?;
        let dt = self.try_node(q)?.dtype;
        let f = stat_dtype(dt);
        let kx = self.expand_heads(k, &dims)?;
        let s = self.attention_scores(q, kx, key_mask, scale)?;
        let s = self.cast(s, f)?;
        if part == AttentionPart::Stats {
            let m = self.max(s, -1, true)?;
            let z = self.sub(s, m)?;
            let e = self.unary(crate::UnaryOp::Exp, z)?;
            let l = self.sum(e, -1, true)?;
            return self.concat(&[m, l], 3);
        }
        let (d_o, stats, delta) = (operands[3], operands[4], operands[5]);
        let m = self.slice_axis(stats, 3, 0, 1)?;
        let l = self.slice_axis(stats, 3, 1, 2)?;
        let z = self.sub(s, m)?;
        let e = self.unary(crate::UnaryOp::Exp, z)?;
        let p = self.div(e, l)?;
        let vx = self.expand_heads(v, &dims)?;
        let vx = self.cast(vx, f)?;
        let d_o = self.cast(d_o, f)?;
        let vt = self.transpose(vx)?;
        let dp = self.matmul(d_o, vt)?;
        let delta = self.reshape(delta, [dims.b, dims.h, dims.t, 1])?;
        let centred = self.sub(dp, delta)?;
        let ds = self.mul(p, centred)?;
        let ds = self.binary_scalar(crate::BinaryOp::Mul, ds, scale)?;
        let out = if part == AttentionPart::Q {
            let kf = self.cast(kx, f)?;
            self.matmul(ds, kf)?
        } else {
            let qf = self.cast(q, f)?;
            let dst = self.transpose(ds)?;
            let dk = self.matmul(dst, qf)?;
            let dk = self.sum_heads(dk, &dims)?;
            let pt = self.transpose(p)?;
            let dv = self.matmul(pt, d_o)?;
            let dv = self.sum_heads(dv, &dims)?;
            self.concat(&[dk, dv], 3)?
        };
        self.cast(out, dt)
    }

    /// The vector–Jacobian product of attention node `n` (operands q, k, v[, mask]) for
    /// operand `slot`, given the output gradient `gy`; `None` for the mask. The three slots
    /// build the same statistics, Δ and `dK | dV` nodes, which common-subexpression
    /// elimination merges.
    pub(crate) fn attention_vjp(
        &mut self,
        n: NodeId,
        gy: NodeId,
        slot: usize,
    ) -> Result<Option<NodeId>> {
        let Op::Attention { scale, masked } = self.try_node(n)?.op.clone() else {
            return Err(bad("attention_vjp on another op".into()));
        };
        if slot >= 3 {
            return Ok(None);
        }
        let ops = self.operands(n);
        let (q, k, v) = (ops[0], ops[1], ops[2]);
        let mask = masked.then(|| ops[3]);
        let dims = self.attention_dims(q, k, v)?;
        let operand = ops[slot];
        let (dt, shape) = {
            let node = self.try_node(operand)?;
            (node.dtype, node.shape.clone())
        };
        if dims.s == 0 || dims.t == 0 {
            // No keys: the output is 0 whatever the operands; no queries: nothing depends on k, v.
            return Ok(Some(self.full(dt, 0.0, shape)?));
        }
        let stats = self.attention_grad(AttentionPart::Stats, &[q, k], mask, scale)?;
        let f = stat_dtype(self.try_node(q)?.dtype);
        let gf = self.cast(gy, f)?;
        let of = self.cast(n, f)?;
        let go = self.mul(gf, of)?;
        let delta = self.sum(go, -1, false)?;
        let operands = [q, k, v, gy, stats, delta];
        if slot == 0 {
            return Ok(Some(self.attention_grad(
                AttentionPart::Q,
                &operands,
                mask,
                scale,
            )?));
        }
        let kv = self.attention_grad(AttentionPart::Kv, &operands, mask, scale)?;
        Ok(Some(if slot == 1 {
            self.slice_axis(kv, 3, 0, dims.d)?
        } else {
            self.slice_axis(kv, 3, dims.d, dims.d + dims.dv)?
        }))
    }
}
