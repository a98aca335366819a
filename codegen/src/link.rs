//! Host object → shared library, with the system C compiler driver (`$CC` or `cc`).
//!
//! Only `mmada compile` links; running an artifact just loads the library.

use crate::CodegenError;
use std::process::Command;

/// Links an object file into a shared library and returns its bytes.
pub fn shared_library(object: &[u8]) -> Result<Vec<u8>, CodegenError> {
    let dir = tempfile::tempdir().map_err(|e| CodegenError::Link(format!("temp dir: {e}")))?;
    let obj = dir.path().join("kernels.o");
    let lib = dir.path().join("kernels.so");
    std::fs::write(&obj, object).map_err(|e| CodegenError::io(&obj, e))?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let out = Command::new(&cc)
        .arg("-shared")
        .arg("-o")
        .arg(&lib)
        .arg(&obj)
        .arg("-lm")
        .output()
        .map_err(|e| {
            CodegenError::Link(format!(
                "could not run the C compiler '{cc}' ({e}); install gcc or set CC"
            ))
        })?;
    if !out.status.success() {
        return Err(CodegenError::Link(format!(
            "{cc} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    std::fs::read(&lib).map_err(|e| CodegenError::io(&lib, e))
}
