//! CLIP (the HF `CLIPModel` layout) as IR graphs: the image tower and the text tower, each
//! ending in its L2-normalised projection, for the CLIP reward of UniGRPO (spec §5.2).
//!
//! - Image: the patch convolution (kernel = stride = `patch_size`, no bias), computed as one
//!   product of the patches `[B, g², C·p·p]` with the weight as `[D, C·p·p]`; the class embedding in front; learned positions; `pre_layrnorm`;
//!   the encoder layers; `post_layernorm` of the class position; `visual_projection`.
//! - Text: token and position embeddings; the encoder layers with a causal mask (key j is seen
//!   from query i when j ≤ i); `final_layer_norm`; the hidden state at the end-of-text position
//!   (the first id equal to `eos_token_id`, or, for configs written with the old
//!   `eos_token_id = 2`, the first largest id, as transformers does); `text_projection`.
//! - Layer: `h + attn(LN1(h))`, then `h + fc2(act(fc1(LN2(h))))`; LayerNorm with bias and
//!   biased variance; q, k, v and out projections with bias, q scaled by `head_dim^−½`.
//! - Activations: `quick_gelu` (`x·σ(1.702x)`, OpenAI's checkpoints), `gelu` (erf, here the
//!   Abramowitz–Stegun 7.1.26 form, |error| ≤ 1.5e-7) and `gelu_new`/`gelu_pytorch_tanh`.
//!
//! Parity: `tests/clip.rs` against the float64 NumPy reference
//! `scripts/reference/clip_reference.py`, which itself agrees with transformers 4.46.0's
//! `CLIPModel` to 3e-7 on the fixture.

use crate::nn;
use indexmap::IndexMap;
use mmada_ir::{BinaryOp, CompareOp, DType, Graph, IrError, NodeId, Result, Role};
use mmada_ir::{Shape, UnaryOp};
use serde::Deserialize;

fn d_text_vocab() -> usize {
    49408
}
fn d_text_hidden() -> usize {
    512
}
fn d_text_ff() -> usize {
    2048
}
fn d_layers() -> usize {
    12
}
fn d_text_heads() -> usize {
    8
}
fn d_positions() -> usize {
    77
}
fn d_act() -> String {
    "quick_gelu".into()
}
fn d_eps() -> f64 {
    1e-5
}
fn d_eos() -> i64 {
    49407
}
fn d_pad() -> i64 {
    1
}
fn d_vision_hidden() -> usize {
    768
}
fn d_vision_ff() -> usize {
    3072
}
fn d_vision_heads() -> usize {
    12
}
fn d_image() -> usize {
    224
}
fn d_patch() -> usize {
    32
}
fn d_channels() -> usize {
    3
}
fn d_projection() -> usize {
    512
}

/// `text_config` of a CLIP `config.json` (missing keys take transformers' defaults).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ClipTextConfig {
    /// Token ids.
    #[serde(default = "d_text_vocab")]
    pub vocab_size: usize,
    /// Width.
    #[serde(default = "d_text_hidden")]
    pub hidden_size: usize,
    /// MLP width.
    #[serde(default = "d_text_ff")]
    pub intermediate_size: usize,
    /// Layers.
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// Heads.
    #[serde(default = "d_text_heads")]
    pub num_attention_heads: usize,
    /// Positions (the graph's sequence length).
    #[serde(default = "d_positions")]
    pub max_position_embeddings: usize,
    /// Activation.
    #[serde(default = "d_act")]
    pub hidden_act: String,
    /// LayerNorm epsilon.
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    /// End of text; 2 means the legacy rule (pool at the largest id).
    #[serde(default = "d_eos")]
    pub eos_token_id: i64,
    /// Padding id after the end of text.
    #[serde(default = "d_pad")]
    pub pad_token_id: i64,
}

