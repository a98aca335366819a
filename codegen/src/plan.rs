//! The execution plan: buffers, input/output bindings and the kernel launch sequence.
//!
//! Every node gets a buffer, except reshapes, which alias their operand's buffer (buffers are
//! dense row-major, so a reshape is free). Constants are buffers initialised from the
//! artifact's constant blob. Identical kernels (same KIR up to the name) are emitted once.

use crate::kernels;
use crate::kir::Kernel;
use crate::CodegenError;
use mmada_ir::{DType, Graph, NodeId, Op, Role, Shape, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// What a buffer holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum BufferKind {
    /// Bound to a graph input by name.
    Input {
        /// Input name.
        name: String,
    },
    /// Initialised from the constant blob at `[offset, offset + bytes)`.
    Constant {
        /// Byte offset in the blob.
        offset: u64,
        /// Byte length.
        bytes: u64,
    },
    /// Written by a kernel.
    Intermediate,
}

/// One device/host buffer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferDesc {
    /// Element dtype.
    pub dtype: DType,
    /// Number of elements.
    pub len: u64,
    /// What it holds.
    pub kind: BufferKind,
}

fn data_role() -> Role {
    Role::Data
}

/// A named tensor bound to a buffer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// Tensor name.
    pub name: String,
    /// Buffer index.
    pub buffer: usize,
    /// Dtype.
    pub dtype: DType,
    /// Shape.
    pub shape: Shape,
    /// For inputs: data (fed every run), parameter or state (may stay resident between runs).
    #[serde(default = "data_role")]
    pub role: Role,
}

/// After a run, output buffer `from` is copied into input buffer `to` (in-place update).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    /// Output name.
    pub output: String,
    /// Input name.
    pub input: String,
    /// Source buffer.
    pub from: usize,
    /// Destination buffer.
    pub to: usize,
}

/// One kernel launch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    /// Kernel symbol.
    pub kernel: String,
    /// Buffer index of each kernel parameter, in order.
    pub args: Vec<usize>,
    /// Number of blocks.
    pub grid: u64,
    /// Threads per block.
    pub block: u32,
    /// The graph node this launch computes (for errors and profiles).
    pub node: String,
}

/// A complete execution plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Buffers, indexed by position.
    pub buffers: Vec<BufferDesc>,
    /// Graph inputs.
    pub inputs: Vec<Binding>,
    /// Graph outputs.
    pub outputs: Vec<Binding>,
    /// Launches in execution order.
    pub launches: Vec<Launch>,
    /// In-place updates applied after the launches.
    #[serde(default)]
    pub updates: Vec<Update>,
}

/// A plan with its kernels and constant data.
pub struct Planned {
    /// The plan.
    pub plan: Plan,
    /// Distinct kernels, in first-use order.
    pub kernels: Vec<Kernel>,
    /// Constant blob.
    pub constants: Vec<u8>,
}

fn kernel_hash(k: &Kernel) -> Result<String, CodegenError> {
    let mut anon = k.clone();
    anon.name.clear();
    let json = serde_json::to_vec(&anon).map_err(|e| CodegenError::Kir(e.to_string()))?;
    Ok(hex::encode(&Sha256::digest(&json)[..6]))
}

fn kind_name(op: &Op) -> &'static str {
    match op {
        Op::MatMul => "matmul",
        Op::Fused { body } if matches!(body.nodes[body.root].op, Op::Reduce { .. }) => {
            "fused_reduce"
        }
        Op::Fused { .. } => "fused",
        Op::Reduce { .. } => "reduce",
        Op::Permute { .. } | Op::Broadcast { .. } | Op::Reshape { .. } => "copy",
        _ => "elementwise",
    }
}

