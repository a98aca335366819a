//! The confidence top-k remask of the text sampler: the fused op ([`Op::Remask`]) against the
//! primitive graph it replaces (argmax of the noisy logits, softmax, gather, top-k over
//! positions, scatter, commit), on the interpreter and compiled (where the `fuse-remask` pass
//! turns the primitive graph into the streaming kernel), on random logits with many ties,
//! rows that are not masked, blocks that end early, commit counts from 0 to more than the
//! candidates, Gumbel noise on and off, and both confidence rules. Plus one case computed by
//! hand, and the plan of the fused step: no `[B, L, V]` buffer but the logits.

mod common;

use common::{compile_all, program};
use indexmap::IndexMap;
use mmada_ir::{interp, DType, Graph, Op, RemaskArgs, Remasking, Shape, Tensor};
use mmada_passes::{default_pipeline, FuseRemask, Pass};
use mmada_runtime::{open_artifact, Target};
use rand::{Rng, SeedableRng};

const MASK: i64 = 7;

fn graph(b: usize, l: usize, v: usize, remasking: Remasking, fused: bool) -> Graph {
    let mut g = Graph::new();
    let logits = g.input("logits", DType::F32, [b, l, v]).unwrap();
    let x = g.input("x", DType::I64, [b, l]).unwrap();
    let s = |g: &mut Graph, n: &str, dt: DType| g.input(n, dt, Vec::<usize>::new()).unwrap();
    let args = RemaskArgs {
        logits,
        x,
        temperature: s(&mut g, "temperature", DType::F32),
        seed: s(&mut g, "seed", DType::I64),
        offset: s(&mut g, "offset", DType::I64),
        block_end: s(&mut g, "block_end", DType::I64),
        k: s(&mut g, "k", DType::I64),
        threshold: s(&mut g, "threshold", DType::F32),
    };
    let y = if fused {
        g.remask(args, MASK, remasking, 5).unwrap()
    } else {
        g.remask_unfused(args, MASK, remasking, 5).unwrap()
    };
    g.set_output("y", y).unwrap();
    g
}

struct Case {
    b: usize,
    l: usize,
    v: usize,
    temperature: f32,
    block_end: i64,
    k: i64,
    threshold: f32,
}

/// Logits on a grid of quarter steps in [-2, 2] (argmax ties), some rows repeated exactly
/// (confidence ties between positions); a sequence with about two thirds masked.
fn inputs(c: &Case, seed: u64) -> IndexMap<String, Tensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut logits: Vec<f32> = (0..c.b * c.l * c.v)
        .map(|_| rng.random_range(-8..=8) as f32 / 4.0)
        .collect();
    for row in 1..c.b * c.l {
        if rng.random_range(0..4) == 0 {
            let (src, dst) = ((row - 1) * c.v, row * c.v);
            logits.copy_within(src..src + c.v, dst);
        }
    }
    let x: Vec<i64> = (0..c.b * c.l)
        .map(|_| {
            if rng.random_range(0..3) == 0 {
                rng.random_range(0..MASK)
            } else {
                MASK
            }
        })
        .collect();
    let mut m = IndexMap::new();
    m.insert(
        "logits".into(),
        Tensor::from_f32(Shape(vec![c.b, c.l, c.v]), logits).unwrap(),
    );
    m.insert(
        "x".into(),
        Tensor::from_i64(Shape(vec![c.b, c.l]), x).unwrap(),
    );
    m.insert(
        "temperature".into(),
        Tensor::from_f32(Shape::scalar(), vec![c.temperature]).unwrap(),
    );
    let i = |v: i64| Tensor::from_i64(Shape::scalar(), vec![v]).unwrap();
    m.insert("seed".into(), i(seed as i64 * 7919));
    m.insert("offset".into(), i(12_345));
    m.insert("block_end".into(), i(c.block_end));
    m.insert("k".into(), i(c.k));
    m.insert(
        "threshold".into(),
        Tensor::from_f32(Shape::scalar(), vec![c.threshold]).unwrap(),
    );
    m
}

fn cases() -> Vec<Case> {
    let c = |b, l, v, temperature, block_end, k, threshold| Case {
        b,
        l,
        v,
        temperature,
        block_end,
        k,
        threshold,
    };
    // Thresholds: 2 (off), and values inside the confidences of the quarter-step logits
    // (their softmax maxima are mostly 0.1–0.5 for V = 5–37).
    vec![
        c(2, 13, 37, 0.0, 13, 3, 2.0),
        c(2, 13, 37, 0.8, 9, 2, 2.0),
        c(1, 40, 300, 0.0, 24, 5, 2.0),
        c(3, 7, 5, 1.5, 7, 0, 2.0),
        c(3, 7, 5, 0.0, 4, 100, 2.0),
        c(1, 70, 11, 0.3, 70, 1, 2.0),
        c(2, 13, 37, 0.0, 13, 1, 0.12),
        c(3, 7, 5, 0.5, 7, 1, 0.4),
        c(1, 40, 11, 0.0, 40, 0, 0.3),
    ]
}

