//! One module per subcommand; each parses its own arguments (`Args`) and runs (`run`).
//! What several of them share lives here: targets, option checks, random inputs, the dump sink.

pub mod bench;
pub mod compile;
pub mod demo;
pub mod generate;
pub mod inputs;
pub mod inspect;
pub mod logits;
pub mod run;
pub mod selfcheck;
pub mod tokenize;
pub mod train;
pub mod train_vq;
pub mod tune;

use crate::error::CliError;
use clap::ValueEnum;
use indexmap::IndexMap;
use mmada_codegen::artifact::Artifact;
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::HostCpu;
use mmada_codegen::SmArch;
use mmada_ir::{interp, serialize, DType, Tensor};
use mmada_passes::DumpSink;
use mmada_runtime::Target;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;

/// `--target` of the commands that run something.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RunTarget {
    /// Host code.
    Cpu,
    /// CUDA device 0.
    Cuda,
}

/// The target to run on: the one asked for, else CUDA when a device is present.
pub fn target_of(t: Option<RunTarget>) -> Target {
    match t {
        Some(RunTarget::Cpu) => Target::Cpu,
        Some(RunTarget::Cuda) => Target::Cuda,
        None => Target::default_for_machine(),
    }
}

/// The GPU architectures built when none are named: A100 and H100/H200.
pub fn default_gpu_archs() -> Vec<SmArch> {
    vec![SmArch::SM80, SmArch::SM90]
}

/// Host code for this CPU and PTX for the default architectures.
pub fn native_and_gpu() -> BackendOptions {
    BackendOptions {
        host: Some(HostCpu::native()),
        gpu_archs: default_gpu_archs(),
    }
}

/// `sm_80, sm_90`, or `none`.
pub fn archs_text(archs: &[SmArch]) -> String {
    if archs.is_empty() {
        return "none".into();
    }
    archs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Backend options from `--targets` and `--host-cpu`.
pub fn backend_options(targets: &[String], host_cpu: &str) -> Result<BackendOptions, CliError> {
    let mut host = None;
    let mut archs = Vec::new();
    for t in targets {
        let t = t.trim();
        if t == "cpu" {
            host = Some(match host_cpu {
                "native" => HostCpu::native(),
                "generic" => HostCpu::generic(),
                other => {
                    return Err(CliError::Usage(format!(
                        "--host-cpu must be native or generic, got '{other}'"
                    )))
                }
            });
        } else if t.starts_with("sm_") {
            let a = SmArch::parse(t).map_err(|e| CliError::Usage(format!("--targets: {e}")))?;
            if a.capability < 70 {
                return Err(CliError::Usage(format!(
                    "--targets: {a} is older than sm_70, which this PTX needs"
                )));
            }
            archs.push(a);
        } else {
            return Err(CliError::Usage(format!(
                "--targets: unknown target '{t}' (use cpu, sm_80, sm_90, sm_90a)"
            )));
        }
    }
    Ok(BackendOptions {
        host,
        gpu_archs: archs,
    })
}

/// The dump sink of a command: `--dump DIR`, else `MMADA_DUMP_DIR`, else none. The only place
/// the environment variable is read.
pub fn dump_sink(dir: Option<PathBuf>) -> DumpSink {
    match dir.or_else(|| std::env::var_os("MMADA_DUMP_DIR").map(PathBuf::from)) {
        Some(d) => DumpSink::to_dir(d),
        None => DumpSink::none(),
    }
}

/// Checks that a count option is at least `min`.
pub fn at_least(option: &str, value: usize, min: usize) -> Result<(), CliError> {
    if value < min {
        return Err(CliError::Usage(format!(
            "{option} must be at least {min}, got {value}"
        )));
    }
    Ok(())
}

/// Random inputs for the given bindings, deterministic in `seed`.
pub fn random_inputs(
    bindings: &[(String, DType, Vec<usize>)],
    seed: u64,
) -> Result<IndexMap<String, Tensor>, CliError> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = IndexMap::new();
    for (name, dt, shape) in bindings {
        let n: usize = shape.iter().product();
        let vals: Vec<f64> = (0..n)
            .map(|_| match dt {
                DType::Bool => rng.random_range(0..2) as f64,
                DType::I32 | DType::I64 => rng.random_range(0..10) as f64,
                _ => rng.random_range(-1.0..1.0),
            })
            .collect();
        out.insert(name.clone(), Tensor::from_f64(*dt, shape.clone(), &vals)?);
    }
    Ok(out)
}

/// Name, dtype and shape of each input of a graph.
pub fn graph_inputs(g: &mmada_ir::Graph) -> Vec<(String, DType, Vec<usize>)> {
    g.inputs()
        .into_iter()
        .filter_map(|id| {
            let n = g.node(id);
            match &n.op {
                mmada_ir::Op::Input { name, .. } => {
                    Some((name.clone(), n.dtype, n.shape.0.clone()))
                }
                _ => None,
            }
        })
        .collect()
}

/// The entry a command works on: the one named, else the artifact's first.
pub fn entry_name(art: &Artifact, entry: Option<&str>) -> Result<String, CliError> {
    let names: Vec<&str> = art
        .manifest
        .entries
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    match entry {
        Some(e) if names.contains(&e) => Ok(e.to_string()),
        Some(e) => Err(CliError::Usage(format!(
            "--entry: the artifact has no entry '{e}' (entries: {})",
            names.join(", ")
        ))),
        None => names
            .first()
            .map(|s| s.to_string())
            .ok_or_else(|| CliError::Usage("the artifact has no entries".into())),
    }
}

/// The source graph of an entry.
pub fn source_graph(art: &Artifact, entry: &str) -> Result<mmada_ir::Graph, CliError> {
    Ok(serialize::from_json(
        art.section_str(&format!("graph.{entry}.source.json"))?,
    )?)
}

/// The reference interpreter on an entry's source graph.
pub fn reference(
    art: &Artifact,
    entry: &str,
    inputs: &IndexMap<String, Tensor>,
) -> Result<IndexMap<String, Tensor>, CliError> {
    Ok(interp::interpret(&source_graph(art, entry)?, inputs)?)
}