/// `vision_config` of a CLIP `config.json` (missing keys take transformers' defaults).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ClipVisionConfig {
    /// Width.
    #[serde(default = "d_vision_hidden")]
    pub hidden_size: usize,
    /// MLP width.
    #[serde(default = "d_vision_ff")]
    pub intermediate_size: usize,
    /// Layers.
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// Heads.
    #[serde(default = "d_vision_heads")]
    pub num_attention_heads: usize,
    /// Input side in pixels.
    #[serde(default = "d_image")]
    pub image_size: usize,
    /// Patch side in pixels.
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    /// Image channels.
    #[serde(default = "d_channels")]
    pub num_channels: usize,
    /// Activation.
    #[serde(default = "d_act")]
    pub hidden_act: String,
    /// LayerNorm epsilon.
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        serde_json::from_str("{}").unwrap_or_else(|_| unreachable!("every field has a default"))
    }
}

impl Default for ClipVisionConfig {
    fn default() -> Self {
        serde_json::from_str("{}").unwrap_or_else(|_| unreachable!("every field has a default"))
    }
}

/// A CLIP `config.json` (`CLIPModel`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ClipConfig {
    /// The text tower.
    #[serde(default)]
    pub text_config: ClipTextConfig,
    /// The image tower.
    #[serde(default)]
    pub vision_config: ClipVisionConfig,
    /// Width of the shared embedding.
    #[serde(default = "d_projection")]
    pub projection_dim: usize,
}

/// The most values one tensor of a tower may have (2^34, 64 GiB of f32).
const MAX_TENSOR: usize = 1 << 34;
/// The most encoder layers a tower may have.
const MAX_LAYERS: usize = 1024;

/// Activations the towers support (`hidden_act`).
pub const ACTIVATIONS: [&str; 4] = ["quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh"];

impl ClipConfig {
    /// Patches per side (0 for a patch size of 0, which [`ClipConfig::check`] refuses).
    pub fn grid(&self) -> usize {
        let v = &self.vision_config;
        v.image_size.checked_div(v.patch_size).unwrap_or(0)
    }

    /// Checks the fields; the error is `(field, message)`.
    pub fn check(&self) -> std::result::Result<(), (String, String)> {
        let t = &self.text_config;
        let v = &self.vision_config;
        let positive = [
            ("text_config.vocab_size", t.vocab_size),
            ("text_config.hidden_size", t.hidden_size),
            ("text_config.intermediate_size", t.intermediate_size),
            ("text_config.num_attention_heads", t.num_attention_heads),
            (
                "text_config.max_position_embeddings",
                t.max_position_embeddings,
            ),
            ("vision_config.hidden_size", v.hidden_size),
            ("vision_config.intermediate_size", v.intermediate_size),
            ("vision_config.num_attention_heads", v.num_attention_heads),
            ("vision_config.patch_size", v.patch_size),
            ("vision_config.num_channels", v.num_channels),
            ("projection_dim", self.projection_dim),
        ];
        for (f, x) in positive {
            if x == 0 {
                return Err((f.into(), "must be at least 1".into()));
            }
        }
        for (f, d, h) in [
            ("text_config", t.hidden_size, t.num_attention_heads),
            ("vision_config", v.hidden_size, v.num_attention_heads),
        ] {
            if !d.is_multiple_of(h) {
                return Err((
                    format!("{f}.num_attention_heads"),
                    format!("{h} heads do not divide hidden_size {d}"),
                ));
            }
        }
        if v.image_size < v.patch_size || !v.image_size.is_multiple_of(v.patch_size) {
            return Err((
                "vision_config.image_size".into(),
                format!(
                    "{} is not a positive multiple of patch_size {}",
                    v.image_size, v.patch_size
                ),
            ));
        }
        for (f, a) in [
            ("text_config.hidden_act", &t.hidden_act),
            ("vision_config.hidden_act", &v.hidden_act),
        ] {
            if !ACTIVATIONS.contains(&a.as_str()) {
                return Err((
                    f.into(),
                    format!("'{a}' is not one of {}", ACTIVATIONS.join(", ")),
                ));
            }
        }
        for (f, e) in [
            ("text_config.layer_norm_eps", t.layer_norm_eps),
            ("vision_config.layer_norm_eps", v.layer_norm_eps),
        ] {
            if !(e.is_finite() && e > 0.0) {
                return Err((f.into(), format!("must be a positive number, got {e}")));
            }
        }
        for (f, id) in [
            ("text_config.eos_token_id", t.eos_token_id),
            ("text_config.pad_token_id", t.pad_token_id),
        ] {
            if id < 0 || id as usize >= t.vocab_size {
                return Err((
                    f.into(),
                    format!("{id} is outside the vocabulary of {}", t.vocab_size),
                ));
            }
        }
        // A corrupt config must not overflow the shapes: every tensor of the towers (and the
        // text mask, N×N) has at most MAX_TENSOR values.
        let g = self.grid();
        let positions = g.checked_mul(g).and_then(|x| x.checked_add(1));
        let patch = v
            .patch_size
            .checked_mul(v.patch_size)
            .and_then(|x| x.checked_mul(v.num_channels));
        let widest = t.hidden_size.max(v.hidden_size);
        let sizes = [
            ("text_config.vocab_size", Some(t.vocab_size), t.hidden_size),
            (
                "text_config.max_position_embeddings",
                Some(t.max_position_embeddings),
                widest,
            ),
            (
                "text_config.max_position_embeddings",
                Some(t.max_position_embeddings),
                t.max_position_embeddings,
            ),
            (
                "text_config.intermediate_size",
                Some(t.intermediate_size),
                t.hidden_size,
            ),
            ("vision_config.image_size", positions, v.hidden_size),
            (
                "vision_config.intermediate_size",
                Some(v.intermediate_size),
                v.hidden_size,
            ),
            ("vision_config.patch_size", patch, v.hidden_size),
            ("projection_dim", Some(self.projection_dim), widest),
        ];
        for (f, a, b) in sizes {
            if a.and_then(|a| a.checked_mul(b))
                .is_none_or(|n| n > MAX_TENSOR)
            {
                return Err((
                    f.into(),
                    format!("makes a tensor of more than {MAX_TENSOR} values"),
                ));
            }
        }
        for (f, n) in [
            ("text_config.num_hidden_layers", t.num_hidden_layers),
            ("vision_config.num_hidden_layers", v.num_hidden_layers),
        ] {
            if n > MAX_LAYERS {
                return Err((f.into(), format!("{n} is more than {MAX_LAYERS}")));
            }
        }
        Ok(())
    }

