//! The compiled step of the text sampler (spec §6.1), an entry over resident state: the
//! sequence `x` (role `State`, i64 `[B, L]`) is read, run through the transformer, and updated
//! in place by the confidence top-k remask, so a generation loop replays this entry with a few
//! scalars per step and never moves logits off the device.
//!
//! Inputs: every parameter (role `Param`), `x`, and per step the scalars `temperature` (f32),
//! `seed`, `offset`, `block_end`, `k` (i64) and `threshold` (f32: confidence-threshold
//! parallel decoding, off above 1); with classifier-free guidance also `cfg_scale` (f32) and
//! `prompt_len` (i64: positions before it are the prompt, set to `[MASK]` in the unconditional
//! row). Outputs: `update.x` (the in-place update of `x`), `nonfinite` (f32 count of NaN or
//! infinite logits, so a diverged model stops with an error naming the step) and
//! `masked_left` (f32: `[MASK]`s still before `block_end`, so a threshold decoder knows when
//! its block is done).
//!
//! The remask is written with primitive ops ([`mmada_ir::Graph::remask_unfused`]); the
//! `fuse-remask` pass turns it into one streaming kernel, so the compiled step holds the
//! logits and no `[B, L, V]` probabilities.

use crate::config::LladaConfig;
use crate::llada::{declare_params, head, logits, trunk, Kv};
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
    /// Also write every layer's keys and values into the resident caches (`cache.k.{i}`,
    /// `cache.v.{i}`, role `State`, `[B, H, L, hd]`): the first step of a block under the
    /// dual cache.
    pub fill_cache: bool,
    /// Run the final norm and head only on the current block's positions (this many, ending
    /// at `block_end`) and remask within them: the only positions a step can commit once the
    /// earlier blocks are full, so the tokens are those of the whole-sequence head. `None`:
    /// every position (a prompt holding `[MASK]`s to infill).
    pub head_block: Option<usize>,
    /// Attend only to the keys `key_mask` (bool `[B, L]`, role `State`) allows: left-padded
    /// prompts of different lengths in one batch (UniGRPO's rollouts). With RoPE's relative
    /// positions a padded row then gives the unpadded row's logits. Not with guidance.
    pub key_mask: bool,
}

/// Declares the resident `key_mask` input when the spec asks for it.
fn declare_key_mask(g: &mut Graph, spec: &TextStepSpec) -> Result<Option<NodeId>> {
    if !spec.key_mask {
        return Ok(None);
    }
    let km = g.add_input("key_mask", Role::State, DType::Bool, [spec.batch, spec.seq])?;
    Ok(Some(km))
}

/// Name of the cached block-step entry (the forward-with-cache).
pub const BLOCK_STEP: &str = "text-block-step";

/// Names of layer `i`'s cached keys and values.
pub fn cache_names(i: usize) -> (String, String) {
    (format!("cache.k.{i}"), format!("cache.v.{i}"))
}

/// Declares the caches of every layer (role `State`, `[B, H, L, hd]` in the configuration's
/// dtype).
fn declare_caches(
    g: &mut Graph,
    cfg: &LladaConfig,
    b: usize,
    l: usize,
) -> Result<Vec<(NodeId, NodeId)>> {
    let shape = [b, cfg.n_heads, l, cfg.head_dim()];
    (0..cfg.n_layers)
        .map(|i| {
            let (kn, vn) = cache_names(i);
            Ok((
                g.add_input(&kn, Role::State, cfg.dtype, shape)?,
                g.add_input(&vn, Role::State, cfg.dtype, shape)?,
            ))
        })
        .collect()
}

/// Writes each layer's keys and values (`kv`) into the caches as in-place updates.
fn update_caches(g: &mut Graph, kv: &[(NodeId, NodeId)]) -> Result<()> {
    for (i, &(k, v)) in kv.iter().enumerate() {
        let (kn, vn) = cache_names(i);
        for (name, node) in [(kn, k), (vn, v)] {
            let out = format!("update.{name}");
            g.set_output(&out, node)?;
            g.set_update(&out, &name)?;
        }
    }
    Ok(())
}

