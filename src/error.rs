//! The error type of the command line: every library error, plus usage errors naming the
//! option at fault.

use thiserror::Error;

/// What a command can fail with. `main` prints the first line as `error: …`.
#[derive(Debug, Error)]
pub enum CliError {
    /// Models: specs, configs, checkpoints, tokenizers, data, training, logits.
    #[error(transparent)]
    Models(#[from] mmada_models::ModelsError),
    /// Compiling.
    #[error(transparent)]
    Codegen(#[from] mmada_codegen::CodegenError),
    /// Running.
    #[error(transparent)]
    Runtime(#[from] mmada_runtime::RuntimeError),
    /// Graphs and tensors.
    #[error(transparent)]
    Ir(#[from] mmada_ir::IrError),
    /// Images: reading, converting, writing.
    #[error(transparent)]
    Image(#[from] mmada_models::image_io::ImageIoError),
    /// A bad option or argument.
    #[error("{0}")]
    Usage(String),
}