    /// The parameters (HF names and shapes) of one tower and its projection, `text_model.*`
    /// with `text_projection.weight` or `vision_model.*` with `visual_projection.weight`;
    /// `logit_scale` belongs to neither.
    pub fn param_specs(&self, tower: Tower) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        let layers = |out: &mut Vec<(String, Vec<usize>)>, p: &str, n: usize, d: usize, f| {
            for i in 0..n {
                let q = format!("{p}.encoder.layers.{i}");
                for m in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                    out.push((format!("{q}.self_attn.{m}.weight"), vec![d, d]));
                    out.push((format!("{q}.self_attn.{m}.bias"), vec![d]));
                }
                for m in ["layer_norm1", "layer_norm2"] {
                    out.push((format!("{q}.{m}.weight"), vec![d]));
                    out.push((format!("{q}.{m}.bias"), vec![d]));
                }
                out.push((format!("{q}.mlp.fc1.weight"), vec![f, d]));
                out.push((format!("{q}.mlp.fc1.bias"), vec![f]));
                out.push((format!("{q}.mlp.fc2.weight"), vec![d, f]));
                out.push((format!("{q}.mlp.fc2.bias"), vec![d]));
            }
        };
        match tower {
            Tower::Text => {
                let t = &self.text_config;
                let d = t.hidden_size;
                let e = "text_model.embeddings";
                out.push((format!("{e}.token_embedding.weight"), vec![t.vocab_size, d]));
                out.push((
                    format!("{e}.position_embedding.weight"),
                    vec![t.max_position_embeddings, d],
                ));
                layers(
                    &mut out,
                    "text_model",
                    t.num_hidden_layers,
                    d,
                    t.intermediate_size,
                );
                out.push(("text_model.final_layer_norm.weight".into(), vec![d]));
                out.push(("text_model.final_layer_norm.bias".into(), vec![d]));
                out.push((
                    "text_projection.weight".into(),
                    vec![self.projection_dim, d],
                ));
            }
            Tower::Vision => {
                let v = &self.vision_config;
                let (d, p) = (v.hidden_size, v.patch_size);
                let e = "vision_model.embeddings";
                out.push((format!("{e}.class_embedding"), vec![d]));
                out.push((
                    format!("{e}.patch_embedding.weight"),
                    vec![d, v.num_channels, p, p],
                ));
                let g = self.grid();
                out.push((format!("{e}.position_embedding.weight"), vec![g * g + 1, d]));
                for n in ["pre_layrnorm", "post_layernorm"] {
                    out.push((format!("vision_model.{n}.weight"), vec![d]));
                    out.push((format!("vision_model.{n}.bias"), vec![d]));
                }
                layers(
                    &mut out,
                    "vision_model",
                    v.num_hidden_layers,
                    d,
                    v.intermediate_size,
                );
                out.push((
                    "visual_projection.weight".into(),
                    vec![self.projection_dim, d],
                ));
            }
        }
        out
    }
}

