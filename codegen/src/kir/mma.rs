//! Tensor-core products: the warp-wide `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32`
//! ([`super::BlockStmt::Mma`]) and the fragment layouts that say which thread of the warp holds
//! which matrix element.
//!
//! Facts: PTX ISA §9.7.14.5.8 (`mma.m16n8k16`), restated in `../shared/spec/gpu-tensor-cores.md`
//! §2; MLIR's `NVGPU/Utils/MMAUtils.cpp` agrees. For lane `l` let `g = l / 4` and `t = l % 4`:
//!
//! | fragment | matrix | slots per thread | slot `i` of lane `(g, t)` |
//! |---|---|---|---|
//! | A | 16 × 16 (M × K) | 8 bf16 | row `g` (+ 8 for i ∈ {2, 3, 6, 7}), col `2t + (i & 1)` (+ 8 for i ≥ 4) |
//! | B | 16 × 8 (K × N) | 4 bf16 | row `2t + (i & 1)` (+ 8 for i ≥ 2), col `g` |
//! | C, D | 16 × 8 (M × N) | 4 f32 | row `g` (+ 8 for i ≥ 2), col `2t + (i & 1)` |
//!
//! `D = C + A·B`; the bf16 products are exact in f32 and the hardware's summation order is not
//! specified, so results are compared with a tolerance.
//!
//! On the GPU the statement is one `nvvm.mma.sync` (slot pairs `2r, 2r + 1` packed into 32-bit
//! register `r`, the lower slot in the low half). On the host it is *emulated* by
//! [`emulate`]: each thread scatters its slots to their matrix positions in shared memory by
//! the layout, then computes its accumulator slots as dot products, so a kernel that loads
//! its fragments in any other layout computes a wrong product on the host too.

use super::{BlockStmt, BufRef, Expr, Kernel, KernelBuilder};
use mmada_ir::DType;

/// Rows of A, C and D.
pub const M: u64 = 16;
/// Columns of B, C and D.
pub const N: u64 = 8;
/// The contraction length.
pub const K: u64 = 16;
/// Slots of an A fragment per thread.
pub const A_SLOTS: u64 = 8;
/// Slots of a B fragment per thread.
pub const B_SLOTS: u64 = 4;
/// Slots of a C/D fragment per thread.
pub const C_SLOTS: u64 = 4;

/// Where the slots of one fragment live: slot `i` of lane `l` (with `g = l / 4`, `t = l % 4`)
/// holds element `(row_g·g + row_t·t + offsets[i].0, col_g·g + col_t·t + offsets[i].1)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentMap {
    /// Row step per group `g`.
    pub row_g: u64,
    /// Row step per thread-in-group `t`.
    pub row_t: u64,
    /// Column step per group.
    pub col_g: u64,
    /// Column step per thread-in-group.
    pub col_t: u64,
    /// (row, column) offset of each slot.
    pub offsets: &'static [(u64, u64)],
}

impl FragmentMap {
    /// Slots per thread.
    pub fn slots(&self) -> usize {
        self.offsets.len()
    }

    /// The (row, column) of slot `i` of `lane`.
    pub fn at(&self, lane: u64, i: usize) -> (u64, u64) {
        let (g, t) = (lane / 4, lane % 4);
        let (r, c) = self.offsets[i];
        (
            self.row_g * g + self.row_t * t + r,
            self.col_g * g + self.col_t * t + c,
        )
    }

    /// The (row, column) of slot `i` of the lane `lane` (an index expression).
    pub fn at_expr(&self, lane: &Expr, i: usize) -> (Expr, Expr) {
        let g = lane.clone() / Expr::idx(4);
        let t = lane.clone() % Expr::idx(4);
        let (r, c) = self.offsets[i];
        let lin = |sg: u64, st: u64, off: u64| {
            let mut e = Expr::idx(off);
            if sg != 0 {
                e = e + g.clone() * Expr::idx(sg);
            }
            if st != 0 {
                e = e + t.clone() * Expr::idx(st);
            }
            e
        };
        (
            lin(self.row_g, self.row_t, r),
            lin(self.col_g, self.col_t, c),
        )
    }
}

