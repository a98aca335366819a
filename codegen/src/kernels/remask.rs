//! The fused confidence top-k remask ([`mmada_ir::Op::Remask`]): one kernel per sampler step,
//! one block per batch row.
//!
//! - Phase 1, each thread for its positions (thread id, + block, …): a candidate (masked, before
//!   `block_end`) streams once over its V logits keeping the noisy argmax `ℓ + τ·G` (Philox
//!   Gumbel numbers generated in place; skipped when τ = 0) and an online log-sum-exp (running
//!   maximum and rescaled sum, one exponential per element), then stores its token in the output
//!   and its confidence `exp(ℓ[x̂] − m) / s` (or a uniform number) in shared memory; every other
//!   position stores its current id and −∞.
//! - Barrier.
//! - Phase 2, same positions: a candidate counts the confidences of its row that beat its own
//!   (larger; NaN largest; ties to the lower position) and keeps its token when that rank is
//!   below `k` or its confidence is above `threshold`, else writes back `[MASK]`.
//!
//! No `[B, L, V]` buffer is read twice or written: the probabilities and the noise exist only
//! in registers. Shared memory: L f32 per block.

use super::index::next_pow2;
use super::scan::beats;
use crate::kir::{Access, BlockStmt, Expr, KBinary, KCmp, KUnary, Kernel, KernelBuilder, VTy};
use mmada_ir::{DType, Remasking, RngDist};

