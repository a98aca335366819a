//! Semantics of indexing ops: iota, slice, pad, concat, gather, scatter-add, top-k, cumsum.

use super::elementwise::{float_tensor_f64, int_tensor};
use super::eval_err;
use crate::error::Result;
use crate::{DType, Data, Shape, Tensor};

/// Builds a tensor of `out` shape whose element `i` is `src[map(i)]`, or `fill` where `map`
/// gives `None`.
fn take(
    src: &Tensor,
    out: &Shape,
    map: impl Fn(usize) -> Option<usize>,
    fill: f64,
) -> Result<Tensor> {
    let n = out.numel();
    macro_rules! pick {
        ($v:expr, $f:expr) => {
            (0..n).map(|i| map(i).map_or($f, |j| $v[j])).collect()
        };
    }
    let data = match src.data() {
        Data::F64(v) => Data::F64(pick!(v, fill)),
        Data::F32(v) => Data::F32(pick!(v, fill as f32)),
        Data::F16(v) => Data::F16(pick!(v, half::f16::from_f64(fill))),
        Data::BF16(v) => Data::BF16(pick!(v, half::bf16::from_f64(fill))),
        Data::I32(v) => Data::I32(pick!(v, fill as i32)),
        Data::I64(v) => Data::I64(pick!(v, fill as i64)),
        Data::Bool(v) => Data::Bool(pick!(v, fill != 0.0)),
    };
    Tensor::new(out.clone(), data)
}

pub(super) fn iota(dtype: DType, shape: &Shape, axis: usize) -> Result<Tensor> {
    let vals: Vec<f64> = (0..shape.numel())
        .map(|i| shape.unravel(i)[axis] as f64)
        .collect();
    Tensor::from_f64(dtype, shape.clone(), &vals)
}

pub(super) fn slice(x: &Tensor, start: &[usize], out: &Shape) -> Result<Tensor> {
    let s = x.shape();
    take(
        x,
        out,
        |i| {
            let mut idx = out.unravel(i);
            for (d, v) in idx.iter_mut().enumerate() {
                *v += start[d];
            }
            Some(s.linear(&idx))
        },
        0.0,
    )
}

pub(super) fn pad(x: &Tensor, lo: &[usize], value: f64, out: &Shape) -> Result<Tensor> {
    let s = x.shape();
    take(
        x,
        out,
        |i| {
            let idx = out.unravel(i);
            let mut src = Vec::with_capacity(idx.len());
            for (d, &v) in idx.iter().enumerate() {
                if v < lo[d] || v - lo[d] >= s.0[d] {
                    return None;
                }
                src.push(v - lo[d]);
            }
            Some(s.linear(&src))
        },
        value,
    )
}

pub(super) fn concat(xs: &[&Tensor], axis: usize, out: &Shape) -> Result<Tensor> {
    // Flatten all operands into one buffer (operand-major), then map indices into it.
    let mut offsets = Vec::with_capacity(xs.len());
    let mut starts = Vec::with_capacity(xs.len());
    let (mut off, mut start) = (0usize, 0usize);
    for x in xs {
        offsets.push(off);
        starts.push(start);
        off += x.numel();
        start += x.shape().0[axis];
    }
    let flat = concat_data(xs)?;
    take(
        &flat,
        out,
        |i| {
            let mut idx = out.unravel(i);
            let k = starts.iter().rposition(|&s| s <= idx[axis]).unwrap_or(0);
            idx[axis] -= starts[k];
            Some(offsets[k] + xs[k].shape().linear(&idx))
        },
        0.0,
    )
}

fn concat_data(xs: &[&Tensor]) -> Result<Tensor> {
    let n: usize = xs.iter().map(|x| x.numel()).sum();
    macro_rules! cat {
        ($var:ident) => {{
            let mut v = Vec::with_capacity(n);
            for x in xs {
                match x.data() {
                    Data::$var(d) => v.extend_from_slice(d),
                    _ => return Err(eval_err("concat operands differ in dtype".into())),
                }
            }
            Data::$var(v)
        }};
    }
    let data = match xs[0].data() {
        Data::F64(_) => cat!(F64),
        Data::F32(_) => cat!(F32),
        Data::F16(_) => cat!(F16),
        Data::BF16(_) => cat!(BF16),
        Data::I32(_) => cat!(I32),
        Data::I64(_) => cat!(I64),
        Data::Bool(_) => cat!(Bool),
    };
    Tensor::new([n], data)
}

