//! Dead-code elimination: removes every node no output depends on. Inputs are kept (they are the
//! graph's interface even when unused).

use crate::{Pass, PassError};
use mmada_ir::{Graph, Op};
use std::collections::HashSet;

/// Dead-code elimination.
pub struct Dce;

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, PassError> {
        let mut live = HashSet::new();
        let mut stack: Vec<_> = g.outputs().iter().map(|(_, id)| *id).collect();
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                stack.extend(g.operands(n));
            }
        }
        let dead: Vec<_> = g
            .node_ids()
            .into_iter()
            .filter(|n| !live.contains(n) && !matches!(g.node(*n).op, Op::Input { .. }))
            .collect();
        for &n in &dead {
            g.remove_node(n);
        }
        Ok(!dead.is_empty())
    }
}