/// The remask kernel for logits `[b, l, v]`; parameters in operand order (logits, x,
/// temperature, seed, offset, block_end, k, threshold), then the output sequence.
#[allow(clippy::too_many_arguments)]
pub fn remask_kernel(
    name: &str,
    (b, l, v): (u64, u64, u64),
    mask_id: i64,
    remasking: Remasking,
    stream: u32,
    max_block: u64,
) -> Kernel {
    let block = next_pow2(l).clamp(32, max_block.max(32));
    let mut kb = KernelBuilder::new(name, b.max(1), block as u32);
    let logits = kb.param("logits", DType::F32, b * l * v, Access::Read);
    let x = kb.param("x", DType::I64, b * l, Access::Read);
    let temp = kb.param("temperature", DType::F32, 1, Access::Read);
    let seed = kb.param("seed", DType::I64, 1, Access::Read);
    let offset = kb.param("offset", DType::I64, 1, Access::Read);
    let end = kb.param("block_end", DType::I64, 1, Access::Read);
    let kk = kb.param("k", DType::I64, 1, Access::Read);
    let thr = kb.param("threshold", DType::F32, 1, Access::Read);
    let out = kb.param("out", DType::I64, b * l, Access::ReadWrite);
    let conf = kb.shared("conf", DType::F32, l);
    let is_candidate = |pos: Expr, id: Expr| {
        let masked = Expr::cmp(KCmp::Eq, id, Expr::i64(mask_id));
        let in_block = Expr::cmp(
            KCmp::Lt,
            Expr::cast(VTy::I64, pos),
            Expr::load(end, Expr::idx(0)),
        );
        masked.and(in_block)
    };
    let phase1 = kb.phase(|s| {
        s.for_(Expr::ThreadId, Expr::idx(l), Expr::idx(block), |s, p| {
            let at = s.let_(Expr::BlockId * Expr::idx(l) + p.clone());
            let id = s.let_(Expr::load(x, at.clone()));
            let cand = s.let_(is_candidate(p.clone(), id.clone()));
            s.if_(
                cand,
                |s| {
                    let base = s.let_(at.clone() * Expr::idx(v));
                    let t = s.let_(Expr::load(temp, Expr::idx(0)));
                    let sd = s.let_(Expr::load(seed, Expr::idx(0)));
                    let off = s.let_(Expr::load(offset, Expr::idx(0)));
                    let x0 = s.let_(Expr::load(logits, base.clone()));
                    let best = s.local(Expr::f32(f32::NEG_INFINITY));
                    let best_i = s.local(Expr::idx(0));
                    let m = s.local(x0);
                    let sum = s.local(Expr::f32(0.0));
                    let noisy_t = Expr::cmp(KCmp::Ne, t.clone(), Expr::f32(0.0));
                    // One pass over the row: argmax of the (noisy) logits, online log-sum-exp.
                    let walk = |s: &mut crate::kir::Scope, noisy: bool| {
                        s.for_(Expr::idx(0), Expr::idx(v), Expr::idx(1), |s, j| {
                            let xv = s.let_(Expr::load(logits, base.clone() + j.clone()));
                            let z = if noisy {
                                let i = s.let_(base.clone() + j.clone());
                                let g = super::rng::sample(
                                    s,
                                    RngDist::Gumbel,
                                    sd.clone(),
                                    off.clone(),
                                    stream,
                                    i,
                                );
                                let tg = s.let_(Expr::bin(KBinary::Mul, t.clone(), g));
                                s.let_(Expr::bin(KBinary::Add, xv.clone(), tg))
                            } else {
                                xv.clone()
                            };
                            let first = Expr::cmp(KCmp::Eq, j.clone(), Expr::idx(0));
                            let wins = beats(
                                VTy::F32,
                                z.clone(),
                                j.clone(),
                                Expr::Local(best),
                                Expr::Local(best_i),
                            );
                            let take = s.let_(Expr::bin(KBinary::Or, first, wins));
                            s.set(best, Expr::select(take.clone(), z, Expr::Local(best)));
                            s.set(best_i, Expr::select(take, j, Expr::Local(best_i)));
                            let up = s.let_(Expr::cmp(KCmp::Gt, xv.clone(), Expr::Local(m)));
                            let d = Expr::select(
                                up.clone(),
                                Expr::Local(m) - xv.clone(),
                                xv.clone() - Expr::Local(m),
                            );
                            let e = s.let_(Expr::un(KUnary::Exp, d));
                            let grown = Expr::fma(Expr::Local(sum), e.clone(), Expr::f32(1.0));
                            s.set(sum, Expr::select(up.clone(), grown, Expr::Local(sum) + e));
                            s.set(m, Expr::select(up, xv, Expr::Local(m)));
                        });
                    };
                    s.if_(noisy_t, |s| walk(s, true), |s| walk(s, false));
                    let c = match remasking {
                        Remasking::LowConfidence => {
                            let xb = s.let_(Expr::load(logits, base.clone() + Expr::Local(best_i)));
                            let e = s.let_(Expr::un(KUnary::Exp, xb - Expr::Local(m)));
                            Expr::bin(KBinary::Div, e, Expr::Local(sum))
                        }
                        Remasking::Random => super::rng::sample(
                            s,
                            RngDist::Uniform,
                            sd.clone(),
                            off.clone(),
                            stream + 1,
                            at.clone(),
                        ),
                    };
                    s.store(conf, p.clone(), c);
                    s.store(out, at.clone(), Expr::cast(VTy::I64, Expr::Local(best_i)));
                },
                |s| {
                    s.store(conf, p.clone(), Expr::f32(f32::NEG_INFINITY));
                    s.store(out, at.clone(), id.clone());
                },
            );
        });
    });
    let phase2 = kb.phase(|s| {
        s.for_(Expr::ThreadId, Expr::idx(l), Expr::idx(block), |s, p| {
            let at = s.let_(Expr::BlockId * Expr::idx(l) + p.clone());
            let id = s.let_(Expr::load(x, at.clone()));
            let cand = s.let_(is_candidate(p.clone(), id));
            s.if_(
                cand,
                |s| {
                    let mine = s.let_(Expr::load(conf, p.clone()));
                    let rank = s.local(Expr::idx(0));
                    s.for_(Expr::idx(0), Expr::idx(l), Expr::idx(1), |s, j| {
                        let cj = s.let_(Expr::load(conf, j.clone()));
                        let b = beats(VTy::F32, cj, j, mine.clone(), p.clone());
                        s.set(rank, Expr::Local(rank) + Expr::cast(VTy::Index, b));
                    });
                    let k = Expr::load(kk, Expr::idx(0));
                    let beyond = Expr::cmp(KCmp::Ge, Expr::cast(VTy::I64, Expr::Local(rank)), k);
                    let sure = Expr::cmp(KCmp::Gt, mine.clone(), Expr::load(thr, Expr::idx(0)));
                    let dropped = beyond.and(Expr::un(KUnary::Not, sure));
                    s.if_(
                        dropped,
                        |s| s.store(out, at.clone(), Expr::i64(mask_id)),
                        |_| {},
                    );
                },
                |_| {},
            );
        });
    });
    kb.finish(vec![phase1, BlockStmt::Barrier, phase2])
}
