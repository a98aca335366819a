//! Composite ops that are not model code, built from primitive ops only: constants from
//! values, SiLU, linear layers, upsampling, log-softmax and cross-entropy, embeddings, masked
//! means, clipping, standard deviations, Gumbel noise and categorical sampling. The model's
//! blocks (norms, attention, LFQ, AdamW) live in `mmada-models` (`models/src/nn/`). Formulas
//! follow `shared/spec/mmada.md`; section numbers are cited.
//!
//! Float blocks compute in the input's dtype when it is f32 or f64 and in f32 otherwise
//! (bf16/f16 inputs are widened, as the reference's fp32 RMSNorm and RoPE do).

use crate::error::{IrError, Result};
use crate::{BinaryOp, DType, Graph, Literal, NodeId, ReduceOp, RngDist, Shape, UnaryOp};

fn bad(op: &str, msg: String) -> IrError {
    IrError::BadOperands {
        op: op.into(),
        msg,
        operands: String::new(),
    }
}

impl Graph {
    fn shape_of(&self, x: NodeId) -> Result<Shape> {
        Ok(self.try_node(x)?.shape.clone())
    }

    fn dtype_of(&self, x: NodeId) -> Result<DType> {
        Ok(self.try_node(x)?.dtype)
    }

    /// A constant tensor of `dtype` from f64 values.
    pub fn constant_f64(
        &mut self,
        dtype: DType,
        shape: impl Into<Shape>,
        v: Vec<f64>,
    ) -> Result<NodeId> {
        let lit = if dtype.is_float() {
            Literal::Float(v)
        } else if dtype == DType::Bool {
            Literal::Bool(v.iter().map(|&x| x != 0.0).collect())
        } else {
            Literal::Int(v.iter().map(|&x| x as i64).collect())
        };
        self.add_constant(dtype, shape, lit)
    }

    /// x · sigmoid(x) (SiLU / swish).
    pub fn silu(&mut self, x: NodeId) -> Result<NodeId> {
        let s = self.unary(UnaryOp::Sigmoid, x)?;
        self.mul(x, s)
    }

    /// `x @ wᵀ` for a weight stored `[out, in]` (PyTorch `Linear`), x of shape `[..., in]`.
    pub fn linear(&mut self, x: NodeId, w: NodeId) -> Result<NodeId> {
        let xs = self.shape_of(x)?;
        let ws = self.shape_of(w)?;
        if ws.rank() != 2 || xs.rank() == 0 || xs.0[xs.rank() - 1] != ws.0[1] {
            return Err(bad(
                "linear",
                format!("x {xs} does not fit weight {ws} ([out, in])"),
            ));
        }
        let rows = xs.numel() / ws.0[1];
        let x2 = self.reshape(x, [rows, ws.0[1]])?;
        let wt = self.transpose(w)?;
        let y = self.matmul(x2, wt)?;
        let mut out = xs.0.clone();
        let last = out.len() - 1;
        out[last] = ws.0[0];
        self.reshape(y, out)
    }

    /// Nearest-neighbour 2× upsampling of `[N, C, H, W]`.
    pub fn upsample_nearest2x(&mut self, x: NodeId) -> Result<NodeId> {
        let s = self.shape_of(x)?;
        if s.rank() != 4 {
            return Err(bad("upsample", format!("needs [N, C, H, W], got {s}")));
        }
        let (n, c, h, w) = (s.0[0], s.0[1], s.0[2], s.0[3]);
        let r = self.reshape(x, [n, c, h, 1, w, 1])?;
        let b = self.broadcast_to(r, [n, c, h, 2, w, 2])?;
        self.reshape(b, [n, c, 2 * h, 2 * w])
    }

    /// log-softmax along `axis`: `x − max − ln Σ exp(x − max)`. The max only keeps `exp` in
    /// range, so no gradient flows through it (as in PyTorch's log-softmax backward).
    pub fn log_softmax(&mut self, x: NodeId, axis: i64) -> Result<NodeId> {
        let m = self.max(x, axis, true)?;
        let m = self.unary(UnaryOp::StopGradient, m)?;
        let z = self.sub(x, m)?;
        let e = self.unary(UnaryOp::Exp, z)?;
        let s = self.sum(e, axis, true)?;
        let l = self.unary(UnaryOp::Log, s)?;
        self.sub(z, l)
    }