/// One of CLIP's two towers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tower {
    /// `text_model` and `text_projection`.
    Text,
    /// `vision_model` and `visual_projection`.
    Vision,
}

/// What one tower's encoder layers need to know.
struct Encoder<'a> {
    p: &'a IndexMap<String, NodeId>,
    prefix: &'static str,
    layers: usize,
    heads: usize,
    act: &'a str,
    eps: f64,
}

impl Encoder<'_> {
    fn w(&self, name: &str) -> Result<NodeId> {
        self.p.get(name).copied().ok_or_else(|| IrError::Input {
            name: name.into(),
            msg: "parameter not declared".into(),
        })
    }

    fn ln(&self, g: &mut Graph, x: NodeId, name: &str) -> Result<NodeId> {
        let w = self.w(&format!("{name}.weight"))?;
        let b = self.w(&format!("{name}.bias"))?;
        nn::layer_norm(g, x, w, b, self.eps)
    }

    /// `x·Wᵀ + b` of the linear layer `name`.
    fn linear(&self, g: &mut Graph, x: NodeId, name: &str) -> Result<NodeId> {
        let y = g.linear(x, self.w(&format!("{name}.weight"))?)?;
        g.add2(y, self.w(&format!("{name}.bias"))?)
    }

    /// The layers over `h [B, N, D]`; `causal` adds the text tower's mask.
    fn run(&self, g: &mut Graph, mut h: NodeId, causal: bool) -> Result<NodeId> {
        let s = g.try_node(h)?.shape.clone();
        let (b, n, d) = (s.0[0], s.0[1], s.0[2]);
        let hd = d / self.heads;
        let scale = 1.0 / (hd as f64).sqrt();
        // Additive mask: 0 where key j ≤ query i, the f32 minimum elsewhere (its exp is 0
        // after the softmax's max subtraction, as transformers' finfo.min mask).
        let bias = if causal {
            let qi = g.iota(DType::I64, [n, n], 0)?;
            let kj = g.iota(DType::I64, [n, n], 1)?;
            let seen = g.compare(CompareOp::Le, kj, qi)?;
            let zero = g.full(DType::F32, 0.0, Shape::scalar())?;
            let low = g.full(DType::F32, f32::MIN as f64, Shape::scalar())?;
            Some(g.where_(seen, zero, low)?)
        } else {
            None
        };
        let heads = |g: &mut Graph, y: NodeId| -> Result<NodeId> {
            let y = g.reshape(y, [b, n, self.heads, hd])?;
            g.permute(y, &[0, 2, 1, 3])
        };
        for i in 0..self.layers {
            let q = format!("{}.encoder.layers.{i}", self.prefix);
            let x = self.ln(g, h, &format!("{q}.layer_norm1"))?;
            let qs = self.linear(g, x, &format!("{q}.self_attn.q_proj"))?;
            let ks = self.linear(g, x, &format!("{q}.self_attn.k_proj"))?;
            let vs = self.linear(g, x, &format!("{q}.self_attn.v_proj"))?;
            let (qs, ks, vs) = (heads(g, qs)?, heads(g, ks)?, heads(g, vs)?);
            let o = match bias {
                None => nn::attention(g, qs, ks, vs, None, scale)?,
                Some(bias) => {
                    let kt = g.transpose(ks)?;
                    let sc = g.matmul(qs, kt)?;
                    let sc = g.binary_scalar(BinaryOp::Mul, sc, scale)?;
                    let sc = g.add2(sc, bias)?;
                    let a = g.softmax(sc, -1)?;
                    g.matmul(a, vs)?
                }
            };
            let o = g.permute(o, &[0, 2, 1, 3])?;
            let o = g.reshape(o, [b, n, d])?;
            let o = self.linear(g, o, &format!("{q}.self_attn.out_proj"))?;
            h = g.add2(h, o)?;
            let x = self.ln(g, h, &format!("{q}.layer_norm2"))?;
            let f = self.linear(g, x, &format!("{q}.mlp.fc1"))?;
            let f = activation(g, f, self.act)?;
            let f = self.linear(g, f, &format!("{q}.mlp.fc2"))?;
            h = g.add2(h, f)?;
        }
        Ok(h)
    }
}

