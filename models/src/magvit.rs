//! The MAGVIT-v2 image tokenizer (spec §7) as IR graphs: encoder, LFQ quantiser and decoder,
//! with the official tensor names.
//!
//! - Encoder: `conv_in`, then per level `num_res_blocks[l]` ResNet blocks (attention after each
//!   block at the resolutions of `attn_resolutions`) and a stride-2 downsample except at the last
//!   level; the mid block (ResNet, attention, ResNet); `norm_out`, swish, `conv_out` to
//!   `z_channels`, and the 1×1 `quant_conv`.
//! - LFQ: bit c = z_c > 0, code = Σ bit_c·2^(C−1−c) (channel 0 most significant, z = 0 → bit 0,
//!   i.e. −1); decoding gives ±1 per channel ([`crate::nn::lfq`]).
//! - Decoder: `post_quant_conv`, `conv_in`, the mid block, then levels from the last to the first,
//!   each with `dec_num_res_blocks[l]` ResNet blocks and (for l > 0) a nearest ×2 upsample and a
//!   3×3 conv; `norm_out`, swish, `conv_out` to RGB.
//!
//! Blocks: `Normalize` = GroupNorm(32, eps 1e-6, affine); ResNet = GN → swish → conv3×3 → GN →
//! swish → conv3×3 plus the input (through the 1×1 `nin_shortcut` when channels change);
//! attention = GN → 1×1 q, k, v → one head over all positions, scale C^−½ → 1×1 `proj_out` plus
//! the input. Every convolution has a bias.

use crate::nn;
use indexmap::IndexMap;
use mmada_ir::{ConvGeom, DType, Graph, IrError, NodeId, Result, Role};
use serde::{Deserialize, Serialize};

fn d_ch() -> usize {
    128
}
fn d_rgb() -> usize {
    3
}
fn d_enc_mult() -> Vec<usize> {
    vec![1, 2, 2, 4, 4]
}
fn d_enc_blocks() -> Vec<usize> {
    vec![4, 3, 4, 3, 4]
}
fn d_dec_mult() -> Vec<usize> {
    vec![1, 1, 2, 2, 4]
}
fn d_dec_blocks() -> Vec<usize> {
    vec![4, 4, 3, 4, 3]
}
fn d_attn() -> Vec<usize> {
    vec![5]
}
fn d_res() -> usize {
    256
}
fn d_z() -> usize {
    13
}

/// The architecture of a MAGVIT-v2 tokenizer. The released `config.json` of `showlab/magvitv2`
/// carries no architecture keys, so every field defaults to the released values (spec §7); the
/// keys are ours, named after the official constructor arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MagvitConfig {
    /// Base channels.
    #[serde(default = "d_ch")]
    pub ch: usize,
    /// Image channels in.
    #[serde(default = "d_rgb")]
    pub in_channels: usize,
    /// Image channels out.
    #[serde(default = "d_rgb")]
    pub out_ch: usize,
    /// Encoder channel multipliers per level.
    #[serde(default = "d_enc_mult")]
    pub ch_mult: Vec<usize>,
    /// Encoder ResNet blocks per level.
    #[serde(default = "d_enc_blocks")]
    pub num_res_blocks: Vec<usize>,
    /// Decoder channel multipliers per level.
    #[serde(default = "d_dec_mult")]
    pub dec_ch_mult: Vec<usize>,
    /// Decoder ResNet blocks per level.
    #[serde(default = "d_dec_blocks")]
    pub dec_num_res_blocks: Vec<usize>,
    /// Resolutions (of the constructor's `resolution`, halved per level) that get attention
    /// blocks inside the levels (released: `[5]`, which never occurs).
    #[serde(default = "d_attn")]
    pub attn_resolutions: Vec<usize>,
    /// The constructor's nominal resolution (decides only where attention goes).
    #[serde(default = "d_res")]
    pub resolution: usize,
    /// Latent channels = code bits (codebook 2^z).
    #[serde(default = "d_z")]
    pub z_channels: usize,
}

impl Default for MagvitConfig {
    fn default() -> MagvitConfig {
        MagvitConfig {
            ch: d_ch(),
            in_channels: d_rgb(),
            out_ch: d_rgb(),
            ch_mult: d_enc_mult(),
            num_res_blocks: d_enc_blocks(),
            dec_ch_mult: d_dec_mult(),
            dec_num_res_blocks: d_dec_blocks(),
            attn_resolutions: d_attn(),
            resolution: d_res(),
            z_channels: d_z(),
        }
    }
}

