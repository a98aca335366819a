//! `mmada demo`: the embedded example compiled, run and compared with the interpreter.

use super::compile::compile_spec_text;
use super::RunTarget;
use super::{graph_inputs, native_and_gpu, random_inputs, reference, source_graph, target_of};
use crate::error::CliError;
use mmada_codegen::compile::{CompileOptions, PtxCheck};
use mmada_ir::max_rel_error;
use std::time::Instant;

/// The example compiled by `mmada demo` (also in examples/softmax_linear.toml).
const EMBEDDED_EXAMPLE: &str = include_str!("../../examples/softmax_linear.toml");

/// Arguments of `mmada demo`.
#[derive(clap::Args)]
pub struct Args {
    /// cpu or cuda (default: cuda when a device is present, else cpu).
    #[arg(long)]
    target: Option<RunTarget>,
    /// Random seed for the inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Runs `mmada demo`.
pub fn run(a: Args) -> Result<(), CliError> {
    let target = target_of(a.target);
    println!(
        "mmada demo: the embedded example (examples/softmax_linear.toml): y = softmax(x @ w + b)"
    );
    let t0 = Instant::now();
    let art = compile_spec_text(
        EMBEDDED_EXAMPLE,
        "<embedded>/softmax_linear.toml",
        CompileOptions {
            backend: native_and_gpu(),
            ptx_check: PtxCheck::Auto,
            ..CompileOptions::default()
        },
    )?
    .0;
    let compile_s = t0.elapsed().as_secs_f64();
    let ptx_checked = art.manifest.kernels.iter().all(|k| !k.ptxas.is_empty());
    let inputs = random_inputs(&graph_inputs(&source_graph(&art, "main")?), a.seed)?;
    let t1 = Instant::now();
    let expected = reference(&art, "main", &inputs)?;
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
        let g = got.get(name).ok_or_else(|| {
            CliError::Usage(format!("the compiled graph did not produce output {name}"))
        })?;
        let err = max_rel_error(g, e, 1e-6);
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
