//! `mmada compile`: a graph spec (TOML), a model `config.json` or a preset into one artifact.

use super::{at_least, backend_options, dump_sink};
use crate::error::CliError;
use mmada_codegen::compile::{compile_entries, CompileOptions, PtxCheck, Report};
use mmada_codegen::template::Choices;
use mmada_models::config::LladaConfig;
use mmada_models::GraphSpec;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `mmada compile`.
#[derive(clap::Args)]
pub struct Args {
    /// A graph spec (TOML), or a model `config.json` (HF field names); omit with --preset.
    spec: Option<PathBuf>,
    /// Compile a model preset instead of a file: tiny, bench-tiny, bench-small, mmada-8b.
    #[arg(long)]
    preset: Option<String>,
    /// For models: the graphs, each an entry of the artifact over shared parameters:
    /// `forward` (logits), `train-step`, `dual-cache-step` (the text sampler's step over one
    /// block of --block positions against every layer's K/V cache), or several
    /// (`forward,train-step`).
    #[arg(long, default_value = "forward", value_delimiter = ',')]
    graph: Vec<String>,
    /// For models: the dtype of the weights, activations and caches: f32, or bf16 for the
    /// inference graphs (forward, dual-cache-step; products accumulate in f32, norms and
    /// softmax statistics are f32).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// For `dual-cache-step`: positions per block.
    #[arg(long, default_value_t = 32)]
    block: usize,
    /// For models: batch size.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// For models: sequence length (at most the model's max_sequence_length).
    #[arg(long, default_value_t = 256)]
    seq: usize,
    /// Output artifact.
    #[arg(short, long)]
    output: PathBuf,
    /// Targets: cpu and/or sm_80, sm_90, sm_90a (comma separated).
    #[arg(long, default_value = "cpu,sm_80,sm_90", value_delimiter = ',')]
    targets: Vec<String>,
    /// Host CPU to tune for: native or generic (generic assumes no AVX).
    #[arg(long, default_value = "native")]
    host_cpu: String,
    /// A kernel template knob, KEY.KNOB=VALUE (e.g. matmul.tile=32); repeatable.
    #[arg(long = "knob", value_name = "KEY.KNOB=VALUE")]
    knobs: Vec<String>,
    /// Write every compiler stage here (also: MMADA_DUMP_DIR).
    #[arg(long)]
    dump: Option<PathBuf>,
    /// Do not assemble the PTX with ptxas even when it is available.
    #[arg(long)]
    no_ptxas: bool,
    /// Print the time of each compiler stage.
    #[arg(short, long)]
    verbose: bool,
    /// Build with the defaults only, ignoring the tuning cache's winners.
    #[arg(long)]
    no_tune_cache: bool,
    /// The tuning cache directory (default: $MMADA_TUNE_CACHE, else
    /// $XDG_CACHE_HOME/mmada/tune, else ~/.cache/mmada/tune).
    #[arg(long)]
    tune_cache: Option<PathBuf>,
}

/// The model graphs `mmada compile --graph` builds.
pub const MODEL_GRAPHS: [&str; 3] = ["forward", "train-step", "dual-cache-step"];

/// A model graph by name (`dual-cache-step` over blocks of `block` positions).
pub fn model_graph(
    cfg: &LladaConfig,
    graph: &str,
    batch: usize,
    seq: usize,
    block: usize,
) -> Result<mmada_ir::Graph, CliError> {
    Ok(match graph {
        "forward" => mmada_models::llada::forward_graph(cfg, batch, seq, false)?,
        "dual-cache-step" => {
            let spec = mmada_models::sampler_step::TextStepSpec {
                batch,
                seq,
                cfg: false,
                remasking: mmada_ir::Remasking::LowConfidence,
                fill_cache: false,
                head_block: Some(block),
                key_mask: false,
            };
            mmada_models::sampler_step::block_step_graph(cfg, spec, block)?
        }
        "train-step" => mmada_models::train_step::train_step_graph(
            cfg,
            batch,
            seq,
            mmada_models::train_step::StepHyper::default(),
        )?,
        other => {
            return Err(CliError::Usage(format!(
                "--graph must be one of {}, got '{other}'",
                MODEL_GRAPHS.join(", ")
            )))
        }
    })
}

/// Compiles the TOML graph spec `text` (read from `path`) into a one-entry artifact; returns it
/// with the stage timings.
pub fn compile_spec_text(
    text: &str,
    path: &str,
    opts: CompileOptions,
) -> Result<(mmada_codegen::artifact::Artifact, Report), CliError> {
    let spec = GraphSpec::parse(text, path)?;
    let g = spec.build(path)?;
    let opts = CompileOptions {
        name: spec.name.clone(),
        ..opts
    };
    Ok(compile_entries(&[("main", &g)], &opts)?)
}

