//! Kernel templates: graph nodes → KIR kernels.
//!
//! Each node belongs to one template family ([`template_of`], keys in [`crate::template`]); its
//! kernel is built from the configuration the [`Choices`] resolve for that family.
//!
//! - [`fused`]: fused groups and single elementwise / view / reduction nodes;
//! - [`softmax`]: row softmaxes; [`matmul`]: batched matrix products (on tensor cores for bf16:
//!   [`tensor_core_matmul`]); [`conv`]: convolutions;
//! - [`scan`]: cumulative sums and top-k; [`scatter`]: scatter-adds; [`rng`]: Philox streams;
//! - [`remask`]: the fused confidence top-k remask of a sampler step;
//! - [`attention`]: fused attention (online softmax over key tiles; on tensor cores for bf16:
//!   [`tensor_core_attention`]).

pub mod attention;
pub mod attention_grad;
pub mod conv;
pub mod fused;
pub mod index;
pub mod matmul;
pub mod remask;
pub mod rng;
pub mod rows;
pub mod scan;
pub mod scatter;
pub mod softmax;
pub mod tensor_core_attention;
pub mod tensor_core_matmul;

use crate::kir::Kernel;
use crate::template::{self, Choices, Template, TemplateUse};
use crate::CodegenError;
use mmada_ir::{BodyNode, FusedBody, Graph, NodeId, Op, Operand};
use std::collections::HashSet;

/// The template family of the kernel computing node `id`.
pub fn template_of(g: &Graph, id: NodeId) -> &'static Template {
    let root = |op: &Op| -> &'static Template {
        match op {
            Op::Reduce { .. } => &template::REDUCTION,
            Op::Softmax { .. } => &template::SOFTMAX,
            _ => &template::ELEMENTWISE,
        }
    };
    match &g.node(id).op {
        Op::MatMul => &template::MATMUL,
        Op::Conv2d { .. } if conv_shape(g, id).is_some() => &template::CONV_GEMM,
        Op::Conv2d { .. } | Op::Conv2dInputGrad { .. } | Op::Conv2dWeightGrad { .. } => {
            &template::CONV
        }
        Op::TopK { .. } | Op::CumSum { .. } => &template::SCAN,
        Op::ScatterAdd { .. } | Op::Gather { .. } => &template::INDEX,
        Op::Rng { .. } => &template::RNG,
        Op::Remask { .. } => &template::REMASK,
        Op::Attention { .. } => &template::ATTENTION,
        Op::AttentionGrad { .. } => &template::ATTENTION_GRAD,
        Op::Fused { body } => root(&body.nodes[body.root].op),
        op => root(op),
    }
}

/// The configuration of `t` for node `id` under `choices` (looked up by the node's tune key),
/// as an error naming the node when it is invalid.
fn resolve(
    g: &Graph,
    id: NodeId,
    t: &Template,
    choices: &Choices,
) -> Result<TemplateUse, CodegenError> {
    let key = crate::tune::key::tune_key(g, id, t);
    choices
        .config_for(t, Some(&key))
        .map_err(|msg| CodegenError::Unsupported {
            node: g.describe(id),
            msg,
        })
}

/// The configuration the kernel of node `id` is built from under `choices`.
pub fn node_config(g: &Graph, id: NodeId, choices: &Choices) -> Result<TemplateUse, CodegenError> {
    resolve(g, id, template_of(g, id), choices)
}

