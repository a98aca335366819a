//! The one error type of the models crate: graph specs, configs, checkpoints, tokenizers, data,
//! training and logits. Every message names the file, field, tensor or option at fault.

use thiserror::Error;

/// Everything that can fail in the models crate.
#[derive(Debug, Error)]
pub enum ModelsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File path.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown/missing fields.
    #[error("{path}: {msg}")]
    Toml {
        /// File path.
        path: String,
        /// Parser message.
        msg: String,
    },
    /// A field of a spec or config has an invalid value.
    #[error("{path}: field '{field}': {msg}")]
    Field {
        /// File path.
        path: String,
        /// Field (dotted).
        field: String,
        /// What is wrong.
        msg: String,
    },
    /// An expression is malformed or ill-typed.
    #[error("{path}: {field} = \"{expr}\": {msg} (at character {pos})")]
    Expr {
        /// File path.
        path: String,
        /// Field holding the expression.
        field: String,
        /// The expression.
        expr: String,
        /// Character offset.
        pos: usize,
        /// What is wrong.
        msg: String,
    },
    /// A checkpoint tensor is missing, unexpected, misshapen or of the wrong dtype.
    #[error("{path}: tensor '{tensor}': {msg}")]
    Tensor {
        /// Checkpoint directory.
        path: String,
        /// Tensor name.
        tensor: String,
        /// What is wrong.
        msg: String,
    },
    /// A malformed data line.
    #[error("{path}:{line}: {msg}")]
    DataLine {
        /// File.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// No training rows at all.
    #[error("{0}: no training rows")]
    NoRows(String),
    /// The tokenizer file could not be loaded.
    #[error("{path}: {msg}")]
    TokenizerLoad {
        /// File.
        path: String,
        /// Why.
        msg: String,
    },
    /// A special token is missing from the tokenizer.
    #[error("{path}: the tokenizer has no special token '{token}'")]
    MissingSpecial {
        /// File.
        path: String,
        /// Token text.
        token: String,
    },
    /// Encoding text failed.
    #[error("tokenizer: {0}")]
    Encode(String),
    /// Bad options, or a checkpoint the options do not fit.
    #[error("{0}")]
    Options(String),
    /// Bad input tensors.
    #[error("{0}")]
    Input(String),
    /// Writing a chart.
    #[error("chart: {0}")]
    Plot(String),
    /// Compiling.
    #[error(transparent)]
    Codegen(#[from] mmada_codegen::CodegenError),
    /// Running.
    #[error(transparent)]
    Runtime(#[from] mmada_runtime::RuntimeError),
    /// Reading, converting or writing an image.
    #[error(transparent)]
    Image(#[from] crate::image_io::ImageIoError),
    /// Graph construction.
    #[error(transparent)]
    Ir(#[from] mmada_ir::IrError),
}

/// Results of the models crate.
pub type Result<T, E = ModelsError> = std::result::Result<T, E>;
