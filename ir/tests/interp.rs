//! The interpreter against independently computed values (naive f64 loops), on odd shapes.

use indexmap::IndexMap;
use mmada_ir::{interp::interpret, BinaryOp, DType, Graph, ReduceOp, Tensor, UnaryOp};
use rand::{Rng, SeedableRng};

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(-1.0f32..1.0)).collect()
}

fn run(g: &Graph, ins: Vec<(&str, Tensor)>) -> IndexMap<String, Tensor> {
    let m: IndexMap<String, Tensor> = ins.into_iter().map(|(n, t)| (n.to_string(), t)).collect();
    interpret(g, &m).unwrap()
}

#[test]
fn matmul_matches_naive_f64_loops() {
    let (b, m, k, n) = (3, 7, 13, 5);
    let av = rand_vec(b * m * k, 1);
    let bv = rand_vec(b * k * n, 2);
    let mut g = Graph::new();
    let a = g.input("a", DType::F32, [b, m, k]).unwrap();
    let bb = g.input("b", DType::F32, [b, k, n]).unwrap();
    let c = g.matmul(a, bb).unwrap();
    g.set_output("c", c).unwrap();
    let out = run(
        &g,
        vec![
            ("a", Tensor::from_f32([b, m, k], av.clone()).unwrap()),
            ("b", Tensor::from_f32([b, k, n], bv.clone()).unwrap()),
        ],
    );
    let c = out["c"].to_f32_vec();
    for bi in 0..b {
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for p in 0..k {
                    s += av[bi * m * k + i * k + p] as f64 * bv[bi * k * n + p * n + j] as f64;
                }
                assert_eq!(c[bi * m * n + i * n + j], s as f32);
            }
        }
    }
}

#[test]
fn reductions_match_naive_loops() {
    let (p, q, r) = (4, 9, 5);
    let xv = rand_vec(p * q * r, 3);
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [p, q, r]).unwrap();
    let s = g.reduce(ReduceOp::Sum, x, &[0, 2], false).unwrap();
    let mx = g.reduce(ReduceOp::Max, x, &[1], true).unwrap();
    g.set_output("s", s).unwrap();
    g.set_output("mx", mx).unwrap();
    let out = run(
        &g,
        vec![("x", Tensor::from_f32([p, q, r], xv.clone()).unwrap())],
    );
    assert_eq!(out["s"].shape().0, vec![q]);
    assert_eq!(out["mx"].shape().0, vec![p, 1, r]);
    let s = out["s"].to_f32_vec();
    for j in 0..q {
        let mut acc = 0f64;
        for i in 0..p {
            for k in 0..r {
                acc += xv[i * q * r + j * r + k] as f64;
            }
        }
        assert_eq!(s[j], acc as f32);
    }
    let mx = out["mx"].to_f32_vec();
    for i in 0..p {
        for k in 0..r {
            let m = (0..q)
                .map(|j| xv[i * q * r + j * r + k])
                .fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(mx[i * r + k], m);
        }
    }
}

#[test]
fn softmax_and_views_match_direct_computation() {
    let (m, n) = (3, 7);
    let xv = rand_vec(m * n, 4);
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [m, n]).unwrap();
    let y = g.softmax(x, -1).unwrap();
    let t = g.transpose(x).unwrap();
    let v = g.input("v", DType::F32, [n]).unwrap();
    let bc = g.broadcast_to(v, [2, m, n]).unwrap();
    g.set_output("y", y).unwrap();
    g.set_output("t", t).unwrap();
    g.set_output("bc", bc).unwrap();
    let vv = rand_vec(n, 5);
    let out = run(
        &g,
        vec![
            ("x", Tensor::from_f32([m, n], xv.clone()).unwrap()),
            ("v", Tensor::from_f32([n], vv.clone()).unwrap()),
        ],
    );
    let y = out["y"].to_f32_vec();
    for i in 0..m {
        let row = &xv[i * n..(i + 1) * n];
        let mx = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let z: f64 = row.iter().map(|&v| (v as f64 - mx).exp()).sum();
        for j in 0..n {
            let want = (row[j] as f64 - mx).exp() / z;
            assert!((y[i * n + j] as f64 - want).abs() < 1e-6);
        }
    }
    let t = out["t"].to_f32_vec();
    for i in 0..m {
        for j in 0..n {
            assert_eq!(t[j * m + i], xv[i * n + j]);
        }
    }
    let bc = out["bc"].to_f32_vec();
    for (i, val) in bc.iter().enumerate() {
        assert_eq!(*val, vv[i % n]);
    }
}

#[test]
fn half_precision_rounds_after_every_op() {
    let mut g = Graph::new();
    let x = g.input("x", DType::BF16, [4]).unwrap();
    let y = g.unary(UnaryOp::Exp, x).unwrap();
    let z = g.binary_scalar(BinaryOp::Mul, y, 3.0).unwrap();
    g.set_output("z", z).unwrap();
    let xs = [0.1f32, 0.5, -2.0, 1.25];
    let t = Tensor::from_f64(DType::BF16, [4], &xs.map(|v| v as f64)).unwrap();
    let out = run(&g, vec![("x", t.clone())]);
    let xin = t.to_f32_vec();
    for (i, v) in out["z"].to_f32_vec().into_iter().enumerate() {
        let e = half::bf16::from_f32(xin[i].exp()).to_f32();
        let want = half::bf16::from_f32(e * 3.0).to_f32();
        assert_eq!(v, want);
    }
}

