//! mmada-runtime: runs compiled artifacts.
//!
//! - [`Executable`]: an artifact opened for execution (plan, constants, input checks);
//! - [`Executor`]: the common interface; [`CpuExecutor`] runs the host library,
//!   [`CudaExecutor`] runs the PTX through the CUDA driver (cudarc) and reports a missing driver
//!   or device as [`RuntimeError::NoCuda`];
//! - [`tensor_io`]: safetensors reading and atomic writing.
//!
//! Nothing here uses MLIR: running an artifact needs only the artifact.

pub mod checkpoint;
pub mod cpu;
pub mod cpu_attention;
pub mod cpu_attention_grad;
pub mod cpu_conv;
pub mod cpu_gemm;
pub mod cuda;
pub mod error;
pub mod executable;
pub mod init;
pub mod tensor_io;
pub mod thread_pool;
pub mod tune;

pub use cpu::CpuExecutor;
pub use cuda::{cuda_available, CudaExecutor};
pub use error::RuntimeError;
pub use executable::{Executable, Executor};

use mmada_codegen::artifact::Artifact;
use std::path::Path;

/// Where to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Host code.
    Cpu,
    /// CUDA device 0.
    Cuda,
}

impl Target {
    /// CUDA when a device is present, else the CPU.
    pub fn default_for_machine() -> Target {
        if cuda_available() {
            Target::Cuda
        } else {
            Target::Cpu
        }
    }
}

/// Opens an artifact file and an executor for it.
pub fn open(path: &Path, target: Target) -> Result<Box<dyn Executor>, RuntimeError> {
    let art = Artifact::read(path)?;
    open_artifact(art, target)
}

/// An executor for an in-memory artifact.
pub fn open_artifact(art: Artifact, target: Target) -> Result<Box<dyn Executor>, RuntimeError> {
    let exe = Executable::new(art)?;
    Ok(match target {
        Target::Cpu => Box::new(CpuExecutor::new(exe)?),
        Target::Cuda => Box::new(CudaExecutor::new(exe, 0)?),
    })
}
