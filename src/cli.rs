//! Subcommands. Each one parses its arguments, calls into the library crates and prints.

use clap::{Parser, Subcommand, ValueEnum};
use indexmap::IndexMap;
use mmada_codegen::artifact::Artifact;
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::compile::{compile, CompileOptions, PtxCheck};
use mmada_codegen::llvm::HostCpu;
use mmada_codegen::plan::BufferKind;
use mmada_ir::{interp, max_rel_error, serialize, DType, Tensor};
use mmada_models::GraphSpec;
use mmada_runtime::{tensor_io, Target};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::time::Instant;
use thiserror::Error;

/// The example compiled by `mmada demo` (also in examples/softmax_linear.toml).
const EMBEDDED_EXAMPLE: &str = include_str!("../examples/softmax_linear.toml");

#[derive(Debug, Error)]
pub enum CliError {
    #[error(transparent)]
    Train(#[from] mmada_models::trainer::TrainError),
    #[error(transparent)]
    Logits(#[from] mmada_models::logits::LogitsError),
    #[error(transparent)]
    Spec(#[from] mmada_models::SpecError),
    #[error(transparent)]
    Codegen(#[from] mmada_codegen::CodegenError),
    #[error(transparent)]
    Runtime(#[from] mmada_runtime::RuntimeError),
    #[error(transparent)]
    Ir(#[from] mmada_ir::IrError),
    #[error("{0}")]
    Usage(String),
}

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

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RunTarget {
    Cpu,
    Cuda,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compile a graph spec (TOML) into an artifact.
    Compile {
        /// A graph spec (TOML), or a model `config.json` (HF field names); omit with --preset.
        spec: Option<PathBuf>,
        /// Compile a model preset instead of a file: tiny, bench-tiny, bench-small, mmada-8b.
        #[arg(long)]
        preset: Option<String>,
        /// For models: which graph, `forward` (logits) or `train-step`.
        #[arg(long, default_value = "forward")]
        graph: String,
        /// For models: batch size.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// For models: sequence length.
        #[arg(long, default_value_t = 256)]
        seq: usize,
        /// Output artifact.
        #[arg(short, long)]
        output: PathBuf,
        /// Targets: cpu and/or sm_80, sm_90 (comma separated).
        #[arg(long, default_value = "cpu,sm_80,sm_90", value_delimiter = ',')]
        targets: Vec<String>,
        /// Host CPU to tune for: native or generic.
        #[arg(long, default_value = "native")]
        host_cpu: String,
        /// Write every compiler stage here.
        #[arg(long)]
        dump: Option<PathBuf>,
        /// Do not assemble the PTX with ptxas even when it is available.
        #[arg(long)]
        no_ptxas: bool,
    },
    /// Run an artifact on inputs from a safetensors file.
    Run {
        /// The artifact.
        artifact: PathBuf,
        /// Inputs (safetensors, one tensor per graph input).
        #[arg(long)]
        input: PathBuf,
        /// Where to write the outputs (safetensors).
        #[arg(long)]
        output: PathBuf,
        /// cpu or cuda (default: cuda when a device is present, else cpu).
        #[arg(long)]
        target: Option<RunTarget>,
        /// Run the reference interpreter on the source graph instead.
        #[arg(long)]
        reference: bool,
    },
    /// Write random inputs for an artifact (uniform in [-1, 1) for floats).
    Inputs {
        /// The artifact.
        artifact: PathBuf,
        /// Output safetensors file.
        #[arg(short, long)]
        output: PathBuf,
        /// Random seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Show what an artifact contains.
    Inspect {
        /// The artifact.
        artifact: PathBuf,
    },
    /// Train an MMaDA model with the masked-diffusion objective (default: the tiny preset on
    /// the embedded dataset).
    Train {
        /// JSONL data files (default: the embedded GSM-style problems and text).
        data: Vec<PathBuf>,
        /// Model preset to initialise from: tiny, bench-tiny, bench-small.
        #[arg(long, default_value = "tiny")]
        preset: String,
        /// Start from this HF checkpoint directory instead of a preset.
        #[arg(long)]
        model: Option<PathBuf>,
        /// tokenizer.json (default: the embedded tiny tokenizer).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Total optimiser steps.
        #[arg(long, default_value_t = 300)]
        steps: usize,
        /// Rows per batch.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Tokens per row.
        #[arg(long, default_value_t = 256)]
        seq: usize,
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
        /// Output directory (checkpoints, metrics.jsonl, loss-curve.png).
        #[arg(long, default_value = "runs/tiny")]
        out: PathBuf,
        /// Resume from a checkpoint directory, or from OUT/latest when given no value.
        #[arg(long, num_args = 0..=1)]
        resume: Option<Option<PathBuf>>,
        /// cpu or cuda (default: cuda when a device is present, else cpu).
        #[arg(long)]
        target: Option<RunTarget>,
        /// Print one line per step instead of a progress bar.
        #[arg(long)]
        log: bool,
    },
    /// Logits of token ids for an HF checkpoint directory: `input_ids` (int [B, L]) and an
    /// optional `attention_mask` (key padding) in, `logits` (f32 [B, L, V]) out.
    Logits {
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
    },
    /// Time the BENCHMARKS.md configurations (training step and forward of bench-tiny and
    /// bench-small): median time, achieved GFLOP/s, and the ratio to the official PyTorch figures.
    Bench {
        /// cpu or cuda (default: cuda when a device is present, else cpu).
        #[arg(long)]
        target: Option<RunTarget>,
        /// Only cases whose preset contains this text (e.g. bench-tiny).
        #[arg(long)]
        only: Option<String>,
        /// Timed repetitions (median reported).
        #[arg(long, default_value_t = 7)]
        reps: usize,
        /// Instead of timing, write GPU-check cases here: PTX artifacts, data inputs, and the
        /// outputs the CPU computes with deterministic weights (`mmada-run --init-params 7`).
        #[arg(long)]
        write_bundle: Option<PathBuf>,
        /// Instead of timing, run each case once on the CPU with per-launch timing and print
        /// the slowest N kernels (with the graph node each computes).
        #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "25")]
        profile: Option<usize>,
    },
    /// Compile the built-in check graphs (every op kind, random streams, a transformer block
    /// with its gradients), run them on this machine and compare with the interpreter.
    Selfcheck {
        /// cpu or cuda (default: cuda when a device is present, else cpu).
        #[arg(long)]
        target: Option<RunTarget>,
        /// Instead of running, write artifacts (PTX only), inputs and expected outputs here.
        #[arg(long)]
        write_bundle: Option<PathBuf>,
    },
    /// Compile the embedded example, run it compiled and on the reference interpreter, and
    /// compare.
    Demo {
        /// cpu or cuda (default: cuda when a device is present, else cpu).
        #[arg(long)]
        target: Option<RunTarget>,
        /// Random seed for the inputs.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

fn target_of(t: Option<RunTarget>) -> Target {
    match t {
        Some(RunTarget::Cpu) => Target::Cpu,
        Some(RunTarget::Cuda) => Target::Cuda,
        None => Target::default_for_machine(),
    }
}

fn backend_options(
    targets: &[String],
    host_cpu: &str,
    dump: Option<PathBuf>,
) -> Result<BackendOptions, CliError> {
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
        } else if let Some(n) = t.strip_prefix("sm_").and_then(|n| n.parse::<u32>().ok()) {
            if !(70..=120).contains(&n) {
                return Err(CliError::Usage(format!("unsupported GPU target '{t}'")));
            }
            archs.push(n);
        } else {
            return Err(CliError::Usage(format!(
                "unknown target '{t}' (use cpu, sm_80, sm_90)"
            )));
        }
    }
    Ok(BackendOptions {
        host,
        gpu_archs: archs,
        dump_dir: dump
            .or_else(|| std::env::var_os("MMADA_DUMP_DIR").map(PathBuf::from))
            .map(|d| d.join("kernels")),
    })
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

fn artifact_inputs(art: &Artifact) -> Result<Vec<(String, DType, Vec<usize>)>, CliError> {
    let g = serialize::from_json(art.section_str("graph.source.json")?)?;
    Ok(g.inputs()
        .into_iter()
        .map(|id| {
            let n = g.node(id);
            let name = match &n.op {
                mmada_ir::Op::Input { name, .. } => name.clone(),
                _ => String::new(),
            };
            (name, n.dtype, n.shape.0.clone())
        })
        .collect())
}

fn reference(
    art: &Artifact,
    inputs: &IndexMap<String, Tensor>,
) -> Result<IndexMap<String, Tensor>, CliError> {
    let g = serialize::from_json(art.section_str("graph.source.json")?)?;
    Ok(interp::interpret(&g, inputs)?)
}

fn compile_spec_text(
    text: &str,
    path: &str,
    opts: BackendOptions,
    ptx: PtxCheck,
) -> Result<Artifact, CliError> {
    let spec = GraphSpec::parse(text, path)?;
    let g = spec.build(path)?;
    Ok(compile(
        &g,
        &CompileOptions {
            name: spec.name.clone(),
            backend: opts,
            ptx_check: ptx,
        },
    )?)
}

/// Which model graph `compile` builds.
struct ModelGraph {
    graph: String,
    batch: usize,
    seq: usize,
}

fn model_graph(
    cfg: &mmada_models::config::LladaConfig,
    what: &ModelGraph,
) -> Result<mmada_ir::Graph, CliError> {
    Ok(match what.graph.as_str() {
        "forward" => mmada_models::llada::forward_graph(cfg, what.batch, what.seq, false)?,
        "train-step" => mmada_models::train_step::train_step_graph(
            cfg,
            what.batch,
            what.seq,
            mmada_models::train_step::StepHyper::default(),
        )?,
        other => {
            return Err(CliError::Usage(format!(
                "--graph must be forward or train-step, got '{other}'"
            )))
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn cmd_compile(
    spec: Option<&Path>,
    preset: Option<&str>,
    what: &ModelGraph,
    output: &Path,
    targets: &[String],
    host_cpu: &str,
    dump: Option<PathBuf>,
    no_ptxas: bool,
) -> Result<(), CliError> {
    let opts = backend_options(targets, host_cpu, dump)?;
    let t0 = Instant::now();
    let check = if no_ptxas {
        PtxCheck::Skip
    } else {
        PtxCheck::Auto
    };
    let model = match (spec, preset) {
        (_, Some(p)) => Some((
            mmada_models::config::LladaConfig::preset(p).ok_or_else(|| {
                CliError::Usage(format!(
                    "unknown preset '{p}' (choose from {})",
                    mmada_models::config::LladaConfig::PRESETS.join(", ")
                ))
            })?,
            p.to_string(),
        )),
        (Some(s), None) if s.extension().is_some_and(|e| e == "json") => Some((
            mmada_models::config::LladaConfig::read(s)?,
            s.display().to_string(),
        )),
        (Some(_), None) => None,
        (None, None) => {
            return Err(CliError::Usage(
                "give a spec file (TOML graph or model config.json) or --preset".into(),
            ))
        }
    };
    let art = match (model, spec) {
        (Some((cfg, name)), _) => {
            let g = model_graph(&cfg, what)?;
            compile(
                &g,
                &CompileOptions {
                    name: format!("{name} {} b{} l{}", what.graph, what.batch, what.seq),
                    backend: opts,
                    ptx_check: check,
                },
            )?
        }
        (None, Some(spec)) => {
            let text = std::fs::read_to_string(spec).map_err(|e| mmada_models::SpecError::Io {
                path: spec.display().to_string(),
                source: e,
            })?;
            compile_spec_text(&text, &spec.display().to_string(), opts, check)?
        }
        (None, None) => return Err(CliError::Usage("nothing to compile".into())),
    };
    art.write(output)?;
    let m = &art.manifest;
    let checked = m.kernels.iter().any(|k| !k.ptxas.is_empty());
    println!(
        "compiled {} -> {} in {:.2}s: {} kernels, host code: {}, PTX: {}{}",
        m.name,
        output.display(),
        t0.elapsed().as_secs_f64(),
        m.kernels.len(),
        if m.host_cpu.is_some() { "yes" } else { "no" },
        if m.gpu_archs.is_empty() {
            "none".to_string()
        } else {
            m.gpu_archs
                .iter()
                .map(|a| format!("sm_{a}"))
                .collect::<Vec<_>>()
                .join(", ")
        },
        if checked { " (checked with ptxas)" } else { "" },
    );
    Ok(())
}

fn cmd_run(
    artifact: &Path,
    input: &Path,
    output: &Path,
    target: Option<RunTarget>,
    reference_only: bool,
) -> Result<(), CliError> {
    let art = Artifact::read(artifact)?;
    let inputs = tensor_io::read_safetensors(input)?;
    let t0 = Instant::now();
    let (outputs, how) = if reference_only {
        (
            reference(&art, &inputs)?,
            "reference interpreter".to_string(),
        )
    } else {
        let target = target_of(target);
        let mut exe = mmada_runtime::open_artifact(art, target)?;
        let o = exe.run(&inputs)?;
        (o, exe.target().to_string())
    };
    tensor_io::write_safetensors(output, &outputs)?;
    println!(
        "ran {} on {how} in {:.1} ms; wrote {} ({})",
        artifact.display(),
        t0.elapsed().as_secs_f64() * 1e3,
        output.display(),
        outputs
            .iter()
            .map(|(n, t)| format!("{n}: {}{}", t.dtype(), t.shape()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn cmd_inputs(artifact: &Path, output: &Path, seed: u64) -> Result<(), CliError> {
    let art = Artifact::read(artifact)?;
    let ins = random_inputs(&artifact_inputs(&art)?, seed)?;
    tensor_io::write_safetensors(output, &ins)?;
    println!("wrote {} random inputs to {}", ins.len(), output.display());
    Ok(())
}

fn cmd_inspect(artifact: &Path) -> Result<(), CliError> {
    let art = Artifact::read(artifact)?;
    let m = &art.manifest;
    println!("artifact {} ({})", artifact.display(), m.name);
    println!(
        "  mmada {}, LLVM {}, PTX features {}",
        m.mmada_version, m.llvm_version, m.ptx_features
    );
    println!(
        "  host code: {}",
        m.host_cpu
            .as_ref()
            .map_or("none".into(), |c| c.name.clone())
    );
    println!("  GPU targets: {:?}", m.gpu_archs);
    println!("  graph sha256: {}", m.graph_sha256);
    let plan = mmada_runtime::Executable::new(art.clone())?.plan;
    let (mut inputs, mut intermediates, mut buffers) = (0u64, 0u64, 0usize);
    for b in &plan.buffers {
        let bytes = b.len * b.dtype.size_bytes() as u64;
        match b.kind {
            BufferKind::Input { .. } => inputs += bytes,
            BufferKind::Intermediate if b.len > 0 => {
                intermediates += bytes;
                buffers += 1;
            }
            _ => {}
        }
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "  memory: inputs {:.2} MiB, intermediates and outputs {:.2} MiB in {buffers} buffers \
         (shared where lifetimes allow), {} launches",
        mib(inputs),
        mib(intermediates),
        plan.launches.len()
    );
    println!("  kernels:");
    for k in &m.kernels {
        let ptx: Vec<String> = k
            .ptxas
            .iter()
            .map(|(a, i)| {
                format!(
                    "sm_{a}: {} regs, {} B spill, {} B smem",
                    i.registers,
                    i.spill_stores + i.spill_loads,
                    i.shared_bytes
                )
            })
            .collect();
        println!(
            "    {} grid={} block={} {}",
            k.name,
            k.grid,
            k.block,
            ptx.join("; ")
        );
    }
    println!("  sections:");
    for s in &m.sections {
        println!(
            "    {:<20} {:>10} bytes  sha256 {}",
            s.name,
            s.len,
            &s.sha256[..16]
        );
    }
    Ok(())
}

fn cmd_demo(target: Option<RunTarget>, seed: u64) -> Result<(), CliError> {
    let target = target_of(target);
    println!(
        "mmada demo: the embedded example (examples/softmax_linear.toml): y = softmax(x @ w + b)"
    );
    let t0 = Instant::now();
    let opts = BackendOptions {
        host: Some(HostCpu::native()),
        gpu_archs: vec![80, 90],
        ..BackendOptions::default()
    };
    let art = compile_spec_text(
        EMBEDDED_EXAMPLE,
        "<embedded>/softmax_linear.toml",
        opts,
        PtxCheck::Auto,
    )?;
    let compile_s = t0.elapsed().as_secs_f64();
    let ptx_checked = art.manifest.kernels.iter().all(|k| !k.ptxas.is_empty());
    let inputs = random_inputs(&artifact_inputs(&art)?, seed)?;
    let t1 = Instant::now();
    let expected = reference(&art, &inputs)?;
    let ref_ms = t1.elapsed().as_secs_f64() * 1e3;
    let mut exe = mmada_runtime::open_artifact(art.clone(), target)?;
    exe.run(&inputs)?; // warm-up
    let t2 = Instant::now();
    let got = exe.run(&inputs)?;
    let run_ms = t2.elapsed().as_secs_f64() * 1e3;
    println!(
        "  compiled {} kernels in {compile_s:.2}s (PTX for sm_80, sm_90{})",
        art.manifest.kernels.len(),
        if ptx_checked {
            ", assembled by ptxas"
        } else {
            "; ptxas not found, not assembled"
        }
    );
    println!(
        "  {:<8} {:<14} {:>12} {:>16}",
        "output", "shape", "time (ms)", "max rel. error"
    );
    for (name, e) in &expected {
        let a = &got[name];
        let err = max_rel_error(a, e, 1e-6);
        println!(
            "  {:<8} {:<14} {:>12.3} {:>16.2e}   ({} vs reference, {ref_ms:.3} ms)",
            name,
            format!("{}", e.shape()),
            run_ms,
            err,
            exe.target()
        );
        if err > 1e-5 {
            return Err(CliError::Usage(format!(
                "output {name} differs from the reference by {err:.2e}"
            )));
        }
    }
    println!(
        "  ok: compiled {} output matches the reference interpreter",
        exe.target()
    );
    Ok(())
}

fn graph_inputs(g: &mmada_ir::Graph) -> Vec<(String, DType, Vec<usize>)> {
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

/// Writes the BENCHMARKS.md cases for `scripts/gpu-check.sh` (see `Cmd::Bench`).
fn bench_bundle(dir: &Path, only: Option<String>) -> Result<(), CliError> {
    use mmada_models::bench::{case_graph, cases, flops, Figure};
    std::fs::create_dir_all(dir).map_err(|e| mmada_codegen::CodegenError::io(dir, e))?;
    for case in cases() {
        if only.as_deref().is_some_and(|o| !case.preset.contains(o)) {
            continue;
        }
        let (g, ins) = case_graph(&case).map_err(|e| CliError::Usage(e.to_string()))?;
        let fig = if case.figure == Figure::TrainStep {
            "train"
        } else {
            "forward"
        };
        let name = format!("{}_{fig}", case.preset.replace('-', "_"));
        let build = |host: bool| -> Result<Artifact, CliError> {
            Ok(compile(
                &g,
                &CompileOptions {
                    name: name.clone(),
                    backend: BackendOptions {
                        host: host.then(HostCpu::native),
                        gpu_archs: if host { vec![] } else { vec![80, 90] },
                        ..BackendOptions::default()
                    },
                    ptx_check: PtxCheck::Skip,
                },
            )?)
        };
        let gpu = build(false)?;
        gpu.write(&dir.join(format!("{name}.mmada")))?;
        tensor_io::write_safetensors(&dir.join(format!("{name}.in.safetensors")), &ins)?;
        // Expected outputs: the CPU with the same deterministic weights.
        let host = build(true)?;
        let exe_plan = mmada_runtime::Executable::new(host.clone())?;
        let inits: Vec<(String, Tensor)> = exe_plan
            .plan
            .inputs
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                mmada_runtime::init::init_value(b, i, 7).map(|t| (b.name.clone(), t))
            })
            .collect();
        let mut exe = mmada_runtime::open_artifact(host, Target::Cpu)?;
        for (n, t) in &inits {
            exe.set_input(n, t)?;
        }
        let want = exe.run(&ins)?;
        tensor_io::write_safetensors(&dir.join(format!("{name}.ref.safetensors")), &want)?;
        let cfg = mmada_models::config::LladaConfig::preset(case.preset)
            .ok_or_else(|| CliError::Usage("unknown preset".into()))?;
        let f = flops(&cfg, case.batch, case.seq, case.figure);
        // name tolerance flops bytes floor init-seed
        println!("{name} 1e-3 {f:.0} 0 1 7");
    }
    Ok(())
}

fn bench_profile(only: Option<String>, top: usize) -> Result<(), CliError> {
    use mmada_models::bench::{cases, profile, Figure};
    for case in cases() {
        if only.as_deref().is_some_and(|o| !case.preset.contains(o)) {
            continue;
        }
        let backend = BackendOptions {
            host: Some(HostCpu::native()),
            gpu_archs: vec![],
            ..BackendOptions::default()
        };
        let (total, kernels) =
            profile(&case, backend).map_err(|e| CliError::Usage(e.to_string()))?;
        let fig = if case.figure == Figure::TrainStep {
            "train step"
        } else {
            "forward"
        };
        let launches: usize = kernels.iter().map(|k| k.launches).sum();
        println!(
            "{} {fig}: {:.2} ms, {launches} launches of {} kernels (CPU, one profiled run)",
            case.preset,
            total * 1e3,
            kernels.len()
        );
        let mut by_kind: Vec<(String, f64, usize)> = Vec::new();
        for k in &kernels {
            let kind = k
                .kernel
                .split('_')
                .take_while(|p| !p.chars().any(|c| c.is_ascii_digit()))
                .collect::<Vec<_>>()
                .join("_");
            match by_kind.iter_mut().find(|e| e.0 == kind) {
                Some(e) => {
                    e.1 += k.seconds;
                    e.2 += k.launches;
                }
                None => by_kind.push((kind, k.seconds, k.launches)),
            }
        }
        by_kind.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (kind, s, n) in &by_kind {
            println!("  {kind:<14} {:>9.2} ms  {n:>5} launches", s * 1e3);
        }
        println!(
            "  {:<28} {:>9} {:>8}  example node",
            "kernel", "ms", "launches"
        );
        for k in kernels.iter().take(top) {
            println!(
                "  {:<28} {:>9.2} {:>8}  {}",
                k.kernel,
                k.seconds * 1e3,
                k.launches,
                k.node
            );
        }
        println!();
    }
    Ok(())
}

fn cmd_bench(target: Option<RunTarget>, only: Option<String>, reps: usize) -> Result<(), CliError> {
    use mmada_models::bench::{cases, flops, prepare, time_runs, Figure};
    let target = target_of(target);
    let on_cpu = target == Target::Cpu;
    println!(
        "{:<12} {:<11} {:>7} {:>11} {:>10} {:>12} {:>9}",
        "config", "figure", "tokens", "median", "GFLOP/s", "PyTorch CPU", "speed-up"
    );
    for case in cases() {
        if only.as_deref().is_some_and(|o| !case.preset.contains(o)) {
            continue;
        }
        let backend = BackendOptions {
            host: Some(HostCpu::native()),
            gpu_archs: if on_cpu { vec![] } else { vec![80, 90] },
            ..BackendOptions::default()
        };
        let (mut exe, ins) =
            prepare(&case, target, backend).map_err(|e| CliError::Usage(e.to_string()))?;
        let secs = time_runs(exe.as_mut(), &ins, 2, reps)?;
        let cfg = mmada_models::config::LladaConfig::preset(case.preset)
            .ok_or_else(|| CliError::Usage("unknown preset".into()))?;
        let gflops = flops(&cfg, case.batch, case.seq, case.figure) / secs / 1e9;
        let fig = match case.figure {
            Figure::TrainStep => "train step",
            Figure::Forward => "forward",
        };
        let (reference, ratio) = if on_cpu {
            (
                format!("{:.4} s", case.reference_s),
                format!("{:.2}x", case.reference_s / secs),
            )
        } else {
            ("-".into(), "-".into())
        };
        println!(
            "{:<12} {:<11} {:>7} {:>9.4} s {:>10.1} {:>12} {:>9}",
            case.preset,
            fig,
            case.batch * case.seq,
            secs,
            gflops,
            reference,
            ratio
        );
    }
    if on_cpu {
        println!("(speed-up = official PyTorch figure / ours; above 1 is faster. Reference: BENCHMARKS.md, 2 threads.)");
    }
    Ok(())
}

fn cmd_logits(
    model: &Path,
    input: &Path,
    output: &Path,
    target: Option<RunTarget>,
) -> Result<(), CliError> {
    let ins = tensor_io::read_safetensors(input)?;
    for name in ins.keys() {
        if name != "input_ids" && name != "attention_mask" {
            return Err(CliError::Usage(format!(
                "{}: unexpected tensor '{name}' (expected input_ids and optionally attention_mask)",
                input.display()
            )));
        }
    }
    let ids = ins
        .get("input_ids")
        .ok_or_else(|| CliError::Usage(format!("{}: no tensor 'input_ids'", input.display())))?;
    let t0 = Instant::now();
    let backend = BackendOptions {
        host: Some(HostCpu::native()),
        gpu_archs: vec![80, 90],
        ..BackendOptions::default()
    };
    let logits = mmada_models::logits::logits_from_checkpoint(
        model,
        ids,
        ins.get("attention_mask"),
        target_of(target),
        backend,
    )?;
    let shape = logits.shape().clone();
    let mut out = IndexMap::new();
    out.insert("logits".to_string(), logits);
    tensor_io::write_safetensors(output, &out)?;
    println!(
        "wrote logits {shape} to {} in {:.2}s",
        output.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn cmd_selfcheck(target: Option<RunTarget>, bundle: Option<PathBuf>) -> Result<(), CliError> {
    let graphs = mmada_models::selfcheck::graphs()?;
    if let Some(dir) = bundle {
        std::fs::create_dir_all(&dir).map_err(|e| mmada_codegen::CodegenError::io(&dir, e))?;
        for (name, g, tol) in &graphs {
            let art = compile(
                g,
                &CompileOptions {
                    name: name.to_string(),
                    backend: BackendOptions {
                        host: None,
                        gpu_archs: vec![80, 90],
                        ..BackendOptions::default()
                    },
                    ptx_check: PtxCheck::Auto,
                },
            )?;
            art.write(&dir.join(format!("{name}.mmada")))?;
            let ins = random_inputs(&graph_inputs(g), 7)?;
            tensor_io::write_safetensors(&dir.join(format!("{name}.in.safetensors")), &ins)?;
            let want = interp::interpret(g, &ins)?;
            tensor_io::write_safetensors(&dir.join(format!("{name}.ref.safetensors")), &want)?;
            println!("{name} {tol}");
        }
        return Ok(());
    }
    let target = target_of(target);
    println!(
        "{:<14} {:>8} {:>12} {:>10}  result",
        "graph", "kernels", "max error", "tolerance"
    );
    let mut failed = Vec::new();
    for (name, g, tol) in &graphs {
        let opts = BackendOptions {
            host: Some(HostCpu::native()),
            gpu_archs: vec![80, 90],
            ..BackendOptions::default()
        };
        let art = compile(
            g,
            &CompileOptions {
                name: name.to_string(),
                backend: opts,
                ptx_check: PtxCheck::Auto,
            },
        )?;
        let kernels = art.manifest.kernels.len();
        let ins = random_inputs(&graph_inputs(g), 7)?;
        let want = interp::interpret(g, &ins)?;
        let mut exe = mmada_runtime::open_artifact(art, target)?;
        let got = exe.run(&ins)?;
        let worst = want
            .iter()
            .map(|(n, w)| max_rel_error(&got[n], w, 1.0))
            .fold(0.0, f64::max);
        let ok = worst <= *tol;
        if !ok {
            failed.push(name.to_string());
        }
        println!(
            "{name:<14} {kernels:>8} {worst:>12.2e} {tol:>10.0e}  {} ({})",
            if ok { "ok" } else { "FAILED" },
            exe.target()
        );
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "selfcheck failed: {}",
            failed.join(", ")
        )))
    }
}

pub fn main() -> Result<(), CliError> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Compile {
            spec,
            preset,
            graph,
            batch,
            seq,
            output,
            targets,
            host_cpu,
            dump,
            no_ptxas,
        } => {
            let what = ModelGraph { graph, batch, seq };
            cmd_compile(
                spec.as_deref(),
                preset.as_deref(),
                &what,
                &output,
                &targets,
                &host_cpu,
                dump,
                no_ptxas,
            )
        }
        Cmd::Run {
            artifact,
            input,
            output,
            target,
            reference,
        } => cmd_run(&artifact, &input, &output, target, reference),
        Cmd::Inputs {
            artifact,
            output,
            seed,
        } => cmd_inputs(&artifact, &output, seed),
        Cmd::Inspect { artifact } => cmd_inspect(&artifact),
        Cmd::Demo { target, seed } => cmd_demo(target, seed),
        Cmd::Train {
            data,
            preset,
            model,
            tokenizer,
            steps,
            batch,
            seq,
            lr,
            warmup,
            min_lr_scale,
            seed,
            save_every,
            keep,
            out,
            resume,
            target,
            log,
        } => {
            let opts = mmada_models::trainer::TrainOptions {
                preset,
                model,
                tokenizer,
                data,
                batch,
                seq,
                steps,
                lr,
                warmup,
                min_lr_scale,
                seed,
                save_every,
                keep,
                out: out.clone(),
                ..Default::default()
            };
            let resume = resume.map(|r| r.unwrap_or(out));
            crate::train_cli::run(&opts, resume.as_deref(), target_of(target), log)
        }
        Cmd::Bench {
            write_bundle: Some(dir),
            only,
            ..
        } => bench_bundle(&dir, only),
        Cmd::Bench {
            profile: Some(top),
            only,
            ..
        } => bench_profile(only, top),
        Cmd::Bench {
            target, only, reps, ..
        } => cmd_bench(target, only, reps),
        Cmd::Logits {
            model,
            input,
            output,
            target,
        } => cmd_logits(&model, &input, &output, target),
        Cmd::Selfcheck {
            target,
            write_bundle,
        } => cmd_selfcheck(target, write_bundle),
    }
}
