//! Attention's backward on the host, f32 ([`mmada_ir::Op::AttentionGrad`]): the three pieces
//! of FlashAttention-2's backward with the products on the `gemm` crate and the row passes in
//! cache, like the forward ([`crate::cpu_attention`]).
//!
//! - **Stats**, per (batch, head, block of query rows): scores `[rows, S]` into a per-thread
//!   scratch, scaled and biased, then each row's `(m, l)`.
//! - **dQ**, per (batch, head, block of query rows): `p = exp(s − m) / l` in the score
//!   scratch, `dp = dO vᵀ` in a second one, `ds = p (dp − Δ)` in place, `dq = scale · ds k`.
//! - **dK | dV**, per (batch, K/V head, block of keys), over the group's query heads and their
//!   row blocks: the same `p` and `ds` for the block's keys, `dv += pᵀ dO`, `dk += scale ·
//!   dsᵀ q`, written straight into the packed `[S, D + Dv]` rows. A task owns its keys' rows:
//!   no two tasks write the same output.
//!
//! Each scratch holds at most 2^16 scores (256 KiB), so no `[B, H, T, S]` buffer exists. The
//! arithmetic is the op's semantics in another summation order: `(q · kᵀ) · scale`, plus
//! `f32::MIN` at masked keys, the vectorising [`crate::cpu_attention::exp`].

use crate::cpu_attention::{exp, product_into, row_exp_sum, row_max, vectorised, Operand};
use crate::thread_pool::ThreadPool;
use mmada_codegen::kernels::attention::AttentionShape;
use mmada_ir::AttentionPart;
use std::cell::RefCell;

/// Score elements per scratch (256 KiB of f32).
const SCRATCH_SCORES: usize = 1 << 16;
/// The most keys per dK | dV task.
const KEYS_PER_TASK: usize = 512;