#[test]
fn integer_semantics_wrap_and_division_by_zero_is_an_error() {
    let mut g = Graph::new();
    let a = g.input("a", DType::I32, [2]).unwrap();
    let b = g.input("b", DType::I32, [2]).unwrap();
    let s = g.binary(BinaryOp::Add, a, b).unwrap();
    let d = g.binary(BinaryOp::Div, a, b).unwrap();
    g.set_output("s", s).unwrap();
    let mut g2 = g.clone();
    g2.set_output("d", d).unwrap();
    let ins = vec![
        (
            "a",
            Tensor::new([2], mmada_ir::Data::I32(vec![i32::MAX, -7])).unwrap(),
        ),
        (
            "b",
            Tensor::new([2], mmada_ir::Data::I32(vec![1, 2])).unwrap(),
        ),
    ];
    let out = run(&g, ins.clone());
    assert_eq!(out["s"].to_i64_vec(), vec![i32::MIN as i64, -5]);
    let out = run(&g2, ins);
    assert_eq!(out["d"].to_i64_vec(), vec![i32::MAX as i64, -3]);
    let m: IndexMap<String, Tensor> = [
        (
            "a".to_string(),
            Tensor::new([2], mmada_ir::Data::I32(vec![1, 1])).unwrap(),
        ),
        (
            "b".to_string(),
            Tensor::new([2], mmada_ir::Data::I32(vec![1, 0])).unwrap(),
        ),
    ]
    .into_iter()
    .collect();
    let err = interpret(&g2, &m).unwrap_err().to_string();
    assert!(err.contains("division by zero"), "{err}");
}

#[test]
fn bad_inputs_name_the_input() {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [2, 3]).unwrap();
    let y = g.unary(UnaryOp::Exp, x).unwrap();
    g.set_output("y", y).unwrap();
    let cases: Vec<(Vec<(&str, Tensor)>, &str)> = vec![
        (vec![], "input 'x': missing"),
        (
            vec![("x", Tensor::from_f32([3, 2], vec![0.0; 6]).unwrap())],
            "expected f32[2, 3], got f32[3, 2]",
        ),
        (
            vec![
                ("x", Tensor::from_f32([2, 3], vec![0.0; 6]).unwrap()),
                ("z", Tensor::from_f32([1], vec![0.0]).unwrap()),
            ],
            "input 'z'",
        ),
    ];
    for (ins, needle) in cases {
        let m: IndexMap<String, Tensor> =
            ins.into_iter().map(|(n, t)| (n.to_string(), t)).collect();
        let e = interpret(&g, &m).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }
}

#[test]
fn elementwise_ops_match_f64_computations() {
    let n = 257;
    let a: Vec<f32> = rand_vec(n, 21).into_iter().map(|v| v * 3.0).collect();
    let b: Vec<f32> = rand_vec(n, 22).into_iter().map(|v| v * 2.0 + 2.5).collect();
    let mut g = Graph::new();
    let x = g.input("a", DType::F32, [n]).unwrap();
    let y = g.input("b", DType::F32, [n]).unwrap();
    for op in UnaryOp::ALL {
        if op != UnaryOp::Not {
            let src = if matches!(op, UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt) {
                y
            } else {
                x
            };
            let o = g.unary(op, src).unwrap();
            g.set_output(op.name(), o).unwrap();
        }
    }
    for op in [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
    ] {
        let o = g.binary(op, x, y).unwrap();
        g.set_output(op.name(), o).unwrap();
    }
    let c = g.compare(mmada_ir::CompareOp::Le, x, y).unwrap();
    g.set_output("le", c).unwrap();
    let w = g.where_(c, x, y).unwrap();
    g.set_output("where", w).unwrap();
    let ci = g.cast(x, DType::I32).unwrap();
    g.set_output("cast_i32", ci).unwrap();
    let out = run(
        &g,
        vec![
            ("a", Tensor::from_f32([n], a.clone()).unwrap()),
            ("b", Tensor::from_f32([n], b.clone()).unwrap()),
        ],
    );
    let close = |got: f32, want: f64, what: &str| {
        let tol = 2.5e-7 * want.abs().max(1e-30) + 1e-37;
        assert!((got as f64 - want).abs() <= tol, "{what}: {got} vs {want}");
    };
    for i in 0..n {
        let (p, q) = (a[i] as f64, b[i] as f64);
        for (name, want) in [
            ("neg", -p),
            ("abs", p.abs()),
            ("exp", p.exp()),
            ("log", q.ln()),
            ("sin", p.sin()),
            ("cos", p.cos()),
            ("sqrt", q.sqrt()),
            ("rsqrt", 1.0 / q.sqrt()),
            ("recip", 1.0 / p),
            ("floor", p.floor()),
            ("sigmoid", 1.0 / (1.0 + (-p).exp())),
            ("add", p + q),
            ("sub", p - q),
            ("mul", p * q),
            ("div", p / q),
            ("max", p.max(q)),
            ("min", p.min(q)),
            ("where", if p <= q { p } else { q }),
        ] {
            // sin/cos near zero crossings are compared absolutely.
            let got = out[name].to_f32_vec()[i];
            if matches!(name, "sin" | "cos") {
                assert!((got as f64 - want).abs() < 2e-7, "{name}");
            } else {
                close(got, want, name);
            }
        }
        assert_eq!(out["le"].to_bool_vec()[i], p <= q);
        assert_eq!(out["cast_i32"].to_i64_vec()[i], p.trunc() as i64);
    }
}
