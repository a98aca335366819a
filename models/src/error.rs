//! The error type of the models crate.

use thiserror::Error;

/// A spec could not be read or turned into a graph.
#[derive(Debug, Error)]
pub enum SpecError {
    /// The file could not be read.
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
    /// A field has an invalid value.
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
}
