//! A digit classifier for judging generated images: multinomial logistic regression on the
//! 32×32 grey pixels (in [0, 1], plus a bias), trained on the embedded training digits and on
//! their reconstructions through the committed image tokenizer (what generated images look
//! like), by full-batch gradient descent from zero: deterministic, no random numbers.
//!
//! The committed weights (`models/assets/digit-classifier/weights.f32.gz`: gzip of
//! `MMCLSF01`, then 10 × 1025 f32 little-endian, class after class, bias last) are written by
//! `cargo run --release --example train_digit_classifier`; their accuracy on the held-out
//! digits is tested.

use crate::digits::SIDE;
use crate::ModelsError;
use std::io::{Read, Write};
use std::path::Path;

/// Features per image (pixels) and classes.
pub const FEATURES: usize = SIDE * SIDE;
/// Classes.
pub const CLASSES: usize = 10;

const MAGIC: &[u8; 8] = b"MMCLSF01";
const EMBEDDED: &[u8] = include_bytes!("../assets/digit-classifier/weights.f32.gz");

/// Grey features of a CHW image in [−1, 1] (3 × 32 × 32): the channel mean mapped to [0, 1].
pub fn features(chw: &[f32]) -> Result<Vec<f32>, ModelsError> {
    if chw.len() != 3 * FEATURES {
        return Err(ModelsError::Input(format!(
            "the classifier reads 3×{SIDE}×{SIDE} images, got {} values",
            chw.len()
        )));
    }
    Ok((0..FEATURES)
        .map(|i| {
            let m = (chw[i] + chw[FEATURES + i] + chw[2 * FEATURES + i]) / 3.0;
            ((m + 1.0) / 2.0).clamp(0.0, 1.0)
        })
        .collect())
}

/// Softmax regression weights: `w[c·(F+1) + f]`, bias at `f = F`.
#[derive(Clone, Debug, PartialEq)]
pub struct DigitClassifier {
    /// Weights, class-major.
    pub w: Vec<f32>,
}

impl DigitClassifier {
    /// The committed classifier.
    pub fn embedded() -> Result<DigitClassifier, ModelsError> {
        DigitClassifier::from_bytes(EMBEDDED, "<embedded digit classifier>")
    }

    /// Reads the file format of the module docs (`name` in errors).
    pub fn from_bytes(gz: &[u8], name: &str) -> Result<DigitClassifier, ModelsError> {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut raw)
            .map_err(|e| ModelsError::Input(format!("{name}: {e}")))?;
        let n = CLASSES * (FEATURES + 1);
        if raw.len() != 8 + 4 * n || &raw[..8] != MAGIC {
            return Err(ModelsError::Input(format!(
                "{name}: not a classifier file ({} bytes)",
                raw.len()
            )));
        }
        let w = raw[8..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(DigitClassifier { w })
    }

    /// Writes the file format of the module docs.
    pub fn write(&self, path: &Path) -> Result<(), ModelsError> {
        let io = |e: std::io::Error| ModelsError::Io {
            path: path.display().to_string(),
            source: e,
        };
        let f = std::fs::File::create(path).map_err(io)?;
        let mut z = flate2::write::GzEncoder::new(f, flate2::Compression::best());
        z.write_all(MAGIC).map_err(io)?;
        for v in &self.w {
            z.write_all(&v.to_le_bytes()).map_err(io)?;
        }
        z.finish().map_err(io)?;
        Ok(())
    }

    fn scores(&self, x: &[f32]) -> [f32; CLASSES] {
        let mut s = [0f32; CLASSES];
        for (c, sc) in s.iter_mut().enumerate() {
            let w = &self.w[c * (FEATURES + 1)..(c + 1) * (FEATURES + 1)];
            *sc = w[FEATURES] + w[..FEATURES].iter().zip(x).map(|(a, b)| a * b).sum::<f32>();
        }
        s
    }

    /// The class probabilities of features `x` (softmax of the scores).
    pub fn probabilities(&self, x: &[f32]) -> [f32; CLASSES] {
        let s = self.scores(x);
        let mx = s.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut p = s.map(|v| (v - mx).exp());
        let z: f32 = p.iter().sum();
        for v in &mut p {
            *v /= z;
        }
        p
    }

    /// The predicted class of features `x` (the lowest of equal scores).
    pub fn predict(&self, x: &[f32]) -> usize {
        let s = self.scores(x);
        (0..CLASSES).fold(0, |best, c| if s[c] > s[best] { c } else { best })
    }

    /// Trains from zero on `(features, label)` pairs: `epochs` full-batch gradient steps of
    /// the mean cross-entropy plus `l2`·|w|² (bias excluded), learning rate `lr`.
    pub fn train(data: &[(Vec<f32>, usize)], epochs: usize, lr: f32, l2: f32) -> DigitClassifier {
        let stride = FEATURES + 1;
        let mut m = DigitClassifier {
            w: vec![0.0; CLASSES * stride],
        };
        let inv = 1.0 / data.len().max(1) as f32;
        for _ in 0..epochs {
            let mut grad = vec![0f32; CLASSES * stride];
            for (x, y) in data {
                let s = m.scores(x);
                let mx = s.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let e: Vec<f32> = s.iter().map(|v| (v - mx).exp()).collect();
                let z: f32 = e.iter().sum();
                for c in 0..CLASSES {
                    let d = e[c] / z - f32::from(u8::from(c == *y));
                    let g = &mut grad[c * stride..(c + 1) * stride];
                    for (gi, xi) in g[..FEATURES].iter_mut().zip(x) {
                        *gi += d * xi;
                    }
                    g[FEATURES] += d;
                }
            }
            for (i, (w, g)) in m.w.iter_mut().zip(&grad).enumerate() {
                let reg = if i % stride == FEATURES {
                    0.0
                } else {
                    2.0 * l2 * *w
                };
                *w -= lr * (g * inv + reg);
            }
        }
        m
    }
}

/// The digit an answer names: the first numeral `0`–`9` or English digit word in it.
pub fn named_digit(answer: &str) -> Option<usize> {
    const WORDS: [&str; 10] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    let lower = answer.to_lowercase();
    let mut best: Option<(usize, usize)> = None;
    let mut consider = |at: usize, d: usize| {
        if best.is_none_or(|(b, _)| at < b) {
            best = Some((at, d));
        }
    };
    for (d, w) in WORDS.iter().enumerate() {
        // Whole words only ("one" in "someone" is not a digit).
        let bytes = lower.as_bytes();
        let mut from = 0;
        while let Some(i) = lower[from..].find(w) {
            let at = from + i;
            let end = at + w.len();
            let left = at == 0 || !bytes[at - 1].is_ascii_alphabetic();
            let right = end == bytes.len() || !bytes[end].is_ascii_alphabetic();
            if left && right {
                consider(at, d);
                break;
            }
            from = end;
        }
    }
    if let Some(at) = lower.find(|c: char| c.is_ascii_digit()) {
        consider(at, (lower.as_bytes()[at] - b'0') as usize);
    }
    best.map(|(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_digit_reads_words_and_numerals() {
        assert_eq!(named_digit("It is a seven."), Some(7));
        assert_eq!(named_digit("7"), Some(7));
        assert_eq!(named_digit("someone wrote 3"), Some(3));
        assert_eq!(named_digit("Eight, not 3"), Some(8));
        assert_eq!(named_digit("no digit here"), None);
    }
}
