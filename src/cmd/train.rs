//! `mmada train`: the compiled masked-diffusion trainer with a progress bar (or log lines) and
//! a summary.

use super::{default_gpu_archs, target_of, RunTarget};
use crate::error::CliError;
use indicatif::{ProgressBar, ProgressStyle};
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::HostCpu;
use mmada_models::config::LladaConfig;
use mmada_models::grpo_noising::Noising;
use mmada_models::multimodal::MultimodalOptions;
use mmada_models::trainer::{train, Progress, StepRecord, TrainOptions};
use mmada_models::unigrpo::{GrpoOptions, RolloutOptions};
use mmada_runtime::Target;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `mmada train`.
#[derive(clap::Args)]
pub struct Args {
    /// JSONL data files (default: the embedded GSM-style problems and text).
    data: Vec<PathBuf>,
    /// Model preset to initialise from: tiny, bench-tiny, bench-small.
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Start from this HF checkpoint directory instead of a preset.
    #[arg(long)]
    model: Option<PathBuf>,
    /// tokenizer.json (default: the --model directory's, else the embedded tiny tokenizer).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Total optimiser steps [default: 300; 2000 with --multimodal].
    #[arg(long)]
    steps: Option<usize>,
    /// Text rows per batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Tokens per row (at most the model's max_sequence_length) [default: 256; 128 with
    /// --multimodal, where a row is `Lt + N + 3` tokens: the text budget Lt, N image tokens].
    #[arg(long)]
    seq: Option<usize>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Warmup steps.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Cosine floor as a fraction of the peak rate.
    #[arg(long, default_value_t = 0.1)]
    min_lr_scale: f64,
    /// Seed of initialisation, data order and noise.
    #[arg(long, default_value_t = 10086)]
    seed: u64,
    /// Checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 100)]
    save_every: usize,
    /// Checkpoints to keep.
    #[arg(long, default_value_t = 3)]
    keep: usize,
    /// Output directory (checkpoints, metrics.jsonl, loss-curve.png) [default: runs/tiny;
    /// runs/tiny-mm with --multimodal].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Train on text-to-image, image-understanding and text rows in one batch (the embedded
    /// digits with their captions and questions, images as codes of the image tokenizer).
    #[arg(long)]
    multimodal: bool,
    /// Image tokenizer directory for --multimodal (default: the built-in vq-digits).
    #[arg(long, requires = "multimodal")]
    vq: Option<PathBuf>,
    /// Text-to-image rows per batch (--multimodal).
    #[arg(long, default_value_t = 4, requires = "multimodal")]
    batch_t2i: usize,
    /// Image-understanding rows per batch (--multimodal).
    #[arg(long, default_value_t = 2, requires = "multimodal")]
    batch_mmu: usize,
    /// Loss coefficient of the text-to-image rows (--multimodal).
    #[arg(long, default_value_t = 1.0, requires = "multimodal")]
    coef_t2i: f64,
    /// Loss coefficient of the image-understanding rows (--multimodal).
    #[arg(long, default_value_t = 1.0, requires = "multimodal")]
    coef_mmu: f64,
    /// Loss coefficient of the text rows.
    #[arg(long, default_value_t = 1.0)]
    coef_lm: f64,
    /// Fraction of text-to-image rows trained with the empty (CFG null) caption (--multimodal).
    #[arg(long, default_value_t = 0.1, requires = "multimodal")]
    cond_dropout: f64,
    /// Lowest masking ratio of the image-understanding answers: t ~ U(F, 1) instead of the
    /// reference's U(0, 1) (--multimodal; 0.5 for the tiny model, see the README).
    #[arg(long, default_value_t = 0.0, requires = "multimodal")]
    mmu_mask_floor: f64,
    /// Resume from a checkpoint directory, or from OUT/latest when given no value.
    #[arg(long, num_args = 0..=1)]
    resume: Option<Option<PathBuf>>,
    /// cpu or cuda (default: cuda when a device is present, else cpu).
    #[arg(long)]
    target: Option<RunTarget>,
    /// Dtype of the checkpoints' model files: f32, or bf16 as the released MMaDA models (the
    /// f32 master weights are then kept beside the optimiser state, so --resume is exact).
    #[arg(long, value_enum, default_value_t = SaveDtype::F32)]
    save_dtype: SaveDtype,
    /// Print one line per step instead of a progress bar.
    #[arg(long)]
    log: bool,
    /// What to train: `diffusion` (the masked-diffusion objective of pretraining and SFT) or
    /// `unigrpo` (the RL stage: rollouts, rewards, the clipped surrogate with KL), usually
    /// from an SFT checkpoint (--model).
    #[arg(long, value_enum, default_value_t = Stage::Diffusion)]
    stage: Stage,
    #[command(flatten)]
    grpo: GrpoArgs,
}

