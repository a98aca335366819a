//! `mmada bench`: the BENCHMARKS.md configurations timed (table or JSON lines), profiled per
//! kernel, or written as a bundle for `scripts/gpu-check.sh`.

use super::{at_least, default_gpu_archs, target_of, RunTarget};
use crate::error::CliError;
use mmada_codegen::artifact::Artifact;
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::compile::{compile, CompileOptions, PtxCheck};
use mmada_codegen::HostCpu;
use mmada_models::bench::{
    case_flops, case_graph, cases, prepare_with, profile, sampling_prompt, time_runs,
    time_sampling, Case, Figure, SamplingModel,
};
use mmada_models::text_sampler::KvCache;
use mmada_runtime::{tensor_io, Target};
use std::path::{Path, PathBuf};

/// Arguments of `mmada bench`.
#[derive(clap::Args)]
pub struct Args {
    /// cpu or cuda (default: cuda when a device is present, else cpu).
    #[arg(long)]
    target: Option<RunTarget>,
    /// Only cases whose config contains this text (e.g. bench-tiny; magvit for the image
    /// tokenizer, which is left out by default).
    #[arg(long)]
    only: Option<String>,
    /// Timed repetitions (median reported).
    #[arg(long, default_value_t = 7)]
    reps: usize,
    /// Print one JSON object per line (config, figure, median_s, tokens_per_s, gflops, …)
    /// instead of the table.
    #[arg(long)]
    json: bool,
    /// Instead of timing, write GPU-check cases here: PTX artifacts, data inputs, and the
    /// outputs the CPU computes with deterministic weights (`mmada-run --init-params 7`).
    #[arg(long)]
    write_bundle: Option<PathBuf>,
    /// Instead of timing, run each case once on the CPU with per-launch timing and print
    /// the slowest N kernels (with the graph node each computes).
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "25")]
    profile: Option<usize>,
    /// Instead of the step and forward, time text sampling (BENCHMARKS.md: prompt 64, gen
    /// 128, block 32, 128 steps, τ 0) on bench-tiny and bench-small, without a cache
    /// (figure `sampling-nocache`), with the prefix KV cache (`sampling-prefix`) and with the
    /// dual KV cache (`sampling-dual`), both with threshold 0.9, with agreement to the
    /// no-cache greedy output; the official `mmu_generate` gives 80 and 14 tokens/s on the
    /// build machine.
    #[arg(long)]
    sampling: bool,
    /// With --sampling: time this checkpoint (a trained model, so that the threshold fires and
    /// agreement means something) instead of the presets' random weights.
    #[arg(long, requires = "sampling")]
    checkpoint: Option<PathBuf>,
    /// With --sampling: the prompt, as whitespace-separated ids in a file (default: the fixed
    /// pseudo-random 64-token prompt).
    #[arg(long, requires = "sampling")]
    prompt_ids: Option<PathBuf>,
    /// With --sampling: write the prompt and each figure's generated ids here
    /// (`prompt.txt`, `sampling-nocache.txt`, `sampling-prefix.txt`, `sampling-dual.txt`), to
    /// compare with `scripts/official_sampling.py`.
    #[arg(long, requires = "sampling")]
    dump_ids: Option<PathBuf>,
    /// Compile the step and forward with the tuning cache's winners (`mmada tune`); without
    /// it the benchmarks build with the heuristic defaults.
    #[arg(long)]
    tuned: bool,
    /// With --tuned: the tuning cache directory (default: $MMADA_TUNE_CACHE, else
    /// $XDG_CACHE_HOME/mmada/tune, else ~/.cache/mmada/tune).
    #[arg(long, requires = "tuned")]
    tune_cache: Option<PathBuf>,
}

/// The stable name of a figure in JSON output.
fn figure_key(f: Figure) -> &'static str {
    match f {
        Figure::TrainStep => "train-step",
        Figure::Forward => "forward",
        Figure::Encode => "encode",
        Figure::Decode => "decode",
    }
}

/// The cases `--only` names (a substring of the config); without it, the transformer cases
/// (the full-size image tokenizer takes minutes: `--only magvit`).
fn selected(only: &Option<String>) -> impl Iterator<Item = Case> + '_ {
    cases().into_iter().filter(move |c| match only.as_deref() {
        Some(o) => c.preset.contains(o),
        None => !c.is_magvit(),
    })
}

