//! Kernels → machine code: KIR → MLIR → LLVM IR → (x86-64 shared library, PTX per sm_XX).
//!
//! With a dump directory, every stage of every module is written there: `kernels.kir.txt`,
//! `host.mlir`, `host.lowered.mlir`, `host.ll`, `host.opt.ll`, `gpu.mlir`, `gpu.lowered.mlir`,
//! `gpu.ll`, `gpu.sm_XX.opt.ll`, `gpu.sm_XX.ptx`.

use crate::kir::{self, Kernel};
use crate::llvm::{self, HostCpu};
use crate::{link, mlir, CodegenError};
use std::path::{Path, PathBuf};

/// What to build.
#[derive(Clone, Debug)]
pub struct BackendOptions {
    /// Build host code for this CPU (None: no host code).
    pub host: Option<HostCpu>,
    /// Build PTX for these SM versions (e.g. 80, 90).
    pub gpu_archs: Vec<u32>,
    /// Write every stage here.
    pub dump_dir: Option<PathBuf>,
}

impl Default for BackendOptions {
    fn default() -> Self {
        BackendOptions {
            host: Some(HostCpu::native()),
            gpu_archs: vec![80, 90],
            dump_dir: std::env::var_os("MMADA_DUMP_DIR").map(|d| PathBuf::from(d).join("kernels")),
        }
    }
}

/// Machine code for a set of kernels.
#[derive(Clone, Debug, Default)]
pub struct CompiledKernels {
    /// The host shared library (ELF bytes); exports `<kernel>__entry` for each kernel.
    pub host_lib: Option<Vec<u8>>,
    /// PTX text per SM version.
    pub ptx: Vec<(u32, String)>,
}

fn dump(dir: &Option<PathBuf>, name: &str, text: &str) -> Result<(), CodegenError> {
    if let Some(d) = dir {
        std::fs::create_dir_all(d).map_err(|e| CodegenError::io(d, e))?;
        let p: PathBuf = Path::new(d).join(name);
        std::fs::write(&p, text).map_err(|e| CodegenError::io(&p, e))?;
    }
    Ok(())
}

/// Compiles kernels for the requested targets. Every kernel is validated first. `disjoint`
/// names the kernels whose parameters never overlap a written one in any launch (see
/// [`crate::plan::disjoint_kernels`]); their host code marks the buffers `noalias`.
pub fn compile_kernels(
    kernels: &[Kernel],
    disjoint: &std::collections::HashSet<String>,
    opts: &BackendOptions,
) -> Result<CompiledKernels, CodegenError> {
    for k in kernels {
        kir::check(k).map_err(CodegenError::Kir)?;
    }
    let d = &opts.dump_dir;
    dump(
        d,
        "kernels.kir.txt",
        &kernels
            .iter()
            .map(kir::to_text)
            .collect::<Vec<_>>()
            .join("\n"),
    )?;
    let ctx = mlir::context();
    let mut out = CompiledKernels::default();
    if let Some(cpu) = &opts.host {
        let m = mlir::host_llvm_ir(&ctx, kernels, disjoint)?;
        dump(d, "host.mlir", &m.built)?;
        dump(d, "host.lowered.mlir", &m.lowered)?;
        dump(d, "host.ll", &m.llvm_ir)?;
        let (opt_ir, obj) = llvm::host_object(&m.llvm_ir, cpu)?;
        dump(d, "host.opt.ll", &opt_ir)?;
        out.host_lib = Some(link::shared_library(&obj)?);
    }
    if !opts.gpu_archs.is_empty() {
        let m = mlir::gpu_llvm_ir(&ctx, kernels)?;
        dump(d, "gpu.mlir", &m.built)?;
        dump(d, "gpu.lowered.mlir", &m.lowered)?;
        dump(d, "gpu.ll", &m.llvm_ir)?;
        for &arch in &opts.gpu_archs {
            let (opt_ir, ptx) = llvm::ptx(&m.llvm_ir, arch)?;
            dump(d, &format!("gpu.sm_{arch}.opt.ll"), &opt_ir)?;
            dump(d, &format!("gpu.sm_{arch}.ptx"), &ptx)?;
            out.ptx.push((arch, ptx));
        }
    }
    Ok(out)
}