/// Name of the prefix-cache step entry of block `j` (its run is `seq − start_j` positions
/// long, so each block has its own entry).
pub fn prefix_step_name(j: usize) -> String {
    format!("text-prefix-step.{j}")
}

/// The dual-cache step of the text sampler (Fast-dLLM): only the `block` positions starting
/// at `block_start` (i64 scalar input) go through the transformer; attention reads every
/// layer's cached keys and values with the block's rows replaced by fresh ones (and written
/// back in place); the final norm and head run on the block only, and the remask commits
/// within it. Other inputs and outputs as [`text_step_graph`] (`k`, `threshold`,
/// `temperature`, `seed`, `offset`; `update.x`, `nonfinite`, `masked_left`); no guidance.
pub fn block_step_graph(cfg: &LladaConfig, spec: TextStepSpec, block: usize) -> Result<Graph> {
    cached_step_graph(cfg, spec, block, block)
}

/// The prefix-cache step of the text sampler (Fast-dLLM's prefix cache): the block starting
/// at `block_start` and every position after it (`run` = `seq − block_start` of them) go
/// through the transformer, against the cached keys and values of the positions before the
/// block; the head runs on the block's `block` positions only. As [`block_step_graph`]
/// otherwise; exact when no earlier position changed since the cache was filled, which holds
/// for the committed prefix (only its keys of deeper layers drift, as the suffix they
/// attended to is decoded).
pub fn prefix_step_graph(
    cfg: &LladaConfig,
    spec: TextStepSpec,
    block: usize,
    run: usize,
) -> Result<Graph> {
    if run < block || run > spec.seq {
        return Err(mmada_ir::IrError::Input {
            name: "prefix step".into(),
            msg: format!(
                "a run of {run} positions must hold the block ({block}) and fit the sequence ({})",
                spec.seq
            ),
        });
    }
    cached_step_graph(cfg, spec, run, block)
}

/// The cached step: `run` positions from `block_start` through the transformer against the
/// caches, the head and the remask on the first `block` of them.
fn cached_step_graph(
    cfg: &LladaConfig,
    spec: TextStepSpec,
    run: usize,
    block: usize,
) -> Result<Graph> {
    let mut g = Graph::new();
    let params = declare_params(&mut g, cfg)?;
    let (b, l) = (spec.batch, spec.seq);
    let x = g.add_input("x", Role::State, DType::I64, [b, l])?;
    let caches = declare_caches(&mut g, cfg, b, l)?;
    let km = declare_key_mask(&mut g, &spec)?;
    let scalar = |g: &mut Graph, name: &str, dt: DType| g.input(name, dt, Vec::<usize>::new());
    let start = scalar(&mut g, "block_start", DType::I64)?;
    let temperature = scalar(&mut g, "temperature", DType::F32)?;
    let seed = scalar(&mut g, "seed", DType::I64)?;
    let offset = scalar(&mut g, "offset", DType::I64)?;
    let k = scalar(&mut g, "k", DType::I64)?;
    let threshold = scalar(&mut g, "threshold", DType::F32)?;
    let sc = StepScalars {
        temperature,
        seed,
        offset,
        k,
        threshold,
    };
    let xr = block_rows(&mut g, x, start, run)?;
    let mut kv = Vec::new();
    let kvs = Kv::Block {
        start,
        caches: &caches,
    };
    let h = trunk(&mut g, cfg, &params, xr, km, kvs, &mut kv)?;
    // The block is the run's first `block` positions (all of it for the dual cache).
    let (hb, xb) = if run == block {
        (h, xr)
    } else {
        (
            g.slice_axis(h, 1, 0, block)?,
            g.slice_axis(xr, 1, 0, block)?,
        )
    };
    let lg = head(&mut g, cfg, &params, hb)?;
    update_caches(&mut g, &kv)?;
    let bad = nonfinite_count(&mut g, lg)?;
    g.set_output("nonfinite", bad)?;
    let (nb, nx) = remask_block(&mut g, cfg, spec.remasking, lg, (x, xb), start, sc)?;
    let end = g.scalar_i64(block as i64)?;
    let left = masked_before(&mut g, nb, end, cfg.mask_token_id)?;
    g.set_output("masked_left", left)?;
    g.set_output("update.x", nx)?;
    g.set_update("update.x", "x")?;
    Ok(g)
}

