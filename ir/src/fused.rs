//! Bodies of fused ops.
//!
//! Passes replace a connected group of nodes with one [`crate::Op::Fused`] node whose body is the
//! group itself, so a fused op always decomposes into primitives: the interpreter evaluates the
//! body node by node and codegen emits it as one kernel.

use crate::{DType, Op, Shape};
use serde::{Deserialize, Serialize};

/// Where a body node takes an operand from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operand {
    /// The `i`-th operand of the fused node.
    Arg(usize),
    /// An earlier node of the body.
    Node(usize),
}

/// One node of a fused body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BodyNode {
    /// The op (never `Input` or `Fused`).
    pub op: Op,
    /// Result dtype.
    pub dtype: DType,
    /// Result shape.
    pub shape: Shape,
    /// Operands, each an argument or an earlier node.
    pub operands: Vec<Operand>,
}

/// A fused subgraph: arguments, nodes in topological order, and the root whose value is the
/// fused op's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FusedBody {
    /// Number of arguments (operands of the fused node).
    pub num_args: usize,
    /// Dtype and shape of each argument.
    pub args: Vec<(DType, Shape)>,
    /// Nodes; each operand refers to an argument or an earlier node.
    pub nodes: Vec<BodyNode>,
    /// Index of the result node.
    pub root: usize,
}

impl FusedBody {
    /// Result dtype.
    pub fn dtype(&self) -> DType {
        self.nodes.get(self.root).map_or(DType::F32, |n| n.dtype)
    }

    /// Result shape.
    pub fn shape(&self) -> Shape {
        self.nodes
            .get(self.root)
            .map_or_else(Shape::scalar, |n| n.shape.clone())
    }

    /// Checks the fused node's operands against the body's declared arguments.
    pub fn check_args(&self, operands: &[(DType, &Shape)]) -> Result<(), String> {
        if operands.len() != self.num_args || self.args.len() != self.num_args {
            return Err(format!(
                "body declares {} arguments, node has {} operands",
                self.args.len(),
                operands.len()
            ));
        }
        for (i, ((dt, s), (adt, ashape))) in operands.iter().zip(&self.args).enumerate() {
            if dt != adt || *s != ashape {
                return Err(format!(
                    "operand {i} is {dt}{s} but the body expects {adt}{ashape}"
                ));
            }
        }
        self.check_body()
    }

    /// Checks the body itself: operands point backwards, every node's type is what its op
    /// infers, no inputs or nested fusions, and the root exists.
    pub fn check_body(&self) -> Result<(), String> {
        if self.root >= self.nodes.len() {
            return Err(format!(
                "root {} out of range ({} nodes)",
                self.root,
                self.nodes.len()
            ));
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if matches!(n.op, Op::Input { .. } | Op::Fused { .. }) {
                return Err(format!("body node {i} is a {} (not allowed)", n.op.name()));
            }
            let mut types = Vec::with_capacity(n.operands.len());
            for o in &n.operands {
                match *o {
                    Operand::Arg(a) if a < self.args.len() => {
                        types.push((self.args[a].0, &self.args[a].1))
                    }
                    Operand::Node(j) if j < i => {
                        types.push((self.nodes[j].dtype, &self.nodes[j].shape))
                    }
                    _ => return Err(format!("body node {i} has invalid operand {o:?}")),
                }
            }
            if let Op::Constant { value } = &n.op {
                if value.len() != n.shape.numel() {
                    return Err(format!(
                        "body constant {i} has {} values for shape {}",
                        value.len(),
                        n.shape
                    ));
                }
                continue;
            }
            if n.op.is_self_typed() {
                n.op.check_self_typed(n.dtype, &n.shape, &types)
                    .map_err(|e| format!("body node {i}: {e}"))?;
                continue;
            }
            let (dt, s) =
                n.op.infer(&types)
                    .map_err(|e| format!("body node {i}: {e}"))?;
            if dt != n.dtype || s != n.shape {
                return Err(format!(
                    "body node {i} ({}) declares {}{} but computes {dt}{s}",
                    n.op.name(),
                    n.dtype,
                    n.shape
                ));
            }
        }
        Ok(())
    }
}
