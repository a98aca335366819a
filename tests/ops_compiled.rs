//! Every op the codegen lowers, compiled to host code and run, against the reference
//! interpreter on random inputs of odd shapes: f32 within 1e-5 relative (sums compared against
//! a floor of 1, i.e. 1e-5 absolute near zero, because f32 accumulation order differs from the
//! interpreter's f64), f16/bf16 storage within 1e-2, integers and bools exactly.

mod common;

use mmada_ir::{
    interp, max_rel_error, BinaryOp, CompareOp, DType, Graph, NodeId, ReduceOp, UnaryOp,
};
use mmada_runtime::{open_artifact, Target};

fn tol(dt: DType) -> f64 {
    match dt {
        DType::F32 => 1e-5,
        DType::F16 | DType::BF16 => 1e-2,
        _ => 0.0,
    }
}

/// Compiles `g`, runs it on the CPU and the interpreter for a few seeds, and checks every
/// output with its dtype's tolerance (`floor` is the relative-error denominator floor).
fn check(g: &Graph, lo: f64, hi: f64, floor: f64) {
    let art = common::compile_all(g);
    let mut exe = open_artifact(art, Target::Cpu).unwrap();
    for seed in [1u64, 2, 3] {
        let ins = common::random_inputs(g, seed, lo, hi);
        let want = interp::interpret(g, &ins).unwrap();
        let got = exe.run(&ins).unwrap();
        for (name, w) in &want {
            let e = max_rel_error(&got[name], w, floor);
            assert!(
                e <= tol(w.dtype()),
                "{name} ({}{}): error {e:e} (seed {seed})",
                w.dtype(),
                w.shape()
            );
        }
    }
}

fn out(g: &mut Graph, name: &str, id: NodeId) {
    g.set_output(name, id).unwrap();
}

#[test]
fn unary_float_ops_all_float_dtypes() {
    for dt in [DType::F32, DType::F16, DType::BF16] {
        let mut g = Graph::new();
        let x = g.input("x", dt, [7, 45]).unwrap();
        for op in UnaryOp::ALL {
            if op == UnaryOp::Not {
                continue;
            }
            let y = g.unary(op, x).unwrap();
            out(&mut g, op.name(), y);
        }
        // Positive inputs keep log, sqrt, rsqrt and recip finite.
        check(&g, 0.05, 4.0, 1e-30);
        let mut g = Graph::new();
        let x = g.input("x", dt, [3, 5, 11]).unwrap();
        for op in [
            UnaryOp::Neg,
            UnaryOp::Abs,
            UnaryOp::Exp,
            UnaryOp::Sin,
            UnaryOp::Cos,
            UnaryOp::Floor,
            UnaryOp::Sigmoid,
        ] {
            let y = g.unary(op, x).unwrap();
            out(&mut g, op.name(), y);
        }
        check(&g, -6.0, 6.0, 1e-6);
    }
}

#[test]
fn binary_and_compare_ops() {
    for dt in [DType::F32, DType::BF16, DType::F16, DType::I32, DType::I64] {
        let mut g = Graph::new();
        let a = g.input("a", dt, [9, 13]).unwrap();
        let b = g.input("b", dt, [9, 13]).unwrap();
        // b + 1 is never zero for the integer inputs in [0, 10) (and floats in [0.5, 3)).
        let b1 = g.binary_scalar(BinaryOp::Add, b, 1.0).unwrap();
        for op in [
            BinaryOp::Add,
            BinaryOp::Sub,
            BinaryOp::Mul,
            BinaryOp::Div,
            BinaryOp::Max,
            BinaryOp::Min,
        ] {
            let y = g.binary(op, a, b1).unwrap();
            out(&mut g, op.name(), y);
        }
        for op in CompareOp::ALL {
            let y = g.compare(op, a, b).unwrap();
            out(&mut g, op.name(), y);
        }
        let c = g.compare(CompareOp::Lt, a, b).unwrap();
        let w = g.where_(c, a, b1).unwrap();
        out(&mut g, "where", w);
        check(&g, 0.5, 3.0, 1e-30);
    }
    let mut g = Graph::new();
    let a = g.input("a", DType::Bool, [33]).unwrap();
    let b = g.input("b", DType::Bool, [33]).unwrap();
    for op in [BinaryOp::And, BinaryOp::Or] {
        let y = g.binary(op, a, b).unwrap();
        out(&mut g, op.name(), y);
    }
    let n = g.unary(UnaryOp::Not, a).unwrap();
    out(&mut g, "not", n);
    let e = g.compare(CompareOp::Eq, a, b).unwrap();
    out(&mut g, "eq", e);
    check(&g, 0.0, 1.0, 1e-30);
}

