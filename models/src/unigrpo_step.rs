//! UniGRPO's objective (spec §5.1, eqs. 3–5) as graphs over the resident parameters.
//!
//! - [`logprob_graph`]: per-token log-probabilities `log p(x₀ | x_t)` of a masked batch, for
//!   π_old (the current parameters, once per rollout batch) and π_ref (the frozen copy, inputs
//!   `ref.<name>`);
//! - [`grpo_step_graph`]: the objective, its gradient (reverse mode), global-norm clipping and
//!   AdamW, as the masked-diffusion training step does.
//!
//! For a batch of P prompts × G completions (B = P·G rows, L positions, row b = p·G + i), with
//! `x₀` the prompt and completion, `masked` the positions replaced by `[MASK]` in the input,
//! `m` (`scored`) the masked completion tokens the objective reads (the same positions under
//! structured and random noising; d1 also masks prompt tokens in the input, and dLLM-RL the
//! padding after the answer, neither of which is scored), rewards `R` and a validity flag per
//! row:
//! - advantages `Â_b = (R_b − mean_g R) / (std_g R + 1e-4)` over the valid rows of the group
//!   (std with Bessel's correction, as d1 and TRL's GRPO compute it); a group of zero variance
//!   gives Â = 0, or, with `drop_zero_variance`, is left out;
//! - `ℓ_bk = log p_θ(x₀_bk | x_t)` at masked positions (eq. 3), `r_bk = exp(ℓ_bk − ℓ^old_bk)`;
//! - `s_bk = min(r·Â_b, clip(r, 1−ε, 1+ε)·Â_b)`, `kl_bk = exp(ℓ^ref − ℓ) − (ℓ^ref − ℓ) − 1` (k3);
//! - per row the mean over its masked tokens (eq. 4's `1/M`; eq. 3's indicator: only masked
//!   tokens contribute) of `s − β·kl`, then the mean over the kept rows (eq. 5's sample-level
//!   aggregation `(1/G) Σ_i`, averaged over prompts): `J`. The loss is `−J`.
//!
//! Outputs besides `loss` and `grad_norm`: `kl` (the same aggregation of kl alone),
//! `clip_frac` (scored tokens of kept rows where the clip is active: `r > 1 + ε` with `Â > 0`
//! or `r < 1 − ε` with `Â < 0`), `entropy` (mean entropy of the policy at those tokens,
//! nats), `advantage` `[B]` and `kept` (rows in the objective). The exponentials take
//! `m·(ℓ − ℓ^old)` and `m·(ℓ^ref − ℓ)`, so positions outside the objective (whose log-probs
//! are free to drift) never overflow into `inf·0`.

use crate::config::LladaConfig;
use crate::llada::{declare_params, logits, param_specs};
use crate::loss::apply_mask;
use crate::train_step::{optimizer_step, StepHyper};
use indexmap::IndexMap;
use mmada_ir::{BinaryOp, CompareOp, DType, Graph, NodeId, ReduceOp, Result, Role, UnaryOp};

/// Name of the reference policy's copy of a parameter.
pub fn ref_name(name: &str) -> String {
    format!("ref.{name}")
}

/// Entry names in the UniGRPO artifact.
pub const GRPO_STEP: &str = "grpo_step";
/// Log-probabilities under the current parameters (π_old).
pub const LOGPROB: &str = "logprob";
/// Log-probabilities under the reference copy (π_ref).
pub const REF_LOGPROB: &str = "ref_logprob";

/// The batch and the objective's constants.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GrpoSpec {
    /// Prompts per step.
    pub prompts: usize,
    /// Completions per prompt (G ≥ 2).
    pub group: usize,
    /// Positions per row (prompt and completion).
    pub seq: usize,
    /// Clip range ε.
    pub clip_eps: f64,
    /// KL coefficient β.
    pub kl_beta: f64,
    /// Leave groups whose rewards are all equal out of the objective.
    pub drop_zero_variance: bool,
    /// The policy's vocabulary `(first id, count)`: `None` for the whole vocabulary (text);
    /// the image codes for text-to-image, whose sampler draws from the softmax over the code
    /// ids only, so that the log-probabilities are those of the policy that sampled.
    pub vocab: Option<(usize, usize)>,
}

impl GrpoSpec {
    /// Rows per step.
    pub fn rows(&self) -> usize {
        self.prompts * self.group
    }
}

