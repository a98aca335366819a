//! Training a small MAGVIT-v2 image tokenizer with the compiled training step
//! ([`crate::magvit::train_step_graph`]: reconstruction MSE, LFQ commitment and entropy terms,
//! AdamW) on the embedded digits, then measuring it on the held-out digits: PSNR of the
//! reconstructions and the share of the codebook the codes use.

use crate::digit_codes;
use crate::digits::{Digits, SIDE};
use crate::image_io;
use crate::magvit::{decode_graph, encode_graph, train_step_graph, MagvitConfig};
use crate::train_step::{exp_avg, exp_avg_sq, lr_factor, StepHyper};
use crate::ModelsError;
use indexmap::IndexMap;
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::compile::{compile, CompileOptions, PtxCheck};
use mmada_ir::{DType, Tensor};
use mmada_runtime::tensor_io::write_safetensors;
use mmada_runtime::{open_artifact, Target};
use std::path::Path;

/// The tiny tokenizer: 32 px → 8×8 codes of 8 bits (the `tiny` transformer preset's 256-code
/// image range), the released structure at ch 32.
pub fn tiny_config() -> MagvitConfig {
    MagvitConfig {
        ch: 32,
        ch_mult: vec![1, 2, 2],
        num_res_blocks: vec![1, 1, 1],
        dec_ch_mult: vec![1, 2, 2],
        dec_num_res_blocks: vec![1, 1, 1],
        attn_resolutions: vec![],
        resolution: SIDE,
        z_channels: 8,
        ..MagvitConfig::default()
    }
}

/// Options of [`train`].
#[derive(Clone, Debug)]
pub struct VqOptions {
    /// Optimiser steps.
    pub steps: usize,
    /// Images per step.
    pub batch: usize,
    /// Peak learning rate (linear warm-up over the first 5 %, cosine to 10 %).
    pub lr: f64,
    /// Seed of the initial weights and of the batch order.
    pub seed: u64,
}

impl Default for VqOptions {
    fn default() -> VqOptions {
        VqOptions {
            steps: 800,
            batch: 16,
            lr: 2e-3,
            seed: 7,
        }
    }
}

/// Initial weights: convolutions normal with std 1/√fan-in, norm scales one, biases zero.
pub fn init_weights(cfg: &MagvitConfig, seed: i64) -> IndexMap<String, Tensor> {
    let mut out = IndexMap::new();
    for (k, (name, shape)) in cfg.param_specs().into_iter().enumerate() {
        let sh = mmada_ir::Shape(shape.clone());
        let t = if shape.len() == 1 {
            let one = name.contains("norm") && name.ends_with(".weight");
            Tensor::from_f32(sh.clone(), vec![if one { 1.0 } else { 0.0 }; sh.numel()])
                .unwrap_or_else(|_| Tensor::zeros(DType::F32, sh.clone()))
        } else {
            let fan_in: usize = shape.iter().skip(1).product();
            let std = 1.0 / (fan_in.max(1) as f32).sqrt();
            mmada_runtime::init::init_tensor(&sh, mmada_ir::Role::Param, seed, k as u32, std)
                .unwrap_or_else(|| Tensor::zeros(DType::F32, sh.clone()))
        };
        out.insert(name, t);
    }
    out
}

/// What training printed and measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct VqReport {
    /// Reconstruction loss (MSE in [−1, 1] units) per step.
    pub recon: Vec<f64>,
    /// Mean PSNR (dB, pixels in [0, 1] after the reference's clamp) over the held-out digits.
    pub psnr_db: f64,
    /// Distinct codes over the held-out digits / codebook size.
    pub codebook_usage: f64,
    /// Distinct codes over the held-out digits.
    pub distinct_codes: usize,
    /// Seconds of training.
    pub train_seconds: f64,
}

fn host() -> BackendOptions {
    BackendOptions {
        host: Some(mmada_codegen::HostCpu::native()),
        gpu_archs: vec![],
    }
}

fn opts(name: &str) -> CompileOptions {
    CompileOptions {
        name: name.into(),
        backend: host(),
        ptx_check: PtxCheck::Skip,
        ..CompileOptions::default()
    }
}

fn scalar(v: f64) -> Result<Tensor, ModelsError> {
    Ok(Tensor::from_f32(Vec::<usize>::new(), vec![v as f32])?)
}

