//! Attention's backward in FlashAttention-2's form (`Op::AttentionGrad`, issue 12):
//! - the fused pieces (statistics, dQ, dK | dV) equal the gradients of the unfused graph
//!   (matmul, softmax, matmul differentiated op by op), compiled on the host and with the
//!   GPU kernels run on the host through their lowering: f32 ≤ 1e-5, bf16 ≤ 2e-2, on the
//!   attention cases (odd lengths, grouped heads, all-masked rows, a query block against
//!   longer cached K/V, head dims 1 to 160);
//! - differentiating attention builds the three pieces and no softmax, and the compiled
//!   training graph holds no `[B, H, T, S]` buffer;
//! - a build for the host alone turns the pieces back into primitive ops (the
//!   `unfuse-attention-grad` pass) with the same values;
//! - the pieces' operand errors name what is wrong.

mod common;

use common::{attention_inputs, compile_all, gpu_kernels_on_host, AttentionCase, ATTENTION_CASES};
use mmada_codegen::plan::{Dispatch, LibraryCall};
use mmada_codegen::program::Program;
use mmada_ir::{autodiff, interp, AttentionPart, DType, Graph, Op, ReduceOp, Tensor};
use mmada_runtime::{open_artifact, Target};

/// `loss = Σ r ⊙ attention(q, k, v[, mask])` (fused or unfused), with the gradients of q, k
/// and v as outputs `grad_q`, `grad_k`, `grad_v`.
fn grad_graph(c: AttentionCase, dt: DType, fused: bool) -> Graph {
    let (b, h, hk, t, s, d, dv, masked) = c;
    let mut g = Graph::new();
    let q = g.param("q", dt, [b, h, t, d]).unwrap();
    let k = g.param("k", dt, [b, hk, s, d]).unwrap();
    let v = g.param("v", dt, [b, hk, s, dv]).unwrap();
    let r = g.input("r", dt, [b, h, t, dv]).unwrap();
    let m = masked.then(|| g.input("mask", DType::Bool, [b, s]).unwrap());
    let scale = 1.0 / (d as f64).sqrt();
    let o = if fused {
        g.attention(q, k, v, m, scale).unwrap()
    } else {
        g.attention_unfused(q, k, v, m, scale).unwrap()
    };
    let or = g.mul(o, r).unwrap();
    let loss = g.reduce(ReduceOp::Sum, or, &[0, 1, 2, 3], false).unwrap();
    g.set_output("loss", loss).unwrap();
    let grads = autodiff::grad(&mut g, loss, &[q, k, v]).unwrap();
    for (name, gid) in ["q", "k", "v"].iter().zip(grads) {
        g.set_output(&format!("grad_{name}"), gid).unwrap();
    }
    g
}

/// The largest |got − want| over the largest |want| (gradients of rows whose keys are all
/// masked, or of grouped heads, differ in scale by orders of magnitude, so the error is judged
/// against the tensor's own scale, not per element).
fn scaled_error(got: &Tensor, want: &Tensor) -> f64 {
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    assert_eq!(g.len(), w.len());
    let scale = w.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-30);
    let worst = g.iter().zip(&w).fold(0f64, |m, (a, b)| {
        if (a - b).is_nan() {
            f64::NAN
        } else {
            m.max((a - b).abs())
        }
    });
    worst / scale
}

#[test]
fn the_fused_backward_equals_the_unfused_graphs_gradients() {
    for &c in ATTENTION_CASES {
        for dt in [DType::F32, DType::BF16] {
            let fused = grad_graph(c, dt, true);
            let unfused = grad_graph(c, dt, false);
            let art = compile_all(&fused);
            let (gpu, _) = gpu_kernels_on_host(&art);
            let prog: Program = serde_json::from_slice(&art.sections["program.json"]).unwrap();
            let calls = prog
                .entries
                .iter()
                .flat_map(|e| &e.launches)
                .filter(|l| matches!(l.host, Dispatch::Call(LibraryCall::AttentionGradF32 { .. })))
                .count();
            // f32: the host calls its routine for each of the three pieces.
            assert_eq!(calls, if dt == DType::F32 { 3 } else { 0 }, "{c:?} {dt}");
            for (variant, art) in [("host", art), ("gpu kernels", gpu)] {
                let mut exe = open_artifact(art, Target::Cpu).unwrap();
                for seed in [3u64, 4] {
                    let ins = attention_inputs(&fused, c, seed);
                    // The reference: the unfused graph's gradients, interpreted in the dtype
                    // (bf16 rounds every intermediate, the fused pieces keep f32).
                    let want = interp::interpret(&unfused, &ins).unwrap();
                    let got = exe.run(&ins).unwrap();
                    for name in ["grad_q", "grad_k", "grad_v"] {
                        let e = scaled_error(&got[name], &want[name]);
                        let tol = if dt == DType::F32 { 1e-5 } else { 2e-2 };
                        eprintln!("{variant} {c:?} {dt} seed {seed} {name}: {e:e}");
                        assert!(e <= tol, "{variant} {c:?} {dt} {name}: error {e:e}");
                    }
                }
            }
        }
    }
}

/// The pieces' semantics in the interpreter also equal the unfused gradients in f64, to
/// rounding: the form is exact, not an approximation.
#[test]
fn the_backward_pieces_are_exact_in_f64() {
    for &c in ATTENTION_CASES {
        let fused = grad_graph(c, DType::F64, true);
        let unfused = grad_graph(c, DType::F64, false);
        let ins = attention_inputs(&fused, c, 9);
        let got = interp::interpret(&fused, &ins).unwrap();
        let want = interp::interpret(&unfused, &ins).unwrap();
        for name in ["grad_q", "grad_k", "grad_v"] {
            let e = scaled_error(&got[name], &want[name]);
            assert!(e <= 1e-12, "{c:?} {name}: {e:e}");
        }
    }
}

