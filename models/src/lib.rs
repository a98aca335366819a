//! mmada-models: the model's graphs, and the drivers that compile and run them.
//!
//! **Graph builders** use nothing but `mmada-ir` (checked by `scripts/check-imports.py`):
//! - [`config`]: the HF `config.json` of LLaDA/MMaDA and the presets;
//! - [`nn`]: the model's blocks (norms, RoPE and attention, SwiGLU, LFQ, AdamW);
//! - [`llada`]: the transformer's forward graph; [`magvit`]: the MAGVIT-v2 image tokenizer's
//!   encoder, decoder and training-step graphs; [`loss`]: the masked-diffusion losses;
//!   [`train_step`]: forward, backward, clipping and AdamW in one graph; [`multimodal_step`]:
//!   the same for a batch of t2i, mmu and text rows; [`sampler_step`]: one step of the text
//!   sampler (forward, guidance and the confidence top-k remask) over a resident sequence;
//!   [`unigrpo_step`]: UniGRPO's objective (eqs. 3–5) and its log-probability passes;
//! - [`spec`] and [`expr`]: graph specs in TOML and their expression language
//!   (`softmax(x @ w + b, -1)`), the format of `mmada compile SPEC`;
//! - [`clip`]: CLIP's image and text towers (the HF `CLIPModel` layout), for the CLIP reward;
//! - [`selfcheck`]: the built-in check graphs.
//!
//! **Drivers** compile graphs and run them:
//! - [`trainer`]: the training loop, generic over an [`objective`]; [`data`]: datasets and
//!   batches; [`tokenizer`]: the text tokenizer; [`vocab`]: the unified vocabulary of text ids,
//!   special ids and image codes; [`prompt`]: the sequence layouts of every task;
//!   [`checkpoint`]: HF checkpoints and initial weights; [`plot`]: charts; [`failpoint`]: crash
//!   points for tests;
//! - [`logits`]: logits of a checkpoint; [`bench`]: the BENCHMARKS.md cases;
//!   [`text_sampler`]: text generation by replaying the compiled sampler step;
//!   [`image_sampler`]: text-to-image generation (MaskGIT) the same way;
//! - [`image_io`]: images in and out; [`image_tokenizer`]: MAGVIT-v2 directories compiled into
//!   an encoder and a decoder; [`digits`]: the embedded digits; [`digit_classifier`]: the
//!   classifier that judges generated digits; [`clip_model`]: an HF CLIP directory compiled
//!   into its two towers, with its tokenizer and image preprocessing; [`digit_codes`]: the digits as
//!   image codes; [`unigrpo`]: the RL stage (rollouts, rewards, inner steps) on the trainer,
//!   with [`grpo_noising`] (which completion tokens are masked) and [`reward`] (the reward
//!   functions); [`vq_trainer`]: training the
//!   tiny image tokenizer; [`multimodal`]: the image–text data and the multimodal objective.
//!
//! One error type, [`ModelsError`], for the crate.

// Graph builders.
pub mod clip;
pub mod config;
pub mod expr;
pub mod llada;
pub mod loss;
pub mod magvit;
pub mod multimodal_step;
pub mod nn;
pub mod sampler_step;
pub mod selfcheck;
pub mod spec;
pub mod train_step;
pub mod unigrpo_step;

// Drivers.
pub mod bench;
pub mod checkpoint;
pub mod clip_model;
pub mod data;
pub mod digit_classifier;
pub mod digit_codes;
pub mod digits;
pub mod failpoint;
pub mod grpo_noising;
pub mod image_io;
pub mod image_sampler;
pub mod image_tokenizer;
pub mod logits;
pub mod multimodal;
pub mod objective;
pub mod plot;
pub mod prompt;
pub mod reward;
pub mod text_sampler;
pub mod tokenizer;
pub mod trainer;
pub mod unigrpo;
pub mod vocab;
pub mod vq_trainer;

pub mod error;

pub use error::ModelsError;
pub use spec::{GraphSpec, InputSpec};