/// `--stage`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Stage {
    Diffusion,
    Unigrpo,
}

/// The options of `--stage unigrpo` (defaults against d1 and dLLM-RL in
/// `mmada_models::unigrpo`).
#[derive(clap::Args)]
#[command(next_help_heading = "UniGRPO (--stage unigrpo)")]
struct GrpoArgs {
    /// Completions per prompt G (the batch holds --batch prompts × G rows).
    #[arg(long, default_value_t = 4)]
    group_size: usize,
    /// Gradient steps per rollout batch μ (each with a fresh mask).
    #[arg(long, default_value_t = 4)]
    inner_steps: usize,
    /// Clip range ε of the probability ratio.
    #[arg(long, default_value_t = 0.2)]
    clip_eps: f64,
    /// KL coefficient β (k3 estimator against the reference policy; 0: none).
    #[arg(long, default_value_t = 0.04)]
    kl_beta: f64,
    /// Refresh the reference policy from the current one every N steps (0: never).
    #[arg(long, default_value_t = 64)]
    ref_refresh: usize,
    /// Leave groups whose rewards are all equal out of the objective.
    #[arg(long)]
    drop_zero_variance: bool,
    /// Masking of the completions: structured (the paper's), d1 or random (dLLM-RL's).
    #[arg(long, default_value = "structured")]
    noising: String,
    /// Reward: math (correctness 2.0 + format 0.5), caption (the embedded digit captions),
    /// t2i (images of the embedded digit captions, scored by the committed digit classifier;
    /// rows as the multimodal training rows: --prompt-len plus --rollout-gen-length = Lt + N +
    /// 3, the completion is the N image codes), clip (the same image rollouts scored by
    /// 0.1·max(100·cos, 0) of the HF CLIP at --clip).
    #[arg(long, default_value = "math")]
    reward: String,
    /// HF CLIP model directory for --reward clip (config.json, model.safetensors,
    /// tokenizer.json, optionally preprocessor_config.json); with --reward caption, adds
    /// 0.1·CLIP(image, answer) to the correctness.
    #[arg(long)]
    clip: Option<PathBuf>,
    /// Tokens every prompt is left-padded to (longer prompts are left out).
    #[arg(long, default_value_t = 96)]
    prompt_len: usize,
    /// Mask each completion only up to its first end-of-turn / end-of-text (dLLM-RL), not the
    /// padding after it (d1 and the default: the whole generated span).
    #[arg(long)]
    trim_padding: bool,
    /// Generated tokens per completion (with --reward t2i it only sets the row length; the
    /// completion is the image).
    #[arg(long, default_value_t = 64)]
    rollout_gen_length: usize,
    /// Denoising steps per rollout (with --reward t2i: the MaskGIT steps).
    #[arg(long, default_value_t = 32)]
    rollout_steps: usize,
    /// Block length of the rollout sampler.
    #[arg(long, default_value_t = 32)]
    rollout_block_length: usize,
    /// Gumbel temperature of the rollouts (> 0; with --reward t2i: the initial noise on the
    /// confidences, the codes being drawn from the policy's softmax without guidance).
    #[arg(long, default_value_t = 0.8)]
    rollout_temperature: f32,
    /// Confidence-threshold parallel decoding in the rollouts (Fast-dLLM).
    #[arg(long)]
    rollout_threshold: Option<f32>,
    /// Fast-dLLM's dual KV cache in the rollouts.
    #[arg(long)]
    rollout_dual_cache: bool,
}

/// `--save-dtype`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum SaveDtype {
    F32,
    Bf16,
}

struct Display {
    bar: Option<ProgressBar>,
    log: bool,
    recent: Vec<f64>,
    t0: Instant,
}

impl Progress for Display {
    fn data(&mut self, rows: usize, skipped: usize) {
        if skipped > 0 {
            eprintln!("data: {rows} rows ({skipped} skipped: their prompt does not fit the sequence length)");
        } else {
            eprintln!("data: {rows} rows");
        }
    }