/// The activation `name` (one of [`ACTIVATIONS`]) of f32 `x`.
pub fn activation(g: &mut Graph, x: NodeId, name: &str) -> Result<NodeId> {
    match name {
        "quick_gelu" => {
            let z = g.binary_scalar(BinaryOp::Mul, x, 1.702)?;
            let s = g.unary(UnaryOp::Sigmoid, z)?;
            g.mul(x, s)
        }
        "gelu" => {
            let z = g.binary_scalar(BinaryOp::Mul, x, std::f64::consts::FRAC_1_SQRT_2)?;
            let e = erf(g, z)?;
            let e = g.binary_scalar(BinaryOp::Add, e, 1.0)?;
            let y = g.mul(x, e)?;
            g.binary_scalar(BinaryOp::Mul, y, 0.5)
        }
        "gelu_new" | "gelu_pytorch_tanh" => {
            // 0.5·x·(1 + tanh(u)), u = √(2/π)(x + 0.044715x³), tanh(u) = 2σ(2u) − 1, so the
            // whole is x·σ(2u).
            let x3 = g.mul(x, x)?;
            let x3 = g.mul(x3, x)?;
            let x3 = g.binary_scalar(BinaryOp::Mul, x3, 0.044715)?;
            let u = g.add2(x, x3)?;
            let two_u = (2.0 / std::f64::consts::PI).sqrt() * 2.0;
            let u = g.binary_scalar(BinaryOp::Mul, u, two_u)?;
            let s = g.unary(UnaryOp::Sigmoid, u)?;
            g.mul(x, s)
        }
        _ => Err(IrError::Input {
            name: "hidden_act".into(),
            msg: format!("'{name}' is not one of {}", ACTIVATIONS.join(", ")),
        }),
    }
}

/// erf by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7): with t = 1/(1 + p|z|),
/// erf(|z|) = 1 − t(a1 + t(a2 + t(a3 + t(a4 + t·a5))))·e^(−z²), odd in z.
fn erf(g: &mut Graph, z: NodeId) -> Result<NodeId> {
    const P: f64 = 0.327_591_1;
    const A: [f64; 5] = [
        0.254_829_592,
        -0.284_496_736,
        1.421_413_741,
        -1.453_152_027,
        1.061_405_429,
    ];
    let az = g.unary(UnaryOp::Abs, z)?;
    let den = g.binary_scalar(BinaryOp::Mul, az, P)?;
    let den = g.binary_scalar(BinaryOp::Add, den, 1.0)?;
    let t = g.unary(UnaryOp::Recip, den)?;
    let mut poly = g.binary_scalar(BinaryOp::Mul, t, A[4])?;
    for &a in A[..4].iter().rev() {
        let s = g.binary_scalar(BinaryOp::Add, poly, a)?;
        poly = g.mul(s, t)?;
    }
    let z2 = g.mul(z, z)?;
    let nz2 = g.unary(UnaryOp::Neg, z2)?;
    let ex = g.unary(UnaryOp::Exp, nz2)?;
    let tail = g.mul(poly, ex)?;
    let one = g.full(DType::F32, 1.0, Shape::scalar())?;
    let pos = g.sub(one, tail)?;
    let zero = g.full(DType::F32, 0.0, Shape::scalar())?;
    let neg = g.compare(CompareOp::Lt, z, zero)?;
    let npos = g.unary(UnaryOp::Neg, pos)?;
    g.where_(neg, npos, pos)
}

