//! GPU architectures: what `--targets sm_80,sm_90,sm_90a` names.
//!
//! An [`SmArch`] is a compute capability (`major * 10 + minor`) and whether it is the
//! architecture-specific variant (`sm_90a`: wgmma and setmaxnreg, which run only on that exact
//! capability, where plain PTX also runs on every later one).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A CUDA SM architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SmArch {
    /// Compute capability as `major * 10 + minor` (80 for A100, 90 for H100/H200).
    pub capability: u32,
    /// The architecture-specific variant (`a` suffix).
    pub specific: bool,
}

impl SmArch {
    /// A100 (`sm_80`).
    pub const SM80: SmArch = SmArch::new(80);
    /// H100/H200 with portable PTX (`sm_90`).
    pub const SM90: SmArch = SmArch::new(90);
    /// H100/H200 with the architecture-specific features (`sm_90a`: wgmma).
    pub const SM90A: SmArch = SmArch {
        capability: 90,
        specific: true,
    };

    /// The portable architecture of a compute capability.
    pub const fn new(capability: u32) -> SmArch {
        SmArch {
            capability,
            specific: false,
        }
    }

    /// Parses `sm_80`, `sm_90`, `sm_90a` (also `80`, `90a`).
    pub fn parse(text: &str) -> Result<SmArch, String> {
        let t = text.trim();
        let t = t.strip_prefix("sm_").unwrap_or(t);
        let (digits, specific) = match t.strip_suffix('a') {
            Some(d) => (d, true),
            None => (t, false),
        };
        let capability: u32 = digits
            .parse()
            .ok()
            .filter(|c| (50..=199).contains(c))
            .ok_or_else(|| {
                format!("'{text}' is not a GPU architecture (use sm_80, sm_90 or sm_90a)")
            })?;
        if specific && capability < 90 {
            return Err(format!(
                "'{text}': architecture-specific variants exist from sm_90a on"
            ));
        }
        Ok(SmArch {
            capability,
            specific,
        })
    }

    /// Whether code for this architecture runs on a device of compute capability `cc`:
    /// portable PTX on that capability and every later one, the `a` variant only on its own.
    pub fn runs_on(self, cc: u32) -> bool {
        if self.specific {
            cc == self.capability
        } else {
            self.capability <= cc
        }
    }

    /// The LLVM NVPTX CPU name (`sm_90a`).
    pub fn llvm_cpu(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for SmArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sm_{}{}",
            self.capability,
            if self.specific { "a" } else { "" }
        )
    }
}

impl From<SmArch> for String {
    fn from(a: SmArch) -> String {
        a.to_string()
    }
}

impl TryFrom<String> for SmArch {
    type Error = String;
    fn try_from(s: String) -> Result<SmArch, String> {
        SmArch::parse(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::SmArch;

    #[test]
    fn parses_prints_and_orders() {
        for t in ["sm_80", "sm_86", "sm_90", "sm_90a", "sm_100a"] {
            assert_eq!(SmArch::parse(t).unwrap().to_string(), t);
        }
        assert_eq!(SmArch::parse("90a").unwrap(), SmArch::SM90A);
        for bad in ["sm_", "sm_9", "sm_80a", "gfx90a", "sm_90b", ""] {
            assert!(SmArch::parse(bad).is_err(), "{bad}");
        }
        assert!(SmArch::SM80.runs_on(90) && SmArch::SM90.runs_on(90));
        assert!(SmArch::SM90A.runs_on(90) && !SmArch::SM90A.runs_on(100));
        assert!(!SmArch::SM90.runs_on(80));
        let json = serde_json::to_string(&SmArch::SM90A).unwrap();
        assert_eq!(json, "\"sm_90a\"");
        assert!(serde_json::from_str::<SmArch>("\"sm_7\"").is_err());
    }
}
