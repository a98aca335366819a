//! On a machine with a CUDA device: compiled PTX runs and matches the interpreter.
//! Skipped (with a message) where there is no device, unless `MMADA_REQUIRE_CUDA=1`, which
//! makes a missing device a failure; scripts/gpu-check.sh runs it on GPUs.

mod common;

use mmada_ir::{interp, max_rel_error, Graph};
use mmada_runtime::{open_artifact, Target};

fn check_on_cuda(g: &Graph, seeds: &[u64], tol: f64) {
    let art = common::compile_all(g);
    let mut exe = open_artifact(art, Target::Cuda).expect("cuda executor");
    for &s in seeds {
        let ins = common::random_inputs(g, s, -1.0, 1.0);
        let want = interp::interpret(g, &ins).unwrap();
        let got = exe.run(&ins).unwrap();
        for (n, w) in &want {
            let e = max_rel_error(&got[n], w, 1e-30);
            eprintln!("cuda seed {s} {n}: max rel error {e:.3e}");
            assert!(e <= tol, "{n}: {e:e}");
        }
    }
}

#[test]
fn example_on_cuda_matches_interpreter() {
    if !common::cuda_or_skip() {
        return;
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/softmax_linear.toml");
    let spec = mmada_models::GraphSpec::read(std::path::Path::new(path)).unwrap();
    let g = spec.build(path).unwrap();
    check_on_cuda(&g, &[0, 1, 2, 3], 1e-5);
}

#[test]
fn larger_shapes_on_cuda_match_interpreter() {
    if !common::cuda_or_skip() {
        return;
    }
    for (m, k, n) in [(3, 5, 7), (130, 257, 301)] {
        check_on_cuda(&common::softmax_linear(m, k, n), &[5], 1e-5);
    }
}