pub(super) fn gather(x: &Tensor, idx: &Tensor, axis: usize) -> Result<Tensor> {
    let s = x.shape();
    let is = idx.shape();
    let iv = idx.to_i64_vec();
    let extent = s.0[axis] as i64;
    if let Some((p, &bad)) = iv.iter().enumerate().find(|(_, &v)| v < 0 || v >= extent) {
        return Err(eval_err(format!(
            "gather index {bad} at position {:?} is outside [0, {extent})",
            is.unravel(p)
        )));
    }
    take(
        x,
        is,
        |i| {
            let mut p = is.unravel(i);
            p[axis] = iv[i] as usize;
            Some(s.linear(&p))
        },
        0.0,
    )
}

pub(super) fn scatter_add(
    base: &Tensor,
    idx: &Tensor,
    src: &Tensor,
    axis: usize,
) -> Result<Tensor> {
    let s = base.shape();
    let is = idx.shape();
    let iv = idx.to_i64_vec();
    let extent = s.0[axis] as i64;
    let target = |i: usize| -> Result<usize> {
        let v = iv[i];
        if v < 0 || v >= extent {
            return Err(eval_err(format!(
                "scatter index {v} at position {:?} is outside [0, {extent})",
                is.unravel(i)
            )));
        }
        let mut p = is.unravel(i);
        p[axis] = v as usize;
        Ok(s.linear(&p))
    };
    if base.dtype().is_int() {
        let mut out = base.to_i64_vec();
        let sv = src.to_i64_vec();
        for (i, &v) in sv.iter().enumerate() {
            let t = target(i)?;
            out[t] = out[t].wrapping_add(v);
        }
        return int_tensor(base.dtype(), s, out);
    }
    let mut out = base.to_f64_vec();
    let sv = src.to_f64_vec();
    for (i, &v) in sv.iter().enumerate() {
        let t = target(i)?;
        out[t] += v;
    }
    float_tensor_f64(base.dtype(), s, out)
}

/// Indices of the k largest along `axis`: NaN first, then descending, ties by lower index.
pub(super) fn topk(x: &Tensor, k: usize, axis: usize, out: &Shape) -> Result<Tensor> {
    let s = x.shape();
    let n = s.0[axis];
    let vals = x.to_f64_vec();
    let ints = x.dtype().is_int();
    let ivals = if ints { x.to_i64_vec() } else { Vec::new() };
    let mut res = vec![0i64; out.numel()];
    for (o, r) in res.iter_mut().enumerate() {
        let mut p = out.unravel(o);
        let rank = p[axis];
        let _ = rank;
        p[axis] = 0;
        let base = s.linear(&p);
        let stride = s.strides()[axis];
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            let (ia, ib) = (base + a * stride, base + b * stride);
            let c = if ints {
                ivals[ib].cmp(&ivals[ia])
            } else {
                let (va, vb) = (vals[ia], vals[ib]);
                match (va.is_nan(), vb.is_nan()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => std::cmp::Ordering::Less,
                    (false, true) => std::cmp::Ordering::Greater,
                    _ => vb.partial_cmp(&va).unwrap_or(std::cmp::Ordering::Equal),
                }
            };
            c.then(a.cmp(&b))
        });
        *r = order[out.unravel(o)[axis]] as i64;
    }
    let _ = k;
    Tensor::from_i64(out.clone(), res)
}

pub(super) fn cumsum(x: &Tensor, axis: usize, reverse: bool) -> Result<Tensor> {
    let s = x.shape();
    let n = s.0[axis];
    let stride = s.strides()[axis];
    let rows: Vec<usize> = (0..s.numel())
        .filter(|&i| s.unravel(i)[axis] == 0)
        .collect();
    let order = |j: usize| if reverse { n - 1 - j } else { j };
    if x.dtype().is_int() {
        let v = x.to_i64_vec();
        let mut out = vec![0i64; v.len()];
        for &b in &rows {
            let mut acc = 0i64;
            for j in 0..n {
                let i = b + order(j) * stride;
                acc = acc.wrapping_add(v[i]);
                out[i] = acc;
            }
        }
        return int_tensor(x.dtype(), s, out);
    }
    let v = x.to_f64_vec();
    let mut out = vec![0f64; v.len()];
    for &b in &rows {
        let mut acc = 0f64;
        for j in 0..n {
            let i = b + order(j) * stride;
            acc += v[i];
            out[i] = acc;
        }
    }
    float_tensor_f64(x.dtype(), s, out)
}
