//! The compiled multimodal training step (spec §4.2, §8.2): one batch of text-to-image (t2i),
//! multimodal-understanding (mmu) and text rows, each row type with its own loss, summed with
//! the task coefficients `L = c_t2i·L_t2i + c_mmu·L_mmu + c_lm·L_lm`, then backward, clipping
//! and AdamW as in [`crate::train_step`].
//!
//! Rows come in that order: `t2i` rows, then `mmu` rows, then `lm` rows, all of length
//! `L = Lt + N + 3` (the t2i and mmu layouts of spec §3.2–3.3 have that length; text rows are
//! padded to it).
//! - t2i rows: MaskGIT masking of the N image positions (cosine schedule, exactly
//!   `max(1, round(N·cos(πu/2)))` masked, streams 2–3 of the Philox op); the loss is the token
//!   mean of the cross-entropy over the masked image positions and the always-kept `<|soi|>`
//!   and `<|eoi|>` targets, over all t2i rows together — no `1/t`.
//! - mmu and text rows: LLaDA masking (per-row `p = (1−ε)t + ε`, Bernoulli per position, prompt
//!   restored; streams 0–1; for mmu rows optionally `t ~ U(floor, 1)`, see
//!   [`MixCoefs::mmu_mask_floor`]); the loss is `Σ_b w_b Σ_{i masked} CE_i / p_b` with the row weights
//!   fed from the host (`row_weight`, one per mmu and text row: `1/(B_mmu·A_b)` for mmu rows,
//!   with `A_b` the answer positions, and the text rows' weights).
//!
//! Inputs beyond [`crate::train_step`]'s parameters and moments: `input_ids` (i64 `[B, L]`),
//! `prompt_mask` (bool `[B, L]`, read for mmu and text rows), `key_mask` (bool `[B, L]`,
//! false on t2i's `[iPAD]` padding), `row_weight` (f32 `[B_mmu + B_lm]`), `seed`, `offset`,
//! `lr`, `bc1`, `bc2`. Outputs: `loss`, `loss.t2i`, `loss.mmu`, `loss.lm` (each present when its
//! rows are), `grad_norm` and the in-place updates.

use crate::config::LladaConfig;
use crate::llada::{declare_params, logits};
use crate::loss::{
    apply_mask, sample_image_mask, sample_text_mask_above, token_mean, weighted_row_losses,
};
use crate::train_step::{optimizer_step, StepHyper};
use mmada_ir::{CompareOp, DType, Graph, IrError, NodeId, ReduceOp, Result};

/// The shape of a mixed batch: rows per type and the layout lengths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MixShape {
    /// Text-to-image rows.
    pub t2i: usize,
    /// Multimodal-understanding rows.
    pub mmu: usize,
    /// Text rows.
    pub lm: usize,
    /// The text budget `Lt`.
    pub text_len: usize,
    /// Image tokens `N` per image.
    pub image_tokens: usize,
}

impl MixShape {
    /// Rows in the batch.
    pub fn rows(&self) -> usize {
        self.t2i + self.mmu + self.lm
    }

    /// The sequence length `Lt + N + 3` of every row.
    pub fn seq(&self) -> usize {
        self.text_len + self.image_tokens + 3
    }

    /// First image position of a t2i row (after `Lt + 1` text ids and `<|soi|>`).
    pub fn t2i_image_start(&self) -> usize {
        self.text_len + 2
    }
}

/// Coefficients of the task losses, and the masking floor of the mmu rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MixCoefs {
    /// Of `L_t2i`.
    pub t2i: f64,
    /// Of `L_mmu`.
    pub mmu: f64,
    /// Of `L_lm`.
    pub lm: f64,
    /// The mmu rows' `t` is uniform on `[floor, 1]` (0: the reference's `U(0, 1)`).
    pub mmu_mask_floor: f64,
}

fn need(cond: bool, msg: &str) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(IrError::Input {
            name: "batch".into(),
            msg: msg.into(),
        })
    }
}

/// The forward part of the step (outputs `loss` and the per-task `loss.*`) and the nodes a
/// check may want to read.
pub struct MixedLoss {
    /// The graph.
    pub graph: Graph,
    /// The parameters by official name.
    pub params: indexmap::IndexMap<String, NodeId>,
    /// The total loss.
    pub loss: NodeId,
    /// Bool `[B, L]`: the positions replaced by `[MASK]`.
    pub masked: NodeId,
    /// f32 `[B_mmu + B_lm]`: the masking probability of each mmu and text row (none without
    /// such rows).
    pub p: Option<NodeId>,
    /// f32 `[B, L, rows]`.
    pub logits: NodeId,
}

