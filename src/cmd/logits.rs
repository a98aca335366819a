//! `mmada logits`: logits of token ids for an HF checkpoint directory.

use super::{native_and_gpu, target_of, RunTarget};
use crate::error::CliError;
use indexmap::IndexMap;
use mmada_runtime::tensor_io;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `mmada logits`.
#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory (config.json and safetensors weights).
    #[arg(long)]
    model: PathBuf,
    /// Inputs (safetensors).
    #[arg(long)]
    input: PathBuf,
    /// Output (safetensors).
    #[arg(long)]
    output: PathBuf,
    /// cpu or cuda (default: cuda when a device is present, else cpu).
    #[arg(long)]
    target: Option<RunTarget>,
}

/// Runs `mmada logits`.
pub fn run(a: Args) -> Result<(), CliError> {
    let ins = tensor_io::read_safetensors(&a.input)?;
    for name in ins.keys() {
        if name != "input_ids" && name != "attention_mask" {
            return Err(CliError::Usage(format!(
                "{}: unexpected tensor '{name}' (expected input_ids and optionally attention_mask)",
                a.input.display()
            )));
        }
    }
    let ids = ins
        .get("input_ids")
        .ok_or_else(|| CliError::Usage(format!("{}: no tensor 'input_ids'", a.input.display())))?;
    let t0 = Instant::now();
    let logits = mmada_models::logits::logits_from_checkpoint(
        &a.model,
        ids,
        ins.get("attention_mask"),
        target_of(a.target),
        native_and_gpu(),
    )?;
    let shape = logits.shape().clone();
    let mut out = IndexMap::new();
    out.insert("logits".to_string(), logits);
    tensor_io::write_safetensors(&a.output, &out)?;
    println!(
        "wrote logits {shape} to {} in {:.2}s",
        a.output.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
