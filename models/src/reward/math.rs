//! The text-reasoning reward (spec §5.2, the values of d1's reward functions): correctness
//! 2.0 when the final answer equals the reference, plus format 0.5 when the response is
//! `<think>reasoning</think>answer`.
//!
//! **Answer extraction**, in order:
//! 1. the content of the last `\boxed{…}` (braces balanced), if there is one;
//! 2. else the rest of the line after the last `####` (GSM8K's answer line), if there is one;
//! 3. else the text after the last `</think>`, if there is one;
//! 4. else the whole response;
//!
//! then the **last number** in that text. A number is an optional sign (a `-` not preceded by a
//! letter or digit), digits with optional `,ddd` thousands groups, and an optional fraction
//! `.ddd`; `$1,234.50` reads 1234.5, `70.` reads 70, `5-3` reads 3. The answer is correct when
//! `|pred − ref| ≤ 1e-6 · max(1, |ref|)`. No number, no credit.
//!
//! **Format**: trimmed, the response starts with `<think>`, holds exactly one `<think>` and one
//! `</think>`, non-blank reasoning between them and a non-blank answer after.

use super::{Reward, Sample};
use crate::ModelsError;

/// Correctness 2.0 + format 0.5 (the weights are fields, for other tasks).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MathReward {
    /// Reward of a correct final answer.
    pub correct: f64,
    /// Reward of a well-formed `<think>…</think>` response.
    pub format: f64,
}

impl Default for MathReward {
    fn default() -> Self {
        MathReward {
            correct: 2.0,
            format: 0.5,
        }
    }
}

/// The content of the last `\boxed{…}` with balanced braces.
fn last_boxed(s: &str) -> Option<&str> {
    let start = s.rfind("\\boxed{")? + "\\boxed{".len();
    let mut depth = 1usize;
    for (i, c) in s[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&s[start..start + i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// The text the final answer is read from (steps 1–4 of the module docs).
pub fn answer_span(response: &str) -> &str {
    if let Some(b) = last_boxed(response) {
        return b;
    }
    if let Some(i) = response.rfind("####") {
        let rest = &response[i + 4..];
        return rest.split('\n').next().unwrap_or(rest);
    }
    if let Some(i) = response.rfind("</think>") {
        return &response[i + "</think>".len()..];
    }
    response
}

/// Every number in `s`, in order (the grammar of the module docs).
pub fn numbers(s: &str) -> Vec<f64> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let neg = i > 0 && b[i - 1] == b'-' && (i < 2 || !b[i - 2].is_ascii_alphanumeric());
        let mut text = String::new();
        // Integer part with optional ,ddd groups.
        while i < b.len() && b[i].is_ascii_digit() {
            text.push(b[i] as char);
            i += 1;
            if i < b.len()
                && b[i] == b','
                && b.get(i + 1..i + 4)
                    .is_some_and(|g| g.iter().all(u8::is_ascii_digit))
                && !b.get(i + 4).is_some_and(u8::is_ascii_digit)
            {
                i += 1; // skip the comma; the group's digits follow
            }
        }
        if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
            text.push('.');
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                text.push(b[i] as char);
                i += 1;
            }
        }
        if let Ok(v) = text.parse::<f64>() {
            out.push(if neg { -v } else { v });
        }
    }
    out
}

/// The final answer of a response (`None`: no number where the rule looks).
pub fn extract_answer(response: &str) -> Option<f64> {
    numbers(answer_span(response)).last().copied()
}

/// Whether a response is `<think>reasoning</think>answer`.
pub fn well_formed(response: &str) -> bool {
    let r = response.trim();
    if !r.starts_with("<think>")
        || r.matches("<think>").count() != 1
        || r.matches("</think>").count() != 1
    {
        return false;
    }
    let Some(end) = r.find("</think>") else {
        return false;
    };
    let reasoning = &r["<think>".len()..end];
    let answer = &r[end + "</think>".len()..];
    !reasoning.trim().is_empty() && !answer.trim().is_empty()
}

/// Whether `pred` equals the reference answer `target` (a number as text).
pub fn matches(pred: f64, target: &str) -> bool {
    let Some(gold) = numbers(target).last().copied() else {
        return false;
    };
    (pred - gold).abs() <= 1e-6 * gold.abs().max(1.0)
}

impl Reward for MathReward {
    fn name(&self) -> &str {
        "math"
    }

    fn score(&self, s: &Sample) -> Result<f64, ModelsError> {
        let text = s.text(self.name())?;
        let correct = extract_answer(text).is_some_and(|p| matches(p, s.target));
        let mut r = 0.0;
        if correct {
            r += self.correct;
        }
        if well_formed(text) {
            r += self.format;
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reward::Completion;

    fn score(text: &str, target: &str) -> f64 {
        MathReward::default()
            .score(&Sample {
                prompt: "",
                target,
                completion: Completion::Text(text),
                image: None,
            })
            .unwrap()
    }

    #[test]
    fn extraction_handles_tricky_strings() {
        let cases: [(&str, Option<f64>); 16] = [
            ("The answer is 42.", Some(42.0)),
            ("12 x 2 = 24\n#### 70", Some(70.0)),
            ("#### 70\nthen I said 5", Some(70.0)),
            ("so \\boxed{1,234} dollars, not 7", Some(1234.0)),
            ("\\boxed{\\frac{1}{2}} or \\boxed{3}", Some(3.0)),
            ("\\boxed{x^{2} = 16}", Some(16.0)),
            ("It costs $1,234.50 in all", Some(1234.5)),
            ("from 5-3 we get", Some(3.0)),
            ("a loss of -17 points", Some(-17.0)),
            ("item-7", Some(7.0)),
            ("3.5% of them", Some(3.5)),
            ("70.", Some(70.0)),
            ("1,23 apples", Some(23.0)),
            ("no digits here", None),
            (
                "<think>4 + 4 = 8, 8 x 2 = 16</think> The answer is 16",
                Some(16.0),
            ),
            ("<think>maybe 12</think> I do not know", None),
        ];
        for (text, want) in cases {
            assert_eq!(extract_answer(text), want, "{text:?}");
        }
        assert_eq!(numbers("1,234,567 and 9,99"), vec![1234567.0, 9.0, 99.0]);
    }

    #[test]
    fn correctness_and_format_add_up() {
        assert_eq!(score("<think>12 x 2 = 24</think> 24", "24"), 2.5);
        assert_eq!(score("<think>12 x 2 = 24</think> 25", "24"), 0.5);
        assert_eq!(score("12 x 2 = 24", "24"), 2.0);
        assert_eq!(score("<think></think> 24", "24"), 2.0); // empty reasoning
        assert_eq!(score("<think>a</think><think>b</think> 24", "24"), 2.0);
        assert_eq!(score("<think>24", "24"), 2.0); // unclosed: the last number still counts
        assert_eq!(score("  <think>x</think>  1856.25 ", "1856.25"), 2.5);
        assert_eq!(score("<think>x</think> 1856.2", "1856.25"), 0.5);
        assert_eq!(score("", "24"), 0.0);
        assert_eq!(score("24", "not a number"), 0.0);
        let img = [0.0f32; 4];
        let e = MathReward::default().score(&Sample {
            prompt: "",
            target: "1",
            completion: Completion::Image(&img),
            image: None,
        });
        assert!(e.is_err());
    }
}