/// Every dtype codegen compiles (f64 is interpreter-only).
const COMPILED: [DType; 6] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::I32,
    DType::I64,
    DType::Bool,
];

#[test]
fn casts_between_all_dtypes() {
    for from in COMPILED {
        let mut g = Graph::new();
        let x = g.input("x", from, [4, 37]).unwrap();
        let x = if from.is_float() {
            // Scale to exercise truncation toward zero and negative values.
            g.binary_scalar(BinaryOp::Mul, x, 7.3).unwrap()
        } else {
            x
        };
        for to in COMPILED {
            if to == from {
                continue;
            }
            let y = g.cast(x, to).unwrap();
            out(&mut g, to.name(), y);
        }
        check(&g, -1.0, 1.0, 1e-30);
    }
}

#[test]
fn reductions_short_and_long_every_axis_set() {
    for dt in [DType::F32, DType::BF16, DType::I32, DType::I64] {
        for shape in [[5usize, 70, 3], [7, 3, 130]] {
            let mut g = Graph::new();
            let x = g.input("x", dt, shape).unwrap();
            for axes in [
                vec![0i64],
                vec![1],
                vec![2],
                vec![0, 2],
                vec![0, 1, 2],
                vec![-1],
            ] {
                for keep in [false, true] {
                    for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
                        let y = g.reduce(op, x, &axes, keep).unwrap();
                        out(&mut g, &format!("{}_{axes:?}_{keep}", op.name()), y);
                    }
                }
            }
            check(&g, -1.0, 1.0, 1.0);
        }
    }
}

#[test]
fn matmul_batched_odd_shapes_and_half_types() {
    for dt in [DType::F32, DType::BF16, DType::F16] {
        let mut g = Graph::new();
        let a = g.input("a", dt, [2, 3, 17, 33]).unwrap();
        let b = g.input("b", dt, [2, 3, 33, 19]).unwrap();
        let y = g.matmul(a, b).unwrap();
        out(&mut g, "y", y);
        let a2 = g.input("a2", dt, [1, 1]).unwrap();
        let b2 = g.input("b2", dt, [1, 40]).unwrap();
        let y2 = g.matmul(a2, b2).unwrap();
        out(&mut g, "y2", y2);
        // Transposed operand through a view: x @ wᵀ.
        let x = g.input("x", dt, [21, 16]).unwrap();
        let w = g.input("w", dt, [31, 16]).unwrap();
        let wt = g.transpose(w).unwrap();
        let y3 = g.matmul(x, wt).unwrap();
        out(&mut g, "y3", y3);
        check(&g, -1.0, 1.0, 1.0);
    }
}

#[test]
fn views_permute_broadcast_reshape() {
    for dt in [DType::F32, DType::F16, DType::I64, DType::Bool] {
        let mut g = Graph::new();
        let x = g.input("x", dt, [2, 3, 5, 7]).unwrap();
        let p = g.permute(x, &[3, 1, 0, 2]).unwrap();
        out(&mut g, "permute", p);
        let r = g.reshape(x, [6, 35]).unwrap();
        out(&mut g, "reshape", r);
        let rp = g.permute(r, &[1, 0]).unwrap();
        let rpr = g.reshape(rp, [5, 7, 6]).unwrap();
        out(&mut g, "reshape_permute_reshape", rpr);
        let v = g.input("v", dt, [5, 1]).unwrap();
        let bc = g.broadcast_to(v, [4, 5, 9]).unwrap();
        out(&mut g, "broadcast", bc);
        check(&g, -1.0, 1.0, 1e-30);
    }
}

#[test]
fn fused_chains_with_shared_subexpressions() {
    // A deep elementwise DAG with reuse, a reduction in the middle and views, so fusion must
    // duplicate cheap nodes and keep expensive shared ones.
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [11, 23]).unwrap();
    let y = g.input("y", DType::F32, [23]).unwrap();
    let mut h = g.add2(x, y).unwrap();
    for i in 0..20 {
        let s = g
            .unary(
                if i % 2 == 0 {
                    UnaryOp::Sin
                } else {
                    UnaryOp::Cos
                },
                h,
            )
            .unwrap();
        h = g.mul(h, s).unwrap();
        h = g.binary_scalar(BinaryOp::Add, h, 0.25).unwrap();
    }
    let m = g.mean(h, -1, true).unwrap();
    let c = g.sub(h, m).unwrap();
    let t = g.transpose(c).unwrap();
    let e = g.unary(UnaryOp::Exp, t).unwrap();
    out(&mut g, "e", e);
    out(&mut g, "h", h);
    check(&g, -1.0, 1.0, 1e-3);
}
