//! `mmada tune`: searches the kernel templates' knobs for a benchmark case (or a graph spec) on
//! this machine, keeps every timing in the tuning cache, and prints kernels × candidates with
//! the winners; `mmada compile` then builds with the winners (`--no-tune-cache` ignores them).

use crate::error::CliError;
use indexmap::IndexMap;
use indicatif::{ProgressBar, ProgressStyle};
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::compile::{compile_entries, llvm_version, CompileOptions, LowerCache, PtxCheck};
use mmada_codegen::template::{Choices, TargetLimits};
use mmada_codegen::tune::cache::{Scope, TuneCache};
use mmada_codegen::tune::{gpu_scope, host_scope};
use mmada_codegen::HostCpu;
use mmada_models::bench::{case_workload, cases, Figure};
use mmada_runtime::tune::{tune, TuneOptions, TuneReport, TuneTarget, Workload};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `mmada tune`.
#[derive(clap::Args)]
pub struct Args {
    /// A graph spec (TOML) to tune; omit with --preset.
    spec: Option<PathBuf>,
    /// A benchmark preset (BENCHMARKS.md): bench-tiny, bench-small.
    #[arg(long)]
    preset: Option<String>,
    /// With --preset: the graph, `train-step` or `forward` (the benchmark's batch and length).
    #[arg(long, default_value = "train-step")]
    graph: String,
    /// Where the kernels run: cpu (host knobs, monotonic clock) or cuda (device 0: GPU knobs,
    /// device events).
    #[arg(long, default_value = "cpu")]
    target: String,
    /// Search budget, e.g. 60s, 5m (the round under way finishes, then the recheck runs).
    #[arg(long, default_value = "60s")]
    budget: String,
    /// Tune only this template (elementwise, reduction, softmax, matmul, …).
    #[arg(long)]
    only: Option<String>,
    /// The tuning cache directory (default: $MMADA_TUNE_CACHE, else
    /// $XDG_CACHE_HOME/mmada/tune, else ~/.cache/mmada/tune).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Write a PNG of the speed-up per kernel here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Timed runs per candidate (median; at least 5).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Configurations the beam search keeps per template.
    #[arg(long, default_value_t = 3)]
    beam: usize,
    /// Tune every kernel again, even those the cache has a winner for (another graph's kernel
    /// in the same shape bucket, or a machine whose speed changed); the new winners replace the
    /// old.
    #[arg(long)]
    retune: bool,
    /// Rewrite the cache without corrupt or outdated lines, then stop.
    #[arg(long)]
    compact: bool,
}

/// `60s`, `5m`, `90` (seconds).
fn parse_budget(s: &str) -> Result<Duration, CliError> {
    let t = s.trim();
    let (num, unit) = match t.strip_suffix('s') {
        Some(n) => (n, 1.0),
        None => match t.strip_suffix('m') {
            Some(n) => (n, 60.0),
            None => (t, 1.0),
        },
    };
    let v: f64 = num.trim().parse().map_err(|_| {
        CliError::Usage(format!("--budget: '{s}' is not a duration like 60s or 5m"))
    })?;
    if !(v.is_finite() && v > 0.0) {
        return Err(CliError::Usage(format!(
            "--budget must be positive, got '{s}'"
        )));
    }
    Ok(Duration::from_secs_f64(v * unit))
}

/// The compiler version recorded with every timing.
pub fn compiler_version() -> String {
    format!(
        "mmada {} llvm {}",
        env!("CARGO_PKG_VERSION"),
        llvm_version()
    )
}

/// Opens the cache at `dir` (or the default directory).
pub fn open_cache(dir: &Option<PathBuf>) -> Result<TuneCache, CliError> {
    let dir = dir.clone().unwrap_or_else(TuneCache::default_dir);
    Ok(TuneCache::open(&dir)?)
}

