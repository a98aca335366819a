//! An HF CLIP directory compiled into its two towers ([`crate::clip`]) on the host, with its
//! tokenizer and image preprocessing: what the CLIP reward runs.
//!
//! The directory holds what `CLIPModel.save_pretrained` and the processor write:
//! - `config.json` ([`ClipConfig`]; missing keys take transformers' defaults);
//! - `model.safetensors` (f32, f16 or bf16; computed in f32). The old `position_ids` buffers
//!   are ignored; any other tensor that is not a parameter is an error;
//! - `tokenizer.json` (the fast tokenizer; its post-processor adds the start and end ids);
//! - optionally `preprocessor_config.json`, whose `image_mean` and `image_std` replace OpenAI's.
//!
//! Text: the tokenizer's ids, cut to `max_position_embeddings` keeping the last (end) id, then
//! padded with `pad_token_id`; the causal mask keeps the padding out of the pooled state.
//! Images (CHW in [−1, 1], square): the bytes a PNG of them holds ([`to_rgb8`]), resized so
//! the shorter side is `image_size` (bicubic) and centre-cropped ([`preprocess`]), then
//! `(byte/255 − mean)/std` per channel. Transformers' processor resizes with PIL's bicubic,
//! which differs from this resampler by a level or so where the size changes; at the model's
//! size both are exact.

use crate::clip::{image_graph, text_graph, ClipConfig, Tower};
use crate::image_io::{preprocess, to_rgb8, Fit};
use crate::ModelsError;
use indexmap::IndexMap;
use mmada_codegen::compile::{compile, CompileOptions, PtxCheck};
use mmada_ir::{DType, Tensor};
use mmada_runtime::tensor_io::read_safetensors;
use mmada_runtime::{open_artifact, Executor, Target};
use std::path::{Path, PathBuf};

/// OpenAI's CLIP image mean (RGB), the processor's default.
pub const OPENAI_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI's CLIP image standard deviation (RGB).
#[allow(clippy::excessive_precision)] // the processor's published digits
pub const OPENAI_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// Buffers of older checkpoints that are not parameters.
const IGNORED: [&str; 2] = [
    "text_model.embeddings.position_ids",
    "vision_model.embeddings.position_ids",
];

/// CLIP compiled for one image and one text at a time.
pub struct ClipModel {
    /// The architecture.
    pub cfg: ClipConfig,
    /// `logit_scale` (the logits are `exp(logit_scale)·cos`).
    pub logit_scale: f32,
    mean: [f32; 3],
    std: [f32; 3],
    tokenizer: tokenizers::Tokenizer,
    text: Box<dyn Executor>,
    image: Box<dyn Executor>,
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelsError + '_ {
    move |e| ModelsError::Io {
        path: path.display().to_string(),
        source: e,
    }
}

/// `image_mean`/`image_std` of a `preprocessor_config.json` (OpenAI's where absent).
fn read_preprocessor(path: &Path) -> Result<([f32; 3], [f32; 3]), ModelsError> {
    if !path.is_file() {
        return Ok((OPENAI_MEAN, OPENAI_STD));
    }
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelsError::Toml {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    let field = |name: &str, default: [f32; 3]| -> Result<[f32; 3], ModelsError> {
        let Some(x) = v.get(name) else {
            return Ok(default);
        };
        let bad = || ModelsError::Field {
            path: path.display().to_string(),
            field: name.into(),
            msg: format!("must be three numbers (R, G, B), got {x}"),
        };
        let a = x.as_array().filter(|a| a.len() == 3).ok_or_else(bad)?;
        let mut out = [0f32; 3];
        for (o, e) in out.iter_mut().zip(a) {
            *o = e.as_f64().ok_or_else(bad)? as f32;
        }
        Ok(out)
    };
    let (mean, std) = (
        field("image_mean", OPENAI_MEAN)?,
        field("image_std", OPENAI_STD)?,
    );
    if std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(ModelsError::Field {
            path: path.display().to_string(),
            field: "image_std".into(),
            msg: format!("must be positive, got {std:?}"),
        });
    }
    Ok((mean, std))
}

