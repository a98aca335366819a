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

/// Issue 12: MMaDA-8B at the packed length 1539 in bf16 (`mmada compile --dtype bf16`): the
/// forward plan and the dual-cache sampler step's plan, as `mmada inspect` reports them, each
/// fit in 24 GB (weights 16.2 GB; the step also holds every layer's K/V cache, 0.8 GB).
#[test]
fn mmada_8b_bf16_inference_plans_fit_in_24_gb() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = common::mmada_cli(
        &[
            "compile",
            "--preset",
            "mmada-8b",
            "--graph",
            "forward,dual-cache-step",
            "--dtype",
            "bf16",
            "--seq",
            "1539",
            "--targets",
            "sm_90",
            "--no-ptxas",
            "-o",
            "m.mmada",
        ],
        dir.path(),
    );
    assert!(ok, "{err}");
    let (ok, out, err) = common::mmada_cli(&["inspect", "m.mmada"], dir.path());
    assert!(ok, "{err}");
    let peaks: Vec<f64> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("planned peak "))
        .map(|l| l.split(' ').next().unwrap().parse::<f64>().unwrap())
        .collect();
    assert_eq!(peaks.len(), 2, "{out}");
    for (entry, mib) in ["forward", "dual-cache-step"].iter().zip(&peaks) {
        let gb = mib * 1048576.0 / 1e9;
        eprintln!("mmada-8b bf16 {entry}: planned peak {mib:.2} MiB = {gb:.2} GB");
        // Above the weights alone, so the plan holds them in bf16 and no more.
        assert!(gb > 16.1 && gb < 24.0, "{entry}: {gb:.2} GB\n{out}");
    }
}
