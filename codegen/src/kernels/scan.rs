//! Kernels that scan rows: cumulative sums and top-k selection.
//!
//! - cumsum: one thread per row, accumulating in f32 (or the integer type) in order;
//! - top-1: one thread per row keeping the best value and its index;
//! - top-k (k > 1): one thread per element, which counts the elements of its row that beat it
//!   (larger, or equal with a lower index; NaN beats numbers) and, if that rank is below k,
//!   writes its index at that rank. O(n²) per row, fine for the row lengths samplers sort.

use super::fused::{round_to, vty};
use super::rows::{grid_for, per_item, row_base, stride, without_axis};
use crate::kir::{Access, Expr, KBinary, KCmp, KUnary, Kernel, KernelBuilder, VTy};
use mmada_ir::{DType, Shape};

/// Inclusive cumulative sum along `axis`.
pub fn cumsum_kernel(
    name: &str,
    dtype: DType,
    shape: &Shape,
    axis: usize,
    reverse: bool,
    max_block: u64,
) -> Kernel {
    let n = shape.0[axis] as u64;
    let rows = without_axis(shape, axis).numel() as u64;
    let (grid, block) = grid_for(rows, max_block);
    let mut kb = KernelBuilder::new(name, grid, block);
    let x = kb.param("x", dtype, shape.numel() as u64, Access::Read);
    let out = kb.param("out", dtype, shape.numel() as u64, Access::Write);
    let st = stride(shape, axis);
    let t = vty(dtype);
    let zero = match t {
        VTy::F32 => Expr::f32(0.0),
        VTy::I32 => Expr::i32(0),
        _ => Expr::i64(0),
    };
    let shape = shape.clone();
    let body = per_item(&mut kb, rows, |s, o| {
        let base = s.let_(row_base(&o, &shape, axis));
        let acc = s.local(zero);
        s.for_(Expr::idx(0), Expr::idx(n), Expr::idx(1), |s, j| {
            let jj = if reverse { Expr::idx(n - 1) - j } else { j };
            let at = s.let_(base.clone() + jj * Expr::idx(st));
            s.set(acc, Expr::Local(acc) + Expr::load(x, at.clone()));
            s.store(out, at, round_to(dtype, Expr::Local(acc)));
        });
    });
    kb.finish(vec![body])
}

fn is_nan(v: Expr) -> Expr {
    Expr::cmp(KCmp::Ne, v.clone(), v)
}

/// Does (value a at index ia) beat (value b at index ib)?
pub(super) fn beats(t: VTy, a: Expr, ia: Expr, b: Expr, ib: Expr) -> Expr {
    let gt = Expr::cmp(KCmp::Gt, a.clone(), b.clone());
    let tie = Expr::cmp(KCmp::Eq, a.clone(), b.clone()).and(ia.clone().lt(ib.clone()));
    let base = Expr::bin(KBinary::Or, gt, tie);
    if t != VTy::F32 {
        return base;
    }
    let na = is_nan(a);
    let nb = is_nan(b);
    let nan_wins = na.and(Expr::bin(KBinary::Or, Expr::un(KUnary::Not, nb), ia.lt(ib)));
    Expr::bin(KBinary::Or, base, nan_wins)
}

/// Indices of the k largest along `axis` (i64 output).
pub fn topk_kernel(
    name: &str,
    dtype: DType,
    shape: &Shape,
    axis: usize,
    k: usize,
    max_block: u64,
) -> Kernel {
    let n = shape.0[axis] as u64;
    let rows = without_axis(shape, axis).numel() as u64;
    let mut out_shape = shape.clone();
    out_shape.0[axis] = k;
    let t = vty(dtype);
    let (st, ost) = (stride(shape, axis), stride(&out_shape, axis));
    let shape = shape.clone();
    if k == 1 {
        let (grid, block) = grid_for(rows, max_block);
        let mut kb = KernelBuilder::new(name, grid, block);
        let x = kb.param("x", dtype, shape.numel() as u64, Access::Read);
        let out = kb.param("out", DType::I64, out_shape.numel() as u64, Access::Write);
        let body = per_item(&mut kb, rows, |s, o| {
            let base = s.let_(row_base(&o, &shape, axis));
            let best = s.local(Expr::load(x, base.clone()));
            let best_i = s.local(Expr::idx(0));
            s.for_(Expr::idx(1), Expr::idx(n), Expr::idx(1), |s, j| {
                let v = s.let_(Expr::load(x, base.clone() + j.clone() * Expr::idx(st)));
                let better = s.let_(beats(
                    t,
                    v.clone(),
                    j.clone(),
                    Expr::Local(best),
                    Expr::Local(best_i),
                ));
                s.if_(
                    better,
                    |s| {
                        s.set(best, v.clone());
                        s.set(best_i, j.clone());
                    },
                    |_| {},
                );
            });
            let ob = row_base(&o, &out_shape, axis);
            s.store(out, ob, Expr::cast(VTy::I64, Expr::Local(best_i)));
        });
        return kb.finish(vec![body]);
    }
    let total = rows * n;
    let (grid, block) = grid_for(total, max_block);
    let mut kb = KernelBuilder::new(name, grid, block);
    let x = kb.param("x", dtype, shape.numel() as u64, Access::Read);
    let out = kb.param("out", DType::I64, out_shape.numel() as u64, Access::Write);
    let body = per_item(&mut kb, total, |s, item| {
        let o = s.let_(item.clone() / Expr::idx(n));
        let i = s.let_(item % Expr::idx(n));
        let base = s.let_(row_base(&o, &shape, axis));
        let vi = s.let_(Expr::load(x, base.clone() + i.clone() * Expr::idx(st)));
        let rank = s.local(Expr::idx(0));
        s.for_(Expr::idx(0), Expr::idx(n), Expr::idx(1), |s, j| {
            let vj = s.let_(Expr::load(x, base.clone() + j.clone() * Expr::idx(st)));
            let b = s.let_(beats(t, vj, j, vi.clone(), i.clone()));
            s.set(rank, Expr::Local(rank) + Expr::cast(VTy::Index, b));
        });
        s.if_(
            Expr::Local(rank).lt(Expr::idx(k as u64)),
            |s| {
                let ob = row_base(&o, &out_shape, axis);
                s.store(
                    out,
                    ob + Expr::Local(rank) * Expr::idx(ost),
                    Expr::cast(VTy::I64, i.clone()),
                );
            },
            |_| {},
        );
    });
    kb.finish(vec![body])
}
