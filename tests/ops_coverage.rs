//! Every op of the IR is lowered: a graph holding one node of each op kind (each one a graph
//! output, so it becomes its own kernel) compiles to host code and PTX, and matches the
//! interpreter. `kind_of` matches the op enum exhaustively, so adding an op without extending
//! this test (and therefore without a lowering) fails to compile.
//!
//! The PTX of this graph is assembled with ptxas in `tests/ptxas.rs`.

mod common;

use common::all_ops_graph;
use mmada_ir::{interp, max_rel_error, DType, Op};
use mmada_runtime::{open_artifact, Target};
use std::collections::BTreeSet;

/// A stable number per op kind; exhaustive on purpose.
fn kind_of(op: &Op) -> usize {
    match op {
        Op::Input { .. } => 0,
        Op::Constant { .. } => 1,
        Op::Unary { .. } => 2,
        Op::Binary { .. } => 3,
        Op::Compare { .. } => 4,
        Op::Where => 5,
        Op::Cast { .. } => 6,
        Op::Reduce { .. } => 7,
        Op::MatMul => 8,
        Op::Reshape { .. } => 9,
        Op::Permute { .. } => 10,
        Op::Broadcast { .. } => 11,
        Op::Iota { .. } => 12,
        Op::Rng { .. } => 13,
        Op::Slice { .. } => 14,
        Op::Pad { .. } => 15,
        Op::Concat { .. } => 16,
        Op::Gather { .. } => 17,
        Op::ScatterAdd { .. } => 18,
        Op::TopK { .. } => 19,
        Op::CumSum { .. } => 20,
        Op::Conv2d { .. } => 21,
        Op::Conv2dInputGrad { .. } => 22,
        Op::Conv2dWeightGrad { .. } => 23,
        Op::Softmax { .. } => 24,
        Op::Remask { .. } => 25,
        Op::Attention { .. } => 26,
        Op::AttentionGrad { .. } => 27,
        Op::Fused { .. } => 28,
    }
}

/// Number of op kinds users build (all but `Fused`, which only passes create).
const USER_KINDS: usize = 28;

#[test]
fn every_op_kind_is_present_lowered_and_correct() {
    for dt in [DType::F32, DType::BF16, DType::F16] {
        let g = all_ops_graph(dt);
        let kinds: BTreeSet<usize> = g
            .node_ids()
            .iter()
            .map(|&n| kind_of(&g.node(n).op))
            .collect();
        for k in 0..USER_KINDS {
            assert!(
                kinds.contains(&k),
                "op kind {k} is missing from the coverage graph"
            );
        }
        let art = common::compile_all(&g);
        assert!(art.sections.contains_key("ptx.sm_80") && art.sections.contains_key("ptx.sm_90"));
        let mut exe = open_artifact(art, Target::Cpu).unwrap();
        for seed in [1u64, 2] {
            let ins = common::random_inputs(&g, seed, -1.0, 1.0);
            let want = interp::interpret(&g, &ins).unwrap();
            let got = exe.run(&ins).unwrap();
            let tol = if dt == DType::F32 { 1e-5 } else { 1e-2 };
            for (name, w) in &want {
                // Sums and averages (attention's outputs) carry absolute error near zero.
                let floor = if name.starts_with("conv")
                    || name == "matmul"
                    || name == "cumsum"
                    || name.starts_with("attention")
                {
                    1.0
                } else {
                    1e-6
                };
                let e = max_rel_error(&got[name], w, floor);
                let t = if w.dtype().is_float() { tol } else { 0.0 };
                assert!(e <= t, "{dt} {name}: error {e:e}");
            }
        }
    }
}

#[test]
fn random_streams_are_bit_identical_to_the_interpreter() {
    let g = mmada_models::selfcheck::rng_graph().unwrap();
    let art = common::compile_all(&g);
    let mut exe = open_artifact(art, Target::Cpu).unwrap();
    for (s, o) in [(0i64, 0i64), (10086, 123_456_789), (-1, i64::MAX - 5000)] {
        let mut ins = indexmap::IndexMap::new();
        ins.insert(
            "seed".to_string(),
            mmada_ir::Tensor::from_i64(Vec::<usize>::new(), vec![s]).unwrap(),
        );
        ins.insert(
            "offset".to_string(),
            mmada_ir::Tensor::from_i64(Vec::<usize>::new(), vec![o]).unwrap(),
        );
        let want = interp::interpret(&g, &ins).unwrap();
        let got = exe.run(&ins).unwrap();
        for (name, w) in &want {
            let (a, b) = (got[name].to_le_bytes(), w.to_le_bytes());
            assert!(
                a == b,
                "{name} (seed {s}, offset {o}): compiled bits differ from the interpreter"
            );
        }
    }
}

#[test]
fn compiled_gradients_of_a_transformer_block_match_the_interpreter() {
    // Differentiated before fusion: fused kernels mix forward and backward nodes.
    let g = mmada_models::selfcheck::block_grad_graph().unwrap();
    let art = common::compile_all(&g);
    let mut exe = open_artifact(art, Target::Cpu).unwrap();
    for seed in [3u64, 4] {
        // Random integers are in [0, 10): valid labels for the vocabulary of 11.
        let ins = common::random_inputs(&g, seed, -1.0, 1.0);
        let want = interp::interpret(&g, &ins).unwrap();
        let got = exe.run(&ins).unwrap();
        for (name, w) in &want {
            let e = max_rel_error(&got[name], w, 1e-2);
            assert!(e <= 1e-4, "{name}: {e:e}");
        }
    }
}
