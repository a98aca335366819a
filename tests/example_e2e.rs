//! The walking skeleton end to end: the example spec through passes, MLIR and LLVM to host code,
//! run in process, against the reference interpreter.

mod common;

use common::{compile_all, worst_error_cpu};
use mmada_models::GraphSpec;

#[test]
fn example_spec_matches_interpreter_on_several_seeds() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/softmax_linear.toml");
    let spec = GraphSpec::read(std::path::Path::new(path)).unwrap();
    let g = spec.build(path).unwrap();
    let art = compile_all(&g);
    let prog = common::program(&art);
    assert_eq!(
        prog.entries[0].launches.len(),
        2,
        "matmul + softmax (bias add fused)"
    );
    let worst = worst_error_cpu(&g, &art, &[0, 1, 2, 3, 4, 5, 6, 7], -1.0, 1.0, 1e-30);
    eprintln!("softmax(x@w+b) 37x53 @ 53x29: worst relative error {worst:.3e}");
    assert!(worst <= 1e-5, "worst relative error {worst:e}");
}

#[test]
fn softmax_linear_at_odd_sizes() {
    // Tiny, single-tile, multi-tile with tails, and a long row (block reduction path).
    for (m, k, n) in [(1, 1, 1), (3, 5, 7), (17, 33, 65), (5, 129, 301)] {
        let g = common::softmax_linear(m, k, n);
        let art = compile_all(&g);
        let worst = worst_error_cpu(&g, &art, &[11, 12, 13], -1.0, 1.0, 1e-30);
        eprintln!("softmax(x@w+b) {m}x{k} @ {k}x{n}: worst relative error {worst:.3e}");
        assert!(worst <= 1e-5, "{m}x{k}x{n}: {worst:e}");
    }
}
