//! Reduction semantics: f64 accumulation for floats (rounded once), wrapping i64 for integers,
//! NaN-propagating max/min.

use super::elementwise::{float_tensor_f64, int_tensor};
use super::eval_err;
use crate::error::Result;
use crate::{ReduceOp, Shape, Tensor};

pub(super) fn reduce(
    op: ReduceOp,
    x: &Tensor,
    axes: &[usize],
    keep_dims: bool,
    out_shape: &Shape,
) -> Result<Tensor> {
    let s = x.shape();
    // Output index space with reduced axes kept as extent 1.
    let kept: Vec<usize> = s
        .dims()
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let kept = Shape(kept);
    let n_out = kept.numel();
    let dt = x.dtype();
    let init = match op {
        ReduceOp::Sum => 0.0,
        ReduceOp::Max => f64::NEG_INFINITY,
        ReduceOp::Min => f64::INFINITY,
    };
    let mut acc = vec![init; n_out];
    let mut iacc: Vec<i64> = vec![
        match op {
            ReduceOp::Sum => 0,
            ReduceOp::Max => i64::MIN,
            ReduceOp::Min => i64::MAX,
        };
        n_out
    ];
    let ints = dt.is_int();
    let ivals = if ints { x.to_i64_vec() } else { Vec::new() };
    #[allow(clippy::needless_range_loop)] // `lin` is also unravelled into a multi-index
    for lin in 0..x.numel() {
        let mut idx = s.unravel(lin);
        for &a in axes {
            idx[a] = 0;
        }
        let o = kept.linear(&idx);
        if ints {
            let v = ivals.get(lin).copied().unwrap_or(0);
            iacc[o] = match op {
                ReduceOp::Sum => iacc[o].wrapping_add(v),
                ReduceOp::Max => iacc[o].max(v),
                ReduceOp::Min => iacc[o].min(v),
            };
        } else {
            let v = x.get_f64(lin);
            acc[o] = match op {
                ReduceOp::Sum => acc[o] + v,
                ReduceOp::Max if v.is_nan() || acc[o].is_nan() => f64::NAN,
                ReduceOp::Min if v.is_nan() || acc[o].is_nan() => f64::NAN,
                ReduceOp::Max => acc[o].max(v),
                ReduceOp::Min => acc[o].min(v),
            };
        }
    }
    let _ = keep_dims;
    if ints {
        int_tensor(dt, out_shape, iacc)
    } else if dt.is_float() {
        float_tensor_f64(dt, out_shape, acc)
    } else {
        Err(eval_err(format!("reduce_{} on {dt}", op.name())))
    }
}

/// Softmax along `axis` in f64 (max, exponentials, their sum in order), rounded once.
pub(super) fn softmax(x: &Tensor, axis: usize) -> Result<Tensor> {
    let s = x.shape();
    let n = s.0[axis];
    let stride = s.strides()[axis];
    let v = x.to_f64_vec();
    let mut out = vec![0f64; v.len()];
    for b in (0..s.numel()).filter(|&i| s.unravel(i)[axis] == 0) {
        let at = |j: usize| b + j * stride;
        let m = (0..n).fold(f64::NEG_INFINITY, |m, j| {
            let x = v[at(j)];
            if x.is_nan() || m.is_nan() {
                f64::NAN
            } else {
                m.max(x)
            }
        });
        let mut sum = 0f64;
        for j in 0..n {
            let e = (v[at(j)] - m).exp();
            out[at(j)] = e;
            sum += e;
        }
        for j in 0..n {
            out[at(j)] /= sum;
        }
    }
    float_tensor_f64(x.dtype(), s, out)
}
