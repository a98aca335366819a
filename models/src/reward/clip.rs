//! The CLIP image–text reward (spec §5.2: `0.1·CLIP(image, text)`; for text-to-image the
//! text is the prompt, for captions — as a bonus of [`super::caption`] — the answer): CLIP(image, text) = max(100·cos(e_image, e_text), 0), the CLIPScore
//! scale of the paper's tables (CLIP 32.8 for MMaDA's images), so the reward is
//! `0.1·max(100·cos, 0)`, about 3 for a well-matched pair.
//!
//! The towers are the IR graphs of [`crate::clip`], compiled from an HF CLIP directory the
//! user gives (`--clip DIR`, [`ClipModel`]). None is bundled and nothing approximates the
//! score without one: with no directory the reward is unavailable and says so.

use super::{Reward, Sample};
use crate::clip_model::{dot, ClipModel};
use crate::ModelsError;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

/// The CLIP reward on a compiled CLIP.
pub struct ClipReward {
    model: RefCell<ClipModel>,
    /// Text embeddings of the prompts (a rollout scores G images of each prompt); answers,
    /// scored once each, are not kept.
    texts: RefCell<HashMap<String, Vec<f32>>>,
}

impl ClipReward {
    /// Opens and compiles the HF CLIP directory `weights`.
    pub fn open(weights: Option<&Path>) -> Result<ClipReward, ModelsError> {
        let Some(dir) = weights else {
            return Err(ModelsError::Options(
                "--reward clip needs HF CLIP weights (--clip DIR with config.json, \
                 model.safetensors and tokenizer.json of a CLIP model); none are bundled, and \
                 the reward is not approximated without them"
                    .into(),
            ));
        };
        Ok(ClipReward::new(ClipModel::open(dir)?))
    }

    /// The reward of an already compiled model.
    pub fn new(model: ClipModel) -> ClipReward {
        ClipReward {
            model: RefCell::new(model),
            texts: RefCell::new(HashMap::new()),
        }
    }

    /// cos(image, text) of a CHW image in [−1, 1] and a text; `keep` keeps the text's
    /// embedding for the next call with the same text.
    pub fn cosine(&self, chw: &[f32], text: &str, keep: bool) -> Result<f64, ModelsError> {
        let mut m = self.model.borrow_mut();
        let cached = self.texts.borrow().get(text).cloned();
        let t = match cached {
            Some(t) => t,
            None => {
                let ids = m.text_ids(text)?;
                let t = m.text_embeds(&ids)?;
                if keep {
                    self.texts.borrow_mut().insert(text.to_string(), t.clone());
                }
                t
            }
        };
        let px = m.pixel_values(chw)?;
        let i = m.image_embeds(&px)?;
        Ok(dot(&i, &t))
    }
}

impl ClipReward {
    /// `0.1·max(100·cos(image, text), 0)`; NaN when the cosine is not finite (NaN weights or
    /// a zero embedding), so that the trainer drops the completion and counts it.
    pub fn score_pair(&self, chw: &[f32], text: &str, keep: bool) -> Result<f64, ModelsError> {
        let cos = self.cosine(chw, text, keep)?;
        if !cos.is_finite() {
            return Ok(f64::NAN);
        }
        Ok(0.1 * (100.0 * cos).max(0.0))
    }
}

impl Reward for ClipReward {
    fn name(&self) -> &str {
        "clip"
    }

    fn score(&self, s: &Sample) -> Result<f64, ModelsError> {
        let chw = s.image(self.name())?;
        self.score_pair(chw, s.prompt, true)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn without_weights_the_reward_is_unavailable_with_a_message() {
        let e = super::ClipReward::open(None).err().unwrap().to_string();
        assert!(e.contains("needs HF CLIP weights"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let e = super::ClipReward::open(Some(d.path()))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no config.json"), "{e}");
    }
}
