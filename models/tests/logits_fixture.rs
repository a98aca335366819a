//! Logits of the tiny checkpoint fixture (written by an independent NumPy implementation,
//! scripts/reference/llada_reference.py) match to 1e-4 max absolute error in f32: single-file
//! f32 weights with and without the key mask, and sharded bf16 weights.

use mmada_codegen::backend::BackendOptions;
use mmada_models::logits::logits_from_checkpoint;
use mmada_runtime::{tensor_io::read_safetensors, Target};
use std::path::PathBuf;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny_llada")
}

fn host() -> BackendOptions {
    BackendOptions {
        gpu_archs: vec![],
        ..BackendOptions::default()
    }
}

fn max_abs(a: &mmada_ir::Tensor, b: &mmada_ir::Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape());
    (0..a.numel())
        .map(|i| (a.get_f64(i) - b.get_f64(i)).abs())
        .fold(0.0, f64::max)
}

#[test]
fn tiny_checkpoint_logits_match_numpy_reference() {
    let f = fixture();
    let ins = read_safetensors(&f.join("inputs.safetensors")).unwrap();
    let want = read_safetensors(&f.join("logits.safetensors")).unwrap();
    let ids = &ins["input_ids"];
    let got = logits_from_checkpoint(&f, ids, None, Target::Cpu, host()).unwrap();
    let e = max_abs(&got, &want["logits"]);
    eprintln!("f32 checkpoint: max |logit error| {e:.2e}");
    assert!(e <= 1e-4, "{e}");
    let got =
        logits_from_checkpoint(&f, ids, Some(&ins["attention_mask"]), Target::Cpu, host()).unwrap();
    let e = max_abs(&got, &want["logits_masked"]);
    eprintln!("f32 checkpoint with key mask: max |logit error| {e:.2e}");
    assert!(e <= 1e-4, "{e}");
    let got =
        logits_from_checkpoint(&f.join("model-bf16"), ids, None, Target::Cpu, host()).unwrap();
    let e = max_abs(&got, &want["logits_bf16"]);
    eprintln!("sharded bf16 checkpoint: max |logit error| {e:.2e}");
    assert!(e <= 1e-4, "{e}");
}
