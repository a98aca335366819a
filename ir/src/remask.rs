//! Builders of the confidence top-k remask of a text sampler step (spec §6.1): the fused
//! [`Op::Remask`] node, and the same computation from primitive ops
//! ([`Graph::remask_unfused`]), the form a sampler graph is written in and the
//! `fuse_remask` pass recognises. The unfused form materialises the `[B, L, V]` noisy logits
//! and probabilities; the fused op streams over V.

use crate::error::{IrError, Result};
use crate::{BinaryOp, CompareOp, DType, Graph, NodeId, Op, Remasking, RngDist, Shape};

/// The operands of a remask: the logits, the sequence and the step's scalars.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemaskArgs {
    /// f32 `[B, L, V]`.
    pub logits: NodeId,
    /// i64 `[B, L]`, the current sequence.
    pub x: NodeId,
    /// f32 scalar Gumbel temperature (0: plain argmax).
    pub temperature: NodeId,
    /// i64 scalar Philox seed.
    pub seed: NodeId,
    /// i64 scalar Philox offset.
    pub offset: NodeId,
    /// i64 scalar: positions at or after it are not committed.
    pub block_end: NodeId,
    /// i64 scalar: positions to commit per row (the most confident).
    pub k: NodeId,
    /// f32 scalar: candidates more confident than this are committed too (above 1: none).
    pub threshold: NodeId,
}

impl RemaskArgs {
    /// In operand order.
    pub fn operands(&self) -> [NodeId; 8] {
        [
            self.logits,
            self.x,
            self.temperature,
            self.seed,
            self.offset,
            self.block_end,
            self.k,
            self.threshold,
        ]
    }
}

impl Graph {
    /// The fused remask node (see [`Op::Remask`]).
    pub fn remask(
        &mut self,
        a: RemaskArgs,
        mask_id: i64,
        remasking: Remasking,
        stream: u32,
    ) -> Result<NodeId> {
        let op = Op::Remask {
            mask_id,
            remasking,
            stream,
        };
        self.add(op, &a.operands())
    }

    /// The remask from primitive ops, node for node the semantics of [`Op::Remask`]:
    /// `x̂ = argmax(ℓ + τ·G)`, confidence `softmax(ℓ)[x̂]` (or uniform), −∞ outside the
    /// candidates (masked, before `block_end`), a full descending order of the confidences per
    /// row, a scatter of `rank < k` onto the positions, `∨ confidence > threshold`, and the
    /// commit.
    pub fn remask_unfused(
        &mut self,
        a: RemaskArgs,
        mask_id: i64,
        remasking: Remasking,
        stream: u32,
    ) -> Result<NodeId> {
        let s = self.try_node(a.logits)?.shape.clone();
        if s.rank() != 3 || self.try_node(a.logits)?.dtype != DType::F32 {
            return Err(IrError::BadOperands {
                op: "remask".into(),
                msg: format!("logits must be f32 [B, L, V], got {s}"),
                operands: String::new(),
            });
        }
        let (b, l) = (s.0[0], s.0[1]);
        let bl = Shape(vec![b, l]);
        let g = self.rng(RngDist::Gumbel, stream, a.seed, a.offset, s.clone())?;
        let t = self.broadcast_to(a.temperature, s.clone())?;
        let tg = self.binary(BinaryOp::Mul, t, g)?;
        let noisy = self.binary(BinaryOp::Add, a.logits, tg)?;
        let am = self.topk(noisy, 1, 2)?;
        let conf = match remasking {
            Remasking::LowConfidence => {
                let p = self.softmax(a.logits, 2)?;
                let c = self.gather(p, am, 2)?;
                self.reshape(c, bl.clone())?
            }
            Remasking::Random => {
                self.rng(RngDist::Uniform, stream + 1, a.seed, a.offset, bl.clone())?
            }
        };
        let xhat = self.reshape(am, bl.clone())?;
        let mask = self.full(DType::I64, mask_id as f64, bl.clone())?;
        let is_mask = self.compare(CompareOp::Eq, a.x, mask)?;
        let pos = self.iota(DType::I64, bl.clone(), 1)?;
        let end = self.broadcast_to(a.block_end, bl.clone())?;
        let in_block = self.compare(CompareOp::Lt, pos, end)?;
        let cand = self.binary(BinaryOp::And, is_mask, in_block)?;
        let neg = self.full(DType::F32, f64::NEG_INFINITY, bl.clone())?;
        let conf = self.where_(cand, conf, neg)?;
        let order = self.topk(conf, l, 1)?;
        let rank = self.iota(DType::I64, bl.clone(), 1)?;
        let k = self.broadcast_to(a.k, bl.clone())?;
        let take = self.compare(CompareOp::Lt, rank, k)?;
        let take = self.cast(take, DType::F32)?;
        let zeros = self.full(DType::F32, 0.0, bl.clone())?;
        let chosen = self.scatter_add(zeros, order, take, 1)?;
        let half = self.full(DType::F32, 0.5, bl.clone())?;
        let chosen = self.compare(CompareOp::Gt, chosen, half)?;
        let thr = self.broadcast_to(a.threshold, bl.clone())?;
        let sure = self.compare(CompareOp::Gt, conf, thr)?;
        let chosen = self.binary(BinaryOp::Or, chosen, sure)?;
        let commit = self.binary(BinaryOp::And, chosen, cand)?;
        self.where_(commit, xhat, a.x)
    }
}
