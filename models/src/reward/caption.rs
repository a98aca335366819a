//! The digit-caption reward: 1.0 when the answer names the image's digit, 0 otherwise. The
//! digit an answer names is read as the caption evaluation reads it
//! ([`crate::digit_classifier::named_digit`]: the first numeral or whole English digit word),
//! so "It is a seven." and "7" both name 7, and "Eight, not 3" names 8.

use super::{Reward, Sample};
use crate::digit_classifier::named_digit;
use crate::ModelsError;

/// Caption correctness on the embedded digits; the target is the label (`"0"`…`"9"`).
#[derive(Clone, Copy, Debug, Default)]
pub struct CaptionReward;

impl Reward for CaptionReward {
    fn name(&self) -> &str {
        "caption"
    }

    fn score(&self, s: &Sample) -> Result<f64, ModelsError> {
        let text = s.text(self.name())?;
        let want = s.digit_label(self.name())?;
        Ok(f64::from(u8::from(named_digit(text) == Some(want))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reward::Completion;

    #[test]
    fn names_of_the_digit_score_one() {
        let r = |t: &str, label: &str| {
            CaptionReward.score(&Sample {
                prompt: "What digit is this?",
                target: label,
                completion: Completion::Text(t),
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
