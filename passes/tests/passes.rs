//! DCE, CSE and elementwise fusion preserve semantics and do what they promise.

use indexmap::IndexMap;
use mmada_ir::{interp::interpret, max_rel_error, DType, Graph, Op, Tensor, UnaryOp};
use mmada_passes::{Cse, Dce, FuseElementwise, Pass, PassManager};
use rand::{Rng, SeedableRng};

fn inputs(g: &Graph, seed: u64) -> IndexMap<String, Tensor> {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    g.inputs()
        .into_iter()
        .map(|id| {
            let n = g.node(id);
            let Op::Input { name, .. } = &n.op else {
                unreachable!()
            };
            let v: Vec<f32> = (0..n.shape.numel())
                .map(|_| r.random_range(-1.0..1.0))
                .collect();
            (name.clone(), Tensor::from_f32(n.shape.clone(), v).unwrap())
        })
        .collect()
}

fn softmax_linear() -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [5, 7]).unwrap();
    let w = g.input("w", DType::F32, [7, 3]).unwrap();
    let b = g.input("b", DType::F32, [3]).unwrap();
    let h = g.matmul(x, w).unwrap();
    let h = g.add2(h, b).unwrap();
    let y = g.softmax(h, -1).unwrap();
    g.set_output("y", y).unwrap();
    g
}

/// Elementwise fusion then DCE, verifying the graph after each pass.
fn fuse(g: &mut Graph) {
    let mut pm = PassManager::new();
    pm.add(FuseElementwise::default())
        .add(Dce)
        .verify_each(true);
    pm.run(g).unwrap();
}

fn count(g: &Graph, f: impl Fn(&Op) -> bool) -> usize {
    g.node_ids()
        .into_iter()
        .filter(|&n| f(&g.node(n).op))
        .count()
}

#[test]
fn dce_removes_dead_nodes_and_keeps_inputs() {
    let mut g = softmax_linear();
    let x = g.input_by_name("x").unwrap();
    g.unary(UnaryOp::Exp, x).unwrap(); // dead
    g.input("unused", DType::F32, [1]).unwrap();
    let before = g.len();
    assert!(Dce.run(&mut g).unwrap());
    assert_eq!(g.len(), before - 1);
    assert!(g.input_by_name("unused").is_some());
}

#[test]
fn cse_merges_duplicates() {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [4]).unwrap();
    let a = g.unary(UnaryOp::Exp, x).unwrap();
    let b = g.unary(UnaryOp::Exp, x).unwrap();
    let s = g.add2(a, b).unwrap();
    g.set_output("s", s).unwrap();
    let want = interpret(&g, &inputs(&g, 1)).unwrap();
    assert!(Cse.run(&mut g).unwrap());
    Dce.run(&mut g).unwrap();
    assert_eq!(count(&g, |o| matches!(o, Op::Unary { .. })), 1);
    let got = interpret(&g, &inputs(&g, 1)).unwrap();
    assert_eq!(got["s"], want["s"]);
}

#[test]
fn fusion_groups_bias_and_softmax_into_one_kernel_plus_matmul() {
    let mut g = softmax_linear();
    let ins = inputs(&g, 2);
    let want = interpret(&g, &ins).unwrap();
    fuse(&mut g);
    // matmul + (bias add, softmax)
    assert_eq!(
        count(
            &g,
            |o| matches!(o, Op::Fused { body } if matches!(body.nodes[body.root].op, Op::Softmax { .. }))
        ),
        1
    );
    assert_eq!(count(&g, |o| matches!(o, Op::MatMul)), 1);
    let compute = count(&g, |o| !matches!(o, Op::Input { .. }));
    assert_eq!(compute, 2, "nothing else is left");
    let got = interpret(&g, &ins).unwrap();
    assert_eq!(got["y"], want["y"], "fusion must not change a single bit");
}

/// A residual stream `h += r_i` read by every layer: cheap in arithmetic, but recomputing it
/// in each user re-reads every earlier layer's output from memory.
#[test]
fn shared_sums_of_many_large_tensors_are_materialised() {
    let mut g = Graph::new();
    let mut h = g.input("x", DType::F32, [64, 128]).unwrap();
    for i in 0..8 {
        let r = g.input(&format!("r{i}"), DType::F32, [64, 128]).unwrap();
        h = g.add2(h, r).unwrap();
        let s = g.unary(UnaryOp::Sin, h).unwrap();
        g.set_output(&format!("s{i}"), s).unwrap();
    }
    let ins = inputs(&g, 5);
    let want = interpret(&g, &ins).unwrap();
    fuse(&mut g);
    let widest = g
        .node_ids()
        .into_iter()
        .filter_map(|n| match &g.node(n).op {
            Op::Fused { body } => Some(body.num_args),
            _ => None,
        })
        .max()
        .unwrap();
    assert!(
        widest <= 4,
        "a kernel reads {widest} tensors: the stream was recomputed"
    );
    assert_eq!(interpret(&g, &ins).unwrap(), want);
}