impl ClipModel {
    /// Loads and compiles the CLIP directory `dir`.
    pub fn open(dir: &Path) -> Result<ClipModel, ModelsError> {
        let cfg_path = dir.join("config.json");
        if !cfg_path.is_file() {
            return Err(ModelsError::Options(format!(
                "--clip {}: no config.json there (expected an HF CLIP model directory)",
                dir.display()
            )));
        }
        let text = std::fs::read_to_string(&cfg_path).map_err(io(&cfg_path))?;
        let name = cfg_path.display().to_string();
        let cfg: ClipConfig = serde_json::from_str(&text).map_err(|e| ModelsError::Toml {
            path: name.clone(),
            msg: e.to_string(),
        })?;
        cfg.check().map_err(|(field, msg)| ModelsError::Field {
            path: name,
            field,
            msg,
        })?;
        let wpath = dir.join("model.safetensors");
        if !wpath.is_file() {
            return Err(ModelsError::Options(format!(
                "--clip {}: no model.safetensors there (convert a pytorch_model.bin with \
                 transformers' save_pretrained(safe_serialization=True))",
                dir.display()
            )));
        }
        let weights = read_safetensors(&wpath)?;
        let tpath = dir.join("tokenizer.json");
        if !tpath.is_file() {
            return Err(ModelsError::Options(format!(
                "--clip {}: no tokenizer.json there (the fast tokenizer that CLIPProcessor \
                 saves)",
                dir.display()
            )));
        }
        let tokenizer =
            tokenizers::Tokenizer::from_file(&tpath).map_err(|e| ModelsError::TokenizerLoad {
                path: tpath.display().to_string(),
                msg: e.to_string(),
            })?;
        let (mean, std) = read_preprocessor(&dir.join("preprocessor_config.json"))?;
        ClipModel::new(cfg, weights, tokenizer, mean, std, &wpath)
    }

    /// Compiles both towers with `weights` (read from `path`, named in errors).
    pub fn new(
        cfg: ClipConfig,
        mut weights: IndexMap<String, Tensor>,
        tokenizer: tokenizers::Tokenizer,
        mean: [f32; 3],
        std: [f32; 3],
        path: &Path,
    ) -> Result<ClipModel, ModelsError> {
        let bad = |tensor: &str, msg: String| ModelsError::Tensor {
            path: path.display().to_string(),
            tensor: tensor.to_string(),
            msg,
        };
        let mut take = |name: &str, shape: &[usize]| -> Result<Tensor, ModelsError> {
            let t = weights
                .shift_remove(name)
                .ok_or_else(|| bad(name, "missing from the weights".into()))?;
            if t.shape().0 != shape {
                return Err(bad(
                    name,
                    format!("shape {} but the config implies {shape:?}", t.shape()),
                ));
            }
            if !t.dtype().is_float() {
                return Err(bad(name, format!("dtype {} is not a float", t.dtype())));
            }
            if t.dtype() == DType::F32 {
                Ok(t)
            } else {
                Tensor::from_f32(t.shape().clone(), t.to_f32_vec())
                    .map_err(|e| bad(name, e.to_string()))
            }
        };
        let opts = |name: &str| CompileOptions {
            name: name.into(),
            ptx_check: PtxCheck::Skip,
            ..CompileOptions::default()
        };
        let mut towers = Vec::new();
        for (tower, graph, name) in [
            (Tower::Text, text_graph(&cfg, 1)?, "clip_text"),
            (Tower::Vision, image_graph(&cfg, 1)?, "clip_image"),
        ] {
            let mut exe = open_artifact(compile(&graph, &opts(name))?, Target::Cpu)?;
            for (n, shape) in cfg.param_specs(tower) {
                exe.set_input(&n, &take(&n, &shape)?)?;
            }
            towers.push(exe);
        }
        let scale = take("logit_scale", &[])?.to_f32_vec()[0];
        for n in IGNORED {
            weights.shift_remove(n);
        }
        if let Some((extra, _)) = weights.first() {
            return Err(bad(extra, "is not a parameter of CLIPModel".into()));
        }
        let image = towers
            .pop()
            .ok_or_else(|| bad("", "no image tower".into()))?;
        let text = towers
            .pop()
            .ok_or_else(|| bad("", "no text tower".into()))?;
        Ok(ClipModel {
            cfg,
            logit_scale: scale,
            mean,
            std,
            tokenizer,
            text,
            image,
            dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        })
    }

