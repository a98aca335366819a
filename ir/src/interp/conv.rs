//! 2-D convolution and its two gradients, as naive loops with f64 accumulation.

use super::elementwise::float_tensor_f64;
use crate::error::Result;
use crate::{ConvGeom, Shape, Tensor};

/// Visits every (n, o, oh, ow, ci, kh, kw) term of a convolution whose input pixel is inside
/// the (unpadded) input, with the flat indices of x, w and y.
#[allow(clippy::too_many_arguments)]
fn for_each_term(
    geom: &ConvGeom,
    xs: &Shape,
    ws: &Shape,
    ys: &Shape,
    mut f: impl FnMut(usize, usize, usize),
) {
    let (n, c, h, w) = (xs.0[0], xs.0[1], xs.0[2], xs.0[3]);
    let (o, cg, kh, kw) = (ws.0[0], ws.0[1], ws.0[2], ws.0[3]);
    let (oh, ow) = (ys.0[2], ys.0[3]);
    let og = o / geom.groups;
    let _ = c;
    for b in 0..n {
        for oc in 0..o {
            let g = oc / og;
            for y in 0..oh {
                for x in 0..ow {
                    let yi = ((b * o + oc) * oh + y) * ow + x;
                    for ci in 0..cg {
                        let ch = g * cg + ci;
                        for i in 0..kh {
                            let hy = (y * geom.stride[0] + i) as isize - geom.padding[0] as isize;
                            if hy < 0 || hy >= h as isize {
                                continue;
                            }
                            for j in 0..kw {
                                let wx =
                                    (x * geom.stride[1] + j) as isize - geom.padding[2] as isize;
                                if wx < 0 || wx >= w as isize {
                                    continue;
                                }
                                let xi = ((b * xs.0[1] + ch) * h + hy as usize) * w + wx as usize;
                                let wi = ((oc * cg + ci) * kh + i) * kw + j;
                                f(xi, wi, yi);
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(super) fn conv2d(x: &Tensor, w: &Tensor, geom: &ConvGeom, out: &Shape) -> Result<Tensor> {
    let (xv, wv) = (x.to_f64_vec(), w.to_f64_vec());
    let mut y = vec![0f64; out.numel()];
    for_each_term(geom, x.shape(), w.shape(), out, |xi, wi, yi| {
        y[yi] += xv[xi] * wv[wi]
    });
    float_tensor_f64(x.dtype(), out, y)
}

pub(super) fn conv2d_input_grad(
    g: &Tensor,
    w: &Tensor,
    geom: &ConvGeom,
    out: &Shape,
) -> Result<Tensor> {
    let (gv, wv) = (g.to_f64_vec(), w.to_f64_vec());
    let mut dx = vec![0f64; out.numel()];
    for_each_term(geom, out, w.shape(), g.shape(), |xi, wi, yi| {
        dx[xi] += gv[yi] * wv[wi]
    });
    float_tensor_f64(g.dtype(), out, dx)
}

pub(super) fn conv2d_weight_grad(
    x: &Tensor,
    g: &Tensor,
    geom: &ConvGeom,
    out: &Shape,
) -> Result<Tensor> {
    let (xv, gv) = (x.to_f64_vec(), g.to_f64_vec());
    let mut dw = vec![0f64; out.numel()];
    for_each_term(geom, x.shape(), out, g.shape(), |xi, wi, yi| {
        dw[wi] += xv[xi] * gv[yi]
    });
    float_tensor_f64(x.dtype(), out, dw)
}