    fn start(&mut self, first: usize, total: usize) {
        if let Some(b) = &self.bar {
            b.set_length(total as u64);
            b.set_position(first as u64);
        }
        if first > 0 {
            eprintln!("resuming at step {first} of {total}");
        }
    }

    fn step(&mut self, r: &StepRecord) {
        let reward = r.metrics.get("reward_mean").copied();
        self.recent.push(reward.unwrap_or(r.loss));
        if self.recent.len() > 20 {
            self.recent.remove(0);
        }
        let avg = self.recent.iter().sum::<f64>() / self.recent.len() as f64;
        let tps = r.tokens as f64 / r.step_seconds;
        if let Some(b) = &self.bar {
            b.set_position(r.step as u64 + 1);
            b.set_message(match reward {
                Some(_) => format!(
                    "reward {avg:.3} (avg 20)  kl {:.4}  lr {:.2e}  {tps:.0} tok/s",
                    r.metrics.get("kl").copied().unwrap_or(0.0),
                    r.lr
                ),
                None => format!("loss {avg:.3} (avg 20)  lr {:.2e}  {tps:.0} tok/s", r.lr),
            });
        }
        if self.log {
            let parts: String = r
                .parts
                .iter()
                .chain(r.metrics.iter().filter(|(k, _)| !k.starts_with("rollout_")))
                .map(|(k, v)| format!("  {k} {v:.4}"))
                .collect();
            println!(
                "step {:>6}  loss {:.4}{parts}  grad_norm {:.3}  lr {:.3e}  {:.0} tok/s",
                r.step, r.loss, r.grad_norm, r.lr, tps
            );
        }
    }

