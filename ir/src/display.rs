//! Human-readable dumps: a text listing and Graphviz dot.

use crate::fused::{FusedBody, Operand};
use crate::{Graph, Op, Result};
use std::fmt::Write;

fn op_detail(op: &Op) -> String {
    match op {
        Op::Input { name, role } => format!("input \"{name}\" {role:?}").to_lowercase(),
        Op::Constant { value } => {
            if value.len() == 1 {
                format!("constant {}", value.get_f64(0))
            } else {
                format!("constant [{} values]", value.len())
            }
        }
        Op::Reduce {
            op,
            axes,
            keep_dims,
        } => format!("reduce_{} axes={axes:?} keep_dims={keep_dims}", op.name()),
        Op::Reshape { shape } => format!("reshape {shape}"),
        Op::Permute { perm } => format!("permute {perm:?}"),
        Op::Broadcast { shape } => format!("broadcast {shape}"),
        other => other.name(),
    }
}

fn body_text(body: &FusedBody, out: &mut String) {
    for (i, n) in body.nodes.iter().enumerate() {
        let ops: Vec<String> = n
            .operands
            .iter()
            .map(|o| match o {
                Operand::Arg(a) => format!("$arg{a}"),
                Operand::Node(j) => format!("$n{j}"),
            })
            .collect();
        let root = if i == body.root { "  <- root" } else { "" };
        let _ = writeln!(
            out,
            "      $n{i} = {}({}) : {}{}{root}",
            op_detail(&n.op),
            ops.join(", "),
            n.dtype,
            n.shape
        );
    }
}

/// One line per node in topological order, fused bodies indented below their node, then the
/// outputs.
pub fn to_text(g: &Graph) -> Result<String> {
    let mut s = String::new();
    for id in g.topo_order()? {
        let n = g.node(id);
        let ops: Vec<String> = g
            .operands(id)
            .iter()
            .map(|o| format!("%{}", o.index()))
            .collect();
        let label = n
            .label
            .as_deref()
            .map(|l| format!("  # {l}"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "%{} = {}({}) : {}{}{label}",
            id.index(),
            op_detail(&n.op),
            ops.join(", "),
            n.dtype,
            n.shape
        );
        if let Op::Fused { body } = &n.op {
            body_text(body, &mut s);
        }
    }
    for (name, id) in g.outputs() {
        let _ = writeln!(s, "output \"{name}\" = %{}", id.index());
    }
    Ok(s)
}

/// Graphviz dot rendering.
pub fn to_dot(g: &Graph) -> Result<String> {
    let mut s = String::from("digraph mmada {\n  node [shape=box, fontname=monospace];\n");
    for id in g.topo_order()? {
        let n = g.node(id);
        let _ = writeln!(
            s,
            "  n{} [label=\"%{} {}\\n{}{}\"];",
            id.index(),
            id.index(),
            op_detail(&n.op).replace('"', "'"),
            n.dtype,
            n.shape
        );
        for (slot, o) in g.operands(id).iter().enumerate() {
            let _ = writeln!(s, "  n{} -> n{} [label=\"{slot}\"];", o.index(), id.index());
        }
    }
    for (name, id) in g.outputs() {
        let _ = writeln!(s, "  out_{name} [label=\"{name}\", shape=ellipse];");
        let _ = writeln!(s, "  n{} -> out_{name};", id.index());
    }
    s.push_str("}\n");
    Ok(s)
}
