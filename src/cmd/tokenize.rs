//! `mmada tokenize text|image|prompt` and `mmada detokenize image`: the unified vocabulary from
//! the command line — text ids of a tokenizer, MAGVIT-v2 codes of an image and back, and the
//! sequence layout of a task as JSON.

use super::{target_of, RunTarget};
use crate::error::CliError;
use indexmap::IndexMap;
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::HostCpu;
use mmada_ir::Tensor;
use mmada_models::image_io::{self, Fit, ImageLimits};
use mmada_models::image_tokenizer::{load_magvit, ImageTokenizer};
use mmada_models::prompt::{Image, Prompter, TurnEnd};
use mmada_models::tokenizer::{BpeTokenizer, TextTokenizer};
use mmada_models::vocab::UnifiedVocab;
use mmada_runtime::tensor_io;
use mmada_runtime::Target;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `mmada tokenize`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

/// Arguments of `mmada detokenize`.
#[derive(clap::Args)]
pub struct DetokenizeArgs {
    #[command(subcommand)]
    what: DetokenizeWhat,
}

#[derive(clap::Subcommand)]
enum What {
    /// Print the ids of a text (JSON array), with no BOS added.
    Text(TextArgs),
    /// Encode an image (PNG, JPEG, WebP) into MAGVIT-v2 codes: `codes`, i64 [1, N], raster order.
    Image(ImageArgs),
    /// Print a task's sequence layout (ids, prompt mask, key mask) as JSON.
    Prompt(PromptArgs),
}

#[derive(clap::Subcommand)]
enum DetokenizeWhat {
    /// Decode MAGVIT-v2 codes (`codes`, [1, N] with N a square) into a PNG.
    Image(DetokenizeImageArgs),
}

#[derive(clap::Args)]
struct TextArgs {
    /// A directory with tokenizer.json, or the file itself.
    #[arg(long)]
    tokenizer: PathBuf,
    /// The text.
    text: String,
}

#[derive(clap::Args)]
struct ImageArgs {
    /// MAGVIT-v2 directory (config.json and pytorch_model.safetensors).
    #[arg(long)]
    vq: PathBuf,
    /// The image.
    #[arg(long)]
    input: PathBuf,
    /// Output safetensors with `codes`.
    #[arg(long)]
    output: PathBuf,
    /// Side of the square the image is brought to (a multiple of the tokenizer's factor, 16).
    #[arg(long, default_value_t = 256)]
    resolution: u32,
    /// Resize both sides to the resolution instead of resizing the shorter side and cropping
    /// the centre.
    #[arg(long)]
    squash: bool,
    /// Also write the decoded reconstruction to this PNG.
    #[arg(long)]
    reconstruction: Option<PathBuf>,
    /// cpu or cuda (default: cuda when a device is present, else cpu).
    #[arg(long)]
    target: Option<RunTarget>,
}

