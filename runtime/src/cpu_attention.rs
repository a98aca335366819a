//! Fused attention on the host, f32 ([`mmada_ir::Op::Attention`]): per (batch, head, block of
//! query rows), the block's scores `[rows, S]` are computed into a per-thread scratch by the
//! `gemm` crate, scaled, biased and turned into probabilities in place (one row at a time, in
//! cache), then multiplied by V into the output. The scratch is `QUERY_ROWS · S` f32 (64 KiB at
//! S = 256), so no `[B, H, T, S]` buffer exists and the scores never leave the cache.
//!
//! The arithmetic is the unfused graph's, in its order: `(q · kᵀ) · scale`, plus `f32::MIN` at
//! masked keys, `exp(x − max)` scaled by the reciprocal of the row's sum, then `p · v`; it
//! differs from the generated kernels only in the products' summation order and in `exp`
//! (the standard library's instead of our math library's), a few ulps.

use crate::thread_pool::ThreadPool;
use mmada_codegen::kernels::attention::AttentionShape;
use std::cell::RefCell;

/// Query rows per task.
const QUERY_ROWS: usize = 64;

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
    let blocks = t.div_ceil(QUERY_ROWS);
    let scale = a.scale();
    let (pq, pk, pv, po) = (q as usize, k as usize, v as usize, out as usize);
    let pm = mask.map(|m| m as usize);
    let task = move |task: usize| {
        let (bh, blk) = (task / blocks, task % blocks);
        let (bi, hi) = (bh / h, bh % h);
        let kv = bi * hk + hi / group;
        let r0 = blk * QUERY_ROWS;
        let rows = QUERY_ROWS.min(t - r0);
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

/// The row's scores in place: scaled, biased, `exp(x − max) · (1 / Σ)`.
fn probabilities(row: &mut [f32], scale: f32, mask: Option<&[u8]>) {
    for x in row.iter_mut() {
        *x *= scale;
    }
    if let Some(m) = mask {
        for (x, &allowed) in row.iter_mut().zip(m) {
            if allowed == 0 {
                *x += f32::MIN;
            }
        }
    }
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| {
        if m.is_nan() || x.is_nan() {
            f32::NAN
        } else {
            m.max(x)
        }
    });
    let mut sum = 0f32;
    for x in row.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    let inv = 1.0 / sum;
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// `c [m, n] = a [m, k] · b [k, n]`, operands given as (pointer, column stride, row stride),
/// c row-major; one thread (the caller's task).
///
/// # Safety
/// The operands must hold the elements their strides reach; `c` must hold `m·n` and not
/// overlap them.
unsafe fn product(
    m: usize,
    n: usize,
    k: usize,
    a: (*const f32, isize, isize),
    b: (*const f32, isize, isize),
    c: *mut f32,
) {
    gemm::gemm(
        m,
        n,
        k,
        c,
        1,
        n as isize,
        false,
        a.0,
        a.1,
        a.2,
        b.0,
        b.1,
        b.2,
        0.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}
