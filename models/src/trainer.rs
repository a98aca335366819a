//! `mmada train`: the compiled trainer. The loop ([`run_loop`]) is generic over an
//! [`Objective`] (the step graph and each step's data): [`MaskedDiffusion`] trains on text rows,
//! [`Multimodal`] (`--multimodal`) on t2i, mmu and text rows in one batch.
//!
//! Each step feeds one mixed batch (LM and SFT rows) to the compiled training step (see
//! [`crate::train_step`]); parameters and AdamW moments stay resident in the executor.
//! Everything that decides a step — the batch order, the noise (Philox keyed by the seed and
//! the step's offset `step·2³²`), the learning rate — is a function of the step number, so a
//! run resumed from a checkpoint continues bit-identically.
//!
//! Checkpoints (`<out>/checkpoint-<step>/`): `config.json` and `model.safetensors` in the HF
//! layout (official names), `optimizer.safetensors` (`<name>.exp_avg`, `<name>.exp_avg_sq`),
//! `trainer_state.json` (step, data position, RNG offset, options). A checkpoint is written to a
//! temporary directory, synced, and renamed into place; `<out>/latest` names the newest complete
//! one and is replaced atomically, so a crash mid-save never damages the previous checkpoint.
//! Metrics go to `<out>/metrics.jsonl` (one object per step) and `<out>/loss-curve.png` (and,
//! for a mixed batch, each task's loss to `<out>/task-losses.png`).

use crate::checkpoint::{load_model, save_model};
use crate::config::LladaConfig;
use crate::data::{embedded_rows, read_jsonl, Batcher, DataPosition, Row};
use crate::failpoint;
use crate::llada::param_specs;
use crate::loss::row_weights;
use crate::multimodal::{MixRun, Multimodal, MultimodalOptions};
pub use crate::objective::Objective;
use crate::tokenizer::TextTokenizer;
use crate::train_step::{exp_avg, exp_avg_sq, train_step_graph, StepHyper};
use crate::unigrpo::{GrpoOptions, GrpoRun, UniGrpo};
use crate::ModelsError;
use indexmap::IndexMap;
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::compile::{compile_entries, CompileOptions, PtxCheck};
use mmada_ir::{DType, Tensor};
use mmada_runtime::tensor_io::{atomic_write, read_safetensors, write_safetensors};
use mmada_runtime::{open_artifact, Executor, Target};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn io(path: &Path) -> impl Fn(std::io::Error) -> ModelsError + '_ {
    move |e| ModelsError::Io {
        path: path.display().to_string(),
        source: e,
    }
}

/// What and how to train.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainOptions {
    /// Preset to initialise from (ignored when `model` is set).
    pub preset: String,
    /// HF checkpoint directory to start from.
    pub model: Option<PathBuf>,
    /// `tokenizer.json` (default: the `model` directory's, else the embedded tiny tokenizer).
    pub tokenizer: Option<PathBuf>,
    /// JSONL files (default: the embedded dataset).
    pub data: Vec<PathBuf>,
    /// Rows per batch.
    pub batch: usize,
    /// Tokens per row.
    pub seq: usize,
    /// Total steps.
    pub steps: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Warmup steps.
    pub warmup: usize,
    /// Floor of the cosine schedule, as a fraction of the peak.
    pub min_lr_scale: f64,
    /// Loss coefficient of pretraining rows.
    pub coef_lm: f64,
    /// Loss coefficient of chat/SFT rows.
    pub coef_sft: f64,
    /// Seed of initialisation, data order and noise.
    pub seed: u64,
    /// Standard deviation of the random initialisation.
    pub init_std: f64,
    /// Save every this many steps (0: only at the end).
    pub save_every: usize,
    /// Keep this many checkpoints.
    pub keep: usize,
    /// Output directory.
    pub out: PathBuf,
    /// Train on the multimodal mix (t2i, mmu and text rows) instead of text only.
    #[serde(default)]
    pub multimodal: Option<MultimodalOptions>,
    /// Dtype of the model files of each checkpoint (`f32` or `bf16`). With `bf16` the f32
    /// master weights are kept in `optimizer.safetensors` (`<name>.master`), so a resumed run
    /// continues exactly.
    #[serde(default = "f32_dtype")]
    pub save_dtype: DType,
    /// Run UniGRPO (the RL stage) instead of the masked-diffusion objective; `batch` is then
    /// the prompts per rollout and `seq` the prompt budget plus the generated length.
    #[serde(default)]
    pub unigrpo: Option<GrpoOptions>,
}

