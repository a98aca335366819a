//! An HF CLIP directory compiled into its two towers ([`crate::clip`]) on the host, with its
//! tokenizer and image preprocessing: what the CLIP reward runs.
//!
//! The directory holds what `CLIPModel.save_pretrained` and the processor write:
//! - `config.json` ([`ClipConfig`]; missing keys take transformers' defaults);
//! - `model.safetensors` (f32, f16 or bf16; computed in f32). The old `position_ids` buffers
//!   are ignored; any other tensor that is not a parameter is an error;
//! - `tokenizer.json` (the fast tokenizer; its post-processor adds the start and end ids);
//! - optionally `preprocessor_config.json`: its `image_mean`, `image_std`, `size` (shortest
//!   edge) and `crop_size` (which must be the tower's `image_size`) replace OpenAI's; switching
//!   a step off (`do_resize: false`, …) or another `rescale_factor` is refused.
//!
//! Text: the tokenizer's ids, cut to `max_position_embeddings` keeping the last (end) id, then
//! padded with `pad_token_id`; the causal mask keeps the padding out of the pooled state.
//! Images (CHW in [−1, 1], square): the bytes a PNG of them holds ([`to_rgb8`]), resized so
//! the shorter side is the processor's shortest edge (bicubic, [`preprocess`]), centre-cropped
//! to `image_size`, then `(byte/255 − mean)/std` per channel. Transformers' processor resizes with PIL's bicubic,
//! which differs from this resampler by a level or so where the size changes; at the model's
//! size both are exact.

use crate::checkpoint::take_f32;
use crate::clip::{image_graph, text_graph, ClipConfig, Tower};
use crate::image_io::{preprocess, to_rgb8, Fit};
use crate::ModelsError;
use indexmap::IndexMap;
use mmada_codegen::compile::{compile, CompileOptions, PtxCheck};
use mmada_ir::Tensor;
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
    preprocess: Preprocess,
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

/// A CLIP `config.json`: transformers' older `text_config_dict`/`vision_config_dict` keys are
/// refused (their values would be ignored); a `null` tower config means the defaults.
fn parse_config(text: &str, name: &str) -> Result<ClipConfig, ModelsError> {
    let bad = |msg: String| ModelsError::Toml {
        path: name.to_string(),
        msg,
    };
    let mut v: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| bad("must be a JSON object".into()))?;
    for k in ["text_config_dict", "vision_config_dict"] {
        if obj.get(k).is_some_and(|x| !x.is_null()) {
            return Err(bad(format!(
                "'{k}' (an old transformers key) is not read; move its keys into '{}'",
                k.trim_end_matches("_dict")
            )));
        }
    }
    for k in ["text_config", "vision_config"] {
        if obj.get(k).is_some_and(serde_json::Value::is_null) {
            obj.remove(k);
        }
    }
    serde_json::from_value(v).map_err(|e| bad(e.to_string()))
}

/// How images become the image tower's input: resized so the shorter side is
/// `shortest_edge`, centre-cropped to the tower's size, then `(x/255 − mean)/std`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preprocess {
    /// Shorter side after resizing.
    pub shortest_edge: usize,
    /// Per-channel mean (RGB).
    pub mean: [f32; 3],
    /// Per-channel standard deviation (RGB).
    pub std: [f32; 3],
}

impl Preprocess {
    /// OpenAI's processor for a tower of `image_size` pixels.
    pub fn openai(image_size: usize) -> Preprocess {
        Preprocess {
            shortest_edge: image_size,
            mean: OPENAI_MEAN,
            std: OPENAI_STD,
        }
    }
}

/// A size field of a processor config: a number, `{"shortest_edge": n}` or a square
/// `{"height": n, "width": n}`.
fn size_field(v: &serde_json::Value) -> Option<usize> {
    let n = match (v.as_u64(), v.get("shortest_edge")) {
        (Some(n), _) => n,
        (None, Some(e)) => e.as_u64()?,
        (None, None) => {
            let (h, w) = (v.get("height")?.as_u64()?, v.get("width")?.as_u64()?);
            if h != w {
                return None;
            }
            h
        }
    };
    usize::try_from(n).ok()
}