/// GroupNorm groups of `Normalize`.
pub const GROUPS: usize = 32;
/// GroupNorm epsilon of `Normalize`.
pub const GN_EPS: f64 = 1e-6;

impl MagvitConfig {
    /// Codebook size, 2^z.
    pub fn codebook_size(&self) -> usize {
        1 << self.z_channels
    }

    /// Spatial downsampling factor, 2^(levels − 1).
    pub fn factor(&self) -> usize {
        1 << (self.ch_mult.len() - 1)
    }

    /// Checks the configuration; the message names the field.
    pub fn check(&self) -> std::result::Result<(), (String, String)> {
        let f = |k: &str, m: String| Err((k.to_string(), m));
        if self.ch_mult.is_empty() || self.ch_mult.len() != self.num_res_blocks.len() {
            return f(
                "num_res_blocks",
                format!(
                    "{} levels but ch_mult has {}",
                    self.num_res_blocks.len(),
                    self.ch_mult.len()
                ),
            );
        }
        if self.dec_ch_mult.len() != self.dec_num_res_blocks.len()
            || self.dec_ch_mult.len() != self.ch_mult.len()
        {
            return f(
                "dec_num_res_blocks",
                format!(
                    "the decoder needs {} levels like the encoder; dec_ch_mult has {}, dec_num_res_blocks {}",
                    self.ch_mult.len(),
                    self.dec_ch_mult.len(),
                    self.dec_num_res_blocks.len()
                ),
            );
        }
        if self.z_channels == 0 || self.z_channels > 30 {
            return f("z_channels", format!("{} (1..=30)", self.z_channels));
        }
        if self.in_channels == 0 || self.out_ch == 0 {
            return f("in_channels", "image channels must be at least 1".into());
        }
        for (k, v) in [
            ("ch_mult", &self.ch_mult),
            ("dec_ch_mult", &self.dec_ch_mult),
        ] {
            if let Some(m) = v
                .iter()
                .find(|&&m| m == 0 || !(self.ch * m).is_multiple_of(GROUPS))
            {
                return f(
                    k,
                    format!(
                        "ch {} × {m} is not a positive multiple of the {GROUPS} GroupNorm groups",
                        self.ch
                    ),
                );
            }
        }
        if self.ch == 0 || !self.ch.is_multiple_of(GROUPS) {
            return f("ch", format!("{} is not a multiple of {GROUPS}", self.ch));
        }
        Ok(())
    }