/// Runs `mmada bench`.
pub fn run(a: Args) -> Result<(), CliError> {
    if let Some(dir) = &a.write_bundle {
        return bundle(dir, &a.only);
    }
    if let Some(top) = a.profile {
        at_least("--profile", top, 1)?;
        return profile_cases(&a.only, top);
    }
    at_least("--reps", a.reps, 1)?;
    let target = target_of(a.target);
    let on_cpu = target == Target::Cpu;
    if a.sampling {
        return sampling(&a, target);
    }
    if !a.json {
        println!(
            "{:<12} {:<11} {:>7} {:>11} {:>10} {:>12} {:>9}",
            "config", "figure", "tokens", "median", "GFLOP/s", "PyTorch CPU", "speed-up"
        );
    }
    for case in selected(&a.only) {
        let backend = BackendOptions {
            host: Some(HostCpu::native()),
            gpu_archs: if on_cpu { vec![] } else { default_gpu_archs() },
        };
        let mut choices = mmada_codegen::template::Choices::default();
        if a.tuned {
            choices.tuned = super::compile::tuned_from_cache(&a.tune_cache, &backend)?;
        }
        let (mut exe, ins) = prepare_with(&case, target, backend, choices)
            .map_err(|e| CliError::Usage(e.to_string()))?;
        let secs = time_runs(exe.as_mut(), &ins, 2, a.reps)?;
        let tokens = case.batch * case.seq;
        let gflops = case_flops(&case).map_err(|e| CliError::Usage(e.to_string()))? / secs / 1e9;
        if a.json {
            let mut line = serde_json::json!({
                "config": case.preset,
                "figure": figure_key(case.figure),
                "target": exe.target(),
                "batch": case.batch,
                "seq": case.seq,
                "reps": a.reps,
                "median_s": secs,
                "tokens_per_s": tokens as f64 / secs,
                "gflops": gflops,
            });
            if on_cpu {
                line["pytorch_cpu_s"] = case.reference_s.into();
                line["speedup"] = (case.reference_s / secs).into();
            }
            println!("{line}");
            continue;
        }
        let fig = match case.figure {
            Figure::TrainStep => "train step",
            Figure::Forward => "forward",
            Figure::Encode => "encode",
            Figure::Decode => "decode",
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
            case.preset, fig, tokens, secs, gflops, reference, ratio
        );
    }
    if on_cpu && !a.json {
        println!("(speed-up = official PyTorch figure / ours; above 1 is faster. Reference: BENCHMARKS.md, 2 threads.)");
    }
    Ok(())
}

/// Official `mmu_generate` tokens/s of BENCHMARKS.md (build machine, 2 threads).
const OFFICIAL_SAMPLING: [(&str, f64); 2] = [("bench-tiny", 80.0), ("bench-small", 14.0)];

/// Reads whitespace-separated token ids from `path`.
fn read_ids(path: &Path) -> Result<Vec<i64>, CliError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| mmada_codegen::CodegenError::io(path, e))?;
    text.split_whitespace()
        .enumerate()
        .map(|(i, t)| {
            t.parse::<i64>().map_err(|_| {
                CliError::Usage(format!(
                    "{}: token {i} ('{t}') is not an integer id",
                    path.display()
                ))
            })
        })
        .collect()
}

/// Writes `ids` to `dir/name` separated by spaces.
fn write_ids(dir: &Path, name: &str, ids: &[i64]) -> Result<(), CliError> {
    std::fs::create_dir_all(dir).map_err(|e| mmada_codegen::CodegenError::io(dir, e))?;
    let text: Vec<String> = ids.iter().map(i64::to_string).collect();
    let path = dir.join(name);
    std::fs::write(&path, text.join(" ") + "\n")
        .map_err(|e| mmada_codegen::CodegenError::io(&path, e))?;
    Ok(())
}

/// The models `mmada bench --sampling` times, each with BENCHMARKS.md's official figure when
/// it has one.
fn sampling_models(a: &Args) -> Result<Vec<(SamplingModel, Option<f64>)>, CliError> {
    let usage = |e: Box<dyn std::error::Error>| CliError::Usage(e.to_string());
    let mut models = match &a.checkpoint {
        Some(dir) => {
            let (cfg, weights) = mmada_models::checkpoint::load_model(dir)?;
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| dir.display().to_string());
            let prompt = sampling_prompt(cfg.vocab_size);
            vec![(
                SamplingModel {
                    name,
                    cfg,
                    weights,
                    prompt,
                },
                None,
            )]
        }
        None => OFFICIAL_SAMPLING
            .iter()
            .filter(|(p, _)| a.only.as_deref().is_none_or(|o| p.contains(o)))
            .map(|(p, off)| Ok((SamplingModel::random(p).map_err(usage)?, Some(*off))))
            .collect::<Result<_, CliError>>()?,
    };
    if let Some(path) = &a.prompt_ids {
        let prompt = read_ids(path)?;
        for (m, _) in &mut models {
            m.prompt = prompt.clone();
        }
    }
    Ok(models)
}

