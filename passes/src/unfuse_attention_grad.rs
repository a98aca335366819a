//! Attention's backward pieces ([`Op::AttentionGrad`]) back to primitive ops, for builds whose
//! only target is the host.
//!
//! On the GPU the three pieces are the FlashAttention-2 backward: no `[B, H, T, S]` buffer,
//! each piece recomputing the probabilities. On the CPU the scores of one layer fit in memory,
//! and the pieces' recomputations cost more than they save: the dQ and dK | dV routines
//! each recompute the scores and `dO vᵀ`, seven small per-head products in all, where the
//! primitive form, after common-subexpression elimination, makes five batched products on
//! the gemm library. Measured interleaved on 2 cores (2026-12-08, `benches/RESULTS.md`), the
//! pieces made the bench-tiny and bench-small train steps 9–10 % slower.
//!
//! Contract:
//! - Each piece becomes the graph [`mmada_ir::Graph::attention_grad_unfused`] builds, which is
//!   its semantics: values are unchanged.
//! - It runs before CSE, so the three pieces of one attention share their scores, statistics,
//!   probabilities and `dO vᵀ`; DCE removes the pieces.
//! - [`crate::pipeline_for`] includes it only when no GPU target is built.

use crate::{Pass, PassError};
use mmada_ir::{AttentionPart, Graph, Op};

/// The pass.
pub struct UnfuseAttentionGrad;

impl Pass for UnfuseAttentionGrad {
    fn name(&self) -> &'static str {
        "unfuse-attention-grad"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, PassError> {
        let fail = |e: mmada_ir::IrError| PassError::Failed {
            pass: "unfuse-attention-grad".into(),
            msg: e.to_string(),
        };
        let order = g.topo_order().map_err(fail)?;
        let mut changed = false;
        for id in order {
            let Op::AttentionGrad {
                scale,
                masked,
                part,
            } = g.node(id).op
            else {
                continue;
            };
            let operands = g.operands(id);
            let plain = if part == AttentionPart::Stats { 2 } else { 6 };
            let mask = masked.then(|| operands[plain]);
            let label = g.node(id).label.clone();
            let new = g
                .attention_grad_unfused(part, &operands[..plain], mask, scale)
                .map_err(fail)?;
            if let Some(l) = label {
                g.set_label(new, &l);
            }
            g.replace_all_uses(id, new);
            g.remove_node(id);
            changed = true;
        }
        Ok(changed)
    }
}
