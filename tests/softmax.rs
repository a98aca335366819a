//! The softmax op, compiled, against the reference interpreter: the host variant (one thread
//! per row) and the GPU kernel (one block per row, shared-memory trees), which runs here
//! through the host lowering when the plan's host variants are removed. Odd row lengths (tails
//! of the 16 partial sums, rows longer than a block), every axis, masked (−∞) entries, and
//! 16-bit dtypes.

mod common;

use common::{compile_all, gpu_kernels_on_host, random_inputs};
use mmada_codegen::artifact::Artifact;
use mmada_ir::{interp, max_rel_error, BinaryOp, CompareOp, DType, Graph, Op};
use mmada_runtime::{open_artifact, Target};

/// `softmax(4x, axis)`, with entries where `x > 0.7` set to −∞ when `masked`.
fn graph(dt: DType, shape: &[usize], axis: i64, masked: bool) -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", dt, shape.to_vec()).unwrap();
    let mut z = g.binary_scalar(BinaryOp::Mul, x, 4.0).unwrap();
    if masked {
        let cut = g.full(dt, 0.7, shape.to_vec()).unwrap();
        let hide = g.compare(CompareOp::Gt, x, cut).unwrap();
        let ninf = g.full(dt, f64::NEG_INFINITY, shape.to_vec()).unwrap();
        z = g.where_(hide, ninf, z).unwrap();
    }
    let y = g.softmax(z, axis).unwrap();
    g.set_output("y", y).unwrap();
    g
}

/// The same artifact with every launch running its generic (GPU) kernel on the host.
fn generic_kernels_only(art: &Artifact) -> Artifact {
    let (art, replaced) = gpu_kernels_on_host(art);
    assert!(replaced > 0, "the softmax launch has a host variant");
    art
}

#[test]
fn softmax_matches_the_interpreter_on_host_and_gpu_kernels() {
    let cases: &[(&[usize], i64, bool)] = &[
        (&[37, 53], -1, false),
        (&[37, 53], -1, true),
        (&[3, 300, 5], 1, true),
        (&[6, 5, 7], 0, false),
        (&[9, 1], -1, false),
        (&[2, 16], -1, true),
        (&[4, 611], -1, true),
    ];
    for dt in [DType::F32, DType::BF16] {
        for &(shape, axis, masked) in cases {
            let g = graph(dt, shape, axis, masked);
            let softmaxes = g
                .node_ids()
                .into_iter()
                .filter(|&n| matches!(g.node(n).op, Op::Softmax { .. }))
                .count();
            assert_eq!(softmaxes, 1);
            let art = compile_all(&g);
            for (variant, art) in [("host", art.clone()), ("gpu", generic_kernels_only(&art))] {
                let mut exe = open_artifact(art, Target::Cpu).unwrap();
                for seed in [1u64, 2] {
                    let ins = random_inputs(&g, seed, -1.0, 1.0);
                    let want = interp::interpret(&g, &ins).unwrap();
                    let got = exe.run(&ins).unwrap();
                    // f32: a few ulp from the exponential and the reciprocal; bf16: one
                    // rounding of the result (2^-8) in either implementation.
                    let tol = if dt == DType::F32 { 2e-6 } else { 8e-3 };
                    let e = max_rel_error(&got["y"], &want["y"], 1e-6);
                    assert!(
                        e <= tol,
                        "{variant} {dt} {shape:?} axis {axis} masked {masked}: error {e:e}"
                    );
                }
            }
        }
    }
}
