//! Batched matrix product on tensor cores (template `matmul`, knob `mma = 1`, bf16 operands):
//! `mma.sync` m16n8k16 with bf16 inputs and f32 accumulation.
//!
//! A block of 4 warps computes a 64 × 64 tile of C; warp `w` owns the 32 × 32 quarter at
//! `(w / 2, w % 2)`, that is 2 × 4 products of 16 × 8 each, whose accumulators (32 f32 per
//! thread) live in a private buffer across the k-loop. Each step of the k-loop stages a
//! 64 × 32 tile of A and a 32 × 64 tile of B in shared memory as bf16 (zeros outside the
//! matrices, so any M, N, K works), then, per 16-wide slice of K, every thread loads its
//! fragment slots from the tiles at the positions the fragment layout gives and the warp issues
//! its eight products ([`BlockStmt::Mma`]). The epilogue writes each accumulator slot at its
//! layout position, rounded to the output dtype.
//!
//! The layout is a parameter ([`tensor_core_matmul_kernel_with`]) so that the tests can build
//! the kernel with a wrong one and watch the host emulation of the hardware reject it.

use super::fused::round_to;
use super::index::{add, mul};
use super::matmul::{a_index, b_index, MatMulShape};
use crate::kir::mma::{self, FragmentLayout, A_SLOTS, B_SLOTS, C_SLOTS};
use crate::kir::{Access, BlockStmt, BufRef, Expr, Kernel, KernelBuilder, Scope};
use mmada_ir::DType;

/// Rows of C per block.
pub const BLOCK_M: u64 = 64;
/// Columns of C per block.
pub const BLOCK_N: u64 = 64;
/// K per staged tile.
pub const BLOCK_K: u64 = 32;
/// Threads per block (4 warps).
pub const THREADS: u32 = 128;
/// Products per warp along M and N (a 32 × 32 warp tile).
const WARP_MI: u64 = 2;
const WARP_NI: u64 = 4;
/// Row strides of the shared tiles in elements: 8 bf16 of padding shift successive rows by
/// 16 bytes, so the fragment loads of a warp spread over the banks.
const A_STRIDE: u64 = BLOCK_K + 8;
const B_STRIDE: u64 = BLOCK_N + 8;

/// Whether the tensor-core kernel computes a product of `dtype` operands.
pub fn applies(dtype: DType) -> bool {
    dtype == DType::BF16
}

/// The tensor-core kernel under the hardware's fragment layout.
pub fn tensor_core_matmul_kernel(name: &str, s: MatMulShape) -> Kernel {
    tensor_core_matmul_kernel_with(name, s, &mma::PTX)
}

