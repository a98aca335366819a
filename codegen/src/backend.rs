//! Kernels → machine code: KIR → MLIR → LLVM IR → (x86-64 shared library, PTX per sm_XX).
//!
//! With a dump directory, every stage of every module is written there: `kernels.kir.txt`,
//! `host.mlir`, `host.lowered.mlir`, `host.ll`, `host.opt.ll`, `gpu.mlir`, `gpu.lowered.mlir`,
//! `gpu.ll`, `gpu.sm_XX.opt.ll`, `gpu.sm_XX.ptx`.

use crate::kir::{self, Kernel};
use crate::llvm;
use crate::HostCpu;
use crate::{link, mlir, CodegenError, SmArch};
use mmada_passes::DumpSink;

/// What to build.
#[derive(Clone, Debug)]
pub struct BackendOptions {
    /// Build host code for this CPU (None: no host code).
    pub host: Option<HostCpu>,
    /// Build PTX for these GPU architectures.
    pub gpu_archs: Vec<SmArch>,
}

impl Default for BackendOptions {
    fn default() -> Self {
        BackendOptions {
            host: Some(HostCpu::native()),
            gpu_archs: vec![SmArch::SM80, SmArch::SM90],
        }
    }
}

/// Machine code for a set of kernels.
#[derive(Clone, Debug, Default)]
pub struct CompiledKernels {
    /// The host shared library (ELF bytes); exports `<kernel>__entry` for each kernel.
    pub host_lib: Option<Vec<u8>>,
    /// PTX text per GPU architecture.
    pub ptx: Vec<(SmArch, String)>,
}

/// The kernels each target lowers: the planned kernels after that target's KIR passes.
#[derive(Clone, Debug, Default)]
pub struct TargetKernels {
    /// After the host pipeline ([`kir::passes::host_pipeline`]); empty without host code.
    pub host: Vec<Kernel>,
    /// For the GPU (no passes yet).
    pub gpu: Vec<Kernel>,
}

/// The KIR stage: checks every kernel and runs each target's KIR passes, dumping the kernels
/// (`kernels.kir.txt`) and each pass's result (`host-kir/NN-after-<pass>.kir.txt`).
pub fn kir_passes(
    kernels: &[Kernel],
    opts: &BackendOptions,
    dump: &DumpSink,
) -> Result<TargetKernels, CodegenError> {
    for k in kernels {
        kir::check(k).map_err(CodegenError::Kir)?;
    }
    dump.write(
        "kernels.kir.txt",
        &kernels
            .iter()
            .map(kir::to_text)
            .collect::<Vec<_>>()
            .join("\n"),
    )?;
    let host = match &opts.host {
        Some(cpu) => kir::passes::run(
            kernels,
            &kir::passes::host_pipeline(cpu.f32_lanes()),
            &dump.sub("host-kir"),
        )?,
        None => Vec::new(),
    };
    let gpu = if opts.gpu_archs.is_empty() {
        Vec::new()
    } else {
        kernels.to_vec()
    };
    Ok(TargetKernels { host, gpu })
}

/// Compiles kernels for the requested targets: [`kir_passes`], then [`lower`].
pub fn compile_kernels(
    kernels: &[Kernel],
    disjoint: &std::collections::HashSet<String>,
    opts: &BackendOptions,
    dump: &DumpSink,
) -> Result<CompiledKernels, CodegenError> {
    let sets = kir_passes(kernels, opts, dump)?;
    lower(&sets, disjoint, opts, dump)
}

/// The lowering stage: each target's kernels through MLIR and LLVM to a host shared library
/// and PTX per architecture. `disjoint` names the kernels whose parameters never overlap a
/// written one in any launch (see [`crate::plan::disjoint_kernels`]); their host code marks the
/// buffers `noalias`.
pub fn lower(
    kernels: &TargetKernels,
    disjoint: &std::collections::HashSet<String>,
    opts: &BackendOptions,
    dump: &DumpSink,
) -> Result<CompiledKernels, CodegenError> {
    let d = |name: &str, text: &str| dump.write(name, text);
    let ctx = mlir::context();
    let mut out = CompiledKernels::default();
    if let Some(cpu) = &opts.host {
        let m = mlir::host_llvm_ir(&ctx, &kernels.host, disjoint)?;
        d("host.mlir", &m.built)?;
        d("host.lowered.mlir", &m.lowered)?;
        d("host.ll", &m.llvm_ir)?;
        let (opt_ir, obj) = llvm::host_object(&m.llvm_ir, &cpu.name, &cpu.features)?;
        d("host.opt.ll", &opt_ir)?;
        out.host_lib = Some(link::shared_library(&obj)?);
    }
    if !opts.gpu_archs.is_empty() {
        let m = mlir::gpu_llvm_ir(&ctx, &kernels.gpu)?;
        d("gpu.mlir", &m.built)?;
        d("gpu.lowered.mlir", &m.lowered)?;
        d("gpu.ll", &m.llvm_ir)?;
        for &arch in &opts.gpu_archs {
            let (opt_ir, ptx) = llvm::ptx(&m.llvm_ir, arch)?;
            d(&format!("gpu.{arch}.opt.ll"), &opt_ir)?;
            d(&format!("gpu.{arch}.ptx"), &ptx)?;
            out.ptx.push((arch, ptx));
        }
    }
    Ok(out)
}
