//! Compiled forward passes: logits of token ids for a checkpoint.

use crate::checkpoint::load_model;
use crate::config::LladaConfig;
use crate::llada::forward_graph;
use crate::ModelsError;
use indexmap::IndexMap;
use mmada_codegen::artifact::Artifact;
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::compile::{compile, CompileOptions, PtxCheck};
use mmada_ir::{DType, Tensor};
use mmada_runtime::{open_artifact, Executor, Target};
use std::path::Path;

/// Checks `input_ids` (integer `[B, L]`, every id inside the embedding rows) and converts to i64.
pub fn check_ids(cfg: &LladaConfig, ids: &Tensor) -> Result<Tensor, ModelsError> {
    if !ids.dtype().is_int() || ids.shape().rank() != 2 {
        return Err(ModelsError::Input(format!(
            "input_ids must be an integer tensor [batch, length], got {}{}",
            ids.dtype(),
            ids.shape()
        )));
    }
    let v = ids.to_i64_vec();
    let rows = cfg.rows() as i64;
    if let Some((i, &bad)) = v.iter().enumerate().find(|(_, &x)| x < 0 || x >= rows) {
        let l = ids.shape().0[1];
        return Err(ModelsError::Input(format!(
            "input_ids[{}, {}] = {bad} is outside the {rows} embedding rows",
            i / l,
            i % l
        )));
    }
    Ok(Tensor::from_i64(ids.shape().clone(), v)?)
}

/// Compiles the forward graph of `cfg` for one input shape.
pub fn compile_forward(
    cfg: &LladaConfig,
    batch: usize,
    seq: usize,
    with_mask: bool,
    backend: BackendOptions,
) -> Result<Artifact, ModelsError> {
    let g = forward_graph(cfg, batch, seq, with_mask)?;
    Ok(compile(
        &g,
        &CompileOptions {
            name: format!("logits_b{batch}_l{seq}"),
            backend,
            ptx_check: PtxCheck::Skip,
            ..CompileOptions::default()
        },
    )?)
}

/// An executor holding a model's weights, ready to compute logits for one input shape.
pub struct LogitsRunner {
    /// The model configuration.
    pub cfg: LladaConfig,
    exe: Box<dyn Executor>,
    with_mask: bool,
}

impl LogitsRunner {
    /// Compiles the forward pass for `[batch, seq]` ids and uploads the weights.
    pub fn new(
        cfg: LladaConfig,
        weights: &IndexMap<String, Tensor>,
        batch: usize,
        seq: usize,
        with_mask: bool,
        target: Target,
        backend: BackendOptions,
    ) -> Result<LogitsRunner, ModelsError> {
        let art = compile_forward(&cfg, batch, seq, with_mask, backend)?;
        let mut exe = open_artifact(art, target)?;
        for (n, t) in weights {
            exe.set_input(n, t)?;
        }
        Ok(LogitsRunner {
            cfg,
            exe,
            with_mask,
        })
    }

    /// Logits `[B, L, rows]` (f32) of `ids`, with the key mask when compiled with one.
    pub fn logits(&mut self, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor, ModelsError> {
        let ids = check_ids(&self.cfg, ids)?;
        let mut ins = IndexMap::new();
        ins.insert("input_ids".to_string(), ids.clone());
        match (mask, self.with_mask) {
            (Some(m), true) => {
                if m.shape() != ids.shape() {
                    return Err(ModelsError::Input(format!(
                        "attention_mask has shape {}, input_ids {}",
                        m.shape(),
                        ids.shape()
                    )));
                }
                let b = Tensor::from_f64(DType::Bool, m.shape().clone(), &m.to_f64_vec())?;
                ins.insert("attention_mask".to_string(), b);
            }
            (None, false) => {}
            _ => {
                return Err(ModelsError::Input(
                    "the runner was compiled for a different masking mode".into(),
                ))
            }
        }
        let mut out = self.exe.run(&ins)?;
        out.shift_remove("logits")
            .ok_or_else(|| ModelsError::Input("the graph produced no logits".into()))
    }
}

/// Logits of a checkpoint directory for `ids` (and an optional key mask), compiled and run on
/// `target`.
pub fn logits_from_checkpoint(
    dir: &Path,
    ids: &Tensor,
    mask: Option<&Tensor>,
    target: Target,
    backend: BackendOptions,
) -> Result<Tensor, ModelsError> {
    let (cfg, weights) = load_model(dir)?;
    let ids = check_ids(&cfg, ids)?;
    let (b, l) = (ids.shape().0[0], ids.shape().0[1]);
    let mut r = LogitsRunner::new(cfg, &weights, b, l, mask.is_some(), target, backend)?;
    r.logits(&ids, mask)
}
