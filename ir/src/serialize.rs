//! Versioned graph serialization (JSON through serde).
//!
//! The encoded form lists nodes in topological order with dense ids, so equal graphs encode to
//! equal bytes. Decoding checks the format tag and version, that operands refer to earlier nodes,
//! and then runs the verifier: a malformed file is an error, never a panic.

use crate::error::{IrError, Result};
use crate::{verify, DType, Graph, Node, NodeId, Op, Shape};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Format tag written into every encoded graph.
pub const GRAPH_FORMAT: &str = "mmada-graph";
/// Current encoding version. Bump when the encoding changes incompatibly.
pub const GRAPH_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct SerialGraph {
    format: String,
    version: u32,
    nodes: Vec<SerialNode>,
    outputs: Vec<SerialOutput>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    updates: Vec<(String, String)>,
}

#[derive(Serialize, Deserialize)]
struct SerialNode {
    id: usize,
    op: Op,
    dtype: DType,
    shape: Shape,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    #[serde(default)]
    operands: Vec<usize>,
}

#[derive(Serialize, Deserialize)]
struct SerialOutput {
    name: String,
    node: usize,
}

/// Encodes a graph as JSON (nodes in topological order, ids renumbered densely).
pub fn to_json(g: &Graph) -> Result<String> {
    let order = g.topo_order()?;
    let dense: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let nodes = order
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let n = g.node(id);
            SerialNode {
                id: i,
                op: n.op.clone(),
                dtype: n.dtype,
                shape: n.shape.clone(),
                label: n.label.clone(),
                operands: g.operands(id).iter().map(|o| dense[o]).collect(),
            }
        })
        .collect();
    let outputs = g
        .outputs()
        .iter()
        .map(|(name, id)| SerialOutput {
            name: name.clone(),
            node: dense[id],
        })
        .collect();
    let sg = SerialGraph {
        format: GRAPH_FORMAT.into(),
        version: GRAPH_VERSION,
        nodes,
        outputs,
        updates: g.updates().to_vec(),
    };
    serde_json::to_string(&sg).map_err(|e| IrError::Decode(format!("encode: {e}")))
}

/// Decodes and verifies a graph encoded by [`to_json`].
pub fn from_json(text: &str) -> Result<Graph> {
    let sg: SerialGraph = serde_json::from_str(text).map_err(|e| IrError::Decode(e.to_string()))?;
    if sg.format != GRAPH_FORMAT {
        return Err(IrError::Decode(format!(
            "format tag is '{}', expected '{GRAPH_FORMAT}'",
            sg.format
        )));
    }
    if sg.version != GRAPH_VERSION {
        return Err(IrError::Decode(format!(
            "graph version {} is not supported (this build reads version {GRAPH_VERSION})",
            sg.version
        )));
    }
    let mut g = Graph::new();
    let mut ids: Vec<NodeId> = Vec::with_capacity(sg.nodes.len());
    for (i, n) in sg.nodes.into_iter().enumerate() {
        if n.id != i {
            return Err(IrError::Decode(format!("node {i} carries id {}", n.id)));
        }
        let mut operands = Vec::with_capacity(n.operands.len());
        for &o in &n.operands {
            if o >= i {
                return Err(IrError::Decode(format!(
                    "node {i} uses node {o}, which does not come before it"
                )));
            }
            operands.push(ids[o]);
        }
        if operands.len() != n.op.arity() {
            return Err(IrError::Decode(format!(
                "node {i} ({}) has {} operands, the op takes {}",
                n.op.name(),
                operands.len(),
                n.op.arity()
            )));
        }
        if let Op::Fused { body } = &n.op {
            body.check_body()
                .map_err(|e| IrError::Decode(format!("node {i}: {e}")))?;
        }
        ids.push(g.add_unchecked(
            Node {
                op: n.op,
                dtype: n.dtype,
                shape: n.shape,
                label: n.label,
            },
            &operands,
        ));
    }
    for o in sg.outputs {
        let id = *ids.get(o.node).ok_or_else(|| {
            IrError::Decode(format!("output '{}' names missing node {}", o.name, o.node))
        })?;
        g.set_output(&o.name, id)?;
    }
    for (out, inp) in &sg.updates {
        g.set_update(out, inp)?;
    }
    verify(&g)?;
    Ok(g)
}
