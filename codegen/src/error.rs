//! The error type of the codegen crate.

use thiserror::Error;

/// Everything that can fail between a planned graph and an artifact.
#[derive(Debug, Error)]
pub enum CodegenError {
    /// A kernel description is ill-formed.
    #[error("kernel IR: {0}")]
    Kir(String),
    /// Building or lowering MLIR failed.
    #[error("MLIR: {0}")]
    Mlir(String),
    /// LLVM (parsing, optimisation or emission) failed.
    #[error("LLVM: {0}")]
    Llvm(String),
    /// Linking the host shared library failed.
    #[error("linking host code: {0}")]
    Link(String),
    /// ptxas rejected generated PTX.
    #[error("ptxas ({arch}) failed on kernel module: {msg}")]
    Ptxas {
        /// Target architecture, e.g. sm_90.
        arch: String,
        /// ptxas output.
        msg: String,
    },
    /// The graph contains something codegen cannot lower.
    #[error("cannot lower {node}: {msg}")]
    Unsupported {
        /// The node (id, label, op, type).
        node: String,
        /// Why.
        msg: String,
    },
    /// The graph failed verification or an optimisation pass.
    #[error(transparent)]
    Pass(#[from] mmada_passes::PassError),
    /// IR error.
    #[error(transparent)]
    Ir(#[from] mmada_ir::IrError),
    /// An artifact file is malformed.
    #[error("artifact {path}: {msg}")]
    Artifact {
        /// File path (or "<memory>").
        path: String,
        /// What is wrong.
        msg: String,
    },
    /// File IO.
    #[error("{path}: {source}")]
    Io {
        /// File path.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
}

impl CodegenError {
    /// An IO error naming the path.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> CodegenError {
        CodegenError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
