//! Trains the digit classifier that judges generated images and writes it to
//! `models/assets/digit-classifier/weights.f32.gz` (or the path given):
//!
//! `cargo run --release --example train_digit_classifier [OUT]`
//!
//! Data: the embedded training digits, and the same digits decoded from their committed
//! codes by the committed image tokenizer (vq-digits). Prints the held-out accuracy on both.

use mmada_codegen::backend::BackendOptions;
use mmada_codegen::HostCpu;
use mmada_ir::Tensor;
use mmada_models::digit_classifier::{features, DigitClassifier};
use mmada_models::digit_codes::embedded_digit_codes;
use mmada_models::digits::{Digits, SIDE};
use mmada_models::image_tokenizer::{embedded_vq_digits, ImageTokenizer};
use mmada_runtime::Target;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models/assets/digit-classifier/weights.f32.gz"));
    let digits = Digits::embedded()?;
    let codes = embedded_digit_codes()?;
    let (cfg, w) = embedded_vq_digits()?;
    let host = BackendOptions {
        host: Some(HostCpu::native()),
        gpu_archs: vec![],
    };
    let mut tk = ImageTokenizer::new(cfg, &w, SIDE, SIDE, Target::Cpu, host)?;
    let n = tk.num_codes();
    let mut train = Vec::new();
    let mut test_raw = Vec::new();
    let mut test_rec = Vec::new();
    for (i, code) in codes.iter().enumerate().take(digits.len()) {
        let label = digits.labels[i] as usize;
        let raw = features(&digits.chw(i))?;
        let rec = features(&tk.decode(&Tensor::from_i64([1, n], code.clone())?)?)?;
        if digits.test[i] {
            test_raw.push((raw, label));
            test_rec.push((rec, label));
        } else {
            train.push((raw, label));
            train.push((rec, label));
        }
    }
    let m = DigitClassifier::train(&train, 300, 1.0, 1e-4);
    let acc = |d: &[(Vec<f32>, usize)]| {
        d.iter().filter(|(x, y)| m.predict(x) == *y).count() as f64 / d.len() as f64
    };
    println!(
        "trained on {} images; held-out accuracy: digits {:.3}, reconstructions {:.3}; train {:.3}",
        train.len(),
        acc(&test_raw),
        acc(&test_rec),
        acc(&train)
    );
    m.write(&out)?;
    println!("wrote {}", out.display());
    Ok(())
}
