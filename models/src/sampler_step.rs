//! The compiled step of the text sampler (spec §6.1), an entry over resident state: the
//! sequence `x` (role `State`, i64 `[B, L]`) is read, run through the transformer, and updated
//! in place by the confidence top-k remask, so a generation loop replays this entry with a few
//! scalars per step and never moves logits off the device.
//!
//! Inputs: every parameter (role `Param`), `x`, and per step the scalars `temperature` (f32),
//! `seed`, `offset`, `block_end`, `k` (i64); with classifier-free guidance also `cfg_scale`
//! (f32) and `prompt_len` (i64: positions before it are the prompt, set to `[MASK]` in the
//! unconditional row). Outputs: `update.x` (the in-place update of `x`) and `nonfinite` (f32
//! count of NaN or infinite logits, so a diverged model stops with an error naming the step).
//!
//! The remask is written with primitive ops ([`mmada_ir::Graph::remask_unfused`]); the
//! `fuse-remask` pass turns it into one streaming kernel, so the compiled step holds the
//! logits and no `[B, L, V]` probabilities.

use crate::config::LladaConfig;
use crate::llada::{declare_params, logits};
use mmada_ir::{
    BinaryOp, CompareOp, DType, Graph, NodeId, ReduceOp, RemaskArgs, Remasking, Result, Role,
    UnaryOp,
};

/// Name of the sampler-step entry in an artifact.
pub const TEXT_STEP: &str = "text-step";

/// The Philox stream of the sampler's Gumbel noise (uniform confidences use the next one).
pub const GUMBEL_STREAM: u32 = 11;

/// What a text step graph is built for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TextStepSpec {
    /// Rows generated together.
    pub batch: usize,
    /// Prompt plus generated positions.
    pub seq: usize,
    /// Classifier-free guidance (a second, unconditional forward in the same batch).
    pub cfg: bool,
    /// Confidence rule.
    pub remasking: Remasking,
}

/// The sampler-step graph (see the module docs).
pub fn text_step_graph(cfg: &LladaConfig, spec: TextStepSpec) -> Result<Graph> {
    let mut g = Graph::new();
    let params = declare_params(&mut g, cfg)?;
    let (b, l) = (spec.batch, spec.seq);
    let x = g.add_input("x", Role::State, DType::I64, [b, l])?;
    let scalar = |g: &mut Graph, name: &str, dt: DType| g.input(name, dt, Vec::<usize>::new());
    let temperature = scalar(&mut g, "temperature", DType::F32)?;
    let seed = scalar(&mut g, "seed", DType::I64)?;
    let offset = scalar(&mut g, "offset", DType::I64)?;
    let block_end = scalar(&mut g, "block_end", DType::I64)?;
    let k = scalar(&mut g, "k", DType::I64)?;
    let lg = if spec.cfg {
        let w = scalar(&mut g, "cfg_scale", DType::F32)?;
        let prompt_len = scalar(&mut g, "prompt_len", DType::I64)?;
        guided_logits(&mut g, cfg, &params, x, w, prompt_len)?
    } else {
        logits(&mut g, cfg, &params, x, None)?
    };
    let bad = nonfinite_count(&mut g, lg)?;
    g.set_output("nonfinite", bad)?;
    let args = RemaskArgs {
        logits: lg,
        x,
        temperature,
        seed,
        offset,
        block_end,
        k,
    };
    let next = g.remask_unfused(args, cfg.mask_token_id, spec.remasking, GUMBEL_STREAM)?;
    g.set_output("update.x", next)?;
    g.set_update("update.x", "x")?;
    Ok(g)
}

/// `ℓu + (w + 1)(ℓc − ℓu)` (spec §6.1), with `ℓc` the logits of `x` and `ℓu` those of `x` with
/// every position before `prompt_len` set to `[MASK]`, from one forward over both rows.
fn guided_logits(
    g: &mut Graph,
    cfg: &LladaConfig,
    params: &indexmap::IndexMap<String, NodeId>,
    x: NodeId,
    w: NodeId,
    prompt_len: NodeId,
) -> Result<NodeId> {
    let s = g.try_node(x)?.shape.clone();
    let b = s.0[0];
    let pos = g.iota(DType::I64, s.clone(), 1)?;
    let plen = g.broadcast_to(prompt_len, s.clone())?;
    let in_prompt = g.compare(CompareOp::Lt, pos, plen)?;
    let mask = g.full(DType::I64, cfg.mask_token_id as f64, s.clone())?;
    let uncond = g.where_(in_prompt, mask, x)?;
    let both = g.concat(&[x, uncond], 0)?;
    let lg = logits(g, cfg, params, both, None)?;
    let c = g.slice_axis(lg, 0, 0, b)?;
    let u = g.slice_axis(lg, 0, b, 2 * b)?;
    let diff = g.sub(c, u)?;
    let w1 = g.binary_scalar(BinaryOp::Add, w, 1.0)?;
    let scaled = g.mul(diff, w1)?;
    g.add2(u, scaled)
}

/// The number of NaN or infinite values of `x` (f32 scalar): those where `|x| < ∞` is false.
fn nonfinite_count(g: &mut Graph, x: NodeId) -> Result<NodeId> {
    let a = g.unary(UnaryOp::Abs, x)?;
    let inf = g.full(DType::F32, f64::INFINITY, Vec::<usize>::new())?;
    let finite = g.compare(CompareOp::Lt, a, inf)?;
    let bad = g.unary(UnaryOp::Not, finite)?;
    let bad = g.cast(bad, DType::F32)?;
    let r = g.try_node(bad)?.shape.rank() as i64;
    let axes: Vec<i64> = (0..r).collect();
    g.reduce(ReduceOp::Sum, bad, &axes, false)
}
