//! Deterministic parameter initialisation from an artifact's plan, so two machines (say, the
//! CPU that computes expected outputs and a GPU that is checked against them) can build the
//! same weights without shipping them: parameters of rank ≥ 2 are Philox normals × 0.02 (stream
//! = the input's position in the plan), rank-1 parameters are ones (norm weights), state is zero.

use mmada_codegen::plan::Binding;
use mmada_ir::{philox, DType, RngDist, Role, Tensor};

/// The initial value of an input, or `None` for data inputs.
pub fn init_value(b: &Binding, position: usize, seed: i64) -> Option<Tensor> {
    let n = b.shape.numel();
    let vals: Vec<f64> = match b.role {
        Role::Data => return None,
        Role::State => vec![0.0; n],
        Role::Param if b.shape.rank() < 2 => vec![1.0; n],
        Role::Param => (0..n as u64)
            .map(|i| philox::sample(RngDist::Normal, seed, 0, position as u32, i) as f64 * 0.02)
            .collect(),
    };
    let dt = if b.dtype.is_float() {
        b.dtype
    } else {
        DType::F32
    };
    Tensor::from_f64(dt, b.shape.clone(), &vals).ok()
}
