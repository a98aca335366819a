//! 2-D convolution and its two gradients: one thread per output element, looping over the
//! contributing terms with bounds checks, f32 accumulation with fma. Template `conv`: `max_block`
//! threads per block at most.
//!
//! Stride-1 convolutions with one channel group are an implicit GEMM instead (template
//! `conv_gemm`, knob `tile`): the tiled product of [`super::matmul`] with the weight `[O, C·kh·kw]`
//! as A and the input patches as B, each B element gathered from the input (zero in the padding)
//! as the tile is staged, so the 9× patch matrix is never written. On the host the same
//! [`ConvShape`] is a library call instead (`runtime/src/cpu_conv.rs`).

use super::fused::round_to;
use super::index::unravel;
use super::matmul::{tiled_product, Product};
use super::rows::{grid_for, per_item};
use crate::kir::{Access, Expr, KCmp, Kernel, KernelBuilder, Scope, VTy};
use mmada_ir::{ConvGeom, DType, Shape};

/// A stride-1, one-group convolution `y [n, o, oh, ow] = Σ x [n, c, oh + i − pt, ow + j − pl] ·
/// w [o, c, i, j]` (bottom and right padding follow from `oh`, `ow`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConvShape {
    /// Images.
    pub n: u64,
    /// Input channels.
    pub c: u64,
    /// Input height and width.
    pub h: u64,
    pub w: u64,
    /// Output channels.
    pub o: u64,
    /// Kernel height and width.
    pub kh: u64,
    pub kw: u64,
    /// Top and left padding.
    pub pt: u64,
    pub pl: u64,
    /// Output height and width.
    pub oh: u64,
    pub ow: u64,
}

impl ConvShape {
    /// The shape of a convolution of `x` (`[n, c, h, w]`) with `w` (`[o, c, kh, kw]`) under
    /// `geom`, when it is one the implicit GEMM computes ([`ConvGeom::implicit_gemm`]).
    pub fn of(xs: &Shape, ws: &Shape, geom: &ConvGeom) -> Option<ConvShape> {
        let (&[n, c, h, w], &[o, wc, kh, kw]) = (&xs.0[..], &ws.0[..]) else {
            return None;
        };
        if !geom.implicit_gemm(kh, kw) || wc != c {
            return None;
        }
        let (oh, ow) = geom.output_hw(h, w, kh, kw)?;
        let u = |v: usize| v as u64;
        Some(ConvShape {
            n: u(n),
            c: u(c),
            h: u(h),
            w: u(w),
            o: u(o),
            kh: u(kh),
            kw: u(kw),
            pt: u(geom.padding[0]),
            pl: u(geom.padding[2]),
            oh: u(oh),
            ow: u(ow),
        })
    }

    /// Height and width of the padded input (`None` for an empty kernel or on overflow).
    pub fn padded_hw(&self) -> Option<(u64, u64)> {
        let padded = |out: u64, k: u64| out.checked_add(k.checked_sub(1)?);
        Some((padded(self.oh, self.kh)?, padded(self.ow, self.kw)?))
    }

    /// The contraction length `c·kh·kw`.
    pub fn k(&self) -> u64 {
        self.c * self.kh * self.kw
    }
}

/// The implicit-GEMM convolution (see the module docs), `tile × tile` threads per block.
pub fn conv_gemm_kernel(name: &str, s: ConvShape, dtype: DType, tile: u64) -> Kernel {
    let mut kb = KernelBuilder::new(name, 1, 1);
    let x = kb.param("x", dtype, s.n * s.c * s.h * s.w, Access::Read);
    let wt = kb.param("w", dtype, s.o * s.k(), Access::Read);
    let y = kb.param("y", dtype, s.n * s.o * s.oh * s.ow, Access::Write);
    let kk = s.k();
    let w_at =
        move |_: &mut Scope, _batch: Expr, row: Expr, k: Expr| (row * Expr::idx(kk) + k, None);
    let x_at = move |sc: &mut Scope, batch: Expr, col: Expr, k: Expr| {
        let taps = s.kh * s.kw;
        let ci = sc.let_(k.clone() / Expr::idx(taps));
        let t = sc.let_(k % Expr::idx(taps));
        let (i, j) = (t.clone() / Expr::idx(s.kw), t % Expr::idx(s.kw));
        let (oh, ow) = (col.clone() / Expr::idx(s.ow), col % Expr::idx(s.ow));
        let (ok_h, ih) = tap(sc, oh, 1, i, s.pt as usize, s.h as usize);
        let (ok_w, iw) = tap(sc, ow, 1, j, s.pl as usize, s.w as usize);
        let at = ((batch * Expr::idx(s.c) + ci) * Expr::idx(s.h) + ih) * Expr::idx(s.w) + iw;
        (at, Some(ok_h.and(ok_w)))
    };
    let dims = Product {
        batch: s.n,
        m: s.o,
        k: kk,
        n: s.oh * s.ow,
    };
    tiled_product(kb, dims, tile, (wt, &w_at), (x, &x_at), y, dtype)
}

