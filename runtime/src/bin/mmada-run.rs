//! `mmada-run`: runs a compiled artifact with nothing but the runtime (no MLIR, no LLVM), and
//! optionally checks the outputs against expected values and times the runs.
//!
//! ```text
//! mmada-run ARTIFACT --input in.safetensors [--entry NAME] [--output out.safetensors]
//!           [--target cpu|cuda] [--expect ref.safetensors --tol 1e-5] [--repeat N]
//! ```

use clap::Parser;
use mmada_codegen::artifact::Artifact;
use mmada_ir::max_rel_error;
use mmada_runtime::{tensor_io, CpuExecutor, CudaExecutor, Executable, Executor};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "mmada-run", about = "Run an mmada artifact (runtime only)")]
struct Args {
    /// The artifact.
    artifact: PathBuf,
    /// Inputs (safetensors).
    #[arg(long)]
    input: PathBuf,
    /// The entry to run (default: the first).
    #[arg(long)]
    entry: Option<String>,
    /// Where to write the outputs.
    #[arg(long)]
    output: Option<PathBuf>,
    /// cpu or cuda (default: cuda when present).
    #[arg(long)]
    target: Option<String>,
    /// Expected outputs to compare with.
    #[arg(long)]
    expect: Option<PathBuf>,
    /// Largest accepted relative error against --expect.
    #[arg(long, default_value_t = 1e-5)]
    tol: f64,
    /// Denominator floor of the relative error (values below it are compared absolutely).
    #[arg(long, default_value_t = 1e-30)]
    floor: f64,
    /// Timed repetitions (median reported) after one warm-up.
    #[arg(long, default_value_t = 0)]
    repeat: usize,
    /// Initialise parameter and state inputs missing from --input deterministically from this
    /// seed (see mmada_runtime::init).
    #[arg(long)]
    init_params: Option<i64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn run() -> Result<bool, String> {
    let a = Args::parse();
    let art = Artifact::read(&a.artifact).map_err(|e| e.to_string())?;
    let name = art.manifest.name.clone();
    let exe = Executable::new(art).map_err(|e| e.to_string())?;
    let entry = match &a.entry {
        Some(e) => exe.entry(e).map_err(|e| e.to_string())?.clone(),
        None => exe.default_entry().clone(),
    };
    let mut inputs = tensor_io::read_safetensors(&a.input).map_err(|e| e.to_string())?;
    // Parameters and state are set once (resident); data inputs are fed every run.
    let mut resident = indexmap::IndexMap::new();
    for (i, b) in entry.inputs.iter().enumerate() {
        if b.role == mmada_ir::Role::Data {
            continue;
        }
        if let Some(t) = inputs.shift_remove(&b.name) {
            resident.insert(b.name.clone(), t);
        } else if let Some(seed) = a.init_params {
            if let Some(t) = mmada_runtime::init::init_value(b, i, seed) {
                resident.insert(b.name.clone(), t);
            }
        }
    }
    let target = match a.target.as_deref() {
        Some("cpu") => "cpu",
        Some("cuda") => "cuda",
        None if mmada_runtime::cuda_available() => "cuda",
        None => "cpu",
        Some(t) => return Err(format!("unknown target '{t}' (cpu or cuda)")),
    };
    let (outputs, device, launch_ms, run_ms) = if target == "cuda" {
        let mut ex = CudaExecutor::new(exe, 0).map_err(|e| e.to_string())?;
        for (n, t) in &resident {
            ex.set_input(n, t).map_err(|e| e.to_string())?;
        }
        let (dev, arch) = ex.device();
        let out = ex
            .run_entry_outputs(&entry.name, &inputs)
            .map_err(|e| e.to_string())?;
        let index = ex
            .executable()
            .entry_index(&entry.name)
            .map_err(|e| e.to_string())?;
        let mut launch = Vec::new();
        let mut whole = Vec::new();
        for _ in 0..a.repeat {
            let t = Instant::now();
            ex.launch_entry(index).map_err(|e| e.to_string())?;
            ex.synchronize().map_err(|e| e.to_string())?;
            launch.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            ex.run_entry_outputs(&entry.name, &inputs)
                .map_err(|e| e.to_string())?;
            whole.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let lm = (!launch.is_empty()).then(|| median(launch));
        let rm = (!whole.is_empty()).then(|| median(whole));
        (out, format!("{dev} ({arch} PTX)"), lm, rm)
    } else {
        let mut ex = CpuExecutor::new(exe).map_err(|e| e.to_string())?;
        for (n, t) in &resident {
            ex.set_input(n, t).map_err(|e| e.to_string())?;
        }
        let out = ex
            .run_entry_outputs(&entry.name, &inputs)
            .map_err(|e| e.to_string())?;
        let mut whole = Vec::new();
        for _ in 0..a.repeat {
            let t = Instant::now();
            ex.run_entry_outputs(&entry.name, &inputs)
                .map_err(|e| e.to_string())?;
            whole.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let rm = (!whole.is_empty()).then(|| median(whole));
        (out, "host".to_string(), None, rm)
    };
    if let Some(p) = &a.output {
        tensor_io::write_safetensors(p, &outputs).map_err(|e| e.to_string())?;
    }
    let mut ok = true;
    let mut worst = None;
    if let Some(p) = &a.expect {
        let want = tensor_io::read_safetensors(p).map_err(|e| e.to_string())?;
        let mut w: f64 = 0.0;
        for (n, t) in &want {
            let got = outputs
                .get(n)
                .ok_or_else(|| format!("expected output '{n}' was not produced"))?;
            w = w.max(max_rel_error(got, t, a.floor));
        }
        ok = w <= a.tol;
        worst = Some(w);
    }
    let fmt = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
    println!(
        "RESULT name={name} target={target} device=\"{device}\" launch_ms={} run_ms={} max_rel_err={} ok={ok}",
        fmt(launch_ms),
        fmt(run_ms),
        worst.map_or("-".to_string(), |w| format!("{w:.3e}")),
    );
    Ok(ok)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