/// `mmada bench --sampling`.
fn sampling(a: &Args, target: Target) -> Result<(), CliError> {
    let backend = BackendOptions {
        host: Some(HostCpu::native()),
        gpu_archs: if target == Target::Cpu {
            vec![]
        } else {
            default_gpu_archs()
        },
    };
    if !a.json {
        println!(
            "{:<12} {:<17} {:>10} {:>10} {:>6} {:>10} {:>10} {:>9}",
            "config", "figure", "median", "tokens/s", "steps", "agreement", "official", "speed-up"
        );
    }
    let figures = [
        (KvCache::None, None, "sampling-nocache"),
        (KvCache::Prefix, Some(0.9), "sampling-prefix"),
        (KvCache::Dual, Some(0.9), "sampling-dual"),
    ];
    for (model, official) in sampling_models(a)? {
        if let Some(dir) = &a.dump_ids {
            write_ids(dir, "prompt.txt", &model.prompt)?;
        }
        for (cache, threshold, figure) in figures {
            let r = time_sampling(&model, a.reps, cache, threshold, target, backend.clone())
                .map_err(|e| CliError::Usage(e.to_string()))?;
            if let Some(dir) = &a.dump_ids {
                write_ids(dir, &format!("{figure}.txt"), &r.ids)?;
            }
            if a.json {
                let line = serde_json::json!({
                    "config": model.name,
                    "figure": figure,
                    "target": if target == Target::Cpu { "cpu" } else { "cuda" },
                    "reps": a.reps,
                    "median_s": r.median_s,
                    "tokens_per_s": r.tokens_per_s,
                    "steps": r.steps,
                    "agreement": r.agreement,
                    "official_tokens_per_s": official,
                });
                println!("{line}");
            } else {
                let (off, up) = match official {
                    Some(o) => (format!("{o:.1}"), format!("{:.2}x", r.tokens_per_s / o)),
                    None => ("-".into(), "-".into()),
                };
                println!(
                    "{:<12} {:<17} {:>8.3} s {:>10.1} {:>6} {:>10.3} {:>10} {:>9}",
                    model.name, figure, r.median_s, r.tokens_per_s, r.steps, r.agreement, off, up
                );
            }
        }
    }
    if !a.json {
        println!("(official = BENCHMARKS.md's mmu_generate figure on the build machine; measure side by side for a ratio: scripts/sampling-side-by-side.sh.)");
    }
    Ok(())
}

/// Writes the BENCHMARKS.md cases for `scripts/gpu-check.sh`.
fn bundle(dir: &Path, only: &Option<String>) -> Result<(), CliError> {
    std::fs::create_dir_all(dir).map_err(|e| mmada_codegen::CodegenError::io(dir, e))?;
    for case in selected(only) {
        let (g, ins) = case_graph(&case).map_err(|e| CliError::Usage(e.to_string()))?;
        if case.is_magvit() {
            // The full-size image tokenizer's CPU reference would take minutes to make here.
            continue;
        }
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
                        gpu_archs: if host { vec![] } else { default_gpu_archs() },
                    },
                    ptx_check: PtxCheck::Skip,
                    ..CompileOptions::default()
                },
            )?)
        };
        let gpu = build(false)?;
        gpu.write(&dir.join(format!("{name}.mmada")))?;
        tensor_io::write_safetensors(&dir.join(format!("{name}.in.safetensors")), &ins)?;
        // Expected outputs: the CPU with the same deterministic weights.
        let host = build(true)?;
        let exe_plan = mmada_runtime::Executable::new(host.clone())?;
        let inits: Vec<(String, mmada_ir::Tensor)> = exe_plan
            .default_entry()
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
        let f = case_flops(&case).map_err(|e| CliError::Usage(e.to_string()))?;
        // name tolerance flops bytes floor init-seed
        println!("{name} 1e-3 {f:.0} 0 1 7");
    }
    Ok(())
}

fn profile_cases(only: &Option<String>, top: usize) -> Result<(), CliError> {
    for case in selected(only) {
        let backend = BackendOptions {
            host: Some(HostCpu::native()),
            gpu_archs: vec![],
        };
        let (total, kernels) =
            profile(&case, backend).map_err(|e| CliError::Usage(e.to_string()))?;
        let fig = match case.figure {
            Figure::TrainStep => "train step",
            f => figure_key(f),
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
