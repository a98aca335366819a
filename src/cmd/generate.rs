//! `mmada generate text`: the compiled samplers, replayed step by step over resident state.

use super::{native_and_gpu, target_of, RunTarget};
use crate::error::CliError;
use clap::{Subcommand, ValueEnum};
use indexmap::IndexMap;
use indicatif::{ProgressBar, ProgressStyle};
use mmada_ir::{Remasking, Tensor};
use mmada_models::checkpoint::load_model;
use mmada_models::image_io::{self, Fit, ImageLimits};
use mmada_models::image_sampler::{ImageOptions, ImageSampler, Schedule, TemperatureRule};
use mmada_models::image_tokenizer::{embedded_vq_digits, load_magvit, ImageTokenizer};
use mmada_models::magvit::MagvitConfig;
use mmada_models::prompt::{Image, Prompter};
use mmada_models::text_sampler::{KvCache, TextOptions, TextSampler};
use mmada_models::tokenizer::TextTokenizer;
use mmada_models::trainer::latest_checkpoint;
use mmada_models::vocab::UnifiedVocab;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `mmada generate`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Text by semi-autoregressive low-confidence remasking (LLaDA's `generate`, spec §6.1).
    Text(TextArgs),
    /// An image from a caption (MaskGIT with classifier-free guidance, spec §6.2), decoded by
    /// the image tokenizer and written as PNG.
    Image(ImageArgs),
    /// The answer to a question about an image (spec §6.3): image → codes → mmu layout →
    /// text sampler.
    Caption(CaptionArgs),
}

/// Arguments of `mmada generate image`.
#[derive(clap::Args)]
pub struct ImageArgs {
    /// Checkpoint directory [default: the newest checkpoint of runs/tiny-mm].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Image tokenizer directory (MAGVIT-v2: config.json + safetensors); required with
    /// --model [default without --model: the built-in vq-digits].
    #[arg(long)]
    vq: Option<PathBuf>,
    /// The caption.
    #[arg(long)]
    prompt: String,
    /// MaskGIT steps.
    #[arg(long, default_value_t = 15)]
    timesteps: usize,
    /// Classifier-free guidance scale w: (1 + w)·cond − w·uncond over the image ids (0: none).
    #[arg(long, default_value_t = 3.5)]
    guidance_scale: f32,
    /// Initial temperature of the confidence noise.
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Use MaskGIT's temperature τ0·(1 − ratio) instead of the reference's compounding one.
    #[arg(long)]
    maskgit_temperature: bool,
    /// Mask schedule: cosine, linear, sigmoid or pow<e>.
    #[arg(long, default_value = "cosine")]
    schedule: String,
    /// Image side in pixels (a multiple of the tokenizer's factor).
    #[arg(long, default_value_t = 32)]
    resolution: usize,
    /// Text budget Lt of the t2i layout (the model's training value: seq − N − 3; 512 for
    /// MMaDA-8B) [default: from the checkpoint's trainer_state.json, else 61].
    #[arg(long)]
    text_len: Option<usize>,
    /// Seed of the sampler's random streams.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output PNG.
    #[arg(short, long, default_value = "image.png")]
    output: PathBuf,
    /// cpu or cuda (default: cuda when a device is present, else cpu).
    #[arg(long)]
    target: Option<RunTarget>,
}