/// The three fragment maps of one product shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentLayout {
    /// A, M × K.
    pub a: FragmentMap,
    /// B, K × N.
    pub b: FragmentMap,
    /// C and D, M × N.
    pub c: FragmentMap,
}

/// The hardware's layout of `mma.sync.m16n8k16` with 16-bit inputs (the table above).
pub const PTX: FragmentLayout = FragmentLayout {
    a: FragmentMap {
        row_g: 1,
        row_t: 0,
        col_g: 0,
        col_t: 2,
        offsets: &[
            (0, 0),
            (0, 1),
            (8, 0),
            (8, 1),
            (0, 8),
            (0, 9),
            (8, 8),
            (8, 9),
        ],
    },
    b: FragmentMap {
        row_g: 0,
        row_t: 2,
        col_g: 1,
        col_t: 0,
        offsets: &[(0, 0), (1, 0), (8, 0), (9, 0)],
    },
    c: FragmentMap {
        row_g: 1,
        row_t: 0,
        col_g: 0,
        col_t: 2,
        offsets: &[(0, 0), (0, 1), (8, 0), (8, 1)],
    },
};

/// One warp-wide product's operands: private buffers and the first slot of each fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MmaOperands {
    /// A fragment: [`A_SLOTS`] bf16 slots of a private bf16 buffer.
    pub a: (BufRef, u64),
    /// B fragment: [`B_SLOTS`] bf16 slots of a private bf16 buffer.
    pub b: (BufRef, u64),
    /// The accumulator: [`C_SLOTS`] slots of a private f32 buffer, read as C, written as D.
    pub acc: (BufRef, u64),
}

/// `k` with every [`BlockStmt::Mma`] replaced by its host emulation under `layout` (the
/// hardware's is [`PTX`]; the tests pass others to watch kernels fail). Each product becomes
/// two phases over a per-warp scratch of the dense A (16 × 16) and B (16 × 8) tiles in shared
/// f32 memory (bf16 values are exact in f32): every thread stores its A and B slots at their
/// positions, then computes its D slots as `C + Σ_k A·B` in k order. Barriers separate the
/// phases and the next product. Returns whether the kernel had a product.
pub fn emulate(k: &mut Kernel, layout: &FragmentLayout) -> bool {
    if !contains_mma(&k.body) {
        return false;
    }
    let warps = (k.block as u64).div_ceil(32);
    let body = std::mem::take(&mut k.body);
    let mut kb = KernelBuilder::resume(k.clone());
    let a_tile = kb.shared("mma_a", DType::F32, warps * M * K);
    let b_tile = kb.shared("mma_b", DType::F32, warps * K * N);
    let body = rewrite(&mut kb, body, layout, a_tile, b_tile);
    *k = kb.finish(body);
    true
}

/// Whether `stmts` (or a loop inside them) hold a tensor-core product.
pub fn contains_mma(stmts: &[BlockStmt]) -> bool {
    stmts.iter().any(|s| match s {
        BlockStmt::Mma(_) => true,
        BlockStmt::For { body, .. } => contains_mma(body),
        _ => false,
    })
}

