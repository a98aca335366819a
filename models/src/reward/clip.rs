//! The CLIP image–text reward (spec §5.2: `0.1·CLIP(image, text)` for captioning and
//! text-to-image): a plug-in point. It needs HF CLIP weights from the user; this build does not
//! ship them and does not fake the score, so without weights — or, for now, with them, since
//! the CLIP towers are not yet built as an IR graph — the reward is unavailable and says why.

use super::{Reward, Sample};
use crate::ModelsError;
use std::path::Path;

/// The CLIP reward (unavailable until the CLIP graph lands).
#[derive(Debug)]
pub struct ClipReward {
    _private: (),
}

impl ClipReward {
    /// Opens the HF CLIP directory `weights`.
    pub fn open(weights: Option<&Path>) -> Result<ClipReward, ModelsError> {
        match weights {
            None => Err(ModelsError::Options(
                "--reward clip needs HF CLIP weights (--clip DIR with config.json and \
                 model.safetensors of a CLIP model); none are bundled, and the reward is not \
                 approximated without them"
                    .into(),
            )),
            Some(dir) if !dir.join("config.json").is_file() => Err(ModelsError::Options(format!(
                "--clip {}: no config.json there (expected an HF CLIP model directory)",
                dir.display()
            ))),
            Some(dir) => Err(ModelsError::Options(format!(
                "--clip {}: the CLIP image and text towers are not built as a graph yet; \
                 use --reward math, caption or t2i",
                dir.display()
            ))),
        }
    }
}

impl Reward for ClipReward {
    fn name(&self) -> &str {
        "clip"
    }

    fn score(&self, _s: &Sample) -> Result<f64, ModelsError> {
        Err(ModelsError::Options(
            "the CLIP reward is unavailable".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn without_weights_the_reward_is_unavailable_with_a_message() {
        let e = super::ClipReward::open(None).unwrap_err().to_string();
        assert!(e.contains("needs HF CLIP weights"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let e = super::ClipReward::open(Some(d.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no config.json"), "{e}");
    }
}
