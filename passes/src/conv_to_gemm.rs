//! Convolution as a matrix product (im2col + GEMM): every strided `conv2d` with one channel
//! group, and every gradient of a one-group convolution, becomes a gather of the input patches
//! into a `[C·kh·kw, OH·OW]` matrix (one fused copy kernel) and a matrix product with the
//! weight viewed as `[O, C·kh·kw]`, which both targets run with their matmul template (the host
//! through its GEMM library call). The gradients:
//! `conv2d_weight_grad` is `dy × patchesᵀ`, `conv2d_input_grad` is `wᵀ × dy` with the patch
//! gradients added back into place (each tap padded into the grid and summed: the transpose of
//! the patch copy). The direct one-thread-per-output kernels remain for grouped convolutions.
//! Forward convolutions of stride 1 are left alone ([`ConvGeom::implicit_gemm`]): the code
//! generator computes them as an implicit GEMM (template `conv_gemm`; on the host, shifted
//! products that never write the patch matrix).
//!
//! The patch matrix is a concatenation of the kh·kw shifted slices of the padded input. Strided
//! convolutions need no strided slice: the padded input `[N, C, s·R, s·Q]` is viewed as
//! `[N, C, R, s, Q, s]`, and tap `(i, j)` is the plain slice `[i / s .. i / s + OH, i % s,
//! j / s .. j / s + OW, j % s]` of that view (row `s·oh + i = s·(oh + i / s) + i % s`). Because
//! the padded input has kh·kw users, the fuser computes it once (with the norm and activation
//! before it) and the patch kernel only copies. (A single gather with iota-computed offsets was
//! tried: its per-element index arithmetic made the patch kernel 5× slower on MAGVIT's 256²
//! layers, and the fuser inlined the norm into it, recomputing it per tap.)
//! A 1×1 convolution with stride 1 and no padding is the product with the input itself. When
//! the kernel is no larger than the stride (a ViT's patch embedding), every tap is its own
//! phase of that view, so the patch matrix is one slice of it, permuted, and its gradient one
//! permute and pad: no kh·kw-way concatenation (1024 taps for CLIP's 32×32 patches).

use crate::{Pass, PassError};
use mmada_ir::{ConvGeom, Graph, NodeId, Op};

/// The im2col + GEMM lowering of convolutions.
pub struct ConvToGemm;

fn fail(e: impl std::fmt::Display) -> PassError {
    PassError::Failed {
        pass: "conv-to-gemm".into(),
        msg: e.to_string(),
    }
}

/// The patch geometry of one convolution: `x [N, C, H, W]`, kernel `kh×kw`, output `OH×OW`;
/// the padded input is viewed as `[N, C, R, s_h, Q, s_w]` (rows `s_h·R`, columns `s_w·Q`).
struct Patches {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    sh: usize,
    sw: usize,
    pt: usize,
    pl: usize,
    r: usize,
    q: usize,
}

impl Patches {
    fn new(x: [usize; 4], k: [usize; 2], geom: &ConvGeom) -> Result<Patches, mmada_ir::IrError> {
        let [n, c, h, w] = x;
        let [kh, kw] = k;
        let Some((oh, ow)) = geom.output_hw(h, w, kh, kw) else {
            return Err(mmada_ir::IrError::BadOperands {
                op: "conv2d".into(),
                msg: "empty output".into(),
                operands: String::new(),
            });
        };
        let (sh, sw) = (geom.stride[0], geom.stride[1]);
        Ok(Patches {
            n,
            c,
            h,
            w,
            kh,
            kw,
            oh,
            ow,
            sh,
            sw,
            pt: geom.padding[0],
            pl: geom.padding[2],
            r: oh + (kh - 1) / sh,
            q: ow + (kw - 1) / sw,
        })
    }

    fn p(&self) -> usize {
        self.oh * self.ow
    }

    fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// True when the patch matrix is the input itself (1×1, stride 1, no padding).
    fn trivial(&self, geom: &ConvGeom) -> bool {
        self.kh == 1 && self.kw == 1 && self.sh == 1 && self.sw == 1 && geom.padding == [0; 4]
    }

    /// True when no two taps read the same phase of the grid view (kernel ≤ stride, as in a
    /// ViT's patch embedding): the patch matrix is then one slice of the view, permuted,
    /// instead of a concatenation of kh·kw slices (1024 of them for CLIP's 32×32 patches).
    fn disjoint(&self) -> bool {
        self.kh <= self.sh && self.kw <= self.sw
    }