/// Arguments of `mmada generate caption`.
#[derive(clap::Args)]
pub struct CaptionArgs {
    /// Checkpoint directory [default: the newest checkpoint of runs/tiny-mm].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Image tokenizer directory; required with --model [default without --model: the
    /// built-in vq-digits].
    #[arg(long)]
    vq: Option<PathBuf>,
    /// The image (PNG, JPEG, WebP).
    #[arg(long)]
    image: PathBuf,
    /// The question.
    #[arg(long, default_value = "What digit is this?")]
    question: String,
    /// Image side in pixels the image is resized and cropped to.
    #[arg(long, default_value_t = 32)]
    resolution: usize,
    /// Generated positions [default: for a model of `mmada train --multimodal`, the answer
    /// room of its training rows (text budget minus the question) in whole blocks; else 32].
    #[arg(long)]
    gen_length: Option<usize>,
    /// Denoising steps in all [default: one per generated position].
    #[arg(long)]
    steps: Option<usize>,
    /// Positions per block (semi-autoregressive: short blocks decode the answer's first
    /// words first, which is where a short answer names what it sees).
    #[arg(long, default_value_t = 4)]
    block_length: usize,
    /// Text budget the model was trained with [default: the checkpoint's training rows minus
    /// the image; the reference's inference layout for other checkpoints].
    #[arg(long)]
    text_len: Option<usize>,
    /// Gumbel temperature (0: greedy, the reference's `mmu_generate` default).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Confidence-threshold parallel decoding, as for `generate text`.
    #[arg(long)]
    threshold: Option<f32>,
    /// KV cache, as for `generate text`: none, prefix or dual.
    #[arg(long, value_enum, default_value_t = CacheArg::None)]
    cache: CacheArg,
    /// Seed of the sampler's random streams.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu or cuda (default: cuda when a device is present, else cpu).
    #[arg(long)]
    target: Option<RunTarget>,
}

/// `--remasking`.
#[derive(Clone, Copy, Debug, ValueEnum)]
#[value(rename_all = "snake_case")]
enum RemaskingArg {
    /// Commit the most confident predictions first.
    LowConfidence,
    /// Commit positions in a random order.
    Random,
}

/// `--cache`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum CacheArg {
    /// Every step runs the whole sequence.
    None,
    /// Keys/values before the block cached at each block's first step; the block and the
    /// positions after it run every step.
    Prefix,
    /// Prefix and suffix keys/values cached at each block's first step; only the block runs.
    Dual,
}

impl From<CacheArg> for KvCache {
    fn from(c: CacheArg) -> KvCache {
        match c {
            CacheArg::None => KvCache::None,
            CacheArg::Prefix => KvCache::Prefix,
            CacheArg::Dual => KvCache::Dual,
        }
    }
}

/// Arguments of `mmada generate text`.
#[derive(clap::Args)]
pub struct TextArgs {
    /// Checkpoint directory [default: the newest checkpoint of runs/tiny-mm, the tiny
    /// multimodal model `mmada train --multimodal` writes].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Prompt ids, comma-separated (used as they are: no template, no BOS added).
    #[arg(
        long,
        value_delimiter = ',',
        conflicts_with = "prompt",
        required_unless_present = "prompt"
    )]
    prompt_ids: Option<Vec<i64>>,
    /// Prompt text, put into the chat template as the user's turn (the checkpoint's
    /// tokenizer.json, or the embedded tiny tokenizer for the tiny models).
    #[arg(long)]
    prompt: Option<String>,
    /// Generated positions.
    #[arg(long, default_value_t = 128)]
    gen_length: usize,
    /// Denoising steps in all (a multiple of gen-length / block-length).
    #[arg(long, default_value_t = 128)]
    steps: usize,
    /// Positions per semi-autoregressive block (divides gen-length).
    #[arg(long, default_value_t = 32)]
    block_length: usize,
    /// Gumbel temperature (0: greedy argmax).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Classifier-free guidance scale (0: none; the unconditional row masks the prompt).
    #[arg(long, default_value_t = 0.0)]
    cfg_scale: f32,
    /// Which positions to commit at each step.
    #[arg(long, value_enum, default_value_t = RemaskingArg::LowConfidence)]
    remasking: RemaskingArg,
    /// Seed of the sampler's random streams.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop after a block that ends with <|eot_id|> (the checkpoint's tokenizer must name it).
    #[arg(long)]
    early_exit: bool,
    /// Confidence-threshold parallel decoding (Fast-dLLM): commit every masked position of
    /// the block above this confidence, at least one per step, until the block is full
    /// (the step count is then dynamic). In (0, 1].
    #[arg(long)]
    threshold: Option<f32>,
    /// KV cache (Fast-dLLM): none; prefix (a block's steps after the first run the block
    /// and the positions after it against the cached keys and values before the block); or
    /// dual (they run only the block against every layer's cached keys and values).
    #[arg(long, value_enum, default_value_t = CacheArg::None)]
    cache: CacheArg,
    /// Print one JSON object (`generated`: the gen-length generated ids, prompt excluded).
    #[arg(long)]
    print_ids: bool,
    /// cpu or cuda (default: cuda when a device is present, else cpu).
    #[arg(long)]
    target: Option<RunTarget>,
}

