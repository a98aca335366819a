//! Fused attention (`Op::Attention`, issue 12):
//! - the interpreter's semantics against a naive per-row implementation written here (f64),
//!   with grouped K/V heads, masks (rows whose keys are all masked too) and queries against a
//!   longer cached K/V;
//! - gradients against central differences in f64;
//! - the compiled op against the interpreter: the host routine (f32) and the generated GPU
//!   kernel run on the host through its lowering, f32 ≤ 1e-5, bf16 ≤ 2e-2, odd lengths, key
//!   counts across several key tiles;
//! - compiled gradients (the recomputing backward) against the interpreter;
//! - the fusion pass: the unfused pattern becomes one node with the same values, no softmax
//!   or `[B, H, T, S]` buffer left; a pattern whose probabilities are also used elsewhere is
//!   left alone.

mod common;

use common::{
    attention_inputs as inputs, compile_all, gpu_kernels_on_host, random_inputs,
    AttentionCase as Case, ATTENTION_CASES as CASES,
};
use indexmap::IndexMap;
use mmada_ir::gradcheck::{check_gradients, float, Fill, GradInput};
use mmada_ir::{autodiff, interp, max_rel_error, DType, Graph, NodeId, Op, ReduceOp, Tensor};
use mmada_runtime::{open_artifact, Target};

/// `attention(q, k, v[, mask])` with the given scale, fused or unfused.
fn graph(c: Case, dt: DType, scale: f64, fused: bool) -> Graph {
    let (b, h, hk, t, s, d, dv, masked) = c;
    let mut g = Graph::new();
    let q = g.input("q", dt, [b, h, t, d]).unwrap();
    let k = g.input("k", dt, [b, hk, s, d]).unwrap();
    let v = g.input("v", dt, [b, hk, s, dv]).unwrap();
    let m = masked.then(|| g.input("mask", DType::Bool, [b, s]).unwrap());
    let o = if fused {
        g.attention(q, k, v, m, scale).unwrap()
    } else {
        g.attention_unfused(q, k, v, m, scale).unwrap()
    };
    g.set_output("o", o).unwrap();
    g
}

/// Attention written out per row in f64: grouped heads, the f32 minimum added at masked keys.
fn naive(c: Case, ins: &IndexMap<String, Tensor>, scale: f64) -> Vec<f64> {
    let (b, h, hk, t, s, d, dv, masked) = c;
    let (q, k, v) = (
        ins["q"].to_f64_vec(),
        ins["k"].to_f64_vec(),
        ins["v"].to_f64_vec(),
    );
    let mask = masked.then(|| ins["mask"].to_f64_vec());
    let mut out = vec![0.0; b * h * t * dv];
    for bi in 0..b {
        for hi in 0..h {
            let kv = bi * hk + hi / (h / hk);
            for ti in 0..t {
                let qr = &q[((bi * h + hi) * t + ti) * d..][..d];
                let sc: Vec<f64> = (0..s)
                    .map(|j| {
                        let kr = &k[(kv * s + j) * d..][..d];
                        let dot: f64 = qr.iter().zip(kr).map(|(a, b)| a * b).sum();
                        let bias = match &mask {
                            Some(m) if m[bi * s + j] == 0.0 => f32::MIN as f64,
                            _ => 0.0,
                        };
                        dot * scale + bias
                    })
                    .collect();
                let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = sc.iter().map(|x| (x - mx).exp()).collect();
                let sum: f64 = e.iter().sum();
                for di in 0..dv {
                    let o: f64 = (0..s).map(|j| e[j] * v[(kv * s + j) * dv + di]).sum();
                    out[((bi * h + hi) * t + ti) * dv + di] = o / sum;
                }
            }
        }
    }
    out
}

