//! MAGVIT-v2 (spec §7) compiled on the CPU against the independent NumPy reference
//! (`scripts/reference/magvit_reference.py`, float64) on the small random-weight fixture
//! `tests/fixtures/tiny_magvit` (the released structure at ch 32, 16 px → 4×4 codes): the encoder
//! latent, the LFQ codes of the pixels (exactly), the decoder on given codes and the
//! reconstruction, max abs error ≤ 1e-4 (f32 through ~20 layers of O(1) activations; the
//! reference's own f32 run of the official classes is within 4.1e-6).

use mmada_codegen::backend::BackendOptions;
use mmada_ir::Tensor;
use mmada_models::image_tokenizer::{load_magvit, ImageTokenizer};
use mmada_runtime::tensor_io::read_safetensors;
use mmada_runtime::Target;
use std::path::PathBuf;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny_magvit")
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn tiny_magvit_matches_the_numpy_reference() {
    let dir = fixture();
    let (cfg, weights) = load_magvit(&dir).unwrap();
    assert_eq!((cfg.ch, cfg.z_channels, cfg.factor()), (32, 13, 4));
    let ins = read_safetensors(&dir.join("inputs.safetensors")).unwrap();
    let outs = read_safetensors(&dir.join("outputs.safetensors")).unwrap();
    let pixels = ins["pixels"].to_f32_vec(); // [2, 3, 16, 16]
    let codes = ins["codes"].to_i64_vec(); // [2, 16]
    let want_codes = outs["codes_of_pixels"].to_i64_vec();
    let want_decoded = outs["decoded"].to_f32_vec();
    let want_recon = outs["reconstruction"].to_f32_vec();
    let mut tk = ImageTokenizer::new(
        cfg,
        &weights,
        16,
        16,
        Target::Cpu,
        BackendOptions::default(),
    )
    .unwrap();
    let img = 3 * 16 * 16;
    let mut worst = 0f32;
    for b in 0..2 {
        let got = tk.encode(&pixels[b * img..(b + 1) * img]).unwrap();
        assert_eq!(got.shape().0, [1, 16]);
        assert_eq!(
            got.to_i64_vec(),
            want_codes[b * 16..(b + 1) * 16],
            "codes of image {b}"
        );
        let c = Tensor::from_i64([1, 16], codes[b * 16..(b + 1) * 16].to_vec()).unwrap();
        let dec = tk.decode(&c).unwrap();
        worst = worst.max(max_abs(&dec, &want_decoded[b * img..(b + 1) * img]));
        let rec = tk.decode(&got).unwrap();
        worst = worst.max(max_abs(&rec, &want_recon[b * img..(b + 1) * img]));
    }
    eprintln!("decoder max abs error {worst:e}");
    assert!(worst <= 1e-4, "decoder max abs error {worst:e}");
}

#[test]
fn tiny_magvit_latent_matches_the_numpy_reference() {
    // The pre-quantisation latent z of the encode graph, batch 2 in one run.
    use mmada_runtime::open_artifact;
    let dir = fixture();
    let (cfg, weights) = load_magvit(&dir).unwrap();
    let ins = read_safetensors(&dir.join("inputs.safetensors")).unwrap();
    let outs = read_safetensors(&dir.join("outputs.safetensors")).unwrap();
    let g = mmada_models::magvit::encode_graph(&cfg, 2, 16, 16).unwrap();
    let art = mmada_codegen::compile::compile(&g, &Default::default()).unwrap();
    let mut exe = open_artifact(art, Target::Cpu).unwrap();
    for (n, t) in weights.iter().filter(|(n, _)| n.starts_with("encoder.")) {
        exe.set_input(n, t).unwrap();
    }
    let mut feed = indexmap::IndexMap::new();
    feed.insert("pixels".to_string(), ins["pixels"].clone());
    let got = exe.run(&feed).unwrap();
    let err = max_abs(&got["z"].to_f32_vec(), &outs["z"].to_f32_vec());
    eprintln!("encoder z max abs error {err:e}");
    assert!(err <= 1e-4, "z max abs error {err:e}");
    assert_eq!(
        got["codes"].to_i64_vec(),
        outs["codes_of_pixels"].to_i64_vec()
    );
}

#[test]
fn lfq_bit_order_channel_0_is_most_significant_and_zero_is_minus_one() {
    // Spec §7 by hand: z with only channel 0 positive → code 2^12; only channel 12 → 1;
    // all zero → 0 (z = 0 gives bit 0, i.e. −1); and decoding 4096 + 1 gives +1 at channels 0
    // and 12, −1 elsewhere.
    use mmada_ir::{DType, Graph};
    use mmada_models::nn::{lfq_codes, lfq_decode};
    let mut g = Graph::new();
    let z = g.input("z", DType::F32, [1, 13, 1, 4]).unwrap();
    let c = lfq_codes(&mut g, z).unwrap();
    g.set_output("codes", c).unwrap();
    let k = g.input("k", DType::I64, [1, 4]).unwrap();
    let q = lfq_decode(&mut g, k, 13, 1, 4).unwrap();
    g.set_output("q", q).unwrap();
    let mut zv = vec![-0.5f32; 13 * 4];
    zv[0] = 0.3; // position 0: channel 0 positive
    zv[12 * 4 + 1] = 2.0; // position 1: channel 12 positive
    for c in 0..13 {
        zv[c * 4 + 2] = 0.0; // position 2: all exactly zero
        zv[c * 4 + 3] = 1e-30; // position 3: all (barely) positive
    }
    let mut feed = indexmap::IndexMap::new();
    feed.insert(
        "z".to_string(),
        Tensor::from_f32([1, 13, 1, 4], zv).unwrap(),
    );
    feed.insert(
        "k".to_string(),
        Tensor::from_i64([1, 4], vec![4096 + 1, 0, 8191, 2]).unwrap(),
    );
    let art = mmada_codegen::compile::compile(&g, &Default::default()).unwrap();
    let mut exe = mmada_runtime::open_artifact(art, Target::Cpu).unwrap();
    let out = exe.run(&feed).unwrap();
    assert_eq!(out["codes"].to_i64_vec(), [4096, 1, 0, 8191]);
    let q = out["q"].to_f32_vec(); // [1, 13, 1, 4]
    let at = |c: usize, p: usize| q[c * 4 + p];
    for c in 0..13 {
        let want0 = if c == 0 || c == 12 { 1.0 } else { -1.0 };
        assert_eq!(at(c, 0), want0, "code 4097 channel {c}");
        assert_eq!(at(c, 1), -1.0, "code 0 channel {c}");
        assert_eq!(at(c, 2), 1.0, "code 8191 channel {c}");
        assert_eq!(
            at(c, 3),
            if c == 11 { 1.0 } else { -1.0 },
            "code 2 channel {c}"
        );
    }
}