/// Runs `mmada generate`.
pub fn run(a: Args) -> Result<(), CliError> {
    match a.what {
        What::Text(t) => text(t),
        What::Image(i) => image(i),
        What::Caption(c) => caption(c),
    }
}

/// The checkpoint to use: `--model`, else the newest of runs/tiny-mm.
fn model_dir(model: Option<PathBuf>) -> Result<PathBuf, CliError> {
    if let Some(m) = model {
        return Ok(m);
    }
    let default = Path::new("runs/tiny-mm");
    latest_checkpoint(default).ok_or_else(|| {
        CliError::Usage(format!(
            "no --model given and no checkpoint in {} (train the tiny multimodal model with \
             `mmada train --multimodal`, about 5 minutes on 2 cores, or pass --model DIR)",
            default.display()
        ))
    })
}

/// The image tokenizer: `--vq`, or the built-in vq-digits when the model is the default one.
fn image_tokenizer(
    vq: &Option<PathBuf>,
    model_given: bool,
) -> Result<(MagvitConfig, IndexMap<String, Tensor>), CliError> {
    match vq {
        Some(dir) => Ok(load_magvit(dir)?),
        None if model_given => Err(CliError::Usage(
            "--vq DIR is required with --model: the image tokenizer the model was trained with"
                .into(),
        )),
        None => Ok(embedded_vq_digits()?),
    }
}

