//! The compiled training step: masked-diffusion forward (noise from the Philox op), reverse-mode
//! backward, global-norm gradient clipping and AdamW, with parameters and optimiser state
//! updated in place (spec §4.2, §8.2).
//!
//! Inputs: every parameter (role `Param`, official names), its AdamW moments `<name>.exp_avg`
//! and `<name>.exp_avg_sq` (role `State`), and per step `input_ids` (i64 `[B, L]`),
//! `prompt_mask` (bool `[B, L]`, never masked), `row_weight` (f32 `[B]`, see
//! [`crate::loss::row_weights`]), `seed` and `offset` (i64 scalars keying the noise), `lr`,
//! `bc1 = 1 − β1^t`, `bc2 = 1 − β2^t` (f32 scalars). Outputs: `loss`, `grad_norm` (before
//! clipping), and the updated tensors as in-place updates.

use crate::config::LladaConfig;
use crate::llada::{declare_params, logits};
use crate::loss::{apply_mask, masked_diffusion_loss, sample_text_mask};
use crate::nn;
use mmada_ir::{autodiff, BinaryOp, DType, Graph, NodeId, ReduceOp, Result, Role, UnaryOp};

/// Optimiser hyper-parameters baked into the step (the learning rate is an input).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepHyper {
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
    /// AdamW betas.
    pub betas: (f64, f64),
    /// AdamW epsilon.
    pub eps: f64,
    /// Decoupled weight decay, applied to every parameter (as the reference does, spec §8.2).
    pub weight_decay: f64,
}

impl Default for StepHyper {
    fn default() -> Self {
        StepHyper {
            max_grad_norm: 1.0,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// Name of the first AdamW moment of a parameter.
pub fn exp_avg(name: &str) -> String {
    format!("{name}.exp_avg")
}

/// Name of the second AdamW moment of a parameter.
pub fn exp_avg_sq(name: &str) -> String {
    format!("{name}.exp_avg_sq")
}

/// Builds the forward part: returns (graph, params, loss node).
pub fn loss_graph(
    cfg: &LladaConfig,
    batch: usize,
    seq: usize,
) -> Result<(Graph, indexmap::IndexMap<String, NodeId>, NodeId)> {
    let mut g = Graph::new();
    let params = declare_params(&mut g, cfg)?;
    let x0 = g.input("input_ids", DType::I64, [batch, seq])?;
    let prompt = g.input("prompt_mask", DType::Bool, [batch, seq])?;
    let w = g.input("row_weight", DType::F32, [batch])?;
    let seed = g.input("seed", DType::I64, Vec::<usize>::new())?;
    let offset = g.input("offset", DType::I64, Vec::<usize>::new())?;
    let noise = sample_text_mask(&mut g, seed, offset, prompt)?;
    let xt = apply_mask(&mut g, x0, noise.masked, cfg.mask_token_id)?;
    let lg = logits(&mut g, cfg, &params, xt, None)?;
    let loss = masked_diffusion_loss(&mut g, lg, x0, noise.masked, noise.p, w)?;
    g.set_output("loss", loss)?;
    Ok((g, params, loss))
}

/// The whole training step graph.
pub fn train_step_graph(
    cfg: &LladaConfig,
    batch: usize,
    seq: usize,
    h: StepHyper,
) -> Result<Graph> {
    let (mut g, params, loss) = loss_graph(cfg, batch, seq)?;
    optimizer_step(&mut g, &params, loss, h)?;
    Ok(g)
}

/// Appends the optimiser to a graph whose `loss` depends on `params`: reverse-mode gradients,
/// one global-norm clip (output `grad_norm`, before clipping), and AdamW per parameter with
/// the moments `<name>.exp_avg` / `<name>.exp_avg_sq` (role `State`) and the scalar inputs
/// `lr`, `bc1`, `bc2`; parameters and moments are updated in place.
pub fn optimizer_step(
    g: &mut Graph,
    params: &indexmap::IndexMap<String, NodeId>,
    loss: NodeId,
    h: StepHyper,
) -> Result<()> {
    let ids: Vec<NodeId> = params.values().copied().collect();
    let grads = autodiff::grad(g, loss, &ids)?;
    // Global norm over all gradients, then one clip coefficient for all.
    let mut sq = None;
    for &gr in &grads {
        let g2 = g.mul(gr, gr)?;
        let r = g.try_node(g2)?.shape.rank() as i64;
        let axes: Vec<i64> = (0..r).collect();
        let s = g.reduce(ReduceOp::Sum, g2, &axes, false)?;
        sq = Some(match sq {
            None => s,
            Some(acc) => g.add2(acc, s)?,
        });
    }
    let sq = sq.ok_or_else(|| mmada_ir::IrError::Input {
        name: "params".into(),
        msg: "the model has no parameters".into(),
    })?;
    let norm = g.unary(UnaryOp::Sqrt, sq)?;
    g.set_output("grad_norm", norm)?;
    let denom = g.binary_scalar(BinaryOp::Add, norm, 1e-6)?;
    let maxn = g.full(DType::F32, h.max_grad_norm, mmada_ir::Shape::scalar())?;
    let coef = g.div(maxn, denom)?;
    let coef = g.binary_scalar(BinaryOp::Min, coef, 1.0)?;
    let lr = g.input("lr", DType::F32, Vec::<usize>::new())?;
    let bc1 = g.input("bc1", DType::F32, Vec::<usize>::new())?;
    let bc2 = g.input("bc2", DType::F32, Vec::<usize>::new())?;
    for ((name, &p), &gr) in params.iter().zip(&grads) {
        let shape = g.try_node(p)?.shape.clone();
        let m = g.add_input(&exp_avg(name), Role::State, DType::F32, shape.clone())?;
        let v = g.add_input(&exp_avg_sq(name), Role::State, DType::F32, shape)?;
        let gc = g.mul(gr, coef)?;
        let (pn, mn, vn) = nn::adamw(g, p, gc, m, v, lr, bc1, bc2, h.betas, h.eps, h.weight_decay)?;
        for (out, node, input) in [
            (format!("update.{name}"), pn, name.clone()),
            (format!("update.{}", exp_avg(name)), mn, exp_avg(name)),
            (format!("update.{}", exp_avg_sq(name)), vn, exp_avg_sq(name)),
        ] {
            g.set_output(&out, node)?;
            g.set_update(&out, &input)?;
        }
    }
    Ok(())
}

/// Warmup then cosine decay with a floor (spec §8.2): `s/warmup` during warmup, then
/// `min_scale + (1 − min_scale)·½(1 + cos(π·progress))`; multiply the peak learning rate by it.
pub fn lr_factor(step: usize, warmup: usize, total: usize, min_scale: f64) -> f64 {
    if step < warmup {
        return step as f64 / warmup.max(1) as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    min_scale + (1.0 - min_scale) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_schedule_warms_up_and_decays_to_the_floor() {
        assert_eq!(lr_factor(0, 10, 100, 0.1), 0.0);
        assert!((lr_factor(5, 10, 100, 0.1) - 0.5).abs() < 1e-12);
        assert!((lr_factor(10, 10, 100, 0.1) - 1.0).abs() < 1e-12);
        assert!((lr_factor(55, 10, 100, 0.1) - 0.55).abs() < 1e-12);
        assert!((lr_factor(100, 10, 100, 0.1) - 0.1).abs() < 1e-12);
        assert!((lr_factor(500, 10, 100, 0.1) - 0.1).abs() < 1e-12);
    }
}
