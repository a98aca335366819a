//! Elementwise fusion: a connected group of elementwise and index-map ops (views, slices, pads,
//! concatenations, gathers, iota, random numbers), optionally ending in one reduction or one
//! softmax, becomes one [`Op::Fused`] node (one kernel).
//!
//! Contract:
//! - A node keeps its own buffer ("is materialised") when it is an input, a non-scalar constant,
//!   a matmul or existing fused op, a reduction, a graph output, used by an op that cannot absorb
//!   it (anything but elementwise/view ops and reductions), or shared by several users while
//!   being expensive to recompute (more than [`FuseElementwise::max_duplicated_cost`], counting
//!   its elementwise ops and its reads of large materialised tensors), or broadcast to a larger
//!   shape while costing at least one transcendental function (the RoPE tables:
//!   `cos(position · frequency)` would otherwise be recomputed for every head and batch row),
//!   or padded while costing one (a convolution's GroupNorm and swish: computed in a contiguous
//!   kernel of the unpadded shape, which vectorises, 11× faster than inside the pad's kernel
//!   with its bounds checks; the pad itself is then inlined into the patch copy).
//!   Everything else is inlined into each user's group (cheap ops are recomputed
//!   rather than stored, as XLA does).
//! - Each materialised elementwise/view node, each reduction and each softmax roots a group:
//!   the root plus the inlined nodes it reaches through operands. Groups of two or more nodes
//!   are replaced by one fused node whose body is the group and whose operands are the
//!   materialised nodes it reads.
//! - Semantics are unchanged: the fused body is exactly the original subgraph.

use crate::{Pass, PassError};
use mmada_ir::{BodyNode, FusedBody, Graph, Node, NodeId, Op, Operand};
use std::collections::{BTreeSet, HashMap, HashSet};

/// The elementwise fusion pass.
pub struct FuseElementwise {
    /// A node with several users is recomputed in each user's kernel only while its inlined
    /// cost (elementwise ops up to the nearest materialised nodes) is at most this.
    pub max_duplicated_cost: usize,
}

impl Default for FuseElementwise {
    fn default() -> Self {
        FuseElementwise {
            max_duplicated_cost: 16,
        }
    }
}

fn is_scalar_constant(n: &Node) -> bool {
    matches!(n.op, Op::Constant { .. }) && n.shape.numel() == 1
}

/// Ops that can sit inside a fused group without being its root: index maps (elementwise,
/// views, slices, pads, concatenations, gathers, iota, random numbers) and scalar constants.
fn is_inlinable(n: &Node) -> bool {
    n.op.is_index_map() || is_scalar_constant(n)
}

/// Ops whose operands can be inlined into their group, and which root a group when
/// materialised: index maps, reductions and softmaxes (the last two compute their input
/// inside their kernel).
fn absorbs_operands(n: &Node) -> bool {
    n.op.is_index_map() || matches!(n.op, Op::Reduce { .. } | Op::Softmax { .. })
}

/// Cost of one transcendental function (our math library: a range reduction and a polynomial).
const TRANSCENDENTAL_COST: usize = 8;

/// Cost of reading one element of a materialised tensor of at least [`STREAM_MIN_ELEMENTS`]
/// (a stream from memory rather than a small table that stays in cache). Without it a chain of
/// residual additions looked cheap and every layer's kernels re-read all earlier layers' outputs.
const LOAD_COST: usize = 4;

/// Tensors smaller than this are read from cache (norm weights, per-row statistics).
const STREAM_MIN_ELEMENTS: usize = 4096;

/// Work of recomputing one element of a node (for the duplication limit).
fn own_cost(op: &Op) -> usize {
    use mmada_ir::UnaryOp::{Cos, Exp, Log, Sigmoid, Sin};
    match op {
        Op::Rng { .. } => 20,
        Op::Unary {
            op: Exp | Log | Sin | Cos | Sigmoid,
        } => TRANSCENDENTAL_COST,
        op if op.is_elementwise() => 1,
        Op::Gather { .. } | Op::Concat { .. } | Op::Pad { .. } => 1,
        _ => 0,
    }
}

