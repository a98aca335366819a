//! The LLaDA/MMaDA transformer as an IR graph (spec §1.2), with the official checkpoint tensor
//! names (spec §1.5).
//!
//! Per block: `x += attn_out(attention(rope(q), rope(k), v))` on `RMSNorm_attn(x)`, then
//! `x += ff_out(silu(ff_proj(g)) ⊙ up_proj(g))` on `g = RMSNorm_ff(x)`; finally `ln_f` and the
//! untied head. Attention is bidirectional; an optional key-padding mask adds the f32 minimum
//! to disallowed keys (spec §1.3). Parameters are f32 graph inputs with role `Param`.

use crate::config::LladaConfig;
use crate::nn;
use indexmap::IndexMap;
use mmada_ir::{DType, Graph, NodeId, Result, Role};

/// One parameter: official name and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    /// Checkpoint tensor name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
}

/// The parameters of a model, in checkpoint order.
pub fn param_specs(cfg: &LladaConfig) -> Vec<ParamSpec> {
    let (d, f, v) = (cfg.d_model, cfg.mlp_hidden_size, cfg.rows());
    let p = |name: String, shape: Vec<usize>| ParamSpec { name, shape };
    let mut out = vec![p("model.transformer.wte.weight".into(), vec![v, d])];
    for i in 0..cfg.n_layers {
        let b = format!("model.transformer.blocks.{i}");
        out.push(p(format!("{b}.attn_norm.weight"), vec![d]));
        out.push(p(format!("{b}.q_proj.weight"), vec![d, d]));
        out.push(p(format!("{b}.k_proj.weight"), vec![d, d]));
        out.push(p(format!("{b}.v_proj.weight"), vec![d, d]));
        out.push(p(format!("{b}.attn_out.weight"), vec![d, d]));
        out.push(p(format!("{b}.ff_norm.weight"), vec![d]));
        out.push(p(format!("{b}.ff_proj.weight"), vec![f, d]));
        out.push(p(format!("{b}.up_proj.weight"), vec![f, d]));
        out.push(p(format!("{b}.ff_out.weight"), vec![d, f]));
    }
    out.push(p("model.transformer.ln_f.weight".into(), vec![d]));
    out.push(p("model.transformer.ff_out.weight".into(), vec![v, d]));
    out
}

/// Declares every parameter as a `Param` input of the configuration's dtype (f32 unless
/// built for bf16); returns them by name.
pub fn declare_params(g: &mut Graph, cfg: &LladaConfig) -> Result<IndexMap<String, NodeId>> {
    let mut m = IndexMap::new();
    for p in param_specs(cfg) {
        let id = g.add_input(&p.name, Role::Param, cfg.dtype, p.shape.clone())?;
        m.insert(p.name, id);
    }
    Ok(m)
}

/// Logits `[B, L, rows]` of integer `ids [B, L]` with an optional bool key mask `[B, L]`.
pub fn logits(
    g: &mut Graph,
    cfg: &LladaConfig,
    params: &IndexMap<String, NodeId>,
    ids: NodeId,
    key_mask: Option<NodeId>,
) -> Result<NodeId> {
    forward(g, cfg, params, ids, key_mask, Kv::Own, &mut Vec::new())
}

/// Where attention takes its keys and values from in [`forward`].
#[derive(Clone, Copy, Debug)]
pub enum Kv<'a> {
    /// From the ids themselves (the whole sequence).
    Own,
    /// The ids are the block of a longer sequence that starts at `start` (an i64 scalar
    /// node); each layer's keys and values are its cache (`[B, H, L, hd]`, after RoPE) with the
    /// block's rows replaced by the block's own (spec of Fast-dLLM's dual cache).
    Block {
        /// First position of the block.
        start: NodeId,
        /// Per layer, the cached keys and values.
        caches: &'a [(NodeId, NodeId)],
    },
}

/// The transformer on `ids [B, T]`: logits `[B, T, rows]`. `kv_out` receives each layer's keys
/// and values as attention used them (`[B, H, S, hd]` after RoPE: the sequence's own, or the
/// cache with the block spliced in), for a cache to be filled or updated from.
pub fn forward(
    g: &mut Graph,
    cfg: &LladaConfig,
    params: &IndexMap<String, NodeId>,
    ids: NodeId,
    key_mask: Option<NodeId>,
    kv: Kv,
    kv_out: &mut Vec<(NodeId, NodeId)>,
) -> Result<NodeId> {
    let x = trunk(g, cfg, params, ids, key_mask, kv, kv_out)?;
    head(g, cfg, params, x)
}

/// Looks up a declared parameter.
fn param(params: &IndexMap<String, NodeId>, name: &str) -> Result<NodeId> {
    params
        .get(name)
        .copied()
        .ok_or_else(|| mmada_ir::IrError::Input {
            name: name.into(),
            msg: "parameter not declared".into(),
        })
}

/// The final norm and the output head on hidden states `x [B, T, d]`: logits `[B, T, rows]`.
/// Run on a subset of positions (a sampler's block), it gives those positions' logits of
/// [`forward`] exactly, without the head's cost for the others.
pub fn head(
    g: &mut Graph,
    cfg: &LladaConfig,
    params: &IndexMap<String, NodeId>,
    x: NodeId,
) -> Result<NodeId> {
    let x = nn::rms_norm(
        g,
        x,
        param(params, "model.transformer.ln_f.weight")?,
        cfg.rms_norm_eps,
    )?;
    g.linear(x, param(params, "model.transformer.ff_out.weight")?)
}

