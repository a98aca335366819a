//! Finite-difference gradient checks in f64, for this crate's ops and for composites built on
//! them elsewhere (the model's blocks in `mmada-models`).
//!
//! [`check_gradients`] builds `loss = Σ r ⊙ f(inputs)` (r random), differentiates it with
//! [`crate::autodiff`], and compares every gradient entry (an even sample of 48 for larger
//! tensors) with a central difference. The relative error of an entry is
//! `|fd − analytic| / max(|analytic|, 1e-3 · max|analytic| of that tensor)`: entries far
//! smaller than the tensor's largest are judged against that scale, since a central difference
//! with step h has absolute error ~ (h² |f'''| + ε|f|/h), not relative error. Inputs are drawn
//! from the Philox generator, so every run sees the same numbers.

use crate::interp::interpret;
use crate::{autodiff, philox, DType, Graph, NodeId, ReduceOp, Result, RngDist, Tensor};
use indexmap::IndexMap;

/// How an input is filled.
#[derive(Clone, Debug)]
pub enum Fill {
    /// Uniform floats in [lo, hi): differentiated.
    Float(f64, f64),
    /// Fixed integers: not differentiated.
    Int(Vec<i64>),
    /// Fixed booleans: not differentiated.
    Bool(Vec<bool>),
}

/// One input of a checked function.
#[derive(Clone, Debug)]
pub struct GradInput {
    /// Input name.
    pub name: &'static str,
    /// Shape.
    pub shape: Vec<usize>,
    /// Values.
    pub fill: Fill,
}

/// A float input uniform in `[lo, hi)`.
pub fn float(name: &'static str, shape: &[usize], lo: f64, hi: f64) -> GradInput {
    GradInput {
        name,
        shape: shape.to_vec(),
        fill: Fill::Float(lo, hi),
    }
}

fn uniform(stream: u32, i: u64, lo: f64, hi: f64) -> f64 {
    let u = philox::sample(RngDist::Uniform, 1234, 0, stream, i) as f64;
    lo + (hi - lo) * u
}

/// Checks the gradients of `Σ r ⊙ f(inputs)` with respect to every float input against
/// central differences; returns the worst relative error, or a message naming the first entry
/// past `tol`.
pub fn check_gradients(
    inputs: &[GradInput],
    tol: f64,
    f: impl Fn(&mut Graph, &[NodeId]) -> Result<NodeId>,
) -> std::result::Result<f64, String> {
    let err = |e: crate::IrError| e.to_string();
    let mut g = Graph::new();
    let mut ids = Vec::new();
    let mut values: IndexMap<String, Tensor> = IndexMap::new();
    let mut wrt = Vec::new();
    for (s, i) in inputs.iter().enumerate() {
        let n: usize = i.shape.iter().product();
        let (dt, t) = match &i.fill {
            Fill::Float(lo, hi) => {
                let v: Vec<f64> = (0..n as u64)
                    .map(|k| uniform(s as u32, k, *lo, *hi))
                    .collect();
                (DType::F64, Tensor::from_f64_vec(i.shape.clone(), v))
            }
            Fill::Int(v) => (DType::I64, Tensor::from_i64(i.shape.clone(), v.clone())),
            Fill::Bool(v) => {
                let f: Vec<f64> = v.iter().map(|&b| b as u8 as f64).collect();
                (
                    DType::Bool,
                    Tensor::from_f64(DType::Bool, i.shape.clone(), &f),
                )
            }
        };
        let id = g.param(i.name, dt, i.shape.clone()).map_err(err)?;
        if dt == DType::F64 {
            wrt.push((i.name, id));
        }
        ids.push(id);
        values.insert(i.name.to_string(), t.map_err(err)?);
    }
    let y = f(&mut g, &ids).map_err(err)?;
    let ys = g.node(y).shape.clone();
    let r: Vec<f64> = (0..ys.numel() as u64)
        .map(|k| uniform(1000, k, -1.0, 1.0))
        .collect();
    let r = g.constant_f64(DType::F64, ys.clone(), r).map_err(err)?;
    let yr = g.mul(y, r).map_err(err)?;
    let all: Vec<i64> = (0..ys.rank() as i64).collect();
    let loss = if all.is_empty() {
        yr
    } else {
        g.reduce(ReduceOp::Sum, yr, &all, false).map_err(err)?
    };
    g.set_output("loss", loss).map_err(err)?;
    let ws: Vec<NodeId> = wrt.iter().map(|w| w.1).collect();
    let grads = autodiff::grad(&mut g, loss, &ws).map_err(err)?;
    for ((name, _), gid) in wrt.iter().zip(&grads) {
        g.set_output(&format!("grad_{name}"), *gid).map_err(err)?;
    }
    crate::verify(&g).map_err(err)?;
    let base = interpret(&g, &values).map_err(err)?;
    let loss_at = |vals: &IndexMap<String, Tensor>| -> std::result::Result<f64, String> {
        Ok(interpret(&g, vals).map_err(err)?["loss"].get_f64(0))
    };
    let mut worst: f64 = 0.0;
    for (name, _) in &wrt {
        let an = base[&format!("grad_{name}")].to_f64_vec();
        let scale = an.iter().fold(0f64, |m, v| m.max(v.abs()));
        let x = values[*name].to_f64_vec();
        let shape = values[*name].shape().clone();
        let step = (x.len() / 48).max(1);
        for k in (0..x.len()).step_by(step) {
            let h = 1e-5 * x[k].abs().max(1.0);
            let at = |d: f64| -> std::result::Result<f64, String> {
                let mut v = values.clone();
                let mut xs = x.clone();
                xs[k] += d;
                v.insert(
                    name.to_string(),
                    Tensor::from_f64_vec(shape.clone(), xs).map_err(err)?,
                );
                loss_at(&v)
            };
            let fd = (at(h)? - at(-h)?) / (2.0 * h);
            let denom = an[k].abs().max(1e-3 * scale).max(1e-12);
            let e = (fd - an[k]).abs() / denom;
            if e.is_nan() || e > tol {
                return Err(format!(
                    "d/d{name}[{k}]: analytic {} vs finite difference {fd} (relative error {e:e})",
                    an[k]
                ));
            }
            worst = worst.max(e);
        }
    }
    Ok(worst)
}