fn print_report(r: &Report) {
    let total: f64 = r.stages.iter().map(|(_, t)| t.as_secs_f64()).sum();
    println!("  {:<8} {:>10} {:>7}", "stage", "seconds", "share");
    for (stage, t) in &r.stages {
        let s = t.as_secs_f64();
        println!(
            "  {stage:<8} {s:>10.3} {:>6.1}%",
            100.0 * s / total.max(1e-12)
        );
    }
    for (entry, m) in &r.memory {
        println!(
            "  memory of {entry}: intermediates {:.2} → {:.2} MiB after sharing",
            m.bytes_before as f64 / (1 << 20) as f64,
            m.bytes_after as f64 / (1 << 20) as f64
        );
    }
}

/// The tuning cache's winners for this build: the host-only knobs of the host CPU's winners,
/// all knobs when the build makes no PTX; and, when it makes PTX and a CUDA device is present,
/// the GPU knobs of that device's winners (for the architecture the device runs). Ignored
/// lines are reported once on stderr.
pub fn tuned_from_cache(
    dir: &Option<PathBuf>,
    backend: &mmada_codegen::backend::BackendOptions,
) -> Result<indexmap::IndexMap<String, mmada_codegen::template::Config>, CliError> {
    use mmada_codegen::template::TargetLimits;
    let default_dir = mmada_codegen::tune::cache::TuneCache::default_dir();
    let path = dir.clone().unwrap_or(default_dir);
    if dir.is_none() && !path.join(mmada_codegen::tune::cache::FILE_NAME).exists() {
        return Ok(Default::default());
    }
    let cache = super::tune::open_cache(&Some(path))?;
    let compiler = super::tune::compiler_version();
    let mut warned = false;
    let mut load = |scope: &mmada_codegen::tune::cache::Scope| -> Result<_, CliError> {
        let loaded = cache.load(scope)?;
        if let Some(w) = loaded.warning(&cache.file()).filter(|_| !warned) {
            eprintln!("warning: {w}");
            warned = true;
        }
        Ok(loaded)
    };
    let mut out = indexmap::IndexMap::new();
    if !backend.gpu_archs.is_empty() && mmada_runtime::cuda_available() {
        if let Ok((name, cc)) = mmada_runtime::cuda::device_info(0) {
            let driver = mmada_runtime::cuda::driver_version().unwrap_or(0);
            let scope = mmada_codegen::tune::gpu_scope(&name, cc, driver, &compiler);
            if let Some(arch) = backend
                .gpu_archs
                .iter()
                .copied()
                .filter(|a| a.runs_on(cc))
                .max()
            {
                let limits = TargetLimits::new(None, &[arch]);
                out = mmada_codegen::tune::gpu_winners(&load(&scope)?, &limits);
            }
        }
    }
    if let Some(cpu) = &backend.host {
        let scope = mmada_codegen::tune::host_scope(cpu, &compiler);
        let limits = TargetLimits::new(Some(cpu), &backend.gpu_archs);
        let host = mmada_codegen::tune::host_winners(
            &load(&scope)?,
            &limits,
            !backend.gpu_archs.is_empty(),
        );
        for (k, c) in host {
            out.entry(k).or_insert_with(Default::default).0.extend(c.0);
        }
    }
    Ok(out)
}

