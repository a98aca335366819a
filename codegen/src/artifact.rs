//! The artifact file: everything needed to run a compiled graph, in one file, with no MLIR.
//!
//! Layout (little-endian):
//! ```text
//! b"MMADAART" | u32 format version | u64 manifest length | manifest (JSON) | sections… | sha256
//! ```
//! The trailing SHA-256 covers every byte before it, so truncation and alteration are detected
//! before anything is parsed; each section also carries its own hash in the manifest.
//! Sections: per entry `graph.<entry>.source.json` (the graph as written, for `--reference`) and
//! `graph.<entry>.planned.json` (after the passes); `program.json` (the entries over one buffer
//! table, [`crate::program::Program`]), `constants.bin`, `kernels.kir.json`, `host.so` (when
//! built), `ptx.sm_XX` (one per GPU target).

use crate::host_cpu::HostCpu;
use crate::ptxas::PtxasKernelInfo;
use crate::template::{Choices, TemplateUse};
use crate::{CodegenError, SmArch};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// File magic.
pub const MAGIC: &[u8; 8] = b"MMADAART";
/// Current file format version: 2 since entries (several graphs over one buffer table), one
/// launch type and kernel templates (version 1 held one graph).
pub const FORMAT_VERSION: u32 = 2;

/// Where a section lives in the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionInfo {
    /// Section name.
    pub name: String,
    /// Offset from the start of the section area.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// SHA-256 of the section bytes (hex).
    pub sha256: String,
}

/// A kernel and what ptxas said about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// Symbol name.
    pub name: String,
    /// Blocks per launch.
    pub grid: u64,
    /// Threads per block.
    pub block: u32,
    /// The template and configuration it was built from.
    #[serde(default)]
    pub template: Option<TemplateUse>,
    /// ptxas reports per architecture (empty when ptxas was not available at compile time).
    #[serde(default)]
    pub ptxas: Vec<(SmArch, PtxasKernelInfo)>,
}

/// One entry of an artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryInfo {
    /// Entry name.
    pub name: String,
    /// SHA-256 of its source graph encoding (hex).
    pub graph_sha256: String,
}

/// Versions and contents of an artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always "mmada-artifact".
    pub format: String,
    /// mmada version that wrote it.
    pub mmada_version: String,
    /// LLVM/MLIR major version used.
    pub llvm_version: String,
    /// Name of the compiled spec.
    pub name: String,
    /// The entries (graphs), in order.
    pub entries: Vec<EntryInfo>,
    /// CPU the host code targets (None: no host code).
    pub host_cpu: Option<HostCpu>,
    /// GPU architectures with PTX.
    pub gpu_archs: Vec<SmArch>,
    /// PTX ISA feature used.
    pub ptx_features: String,
    /// The knob settings the kernels were built with (defaults where absent).
    pub choices: Choices,
    /// Kernels.
    pub kernels: Vec<KernelInfo>,
    /// Sections, in file order.
    pub sections: Vec<SectionInfo>,
}

/// An artifact in memory.
#[derive(Clone, Debug)]
pub struct Artifact {
    /// The manifest (its `sections` list is rebuilt on write).
    pub manifest: Manifest,
    /// Section bytes by name, in file order.
    pub sections: IndexMap<String, Vec<u8>>,
}

fn bad(path: &str, msg: impl Into<String>) -> CodegenError {
    CodegenError::Artifact {
        path: path.to_string(),
        msg: msg.into(),
    }
}

impl Artifact {
    /// A section's bytes, or an error naming it.
    pub fn section(&self, name: &str) -> Result<&[u8], CodegenError> {
        self.sections
            .get(name)
            .map(|v| v.as_slice())
            .ok_or_else(|| bad("<memory>", format!("has no section '{name}'")))
    }

    /// A section as UTF-8 text.
    pub fn section_str(&self, name: &str) -> Result<&str, CodegenError> {
        std::str::from_utf8(self.section(name)?)
            .map_err(|_| bad("<memory>", format!("section '{name}' is not UTF-8")))
    }