/// The sampler-step graph (see the module docs).
pub fn text_step_graph(cfg: &LladaConfig, spec: TextStepSpec) -> Result<Graph> {
    let mut g = Graph::new();
    let params = declare_params(&mut g, cfg)?;
    let (b, l) = (spec.batch, spec.seq);
    let x = g.add_input("x", Role::State, DType::I64, [b, l])?;
    let km = declare_key_mask(&mut g, &spec)?;
    let scalar = |g: &mut Graph, name: &str, dt: DType| g.input(name, dt, Vec::<usize>::new());
    let temperature = scalar(&mut g, "temperature", DType::F32)?;
    let seed = scalar(&mut g, "seed", DType::I64)?;
    let offset = scalar(&mut g, "offset", DType::I64)?;
    let block_end = scalar(&mut g, "block_end", DType::I64)?;
    let k = scalar(&mut g, "k", DType::I64)?;
    let threshold = scalar(&mut g, "threshold", DType::F32)?;
    // The positions the head runs on: the block `block_end − Bk .. block_end`, or all.
    let rows = match spec.head_block {
        Some(bk) => Some((g.binary_scalar(BinaryOp::Sub, block_end, bk as f64)?, bk)),
        None => None,
    };
    let lg = if spec.cfg {
        if km.is_some() {
            return Err(mmada_ir::IrError::Input {
                name: "key_mask".into(),
                msg: "a key mask (padded prompts) with guidance is not supported".into(),
            });
        }
        let w = scalar(&mut g, "cfg_scale", DType::F32)?;
        let prompt_len = scalar(&mut g, "prompt_len", DType::I64)?;
        guided_logits(&mut g, cfg, &params, x, w, prompt_len, rows)?
    } else {
        let mut kv = Vec::new();
        let h = trunk(&mut g, cfg, &params, x, km, Kv::Own, &mut kv)?;
        if spec.fill_cache {
            declare_caches(&mut g, cfg, b, l)?;
            update_caches(&mut g, &kv)?;
        }
        head_on(&mut g, cfg, &params, h, rows)?
    };
    let bad = nonfinite_count(&mut g, lg)?;
    g.set_output("nonfinite", bad)?;
    let sc = StepScalars {
        temperature,
        seed,
        offset,
        k,
        threshold,
    };
    let next = match rows {
        Some((start, bk)) => {
            let xb = block_rows(&mut g, x, start, bk)?;
            remask_block(&mut g, cfg, spec.remasking, lg, (x, xb), start, sc)?.1
        }
        None => {
            let args = RemaskArgs {
                logits: lg,
                x,
                temperature,
                seed,
                offset,
                block_end,
                k,
                threshold,
            };
            g.remask_unfused(args, cfg.mask_token_id, spec.remasking, GUMBEL_STREAM)?
        }
    };
    g.set_output("update.x", next)?;
    g.set_update("update.x", "x")?;
    let left = masked_before(&mut g, next, block_end, cfg.mask_token_id)?;
    g.set_output("masked_left", left)?;
    Ok(g)
}

/// The head on hidden states `h [B, L, d]`: at every position, or (`rows = (start, n)`, start
/// an i64 scalar node) at positions `start .. start + n` only, giving `[B, n, rows]`.
fn head_on(
    g: &mut Graph,
    cfg: &LladaConfig,
    params: &indexmap::IndexMap<String, NodeId>,
    h: NodeId,
    rows: Option<(NodeId, usize)>,
) -> Result<NodeId> {
    let Some((start, n)) = rows else {
        return head(g, cfg, params, h);
    };
    let hb = block_rows(g, h, start, n)?;
    head(g, cfg, params, hb)
}

