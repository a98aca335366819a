//! Attention fusion: `softmax(scale · q kᵀ [+ mask bias]) · v` written with primitive ops (the
//! form [`mmada_ir::Graph::attention_unfused`] builds without grouped heads: a transpose of
//! k, two matrix products, a scalar multiply, the `where(mask, 0, min)` bias, a softmax over
//! the keys) becomes one [`Op::Attention`] node, whose kernels keep no `[B, H, T, S]` buffer.
//!
//! Contract:
//! - The match is structural, from the `P · v` product down to q, k, v and the mask, with the
//!   constants checked (a scalar scale; 0 and the dtype's minimum in the bias) and the mask's
//!   broadcast checked to run over heads and query rows only.
//! - The transpose of k may have been merged with an earlier permute (by the transpose
//!   simplification): any permute whose last two axes are swapped is undone by a permute of its
//!   source, or by nothing when that is the identity.
//! - Only probabilities with no other user are fused: a training graph whose backward reads P
//!   is left alone (fusing would compute the scores twice).
//! - Replaced nodes are removed by DCE when nothing else uses them; semantics are unchanged,
//!   since the fused op is defined as exactly this computation.

use crate::{Pass, PassError};
use mmada_ir::{BinaryOp, DType, Graph, Literal, NodeId, Op};

/// The attention fusion pass.
pub struct FuseAttention;

fn fail(e: impl std::fmt::Display) -> PassError {
    PassError::Failed {
        pass: "fuse-attention".into(),
        msg: e.to_string(),
    }
}

/// An attention found in the graph.
struct Found {
    q: NodeId,
    /// k's source and the permute that makes k of it (None: the source is k).
    k_src: NodeId,
    k_perm: Option<Vec<usize>>,
    v: NodeId,
    mask: Option<NodeId>,
    scale: f64,
}

/// The operands of `id` when its op satisfies `want`.
fn expect(g: &Graph, id: NodeId, want: impl Fn(&Op) -> bool) -> Option<Vec<NodeId>> {
    want(&g.node(id).op).then(|| g.operands(id))
}

/// The value of a one-element float constant, looked up through broadcasts.
fn scalar_constant(g: &Graph, mut id: NodeId) -> Option<f64> {
    loop {
        match &g.node(id).op {
            Op::Broadcast { .. } | Op::Reshape { .. } => id = g.operands(id)[0],
            Op::Constant { value } if value.len() == 1 => {
                return match value {
                    Literal::Float(v) => Some(v[0]),
                    _ => None,
                }
            }
            _ => return None,
        }
    }
}

/// The mask `[B, S]` of a bias `where(broadcast(reshape(mask, [B, 1, 1, S])), 0, min)`.
fn mask_of_bias(g: &Graph, bias: NodeId, dt: DType) -> Option<NodeId> {
    let w = expect(g, bias, |o| matches!(o, Op::Where))?;
    let min = dt.lowest();
    (scalar_constant(g, w[1])? == 0.0 && scalar_constant(g, w[2])? == min).then_some(())?;
    let b = expect(g, w[0], |o| matches!(o, Op::Broadcast { .. }))?[0];
    let m = expect(g, b, |o| matches!(o, Op::Reshape { .. }))?[0];
    let (s4, sm) = (&g.node(b).shape, &g.node(m).shape);
    (s4.rank() == 4 && s4.0[1] == 1 && s4.0[2] == 1 && sm.rank() == 2).then_some(())?;
    (g.node(m).dtype == DType::Bool).then_some(m)
}

fn match_attention(g: &Graph, root: NodeId) -> Option<Found> {
    let pv = expect(g, root, |o| matches!(o, Op::MatMul))?;
    let (p, v) = (pv[0], pv[1]);
    if g.users(p).len() != 1 || g.outputs().iter().any(|(_, id)| *id == p) {
        return None;
    }
    let x = expect(g, p, |o| matches!(o, Op::Softmax { axis: 3 }))?[0];
    let dt = g.node(x).dtype;
    let (scaled, mask) = match &g.node(x).op {
        Op::Binary { op: BinaryOp::Add } => {
            let a = g.operands(x);
            (a[0], Some(mask_of_bias(g, a[1], dt)?))
        }
        _ => (x, None),
    };
    let m = expect(g, scaled, |o| matches!(o, Op::Binary { op: BinaryOp::Mul }))?;
    let scale = scalar_constant(g, m[1])?;
    let qk = expect(g, m[0], |o| matches!(o, Op::MatMul))?;
    let (q, kt) = (qk[0], qk[1]);
    let Op::Permute { perm } = &g.node(kt).op else {
        return None;
    };
    let r = perm.len();
    if r != 4 {
        return None;
    }
    let mut k_perm = perm.clone();
    k_perm.swap(r - 2, r - 1);
    let identity = k_perm.iter().enumerate().all(|(i, &p)| i == p);
    let found = Found {
        q,
        k_src: g.operands(kt)[0],
        k_perm: (!identity).then_some(k_perm),
        v,
        mask,
        scale,
    };
    // The fused op's operand rule must hold (shapes, dtypes, the mask's [B, S]).
    let sk = {
        let src = &g.node(found.k_src).shape;
        match &found.k_perm {
            Some(p) => mmada_ir::Shape(p.iter().map(|&d| src.0[d]).collect()),
            None => src.clone(),
        }
    };
    let mut types = vec![
        (g.node(q).dtype, g.node(q).shape.clone()),
        (g.node(found.k_src).dtype, sk),
        (g.node(v).dtype, g.node(v).shape.clone()),
    ];
    if let Some(m) = mask {
        types.push((g.node(m).dtype, g.node(m).shape.clone()));
    }
    let refs: Vec<(DType, &mmada_ir::Shape)> = types.iter().map(|(d, s)| (*d, s)).collect();
    let op = Op::Attention {
        scale,
        masked: mask.is_some(),
    };
    let (odt, oshape) = op.infer(&refs).ok()?;
    (odt == g.node(root).dtype && oshape == g.node(root).shape).then_some(found)
}

impl Pass for FuseAttention {
    fn name(&self) -> &'static str {
        "fuse-attention"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, PassError> {
        let order = g.topo_order().map_err(fail)?;
        let mut changed = false;
        for id in order {
            if !g.contains(id) || !matches!(g.node(id).op, Op::MatMul) {
                continue;
            }
            let Some(f) = match_attention(g, id) else {
                continue;
            };
            let k = match f.k_perm {
                Some(perm) => g.permute(f.k_src, &perm).map_err(fail)?,
                None => f.k_src,
            };
            let fused = g.attention(f.q, k, f.v, f.mask, f.scale).map_err(fail)?;
            g.replace_all_uses(id, fused);
            g.remove_node(id);
            changed = true;
        }
        Ok(changed)
    }
}
