//! The MAGVIT-v2 image tokenizer as compiled programs: loads the released directory layout,
//! compiles the encoder (pixels → codes) and decoder (codes → pixels) graphs of
//! [`crate::magvit`] for one resolution, and runs them.
//!
//! A tokenizer directory holds `config.json` and `pytorch_model.safetensors` (the files of
//! `showlab/magvitv2`, and what `save_pretrained` of the official class writes; `model.safetensors`
//! is accepted too). The released `config.json` names no architecture, so missing keys take the
//! released values ([`MagvitConfig`]). The quantiser's buffers `quantize.embedding` [2^z, z] and
//! `quantize.power_vals` [z] are recomputed; when the file has them they must equal the
//! recomputed ones.

use crate::magvit::{decode_graph, encode_graph, MagvitConfig};
use crate::ModelsError;
use indexmap::IndexMap;
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::compile::{compile, CompileOptions, PtxCheck};
use mmada_ir::Tensor;
use mmada_runtime::tensor_io::read_safetensors;
use mmada_runtime::{open_artifact, Executor, Target};
use std::path::Path;

/// The weight file names looked for, in order.
pub const WEIGHT_FILES: [&str; 2] = ["pytorch_model.safetensors", "model.safetensors"];

/// Reads a tokenizer directory: its configuration and its f32 weights by official name, every
/// name and shape checked against the architecture.
pub fn load_magvit(dir: &Path) -> Result<(MagvitConfig, IndexMap<String, Tensor>), ModelsError> {
    let cfg_path = dir.join("config.json");
    let cfg_name = cfg_path.display().to_string();
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| ModelsError::Io {
        path: cfg_name.clone(),
        source: e,
    })?;
    let cfg = parse_config(&text, &cfg_name)?;
    let file = WEIGHT_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            ModelsError::Options(format!(
                "{}: no {} (or {})",
                dir.display(),
                WEIGHT_FILES[0],
                WEIGHT_FILES[1]
            ))
        })?;
    let raw = read_safetensors(&file)?;
    let weights = check_weights(&cfg, raw, &file.display().to_string())?;
    Ok((cfg, weights))
}

/// The committed tiny image tokenizer of the embedded digits (`models/assets/vq-digits/`,
/// trained by `mmada train-vq`; 256 codes, 32 px → 8×8), built into the binary.
pub fn embedded_vq_digits() -> Result<(MagvitConfig, IndexMap<String, Tensor>), ModelsError> {
    const CONFIG: &str = include_str!("../assets/vq-digits/config.json");
    const WEIGHTS: &[u8] = include_bytes!("../assets/vq-digits/pytorch_model.safetensors");
    let name = "<embedded vq-digits>/pytorch_model.safetensors";
    let cfg = parse_config(CONFIG, "<embedded vq-digits>/config.json")?;
    let raw = mmada_runtime::tensor_io::decode_safetensors(WEIGHTS, Path::new(name))?;
    let weights = check_weights(&cfg, raw, name)?;
    Ok((cfg, weights))
}

/// A tokenizer's `config.json` (`path` names it in errors), checked.
fn parse_config(text: &str, cfg_name: &str) -> Result<MagvitConfig, ModelsError> {
    let cfg: MagvitConfig = serde_json::from_str(text).map_err(|e| ModelsError::Toml {
        path: cfg_name.to_string(),
        msg: e.to_string(),
    })?;
    cfg.check().map_err(|(field, msg)| ModelsError::Field {
        path: cfg_name.to_string(),
        field,
        msg,
    })?;
    Ok(cfg)
}

/// The weights of `raw` (read from `path`) by official name, every name and shape checked
/// against the architecture; the quantiser's buffers checked and dropped.
fn check_weights(
    cfg: &MagvitConfig,
    mut raw: IndexMap<String, Tensor>,
    path: &str,
) -> Result<IndexMap<String, Tensor>, ModelsError> {
    let bad = |tensor: &str, msg: String| ModelsError::Tensor {
        path: path.to_string(),
        tensor: tensor.to_string(),
        msg,
    };
    check_quantize_buffers(cfg, &mut raw, &bad)?;
    let mut out = IndexMap::new();
    for (name, shape) in cfg.param_specs() {
        let t = crate::checkpoint::take_f32(&mut raw, &name, &shape, path)?;
        out.insert(name, t);
    }
    if let Some((extra, _)) = raw.first() {
        return Err(bad(extra, "is not a parameter of this architecture".into()));
    }
    Ok(out)
}

