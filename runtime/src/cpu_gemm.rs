//! Matrix products on the host: the `gemm` crate's single-threaded kernel (at the core's peak,
//! ≈ 110 GFLOP/s per core on the build machine) run on parts of the product spread over the
//! [`ThreadPool`]. The crate's `x86-v4` feature picks its AVX-512 kernels at run time on CPUs
//! that have them (AVX2 elsewhere): on the 2-core Intel Xeon of 2026-12-02 that made MAGVIT-v2's
//! convolutions 1.5× faster.
//!
//! Why not the crate's own threading: it goes through rayon, whose sleeping workers take tens
//! of microseconds to wake, and a 256-row product of the bench-tiny forward lasts 0.15–0.4 ms;
//! it reached 140–170 GFLOP/s there. Cutting the product into one part per thread and handing
//! the parts to the pool's spinning workers reaches 205–220 GFLOP/s on the same products.

use crate::thread_pool::ThreadPool;
use mmada_codegen::kernels::matmul::MatMulShape;

/// Products smaller than this many multiply-adds run on one thread.
const SPLIT_MIN_MACS: usize = 1 << 16;

/// How one batched product is cut into tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Split {
    /// Parts per product.
    parts: usize,
    /// The parts divide the rows (M) of C; otherwise its columns (N).
    rows: bool,
}

impl Split {
    /// `cut` is the matmul template's `host_split` knob: 0 the heuristic of [`Split::of`], 1
    /// one part per product (the batches still spread), 2 the rows of C, 3 its columns (cut
    /// whatever the size, up to one part per thread and batch).
    fn with_cut(s: &MatMulShape, threads: usize, cut: u32) -> Split {
        let (batch, m, n) = (s.batch as usize, s.m as usize, s.n as usize);
        let rows = match cut {
            1 => {
                return Split {
                    parts: 1,
                    rows: true,
                }
            }
            2 => true,
            3 => false,
            _ => return Split::of(s, threads),
        };
        let most = if rows { m.div_ceil(8) } else { n.div_ceil(16) };
        Split {
            parts: threads.div_ceil(batch.max(1)).min(most).max(1),
            rows,
        }
    }

    /// Batches are spread first; a product is cut only when there are fewer batches than
    /// threads, along its longer side (cutting M repeats the packing of B in every part,
    /// cutting N that of A). Square products with B stored transposed (weights `[n, k]`) are
    /// cut along N: each part then packs only its own rows of the weight matrix (256² with
    /// cold weights: 199 against 177 GFLOP/s on the build machine).
    fn of(s: &MatMulShape, threads: usize) -> Split {
        let (batch, m, k, n) = (s.batch as usize, s.m as usize, s.k as usize, s.n as usize);
        let rows = if s.b_trans { m > n } else { m >= n };
        if batch >= threads || m * n * k < SPLIT_MIN_MACS {
            return Split { parts: 1, rows };
        }
        let want = threads.div_ceil(batch);
        // Parts of at least one 16-wide (N) or 8-tall (M) register tile.
        let most = if rows { m.div_ceil(8) } else { n.div_ceil(16) };
        Split {
            parts: want.min(most).max(1),
            rows,
        }
    }

    /// The half-open range of rows (or columns) of part `p` out of `len`; part boundaries are
    /// multiples of 8 rows (16 columns).
    fn range(&self, p: usize, len: usize) -> (usize, usize) {
        let align = if self.rows { 8 } else { 16 };
        let at = |q: usize| {
            if q >= self.parts {
                len
            } else {
                (len * q / self.parts) / align * align
            }
        };
        (at(p), at(p + 1))
    }
}

/// Batched f32 product `C[b] = A[b] · B[b]` (A and B possibly stored transposed), on the pool,
/// cut by the heuristic.
///
/// # Safety
/// `a`, `b` and `c` must hold `batch·m·k`, `batch·k·n` and `batch·m·n` f32 values; `c` must not
/// overlap the others.
pub unsafe fn gemm_f32(s: &MatMulShape, a: *const f32, b: *const f32, c: *mut f32) {
    gemm_f32_cut(s, a, b, c, 0)
}

