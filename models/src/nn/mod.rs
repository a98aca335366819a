//! The model's composite blocks, built from primitive IR ops only: normalisations
//! ([`norm`]), attention and MLP ([`attention`]), lookup-free quantisation ([`lfq`]) and the
//! optimiser update ([`adamw`]). Formulas follow `shared/spec/mmada.md`; sections are cited.
//! Float blocks compute in the input's dtype when it is f32 or f64 and in f32 otherwise
//! (bf16/f16 inputs are widened, as the reference's fp32 RMSNorm and RoPE do).

pub mod adamw;
pub mod attention;
pub mod lfq;
pub mod norm;

pub use adamw::adamw;
pub use attention::{attention, rope, rope_from, swiglu};
pub use lfq::{lfq_codes, lfq_decode};
pub use norm::{group_norm, layer_norm, rms_norm};

use mmada_ir::{DType, Graph, IrError, NodeId, Result, Shape};

/// f64 stays f64; everything else computes in f32.
fn compute_dtype(d: DType) -> DType {
    if d == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

fn bad(op: &str, msg: String) -> IrError {
    IrError::BadOperands {
        op: op.into(),
        msg,
        operands: String::new(),
    }
}

fn shape_of(g: &Graph, x: NodeId) -> Result<Shape> {
    Ok(g.try_node(x)?.shape.clone())
}

fn dtype_of(g: &Graph, x: NodeId) -> Result<DType> {
    Ok(g.try_node(x)?.dtype)
}
