//! Parameter initialisation: the one function every caller uses ([`init_tensor`]), so the
//! trainer, the benchmarks and a GPU check build weights the same way, and two machines (the
//! CPU that computes expected outputs and a GPU checked against them) build the same weights
//! without shipping them. Parameters of rank ≥ 2 are Philox normals × `std` (one stream per
//! tensor), rank-1 parameters are ones (norm weights), state is zero.

use mmada_codegen::plan::Binding;
use mmada_ir::{philox, DType, RngDist, Role, Shape, Tensor};

/// The initial value of a parameter or state tensor (f32), or `None` for data. Values are
/// `philox::sample(Normal, seed, 0, stream, i) × std` in f32.
pub fn init_tensor(shape: &Shape, role: Role, seed: i64, stream: u32, std: f32) -> Option<Tensor> {
    let n = shape.numel();
    let vals: Vec<f32> = match role {
        Role::Data => return None,
        Role::State => vec![0.0; n],
        Role::Param if shape.rank() < 2 => vec![1.0; n],
        Role::Param => (0..n as u64)
            .map(|i| philox::sample(RngDist::Normal, seed, 0, stream, i) * std)
            .collect(),
    };
    Tensor::from_f32(shape.clone(), vals).ok()
}

/// The initial value of an artifact input, or `None` for data inputs: [`init_tensor`] with
/// the input's position in its entry as the stream and std 0.02, in the input's float dtype.
pub fn init_value(b: &Binding, position: usize, seed: i64) -> Option<Tensor> {
    let t = init_tensor(&b.shape, b.role, seed, position as u32, 0.02)?;
    if b.dtype.is_float() && b.dtype != DType::F32 {
        Tensor::from_f64(b.dtype, b.shape.clone(), &t.to_f64_vec()).ok()
    } else {
        Some(t)
    }
}
