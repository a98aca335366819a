//! Host tensors: the values the reference interpreter computes with, and the unit of exchange
//! between the runtime, checkpoints and the CLI.

use crate::{DType, IrError, Result, Shape};
use half::{bf16, f16};

/// Dense row-major element storage, one variant per [`DType`].
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// f64 values.
    F64(Vec<f64>),
    /// f32 values.
    F32(Vec<f32>),
    /// f16 values.
    F16(Vec<f16>),
    /// bf16 values.
    BF16(Vec<bf16>),
    /// i32 values.
    I32(Vec<i32>),
    /// i64 values.
    I64(Vec<i64>),
    /// bool values.
    Bool(Vec<bool>),
}

impl Data {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Data::F64(v) => v.len(),
            Data::F32(v) => v.len(),
            Data::F16(v) => v.len(),
            Data::BF16(v) => v.len(),
            Data::I32(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::Bool(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dtype of this storage.
    pub fn dtype(&self) -> DType {
        match self {
            Data::F64(_) => DType::F64,
            Data::F32(_) => DType::F32,
            Data::F16(_) => DType::F16,
            Data::BF16(_) => DType::BF16,
            Data::I32(_) => DType::I32,
            Data::I64(_) => DType::I64,
            Data::Bool(_) => DType::Bool,
        }
    }
}

/// A host tensor: dtype, shape and dense data.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Shape,
    data: Data,
}

impl Tensor {
    /// Builds a tensor, checking that the data length matches the shape.
    pub fn new(shape: impl Into<Shape>, data: Data) -> Result<Tensor> {
        let shape = shape.into();
        if shape.numel() != data.len() {
            return Err(IrError::Tensor(format!(
                "shape {shape} needs {} elements, data has {}",
                shape.numel(),
                data.len()
            )));
        }
        Ok(Tensor { shape, data })
    }

    /// An f32 tensor.
    pub fn from_f32(shape: impl Into<Shape>, v: Vec<f32>) -> Result<Tensor> {
        Tensor::new(shape, Data::F32(v))
    }

    /// An f64 tensor.
    pub fn from_f64_vec(shape: impl Into<Shape>, v: Vec<f64>) -> Result<Tensor> {
        Tensor::new(shape, Data::F64(v))
    }

    /// An i64 tensor.
    pub fn from_i64(shape: impl Into<Shape>, v: Vec<i64>) -> Result<Tensor> {
        Tensor::new(shape, Data::I64(v))
    }

    /// A tensor of `dtype` whose elements are `values` rounded (floats: to nearest even; ints:
    /// truncated toward zero; bool: nonzero).
    pub fn from_f64(dtype: DType, shape: impl Into<Shape>, values: &[f64]) -> Result<Tensor> {
        let data = match dtype {
            DType::F64 => Data::F64(values.to_vec()),
            DType::F32 => Data::F32(values.iter().map(|&v| v as f32).collect()),
            DType::F16 => Data::F16(values.iter().map(|&v| f16::from_f32(v as f32)).collect()),
            DType::BF16 => Data::BF16(values.iter().map(|&v| bf16::from_f32(v as f32)).collect()),
            DType::I32 => Data::I32(values.iter().map(|&v| v as i32).collect()),
            DType::I64 => Data::I64(values.iter().map(|&v| v as i64).collect()),
            DType::Bool => Data::Bool(values.iter().map(|&v| v != 0.0).collect()),
        };
        Tensor::new(shape, data)
    }

    /// A tensor of zeros.
    pub fn zeros(dtype: DType, shape: impl Into<Shape>) -> Tensor {
        let shape = shape.into();
        let n = shape.numel();
        let data = match dtype {
            DType::F64 => Data::F64(vec![0.0; n]),
            DType::F32 => Data::F32(vec![0.0; n]),
            DType::F16 => Data::F16(vec![f16::ZERO; n]),
            DType::BF16 => Data::BF16(vec![bf16::ZERO; n]),
            DType::I32 => Data::I32(vec![0; n]),
            DType::I64 => Data::I64(vec![0; n]),
            DType::Bool => Data::Bool(vec![false; n]),
        };
        Tensor { shape, data }
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The dtype.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// The storage.
    pub fn data(&self) -> &Data {
        &self.data
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// Same data, new shape with the same number of elements.
    pub fn reshaped(mut self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.numel() != self.shape.numel() {
            return Err(IrError::Tensor(format!(
                "cannot reshape {} to {shape}",
                self.shape
            )));
        }
        self.shape = shape;
        Ok(self)
    }

    /// Element `i` widened to f64 (bool as 0/1).
    pub fn get_f64(&self, i: usize) -> f64 {
        match &self.data {
            Data::F64(v) => v[i],
            Data::F32(v) => v[i] as f64,
            Data::F16(v) => v[i].to_f64(),
            Data::BF16(v) => v[i].to_f64(),
            Data::I32(v) => v[i] as f64,
            Data::I64(v) => v[i] as f64,
            Data::Bool(v) => v[i] as u8 as f64,
        }
    }

    /// All elements widened to f64.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        (0..self.numel()).map(|i| self.get_f64(i)).collect()
    }

    /// All elements as f32 (floats widened exactly; ints converted).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            Data::F32(v) => v.clone(),
            Data::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Data::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
            _ => self.to_f64_vec().into_iter().map(|x| x as f32).collect(),
        }
    }

