//! The execution plan: buffers, input/output bindings and the kernel launch sequence.
//!
//! Every node gets a buffer, except reshapes, which alias their operand's buffer (buffers are
//! dense row-major, so a reshape is free). Constants are buffers initialised from the
//! artifact's constant blob. Identical kernels (same KIR up to the name) are emitted once.

use crate::kernels;
use crate::kir::{BlockStmt, BufRef, Kernel, Stmt};
use crate::template::Choices;
use crate::CodegenError;
use mmada_ir::{DType, Graph, NodeId, Op, Role, Shape, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};

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

/// After a run, output buffer `from` is copied into input buffer `to` (in-place update; when
/// `from == to` the kernel already wrote the input's buffer). Update outputs are not returned
/// by a run: read the input instead.
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

/// A routine of a well-kept library that computes a launch instead of a generated kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "library")]
pub enum LibraryCall {
    /// f32 batched matrix product on the host (the `gemm` crate): args are A, B, C.
    GemmF32(crate::kernels::matmul::MatMulShape),
    /// f32 stride-1 convolution on the host (shifted products on the `gemm` crate): args are
    /// x, w, y.
    ConvF32(crate::kernels::conv::ConvShape),
    /// f32 attention on the host (per head and block of query rows, the scores in a
    /// cache-sized scratch, products on the `gemm` crate): args are q, k, v[, key mask], out.
    AttentionF32(crate::kernels::attention::AttentionShape),
    /// A piece of f32 attention's backward on the host (the same blocking, products on the
    /// `gemm` crate): args are the op's operands, then out (the statistics piece's shape has
    /// `dv` 0).
    AttentionGradF32 {
        /// The attention's shape.
        shape: crate::kernels::attention::AttentionShape,
        /// Which piece.
        part: mmada_ir::AttentionPart,
    },
}

/// A generated kernel launched over a 1-D grid of 1-D blocks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelLaunch {
    /// Kernel symbol (in the host library and in every PTX module).
    pub kernel: String,
    /// Number of blocks.
    pub grid: u64,
    /// Threads per block.
    pub block: u32,
    /// Dynamic shared memory per block, bytes (above 48 KiB the launch raises the kernel's
    /// limit first).
    #[serde(default)]
    pub shared_bytes: u32,
}

/// How one target computes a launch: a generated kernel or a library call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Dispatch {
    /// A generated kernel.
    Kernel(KernelLaunch),
    /// A library routine.
    Call(LibraryCall),
}

impl Dispatch {
    /// The kernel, when this is one.
    pub fn kernel(&self) -> Option<&KernelLaunch> {
        match self {
            Dispatch::Kernel(k) => Some(k),
            Dispatch::Call(_) => None,
        }
    }

    /// A short name for profiles and errors: the kernel symbol or the library routine.
    pub fn label(&self) -> String {
        match self {
            Dispatch::Kernel(k) => k.kernel.clone(),
            Dispatch::Call(LibraryCall::GemmF32(_)) => "gemm_f32".into(),
            Dispatch::Call(LibraryCall::ConvF32(_)) => "conv_f32".into(),
            Dispatch::Call(LibraryCall::AttentionF32(_)) => "attention_f32".into(),
            Dispatch::Call(LibraryCall::AttentionGradF32 { part, .. }) => match part {
                mmada_ir::AttentionPart::Stats => "attention_stats_f32".into(),
                mmada_ir::AttentionPart::Q => "attention_grad_q_f32".into(),
                mmada_ir::AttentionPart::Kv => "attention_grad_kv_f32".into(),
            },
        }
    }
}

/// One launch: the buffers it reads and writes, and how each target computes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    /// The graph node this launch computes (for errors and profiles).
    pub node: String,
    /// Buffer index of each parameter, in order (operands first, the result last).
    pub args: Vec<usize>,
    /// On the GPU: always a generated kernel.
    pub gpu: KernelLaunch,
    /// On the host: the same kernel, a CPU-friendly variant of it, or a library call.
    pub host: Dispatch,
    /// How the host spreads the launch over threads: for a kernel, chunks of the grid per
    /// pool thread (0: the calling thread runs it all); for a product, the cut (0 the
    /// heuristic, 1 one thread, 2 rows of C, 3 columns). The template's `host_split` knob.
    #[serde(default = "default_host_split")]
    pub host_split: u32,
    /// The tune key of the node's kernel ([`crate::tune::key`]); None for hand-built launches.
    #[serde(default)]
    pub tune_key: Option<String>,
}

