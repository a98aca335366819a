//! mmada-codegen: planned graph → kernels → host code and PTX → artifact.
//!
//! # The kernel abstraction
//!
//! Every kernel is written once in [`kir`], a small SIMT kernel IR whose barrier discipline
//! (phases separated by barriers, uniform loops, cross-phase state only in memory) gives
//! barriers and shared memory a host meaning. [`mlir`] lowers one KIR kernel to a host
//! `func.func` (blocks and threads become loops) and to a `gpu.func` (NVVM); [`llvm`] optimises
//! both with LLVM through inkwell and emits an x86-64 object or PTX; [`ptxas`] checks the PTX.
//! The choice was made with the later kernels in mind: a tiled matmul keeps its tiles in shared
//! buffers and its accumulators in private buffers across the k-loop's barriers; flash attention
//! keeps the running max/sum/output rows in private buffers and K/V tiles in shared buffers.
//! A tile-level (Triton-like) language would need layout assignment to map tiles to threads;
//! explicit SIMT with phases needs none and still has a straightforward host meaning.
//!
//! # Features
//!
//! `compiler` (default) builds everything that needs MLIR and LLVM: [`mlir`], [`llvm`],
//! [`backend`], [`compile`]. Without it, the crate still reads and validates artifacts and plans
//! (what the runtime needs), so a runner can be built with no LLVM at all.

pub mod arch;
pub mod artifact;
#[cfg(feature = "compiler")]
pub mod backend;
#[cfg(feature = "compiler")]
pub mod compile;
pub mod error;
pub mod host_cpu;
pub mod kernels;
pub mod kir;
#[cfg(feature = "compiler")]
pub mod link;
#[cfg(feature = "compiler")]
pub mod llvm;
pub mod memory;
#[cfg(feature = "compiler")]
pub mod mlir;
pub mod plan;
pub mod program;
pub mod ptxas;
pub mod template;
pub mod tune;

pub use arch::SmArch;
pub use error::CodegenError;
pub use host_cpu::HostCpu;
