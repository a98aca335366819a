//! mmada-models: everything that builds IR graphs for users.
//!
//! - [`spec`]: graph specs in TOML (inputs, named intermediate expressions, outputs), the format
//!   of `mmada compile SPEC` for custom graphs;
//! - [`expr`]: the small expression language of specs (`softmax(x @ w + b, -1)`).

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod expr;
pub mod failpoint;
pub mod llada;
pub mod logits;
pub mod loss;
pub mod plot;
pub mod selfcheck;
pub mod spec;
pub mod tokenizer;
pub mod train_step;
pub mod trainer;

pub use error::SpecError;
pub use spec::{GraphSpec, InputSpec};