fn default_host_split() -> u32 {
    crate::template::HOST_SPLIT_DEFAULT as u32
}

impl Launch {
    /// Every kernel this launch runs: the GPU's, then the host's (the same kernel when the host
    /// has no variant; each launch description is listed, so both are checked).
    pub fn kernels(&self) -> impl Iterator<Item = &KernelLaunch> {
        std::iter::once(&self.gpu).chain(self.host.kernel())
    }
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

/// Kernels whose launches never pass a buffer they write as another of their parameters too:
/// their host code may tell LLVM that the parameters do not alias (`noalias`), which lets it
/// vectorise without run-time overlap checks.
pub fn disjoint_kernels<'a>(
    launches: impl IntoIterator<Item = &'a Launch>,
    kernels: &[Kernel],
) -> HashSet<String> {
    let mut overlapping: HashSet<&str> = HashSet::new();
    for l in launches {
        for name in l.kernels().map(|k| &k.kernel) {
            let Some(k) = kernels.iter().find(|k| &k.name == name) else {
                continue;
            };
            let aliased = l.args.len() != k.params.len()
                || k.params.iter().zip(&l.args).enumerate().any(|(j, (p, a))| {
                    p.access != crate::kir::Access::Read
                        && l.args.iter().enumerate().any(|(i, b)| i != j && b == a)
                });
            if aliased {
                overlapping.insert(name);
            }
        }
    }
    kernels
        .iter()
        .filter(|k| !overlapping.contains(k.name.as_str()))
        .map(|k| k.name.clone())
        .collect()
}

/// A kernel's identity: its description without its name, and without the knobs that change
/// only how the host dispatches it (`host_split`, `host_library`), so that tuning candidates
/// that differ only there share their kernels and the lowered code.
fn kernel_hash(k: &Kernel) -> Result<String, CodegenError> {
    let mut anon = k.clone();
    anon.name.clear();
    if let Some(t) = anon.template.as_mut() {
        t.config.0.remove("host_split");
        t.config.0.remove("host_library");
        t.chosen = false;
        t.tuned = false;
        t.tune_key = None;
    }
    let json = serde_json::to_vec(&anon).map_err(|e| CodegenError::Kir(e.to_string()))?;
    Ok(hex::encode(&Sha256::digest(&json)[..6]))
}

fn kind_name(op: &Op) -> &'static str {
    match op {
        Op::MatMul => "matmul",
        Op::Fused { body } if matches!(body.nodes[body.root].op, Op::Reduce { .. }) => {
            "fused_reduce"
        }
        Op::Fused { body } if matches!(body.nodes[body.root].op, Op::Softmax { .. }) => {
            "fused_softmax"
        }
        Op::Fused { .. } => "fused",
        Op::Reduce { .. } => "reduce",
        Op::Softmax { .. } => "softmax",
        Op::Permute { .. } | Op::Broadcast { .. } | Op::Reshape { .. } => "copy",
        Op::Attention { .. } => "attention",
        Op::AttentionGrad { .. } => "attention_grad",
        _ => "elementwise",
    }
}

