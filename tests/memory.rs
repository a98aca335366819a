//! The memory planner: intermediates with disjoint lifetimes share buffers, and results stay
//! those of the interpreter. Skip connections keep several same-shaped intermediates alive at
//! once, so storage shared too early would show up as wrong numbers.

mod common;

use common::{compile_all, worst_error_cpu};
use mmada_codegen::plan::BufferKind;
use mmada_codegen::program::Program;
use mmada_ir::{BinaryOp, DType, Graph, UnaryOp};

/// `h_i = sin(0.2 · h_{i-1} · w_i) + h_{i-3}` for 9 layers, with `h_4` and `h_9` as outputs.
fn skip_graph() -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [33, 47]).unwrap();
    let mut h = vec![x];
    for i in 1..=9 {
        let w = g.input(&format!("w{i}"), DType::F32, [47, 47]).unwrap();
        // Scaled so that each layer has a gain below 1 (errors do not grow with depth).
        let p = g.matmul(h[i - 1], w).unwrap();
        let p = g.binary_scalar(BinaryOp::Mul, p, 0.2).unwrap();
        let t = g.unary(UnaryOp::Sin, p).unwrap();
        let v = if i >= 3 {
            g.add2(t, h[i - 3]).unwrap()
        } else {
            t
        };
        h.push(v);
    }
    g.set_output("h4", h[4]).unwrap();
    g.set_output("h9", h[9]).unwrap();
    g
}

#[test]
fn shared_buffers_keep_results_exact() {
    let g = skip_graph();
    let art = compile_all(&g);
    let prog = common::program(&art);
    let live = |p: &Program| {
        p.buffers
            .iter()
            .filter(|b| matches!(b.kind, BufferKind::Intermediate) && b.len > 0)
            .count()
    };
    // 18 launches (9 products, 9 sin-and-add kernels) each write an intermediate; two are
    // outputs. Without sharing there would be 18 buffers.
    assert_eq!(prog.entries[0].launches.len(), 18);
    let n = live(&prog);
    assert!(n <= 8, "{n} intermediate buffers after sharing");
    let worst = worst_error_cpu(&g, &art, &[1, 2, 3], -1.0, 1.0, 1.0);
    assert!(worst <= 1e-5, "worst relative error {worst:e}");
}

/// Issue 12: with fused attention, the bench-tiny forward (batch 1, sequence 256, 8 heads)
/// computes no `[B, H, L, L]` tensor: no launch writes one (each launch names its node with
/// the result's shape), so no buffer is planned for one.
#[test]
fn the_bench_tiny_forward_plans_no_attention_scores() {
    let cfg = mmada_models::config::LladaConfig::preset("bench-tiny").unwrap();
    let (b, l) = (1, 256);
    let g = mmada_models::llada::forward_graph(&cfg, b, l, false).unwrap();
    let prog = common::program(&compile_all(&g));
    let scores = format!("[{b}, {}, {l}, {l}]", cfg.n_heads);
    let launches: Vec<&String> = prog.entries[0].launches.iter().map(|l| &l.node).collect();
    assert!(launches.iter().any(|n| n.contains("(attention)")));
    for n in launches {
        assert!(!n.contains(&scores), "{n} writes attention scores");
    }
}
