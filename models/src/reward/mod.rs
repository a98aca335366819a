//! UniGRPO's rewards (spec §5.2), one trait with one implementation per file:
//! - [`math`]: correctness 2.0 for the right final answer plus format 0.5 for a
//!   `<think>…</think>` response (GSM8K-style reasoning);
//! - [`caption`]: the embedded digit captions (is the digit's name in the answer), plus
//!   `0.1·CLIP(image, answer)` when a CLIP is given (spec §5.2's captioning reward);
//! - [`digit_image`]: text-to-image on the embedded digits, judged by the committed digit
//!   classifier;
//! - [`clip`]: the CLIP image–text score of text-to-image rollouts, on the CLIP towers compiled
//!   from the user's HF CLIP directory; unavailable, with a clear message, without one.
//!
//! A reward may return a non-finite value; the trainer drops that completion from the
//! objective with a warning and counts it in the metrics (`dropped_nan`).

pub mod caption;
pub mod clip;
pub mod digit_image;
pub mod math;

use crate::ModelsError;

/// What a completion is.
#[derive(Clone, Copy, Debug)]
pub enum Completion<'a> {
    /// Decoded text (special tokens removed, cut at the end of turn).
    Text(&'a str),
    /// A generated image, CHW f32 in [−1, 1] (3 × 32 × 32 for the digits).
    Image(&'a [f32]),
}

/// One completion to score, with what the task knows about its prompt.
#[derive(Clone, Copy, Debug)]
pub struct Sample<'a> {
    /// The prompt's text (the question, the caption asked for).
    pub prompt: &'a str,
    /// The reference answer of the prompt (a number, a digit's name).
    pub target: &'a str,
    /// What the policy produced.
    pub completion: Completion<'a>,
    /// The image the prompt asks about (captioning), CHW f32 in [−1, 1].
    pub image: Option<&'a [f32]>,
}

impl<'a> Sample<'a> {
    /// The completion's text; an error naming `reward` when it is an image.
    pub fn text(&self, reward: &str) -> Result<&'a str, ModelsError> {
        match self.completion {
            Completion::Text(t) => Ok(t),
            Completion::Image(_) => Err(ModelsError::Input(format!(
                "the {reward} reward scores text completions, got an image"
            ))),
        }
    }

    /// The completion's image; an error naming `reward` when it is text.
    pub fn image(&self, reward: &str) -> Result<&'a [f32], ModelsError> {
        match self.completion {
            Completion::Image(chw) => Ok(chw),
            Completion::Text(_) => Err(ModelsError::Input(format!(
                "the {reward} reward scores images, got text"
            ))),
        }
    }

    /// The target read as a digit label (`"0"`…`"9"`); an error naming `reward` otherwise.
    pub fn digit_label(&self, reward: &str) -> Result<usize, ModelsError> {
        self.target.trim().parse().map_err(|_| {
            ModelsError::Input(format!(
                "the {reward} reward's target must be a digit label 0-9, got '{}'",
                self.target
            ))
        })
    }
}

/// A reward function.
pub trait Reward {
    /// Name for logs and metrics.
    fn name(&self) -> &str;
    /// The reward of one completion.
    fn score(&self, s: &Sample) -> Result<f64, ModelsError>;
}

/// The rewards `--reward` names.
pub const NAMES: [&str; 4] = ["math", "caption", "t2i", "clip"];

/// Whether the reward named `name` scores images (the t2i task's rollouts: the embedded
/// captions as prompts, MaskGIT images as completions) rather than text.
pub fn scores_images(name: &str) -> bool {
    matches!(name, "t2i" | "clip")
}

/// The reward named `name`; `clip_weights` is the HF CLIP directory for `clip` (and, with
/// `caption`, the CLIP bonus of spec §5.2).
pub fn by_name(
    name: &str,
    clip_weights: Option<&std::path::Path>,
) -> Result<Box<dyn Reward>, ModelsError> {
    if clip_weights.is_some() && !matches!(name, "clip" | "caption") {
        return Err(ModelsError::Options(format!(
            "--clip is read by --reward clip and --reward caption (its CLIP bonus), not by \
             --reward {name}"
        )));
    }
    match name {
        "math" => Ok(Box::new(math::MathReward::default())),
        "caption" => Ok(Box::new(caption::CaptionReward::new(
            clip_weights
                .map(|d| clip::ClipReward::open(Some(d)))
                .transpose()?,
        ))),
        "t2i" => Ok(Box::new(digit_image::DigitImageReward::embedded()?)),
        "clip" => Ok(Box::new(clip::ClipReward::open(clip_weights)?)),
        _ => Err(ModelsError::Options(format!(
            "--reward must be one of {}, got '{name}'",
            NAMES.join(", ")
        ))),
    }
}
