//! The error type of the passes crate.

use thiserror::Error;

/// A pass failed, or the graph it produced does not verify.
#[derive(Debug, Error)]
pub enum PassError {
    /// The graph is invalid (before or after a pass).
    #[error("after pass '{pass}': {source}")]
    Invalid {
        /// The pass that ran last ("input" before the first pass).
        pass: String,
        /// The verifier's error.
        source: mmada_ir::IrError,
    },
    /// A pass could not do its work.
    #[error("pass '{pass}': {msg}")]
    Failed {
        /// The pass.
        pass: String,
        /// What went wrong.
        msg: String,
    },
    /// Writing a dump file failed.
    #[error("writing dump {path}: {source}")]
    Dump {
        /// File path.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
}
