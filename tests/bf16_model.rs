//! bf16 end to end for inference (issue 12, `mmada compile --dtype bf16`): the transformer's
//! forward built in bf16 (weights, activations; norms, RoPE and softmax statistics in f32,
//! products accumulated in f32) compiled for the host and for the GPU, whose kernels (the
//! tensor-core products and flash attention included) run here through their host lowering,
//! against the interpreter of the same bf16 graph and against the f32 model on the same
//! (bf16-valued) weights.

mod common;

use common::{compile_all, gpu_kernels_on_host, random_inputs, small_tiny_config};
use indexmap::IndexMap;
use mmada_ir::{interp, DType, Tensor};
use mmada_models::llada::forward_graph;
use mmada_runtime::{open_artifact, Target};

/// Worst |a − b| over the logits, divided by the largest |b| (logits are compared as a whole:
/// a token's logit near 0 carries the absolute error of the rest).
fn error(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_f64_vec(), b.to_f64_vec());
    let scale = b.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
        / scale
}

#[test]
fn bf16_forward_matches_the_interpreter_and_the_f32_model() {
    let cfg = small_tiny_config();
    let (batch, seq) = (2, 37);
    let g32 = forward_graph(&cfg, batch, seq, true).unwrap();
    let g16 = forward_graph(&cfg.computing_in(DType::BF16), batch, seq, true).unwrap();
    // Weights in [-0.5, 0.5) rounded to bf16: the same values for both models.
    let base = random_inputs(&g32, 7, -0.5, 0.5);
    let mut ins32 = IndexMap::new();
    let mut ins16 = IndexMap::new();
    for (name, t) in base {
        if t.dtype() == DType::F32 {
            let r = Tensor::from_f64(DType::BF16, t.shape().clone(), &t.to_f64_vec()).unwrap();
            let back = Tensor::from_f64(DType::F32, t.shape().clone(), &r.to_f64_vec()).unwrap();
            ins16.insert(name.clone(), r);
            ins32.insert(name, back);
        } else {
            ins16.insert(name.clone(), t.clone());
            ins32.insert(name, t);
        }
    }
    let want16 = &interp::interpret(&g16, &ins16).unwrap()["logits"];
    let want32 = &interp::interpret(&g32, &ins32).unwrap()["logits"];
    assert_eq!(want16.dtype(), DType::BF16);
    let art = compile_all(&g16);
    let (on_host, replaced) = gpu_kernels_on_host(&art);
    assert!(
        replaced >= 2,
        "the products and attention have host variants"
    );
    for (variant, art) in [("host", art), ("gpu kernels", on_host)] {
        let mut exe = open_artifact(art, Target::Cpu).unwrap();
        let got = &exe.run(&ins16).unwrap()["logits"];
        assert_eq!(got.dtype(), DType::BF16);
        let e16 = error(got, want16);
        let e32 = error(got, want32);
        let ref_gap = error(want16, want32);
        eprintln!(
            "{variant}: vs bf16 interpreter {e16:.3e}, vs f32 model {e32:.3e} (interpreter bf16 \
             vs f32: {ref_gap:.3e})"
        );
        // Two layers of bf16 activations (2^-9 relative per rounding, a few dozen roundings
        // on the way, the interpreter rounding after every op and the kernels after each
        // fused group): a few percent of the largest logit; and no further from the f32
        // model than the interpreter's own bf16 evaluation is, with room for one more
        // rounding.
        assert!(e16 <= 3e-2, "{variant}: {e16:e}");
        assert!(
            e32 <= ref_gap * 1.5 + 1e-2,
            "{variant}: {e32:e} vs {ref_gap:e}"
        );
    }
}