/// A graph spec's workload: parameters and state from the deterministic initialiser, data
/// inputs of Philox normals (integers and booleans zero).
fn spec_workload(path: &Path) -> Result<(mmada_ir::Graph, Workload), CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| mmada_models::ModelsError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    let spec = mmada_models::GraphSpec::parse(&text, &path.display().to_string())?;
    let g = spec.build(&path.display().to_string())?;
    let mut resident = Vec::new();
    let mut inputs = IndexMap::new();
    for (i, id) in g.inputs().iter().enumerate() {
        let n = g.node(*id);
        let mmada_ir::Op::Input { name, role } = &n.op else {
            continue;
        };
        match mmada_runtime::init::init_tensor(&n.shape, *role, 7, i as u32, 0.02) {
            Some(t) => resident.push((name.clone(), t)),
            None => {
                let count = n.shape.numel();
                let t = if n.dtype.is_float() {
                    let v: Vec<f64> = (0..count as u64)
                        .map(|j| {
                            mmada_ir::philox::sample(mmada_ir::RngDist::Normal, 7, 0, i as u32, j)
                                as f64
                        })
                        .collect();
                    mmada_ir::Tensor::from_f64(n.dtype, n.shape.clone(), &v)?
                } else {
                    mmada_ir::Tensor::zeros(n.dtype, n.shape.clone())
                };
                inputs.insert(name.clone(), t);
            }
        }
    }
    Ok((
        g,
        Workload {
            entry: "main".into(),
            resident,
            inputs,
        },
    ))
}

/// What a target's tuning builds (host code for this CPU, or PTX for device 0's architecture),
/// the limits its candidates must respect, and its cache scope.
fn target_setup(target: TuneTarget) -> Result<(BackendOptions, TargetLimits, Scope), CliError> {
    match target {
        TuneTarget::Cpu => {
            let cpu = HostCpu::native();
            let scope = host_scope(&cpu, &compiler_version());
            Ok((
                BackendOptions {
                    host: Some(cpu.clone()),
                    gpu_archs: Vec::new(),
                },
                TargetLimits::new(Some(&cpu), &[]),
                scope,
            ))
        }
        TuneTarget::Cuda => {
            let (name, cc) = mmada_runtime::cuda::device_info(0)?;
            let arch = super::default_gpu_archs()
                .into_iter()
                .filter(|a| a.runs_on(cc))
                .max()
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "--target cuda: {name} (sm_{cc}) runs none of the architectures built \
                         (sm_80, sm_90)"
                    ))
                })?;
            let driver = mmada_runtime::cuda::driver_version().unwrap_or(0);
            Ok((
                BackendOptions {
                    host: None,
                    gpu_archs: vec![arch],
                },
                TargetLimits::new(None, &[arch]),
                gpu_scope(&name, cc, driver, &compiler_version()),
            ))
        }
    }
}

