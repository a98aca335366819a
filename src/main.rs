//! The `mmada` command line: argument parsing and dispatch; each command lives in
//! `src/cmd/<command>.rs`.

mod cmd;
mod error;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "mmada",
    version,
    about = "Compiler and runtime for MMaDA-style masked-diffusion models"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compile a graph spec (TOML), a model config.json or a preset into an artifact.
    Compile(cmd::compile::Args),
    /// Run an artifact's entry on inputs from a safetensors file.
    Run(cmd::run::Args),
    /// Write random inputs for an artifact (uniform in [-1, 1) for floats).
    Inputs(cmd::inputs::Args),
    /// Show what an artifact contains.
    Inspect(cmd::inspect::Args),
    /// Train an MMaDA model with the masked-diffusion objective (default: the tiny preset on
    /// the embedded dataset).
    Train(Box<cmd::train::Args>),
    /// Train the tiny MAGVIT-v2 image tokenizer on the embedded digits (compiled training
    /// step), and report PSNR and codebook use on the held-out digits.
    TrainVq(cmd::train_vq::Args),
    /// Logits of token ids for an HF checkpoint directory: `input_ids` (int [B, L]) and an
    /// optional `attention_mask` (key padding) in, `logits` (f32 [B, L, V]) out.
    Logits(cmd::logits::Args),
    /// Generate with the compiled samplers: `generate text` (default model: the tiny
    /// multimodal one in runs/tiny-mm).
    Generate(cmd::generate::Args),
    /// Time the BENCHMARKS.md configurations (training step and forward of bench-tiny and
    /// bench-small): median time, achieved GFLOP/s, and the ratio to the official PyTorch figures.
    Bench(cmd::bench::Args),
    /// Text ids, MAGVIT-v2 image codes, or a task's sequence layout: `tokenize text`,
    /// `tokenize image`, `tokenize prompt`.
    Tokenize(cmd::tokenize::Args),
    /// Images from MAGVIT-v2 codes: `detokenize image`.
    Detokenize(cmd::tokenize::DetokenizeArgs),
    /// Compile the built-in check graphs (every op kind, random streams, a transformer block
    /// with its gradients), run them on this machine and compare with the interpreter.
    Selfcheck(cmd::selfcheck::Args),
    /// Compile the embedded example, run it compiled and on the reference interpreter, and
    /// compare.
    Demo(cmd::demo::Args),
    /// Search the kernel templates' knobs on this machine for a benchmark case or a graph
    /// spec; keep every timing in the tuning cache that `compile` reads.
    Tune(cmd::tune::Args),
}

fn dispatch(cmd: Cmd) -> Result<(), error::CliError> {
    match cmd {
        Cmd::Compile(a) => cmd::compile::run(a),
        Cmd::Run(a) => cmd::run::run(a),
        Cmd::Inputs(a) => cmd::inputs::run(a),
        Cmd::Inspect(a) => cmd::inspect::run(a),
        Cmd::Train(a) => cmd::train::run(*a),
        Cmd::TrainVq(a) => cmd::train_vq::run(a),
        Cmd::Logits(a) => cmd::logits::run(a),
        Cmd::Generate(a) => cmd::generate::run(a),
        Cmd::Bench(a) => cmd::bench::run(a),
        Cmd::Selfcheck(a) => cmd::selfcheck::run(a),
        Cmd::Tokenize(a) => cmd::tokenize::run(a),
        Cmd::Detokenize(a) => cmd::tokenize::run_detokenize(a),
        Cmd::Demo(a) => cmd::demo::run(a),
        Cmd::Tune(a) => cmd::tune::run(a),
    }
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`mmada inspect x | head`), like other command-line tools,
    // instead of panicking in println!.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match dispatch(Cli::parse().cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = e.to_string();
            let line = msg.lines().next().unwrap_or("").to_string();
            eprintln!("error: {line}");
            if msg.lines().count() > 1 && std::env::var_os("MMADA_VERBOSE").is_some() {
                eprintln!("{msg}");
            }
            ExitCode::FAILURE
        }
    }
}
