//! Fused attention on the host, f32 ([`mmada_ir::Op::Attention`]): per (batch, head, block of
//! query rows), the block's scores `[rows, S]` are computed into a per-thread scratch by the
//! `gemm` crate, scaled, biased and turned into probabilities in place (one row at a time, in
//! cache), then multiplied by V into the output. The scratch holds at most 2^16 scores (256 KiB), so no `[B, H, T, S]` buffer exists and the scores never leave the cache.
//!
//! The arithmetic is the unfused graph's, in its order: `(q · kᵀ) · scale`, plus `f32::MIN` at
//! masked keys, `exp(x − max)` (our math library's, as in the kernels) scaled by the
//! reciprocal of the row's sum, then `p · v`; it differs from the generated kernels only in
//! summation order. The row passes run on AVX-512 or AVX2 where the CPU has them (the gemm
//! crate picks its own kernels).

use crate::thread_pool::ThreadPool;
use mmada_codegen::kernels::attention::AttentionShape;
use std::cell::RefCell;

/// Score elements per task's scratch (256 KiB of f32: an L2-sized block of scores).
const SCRATCH_SCORES: usize = 1 << 16;
/// The fewest query rows per task (below this the products are too small for the gemm crate).
const MIN_ROWS: usize = 16;

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `out = attention(q, k, v[, mask])` for `a`, on the pool.
///
/// # Safety
/// `q`, `k`, `v` and `out` must hold `b·h·t·d`, `b·hk·s·d`, `b·hk·s·dv` and `b·h·t·dv` f32
/// values, `mask` (when `a.masked`) `b·s` bytes; `out` must not overlap the others; `h` must
/// be a multiple of `hk` (the program's validation checks all of this).
pub unsafe fn attention_f32(
    a: &AttentionShape,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    mask: Option<*const u8>,
    out: *mut f32,
) {
    let u = |x: u64| x as usize;
    let (b, h, hk, t, s, d, dv) = (u(a.b), u(a.h), u(a.hk), u(a.t), u(a.s), u(a.d), u(a.dv));
    if b == 0 || h == 0 || t == 0 || dv == 0 {
        return;
    }
    let group = h / hk.max(1);
    // Rows per task: as many as the scratch holds, fewer when there would be fewer tasks than
    // threads.
    let threads = ThreadPool::global().threads();
    let mut per = (SCRATCH_SCORES / s.max(1)).clamp(MIN_ROWS, t.max(MIN_ROWS));
    while per > MIN_ROWS && b * h * t.div_ceil(per) < threads {
        per /= 2;
    }
    let blocks = t.div_ceil(per);
    let scale = a.scale();
    let (pq, pk, pv, po) = (q as usize, k as usize, v as usize, out as usize);
    let pm = mask.map(|m| m as usize);
    let task = move |task: usize| {
        let (bh, blk) = (task / blocks, task % blocks);
        let (bi, hi) = (bh / h, bh % h);
        let kv = bi * hk + hi / group;
        let r0 = blk * per;
        let rows = per.min(t - r0);
        // SAFETY: every offset below lies inside the caller's buffers (see the contract);
        // tasks write disjoint rows of `out`.
        unsafe {
            let q = (pq as *const f32).add((bh * t + r0) * d);
            let k = (pk as *const f32).add(kv * s * d);
            let v = (pv as *const f32).add(kv * s * dv);
            let o = (po as *mut f32).add((bh * t + r0) * dv);
            if s == 0 {
                std::ptr::write_bytes(o, 0, rows * dv);
                return;
            }
            let mask = pm.map(|m| std::slice::from_raw_parts((m as *const u8).add(bi * s), s));
            SCORES.with(|cell| {
                let mut scratch = cell.borrow_mut();
                if scratch.len() < rows * s {
                    scratch.resize(rows * s, 0.0);
                }
                let sc = scratch.as_mut_ptr();
                // scores [rows, s] = q [rows, d] · kᵀ (k is [s, d] row-major).
                product(rows, s, d, (q, 1, d as isize), (k, d as isize, 1), sc);
                let scores = std::slice::from_raw_parts_mut(sc, rows * s);
                for row in scores.chunks_exact_mut(s) {
                    probabilities(row, scale, mask);
                }
                // out [rows, dv] = p [rows, s] · v [s, dv].
                product(rows, dv, s, (sc, 1, s as isize), (v, 1, dv as isize), o);
            });
        }
    };
    ThreadPool::global().run(b * h * blocks, &task);
}