    /// Rows and columns of the padded grid the taps read.
    fn grid(&self) -> (usize, usize) {
        (self.sh * self.r, self.sw * self.q)
    }

    /// `[N, C·kh·kw, OH·OW]`: the patches of `x`.
    fn cols(&self, g: &mut Graph, x: NodeId, geom: &ConvGeom) -> Result<NodeId, mmada_ir::IrError> {
        let (n, c, p) = (self.n, self.c, self.p());
        if self.trivial(geom) {
            return g.reshape(x, [n, c, p]);
        }
        // Padding the reference adds beyond what any tap reads is cut off.
        let (rows, cols) = self.grid();
        let hi_r = rows.saturating_sub(self.h + self.pt);
        let hi_c = cols.saturating_sub(self.w + self.pl);
        let padded = if self.pt + hi_r + self.pl + hi_c > 0 {
            g.pad(x, &[0, 0, self.pt, self.pl], &[0, 0, hi_r, hi_c], 0.0)?
        } else {
            x
        };
        let ps = g.try_node(padded)?.shape.clone();
        let cropped = if ps.0[2] != rows || ps.0[3] != cols {
            let slice = Op::Slice {
                start: vec![0, 0, 0, 0],
                end: vec![n, c, rows, cols],
            };
            g.add(slice, &[padded])?
        } else {
            padded
        };
        let view = g.reshape(cropped, [n, c, self.r, self.sh, self.q, self.sw])?;
        if self.disjoint() {
            // Tap (i, j) is the phase (i, j) of the view (r = OH, q = OW here).
            let slice = Op::Slice {
                start: vec![0; 6],
                end: vec![n, c, self.oh, self.kh, self.ow, self.kw],
            };
            let t = g.add(slice, &[view])?;
            let t = g.permute(t, &[0, 1, 3, 5, 2, 4])?; // [N, C, kh, kw, OH, OW]
            return g.reshape(t, [n, self.k(), p]);
        }
        let mut taps = Vec::with_capacity(self.kh * self.kw);
        for i in 0..self.kh {
            for j in 0..self.kw {
                let (r0, a) = (i / self.sh, i % self.sh);
                let (c0, b) = (j / self.sw, j % self.sw);
                let slice = Op::Slice {
                    start: vec![0, 0, r0, a, c0, b],
                    end: vec![n, c, r0 + self.oh, a + 1, c0 + self.ow, b + 1],
                };
                let t = g.add(slice, &[view])?;
                taps.push(g.reshape(t, [n, c, 1, p])?);
            }
        }
        let stacked = if taps.len() == 1 {
            taps[0]
        } else {
            g.concat(&taps, 2)?
        };
        g.reshape(stacked, [n, self.k(), p])
    }

    /// The transpose of [`Patches::cols`]: patch gradients `[C·kh·kw, N, OH·OW]` summed back
    /// into the input's place, `[N, C, H, W]` (each tap padded into the grid view, the taps
    /// added, the padding sliced off).
    fn uncols(
        &self,
        g: &mut Graph,
        d: NodeId,
        geom: &ConvGeom,
    ) -> Result<NodeId, mmada_ir::IrError> {
        let (n, c) = (self.n, self.c);
        if self.trivial(geom) {
            let d = g.reshape(d, [c, n, self.h, self.w])?;
            return g.permute(d, &[1, 0, 2, 3]);
        }
        let (rows, cols) = self.grid();
        let grid = if self.disjoint() {
            // Each tap owns one phase of the grid: place them all at once.
            let d = g.reshape(d, [c, self.kh, self.kw, n, self.oh, self.ow])?;
            let d = g.permute(d, &[0, 3, 4, 1, 5, 2])?; // [C, N, OH, kh, OW, kw]
            let d = g.pad(
                d,
                &[0; 6],
                &[0, 0, 0, self.sh - self.kh, 0, self.sw - self.kw],
                0.0,
            )?;
            g.reshape(d, [c, n, rows, cols])?
        } else {
            self.tap_sum(g, d)?
        };
        // Input rows the grid does not reach got no gradient.
        let (need_r, need_c) = (self.pt + self.h, self.pl + self.w);
        let grid = if need_r > rows || need_c > cols {
            g.pad(
                grid,
                &[0, 0, 0, 0],
                &[
                    0,
                    0,
                    need_r.saturating_sub(rows),
                    need_c.saturating_sub(cols),
                ],
                0.0,
            )?
        } else {
            grid
        };
        let gs = g.try_node(grid)?.shape.clone();
        let dx = if gs.0[2] != self.h || gs.0[3] != self.w || self.pt + self.pl > 0 {
            let slice = Op::Slice {
                start: vec![0, 0, self.pt, self.pl],
                end: vec![c, n, self.pt + self.h, self.pl + self.w],
            };
            g.add(slice, &[grid])?
        } else {
            grid
        };
        g.permute(dx, &[1, 0, 2, 3])
    }

