//! Finite-difference gradient checks in f64 for every differentiable op and for this crate's
//! composites (softmax, log-softmax, cross-entropy, embeddings; the model's blocks are checked
//! in `models/tests/nn_gradcheck.rs`). Relative error ≤ 1e-6, where the relative error of a gradient
//! entry is |fd − analytic| / max(|analytic|, 1e-3 · max|analytic| of that tensor): entries far
//! smaller than the tensor's largest are judged against that scale, since a central difference
//! with step h has absolute error ~ (h² |f'''| + ε|f|/h), not relative error.

use indexmap::IndexMap;
use mmada_ir::gradcheck::{check_gradients, float as inp, Fill, GradInput as In};
use mmada_ir::interp::interpret;
use mmada_ir::{
    autodiff, BinaryOp, ConvGeom, DType, Graph, NodeId, Op, ReduceOp, Shape, Tensor, UnaryOp,
};

/// Checks `what` with the library harness at 1e-6 (see `mmada_ir::gradcheck`).
fn check(what: &str, inputs: Vec<In>, f: impl Fn(&mut Graph, &[NodeId]) -> NodeId) {
    let worst = check_gradients(&inputs, 1e-6, |g, x| Ok(f(g, x)))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    eprintln!("{what}: worst relative error {worst:.2e}");
}

#[test]
fn unary_ops() {
    for op in UnaryOp::ALL {
        let (lo, hi) = match op {
            UnaryOp::Not | UnaryOp::StopGradient => continue,
            UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Recip => (0.3, 3.0),
            _ => (-2.0, 2.0),
        };
        check(op.name(), vec![inp("x", &[3, 7], lo, hi)], |g, x| {
            g.unary(op, x[0]).unwrap()
        });
    }
}

#[test]
fn binary_ops_and_where() {
    for op in [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
    ] {
        check(
            op.name(),
            vec![inp("a", &[4, 5], -2.0, 2.0), inp("b", &[4, 5], 0.5, 2.0)],
            |g, x| g.binary(op, x[0], x[1]).unwrap(),
        );
    }
    let c: Vec<bool> = (0..20).map(|i| i % 3 == 0).collect();
    check(
        "where",
        vec![
            In {
                name: "c",
                shape: vec![4, 5],
                fill: Fill::Bool(c),
            },
            inp("a", &[4, 5], -1.0, 1.0),
            inp("b", &[4, 5], -1.0, 1.0),
        ],
        |g, x| g.where_(x[0], x[1], x[2]).unwrap(),
    );
}

#[test]
fn reductions_and_views() {
    for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
        for (axes, keep) in [
            (vec![1i64], false),
            (vec![0, 2], true),
            (vec![0, 1, 2], false),
        ] {
            check(
                &format!("reduce_{} {axes:?}", op.name()),
                vec![inp("x", &[3, 4, 5], -1.0, 1.0)],
                |g, x| g.reduce(op, x[0], &axes, keep).unwrap(),
            );
        }
    }
    check(
        "matmul",
        vec![
            inp("a", &[2, 3, 4], -1.0, 1.0),
            inp("b", &[2, 4, 5], -1.0, 1.0),
        ],
        |g, x| g.matmul(x[0], x[1]).unwrap(),
    );
    check(
        "reshape+permute",
        vec![inp("x", &[2, 3, 4], -1.0, 1.0)],
        |g, x| {
            let r = g.reshape(x[0], [6, 4]).unwrap();
            g.permute(r, &[1, 0]).unwrap()
        },
    );
    check("broadcast", vec![inp("x", &[3, 1], -1.0, 1.0)], |g, x| {
        g.broadcast_to(x[0], [2, 3, 4]).unwrap()
    });
    check("slice", vec![inp("x", &[4, 6], -1.0, 1.0)], |g, x| {
        g.add(
            Op::Slice {
                start: vec![1, 2],
                end: vec![3, 5],
            },
            &[x[0]],
        )
        .unwrap()
    });
    check("pad", vec![inp("x", &[2, 3], -1.0, 1.0)], |g, x| {
        g.pad(x[0], &[1, 0], &[0, 2], 0.5).unwrap()
    });
    check(
        "concat",
        vec![
            inp("a", &[2, 3], -1.0, 1.0),
            inp("b", &[2, 1], -1.0, 1.0),
            inp("c", &[2, 2], -1.0, 1.0),
        ],
        |g, x| g.concat(&[x[0], x[1], x[2]], -1).unwrap(),
    );
    for rev in [false, true] {
        check("cumsum", vec![inp("x", &[3, 5], -1.0, 1.0)], |g, x| {
            g.cumsum(x[0], 1, rev).unwrap()
        });
    }
}

#[test]
fn gather_and_scatter() {
    let idx = vec![2i64, 0, 1, 2, 2, 1, 0, 0];
    check(
        "gather",
        vec![
            inp("x", &[3, 4], -1.0, 1.0),
            In {
                name: "i",
                shape: vec![2, 4],
                fill: Fill::Int(idx.clone()),
            },
        ],
        |g, x| g.gather(x[0], x[1], 0).unwrap(),
    );
    check(
        "scatter_add",
        vec![
            inp("base", &[3, 4], -1.0, 1.0),
            In {
                name: "i",
                shape: vec![2, 4],
                fill: Fill::Int(idx),
            },
            inp("src", &[2, 4], -1.0, 1.0),
        ],
        |g, x| g.scatter_add(x[0], x[1], x[2], 0).unwrap(),
    );
}