    /// Every parameter: official name and shape, encoder then decoder.
    pub fn param_specs(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        let conv = |o: &mut Vec<(String, Vec<usize>)>, n: String, co, ci, k| {
            o.push((format!("{n}.weight"), vec![co, ci, k, k]));
            o.push((format!("{n}.bias"), vec![co]));
        };
        let norm = |o: &mut Vec<(String, Vec<usize>)>, n: String, c| {
            o.push((format!("{n}.weight"), vec![c]));
            o.push((format!("{n}.bias"), vec![c]));
        };
        let res = |o: &mut Vec<(String, Vec<usize>)>, n: &str, ci: usize, co: usize| {
            norm(o, format!("{n}.norm1"), ci);
            conv(o, format!("{n}.conv1"), co, ci, 3);
            norm(o, format!("{n}.norm2"), co);
            conv(o, format!("{n}.conv2"), co, co, 3);
            if ci != co {
                conv(o, format!("{n}.nin_shortcut"), co, ci, 1);
            }
        };
        let attn = |o: &mut Vec<(String, Vec<usize>)>, n: &str, c: usize| {
            norm(o, format!("{n}.norm"), c);
            for p in ["q", "k", "v", "proj_out"] {
                conv(o, format!("{n}.{p}"), c, c, 1);
            }
        };
        let (ch, z, levels) = (self.ch, self.z_channels, self.ch_mult.len());
        // Encoder.
        conv(&mut out, "encoder.conv_in".into(), ch, self.in_channels, 3);
        let mut cin = ch;
        let mut res_now = self.resolution;
        for l in 0..levels {
            let cout = ch * self.ch_mult[l];
            for b in 0..self.num_res_blocks[l] {
                res(&mut out, &format!("encoder.down.{l}.block.{b}"), cin, cout);
                cin = cout;
                if self.attn_resolutions.contains(&res_now) {
                    attn(&mut out, &format!("encoder.down.{l}.attn.{b}"), cin);
                }
            }
            if l + 1 != levels {
                conv(
                    &mut out,
                    format!("encoder.down.{l}.downsample.conv"),
                    cin,
                    cin,
                    3,
                );
                res_now /= 2;
            }
        }
        res(&mut out, "encoder.mid.block_1", cin, cin);
        attn(&mut out, "encoder.mid.attn_1", cin);
        res(&mut out, "encoder.mid.block_2", cin, cin);
        norm(&mut out, "encoder.norm_out".into(), cin);
        conv(&mut out, "encoder.conv_out".into(), z, cin, 3);
        conv(&mut out, "encoder.quant_conv".into(), z, z, 1);
        // Decoder.
        conv(&mut out, "decoder.post_quant_conv".into(), z, z, 1);
        let mut cin = ch * self.dec_ch_mult[levels - 1];
        let mut res_now = self.resolution >> (levels - 1);
        conv(&mut out, "decoder.conv_in".into(), cin, z, 3);
        res(&mut out, "decoder.mid.block_1", cin, cin);
        attn(&mut out, "decoder.mid.attn_1", cin);
        res(&mut out, "decoder.mid.block_2", cin, cin);
        for l in (0..levels).rev() {
            let cout = ch * self.dec_ch_mult[l];
            for b in 0..self.dec_num_res_blocks[l] {
                res(&mut out, &format!("decoder.up.{l}.block.{b}"), cin, cout);
                cin = cout;
                if self.attn_resolutions.contains(&res_now) {
                    attn(&mut out, &format!("decoder.up.{l}.attn.{b}"), cin);
                }
            }
            if l != 0 {
                conv(
                    &mut out,
                    format!("decoder.up.{l}.upsample.conv"),
                    cin,
                    cin,
                    3,
                );
                res_now *= 2;
            }
        }
        norm(&mut out, "decoder.norm_out".into(), cin);
        conv(&mut out, "decoder.conv_out".into(), self.out_ch, cin, 3);
        out
    }

    /// Number of parameters (released: 95,387,004).
    pub fn num_params(&self) -> usize {
        self.param_specs()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
}

/// Which half of the tokenizer a graph needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    /// `encoder.*`.
    Encoder,
    /// `decoder.*`.
    Decoder,
}

/// Declares the parameters of one half as f32 `Param` inputs.
pub fn declare_params(
    g: &mut Graph,
    cfg: &MagvitConfig,
    half: Half,
) -> Result<IndexMap<String, NodeId>> {
    let prefix = match half {
        Half::Encoder => "encoder.",
        Half::Decoder => "decoder.",
    };
    let mut m = IndexMap::new();
    for (name, shape) in cfg.param_specs() {
        if name.starts_with(prefix) {
            let id = g.add_input(&name, Role::Param, DType::F32, shape)?;
            m.insert(name, id);
        }
    }
    Ok(m)
}

struct Net<'a> {
    p: &'a IndexMap<String, NodeId>,
}