#[test]
fn the_interpreter_gives_attention_its_definition() {
    for &c in CASES {
        for dt in [DType::F64, DType::F32] {
            let scale = 1.0 / (c.5 as f64).sqrt();
            let g = graph(c, dt, scale, true);
            let ins = inputs(&g, c, 7);
            let got = interp::interpret(&g, &ins).unwrap()["o"].to_f64_vec();
            let want = naive(c, &ins, scale);
            let tol = if dt == DType::F64 { 1e-12 } else { 2e-6 };
            for (i, (a, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - w).abs() <= tol * (1.0 + w.abs()),
                    "{c:?} {dt} element {i}: {a} vs {w}"
                );
            }
        }
    }
}

#[test]
fn attention_gradients_match_central_differences() {
    for &(b, h, hk, t, s, d, dv, masked) in &CASES[..4] {
        let (t, s) = (t.min(6), s.min(7));
        let mut ins: Vec<GradInput> = vec![
            float("q", &[b, h, t, d], -1.5, 1.5),
            float("k", &[b, hk, s, d], -1.5, 1.5),
            float("v", &[b, hk, s, dv], -1.5, 1.5),
        ];
        if masked {
            let m: Vec<bool> = (0..b * s).map(|i| i % 3 != 1).collect();
            ins.push(GradInput {
                name: "mask",
                shape: vec![b, s],
                fill: Fill::Bool(m),
            });
        }
        let worst = check_gradients(&ins, 1e-6, |g, x| {
            g.attention(x[0], x[1], x[2], x.get(3).copied(), 0.7)
        })
        .unwrap_or_else(|e| panic!("{b} {h} {hk} {t} {s} {d} {dv} {masked}: {e}"));
        eprintln!("grad {b}x{h}/{hk}x{t}x{s}x{d}x{dv} masked {masked}: worst {worst:e}");
    }
}

#[test]
fn compiled_attention_matches_the_interpreter_on_the_host_and_the_gpu_kernel() {
    for &c in CASES {
        for dt in [DType::F32, DType::BF16] {
            let scale = 1.0 / (c.5 as f64).sqrt();
            let g = graph(c, dt, scale, true);
            let art = compile_all(&g);
            let (gpu, replaced) = gpu_kernels_on_host(&art);
            // f32: the host calls its routine; bf16 up to head dim 128: the GPU kernel is the
            // tensor-core one, the host runs the SIMT kernel. Above, both run the SIMT kernel.
            let tensor_cores = dt == DType::BF16 && c.5 <= 128 && c.6 <= 128;
            assert_eq!(
                replaced,
                usize::from(dt == DType::F32 || tensor_cores),
                "{c:?} {dt}"
            );
            for (variant, art) in [("host", art), ("gpu kernel", gpu)] {
                let mut exe = open_artifact(art, Target::Cpu).unwrap();
                for seed in [1u64, 2] {
                    let ins = inputs(&g, c, seed);
                    let want = interp::interpret(&g, &ins).unwrap();
                    let got = exe.run(&ins).unwrap();
                    // f32: products summed in another order and another exp, a few ulps of
                    // sums of up to 130 terms; bf16: the interpreter rounds the scores and
                    // probabilities to bf16 (2^-8 each), the kernel keeps them in f32.
                    // Outputs are averages of values in [-2, 2], so near-zero averages carry
                    // absolute, not relative, error: errors are judged against at least 0.1
                    // (f32) or 1 (bf16).
                    let (tol, floor) = if dt == DType::F32 {
                        (1e-5, 0.1)
                    } else {
                        (2e-2, 1.0)
                    };
                    let e = max_rel_error(&got["o"], &want["o"], floor);
                    eprintln!("{variant} {c:?} {dt} seed {seed}: {e:e}");
                    assert!(e <= tol, "{variant} {c:?} {dt}: error {e:e}");
                }
            }
        }
    }
}

