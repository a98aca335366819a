//! Convolution as a matrix product (im2col + GEMM): every `conv2d` with one channel group
//! becomes a gather of the input patches into a `[C·kh·kw, OH·OW]` matrix (one fused copy
//! kernel) and a matrix product with the weight viewed as `[O, C·kh·kw]`, which both targets
//! run with their matmul template (the host through its GEMM library call). The direct
//! one-thread-per-output kernel remains for grouped convolutions and for the gradients
//! (`conv2d_input_grad`, `conv2d_weight_grad` are untouched).
//!
//! The patch matrix is a concatenation of the kh·kw shifted slices of the padded input. Strided
//! convolutions need no strided slice: the padded input `[N, C, s·R, s·Q]` is viewed as
//! `[N, C, R, s, Q, s]`, and tap `(i, j)` is the plain slice `[i / s .. i / s + OH, i % s,
//! j / s .. j / s + OW, j % s]` of that view (row `s·oh + i = s·(oh + i / s) + i % s`). Because
//! the padded input has kh·kw users, the fuser computes it once (with the norm and activation
//! before it) and the patch kernel only copies. (A single gather with iota-computed offsets was
//! tried: its per-element index arithmetic made the patch kernel 5× slower on MAGVIT's 256²
//! layers, and the fuser inlined the norm into it, recomputing it per tap.)
//! A 1×1 convolution with stride 1 and no padding is the product with the input itself.

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

/// `y = conv2d(x, w)` rebuilt from reshapes, pads, slices, a concat and a matmul.
fn lower(g: &mut Graph, x: NodeId, w: NodeId, geom: ConvGeom) -> Result<NodeId, mmada_ir::IrError> {
    let xs = g.try_node(x)?.shape.clone();
    let ws = g.try_node(w)?.shape.clone();
    let (n, c, h, wd) = (xs.0[0], xs.0[1], xs.0[2], xs.0[3]);
    let (o, kh, kw) = (ws.0[0], ws.0[2], ws.0[3]);
    let (sh, sw) = (geom.stride[0], geom.stride[1]);
    let [pt, _, pl, _] = geom.padding;
    let Some((oh, ow)) = geom.output_hw(h, wd, kh, kw) else {
        return Err(mmada_ir::IrError::BadOperands {
            op: "conv2d".into(),
            msg: "empty output".into(),
            operands: String::new(),
        });
    };
    let p = oh * ow;
    let k = c * kh * kw;
    let cols = if kh == 1 && kw == 1 && sh == 1 && sw == 1 && geom.padding == [0; 4] {
        g.reshape(x, [n, c, p])?
    } else {
        // Rows (columns) the taps can reach, rounded up to whole strides; padding the
        // reference adds beyond them is never read and is cut off.
        let r = oh + (kh - 1) / sh;
        let q = ow + (kw - 1) / sw;
        let (rows, cols) = (sh * r, sw * q);
        let hi_r = rows.saturating_sub(h + pt);
        let hi_c = cols.saturating_sub(wd + pl);
        let padded = if pt + hi_r + pl + hi_c > 0 {
            g.pad(x, &[0, 0, pt, pl], &[0, 0, hi_r, hi_c], 0.0)?
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
        let view = g.reshape(cropped, [n, c, r, sh, q, sw])?;
        let mut taps = Vec::with_capacity(kh * kw);
        for i in 0..kh {
            for j in 0..kw {
                let (r0, a) = (i / sh, i % sh);
                let (c0, b) = (j / sw, j % sw);
                let slice = Op::Slice {
                    start: vec![0, 0, r0, a, c0, b],
                    end: vec![n, c, r0 + oh, a + 1, c0 + ow, b + 1],
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
        g.reshape(stacked, [n, k, p])?
    };
    let w2 = g.reshape(w, [o, k])?;
    let y = if n == 1 {
        let c2 = g.reshape(cols, [k, p])?;
        g.add(Op::MatMul, &[w2, c2])?
    } else {
        let c2 = g.permute(cols, &[1, 0, 2])?;
        let c2 = g.reshape(c2, [k, n * p])?;
        let y = g.add(Op::MatMul, &[w2, c2])?;
        let y = g.reshape(y, [o, n, p])?;
        g.permute(y, &[1, 0, 2])?
    };
    g.reshape(y, [n, o, oh, ow])
}

impl Pass for ConvToGemm {
    fn name(&self) -> &'static str {
        "conv-to-gemm"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, PassError> {
        let order = g.topo_order().map_err(fail)?;
        let mut changed = false;
        for id in order {
            let Op::Conv2d { geom } = g.node(id).op.clone() else {
                continue;
            };
            if geom.groups != 1 || !g.node(id).dtype.is_float() {
                continue;
            }
            let ops = g.operands(id);
            let y = lower(g, ops[0], ops[1], geom).map_err(fail)?;
            g.replace_all_uses(id, y);
            g.remove_node(id);
            changed = true;
        }
        Ok(changed)
    }
}
