//! Reverse-mode automatic differentiation as a graph transform.
//!
//! [`grad`] appends the backward graph of a scalar loss to the same graph and returns one
//! gradient node per requested node. It runs before the optimisation passes, so fusion and CSE
//! see forward and backward together. [`vjp`] is the single table of vector–Jacobian products:
//! one `match` arm per op (exhaustive, so a new op must state its rule).

use crate::error::{IrError, Result};
use crate::{BinaryOp, CompareOp, DType, Graph, NodeId, Op, ReduceOp, Shape, UnaryOp};
use std::collections::{HashMap, HashSet};

fn err(g: &Graph, id: NodeId, msg: &str) -> IrError {
    IrError::Verify {
        node: g.describe(id),
        op: g.node(id).op.name(),
        msg: format!("autodiff: {msg}"),
    }
}

/// Gradients of the scalar `loss` with respect to each node of `wrt` (zeros for nodes the loss
/// does not depend on). The backward nodes are appended to `g`.
pub fn grad(g: &mut Graph, loss: NodeId, wrt: &[NodeId]) -> Result<Vec<NodeId>> {
    let ln = g.try_node(loss)?.clone();
    if ln.shape.numel() != 1 || !ln.dtype.is_float() {
        return Err(err(g, loss, "the loss must be a float scalar"));
    }
    // Nodes on some path from a wrt node to the loss.
    let mut fwd: HashSet<NodeId> = HashSet::new();
    let mut stack: Vec<NodeId> = wrt.to_vec();
    while let Some(n) = stack.pop() {
        if fwd.insert(n) {
            stack.extend(g.users(n).into_iter().map(|(u, _)| u));
        }
    }
    let mut relevant: HashSet<NodeId> = HashSet::new();
    let mut stack = vec![loss];
    while let Some(n) = stack.pop() {
        if fwd.contains(&n) && relevant.insert(n) {
            stack.extend(g.operands(n));
        }
    }
    let order: Vec<NodeId> = g
        .topo_order()?
        .into_iter()
        .filter(|n| relevant.contains(n))
        .collect();
    let mut grads: HashMap<NodeId, NodeId> = HashMap::new();
    if relevant.contains(&loss) {
        let one = g.full(ln.dtype, 1.0, ln.shape.clone())?;
        grads.insert(loss, one);
    }
    for &n in order.iter().rev() {
        let Some(&gy) = grads.get(&n) else { continue };
        let operands = g.operands(n);
        for (slot, &o) in operands.iter().enumerate() {
            if !relevant.contains(&o) || !g.node(o).dtype.is_float() {
                continue;
            }
            if let Some(c) = vjp(g, n, gy, slot)? {
                let acc = match grads.get(&o) {
                    Some(&prev) => g.add2(prev, c)?,
                    None => c,
                };
                grads.insert(o, acc);
            }
        }
    }
    wrt.iter()
        .map(|&w| match grads.get(&w) {
            Some(&gw) => Ok(gw),
            None => {
                let n = g.try_node(w)?.clone();
                g.full(n.dtype, 0.0, n.shape)
            }
        })
        .collect()
}

/// Sums `gy` (of the broadcast shape) back to the shape `s_in` a broadcast started from.
fn unbroadcast(g: &mut Graph, gy: NodeId, s_in: &Shape) -> Result<NodeId> {
    let s_out = g.try_node(gy)?.shape.clone();
    let off = s_out.rank() - s_in.rank();
    let mut axes: Vec<i64> = (0..off as i64).collect();
    for d in 0..s_in.rank() {
        if s_in.0[d] == 1 && s_out.0[d + off] != 1 {
            axes.push((d + off) as i64);
        }
    }
    let r = if axes.is_empty() {
        gy
    } else {
        g.reduce(ReduceOp::Sum, gy, &axes, true)?
    };
    g.reshape(r, s_in.clone())
}