fn idx(v: usize) -> Expr {
    Expr::idx(v as u64)
}

/// `pos = o·stride + k − pad` when inside `[0, extent)`: returns (inside, pos).
fn tap(s: &mut Scope, o: Expr, stride: usize, k: Expr, pad: usize, extent: usize) -> (Expr, Expr) {
    let t = s.let_(o * idx(stride) + k);
    let inside = Expr::cmp(KCmp::Ge, t.clone(), idx(pad)).and(t.clone().lt(idx(pad + extent)));
    (s.let_(inside), s.let_(t - idx(pad)))
}

/// y[n, o, oh, ow] = Σ x[n, g·cg + ci, oh·sh + i − pt, ow·sw + j − pl] · w[o, ci, i, j].
pub fn conv2d_kernel(
    name: &str,
    dtype: DType,
    xs: &Shape,
    ws: &Shape,
    ys: &Shape,
    geom: ConvGeom,
    max_block: u64,
) -> Kernel {
    let (h, w) = (xs.0[2], xs.0[3]);
    let (o_ch, cg, kh, kw) = (ws.0[0], ws.0[1], ws.0[2], ws.0[3]);
    let og = o_ch / geom.groups;
    let n_out = ys.numel() as u64;
    let (grid, block) = grid_for(n_out, max_block);
    let mut kb = KernelBuilder::new(name, grid, block);
    let x = kb.param("x", dtype, xs.numel() as u64, Access::Read);
    let wt = kb.param("w", dtype, ws.numel() as u64, Access::Read);
    let y = kb.param("y", dtype, n_out, Access::Write);
    let (xs, ys) = (xs.clone(), ys.clone());
    let body = per_item(&mut kb, n_out, |s, item| {
        let p: Vec<Expr> = unravel(item.clone(), &ys)
            .into_iter()
            .map(|e| s.let_(e))
            .collect();
        let (b, oc, oh, ow) = (p[0].clone(), p[1].clone(), p[2].clone(), p[3].clone());
        let g = s.let_(oc.clone() / idx(og));
        let acc = s.local(Expr::f32(0.0));
        s.for_(idx(0), idx(cg), idx(1), |s, ci| {
            let ch = s.let_(g.clone() * idx(cg) + ci.clone());
            s.for_(idx(0), idx(kh), idx(1), |s, i| {
                let (ok_h, hy) = tap(s, oh.clone(), geom.stride[0], i.clone(), geom.padding[0], h);
                s.for_(idx(0), idx(kw), idx(1), |s, j| {
                    let (ok_w, wx) =
                        tap(s, ow.clone(), geom.stride[1], j.clone(), geom.padding[2], w);
                    s.if_(
                        ok_h.clone().and(ok_w),
                        |s| {
                            let xi = ((b.clone() * idx(xs.0[1]) + ch.clone()) * idx(h)
                                + hy.clone())
                                * idx(w)
                                + wx;
                            let wi = ((oc.clone() * idx(cg) + ci.clone()) * idx(kh) + i.clone())
                                * idx(kw)
                                + j;
                            let v =
                                Expr::fma(Expr::load(x, xi), Expr::load(wt, wi), Expr::Local(acc));
                            s.set(acc, v);
                        },
                        |_| {},
                    );
                });
            });
        });
        s.store(y, item, round_to(dtype, Expr::Local(acc)));
    });
    kb.finish(vec![body])
}