    /// All elements as i64 (floats truncated toward zero; bool as 0/1).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        match &self.data {
            Data::I32(v) => v.iter().map(|&x| x as i64).collect(),
            Data::I64(v) => v.clone(),
            Data::Bool(v) => v.iter().map(|&x| x as i64).collect(),
            _ => self.to_f64_vec().into_iter().map(|x| x as i64).collect(),
        }
    }

    /// All elements as bools (nonzero is true).
    pub fn to_bool_vec(&self) -> Vec<bool> {
        match &self.data {
            Data::Bool(v) => v.clone(),
            _ => self.to_f64_vec().into_iter().map(|x| x != 0.0).collect(),
        }
    }

    /// Little-endian bytes of the storage (bool as one byte 0/1).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.numel() * self.dtype().size_bytes());
        match &self.data {
            Data::F64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::F32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::F16(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::BF16(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::I32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::I64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::Bool(v) => v.iter().for_each(|&x| out.push(x as u8)),
        }
        out
    }

    /// Decodes little-endian bytes of `dtype` into a tensor of `shape`.
    pub fn from_le_bytes(dtype: DType, shape: impl Into<Shape>, bytes: &[u8]) -> Result<Tensor> {
        let shape = shape.into();
        let sz = dtype.size_bytes();
        if bytes.len() != shape.numel() * sz {
            return Err(IrError::Tensor(format!(
                "{dtype}{shape} needs {} bytes, got {}",
                shape.numel() * sz,
                bytes.len()
            )));
        }
        let chunks = bytes.chunks_exact(sz);
        let data = match dtype {
            DType::F64 => Data::F64(
                chunks
                    .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            ),
            DType::F32 => Data::F32(
                chunks
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            DType::F16 => Data::F16(chunks.map(|c| f16::from_le_bytes([c[0], c[1]])).collect()),
            DType::BF16 => Data::BF16(chunks.map(|c| bf16::from_le_bytes([c[0], c[1]])).collect()),
            DType::I32 => Data::I32(
                chunks
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            DType::I64 => Data::I64(
                chunks
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            ),
            DType::Bool => {
                let mut v = Vec::with_capacity(bytes.len());
                for (i, &b) in bytes.iter().enumerate() {
                    match b {
                        0 => v.push(false),
                        1 => v.push(true),
                        _ => {
                            return Err(IrError::Tensor(format!(
                                "bool element {i} has byte value {b} (must be 0 or 1)"
                            )))
                        }
                    }
                }
                Data::Bool(v)
            }
        };
        Tensor::new(shape, data)
    }
}

/// Largest relative error `|a-b| / max(|b|, floor)` between two tensors of equal shape, with a
/// floor so that values near zero are compared absolutely. Returns `f64::INFINITY` on shape
/// mismatch, when exactly one side is NaN, and when the values differ and either is infinite
/// (1 against +∞, +∞ against −∞: there `|a-b| / |b|` is ∞/∞, a NaN that a plain maximum drops).
pub fn max_rel_error(actual: &Tensor, expected: &Tensor, floor: f64) -> f64 {
    if actual.shape() != expected.shape() {
        return f64::INFINITY;
    }
    let mut worst: f64 = 0.0;
    for i in 0..actual.numel() {
        let a = actual.get_f64(i);
        let e = expected.get_f64(i);
        if a.is_nan() || e.is_nan() {
            if a.is_nan() != e.is_nan() {
                return f64::INFINITY;
            }
            continue;
        }
        if a == e {
            continue;
        }
        if a.is_infinite() || e.is_infinite() {
            return f64::INFINITY;
        }
        let err = (a - e).abs() / e.abs().max(floor);
        worst = worst.max(err);
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_error_sees_infinities_and_nans() {
        let t = |v: &[f32]| Tensor::from_f32([v.len()], v.to_vec()).unwrap();
        let inf = f32::INFINITY;
        // Each pair differs; the old code returned 0 for the first two (∞/∞ is NaN, dropped
        // by the maximum).
        for (a, b) in [
            (1.0, inf),
            (inf, -inf),
            (inf, 1.0),
            (-inf, 0.0),
            (f32::NAN, 2.0),
            (2.0, f32::NAN),
        ] {
            assert_eq!(
                max_rel_error(&t(&[0.5, a]), &t(&[0.5, b]), 1e-6),
                f64::INFINITY,
                "{a} vs {b}"
            );
        }
        for v in [inf, -inf, f32::NAN, 0.0] {
            assert_eq!(
                max_rel_error(&t(&[v]), &t(&[v]), 1e-6),
                0.0,
                "{v} vs itself"
            );
        }
        let e = max_rel_error(&t(&[1.0, 2.0]), &t(&[1.0, 2.5]), 1e-6);
        assert!((e - 0.2).abs() < 1e-12, "{e}");
        assert_eq!(
            max_rel_error(&t(&[1.0]), &t(&[1.0, 1.0]), 1e-6),
            f64::INFINITY
        );
    }

    #[test]
    fn bytes_roundtrip_every_dtype() {
        for dt in DType::ALL {
            let vals: Vec<f64> = (0..7).map(|i| (i % 2) as f64 * (i as f64 - 2.0)).collect();
            let t = Tensor::from_f64(dt, [7], &vals).unwrap();
            let back = Tensor::from_le_bytes(dt, [7], &t.to_le_bytes()).unwrap();
            assert_eq!(t, back, "{dt}");
        }
    }

    #[test]
    fn wrong_lengths_are_errors() {
        assert!(Tensor::from_f32([2, 3], vec![0.0; 5]).is_err());
        assert!(Tensor::from_le_bytes(DType::F32, [2], &[0u8; 7]).is_err());
        assert!(Tensor::from_le_bytes(DType::Bool, [1], &[2u8]).is_err());
    }
}