    /// The text graph's row of `text`: the tokenizer's ids (start and end added by its
    /// post-processor), cut to the positions keeping the last id, padded with `pad_token_id`.
    pub fn text_ids(&self, text: &str) -> Result<Vec<i64>, ModelsError> {
        let t = &self.cfg.text_config;
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| ModelsError::Encode(format!("CLIP tokenizer: {e}")))?;
        let mut ids: Vec<i64> = enc.get_ids().iter().map(|&i| i64::from(i)).collect();
        let n = t.max_position_embeddings;
        if ids.len() > n {
            let last = ids[ids.len() - 1];
            ids.truncate(n - 1);
            ids.push(last);
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= t.vocab_size) {
            return Err(ModelsError::Input(format!(
                "{}/tokenizer.json gives id {bad} for '{text}', outside the text tower's \
                 vocabulary of {}",
                self.dir.display(),
                t.vocab_size
            )));
        }
        if t.eos_token_id != 2 && !ids.contains(&t.eos_token_id) {
            return Err(ModelsError::Input(format!(
                "{}/tokenizer.json does not end '{text}' with the end-of-text id {} of \
                 config.json (its post-processor must add it)",
                self.dir.display(),
                t.eos_token_id
            )));
        }
        ids.resize(n, t.pad_token_id);
        Ok(ids)
    }

    /// The unit text embedding of one row of ids (as [`ClipModel::text_ids`] makes them).
    pub fn text_embeds(&mut self, ids: &[i64]) -> Result<Vec<f32>, ModelsError> {
        let n = self.cfg.text_config.max_position_embeddings;
        if ids.len() != n {
            return Err(ModelsError::Input(format!(
                "CLIP text row of {} ids; the text tower takes {n}",
                ids.len()
            )));
        }
        let mut ins = IndexMap::new();
        ins.insert(
            "input_ids".to_string(),
            Tensor::from_i64([1, n], ids.to_vec())?,
        );
        let mut out = self.text.run(&ins)?;
        let e = out
            .shift_remove("text_embeds")
            .ok_or_else(|| ModelsError::Input("the CLIP text tower gave no text_embeds".into()))?;
        Ok(e.to_f32_vec())
    }

    /// The CLIP input of a CHW image in [−1, 1] (square, the tower's channels): see the
    /// module's documentation.
    pub fn pixel_values(&self, chw: &[f32]) -> Result<Vec<f32>, ModelsError> {
        let v = &self.cfg.vision_config;
        let side = ((chw.len() / 3) as f64).sqrt().round() as usize;
        if v.num_channels != 3 || chw.is_empty() || 3 * side * side != chw.len() {
            return Err(ModelsError::Input(format!(
                "the CLIP reward scores square RGB images (3 × S × S values) with a \
                 3-channel tower; got {} values for a {}-channel tower",
                chw.len(),
                v.num_channels
            )));
        }
        let img = to_rgb8(chw, side as u32, side as u32)?;
        let x = preprocess(&img, v.image_size as u32, Fit::ResizeCrop)?;
        let plane = v.image_size * v.image_size;
        Ok(x.iter()
            .enumerate()
            .map(|(i, &s)| ((s + 1.0) / 2.0 - self.mean[i / plane]) / self.std[i / plane])
            .collect())
    }

    /// The unit image embedding of one CLIP input `[C, S, S]` (see [`ClipModel::pixel_values`]).
    pub fn image_embeds(&mut self, pixel_values: &[f32]) -> Result<Vec<f32>, ModelsError> {
        let v = &self.cfg.vision_config;
        let (c, s) = (v.num_channels, v.image_size);
        if pixel_values.len() != c * s * s {
            return Err(ModelsError::Input(format!(
                "CLIP pixel values: {} values for a {c}×{s}×{s} input",
                pixel_values.len()
            )));
        }
        let mut ins = IndexMap::new();
        ins.insert(
            "pixel_values".to_string(),
            Tensor::from_f32([1, c, s, s], pixel_values.to_vec())?,
        );
        let mut out = self.image.run(&ins)?;
        let e = out.shift_remove("image_embeds").ok_or_else(|| {
            ModelsError::Input("the CLIP image tower gave no image_embeds".into())
        })?;
        Ok(e.to_f32_vec())
    }
}

/// `a·b` in f64.
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}