#[test]
fn expensive_shared_values_are_materialised_not_recomputed() {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [3, 4]).unwrap();
    let mut h = x;
    for _ in 0..20 {
        h = g.unary(UnaryOp::Sin, h).unwrap();
    }
    let a = g.unary(UnaryOp::Exp, h).unwrap();
    let b = g.unary(UnaryOp::Cos, h).unwrap();
    g.set_output("a", a).unwrap();
    g.set_output("b", b).unwrap();
    let ins = inputs(&g, 3);
    let want = interpret(&g, &ins).unwrap();
    fuse(&mut g);
    // The 20-op chain is shared by two users and costs more than the duplication limit, so it
    // becomes its own kernel; each user is then a single op.
    assert_eq!(count(&g, |o| matches!(o, Op::Fused { .. })), 1);
    let got = interpret(&g, &ins).unwrap();
    assert_eq!(got, want);
}

#[test]
fn fusion_preserves_semantics_on_random_graphs() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for trial in 0..40 {
        let mut g = Graph::new();
        let mut pool = vec![
            g.input("a", DType::F32, [3, 5]).unwrap(),
            g.input("b", DType::F32, [5]).unwrap(),
        ];
        for _ in 0..rng.random_range(3..25) {
            let p = pool[rng.random_range(0..pool.len())];
            let q = pool[rng.random_range(0..pool.len())];
            let n = match rng.random_range(0..6) {
                0 => g.unary(UnaryOp::Sin, p),
                1 => g.add2(p, q),
                2 => g.mul(p, q),
                3 => g.reduce(mmada_ir::ReduceOp::Sum, p, &[-1], true),
                4 => g.unary(UnaryOp::Sigmoid, p),
                _ => g.binary(mmada_ir::BinaryOp::Max, p, q),
            };
            if let Ok(n) = n {
                pool.push(n);
            }
        }
        let last = *pool.last().unwrap();
        g.set_output("out", last).unwrap();
        let mid = pool[pool.len() / 2];
        if mid != last {
            g.set_output("mid", mid).unwrap();
        }
        let ins = inputs(&g, trial);
        let want = interpret(&g, &ins).unwrap();
        let mut fused = g.clone();
        mmada_passes::default_pipeline()
            .verify_each(true)
            .run(&mut fused)
            .unwrap();
        let got = interpret(&fused, &ins).unwrap();
        for (k, w) in &want {
            assert_eq!(
                max_rel_error(&got[k], w, 1e-30),
                0.0,
                "trial {trial} output {k}"
            );
        }
    }
}

#[test]
fn pass_manager_writes_numbered_dumps() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = softmax_linear();
    let mut pm = mmada_passes::default_pipeline();
    pm.dump_to(mmada_passes::DumpSink::to_dir(dir.path()), 0);
    pm.run(&mut g).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.contains(&"00-source.txt".to_string()));
    assert!(names.contains(&"09-after-fuse-elementwise.txt".to_string()));
    assert!(names.contains(&"10-after-dce.dot".to_string()));
    let text = std::fs::read_to_string(dir.path().join("09-after-fuse-elementwise.txt")).unwrap();
    assert!(text.contains("fused") && text.contains("<- root"));
}