#[test]
fn convolutions() {
    for geom in [
        ConvGeom {
            stride: [1, 1],
            padding: [1, 1, 1, 1],
            groups: 1,
        },
        ConvGeom {
            stride: [2, 2],
            padding: [0, 1, 0, 1],
            groups: 1,
        }, // MAGVIT downsample
        ConvGeom {
            stride: [1, 2],
            padding: [2, 0, 1, 1],
            groups: 2,
        },
    ] {
        check(
            &format!("conv2d {geom:?}"),
            vec![
                inp("x", &[2, 4, 5, 6], -1.0, 1.0),
                inp("w", &[6, 4 / geom.groups, 3, 3], -1.0, 1.0),
            ],
            |g, x| g.conv2d(x[0], x[1], geom).unwrap(),
        );
    }
    // The gradient ops are differentiable too (double backward).
    let geom = ConvGeom {
        stride: [2, 1],
        padding: [1, 0, 1, 1],
        groups: 1,
    };
    check(
        "conv2d_input_grad",
        vec![
            inp("g", &[1, 3, 2, 5], -1.0, 1.0),
            inp("w", &[3, 2, 3, 3], -1.0, 1.0),
        ],
        |g, x| {
            g.add(
                Op::Conv2dInputGrad {
                    geom,
                    input_hw: [5, 5],
                },
                &[x[0], x[1]],
            )
            .unwrap()
        },
    );
    check(
        "conv2d_weight_grad",
        vec![
            inp("x", &[1, 2, 5, 5], -1.0, 1.0),
            inp("g", &[1, 3, 2, 5], -1.0, 1.0),
        ],
        |g, x| {
            g.add(
                Op::Conv2dWeightGrad {
                    geom,
                    kernel_hw: [3, 3],
                },
                &[x[0], x[1]],
            )
            .unwrap()
        },
    );
}

#[test]
fn composite_blocks() {
    check("softmax", vec![inp("x", &[3, 6], -2.0, 2.0)], |g, x| {
        g.softmax(x[0], -1).unwrap()
    });
    check("log_softmax", vec![inp("x", &[3, 6], -2.0, 2.0)], |g, x| {
        g.log_softmax(x[0], -1).unwrap()
    });
    check(
        "cross_entropy",
        vec![
            inp("logits", &[2, 3, 7], -3.0, 3.0),
            In {
                name: "y",
                shape: vec![2, 3],
                fill: Fill::Int(vec![0, 6, 3, 2, 2, 5]),
            },
        ],
        |g, x| g.cross_entropy(x[0], x[1]).unwrap(),
    );
    check(
        "embedding",
        vec![
            inp("table", &[5, 3], -1.0, 1.0),
            In {
                name: "ids",
                shape: vec![2, 2],
                fill: Fill::Int(vec![4, 0, 4, 2]),
            },
        ],
        |g, x| g.embedding(x[0], x[1]).unwrap(),
    );
    check(
        "upsample+std",
        vec![inp("x", &[1, 2, 2, 3], -1.0, 1.0)],
        |g, x| {
            let u = g.upsample_nearest2x(x[0]).unwrap();
            g.std(u, -1, false, true).unwrap()
        },
    );
}

#[test]
fn gradients_of_unconnected_inputs_are_zero_and_fused_ops_are_rejected() {
    let mut g = Graph::new();
    let a = g.param("a", DType::F64, [3]).unwrap();
    let b = g.param("b", DType::F64, [2]).unwrap();
    let l = g.reduce(ReduceOp::Sum, a, &[0], false).unwrap();
    let gr = autodiff::grad(&mut g, l, &[a, b]).unwrap();
    g.set_output("gb", gr[1]).unwrap();
    let mut ins = IndexMap::new();
    ins.insert(
        "a".to_string(),
        Tensor::from_f64_vec([3], vec![1.0, 2.0, 3.0]).unwrap(),
    );
    ins.insert(
        "b".to_string(),
        Tensor::from_f64_vec([2], vec![1.0, 2.0]).unwrap(),
    );
    assert_eq!(
        interpret(&g, &ins).unwrap()["gb"].to_f64_vec(),
        vec![0.0, 0.0]
    );
    let v = g.param("v", DType::F64, [2, 2]).unwrap();
    let e = autodiff::grad(&mut g, v, &[v]).unwrap_err().to_string();
    assert!(e.contains("scalar"), "{e}");
    let _ = Shape::scalar();
}

/// `stop_gradient(x)` is `x` in value, and no gradient flows through it: d/dx of
/// `Σ stop_gradient(x) · x` is `x`, not `2x`.
#[test]
fn stop_gradient_blocks_the_gradient() {
    let mut g = Graph::new();
    let x = g.param("x", DType::F64, [5]).unwrap();
    let s = g.unary(UnaryOp::StopGradient, x).unwrap();
    let p = g.mul(s, x).unwrap();
    let loss = g.reduce(ReduceOp::Sum, p, &[0], false).unwrap();
    g.set_output("loss", loss).unwrap();
    let grads = autodiff::grad(&mut g, loss, &[x]).unwrap();
    g.set_output("grad", grads[0]).unwrap();
    let v = vec![0.5, -1.25, 2.0, 3.5, -0.75];
    let mut ins = IndexMap::new();
    ins.insert(
        "x".to_string(),
        Tensor::from_f64_vec(vec![5], v.clone()).unwrap(),
    );
    let out = interpret(&g, &ins).unwrap();
    assert_eq!(out["grad"].to_f64_vec(), v);
    let want: f64 = v.iter().map(|a| a * a).sum();
    assert_eq!(out["loss"].get_f64(0), want);
}
