//! The digit-caption reward: 1.0 when the answer names the image's digit, 0 otherwise. The
//! digit an answer names is read as the caption evaluation reads it
//! ([`crate::digit_classifier::named_digit`]: the first numeral or whole English digit word),
//! so "It is a seven." and "7" both name 7, and "Eight, not 3" names 8.
//!
//! With a CLIP (`--clip DIR`), spec §5.2's captioning reward: correctness plus
//! `0.1·CLIP(image, answer)` ([`super::clip`]), the image being the one the prompt shows.

use super::clip::ClipReward;
use super::{Reward, Sample};
use crate::digit_classifier::named_digit;
use crate::ModelsError;

/// Caption correctness on the embedded digits; the target is the label (`"0"`…`"9"`).
#[derive(Default)]
pub struct CaptionReward {
    clip: Option<ClipReward>,
}

impl CaptionReward {
    /// Correctness, plus `0.1·CLIP(image, answer)` when `clip` is given.
    pub fn new(clip: Option<ClipReward>) -> CaptionReward {
        CaptionReward { clip }
    }
}

impl Reward for CaptionReward {
    fn name(&self) -> &str {
        "caption"
    }

    fn score(&self, s: &Sample) -> Result<f64, ModelsError> {
        let text = s.text(self.name())?;
        let want = s.digit_label(self.name())?;
        let correct = f64::from(u8::from(named_digit(text) == Some(want)));
        let Some(clip) = &self.clip else {
            return Ok(correct);
        };
        let image = s.image.ok_or_else(|| {
            ModelsError::Input(
                "the caption reward's CLIP bonus needs the prompt's image; this task has none"
                    .into(),
            )
        })?;
        Ok(correct + clip.score_pair(image, text, false)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reward::Completion;

    #[test]
    fn names_of_the_digit_score_one() {
        let r = |t: &str, label: &str| {
            CaptionReward::default().score(&Sample {
                prompt: "What digit is this?",
                target: label,
                completion: Completion::Text(t),
                image: None,
            })
        };
        assert_eq!(r("It is a seven.", "7").unwrap(), 1.0);
        assert_eq!(r("7", "7").unwrap(), 1.0);
        assert_eq!(r("It is a one.", "7").unwrap(), 0.0);
        assert_eq!(r("someone", "1").unwrap(), 0.0);
        assert_eq!(r("Eight, not 3", "3").unwrap(), 0.0);
        assert_eq!(r("", "0").unwrap(), 0.0);
        assert!(r("seven", "seven").is_err());
    }
}