    /// The taps of patch gradients `d [C·kh·kw, N, OH·OW]`, each padded into the grid view
    /// and summed: `[C, N, rows, cols]`.
    fn tap_sum(&self, g: &mut Graph, d: NodeId) -> Result<NodeId, mmada_ir::IrError> {
        let (n, c) = (self.n, self.c);
        let d = g.reshape(d, [c, self.kh * self.kw, n, self.oh, self.ow])?;
        let mut sum = None;
        for i in 0..self.kh {
            for j in 0..self.kw {
                let t = i * self.kw + j;
                let (r0, a) = (i / self.sh, i % self.sh);
                let (c0, b) = (j / self.sw, j % self.sw);
                let slice = Op::Slice {
                    start: vec![0, t, 0, 0, 0],
                    end: vec![c, t + 1, n, self.oh, self.ow],
                };
                let tap = g.add(slice, &[d])?;
                let tap = g.reshape(tap, [c, n, self.oh, 1, self.ow, 1])?;
                let placed = g.pad(
                    tap,
                    &[0, 0, r0, a, c0, b],
                    &[
                        0,
                        0,
                        self.r - r0 - self.oh,
                        self.sh - a - 1,
                        self.q - c0 - self.ow,
                        self.sw - b - 1,
                    ],
                    0.0,
                )?;
                sum = Some(match sum {
                    None => placed,
                    Some(acc) => g.add2(acc, placed)?,
                });
            }
        }
        let sum = sum.ok_or_else(|| mmada_ir::IrError::BadOperands {
            op: "conv2d_input_grad".into(),
            msg: "empty kernel".into(),
            operands: String::new(),
        })?;
        let (rows, cols) = self.grid();
        g.reshape(sum, [c, n, rows, cols])
    }
}

fn dims4(g: &Graph, x: NodeId) -> Result<[usize; 4], mmada_ir::IrError> {
    let s = g.try_node(x)?.shape.clone();
    Ok([s.0[0], s.0[1], s.0[2], s.0[3]])
}

/// `[N, A, P]` as `[A, N·P]` (a view when N = 1).
fn batch_to_columns(g: &mut Graph, x: NodeId) -> Result<NodeId, mmada_ir::IrError> {
    let s = g.try_node(x)?.shape.clone();
    let (n, a, p) = (s.0[0], s.0[1], s.0[2]);
    if n == 1 {
        return g.reshape(x, [a, p]);
    }
    let t = g.permute(x, &[1, 0, 2])?;
    g.reshape(t, [a, n * p])
}

/// `y = conv2d(x, w)`: `w [O, C·kh·kw] × patches [C·kh·kw, N·P]`.
fn lower(g: &mut Graph, x: NodeId, w: NodeId, geom: ConvGeom) -> Result<NodeId, mmada_ir::IrError> {
    let ws = dims4(g, w)?;
    let pt = Patches::new(dims4(g, x)?, [ws[2], ws[3]], &geom)?;
    let (n, o, p) = (pt.n, ws[0], pt.p());
    let cols = pt.cols(g, x, &geom)?;
    let cols = batch_to_columns(g, cols)?;
    let w2 = g.reshape(w, [o, pt.k()])?;
    let y = g.add(Op::MatMul, &[w2, cols])?;
    let y = if n == 1 {
        y
    } else {
        let y = g.reshape(y, [o, n, p])?;
        g.permute(y, &[1, 0, 2])?
    };
    g.reshape(y, [n, o, pt.oh, pt.ow])
}

/// `dw = conv2d_weight_grad(x, dy)`: `dy [O, N·P] × patchesᵀ [N·P, C·kh·kw]`.
fn lower_weight_grad(
    g: &mut Graph,
    x: NodeId,
    dy: NodeId,
    geom: ConvGeom,
    k: [usize; 2],
) -> Result<NodeId, mmada_ir::IrError> {
    let pt = Patches::new(dims4(g, x)?, k, &geom)?;
    let o = dims4(g, dy)?[1];
    let cols = pt.cols(g, x, &geom)?;
    let cols = batch_to_columns(g, cols)?; // [CK, NP]
    let colst = g.permute(cols, &[1, 0])?;
    let dy = g.reshape(dy, [pt.n, o, pt.p()])?;
    let dy = batch_to_columns(g, dy)?; // [O, NP]
    let dw = g.add(Op::MatMul, &[dy, colst])?;
    g.reshape(dw, [o, pt.c, k[0], k[1]])
}