fn f32_dtype() -> DType {
    DType::F32
}

/// Name of the f32 master copy of a parameter kept beside the AdamW moments when the model
/// files are stored in a narrower dtype.
pub fn master(name: &str) -> String {
    format!("{name}.master")
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            preset: "tiny".into(),
            model: None,
            tokenizer: None,
            data: Vec::new(),
            batch: 8,
            seq: 256,
            steps: 300,
            lr: 1e-3,
            warmup: 20,
            min_lr_scale: 0.1,
            coef_lm: 1.0,
            coef_sft: 1.0,
            seed: 10086,
            init_std: 0.02,
            save_every: 100,
            keep: 3,
            out: PathBuf::from("runs/tiny"),
            multimodal: None,
            save_dtype: DType::F32,
            unigrpo: None,
        }
    }
}

impl TrainOptions {
    /// Checks every numeric option (finite, positive, in range) and, given the model, the
    /// sequence length against its `max_sequence_length` and memory. Errors name the option
    /// (`--lr`) and the limit. Runs before any compilation or allocation.
    pub fn check(&self, cfg: Option<&LladaConfig>) -> Result<(), String> {
        let count = |name: &str, v: usize, min: usize| {
            if v < min {
                Err(format!("--{name} must be at least {min}, got {v}"))
            } else {
                Ok(())
            }
        };
        count("steps", self.steps, 1)?;
        count("batch", self.batch, 1)?;
        count("seq", self.seq, 2)?;
        count("keep", self.keep, 1)?;
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("--{name} must be a finite number above 0, got {v}"))
            }
        };
        positive("lr", self.lr)?;
        if self.lr > 1.0 {
            return Err(format!(
                "--lr {} is above 1, which diverges at once with AdamW",
                self.lr
            ));
        }
        positive("init-std", self.init_std)?;
        let unit = |name: &str, v: f64| {
            if v.is_finite() && (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("--{name} must be between 0 and 1, got {v}"))
            }
        };
        unit("min-lr-scale", self.min_lr_scale)?;
        if !matches!(self.save_dtype, DType::F32 | DType::BF16) {
            return Err(format!(
                "--save-dtype must be f32 or bf16, got {}",
                self.save_dtype
            ));
        }
        for (name, v) in [("coef-lm", self.coef_lm), ("coef-sft", self.coef_sft)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("--{name} must be a finite number ≥ 0, got {v}"));
            }
        }
        let mut rows = self.batch;
        if let Some(m) = &self.multimodal {
            m.check()?;
            rows += m.batch_t2i + m.batch_mmu;
        }
        if let Some(u) = &self.unigrpo {
            if self.multimodal.is_some() {
                return Err("--stage unigrpo and --multimodal do not go together".into());
            }
            u.check()?;
            rows = self.batch * u.group_size;
            if let Some(cfg) = cfg {
                u.check_model(cfg)?;
            }
        }
        if let Some(cfg) = cfg {
            cfg.check_shape(rows, self.seq)?;
        }
        Ok(())
    }
}

/// One logged step.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    /// Step number (0-based).
    pub step: usize,
    /// Masked-diffusion loss.
    pub loss: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Tokens in the batch.
    pub tokens: usize,
    /// Seconds this step took.
    pub step_seconds: f64,
    /// The loss of each task of a mixed batch (`t2i`, `mmu`, `lm`), before its coefficient.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parts: BTreeMap<String, f64>,
    /// The objective's own figures (UniGRPO: reward mean and std, KL, clip fraction,
    /// entropy, tokens per second).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

/// Trainer state saved with each checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Always "mmada-trainer-state".
    pub format: String,
    /// Steps completed.
    pub step: usize,
    /// Next batch position (of the text rows).
    pub data: DataPosition,
    /// Next positions of the other data streams (`t2i`, `mmu` of a multimodal run).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub streams: BTreeMap<String, DataPosition>,
    /// RNG offset of the next step (`step · 2³²`).
    pub rng_offset: i64,
    /// Options of the run.
    pub options: TrainOptions,
}

pub use crate::loss::rng_offset;