/// A host-specific variant of the node's kernel, when one is better on a CPU: reductions over
/// more than `host_lanes` elements use lane-parallel accumulators, softmaxes one thread per
/// row, and bf16 products and attentions whose GPU kernel uses tensor cores the SIMT kernel
/// (the emulated tensor-core kernel is exact but slow; tests run it through the GPU launch).
pub fn host_variant(
    g: &Graph,
    id: NodeId,
    name: &str,
    absorbed: &HashSet<NodeId>,
    choices: &Choices,
) -> Result<Option<Kernel>, CodegenError> {
    let t = template_of(g, id);
    if t.key == template::MATMUL.key {
        let used = resolve(g, id, t, choices)?;
        let n = g.node(id);
        if used.config.get("mma") != 1 || !tensor_core_matmul::applies(n.dtype) {
            return Ok(None);
        }
        let mut k = matmul::matmul_kernel(
            name,
            matmul_shape(g, id, absorbed),
            n.dtype,
            used.config.get("tile"),
        );
        k.template = Some(used);
        return Ok(Some(k));
    }
    if t.key == template::ATTENTION.key {
        let used = resolve(g, id, t, choices)?;
        let n = g.node(id);
        let Some(a) = attention_shape(g, id) else {
            return Ok(None);
        };
        if used.config.get("mma") != 1 || !tensor_core_attention::applies(&a, n.dtype) {
            return Ok(None);
        }
        let mut k = attention::attention_kernel(
            name,
            a,
            n.dtype,
            used.config.get("block"),
            used.config.get("key_tile"),
        );
        k.template = Some(used);
        return Ok(Some(k));
    }
    if t.key != template::REDUCTION.key && t.key != template::SOFTMAX.key {
        return Ok(None);
    }
    let used = resolve(g, id, t, choices)?;
    let lanes = used.config.get("host_lanes");
    let n = g.node(id);
    let body = match &n.op {
        Op::Fused { body } => (**body).clone(),
        Op::Reduce { .. } | Op::Softmax { .. } => single_node_body(g, id),
        _ => return Ok(None),
    };
    let root = &body.nodes[body.root];
    let with_template = |mut k: Kernel| {
        k.template = Some(used.clone());
        Some(k)
    };
    if matches!(root.op, Op::Softmax { .. }) {
        return Ok(with_template(softmax::softmax_kernel_host(
            name, &body, lanes,
        )?));
    }
    let Op::Reduce { axes, .. } = &root.op else {
        return Ok(None);
    };
    let src_shape = match root.operands[0] {
        Operand::Arg(a) => body.args[a].1.clone(),
        Operand::Node(j) => body.nodes[j].shape.clone(),
    };
    let r: usize = axes.iter().map(|&a| src_shape.0[a]).product();
    let column = !axes.contains(&(src_shape.rank() - 1));
    if !column && (r as u64) <= lanes {
        return Ok(None);
    }
    Ok(with_template(fused::reduce_kernel_lanes(
        name, &body, lanes,
    )?))
}

/// Wraps one node in a one-node fused body whose arguments are its operands.
pub fn single_node_body(g: &Graph, id: NodeId) -> FusedBody {
    let n = g.node(id);
    let operands = g.operands(id);
    FusedBody {
        num_args: operands.len(),
        args: operands
            .iter()
            .map(|&o| (g.node(o).dtype, g.node(o).shape.clone()))
            .collect(),
        nodes: vec![BodyNode {
            op: n.op.clone(),
            dtype: n.dtype,
            shape: n.shape.clone(),
            operands: (0..operands.len()).map(Operand::Arg).collect(),
        }],
        root: 0,
    }
}

/// The matmul shape of a MatMul node; operands in `absorbed` are transposes read in place.
pub fn matmul_shape(g: &Graph, id: NodeId, absorbed: &HashSet<NodeId>) -> matmul::MatMulShape {
    let operands = g.operands(id);
    let (sa, sb) = (&g.node(operands[0]).shape, &g.node(operands[1]).shape);
    let r = sa.rank();
    matmul::MatMulShape {
        batch: sa.0[..r - 2].iter().product::<usize>() as u64,
        m: sa.0[r - 2] as u64,
        k: sa.0[r - 1] as u64,
        n: sb.0[r - 1] as u64,
        a_trans: absorbed.contains(&operands[0]),
        b_trans: absorbed.contains(&operands[1]),
    }
}