/// `dx = conv2d_input_grad(dy, w)`: `wᵀ [C·kh·kw, O] × dy [O, N·P]`, folded back to `[N, C, H, W]`.
fn lower_input_grad(
    g: &mut Graph,
    dy: NodeId,
    w: NodeId,
    geom: ConvGeom,
    input_hw: [usize; 2],
) -> Result<NodeId, mmada_ir::IrError> {
    let ws = dims4(g, w)?;
    let ds = dims4(g, dy)?;
    let pt = Patches::new(
        [ds[0], ws[1], input_hw[0], input_hw[1]],
        [ws[2], ws[3]],
        &geom,
    )?;
    let w2 = g.reshape(w, [ws[0], pt.k()])?;
    let wt = g.permute(w2, &[1, 0])?;
    let dy = g.reshape(dy, [pt.n, ws[0], pt.p()])?;
    let dy = batch_to_columns(g, dy)?;
    let dcols = g.add(Op::MatMul, &[wt, dy])?; // [CK, N·P]
    pt.uncols(g, dcols, &geom)
}

impl Pass for ConvToGemm {
    fn name(&self) -> &'static str {
        "conv-to-gemm"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, PassError> {
        let order = g.topo_order().map_err(fail)?;
        let mut changed = false;
        for id in order {
            let node = g.node(id);
            if !node.dtype.is_float() {
                continue;
            }
            let ops = g.operands(id);
            let y = match node.op.clone() {
                Op::Conv2d { geom } if geom.groups == 1 => {
                    let k = &g.node(ops[1]).shape.0;
                    if k.len() == 4 && geom.implicit_gemm(k[2], k[3]) {
                        continue; // the code generator's implicit GEMM
                    }
                    lower(g, ops[0], ops[1], geom)
                }
                Op::Conv2dWeightGrad { geom, kernel_hw } if geom.groups == 1 => {
                    lower_weight_grad(g, ops[0], ops[1], geom, kernel_hw)
                }
                Op::Conv2dInputGrad { geom, input_hw } if geom.groups == 1 => {
                    lower_input_grad(g, ops[0], ops[1], geom, input_hw)
                }
                _ => continue,
            }
            .map_err(fail)?;
            g.replace_all_uses(id, y);
            g.remove_node(id);
            changed = true;
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pass;
    use mmada_ir::DType;

    /// Convolutions with kernel ≤ stride lower without a concatenation of taps, forward and
    /// both gradients; a 3×3 stride-2 one still concatenates its 9 taps.
    #[test]
    fn disjoint_patches_need_no_concatenation() {
        let concats = |k: usize, s: usize| {
            let mut g = Graph::new();
            let x = g.input("x", DType::F32, [2, 3, 16, 16]).unwrap();
            let w = g.input("w", DType::F32, [4, 3, k, k]).unwrap();
            let geom = ConvGeom {
                stride: [s, s],
                padding: [0; 4],
                groups: 1,
            };
            let y = g.conv2d(x, w, geom).unwrap();
            let ys = g.node(y).shape.clone();
            let dy = g.input("dy", DType::F32, ys).unwrap();
            let dx = g
                .add(
                    Op::Conv2dInputGrad {
                        geom,
                        input_hw: [16, 16],
                    },
                    &[dy, w],
                )
                .unwrap();
            let dw = g
                .add(
                    Op::Conv2dWeightGrad {
                        geom,
                        kernel_hw: [k, k],
                    },
                    &[x, dy],
                )
                .unwrap();
            for (n, id) in [("y", y), ("dx", dx), ("dw", dw)] {
                g.set_output(n, id).unwrap();
            }
            ConvToGemm.run(&mut g).unwrap();
            g.node_ids()
                .into_iter()
                .filter(|&id| matches!(g.node(id).op, Op::Concat { .. }))
                .count()
        };
        assert_eq!(concats(4, 4), 0);
        assert_eq!(concats(2, 3), 0);
        assert_eq!(
            concats(3, 2),
            2,
            "forward and weight gradient concatenate their taps"
        );
    }
}
