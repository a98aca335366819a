//! Batched matrix product with f64 accumulation.

use super::elementwise::float_tensor_f64;
use crate::error::Result;
use crate::{Shape, Tensor};

pub(super) fn matmul(a: &Tensor, b: &Tensor, out: &Shape) -> Result<Tensor> {
    let r = a.shape().rank();
    let (m, k) = (a.shape().0[r - 2], a.shape().0[r - 1]);
    let n = b.shape().0[r - 1];
    let batch: usize = a.shape().0[..r - 2].iter().product();
    let (va, vb) = (a.to_f64_vec(), b.to_f64_vec());
    let mut c = vec![0f64; batch * m * n];
    for bi in 0..batch {
        let (ao, bo, co) = (bi * m * k, bi * k * n, bi * m * n);
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for p in 0..k {
                    s += va[ao + i * k + p] * vb[bo + p * n + j];
                }
                c[co + i * n + j] = s;
            }
        }
    }
    float_tensor_f64(a.dtype(), out, c)
}
