//! The committed tiny image tokenizer (`models/assets/vq-digits/`, trained by `mmada train-vq`)
//! on the held-out digits: PSNR ≥ 20 dB and at least 25 % of the 256 codes used; and a short
//! training run from scratch lowers the reconstruction loss and writes a loadable directory.

use mmada_models::digits::Digits;
use mmada_models::image_tokenizer::load_magvit;
use mmada_models::vq_trainer::{evaluate, tiny_config, train_and_save, VqOptions};
use std::path::PathBuf;

#[test]
fn committed_tokenizer_reconstructs_held_out_digits() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/vq-digits");
    let (cfg, weights) = load_magvit(&dir).unwrap();
    assert_eq!(cfg, tiny_config());
    let digits = Digits::embedded().unwrap();
    let (psnr, distinct, figs) = evaluate(&cfg, &weights, &digits, 2).unwrap();
    eprintln!("held-out PSNR {psnr:.2} dB, {distinct} codes");
    assert!(psnr >= 20.0, "PSNR {psnr:.2} dB");
    assert!(distinct * 4 >= cfg.codebook_size(), "{distinct} codes used");
    assert_eq!(figs.len(), 2);
}

#[test]
fn a_short_training_run_learns_and_writes_a_tokenizer() {
    let out = tempfile::tempdir().unwrap();
    let o = VqOptions {
        steps: 30,
        batch: 4,
        lr: 2e-3,
        seed: 1,
    };
    let report = train_and_save(out.path(), &o, |_, _| {}).unwrap();
    let first = report.recon[..3].iter().sum::<f64>() / 3.0;
    let last = report.recon[27..].iter().sum::<f64>() / 3.0;
    assert!(last < 0.5 * first, "{first} → {last}");
    assert!(
        report.psnr_db.is_finite() && report.psnr_db > 8.0,
        "{}",
        report.psnr_db
    );
    for f in [
        "config.json",
        "pytorch_model.safetensors",
        "report.json",
        "reconstructions.png",
    ] {
        assert!(out.path().join(f).is_file(), "{f}");
    }
    let (cfg, _) = load_magvit(out.path()).unwrap();
    assert_eq!(cfg, tiny_config());
}