#[derive(clap::Args)]
struct DetokenizeImageArgs {
    /// MAGVIT-v2 directory (config.json and pytorch_model.safetensors).
    #[arg(long)]
    vq: PathBuf,
    /// Safetensors with `codes` (integer [1, N] or [N]).
    #[arg(long)]
    codes: PathBuf,
    /// Output PNG.
    #[arg(long)]
    output: PathBuf,
    /// cpu or cuda (default: cuda when a device is present, else cpu).
    #[arg(long)]
    target: Option<RunTarget>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TaskArg {
    T2i,
    Mmu,
    Lm,
    Chat,
    R2i,
}

#[derive(clap::Args)]
struct PromptArgs {
    /// Which layout (spec §3).
    #[arg(long, value_enum)]
    task: TaskArg,
    /// Model directory with tokenizer.json and config.json (default: the embedded tiny model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Caption (t2i, r2i short caption), text (lm) or question (mmu, chat).
    #[arg(long, default_value = "")]
    text: String,
    /// Answer (mmu, chat training rows) or the long caption (r2i). Without it, mmu and chat give
    /// the inference layout with --gen-len masks.
    #[arg(long)]
    answer: Option<String>,
    /// Safetensors with `codes` (the image of t2i, mmu, r2i); without it, t2i and r2i images
    /// are --image-tokens masks.
    #[arg(long)]
    codes: Option<PathBuf>,
    /// Image tokens when no codes are given.
    #[arg(long, default_value_t = 256)]
    image_tokens: usize,
    /// Text budget Lt (t2i, mmu, r2i).
    #[arg(long, default_value_t = 128)]
    text_len: usize,
    /// Row length (lm, chat training rows).
    #[arg(long, default_value_t = 256)]
    length: usize,
    /// Masks to decode (mmu, chat inference).
    #[arg(long, default_value_t = 128)]
    gen_len: usize,
    /// Prepend the thinking-mode prefix to the question (mixed CoT, spec §3.5).
    #[arg(long)]
    think: bool,
    /// End chat turns with the literal text `<eot_id>`, as the official training data does.
    #[arg(long)]
    literal_eot: bool,
}

/// Runs `mmada tokenize`.
pub fn run(a: Args) -> Result<(), CliError> {
    match a.what {
        What::Text(t) => text(t),
        What::Image(i) => image(i),
        What::Prompt(p) => prompt(p),
    }
}

/// Runs `mmada detokenize`.
pub fn run_detokenize(a: DetokenizeArgs) -> Result<(), CliError> {
    match a.what {
        DetokenizeWhat::Image(d) => detokenize_image(d),
    }
}

fn tokenizer_file(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.join("tokenizer.json")
    } else {
        p.to_path_buf()
    }
}

fn text(a: TextArgs) -> Result<(), CliError> {
    let tok = BpeTokenizer::from_file(&tokenizer_file(&a.tokenizer))?;
    let ids = tok.encode(&a.text)?;
    println!("{}", serde_json::to_string(&ids).unwrap_or_default());
    Ok(())
}

/// Host code only when running on the CPU (nothing else is needed); PTX too for CUDA.
fn backend_for(target: Target) -> BackendOptions {
    match target {
        Target::Cpu => BackendOptions {
            host: Some(HostCpu::native()),
            gpu_archs: vec![],
        },
        Target::Cuda => super::native_and_gpu(),
    }
}

fn image(a: ImageArgs) -> Result<(), CliError> {
    let t0 = Instant::now();
    let (cfg, weights) = load_magvit(&a.vq)?;
    let f = cfg.factor() as u32;
    if a.resolution == 0 || !a.resolution.is_multiple_of(f) {
        return Err(CliError::Usage(format!(
            "--resolution {}: must be a positive multiple of the tokenizer's factor {f}",
            a.resolution
        )));
    }
    let img = image_io::load_rgb(&a.input, &ImageLimits::default())?;
    let fit = if a.squash {
        Fit::Squash
    } else {
        Fit::ResizeCrop
    };
    let chw = image_io::preprocess(&img, a.resolution, fit)?;
    let target = target_of(a.target);
    let r = a.resolution as usize;
    let mut tk = ImageTokenizer::new(cfg, &weights, r, r, target, backend_for(target))?;
    let codes = tk.encode(&chw)?;
    let n = codes.shape().0[1];
    let mut out = IndexMap::new();
    out.insert("codes".to_string(), codes.clone());
    tensor_io::write_safetensors(&a.output, &out)?;
    println!(
        "wrote codes [1, {n}] of {} ({}×{} → {r}×{r}) to {} in {:.2}s",
        a.input.display(),
        img.width(),
        img.height(),
        a.output.display(),
        t0.elapsed().as_secs_f64()
    );
    if let Some(png) = a.reconstruction {
        let pixels = tk.decode(&codes)?;
        let rgb = image_io::to_rgb8(&pixels, a.resolution, a.resolution)?;
        image_io::save_png(&rgb, &png)?;
        println!("wrote the reconstruction to {}", png.display());
    }
    Ok(())
}

