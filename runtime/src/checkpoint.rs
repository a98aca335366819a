//! Hugging Face style checkpoint directories: `model.safetensors`, or shards listed by
//! `model.safetensors.index.json` (`{"metadata": {"total_size": N}, "weight_map": {name: file}}`).
//! Loading checks that every mapped tensor is in its shard and that shards hold nothing
//! unmapped; saving shards by size and writes every file atomically.

use crate::tensor_io::{atomic_write, encode_safetensors, read_safetensors};
use crate::RuntimeError;
use indexmap::IndexMap;
use mmada_ir::Tensor;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The single-file weight name.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The shard index name.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

#[derive(Serialize, Deserialize)]
struct Index {
    #[serde(default)]
    metadata: IndexMap<String, serde_json::Value>,
    weight_map: IndexMap<String, String>,
}

fn err(path: &Path, msg: impl Into<String>) -> RuntimeError {
    RuntimeError::TensorFile {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

/// Loads every weight of a checkpoint directory (single file or sharded), in file order.
pub fn load_dir(dir: &Path) -> Result<IndexMap<String, Tensor>, RuntimeError> {
    let index = dir.join(INDEX_FILE);
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| RuntimeError::Io {
            path: index.display().to_string(),
            source: e,
        })?;
        let idx: Index = serde_json::from_str(&text).map_err(|e| err(&index, e.to_string()))?;
        let mut shards: IndexMap<String, Vec<String>> = IndexMap::new();
        for (name, file) in &idx.weight_map {
            if file.contains('/') || file.contains("..") {
                return Err(err(
                    &index,
                    format!("shard name '{file}' for '{name}' is not a plain file name"),
                ));
            }
            shards.entry(file.clone()).or_default().push(name.clone());
        }
        let mut out = IndexMap::new();
        for (file, names) in &shards {
            let path = dir.join(file);
            let mut ts = read_safetensors(&path)?;
            for n in names {
                let t = ts.shift_remove(n).ok_or_else(|| {
                    err(
                        &path,
                        format!(
                            "tensor '{n}' is listed in {INDEX_FILE} but missing from this shard"
                        ),
                    )
                })?;
                out.insert(n.clone(), t);
            }
            if let Some((extra, _)) = ts.first() {
                return Err(err(
                    &path,
                    format!("tensor '{extra}' is in the shard but not in {INDEX_FILE}"),
                ));
            }
        }
        return Ok(out);
    }
    let single = dir.join(SINGLE_FILE);
    if single.is_file() {
        return read_safetensors(&single);
    }
    Err(err(
        dir,
        format!("no {SINGLE_FILE} or {INDEX_FILE} in this directory"),
    ))
}

/// Saves weights into `dir` (which must exist): one `model.safetensors` when they fit in
/// `max_shard_bytes`, else numbered shards plus the index. Each file is written atomically.
pub fn save_dir(
    dir: &Path,
    tensors: &IndexMap<String, Tensor>,
    max_shard_bytes: u64,
) -> Result<(), RuntimeError> {
    let total: u64 = tensors
        .values()
        .map(|t| (t.numel() * t.dtype().size_bytes()) as u64)
        .sum();
    if total <= max_shard_bytes {
        return atomic_write(&dir.join(SINGLE_FILE), &encode_safetensors(tensors)?);
    }
    let mut groups: Vec<IndexMap<String, Tensor>> = vec![IndexMap::new()];
    let mut size = 0u64;
    for (n, t) in tensors {
        let b = (t.numel() * t.dtype().size_bytes()) as u64;
        if size > 0 && size + b > max_shard_bytes {
            groups.push(IndexMap::new());
            size = 0;
        }
        size += b;
        if let Some(last) = groups.last_mut() {
            last.insert(n.clone(), t.clone());
        }
    }
    let count = groups.len();
    let mut weight_map = IndexMap::new();
    for (i, g) in groups.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, count);
        atomic_write(&dir.join(&file), &encode_safetensors(g)?)?;
        for n in g.keys() {
            weight_map.insert(n.clone(), file.clone());
        }
    }
    let mut metadata = IndexMap::new();
    metadata.insert("total_size".to_string(), serde_json::Value::from(total));
    let idx = Index {
        metadata,
        weight_map,
    };
    let text = serde_json::to_string_pretty(&idx).map_err(|e| err(dir, e.to_string()))?;
    atomic_write(&dir.join(INDEX_FILE), text.as_bytes())
}