/// Trains the tiny tokenizer on the training digits; `progress(step, recon)` is called per step.
/// Returns the trained weights (official names) and the per-step reconstruction loss.
pub fn train(
    cfg: &MagvitConfig,
    o: &VqOptions,
    digits: &Digits,
    mut progress: impl FnMut(usize, f64),
) -> Result<(IndexMap<String, Tensor>, Vec<f64>), ModelsError> {
    if o.steps == 0 || o.batch == 0 || !(o.lr.is_finite() && o.lr > 0.0) {
        return Err(ModelsError::Options(format!(
            "steps {}, batch {} and lr {} must be positive",
            o.steps, o.batch, o.lr
        )));
    }
    let h = StepHyper {
        weight_decay: 0.0,
        ..StepHyper::default()
    };
    let g = train_step_graph(cfg, o.batch, SIDE, SIDE, h)?;
    let mut exe = open_artifact(compile(&g, &opts("vq_train_step"))?, Target::Cpu)?;
    let weights = init_weights(cfg, o.seed as i64);
    for (n, t) in &weights {
        exe.set_input(n, t)?;
        let z = Tensor::zeros(DType::F32, t.shape().clone());
        exe.set_input(&exp_avg(n), &z)?;
        exe.set_input(&exp_avg_sq(n), &z)?;
    }
    let train = digits.indices(false);
    let (b1, b2) = h.betas;
    let mut recon = Vec::with_capacity(o.steps);
    let mut cursor = train.len();
    let mut order = train.clone();
    let mut epoch = 0u64;
    for step in 1..=o.steps {
        let mut px = Vec::with_capacity(o.batch * 3 * SIDE * SIDE);
        for _ in 0..o.batch {
            if cursor >= order.len() {
                order = shuffled(&train, o.seed, epoch);
                epoch += 1;
                cursor = 0;
            }
            px.extend(digits.chw(order[cursor]));
            cursor += 1;
        }
        let mut ins = IndexMap::new();
        ins.insert(
            "pixels".to_string(),
            Tensor::from_f32([o.batch, 3, SIDE, SIDE], px)?,
        );
        let lr = o.lr * lr_factor(step, o.steps.div_ceil(20), o.steps, 0.1);
        ins.insert("lr".into(), scalar(lr)?);
        ins.insert("bc1".into(), scalar(1.0 - b1.powi(step as i32))?);
        ins.insert("bc2".into(), scalar(1.0 - b2.powi(step as i32))?);
        let out = exe.run(&ins)?;
        let r = out
            .get("recon_loss")
            .map(|t| t.to_f64_vec()[0])
            .unwrap_or(f64::NAN);
        if !r.is_finite() {
            return Err(ModelsError::Options(format!(
                "the reconstruction loss is {r} at step {step}; lower --lr"
            )));
        }
        recon.push(r);
        progress(step, r);
    }
    let mut trained = IndexMap::new();
    for n in weights.keys() {
        trained.insert(n.clone(), exe.get_input(n)?);
    }
    Ok((trained, recon))
}

fn shuffled(v: &[usize], seed: u64, epoch: u64) -> Vec<usize> {
    let mut out = v.to_vec();
    for i in (1..out.len()).rev() {
        let w = mmada_ir::philox::words(seed as i64, epoch as i64, 0x5A, i as u64);
        let r = ((w[0] as u64) << 32 | w[1] as u64) % (i as u64 + 1);
        out.swap(i, r as usize);
    }
    out
}

/// An original and its reconstruction, CHW in [−1, 1].
pub type Pair = (Vec<f32>, Vec<f32>);

/// Encodes and decodes the held-out digits in batches of 50: mean PSNR over images (pixels in
/// [0, 1] after the reference's clamp) and the distinct codes used; returns also `keep`
/// originals and reconstructions (CHW, [−1, 1]) for figures, the first held-out images of each
/// class in turn.
pub fn evaluate(
    cfg: &MagvitConfig,
    weights: &IndexMap<String, Tensor>,
    digits: &Digits,
    keep: usize,
) -> Result<(f64, usize, Vec<Pair>), ModelsError> {
    let test = digits.indices(true);
    let bsz = 50;
    let f = cfg.factor();
    let (hc, wc) = (SIDE / f, SIDE / f);
    let mut enc = open_artifact(
        compile(&encode_graph(cfg, bsz, SIDE, SIDE)?, &opts("vq_encode"))?,
        Target::Cpu,
    )?;
    let mut dec = open_artifact(
        compile(&decode_graph(cfg, bsz, hc, wc)?, &opts("vq_decode"))?,
        Target::Cpu,
    )?;
    crate::image_tokenizer::set_halves(enc.as_mut(), dec.as_mut(), weights)?;
    let img = 3 * SIDE * SIDE;
    let mut psnr_sum = 0.0;
    let mut seen = std::collections::BTreeSet::new();
    let mut figures = Vec::new();
    let per_class = keep.div_ceil(10);
    let mut shown = [0usize; 10];
    let mut count = 0usize;
    for chunk in test.chunks(bsz) {
        let px = digits.batch_chw(chunk, bsz);
        let mut ins = IndexMap::new();
        ins.insert(
            "pixels".to_string(),
            Tensor::from_f32([bsz, 3, SIDE, SIDE], px.clone())?,
        );
        let codes = enc
            .run(&ins)?
            .shift_remove("codes")
            .ok_or_else(|| ModelsError::Input("the encoder produced no codes".into()))?;
        let cv = codes.to_i64_vec();
        let mut dins = IndexMap::new();
        dins.insert("codes".to_string(), codes);
        let y = dec
            .run(&dins)?
            .shift_remove("pixels")
            .ok_or_else(|| ModelsError::Input("the decoder produced no pixels".into()))?
            .to_f32_vec();
        for (k, &idx) in chunk.iter().enumerate() {
            seen.extend(cv[k * hc * wc..(k + 1) * hc * wc].iter().copied());
            let (a, b) = (&px[k * img..(k + 1) * img], &y[k * img..(k + 1) * img]);
            let mse: f64 = a
                .iter()
                .zip(b)
                .map(|(&x, &r)| {
                    let x01 = ((x as f64 + 1.0) / 2.0).clamp(0.0, 1.0);
                    let r01 = ((r as f64 + 1.0) / 2.0).clamp(0.0, 1.0);
                    (x01 - r01).powi(2)
                })
                .sum::<f64>()
                / img as f64;
            psnr_sum += 10.0 * (1.0 / mse.max(1e-10)).log10();
            let class = digits.labels[idx] as usize % 10;
            if figures.len() < keep && shown[class] < per_class {
                shown[class] += 1;
                figures.push((class, a.to_vec(), b.to_vec()));
            }
            count += 1;
        }
    }
    figures.sort_by_key(|f| f.0);
    let figures = figures.into_iter().map(|(_, a, b)| (a, b)).collect();
    Ok((psnr_sum / count.max(1) as f64, seen.len(), figures))
}