thread_local! {
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The buffers of one backward piece (`v`, `d_o`, `stats`, `delta` unused by Stats).
#[derive(Clone, Copy)]
pub struct GradBuffers {
    /// q `[B, H, T, D]`.
    pub q: *const f32,
    /// k `[B, Hk, S, D]`.
    pub k: *const f32,
    /// v `[B, Hk, S, Dv]`.
    pub v: *const f32,
    /// dO `[B, H, T, Dv]`.
    pub d_o: *const f32,
    /// `(m, l)` `[B, H, T, 2]`.
    pub stats: *const f32,
    /// Δ `[B, H, T]`.
    pub delta: *const f32,
    /// The key mask `[B, S]` (bytes), when the op has one.
    pub mask: Option<*const u8>,
    /// The result.
    pub out: *mut f32,
}

// SAFETY: the pointers are only read (and `out` written at disjoint rows per task) while the
// launch runs, under the contract of `attention_grad_f32`.
unsafe impl Send for GradBuffers {}
// SAFETY: as above.
unsafe impl Sync for GradBuffers {}

/// Computes piece `part` of attention's backward for `a` on the pool.
///
/// # Safety
/// Every buffer must hold what its doc says for `a` (f32, the mask `b·s` bytes), `out`
/// `b·h·t·2` (Stats), `b·h·t·d` (Q) or `b·hk·s·(d+dv)` (Kv) values and overlap nothing;
/// `h` must be a multiple of `hk` (the program's validation checks all of this).
pub unsafe fn attention_grad_f32(a: &AttentionShape, part: AttentionPart, bufs: GradBuffers) {
    let u = |x: u64| x as usize;
    let (b, h, hk, t, s) = (u(a.b), u(a.h), u(a.hk), u(a.t), u(a.s));
    if b == 0 || h == 0 || hk == 0 || t == 0 || s == 0 {
        return;
    }
    let threads = ThreadPool::global().threads();
    match part {
        AttentionPart::Stats | AttentionPart::Q => {
            // Rows per task: as many as a scratch holds, fewer when tasks would be too few.
            let mut per = (SCRATCH_SCORES / s).clamp(1, t);
            while per > 16 && b * h * t.div_ceil(per) < threads {
                per /= 2;
            }
            let blocks = t.div_ceil(per);
            let task = move |task: usize| {
                let (bh, blk) = (task / blocks, task % blocks);
                let r0 = blk * per;
                let rows = per.min(t - r0);
                // SAFETY: the caller's contract; tasks write disjoint rows.
                unsafe { query_rows(a, part, &bufs, bh, r0, rows) };
            };
            ThreadPool::global().run(b * h * blocks, &task);
        }
        AttentionPart::Kv => {
            let per = s.min(KEYS_PER_TASK);
            let blocks = s.div_ceil(per);
            let task = move |task: usize| {
                let (bk, blk) = (task / blocks, task % blocks);
                let k0 = blk * per;
                let keys = per.min(s - k0);
                // SAFETY: the caller's contract; tasks write disjoint key rows.
                unsafe { key_rows(a, &bufs, bk, k0, keys) };
            };
            ThreadPool::global().run(b * hk * blocks, &task);
        }
    }
}

/// Scales and biases a block of scores `[rows, n]` (keys `mask[0..n]` of the block) in place.
#[inline(always)]
fn bias_scores(sc: &mut [f32], n: usize, scale: f32, mask: Option<&[u8]>) {
    for row in sc.chunks_exact_mut(n) {
        match mask {
            Some(m) => {
                for (x, &allowed) in row.iter_mut().zip(m) {
                    let bias = if allowed == 0 { f32::MIN } else { 0.0 };
                    *x = *x * scale + bias;
                }
            }
            None => row.iter_mut().for_each(|x| *x *= scale),
        }
    }
}

/// `p = exp(s − m) · (1 / l)` per row of a biased score block `[rows, n]`, row `i`'s statistics at
/// `stats[2i]`, `stats[2i + 1]`.
#[inline(always)]
fn probabilities_from_stats(sc: &mut [f32], n: usize, stats: &[f32]) {
    for (row, st) in sc.chunks_exact_mut(n).zip(stats.chunks_exact(2)) {
        let (m, inv) = (st[0], 1.0 / st[1]);
        for x in row.iter_mut() {
            *x = exp(*x - m) * inv;
        }
    }
}

/// `ds = p (dp − Δ)` in `dp`, per row of `[rows, n]` blocks.
#[inline(always)]
fn score_grads(p: &[f32], dp: &mut [f32], n: usize, delta: &[f32]) {
    for ((pr, dr), &dl) in p.chunks_exact(n).zip(dp.chunks_exact_mut(n)).zip(delta) {
        for (x, &pv) in dr.iter_mut().zip(pr) {
            *x = pv * (*x - dl);
        }
    }
}

/// Stats or dQ for query rows `r0..r0 + rows` of (batch · H + head) `bh`.
///
/// # Safety
/// As [`attention_grad_f32`].
unsafe fn query_rows(
    a: &AttentionShape,
    part: AttentionPart,
    bufs: &GradBuffers,
    bh: usize,
    r0: usize,
    rows: usize,
) {
    let u = |x: u64| x as usize;
    let (h, hk, t, s, d, dv) = (u(a.h), u(a.hk), u(a.t), u(a.s), u(a.d), u(a.dv));
    let (bi, hi) = (bh / h, bh % h);
    let kvh = bi * hk + hi / (h / hk);
    let row = bh * t + r0;
    // SAFETY (all pointer arithmetic below): inside the buffers by the caller's contract.
    let q = unsafe { bufs.q.add(row * d) };
    let k = unsafe { bufs.k.add(kvh * s * d) };
    let mask = bufs
        .mask
        .map(|m| unsafe { std::slice::from_raw_parts(m.add(bi * s), s) });
    SCRATCH.with(|cell| {
        let mut cell = cell.borrow_mut();
        let (sc, dp) = &mut *cell;
        sc.resize(sc.len().max(rows * s), 0.0);
        let sc = &mut sc[..rows * s];
        // scores [rows, s] = q [rows, d] · kᵀ.
        unsafe {
            product_into(
                (rows, s, d),
                Operand::rows(q, d),
                Operand::transposed(k, d),
                (sc.as_mut_ptr(), s),
                None,
            )
        };
        vectorised(|| bias_scores(sc, s, a.scale(), mask));
        if part == AttentionPart::Stats {
            let out = unsafe { std::slice::from_raw_parts_mut(bufs.out.add(row * 2), rows * 2) };
            vectorised(|| {
                for (r, o) in sc.chunks_exact(s).zip(out.chunks_exact_mut(2)) {
                    let m = row_max(r);
                    let l = row_exp_sum(r, m);
                    o[0] = m;
                    o[1] = l;
                }
            });
            return;
        }
        let stats = unsafe { std::slice::from_raw_parts(bufs.stats.add(row * 2), rows * 2) };
        let delta = unsafe { std::slice::from_raw_parts(bufs.delta.add(row), rows) };
        vectorised(|| probabilities_from_stats(sc, s, stats));
        // dp [rows, s] = dO [rows, dv] · vᵀ; ds = p (dp − Δ).
        dp.resize(dp.len().max(rows * s), 0.0);
        let dp = &mut dp[..rows * s];
        let v = unsafe { bufs.v.add(kvh * s * dv) };
        let d_o = unsafe { bufs.d_o.add(row * dv) };
        unsafe {
            product_into(
                (rows, s, dv),
                Operand::rows(d_o, dv),
                Operand::transposed(v, dv),
                (dp.as_mut_ptr(), s),
                None,
            )
        };
        vectorised(|| score_grads(sc, dp, s, delta));
        // dq [rows, d] = scale · ds [rows, s] · k [s, d].
        unsafe {
            product_into(
                (rows, d, s),
                Operand::rows(dp.as_ptr(), s),
                Operand::rows(k, d),
                (bufs.out.add(row * d), d),
                Some((false, a.scale())),
            )
        };
    });
}

/// dK | dV for keys `k0..k0 + keys` of (batch · Hk + K/V head) `bk`.
///
/// # Safety
/// As [`attention_grad_f32`].
unsafe fn key_rows(a: &AttentionShape, bufs: &GradBuffers, bk: usize, k0: usize, keys: usize) {
    let u = |x: u64| x as usize;
    let (h, hk, t, s, d, dv) = (u(a.h), u(a.hk), u(a.t), u(a.s), u(a.d), u(a.dv));
    let group = h / hk;
    let (bi, kh) = (bk / hk, bk % hk);
    let w = d + dv;
    // SAFETY (all pointer arithmetic below): inside the buffers by the caller's contract.
    let k = unsafe { bufs.k.add((bk * s + k0) * d) };
    let v = unsafe { bufs.v.add((bk * s + k0) * dv) };
    let out = unsafe { bufs.out.add((bk * s + k0) * w) };
    let mask = bufs
        .mask
        .map(|m| unsafe { std::slice::from_raw_parts(m.add(bi * s + k0), keys) });
    let per = (SCRATCH_SCORES / keys).clamp(1, t);
    let mut first = true;
    SCRATCH.with(|cell| {
        let mut cell = cell.borrow_mut();
        let (sc, dp) = &mut *cell;
        sc.resize(sc.len().max(per * keys), 0.0);
        dp.resize(dp.len().max(per * keys), 0.0);
        for g in 0..group {
            let bh = bi * h + kh * group + g;
            for r0 in (0..t).step_by(per) {
                let rows = per.min(t - r0);
                let row = bh * t + r0;
                let (sc, dp) = (&mut sc[..rows * keys], &mut dp[..rows * keys]);
                let q = unsafe { bufs.q.add(row * d) };
                let d_o = unsafe { bufs.d_o.add(row * dv) };
                let stats =
                    unsafe { std::slice::from_raw_parts(bufs.stats.add(row * 2), rows * 2) };
                let delta = unsafe { std::slice::from_raw_parts(bufs.delta.add(row), rows) };
                unsafe {
                    product_into(
                        (rows, keys, d),
                        Operand::rows(q, d),
                        Operand::transposed(k, d),
                        (sc.as_mut_ptr(), keys),
                        None,
                    );
                    product_into(
                        (rows, keys, dv),
                        Operand::rows(d_o, dv),
                        Operand::transposed(v, dv),
                        (dp.as_mut_ptr(), keys),
                        None,
                    );
                }
                vectorised(|| {
                    bias_scores(sc, keys, a.scale(), mask);
                    probabilities_from_stats(sc, keys, stats);
                    score_grads(sc, dp, keys, delta);
                });
                // dv [keys, dv] += pᵀ [keys, rows] · dO [rows, dv];
                // dk [keys, d] += scale · dsᵀ [keys, rows] · q [rows, d].
                unsafe {
                    product_into(
                        (keys, dv, rows),
                        Operand::transposed(sc.as_ptr(), keys),
                        Operand::rows(d_o, dv),
                        (out.add(d), w),
                        Some((!first, 1.0)),
                    );
                    product_into(
                        (keys, d, rows),
                        Operand::transposed(dp.as_ptr(), keys),
                        Operand::rows(q, d),
                        (out, w),
                        Some((!first, a.scale())),
                    );
                }
                first = false;
            }
        }
    });
}
