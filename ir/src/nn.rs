//! Composite building blocks of MMaDA (transformer, MAGVIT-v2, losses, samplers, AdamW), built
//! from primitive ops only. Formulas follow `shared/spec/mmada.md`; section numbers are cited.
//!
//! Float blocks compute in the input's dtype when it is f32 or f64 and in f32 otherwise
//! (bf16/f16 inputs are widened, as the reference's fp32 RMSNorm and RoPE do).

use crate::error::{IrError, Result};
use crate::{
    BinaryOp, CompareOp, DType, Graph, Literal, NodeId, ReduceOp, RngDist, Shape, UnaryOp,
};

fn compute_dtype(d: DType) -> DType {
    if d == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

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

    /// RMSNorm over the last axis: `w ⊙ (x / sqrt(mean(x²) + eps))`, computed in f32 (or f64)
    /// and cast back to x's dtype before the weight (spec §1.2).
    pub fn rms_norm(&mut self, x: NodeId, w: NodeId, eps: f64) -> Result<NodeId> {
        let dt = self.dtype_of(x)?;
        let cd = compute_dtype(dt);
        let xf = self.cast(x, cd)?;
        let sq = self.mul(xf, xf)?;
        let ms = self.mean(sq, -1, true)?;
        let e = self.binary_scalar(BinaryOp::Add, ms, eps)?;
        let r = self.unary(UnaryOp::Rsqrt, e)?;
        let n = self.mul(xf, r)?;
        let n = self.cast(n, dt)?;
        let w = self.cast(w, dt)?;
        self.mul(n, w)
    }

    /// Rotary position embedding, rotate-half style (spec §1.2): x of shape `[..., T, hd]`,
    /// positions 0..T-1, `inv_freq[i] = θ^(-2i/hd)`, `a' = a cos − b sin`, `b' = b cos + a sin`
    /// for the halves a, b. Computed in f32 (or f64).
    pub fn rope(&mut self, x: NodeId, theta: f64) -> Result<NodeId> {
        let s = self.shape_of(x)?;
        let r = s.rank();
        if r < 2 || !s.0[r - 1].is_multiple_of(2) {
            return Err(bad(
                "rope",
                format!("needs [..., T, even head dim], got {s}"),
            ));
        }
        let (t, hd) = (s.0[r - 2], s.0[r - 1]);
        let dt = self.dtype_of(x)?;
        let cd = compute_dtype(dt);
        let xf = self.cast(x, cd)?;
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
        let inv = self.constant_f64(cd, [1, hd / 2], inv)?;
        let pos = self.iota(cd, [t, 1], 0)?;
        let ang = self.mul(pos, inv)?; // [t, hd/2]
        let ang = self.concat(&[ang, ang], -1)?; // [t, hd]
        let cos = self.unary(UnaryOp::Cos, ang)?;
        let sin = self.unary(UnaryOp::Sin, ang)?;
        let a = self.slice_axis(xf, -1, 0, hd / 2)?;
        let b = self.slice_axis(xf, -1, hd / 2, hd)?;
        let nb = self.unary(UnaryOp::Neg, b)?;
        let rot = self.concat(&[nb, a], -1)?;
        let xc = self.mul(xf, cos)?;
        let rs = self.mul(rot, sin)?;
        let y = self.add2(xc, rs)?;
        self.cast(y, dt)
    }

    /// Bidirectional scaled dot-product attention over `[B, H, T, hd]` tensors (no causal mask).
    /// With `key_mask` (bool `[B, S]`, true = attend), disallowed keys get the dtype's minimum
    /// added to their scores, as the reference's boolean attention bias does (spec §1.3).
    pub fn attention(
        &mut self,
        q: NodeId,
        k: NodeId,
        v: NodeId,
        key_mask: Option<NodeId>,
        scale: f64,
    ) -> Result<NodeId> {
        let kt = self.transpose(k)?;
        let scores = self.matmul(q, kt)?;
        let mut scores = self.binary_scalar(BinaryOp::Mul, scores, scale)?;
        if let Some(m) = key_mask {
            let ss = self.shape_of(scores)?; // [B, H, T, S]
            let ms = self.shape_of(m)?;
            if ms.rank() != 2 || ms.0[0] != ss.0[0] || ms.0[1] != ss.0[3] {
                return Err(bad(
                    "attention",
                    format!("key mask {ms} does not fit scores {ss}"),
                ));
            }
            let dt = self.dtype_of(scores)?;
            let min = if dt == DType::F64 {
                f64::MIN
            } else {
                f32::MIN as f64
            };
            let zero = self.full(dt, 0.0, Shape::scalar())?;
            let neg = self.full(dt, min, Shape::scalar())?;
            let m4 = self.reshape(m, [ms.0[0], 1, 1, ms.0[1]])?;
            let m4 = self.broadcast_to(m4, ss.clone())?;
            let bias = self.where_(m4, zero, neg)?;
            scores = self.add2(scores, bias)?;
        }
        let p = self.softmax(scores, -1)?;
        self.matmul(p, v)
    }

    /// The LLaDA/MMaDA MLP (spec §1.1): `ff_out(silu(ff_proj(x)) ⊙ up_proj(x))`, weights `[out, in]`.
    pub fn swiglu(
        &mut self,
        x: NodeId,
        ff_proj: NodeId,
        up_proj: NodeId,
        ff_out: NodeId,
    ) -> Result<NodeId> {
        let g = self.linear(x, ff_proj)?;
        let g = self.silu(g)?;
        let u = self.linear(x, up_proj)?;
        let h = self.mul(g, u)?;
        self.linear(h, ff_out)
    }

    /// Group normalisation of `[N, C, H, W]` over `groups` channel groups with affine `gamma`,
    /// `beta` of shape `[C]` (biased variance, as PyTorch).
    pub fn group_norm(
        &mut self,
        x: NodeId,
        gamma: NodeId,
        beta: NodeId,
        groups: usize,
        eps: f64,
    ) -> Result<NodeId> {
        let s = self.shape_of(x)?;
        if s.rank() != 4 || groups == 0 || !s.0[1].is_multiple_of(groups) {
            return Err(bad("group_norm", format!("{s} with {groups} groups")));
        }
        let (n, c, h, w) = (s.0[0], s.0[1], s.0[2], s.0[3]);
        let xg = self.reshape(x, [n, groups, c / groups * h * w])?;
        let mean = self.mean(xg, -1, true)?;
        let d = self.sub(xg, mean)?;
        let d2 = self.mul(d, d)?;
        let var = self.mean(d2, -1, true)?;
        let ve = self.binary_scalar(BinaryOp::Add, var, eps)?;
        let r = self.unary(UnaryOp::Rsqrt, ve)?;
        let y = self.mul(d, r)?;
        let y = self.reshape(y, [n, c, h, w])?;
        let g4 = self.reshape(gamma, [1, c, 1, 1])?;
        let b4 = self.reshape(beta, [1, c, 1, 1])?;
        let y = self.mul(y, g4)?;
        self.add2(y, b4)
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

    /// LFQ quantisation (spec §7): per position of `z [B, C, h, w]`, bit c = z_c > 0, code =
    /// Σ bit_c · 2^(C−1−c) (channel 0 most significant), raster order → i64 `[B, h·w]`.
    pub fn lfq_codes(&mut self, z: NodeId) -> Result<NodeId> {
        let s = self.shape_of(z)?;
        if s.rank() != 4 || s.0[1] > 62 {
            return Err(bad(
                "lfq_codes",
                format!("needs [B, C ≤ 62, h, w], got {s}"),
            ));
        }
        let (b, c, h, w) = (s.0[0], s.0[1], s.0[2], s.0[3]);
        let dt = self.dtype_of(z)?;
        let zero = self.full(dt, 0.0, Shape::scalar())?;
        let bits = self.compare(CompareOp::Gt, z, zero)?;
        let bits = self.cast(bits, DType::I64)?;
        let pw: Vec<f64> = (0..c).map(|i| (1u64 << (c - 1 - i)) as f64).collect();
        let pw = self.constant_f64(DType::I64, [1, c, 1, 1], pw)?;
        let weighted = self.mul(bits, pw)?;
        let code = self.reduce(ReduceOp::Sum, weighted, &[1], false)?;
        self.reshape(code, [b, h * w])
    }

    /// LFQ decoding (spec §7): codes `[B, h·w]` → ±1 f32 `[B, C, h, w]`,
    /// `q_c = 2·((k >> (C−1−c)) & 1) − 1`.
    pub fn lfq_decode(&mut self, codes: NodeId, bits: usize, h: usize, w: usize) -> Result<NodeId> {
        let s = self.shape_of(codes)?;
        if s.rank() != 2 || s.0[1] != h * w {
            return Err(bad("lfq_decode", format!("codes {s} vs {h}x{w}")));
        }
        let b = s.0[0];
        let k = self.cast(codes, DType::I64)?;
        let k = self.reshape(k, [b, 1, h, w])?;
        let k = self.broadcast_to(k, [b, bits, h, w])?;
        let pw: Vec<f64> = (0..bits).map(|i| (1u64 << (bits - 1 - i)) as f64).collect();
        let pw = self.constant_f64(DType::I64, [1, bits, 1, 1], pw)?;
        let q = self.div(k, pw)?;
        let q = self.binary_scalar(BinaryOp::Rem, q, 2.0)?;
        let q = self.cast(q, DType::F32)?;
        let q = self.binary_scalar(BinaryOp::Mul, q, 2.0)?;
        self.binary_scalar(BinaryOp::Sub, q, 1.0)
    }

    /// One AdamW update (decoupled weight decay, as `torch.optim.AdamW`):
    /// `p ← p − lr·wd·p`; `m ← β1 m + (1−β1) g`; `v ← β2 v + (1−β2) g²`;
    /// `p ← p − lr · (m / bc1) / (sqrt(v / bc2) + eps)`, where `lr`, `bc1 = 1 − β1^t` and
    /// `bc2 = 1 − β2^t` are f32 scalars fed per step. Returns (p, m, v).
    #[allow(clippy::too_many_arguments)]
    pub fn adamw(
        &mut self,
        p: NodeId,
        g: NodeId,
        m: NodeId,
        v: NodeId,
        lr: NodeId,
        bc1: NodeId,
        bc2: NodeId,
        betas: (f64, f64),
        eps: f64,
        weight_decay: f64,
    ) -> Result<(NodeId, NodeId, NodeId)> {
        let decay = self.binary_scalar(BinaryOp::Mul, lr, weight_decay)?;
        let pd = self.mul(p, decay)?;
        let p1 = self.sub(p, pd)?;
        let m_a = self.binary_scalar(BinaryOp::Mul, m, betas.0)?;
        let g_a = self.binary_scalar(BinaryOp::Mul, g, 1.0 - betas.0)?;
        let m_new = self.add2(m_a, g_a)?;
        let g2 = self.mul(g, g)?;
        let v_a = self.binary_scalar(BinaryOp::Mul, v, betas.1)?;
        let g2_a = self.binary_scalar(BinaryOp::Mul, g2, 1.0 - betas.1)?;
        let v_new = self.add2(v_a, g2_a)?;
        let mh = self.div(m_new, bc1)?;
        let vh = self.div(v_new, bc2)?;
        let den = self.unary(UnaryOp::Sqrt, vh)?;
        let den = self.binary_scalar(BinaryOp::Add, den, eps)?;
        let upd = self.div(mh, den)?;
        let upd = self.mul(upd, lr)?;
        let p_new = self.sub(p1, upd)?;
        Ok((p_new, m_new, v_new))
    }
}