/// The float dtype of the objective's values: f64 for an f64 model (the gradient checks), f32
/// otherwise.
fn value_dtype(cfg: &LladaConfig) -> DType {
    if cfg.dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Per-token log-probabilities `[B, L]` of `x0` under logits of `xt`, and the token
/// entropies `[B, L]`. With `vocab = Some((first, count))` the softmax runs over those ids
/// only; positions whose id is outside them get the log-probability of id `first` (they are
/// never scored).
fn token_logprobs(
    g: &mut Graph,
    cfg: &LladaConfig,
    params: &IndexMap<String, NodeId>,
    (x0, masked, key_mask): (NodeId, NodeId, NodeId),
    vocab: Option<(usize, usize)>,
    entropy: bool,
) -> Result<(NodeId, Option<NodeId>)> {
    let (b, l) = {
        let s = &g.try_node(x0)?.shape;
        (s.0[0], s.0[1])
    };
    let xt = apply_mask(g, x0, masked, cfg.mask_token_id)?;
    let lg = logits(g, cfg, params, xt, Some(key_mask))?;
    let lg = g.cast(lg, value_dtype(cfg))?;
    let (lg, x0) = match vocab {
        None => (lg, x0),
        Some((first, count)) => {
            let lg = g.slice_axis(lg, -1, first, first + count)?;
            let lo = g.binary_scalar(BinaryOp::Sub, x0, first as f64)?;
            let zero = g.full(DType::I64, 0.0, mmada_ir::Shape::scalar())?;
            let below = g.compare(CompareOp::Lt, lo, zero)?;
            let top = g.full(DType::I64, count as f64, mmada_ir::Shape::scalar())?;
            let above = g.compare(CompareOp::Ge, lo, top)?;
            let lo = g.where_(below, zero, lo)?;
            (lg, g.where_(above, zero, lo)?)
        }
    };
    let lp = g.log_softmax(lg, -1)?; // [B, L, V]
    let idx = g.reshape(x0, [b, l, 1])?;
    let picked = g.gather(lp, idx, -1)?;
    let logp = g.reshape(picked, [b, l])?;
    let ent = if entropy {
        let p = g.unary(UnaryOp::Exp, lp)?;
        let plp = g.mul(p, lp)?;
        let s = g.reduce(ReduceOp::Sum, plp, &[2], false)?;
        Some(g.unary(UnaryOp::Neg, s)?)
    } else {
        None
    };
    Ok((logp, ent))
}

/// Log-probabilities of a masked batch: inputs the parameters (official names, or
/// `ref.<name>` with `reference`), `input_ids` i64 `[B, L]`, `masked` bool `[B, L]` and
/// `key_mask` bool `[B, L]` (false on left padding; role `State`, shared with the rollout
/// sampler); output `logp` `[B, L]` (every position; the objective reads the masked ones).
/// With `vocab`, the softmax runs over those ids only (as [`GrpoSpec::vocab`]).
pub fn logprob_graph(
    cfg: &LladaConfig,
    rows: usize,
    seq: usize,
    vocab: Option<(usize, usize)>,
    reference: bool,
) -> Result<Graph> {
    let mut g = Graph::new();
    let params = if reference {
        let mut m = IndexMap::new();
        for p in param_specs(cfg) {
            let id = g.add_input(&ref_name(&p.name), Role::State, cfg.dtype, p.shape.clone())?;
            m.insert(p.name, id);
        }
        m
    } else {
        declare_params(&mut g, cfg)?
    };
    let x0 = g.input("input_ids", DType::I64, [rows, seq])?;
    let masked = g.input("masked", DType::Bool, [rows, seq])?;
    let km = g.add_input("key_mask", Role::State, DType::Bool, [rows, seq])?;
    let (logp, _) = token_logprobs(&mut g, cfg, &params, (x0, masked, km), vocab, false)?;
    g.set_output("logp", logp)?;
    Ok(g)
}

/// The nodes of a batch for [`objective`].
#[derive(Clone, Copy, Debug)]
pub struct GrpoBatch {
    /// Clean ids `[B, L]` (i64).
    pub input_ids: NodeId,
    /// Positions replaced by `[MASK]` in the input `[B, L]` (bool).
    pub masked: NodeId,
    /// Masked completion positions the objective reads `[B, L]` (bool, within `masked`).
    pub scored: NodeId,
    /// Keys attention may read `[B, L]` (bool; false on left padding).
    pub key_mask: NodeId,
    /// π_old log-probabilities `[B, L]`.
    pub old_logp: NodeId,
    /// π_ref log-probabilities `[B, L]`.
    pub ref_logp: NodeId,
    /// Rewards `[B]`.
    pub reward: NodeId,
    /// Rows whose reward is usable `[B]` (bool).
    pub valid: NodeId,
}

/// The objective's outputs.
#[derive(Clone, Copy, Debug)]
pub struct GrpoTerms {
    /// J (to maximise).
    pub objective: NodeId,
    /// The KL term's aggregate.
    pub kl: NodeId,
    /// Fraction of masked tokens outside the clip range.
    pub clip_frac: NodeId,
    /// Mean policy entropy at masked tokens.
    pub entropy: NodeId,
    /// Advantages `[B]`.
    pub advantage: NodeId,
    /// Rows in the objective.
    pub kept: NodeId,
}

/// Σ over all axes.
fn total(g: &mut Graph, x: NodeId) -> Result<NodeId> {
    let r = g.try_node(x)?.shape.rank() as i64;
    let axes: Vec<i64> = (0..r).collect();
    g.reduce(ReduceOp::Sum, x, &axes, false)
}

/// `max(x, 1)`.
fn at_least_one(g: &mut Graph, x: NodeId) -> Result<NodeId> {
    g.binary_scalar(BinaryOp::Max, x, 1.0)
}

/// Eqs. 3–5 on `params` for one batch (module docs).
pub fn objective(
    g: &mut Graph,
    cfg: &LladaConfig,
    params: &IndexMap<String, NodeId>,
    spec: &GrpoSpec,
    batch: GrpoBatch,
) -> Result<GrpoTerms> {
    let fd = value_dtype(cfg);
    let (p, gs, b) = (spec.prompts, spec.group, spec.rows());
    // Group z-scores over the valid rows.
    let v = g.cast(batch.valid, fd)?;
    let v = g.reshape(v, [p, gs])?;
    let r = g.reshape(batch.reward, [p, gs])?;
    let r = g.mul(r, v)?; // invalid rows' rewards (zeroed by the host too) never count
    let n = g.reduce(ReduceOp::Sum, v, &[1], true)?; // [P, 1]
    let sum = g.reduce(ReduceOp::Sum, r, &[1], true)?;
    let n1 = at_least_one(g, n)?;
    let mean = g.div(sum, n1)?;
    let dev = g.sub(r, mean)?;
    let dev = g.mul(dev, v)?;
    let dev2 = g.mul(dev, dev)?;
    let ss = g.reduce(ReduceOp::Sum, dev2, &[1], true)?;
    let nm1 = g.binary_scalar(BinaryOp::Sub, n, 1.0)?;
    let nm1 = at_least_one(g, nm1)?;
    let var = g.div(ss, nm1)?;
    let std = g.unary(UnaryOp::Sqrt, var)?;
    let den = g.binary_scalar(BinaryOp::Add, std, 1e-4)?;
    let adv = g.div(dev, den)?; // [P, G]
    let keep = if spec.drop_zero_variance {
        let zero = g.full(fd, 0.0, mmada_ir::Shape::scalar())?;
        let spread = g.compare(CompareOp::Gt, std, zero)?; // [P, 1]
        let spread = g.cast(spread, fd)?;
        g.mul(v, spread)?
    } else {
        v
    };
    let adv = g.reshape(adv, [b])?;
    let keep = g.reshape(keep, [b])?;

    // Per-token terms at the masked positions.
    let (logp, ent) = token_logprobs(
        g,
        cfg,
        params,
        (batch.input_ids, batch.masked, batch.key_mask),
        spec.vocab,
        true,
    )?;
    let ent = ent.ok_or_else(|| mmada_ir::IrError::Input {
        name: "entropy".into(),
        msg: "not built".into(),
    })?;
    let m = g.cast(batch.scored, fd)?;
    let d = g.sub(logp, batch.old_logp)?;
    let d = g.mul(d, m)?;
    let ratio = g.unary(UnaryOp::Exp, d)?;
    let a = g.reshape(adv, [b, 1])?;
    let s1 = g.mul(ratio, a)?;
    let lo = g.binary_scalar(BinaryOp::Max, ratio, 1.0 - spec.clip_eps)?;
    let clipped = g.binary_scalar(BinaryOp::Min, lo, 1.0 + spec.clip_eps)?;
    let s2 = g.mul(clipped, a)?;
    let surr = g.binary(BinaryOp::Min, s1, s2)?;
    let e = g.sub(batch.ref_logp, logp)?;
    let e = g.mul(e, m)?;
    let ee = g.unary(UnaryOp::Exp, e)?;
    let kl = g.sub(ee, e)?;
    let kl = g.binary_scalar(BinaryOp::Sub, kl, 1.0)?;
    let bkl = g.binary_scalar(BinaryOp::Mul, kl, spec.kl_beta)?;
    let term = g.sub(surr, bkl)?;

    // Mean over each row's masked tokens, then over the kept rows.
    let count = g.reduce(ReduceOp::Sum, m, &[1], false)?; // [B]
    let count1 = at_least_one(g, count)?;
    let kept = total(g, keep)?;
    let kept1 = at_least_one(g, kept)?;
    let sample_mean = |g: &mut Graph, x: NodeId| -> Result<NodeId> {
        let xm = g.mul(x, m)?;
        let row = g.reduce(ReduceOp::Sum, xm, &[1], false)?;
        let row = g.div(row, count1)?;
        let row = g.mul(row, keep)?;
        let s = total(g, row)?;
        g.div(s, kept1)
    };
    let objective = sample_mean(g, term)?;
    let kl_out = sample_mean(g, kl)?;
    // Token fractions over the kept rows' masked tokens.
    let km = g.reshape(keep, [b, 1])?;
    let tok = g.mul(m, km)?;
    let ntok = total(g, tok)?;
    let ntok1 = at_least_one(g, ntok)?;
    let zero = g.full(fd, 0.0, mmada_ir::Shape::scalar())?;
    let hi = g.full(fd, 1.0 + spec.clip_eps, mmada_ir::Shape::scalar())?;
    let lo = g.full(fd, 1.0 - spec.clip_eps, mmada_ir::Shape::scalar())?;
    let above = g.compare(CompareOp::Gt, ratio, hi)?;
    let pos = g.compare(CompareOp::Gt, a, zero)?;
    let up = g.binary(BinaryOp::And, above, pos)?;
    let below = g.compare(CompareOp::Lt, ratio, lo)?;
    let neg = g.compare(CompareOp::Lt, a, zero)?;
    let down = g.binary(BinaryOp::And, below, neg)?;
    let out = g.binary(BinaryOp::Or, up, down)?;
    let out = g.cast(out, fd)?;
    let out = g.mul(out, tok)?;
    let out = total(g, out)?;
    let clip_frac = g.div(out, ntok1)?;
    let et = g.mul(ent, tok)?;
    let et = total(g, et)?;
    let entropy = g.div(et, ntok1)?;
    Ok(GrpoTerms {
        objective,
        kl: kl_out,
        clip_frac,
        entropy,
        advantage: adv,
        kept,
    })
}

/// Declares the batch inputs of the objective: `input_ids`, `masked`, `scored`, `key_mask`
/// (role `State`, shared with the sampler), `old_logp`, `ref_logp`, `reward`, `valid`.
pub fn declare_batch(g: &mut Graph, cfg: &LladaConfig, spec: &GrpoSpec) -> Result<GrpoBatch> {
    let fd = value_dtype(cfg);
    let (b, l) = (spec.rows(), spec.seq);
    Ok(GrpoBatch {
        input_ids: g.input("input_ids", DType::I64, [b, l])?,
        masked: g.input("masked", DType::Bool, [b, l])?,
        scored: g.input("scored", DType::Bool, [b, l])?,
        key_mask: g.add_input("key_mask", Role::State, DType::Bool, [b, l])?,
        old_logp: g.input("old_logp", fd, [b, l])?,
        ref_logp: g.input("ref_logp", fd, [b, l])?,
        reward: g.input("reward", fd, [b])?,
        valid: g.input("valid", DType::Bool, [b])?,
    })
}

/// The objective with its outputs, before the optimiser: returns (graph, params, loss).
pub fn grpo_loss_graph(
    cfg: &LladaConfig,
    spec: &GrpoSpec,
) -> Result<(Graph, IndexMap<String, NodeId>, NodeId)> {
    let mut g = Graph::new();
    let params = declare_params(&mut g, cfg)?;
    let batch = declare_batch(&mut g, cfg, spec)?;
    let t = objective(&mut g, cfg, &params, spec, batch)?;
    let loss = g.unary(UnaryOp::Neg, t.objective)?;
    let loss = g.cast(loss, DType::F32)?;
    g.set_output("loss", loss)?;
    for (name, node) in [
        ("objective", t.objective),
        ("kl", t.kl),
        ("clip_frac", t.clip_frac),
        ("entropy", t.entropy),
        ("advantage", t.advantage),
        ("kept", t.kept),
    ] {
        g.set_output(name, node)?;
    }
    Ok((g, params, loss))
}

/// The whole UniGRPO gradient step: the objective, reverse-mode gradients, one global-norm
/// clip and AdamW ([`optimizer_step`]); parameters and moments are updated in place.
pub fn grpo_step_graph(cfg: &LladaConfig, spec: &GrpoSpec, hyper: StepHyper) -> Result<Graph> {
    let (mut g, params, loss) = grpo_loss_graph(cfg, spec)?;
    optimizer_step(&mut g, &params, loss, hyper)?;
    Ok(g)
}
