//! The error type of the runtime crate.

use thiserror::Error;

/// Everything that can fail while loading or running an artifact.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// No CUDA driver or device on this machine.
    #[error("no CUDA device: {0}")]
    NoCuda(String),
    /// A CUDA driver call failed.
    #[error("CUDA: {0}")]
    Cuda(String),
    /// The artifact lacks what this executor needs.
    #[error("{0}")]
    Missing(String),
    /// A supplied input does not match the compiled graph.
    #[error("input '{name}': {msg}")]
    Input {
        /// Input name.
        name: String,
        /// What is wrong.
        msg: String,
    },
    /// Loading the host library failed.
    #[error("loading host code: {0}")]
    Load(String),
    /// A tensor file is malformed.
    #[error("{path}: {msg}")]
    TensorFile {
        /// File path.
        path: String,
        /// What is wrong.
        msg: String,
    },
    /// Codegen/artifact error.
    #[error(transparent)]
    Codegen(#[from] mmada_codegen::CodegenError),
    /// IR error.
    #[error(transparent)]
    Ir(#[from] mmada_ir::IrError),
    /// File IO.
    #[error("{path}: {source}")]
    Io {
        /// File path.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
}
