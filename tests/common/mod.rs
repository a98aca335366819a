//! Helpers shared by the integration tests.
#![allow(dead_code)]

use indexmap::IndexMap;
use mmada_codegen::artifact::Artifact;
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::compile::{compile, CompileOptions, PtxCheck};
use mmada_codegen::llvm::HostCpu;
use mmada_ir::{
    interp, max_rel_error, BinaryOp, CompareOp, ConvGeom, DType, Graph, NodeId, Op, ReduceOp,
    RngDist, Tensor, UnaryOp,
};
use rand::{Rng, SeedableRng};

/// Compiles with host code for this CPU and PTX for sm_80/sm_90 (ptxas not run).
pub fn compile_all(g: &Graph) -> Artifact {
    compile(
        g,
        &CompileOptions {
            name: "test".into(),
            backend: BackendOptions {
                host: Some(HostCpu::native()),
                gpu_archs: vec![80, 90],
                dump_dir: None,
            },
            ptx_check: PtxCheck::Skip,
        },
    )
    .expect("compile")
}

/// Random inputs for every graph input: floats uniform in [lo, hi), ints in [0, 10), bools.
pub fn random_inputs(g: &Graph, seed: u64, lo: f64, hi: f64) -> IndexMap<String, Tensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = IndexMap::new();
    for id in g.inputs() {
        let n = g.node(id);
        let Op::Input { name, .. } = &n.op else {
            unreachable!()
        };
        let vals: Vec<f64> = (0..n.shape.numel())
            .map(|_| match n.dtype {
                DType::Bool => rng.random_range(0..2) as f64,
                DType::I32 | DType::I64 => rng.random_range(0..10) as f64,
                _ => rng.random_range(lo..hi),
            })
            .collect();
        out.insert(
            name.clone(),
            Tensor::from_f64(n.dtype, n.shape.clone(), &vals).unwrap(),
        );
    }
    out
}

/// Runs the artifact on the CPU and the graph on the interpreter for each seed; returns the
/// worst relative error (with `floor` as the denominator floor) over all outputs and seeds.
pub fn worst_error_cpu(
    g: &Graph,
    art: &Artifact,
    seeds: &[u64],
    lo: f64,
    hi: f64,
    floor: f64,
) -> f64 {
    let mut exe =
        mmada_runtime::open_artifact(art.clone(), mmada_runtime::Target::Cpu).expect("open");
    let mut worst: f64 = 0.0;
    for &s in seeds {
        let ins = random_inputs(g, s, lo, hi);
        let want = interp::interpret(g, &ins).expect("interpret");
        let got = exe.run(&ins).expect("run");
        for (name, w) in &want {
            let e = max_rel_error(&got[name], w, floor);
            if e > worst {
                eprintln!("seed {s} output {name}: max rel error {e:.3e}");
            }
            worst = worst.max(e);
        }
    }
    worst
}

/// A graph with every op kind, in `dt` for the float parts.
pub fn all_ops_graph(dt: DType) -> Graph {
    let mut g = Graph::new();
    let mut outs: Vec<(String, NodeId)> = Vec::new();
    let mut out = |name: &str, id: NodeId| outs.push((name.to_string(), id));
    let x = g.input("x", dt, [5, 7]).unwrap();
    let y = g.input("y", dt, [5, 7]).unwrap();
    let ids = g.input("ids", DType::I64, [5, 3]).unwrap(); // values in [0, 10) → clamp below
    let seed = g.input("seed", DType::I64, Vec::<usize>::new()).unwrap();
    let c = g.full(dt, 1.5, [5, 7]).unwrap();
    out("constant", c);
    out("exp", g.unary(UnaryOp::Exp, x).unwrap());
    out("mul", g.binary(BinaryOp::Mul, x, y).unwrap());
    let lt = g.compare(CompareOp::Lt, x, y).unwrap();
    out("lt", lt);
    out("where", g.where_(lt, x, y).unwrap());
    out("cast", g.cast(x, DType::I32).unwrap());
    out("reduce", g.reduce(ReduceOp::Max, x, &[1], false).unwrap());
    let yt = g.transpose(y).unwrap();
    out("matmul", g.matmul(x, yt).unwrap());
    out("reshape", g.reshape(x, [7, 5]).unwrap());
    out("permute", yt);
    out("broadcast", g.broadcast_to(x, [2, 5, 7]).unwrap());
    out("iota", g.iota(DType::I32, [4, 6], 1).unwrap());
    let off = g.scalar_i64(77).unwrap();
    out(
        "rng",
        g.rng(RngDist::Normal, 1, seed, off, [3, 50]).unwrap(),
    );
    out("slice", g.slice_axis(x, 1, 2, 6).unwrap());
    out("pad", g.pad(x, &[1, 0], &[2, 3], -1.0).unwrap());
    out("concat", g.concat(&[x, y, x], 0).unwrap());
    let small = g.binary_scalar(BinaryOp::Rem, ids, 7.0).unwrap();
    out("gather", g.gather(x, small, 1).unwrap());
    let src = g.gather(y, small, 1).unwrap();
    out("scatter_add", g.scatter_add(x, small, src, 1).unwrap());
    out("topk", g.topk(x, 3, 1).unwrap());
    out("argmax", g.argmax(x, 0).unwrap());
    out("cumsum", g.cumsum(x, 1, true).unwrap());
    let img = g.input("img", dt, [2, 4, 6, 5]).unwrap();
    let w = g.input("w", dt, [6, 2, 3, 3]).unwrap();
    let geom = ConvGeom {
        stride: [2, 1],
        padding: [1, 0, 1, 1],
        groups: 2,
    };
    let cv = g.conv2d(img, w, geom).unwrap();
    out("conv2d", cv);
    let gy = g.input("gy", dt, g.node(cv).shape.clone()).unwrap();
    out(
        "conv2d_input_grad",
        g.add(
            Op::Conv2dInputGrad {
                geom,
                input_hw: [6, 5],
            },
            &[gy, w],
        )
        .unwrap(),
    );
    out(
        "conv2d_weight_grad",
        g.add(
            Op::Conv2dWeightGrad {
                geom,
                kernel_hw: [3, 3],
            },
            &[img, gy],
        )
        .unwrap(),
    );
    for (n, id) in outs {
        g.set_output(&n, id).unwrap();
    }
    g
}