/// dx[n, c, hh, ww] = Σ over (oc in c's group, i, j) with hh + pt − i = oh·sh (and the same for
/// width) of g[n, oc, oh, ow] · w[oc, c − g·cg, i, j].
pub fn conv2d_input_grad_kernel(
    name: &str,
    dtype: DType,
    gs: &Shape,
    ws: &Shape,
    xs: &Shape,
    geom: ConvGeom,
    max_block: u64,
) -> Kernel {
    let (oh_n, ow_n) = (gs.0[2], gs.0[3]);
    let (o_ch, cg, kh, kw) = (ws.0[0], ws.0[1], ws.0[2], ws.0[3]);
    let og = o_ch / geom.groups;
    let n_out = xs.numel() as u64;
    let (grid, block) = grid_for(n_out, max_block);
    let mut kb = KernelBuilder::new(name, grid, block);
    let gp = kb.param("g", dtype, gs.numel() as u64, Access::Read);
    let wt = kb.param("w", dtype, ws.numel() as u64, Access::Read);
    let dx = kb.param("dx", dtype, n_out, Access::Write);
    let xs = xs.clone();
    let (sh, sw) = (geom.stride[0], geom.stride[1]);
    let (pt, pl) = (geom.padding[0], geom.padding[2]);
    let body = per_item(&mut kb, n_out, |s, item| {
        let p: Vec<Expr> = unravel(item.clone(), &xs)
            .into_iter()
            .map(|e| s.let_(e))
            .collect();
        let (b, c, hh, ww) = (p[0].clone(), p[1].clone(), p[2].clone(), p[3].clone());
        let grp = s.let_(c.clone() / idx(cg));
        let ci = s.let_(c % idx(cg));
        let acc = s.local(Expr::f32(0.0));
        s.for_(idx(0), idx(og), idx(1), |s, ol| {
            let oc = s.let_(grp.clone() * idx(og) + ol);
            s.for_(idx(0), idx(kh), idx(1), |s, i| {
                // t = hh + pt − i must be ≥ 0, a multiple of sh, and t / sh < OH.
                let hp = s.let_(hh.clone() + idx(pt));
                let ok_h0 = Expr::cmp(KCmp::Ge, hp.clone(), i.clone());
                let t = s.let_(Expr::select(ok_h0.clone(), hp - i.clone(), idx(0)));
                let ok_h = s.let_(
                    ok_h0
                        .and((t.clone() % idx(sh)).eq(idx(0)))
                        .and((t.clone() / idx(sh)).lt(idx(oh_n))),
                );
                let oh = s.let_(t / idx(sh));
                s.for_(idx(0), idx(kw), idx(1), |s, j| {
                    let wp = s.let_(ww.clone() + idx(pl));
                    let ok_w0 = Expr::cmp(KCmp::Ge, wp.clone(), j.clone());
                    let u = s.let_(Expr::select(ok_w0.clone(), wp - j.clone(), idx(0)));
                    let ok_w = ok_w0
                        .and((u.clone() % idx(sw)).eq(idx(0)))
                        .and((u.clone() / idx(sw)).lt(idx(ow_n)));
                    let ow = u / idx(sw);
                    s.if_(
                        ok_h.clone().and(ok_w),
                        |s| {
                            let gi = ((b.clone() * idx(o_ch) + oc.clone()) * idx(oh_n)
                                + oh.clone())
                                * idx(ow_n)
                                + ow;
                            let wi = ((oc.clone() * idx(cg) + ci.clone()) * idx(kh) + i.clone())
                                * idx(kw)
                                + j;
                            let v =
                                Expr::fma(Expr::load(gp, gi), Expr::load(wt, wi), Expr::Local(acc));
                            s.set(acc, v);
                        },
                        |_| {},
                    );
                });
            });
        });
        s.store(dx, item, round_to(dtype, Expr::Local(acc)));
    });
    kb.finish(vec![body])
}

/// dw[o, ci, i, j] = Σ_{n, oh, ow} x[n, g·cg + ci, oh·sh + i − pt, ow·sw + j − pl] · g[n, o, oh, ow].
pub fn conv2d_weight_grad_kernel(
    name: &str,
    dtype: DType,
    xs: &Shape,
    gs: &Shape,
    ws: &Shape,
    geom: ConvGeom,
    max_block: u64,
) -> Kernel {
    let (n_b, c_in, h, w) = (xs.0[0], xs.0[1], xs.0[2], xs.0[3]);
    let (o_ch, oh_n, ow_n) = (gs.0[1], gs.0[2], gs.0[3]);
    let cg = ws.0[1];
    let og = o_ch / geom.groups;
    let n_out = ws.numel() as u64;
    let (grid, block) = grid_for(n_out, max_block);
    let mut kb = KernelBuilder::new(name, grid, block);
    let x = kb.param("x", dtype, xs.numel() as u64, Access::Read);
    let gp = kb.param("g", dtype, gs.numel() as u64, Access::Read);
    let dw = kb.param("dw", dtype, n_out, Access::Write);
    let ws = ws.clone();
    let body = per_item(&mut kb, n_out, |s, item| {
        let p: Vec<Expr> = unravel(item.clone(), &ws)
            .into_iter()
            .map(|e| s.let_(e))
            .collect();
        let (oc, ci, i, j) = (p[0].clone(), p[1].clone(), p[2].clone(), p[3].clone());
        let ch = s.let_((oc.clone() / idx(og)) * idx(cg) + ci);
        let acc = s.local(Expr::f32(0.0));
        s.for_(idx(0), idx(n_b), idx(1), |s, b| {
            s.for_(idx(0), idx(oh_n), idx(1), |s, oh| {
                let (ok_h, hy) = tap(s, oh.clone(), geom.stride[0], i.clone(), geom.padding[0], h);
                s.for_(idx(0), idx(ow_n), idx(1), |s, ow| {
                    let (ok_w, wx) =
                        tap(s, ow.clone(), geom.stride[1], j.clone(), geom.padding[2], w);
                    s.if_(
                        ok_h.clone().and(ok_w),
                        |s| {
                            let xi = ((b.clone() * idx(c_in) + ch.clone()) * idx(h) + hy.clone())
                                * idx(w)
                                + wx;
                            let gi = ((b.clone() * idx(o_ch) + oc.clone()) * idx(oh_n)
                                + oh.clone())
                                * idx(ow_n)
                                + ow;
                            let v =
                                Expr::fma(Expr::load(x, xi), Expr::load(gp, gi), Expr::Local(acc));
                            s.set(acc, v);
                        },
                        |_| {},
                    );
                });
            });
        });
        s.store(dw, item, round_to(dtype, Expr::Local(acc)));
    });
    let _ = VTy::F32;
    kb.finish(vec![body])
}
