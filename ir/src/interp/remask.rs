//! Reference semantics of [`crate::Op::Remask`], written out directly: per candidate position
//! the noisy argmax over the vocabulary, its confidence, then the per-row top-k commit. The
//! arithmetic is that of the primitive graph [`crate::Graph::remask_unfused`] builds, operation
//! for operation (noise `ℓ + τ·G` in f32, softmax in f64 rounded to f32, ranks on the f32
//! confidences with NaN largest and ties to the lower index, then `∨ confidence > threshold`),
//! so the interpreter gives the same
//! sequence for the fused op and for the graph it replaces.

use super::eval_err;
use crate::error::Result;
use crate::{philox, Remasking, RngDist, Tensor};

/// Does value `a` at position `ia` rank before value `b` at `ib` (larger; NaN largest; ties to
/// the lower position)? The order of [`crate::Op::TopK`].
pub(crate) fn beats(a: f32, ia: usize, b: f32, ib: usize) -> bool {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => ia < ib,
        (true, false) => true,
        (false, true) => false,
        (false, false) => a > b || (a == b && ia < ib),
    }
}

/// The token and confidence of candidate position `row` (its logits `l`, flat row index `row`).
fn choose(
    l: &[f32],
    row: usize,
    temperature: f32,
    (seed, offset, stream): (i64, i64, u32),
    remasking: Remasking,
) -> (i64, f32) {
    let v = l.len();
    let mut best = 0usize;
    let mut best_val = f32::NEG_INFINITY;
    for (j, &x) in l.iter().enumerate() {
        let g = philox::sample(RngDist::Gumbel, seed, offset, stream, (row * v + j) as u64);
        let noisy = x + temperature * g;
        if j == 0 || beats(noisy, j, best_val, best) {
            best = j;
            best_val = noisy;
        }
    }
    let conf = match remasking {
        Remasking::Random => philox::sample(RngDist::Uniform, seed, offset, stream + 1, row as u64),
        Remasking::LowConfidence => {
            let m = l.iter().fold(f64::NEG_INFINITY, |m, &x| {
                if m.is_nan() || x.is_nan() {
                    f64::NAN
                } else {
                    m.max(x as f64)
                }
            });
            let sum: f64 = l.iter().map(|&x| (x as f64 - m).exp()).sum();
            ((l[best] as f64 - m).exp() / sum) as f32
        }
    };
    (best as i64, conf)
}

/// Evaluates a remask node on its eight operands (see [`crate::Op::Remask`]).
pub(super) fn remask(
    ops: &[&Tensor],
    mask_id: i64,
    remasking: Remasking,
    stream: u32,
) -> Result<Tensor> {
    let s = ops[0].shape().0.clone();
    let (b, len, v) = (s[0], s[1], s[2]);
    let logits = ops[0].to_f32_vec();
    let x = ops[1].to_i64_vec();
    let scalar_i = |i: usize| ops[i].to_i64_vec().first().copied();
    let temperature = ops[2].to_f32_vec().first().copied();
    let threshold = ops[7].to_f32_vec().first().copied();
    let (Some(t), Some(seed), Some(offset), Some(block_end), Some(k), Some(thr)) = (
        temperature,
        scalar_i(3),
        scalar_i(4),
        scalar_i(5),
        scalar_i(6),
        threshold,
    ) else {
        return Err(eval_err("remask scalars must hold one value".into()));
    };
    let mut out = x.clone();
    for r in 0..b {
        let mut conf = vec![f32::NEG_INFINITY; len];
        let mut token = vec![0i64; len];
        let cand: Vec<bool> = (0..len)
            .map(|l| x[r * len + l] == mask_id && (l as i64) < block_end)
            .collect();
        for l in (0..len).filter(|&l| cand[l]) {
            let row = r * len + l;
            let (tok, c) = choose(
                &logits[row * v..(row + 1) * v],
                row,
                t,
                (seed, offset, stream),
                remasking,
            );
            token[l] = tok;
            conf[l] = c;
        }
        for l in (0..len).filter(|&l| cand[l]) {
            let rank = (0..len).filter(|&j| beats(conf[j], j, conf[l], l)).count();
            if (rank as i64) < k || conf[l] > thr {
                out[r * len + l] = token[l];
            }
        }
    }
    Tensor::from_i64(ops[1].shape().clone(), out)
}
