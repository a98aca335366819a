//! `mmada selfcheck`: the built-in check graphs compiled, run and compared with the
//! interpreter (or written as a bundle for a GPU machine).

use super::{default_gpu_archs, graph_inputs, native_and_gpu, random_inputs, target_of, RunTarget};
use crate::error::CliError;
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::compile::{compile, CompileOptions, PtxCheck};
use mmada_ir::{interp, max_rel_error};
use mmada_runtime::tensor_io;
use std::path::PathBuf;

/// Arguments of `mmada selfcheck`.
#[derive(clap::Args)]
pub struct Args {
    /// cpu or cuda (default: cuda when a device is present, else cpu).
    #[arg(long)]
    target: Option<RunTarget>,
    /// Instead of running, write artifacts (PTX only), inputs and expected outputs here.
    #[arg(long)]
    write_bundle: Option<PathBuf>,
}

/// Runs `mmada selfcheck`.
pub fn run(a: Args) -> Result<(), CliError> {
    let graphs = mmada_models::selfcheck::graphs()?;
    if let Some(dir) = a.write_bundle {
        std::fs::create_dir_all(&dir).map_err(|e| mmada_codegen::CodegenError::io(&dir, e))?;
        for (name, g, tol) in &graphs {
            let art = compile(
                g,
                &CompileOptions {
                    name: name.to_string(),
                    backend: BackendOptions {
                        host: None,
                        gpu_archs: default_gpu_archs(),
                    },
                    ptx_check: PtxCheck::Auto,
                    ..CompileOptions::default()
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
    let target = target_of(a.target);
    println!(
        "{:<14} {:>8} {:>12} {:>10}  result",
        "graph", "kernels", "max error", "tolerance"
    );
    let mut failed = Vec::new();
    for (name, g, tol) in &graphs {
        let art = compile(
            g,
            &CompileOptions {
                name: name.to_string(),
                backend: native_and_gpu(),
                ptx_check: PtxCheck::Auto,
                ..CompileOptions::default()
            },
        )?;
        let kernels = art.manifest.kernels.len();
        let ins = random_inputs(&graph_inputs(g), 7)?;
        let want = interp::interpret(g, &ins)?;
        let mut exe = mmada_runtime::open_artifact(art, target)?;
        let got = exe.run(&ins)?;
        let mut worst: f64 = 0.0;
        for (n, w) in &want {
            let g = got.get(n).ok_or_else(|| {
                CliError::Usage(format!("{name}: the compiled graph did not produce {n}"))
            })?;
            worst = worst.max(max_rel_error(g, w, 1.0));
        }
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
