//! The reference interpreter: the semantics of every op, on host tensors.
//!
//! Floating-point elementwise ops compute in f32 (as compiled kernels do) and round the result to
//! the node's storage dtype; reductions and matrix products accumulate in f64 and round once.
//! Integer arithmetic wraps at the storage width. The interpreter is the oracle every compiled
//! kernel is tested against, so it favours obviousness over speed.

mod attention;
mod conv;
pub mod elementwise;
mod index_ops;
mod matmul;
mod movement;
mod reduce;
mod remask;

use crate::error::{IrError, Result};
use crate::fused::{FusedBody, Operand};
use crate::{DType, Graph, Literal, Op, Shape, Tensor};
use indexmap::IndexMap;
use std::collections::HashMap;

/// Runs the graph on the given inputs (by input name) and returns the outputs by name.
/// Missing, extra, mistyped or misshapen inputs are errors naming the input.
pub fn interpret(g: &Graph, inputs: &IndexMap<String, Tensor>) -> Result<IndexMap<String, Tensor>> {
    for name in inputs.keys() {
        if g.input_by_name(name).is_none() {
            return Err(IrError::Input {
                name: name.clone(),
                msg: "the graph has no input of this name".into(),
            });
        }
    }
    let mut values: HashMap<crate::NodeId, Tensor> = HashMap::new();
    for id in g.topo_order()? {
        let n = g.node(id);
        let value = match &n.op {
            Op::Input { name, .. } => {
                let t = inputs.get(name).ok_or_else(|| IrError::Input {
                    name: name.clone(),
                    msg: format!("missing (expected {}{})", n.dtype, n.shape),
                })?;
                if t.dtype() != n.dtype || t.shape() != &n.shape {
                    return Err(IrError::Input {
                        name: name.clone(),
                        msg: format!(
                            "expected {}{}, got {}{}",
                            n.dtype,
                            n.shape,
                            t.dtype(),
                            t.shape()
                        ),
                    });
                }
                t.clone()
            }
            op => {
                let operands: Vec<&Tensor> = g.operands(id).iter().map(|o| &values[o]).collect();
                eval_op(op, n.dtype, &n.shape, &operands).map_err(|e| match e {
                    IrError::Eval { msg, .. } => IrError::Eval {
                        node: g.describe(id),
                        op: op.name(),
                        msg,
                    },
                    other => other,
                })?
            }
        };
        values.insert(id, value);
    }
    let mut out = IndexMap::new();
    for (name, id) in g.outputs() {
        out.insert(name.clone(), values[id].clone());
    }
    Ok(out)
}

/// Evaluates one op whose result has `dtype` and `shape` on operand tensors.
pub fn eval_op(op: &Op, dtype: DType, shape: &Shape, operands: &[&Tensor]) -> Result<Tensor> {
    match op {
        Op::Input { name, .. } => Err(eval_err(format!("input '{name}' has no value"))),
        Op::Constant { value } => literal_tensor(value, dtype, shape),
        Op::Unary { op } => elementwise::unary(*op, operands[0]),
        Op::Binary { op } => elementwise::binary(*op, operands[0], operands[1]),
        Op::Compare { op } => elementwise::compare(*op, operands[0], operands[1]),
        Op::Where => elementwise::select(operands[0], operands[1], operands[2]),
        Op::Cast { to } => elementwise::cast(operands[0], *to),
        Op::Reduce {
            op,
            axes,
            keep_dims,
        } => reduce::reduce(*op, operands[0], axes, *keep_dims, shape),
        Op::MatMul => matmul::matmul(operands[0], operands[1], shape),
        Op::Reshape { shape } => operands[0].clone().reshaped(shape.clone()),
        Op::Permute { perm } => movement::permute(operands[0], perm, shape),
        Op::Broadcast { shape } => movement::broadcast(operands[0], shape),
        Op::Iota { axis } => index_ops::iota(dtype, shape, *axis),
        Op::Rng { dist, stream } => {
            let seed = operands[0].to_i64_vec()[0];
            let offset = operands[1].to_i64_vec()[0];
            let v: Vec<f32> = (0..shape.numel() as u64)
                .map(|i| crate::philox::sample(*dist, seed, offset, *stream, i))
                .collect();
            Tensor::from_f32(shape.clone(), v)
        }
        Op::Slice { start, .. } => index_ops::slice(operands[0], start, shape),
        Op::Pad { lo, value, .. } => index_ops::pad(operands[0], lo, *value, shape),
        Op::Concat { axis, .. } => index_ops::concat(operands, *axis, shape),
        Op::Gather { axis } => index_ops::gather(operands[0], operands[1], *axis),
        Op::ScatterAdd { axis } => {
            index_ops::scatter_add(operands[0], operands[1], operands[2], *axis)
        }
        Op::TopK { k, axis } => index_ops::topk(operands[0], *k, *axis, shape),
        Op::CumSum { axis, reverse } => index_ops::cumsum(operands[0], *axis, *reverse),
        Op::Softmax { axis } => reduce::softmax(operands[0], *axis),
        Op::Conv2d { geom } => conv::conv2d(operands[0], operands[1], geom, shape),
        Op::Conv2dInputGrad { geom, .. } => {
            conv::conv2d_input_grad(operands[0], operands[1], geom, shape)
        }
        Op::Conv2dWeightGrad { geom, .. } => {
            conv::conv2d_weight_grad(operands[0], operands[1], geom, shape)
        }
        Op::Remask {
            mask_id,
            remasking,
            stream,
        } => remask::remask(operands, *mask_id, *remasking, *stream),
        Op::Attention { scale, masked } => attention::attention(operands, *scale, *masked),
        Op::AttentionGrad {
            scale,
            masked,
            part,
        } => attention::attention_grad(operands, *scale, *masked, *part),
        Op::Fused { body } => eval_fused(body, operands),
    }
}

/// Evaluates a fused body on its arguments, node by node.
pub fn eval_fused(body: &FusedBody, args: &[&Tensor]) -> Result<Tensor> {
    let mut vals: Vec<Tensor> = Vec::with_capacity(body.nodes.len());
    for n in &body.nodes {
        let ops: Vec<&Tensor> = n
            .operands
            .iter()
            .map(|o| match *o {
                Operand::Arg(a) => args[a],
                Operand::Node(j) => &vals[j],
            })
            .collect();
        let v = eval_op(&n.op, n.dtype, &n.shape, &ops)?;
        vals.push(v);
    }
    vals.into_iter()
        .nth(body.root)
        .ok_or_else(|| eval_err("fused body has no root".into()))
}

fn literal_tensor(value: &Literal, dtype: DType, shape: &Shape) -> Result<Tensor> {
    let vals: Vec<f64> = (0..value.len()).map(|i| value.get_f64(i)).collect();
    match (value, dtype) {
        (Literal::Int(v), DType::I64) => Tensor::from_i64(shape.clone(), v.clone()),
        _ => Tensor::from_f64(dtype, shape.clone(), &vals),
    }
}

pub(crate) fn eval_err(msg: String) -> IrError {
    IrError::Eval {
        node: String::new(),
        op: String::new(),
        msg,
    }
}