impl FuseElementwise {
    fn materialised(&self, g: &Graph, order: &[NodeId]) -> HashSet<NodeId> {
        let outputs: HashSet<NodeId> = g.outputs().iter().map(|(_, id)| *id).collect();
        let mut mat = HashSet::new();
        let mut cost: HashMap<NodeId, usize> = HashMap::new();
        for &id in order {
            let n = g.node(id);
            if !is_inlinable(n) {
                mat.insert(id);
                cost.insert(id, 0);
                continue;
            }
            let own = own_cost(&n.op);
            let c = own
                + g.operands(id)
                    .iter()
                    .map(|o| {
                        if !mat.contains(o) {
                            cost[o]
                        } else if g.node(*o).shape.numel() >= STREAM_MIN_ELEMENTS {
                            LOAD_COST
                        } else {
                            0
                        }
                    })
                    .sum::<usize>();
            cost.insert(id, c);
            let users = g.users(id);
            // A transpose that only feeds matmuls is read through strides: what it transposes
            // must be in memory.
            let blocked = users
                .iter()
                .any(|(u, _)| !absorbs_operands(g.node(*u)) || g.is_matmul_transpose(*u));
            let distinct: BTreeSet<NodeId> = users.iter().map(|(u, _)| *u).collect();
            let shared_expensive = distinct.len() > 1 && c > self.max_duplicated_cost;
            let broadcast_expensive = c >= TRANSCENDENTAL_COST
                && users
                    .iter()
                    .any(|(u, _)| matches!(g.node(*u).op, Op::Broadcast { .. } | Op::Pad { .. }));
            if outputs.contains(&id) || blocked || shared_expensive || broadcast_expensive {
                mat.insert(id);
            }
        }
        mat
    }
}

/// Builds the fused body of the group rooted at `root`; returns it with the fused node's
/// operands, or `None` when the group has a single node (nothing to fuse).
fn build_group(g: &Graph, root: NodeId, mat: &HashSet<NodeId>) -> Option<(FusedBody, Vec<NodeId>)> {
    // Collect group members by DFS from the root through non-materialised operands.
    let mut members: BTreeSet<NodeId> = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(n) = stack.pop() {
        if !members.insert(n) {
            continue;
        }
        for o in g.operands(n) {
            if !mat.contains(&o) && is_inlinable(g.node(o)) {
                stack.push(o);
            }
        }
    }
    if members.len() < 2 {
        return None;
    }
    // Order members topologically (post-order DFS from the root, operands in slot order), and
    // number the external operands (arguments) in first-use order.
    let mut order: Vec<NodeId> = Vec::new();
    let mut visited = HashSet::new();
    fn visit(
        g: &Graph,
        n: NodeId,
        members: &BTreeSet<NodeId>,
        visited: &mut HashSet<NodeId>,
        order: &mut Vec<NodeId>,
    ) {
        if !visited.insert(n) {
            return;
        }
        for o in g.operands(n) {
            if members.contains(&o) {
                visit(g, o, members, visited, order);
            }
        }
        order.push(n);
    }
    visit(g, root, &members, &mut visited, &mut order);
    let mut args: Vec<NodeId> = Vec::new();
    let mut pos: HashMap<NodeId, usize> = HashMap::new();
    let mut nodes = Vec::with_capacity(order.len());
    for &n in &order {
        let node = g.node(n);
        let operands = g
            .operands(n)
            .into_iter()
            .map(|o| {
                if let Some(&j) = pos.get(&o) {
                    Operand::Node(j)
                } else {
                    let a = args.iter().position(|&x| x == o).unwrap_or_else(|| {
                        args.push(o);
                        args.len() - 1
                    });
                    Operand::Arg(a)
                }
            })
            .collect();
        pos.insert(n, nodes.len());
        nodes.push(BodyNode {
            op: node.op.clone(),
            dtype: node.dtype,
            shape: node.shape.clone(),
            operands,
        });
    }
    let body = FusedBody {
        num_args: args.len(),
        args: args
            .iter()
            .map(|&a| (g.node(a).dtype, g.node(a).shape.clone()))
            .collect(),
        root: nodes.len() - 1,
        nodes,
    };
    Some((body, args))
}

impl Pass for FuseElementwise {
    fn name(&self) -> &'static str {
        "fuse-elementwise"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, PassError> {
        let order = g.topo_order().map_err(|e| PassError::Failed {
            pass: self.name().into(),
            msg: e.to_string(),
        })?;
        let mat = self.materialised(g, &order);
        let roots: Vec<NodeId> = order
            .iter()
            .copied()
            .filter(|&id| {
                let n = g.node(id);
                mat.contains(&id) && absorbs_operands(n) && !is_scalar_constant(n)
            })
            .collect();
        let mut groups = Vec::new();
        for &r in &roots {
            if let Some(gr) = build_group(g, r, &mat) {
                groups.push((r, gr));
            }
        }
        let changed = !groups.is_empty();
        // Create every fused node first (their arguments name original nodes), then redirect
        // all uses of each root, so fused nodes that read another group's root are redirected
        // too.
        let mut replacements = Vec::with_capacity(groups.len());
        for (root, (body, args)) in groups {
            let old = g.node(root).clone();
            let fused = g.add_unchecked(
                Node {
                    op: Op::Fused {
                        body: Box::new(body),
                    },
                    dtype: old.dtype,
                    shape: old.shape.clone(),
                    label: old.label.clone(),
                },
                &args,
            );
            replacements.push((root, fused));
        }
        for (root, fused) in replacements {
            g.replace_all_uses(root, fused);
        }
        Ok(changed)
    }
}
