//! Scatter-add: one thread per column (all dims but the axis), which copies its column of the
//! base and then adds the sources in order — deterministic, no atomics.
//!
//! When the axis is not the innermost one (the embedding gradient: rows of `[vocab, d]`), the
//! loops over the axis are uniform block-level loops around one phase, so that the threads of a
//! block (consecutive columns) touch consecutive elements in each step: coalesced on a GPU and
//! a contiguous, vectorisable inner loop on the host, where per-thread loops would walk each
//! column with a stride of a whole row.

use super::fused::{round_to, vty};
use super::rows::{grid_for, per_item, row_base, stride, without_axis};
use crate::kir::{Access, Expr, KBinary, Kernel, KernelBuilder, VTy};
use mmada_ir::{DType, Shape};

/// `out = base; out[.., idx[.., j, ..], ..] += src[.., j, ..]` along `axis`.
pub fn scatter_add_kernel(
    name: &str,
    dtype: DType,
    base_shape: &Shape,
    idx_dtype: DType,
    idx_shape: &Shape,
    axis: usize,
    max_block: u64,
) -> Kernel {
    let cols = without_axis(base_shape, axis).numel() as u64;
    let (n, m) = (base_shape.0[axis] as u64, idx_shape.0[axis] as u64);
    let (sb, si) = (stride(base_shape, axis), stride(idx_shape, axis));
    let (grid, block) = grid_for(cols, max_block);
    let mut kb = KernelBuilder::new(name, grid, block);
    let base = kb.param("base", dtype, base_shape.numel() as u64, Access::Read);
    let idx = kb.param("idx", idx_dtype, idx_shape.numel() as u64, Access::Read);
    let src = kb.param("src", dtype, idx_shape.numel() as u64, Access::Read);
    let out = kb.param("out", dtype, base_shape.numel() as u64, Access::ReadWrite);
    let _ = vty(dtype);
    let (bs, is) = (base_shape.clone(), idx_shape.clone());
    let clamp = |t: Expr| {
        Expr::bin(
            KBinary::Max,
            Expr::bin(KBinary::Min, t, Expr::i64(n as i64 - 1)),
            Expr::i64(0),
        )
    };
    if sb != 1 {
        let copy = kb.block_for(Expr::idx(0), Expr::idx(n), Expr::idx(1), |kb, r| {
            vec![per_item(kb, cols, |s, c| {
                let at = s.let_(row_base(&c, &bs, axis) + r * Expr::idx(sb));
                s.store(out, at.clone(), Expr::load(base, at));
            })]
        });
        let add = kb.block_for(Expr::idx(0), Expr::idx(m), Expr::idx(1), |kb, j| {
            vec![per_item(kb, cols, |s, c| {
                let from = s.let_(row_base(&c, &is, axis) + j * Expr::idx(si));
                let t = clamp(Expr::cast(VTy::I64, Expr::load(idx, from.clone())));
                let at =
                    s.let_(row_base(&c, &bs, axis) + Expr::cast(VTy::Index, t) * Expr::idx(sb));
                let sum = Expr::load(out, at.clone()) + Expr::load(src, from);
                s.store(out, at, round_to(dtype, sum));
            })]
        });
        return kb.finish(vec![copy, add]);
    }
    let body = per_item(&mut kb, cols, |s, c| {
        let bb = s.let_(row_base(&c, &bs, axis));
        let ib = s.let_(row_base(&c, &is, axis));
        s.for_(Expr::idx(0), Expr::idx(n), Expr::idx(1), |s, r| {
            let at = s.let_(bb.clone() + r * Expr::idx(sb));
            s.store(out, at.clone(), Expr::load(base, at));
        });
        s.for_(Expr::idx(0), Expr::idx(m), Expr::idx(1), |s, j| {
            let from = s.let_(ib.clone() + j * Expr::idx(si));
            let t = clamp(Expr::cast(VTy::I64, Expr::load(idx, from.clone())));
            let at = s.let_(bb.clone() + Expr::cast(VTy::Index, t) * Expr::idx(sb));
            let sum = Expr::load(out, at.clone()) + Expr::load(src, from);
            s.store(out, at, round_to(dtype, sum));
        });
    });
    kb.finish(vec![body])
}
