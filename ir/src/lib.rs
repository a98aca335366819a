//! mmada-ir: the tensor IR of the mmada compiler.
//!
//! - [`DType`], [`Shape`]: element types and static shapes.
//! - [`Op`]: the closed op set with each op's shape/dtype rule.
//! - [`Graph`]: nodes over petgraph, with a builder for composite ops (softmax, mean, ...).
//! - [`verify()`]: the verifier; [`interp::interpret`]: the reference interpreter (the oracle).
//! - [`serialize`]: versioned JSON encoding; [`display`]: text and Graphviz dumps.

pub mod attention;
pub mod attention_grad;
pub mod autodiff;
pub mod builder;
pub mod composite;
pub mod display;
pub mod dtype;
pub mod error;
pub mod fused;
pub mod gradcheck;
pub mod graph;
pub mod interp;
pub mod mathlib;
pub mod op;
pub mod philox;
pub mod remask;
pub mod serialize;
pub mod shape;
pub mod tensor;
pub mod verify;

pub use attention::AttentionDims;
pub use dtype::DType;
pub use error::{IrError, Result};
pub use fused::{BodyNode, FusedBody, Operand};
pub use graph::{Graph, Node, NodeId};
pub use op::{
    AttentionPart, BinaryOp, CompareOp, ConvGeom, Literal, Op, ReduceOp, Remasking, RngDist, Role,
    UnaryOp,
};
pub use remask::RemaskArgs;
pub use shape::Shape;
pub use tensor::{max_rel_error, Data, Tensor};
pub use verify::verify;