fn rewrite(
    kb: &mut KernelBuilder,
    stmts: Vec<BlockStmt>,
    layout: &FragmentLayout,
    a_tile: BufRef,
    b_tile: BufRef,
) -> Vec<BlockStmt> {
    let mut out = Vec::with_capacity(stmts.len());
    for s in stmts {
        match s {
            BlockStmt::Mma(ops) => {
                out.push(kb.phase(|s_| {
                    let lane = s_.let_(Expr::LaneId);
                    let warp = s_.let_(Expr::ThreadId / Expr::idx(32));
                    let (a, a0) = ops.a;
                    for i in 0..layout.a.slots() {
                        let (r, c) = layout.a.at_expr(&lane, i);
                        let at = warp.clone() * Expr::idx(M * K) + r * Expr::idx(K) + c;
                        s_.store(a_tile, at, Expr::load(a, Expr::idx(a0 + i as u64)));
                    }
                    let (b, b0) = ops.b;
                    for i in 0..layout.b.slots() {
                        let (r, c) = layout.b.at_expr(&lane, i);
                        let at = warp.clone() * Expr::idx(K * N) + r * Expr::idx(N) + c;
                        s_.store(b_tile, at, Expr::load(b, Expr::idx(b0 + i as u64)));
                    }
                }));
                out.push(BlockStmt::Barrier);
                out.push(kb.phase(|s_| {
                    let lane = s_.let_(Expr::LaneId);
                    let warp = s_.let_(Expr::ThreadId / Expr::idx(32));
                    let (acc, c0) = ops.acc;
                    for i in 0..layout.c.slots() {
                        let (r, c) = layout.c.at_expr(&lane, i);
                        let a_row = s_.let_(warp.clone() * Expr::idx(M * K) + r * Expr::idx(K));
                        let b_col = s_.let_(warp.clone() * Expr::idx(K * N) + c);
                        let slot = Expr::idx(c0 + i as u64);
                        let sum = s_.local(Expr::load(acc, slot.clone()));
                        for kk in 0..K {
                            let av = Expr::load(a_tile, a_row.clone() + Expr::idx(kk));
                            let bv = Expr::load(b_tile, b_col.clone() + Expr::idx(kk * N));
                            s_.set(sum, Expr::fma(av, bv, Expr::Local(sum)));
                        }
                        s_.store(acc, slot, Expr::Local(sum));
                    }
                }));
                out.push(BlockStmt::Barrier);
            }
            BlockStmt::For {
                var,
                start,
                end,
                step,
                body,
            } => {
                let body = rewrite(kb, body, layout, a_tile, b_tile);
                out.push(BlockStmt::For {
                    var,
                    start,
                    end,
                    step,
                    body,
                });
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (row, column) of each matrix is held by exactly one (lane, slot).
    #[test]
    fn each_element_has_one_owner() {
        for (map, rows, cols) in [(PTX.a, M, K), (PTX.b, K, N), (PTX.c, M, N)] {
            let mut seen = vec![0u32; (rows * cols) as usize];
            for lane in 0..32 {
                for i in 0..map.slots() {
                    let (r, c) = map.at(lane, i);
                    assert!(r < rows && c < cols, "lane {lane} slot {i} at ({r}, {c})");
                    seen[(r * cols + c) as usize] += 1;
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{map:?}");
        }
    }

    /// Hand-read entries of the PTX ISA's figures for m16n8k16 (lane 5: g = 1, t = 1; lane
    /// 30: g = 7, t = 2).
    #[test]
    fn entries_match_the_isa_figures() {
        assert_eq!(PTX.a.at(5, 0), (1, 2));
        assert_eq!(PTX.a.at(5, 3), (9, 3));
        assert_eq!(PTX.a.at(5, 5), (1, 11));
        assert_eq!(PTX.a.at(30, 6), (15, 12));
        assert_eq!(PTX.b.at(5, 0), (2, 1));
        assert_eq!(PTX.b.at(5, 3), (11, 1));
        assert_eq!(PTX.b.at(30, 2), (12, 7));
        assert_eq!(PTX.c.at(5, 1), (1, 3));
        assert_eq!(PTX.c.at(30, 2), (15, 4));
        assert_eq!(PTX.c.at(30, 3), (15, 5));
    }

    /// The pairs packed into one 32-bit register are adjacent along K (A and B): what lets a C
    /// fragment, packed, feed the next product as A.
    #[test]
    fn register_pairs_are_adjacent_along_k() {
        for lane in 0..32 {
            for r in 0..4 {
                let (lo, hi) = (PTX.a.at(lane, 2 * r), PTX.a.at(lane, 2 * r + 1));
                assert_eq!((lo.0, lo.1 + 1), hi);
            }
            for r in 0..2 {
                let (lo, hi) = (PTX.b.at(lane, 2 * r), PTX.b.at(lane, 2 * r + 1));
                assert_eq!((lo.0 + 1, lo.1), hi);
            }
        }
    }
}