/// Positions `start .. start + n` of `t [B, L, …]` along axis 1 (`start` an i64 scalar node).
fn block_rows(g: &mut Graph, t: NodeId, start: NodeId, n: usize) -> Result<NodeId> {
    let mut s = g.try_node(t)?.shape.clone();
    s.0[1] = n;
    let rel = g.iota(DType::I64, s.clone(), 1)?;
    let st = g.broadcast_to(start, s)?;
    let at = g.add2(rel, st)?;
    g.gather(t, at, 1)
}

/// The per-step scalar inputs of the remask.
#[derive(Clone, Copy)]
struct StepScalars {
    temperature: NodeId,
    seed: NodeId,
    offset: NodeId,
    k: NodeId,
    threshold: NodeId,
}

/// The remask within a block: `lg [B, n, rows]` are the logits of the block's ids
/// `xb [B, n]` (positions `start ..` of `x [B, L]`); every block position may commit. Returns
/// the new block ids and `x` with them spliced in.
fn remask_block(
    g: &mut Graph,
    cfg: &LladaConfig,
    remasking: Remasking,
    lg: NodeId,
    (x, xb): (NodeId, NodeId),
    start: NodeId,
    sc: StepScalars,
) -> Result<(NodeId, NodeId)> {
    let xs = g.try_node(x)?.shape.clone();
    let (b, l) = (xs.0[0], xs.0[1]);
    let n = g.try_node(xb)?.shape.0[1];
    let end = g.scalar_i64(n as i64)?;
    // The remask ranks f32 logits (a bf16 build's block logits are widened here).
    let lg = g.cast(lg, DType::F32)?;
    let args = RemaskArgs {
        logits: lg,
        x: xb,
        temperature: sc.temperature,
        seed: sc.seed,
        offset: sc.offset,
        block_end: end,
        k: sc.k,
        threshold: sc.threshold,
    };
    let nb = g.remask_unfused(args, cfg.mask_token_id, remasking, GUMBEL_STREAM)?;
    let nb4 = g.reshape(nb, [b, 1, n, 1])?;
    let x4 = g.reshape(x, [b, 1, l, 1])?;
    let nx = crate::llada::splice_block(g, x4, nb4, start)?;
    Ok((nb, g.reshape(nx, [b, l])?))
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
    rows: Option<(NodeId, usize)>,
) -> Result<NodeId> {
    let s = g.try_node(x)?.shape.clone();
    let b = s.0[0];
    let pos = g.iota(DType::I64, s.clone(), 1)?;
    let plen = g.broadcast_to(prompt_len, s.clone())?;
    let in_prompt = g.compare(CompareOp::Lt, pos, plen)?;
    let mask = g.full(DType::I64, cfg.mask_token_id as f64, s.clone())?;
    let uncond = g.where_(in_prompt, mask, x)?;
    let both = g.concat(&[x, uncond], 0)?;
    let h = trunk(g, cfg, params, both, None, Kv::Own, &mut Vec::new())?;
    let lg = head_on(g, cfg, params, h, rows)?;
    let c = g.slice_axis(lg, 0, 0, b)?;
    let u = g.slice_axis(lg, 0, b, 2 * b)?;
    let diff = g.sub(c, u)?;
    let w1 = g.binary_scalar(BinaryOp::Add, w, 1.0)?;
    let scaled = g.mul(diff, w1)?;
    g.add2(u, scaled)
}

/// The number of `[MASK]` ids in `x [B, L]` before position `end` (f32 scalar).
fn masked_before(g: &mut Graph, x: NodeId, end: NodeId, mask_id: i64) -> Result<NodeId> {
    let s = g.try_node(x)?.shape.clone();
    let m = g.full(DType::I64, mask_id as f64, s.clone())?;
    let is_mask = g.compare(CompareOp::Eq, x, m)?;
    let pos = g.iota(DType::I64, s.clone(), 1)?;
    let e = g.broadcast_to(end, s)?;
    let before = g.compare(CompareOp::Lt, pos, e)?;
    let both = g.binary(BinaryOp::And, is_mask, before)?;
    let both = g.cast(both, DType::F32)?;
    g.reduce(ReduceOp::Sum, both, &[0, 1], false)
}