/// The implicit-GEMM shape of a convolution node, when it is one (see [`conv::ConvShape::of`]).
pub fn conv_shape(g: &Graph, id: NodeId) -> Option<conv::ConvShape> {
    let Op::Conv2d { geom } = &g.node(id).op else {
        return None;
    };
    let operands = g.operands(id);
    conv::ConvShape::of(&g.node(operands[0]).shape, &g.node(operands[1]).shape, geom)
}

/// The shape of an attention node (None for other nodes).
pub fn attention_shape(g: &Graph, id: NodeId) -> Option<attention::AttentionShape> {
    let Op::Attention { scale, masked } = g.node(id).op else {
        return None;
    };
    let operands = g.operands(id);
    let shape = |i: usize| &g.node(operands[i]).shape;
    let dims = mmada_ir::AttentionDims::of(shape(0), shape(1), shape(2)).ok()?;
    Some(attention::AttentionShape::new(&dims, scale, masked))
}

/// The shape and piece of an attention-backward node (None for other nodes). The statistics
/// piece has no values: its `dv` is 0.
pub fn attention_grad_shape(
    g: &Graph,
    id: NodeId,
) -> Option<(attention::AttentionShape, mmada_ir::AttentionPart)> {
    let Op::AttentionGrad {
        scale,
        masked,
        part,
    } = g.node(id).op
    else {
        return None;
    };
    let operands = g.operands(id);
    let shape = |i: usize| &g.node(operands[i]).shape;
    let v = if part == mmada_ir::AttentionPart::Stats {
        1
    } else {
        2
    };
    let mut dims = mmada_ir::AttentionDims::of(shape(0), shape(1), shape(v)).ok()?;
    if part == mmada_ir::AttentionPart::Stats {
        dims.dv = 0;
    }
    Some((attention::AttentionShape::new(&dims, scale, masked), part))
}

/// The kernel computing node `id`, whose operands are the kernel's first parameters (in slot
/// order) and whose result is the last parameter, built from its template's configuration
/// under `choices` (recorded in [`Kernel::template`]). `None` for nodes that need no kernel.
/// Matmul operands in `absorbed` (transposes only matmuls use) are read transposed from the
/// transpose's own operand.
pub fn kernel_for_node(
    g: &Graph,
    id: NodeId,
    name: &str,
    absorbed: &HashSet<NodeId>,
    choices: &Choices,
) -> Result<Option<Kernel>, CodegenError> {
    if matches!(g.node(id).op, Op::Input { .. } | Op::Constant { .. }) {
        return Ok(None);
    }
    let used = resolve(g, id, template_of(g, id), choices)?;
    let k = build(g, id, name, absorbed, &used.config)?;
    Ok(k.map(|mut k| {
        k.template = Some(used);
        k
    }))
}

