//! `mmada train-vq`: trains the tiny MAGVIT-v2 image tokenizer on the embedded digits with the
//! compiled training step, then reports PSNR and codebook use on the held-out digits.

use super::at_least;
use crate::error::CliError;
use mmada_models::vq_trainer::{train_and_save, VqOptions};
use std::path::PathBuf;

/// Arguments of `mmada train-vq`.
#[derive(clap::Args)]
pub struct Args {
    /// Output directory (config.json, pytorch_model.safetensors, report.json,
    /// reconstructions.png).
    #[arg(long, default_value = "runs/vq-digits")]
    out: PathBuf,
    /// Optimiser steps.
    #[arg(long, default_value_t = 800)]
    steps: usize,
    /// Images per step.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Seed of the weights and the batch order.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Evaluate this tokenizer directory on the held-out digits instead of training (writes
    /// its reconstructions.png).
    #[arg(long)]
    evaluate: Option<PathBuf>,
}

/// Runs `mmada train-vq`.
pub fn run(a: Args) -> Result<(), CliError> {
    if let Some(dir) = &a.evaluate {
        let (psnr, distinct, size) = mmada_models::vq_trainer::evaluate_dir(dir)?;
        println!(
            "held-out digits: PSNR {psnr:.2} dB, {distinct} of {size} codes used ({:.0} %); wrote {}",
            100.0 * distinct as f64 / size as f64,
            dir.join("reconstructions.png").display()
        );
        return Ok(());
    }
    at_least("--steps", a.steps, 1)?;
    at_least("--batch", a.batch, 1)?;
    if !(a.lr.is_finite() && a.lr > 0.0) {
        return Err(CliError::Usage(format!(
            "--lr {}: must be a positive number",
            a.lr
        )));
    }
    let o = VqOptions {
        steps: a.steps,
        batch: a.batch,
        lr: a.lr,
        seed: a.seed,
    };
    let every = (a.steps / 10).max(1);
    let report = train_and_save(&a.out, &o, |step, r| {
        if step == 1 || step % every == 0 {
            println!("step {step:>5}  reconstruction MSE {r:.5}");
        }
    })?;
    println!(
        "held-out digits: PSNR {:.2} dB, {} of 256 codes used ({:.0} %); trained in {:.0} s; wrote {}",
        report.psnr_db,
        report.distinct_codes,
        report.codebook_usage * 100.0,
        report.train_seconds,
        a.out.display()
    );
    Ok(())
}
