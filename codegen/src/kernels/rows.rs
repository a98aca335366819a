//! Helpers for kernels that walk rows along one axis, and for one-thread-per-item grids.

use super::index::{add, linearize, mul, next_pow2, unravel};
use crate::kir::{Expr, KernelBuilder, Scope};
use mmada_ir::Shape;

/// (grid, block) for `n` independent items, at most `max_block` threads per block (the
/// template's `block` knob); fewer items take the next power of two, at least a warp.
pub fn grid_for(n: u64, max_block: u64) -> (u64, u32) {
    let block = if n >= max_block {
        max_block
    } else {
        next_pow2(n).clamp(32, max_block.max(32))
    };
    (n.div_ceil(block).max(1), block as u32)
}

/// Grid and block for a host-only kernel with `n` independent items: small blocks, so that even
/// a handful of items (16 column groups of a weight-norm gradient) spread over the host's
/// threads, which take whole blocks.
pub fn host_grid_for(n: u64) -> (u64, u32) {
    const HOST_BLOCK: u64 = 4;
    (n.div_ceil(HOST_BLOCK).max(1), HOST_BLOCK as u32)
}

/// `shape` without `axis`.
pub fn without_axis(shape: &Shape, axis: usize) -> Shape {
    Shape(
        shape
            .dims()
            .iter()
            .enumerate()
            .filter(|(d, _)| *d != axis)
            .map(|(_, &v)| v)
            .collect(),
    )
}

/// Linear index in `shape` of position 0 along `axis` of row `o` (rows enumerate the other
/// dims in row-major order).
pub fn row_base(o: &Expr, shape: &Shape, axis: usize) -> Expr {
    let outer = unravel(o.clone(), &without_axis(shape, axis));
    let mut full = Vec::with_capacity(shape.rank());
    let mut it = outer.into_iter();
    for d in 0..shape.rank() {
        if d == axis {
            full.push(Expr::idx(0));
        } else {
            full.push(it.next().unwrap_or(Expr::idx(0)));
        }
    }
    linearize(&full, shape)
}

/// Row-major stride of `axis` in `shape`.
pub fn stride(shape: &Shape, axis: usize) -> u64 {
    shape.strides()[axis] as u64
}

/// Runs `f(scope, item)` for items `0..n`, one thread each; the returned phase is the kernel body.
pub fn per_item(
    kb: &mut KernelBuilder,
    n: u64,
    f: impl FnOnce(&mut Scope, Expr),
) -> crate::kir::BlockStmt {
    let block = kb.block() as u64;
    kb.phase(|s| {
        let item = s.let_(add(mul(Expr::BlockId, Expr::idx(block)), Expr::ThreadId));
        s.if_(
            item.clone().lt(Expr::idx(n)),
            |s| f(s, item.clone()),
            |_| {},
        );
    })
}
