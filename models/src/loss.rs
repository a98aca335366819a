//! The masked-diffusion losses exactly as the reference computes them (spec §4.2).
//!
//! Text rows (LLaDA style): per row b, `t_b ~ U(0,1)`, `p_b = (1−ε)t_b + ε` (ε = 1e-3); every
//! position is masked independently with probability `p_b`; prompt positions of chat/SFT rows
//! are then restored. The loss sums `CE_i / p_b` over masked positions and normalises per row
//! type: pretraining rows by `1/(B·L)`, chat/SFT rows by `(1/B)(1/A_b)` with `A_b` the number
//! of non-prompt positions. Both are one formula with a per-row weight fed from the host:
//! `L = Σ_b w_b Σ_{i∈M_b} CE_i / p_b` ([`row_weights`]).
//!
//! Image rows (MaskGIT style): `r = cos(π u / 2)`, exactly `k = max(1, round(N r))` of the N
//! image positions are masked (a uniformly random subset), and the loss is the token mean of CE
//! over the masked image positions plus the always-kept `<|soi|>`/`<|eoi|>` targets — no 1/t.
//!
//! Masks come from the Philox op keyed by (seed, offset), so a step is reproducible anywhere.

use mmada_ir::{
    BinaryOp, CompareOp, DType, Graph, NodeId, ReduceOp, Result, RngDist, Shape, UnaryOp,
};

/// Noise offset of training step `step` (`step · 2³²`): the Philox counter of its masks.
pub fn rng_offset(step: usize) -> i64 {
    (step as i64) << 32
}

/// ε of `p = (1 − ε) t + ε`.
pub const EPS: f64 = 1e-3;

/// What kind of row a text batch row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKind {
    /// Pretraining LM row: loss normalised by `1/(B_lm · L)`.
    Lm,
    /// Chat/SFT/MMU row: loss normalised by `1/(B_sft · A_b)`.
    Sft {
        /// Number of non-prompt positions (answer and EOS padding).
        answer_len: usize,
    },
}

/// Per-row weights `w_b` of [`masked_diffusion_loss`] for a batch of rows of length `l`, with
/// task coefficients for the LM and SFT row types.
pub fn row_weights(kinds: &[RowKind], l: usize, coef_lm: f64, coef_sft: f64) -> Vec<f64> {
    let n_lm = kinds.iter().filter(|k| matches!(k, RowKind::Lm)).count();
    let n_sft = kinds.len() - n_lm;
    kinds
        .iter()
        .map(|k| match *k {
            RowKind::Lm => coef_lm / (n_lm * l) as f64,
            RowKind::Sft { answer_len } => coef_sft / (n_sft as f64 * answer_len.max(1) as f64),
        })
        .collect()
}

/// The sampled noise of a text batch: per-row masking probability `p` (`[B]`, f32) and the
/// mask (`[B, L]`, bool; prompt positions never masked).
pub struct TextMask {
    /// Masking probability per row.
    pub p: NodeId,
    /// True where the token is replaced by `[MASK]`.
    pub masked: NodeId,
}

/// Draws `t`, `p` and the mask from the Philox op: stream 0 gives `t_b`, stream 1 the
/// per-position uniforms.
pub fn sample_text_mask(
    g: &mut Graph,
    seed: NodeId,
    offset: NodeId,
    prompt: NodeId,
) -> Result<TextMask> {
    sample_text_mask_above(g, seed, offset, prompt, None)
}

/// [`sample_text_mask`] with a floor `f_b` under each row's masking probability:
/// `p_b = f_b + (1 − f_b)·((1 − ε)t_b + ε)`, i.e. `t` uniform on `[f_b, 1]` (the loss keeps its
/// `1/p_b`). `None` or all-zero floors give [`sample_text_mask`]'s graph.
pub fn sample_text_mask_above(
    g: &mut Graph,
    seed: NodeId,
    offset: NodeId,
    prompt: NodeId,
    floor: Option<&[f64]>,
) -> Result<TextMask> {
    let s = g.try_node(prompt)?.shape.clone();
    let (b, l) = (s.0[0], s.0[1]);
    let t = g.rng(RngDist::Uniform, 0, seed, offset, [b])?;
    let p = g.binary_scalar(BinaryOp::Mul, t, 1.0 - EPS)?;
    let mut p = g.binary_scalar(BinaryOp::Add, p, EPS)?;
    if let Some(f) = floor.filter(|f| f.iter().any(|&v| v != 0.0)) {
        if f.len() != b || f.iter().any(|v| !(0.0..1.0).contains(v)) {
            return Err(mmada_ir::IrError::Input {
                name: "mask floor".into(),
                msg: format!("{b} floors in [0, 1) expected, got {f:?}"),
            });
        }
        let fl = g.constant_f64(DType::F32, [b], f.to_vec())?;
        let rest = g.constant_f64(DType::F32, [b], f.iter().map(|v| 1.0 - v).collect())?;
        let scaled = g.binary(BinaryOp::Mul, p, rest)?;
        p = g.binary(BinaryOp::Add, scaled, fl)?;
    }
    let u = g.rng(RngDist::Uniform, 1, seed, offset, [b, l])?;
    let pc = g.reshape(p, [b, 1])?;
    let hit = g.compare(CompareOp::Lt, u, pc)?;
    let keep = g.unary(UnaryOp::Not, prompt)?;
    let masked = g.binary(BinaryOp::And, hit, keep)?;
    Ok(TextMask { p, masked })
}