    /// Serialises to bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodegenError> {
        let mut manifest = self.manifest.clone();
        manifest.sections.clear();
        let mut offset = 0u64;
        for (name, data) in &self.sections {
            manifest.sections.push(SectionInfo {
                name: name.clone(),
                offset,
                len: data.len() as u64,
                sha256: hex::encode(Sha256::digest(data)),
            });
            offset += data.len() as u64;
        }
        let mjson = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| bad("<memory>", format!("manifest encoding: {e}")))?;
        let mut out = Vec::with_capacity(mjson.len() + offset as usize + 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(mjson.len() as u64).to_le_bytes());
        out.extend_from_slice(&mjson);
        for data in self.sections.values() {
            out.extend_from_slice(data);
        }
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        Ok(out)
    }

    /// Parses bytes read from `path` (used in error messages).
    pub fn from_bytes(bytes: &[u8], path: &str) -> Result<Artifact, CodegenError> {
        const HEADER: usize = 8 + 4 + 8;
        if bytes.len() < 8 || &bytes[..8] != MAGIC {
            return Err(bad(path, "not an mmada artifact (bad magic bytes)"));
        }
        if bytes.len() < HEADER + 32 {
            return Err(bad(path, format!("truncated ({} bytes)", bytes.len())));
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version < FORMAT_VERSION {
            return Err(bad(
                path,
                format!(
                    "format version {version} was written by an older mmada; this one reads \
                     version {FORMAT_VERSION}: compile it again with `mmada compile`"
                ),
            ));
        }
        if version != FORMAT_VERSION {
            return Err(bad(
                path,
                format!(
                    "format version {version} is newer than this mmada reads \
                     ({FORMAT_VERSION}): use a newer mmada"
                ),
            ));
        }
        let (body, trailer) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != trailer {
            return Err(bad(
                path,
                "checksum mismatch: the file is truncated or was altered",
            ));
        }
        let mut len8 = [0u8; 8];
        len8.copy_from_slice(&bytes[12..20]);
        let mlen = u64::from_le_bytes(len8) as usize;
        if HEADER + mlen > body.len() {
            return Err(bad(path, "manifest length exceeds the file"));
        }
        let manifest: Manifest = serde_json::from_slice(&body[HEADER..HEADER + mlen])
            .map_err(|e| bad(path, format!("manifest: {e}")))?;
        if manifest.format != "mmada-artifact" {
            return Err(bad(path, format!("format tag '{}'", manifest.format)));
        }
        let area = &body[HEADER + mlen..];
        let mut sections = IndexMap::new();
        for s in &manifest.sections {
            let end = s.offset.saturating_add(s.len);
            if end > area.len() as u64 {
                return Err(bad(
                    path,
                    format!("section '{}' lies outside the file", s.name),
                ));
            }
            let data = &area[s.offset as usize..end as usize];
            if hex::encode(Sha256::digest(data)) != s.sha256 {
                return Err(bad(
                    path,
                    format!("section '{}' fails its checksum", s.name),
                ));
            }
            sections.insert(s.name.clone(), data.to_vec());
        }
        Ok(Artifact { manifest, sections })
    }

    /// Writes the artifact atomically (temporary file, fsync, rename); a path that is a device
    /// or a FIFO (`-o /dev/null`) is written in place, so that it is never replaced by a
    /// regular file.
    pub fn write(&self, path: &Path) -> Result<(), CodegenError> {
        let bytes = self.to_bytes()?;
        if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
            use std::io::Write;
            return std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|mut f| f.write_all(&bytes))
                .map_err(|e| CodegenError::io(path, e));
        }
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| CodegenError::io(dir, e))?;
        use std::io::Write;
        tmp.write_all(&bytes)
            .map_err(|e| CodegenError::io(path, e))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| CodegenError::io(path, e))?;
        tmp.persist(path)
            .map_err(|e| CodegenError::io(path, e.error))?;
        Ok(())
    }

    /// Reads and validates an artifact file.
    pub fn read(path: &Path) -> Result<Artifact, CodegenError> {
        let bytes = std::fs::read(path).map_err(|e| CodegenError::io(path, e))?;
        Artifact::from_bytes(&bytes, &path.display().to_string())
    }
}
