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
    let (k, v) = crate::tensor_io::FORMAT_METADATA;
    metadata.insert(k.to_string(), serde_json::Value::from(v));
    let idx = Index {
        metadata,
        weight_map,
    };
    let text = serde_json::to_string_pretty(&idx).map_err(|e| err(dir, e.to_string()))?;
    atomic_write(&dir.join(INDEX_FILE), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor_io::{encode_safetensors, safetensors_metadata};
    use mmada_ir::DType;

    fn format_of(bytes: &[u8]) -> Option<String> {
        safetensors_metadata(bytes, Path::new("x"))
            .ok()?
            .get("format")
            .cloned()
    }

    fn tensors() -> IndexMap<String, Tensor> {
        let mut t = IndexMap::new();
        t.insert(
            "a".to_string(),
            Tensor::from_f32([3, 5], (0..15).map(|i| i as f32 * 0.5).collect()).unwrap(),
        );
        t.insert(
            "b".to_string(),
            Tensor::from_f64(DType::BF16, [7], &[1.0, -2.0, 3.5, 0.0, 8.0, -0.25, 1e3]).unwrap(),
        );
        t
    }

    #[test]
    fn every_file_written_carries_the_pt_format_metadata() {
        let bytes = encode_safetensors(&tensors()).unwrap();
        assert_eq!(format_of(&bytes).as_deref(), Some("pt"));
        // Single file and shards (a 40-byte limit puts each tensor in its own shard), and the
        // index; the tensors read back unchanged.
        for limit in [1 << 20, 40] {
            let dir = tempfile::tempdir().unwrap();
            save_dir(dir.path(), &tensors(), limit).unwrap();
            let mut files = 0;
            for e in std::fs::read_dir(dir.path()).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "safetensors") {
                    files += 1;
                    let b = std::fs::read(&p).unwrap();
                    assert_eq!(format_of(&b).as_deref(), Some("pt"), "{}", p.display());
                }
            }
            assert_eq!(files, if limit == 40 { 2 } else { 1 });
            if limit == 40 {
                let idx: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(dir.path().join(INDEX_FILE)).unwrap(),
                )
                .unwrap();
                assert_eq!(idx["metadata"]["format"], "pt");
                assert_eq!(idx["metadata"]["total_size"], 15 * 4 + 7 * 2);
            }
            let back = load_dir(dir.path()).unwrap();
            for (n, t) in tensors() {
                assert_eq!(back[&n].to_le_bytes(), t.to_le_bytes(), "{n}");
                assert_eq!(back[&n].dtype(), t.dtype());
            }
        }
    }
}