/// The tensor-core kernel loading and storing fragments by `layout`.
pub fn tensor_core_matmul_kernel_with(
    name: &str,
    s: MatMulShape,
    layout: &FragmentLayout,
) -> Kernel {
    let dtype = DType::BF16;
    let (tm, tn) = (s.m.div_ceil(BLOCK_M), s.n.div_ceil(BLOCK_N));
    let grid = (s.batch * tm * tn).max(1);
    let mut kb = KernelBuilder::new(name, grid, THREADS);
    let a = kb.param("a", dtype, s.batch * s.m * s.k, Access::Read);
    let b = kb.param("b", dtype, s.batch * s.k * s.n, Access::Read);
    let c = kb.param("c", dtype, s.batch * s.m * s.n, Access::Write);
    let a_tile = kb.shared("a_tile", DType::BF16, BLOCK_M * A_STRIDE);
    let b_tile = kb.shared("b_tile", DType::BF16, BLOCK_K * B_STRIDE);
    let products = WARP_MI * WARP_NI;
    let acc = kb.private("acc", DType::F32, products * C_SLOTS);
    let a_frag = kb.private("a_frag", DType::BF16, WARP_MI * A_SLOTS);
    let b_frag = kb.private("b_frag", DType::BF16, WARP_NI * B_SLOTS);

    // The block's tile and the warp's quarter, recomputed in each phase.
    struct At {
        batch: Expr,
        row0: Expr,
        col0: Expr,
        lane: Expr,
        warp_row: Expr,
        warp_col: Expr,
    }
    let at = |s_: &mut Scope| {
        let bid = Expr::BlockId;
        let batch = s_.let_(bid.clone() / Expr::idx(tm * tn));
        let t = s_.let_(bid % Expr::idx(tm * tn));
        let row0 = s_.let_(mul(t.clone() / Expr::idx(tn), Expr::idx(BLOCK_M)));
        let col0 = s_.let_(mul(t % Expr::idx(tn), Expr::idx(BLOCK_N)));
        let lane = s_.let_(Expr::LaneId);
        let warp = s_.let_(Expr::ThreadId / Expr::idx(32));
        let warp_row = s_.let_(mul(
            warp.clone() / Expr::idx(2),
            Expr::idx(WARP_MI * mma::M),
        ));
        let warp_col = s_.let_(mul(warp % Expr::idx(2), Expr::idx(WARP_NI * mma::N)));
        At {
            batch,
            row0,
            col0,
            lane,
            warp_row,
            warp_col,
        }
    };

    // `tile[dst] = ok ? value : 0`, loading only in bounds.
    let stage = |s_: &mut Scope, ok: Expr, tile: BufRef, dst: Expr, value: Expr| {
        s_.if_(
            ok,
            |s_| s_.store(tile, dst.clone(), value),
            |s_| s_.store(tile, dst.clone(), Expr::f32(0.0)),
        );
    };
    let mut body = vec![kb.phase(|s_| {
        for i in 0..products * C_SLOTS {
            s_.store(acc, Expr::idx(i), Expr::f32(0.0));
        }
    })];
    let k_tiles = s.k.div_ceil(BLOCK_K);
    let kloop = kb.block_for(Expr::idx(0), Expr::idx(k_tiles), Expr::idx(1), |kb, kt| {
        let k0 = mul(kt, Expr::idx(BLOCK_K));
        let mut steps = vec![
            // Stage the A (64 × 32) and B (32 × 64) tiles: 16 elements of each per thread,
            // consecutive threads on consecutive K (A) or N (B).
            kb.phase(|s_| {
                let p = at(s_);
                let k0 = s_.let_(k0.clone());
                for e in 0..(BLOCK_M * BLOCK_K) / THREADS as u64 {
                    let flat = s_.let_(add(Expr::ThreadId, Expr::idx(e * THREADS as u64)));
                    let (r, kk) = (flat.clone() / Expr::idx(BLOCK_K), flat % Expr::idx(BLOCK_K));
                    let (r, kk) = (s_.let_(r), s_.let_(kk));
                    let row = s_.let_(add(p.row0.clone(), r.clone()));
                    let ak = s_.let_(add(k0.clone(), kk.clone()));
                    let ok = row
                        .clone()
                        .lt(Expr::idx(s.m))
                        .and(ak.clone().lt(Expr::idx(s.k)));
                    let src = a_index(&s, p.batch.clone(), row, ak);
                    let dst = s_.let_(add(mul(r, Expr::idx(A_STRIDE)), kk));
                    stage(s_, ok, a_tile, dst, Expr::load(a, src));
                }
                for e in 0..(BLOCK_K * BLOCK_N) / THREADS as u64 {
                    let flat = s_.let_(add(Expr::ThreadId, Expr::idx(e * THREADS as u64)));
                    let (kk, cc) = (flat.clone() / Expr::idx(BLOCK_N), flat % Expr::idx(BLOCK_N));
                    let (kk, cc) = (s_.let_(kk), s_.let_(cc));
                    let col = s_.let_(add(p.col0.clone(), cc.clone()));
                    let bk = s_.let_(add(k0.clone(), kk.clone()));
                    let ok = bk
                        .clone()
                        .lt(Expr::idx(s.k))
                        .and(col.clone().lt(Expr::idx(s.n)));
                    let src = b_index(&s, p.batch.clone(), col, bk);
                    let dst = s_.let_(add(mul(kk, Expr::idx(B_STRIDE)), cc));
                    stage(s_, ok, b_tile, dst, Expr::load(b, src));
                }
            }),
            BlockStmt::Barrier,
        ];
        for ks in 0..BLOCK_K / mma::K {
            // Fragment slots from the tiles, at their layout positions.
            steps.push(kb.phase(|s_| {
                let p = at(s_);
                for mi in 0..WARP_MI {
                    let r0 = add(p.warp_row.clone(), Expr::idx(mi * mma::M));
                    for i in 0..layout.a.slots() {
                        let (r, c) = layout.a.at_expr(&p.lane, i);
                        let row = add(r0.clone(), r);
                        let col = add(c, Expr::idx(ks * mma::K));
                        let v = Expr::load(a_tile, add(mul(row, Expr::idx(A_STRIDE)), col));
                        s_.store(a_frag, Expr::idx(mi * A_SLOTS + i as u64), v);
                    }
                }
                for ni in 0..WARP_NI {
                    let c0 = add(p.warp_col.clone(), Expr::idx(ni * mma::N));
                    for i in 0..layout.b.slots() {
                        let (r, c) = layout.b.at_expr(&p.lane, i);
                        let row = add(r, Expr::idx(ks * mma::K));
                        let col = add(c0.clone(), c);
                        let v = Expr::load(b_tile, add(mul(row, Expr::idx(B_STRIDE)), col));
                        s_.store(b_frag, Expr::idx(ni * B_SLOTS + i as u64), v);
                    }
                }
            }));
            for mi in 0..WARP_MI {
                for ni in 0..WARP_NI {
                    steps.push(BlockStmt::Mma(mma::MmaOperands {
                        a: (a_frag, mi * A_SLOTS),
                        b: (b_frag, ni * B_SLOTS),
                        acc: (acc, (mi * WARP_NI + ni) * C_SLOTS),
                    }));
                }
            }
        }
        steps.push(BlockStmt::Barrier);
        steps
    });
    body.push(kloop);
    body.push(kb.phase(|s_| {
        let p = at(s_);
        for mi in 0..WARP_MI {
            for ni in 0..WARP_NI {
                for i in 0..layout.c.slots() {
                    let (r, cc) = layout.c.at_expr(&p.lane, i);
                    let row = s_.let_(add(
                        add(p.row0.clone(), p.warp_row.clone()),
                        add(Expr::idx(mi * mma::M), r),
                    ));
                    let col = s_.let_(add(
                        add(p.col0.clone(), p.warp_col.clone()),
                        add(Expr::idx(ni * mma::N), cc),
                    ));
                    let ok = row
                        .clone()
                        .lt(Expr::idx(s.m))
                        .and(col.clone().lt(Expr::idx(s.n)));
                    let dst = add(
                        mul(p.batch.clone(), Expr::idx(s.m * s.n)),
                        add(mul(row, Expr::idx(s.n)), col),
                    );
                    let slot = Expr::idx((mi * WARP_NI + ni) * C_SLOTS + i as u64);
                    s_.if_(
                        ok,
                        |s_| s_.store(c, dst, round_to(dtype, Expr::load(acc, slot))),
                        |_| {},
                    );
                }
            }
        }
    }));
    kb.finish(body)
}