/// The vector–Jacobian product of node `n` for its operand in `slot`, given the gradient `gy`
/// of `n`'s result; `None` when the operand gets no gradient through this op.
pub fn vjp(g: &mut Graph, n: NodeId, gy: NodeId, slot: usize) -> Result<Option<NodeId>> {
    let node = g.node(n).clone();
    let ops = g.operands(n);
    let x = |i: usize| ops[i];
    let shape_of = |g: &Graph, i: NodeId| g.node(i).shape.clone();
    let dt = node.dtype;
    Ok(Some(match &node.op {
        Op::Input { .. } | Op::Constant { .. } | Op::Iota { .. } | Op::Rng { .. } => {
            return Ok(None)
        }
        Op::Unary { op } => {
            let xv = x(0);
            match op {
                UnaryOp::Neg => g.unary(UnaryOp::Neg, gy)?,
                UnaryOp::Abs => {
                    let zero = g.full(dt, 0.0, Shape::scalar())?;
                    let one = g.full(dt, 1.0, Shape::scalar())?;
                    let mone = g.full(dt, -1.0, Shape::scalar())?;
                    let pos = g.compare(CompareOp::Gt, xv, zero)?;
                    let neg = g.compare(CompareOp::Lt, xv, zero)?;
                    let sn = g.where_(neg, mone, zero)?;
                    let sign = g.where_(pos, one, sn)?;
                    g.mul(gy, sign)?
                }
                UnaryOp::Exp => g.mul(gy, n)?,
                UnaryOp::Log => g.div(gy, xv)?,
                UnaryOp::Sin => {
                    let c = g.unary(UnaryOp::Cos, xv)?;
                    g.mul(gy, c)?
                }
                UnaryOp::Cos => {
                    let s = g.unary(UnaryOp::Sin, xv)?;
                    let t = g.mul(gy, s)?;
                    g.unary(UnaryOp::Neg, t)?
                }
                UnaryOp::Sqrt => {
                    let t = g.div(gy, n)?;
                    g.binary_scalar(BinaryOp::Mul, t, 0.5)?
                }
                UnaryOp::Rsqrt => {
                    let y2 = g.mul(n, n)?;
                    let y3 = g.mul(y2, n)?;
                    let t = g.mul(gy, y3)?;
                    g.binary_scalar(BinaryOp::Mul, t, -0.5)?
                }
                UnaryOp::Recip => {
                    let y2 = g.mul(n, n)?;
                    let t = g.mul(gy, y2)?;
                    g.unary(UnaryOp::Neg, t)?
                }
                UnaryOp::Floor => g.full(dt, 0.0, node.shape.clone())?,
                UnaryOp::Sigmoid => {
                    let one = g.full(dt, 1.0, Shape::scalar())?;
                    let om = g.sub(one, n)?;
                    let d = g.mul(n, om)?;
                    g.mul(gy, d)?
                }
                UnaryOp::Not | UnaryOp::StopGradient => return Ok(None),
            }
        }
        Op::Binary { op } => {
            let (a, b) = (x(0), x(1));
            match (op, slot) {
                (BinaryOp::Add, _) => gy,
                (BinaryOp::Sub, 0) => gy,
                (BinaryOp::Sub, _) => g.unary(UnaryOp::Neg, gy)?,
                (BinaryOp::Mul, 0) => g.mul(gy, b)?,
                (BinaryOp::Mul, _) => g.mul(gy, a)?,
                (BinaryOp::Div, 0) => g.div(gy, b)?,
                (BinaryOp::Div, _) => {
                    let t = g.mul(gy, n)?;
                    let t = g.div(t, b)?;
                    g.unary(UnaryOp::Neg, t)?
                }
                (BinaryOp::Max | BinaryOp::Min, _) => {
                    // The larger (smaller) operand gets the gradient; ties split it evenly.
                    let (me, other) = if slot == 0 { (a, b) } else { (b, a) };
                    let cmp = if *op == BinaryOp::Max {
                        CompareOp::Gt
                    } else {
                        CompareOp::Lt
                    };
                    let wins = g.compare(cmp, me, other)?;
                    let ties = g.compare(CompareOp::Eq, me, other)?;
                    let one = g.full(dt, 1.0, Shape::scalar())?;
                    let half = g.full(dt, 0.5, Shape::scalar())?;
                    let zero = g.full(dt, 0.0, Shape::scalar())?;
                    let t = g.where_(ties, half, zero)?;
                    let w = g.where_(wins, one, t)?;
                    g.mul(gy, w)?
                }
                (BinaryOp::Rem | BinaryOp::And | BinaryOp::Or, _) => return Ok(None),
            }
        }
        Op::Compare { .. } | Op::TopK { .. } | Op::Remask { .. } => return Ok(None),
        Op::Attention { .. } => return g.attention_vjp(n, gy, slot),
        Op::AttentionGrad { .. } => {
            return Err(err(
                g,
                n,
                "attention's backward pieces have no gradient (no second derivatives of \
                 attention)",
            ))
        }
        Op::Where => {
            if slot == 0 {
                return Ok(None);
            }
            let zero = g.full(dt, 0.0, Shape::scalar())?;
            if slot == 1 {
                g.where_(x(0), gy, zero)?
            } else {
                g.where_(x(0), zero, gy)?
            }
        }
        Op::Cast { .. } => {
            let from = g.node(x(0)).dtype;
            if !from.is_float() || !dt.is_float() {
                return Ok(None);
            }
            g.cast(gy, from)?
        }
        Op::Reduce {
            op,
            axes,
            keep_dims,
        } => {
            let xs = shape_of(g, x(0));
            let kept = Shape(
                xs.dims()
                    .iter()
                    .enumerate()
                    .map(|(d, &v)| if axes.contains(&d) { 1 } else { v })
                    .collect(),
            );
            let gk = if *keep_dims {
                gy
            } else {
                g.reshape(gy, kept.clone())?
            };
            match op {
                ReduceOp::Sum => g.broadcast_to(gk, xs)?,
                ReduceOp::Max | ReduceOp::Min => {
                    let yk = if *keep_dims {
                        n
                    } else {
                        g.reshape(n, kept.clone())?
                    };
                    let yb = g.broadcast_to(yk, xs.clone())?;
                    let hit = g.compare(CompareOp::Eq, x(0), yb)?;
                    let hit = g.cast(hit, dt)?;
                    let ax: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
                    let cnt = g.reduce(ReduceOp::Sum, hit, &ax, true)?;
                    let share = g.div(gk, cnt)?;
                    let share = g.broadcast_to(share, xs)?;
                    g.mul(hit, share)?
                }
            }
        }
        Op::MatMul => {
            if slot == 0 {
                let bt = g.transpose(x(1))?;
                g.matmul(gy, bt)?
            } else {
                let at = g.transpose(x(0))?;
                g.matmul(at, gy)?
            }
        }
        Op::Reshape { .. } => {
            let s = shape_of(g, x(0));
            g.reshape(gy, s)?
        }
        Op::Permute { perm } => {
            let mut inv = vec![0; perm.len()];
            for (d, &p) in perm.iter().enumerate() {
                inv[p] = d;
            }
            g.permute(gy, &inv)?
        }
        Op::Broadcast { .. } => {
            let s = shape_of(g, x(0));
            unbroadcast(g, gy, &s)?
        }
        Op::Slice { start, end } => {
            let s = shape_of(g, x(0));
            let hi: Vec<usize> = (0..s.rank()).map(|d| s.0[d] - end[d]).collect();
            g.pad(gy, start, &hi, 0.0)?
        }
        Op::Pad { lo, .. } => {
            let s = shape_of(g, x(0));
            let end: Vec<usize> = (0..s.rank()).map(|d| lo[d] + s.0[d]).collect();
            g.add(
                Op::Slice {
                    start: lo.clone(),
                    end,
                },
                &[gy],
            )?
        }
        Op::Concat { axis, .. } => {
            let start: usize = ops[..slot].iter().map(|&o| g.node(o).shape.0[*axis]).sum();
            let len = g.node(ops[slot]).shape.0[*axis];
            g.slice_axis(gy, *axis as i64, start, start + len)?
        }
        Op::Gather { axis } => {
            if slot != 0 {
                return Ok(None);
            }
            let s = shape_of(g, x(0));
            let zeros = g.full(dt, 0.0, s)?;
            g.scatter_add(zeros, x(1), gy, *axis as i64)?
        }
        Op::ScatterAdd { axis } => match slot {
            0 => gy,
            1 => return Ok(None),
            _ => g.gather(gy, x(1), *axis as i64)?,
        },
        Op::Softmax { axis } => {
            // dx = y ⊙ (dy − Σ dy ⊙ y), the sum along the axis (PyTorch's softmax backward).
            let dy_y = g.mul(gy, n)?;
            let s = g.sum(dy_y, *axis as i64, true)?;
            let d = g.sub(gy, s)?;
            g.mul(n, d)?
        }
        Op::CumSum { axis, reverse } => g.add(
            Op::CumSum {
                axis: *axis,
                reverse: !reverse,
            },
            &[gy],
        )?,
        Op::Conv2d { geom } => {
            let xs = shape_of(g, x(0));
            let ws = shape_of(g, x(1));
            if slot == 0 {
                g.add(
                    Op::Conv2dInputGrad {
                        geom: *geom,
                        input_hw: [xs.0[2], xs.0[3]],
                    },
                    &[gy, x(1)],
                )?
            } else {
                g.add(
                    Op::Conv2dWeightGrad {
                        geom: *geom,
                        kernel_hw: [ws.0[2], ws.0[3]],
                    },
                    &[x(0), gy],
                )?
            }
        }
        Op::Conv2dInputGrad { geom, .. } => {
            // y = InputGrad(g, w) is bilinear in (g, w); its adjoints are the other two forms.
            let ws = shape_of(g, x(1));
            if slot == 0 {
                g.conv2d(gy, x(1), *geom)?
            } else {
                g.add(
                    Op::Conv2dWeightGrad {
                        geom: *geom,
                        kernel_hw: [ws.0[2], ws.0[3]],
                    },
                    &[gy, x(0)],
                )?
            }
        }
        Op::Conv2dWeightGrad { geom, .. } => {
            let xs = shape_of(g, x(0));
            if slot == 0 {
                g.add(
                    Op::Conv2dInputGrad {
                        geom: *geom,
                        input_hw: [xs.0[2], xs.0[3]],
                    },
                    &[x(1), gy],
                )?
            } else {
                g.conv2d(x(0), gy, *geom)?
            }
        }
        Op::Fused { .. } => {
            return Err(err(
                g,
                n,
                "fused ops are created after differentiation; differentiate the unfused graph",
            ))
        }
    }))
}

/// Convenience: the dtype a gradient of `dt` has (floats only).
pub fn grad_dtype(dt: DType) -> Option<DType> {
    dt.is_float().then_some(dt)
}