/// The row length (`--seq`) a checkpoint was trained with, from its `trainer_state.json`;
/// `None` for a directory without one (an imported checkpoint).
pub fn trained_seq(dir: &Path) -> Result<Option<usize>, ModelsError> {
    let sp = dir.join("trainer_state.json");
    if !sp.is_file() {
        return Ok(None);
    }
    Ok(Some(read_state(&sp)?.options.seq))
}

/// Reads and checks a `trainer_state.json`.
fn read_state(sp: &Path) -> Result<TrainerState, ModelsError> {
    let text = std::fs::read_to_string(sp).map_err(io(sp))?;
    let state: TrainerState = serde_json::from_str(&text)
        .map_err(|e| ModelsError::Options(format!("{}: {e}", sp.display())))?;
    if state.format != "mmada-trainer-state" {
        return Err(ModelsError::Options(format!(
            "{}: not a trainer state",
            sp.display()
        )));
    }
    Ok(state)
}

/// Loads the rows of the run (and how many rows were skipped as too long).
pub fn load_rows(
    opts: &TrainOptions,
    tok: &TextTokenizer,
) -> Result<(Vec<Row>, usize), ModelsError> {
    if opts.data.is_empty() {
        let r = embedded_rows(tok, opts.seq)?;
        return Ok((r.rows, r.skipped));
    }
    let (mut rows, mut skipped) = (Vec::new(), 0);
    for p in &opts.data {
        let r = read_jsonl(p, tok, opts.seq)?;
        rows.extend(r.rows);
        skipped += r.skipped;
    }
    Ok((rows, skipped))
}

/// The checkpoint directory named by `<out>/latest`, if any.
pub fn latest_checkpoint(out: &Path) -> Option<PathBuf> {
    let name = std::fs::read_to_string(out.join("latest")).ok()?;
    let p = out.join(name.trim());
    p.join("trainer_state.json").is_file().then_some(p)
}

fn fsync_dir(dir: &Path) -> Result<(), ModelsError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io(dir))
}

