//! The CPU that host code is compiled for (recorded in artifacts).

use serde::{Deserialize, Serialize};

/// An LLVM CPU name and feature string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCpu {
    /// LLVM CPU name ("x86-64", "znver4", ...).
    pub name: String,
    /// LLVM feature string ("+avx2,+fma,...").
    pub features: String,
}

impl HostCpu {
    /// Baseline x86-64 (runs on any x86-64 machine).
    pub fn generic() -> HostCpu {
        HostCpu {
            name: "x86-64".into(),
            features: String::new(),
        }
    }

    /// The CPU of this machine.
    #[cfg(feature = "compiler")]
    pub fn native() -> HostCpu {
        crate::llvm::native_cpu()
    }
}