/// Plans an optimised graph.
pub fn plan(g: &Graph) -> Result<Planned, CodegenError> {
    let mut plan = Plan::default();
    let mut kernels: Vec<Kernel> = Vec::new();
    let mut by_hash: HashMap<String, String> = HashMap::new();
    let mut constants: Vec<u8> = Vec::new();
    let mut buf_of: HashMap<NodeId, usize> = HashMap::new();
    for id in g.topo_order()? {
        let n = g.node(id);
        if n.dtype == DType::F64 {
            return Err(CodegenError::Unsupported {
                node: g.describe(id),
                msg: "f64 tensors are for the reference interpreter (gradient checks); compile \
                      in f32, bf16 or f16"
                    .into(),
            });
        }
        let new_buffer = |plan: &mut Plan, kind: BufferKind| {
            plan.buffers.push(BufferDesc {
                dtype: n.dtype,
                len: n.shape.numel() as u64,
                kind,
            });
            plan.buffers.len() - 1
        };
        match &n.op {
            Op::Input { name, role } => {
                let b = new_buffer(&mut plan, BufferKind::Input { name: name.clone() });
                plan.inputs.push(Binding {
                    name: name.clone(),
                    buffer: b,
                    dtype: n.dtype,
                    shape: n.shape.clone(),
                    role: *role,
                });
                buf_of.insert(id, b);
            }
            Op::Constant { value } => {
                let vals: Vec<f64> = (0..value.len()).map(|i| value.get_f64(i)).collect();
                let t = match (value, n.dtype) {
                    (mmada_ir::Literal::Int(v), DType::I64) => {
                        Tensor::from_i64(n.shape.clone(), v.clone())?
                    }
                    _ => Tensor::from_f64(n.dtype, n.shape.clone(), &vals)?,
                };
                let bytes = t.to_le_bytes();
                // Keep every constant 8-byte aligned in the blob.
                while !constants.len().is_multiple_of(8) {
                    constants.push(0);
                }
                let offset = constants.len() as u64;
                constants.extend_from_slice(&bytes);
                let b = new_buffer(
                    &mut plan,
                    BufferKind::Constant {
                        offset,
                        bytes: bytes.len() as u64,
                    },
                );
                buf_of.insert(id, b);
            }
            Op::Reshape { .. } => {
                let src = g.operands(id)[0];
                buf_of.insert(id, buf_of[&src]);
            }
            op => {
                let b = new_buffer(&mut plan, BufferKind::Intermediate);
                buf_of.insert(id, b);
                if n.shape.numel() == 0 {
                    continue;
                }
                let provisional = format!("{}_{}", kind_name(op), id.index());
                let Some(mut k) = kernels::kernel_for_node(g, id, &provisional)? else {
                    continue;
                };
                let h = kernel_hash(&k)?;
                let name = match by_hash.get(&h) {
                    Some(existing) => existing.clone(),
                    None => {
                        let name = format!("{}_{h}", kind_name(op));
                        k.name = name.clone();
                        by_hash.insert(h, name.clone());
                        kernels.push(k.clone());
                        name
                    }
                };
                let mut args: Vec<usize> = g.operands(id).iter().map(|o| buf_of[o]).collect();
                args.push(b);
                plan.launches.push(Launch {
                    kernel: name,
                    args,
                    grid: k.grid,
                    block: k.block,
                    node: g.describe(id),
                });
            }
        }
    }
    for (name, id) in g.outputs() {
        let n = g.node(*id);
        plan.outputs.push(Binding {
            name: name.clone(),
            buffer: buf_of[id],
            dtype: n.dtype,
            shape: n.shape.clone(),
            role: Role::Data,
        });
    }
    for (out, inp) in g.updates() {
        let from = plan
            .outputs
            .iter()
            .find(|b| &b.name == out)
            .map(|b| b.buffer);
        let to = plan
            .inputs
            .iter()
            .find(|b| &b.name == inp)
            .map(|b| b.buffer);
        if let (Some(from), Some(to)) = (from, to) {
            if from != to {
                plan.updates.push(Update {
                    output: out.clone(),
                    input: inp.clone(),
                    from,
                    to,
                });
            }
        }
    }
    Ok(Planned {
        plan,
        kernels,
        constants,
    })
}
