//! Reading and writing named tensors as safetensors files (the format of HF checkpoints).
//! Writes are atomic: temporary file, fsync, rename.

use crate::RuntimeError;
use indexmap::IndexMap;
use mmada_ir::{DType, Tensor};
use safetensors::tensor::{Dtype, TensorView};
use std::path::Path;

fn file_err(path: &Path, msg: impl Into<String>) -> RuntimeError {
    RuntimeError::TensorFile {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

/// Our dtype for a safetensors dtype.
pub fn dtype_from_st(d: Dtype) -> Option<DType> {
    Some(match d {
        Dtype::F64 => DType::F64,
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I32 => DType::I32,
        Dtype::I64 => DType::I64,
        Dtype::BOOL => DType::Bool,
        _ => return None,
    })
}

/// The safetensors dtype for ours.
pub fn dtype_to_st(d: DType) -> Dtype {
    match d {
        DType::F64 => Dtype::F64,
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
        DType::Bool => Dtype::BOOL,
    }
}

/// Decodes safetensors bytes (read from `path`, for messages) into tensors in file order.
pub fn decode_safetensors(
    bytes: &[u8],
    path: &Path,
) -> Result<IndexMap<String, Tensor>, RuntimeError> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| file_err(path, format!("not a valid safetensors file: {e}")))?;
    let mut names: Vec<(usize, String)> = Vec::new();
    let mut out = IndexMap::new();
    for (name, view) in st.tensors() {
        let dt = dtype_from_st(view.dtype()).ok_or_else(|| {
            file_err(
                path,
                format!("tensor '{name}' has unsupported dtype {:?}", view.dtype()),
            )
        })?;
        let t = Tensor::from_le_bytes(dt, view.shape().to_vec(), view.data())
            .map_err(|e| file_err(path, format!("tensor '{name}': {e}")))?;
        let offset = view.data().as_ptr() as usize - bytes.as_ptr() as usize;
        names.push((offset, name.clone()));
        out.insert(name, t);
    }
    names.sort();
    let mut ordered = IndexMap::new();
    for (_, n) in names {
        if let Some(t) = out.shift_remove(&n) {
            ordered.insert(n, t);
        }
    }
    Ok(ordered)
}

/// The `__metadata__` of safetensors bytes (empty when the header has none).
pub fn safetensors_metadata(
    bytes: &[u8],
    path: &Path,
) -> Result<std::collections::BTreeMap<String, String>, RuntimeError> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| file_err(path, format!("not a valid safetensors file: {e}")))?;
    Ok(meta
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default())
}

/// Reads every tensor of a safetensors file.
pub fn read_safetensors(path: &Path) -> Result<IndexMap<String, Tensor>, RuntimeError> {
    let bytes = std::fs::read(path).map_err(|e| RuntimeError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    decode_safetensors(&bytes, path)
}

/// The header metadata of every safetensors file written here: `{"format": "pt"}`, which
/// transformers' loader requires (it reads the tensors as PyTorch's).
pub const FORMAT_METADATA: (&str, &str) = ("format", "pt");

/// Encodes tensors as safetensors bytes, with [`FORMAT_METADATA`] in the header.
pub fn encode_safetensors(tensors: &IndexMap<String, Tensor>) -> Result<Vec<u8>, RuntimeError> {
    let raw: Vec<(String, DType, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.dtype(), t.shape().0.clone(), t.to_le_bytes()))
        .collect();
    let mut views = Vec::with_capacity(raw.len());
    for (n, d, s, b) in &raw {
        let v = TensorView::new(dtype_to_st(*d), s.clone(), b)
            .map_err(|e| file_err(Path::new("<memory>"), format!("tensor '{n}': {e}")))?;
        views.push((n.clone(), v));
    }
    let meta = std::collections::HashMap::from([(
        FORMAT_METADATA.0.to_string(),
        FORMAT_METADATA.1.to_string(),
    )]);
    safetensors::serialize(views, Some(meta))
        .map_err(|e| file_err(Path::new("<memory>"), format!("encoding: {e}")))
}

/// Writes tensors atomically to a safetensors file.
pub fn write_safetensors(
    path: &Path,
    tensors: &IndexMap<String, Tensor>,
) -> Result<(), RuntimeError> {
    let bytes = encode_safetensors(tensors)?;
    atomic_write(path, &bytes)
}

/// Writes a file atomically: temporary file in the same directory, fsync, rename.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), RuntimeError> {
    use std::io::Write;
    let io = |e: std::io::Error| RuntimeError::Io {
        path: path.display().to_string(),
        source: e,
    };
    if is_special_file(path) {
        // `-o /dev/null`, a FIFO: write into it. Renaming a temporary file over it would
        // replace the device node with a regular file.
        return std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|mut f| f.write_all(bytes))
            .map_err(io);
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644));
    }
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// Whether `path` exists and is not a regular file or a directory (a device, a FIFO, a socket):
/// such a path is written in place, never replaced by an atomic rename.
pub fn is_special_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}