/// `loss = Σ r ⊙ attention(...)`, with the gradients of q, k, v as outputs.
fn grad_graph(c: Case) -> Graph {
    let (b, h, hk, t, s, d, dv, masked) = c;
    let mut g = Graph::new();
    let q = g.param("q", DType::F32, [b, h, t, d]).unwrap();
    let k = g.param("k", DType::F32, [b, hk, s, d]).unwrap();
    let v = g.param("v", DType::F32, [b, hk, s, dv]).unwrap();
    let r = g.input("r", DType::F32, [b, h, t, dv]).unwrap();
    let m = masked.then(|| g.input("mask", DType::Bool, [b, s]).unwrap());
    let o = g.attention(q, k, v, m, 0.3).unwrap();
    let or = g.mul(o, r).unwrap();
    let loss = g.reduce(ReduceOp::Sum, or, &[0, 1, 2, 3], false).unwrap();
    g.set_output("loss", loss).unwrap();
    let grads = autodiff::grad(&mut g, loss, &[q, k, v]).unwrap();
    for (name, gid) in ["q", "k", "v"].iter().zip(grads) {
        g.set_output(&format!("grad_{name}"), gid).unwrap();
    }
    g
}

#[test]
fn compiled_attention_gradients_match_the_interpreter() {
    for &c in &CASES[1..4] {
        let g = grad_graph(c);
        let mut exe = open_artifact(compile_all(&g), Target::Cpu).unwrap();
        let ins = inputs(&g, c, 5);
        let want = interp::interpret(&g, &ins).unwrap();
        let got = exe.run(&ins).unwrap();
        for (name, w) in &want {
            let e = max_rel_error(&got[name], w, 1e-2);
            assert!(e <= 1e-4, "{c:?} {name}: {e:e}");
        }
    }
}

fn count(g: &Graph, want: impl Fn(&Op) -> bool) -> usize {
    g.node_ids()
        .into_iter()
        .filter(|&n| want(&g.node(n).op))
        .count()
}

/// The model's layout: q, k, v from `[B, T, H·D]` projections, reshaped and permuted to
/// `[B, H, T, D]`, in the unfused form (optionally also returning the probabilities).
fn model_layout(masked: bool, expose_probs: bool) -> (Graph, NodeId) {
    let (b, t, h, d) = (2, 11, 3, 4);
    let mut g = Graph::new();
    let heads = |g: &mut Graph, name: &str| {
        let x = g.input(name, DType::F32, [b, t, h * d]).unwrap();
        let x = g.reshape(x, [b, t, h, d]).unwrap();
        g.permute(x, &[0, 2, 1, 3]).unwrap()
    };
    let q = heads(&mut g, "q");
    let k = heads(&mut g, "k");
    let v = heads(&mut g, "v");
    let m = masked.then(|| g.input("mask", DType::Bool, [b, t]).unwrap());
    let o = g.attention_unfused(q, k, v, m, 0.5).unwrap();
    g.set_output("o", o).unwrap();
    if expose_probs {
        let p = g.operands(o)[0];
        g.set_output("p", p).unwrap();
    }
    (g, o)
}

