//! Progress display and summary of `mmada train`.

use crate::cli::CliError;
use indicatif::{ProgressBar, ProgressStyle};
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::llvm::HostCpu;
use mmada_models::trainer::{train, Progress, StepRecord, TrainOptions};
use mmada_runtime::Target;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

struct Display {
    bar: Option<ProgressBar>,
    log: bool,
    first: Option<f64>,
    recent: Vec<f64>,
    t0: Instant,
}

impl Progress for Display {
    fn data(&mut self, rows: usize, skipped: usize) {
        if skipped > 0 {
            eprintln!("data: {rows} rows ({skipped} skipped: their prompt does not fit the sequence length)");
        } else {
            eprintln!("data: {rows} rows");
        }
    }

    fn start(&mut self, first: usize, total: usize) {
        if let Some(b) = &self.bar {
            b.set_length(total as u64);
            b.set_position(first as u64);
        }
        if first > 0 {
            eprintln!("resuming at step {first} of {total}");
        }
    }

    fn step(&mut self, r: &StepRecord) {
        self.first.get_or_insert(r.loss);
        self.recent.push(r.loss);
        if self.recent.len() > 20 {
            self.recent.remove(0);
        }
        let avg = self.recent.iter().sum::<f64>() / self.recent.len() as f64;
        let tps = r.tokens as f64 / r.step_seconds;
        if let Some(b) = &self.bar {
            b.set_position(r.step as u64 + 1);
            b.set_message(format!(
                "loss {avg:.3} (avg 20)  lr {:.2e}  {tps:.0} tok/s",
                r.lr
            ));
        }
        if self.log {
            println!(
                "step {:>6}  loss {:.4}  grad_norm {:.3}  lr {:.3e}  {:.0} tok/s",
                r.step, r.loss, r.grad_norm, r.lr, tps
            );
        }
    }

    fn saved(&mut self, dir: &Path) {
        let msg = format!("saved {}", dir.display());
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    fn finish(&mut self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}

/// Runs the trainer with a progress bar (or log lines) and prints a summary.
pub fn run(
    opts: &TrainOptions,
    resume: Option<&Path>,
    target: Target,
    log: bool,
) -> Result<(), CliError> {
    let bar = (!log && std::io::stderr().is_terminal()).then(|| {
        let b = ProgressBar::new(opts.steps as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg} (eta {eta})",
        ) {
            b.set_style(style);
        }
        b
    });
    // Without a terminal and without --log, still print a line every 10% of the run.
    let mut display = Display {
        log: log || bar.is_none(),
        bar,
        first: None,
        recent: Vec::new(),
        t0: Instant::now(),
    };
    let backend = BackendOptions {
        host: Some(HostCpu::native()),
        gpu_archs: if target == Target::Cuda {
            vec![80, 90]
        } else {
            vec![]
        },
        ..BackendOptions::default()
    };
    eprintln!(
        "mmada train: preset {}, batch {} × {} tokens, {} steps, out {} ({})",
        opts.preset,
        opts.batch,
        opts.seq,
        opts.steps,
        opts.out.display(),
        if target == Target::Cuda {
            "cuda"
        } else {
            "cpu"
        }
    );
    let records = train(opts, resume, target, backend, &mut display)?;
    let n = records.len();
    if n > 0 {
        let k = (n / 10).clamp(1, 20);
        let head = records[..k].iter().map(|r| r.loss).sum::<f64>() / k as f64;
        let tail = records[n - k..].iter().map(|r| r.loss).sum::<f64>() / k as f64;
        let secs = display.t0.elapsed().as_secs_f64();
        println!(
            "trained {n} steps in {secs:.1}s: loss {head:.3} → {tail:.3} (mean of {k} steps, {:.0}% lower); metrics in {}",
            100.0 * (1.0 - tail / head),
            opts.out.join("metrics.jsonl").display()
        );
    }
    let _ = display.first;
    Ok(())
}