/// Partial maxima and sums per row pass: as many as a 512-bit vector holds, so the loops
/// vectorise.
const LANES: usize = 16;

/// The row's scores in place: scaled, biased, `exp(x − max) · (1 / Σ)`, on the widest vector
/// unit this CPU has (AVX-512, AVX2 with FMA, or the baseline).
fn probabilities(row: &mut [f32], scale: f32, mask: Option<&[u8]>) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { probabilities_avx512(row, scale, mask) };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { probabilities_avx2(row, scale, mask) };
        }
    }
    probabilities_body(row, scale, mask)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn probabilities_avx512(row: &mut [f32], scale: f32, mask: Option<&[u8]>) {
    probabilities_body(row, scale, mask)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn probabilities_avx2(row: &mut [f32], scale: f32, mask: Option<&[u8]>) {
    probabilities_body(row, scale, mask)
}

/// [`probabilities`], written so that each loop vectorises: `LANES` partial maxima and sums,
/// a branch-free exponential ([`exp`]).
#[inline(always)]
fn probabilities_body(row: &mut [f32], scale: f32, mask: Option<&[u8]>) {
    match mask {
        Some(m) => {
            for (x, &allowed) in row.iter_mut().zip(m) {
                let bias = if allowed == 0 { f32::MIN } else { 0.0 };
                *x = *x * scale + bias;
            }
        }
        None => {
            for x in row.iter_mut() {
                *x *= scale;
            }
        }
    }
    let max = row_max(row);
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (s, x) in sums.iter_mut().zip(c.iter_mut()) {
            *x = exp(*x - max);
            *s += *x;
        }
    }
    for (s, x) in sums.iter_mut().zip(chunks.into_remainder()) {
        *x = mmada_ir::mathlib::exp(*x - max);
        *s += *x;
    }
    let inv = 1.0 / sums.iter().sum::<f32>();
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// The row's maximum (NaN when it holds a NaN), in `LANES` partial maxima so the loop
/// vectorises.
#[inline(always)]
pub(crate) fn row_max(row: &[f32]) -> f32 {
    let mut maxima = [f32::NEG_INFINITY; LANES];
    let mut nan = false;
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (m, &x) in maxima.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
            nan |= x.is_nan();
        }
    }
    for (m, &x) in maxima.iter_mut().zip(chunks.remainder()) {
        *m = if x > *m { x } else { *m };
        nan |= x.is_nan();
    }
    if nan {
        f32::NAN
    } else {
        maxima.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b))
    }
}

/// `Σ exp(x − max)` over the row, in `LANES` partial sums so the loop vectorises.
#[inline(always)]
pub(crate) fn row_exp_sum(row: &[f32], max: f32) -> f32 {
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (s, &x) in sums.iter_mut().zip(c) {
            *s += exp(x - max);
        }
    }
    for (s, &x) in sums.iter_mut().zip(chunks.remainder()) {
        *s += exp(x - max);
    }
    sums.iter().sum()
}

