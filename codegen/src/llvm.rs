//! LLVM through inkwell: parse the LLVM IR text MLIR produced, optimise it (`default<O3>`) and
//! emit host object code (x86-64) or PTX (NVPTX).

use crate::CodegenError;
use inkwell::{
    context::Context,
    memory_buffer::MemoryBuffer,
    module::Module,
    passes::PassBuilderOptions,
    targets::{
        CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple,
    },
    OptimizationLevel,
};
use std::sync::Once;

fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        Target::initialize_x86(&InitializationConfig::default());
        Target::initialize_nvptx(&InitializationConfig::default());
    });
}

/// The PTX ISA version we emit: 8.0 (CUDA 12.0), accepted by sm_80 and sm_90 and by every
/// driver from CUDA 12.0 on (our GPUs run CUDA 13.0 drivers, which read up to PTX 9.0).
pub const PTX_FEATURES: &str = "+ptx80";

fn parse<'ctx>(ctx: &'ctx Context, ir: &str, name: &str) -> Result<Module<'ctx>, CodegenError> {
    let buf = MemoryBuffer::create_from_memory_range_copy(ir.as_bytes(), name);
    ctx.create_module_from_ir(buf)
        .map_err(|e| CodegenError::Llvm(format!("parsing {name}: {e}")))
}

fn optimise(m: &Module, tm: &TargetMachine) -> Result<(), CodegenError> {
    m.set_triple(&tm.get_triple());
    m.set_data_layout(&tm.get_target_data().get_data_layout());
    m.run_passes("default<O3>", tm, PassBuilderOptions::create())
        .map_err(|e| CodegenError::Llvm(format!("optimisation: {e}")))
}

/// The CPU of this machine as LLVM names it: (CPU name, feature string).
pub fn native_cpu() -> (String, String) {
    init();
    (
        TargetMachine::get_host_cpu_name().to_string(),
        TargetMachine::get_host_cpu_features().to_string(),
    )
}

/// Optimises host LLVM IR and emits a relocatable object file for the LLVM CPU `cpu_name` with
/// `features`.
pub fn host_object(
    ir: &str,
    cpu_name: &str,
    features: &str,
) -> Result<(String, Vec<u8>), CodegenError> {
    init();
    let ctx = Context::create();
    let m = parse(&ctx, ir, "host")?;
    let triple = TargetMachine::get_default_triple();
    let target = Target::from_triple(&triple)
        .map_err(|e| CodegenError::Llvm(format!("host target: {e}")))?;
    let tm = target
        .create_target_machine(
            &triple,
            cpu_name,
            features,
            OptimizationLevel::Aggressive,
            RelocMode::PIC,
            CodeModel::Default,
        )
        .ok_or_else(|| CodegenError::Llvm(format!("no target machine for CPU {cpu_name}")))?;
    optimise(&m, &tm)?;
    let optimised = m.print_to_string().to_string();
    let obj = tm
        .write_to_memory_buffer(&m, FileType::Object)
        .map_err(|e| CodegenError::Llvm(format!("host object emission: {e}")))?;
    Ok((optimised, obj.as_slice().to_vec()))
}

/// Optimises NVVM LLVM IR and emits PTX text for `arch`.
pub fn ptx(ir: &str, arch: crate::SmArch) -> Result<(String, String), CodegenError> {
    init();
    let ctx = Context::create();
    let m = parse(&ctx, ir, "gpu")?;
    let triple = TargetTriple::create("nvptx64-nvidia-cuda");
    let target = Target::from_triple(&triple)
        .map_err(|e| CodegenError::Llvm(format!("NVPTX target: {e}")))?;
    let tm = target
        .create_target_machine(
            &triple,
            &arch.llvm_cpu(),
            PTX_FEATURES,
            OptimizationLevel::Aggressive,
            RelocMode::Default,
            CodeModel::Default,
        )
        .ok_or_else(|| CodegenError::Llvm(format!("no NVPTX target machine for {arch}")))?;
    optimise(&m, &tm)?;
    let optimised = m.print_to_string().to_string();
    let buf = tm
        .write_to_memory_buffer(&m, FileType::Assembly)
        .map_err(|e| CodegenError::Llvm(format!("PTX emission: {e}")))?;
    let text = String::from_utf8(buf.as_slice().to_vec())
        .map_err(|e| CodegenError::Llvm(format!("PTX is not UTF-8: {e}")))?;
    Ok((optimised, text))
}