/// The embedding and the transformer blocks of [`forward`]: hidden states `[B, T, d]` before
/// the final norm.
pub fn trunk(
    g: &mut Graph,
    cfg: &LladaConfig,
    params: &IndexMap<String, NodeId>,
    ids: NodeId,
    key_mask: Option<NodeId>,
    kv: Kv,
    kv_out: &mut Vec<(NodeId, NodeId)>,
) -> Result<NodeId> {
    let s = g.try_node(ids)?.shape.clone();
    let (b, l) = (s.0[0], s.0[1]);
    let (d, h, hd) = (cfg.d_model, cfg.n_heads, cfg.head_dim());
    let w = |name: &str| param(params, name);
    let start = match kv {
        Kv::Own => None,
        Kv::Block { start, caches } => {
            if caches.len() != cfg.n_layers {
                return Err(mmada_ir::IrError::Input {
                    name: "kv cache".into(),
                    msg: format!(
                        "{} layers cached, the model has {}",
                        caches.len(),
                        cfg.n_layers
                    ),
                });
            }
            Some(start)
        }
    };
    let mut x = g.embedding(w("model.transformer.wte.weight")?, ids)?; // [B, L, d]
    let scale = 1.0 / (hd as f64).sqrt();
    for i in 0..cfg.n_layers {
        let p = |n: &str| format!("model.transformer.blocks.{i}.{n}.weight");
        let hn = nn::rms_norm(g, x, w(&p("attn_norm"))?, cfg.rms_norm_eps)?;
        let heads = |g: &mut Graph, wn: NodeId| -> Result<NodeId> {
            let y = g.linear(hn, wn)?;
            let y = g.reshape(y, [b, l, h, hd])?;
            g.permute(y, &[0, 2, 1, 3])
        };
        let q = heads(g, w(&p("q_proj"))?)?;
        let k = heads(g, w(&p("k_proj"))?)?;
        let v = heads(g, w(&p("v_proj"))?)?;
        let q = nn::rope_from(g, q, cfg.rope_theta, start)?;
        let mut k = nn::rope_from(g, k, cfg.rope_theta, start)?;
        let mut v = v;
        if let (Kv::Block { caches, .. }, Some(st)) = (kv, start) {
            k = splice_block(g, caches[i].0, k, st)?;
            v = splice_block(g, caches[i].1, v, st)?;
        }
        kv_out.push((k, v));
        let a = nn::attention(g, q, k, v, key_mask, scale)?; // [B, H, L, hd]
        let a = g.permute(a, &[0, 2, 1, 3])?;
        let a = g.reshape(a, [b, l, d])?;
        let o = g.linear(a, w(&p("attn_out"))?)?;
        x = g.add2(x, o)?;
        let gn = nn::rms_norm(g, x, w(&p("ff_norm"))?, cfg.rms_norm_eps)?;
        let m = nn::swiglu(
            g,
            gn,
            w(&p("ff_proj"))?,
            w(&p("up_proj"))?,
            w(&p("ff_out"))?,
        )?;
        x = g.add2(x, m)?;
    }
    Ok(x)
}

/// `cache [B, H, L, hd]` with rows `start..start + T` replaced by `block [B, H, T, hd]`
/// (`start` an i64 scalar node; rows outside `0..L` are ignored).
pub fn splice_block(g: &mut Graph, cache: NodeId, block: NodeId, start: NodeId) -> Result<NodeId> {
    let cs = g.try_node(cache)?.shape.clone();
    let t = g.try_node(block)?.shape.0[2];
    let pos = g.iota(DType::I64, cs.clone(), 2)?;
    let st = g.broadcast_to(start, cs.clone())?;
    let rel = g.sub(pos, st)?;
    let zero = g.full(DType::I64, 0.0, cs.clone())?;
    let tt = g.full(DType::I64, t as f64, cs.clone())?;
    let ge = g.compare(mmada_ir::CompareOp::Ge, rel, zero)?;
    let lt = g.compare(mmada_ir::CompareOp::Lt, rel, tt)?;
    let inside = g.binary(mmada_ir::BinaryOp::And, ge, lt)?;
    let idx = g.where_(inside, rel, zero)?;
    let rows = g.gather(block, idx, 2)?;
    g.where_(inside, rows, cache)
}

/// A complete forward graph: parameters, `input_ids` (i64 `[B, L]`), optionally
/// `attention_mask` (bool `[B, L]`), and the output `logits` (`[B, L, rows]`, in the
/// configuration's dtype).
pub fn forward_graph(
    cfg: &LladaConfig,
    batch: usize,
    seq: usize,
    with_mask: bool,
) -> Result<Graph> {
    let mut g = Graph::new();
    let params = declare_params(&mut g, cfg)?;
    let ids = g.input("input_ids", DType::I64, [batch, seq])?;
    let mask = if with_mask {
        Some(g.input("attention_mask", DType::Bool, [batch, seq])?)
    } else {
        None
    };
    let y = logits(&mut g, cfg, &params, ids, mask)?;
    g.set_output("logits", y)?;
    Ok(g)
}
