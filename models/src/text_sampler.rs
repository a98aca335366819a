//! Text generation (spec §6.1, LLaDA's semi-autoregressive low-confidence remasking): the
//! compiled sampler step ([`crate::sampler_step`]) is replayed over a resident sequence, one
//! run per denoising step, with only the step's scalars going in and a 4-byte finiteness
//! count coming out; the sequence is read back once at the end (and after each block when
//! early exit is on).
//!
//! The schedule: the `G` generated positions form `G / Bk` blocks filled left to right; block
//! `b` gets `S / (G / Bk)` steps, and step `j` of a block commits `⌊m/s⌋ + [j < m mod s]` of its
//! `m` masked positions ([`commit_schedule`]), the most confident ones, never re-masking.

use crate::config::LladaConfig;
use crate::sampler_step::{
    block_step_graph, prefix_step_graph, prefix_step_name, text_step_graph, TextStepSpec,
    BLOCK_STEP, TEXT_STEP,
};
use crate::ModelsError;
use indexmap::IndexMap;
use mmada_codegen::artifact::Artifact;
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::compile::{compile_entries, CompileOptions, PtxCheck};
use mmada_ir::{Remasking, Shape, Tensor};
use mmada_runtime::{open_artifact, Executor, Target};

/// Options of the text sampler, named as the reference's `generate` arguments.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TextOptions {
    /// Generated positions `G`.
    pub gen_length: usize,
    /// Denoising steps `S` in all (a multiple of the block count).
    pub steps: usize,
    /// Block length `Bk` (divides `G`).
    pub block_length: usize,
    /// Gumbel temperature τ (0: plain argmax).
    pub temperature: f32,
    /// Classifier-free guidance scale w (0: none).
    pub cfg_scale: f32,
    /// Confidence rule.
    pub remasking: Remasking,
    /// Seed of the Philox streams (Gumbel noise, random confidences).
    pub seed: u64,
    /// Stop after a block whose last position is this id in every row (the reference's
    /// `mmu_generate_fast` with `<|eot_id|>`); the rest stays `[MASK]`.
    pub early_exit: Option<i64>,
    /// Confidence-threshold parallel decoding (Fast-dLLM): each step commits every masked
    /// position of the block whose confidence is above this, and at least the most confident
    /// one, until the block is full; `steps` then only bounds nothing (the count is dynamic).
    pub threshold: Option<f32>,
    /// Fast-dLLM's key/value caches ([`KvCache`]).
    pub cache: KvCache,
}

/// Fast-dLLM's approximate key/value caches of the text sampler. With either, the first step
/// of each block runs the whole sequence and fills every layer's key/value cache; the block's
/// other steps read it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvCache {
    /// Every step runs the whole sequence.
    #[default]
    None,
    /// The block and every position after it run each step, against the cached keys and
    /// values of the positions before the block (a block old).
    Prefix,
    /// Only the block's positions run, against the cached prefix and suffix (both a block
    /// old); the block's rows of the cache are rewritten in place.
    Dual,
}

impl Default for TextOptions {
    fn default() -> Self {
        TextOptions {
            gen_length: 128,
            steps: 128,
            block_length: 32,
            temperature: 0.0,
            cfg_scale: 0.0,
            remasking: Remasking::LowConfidence,
            seed: 0,
            early_exit: None,
            threshold: None,
            cache: KvCache::None,
        }
    }
}

impl TextOptions {
    /// Checks the options against a prompt of `prompt_len` tokens and a model with room for
    /// `max_len` positions.
    pub fn check(&self, prompt_len: usize, max_len: usize) -> Result<(), ModelsError> {
        let bad = |m: String| Err(ModelsError::Input(m));
        if self.gen_length == 0 || self.block_length == 0 || self.steps == 0 {
            return bad("--gen-length, --block-length and --steps must be positive".into());
        }
        if !self.gen_length.is_multiple_of(self.block_length) {
            return bad(format!(
                "--gen-length {} is not a multiple of --block-length {}",
                self.gen_length, self.block_length
            ));
        }
        let blocks = self.gen_length / self.block_length;
        if !self.steps.is_multiple_of(blocks) {
            return bad(format!(
                "--steps {} is not a multiple of the number of blocks ({} = {} / {})",
                self.steps, blocks, self.gen_length, self.block_length
            ));
        }
        if prompt_len == 0 {
            return bad("the prompt is empty".into());
        }
        if prompt_len + self.gen_length > max_len {
            return bad(format!(
                "the prompt ({prompt_len} tokens) plus --gen-length {} is longer than the \
                 model's max_sequence_length {max_len}",
                self.gen_length
            ));
        }
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(format!(
                "--temperature must be finite and ≥ 0, got {}",
                self.temperature
            ));
        }
        if let Some(t) = self.threshold {
            if !(t > 0.0 && t <= 1.0) {
                return bad(format!("--threshold must be in (0, 1], got {t}"));
            }
        }
        if self.cache != KvCache::None && self.cfg_scale > 0.0 {
            return bad("--cache prefix|dual with --cfg-scale is not supported yet".into());
        }
        if !self.cfg_scale.is_finite() || self.cfg_scale < 0.0 {
            return bad(format!(
                "--cfg-scale must be finite and ≥ 0, got {}",
                self.cfg_scale
            ));
        }
        Ok(())
    }

    /// Steps per block.
    pub fn steps_per_block(&self) -> usize {
        self.steps / (self.gen_length / self.block_length).max(1)
    }
}

