//! The error type of the IR crate. Messages name the node, op, shapes and dtypes at fault.

use crate::{DType, Shape};
use thiserror::Error;

/// Everything that can go wrong while building, verifying, interpreting or decoding a graph.
#[derive(Debug, Error)]
pub enum IrError {
    /// An op was given operands it cannot accept.
    #[error("{op}: {msg} (operands: {operands})")]
    BadOperands {
        /// Op name.
        op: String,
        /// What is wrong.
        msg: String,
        /// The operand dtypes and shapes, rendered.
        operands: String,
    },
    /// The verifier found an inconsistent node.
    #[error("verifier: node {node} ({op}): {msg}")]
    Verify {
        /// Node id and label.
        node: String,
        /// Op name.
        op: String,
        /// What is wrong.
        msg: String,
    },
    /// A node id does not exist in the graph.
    #[error("unknown node {0}")]
    UnknownNode(usize),
    /// Graph inputs or outputs are inconsistent with what was supplied.
    #[error("input '{name}': {msg}")]
    Input {
        /// Input name.
        name: String,
        /// What is wrong.
        msg: String,
    },
    /// A tensor's data does not match its declared dtype or shape.
    #[error("tensor: {0}")]
    Tensor(String),
    /// A serialized graph could not be decoded.
    #[error("graph decode: {0}")]
    Decode(String),
    /// The interpreter hit a condition it cannot evaluate (for example an index out of range).
    #[error("interpreter: node {node} ({op}): {msg}")]
    Eval {
        /// Node id and label.
        node: String,
        /// Op name.
        op: String,
        /// What is wrong.
        msg: String,
    },
}

/// Result alias for the IR crate.
pub type Result<T> = std::result::Result<T, IrError>;

/// Renders operand dtypes and shapes for error messages, e.g. `f32[37, 53], f32[53, 29]`.
pub fn render_operands(ops: &[(DType, &Shape)]) -> String {
    ops.iter()
        .map(|(d, s)| format!("{d}{s}"))
        .collect::<Vec<_>>()
        .join(", ")
}
