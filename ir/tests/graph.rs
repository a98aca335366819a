//! Builder errors, the verifier and serialization.

use mmada_ir::{serialize, verify, DType, Graph, Node, Op, Shape, UnaryOp};
use rand::{Rng, SeedableRng};

fn sample() -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [4, 6]).unwrap();
    let w = g.param("w", DType::F32, [6, 3]).unwrap();
    let h = g.matmul(x, w).unwrap();
    let s = g.softmax(h, -1).unwrap();
    let t = g.transpose(s).unwrap();
    let c = g.cast(t, DType::BF16).unwrap();
    g.set_output("y", c).unwrap();
    g.set_output("h", h).unwrap();
    g
}

#[test]
fn builder_errors_name_op_and_operands() {
    let mut g = Graph::new();
    let a = g.input("a", DType::F32, [2, 3]).unwrap();
    let b = g.input("b", DType::F32, [4, 5]).unwrap();
    let e = g.matmul(a, b).unwrap_err().to_string();
    assert!(
        e.contains("matmul") && e.contains("f32[2, 3]") && e.contains("f32[4, 5]"),
        "{e}"
    );
    let i = g.input("i", DType::I64, [2, 3]).unwrap();
    let e = g.unary(UnaryOp::Exp, i).unwrap_err().to_string();
    assert!(e.contains("exp does not accept i64"), "{e}");
    let e = g.add2(a, i).unwrap_err().to_string();
    assert!(e.contains("dtypes differ"), "{e}");
    assert!(
        g.input("a", DType::F32, [1]).is_err(),
        "duplicate input name"
    );
    assert!(g.reshape(a, [7]).is_err());
    assert!(g.permute(a, &[0, 0]).is_err());
    assert!(g.reduce(mmada_ir::ReduceOp::Sum, a, &[2], false).is_err());
}

#[test]
fn verifier_catches_inconsistent_nodes() {
    let mut g = sample();
    verify(&g).unwrap();
    let x = g.input_by_name("x").unwrap();
    // A node whose declared type disagrees with its op.
    let bad = g.add_unchecked(
        Node {
            op: Op::Unary { op: UnaryOp::Exp },
            dtype: DType::F32,
            shape: Shape::new(vec![9]),
            label: Some("oops".into()),
        },
        &[x],
    );
    g.set_output("bad", bad).unwrap();
    let e = verify(&g).unwrap_err().to_string();
    assert!(
        e.contains("oops") && e.contains("exp") && e.contains("f32[9]"),
        "{e}"
    );
}

#[test]
fn serialization_round_trip_is_lossless() {
    let g = sample();
    let a = serialize::to_json(&g).unwrap();
    let back = serialize::from_json(&a).unwrap();
    let b = serialize::to_json(&back).unwrap();
    assert_eq!(a, b);
    assert_eq!(back.outputs().len(), 2);
}

#[test]
fn malformed_graph_files_are_errors_not_panics() {
    let text = serialize::to_json(&sample()).unwrap();
    let bytes = text.as_bytes();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut errors = 0;
    for i in 0..3000 {
        let mut m = bytes.to_vec();
        match i % 4 {
            0 => m.truncate(rng.random_range(0..bytes.len())),
            1 => {
                for _ in 0..rng.random_range(1..4) {
                    let p = rng.random_range(0..m.len());
                    m[p] = rng.random_range(0x20u8..0x7f);
                }
            }
            2 => {
                // Numbers edited: operand ids, shapes, versions.
                let s = String::from_utf8_lossy(&m).into_owned();
                let digits: Vec<usize> = s
                    .char_indices()
                    .filter(|(_, c)| c.is_ascii_digit())
                    .map(|(i, _)| i)
                    .collect();
                let p = digits[rng.random_range(0..digits.len())];
                m[p] = b'0' + rng.random_range(0..10u8);
            }
            _ => {
                let a = rng.random_range(0..m.len());
                let b = rng.random_range(0..m.len());
                m.swap(a, b);
            }
        }
        let s = String::from_utf8_lossy(&m);
        if serialize::from_json(&s).is_err() {
            errors += 1;
        }
    }
    assert!(errors > 1000, "most mutations must be rejected ({errors})");
    for bad in [
        "",
        "{}",
        r#"{"format":"mmada-graph","version":99,"nodes":[],"outputs":[]}"#,
        r#"{"format":"mmada-graph","version":1,"nodes":[{"id":0,"op":{"kind":"matmul"},"dtype":"f32","shape":[2],"operands":[0,0]}],"outputs":[]}"#,
        r#"{"format":"mmada-graph","version":1,"nodes":[],"outputs":[{"name":"y","node":3}]}"#,
    ] {
        assert!(serialize::from_json(bad).is_err(), "{bad}");
    }
}
