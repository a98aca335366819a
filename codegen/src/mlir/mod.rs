//! Everything MLIR (through melior): KIR → MLIR modules for the host and the GPU, the pass
//! pipelines, and translation to LLVM IR text (handed to inkwell by [`crate::llvm`]).
//!
//! Staging (each stage is written to `$MMADA_DUMP_DIR/kernels/` when that is set):
//! 1. `*.host.mlir` / `*.gpu.mlir`: func/gpu + scf + arith + memref + llvm intrinsics;
//! 2. `*.host.llvm.mlir` / `*.gpu.nvvm.mlir`: after the conversion pipelines;
//! 3. `*.host.ll` / `*.gpu.ll`: LLVM IR text.

mod emit;
mod mathlib;
mod module;

pub use emit::Target;
pub use module::{gpu_llvm_ir, host_llvm_ir, MlirOutput};

use melior::{
    dialect::DialectRegistry,
    utility::{register_all_dialects, register_all_llvm_translations, register_all_passes},
    Context,
};

/// A fresh MLIR context with every dialect, pass and LLVM translation registered.
pub fn context() -> Context {
    let registry = DialectRegistry::new();
    register_all_dialects(&registry);
    let c = Context::new();
    c.append_dialect_registry(&registry);
    c.load_all_available_dialects();
    register_all_passes();
    register_all_llvm_translations(&c);
    c
}