/// Declares one tower's parameters as f32 `Param` inputs.
pub fn declare_params(
    g: &mut Graph,
    cfg: &ClipConfig,
    tower: Tower,
) -> Result<IndexMap<String, NodeId>> {
    let mut m = IndexMap::new();
    for (name, shape) in cfg.param_specs(tower) {
        let id = g.add_input(&name, Role::Param, DType::F32, shape)?;
        m.insert(name, id);
    }
    Ok(m)
}

fn check_cfg(cfg: &ClipConfig) -> Result<()> {
    cfg.check().map_err(|(field, msg)| IrError::Input {
        name: format!("CLIP config field '{field}'"),
        msg,
    })
}

/// `x / ‖x‖₂` over the last axis.
fn l2_normalize(g: &mut Graph, x: NodeId) -> Result<NodeId> {
    let sq = g.mul(x, x)?;
    let s = g.sum(sq, -1, true)?;
    let r = g.unary(UnaryOp::Rsqrt, s)?;
    g.mul(x, r)
}

/// The image graph: `pixel_values` f32 `[B, C, S, S]` (CLIP-normalised) → output
/// `image_embeds` f32 `[B, projection_dim]`, unit length.
pub fn image_graph(cfg: &ClipConfig, batch: usize) -> Result<Graph> {
    check_cfg(cfg)?;
    let v = &cfg.vision_config;
    let mut g = Graph::new();
    let p = declare_params(&mut g, cfg, Tower::Vision)?;
    let (d, s, gr) = (v.hidden_size, v.image_size, cfg.grid());
    let x = g.input("pixel_values", DType::F32, [batch, v.num_channels, s, s])?;
    let enc = Encoder {
        p: &p,
        prefix: "vision_model",
        layers: v.num_hidden_layers,
        heads: v.num_attention_heads,
        act: &v.hidden_act,
        eps: v.layer_norm_eps,
    };
    // The patch convolution (kernel = stride, no padding) is one product: each patch's
    // C·p·p pixels, in the weight's (c, u, v) order, against the weight as [D, C·p·p].
    let (c, ps) = (v.num_channels, v.patch_size);
    let patches = g.reshape(x, [batch, c, gr, ps, gr, ps])?;
    let patches = g.permute(patches, &[0, 2, 4, 1, 3, 5])?;
    let patches = g.reshape(patches, [batch, gr * gr, c * ps * ps])?;
    let w = enc.w("vision_model.embeddings.patch_embedding.weight")?;
    let w = g.reshape(w, [d, c * ps * ps])?;
    let pe = g.linear(patches, w)?;
    let cls = enc.w("vision_model.embeddings.class_embedding")?;
    let cls = g.reshape(cls, [1, 1, d])?;
    let cls = g.broadcast_to(cls, [batch, 1, d])?;
    let h = g.concat(&[cls, pe], 1)?;
    let h = g.add2(
        h,
        enc.w("vision_model.embeddings.position_embedding.weight")?,
    )?;
    let h = enc.ln(&mut g, h, "vision_model.pre_layrnorm")?;
    let h = enc.run(&mut g, h, false)?;
    let first = g.slice_axis(h, 1, 0, 1)?;
    let first = g.reshape(first, [batch, d])?;
    let pooled = enc.ln(&mut g, first, "vision_model.post_layernorm")?;
    let e = g.linear(pooled, enc.w("visual_projection.weight")?)?;
    let e = l2_normalize(&mut g, e)?;
    g.set_output("image_embeds", e)?;
    Ok(g)
}

