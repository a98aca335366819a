//! The graph: nodes (op, dtype, shape) over a petgraph `StableGraph`, with edges carrying the
//! operand slot, plus named outputs.
//!
//! Node ids stay valid while other nodes are removed, so passes can rewrite in place. Every
//! iteration order exposed here is deterministic (ascending node index or topological order with
//! ties broken by index), so dumps and hashes are stable.

use crate::error::{IrError, Result};
use crate::{DType, Literal, Op, Role, Shape};
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::BTreeSet;

/// Identifier of a node in a [`Graph`].
pub type NodeId = NodeIndex<u32>;

/// A node: its op and the dtype and shape of its result.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The operation.
    pub op: Op,
    /// Result dtype.
    pub dtype: DType,
    /// Result shape.
    pub shape: Shape,
    /// Optional human-readable label (kept through passes where possible, shown in errors).
    pub label: Option<String>,
}

/// A tensor program: a DAG of nodes plus named outputs.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    g: StableDiGraph<Node, u32, u32>,
    outputs: Vec<(String, NodeId)>,
    updates: Vec<(String, String)>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Adds a node computing `op` over `operands` (in slot order). The result type is inferred
    /// and checked; errors name the op and the operand types.
    pub fn add(&mut self, op: Op, operands: &[NodeId]) -> Result<NodeId> {
        let mut types = Vec::with_capacity(operands.len());
        for &o in operands {
            let n = self.try_node(o)?;
            types.push((n.dtype, &n.shape));
        }
        let (dtype, shape) = op.infer(&types)?;
        let id = self.g.add_node(Node {
            op,
            dtype,
            shape,
            label: None,
        });
        for (slot, &o) in operands.iter().enumerate() {
            self.g.add_edge(o, id, slot as u32);
        }
        Ok(id)
    }

    /// Adds a graph input. Names must be unique.
    pub fn add_input(
        &mut self,
        name: &str,
        role: Role,
        dtype: DType,
        shape: impl Into<Shape>,
    ) -> Result<NodeId> {
        if self.input_by_name(name).is_some() {
            return Err(IrError::Input {
                name: name.into(),
                msg: "declared twice".into(),
            });
        }
        Ok(self.g.add_node(Node {
            op: Op::Input {
                name: name.into(),
                role,
            },
            dtype,
            shape: shape.into(),
            label: Some(name.into()),
        }))
    }

    /// Adds a constant tensor with one value per element of `shape`.
    pub fn add_constant(
        &mut self,
        dtype: DType,
        shape: impl Into<Shape>,
        value: Literal,
    ) -> Result<NodeId> {
        let shape = shape.into();
        if value.len() != shape.numel() {
            return Err(IrError::BadOperands {
                op: "constant".into(),
                msg: format!("{} values for shape {shape}", value.len()),
                operands: String::new(),
            });
        }
        Ok(self.g.add_node(Node {
            op: Op::Constant { value },
            dtype,
            shape,
            label: None,
        }))
    }

    /// Adds a node with a given type without inference (used by decoders and passes, which
    /// must run the verifier afterwards). Operands are connected in slot order.
    pub fn add_unchecked(&mut self, node: Node, operands: &[NodeId]) -> NodeId {
        let id = self.g.add_node(node);
        for (slot, &o) in operands.iter().enumerate() {
            self.g.add_edge(o, id, slot as u32);
        }
        id
    }

    /// Sets a node's label.
    pub fn set_label(&mut self, id: NodeId, label: &str) {
        if let Some(n) = self.g.node_weight_mut(id) {
            n.label = Some(label.to_string());
        }
    }

    /// Declares (or replaces) a named output.
    pub fn set_output(&mut self, name: &str, id: NodeId) -> Result<()> {
        self.try_node(id)?;
        if let Some(o) = self.outputs.iter_mut().find(|(n, _)| n == name) {
            o.1 = id;
        } else {
            self.outputs.push((name.to_string(), id));
        }
        Ok(())
    }

    /// Named outputs in declaration order.
    pub fn outputs(&self) -> &[(String, NodeId)] {
        &self.outputs
    }

    /// Declares that output `output` is the new value of input `input` (a parameter or state
    /// tensor of the same dtype and shape): compiled executors write it back in place, so the
    /// input stays resident on the device from one run to the next (optimiser steps).
    pub fn set_update(&mut self, output: &str, input: &str) -> Result<()> {
        let out = self
            .outputs
            .iter()
            .find(|(n, _)| n == output)
            .map(|o| o.1)
            .ok_or_else(|| IrError::Input {
                name: output.into(),
                msg: "no such output to update an input with".into(),
            })?;
        let inp = self.input_by_name(input).ok_or_else(|| IrError::Input {
            name: input.into(),
            msg: "no such input to update".into(),
        })?;
        let (a, b) = (self.node(out), self.node(inp));
        if a.dtype != b.dtype || a.shape != b.shape {
            return Err(IrError::Input {
                name: input.into(),
                msg: format!(
                    "is {}{} but output '{output}' is {}{}",
                    b.dtype, b.shape, a.dtype, a.shape
                ),
            });
        }
        if !matches!(
            b.op,
            Op::Input {
                role: Role::Param | Role::State,
                ..
            }
        ) {
            return Err(IrError::Input {
                name: input.into(),
                msg: "only parameter or state inputs can be updated in place".into(),
            });
        }
        self.updates.retain(|(_, i)| i != input);
        self.updates.push((output.to_string(), input.to_string()));
        Ok(())
    }

    /// In-place updates as (output, input) pairs.
    pub fn updates(&self) -> &[(String, String)] {
        &self.updates
    }

    /// The node, or an error naming the id.
    pub fn try_node(&self, id: NodeId) -> Result<&Node> {
        self.g
            .node_weight(id)
            .ok_or(IrError::UnknownNode(id.index()))
    }

    /// The node. Panics on an id that is not in the graph (ids come from this graph).
    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id]
    }

    /// Mutable access to a node (passes only; run the verifier afterwards).
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.g[id]
    }

    /// True when the id names a live node.
    pub fn contains(&self, id: NodeId) -> bool {
        self.g.contains_node(id)
    }

    /// Number of live nodes.
    pub fn len(&self) -> usize {
        self.g.node_count()
    }

    /// True when the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.g.node_count() == 0
    }

    /// All node ids in ascending index order.
    pub fn node_ids(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.g.node_indices().collect();
        v.sort();
        v
    }

    /// Operands of a node in slot order.
    pub fn operands(&self, id: NodeId) -> Vec<NodeId> {
        self.operand_edges(id).into_iter().map(|(_, s)| s).collect()
    }

    /// Operand edges of a node as `(slot, operand)` pairs, ascending by slot.
    pub fn operand_edges(&self, id: NodeId) -> Vec<(u32, NodeId)> {
        let mut e: Vec<(u32, NodeId)> = self
            .g
            .edges_directed(id, Direction::Incoming)
            .map(|e| (*e.weight(), e.source()))
            .collect();
        e.sort();
        e
    }

    /// Users of a node as `(user, slot)` pairs, ascending.
    pub fn users(&self, id: NodeId) -> Vec<(NodeId, usize)> {
        let mut v: Vec<(NodeId, usize)> = self
            .g
            .edges_directed(id, Direction::Outgoing)
            .map(|e| (e.target(), *e.weight() as usize))
            .collect();
        v.sort();
        v
    }

    /// Graph inputs in ascending node order.
    pub fn inputs(&self) -> Vec<NodeId> {
        self.node_ids()
            .into_iter()
            .filter(|&n| matches!(self.g[n].op, Op::Input { .. }))
            .collect()
    }

    /// The input node with this name.
    pub fn input_by_name(&self, name: &str) -> Option<NodeId> {
        self.g
            .node_indices()
            .find(|&n| matches!(&self.g[n].op, Op::Input { name: nm, .. } if nm == name))
    }

    /// Topological order (operands before users), ties broken by ascending node index.
    /// Errors if the graph has a cycle.
    pub fn topo_order(&self) -> Result<Vec<NodeId>> {
        let mut indeg: std::collections::HashMap<NodeId, usize> = self
            .g
            .node_indices()
            .map(|n| (n, self.g.edges_directed(n, Direction::Incoming).count()))
            .collect();
        let mut ready: BTreeSet<NodeId> = indeg
            .iter()
            .filter(|(_, &d)| d == 0)
            .map(|(&n, _)| n)
            .collect();
        let mut order = Vec::with_capacity(self.g.node_count());
        while let Some(n) = ready.pop_first() {
            order.push(n);
            for e in self.g.edges_directed(n, Direction::Outgoing) {
                if let Some(d) = indeg.get_mut(&e.target()) {
                    *d -= 1;
                    if *d == 0 {
                        ready.insert(e.target());
                    }
                }
            }
        }
        if order.len() != self.g.node_count() {
            return Err(IrError::Verify {
                node: "?".into(),
                op: "graph".into(),
                msg: "the graph has a cycle".into(),
            });
        }
        Ok(order)
    }

    /// Makes every user of `old` (and every output naming it) use `new` instead.
    pub fn replace_all_uses(&mut self, old: NodeId, new: NodeId) {
        if old == new {
            return;
        }
        let uses: Vec<(NodeId, u32, petgraph::stable_graph::EdgeIndex<u32>)> = self
            .g
            .edges_directed(old, Direction::Outgoing)
            .map(|e| (e.target(), *e.weight(), e.id()))
            .collect();
        for (user, slot, eid) in uses {
            self.g.remove_edge(eid);
            self.g.add_edge(new, user, slot);
        }
        for o in &mut self.outputs {
            if o.1 == old {
                o.1 = new;
            }
        }
    }

    /// Removes a node and its edges. Outputs naming it must have been redirected first.
    pub fn remove_node(&mut self, id: NodeId) {
        self.g.remove_node(id);
    }

    /// True for a permutation that only swaps the last two axes and whose users are all matrix
    /// products: a transpose that matmul kernels read through strides instead of copying.
    pub fn is_matmul_transpose(&self, id: NodeId) -> bool {
        let Some(n) = self.g.node_weight(id) else {
            return false;
        };
        let Op::Permute { perm } = &n.op else {
            return false;
        };
        let r = perm.len();
        let swap = r >= 2
            && perm[r - 1] == r - 2
            && perm[r - 2] == r - 1
            && perm[..r - 2].iter().enumerate().all(|(i, &p)| p == i);
        let users = self.users(id);
        swap && !users.is_empty()
            && users
                .iter()
                .all(|(u, _)| matches!(self.g[*u].op, Op::MatMul))
    }

    /// Describes a node for error messages: `%12 "label" (op) f32[3, 4]`.
    pub fn describe(&self, id: NodeId) -> String {
        match self.g.node_weight(id) {
            Some(n) => {
                let label = n
                    .label
                    .as_deref()
                    .map(|l| format!(" \"{l}\""))
                    .unwrap_or_default();
                format!(
                    "%{}{label} ({}) {}{}",
                    id.index(),
                    n.op.name(),
                    n.dtype,
                    n.shape
                )
            }
            None => format!("%{} (removed)", id.index()),
        }
    }
}
