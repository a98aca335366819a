//! `mmada generate text`: the compiled samplers, replayed step by step over resident state.

use super::{native_and_gpu, target_of, RunTarget};
use crate::error::CliError;
use clap::{Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use mmada_ir::Remasking;
use mmada_models::checkpoint::load_model;
use mmada_models::text_sampler::{TextOptions, TextSampler};
use mmada_models::tokenizer::TextTokenizer;
use mmada_models::trainer::latest_checkpoint;
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

/// The text tokenizer of a checkpoint: its tokenizer.json, else the embedded tiny tokenizer
/// when the checkpoint uses its `[MASK]` id.
fn tokenizer_of(dir: &Path, mask_id: i64) -> Result<TextTokenizer, CliError> {
    let path = dir.join("tokenizer.json");
    if path.exists() {
        return Ok(TextTokenizer::from_file(&path)?);
    }
    let tiny = TextTokenizer::tiny()?;
    if tiny.mask == mask_id {
        return Ok(tiny);
    }
    Err(CliError::Usage(format!(
        "{} has no tokenizer.json (needed for --prompt and --early-exit); give --prompt-ids",
        dir.display()
    )))
}

fn text(a: TextArgs) -> Result<(), CliError> {
    let dir = model_dir(a.model.clone())?;
    let (cfg, weights) = load_model(&dir)?;
    // A tokenizer is needed for a text prompt, for early exit and to print text.
    let tok = if a.prompt.is_some() || a.early_exit || !a.print_ids {
        Some(tokenizer_of(&dir, cfg.mask_token_id)?)
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
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = ProgressBar::new(opts.steps as u64);
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} step {pos}/{len}")
        {
            b.set_style(style);
        }
        b
    });
    let t1 = Instant::now();
    let out = sampler.generate(std::slice::from_ref(&prompt), &mut |done, _| {
        if let Some(b) = &bar {
            b.set_position(done as u64);
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
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
        let text_ids: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|&i| i >= 0 && (i as usize) < t.len())
            .collect();
        println!("{}", t.decode(&text_ids)?);
    }
    eprintln!(
        "generated {committed} tokens in {} steps, {secs:.2} s ({tps:.1} tokens/s; compile {compile_s:.1} s)",
        out.steps
    );
    Ok(())
}