/// [`gemm_f32`] with the product cut as the matmul template's `host_split` says (0 the
/// heuristic, 1 one thread per product, 2 rows of C, 3 columns).
///
/// # Safety
/// As [`gemm_f32`].
pub unsafe fn gemm_f32_cut(s: &MatMulShape, a: *const f32, b: *const f32, c: *mut f32, cut: u32) {
    let (batch, m, k, n) = (s.batch as usize, s.m as usize, s.k as usize, s.n as usize);
    if m == 0 || n == 0 || batch == 0 {
        return;
    }
    if k == 0 {
        std::ptr::write_bytes(c, 0, batch * m * n);
        return;
    }
    // Element strides (column, row) of A (m×k) and B (k×n).
    let (a_cs, a_rs) = if s.a_trans {
        (m as isize, 1)
    } else {
        (1, k as isize)
    };
    let (b_cs, b_rs) = if s.b_trans {
        (k as isize, 1)
    } else {
        (1, n as isize)
    };
    let pool = ThreadPool::global();
    let split = Split::with_cut(s, pool.threads(), cut);
    let (pa, pb, pc) = (a as usize, b as usize, c as usize);
    let task = move |t: usize| {
        let (bi, part) = (t / split.parts, t % split.parts);
        let (a, b, c) = (
            (pa as *const f32).add(bi * m * k),
            (pb as *const f32).add(bi * k * n),
            (pc as *mut f32).add(bi * m * n),
        );
        let (rows, cols, a, b, c) = if split.rows {
            let (r0, r1) = split.range(part, m);
            (r1 - r0, n, a.offset(r0 as isize * a_rs), b, c.add(r0 * n))
        } else {
            let (c0, c1) = split.range(part, n);
            (m, c1 - c0, a, b.offset(c0 as isize * b_cs), c.add(c0))
        };
        if rows == 0 || cols == 0 {
            return;
        }
        // SAFETY: the part lies inside the caller's buffers (see the function's contract);
        // parts write disjoint rows or columns of C.
        unsafe {
            gemm::gemm(
                rows,
                cols,
                k,
                c,
                1,
                n as isize,
                false,
                a,
                a_cs,
                a_rs,
                b,
                b_cs,
                b_rs,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        };
    };
    if batch * split.parts == 1 {
        task(0);
    } else {
        pool.run(batch * split.parts, &task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(batch: u64, m: u64, k: u64, n: u64, a_trans: bool, b_trans: bool) -> MatMulShape {
        MatMulShape {
            batch,
            m,
            k,
            n,
            a_trans,
            b_trans,
        }
    }

    #[test]
    fn parts_cover_the_product_once() {
        for (m, n) in [(1usize, 1usize), (7, 300), (300, 7), (256, 704), (1000, 17)] {
            for (threads, cut) in [1, 2, 3, 8]
                .into_iter()
                .flat_map(|t| (0..4).map(move |c| (t, c)))
            {
                let s = shape(1, m as u64, 512, n as u64, false, false);
                let split = Split::with_cut(&s, threads, cut);
                let len = if split.rows { m } else { n };
                let mut covered = 0;
                for p in 0..split.parts {
                    let (lo, hi) = split.range(p, len);
                    assert_eq!(lo, covered, "{m}x{n} on {threads}: part {p}");
                    covered = hi;
                }
                assert_eq!(covered, len);
            }
        }
    }

    /// Every transposition and split against a naive f64 product, odd sizes.
    #[test]
    fn matches_a_naive_product() {
        let mut seed = 0x2545_f491u32;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed as f32 / u32::MAX as f32) * 2.0 - 1.0
        };
        for (batch, m, k, n) in [
            (1, 37, 53, 29),
            (1, 131, 67, 259),
            (3, 45, 33, 71),
            (1, 300, 5, 9),
        ] {
            for (at, bt) in [(false, false), (true, false), (false, true), (true, true)] {
                let s = shape(batch, m, k, n, at, bt);
                let (b_, m_, k_, n_) = (batch as usize, m as usize, k as usize, n as usize);
                let a: Vec<f32> = (0..b_ * m_ * k_).map(|_| rnd()).collect();
                let b: Vec<f32> = (0..b_ * k_ * n_).map(|_| rnd()).collect();
                let mut c = vec![f32::NAN; b_ * m_ * n_];
                let cut = (m + n + batch) as u32 % 4;
                unsafe { gemm_f32_cut(&s, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), cut) };
                for bi in 0..b_ {
                    for i in 0..m_ {
                        for j in 0..n_ {
                            let mut want = 0f64;
                            for l in 0..k_ {
                                let av = if at {
                                    a[bi * m_ * k_ + l * m_ + i]
                                } else {
                                    a[bi * m_ * k_ + i * k_ + l]
                                };
                                let bv = if bt {
                                    b[bi * k_ * n_ + j * k_ + l]
                                } else {
                                    b[bi * k_ * n_ + l * n_ + j]
                                };
                                want += av as f64 * bv as f64;
                            }
                            let got = c[bi * m_ * n_ + i * n_ + j] as f64;
                            assert!(
                                (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                                "{s:?} [{bi},{i},{j}]: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