/// `x_t`: `[MASK]` where `masked`, the clean ids elsewhere.
pub fn apply_mask(g: &mut Graph, x0: NodeId, masked: NodeId, mask_id: i64) -> Result<NodeId> {
    let m = g.full(DType::I64, mask_id as f64, Shape::scalar())?;
    g.where_(masked, m, x0)
}

/// `L = Σ_b w_b Σ_i masked_bi · CE_bi / p_b` for logits `[B, L, V]`, targets `x0 [B, L]`,
/// bool `masked [B, L]`, `p [B]` and row weights `w [B]` (all f32).
pub fn masked_diffusion_loss(
    g: &mut Graph,
    logits: NodeId,
    x0: NodeId,
    masked: NodeId,
    p: NodeId,
    w: NodeId,
) -> Result<NodeId> {
    let ce = g.cross_entropy(logits, x0)?; // [B, L]
    let rows = weighted_row_losses(g, ce, masked, p, w)?;
    g.reduce(ReduceOp::Sum, rows, &[0], false)
}

/// The per-row terms `w_b Σ_i masked_bi · CE_bi / p_b` (`[B]`) of [`masked_diffusion_loss`],
/// from the cross-entropies `ce [B, L]`; their sum is the loss.
pub fn weighted_row_losses(
    g: &mut Graph,
    ce: NodeId,
    masked: NodeId,
    p: NodeId,
    w: NodeId,
) -> Result<NodeId> {
    let m = g.cast(masked, DType::F32)?;
    let per = g.mul(ce, m)?;
    let rows = g.reduce(ReduceOp::Sum, per, &[1], false)?; // [B]
    let scale = g.div(w, p)?;
    g.mul(rows, scale)
}

/// MaskGIT masking of the `n` image positions per row: `u ~ U(0,1)` (stream 2), `r = cos(πu/2)`,
/// `k = max(1, round(n·r))`; a position is masked when the rank of its random score (stream 3)
/// is below k, which masks a uniformly random subset of exactly k positions. Returns bool `[B, n]`.
pub fn sample_image_mask(
    g: &mut Graph,
    seed: NodeId,
    offset: NodeId,
    b: usize,
    n: usize,
) -> Result<NodeId> {
    let u = g.rng(RngDist::Uniform, 2, seed, offset, [b, 1])?;
    let a = g.binary_scalar(BinaryOp::Mul, u, std::f64::consts::FRAC_PI_2)?;
    let r = g.unary(UnaryOp::Cos, a)?;
    let kf = g.binary_scalar(BinaryOp::Mul, r, n as f64)?;
    // round half up: floor(x + 0.5) (x ≥ 0)
    let kf = g.binary_scalar(BinaryOp::Add, kf, 0.5)?;
    let kf = g.unary(UnaryOp::Floor, kf)?;
    let kf = g.binary_scalar(BinaryOp::Max, kf, 1.0)?;
    let score = g.rng(RngDist::Uniform, 3, seed, offset, [b, n])?;
    // rank_i = #{j : s_j < s_i or (s_j == s_i and j < i)}
    let si = g.reshape(score, [b, n, 1])?;
    let sj = g.reshape(score, [b, 1, n])?;
    let lt = g.compare(CompareOp::Lt, sj, si)?;
    let eq = g.compare(CompareOp::Eq, sj, si)?;
    let jj = g.iota(DType::I64, [1, 1, n], 2)?;
    let ii = g.iota(DType::I64, [1, n, 1], 1)?;
    let before = g.compare(CompareOp::Lt, jj, ii)?;
    let tie = g.binary(BinaryOp::And, eq, before)?;
    let beats = g.binary(BinaryOp::Or, lt, tie)?;
    let beats = g.cast(beats, DType::F32)?;
    let rank = g.reduce(ReduceOp::Sum, beats, &[2], false)?; // [b, n]
    g.compare(CompareOp::Lt, rank, kf)
}

