//! Index arithmetic on KIR index expressions, folding constants so generated kernels stay small.

use crate::kir::{Const, Expr, KBinary};
use mmada_ir::Shape;

fn as_const(e: &Expr) -> Option<u64> {
    match e {
        Expr::Const(Const::Index(v)) => Some(*v),
        _ => None,
    }
}

/// a + b
pub fn add(a: Expr, b: Expr) -> Expr {
    match (as_const(&a), as_const(&b)) {
        (Some(x), Some(y)) => Expr::idx(x + y),
        (Some(0), _) => b,
        (_, Some(0)) => a,
        _ => Expr::bin(KBinary::Add, a, b),
    }
}

/// a · b
pub fn mul(a: Expr, b: Expr) -> Expr {
    match (as_const(&a), as_const(&b)) {
        (Some(x), Some(y)) => Expr::idx(x * y),
        (Some(0), _) | (_, Some(0)) => Expr::idx(0),
        (Some(1), _) => b,
        (_, Some(1)) => a,
        _ => Expr::bin(KBinary::Mul, a, b),
    }
}

/// a / c (unsigned), c a constant > 0.
pub fn div(a: Expr, c: u64) -> Expr {
    match as_const(&a) {
        Some(x) => Expr::idx(x / c),
        None if c == 1 => a,
        None => Expr::bin(KBinary::Div, a, Expr::idx(c)),
    }
}

/// a % c (unsigned), c a constant > 0.
pub fn rem(a: Expr, c: u64) -> Expr {
    match as_const(&a) {
        Some(x) => Expr::idx(x % c),
        None if c == 1 => Expr::idx(0),
        None => Expr::bin(KBinary::Rem, a, Expr::idx(c)),
    }
}

/// If `idx` is exactly `unravel(l, shape)` for some `l`, that `l` (so re-linearising a multi-index
/// that came from a linear one costs nothing).
fn relinearize(idx: &[Expr], shape: &Shape) -> Option<Expr> {
    let last = idx.last()?;
    let n_last = *shape.0.last()? as u64;
    let candidates: Vec<Expr> = match last {
        Expr::Binary(KBinary::Rem, l, c) if **c == Expr::idx(n_last) => vec![(**l).clone()],
        other => vec![other.clone()],
    };
    candidates
        .into_iter()
        .find(|l| unravel(l.clone(), shape).as_slice() == idx)
}

/// Row-major linear offset of a multi-index in `shape`.
pub fn linearize(idx: &[Expr], shape: &Shape) -> Expr {
    if shape.rank() > 1 {
        if let Some(l) = relinearize(idx, shape) {
            return l;
        }
    }
    let mut acc = Expr::idx(0);
    for (d, i) in idx.iter().enumerate() {
        acc = add(mul(acc, Expr::idx(shape.0[d] as u64)), i.clone());
    }
    acc
}

/// Multi-index of a row-major linear offset `lin < numel(shape)` in `shape`. The most
/// significant dimension of extent > 1 needs no `% n` (the offset is in range); the others do.
/// (Keeping `% n` there when unit dimensions lead, as `[1, 4]`, once let [`relinearize`] take
/// `[0, l % 4]` for the unbounded `l` itself: a broadcast read out of bounds.)
pub fn unravel(lin: Expr, shape: &Shape) -> Vec<Expr> {
    let r = shape.rank();
    let mut out = vec![Expr::idx(0); r];
    let mut stride = 1u64;
    let top = shape.0.iter().position(|&n| n != 1).unwrap_or(0);
    for d in (0..r).rev() {
        let n = shape.0[d] as u64;
        out[d] = if n == 1 {
            Expr::idx(0)
        } else if d == top {
            div(lin.clone(), stride)
        } else {
            rem(div(lin.clone(), stride), n)
        };
        stride *= n.max(1);
    }
    out
}

/// Smallest power of two ≥ n (n ≥ 1).
pub fn next_pow2(n: u64) -> u64 {
    n.max(1).next_power_of_two()
}
