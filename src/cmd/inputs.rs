//! `mmada inputs`: random inputs for an artifact's entry.

use super::{entry_name, graph_inputs, random_inputs, source_graph};
use crate::error::CliError;
use mmada_codegen::artifact::Artifact;
use mmada_runtime::tensor_io;
use std::path::PathBuf;

/// Arguments of `mmada inputs`.
#[derive(clap::Args)]
pub struct Args {
    /// The artifact.
    artifact: PathBuf,
    /// Output safetensors file.
    #[arg(short, long)]
    output: PathBuf,
    /// The entry whose inputs to write (default: the artifact's first).
    #[arg(long)]
    entry: Option<String>,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Runs `mmada inputs`.
pub fn run(a: Args) -> Result<(), CliError> {
    let art = Artifact::read(&a.artifact)?;
    let entry = entry_name(&art, a.entry.as_deref())?;
    let g = source_graph(&art, &entry)?;
    let ins = random_inputs(&graph_inputs(&g), a.seed)?;
    tensor_io::write_safetensors(&a.output, &ins)?;
    println!(
        "wrote {} random inputs of {entry} to {}",
        ins.len(),
        a.output.display()
    );
    Ok(())
}