#[test]
fn transposes_move_onto_matmul_operands_and_cancel() {
    use mmada_passes::SimplifyTransposes;
    // dW = swap(swap(x) @ dy) with odd sizes and a batch axis: the gradient of y = x Wᵀ.
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [3, 13, 7]).unwrap();
    let dy = g.input("dy", DType::F32, [3, 13, 5]).unwrap();
    let xt = g.permute(x, &[0, 2, 1]).unwrap();
    let dwt = g.matmul(xt, dy).unwrap(); // [3, 7, 5]
    let dw = g.permute(dwt, &[0, 2, 1]).unwrap(); // [3, 5, 7]
                                                  // A permutation of a permutation that is not the identity, read by an elementwise op.
    let p = g.permute(x, &[2, 0, 1]).unwrap(); // [7, 3, 13]
    let q = g.permute(p, &[1, 0, 2]).unwrap(); // [3, 7, 13]
    let e = g.unary(UnaryOp::Exp, q).unwrap();
    g.set_output("dw", dw).unwrap();
    g.set_output("e", e).unwrap();
    let ins = inputs(&g, 11);
    let want = interpret(&g, &ins).unwrap();
    let mut h = g.clone();
    assert!(SimplifyTransposes.run(&mut h).unwrap());
    Dce.run(&mut h).unwrap();
    mmada_ir::verify::verify(&h).unwrap();
    let got = interpret(&h, &ins).unwrap();
    for k in ["dw", "e"] {
        let err = max_rel_error(&got[k], &want[k], 1e-30);
        assert!(err <= 1e-6, "{k}: {err}");
    }
    // The product is now dy-transposed @ x: one transpose (of dy), none of x or of the result.
    let dw_node = h.outputs().iter().find(|(n, _)| n == "dw").unwrap().1;
    assert!(matches!(h.node(dw_node).op, Op::MatMul));
    let ops = h.operands(dw_node);
    assert!(matches!(h.node(ops[0]).op, Op::Permute { .. }));
    assert_eq!(ops[1], x);
    // Two stacked permutations became one.
    let e_node = h.outputs().iter().find(|(n, _)| n == "e").unwrap().1;
    let src = h.operands(h.operands(e_node)[0]);
    assert_eq!(src, vec![x]);
    assert_eq!(count(&h, |o| matches!(o, Op::Permute { .. })), 2);
}

#[test]
fn transcendental_tables_are_not_recomputed_per_broadcast_element() {
    // RoPE-like: cos(position) [13, 6] broadcast over [4, 3, 13, 6] and multiplied with x.
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [4, 3, 13, 6]).unwrap();
    let pos = g.iota(DType::F32, [13, 6], 0).unwrap();
    let c = g.unary(UnaryOp::Cos, pos).unwrap();
    let y = g.mul(x, c).unwrap();
    g.set_output("y", y).unwrap();
    let ins = inputs(&g, 3);
    let want = interpret(&g, &ins).unwrap();
    let mut h = g.clone();
    FuseElementwise::default().run(&mut h).unwrap();
    Dce.run(&mut h).unwrap();
    let got = interpret(&h, &ins).unwrap();
    assert!(max_rel_error(&got["y"], &want["y"], 1e-30) <= 1e-6);
    // The cosine is computed once per table element, in a node of the table's shape.
    let cos_shapes: Vec<String> = h
        .node_ids()
        .into_iter()
        .filter(|&n| match &h.node(n).op {
            Op::Fused { body } => body
                .nodes
                .iter()
                .any(|b| matches!(b.op, Op::Unary { op: UnaryOp::Cos })),
            Op::Unary { op: UnaryOp::Cos } => true,
            _ => false,
        })
        .map(|n| h.node(n).shape.to_string())
        .collect();
    assert_eq!(cos_shapes, vec!["[13, 6]".to_string()]);
}

#[test]
fn transcendental_inputs_of_a_pad_are_computed_in_their_own_contiguous_kernel() {
    // GroupNorm-and-swish then the zero padding of a 3×3 convolution: the swish (a sigmoid per
    // element) is a contiguous kernel of the unpadded shape; the pad is left to its users.
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [1, 3, 9, 7]).unwrap();
    let s = g.unary(UnaryOp::Sigmoid, x).unwrap();
    let y = g.mul(x, s).unwrap();
    let p = g.pad(y, &[0, 0, 1, 1], &[0, 0, 1, 1], 0.0).unwrap();
    let a = g.slice_axis(p, 2, 0, 9).unwrap();
    let b = g.slice_axis(p, 2, 2, 11).unwrap();
    let c = g.concat(&[a, b], 1).unwrap();
    g.set_output("c", c).unwrap();
    let ins = inputs(&g, 5);
    let want = interpret(&g, &ins).unwrap();
    let mut h = g.clone();
    FuseElementwise::default().run(&mut h).unwrap();
    Dce.run(&mut h).unwrap();
    let got = interpret(&h, &ins).unwrap();
    assert!(max_rel_error(&got["c"], &want["c"], 1e-30) <= 1e-6);
    let sig_shapes: Vec<String> = h
        .node_ids()
        .into_iter()
        .filter(|&n| match &h.node(n).op {
            Op::Fused { body } => body.nodes.iter().any(|b| {
                matches!(
                    b.op,
                    Op::Unary {
                        op: UnaryOp::Sigmoid
                    }
                )
            }),
            Op::Unary {
                op: UnaryOp::Sigmoid,
            } => true,
            _ => false,
        })
        .map(|n| h.node(n).shape.to_string())
        .collect();
    assert_eq!(sig_shapes, vec!["[1, 3, 9, 7]".to_string()]);
}