/// Builds the kernel of node `id` from a configuration of its template.
fn build(
    g: &Graph,
    id: NodeId,
    name: &str,
    absorbed: &HashSet<NodeId>,
    config: &template::Config,
) -> Result<Option<Kernel>, CodegenError> {
    let block = config.get("block");
    let n = g.node(id);
    let unsupported = |msg: &str| CodegenError::Unsupported {
        node: g.describe(id),
        msg: msg.to_string(),
    };
    let operands = g.operands(id);
    let shape_of = |i: usize| g.node(operands[i]).shape.clone();
    let dtype_of = |i: usize| g.node(operands[i]).dtype;
    if let Some(s) = conv_shape(g, id) {
        let tile = config.get("tile");
        return Ok(Some(conv::conv_gemm_kernel(name, s, n.dtype, tile)));
    }
    let body = match &n.op {
        Op::Input { .. } | Op::Constant { .. } => return Ok(None),
        Op::TopK { k, axis } => {
            return Ok(Some(scan::topk_kernel(
                name,
                dtype_of(0),
                &shape_of(0),
                *axis,
                *k,
                block,
            )))
        }
        Op::CumSum { axis, reverse } => {
            return Ok(Some(scan::cumsum_kernel(
                name, n.dtype, &n.shape, *axis, *reverse, block,
            )))
        }
        Op::ScatterAdd { axis } => {
            return Ok(Some(scatter::scatter_add_kernel(
                name,
                n.dtype,
                &n.shape,
                dtype_of(1),
                &shape_of(1),
                *axis,
                block,
            )))
        }
        Op::Conv2d { geom } => {
            return Ok(Some(conv::conv2d_kernel(
                name,
                n.dtype,
                &shape_of(0),
                &shape_of(1),
                &n.shape,
                *geom,
                block,
            )))
        }
        Op::Conv2dInputGrad { geom, .. } => {
            return Ok(Some(conv::conv2d_input_grad_kernel(
                name,
                n.dtype,
                &shape_of(0),
                &shape_of(1),
                &n.shape,
                *geom,
                block,
            )))
        }
        Op::Conv2dWeightGrad { geom, .. } => {
            return Ok(Some(conv::conv2d_weight_grad_kernel(
                name,
                n.dtype,
                &shape_of(0),
                &shape_of(1),
                &n.shape,
                *geom,
                block,
            )))
        }
        Op::MatMul => {
            let shape = matmul_shape(g, id, absorbed);
            if config.get("mma") == 1 && tensor_core_matmul::applies(n.dtype) {
                return Ok(Some(tensor_core_matmul::tensor_core_matmul_kernel(
                    name, shape,
                )));
            }
            return Ok(Some(matmul::matmul_kernel(
                name,
                shape,
                n.dtype,
                config.get("tile"),
            )));
        }
        Op::Remask {
            mask_id,
            remasking,
            stream,
        } => {
            let s = shape_of(0);
            let dims = (s.0[0] as u64, s.0[1] as u64, s.0[2] as u64);
            return Ok(Some(remask::remask_kernel(
                name, dims, *mask_id, *remasking, *stream, block,
            )));
        }
        Op::Attention { .. } => {
            let Some(a) = attention_shape(g, id) else {
                return Err(unsupported("attention operands do not fit the op"));
            };
            if config.get("mma") == 1 && tensor_core_attention::applies(&a, n.dtype) {
                return Ok(Some(tensor_core_attention::tensor_core_attention_kernel(
                    name, a,
                )));
            }
            return Ok(Some(attention::attention_kernel(
                name,
                a,
                n.dtype,
                block,
                config.get("key_tile"),
            )));
        }
        Op::AttentionGrad { .. } => {
            let Some((a, part)) = attention_grad_shape(g, id) else {
                return Err(unsupported("attention backward operands do not fit the op"));
            };
            return Ok(Some(attention_grad::attention_grad_kernel(
                name,
                a,
                part,
                dtype_of(0),
                block,
                config.get("key_tile"),
            )));
        }
        Op::Fused { body } => (**body).clone(),
        Op::Unary { .. }
        | Op::Binary { .. }
        | Op::Compare { .. }
        | Op::Where
        | Op::Cast { .. }
        | Op::Reduce { .. }
        | Op::Reshape { .. }
        | Op::Permute { .. }
        | Op::Broadcast { .. }
        | Op::Iota { .. }
        | Op::Rng { .. }
        | Op::Slice { .. }
        | Op::Pad { .. }
        | Op::Concat { .. }
        | Op::Gather { .. }
        | Op::Softmax { .. } => single_node_body(g, id),
    };
    let k = match body.nodes[body.root].op {
        Op::Reduce { .. } => fused::reduce_kernel(name, &body, block),
        Op::Softmax { .. } => softmax::softmax_kernel(name, &body, block),
        _ => fused::elementwise_kernel(name, &body, block),
    }
    .map_err(|e| match e {
        CodegenError::Unsupported { msg, .. } => unsupported(&msg),
        other => other,
    })?;
    Ok(Some(k))
}
