//! Remask fusion: the confidence top-k remask of a sampler step, written with primitive ops
//! (the form [`mmada_ir::Graph::remask_unfused`] builds: noisy argmax, softmax, gather, −∞
//! outside the candidates, a full top-k over positions, a scatter of `rank < k`, `∨
//! confidence > threshold`, the commit),
//! becomes one [`Op::Remask`] node, whose kernel streams over the vocabulary.
//!
//! Contract:
//! - The match is structural, from the commit `where((chosen ∨ sure) ∧ cand, x̂, x)` down to
//!   the logits, the sequence and the six scalar inputs, with the constants checked (the mask id, 0.5,
//!   0, −∞) and the operands that must be one node checked to be one node (the logits read by
//!   the argmax and the softmax, the candidates used twice, the random streams' seed and
//!   offset). Anything else is left alone.
//! - The replaced nodes stay for their other users (if any) and are otherwise removed by DCE;
//!   semantics are unchanged, since the fused op is defined as exactly this computation.
//! - It runs before elementwise fusion, which would otherwise absorb parts of the pattern.

use crate::{Pass, PassError};
use mmada_ir::{
    BinaryOp, CompareOp, DType, Graph, Literal, NodeId, Op, RemaskArgs, Remasking, RngDist,
};

/// The remask fusion pass.
pub struct FuseRemask;

fn fail(e: impl std::fmt::Display) -> PassError {
    PassError::Failed {
        pass: "fuse-remask".into(),
        msg: e.to_string(),
    }
}

/// A remask found in the graph.
struct Found {
    args: RemaskArgs,
    mask_id: i64,
    remasking: Remasking,
    stream: u32,
}

/// The operands of `id` when its op satisfies `want`.
fn expect(g: &Graph, id: NodeId, want: impl Fn(&Op) -> bool) -> Option<Vec<NodeId>> {
    want(&g.node(id).op).then(|| g.operands(id))
}

/// The value of a one-element constant, looked up through broadcasts.
fn scalar_constant(g: &Graph, mut id: NodeId) -> Option<f64> {
    loop {
        match &g.node(id).op {
            Op::Broadcast { .. } => id = g.operands(id)[0],
            Op::Constant { value } if value.len() == 1 => {
                return Some(match value {
                    Literal::Int(v) => v[0] as f64,
                    other => other.get_f64(0),
                })
            }
            _ => return None,
        }
    }
}

/// The scalar a broadcast node stretches.
fn broadcast_scalar(g: &Graph, id: NodeId) -> Option<NodeId> {
    let src = expect(g, id, |o| matches!(o, Op::Broadcast { .. }))?[0];
    (g.node(src).shape.rank() == 0).then_some(src)
}

/// `iota(axis) < broadcast(scalar)` over i64: returns the scalar.
fn iota_below(g: &Graph, id: NodeId) -> Option<NodeId> {
    let o = expect(g, id, |o| matches!(o, Op::Compare { op: CompareOp::Lt }))?;
    expect(g, o[0], |o| matches!(o, Op::Iota { axis: 1 }))?;
    (g.node(o[0]).dtype == DType::I64).then_some(())?;
    broadcast_scalar(g, o[1])
}