/// Runs `mmada tune`.
pub fn run(a: Args) -> Result<(), CliError> {
    let cache = open_cache(&a.cache)?;
    if a.compact {
        let (kept, dropped) = cache.compact()?;
        println!(
            "compacted {}: kept {kept} lines, dropped {dropped}",
            cache.file().display()
        );
        return Ok(());
    }
    let target = match a.target.as_str() {
        "cpu" => TuneTarget::Cpu,
        "cuda" => TuneTarget::Cuda,
        t => {
            return Err(CliError::Usage(format!(
                "--target must be cpu or cuda, got '{t}'"
            )))
        }
    };
    let budget = parse_budget(&a.budget)?;
    let (backend, limits, scope) = target_setup(target)?;
    let (graph, workload, name) = match (&a.preset, &a.spec) {
        (Some(p), None) => {
            let figure = match a.graph.as_str() {
                "train-step" => Figure::TrainStep,
                "forward" => Figure::Forward,
                g => {
                    return Err(CliError::Usage(format!(
                        "--graph must be train-step or forward, got '{g}'"
                    )))
                }
            };
            let case = cases()
                .into_iter()
                .find(|c| c.preset == p && c.figure == figure)
                .ok_or_else(|| {
                    let mut names: Vec<&str> = cases()
                        .iter()
                        .filter(|c| !c.is_magvit())
                        .map(|c| c.preset)
                        .collect();
                    names.dedup();
                    CliError::Usage(format!(
                        "--preset: no benchmark case '{p}' (choose from {})",
                        names.join(", ")
                    ))
                })?;
            let (g, w) = case_workload(&case).map_err(|e| CliError::Usage(e.to_string()))?;
            (g, w, format!("{p} {}", a.graph))
        }
        (None, Some(spec)) => {
            let (g, w) = spec_workload(spec)?;
            (g, w, spec.display().to_string())
        }
        (Some(_), Some(_)) => {
            return Err(CliError::Usage(
                "give a graph spec or --preset, not both".into(),
            ))
        }
        (None, None) => {
            return Err(CliError::Usage(
                "give a graph spec (TOML) or --preset (e.g. --preset bench-tiny --graph \
                 train-step)"
                    .into(),
            ))
        }
    };
    let lower_cache = LowerCache::default();
    let compile = |choices: &Choices| {
        let opts = CompileOptions {
            name: name.clone(),
            backend: backend.clone(),
            ptx_check: PtxCheck::Skip,
            choices: choices.clone(),
            lower_cache: Some(lower_cache.clone()),
            ..CompileOptions::default()
        };
        compile_entries(&[("main", &graph)], &opts)
            .map(|(art, _)| art)
            .map_err(|e| e.to_string())
    };
    let opts = TuneOptions {
        target,
        budget,
        only: a.only.clone(),
        reps: a.reps.max(5),
        beam_width: a.beam.max(1),
        retune: a.retune,
        ..TuneOptions::default()
    };
    // The bar fills with the budget; the recheck comes after it.
    let bar = ProgressBar::new(budget.as_secs().max(1));
    bar.set_style(
        ProgressStyle::with_template("[{elapsed_precise}] {bar:30} {pos}/{len} s  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let start = std::time::Instant::now();
    let mut progress = |phase: &str, msg: &str| {
        if phase == "warn" {
            bar.println(format!("warning: {msg}"));
        } else {
            bar.set_position(start.elapsed().as_secs().min(budget.as_secs().max(1)));
            bar.set_message(format!("{phase}: {msg}"));
        }
    };
    let report = tune(
        &compile,
        &workload,
        &cache,
        &scope,
        &limits,
        &opts,
        &mut progress,
    )?;
    bar.finish_and_clear();
    if let Some(w) = &report.cache_warning {
        eprintln!("warning: {w}");
    }
    print_report(&report, &name, &cache, &scope.target);
    if let Some(path) = &a.plot {
        let bars: Vec<(String, f64)> = report
            .keys
            .iter()
            .map(|k| (k.key.clone(), k.speedup()))
            .collect();
        mmada_models::plot::speedup_bars_png(
            &format!("mmada tune {name}: speed-up per kernel ({})", scope.target),
            &bars,
            path,
        )
        .map_err(CliError::Usage)?;
        println!("speed-up chart: {}", path.display());
    }
    Ok(())
}

fn print_report(r: &TuneReport, name: &str, cache: &TuneCache, target: &str) {
    println!(
        "tuned {name} on {target}: {} kernels (tune keys), {} timings, {} compiles, {} candidates \
         rejected by the correctness gate",
        r.keys.len(),
        r.timings,
        r.compiles,
        r.wrong
    );
    println!(
        "  {:>3} {:<58} {:>4} {:>6} {:>10} {:>10} {:>7}  winner",
        "#", "kernel", "runs", "tried", "default ms", "winner ms", "speedup"
    );
    for (i, k) in r.keys.iter().enumerate() {
        let key = if k.key.len() > 58 {
            format!("{}…", &k.key[..57])
        } else {
            k.key.clone()
        };
        println!(
            "  {:>3} {key:<58} {:>4} {:>6} {:>10.4} {:>10.4} {:>6.2}×  {}{}",
            i,
            k.launches,
            if k.cached {
                "cache".to_string()
            } else {
                k.timed.to_string()
            },
            k.default_s * 1e3,
            k.winner_s * 1e3,
            k.speedup(),
            if k.is_default {
                "default".to_string()
            } else {
                k.winner.describe()
            },
            if k.wrong > 0 {
                format!(" ({} wrong)", k.wrong)
            } else {
                String::new()
            }
        );
    }
    let faster = r.keys.iter().filter(|k| !k.is_default).count();
    println!(
        "  {faster} of {} kernels have a faster winner than the default",
        r.keys.len()
    );
    if let Some((d, t)) = r.entry_s {
        println!(
            "  whole entry, interleaved ({} rounds): default {:.2} ms, tuned {:.2} ms ({:.3}×)",
            r.rounds.len(),
            d * 1e3,
            t * 1e3,
            d / t
        );
    }
    println!("  cache: {}", cache.file().display());
}
