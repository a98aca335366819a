//! Common-subexpression elimination: nodes with the same op, type and operands are merged into
//! the first one (in topological order). Inputs are never merged.

use crate::{Pass, PassError};
use mmada_ir::{Graph, NodeId, Op};
use std::collections::HashMap;

/// Common-subexpression elimination.
pub struct Cse;

impl Pass for Cse {
    fn name(&self) -> &'static str {
        "cse"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, PassError> {
        let order = g.topo_order().map_err(|e| PassError::Failed {
            pass: "cse".into(),
            msg: e.to_string(),
        })?;
        // The key is the op's Debug form (exact for floats: shortest round-trip formatting),
        // the result type and the operand ids, which are already canonical when visited in
        // topological order.
        let mut seen: HashMap<String, NodeId> = HashMap::new();
        let mut changed = false;
        for id in order {
            let n = g.node(id);
            if matches!(n.op, Op::Input { .. }) {
                continue;
            }
            let key = format!("{:?}|{}|{:?}|{:?}", n.op, n.dtype, n.shape, g.operands(id));
            match seen.get(&key) {
                Some(&first) => {
                    g.replace_all_uses(id, first);
                    g.remove_node(id);
                    changed = true;
                }
                None => {
                    seen.insert(key, id);
                }
            }
        }
        Ok(changed)
    }
}