    /// Per-position cross-entropy `−log softmax(logits)[label]` for logits `[..., V]` and integer
    /// labels `[...]`; the result has the labels' shape.
    pub fn cross_entropy(&mut self, logits: NodeId, labels: NodeId) -> Result<NodeId> {
        let ls = self.shape_of(logits)?;
        let ys = self.shape_of(labels)?;
        if ls.rank() != ys.rank() + 1 || ls.0[..ys.rank()] != ys.0[..] {
            return Err(bad("cross_entropy", format!("logits {ls} vs labels {ys}")));
        }
        let lp = self.log_softmax(logits, -1)?;
        let mut is = ys.0.clone();
        is.push(1);
        let idx = self.reshape(labels, is)?;
        let picked = self.gather(lp, idx, -1)?;
        let picked = self.reshape(picked, ys.0.clone())?;
        self.unary(UnaryOp::Neg, picked)
    }

    /// Embedding lookup: `table[ids]` for a table `[V, D]` and integer ids of any shape → `[..., D]`.
    pub fn embedding(&mut self, table: NodeId, ids: NodeId) -> Result<NodeId> {
        let ts = self.shape_of(table)?;
        let is = self.shape_of(ids)?;
        if ts.rank() != 2 {
            return Err(bad("embedding", format!("table must be [V, D], got {ts}")));
        }
        let n = is.numel();
        let d = ts.0[1];
        let flat = self.reshape(ids, [n, 1])?;
        let idx = self.broadcast_to(flat, [n, d])?;
        let rows = self.gather(table, idx, 0)?;
        let mut out = is.0.clone();
        out.push(d);
        self.reshape(rows, out)
    }

    /// `Σ x·mask / Σ mask` over `axes` (mask bool or float of x's shape).
    pub fn masked_mean(&mut self, x: NodeId, mask: NodeId, axes: &[i64]) -> Result<NodeId> {
        let dt = self.dtype_of(x)?;
        let m = self.cast(mask, dt)?;
        let xm = self.mul(x, m)?;
        let num = self.reduce(ReduceOp::Sum, xm, axes, false)?;
        let den = self.reduce(ReduceOp::Sum, m, axes, false)?;
        self.div(num, den)
    }

    /// `min(max(x, lo), hi)`.
    pub fn clip(&mut self, x: NodeId, lo: f64, hi: f64) -> Result<NodeId> {
        let a = self.binary_scalar(BinaryOp::Max, x, lo)?;
        self.binary_scalar(BinaryOp::Min, a, hi)
    }

    /// Standard deviation along `axis` (`unbiased`: divide by n − 1, as `torch.std`).
    pub fn std(&mut self, x: NodeId, axis: i64, keep_dims: bool, unbiased: bool) -> Result<NodeId> {
        let s = self.shape_of(x)?;
        let a = s
            .axis(axis)
            .ok_or_else(|| bad("std", format!("axis {axis} of {s}")))?;
        let n = s.0[a] as f64;
        let m = self.mean(x, axis, true)?;
        let d = self.sub(x, m)?;
        let d2 = self.mul(d, d)?;
        let ss = self.sum(d2, axis, keep_dims)?;
        let denom = if unbiased { n - 1.0 } else { n };
        let var = self.binary_scalar(BinaryOp::Mul, ss, 1.0 / denom)?;
        self.unary(UnaryOp::Sqrt, var)
    }

    /// Gumbel noise of `shape` from (seed, offset).
    pub fn gumbel(
        &mut self,
        seed: NodeId,
        offset: NodeId,
        stream: u32,
        shape: impl Into<Shape>,
    ) -> Result<NodeId> {
        self.rng(RngDist::Gumbel, stream, seed, offset, shape)
    }

    /// One categorical sample per row of `logits [..., V]` by the Gumbel-max trick:
    /// `argmax(logits + Gumbel)`; returns i64 indices `[...]`.
    pub fn sample_categorical(
        &mut self,
        logits: NodeId,
        seed: NodeId,
        offset: NodeId,
        stream: u32,
    ) -> Result<NodeId> {
        let s = self.shape_of(logits)?;
        let l = self.cast(logits, DType::F32)?;
        let g = self.gumbel(seed, offset, stream, s.clone())?;
        let z = self.add2(l, g)?;
        let i = self.argmax(z, -1)?;
        self.reshape(i, s.0[..s.rank() - 1].to_vec())
    }
}
