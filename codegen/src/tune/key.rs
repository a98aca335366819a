//! What a kernel is tuned as: its tune key.
//!
//! `template:description:bucket`, e.g. `elementwise:3fa2c1d09b7e:f32[1024,1024]<-f32[1024,1024]`:
//!
//! - the template key;
//! - 12 hex digits of the SHA-256 of the node's shape-independent description: the op (for a
//!   fused node, every body op and how they connect) with its shape-carrying fields (reshape,
//!   broadcast, slice and padding extents, constant values) left out, the dtypes of the
//!   result and operands, each fused body value's rank and size-1 axes (how it broadcasts),
//!   and for a product which operands it reads transposed;
//! - the shape bucket: the dtypes and shapes of the result and operands with every extent
//!   rounded up to a power of two, as cubecl anchors its tune keys, so that one tuning serves
//!   the neighbouring sizes (a 1000-row and a 1024-row product share a key).
//!
//! The target (CPU features or GPU) and the compiler version are not in the key: the cache
//! stores them beside it ([`crate::tune::cache::Scope`]).

use crate::template::Template;
use mmada_ir::{FusedBody, Graph, NodeId, Op, Operand, Shape};
use sha2::{Digest, Sha256};
use std::fmt::Write;

/// The tune key of the kernel computing node `id` of template `t`.
pub fn tune_key(g: &Graph, id: NodeId, t: &Template) -> String {
    let n = g.node(id);
    let operands: Vec<(String, &Shape)> = g
        .operands(id)
        .iter()
        .map(|&o| (g.node(o).dtype.to_string(), &g.node(o).shape))
        .collect();
    let mut desc = op_description(&n.op);
    if matches!(n.op, Op::MatMul) {
        // The planner reads transposed operands in place: the product's layout is part of
        // what it is (and changes which cut of a host product is fastest).
        let ops = g.operands(id);
        let _ = write!(
            desc,
            " a_trans={} b_trans={}",
            g.is_matmul_transpose(ops[0]),
            g.is_matmul_transpose(ops[1])
        );
    }
    let _ = write!(desc, " -> {}", n.dtype);
    for (dt, _) in &operands {
        let _ = write!(desc, " {dt}");
    }
    let hash = hex::encode(Sha256::digest(desc.as_bytes()));
    let bucket_of = |dt: &str, s: &Shape| format!("{dt}{}", bucket(s));
    let ins: Vec<String> = operands.iter().map(|(dt, s)| bucket_of(dt, s)).collect();
    format!(
        "{}:{}:{}<-{}",
        t.key,
        &hash[..12],
        bucket_of(&n.dtype.to_string(), &n.shape),
        ins.join(",")
    )
}

/// `[1024,256]`: each extent rounded up to a power of two (0 stays 0).
pub fn bucket(s: &Shape) -> String {
    let dims: Vec<String> =
        s.0.iter()
            .map(|&d| {
                if d == 0 {
                    "0".to_string()
                } else {
                    d.next_power_of_two().to_string()
                }
            })
            .collect();
    format!("[{}]", dims.join(","))
}

/// The op without its shape-carrying fields.
fn op_description(op: &Op) -> String {
    match op {
        Op::Reshape { .. } => "reshape".into(),
        Op::Broadcast { .. } => "broadcast".into(),
        Op::Slice { .. } => "slice".into(),
        Op::Pad { value, .. } => format!("pad {value}"),
        Op::Constant { .. } => "constant".into(),
        Op::Fused { body } => fused_description(body),
        other => format!("{other:?}"),
    }
}

/// `n1n`: a shape's rank and which axes are 1 (how it broadcasts), not its extents.
fn pattern(s: &Shape) -> String {
    s.0.iter()
        .map(|&d| if d == 1 { '1' } else { 'n' })
        .collect()
}

fn fused_description(body: &FusedBody) -> String {
    let mut s = format!("fused {} args [", body.num_args);
    for (dt, shape) in &body.args {
        let _ = write!(s, "{dt}:{} ", pattern(shape));
    }
    s.push(']');
    for (i, bn) in body.nodes.iter().enumerate() {
        let ops: Vec<String> = bn
            .operands
            .iter()
            .map(|o| match o {
                Operand::Arg(a) => format!("a{a}"),
                Operand::Node(j) => format!("n{j}"),
            })
            .collect();
        let _ = write!(
            s,
            "; n{i} = {} {}:{} ({})",
            op_description(&bn.op),
            bn.dtype,
            pattern(&bn.shape),
            ops.join(",")
        );
    }
    let _ = write!(s, "; root n{}", body.root);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::ELEMENTWISE;
    use mmada_ir::DType;

    fn binary_graph(rows: usize, dtype: DType, mul: bool) -> (Graph, NodeId) {
        let mut g = Graph::new();
        let x = g.input("x", dtype, vec![rows, 1000]).unwrap();
        let y = g.input("y", dtype, vec![rows, 1000]).unwrap();
        let z = if mul { g.mul(x, y) } else { g.add2(x, y) }.unwrap();
        g.set_output("z", z).unwrap();
        (g, z)
    }

    #[test]
    fn keys_bucket_shapes_and_separate_ops_and_dtypes() {
        let (g1, z1) = binary_graph(1000, DType::F32, false);
        let (g2, z2) = binary_graph(1024, DType::F32, false);
        let (g3, z3) = binary_graph(1025, DType::F32, false);
        let (g4, z4) = binary_graph(1000, DType::BF16, false);
        let k1 = tune_key(&g1, z1, &ELEMENTWISE);
        assert_eq!(
            k1,
            tune_key(&g2, z2, &ELEMENTWISE),
            "1000 and 1024 share a bucket"
        );
        assert!(
            k1.ends_with(":f32[1024,1024]<-f32[1024,1024],f32[1024,1024]"),
            "{k1}"
        );
        assert_ne!(k1, tune_key(&g3, z3, &ELEMENTWISE), "1025 rounds to 2048");
        assert_ne!(
            k1,
            tune_key(&g4, z4, &ELEMENTWISE),
            "dtype is part of the key"
        );
        let (g5, z) = binary_graph(1000, DType::F32, true);
        let k5 = tune_key(&g5, z, &ELEMENTWISE);
        assert_ne!(k1.split(':').nth(1), k5.split(':').nth(1), "mul is not add");
        assert_eq!(bucket(&Shape(vec![0, 1, 3, 5])), "[0,1,4,8]");
    }
}