/// e^x for x ≤ 0 (a score minus its row's maximum; NaN passes through), in plain f32
/// arithmetic that vectorises on every x86 level: `x = k·ln 2 + r` with k rounded by the
/// 1.5·2^23 shift (no float-to-int conversion), e^r by its degree-7 Taylor polynomial on
/// |r| ≤ ln 2 / 2 (relative error below 2e-7), 2^k built in the exponent bits. Below −87.3
/// (where 2^k would be subnormal) the result is 0. Our kernels' math library
/// ([`mmada_ir::mathlib::exp`]) uses fma and a float-to-int conversion, which without FMA
/// hardware are library calls: 12× slower here on SSE2.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5 · 2^23
    let xc = if x < -87.3 { -87.3 } else { x };
    let kf = (xc * std::f32::consts::LOG2_E + SHIFT) - SHIFT;
    let r = xc - kf * mmada_ir::mathlib::LN2_HI - kf * mmada_ir::mathlib::LN2_LO;
    let c = &mmada_ir::mathlib::EXP_COEFFS;
    let mut p = c[7];
    for &ci in c[..7].iter().rev() {
        p = p * r + ci;
    }
    // k + 127 in the low bits of (k + 127 + SHIFT); k ∈ [−126, 0].
    let biased = (kf + (SHIFT + 127.0)).to_bits() & 0xff;
    let e = p * f32::from_bits(biased << 23);
    if x < -87.3 {
        0.0
    } else {
        e
    }
}

/// `f()` compiled for the widest vector unit this CPU has (AVX-512, AVX2 with FMA, or the
/// baseline): the closure and what it inlines take the wrapper's target features.
#[inline(always)]
pub(crate) fn vectorised<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { with_avx512(f) };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { with_avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// A matrix operand of a product: its pointer, column stride and row stride (elements).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Operand {
    ptr: *const f32,
    cs: isize,
    rs: isize,
}

impl Operand {
    /// A row-major matrix with `ld` elements per row.
    pub(crate) fn rows(ptr: *const f32, ld: usize) -> Operand {
        Operand {
            ptr,
            cs: 1,
            rs: ld as isize,
        }
    }

    /// The transpose of a row-major matrix with `ld` elements per row.
    pub(crate) fn transposed(ptr: *const f32, ld: usize) -> Operand {
        Operand {
            ptr,
            cs: ld as isize,
            rs: 1,
        }
    }
}

/// `c [m, n] = a [m, k] · b [k, n]` (`c` row-major with `ldc` elements per row); with
/// `accumulate = Some((read, beta))`, `c = (read ? c : 0) + beta · a b`. One thread (the
/// caller's task).
///
/// # Safety
/// The operands must hold the elements their strides reach; `c` must hold its rows and not
/// overlap them.
pub(crate) unsafe fn product_into(
    (m, n, k): (usize, usize, usize),
    a: Operand,
    b: Operand,
    (c, ldc): (*mut f32, usize),
    accumulate: Option<(bool, f32)>,
) {
    let (read, beta) = accumulate.unwrap_or((false, 1.0));
    gemm::gemm(
        m,
        n,
        k,
        c,
        1,
        ldc as isize,
        read,
        a.ptr,
        a.cs,
        a.rs,
        b.ptr,
        b.cs,
        b.rs,
        if read { 1.0 } else { 0.0 },
        beta,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

/// `c [m, n] = a [m, k] · b [k, n]`, operands given as (pointer, column stride, row stride),
/// c row-major; one thread (the caller's task).
///
/// # Safety
/// As [`product_into`].
unsafe fn product(
    m: usize,
    n: usize,
    k: usize,
    a: (*const f32, isize, isize),
    b: (*const f32, isize, isize),
    c: *mut f32,
) {
    let op = |(ptr, cs, rs)| Operand { ptr, cs, rs };
    // SAFETY: the caller's contract.
    unsafe { product_into((m, n, k), op(a), op(b), (c, n), None) }
}

#[cfg(test)]
mod tests {
    /// The vectorised exponential against f64 over [−100, 0] and at its edges.
    #[test]
    fn exp_is_accurate_on_the_softmax_range() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -100.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            let got = super::exp(x) as f64;
            if x >= -87.0 {
                worst = worst.max((got - want).abs() / want);
            } else {
                assert!(got <= 1e-37, "exp({x}) = {got}");
            }
        }
        assert!(worst < 3e-7, "relative error {worst:e}");
        assert_eq!(super::exp(0.0), 1.0);
        assert_eq!(super::exp(f32::MIN), 0.0);
        assert!(super::exp(f32::NAN).is_nan());
    }
}