impl Net<'_> {
    fn w(&self, name: &str) -> Result<NodeId> {
        self.p.get(name).copied().ok_or_else(|| IrError::Input {
            name: name.into(),
            msg: "parameter not declared".into(),
        })
    }

    /// Convolution with bias; `k` 3 pads 1 on every side, `k` 1 pads nothing.
    fn conv(&self, g: &mut Graph, x: NodeId, name: &str, k: usize) -> Result<NodeId> {
        let pad = k / 2;
        self.conv_geom(
            g,
            x,
            name,
            ConvGeom {
                stride: [1, 1],
                padding: [pad; 4],
                groups: 1,
            },
        )
    }

    fn conv_geom(&self, g: &mut Graph, x: NodeId, name: &str, geom: ConvGeom) -> Result<NodeId> {
        let y = g.conv2d(x, self.w(&format!("{name}.weight"))?, geom)?;
        let b = self.w(&format!("{name}.bias"))?;
        let c = g.try_node(b)?.shape.0[0];
        let b = g.reshape(b, [1, c, 1, 1])?;
        g.add2(y, b)
    }

    fn norm(&self, g: &mut Graph, x: NodeId, name: &str) -> Result<NodeId> {
        let gamma = self.w(&format!("{name}.weight"))?;
        let beta = self.w(&format!("{name}.bias"))?;
        nn::group_norm(g, x, gamma, beta, GROUPS, GN_EPS)
    }

    fn norm_swish(&self, g: &mut Graph, x: NodeId, name: &str) -> Result<NodeId> {
        let h = self.norm(g, x, name)?;
        g.silu(h)
    }

    fn res(&self, g: &mut Graph, x: NodeId, n: &str) -> Result<NodeId> {
        let h = self.norm_swish(g, x, &format!("{n}.norm1"))?;
        let h = self.conv(g, h, &format!("{n}.conv1"), 3)?;
        let h = self.norm_swish(g, h, &format!("{n}.norm2"))?;
        let h = self.conv(g, h, &format!("{n}.conv2"), 3)?;
        let short = format!("{n}.nin_shortcut");
        let s = if self.p.contains_key(&format!("{short}.weight")) {
            self.conv(g, x, &short, 1)?
        } else {
            x
        };
        g.add2(s, h)
    }

    fn attn(&self, g: &mut Graph, x: NodeId, n: &str) -> Result<NodeId> {
        let s = g.try_node(x)?.shape.clone();
        let (b, c, h, w) = (s.0[0], s.0[1], s.0[2], s.0[3]);
        let hn = self.norm(g, x, &format!("{n}.norm"))?;
        // [B, C, H, W] → [B, 1, HW, C]: one head over all positions.
        let heads = |g: &mut Graph, y: NodeId| -> Result<NodeId> {
            let y = g.reshape(y, [b, c, h * w])?;
            let y = g.permute(y, &[0, 2, 1])?;
            g.reshape(y, [b, 1, h * w, c])
        };
        let q = self.conv(g, hn, &format!("{n}.q"), 1)?;
        let k = self.conv(g, hn, &format!("{n}.k"), 1)?;
        let v = self.conv(g, hn, &format!("{n}.v"), 1)?;
        let (q, k, v) = (heads(g, q)?, heads(g, k)?, heads(g, v)?);
        let a = nn::attention(g, q, k, v, None, 1.0 / (c as f64).sqrt())?;
        let a = g.reshape(a, [b, h * w, c])?;
        let a = g.permute(a, &[0, 2, 1])?;
        let a = g.reshape(a, [b, c, h, w])?;
        let o = self.conv(g, a, &format!("{n}.proj_out"), 1)?;
        g.add2(x, o)
    }

    fn mid(&self, g: &mut Graph, x: NodeId, n: &str) -> Result<NodeId> {
        let h = self.res(g, x, &format!("{n}.block_1"))?;
        let h = self.attn(g, h, &format!("{n}.attn_1"))?;
        self.res(g, h, &format!("{n}.block_2"))
    }
}

fn check_cfg(cfg: &MagvitConfig) -> Result<()> {
    cfg.check().map_err(|(field, msg)| IrError::Input {
        name: format!("magvit config field '{field}'"),
        msg,
    })
}

/// The encoder's latent `z` (after `quant_conv`, before quantisation) of `pixels [B, 3, H, W]`
/// in [−1, 1]; H and W must be multiples of [`MagvitConfig::factor`].
pub fn encode(
    g: &mut Graph,
    cfg: &MagvitConfig,
    params: &IndexMap<String, NodeId>,
    pixels: NodeId,
) -> Result<NodeId> {
    check_cfg(cfg)?;
    let s = g.try_node(pixels)?.shape.clone();
    let f = cfg.factor();
    if s.rank() != 4
        || s.0[1] != cfg.in_channels
        || !s.0[2].is_multiple_of(f)
        || !s.0[3].is_multiple_of(f)
    {
        return Err(IrError::Input {
            name: "pixels".into(),
            msg: format!(
                "needs [B, {}, H, W] with H and W multiples of {f}, got {s}",
                cfg.in_channels
            ),
        });
    }
    let net = Net { p: params };
    let levels = cfg.ch_mult.len();
    let mut h = net.conv(g, pixels, "encoder.conv_in", 3)?;
    for l in 0..levels {
        for b in 0..cfg.num_res_blocks[l] {
            h = net.res(g, h, &format!("encoder.down.{l}.block.{b}"))?;
            let a = format!("encoder.down.{l}.attn.{b}");
            if params.contains_key(&format!("{a}.norm.weight")) {
                h = net.attn(g, h, &a)?;
            }
        }
        if l + 1 != levels {
            // Zero pad right and bottom by one, 3×3 stride 2 without padding.
            let geom = ConvGeom {
                stride: [2, 2],
                padding: [0, 1, 0, 1],
                groups: 1,
            };
            h = net.conv_geom(g, h, &format!("encoder.down.{l}.downsample.conv"), geom)?;
        }
    }
    h = net.mid(g, h, "encoder.mid")?;
    h = net.norm_swish(g, h, "encoder.norm_out")?;
    h = net.conv(g, h, "encoder.conv_out", 3)?;
    net.conv(g, h, "encoder.quant_conv", 1)
}