#[test]
fn fused_remask_equals_the_primitive_graph_interpreted_and_compiled() {
    for remasking in [Remasking::LowConfidence, Remasking::Random] {
        for (ci, c) in cases().iter().enumerate() {
            let unfused = graph(c.b, c.l, c.v, remasking, false);
            let fused = graph(c.b, c.l, c.v, remasking, true);
            let art = compile_all(&unfused);
            let mut exe = open_artifact(art, Target::Cpu).unwrap();
            for seed in [1u64, 2] {
                let ins = inputs(c, seed);
                let want = interp::interpret(&unfused, &ins).unwrap()["y"].to_i64_vec();
                let x = ins["x"].to_i64_vec();
                let got_fused = interp::interpret(&fused, &ins).unwrap()["y"].to_i64_vec();
                assert_eq!(
                    got_fused, want,
                    "{remasking:?} case {ci} seed {seed}: interpreter"
                );
                let compiled = exe.run(&ins).unwrap()["y"].to_i64_vec();
                assert_eq!(
                    compiled, want,
                    "{remasking:?} case {ci} seed {seed}: compiled"
                );
                // The case commits something (or, with k = 0 and no threshold, nothing).
                let changed = want.iter().zip(&x).filter(|(a, b)| a != b).count();
                if c.k == 0 && c.threshold > 1.0 {
                    assert_eq!(changed, 0);
                } else {
                    assert!(changed > 0, "case {ci}: nothing committed");
                }
            }
        }
    }
}

#[test]
fn the_pass_finds_the_pattern_and_the_plan_holds_only_the_logits_at_full_size() {
    let (b, l, v) = (2, 13, 37);
    let mut g = graph(b, l, v, Remasking::LowConfidence, false);
    assert!(FuseRemask.run(&mut g).unwrap(), "the pass fused nothing");
    let mut g2 = graph(b, l, v, Remasking::LowConfidence, false);
    default_pipeline().run(&mut g2).unwrap();
    let kinds: Vec<String> = g2
        .node_ids()
        .iter()
        .map(|&n| g2.node(n).op.name())
        .collect();
    assert!(kinds.iter().any(|k| k == "remask"), "{kinds:?}");
    assert!(
        !kinds.iter().any(|k| k == "softmax" || k == "topk"),
        "{kinds:?}"
    );
    let art = compile_all(&graph(b, l, v, Remasking::LowConfidence, false));
    let full = (b * l * v) as u64;
    let big: Vec<_> = program(&art)
        .buffers
        .iter()
        .filter(|d| d.len >= full)
        .cloned()
        .collect();
    assert_eq!(big.len(), 1, "only the logits are [B, L, V]: {big:?}");
    // Without the pass the same graph stores the noisy logits and the probabilities.
    let mut g3 = graph(b, l, v, Remasking::LowConfidence, false);
    mmada_passes::FuseElementwise::default()
        .run(&mut g3)
        .unwrap();
    assert!(g3
        .node_ids()
        .iter()
        .any(|&n| matches!(g3.node(n).op, Op::Softmax { .. } | Op::Fused { .. })));
}

#[test]
fn remask_by_hand() {
    // One row of 5 positions, V = 3, positions 0 and 3 are not masked; block ends at 4.
    // Masked 1: logits (0, 2, 0) → token 1, p = e²/(e²+2) ≈ 0.787;
    // masked 2: (1, 1, 1) → token 0 (tie to the lower id), p = 1/3;
    // masked 4: (5, 0, 0), outside the block: never committed.
    // k = 1 commits position 1 only; k = 2 also position 2; k = 0 with threshold 0.5 commits
    // position 1 (0.787 > 0.5), with threshold 0.3 also position 2 (1/3 > 0.3).
    let g = graph(1, 5, 3, Remasking::LowConfidence, true);
    let logits = vec![9., 9., 9., 0., 2., 0., 1., 1., 1., 9., 9., 9., 5., 0., 0.];
    for (k, thr, want) in [
        (0, 2.0, vec![4, MASK, MASK, 6, MASK]),
        (1, 2.0, vec![4, 1, MASK, 6, MASK]),
        (2, 2.0, vec![4, 1, 0, 6, MASK]),
        (5, 2.0, vec![4, 1, 0, 6, MASK]),
        (0, 0.5, vec![4, 1, MASK, 6, MASK]),
        (0, 0.3, vec![4, 1, 0, 6, MASK]),
        (1, 0.9, vec![4, 1, MASK, 6, MASK]),
    ] {
        let mut ins = IndexMap::new();
        ins.insert(
            "logits".into(),
            Tensor::from_f32(Shape(vec![1, 5, 3]), logits.clone()).unwrap(),
        );
        ins.insert(
            "x".into(),
            Tensor::from_i64(Shape(vec![1, 5]), vec![4, MASK, MASK, 6, MASK]).unwrap(),
        );
        ins.insert(
            "temperature".into(),
            Tensor::from_f32(Shape::scalar(), vec![0.0]).unwrap(),
        );
        let i = |v: i64| Tensor::from_i64(Shape::scalar(), vec![v]).unwrap();
        ins.insert("seed".into(), i(3));
        ins.insert("offset".into(), i(0));
        ins.insert("block_end".into(), i(4));
        ins.insert("k".into(), i(k));
        ins.insert(
            "threshold".into(),
            Tensor::from_f32(Shape::scalar(), vec![thr]).unwrap(),
        );
        let got = interp::interpret(&g, &ins).unwrap()["y"].to_i64_vec();
        assert_eq!(got, want, "k = {k}, threshold {thr}");
        let mut exe = open_artifact(compile_all(&g), Target::Cpu).unwrap();
        assert_eq!(
            exe.run(&ins).unwrap()["y"].to_i64_vec(),
            want,
            "compiled, k = {k}"
        );
    }
}