/// How many of `masked` positions each of `steps` steps commits: `⌊m/s⌋`, plus one for the
/// first `m mod s` steps (LLaDA's `get_num_transfer_tokens`).
pub fn commit_schedule(masked: usize, steps: usize) -> Vec<usize> {
    let steps = steps.max(1);
    (0..steps)
        .map(|j| masked / steps + usize::from(j < masked % steps))
        .collect()
}

/// The result of a generation.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// The generated ids of each row (prompt excluded), `G` per row; positions never reached
    /// because of an early exit are `[MASK]`.
    pub ids: Vec<Vec<i64>>,
    /// Steps run.
    pub steps: usize,
}

/// Compiles the sampler step for `batch` rows of `seq` positions.
pub fn compile_text_step(
    cfg: &LladaConfig,
    spec: TextStepSpec,
    backend: BackendOptions,
) -> Result<Artifact, ModelsError> {
    let g = text_step_graph(cfg, spec)?;
    let opts = CompileOptions {
        name: format!("text_step_b{}_l{}", spec.batch, spec.seq),
        backend,
        ptx_check: PtxCheck::Skip,
        ..CompileOptions::default()
    };
    Ok(compile_entries(&[(TEXT_STEP, &g)], &opts)?.0)
}

/// A compiled text sampler with the model's weights resident.
pub struct TextSampler {
    cfg: LladaConfig,
    spec: TextStepSpec,
    opts: TextOptions,
    prompt_len: usize,
    exe: Box<dyn Executor>,
    target: Target,
    backend: BackendOptions,
}

impl TextSampler {
    /// Compiles the step for `batch` prompts of `prompt_len` tokens and uploads the weights.
    pub fn new(
        cfg: LladaConfig,
        weights: &IndexMap<String, Tensor>,
        batch: usize,
        prompt_len: usize,
        opts: TextOptions,
        target: Target,
        backend: BackendOptions,
    ) -> Result<TextSampler, ModelsError> {
        opts.check(prompt_len, cfg.max_sequence_length)?;
        let head_block = Some(opts.block_length);
        Self::build(
            cfg, weights, batch, prompt_len, opts, target, backend, head_block,
        )
    }

    /// [`TextSampler::new`] with the head on the current block only (`head_block`) or on
    /// every position (`None`: prompts with `[MASK]`s to infill, which the reference commits
    /// wherever they are).
    #[allow(clippy::too_many_arguments)]
    fn build(
        cfg: LladaConfig,
        weights: &IndexMap<String, Tensor>,
        batch: usize,
        prompt_len: usize,
        opts: TextOptions,
        target: Target,
        backend: BackendOptions,
        head_block: Option<usize>,
    ) -> Result<TextSampler, ModelsError> {
        let spec = TextStepSpec {
            batch,
            seq: prompt_len + opts.gen_length,
            cfg: opts.cfg_scale > 0.0,
            remasking: opts.remasking,
            fill_cache: opts.cache != KvCache::None,
            head_block,
            key_mask: false,
        };
        let art = match opts.cache {
            KvCache::None => compile_text_step(&cfg, spec, backend.clone())?,
            cache => {
                let bk = opts.block_length;
                let mut entries = vec![(TEXT_STEP.to_string(), text_step_graph(&cfg, spec)?)];
                if cache == KvCache::Dual {
                    entries.push((BLOCK_STEP.into(), block_step_graph(&cfg, spec, bk)?));
                } else {
                    // One entry per block: block j runs the `seq − start_j` positions from
                    // its start.
                    for j in 0..opts.gen_length / bk {
                        let run = opts.gen_length - j * bk;
                        let g = prefix_step_graph(&cfg, spec, bk, run)?;
                        entries.push((prefix_step_name(j), g));
                    }
                }
                let named: Vec<(&str, &mmada_ir::Graph)> =
                    entries.iter().map(|(n, g)| (n.as_str(), g)).collect();
                let copts = CompileOptions {
                    name: format!(
                        "text_step_{}_b{}_l{}",
                        if cache == KvCache::Dual {
                            "dual"
                        } else {
                            "prefix"
                        },
                        spec.batch,
                        spec.seq
                    ),
                    backend: backend.clone(),
                    ptx_check: PtxCheck::Skip,
                    ..CompileOptions::default()
                };
                compile_entries(&named, &copts)?.0
            }
        };
        let mut exe = open_artifact(art, target)?;
        for (n, t) in weights {
            exe.set_input(n, t)?;
        }
        Ok(TextSampler {
            cfg,
            spec,
            opts,
            prompt_len,
            exe,
            target,
            backend,
        })
    }