/// The `preprocessor_config.json` at `path` (OpenAI's processor where absent) for a tower of
/// `image_size` pixels. Read: `image_mean`, `image_std`, `size` (shortest edge) and
/// `crop_size`, which must be the tower's size. Refused: `do_resize`, `do_center_crop`,
/// `do_rescale` or `do_normalize` set to false, and a `rescale_factor` other than 1/255.
fn read_preprocessor(path: &Path, image_size: usize) -> Result<Preprocess, ModelsError> {
    if !path.is_file() {
        return Ok(Preprocess::openai(image_size));
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
    let refuse = |field: &str, msg: String| ModelsError::Field {
        path: path.display().to_string(),
        field: field.into(),
        msg,
    };
    if std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(refuse(
            "image_std",
            format!("must be positive, got {std:?}"),
        ));
    }
    for flag in ["do_resize", "do_center_crop", "do_rescale", "do_normalize"] {
        if v.get(flag).and_then(serde_json::Value::as_bool) == Some(false) {
            return Err(refuse(
                flag,
                "false is not supported (the reward resizes, crops, rescales and normalises)"
                    .into(),
            ));
        }
    }
    if let Some(r) = v.get("rescale_factor") {
        if r.as_f64().is_none_or(|r| (r - 1.0 / 255.0).abs() > 1e-9) {
            return Err(refuse("rescale_factor", format!("must be 1/255, got {r}")));
        }
    }
    let size = |name: &str| -> Result<usize, ModelsError> {
        match v.get(name) {
            None => Ok(image_size),
            Some(x) => size_field(x).filter(|&n| n > 0).ok_or_else(|| {
                refuse(
                    name,
                    format!("must be a positive size (n, shortest_edge or a square), got {x}"),
                )
            }),
        }
    };
    let (shortest_edge, crop) = (size("size")?, size("crop_size")?);
    if crop != image_size {
        return Err(refuse(
            "crop_size",
            format!("{crop} is not the image tower's image_size {image_size}"),
        ));
    }
    if shortest_edge < crop || shortest_edge > 1 << 14 {
        return Err(refuse(
            "size",
            format!(
                "a shortest edge of {shortest_edge} is not between the crop ({crop}) and 16384"
            ),
        ));
    }
    Ok(Preprocess {
        shortest_edge,
        mean,
        std,
    })
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
        let cfg = parse_config(&text, &name)?;
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
        let load_err = |e: tokenizers::Error| ModelsError::TokenizerLoad {
            path: tpath.display().to_string(),
            msg: e.to_string(),
        };
        let mut tokenizer = tokenizers::Tokenizer::from_file(&tpath).map_err(load_err)?;
        // The rows are cut and padded here, to the tower's positions, whatever the file says.
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(load_err)?;
        let pre = read_preprocessor(
            &dir.join("preprocessor_config.json"),
            cfg.vision_config.image_size,
        )?;
        ClipModel::new(cfg, weights, tokenizer, pre, &wpath)
    }

    /// Compiles both towers with `weights` (read from `path`, named in errors).
    pub fn new(
        cfg: ClipConfig,
        mut weights: IndexMap<String, Tensor>,
        tokenizer: tokenizers::Tokenizer,
        preprocess: Preprocess,
        path: &Path,
    ) -> Result<ClipModel, ModelsError> {
        cfg.check().map_err(|(field, msg)| ModelsError::Field {
            path: path.display().to_string(),
            field,
            msg,
        })?;
        let bad = |tensor: &str, msg: String| ModelsError::Tensor {
            path: path.display().to_string(),
            tensor: tensor.to_string(),
            msg,
        };
        let file = path.display().to_string();
        let mut take = |name: &str, shape: &[usize]| take_f32(&mut weights, name, shape, &file);
        let opts = |name: &str| CompileOptions {
            name: name.into(),
            ptx_check: PtxCheck::Skip,
            ..CompileOptions::default()
        };
        // Every tensor is checked against the config before anything is compiled.
        let mut params = Vec::new();
        for tower in [Tower::Text, Tower::Vision] {
            let mut p = Vec::new();
            for (n, shape) in cfg.param_specs(tower) {
                let t = take(&n, &shape)?;
                p.push((n, t));
            }
            params.push(p);
        }
        let scale = take("logit_scale", &[])?.to_f32_vec()[0];
        for n in IGNORED {
            weights.shift_remove(n);
        }
        if let Some((extra, _)) = weights.first() {
            return Err(bad(extra, "is not a parameter of CLIPModel".into()));
        }
        let mut towers = Vec::new();
        for ((graph, name), p) in [
            (text_graph(&cfg, 1)?, "clip_text"),
            (image_graph(&cfg, 1)?, "clip_image"),
        ]
        .into_iter()
        .zip(params)
        {
            let mut exe = open_artifact(compile(&graph, &opts(name))?, Target::Cpu)?;
            for (n, t) in &p {
                exe.set_input(n, t)?;
            }
            towers.push(exe);
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
            preprocess,
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
        // Square in, so the resize gives edge × edge; then the central crop (offset
        // ⌊(edge − size)/2⌋, as transformers' center_crop).
        let (edge, size) = (self.preprocess.shortest_edge, v.image_size);
        let x = preprocess(&img, edge as u32, Fit::ResizeCrop)?;
        let off = (edge - size) / 2;
        let (mean, std) = (self.preprocess.mean, self.preprocess.std);
        let mut out = Vec::with_capacity(3 * size * size);
        for c in 0..3 {
            for r in off..off + size {
                let row = &x[(c * edge + r) * edge + off..][..size];
                out.extend(row.iter().map(|&s| ((s + 1.0) / 2.0 - mean[c]) / std[c]));
            }
        }
        Ok(out)
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