#[test]
fn the_fusion_pass_turns_the_unfused_form_into_one_attention() {
    for masked in [false, true] {
        let (g, _) = model_layout(masked, false);
        let mut opt = g.clone();
        mmada_passes::default_pipeline().run(&mut opt).unwrap();
        assert_eq!(count(&opt, |o| matches!(o, Op::Attention { .. })), 1);
        let softmaxes = count(&opt, |o| matches!(o, Op::Softmax { .. }))
            + count(&opt, |o| match o {
                Op::Fused { body } => body
                    .nodes
                    .iter()
                    .any(|n| matches!(n.op, Op::Softmax { .. })),
                _ => false,
            });
        assert_eq!(softmaxes, 0, "masked {masked}: a softmax is left");
        let ins = random_inputs(&g, 3, -2.0, 2.0);
        let want = interp::interpret(&g, &ins).unwrap();
        let got = interp::interpret(&opt, &ins).unwrap();
        let e = max_rel_error(&got["o"], &want["o"], 1e-6);
        assert!(e <= 1e-6, "masked {masked}: fused differs by {e:e}");
        // No buffer of the plan holds [B, H, T, S] scores.
        let art = compile_all(&g);
        let prog = common::program(&art);
        let scores = 2 * 3 * 11 * 11;
        assert!(
            prog.buffers.iter().all(|b| b.len < scores as u64),
            "masked {masked}: a buffer of {scores} elements (the scores) is planned"
        );
        let mut exe = open_artifact(art, Target::Cpu).unwrap();
        let e = max_rel_error(&exe.run(&ins).unwrap()["o"], &want["o"], 1e-2);
        assert!(e <= 1e-5, "masked {masked}: compiled {e:e}");
    }
    // Probabilities also read elsewhere: fusing would compute the scores twice.
    let (g, _) = model_layout(true, true);
    let mut opt = g.clone();
    mmada_passes::default_pipeline().run(&mut opt).unwrap();
    assert_eq!(count(&opt, |o| matches!(o, Op::Attention { .. })), 0);
}

#[test]
fn bad_attention_operands_are_errors_that_say_why() {
    let mut g = Graph::new();
    let q = g.input("q", DType::F32, [1, 3, 4, 8]).unwrap();
    let k = g.input("k", DType::F32, [1, 2, 5, 8]).unwrap();
    let v = g.input("v", DType::F32, [1, 2, 5, 8]).unwrap();
    let e = g.attention(q, k, v, None, 0.5).unwrap_err().to_string();
    assert!(e.contains("not a multiple"), "{e}");
    let k2 = g.input("k2", DType::F32, [1, 3, 5, 7]).unwrap();
    let v2 = g.input("v2", DType::F32, [1, 3, 5, 8]).unwrap();
    let e = g.attention(q, k2, v2, None, 0.5).unwrap_err().to_string();
    assert!(e.contains("disagree"), "{e}");
    let k3 = g.input("k3", DType::F32, [1, 3, 5, 8]).unwrap();
    let m = g.input("m", DType::Bool, [1, 4]).unwrap();
    let e = g
        .attention(q, k3, v2, Some(m), 0.5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("key mask must be bool [1, 5]"), "{e}");
    let vh = g.input("vh", DType::BF16, [1, 3, 5, 8]).unwrap();
    let e = g.attention(q, k3, vh, None, 0.5).unwrap_err().to_string();
    assert!(e.contains("one float dtype"), "{e}");
}

/// Graph specs write fused attention as `attention(q, k, v, scale)` (the GPU bundle's
/// attention cases): the same values as the builder's op; a non-number scale is refused.
#[test]
fn graph_specs_build_attention() {
    let text = "name = \"a\"\n[inputs]\nq = { dtype = \"f32\", shape = [1, 2, 5, 8] }\n\
                k = { dtype = \"f32\", shape = [1, 1, 7, 8] }\n\
                v = { dtype = \"f32\", shape = [1, 1, 7, 4] }\n\
                [outputs]\no = \"attention(q, k, v, 0.35)\"\n";
    let g = mmada_models::GraphSpec::parse(text, "a.toml")
        .unwrap()
        .build("a.toml")
        .unwrap();
    let want = graph((1, 2, 1, 5, 7, 8, 4, false), DType::F32, 0.35, true);
    let ins = random_inputs(&g, 3, -1.0, 1.0);
    let a = &interp::interpret(&g, &ins).unwrap()["o"];
    let b = &interp::interpret(&want, &ins).unwrap()["o"];
    assert_eq!(max_rel_error(a, b, 1e-6), 0.0);
    let bad = text.replace("0.35", "q");
    let err = mmada_models::GraphSpec::parse(&bad, "a.toml")
        .unwrap()
        .build("a.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("scale must be a number"), "{err}");
}