    /// The executor (for its transfer counts).
    pub fn executor(&self) -> &dyn Executor {
        self.exe.as_ref()
    }

    /// Generates from `prompts` (one per compiled row, each `prompt_len` ids inside the
    /// vocabulary); `on_step(done, total)` is called after every step.
    pub fn generate(
        &mut self,
        prompts: &[Vec<i64>],
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Generation, ModelsError> {
        let (b, lp) = (self.spec.batch, self.prompt_len);
        let mask = self.cfg.mask_token_id;
        if self.spec.head_block.is_some() && prompts.iter().flatten().any(|&id| id == mask) {
            // [MASK]s in a prompt are filled like generated ones, wherever they are: the
            // step needs the head on every position. Recompiled once, weights from the device.
            let weights = crate::llada::param_specs(&self.cfg)
                .into_iter()
                .map(|p| Ok((p.name.clone(), self.exe.get_input(&p.name)?)))
                .collect::<Result<IndexMap<_, _>, ModelsError>>()?;
            *self = Self::build(
                self.cfg.clone(),
                &weights,
                b,
                lp,
                self.opts,
                self.target,
                self.backend.clone(),
                None,
            )?;
        }
        decode(
            self.exe.as_mut(),
            &self.cfg,
            self.spec,
            &self.opts,
            prompts,
            on_step,
        )
    }
}

/// The sampling loop over an executor whose artifact holds the text step ([`TEXT_STEP`], and
/// [`BLOCK_STEP`] with the dual cache) compiled for `spec`, with the weights resident: writes
/// the prompts and `[MASK]`s into `x`, replays the step block by block, and reads the
/// sequence back. Used by [`TextSampler`] and by UniGRPO's rollouts, whose artifact shares the
/// parameters with the training step.
pub fn decode(
    exe: &mut dyn Executor,
    cfg: &LladaConfig,
    spec: TextStepSpec,
    opts: &TextOptions,
    prompts: &[Vec<i64>],
    on_step: &mut dyn FnMut(usize, usize),
) -> Result<Generation, ModelsError> {
    let (b, l) = (spec.batch, spec.seq);
    let lp = l - opts.gen_length;
    if prompts.len() != b {
        return Err(ModelsError::Input(format!(
            "the sampler was compiled for {b} prompts, got {}",
            prompts.len()
        )));
    }
    let rows = cfg.rows() as i64;
    let mask = cfg.mask_token_id;
    let mut x = Vec::with_capacity(b * l);
    for (r, p) in prompts.iter().enumerate() {
        if p.len() != lp {
            return Err(ModelsError::Input(format!(
                "prompt {r} has {} tokens, the sampler was compiled for {lp}",
                p.len()
            )));
        }
        if let Some((i, &id)) = p.iter().enumerate().find(|(_, &id)| id < 0 || id >= rows) {
            return Err(ModelsError::Input(format!(
                "prompt {r}, token {i}: id {id} is outside the vocabulary (0..{rows})"
            )));
        }
        x.extend_from_slice(p);
        x.extend(std::iter::repeat_n(mask, opts.gen_length));
    }
    exe.set_input("x", &Tensor::from_i64(Shape(vec![b, l]), x)?)?;
    if opts.cache != KvCache::None {
        // Filled by each block's first step before anything reads them.
        let shape = Shape(vec![b, cfg.n_heads, l, cfg.head_dim()]);
        let zeros = Tensor::from_f32(shape.clone(), vec![0.0; shape.numel()])?;
        for i in 0..cfg.n_layers {
            let (kn, vn) = crate::sampler_step::cache_names(i);
            exe.set_input(&kn, &zeros)?;
            exe.set_input(&vn, &zeros)?;
        }
    }
    let blocks = opts.gen_length / opts.block_length;
    let per_block = opts.steps_per_block();
    let mut step = 0usize;
    for blk in 0..blocks {
        let end = lp + (blk + 1) * opts.block_length;
        match opts.threshold {
            None => {
                for (j, k) in commit_schedule(opts.block_length, per_block)
                    .into_iter()
                    .enumerate()
                {
                    let at = format!(
                        "step {} of {} (block {}, step {} of it)",
                        step + 1,
                        opts.steps,
                        blk + 1,
                        j + 1
                    );
                    step_once(exe, cfg, spec, opts, lp, step, end, k, 2.0, &at, j == 0)?;
                    step += 1;
                    on_step(step, opts.steps);
                }
            }
            Some(t) => {
                // At least one token per step, and every candidate above the threshold;
                // the block is done when no [MASK] is left before its end.
                for j in 0..opts.block_length {
                    let at = format!(
                        "step {} (block {}, step {} of it)",
                        step + 1,
                        blk + 1,
                        j + 1
                    );
                    let left = step_once(exe, cfg, spec, opts, lp, step, end, 1, t, &at, j == 0)?;
                    step += 1;
                    on_step(step, step + left as usize);
                    if left == 0.0 {
                        break;
                    }
                }
            }
        }
        if let Some(eot) = opts.early_exit {
            let x = exe.get_input("x")?.to_i64_vec();
            if (0..b).all(|r| x[r * l + end - 1] == eot) {
                break;
            }
        }
    }
    let x = exe.get_input("x")?.to_i64_vec();
    let ids = (0..b)
        .map(|r| x[r * l + lp..(r + 1) * l].to_vec())
        .collect();
    Ok(Generation { ids, steps: step })
}

/// Runs one step (global index `step`) committing in positions before `end`; returns the
/// `[MASK]`s left there. `at` names the step in errors.
#[allow(clippy::too_many_arguments)]
fn step_once(
    exe: &mut dyn Executor,
    cfg: &LladaConfig,
    spec: TextStepSpec,
    opts: &TextOptions,
    prompt_len: usize,
    step: usize,
    end: usize,
    k: usize,
    threshold: f32,
    at: &str,
    first_in_block: bool,
) -> Result<f64, ModelsError> {
    let scalar_f = |v: f32| Tensor::from_f32(Shape::scalar(), vec![v]);
    let scalar_i = |v: i64| Tensor::from_i64(Shape::scalar(), vec![v]);
    let (b, l) = (spec.batch, spec.seq);
    let draws = (b * l * cfg.rows()) as i64;
    let mut ins = IndexMap::new();
    ins.insert("temperature".into(), scalar_f(opts.temperature)?);
    ins.insert("seed".into(), scalar_i(opts.seed as i64)?);
    ins.insert("offset".into(), scalar_i(step as i64 * draws)?);
    ins.insert("k".into(), scalar_i(k as i64)?);
    ins.insert("threshold".into(), scalar_f(threshold)?);
    // A block's first step is the full step (it fills the caches); with a cache the others
    // run the cached entry from the block's start.
    let start = end - opts.block_length;
    let entry = if opts.cache == KvCache::None || first_in_block {
        ins.insert("block_end".into(), scalar_i(end as i64)?);
        TEXT_STEP.to_string()
    } else {
        ins.insert("block_start".into(), scalar_i(start as i64)?);
        match opts.cache {
            KvCache::Prefix => prefix_step_name((start - prompt_len) / opts.block_length),
            _ => BLOCK_STEP.to_string(),
        }
    };
    let entry = entry.as_str();
    if spec.cfg {
        ins.insert("cfg_scale".into(), scalar_f(opts.cfg_scale)?);
        ins.insert("prompt_len".into(), scalar_i(prompt_len as i64)?);
    }
    exe.run_entry(entry, &ins)?;
    let bad = exe.read_output(entry, "nonfinite")?.to_f64_vec();
    let bad = bad.first().copied().unwrap_or(0.0);
    if bad != 0.0 {
        return Err(ModelsError::Input(format!(
            "{at}: the model produced {bad} NaN or infinite logits; generation stopped"
        )));
    }
    let left = exe.read_output(entry, "masked_left")?.to_f64_vec();
    Ok(left.first().copied().unwrap_or(0.0))
}