/// Saves a complete checkpoint atomically; returns its directory. It holds the model in the
/// HF layout (in `state.options.save_dtype`), the tokenizer files (`tok`), the optimiser state
/// and the trainer state.
pub fn save_checkpoint(
    exe: &mut dyn Executor,
    cfg: &LladaConfig,
    tok: &TextTokenizer,
    state: &TrainerState,
    objective_state: &IndexMap<String, Tensor>,
) -> Result<PathBuf, ModelsError> {
    let out = &state.options.out;
    let name = format!("checkpoint-{}", state.step);
    let final_dir = out.join(&name);
    let tmp = out.join(format!("{name}.partial-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let mut weights = IndexMap::new();
    let mut optim = IndexMap::new();
    for p in param_specs(cfg) {
        weights.insert(p.name.clone(), exe.get_input(&p.name)?);
        optim.insert(exp_avg(&p.name), exe.get_input(&exp_avg(&p.name))?);
        optim.insert(exp_avg_sq(&p.name), exe.get_input(&exp_avg_sq(&p.name))?);
    }
    let dtype = state.options.save_dtype;
    if dtype != DType::F32 {
        for (n, w) in &weights {
            optim.insert(master(n), w.clone());
        }
    }
    save_model(&tmp, cfg, &weights, dtype, 2 << 30)?;
    tok.save_pretrained(&tmp, cfg.max_sequence_length)?;
    failpoint::hit("save-after-weights", state.step);
    write_safetensors(&tmp.join("optimizer.safetensors"), &optim)?;
    failpoint::hit("save-after-optimizer", state.step);
    if !objective_state.is_empty() {
        write_safetensors(&tmp.join(OBJECTIVE_STATE), objective_state)?;
    }
    failpoint::hit("save-after-objective", state.step);
    let js =
        serde_json::to_string_pretty(state).map_err(|e| ModelsError::Options(e.to_string()))?;
    atomic_write(&tmp.join("trainer_state.json"), js.as_bytes())?;
    fsync_dir(&tmp)?;
    failpoint::hit("save-before-publish", state.step);
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
    fsync_dir(out)?;
    atomic_write(&out.join("latest"), name.as_bytes())?;
    fsync_dir(out)?;
    Ok(final_dir)
}

/// The file of a checkpoint holding the objective's own state (UniGRPO: the reference policy
/// and the current rollout batch).
pub const OBJECTIVE_STATE: &str = "objective.safetensors";

/// A loaded checkpoint: config, weights, optimiser moments and trainer state.
pub struct LoadedCheckpoint {
    /// Model configuration.
    pub cfg: LladaConfig,
    /// Weights (f32).
    pub weights: IndexMap<String, Tensor>,
    /// AdamW moments by name.
    pub optim: IndexMap<String, Tensor>,
    /// Trainer state.
    pub state: TrainerState,
    /// The objective's state ([`OBJECTIVE_STATE`]; empty when the file is absent).
    pub objective: IndexMap<String, Tensor>,
}

/// Loads a checkpoint directory written by [`save_checkpoint`].
pub fn load_checkpoint(dir: &Path) -> Result<LoadedCheckpoint, ModelsError> {
    let (cfg, mut weights) = load_model(dir)?;
    let mut optim = read_safetensors(&dir.join("optimizer.safetensors"))?;
    let state = read_state(&dir.join("trainer_state.json"))?;
    // Model files narrower than f32 come with the f32 masters in the optimiser state.
    for p in param_specs(&cfg) {
        let m = optim.shift_remove(&master(&p.name));
        if m.is_none() && state.options.save_dtype != DType::F32 {
            return Err(ModelsError::Options(format!(
                "{}: the model files are {} and the optimizer state lacks the f32 master '{}'",
                dir.display(),
                state.options.save_dtype,
                master(&p.name)
            )));
        }
        if let Some(m) = m {
            if m.shape().0 != p.shape || m.dtype() != DType::F32 {
                return Err(ModelsError::Options(format!(
                    "{}: optimizer tensor '{}' is {}{}, expected f32{:?}",
                    dir.display(),
                    master(&p.name),
                    m.dtype(),
                    m.shape(),
                    p.shape
                )));
            }
            weights.insert(p.name.clone(), m);
        }
    }
    for p in param_specs(&cfg) {
        for n in [exp_avg(&p.name), exp_avg_sq(&p.name)] {
            match optim.get(&n) {
                Some(t) if t.shape().0 == p.shape && t.dtype() == DType::F32 => {}
                Some(t) => {
                    return Err(ModelsError::Options(format!(
                        "{}: optimizer tensor '{n}' is {}{}, expected f32{:?}",
                        dir.display(),
                        t.dtype(),
                        t.shape(),
                        p.shape
                    )))
                }
                None => {
                    return Err(ModelsError::Options(format!(
                        "{}: optimizer state lacks '{n}'",
                        dir.display()
                    )))
                }
            }
        }
    }
    let op = dir.join(OBJECTIVE_STATE);
    let objective = if op.is_file() {
        read_safetensors(&op)?
    } else {
        IndexMap::new()
    };
    Ok(LoadedCheckpoint {
        cfg,
        weights,
        optim,
        state,
        objective,
    })
}

fn scalar_f32(v: f64) -> Result<Tensor, ModelsError> {
    Ok(Tensor::from_f32(Vec::<usize>::new(), vec![v as f32])?)
}

fn scalar_i64(v: i64) -> Result<Tensor, ModelsError> {
    Ok(Tensor::from_i64(Vec::<usize>::new(), vec![v])?)
}

/// The masked-diffusion data inputs of a batch: token ids, prompt mask, row weights, and the
/// noise key (seed, step offset).
pub fn batch_inputs(
    rows: &[Row],
    seq: usize,
    opts: &TrainOptions,
    step: usize,
) -> Result<IndexMap<String, Tensor>, ModelsError> {
    let b = rows.len();
    let mut ids = Vec::with_capacity(b * seq);
    let mut prompt = Vec::with_capacity(b * seq);
    for r in rows {
        ids.extend_from_slice(&r.ids);
        prompt.extend((0..seq).map(|i| (i < r.prompt_len) as u8 as f64));
    }
    let kinds: Vec<_> = rows.iter().map(|r| r.kind).collect();
    let w = row_weights(&kinds, seq, opts.coef_lm, opts.coef_sft);
    let mut m = IndexMap::new();
    m.insert("input_ids".into(), Tensor::from_i64([b, seq], ids)?);
    m.insert(
        "prompt_mask".into(),
        Tensor::from_f64(DType::Bool, [b, seq], &prompt)?,
    );
    m.insert("row_weight".into(), Tensor::from_f64(DType::F32, [b], &w)?);
    m.insert("seed".into(), scalar_i64(opts.seed as i64)?);
    m.insert("offset".into(), scalar_i64(rng_offset(step))?);
    Ok(m)
}

/// The per-step optimiser scalars every objective's step takes: `lr` (warmup and cosine
/// schedule) and the AdamW bias corrections `bc1 = 1 − β1^t`, `bc2 = 1 − β2^t`.
pub fn optimiser_inputs(
    opts: &TrainOptions,
    step: usize,
    hyper: &StepHyper,
) -> Result<IndexMap<String, Tensor>, ModelsError> {
    let lr =
        opts.lr * crate::train_step::lr_factor(step, opts.warmup, opts.steps, opts.min_lr_scale);
    let t = (step + 1) as i32;
    let mut m = IndexMap::new();
    m.insert("lr".into(), scalar_f32(lr)?);
    m.insert("bc1".into(), scalar_f32(1.0 - hyper.betas.0.powi(t))?);
    m.insert("bc2".into(), scalar_f32(1.0 - hyper.betas.1.powi(t))?);
    Ok(m)
}

/// The masked-diffusion objective (spec §4.2): mixed LM and SFT rows, Philox masking keyed by
/// the seed and the step.
pub struct MaskedDiffusion {
    opts: TrainOptions,
    batcher: Batcher,
}

impl MaskedDiffusion {
    /// The objective over `rows`, resuming at `pos`.
    pub fn new(
        opts: &TrainOptions,
        rows: Vec<Row>,
        pos: DataPosition,
    ) -> Result<Self, ModelsError> {
        Ok(MaskedDiffusion {
            opts: opts.clone(),
            batcher: Batcher::new(rows, opts.seed, pos)?,
        })
    }
}

impl Objective for MaskedDiffusion {
    fn name(&self) -> &str {
        "masked-diffusion"
    }

    fn step_graph(
        &self,
        cfg: &LladaConfig,
        hyper: StepHyper,
    ) -> Result<mmada_ir::Graph, ModelsError> {
        Ok(train_step_graph(
            cfg,
            self.opts.batch,
            self.opts.seq,
            hyper,
        )?)
    }

    fn data(
        &mut self,
        step: usize,
        _exe: &mut dyn Executor,
    ) -> Result<IndexMap<String, Tensor>, ModelsError> {
        let batch = self.batcher.next_batch(self.opts.batch);
        batch_inputs(&batch, self.opts.seq, &self.opts, step)
    }

    fn position(&self) -> DataPosition {
        self.batcher.pos
    }

    fn tokens_per_step(&self) -> usize {
        self.opts.batch * self.opts.seq
    }
}

impl Objective for Multimodal {
    fn name(&self) -> &str {
        "multimodal"
    }

    fn step_graph(
        &self,
        cfg: &LladaConfig,
        hyper: StepHyper,
    ) -> Result<mmada_ir::Graph, ModelsError> {
        Multimodal::step_graph(self, cfg, hyper)
    }

    fn data(
        &mut self,
        step: usize,
        _exe: &mut dyn Executor,
    ) -> Result<IndexMap<String, Tensor>, ModelsError> {
        Multimodal::data(self, step)
    }

    fn position(&self) -> DataPosition {
        Multimodal::position(self)
    }

    fn streams(&self) -> BTreeMap<String, DataPosition> {
        Multimodal::streams(self)
    }

    fn tokens_per_step(&self) -> usize {
        Multimodal::tokens_per_step(self)
    }
}

/// Progress reporting hooks.
pub trait Progress {
    /// Called once the data is read: rows kept, rows skipped (prompt longer than the sequence).
    fn data(&mut self, _rows: usize, _skipped: usize) {}
    /// Called once before the first step.
    fn start(&mut self, _first: usize, _total: usize) {}
    /// Called after every step.
    fn step(&mut self, _r: &StepRecord) {}
    /// Called after a checkpoint was written.
    fn saved(&mut self, _dir: &Path) {}
    /// Called at the end.
    fn finish(&mut self) {}
}

/// No reporting.
pub struct Silent;
impl Progress for Silent {}

/// Trains; returns the records of the steps run by this call. With `resume`, continues from
/// that checkpoint directory (or from `<out>/latest` when it is the output directory).
pub fn train(
    opts: &TrainOptions,
    resume: Option<&Path>,
    target: Target,
    backend: BackendOptions,
    progress: &mut dyn Progress,
) -> Result<Vec<StepRecord>, ModelsError> {
    train_with(opts, resume, target, backend, progress, None)
}

/// [`train`] with UniGRPO's reward given instead of named by `--reward` (for rewards of the
/// library's users, and tests).
pub fn train_with(
    opts: &TrainOptions,
    resume: Option<&Path>,
    target: Target,
    backend: BackendOptions,
    progress: &mut dyn Progress,
    reward: Option<Box<dyn crate::reward::Reward>>,
) -> Result<Vec<StepRecord>, ModelsError> {
    opts.check(None).map_err(ModelsError::Options)?;
    // The tokenizer: `--tokenizer`, else the one saved in the `--model` directory, else the
    // embedded tiny one.
    let model_tok = opts.model.as_ref().map(|d| d.join("tokenizer.json"));
    let tok = match (&opts.tokenizer, model_tok) {
        (Some(p), _) => TextTokenizer::from_file(p)?,
        (None, Some(p)) if p.is_file() => TextTokenizer::from_file(&p)?,
        _ => TextTokenizer::tiny()?,
    };
    let hyper = StepHyper::default();
    // Starting point: a checkpoint to resume, a model directory, or a preset.
    let resumed = match resume {
        Some(dir) => {
            let d = if dir.join("trainer_state.json").is_file() {
                dir.to_path_buf()
            } else {
                latest_checkpoint(dir).ok_or_else(|| {
                    ModelsError::Options(format!(
                        "{}: no checkpoint to resume (no 'latest')",
                        dir.display()
                    ))
                })?
            };
            Some(load_checkpoint(&d)?)
        }
        None => None,
    };
    let opts = match &resumed {
        Some(ck) => {
            let o = &ck.state.options;
            if (o.batch, o.seq, o.seed, &o.data) != (opts.batch, opts.seq, opts.seed, &opts.data) {
                return Err(ModelsError::Options(format!(
                    "resume: the checkpoint was trained with batch {}, seq {}, seed {}, data {:?}; these options must match",
                    o.batch, o.seq, o.seed, o.data
                )));
            }
            if o.unigrpo != opts.unigrpo {
                return Err(ModelsError::Options(format!(
                    "resume: the checkpoint was trained with UniGRPO options {:?}, not {:?}; these must match",
                    o.unigrpo, opts.unigrpo
                )));
            }
            if o.multimodal != opts.multimodal {
                return Err(ModelsError::Options(format!(
                    "resume: the checkpoint was trained with multimodal options {:?}, not {:?}; these must match",
                    o.multimodal, opts.multimodal
                )));
            }
            TrainOptions {
                out: opts.out.clone(),
                ..o.clone()
            }
        }
        None => opts.clone(),
    };
    let (cfg, weights) = match (&resumed, &opts.model) {
        (Some(ck), _) => (ck.cfg.clone(), ck.weights.clone()),
        (None, Some(dir)) => load_model(dir)?,
        (None, None) => {
            let cfg = LladaConfig::preset(&opts.preset).ok_or_else(|| {
                ModelsError::Options(format!(
                    "unknown preset '{}' (choose from {})",
                    opts.preset,
                    LladaConfig::PRESETS.join(", ")
                ))
            })?;
            let w =
                crate::checkpoint::init_weights(&cfg, opts.seed as i64, 1000, opts.init_std as f32);
            let mut cfg = cfg;
            cfg.hf.init_std = opts.init_std;
            (cfg, w)
        }
    };
    opts.check(Some(&cfg)).map_err(ModelsError::Options)?;
    if tok.len() > cfg.rows() || tok.mask != cfg.mask_token_id {
        return Err(ModelsError::Options(format!(
            "the tokenizer ({} ids, [MASK] = {}) does not fit the model ({} rows, mask_token_id = {})",
            tok.len(),
            tok.mask,
            cfg.rows(),
            cfg.mask_token_id
        )));
    }
    let pos = resumed
        .as_ref()
        .map_or(DataPosition::default(), |c| c.state.data);
    let mut objective: Box<dyn Objective> = match &opts.unigrpo {
        Some(u) => {
            let reward = match reward {
                Some(r) => r,
                None => crate::reward::by_name(&u.reward, u.clip_weights.as_deref())?,
            };
            let run = GrpoRun {
                prompts: opts.batch,
                seed: opts.seed,
                data: opts.data.clone(),
                out: opts.out.clone(),
            };
            let objective = UniGrpo::new(&run, u, &cfg, &tok, reward, pos)?;
            progress.data(objective.prompts(), objective.skipped());
            Box::new(objective)
        }
        None => {
            let (rows, skipped) = load_rows(&opts, &tok)?;
            progress.data(rows.len(), skipped);
            match &opts.multimodal {
                None => Box::new(MaskedDiffusion::new(&opts, rows, pos)?),
                Some(m) => {
                    let streams = resumed
                        .as_ref()
                        .map(|c| c.state.streams.clone())
                        .unwrap_or_default();
                    let mix = MixRun {
                        seq: opts.seq,
                        batch: opts.batch,
                        seed: opts.seed,
                        coef_lm: opts.coef_lm,
                    };
                    Box::new(Multimodal::new(
                        m,
                        mix,
                        tok.clone(),
                        cfg.rows(),
                        rows,
                        pos,
                        &streams,
                    )?)
                }
            }
        }
    };
    let run = Run {
        opts: &opts,
        cfg: &cfg,
        tok: &tok,
        weights: &weights,
        resumed: resumed.as_ref(),
        hyper,
        target,
        backend,
    };
    run_loop(objective.as_mut(), run, progress)
}

/// Where a run starts: options, model, weights (and a checkpoint when resuming), targets.
pub struct Run<'a> {
    /// Options.
    pub opts: &'a TrainOptions,
    /// Model configuration.
    pub cfg: &'a LladaConfig,
    /// The text tokenizer (saved into every checkpoint).
    pub tok: &'a TextTokenizer,
    /// Initial weights (a checkpoint's when resuming).
    pub weights: &'a IndexMap<String, Tensor>,
    /// The checkpoint resumed from.
    pub resumed: Option<&'a LoadedCheckpoint>,
    /// Optimiser hyper-parameters compiled into the step.
    pub hyper: StepHyper,
    /// Where to run.
    pub target: Target,
    /// What to compile.
    pub backend: BackendOptions,
}

/// The training loop every objective shares: compiles the objective's step, makes weights and
/// AdamW moments resident, runs steps from the checkpoint's (or 0) to `opts.steps` with the
/// learning-rate schedule, and writes metrics, checkpoints and the loss chart.
pub fn run_loop(
    objective: &mut dyn Objective,
    run: Run<'_>,
    progress: &mut dyn Progress,
) -> Result<Vec<StepRecord>, ModelsError> {
    let Run {
        opts,
        cfg,
        tok,
        weights,
        resumed,
        hyper,
        target,
        backend,
    } = run;
    let cfg = cfg.clone();
    let start = resumed.map_or(0, |c| c.state.step);
    std::fs::create_dir_all(&opts.out).map_err(io(&opts.out))?;

    let g = objective.step_graph(&cfg, hyper)?;
    let extra = objective.entries(&cfg)?;
    let mut entries: Vec<(&str, &mmada_ir::Graph)> = vec![("train_step", &g)];
    entries.extend(extra.iter().map(|(n, g)| (n.as_str(), g)));
    let (art, _) = compile_entries(
        &entries,
        &CompileOptions {
            name: format!(
                "{}_{}_b{}_l{}",
                objective.name(),
                opts.preset,
                opts.batch,
                opts.seq
            ),
            backend,
            ptx_check: PtxCheck::Skip,
            ..CompileOptions::default()
        },
    )?;
    let mut exe = open_artifact(art, target)?;
    for (n, t) in weights {
        exe.set_input(n, t)?;
        let zeros = Tensor::zeros(DType::F32, t.shape().clone());
        let (m, v) = match resumed {
            Some(ck) => (
                ck.optim[&exp_avg(n)].clone(),
                ck.optim[&exp_avg_sq(n)].clone(),
            ),
            None => (zeros.clone(), zeros),
        };
        exe.set_input(&exp_avg(n), &m)?;
        exe.set_input(&exp_avg_sq(n), &v)?;
    }
    let no_state = IndexMap::new();
    objective.init(exe.as_mut(), resumed.map_or(&no_state, |c| &c.objective))?;

    // Metrics: keep the lines of steps before `start` (a resumed run rewrites the rest).
    let metrics_path = opts.out.join("metrics.jsonl");
    let mut history: Vec<StepRecord> = std::fs::read_to_string(&metrics_path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<StepRecord>(l).ok())
        .filter(|r| r.step < start)
        .collect();
    let mut metrics = std::fs::File::create(&metrics_path).map_err(io(&metrics_path))?;
    for r in &history {
        let line = serde_json::to_string(r).map_err(|e| ModelsError::Options(e.to_string()))?;
        writeln!(metrics, "{line}").map_err(io(&metrics_path))?;
    }

    progress.start(start, opts.steps);
    let mut records = Vec::new();
    for step in start..opts.steps {
        let t0 = Instant::now();
        let mut ins = objective.data(step, exe.as_mut())?;
        ins.extend(optimiser_inputs(opts, step, &hyper)?);
        let lr = ins["lr"].get_f64(0);
        let out = exe.run(&ins)?;
        let parts = out
            .iter()
            .filter_map(|(k, t)| Some((k.strip_prefix("loss.")?.to_string(), t.get_f64(0))))
            .collect();
        let figures = objective.metrics(&out);
        let rec = StepRecord {
            step,
            loss: out["loss"].get_f64(0),
            grad_norm: out["grad_norm"].get_f64(0),
            lr,
            tokens: objective.tokens_per_step(),
            step_seconds: t0.elapsed().as_secs_f64(),
            parts,
            metrics: figures,
        };
        if !rec.loss.is_finite() {
            return Err(ModelsError::Options(format!(
                "the loss became {} at step {step}",
                rec.loss
            )));
        }
        let line = serde_json::to_string(&rec).map_err(|e| ModelsError::Options(e.to_string()))?;
        writeln!(metrics, "{line}").map_err(io(&metrics_path))?;
        progress.step(&rec);
        history.push(rec.clone());
        records.push(rec);
        let done = step + 1;
        if (opts.save_every > 0 && done % opts.save_every == 0) || done == opts.steps {
            metrics.flush().map_err(io(&metrics_path))?;
            let state = TrainerState {
                format: "mmada-trainer-state".into(),
                step: done,
                data: objective.position(),
                streams: objective.streams(),
                rng_offset: rng_offset(done),
                options: opts.clone(),
            };
            let extra = objective.state(exe.as_mut())?;
            let dir = save_checkpoint(exe.as_mut(), &cfg, tok, &state, &extra)?;
            prune_checkpoints(&opts.out, opts.keep)?;
            let pts: Vec<(usize, f64)> = history.iter().map(|r| (r.step, r.loss)).collect();
            let png = opts.out.join("loss-curve.png");
            crate::plot::loss_curve_png(&pts, &png).map_err(ModelsError::Plot)?;
            let names: Vec<String> = history
                .last()
                .map(|r| r.parts.keys().cloned().collect())
                .unwrap_or_default();
            if !names.is_empty() {
                let tasks: Vec<(String, Vec<(usize, f64)>)> = names
                    .into_iter()
                    .map(|n| {
                        let pts = history
                            .iter()
                            .filter_map(|r| Some((r.step, *r.parts.get(&n)?)))
                            .collect();
                        (n, pts)
                    })
                    .collect();
                let png = opts.out.join("task-losses.png");
                crate::plot::task_losses_png(&tasks, &png).map_err(ModelsError::Plot)?;
            }
            for (metric, title, y_label) in objective.curves() {
                let pts: Vec<(usize, f64)> = history
                    .iter()
                    .filter_map(|r| Some((r.step, *r.metrics.get(metric)?)))
                    .collect();
                let png = opts
                    .out
                    .join(format!("{}-curve.png", metric.replace('_', "-")));
                crate::plot::metric_curve_png(title, y_label, &pts, &png)
                    .map_err(ModelsError::Plot)?;
            }
            progress.saved(&dir);
        }
    }
    progress.finish();
    Ok(records)
}

/// Removes all but the newest `keep` complete checkpoints (and stale partial ones).
fn prune_checkpoints(out: &Path, keep: usize) -> Result<(), ModelsError> {
    let mut done: Vec<(usize, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(out).map_err(io(out))?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix("checkpoint-") {
            if rest.contains(".partial-") {
                if !rest.ends_with(&format!(".partial-{}", std::process::id())) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            } else if let Ok(s) = rest.parse::<usize>() {
                done.push((s, e.path()));
            }
        }
    }
    done.sort();
    let n = done.len();
    for (_, p) in done.into_iter().take(n.saturating_sub(keep.max(1))) {
        std::fs::remove_dir_all(&p).map_err(io(&p))?;
    }
    Ok(())
}