/// Plans an optimised graph, building each kernel from its template's configuration under
/// `choices`.
pub fn plan(g: &Graph, choices: &Choices) -> Result<Planned, CodegenError> {
    let mut plan = Plan::default();
    let mut kernels: Vec<Kernel> = Vec::new();
    let mut by_hash: HashMap<String, String> = HashMap::new();
    let mut constants: Vec<u8> = Vec::new();
    let mut buf_of: HashMap<NodeId, usize> = HashMap::new();
    let outputs: std::collections::HashSet<NodeId> =
        g.outputs().iter().map(|(_, id)| *id).collect();
    // Transposes read in place by the matmuls that use them: no buffer, no kernel.
    let absorbed: std::collections::HashSet<NodeId> = g
        .node_ids()
        .into_iter()
        .filter(|&n| g.is_matmul_transpose(n) && !outputs.contains(&n))
        .collect();
    for id in g.topo_order()? {
        if absorbed.contains(&id) {
            continue;
        }
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
                let Some(k) = kernels::kernel_for_node(g, id, &provisional, &absorbed, choices)?
                else {
                    continue;
                };
                let mut intern = |mut k: Kernel, kind: &str| -> Result<String, CodegenError> {
                    let h = kernel_hash(&k)?;
                    Ok(match by_hash.get(&h) {
                        Some(existing) => existing.clone(),
                        None => {
                            let name = format!("{kind}_{h}");
                            k.name = name.clone();
                            by_hash.insert(h, name.clone());
                            kernels.push(k);
                            name
                        }
                    })
                };
                let gpu = KernelLaunch {
                    grid: k.grid,
                    block: k.block,
                    shared_bytes: k.dynamic_shared_layout().1 as u32,
                    kernel: intern(k, kind_name(op))?,
                };
                let host_kernel =
                    match kernels::host_variant(g, id, &provisional, &absorbed, choices)? {
                        Some(hk) => Some(KernelLaunch {
                            grid: hk.grid,
                            block: hk.block,
                            shared_bytes: hk.dynamic_shared_layout().1 as u32,
                            kernel: intern(hk, &format!("host_{}", kind_name(op)))?,
                        }),
                        None => None,
                    };
                let source = |o: &NodeId| -> usize {
                    if absorbed.contains(o) {
                        buf_of[&g.operands(*o)[0]]
                    } else {
                        buf_of[o]
                    }
                };
                let mut args: Vec<usize> = g.operands(id).iter().map(source).collect();
                args.push(b);
                let used = kernels::node_config(g, id, choices)?;
                let library = used.config.0.get("host_library").is_none_or(|&v| v == 1);
                let host = if matches!(op, Op::MatMul) && n.dtype == DType::F32 && library {
                    Dispatch::Call(LibraryCall::GemmF32(kernels::matmul_shape(
                        g, id, &absorbed,
                    )))
                } else if let Some(s) = kernels::conv_shape(g, id).filter(|_| n.dtype == DType::F32)
                {
                    Dispatch::Call(LibraryCall::ConvF32(s))
                } else if let Some(a) =
                    kernels::attention_shape(g, id).filter(|_| n.dtype == DType::F32)
                {
                    Dispatch::Call(LibraryCall::AttentionF32(a))
                } else if let Some((a, part)) = kernels::attention_grad_shape(g, id)
                    .filter(|_| g.node(g.operands(id)[0]).dtype == DType::F32)
                {
                    Dispatch::Call(LibraryCall::AttentionGradF32 { shape: a, part })
                } else {
                    Dispatch::Kernel(host_kernel.unwrap_or_else(|| gpu.clone()))
                };
                let default_split = if matches!(host, Dispatch::Call(_)) {
                    0
                } else {
                    crate::template::HOST_SPLIT_DEFAULT
                };
                // A product's `host_split` cuts the library call; its generated kernel (with
                // `host_library = 0`) takes the default chunks.
                let knob = (matches!(host, Dispatch::Call(_)) || !matches!(op, Op::MatMul))
                    .then(|| used.config.0.get("host_split").copied())
                    .flatten();
                let host_split = knob.unwrap_or(default_split) as u32;
                plan.launches.push(Launch {
                    node: g.describe(id),
                    args,
                    gpu,
                    host,
                    host_split,
                    tune_key: used.tune_key,
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
            if from == to {
                continue;
            }
            let out_node = g.outputs().iter().find(|(n, _)| n == out).map(|o| o.1);
            let in_node = g.input_by_name(inp);
            if let (Some(on), Some(inode)) = (out_node, in_node) {
                if can_write_in_place(g, &plan, on, inode, from, to) {
                    // The kernel computing the update writes straight into the input's buffer;
                    // the update stays listed (from == to) so executors know the output is
                    // an in-place update.
                    redirect_buffer(&mut plan, from, to);
                    use_in_place_variant(&mut plan, &mut kernels, to)?;
                    plan.updates.push(Update {
                        output: out.clone(),
                        input: inp.clone(),
                        from: to,
                        to,
                    });
                    continue;
                }
            }
            plan.updates.push(Update {
                output: out.clone(),
                input: inp.clone(),
                from,
                to,
            });
        }
    }
    Ok(Planned {
        plan,
        kernels,
        constants,
    })
}

/// Can the kernel computing output node `on` (buffer `from`) write into the buffer `to` of the
/// input `inode` it updates? Yes when (a) that kernel reads the input only elementwise at the
/// element it writes (its body is elementwise ops, scalar constants and broadcasts of scalars,
/// and the input is never broadcast), (b) no later launch reads the input's buffer, and (c) the
/// output buffer is written by that one launch only.
fn can_write_in_place(
    g: &Graph,
    plan: &Plan,
    on: NodeId,
    inode: NodeId,
    from: usize,
    to: usize,
) -> bool {
    let n = g.node(on);
    let operands = g.operands(on);
    let Some(slot) = operands.iter().position(|&o| o == inode) else {
        return false;
    };
    let elementwise_body = match &n.op {
        Op::Fused { body } => body.nodes.iter().all(|bn| {
            bn.op.is_elementwise()
                || matches!(bn.op, Op::Constant { .. }) && bn.shape.numel() == 1
                || matches!(bn.op, Op::Broadcast { .. })
                    && bn.operands.iter().all(|o| match o {
                        mmada_ir::Operand::Arg(a) => *a != slot && body.args[*a].1.numel() == 1,
                        mmada_ir::Operand::Node(j) => body.nodes[*j].shape.numel() == 1,
                    })
        }),
        op => op.is_elementwise(),
    };
    if !elementwise_body || g.node(inode).shape != n.shape {
        return false;
    }
    let writers: Vec<usize> = plan
        .launches
        .iter()
        .enumerate()
        .filter(|(_, l)| l.args.last() == Some(&from))
        .map(|(i, _)| i)
        .collect();
    let [k] = writers[..] else {
        return false;
    };
    // Later readers of the output buffer are fine (they will read the input's buffer, which
    // then holds the new value); later readers of the old input value are not.
    !plan.launches[k + 1..].iter().any(|l| l.args.contains(&to))
}

/// After `redirect_buffer`, the launch writing buffer `to` also reads it through another
/// parameter. Switch that launch to a variant of its kernel that stores through the parameter
/// it reads (marked read-write): the code then says that the one buffer is read and written at
/// the same index, which LLVM vectorises, where two parameters that may overlap make it fall
/// back to scalar code after its run-time overlap check (the AdamW updates were 10× slower).
fn use_in_place_variant(
    plan: &mut Plan,
    kernels: &mut Vec<Kernel>,
    to: usize,
) -> Result<(), CodegenError> {
    // Only launches that run the same kernel on both targets (no host variant or call).
    let Some(launch) = plan
        .launches
        .iter_mut()
        .find(|l| l.args.last() == Some(&to) && l.host.kernel().is_some_and(|h| *h == l.gpu))
    else {
        return Ok(());
    };
    let out = launch.args.len() - 1;
    let readers: Vec<usize> = (0..out).filter(|&j| launch.args[j] == to).collect();
    let [slot] = readers[..] else {
        return Ok(());
    };
    let name = format!("{}_inplace{slot}", launch.gpu.kernel);
    if !kernels.iter().any(|k| k.name == name) {
        let Some(base) = kernels.iter().find(|k| k.name == launch.gpu.kernel) else {
            return Ok(());
        };
        let mut k = base.clone();
        k.name = name.clone();
        k.params[slot].access = crate::kir::Access::ReadWrite;
        let (from_p, to_p) = (BufRef::Param(out as u32), BufRef::Param(slot as u32));
        for b in &mut k.body {
            redirect_block_stores(b, from_p, to_p);
        }
        kernels.push(k);
    }
    launch.gpu.kernel = name;
    launch.host = Dispatch::Kernel(launch.gpu.clone());
    Ok(())
}

fn redirect_block_stores(b: &mut BlockStmt, from: BufRef, to: BufRef) {
    match b {
        BlockStmt::Phase(stmts) | BlockStmt::LanePhase { body: stmts, .. } => {
            stmts.iter_mut().for_each(|s| redirect_stores(s, from, to))
        }
        // Barriers store nothing; shuffles and products store private slots only.
        BlockStmt::Barrier | BlockStmt::Shuffle { .. } | BlockStmt::Mma(_) => {}
        BlockStmt::For { body, .. } => body
            .iter_mut()
            .for_each(|s| redirect_block_stores(s, from, to)),
    }
}

fn redirect_stores(s: &mut Stmt, from: BufRef, to: BufRef) {
    match s {
        Stmt::Store { buf, .. } if *buf == from => *buf = to,
        Stmt::For { body, .. } => body.iter_mut().for_each(|s| redirect_stores(s, from, to)),
        Stmt::If {
            then, otherwise, ..
        } => then
            .iter_mut()
            .chain(otherwise.iter_mut())
            .for_each(|s| redirect_stores(s, from, to)),
        Stmt::Store { .. } | Stmt::Let { .. } | Stmt::Set { .. } => {}
    }
}

/// Makes every use of buffer `from` use buffer `to` instead (the old buffer becomes unused).
fn redirect_buffer(plan: &mut Plan, from: usize, to: usize) {
    for l in &mut plan.launches {
        for a in &mut l.args {
            if *a == from {
                *a = to;
            }
        }
    }
    for b in &mut plan.outputs {
        if b.buffer == from {
            b.buffer = to;
        }
    }
    plan.buffers[from].len = 0;
}
