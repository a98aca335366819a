//! Checking PTX with `ptxas` (from the PyPI wheel `nvidia-cuda-nvcc`), which needs no GPU.
//!
//! The binary is found through `$MMADA_PTXAS`, then `ptxas` on `PATH`, then the
//! `.venv-cuda/bin/ptxas` link that `scripts/setup.sh` makes. Its `-v` report gives registers,
//! spills and shared memory per kernel.

use crate::CodegenError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::Command;

/// What ptxas reported for one kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtxasKernelInfo {
    /// Kernel (entry) name.
    pub name: String,
    /// Registers per thread.
    pub registers: u32,
    /// Bytes of spill stores.
    pub spill_stores: u32,
    /// Bytes of spill loads.
    pub spill_loads: u32,
    /// Bytes of static shared memory.
    pub shared_bytes: u32,
}

/// Locates ptxas: `$MMADA_PTXAS`; else `ptxas` on `PATH`; else `.venv-cuda/bin/ptxas` in the
/// current directory or one of its ancestors (where `scripts/setup.sh` links it).
pub fn find_ptxas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MMADA_PTXAS") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(p) = std::env::split_paths(&path)
            .map(|d| d.join("ptxas"))
            .find(|p| p.is_file())
        {
            return Some(p);
        }
    }
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .map(|d| d.join(".venv-cuda/bin/ptxas"))
        .find(|p| p.is_file())
}

/// Assembles `ptx` for `arch` and returns the per-kernel report.
pub fn assemble(
    ptxas: &std::path::Path,
    ptx: &str,
    arch: crate::SmArch,
) -> Result<Vec<PtxasKernelInfo>, CodegenError> {
    let dir = tempfile::tempdir().map_err(|e| CodegenError::io("tempdir", e))?;
    let src = dir.path().join("kernels.ptx");
    let out = dir.path().join("kernels.cubin");
    std::fs::write(&src, ptx).map_err(|e| CodegenError::io(&src, e))?;
    let res = Command::new(ptxas)
        .arg(format!("-arch={arch}"))
        .arg("-v")
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .output()
        .map_err(|e| CodegenError::io(ptxas, e))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    if !res.status.success() {
        return Err(CodegenError::Ptxas {
            arch: arch.to_string(),
            msg: text,
        });
    }
    Ok(parse_report(&text))
}

fn number_before(line: &str, unit: &str) -> u32 {
    line.find(unit)
        .and_then(|i| line[..i].split_whitespace().last())
        .and_then(|w| w.parse().ok())
        .unwrap_or(0)
}

/// Parses the `-v` report of ptxas.
pub fn parse_report(text: &str) -> Vec<PtxasKernelInfo> {
    let mut out: Vec<PtxasKernelInfo> = Vec::new();
    for line in text.lines() {
        if let Some(i) = line.find("Compiling entry function '") {
            let rest = &line[i + "Compiling entry function '".len()..];
            let name = rest.split('\'').next().unwrap_or("").to_string();
            out.push(PtxasKernelInfo {
                name,
                ..Default::default()
            });
        } else if let Some(cur) = out.last_mut() {
            if line.contains("spill stores") {
                cur.spill_stores = number_before(line, "bytes spill stores");
                cur.spill_loads = number_before(line, "bytes spill loads");
            }
            if line.contains("Used") && line.contains("registers") {
                cur.registers = number_before(line, "registers");
                cur.shared_bytes = number_before(line, "bytes smem");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_ptxas_report() {
        let text = "ptxas info    : 0 bytes gmem\nptxas info    : Compiling entry function 'k' for 'sm_90'\nptxas info    : Function properties for k\n    0 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\nptxas info    : Used 14 registers, used 1 barriers, 256 bytes smem\n";
        let r = super::parse_report(text);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].name, "k");
        assert_eq!(r[0].registers, 14);
        assert_eq!(r[0].spill_stores, 8);
        assert_eq!(r[0].spill_loads, 4);
        assert_eq!(r[0].shared_bytes, 256);
    }
}