/// MaskGIT image loss: token mean of CE over the positions whose label is kept (masked image
/// positions and the always-kept soi/eoi targets), i.e. `Σ keep·CE / Σ keep`, where logits are
/// `[B, T, V]`, targets `[B, T]` and `keep` is bool `[B, T]`.
pub fn token_mean_loss(
    g: &mut Graph,
    logits: NodeId,
    targets: NodeId,
    keep: NodeId,
) -> Result<NodeId> {
    let ce = g.cross_entropy(logits, targets)?;
    token_mean(g, ce, keep)
}

/// `Σ keep·ce / Σ keep` of cross-entropies `ce [B, T]` and bool `keep [B, T]`.
pub fn token_mean(g: &mut Graph, ce: NodeId, keep: NodeId) -> Result<NodeId> {
    let k = g.cast(keep, DType::F32)?;
    let per = g.mul(ce, k)?;
    let num = g.reduce(ReduceOp::Sum, per, &[0, 1], false)?;
    let den = g.reduce(ReduceOp::Sum, k, &[0, 1], false)?;
    g.div(num, den)
}

#[cfg(test)]
mod tests {
    use super::*;
    use indexmap::IndexMap;
    use mmada_ir::{interp, Tensor};

    /// `p` and the mask of one draw, with and without floors.
    fn draw(floor: Option<&[f64]>, b: usize, l: usize) -> (Vec<f64>, Vec<f64>) {
        let mut g = Graph::new();
        let prompt = g.input("prompt", DType::Bool, [b, l]).unwrap();
        let seed = g.input("seed", DType::I64, Vec::<usize>::new()).unwrap();
        let offset = g.input("offset", DType::I64, Vec::<usize>::new()).unwrap();
        let m = sample_text_mask_above(&mut g, seed, offset, prompt, floor).unwrap();
        g.set_output("p", m.p).unwrap();
        g.set_output("masked", m.masked).unwrap();
        let mut ins = IndexMap::new();
        // The first 3 positions of every row are prompt.
        let pm: Vec<f64> = (0..b * l).map(|i| f64::from(u8::from(i % l < 3))).collect();
        ins.insert(
            "prompt".to_string(),
            Tensor::from_f64(DType::Bool, [b, l], &pm).unwrap(),
        );
        ins.insert(
            "seed".into(),
            Tensor::from_i64(Shape::scalar(), vec![41]).unwrap(),
        );
        ins.insert(
            "offset".into(),
            Tensor::from_i64(Shape::scalar(), vec![7 << 32]).unwrap(),
        );
        let out = interp::interpret(&g, &ins).unwrap();
        (out["p"].to_f64_vec(), out["masked"].to_f64_vec())
    }

    #[test]
    fn a_mask_floor_maps_t_onto_the_floor_to_one_and_masks_at_that_rate() {
        let (b, l) = (5, 4003);
        let floors = [0.0, 0.5, 0.9, 0.25, 0.5];
        let (p0, _) = draw(None, b, l);
        let (p, masked) = draw(Some(&floors), b, l);
        // All-zero floors are the plain graph, draw for draw.
        assert_eq!(draw(Some(&[0.0; 5]), b, l), draw(None, b, l));
        for r in 0..b {
            // By hand: p = f + (1 − f)·p₀ with the same t (f32 arithmetic).
            let want = floors[r] + (1.0 - floors[r]) * p0[r];
            assert!((p[r] - want).abs() < 1e-6, "row {r}: {} vs {want}", p[r]);
            assert!(p[r] >= floors[r]);
            let row = &masked[r * l..(r + 1) * l];
            assert!(
                row[..3].iter().all(|&m| m == 0.0),
                "row {r}: a prompt masked"
            );
            let rate = row[3..].iter().sum::<f64>() / (l - 3) as f64;
            // Binomial: 5 standard deviations of 4000 draws.
            let sd = (p[r] * (1.0 - p[r]) / (l - 3) as f64).sqrt();
            assert!(
                (rate - p[r]).abs() < 5.0 * sd + 1e-9,
                "row {r}: rate {rate}, p {}",
                p[r]
            );
        }
        // A floor of 1 (nothing left to draw) or the wrong count is an error.
        let mut g = Graph::new();
        let prompt = g.input("prompt", DType::Bool, [2, 4]).unwrap();
        let s = g.input("seed", DType::I64, Vec::<usize>::new()).unwrap();
        for bad in [&[1.0, 0.0][..], &[0.5][..]] {
            assert!(sample_text_mask_above(&mut g, s, s, prompt, Some(bad)).is_err());
        }
    }
}
