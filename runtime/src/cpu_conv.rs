//! Stride-1 convolutions on the host as `kh·kw` shifted matrix products, never writing the
//! `[C·kh·kw, OH·OW]` patch matrix.
//!
//! Per image the input is copied once into a zero-bordered plane `P [C, PH, PW]` (the padded
//! input). Output pixel `(oh, ow)` gets column `q = oh·PW + ow` of a wide result
//! `Y' [O, OH·PW]`, and tap `(i, j)` reads `P[c, oh + i, ow + j]`, which is element
//! `q + i·PW + j` of channel `c`'s flattened plane: for every tap the B operand is the plain
//! window of `P` that starts at `i·PW + j` (row stride `PH·PW`), and
//! `Y' = Σ_taps W[:, :, i, j] · window(i, j)`, each product accumulated into `Y'` by the `gemm`
//! crate. Only columns with `ow < OW` are outputs (the other `PW − OW` per row read across the
//! border and are dropped when `Y'` is compacted into `y`); the last output column's last tap
//! is the plane's last element, so no window reads past `P`.
//!
//! Against im2col + one product (MAGVIT-v2's 128-channel 256² layer, one thread): the same
//! product time (the crate packs B from the window as it would from the patch matrix) without
//! the 302 MB patch copy; the padded copy and the compaction move 1/9 of that each.
//!
//! The scratch (`P` and `Y'`) is kept per calling thread and grows to the largest layer.

use crate::thread_pool::ThreadPool;
use mmada_codegen::kernels::conv::ConvShape;
use std::cell::RefCell;

