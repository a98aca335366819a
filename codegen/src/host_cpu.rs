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
        let (name, features) = crate::llvm::native_cpu();
        HostCpu { name, features }
    }
}

impl HostCpu {
    /// f32 values per vector register this CPU is assumed to have: 16 with AVX-512, 8 with
    /// AVX, 4 otherwise (SSE2 is part of x86-64).
    pub fn f32_lanes(&self) -> u64 {
        let has = |f: &str| {
            self.features
                .split(',')
                .any(|x| x.strip_prefix('+') == Some(f))
        };
        if has("avx512f") {
            16
        } else if has("avx") || has("avx2") {
            8
        } else {
            4
        }
    }
}
