//! Transpose simplification, two rewrite rules:
//!
//! - `permute(permute(x))` becomes one permutation of `x`, or `x` itself when the two cancel;
//! - `swap(matmul(a, b))`, where `swap` exchanges the last two axes and is the product's only
//!   user, becomes `matmul(swap(b), swap(a))` (`(AB)ᵀ = BᵀAᵀ`, batch axes untouched).
//!
//! The second rule matters for gradients of weights used transposed (`y = x Wᵀ`, the LM head):
//! autodiff writes `dW = swap(swap(x)ᵀ-product)`, whose transpose would otherwise be read with a
//! stride of a whole row by every optimiser kernel. After the rewrite the transposes sit on the
//! product's operands, where the matmul kernels read them in place, and the double transposes
//! cancel.

use crate::{Pass, PassError};
use mmada_ir::{Graph, NodeId, Op};

/// The transpose simplification pass.
pub struct SimplifyTransposes;

fn fail(e: impl std::fmt::Display) -> PassError {
    PassError::Failed {
        pass: "simplify-transposes".into(),
        msg: e.to_string(),
    }
}

fn is_last_two_swap(perm: &[usize]) -> bool {
    let r = perm.len();
    r >= 2
        && perm[r - 1] == r - 2
        && perm[r - 2] == r - 1
        && perm[..r - 2].iter().enumerate().all(|(i, &p)| p == i)
}

/// `permute(perm)` of `x`, folding into `x`'s own permutation when it has one.
fn permute(g: &mut Graph, x: NodeId, perm: &[usize]) -> Result<NodeId, PassError> {
    if let Op::Permute { perm: inner } = &g.node(x).op {
        // Output axis i of the outer permutation is its input axis perm[i], which is the inner
        // permutation's input axis inner[perm[i]].
        let composed: Vec<usize> = perm.iter().map(|&p| inner[p]).collect();
        let src = g.operands(x)[0];
        if composed.iter().enumerate().all(|(i, &p)| p == i) {
            return Ok(src);
        }
        return g.add(Op::Permute { perm: composed }, &[src]).map_err(fail);
    }
    g.add(
        Op::Permute {
            perm: perm.to_vec(),
        },
        &[x],
    )
    .map_err(fail)
}

impl Pass for SimplifyTransposes {
    fn name(&self) -> &'static str {
        "simplify-transposes"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, PassError> {
        let order = g.topo_order().map_err(fail)?;
        let outputs: Vec<NodeId> = g.outputs().iter().map(|(_, id)| *id).collect();
        let mut changed = false;
        for id in order {
            if !g.contains(id) {
                continue;
            }
            let Op::Permute { perm } = g.node(id).op.clone() else {
                continue;
            };
            let x = g.operands(id)[0];
            let replacement = match &g.node(x).op {
                Op::Permute { .. } => Some(permute(g, x, &perm)?),
                Op::MatMul
                    if is_last_two_swap(&perm)
                        && g.users(x).len() == 1
                        && !outputs.contains(&x) =>
                {
                    let ab = g.operands(x);
                    let bt = permute(g, ab[1], &perm)?;
                    let at = permute(g, ab[0], &perm)?;
                    Some(g.add(Op::MatMul, &[bt, at]).map_err(fail)?)
                }
                _ => None,
            };
            if let Some(r) = replacement {
                g.replace_all_uses(id, r);
                if r != id {
                    g.remove_node(id);
                }
                changed = true;
            }
        }
        Ok(changed)
    }
}