fn detokenize_image(a: DetokenizeImageArgs) -> Result<(), CliError> {
    let t0 = Instant::now();
    let (cfg, weights) = load_magvit(&a.vq)?;
    let ins = tensor_io::read_safetensors(&a.codes)?;
    let codes = ins.get("codes").ok_or_else(|| {
        CliError::Usage(format!(
            "{}: no tensor 'codes' (has: {})",
            a.codes.display(),
            ins.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })?;
    let n = codes.shape().numel();
    let side = (n as f64).sqrt().round() as usize;
    if side == 0 || side * side != n || codes.shape().rank() > 2 {
        return Err(CliError::Usage(format!(
            "{}: codes {} must be [1, N] with N a square (h = w), got N = {n}",
            a.codes.display(),
            codes.shape()
        )));
    }
    let px = side * cfg.factor();
    let target = target_of(a.target);
    let mut tk = ImageTokenizer::new(cfg, &weights, px, px, target, backend_for(target))?;
    let pixels = tk.decode(codes)?;
    let rgb = image_io::to_rgb8(&pixels, px as u32, px as u32)?;
    image_io::save_png(&rgb, &a.output)?;
    println!(
        "wrote a {px}×{px} image of {n} codes to {} in {:.2}s",
        a.output.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn read_codes(path: &Path) -> Result<Vec<i64>, CliError> {
    let ins = tensor_io::read_safetensors(path)?;
    let t: &Tensor = ins
        .get("codes")
        .ok_or_else(|| CliError::Usage(format!("{}: no tensor 'codes'", path.display())))?;
    if !t.dtype().is_int() {
        return Err(CliError::Usage(format!(
            "{}: codes must be integers, got {}",
            path.display(),
            t.dtype()
        )));
    }
    Ok(t.to_i64_vec())
}

fn prompt(a: PromptArgs) -> Result<(), CliError> {
    let (tok, vocab) = match &a.model {
        Some(dir) => UnifiedVocab::load(dir)?,
        None => {
            let tok = TextTokenizer::tiny()?;
            let v = UnifiedVocab::tiny(&tok)?;
            (tok, v)
        }
    };
    let p = Prompter::new(&tok, &vocab, a.text_len)?.with_turn_end(if a.literal_eot {
        TurnEnd::Literal
    } else {
        TurnEnd::Special
    });
    let codes = match &a.codes {
        Some(c) => Some(read_codes(c)?),
        None => None,
    };
    let img = match &codes {
        Some(c) => Image::Codes(c),
        None => Image::Masked(a.image_tokens),
    };
    let question = if a.think {
        Prompter::cot_question(&a.text)
    } else {
        a.text.clone()
    };
    let layout = match a.task {
        TaskArg::T2i => p.t2i(&a.text, img)?,
        TaskArg::R2i => p.r2i(&a.text, a.answer.as_deref().unwrap_or(""), img)?,
        TaskArg::Lm => p.lm(&a.text, a.length)?,
        TaskArg::Chat => match &a.answer {
            Some(ans) => p.chat(&[("user", &question)], ans, a.length)?,
            None => p.chat_infer(&[("user", &question)], a.gen_len)?,
        },
        TaskArg::Mmu => {
            let c = codes.as_deref().ok_or_else(|| {
                CliError::Usage("--task mmu needs --codes (the image's codes)".into())
            })?;
            match &a.answer {
                Some(ans) => p.mmu(c, &question, ans)?,
                None => p.mmu_infer(c, &[("user", &question)], a.gen_len)?,
            }
        }
    };
    let json = serde_json::to_string(&layout)
        .map_err(|e| CliError::Usage(format!("cannot print the layout: {e}")))?;
    println!("{json}");
    Ok(())
}