/// Writes `reconstructions.png`: rows of ten originals over their ten reconstructions.
fn write_figure(path: &Path, figs: &[Pair]) -> Result<(), ModelsError> {
    let mut tiles = Vec::new();
    for row in figs.chunks(10) {
        for (a, _) in row {
            tiles.push(image_io::to_rgb8(a, SIDE as u32, SIDE as u32)?);
        }
        for (_, b) in row {
            tiles.push(image_io::to_rgb8(b, SIDE as u32, SIDE as u32)?);
        }
    }
    image_io::save_png(&image_io::grid(&tiles, 10, 2)?, path)?;
    Ok(())
}

/// Evaluates a tokenizer directory on the held-out digits and writes its
/// `reconstructions.png` and the codes of all digits (`digit-codes.u16.gz`, see
/// [`crate::digit_codes`]) there; returns (PSNR dB, distinct codes, codebook size).
pub fn evaluate_dir(dir: &Path) -> Result<(f64, usize, usize), ModelsError> {
    let (cfg, weights) = crate::image_tokenizer::load_magvit(dir)?;
    let digits = Digits::embedded()?;
    let (psnr, distinct, figs) = evaluate(&cfg, &weights, &digits, 20)?;
    write_figure(&dir.join("reconstructions.png"), &figs)?;
    write_all_codes(dir, &cfg, &weights, &digits)?;
    Ok((psnr, distinct, cfg.codebook_size()))
}

fn write_all_codes(
    dir: &Path,
    cfg: &MagvitConfig,
    weights: &IndexMap<String, Tensor>,
    digits: &Digits,
) -> Result<(), ModelsError> {
    let codes = digit_codes::digit_codes(cfg, weights, digits)?;
    digit_codes::write_codes(&dir.join(digit_codes::FILE), &codes, cfg.codebook_size())
}

/// Trains, evaluates and writes `out/`: `config.json` and `pytorch_model.safetensors` (the
/// released layout, loadable by [`crate::image_tokenizer::load_magvit`]), `report.json` and
/// `reconstructions.png` (rows of originals over their reconstructions).
pub fn train_and_save(
    out: &Path,
    o: &VqOptions,
    progress: impl FnMut(usize, f64),
) -> Result<VqReport, ModelsError> {
    let cfg = tiny_config();
    let digits = Digits::embedded()?;
    let t0 = std::time::Instant::now();
    let (weights, recon) = train(&cfg, o, &digits, progress)?;
    let train_seconds = t0.elapsed().as_secs_f64();
    let (psnr_db, distinct, figs) = evaluate(&cfg, &weights, &digits, 20)?;
    let io = |e: std::io::Error| ModelsError::Io {
        path: out.display().to_string(),
        source: e,
    };
    std::fs::create_dir_all(out).map_err(io)?;
    let mut cfg_json = serde_json::to_value(&cfg).unwrap_or_default();
    cfg_json["_class_name"] = "MAGVITv2".into();
    let text = serde_json::to_string_pretty(&cfg_json).unwrap_or_default();
    mmada_runtime::tensor_io::atomic_write(&out.join("config.json"), text.as_bytes())?;
    write_safetensors(&out.join("pytorch_model.safetensors"), &weights)?;
    write_figure(&out.join("reconstructions.png"), &figs)?;
    write_all_codes(out, &cfg, &weights, &digits)?;
    let report = VqReport {
        recon,
        psnr_db,
        codebook_usage: distinct as f64 / cfg.codebook_size() as f64,
        distinct_codes: distinct,
        train_seconds,
    };
    let text = serde_json::to_string_pretty(&report).unwrap_or_default();
    mmada_runtime::tensor_io::atomic_write(&out.join("report.json"), text.as_bytes())?;
    Ok(report)
}