/// The text graph: `input_ids` i64 `[B, max_position_embeddings]` (each row holding its
/// end-of-text id, padded after it) → output `text_embeds` f32 `[B, projection_dim]`, unit
/// length.
pub fn text_graph(cfg: &ClipConfig, batch: usize) -> Result<Graph> {
    check_cfg(cfg)?;
    let t = &cfg.text_config;
    let mut g = Graph::new();
    let p = declare_params(&mut g, cfg, Tower::Text)?;
    let (d, n) = (t.hidden_size, t.max_position_embeddings);
    let ids = g.input("input_ids", DType::I64, [batch, n])?;
    let enc = Encoder {
        p: &p,
        prefix: "text_model",
        layers: t.num_hidden_layers,
        heads: t.num_attention_heads,
        act: &t.hidden_act,
        eps: t.layer_norm_eps,
    };
    let tok = g.embedding(enc.w("text_model.embeddings.token_embedding.weight")?, ids)?;
    let h = g.add2(
        tok,
        enc.w("text_model.embeddings.position_embedding.weight")?,
    )?;
    let h = enc.run(&mut g, h, true)?;
    let h = enc.ln(&mut g, h, "text_model.final_layer_norm")?;
    // The end-of-text position: the first largest id (legacy eos 2) or the first eos id.
    let key = if t.eos_token_id == 2 {
        g.cast(ids, DType::F32)?
    } else {
        let eos = g.full(DType::I64, t.eos_token_id as f64, Shape::scalar())?;
        let is = g.compare(CompareOp::Eq, ids, eos)?;
        g.cast(is, DType::F32)?
    };
    let pos = g.argmax(key, -1)?; // [B, 1]
    let pos = g.reshape(pos, [batch, 1, 1])?;
    let pos = g.broadcast_to(pos, [batch, 1, d])?;
    let pooled = g.gather(h, pos, 1)?;
    let pooled = g.reshape(pooled, [batch, d])?;
    let e = g.linear(pooled, enc.w("text_projection.weight")?)?;
    let e = l2_normalize(&mut g, e)?;
    g.set_output("text_embeds", e)?;
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use indexmap::IndexMap;
    use mmada_ir::Tensor;

    /// erf by its Maclaurin series in f64 (|x| ≤ 4: 60 terms, error far below f32's).
    fn erf64(x: f64) -> f64 {
        let (mut term, mut sum) = (x, x);
        for n in 1..60 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    /// Every activation on 97 points of [−4, 4] (the interpreter, f32) against its f64
    /// formula: quick_gelu and the tanh forms to f32 rounding, gelu within the erf
    /// approximation's 1.5e-7 (times |x|/2 ≤ 2) plus rounding.
    #[test]
    fn activations_match_their_formulas() {
        let xs: Vec<f32> = (0..97).map(|i| -4.0 + i as f32 / 12.0).collect();
        let tanh_form = |x: f64| {
            let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            0.5 * x * (1.0 + u.tanh())
        };
        type Formula<'a> = &'a dyn Fn(f64) -> f64;
        let cases: [(&str, Formula, f64); 4] = [
            ("quick_gelu", &|x| x / (1.0 + (-1.702 * x).exp()), 2e-6),
            (
                "gelu",
                &|x| 0.5 * x * (1.0 + erf64(x / 2f64.sqrt())),
                5e-7 + 2e-6,
            ),
            ("gelu_new", &tanh_form, 2e-6),
            ("gelu_pytorch_tanh", &tanh_form, 2e-6),
        ];
        for (name, want, tol) in cases {
            let mut g = Graph::new();
            let x = g.input("x", DType::F32, [xs.len()]).unwrap();
            let y = activation(&mut g, x, name).unwrap();
            g.set_output("y", y).unwrap();
            let mut ins = IndexMap::new();
            ins.insert(
                "x".to_string(),
                Tensor::from_f32([xs.len()], xs.clone()).unwrap(),
            );
            let out = mmada_ir::interp::interpret(&g, &ins).unwrap()["y"].to_f64_vec();
            for (&x, &got) in xs.iter().zip(&out) {
                let w = want(x as f64);
                assert!((got - w).abs() <= tol, "{name}({x}) = {got}, want {w}");
            }
        }
        let mut g = Graph::new();
        let x = g.input("x", DType::F32, [1]).unwrap();
        assert!(activation(&mut g, x, "relu").is_err());
    }
}