/// Runs `f` with a step callback that drives a progress bar of `len` steps on a terminal.
fn with_progress<T>(
    len: usize,
    f: impl FnOnce(&mut dyn FnMut(usize, usize)) -> Result<T, mmada_models::ModelsError>,
) -> Result<T, CliError> {
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = ProgressBar::new(len as u64);
        let t = "{spinner} [{elapsed_precise}] {bar:30} step {pos}/{len}";
        if let Ok(style) = ProgressStyle::with_template(t) {
            b.set_style(style);
        }
        b
    });
    let out = f(&mut |done, _| {
        if let Some(b) = &bar {
            b.set_position(done as u64);
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(out?)
}

/// What the image commands load: the image tokenizer, the model, its vocabulary.
struct Multimodal {
    vq: (MagvitConfig, IndexMap<String, Tensor>),
    /// The row length the model was trained with, when the checkpoint says.
    seq: Option<usize>,
    cfg: mmada_models::config::LladaConfig,
    weights: IndexMap<String, Tensor>,
    tok: TextTokenizer,
    vocab: UnifiedVocab,
}

fn load_multimodal(vq: &Option<PathBuf>, model: Option<PathBuf>) -> Result<Multimodal, CliError> {
    let vq = image_tokenizer(vq, model.is_some())?;
    let dir = model_dir(model)?;
    let (cfg, weights) = load_model(&dir)?;
    let (tok, vocab) = UnifiedVocab::for_checkpoint(&dir)?;
    Ok(Multimodal {
        vq,
        seq: mmada_models::trainer::trained_seq(&dir)?,
        cfg,
        weights,
        tok,
        vocab,
    })
}

fn image(a: ImageArgs) -> Result<(), CliError> {
    let Multimodal {
        vq: (vq_cfg, vq_w),
        seq,
        cfg,
        weights,
        tok,
        vocab,
    } = load_multimodal(&a.vq, a.model.clone())?;
    let opts = ImageOptions {
        timesteps: a.timesteps,
        guidance_scale: a.guidance_scale,
        temperature: a.temperature,
        schedule: Schedule::parse(&a.schedule)?,
        temperature_rule: if a.maskgit_temperature {
            TemperatureRule::MaskGit
        } else {
            TemperatureRule::Compounding
        },
        seed: a.seed,
    };
    opts.check().map_err(|e| CliError::Usage(e.to_string()))?;
    if vq_cfg.codebook_size() != vocab.codebook_size {
        return Err(CliError::Usage(format!(
            "the image tokenizer has {} codes, the model's vocabulary {}",
            vq_cfg.codebook_size(),
            vocab.codebook_size
        )));
    }
    let target = target_of(a.target);
    let t0 = Instant::now();
    let r = a.resolution;
    let mut tk = ImageTokenizer::new(vq_cfg, &vq_w, r, r, target, native_and_gpu())?;
    let n = tk.num_codes();
    // The t2i rows of `mmada train --multimodal` are `Lt + N + 3` long.
    let text_len = a
        .text_len
        .or_else(|| seq.and_then(|s| s.checked_sub(n + 3)))
        .unwrap_or(61);
    let p = Prompter::new(&tok, &vocab, text_len)?;
    let layout = p.t2i(&a.prompt, Image::Masked(n))?;
    let null = p.t2i_null(Image::Masked(n))?;
    let mut s = ImageSampler::new(
        cfg,
        &weights,
        1,
        &layout,
        (vocab.image_offset, vocab.codebook_size),
        opts,
        target,
        native_and_gpu(),
    )?;
    let compile_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let codes = with_progress(a.timesteps, |on| {
        s.generate(std::slice::from_ref(&layout), &null, on)
    })?;
    let secs = t1.elapsed().as_secs_f64();
    let codes = Tensor::from_i64([1, n], codes[0].clone())?;
    let pixels = tk.decode(&codes)?;
    let rgb = image_io::to_rgb8(&pixels, r as u32, r as u32)?;
    image_io::save_png(&rgb, &a.output)?;
    println!(
        "wrote {} ({n} codes, {} steps in {secs:.2} s, {:.2} images/s; compile {compile_s:.1} s)",
        a.output.display(),
        a.timesteps,
        1.0 / secs.max(1e-9)
    );
    Ok(())
}

fn caption(a: CaptionArgs) -> Result<(), CliError> {
    let Multimodal {
        vq: (vq_cfg, vq_w),
        seq,
        cfg,
        weights,
        tok,
        vocab,
    } = load_multimodal(&a.vq, a.model.clone())?;
    let target = target_of(a.target);
    let t0 = Instant::now();
    let r = a.resolution;
    if r == 0 || u32::try_from(r).is_err() {
        return Err(CliError::Usage(format!("--resolution {r} is out of range")));
    }
    let img = image_io::load_rgb(&a.image, &ImageLimits::default())?;
    let chw = image_io::preprocess(&img, r as u32, Fit::ResizeCrop)?;
    let mut tk = ImageTokenizer::new(vq_cfg, &vq_w, r, r, target, native_and_gpu())?;
    let codes = tk.encode(&chw)?.to_i64_vec();
    // A model of `mmada train --multimodal` gets its training layout (the prompt through the
    // assistant header, the answer room of its rows); another the reference's inference
    // layout (`inference_mmu.py`: the template's newline in the prompt).
    let text_len = a
        .text_len
        .or_else(|| seq.and_then(|s| s.checked_sub(codes.len() + 3)));
    let bk = a.block_length.max(1);
    let (prompt, gen) = match text_len {
        Some(t) => {
            let p = Prompter::new(&tok, &vocab, t)?;
            let (ids, room) = p.mmu_prompt(&codes, &a.question)?;
            (ids, a.gen_length.unwrap_or((room / bk).max(1) * bk))
        }
        None => {
            let p = Prompter::new(&tok, &vocab, 2)?;
            let l = p.mmu_infer(&codes, &[("user", a.question.as_str())], 0)?;
            (l.ids, a.gen_length.unwrap_or(32))
        }
    };
    let steps = a.steps.unwrap_or(gen);
    let opts = TextOptions {
        gen_length: gen,
        steps,
        block_length: a.block_length,
        temperature: a.temperature,
        seed: a.seed,
        early_exit: Some(vocab.ids.eot_id),
        threshold: a.threshold,
        cache: a.cache.into(),
        ..TextOptions::default()
    };
    opts.check(prompt.len(), cfg.max_sequence_length)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let mut s = TextSampler::new(
        cfg,
        &weights,
        1,
        prompt.len(),
        opts,
        target,
        native_and_gpu(),
    )?;
    let compile_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let out = with_progress(steps, |on| s.generate(std::slice::from_ref(&prompt), on))?;
    let secs = t1.elapsed().as_secs_f64();
    println!("{}", answer_text(&tok, &out.ids[0])?);
    let committed = out.ids[0].iter().filter(|&&i| i != vocab.ids.mask).count();
    eprintln!(
        "generated {committed} tokens in {} steps, {secs:.2} s ({:.1} tokens/s; compile {compile_s:.1} s)",
        out.steps,
        committed as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// The text of generated ids: text ids only (no image ids, no `[MASK]`), special tokens
/// skipped.
fn answer_text(tok: &TextTokenizer, ids: &[i64]) -> Result<String, CliError> {
    let text: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|&i| i >= 0 && (i as usize) < tok.len() && i != tok.mask)
        .collect();
    Ok(tok.decode(&text)?.trim().to_string())
}

fn text(a: TextArgs) -> Result<(), CliError> {
    let dir = model_dir(a.model.clone())?;
    let (cfg, weights) = load_model(&dir)?;
    // A tokenizer is needed for a text prompt, for early exit and to print text.
    let tok = if a.prompt.is_some() || a.early_exit || !a.print_ids {
        Some(UnifiedVocab::for_checkpoint(&dir)?.0)
    } else {
        None
    };
    let prompt: Vec<i64> = match (&a.prompt_ids, &a.prompt, &tok) {
        (Some(ids), _, _) => ids.clone(),
        (None, Some(p), Some(t)) => t.chat_prompt(&[("user", p)])?,
        _ => return Err(CliError::Usage("give --prompt-ids or --prompt".into())),
    };
    let early_exit = match (a.early_exit, &tok) {
        (true, Some(t)) => Some(t.eot_id),
        _ => None,
    };
    let opts = TextOptions {
        gen_length: a.gen_length,
        steps: a.steps,
        block_length: a.block_length,
        temperature: a.temperature,
        cfg_scale: a.cfg_scale,
        remasking: match a.remasking {
            RemaskingArg::LowConfidence => Remasking::LowConfidence,
            RemaskingArg::Random => Remasking::Random,
        },
        seed: a.seed,
        early_exit,
        threshold: a.threshold,
        cache: a.cache.into(),
    };
    opts.check(prompt.len(), cfg.max_sequence_length)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let mask = cfg.mask_token_id;
    let t0 = Instant::now();
    let mut sampler = TextSampler::new(
        cfg,
        &weights,
        1,
        prompt.len(),
        opts,
        target_of(a.target),
        native_and_gpu(),
    )?;
    let compile_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let out = with_progress(opts.steps, |on| {
        sampler.generate(std::slice::from_ref(&prompt), on)
    })?;
    let secs = t1.elapsed().as_secs_f64();
    let ids = &out.ids[0];
    let committed = ids.iter().filter(|&&i| i != mask).count();
    let tps = committed as f64 / secs.max(1e-9);
    if a.print_ids {
        let obj = serde_json::json!({
            "generated": ids,
            "prompt_len": prompt.len(),
            "steps": out.steps,
            "seconds": secs,
            "tokens_per_s": tps,
        });
        println!("{obj}");
    } else if let Some(t) = &tok {
        println!("{}", answer_text(t, ids)?);
    }
    eprintln!(
        "generated {committed} tokens in {} steps, {secs:.2} s ({tps:.1} tokens/s; compile {compile_s:.1} s)",
        out.steps
    );
    Ok(())
}