/// Builds the forward part of the step.
pub fn mixed_loss_graph(cfg: &LladaConfig, mix: MixShape, coefs: MixCoefs) -> Result<MixedLoss> {
    need(mix.rows() > 0, "a mixed batch needs at least one row")?;
    need(mix.image_tokens > 0, "images need at least one token")?;
    let (b, l) = (mix.rows(), mix.seq());
    let n_text = mix.mmu + mix.lm;
    let mut g = Graph::new();
    let params = declare_params(&mut g, cfg)?;
    let x0 = g.input("input_ids", DType::I64, [b, l])?;
    let prompt = g.input("prompt_mask", DType::Bool, [b, l])?;
    let key_mask = g.input("key_mask", DType::Bool, [b, l])?;
    let w = if n_text > 0 {
        Some(g.input("row_weight", DType::F32, [n_text])?)
    } else {
        None
    };
    let seed = g.input("seed", DType::I64, Vec::<usize>::new())?;
    let offset = g.input("offset", DType::I64, Vec::<usize>::new())?;

    // The mask of every row: MaskGIT on the t2i image positions, LLaDA on the others.
    let mut masks = Vec::new();
    let mut t2i_masked = None;
    if mix.t2i > 0 {
        let img = sample_image_mask(&mut g, seed, offset, mix.t2i, mix.image_tokens)?;
        let start = mix.t2i_image_start();
        let before = g.full(DType::Bool, 0.0, [mix.t2i, start])?;
        let after = g.full(DType::Bool, 0.0, [mix.t2i, l - start - mix.image_tokens])?;
        let full = g.concat(&[before, img, after], 1)?;
        masks.push(full);
        t2i_masked = Some(full);
    }
    let mut text_noise = None;
    if n_text > 0 {
        let pt = g.slice_axis(prompt, 0, mix.t2i, b)?;
        let floor: Vec<f64> = (0..n_text)
            .map(|i| {
                if i < mix.mmu {
                    coefs.mmu_mask_floor
                } else {
                    0.0
                }
            })
            .collect();
        let noise = sample_text_mask_above(&mut g, seed, offset, pt, Some(&floor))?;
        masks.push(noise.masked);
        text_noise = Some(noise);
    }
    let masked = if masks.len() == 1 {
        masks[0]
    } else {
        g.concat(&masks, 0)?
    };
    let xt = apply_mask(&mut g, x0, masked, cfg.mask_token_id)?;
    let lg = logits(&mut g, cfg, &params, xt, Some(key_mask))?;
    let ce = g.cross_entropy(lg, x0)?; // [B, L]

    let mut total = None;
    let mut add = |g: &mut Graph, name: &str, part: NodeId, coef: f64| -> Result<()> {
        g.set_output(name, part)?;
        let scaled = g.binary_scalar(mmada_ir::BinaryOp::Mul, part, coef)?;
        total = Some(match total {
            None => scaled,
            Some(t) => g.add2(t, scaled)?,
        });
        Ok(())
    };
    if let Some(img_masked) = t2i_masked {
        // Kept labels: the masked image positions, `<|soi|>` and `<|eoi|>`.
        let pos = g.iota(DType::I64, [1, l], 1)?;
        let soi = g.full(DType::I64, (mix.t2i_image_start() - 1) as f64, [1, 1])?;
        let eoi = g.full(DType::I64, (l - 1) as f64, [1, 1])?;
        let at_soi = g.compare(CompareOp::Eq, pos, soi)?;
        let at_eoi = g.compare(CompareOp::Eq, pos, eoi)?;
        let frame = g.binary(mmada_ir::BinaryOp::Or, at_soi, at_eoi)?;
        let keep = g.binary(mmada_ir::BinaryOp::Or, img_masked, frame)?;
        let ce_t2i = g.slice_axis(ce, 0, 0, mix.t2i)?;
        let part = token_mean(&mut g, ce_t2i, keep)?;
        add(&mut g, "loss.t2i", part, coefs.t2i)?;
    }
    let text_noise_p = text_noise.as_ref().map(|n| n.p);
    if let (Some(noise), Some(w)) = (text_noise, w) {
        let ce_text = g.slice_axis(ce, 0, mix.t2i, b)?;
        let rows = weighted_row_losses(&mut g, ce_text, noise.masked, noise.p, w)?; // [n_text]
        for (name, lo, hi, coef) in [
            ("loss.mmu", 0, mix.mmu, coefs.mmu),
            ("loss.lm", mix.mmu, n_text, coefs.lm),
        ] {
            if hi > lo {
                let r = g.slice_axis(rows, 0, lo, hi)?;
                let part = g.reduce(ReduceOp::Sum, r, &[0], false)?;
                add(&mut g, name, part, coef)?;
            }
        }
    }
    let loss = total.ok_or_else(|| IrError::Input {
        name: "batch".into(),
        msg: "no loss".into(),
    })?;
    g.set_output("loss", loss)?;
    Ok(MixedLoss {
        graph: g,
        params,
        loss,
        masked,
        p: text_noise_p,
        logits: lg,
    })
}

/// The whole multimodal training step graph.
pub fn mixed_train_step_graph(
    cfg: &LladaConfig,
    mix: MixShape,
    coefs: MixCoefs,
    h: StepHyper,
) -> Result<Graph> {
    let mut m = mixed_loss_graph(cfg, mix, coefs)?;
    optimizer_step(&mut m.graph, &m.params, m.loss, h)?;
    Ok(m.graph)
}
