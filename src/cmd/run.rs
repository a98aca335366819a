//! `mmada run`: one entry of an artifact on inputs from a safetensors file.

use super::{entry_name, reference, target_of, RunTarget};
use crate::error::CliError;
use mmada_codegen::artifact::Artifact;
use mmada_runtime::tensor_io;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `mmada run`.
#[derive(clap::Args)]
pub struct Args {
    /// The artifact.
    artifact: PathBuf,
    /// Inputs (safetensors, one tensor per graph input).
    #[arg(long)]
    input: PathBuf,
    /// Where to write the outputs (safetensors).
    #[arg(long)]
    output: PathBuf,
    /// The entry to run (default: the artifact's first).
    #[arg(long)]
    entry: Option<String>,
    /// cpu or cuda (default: cuda when a device is present, else cpu).
    #[arg(long)]
    target: Option<RunTarget>,
    /// Run the reference interpreter on the source graph instead.
    #[arg(long)]
    reference: bool,
}

/// Runs `mmada run`.
pub fn run(a: Args) -> Result<(), CliError> {
    let art = Artifact::read(&a.artifact)?;
    let entry = entry_name(&art, a.entry.as_deref())?;
    let inputs = tensor_io::read_safetensors(&a.input)?;
    let t0 = Instant::now();
    let (outputs, how) = if a.reference {
        (
            reference(&art, &entry, &inputs)?,
            "reference interpreter".to_string(),
        )
    } else {
        let mut exe = mmada_runtime::open_artifact(art, target_of(a.target))?;
        let o = exe.run_entry_outputs(&entry, &inputs)?;
        (o, exe.target().to_string())
    };
    tensor_io::write_safetensors(&a.output, &outputs)?;
    println!(
        "ran {} ({entry}) on {how} in {:.1} ms; wrote {} ({})",
        a.artifact.display(),
        t0.elapsed().as_secs_f64() * 1e3,
        a.output.display(),
        outputs
            .iter()
            .map(|(n, t)| format!("{n}: {}{}", t.dtype(), t.shape()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