/// The number of NaN or infinite values of `x` (f32 scalar): those where `|x| < ∞` is false.
fn nonfinite_count(g: &mut Graph, x: NodeId) -> Result<NodeId> {
    let a = g.unary(UnaryOp::Abs, x)?;
    let inf = g.full(g.try_node(a)?.dtype, f64::INFINITY, Vec::<usize>::new())?;
    let finite = g.compare(CompareOp::Lt, a, inf)?;
    let bad = g.unary(UnaryOp::Not, finite)?;
    let bad = g.cast(bad, DType::F32)?;
    let r = g.try_node(bad)?.shape.rank() as i64;
    let axes: Vec<i64> = (0..r).collect();
    g.reduce(ReduceOp::Sum, bad, &axes, false)
}

/// Name of the text-to-image sampler-step entry.
pub const IMAGE_STEP: &str = "image-step";

/// The Philox streams of the image sampler: the categorical sample, and the Gumbel noise on
/// the confidences.
pub const IMAGE_STREAMS: (u32, u32) = (21, 22);

/// What an image step graph is built for.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageStepSpec {
    /// Rows generated together.
    pub batch: usize,
    /// Length of the t2i layout.
    pub seq: usize,
    /// Positions of the image tokens in the layout.
    pub image: std::ops::Range<usize>,
    /// Id of image code 0.
    pub image_offset: i64,
    /// Number of image codes.
    pub codebook: usize,
    /// Classifier-free guidance: the null-prompt rows run in the same batch.
    pub cfg: bool,
}