/// The decoder's image `[B, out_ch, H, W]` (before clamping) of a ±1 latent `q [B, z, h, w]`.
pub fn decode(
    g: &mut Graph,
    cfg: &MagvitConfig,
    params: &IndexMap<String, NodeId>,
    q: NodeId,
) -> Result<NodeId> {
    check_cfg(cfg)?;
    let net = Net { p: params };
    let levels = cfg.ch_mult.len();
    let mut h = net.conv(g, q, "decoder.post_quant_conv", 1)?;
    h = net.conv(g, h, "decoder.conv_in", 3)?;
    h = net.mid(g, h, "decoder.mid")?;
    for l in (0..levels).rev() {
        for b in 0..cfg.dec_num_res_blocks[l] {
            h = net.res(g, h, &format!("decoder.up.{l}.block.{b}"))?;
            let a = format!("decoder.up.{l}.attn.{b}");
            if params.contains_key(&format!("{a}.norm.weight")) {
                h = net.attn(g, h, &a)?;
            }
        }
        if l != 0 {
            h = g.upsample_nearest2x(h)?;
            h = net.conv(g, h, &format!("decoder.up.{l}.upsample.conv"), 3)?;
        }
    }
    h = net.norm_swish(g, h, "decoder.norm_out")?;
    net.conv(g, h, "decoder.conv_out", 3)
}

/// The encode graph: `pixels` f32 `[B, 3, H, W]` → outputs `z` (f32 `[B, z, H/f, W/f]`) and
/// `codes` (i64 `[B, (H/f)·(W/f)]`, raster order).
pub fn encode_graph(
    cfg: &MagvitConfig,
    batch: usize,
    height: usize,
    width: usize,
) -> Result<Graph> {
    let mut g = Graph::new();
    let params = declare_params(&mut g, cfg, Half::Encoder)?;
    let x = g.input(
        "pixels",
        DType::F32,
        [batch, cfg.in_channels, height, width],
    )?;
    let z = encode(&mut g, cfg, &params, x)?;
    let codes = nn::lfq_codes(&mut g, z)?;
    g.set_output("z", z)?;
    g.set_output("codes", codes)?;
    Ok(g)
}

/// The decode graph: `codes` i64 `[B, h·w]` → output `pixels` f32 `[B, 3, h·f, w·f]`
/// (before clamping to [−1, 1]).
pub fn decode_graph(cfg: &MagvitConfig, batch: usize, h: usize, w: usize) -> Result<Graph> {
    let mut g = Graph::new();
    let params = declare_params(&mut g, cfg, Half::Decoder)?;
    let codes = g.input("codes", DType::I64, [batch, h * w])?;
    let q = nn::lfq_decode(&mut g, codes, cfg.z_channels, h, w)?;
    let y = decode(&mut g, cfg, &params, q)?;
    g.set_output("pixels", y)?;
    Ok(g)
}

/// Mean over every element, as a scalar.
fn mean_all(g: &mut Graph, x: NodeId) -> Result<NodeId> {
    let s = g.try_node(x)?.shape.clone();
    let axes: Vec<i64> = (0..s.rank() as i64).collect();
    let sum = g.reduce(mmada_ir::ReduceOp::Sum, x, &axes, false)?;
    g.binary_scalar(mmada_ir::BinaryOp::Div, sum, s.numel().max(1) as f64)
}