fn match_remask(g: &Graph, root: NodeId) -> Option<Found> {
    let is = |id: NodeId, want: &dyn Fn(&Op) -> bool| expect(g, id, want);
    let w = is(root, &|o| matches!(o, Op::Where))?;
    let (commit, xhat, x) = (w[0], w[1], w[2]);
    let len = *g.node(x).shape.0.get(1)?;
    let c = is(commit, &|o| matches!(o, Op::Binary { op: BinaryOp::And }))?;
    let (either, cand) = (c[0], c[1]);
    let or = is(either, &|o| matches!(o, Op::Binary { op: BinaryOp::Or }))?;
    let (chosen, sure) = (or[0], or[1]);
    let sg = is(sure, &|o| matches!(o, Op::Compare { op: CompareOp::Gt }))?;
    let threshold = broadcast_scalar(g, sg[1])?;
    let gt = is(chosen, &|o| matches!(o, Op::Compare { op: CompareOp::Gt }))?;
    (scalar_constant(g, gt[1])? == 0.5).then_some(())?;
    let sc = is(gt[0], &|o| matches!(o, Op::ScatterAdd { axis: 1 }))?;
    (scalar_constant(g, sc[0])? == 0.0).then_some(())?;
    let take = is(sc[2], &|o| matches!(o, Op::Cast { to: DType::F32 }))?;
    let k = iota_below(g, take[0])?;
    let conf = is(
        sc[1],
        &|o| matches!(o, Op::TopK { k, axis: 1 } if *k == len),
    )?[0];
    (sg[0] == conf).then_some(())?;
    let cw = is(conf, &|o| matches!(o, Op::Where))?;
    (cw[0] == cand && scalar_constant(g, cw[2])? == f64::NEG_INFINITY).then_some(())?;
    let cd = is(cand, &|o| matches!(o, Op::Binary { op: BinaryOp::And }))?;
    let eq = is(cd[0], &|o| matches!(o, Op::Compare { op: CompareOp::Eq }))?;
    (eq[0] == x).then_some(())?;
    let mask_id = scalar_constant(g, eq[1])? as i64;
    let block_end = iota_below(g, cd[1])?;
    let am = is(xhat, &|o| matches!(o, Op::Reshape { .. }))?[0];
    let noisy = is(am, &|o| matches!(o, Op::TopK { k: 1, axis: 2 }))?[0];
    let add = is(noisy, &|o| matches!(o, Op::Binary { op: BinaryOp::Add }))?;
    let logits = add[0];
    let mul = is(add[1], &|o| matches!(o, Op::Binary { op: BinaryOp::Mul }))?;
    let temperature = broadcast_scalar(g, mul[0])?;
    let Op::Rng {
        dist: RngDist::Gumbel,
        stream,
    } = g.node(mul[1]).op
    else {
        return None;
    };
    (g.node(mul[1]).shape == g.node(logits).shape).then_some(())?;
    let rs = g.operands(mul[1]);
    let (seed, offset) = (rs[0], rs[1]);
    let remasking = match &g.node(cw[1]).op {
        Op::Rng {
            dist: RngDist::Uniform,
            stream: s,
        } if *s == stream + 1 && g.operands(cw[1]) == rs => Remasking::Random,
        Op::Reshape { .. } => {
            let gather = g.operands(cw[1])[0];
            let ga = is(gather, &|o| matches!(o, Op::Gather { axis: 2 }))?;
            let sm = is(ga[0], &|o| matches!(o, Op::Softmax { axis: 2 }))?;
            (sm[0] == logits && ga[1] == am).then_some(())?;
            Remasking::LowConfidence
        }
        _ => return None,
    };
    let args = RemaskArgs {
        logits,
        x,
        temperature,
        seed,
        offset,
        block_end,
        k,
        threshold,
    };
    // The fused op's operand types must hold (the unfused form may be over other shapes).
    let types: Vec<(DType, &mmada_ir::Shape)> = args
        .operands()
        .iter()
        .map(|&n| (g.node(n).dtype, &g.node(n).shape))
        .collect();
    let op = Op::Remask {
        mask_id,
        remasking,
        stream,
    };
    op.infer(&types).ok()?;
    Some(Found {
        args,
        mask_id,
        remasking,
        stream,
    })
}

impl Pass for FuseRemask {
    fn name(&self) -> &'static str {
        "fuse-remask"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, PassError> {
        let order = g.topo_order().map_err(fail)?;
        let mut changed = false;
        for id in order {
            if !g.contains(id) || !matches!(g.node(id).op, Op::Where) {
                continue;
            }
            let Some(f) = match_remask(g, id) else {
                continue;
            };
            let fused = g
                .remask(f.args, f.mask_id, f.remasking, f.stream)
                .map_err(fail)?;
            g.replace_all_uses(id, fused);
            g.remove_node(id);
            changed = true;
        }
        Ok(changed)
    }
}