/// Runs `mmada compile`.
pub fn run(a: Args) -> Result<(), CliError> {
    // Everything a user can get wrong is checked before any work.
    let backend = backend_options(&a.targets, &a.host_cpu)?;
    let mut choices =
        Choices::parse(&a.knobs).map_err(|e| CliError::Usage(format!("--knob {e}")))?;
    if !a.no_tune_cache {
        // A cache that cannot be read never stops a build: it builds untuned.
        choices.tuned = tuned_from_cache(&a.tune_cache, &backend).unwrap_or_else(|e| {
            eprintln!("warning: tuning cache not used: {e}");
            Default::default()
        });
    }
    let model = match (&a.spec, &a.preset) {
        (_, Some(p)) => Some((
            LladaConfig::preset(p).ok_or_else(|| {
                CliError::Usage(format!(
                    "--preset: unknown preset '{p}' (choose from {})",
                    LladaConfig::PRESETS.join(", ")
                ))
            })?,
            p.clone(),
        )),
        (Some(s), None) if s.extension().is_some_and(|e| e == "json") => {
            Some((LladaConfig::read(s)?, s.display().to_string()))
        }
        (Some(_), None) => None,
        (None, None) => {
            return Err(CliError::Usage(
                "give a spec file (TOML graph or model config.json) or --preset".into(),
            ))
        }
    };
    let dtype = match a.dtype.as_str() {
        "f32" => mmada_ir::DType::F32,
        "bf16" => mmada_ir::DType::BF16,
        other => {
            return Err(CliError::Usage(format!(
                "--dtype must be f32 or bf16, got '{other}'"
            )))
        }
    };
    let model = model.map(|(cfg, name)| (cfg.computing_in(dtype), name));
    if model.is_none() && dtype != mmada_ir::DType::F32 {
        return Err(CliError::Usage(
            "--dtype applies to models (--preset or a config.json); a graph spec names its \
             own dtypes"
                .into(),
        ));
    }
    if let Some((cfg, _)) = &model {
        at_least("--batch", a.batch, 1)?;
        at_least("--seq", a.seq, 1)?;
        cfg.check_shape(a.batch, a.seq).map_err(CliError::Usage)?;
        if a.graph.iter().any(|g| g == "dual-cache-step") {
            at_least("--block", a.block, 1)?;
            if a.block > a.seq {
                return Err(CliError::Usage(format!(
                    "--block {} is longer than --seq {}",
                    a.block, a.seq
                )));
            }
        }
        for (i, g) in a.graph.iter().enumerate() {
            if !MODEL_GRAPHS.contains(&g.as_str()) {
                return Err(CliError::Usage(format!(
                    "--graph must be among {}, got '{g}'",
                    MODEL_GRAPHS.join(", ")
                )));
            }
            if g == "train-step" && dtype != mmada_ir::DType::F32 {
                return Err(CliError::Usage(
                    "--dtype bf16 builds the inference graphs; bf16 training (bf16 compute \
                     over f32 master weights) is not built yet: compile train-step in f32"
                        .into(),
                ));
            }
            if a.graph[..i].contains(g) {
                return Err(CliError::Usage(format!("--graph names '{g}' twice")));
            }
        }
    }
    let opts = CompileOptions {
        name: String::new(),
        backend,
        ptx_check: if a.no_ptxas {
            PtxCheck::Skip
        } else {
            PtxCheck::Auto
        },
        choices,
        dump: dump_sink(a.dump.clone()),
        lower_cache: None,
    };
    let t0 = Instant::now();
    let (art, report) = match (model, &a.spec) {
        (Some((cfg, name)), _) => {
            let graphs: Vec<(String, mmada_ir::Graph)> = a
                .graph
                .iter()
                .map(|g| Ok((g.clone(), model_graph(&cfg, g, a.batch, a.seq, a.block)?)))
                .collect::<Result<_, CliError>>()?;
            let entries: Vec<(&str, &mmada_ir::Graph)> =
                graphs.iter().map(|(n, g)| (n.as_str(), g)).collect();
            let opts = CompileOptions {
                name: format!(
                    "{name} {} b{} l{}{}",
                    a.graph.join(","),
                    a.batch,
                    a.seq,
                    if dtype == mmada_ir::DType::F32 {
                        ""
                    } else {
                        " bf16"
                    }
                ),
                ..opts
            };
            compile_entries(&entries, &opts)?
        }
        (None, Some(spec)) => {
            let path = spec.display().to_string();
            let text =
                std::fs::read_to_string(spec).map_err(|e| mmada_models::ModelsError::Io {
                    path: path.clone(),
                    source: e,
                })?;
            compile_spec_text(&text, &path, opts)?
        }
        (None, None) => return Err(CliError::Usage("nothing to compile".into())),
    };
    write_and_summarise(&art, &a.output, t0)?;
    let tuned = art
        .manifest
        .kernels
        .iter()
        .filter(|k| k.template.as_ref().is_some_and(|t| t.tuned))
        .count();
    if tuned > 0 {
        println!(
            "  {} tuned choices from the tuning cache applied to {tuned} kernels (--no-tune-cache \
             builds the defaults)",
            art.manifest.choices.tuned.len()
        );
    }
    if a.verbose {
        print_report(&report);
    }
    Ok(())
}

fn write_and_summarise(
    art: &mmada_codegen::artifact::Artifact,
    output: &Path,
    t0: Instant,
) -> Result<(), CliError> {
    art.write(output)?;
    let m = &art.manifest;
    let checked = m.kernels.iter().any(|k| !k.ptxas.is_empty());
    println!(
        "compiled {} -> {} in {:.2}s: entries {}, {} kernels, host code: {}, PTX: {}{}",
        m.name,
        output.display(),
        t0.elapsed().as_secs_f64(),
        m.entries
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        m.kernels.len(),
        if m.host_cpu.is_some() { "yes" } else { "no" },
        super::archs_text(&m.gpu_archs),
        if checked { " (checked with ptxas)" } else { "" },
    );
    Ok(())
}