/// One MaskGIT step of text-to-image generation (spec §6.2) over resident state.
///
/// Inputs: the parameters; `x` and `key_mask` (role `State`: the t2i layout and its key mask,
/// which hides `[iPAD]`); with guidance `x_null` and `key_mask_null` (the null prompt, whose
/// image part mirrors `x`'s); per step `seed`, `offset`, `nmask` (i64: positions left masked),
/// `temperature` (f32: the noise scale on the confidences this step) and, with guidance,
/// `cfg_scale` (f32). Over the image positions and the image ids only:
/// `ℓ = (1 + w)·ℓc − w·ℓu`; `ŝ` one categorical sample per position (Gumbel-max); known
/// positions keep their code; confidence `log softmax(ℓ)[ŝ]` (known: 1e30) plus `τ·Gumbel`; the
/// `nmask` least confident positions (ties to the lower position) become `[MASK]`, the rest
/// `ŝ` as image ids. Outputs: `update.x` (and `update.x_null`), `samples` (i64 `[B, N]`, `ŝ`:
/// after the last step, the image), `nonfinite`.
pub fn image_step_graph(cfg: &LladaConfig, spec: &ImageStepSpec) -> Result<Graph> {
    let mut g = Graph::new();
    let params = declare_params(&mut g, cfg)?;
    let (b, l) = (spec.batch, spec.seq);
    let (s0, s1) = (spec.image.start, spec.image.end);
    let n = s1 - s0;
    let x = g.add_input("x", Role::State, DType::I64, [b, l])?;
    let km = g.add_input("key_mask", Role::State, DType::Bool, [b, l])?;
    let scalar = |g: &mut Graph, name: &str, dt: DType| g.input(name, dt, Vec::<usize>::new());
    let seed = scalar(&mut g, "seed", DType::I64)?;
    let offset = scalar(&mut g, "offset", DType::I64)?;
    let nmask = scalar(&mut g, "nmask", DType::I64)?;
    let temperature = scalar(&mut g, "temperature", DType::F32)?;
    let null = if spec.cfg {
        let xn = g.add_input("x_null", Role::State, DType::I64, [b, l])?;
        let kn = g.add_input("key_mask_null", Role::State, DType::Bool, [b, l])?;
        let w = scalar(&mut g, "cfg_scale", DType::F32)?;
        Some((xn, kn, w))
    } else {
        None
    };
    let lg = match null {
        Some((xn, kn, w)) => {
            let ids = g.concat(&[x, xn], 0)?;
            let keys = g.concat(&[km, kn], 0)?;
            let lg = logits(&mut g, cfg, &params, ids, Some(keys))?;
            let c = g.slice_axis(lg, 0, 0, b)?;
            let u = g.slice_axis(lg, 0, b, 2 * b)?;
            let w1 = g.binary_scalar(BinaryOp::Add, w, 1.0)?;
            let c1 = g.mul(c, w1)?;
            let uw = g.mul(u, w)?;
            g.sub(c1, uw)?
        }
        None => logits(&mut g, cfg, &params, x, Some(km))?,
    };
    let li = g.slice_axis(lg, 1, s0, s1)?;
    let o = spec.image_offset as usize;
    let li = g.slice_axis(li, 2, o, o + spec.codebook)?; // [B, N, K]
    let bad = nonfinite_count(&mut g, li)?;
    g.set_output("nonfinite", bad)?;
    let bn = [b, n];
    let xi = g.slice_axis(x, 1, s0, s1)?;
    let mask = g.full(DType::I64, cfg.mask_token_id as f64, bn)?;
    let unknown = g.compare(CompareOp::Eq, xi, mask)?;
    let sample = g.sample_categorical(li, seed, offset, IMAGE_STREAMS.0)?; // [B, N]
    let known = g.binary_scalar(BinaryOp::Sub, xi, spec.image_offset as f64)?;
    let s_hat = g.where_(unknown, sample, known)?;
    let logp = g.log_softmax(li, -1)?;
    let s3 = g.reshape(s_hat, [b, n, 1])?;
    let lp = g.gather(logp, s3, 2)?;
    let lp = g.reshape(lp, bn)?;
    let huge = g.full(DType::F32, 1e30, bn)?;
    let conf = g.where_(unknown, lp, huge)?;
    let noise = g.gumbel(seed, offset, IMAGE_STREAMS.1, bn)?;
    let t = g.broadcast_to(temperature, bn)?;
    let tn = g.mul(t, noise)?;
    let conf = g.add2(conf, tn)?;
    // The nmask least confident: the first nmask of the ascending order.
    let neg = g.unary(UnaryOp::Neg, conf)?;
    let order = g.topk(neg, n, 1)?;
    let rank = g.iota(DType::I64, bn, 1)?;
    let nm = g.broadcast_to(nmask, bn)?;
    let take = g.compare(CompareOp::Lt, rank, nm)?;
    let take = g.cast(take, DType::F32)?;
    let zeros = g.full(DType::F32, 0.0, bn)?;
    let hit = g.scatter_add(zeros, order, take, 1)?;
    let half = g.full(DType::F32, 0.5, bn)?;
    let remask = g.compare(CompareOp::Gt, hit, half)?;
    let ids = g.binary_scalar(BinaryOp::Add, s_hat, spec.image_offset as f64)?;
    let new_img = g.where_(remask, mask, ids)?;
    let splice = |g: &mut Graph, seq: NodeId| -> Result<NodeId> {
        let mut parts = Vec::new();
        if s0 > 0 {
            parts.push(g.slice_axis(seq, 1, 0, s0)?);
        }
        parts.push(new_img);
        if s1 < l {
            parts.push(g.slice_axis(seq, 1, s1, l)?);
        }
        g.concat(&parts, 1)
    };
    let nx = splice(&mut g, x)?;
    g.set_output("update.x", nx)?;
    g.set_update("update.x", "x")?;
    if let Some((xn, _, _)) = null {
        let nn = splice(&mut g, xn)?;
        g.set_output("update.x_null", nn)?;
        g.set_update("update.x_null", "x_null")?;
    }
    g.set_output("samples", s_hat)?;
    Ok(g)
}
