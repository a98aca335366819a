//! Data movement: permute and broadcast (reshape keeps the data as is).

use crate::error::Result;
use crate::{Data, Shape, Tensor};

/// Gathers `src` elements into a new tensor of `out` shape, where `map` gives the source linear
/// index of each output linear index.
pub(super) fn gather(src: &Tensor, out: &Shape, map: impl Fn(usize) -> usize) -> Result<Tensor> {
    let n = out.numel();
    let data = match src.data() {
        Data::F64(v) => Data::F64((0..n).map(|i| v[map(i)]).collect()),
        Data::F32(v) => Data::F32((0..n).map(|i| v[map(i)]).collect()),
        Data::F16(v) => Data::F16((0..n).map(|i| v[map(i)]).collect()),
        Data::BF16(v) => Data::BF16((0..n).map(|i| v[map(i)]).collect()),
        Data::I32(v) => Data::I32((0..n).map(|i| v[map(i)]).collect()),
        Data::I64(v) => Data::I64((0..n).map(|i| v[map(i)]).collect()),
        Data::Bool(v) => Data::Bool((0..n).map(|i| v[map(i)]).collect()),
    };
    Tensor::new(out.clone(), data)
}

pub(super) fn permute(x: &Tensor, perm: &[usize], out: &Shape) -> Result<Tensor> {
    let s = x.shape();
    gather(x, out, |lin| {
        let oi = out.unravel(lin);
        let mut ii = vec![0; s.rank()];
        for (d, &p) in perm.iter().enumerate() {
            ii[p] = oi[d];
        }
        s.linear(&ii)
    })
}

pub(super) fn broadcast(x: &Tensor, out: &Shape) -> Result<Tensor> {
    let s = x.shape();
    let off = out.rank() - s.rank();
    gather(x, out, |lin| {
        let oi = out.unravel(lin);
        let ii: Vec<usize> = (0..s.rank())
            .map(|d| if s.0[d] == 1 { 0 } else { oi[d + off] })
            .collect();
        s.linear(&ii)
    })
}