/// β of the commitment term and the multipliers of the quantiser's two training terms (the
/// official `LFQuantizer` defaults, spec §7).
pub const COMMIT_BETA: f64 = 0.25;
/// Multiplier of the commitment term.
pub const COMMIT_MULTIPLIER: f64 = 0.1;
/// Multiplier of the entropy term.
pub const ENTROPY_MULTIPLIER: f64 = 0.1;

/// The quantiser in training (spec §7, as the official `LFQuantizer.forward`): per position and
/// channel, `q = ±1` (z > 0 → +1) passed straight through (`q = z + stop(q − z)`); the
/// commitment term `mean((stop(q) − z)²) + β·mean((q − stop(z))²)`; and the entropy term
/// `mean H(p) − mean_c H(mean_n p)`, where `p = softmax(−(z − 1)², −(z + 1)²) = σ(4z)` is each
/// bit's probability of +1 (low per-position entropy: confident bits; high entropy of the mean:
/// bits used evenly). Returns (q, commitment, entropy), the last two unscaled.
pub fn lfq_train(g: &mut Graph, z: NodeId) -> Result<(NodeId, NodeId, NodeId)> {
    use mmada_ir::{BinaryOp, CompareOp, UnaryOp};
    let s = g.try_node(z)?.shape.clone();
    let (b, c, h, w) = (s.0[0], s.0[1], s.0[2], s.0[3]);
    let dt = g.try_node(z)?.dtype;
    let zero = g.full(dt, 0.0, mmada_ir::Shape::scalar())?;
    let pos = g.compare(CompareOp::Gt, z, zero)?;
    let one = g.full(dt, 1.0, s.clone())?;
    let neg = g.full(dt, -1.0, s.clone())?;
    let hard = g.where_(pos, one, neg)?;
    let diff = g.sub(hard, z)?;
    let diff = g.unary(UnaryOp::StopGradient, diff)?;
    let q = g.add2(z, diff)?;
    let mean_all = |g: &mut Graph, x: NodeId| mean_all(g, x);
    let hard_stop = g.unary(UnaryOp::StopGradient, hard)?;
    let d1 = g.sub(hard_stop, z)?;
    let d1 = g.mul(d1, d1)?;
    let c1 = mean_all(g, d1)?;
    let z_stop = g.unary(UnaryOp::StopGradient, z)?;
    let d2 = g.sub(hard, z_stop)?;
    let d2 = g.mul(d2, d2)?;
    let c2 = mean_all(g, d2)?;
    let c2 = g.binary_scalar(BinaryOp::Mul, c2, COMMIT_BETA)?;
    let commit = g.add2(c1, c2)?;
    // Binary entropy of σ(x) computed from both tails: H = −p ln p − (1 − p) ln(1 − p).
    let entropy_of = |g: &mut Graph, p: NodeId, pc: NodeId| -> Result<NodeId> {
        let lp = g.binary_scalar(BinaryOp::Max, p, 1e-30)?;
        let lp = g.unary(UnaryOp::Log, lp)?;
        let lq = g.binary_scalar(BinaryOp::Max, pc, 1e-30)?;
        let lq = g.unary(UnaryOp::Log, lq)?;
        let a = g.mul(p, lp)?;
        let bq = g.mul(pc, lq)?;
        let sum = g.add2(a, bq)?;
        g.binary_scalar(BinaryOp::Mul, sum, -1.0)
    };
    let x4 = g.binary_scalar(BinaryOp::Mul, z, 4.0)?;
    let p = g.unary(UnaryOp::Sigmoid, x4)?;
    let nx4 = g.binary_scalar(BinaryOp::Mul, z, -4.0)?;
    let pc = g.unary(UnaryOp::Sigmoid, nx4)?;
    let hp = entropy_of(g, p, pc)?;
    let per_position = mean_all(g, hp)?;
    // Mean probability of each channel over all positions of the batch.
    let pm = g.permute(p, &[1, 0, 2, 3])?;
    let pm = g.reshape(pm, [c, b * h * w])?;
    let pm = g.mean(pm, 1, false)?;
    let pmc = g.binary_scalar(BinaryOp::Mul, pm, -1.0)?;
    let pmc = g.binary_scalar(BinaryOp::Add, pmc, 1.0)?;
    let hm = entropy_of(g, pm, pmc)?;
    let of_mean = mean_all(g, hm)?;
    let entropy = g.sub(per_position, of_mean)?;
    Ok((q, commit, entropy))
}