#[test]
fn differentiating_attention_builds_the_three_pieces_and_no_scores() {
    let c: AttentionCase = (2, 4, 2, 37, 53, 16, 16, true);
    let g = grad_graph(c, DType::F32, true);
    let parts: Vec<AttentionPart> = g
        .node_ids()
        .into_iter()
        .filter_map(|n| match g.node(n).op {
            Op::AttentionGrad { part, .. } => Some(part),
            _ => None,
        })
        .collect();
    for part in [AttentionPart::Stats, AttentionPart::Q, AttentionPart::Kv] {
        assert!(parts.contains(&part), "{part:?} in {parts:?}");
    }
    assert!(
        g.node_ids()
            .into_iter()
            .all(|n| !matches!(g.node(n).op, Op::Softmax { .. } | Op::MatMul)),
        "no softmax or product: the pieces recompute the probabilities"
    );
    // The compiled training graph: no launch writes a [B, H, T, S] = [2, 4, 37, 53] buffer.
    let art = compile_all(&g);
    let prog: Program = serde_json::from_slice(&art.sections["program.json"]).unwrap();
    let scores = (2 * 4 * 37 * 53) as u64;
    for e in &prog.entries {
        for l in &e.launches {
            let out = &prog.buffers[*l.args.last().unwrap()];
            assert!(out.len < scores, "{} writes {} values", l.node, out.len);
        }
    }
    // After CSE the three gradients share one statistics and one dK | dV node.
    let kernels: Vec<&str> = prog
        .entries
        .iter()
        .flat_map(|e| e.launches.iter().map(|l| l.node.as_str()))
        .filter(|n| n.contains("attention_"))
        .collect();
    assert_eq!(kernels.len(), 3, "{kernels:?}");
}

#[test]
fn bad_backward_operands_are_errors_that_say_why() {
    let mut g = Graph::new();
    let q = g.input("q", DType::F32, [1, 2, 5, 4]).unwrap();
    let k = g.input("k", DType::F32, [1, 2, 7, 4]).unwrap();
    let v = g.input("v", DType::F32, [1, 2, 7, 3]).unwrap();
    let d_o = g.input("d_o", DType::F32, [1, 2, 5, 3]).unwrap();
    let stats = g.input("stats", DType::F32, [1, 2, 5, 2]).unwrap();
    let delta = g.input("delta", DType::F32, [1, 2, 5]).unwrap();
    let bad_do = g.input("bad_do", DType::F32, [1, 2, 5, 4]).unwrap();
    let bad_stats = g.input("bad_stats", DType::BF16, [1, 2, 5, 2]).unwrap();
    let no_keys = g.input("no_keys", DType::F32, [1, 2, 0, 4]).unwrap();
    let ok = g.attention_grad(AttentionPart::Kv, &[q, k, v, d_o, stats, delta], None, 0.5);
    assert_eq!(g.node(ok.unwrap()).shape.0, vec![1, 2, 7, 7]);
    for (operands, want) in [
        (vec![q, k, v, bad_do, stats, delta], "output gradient"),
        (vec![q, k, v, d_o, bad_stats, delta], "statistics"),
        (vec![q, k, v, d_o, stats, stats], "Δ"),
    ] {
        let e = g
            .attention_grad(AttentionPart::Q, &operands, None, 0.5)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{e}");
    }
    let e = g
        .attention_grad(AttentionPart::Stats, &[q, no_keys], None, 0.5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least one key"), "{e}");
    // Attention itself has no second derivative: a clear error, not a panic.
    let o = g.attention(q, k, v, None, 0.5).unwrap();
    let l = g.reduce(ReduceOp::Sum, o, &[0, 1, 2, 3], false).unwrap();
    let gq = autodiff::grad(&mut g, l, &[q]).unwrap()[0];
    let l2 = g.reduce(ReduceOp::Sum, gq, &[0, 1, 2, 3], false).unwrap();
    let e = autodiff::grad(&mut g, l2, &[q]).unwrap_err().to_string();
    assert!(e.contains("second derivatives"), "{e}");
}

#[test]
fn a_host_only_build_turns_the_pieces_back_into_primitive_ops() {
    use mmada_codegen::backend::BackendOptions;
    use mmada_codegen::compile::{compile, CompileOptions};
    for &c in &ATTENTION_CASES[1..5] {
        let g = grad_graph(c, DType::F32, true);
        let art = compile(
            &g,
            &CompileOptions {
                backend: BackendOptions {
                    host: Some(mmada_codegen::HostCpu::native()),
                    gpu_archs: Vec::new(),
                },
                ..CompileOptions::default()
            },
        )
        .unwrap();
        let prog: Program = serde_json::from_slice(&art.sections["program.json"]).unwrap();
        let pieces = prog
            .entries
            .iter()
            .flat_map(|e| &e.launches)
            .filter(|l| l.node.contains("attention_"))
            .count();
        assert_eq!(pieces, 0, "{c:?}: no backward piece is left");
        let mut exe = open_artifact(art, Target::Cpu).unwrap();
        let ins = attention_inputs(&g, c, 6);
        let want = interp::interpret(&g, &ins).unwrap();
        let got = exe.run(&ins).unwrap();
        for name in ["grad_q", "grad_k", "grad_v"] {
            let e = scaled_error(&got[name], &want[name]);
            assert!(e <= 1e-5, "{c:?} {name}: {e:e}");
        }
    }
}