/// Removes `quantize.embedding` and `quantize.power_vals` from `raw`, checking them against the
/// values they must have (spec §7: entry k, channel c is `2·((k >> (z−1−c)) & 1) − 1`; power c is
/// `2^(z−1−c)`).
fn check_quantize_buffers(
    cfg: &MagvitConfig,
    raw: &mut IndexMap<String, Tensor>,
    bad: &dyn Fn(&str, String) -> ModelsError,
) -> Result<(), ModelsError> {
    let z = cfg.z_channels;
    if let Some(t) = raw.shift_remove("quantize.power_vals") {
        let want: Vec<i64> = (0..z).map(|c| 1i64 << (z - 1 - c)).collect();
        if t.shape().0 != [z] || t.to_i64_vec() != want {
            return Err(bad(
                "quantize.power_vals",
                format!("must be 2^({}..0) over {z} channels", z - 1),
            ));
        }
    }
    if let Some(t) = raw.shift_remove("quantize.embedding") {
        let n = cfg.codebook_size();
        if t.shape().0 != [n, z] {
            return Err(bad(
                "quantize.embedding",
                format!("shape {} but the codebook is [{n}, {z}]", t.shape()),
            ));
        }
        let v = t.to_f64_vec();
        for k in 0..n {
            for c in 0..z {
                let want = if (k >> (z - 1 - c)) & 1 == 1 {
                    1.0
                } else {
                    -1.0
                };
                if v[k * z + c] != want {
                    return Err(bad(
                        "quantize.embedding",
                        format!("entry [{k}, {c}] is {} but LFQ gives {want}", v[k * z + c]),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Uploads `encoder.*` weights to the encoder's executor and the rest to the decoder's.
pub fn set_halves(
    enc: &mut dyn Executor,
    dec: &mut dyn Executor,
    weights: &IndexMap<String, Tensor>,
) -> Result<(), ModelsError> {
    for (n, t) in weights {
        if n.starts_with("encoder.") {
            enc.set_input(n, t)?;
        } else {
            dec.set_input(n, t)?;
        }
    }
    Ok(())
}

/// Compiled encoder and decoder of one tokenizer for one image size, with the weights loaded.
pub struct ImageTokenizer {
    /// The architecture.
    pub cfg: MagvitConfig,
    /// Image height and width in pixels.
    pub size: (usize, usize),
    enc: Box<dyn Executor>,
    dec: Box<dyn Executor>,
}

impl ImageTokenizer {
    /// Compiles both halves for `[1, 3, height, width]` images (multiples of the downsampling
    /// factor) and uploads the weights.
    pub fn new(
        cfg: MagvitConfig,
        weights: &IndexMap<String, Tensor>,
        height: usize,
        width: usize,
        target: Target,
        backend: BackendOptions,
    ) -> Result<ImageTokenizer, ModelsError> {
        let f = cfg.factor();
        if height == 0 || width == 0 || !height.is_multiple_of(f) || !width.is_multiple_of(f) {
            return Err(ModelsError::Options(format!(
                "image size {height}×{width}: both sides must be positive multiples of {f}"
            )));
        }
        let (h, w) = (height / f, width / f);
        let opts = |name: String| CompileOptions {
            name,
            backend: backend.clone(),
            ptx_check: PtxCheck::Skip,
            ..CompileOptions::default()
        };
        let eg = encode_graph(&cfg, 1, height, width)?;
        let dg = decode_graph(&cfg, 1, h, w)?;
        let mut enc = open_artifact(
            compile(&eg, &opts(format!("magvit_encode_{height}x{width}")))?,
            target,
        )?;
        let mut dec = open_artifact(
            compile(&dg, &opts(format!("magvit_decode_{h}x{w}")))?,
            target,
        )?;
        set_halves(enc.as_mut(), dec.as_mut(), weights)?;
        Ok(ImageTokenizer {
            cfg,
            size: (height, width),
            enc,
            dec,
        })
    }

    /// Number of codes per image.
    pub fn num_codes(&self) -> usize {
        let f = self.cfg.factor();
        (self.size.0 / f) * (self.size.1 / f)
    }

    /// Codes (i64 `[1, N]`, raster order) of CHW pixels in [−1, 1].
    pub fn encode(&mut self, chw: &[f32]) -> Result<Tensor, ModelsError> {
        let (hh, ww) = self.size;
        let c = self.cfg.in_channels;
        if chw.len() != c * hh * ww {
            return Err(ModelsError::Input(format!(
                "pixels: {} values for a {c}×{hh}×{ww} image",
                chw.len()
            )));
        }
        let x = Tensor::from_f32([1, c, hh, ww], chw.to_vec())?;
        let mut ins = IndexMap::new();
        ins.insert("pixels".to_string(), x);
        let mut out = self.enc.run(&ins)?;
        out.shift_remove("codes")
            .ok_or_else(|| ModelsError::Input("the encoder produced no codes".into()))
    }

    /// Checks codes: an integer tensor `[1, N]` (or `[N]`) with N = this size's code count and
    /// every value inside the codebook; returns them as i64 `[1, N]`.
    pub fn check_codes(&self, codes: &Tensor) -> Result<Tensor, ModelsError> {
        let n = self.num_codes();
        let s = codes.shape();
        let ok_shape = s.0 == [1, n] || s.0 == [n];
        if !codes.dtype().is_int() || !ok_shape {
            return Err(ModelsError::Input(format!(
                "codes must be an integer tensor [1, {n}] for a {}×{} image, got {}{}",
                self.size.0,
                self.size.1,
                codes.dtype(),
                s
            )));
        }
        let v = codes.to_i64_vec();
        let k = self.cfg.codebook_size() as i64;
        if let Some((i, &bad)) = v.iter().enumerate().find(|(_, &c)| c < 0 || c >= k) {
            return Err(ModelsError::Input(format!(
                "codes[{i}] = {bad} is outside the codebook of {k} codes"
            )));
        }
        Ok(Tensor::from_i64([1, n], v)?)
    }

    /// Pixels (CHW f32, before clamping) of codes `[1, N]`.
    pub fn decode(&mut self, codes: &Tensor) -> Result<Vec<f32>, ModelsError> {
        let codes = self.check_codes(codes)?;
        let mut ins = IndexMap::new();
        ins.insert("codes".to_string(), codes);
        let mut out = self.dec.run(&ins)?;
        let y = out
            .shift_remove("pixels")
            .ok_or_else(|| ModelsError::Input("the decoder produced no pixels".into()))?;
        Ok(y.to_f32_vec())
    }
}
