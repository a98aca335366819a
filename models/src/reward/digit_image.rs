//! The text-to-image reward of the embedded digits: the committed digit classifier's
//! probability that the generated image shows the digit the prompt asked for (a dense reward
//! in [0, 1]; its argmax is the t2i accuracy the sampling benchmarks report).

use super::{Reward, Sample};
use crate::digit_classifier::{features, DigitClassifier};
use crate::ModelsError;

/// Classifier probability of the asked digit; the target is the label (`"0"`…`"9"`).
pub struct DigitImageReward {
    classifier: DigitClassifier,
}

impl DigitImageReward {
    /// With the committed classifier.
    pub fn embedded() -> Result<DigitImageReward, ModelsError> {
        Ok(DigitImageReward {
            classifier: DigitClassifier::embedded()?,
        })
    }
}

impl Reward for DigitImageReward {
    fn name(&self) -> &str {
        "t2i"
    }

    fn score(&self, s: &Sample) -> Result<f64, ModelsError> {
        let chw = s.image(self.name())?;
        let want = s.digit_label(self.name())?;
        let p = self.classifier.probabilities(&features(chw)?);
        p.get(want)
            .map(|&v| v as f64)
            .ok_or_else(|| ModelsError::Input(format!("digit label {want} is not in 0-9")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digits::Digits;
    use crate::reward::Completion;

    #[test]
    fn real_digits_score_high_for_their_label_and_low_for_others() {
        let d = Digits::embedded().unwrap();
        let r = DigitImageReward::embedded().unwrap();
        let (mut right, mut wrong, mut n) = (0.0, 0.0, 0.0);
        for &i in d.indices(true).iter().take(50) {
            let img = d.chw(i);
            let label = d.labels[i] as usize;
            let s = |t: &str| {
                r.score(&Sample {
                    prompt: "",
                    target: t,
                    completion: Completion::Image(&img),
                    image: None,
                })
                .unwrap()
            };
            right += s(&label.to_string());
            wrong += s(&((label + 1) % 10).to_string());
            n += 1.0;
        }
        assert!(
            right / n > 0.6,
            "mean probability of the label {}",
            right / n
        );
        assert!(
            wrong / n < 0.1,
            "mean probability of another digit {}",
            wrong / n
        );
    }
}