/// Convolutions smaller than this many multiply-adds run on one thread.
const SPLIT_MIN_MACS: u64 = 1 << 16;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `y = conv2d(x, w)` for `s` (stride 1, one group), f32, on the pool.
///
/// # Safety
/// `x`, `w` and `y` must hold `n·c·h·w`, `o·c·kh·kw` and `n·o·oh·ow` f32 values; `y` must not
/// overlap the others; `s` must be consistent (`oh + kh − 1 ≥ h + pt` and `ow + kw − 1 ≥ w + pl`,
/// as the program's validation checks).
pub unsafe fn conv_f32(s: &ConvShape, x: *const f32, w: *const f32, y: *mut f32) {
    let u = |v: u64| v as usize;
    let (n, c, h, wd, o) = (u(s.n), u(s.c), u(s.h), u(s.w), u(s.o));
    let (kh, kw, pt, pl, oh, ow) = (u(s.kh), u(s.kw), u(s.pt), u(s.pl), u(s.oh), u(s.ow));
    if n == 0 || o == 0 || oh == 0 || ow == 0 {
        return;
    }
    if c == 0 {
        std::ptr::write_bytes(y, 0, n * o * oh * ow);
        return;
    }
    let (ph, pw) = (oh + kh - 1, ow + kw - 1);
    let plane = ph * pw;
    let wide = oh * pw; // row stride of Y'
    let cols = (oh - 1) * pw + ow; // columns of Y' that hold an output
    let pool = ThreadPool::global();
    let macs = s.o * s.c * s.kh * s.kw * (cols as u64);
    let parts = if macs < SPLIT_MIN_MACS {
        1
    } else {
        pool.threads().min(cols.div_ceil(16)).max(1)
    };
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let need = c * plane + o * wide;
        if scratch.len() < need {
            scratch.resize(need, 0.0);
        }
        let (p_buf, y_buf) = scratch.split_at_mut(c * plane);
        let (pp, py) = (p_buf.as_mut_ptr() as usize, y_buf.as_mut_ptr() as usize);
        let pw_ = w as usize;
        for b in 0..n {
            let (xb, yb) = (
                x.add(b * c * h * wd) as usize,
                y.add(b * o * oh * ow) as usize,
            );
            // The zero-bordered plane, channels spread over the pool.
            pool.run(c, &|ci| {
                // SAFETY: channel `ci` of P and of x lie inside their buffers; tasks write
                // disjoint channels.
                unsafe {
                    let dst =
                        std::slice::from_raw_parts_mut((pp as *mut f32).add(ci * plane), plane);
                    let src =
                        std::slice::from_raw_parts((xb as *const f32).add(ci * h * wd), h * wd);
                    // Rows of padding, then each input row between its left and right padding.
                    dst[..pt * pw].fill(0.0);
                    dst[(pt + h) * pw..].fill(0.0);
                    for r in 0..h {
                        let row = &mut dst[(r + pt) * pw..(r + pt + 1) * pw];
                        row[..pl].fill(0.0);
                        row[pl..pl + wd].copy_from_slice(&src[r * wd..(r + 1) * wd]);
                        row[pl + wd..].fill(0.0);
                    }
                }
            });
            // The shifted products, columns of Y' cut into one part per thread.
            pool.run(parts, &|part| {
                let at = |q: usize| {
                    if q >= parts {
                        cols
                    } else {
                        (cols * q / parts) / 16 * 16
                    }
                };
                let (c0, c1) = (at(part), at(part + 1));
                if c0 == c1 {
                    return;
                }
                for tap in 0..kh * kw {
                    let (i, j) = (tap / kw, tap % kw);
                    // SAFETY: the window of columns c0..c1 starting at i·PW + j ends at most at
                    // the plane's last element (see the module docs); the part's columns of Y'
                    // are its own.
                    unsafe {
                        gemm::gemm(
                            o,
                            c1 - c0,
                            c,
                            (py as *mut f32).add(c0),
                            1,
                            wide as isize,
                            tap > 0,
                            (pw_ as *const f32).add(tap),
                            (kh * kw) as isize,
                            (c * kh * kw) as isize,
                            (pp as *const f32).add(i * pw + j + c0),
                            1,
                            plane as isize,
                            if tap > 0 { 1.0 } else { 0.0 },
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        )
                    };
                }
            });
            // Y' → y, dropping the columns past OW of each row.
            pool.run(o, &|oi| {
                // SAFETY: row `oi` of Y' and of this image's y lie inside their buffers; tasks
                // write disjoint rows.
                unsafe {
                    let src = (py as *const f32).add(oi * wide);
                    let dst = (yb as *mut f32).add(oi * oh * ow);
                    for r in 0..oh {
                        std::ptr::copy_nonoverlapping(src.add(r * pw), dst.add(r * ow), ow);
                    }
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct convolution in f64.
    fn naive(s: &ConvShape, x: &[f32], w: &[f32]) -> Vec<f64> {
        let u = |v: u64| v as usize;
        let (n, c, h, wd, o) = (u(s.n), u(s.c), u(s.h), u(s.w), u(s.o));
        let (kh, kw, pt, pl, oh, ow) = (u(s.kh), u(s.kw), u(s.pt), u(s.pl), u(s.oh), u(s.ow));
        let mut y = vec![0f64; n * o * oh * ow];
        for b in 0..n {
            for oc in 0..o {
                for r in 0..oh {
                    for q in 0..ow {
                        let mut acc = 0f64;
                        for ci in 0..c {
                            for i in 0..kh {
                                for j in 0..kw {
                                    let (ih, iw) = (
                                        (r + i) as isize - pt as isize,
                                        (q + j) as isize - pl as isize,
                                    );
                                    if ih < 0 || iw < 0 || ih as usize >= h || iw as usize >= wd {
                                        continue;
                                    }
                                    let xv = x[((b * c + ci) * h + ih as usize) * wd + iw as usize];
                                    acc += xv as f64 * w[((oc * c + ci) * kh + i) * kw + j] as f64;
                                }
                            }
                        }
                        y[((b * o + oc) * oh + r) * ow + q] = acc;
                    }
                }
            }
        }
        y
    }

    /// Odd sizes, asymmetric and zero padding, 1×k and k×1 kernels, a batch of two, small and
    /// split products, against the direct sum.
    #[test]
    fn matches_a_direct_convolution() {
        let mut seed = 0x9e37_79b9u32;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed as f32 / u32::MAX as f32) * 2.0 - 1.0
        };
        // (n, c, h, w, o, kh, kw, padding t/b/l/r)
        for (n, c, h, w, o, kh, kw, pad) in [
            (1, 3, 7, 9, 5, 3, 3, [1, 1, 1, 1]),
            (2, 5, 13, 11, 7, 3, 3, [0, 1, 0, 1]),
            (1, 4, 6, 5, 3, 1, 3, [0, 0, 1, 1]),
            (1, 2, 5, 8, 4, 3, 1, [2, 0, 0, 0]),
            (1, 17, 40, 37, 33, 3, 3, [1, 1, 1, 1]),
            (1, 6, 9, 9, 5, 5, 5, [2, 2, 2, 2]),
            (1, 3, 4, 4, 2, 3, 3, [0, 0, 0, 0]),
            (1, 3, 5, 6, 4, 1, 1, [1, 0, 0, 1]),
        ] {
            let geom = mmada_ir::ConvGeom {
                stride: [1, 1],
                padding: pad,
                groups: 1,
            };
            let xs = mmada_ir::Shape(vec![n, c, h, w]);
            let ws = mmada_ir::Shape(vec![o, c, kh, kw]);
            let s = ConvShape::of(&xs, &ws, &geom).unwrap();
            let x: Vec<f32> = (0..xs.numel()).map(|_| rnd()).collect();
            let wt: Vec<f32> = (0..ws.numel()).map(|_| rnd()).collect();
            let mut y = vec![f32::NAN; (s.n * s.o * s.oh * s.ow) as usize];
            unsafe { conv_f32(&s, x.as_ptr(), wt.as_ptr(), y.as_mut_ptr()) };
            let want = naive(&s, &x, &wt);
            for (i, (&g, &e)) in y.iter().zip(&want).enumerate() {
                assert!(
                    (g as f64 - e).abs() <= 1e-5 * (1.0 + e.abs()),
                    "{s:?} [{i}]: {g} vs {e}"
                );
            }
        }
    }
}
