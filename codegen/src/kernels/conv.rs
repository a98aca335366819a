//! 2-D convolution and its two gradients: one thread per output element, looping over the
//! contributing terms with bounds checks, f32 accumulation with fma. Template `conv`: `max_block`
//! threads per block at most.

use super::fused::round_to;
use super::index::unravel;
use super::rows::{grid_for, per_item};
use crate::kir::{Access, Expr, KCmp, Kernel, KernelBuilder, Scope, VTy};
use mmada_ir::{ConvGeom, DType, Shape};

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
