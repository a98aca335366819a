//! Element types of tensors.
//!
//! Every tensor in the IR has one storage [`DType`]. Arithmetic on f32/f16/bf16 storage is
//! defined in f32 (values are widened on load and rounded to nearest-even on store); f64 is
//! computed in f64 (interpreter only, for gradient checks); integers are exact; `Bool` is stored
//! as one byte (0 or 1).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Storage element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// IEEE binary64. Interpreter-only: used for finite-difference gradient checks; codegen
    /// rejects it.
    F64,
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16 (the top half of an f32).
    BF16,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// Boolean, one byte per element (0 = false, 1 = true).
    Bool,
}

impl DType {
    /// All dtypes, in a stable order.
    pub const ALL: [DType; 7] = [
        DType::F64,
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::I32,
        DType::I64,
        DType::Bool,
    ];

    /// Bytes per element in memory.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I64 => 8,
            DType::Bool => 1,
        }
    }

    /// The most negative finite value of a float dtype (PyTorch's `finfo(dtype).min`): the
    /// bias of a masked attention key. 0 for the other dtypes.
    pub fn lowest(self) -> f64 {
        match self {
            DType::F64 => f64::MIN,
            DType::F32 => f32::MIN as f64,
            // 0xff7f: the largest bf16 below f32::MIN's rounding to −∞.
            DType::BF16 => -3.3895313892515355e38,
            DType::F16 => -65504.0,
            _ => 0.0,
        }
    }

    /// True for f32, f16 and bf16.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
    }

    /// True for i32 and i64.
    pub fn is_int(self) -> bool {
        matches!(self, DType::I32 | DType::I64)
    }

    /// The lower-case name used in specs, dumps and safetensors mapping ("f32", "bf16", ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F64 => "f64",
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::Bool => "bool",
        }
    }

    /// Parses a dtype name as written by [`DType::name`] (also accepts "float32", "int64", ...).
    pub fn parse(s: &str) -> Option<DType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "f64" | "float64" | "double" => DType::F64,
            "f32" | "float32" | "float" => DType::F32,
            "f16" | "float16" | "half" => DType::F16,
            "bf16" | "bfloat16" => DType::BF16,
            "i32" | "int32" => DType::I32,
            "i64" | "int64" | "long" => DType::I64,
            "bool" => DType::Bool,
            _ => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