/// The tokenizer's training loss on `pixels [B, C, H, W]`: reconstruction MSE plus 0.1 ×
/// commitment plus 0.1 × entropy (no perceptual or adversarial terms). Outputs `loss`,
/// `recon_loss`, `commit_loss`, `entropy_loss`, `codes`.
pub fn train_loss(
    g: &mut Graph,
    cfg: &MagvitConfig,
    params: &IndexMap<String, NodeId>,
    pixels: NodeId,
) -> Result<NodeId> {
    use mmada_ir::BinaryOp;
    let z = encode(g, cfg, params, pixels)?;
    let codes = nn::lfq_codes(g, z)?;
    let (q, commit, entropy) = lfq_train(g, z)?;
    let y = decode(g, cfg, params, q)?;
    let d = g.sub(y, pixels)?;
    let d2 = g.mul(d, d)?;
    let rec = mean_all(g, d2)?;
    let c = g.binary_scalar(BinaryOp::Mul, commit, COMMIT_MULTIPLIER)?;
    let e = g.binary_scalar(BinaryOp::Mul, entropy, ENTROPY_MULTIPLIER)?;
    let loss = g.add2(rec, c)?;
    let loss = g.add2(loss, e)?;
    g.set_output("loss", loss)?;
    g.set_output("recon_loss", rec)?;
    g.set_output("commit_loss", commit)?;
    g.set_output("entropy_loss", entropy)?;
    g.set_output("codes", codes)?;
    Ok(loss)
}

/// One compiled training step of the tokenizer: [`train_loss`] on `pixels` (f32 `[B, C, H, W]`)
/// and the optimiser of [`crate::train_step::optimizer_step`] over every parameter.
pub fn train_step_graph(
    cfg: &MagvitConfig,
    batch: usize,
    height: usize,
    width: usize,
    h: crate::train_step::StepHyper,
) -> Result<Graph> {
    let mut g = Graph::new();
    let mut params = declare_params(&mut g, cfg, Half::Encoder)?;
    params.extend(declare_params(&mut g, cfg, Half::Decoder)?);
    let x = g.input(
        "pixels",
        DType::F32,
        [batch, cfg.in_channels, height, width],
    )?;
    let loss = train_loss(&mut g, cfg, &params, x)?;
    crate::train_step::optimizer_step(&mut g, &params, loss, h)?;
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_architecture_has_the_spec_parameter_count() {
        // Spec §7: 95,387,004 = encoder 55,439,171 + decoder 39,947,833.
        let cfg = MagvitConfig::default();
        let specs = cfg.param_specs();
        let count = |p: &str| -> usize {
            specs
                .iter()
                .filter(|(n, _)| n.starts_with(p))
                .map(|(_, s)| s.iter().product::<usize>())
                .sum()
        };
        assert_eq!(count("encoder."), 55_439_171);
        assert_eq!(count("decoder."), 39_947_833);
        assert_eq!(cfg.num_params(), 95_387_004);
        assert_eq!((cfg.codebook_size(), cfg.factor()), (8192, 16));
        let names: Vec<&str> = specs.iter().map(|(n, _)| n.as_str()).collect();
        for n in [
            "encoder.down.1.block.0.nin_shortcut.weight",
            "encoder.down.3.downsample.conv.bias",
            "encoder.mid.attn_1.proj_out.weight",
            "decoder.up.4.upsample.conv.weight",
            "decoder.up.3.block.0.nin_shortcut.weight",
            "decoder.up.1.block.3.conv2.weight",
        ] {
            assert!(names.contains(&n), "{n}");
        }
        assert!(!names.contains(&"encoder.down.4.downsample.conv.weight"));
        assert!(!names.contains(&"decoder.up.0.upsample.conv.weight"));
        assert!(!names.iter().any(|n| n.contains(".attn.")));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let mut c = MagvitConfig {
            ch: 48,
            ..MagvitConfig::default()
        };
        assert_eq!(c.check().unwrap_err().0, "ch_mult");
        c.ch = 128;
        c.num_res_blocks.pop();
        assert_eq!(c.check().unwrap_err().0, "num_res_blocks");
        let c = MagvitConfig {
            z_channels: 40,
            ..MagvitConfig::default()
        };
        assert_eq!(c.check().unwrap_err().0, "z_channels");
    }
}