    fn saved(&mut self, dir: &Path) {
        let msg = format!("saved {}", dir.display());
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    fn finish(&mut self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}

/// The model's configuration, read without loading any weights (for the option checks).
fn model_config(a: &Args) -> Result<Option<LladaConfig>, CliError> {
    Ok(match &a.model {
        Some(dir) => Some(LladaConfig::read(&dir.join("config.json"))?),
        None => LladaConfig::preset(&a.preset),
    })
}

/// Runs `mmada train`.
pub fn run(a: Args) -> Result<(), CliError> {
    let mm = a.multimodal;
    let rl = a.stage == Stage::Unigrpo;
    let unigrpo = if rl {
        let g = &a.grpo;
        if a.seq.is_some() {
            return Err(CliError::Usage(
                "--seq does not apply to --stage unigrpo: a row is --prompt-len plus \
                 --rollout-gen-length tokens"
                    .into(),
            ));
        }
        Some(GrpoOptions {
            group_size: g.group_size,
            inner_steps: g.inner_steps,
            clip_eps: g.clip_eps,
            kl_beta: g.kl_beta,
            ref_refresh: g.ref_refresh,
            drop_zero_variance: g.drop_zero_variance,
            noising: Noising::parse(&g.noising).map_err(CliError::Usage)?,
            reward: g.reward.clone(),
            clip_weights: g.clip.clone(),
            prompt_len: g.prompt_len,
            trim_padding: g.trim_padding,
            rollout: RolloutOptions {
                gen_length: g.rollout_gen_length,
                steps: g.rollout_steps,
                block_length: g.rollout_block_length,
                temperature: g.rollout_temperature,
                threshold: g.rollout_threshold,
                dual_cache: g.rollout_dual_cache,
            },
        })
    } else {
        None
    };
    let multimodal = mm.then(|| MultimodalOptions {
        vq: a.vq.clone(),
        batch_t2i: a.batch_t2i,
        batch_mmu: a.batch_mmu,
        coef_t2i: a.coef_t2i,
        coef_mmu: a.coef_mmu,
        mmu_mask_floor: a.mmu_mask_floor,
        cond_dropout: a.cond_dropout,
    });
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from(if mm {
            "runs/tiny-mm"
        } else if rl {
            "runs/tiny-unigrpo"
        } else {
            "runs/tiny"
        })
    });
    let opts = TrainOptions {
        preset: a.preset.clone(),
        model: a.model.clone(),
        tokenizer: a.tokenizer.clone(),
        data: a.data.clone(),
        batch: a.batch,
        seq: match &unigrpo {
            Some(g) => g.seq(),
            None => a.seq.unwrap_or(if mm { 128 } else { 256 }),
        },
        steps: a.steps.unwrap_or(if mm { 2000 } else { 300 }),
        lr: a.lr,
        warmup: a.warmup,
        min_lr_scale: a.min_lr_scale,
        coef_lm: a.coef_lm,
        seed: a.seed,
        save_every: a.save_every,
        keep: a.keep,
        out: out.clone(),
        multimodal,
        save_dtype: match a.save_dtype {
            SaveDtype::F32 => mmada_ir::DType::F32,
            SaveDtype::Bf16 => mmada_ir::DType::BF16,
        },
        unigrpo,
        ..Default::default()
    };
    // Every option is checked before anything is compiled or allocated.
    opts.check(model_config(&a)?.as_ref())
        .map_err(CliError::Usage)?;
    if let Some(g) = &opts.unigrpo {
        mmada_models::reward::by_name(&g.reward, g.clip_weights.as_deref())?;
    }
    if rl && opts.model.is_none() {
        eprintln!(
            "note: --stage unigrpo from the {} preset's random weights: rewards stay near 0; \
             give --model a checkpoint of the SFT stage (mmada train)",
            opts.preset
        );
    }
    let resume = a.resume.clone().map(|r| r.unwrap_or(out.clone()));
    let target = target_of(a.target);
    let bar = (!a.log && std::io::stderr().is_terminal()).then(|| {
        let b = ProgressBar::new(opts.steps as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg} (eta {eta})",
        ) {
            b.set_style(style);
        }
        b
    });
    // Without a terminal and without --log, still print a line every 10% of the run.
    let mut display = Display {
        log: a.log || bar.is_none(),
        bar,
        recent: Vec::new(),
        t0: Instant::now(),
    };
    let backend = BackendOptions {
        host: Some(HostCpu::native()),
        gpu_archs: if target == Target::Cuda {
            default_gpu_archs()
        } else {
            vec![]
        },
    };
    let rows = match &opts.multimodal {
        Some(m) => format!(
            "{} t2i + {} mmu + {} text rows",
            m.batch_t2i, m.batch_mmu, opts.batch
        ),
        None => match &opts.unigrpo {
            Some(g) => format!(
                "{} prompts × {} completions ({} reward, μ = {})",
                opts.batch, g.group_size, g.reward, g.inner_steps
            ),
            None => format!("{} rows", opts.batch),
        },
    };
    eprintln!(
        "mmada train: {}, batch {rows} × {} tokens, {} steps, out {} ({})",
        match &opts.model {
            Some(dir) => format!("model {}", dir.display()),
            None => format!("preset {}", opts.preset),
        },
        opts.seq,
        opts.steps,
        opts.out.display(),
        if target == Target::Cuda {
            "cuda"
        } else {
            "cpu"
        }
    );
    let records = train(&opts, resume.as_deref(), target, backend, &mut display)?;
    let n = records.len();
    if n > 0 {
        let k = (n / 10).clamp(1, 20);
        let head = records[..k].iter().map(|r| r.loss).sum::<f64>() / k as f64;
        let tail = records[n - k..].iter().map(|r| r.loss).sum::<f64>() / k as f64;
        let secs = display.t0.elapsed().as_secs_f64();
        println!(
            "trained {n} steps in {secs:.1}s: loss {head:.3} → {tail:.3} (mean of {k} steps, {:.0}% lower); metrics in {}",
            100.0 * (1.0 - tail / head),
            opts.out.join("metrics.jsonl").display()
        );
        if records[0].metrics.contains_key("reward_mean") {
            let mean = |rs: &[StepRecord], k: &str| {
                rs.iter().filter_map(|r| r.metrics.get(k)).sum::<f64>() / rs.len() as f64
            };
            println!(
                "  reward {:.3} → {:.3}, kl {:.4} → {:.4} (means of {k} steps); curves in {}",
                mean(&records[..k], "reward_mean"),
                mean(&records[n - k..], "reward_mean"),
                mean(&records[..k], "kl"),
                mean(&records[n - k..], "kl"),
                opts.out.display()
            );
        }
        let names: Vec<&String> = records[0].parts.keys().collect();
        for name in names {
            let mean = |rs: &[StepRecord]| {
                rs.iter().filter_map(|r| r.parts.get(name)).sum::<f64>() / rs.len() as f64
            };
            let (h, t) = (mean(&records[..k]), mean(&records[n - k..]));
            println!(
                "  {name:>4} loss {h:.3} → {t:.3} ({:.0}% lower)",
                100.0 * (1.0 - t / h)
            );
        }
    }
    Ok(())
}
