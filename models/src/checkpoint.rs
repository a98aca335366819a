//! Model checkpoints in the Hugging Face layout: `config.json` with the official field names
//! and safetensors weights with the official tensor names (single file or sharded), stored in
//! f32, bf16 or f16 and converted to f32 on load.

use crate::config::LladaConfig;
use crate::llada::param_specs;
use crate::ModelsError;
use indexmap::IndexMap;
use mmada_ir::{DType, Tensor};
use mmada_runtime::checkpoint::{load_dir, save_dir};
use mmada_runtime::tensor_io::atomic_write;
use std::path::Path;

/// Loads `config.json` and the weights of a checkpoint directory, checking every tensor name,
/// shape and dtype against the architecture; weights are returned in f32.
pub fn load_model(dir: &Path) -> Result<(LladaConfig, IndexMap<String, Tensor>), ModelsError> {
    let cfg = LladaConfig::read(&dir.join("config.json"))?;
    let mut raw = load_dir(dir)?;
    let p = dir.display().to_string();
    let bad = |tensor: &str, msg: String| ModelsError::Tensor {
        path: p.clone(),
        tensor: tensor.to_string(),
        msg,
    };
    let mut out = IndexMap::new();
    for spec in param_specs(&cfg) {
        let t = raw
            .shift_remove(&spec.name)
            .ok_or_else(|| bad(&spec.name, "missing from the checkpoint".into()))?;
        if t.shape().0 != spec.shape {
            return Err(bad(
                &spec.name,
                format!(
                    "shape {} but the config implies {:?}",
                    t.shape(),
                    spec.shape
                ),
            ));
        }
        let t = match t.dtype() {
            DType::F32 => t,
            DType::BF16 | DType::F16 | DType::F64 => {
                Tensor::from_f32(t.shape().clone(), t.to_f32_vec())
                    .map_err(|e| bad(&spec.name, e.to_string()))?
            }
            other => {
                return Err(bad(
                    &spec.name,
                    format!("dtype {other} (expected f32, bf16 or f16)"),
                ))
            }
        };
        out.insert(spec.name, t);
    }
    if let Some((extra, _)) = raw.first() {
        return Err(bad(extra, "is not a parameter of this architecture".into()));
    }
    Ok((cfg, out))
}

/// Converts f32 weights to the storage dtype.
pub fn to_storage(
    weights: &IndexMap<String, Tensor>,
    dtype: DType,
) -> Result<IndexMap<String, Tensor>, mmada_ir::IrError> {
    weights
        .iter()
        .map(|(n, t)| {
            let v = t.to_f64_vec();
            Ok((n.clone(), Tensor::from_f64(dtype, t.shape().clone(), &v)?))
        })
        .collect()
}

/// Writes `config.json` (every official field, `torch_dtype` = `dtype`) and the weights (in
/// `dtype`, sharded above `max_shard_bytes`, each file with the `format: pt` metadata) into an
/// existing directory; every file is written atomically. Loading what this wrote and saving it
/// again in the same dtype gives the same tensor bytes and config fields.
pub fn save_model(
    dir: &Path,
    cfg: &LladaConfig,
    weights: &IndexMap<String, Tensor>,
    dtype: DType,
    max_shard_bytes: u64,
) -> Result<(), ModelsError> {
    let stored = to_storage(weights, dtype).map_err(|e| ModelsError::Tensor {
        path: dir.display().to_string(),
        tensor: "*".into(),
        msg: e.to_string(),
    })?;
    save_dir(dir, &stored, max_shard_bytes)?;
    atomic_write(
        &dir.join("config.json"),
        cfg.stored_as(dtype).to_json().as_bytes(),
    )?;
    Ok(())
}

/// Initial weights of a model: parameter `k` (checkpoint order) is
/// [`mmada_runtime::init::init_tensor`] with stream `first_stream + k` (normals × `std`; norm
/// weights are ones).
pub fn init_weights(
    cfg: &LladaConfig,
    seed: i64,
    first_stream: u32,
    std: f32,
) -> indexmap::IndexMap<String, mmada_ir::Tensor> {
    let mut out = indexmap::IndexMap::new();
    for (k, p) in crate::llada::param_specs(cfg).into_iter().enumerate() {
        let shape = mmada_ir::Shape(p.shape.clone());
        let stream = first_stream + k as u32;
        if let Some(t) =
            mmada_runtime::init::init_tensor(&shape, mmada_ir::Role::Param, seed, stream, std)
        {
            out.insert(p.name, t);
        }
    }
    out
}

/// Removes the tensor `name` from `weights` (read from `path`), checks that it has `shape` and
/// a float dtype, and returns it as f32; the errors name the file and the tensor.
pub fn take_f32(
    weights: &mut IndexMap<String, Tensor>,
    name: &str,
    shape: &[usize],
    path: &str,
) -> Result<Tensor, ModelsError> {
    let bad = |msg: String| ModelsError::Tensor {
        path: path.to_string(),
        tensor: name.to_string(),
        msg,
    };
    let t = weights
        .shift_remove(name)
        .ok_or_else(|| bad("missing from the weights".into()))?;
    if t.shape().0 != shape {
        return Err(bad(format!(
            "shape {} but the config implies {shape:?}",
            t.shape()
        )));
    }
    if !t.dtype().is_float() {
        return Err(bad(format!("dtype {} is not a float", t.dtype())));
    }
    if t.dtype() == DType::F32 {
        return Ok(t);
    }
    Tensor::from_f32(t.shape().clone(), t.to_f32_vec()).map_err(|e| bad(e.to_string()))
}
