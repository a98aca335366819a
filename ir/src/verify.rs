//! The verifier: checks that a graph is well formed. Errors name the node (id and label), its op,
//! and its operands' dtypes and shapes.

use crate::error::{render_operands, IrError, Result};
use crate::{DType, Graph, Literal, Op};
use std::collections::BTreeSet;

/// Checks the whole graph: acyclic, operand slots dense, every node's stored type equal to what
/// its op infers, constants sized to their shapes, unique input and output names, outputs live.
pub fn verify(g: &Graph) -> Result<()> {
    g.topo_order()?;
    let mut input_names = BTreeSet::new();
    for id in g.node_ids() {
        let n = g.node(id);
        let fail = |msg: String| IrError::Verify {
            node: g.describe(id),
            op: n.op.name(),
            msg,
        };
        let operands = g.operands(id);
        let dense = g
            .operand_edges(id)
            .iter()
            .enumerate()
            .all(|(i, (slot, _))| *slot as usize == i);
        if !dense {
            return Err(fail("operand slots are not 0, 1, 2, ...".into()));
        }
        match &n.op {
            Op::Input { name, .. } => {
                if !operands.is_empty() {
                    return Err(fail("an input has operands".into()));
                }
                if !input_names.insert(name.clone()) {
                    return Err(fail(format!("input name '{name}' is used twice")));
                }
            }
            Op::Constant { value } => {
                if !operands.is_empty() {
                    return Err(fail("a constant has operands".into()));
                }
                if value.len() != n.shape.numel() {
                    return Err(fail(format!(
                        "{} values for shape {}",
                        value.len(),
                        n.shape
                    )));
                }
                let ok = matches!(
                    (value, n.dtype),
                    (
                        Literal::Float(_),
                        DType::F64 | DType::F32 | DType::F16 | DType::BF16
                    ) | (Literal::Int(_), DType::I32 | DType::I64)
                        | (Literal::Bool(_), DType::Bool)
                );
                if !ok {
                    return Err(fail(format!(
                        "literal kind does not match dtype {}",
                        n.dtype
                    )));
                }
            }
            op if op.is_self_typed() => {
                let types: Vec<_> = operands
                    .iter()
                    .map(|&o| (g.node(o).dtype, &g.node(o).shape))
                    .collect();
                op.check_self_typed(n.dtype, &n.shape, &types)
                    .map_err(|e| fail(e.to_string()))?;
            }
            op => {
                let types: Vec<_> = operands
                    .iter()
                    .map(|&o| (g.node(o).dtype, &g.node(o).shape))
                    .collect();
                let (dt, s) = op.infer(&types).map_err(|e| fail(e.to_string()))?;
                if dt != n.dtype || s != n.shape {
                    return Err(fail(format!(
                        "declares {}{} but its operands ({}) give {dt}{s}",
                        n.dtype,
                        n.shape,
                        render_operands(&types)
                    )));
                }
            }
        }
    }
    let mut out_names = BTreeSet::new();
    for (name, id) in g.outputs() {
        if !g.contains(*id) {
            return Err(IrError::Verify {
                node: format!("%{}", id.index()),
                op: "output".into(),
                msg: format!("output '{name}' names a removed node"),
            });
        }
        if !out_names.insert(name.clone()) {
            return Err(IrError::Verify {
                node: g.describe(*id),
                op: "output".into(),
                msg: format!("output name '{name}' is used twice"),
            });
        }
    }
    Ok(())
}
