//! Elementwise op semantics.

use super::eval_err;
use crate::error::Result;
use crate::{BinaryOp, CompareOp, DType, Data, Tensor, UnaryOp};
use half::{bf16, f16};

/// Builds a float tensor of `dtype` from f64 values, rounding once to the storage type (f16
/// and bf16 through f32).
pub(crate) fn float_tensor_f64(dtype: DType, shape: &crate::Shape, v: Vec<f64>) -> Result<Tensor> {
    if dtype == DType::F64 {
        return Tensor::new(shape.clone(), Data::F64(v));
    }
    float_tensor(dtype, shape, v.into_iter().map(|x| x as f32).collect())
}

/// Builds a float tensor of `dtype`, rounding each f32 to the storage type.
pub(crate) fn float_tensor(dtype: DType, shape: &crate::Shape, v: Vec<f32>) -> Result<Tensor> {
    let data = match dtype {
        DType::F64 => Data::F64(v.into_iter().map(|x| x as f64).collect()),
        DType::F32 => Data::F32(v),
        DType::F16 => Data::F16(v.into_iter().map(f16::from_f32).collect()),
        DType::BF16 => Data::BF16(v.into_iter().map(bf16::from_f32).collect()),
        other => return Err(eval_err(format!("{other} is not a float dtype"))),
    };
    Tensor::new(shape.clone(), data)
}

/// Builds an integer tensor of `dtype` from i64 values, wrapping to the storage width.
pub(crate) fn int_tensor(dtype: DType, shape: &crate::Shape, v: Vec<i64>) -> Result<Tensor> {
    let data = match dtype {
        DType::I32 => Data::I32(v.into_iter().map(|x| x as i32).collect()),
        DType::I64 => Data::I64(v),
        other => return Err(eval_err(format!("{other} is not an integer dtype"))),
    };
    Tensor::new(shape.clone(), data)
}

/// f32 reference for a float unary op.
pub fn unary_f32(op: UnaryOp, x: f32) -> f32 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Recip => 1.0 / x,
        UnaryOp::Floor => x.floor(),
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Not => (x == 0.0) as u8 as f32,
        UnaryOp::StopGradient => x,
    }
}

/// f64 reference for a float unary op (used for f64 tensors).
pub fn unary_f64(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Recip => 1.0 / x,
        UnaryOp::Floor => x.floor(),
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Not => (x == 0.0) as u8 as f64,
        UnaryOp::StopGradient => x,
    }
}

pub(super) fn unary(op: UnaryOp, x: &Tensor) -> Result<Tensor> {
    let dt = x.dtype();
    if dt == DType::F64 {
        let v = x
            .to_f64_vec()
            .into_iter()
            .map(|a| unary_f64(op, a))
            .collect();
        return float_tensor_f64(dt, x.shape(), v);
    }
    if dt.is_float() {
        let v = x
            .to_f32_vec()
            .into_iter()
            .map(|a| unary_f32(op, a))
            .collect();
        return float_tensor(dt, x.shape(), v);
    }
    if dt.is_int() {
        let v = x
            .to_i64_vec()
            .into_iter()
            .map(|a| match op {
                UnaryOp::Neg => Ok(a.wrapping_neg()),
                UnaryOp::Abs => Ok(a.wrapping_abs()),
                _ => Err(eval_err(format!("{} on {dt}", op.name()))),
            })
            .collect::<Result<Vec<_>>>()?;
        return int_tensor(dt, x.shape(), v);
    }
    match op {
        UnaryOp::Not => Tensor::new(
            x.shape().clone(),
            Data::Bool(x.to_bool_vec().into_iter().map(|b| !b).collect()),
        ),
        _ => Err(eval_err(format!("{} on bool", op.name()))),
    }
}

/// f32 reference for a float binary op (NaN-propagating max/min).
pub fn binary_f32(op: BinaryOp, a: f32, b: f32) -> f32 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Max => {
            if a.is_nan() || b.is_nan() {
                f32::NAN
            } else {
                a.max(b)
            }
        }
        BinaryOp::Min => {
            if a.is_nan() || b.is_nan() {
                f32::NAN
            } else {
                a.min(b)
            }
        }
        BinaryOp::Rem | BinaryOp::And | BinaryOp::Or => f32::NAN,
    }
}

/// f64 reference for a float binary op.
pub fn binary_f64(op: BinaryOp, a: f64, b: f64) -> f64 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Max if a.is_nan() || b.is_nan() => f64::NAN,
        BinaryOp::Min if a.is_nan() || b.is_nan() => f64::NAN,
        BinaryOp::Max => a.max(b),
        BinaryOp::Min => a.min(b),
        BinaryOp::Rem | BinaryOp::And | BinaryOp::Or => f64::NAN,
    }
}

pub(super) fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let dt = a.dtype();
    if dt == DType::F64 {
        let (va, vb) = (a.to_f64_vec(), b.to_f64_vec());
        let v = va
            .iter()
            .zip(&vb)
            .map(|(&x, &y)| binary_f64(op, x, y))
            .collect();
        return float_tensor_f64(dt, a.shape(), v);
    }
    if dt.is_float() {
        let (va, vb) = (a.to_f32_vec(), b.to_f32_vec());
        let v = va
            .iter()
            .zip(&vb)
            .map(|(&x, &y)| binary_f32(op, x, y))
            .collect();
        return float_tensor(dt, a.shape(), v);
    }
    if dt.is_int() {
        let (va, vb) = (a.to_i64_vec(), b.to_i64_vec());
        let wrap = |x: i64| if dt == DType::I32 { x as i32 as i64 } else { x };
        let mut out = Vec::with_capacity(va.len());
        for (i, (&x, &y)) in va.iter().zip(&vb).enumerate() {
            out.push(wrap(match op {
                BinaryOp::Add => x.wrapping_add(y),
                BinaryOp::Sub => x.wrapping_sub(y),
                BinaryOp::Mul => x.wrapping_mul(y),
                BinaryOp::Div => {
                    if y == 0 {
                        return Err(eval_err(format!("integer division by zero at element {i}")));
                    }
                    x.wrapping_div(y)
                }
                BinaryOp::Max => x.max(y),
                BinaryOp::Min => x.min(y),
                BinaryOp::Rem => {
                    if y == 0 {
                        return Err(eval_err(format!(
                            "integer remainder by zero at element {i}"
                        )));
                    }
                    x.wrapping_rem(y)
                }
                BinaryOp::And | BinaryOp::Or => {
                    return Err(eval_err(format!("{} on {dt}", op.name())))
                }
            }));
        }
        return int_tensor(dt, a.shape(), out);
    }
    let (va, vb) = (a.to_bool_vec(), b.to_bool_vec());
    let v = va
        .iter()
        .zip(&vb)
        .map(|(&x, &y)| match op {
            BinaryOp::And => Ok(x && y),
            BinaryOp::Or => Ok(x || y),
            _ => Err(eval_err(format!("{} on bool", op.name()))),
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::new(a.shape().clone(), Data::Bool(v))
}

pub(super) fn compare(op: CompareOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let cmp = |x: f64, y: f64| match op {
        CompareOp::Lt => x < y,
        CompareOp::Le => x <= y,
        CompareOp::Gt => x > y,
        CompareOp::Ge => x >= y,
        CompareOp::Eq => x == y,
        CompareOp::Ne => x != y,
    };
    let v: Vec<bool> = if a.dtype() == DType::I64 {
        let (va, vb) = (a.to_i64_vec(), b.to_i64_vec());
        va.iter()
            .zip(&vb)
            .map(|(&x, &y)| match op {
                CompareOp::Lt => x < y,
                CompareOp::Le => x <= y,
                CompareOp::Gt => x > y,
                CompareOp::Ge => x >= y,
                CompareOp::Eq => x == y,
                CompareOp::Ne => x != y,
            })
            .collect()
    } else {
        (0..a.numel())
            .map(|i| cmp(a.get_f64(i), b.get_f64(i)))
            .collect()
    };
    Tensor::new(a.shape().clone(), Data::Bool(v))
}

pub(super) fn select(c: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let cv = c.to_bool_vec();
    fn pick<T: Copy>(cv: &[bool], x: &[T], y: &[T]) -> Vec<T> {
        cv.iter()
            .enumerate()
            .map(|(i, &c)| if c { x[i] } else { y[i] })
            .collect()
    }
    let data = match (a.data(), b.data()) {
        (Data::F64(x), Data::F64(y)) => Data::F64(pick(&cv, x, y)),
        (Data::F32(x), Data::F32(y)) => Data::F32(pick(&cv, x, y)),
        (Data::F16(x), Data::F16(y)) => Data::F16(pick(&cv, x, y)),
        (Data::BF16(x), Data::BF16(y)) => Data::BF16(pick(&cv, x, y)),
        (Data::I32(x), Data::I32(y)) => Data::I32(pick(&cv, x, y)),
        (Data::I64(x), Data::I64(y)) => Data::I64(pick(&cv, x, y)),
        (Data::Bool(x), Data::Bool(y)) => Data::Bool(pick(&cv, x, y)),
        _ => return Err(eval_err("where: branch dtypes differ".into())),
    };
    Tensor::new(a.shape().clone(), data)
}

/// Float → integer conversion: truncation toward zero, saturating, NaN → 0.
pub fn f32_to_int(x: f32, to: DType) -> i64 {
    match to {
        DType::I32 => x as i32 as i64,
        _ => x as i64,
    }
}

pub(super) fn cast(x: &Tensor, to: DType) -> Result<Tensor> {
    let from = x.dtype();
    if from == to {
        return Ok(x.clone());
    }
    let shape = x.shape();
    match (from.is_float(), to) {
        (_, DType::Bool) => Tensor::new(shape.clone(), Data::Bool(x.to_bool_vec())),
        (true, DType::F64 | DType::F32 | DType::F16 | DType::BF16) => {
            float_tensor_f64(to, shape, x.to_f64_vec())
        }
        (false, DType::F64) => float_tensor_f64(
            to,
            shape,
            x.to_i64_vec().into_iter().map(|v| v as f64).collect(),
        ),
        (true, DType::I32 | DType::I64) if from == DType::F64 => {
            let v = x.to_f64_vec().into_iter();
            let ints = if to == DType::I32 {
                v.map(|v| v as i32 as i64).collect()
            } else {
                v.map(|v| v as i64).collect()
            };
            int_tensor(to, shape, ints)
        }
        (true, DType::I32 | DType::I64) => int_tensor(
            to,
            shape,
            x.to_f32_vec()
                .into_iter()
                .map(|v| f32_to_int(v, to))
                .collect(),
        ),
        (false, DType::F32 | DType::F16 | DType::BF16) => float_tensor(
            to,
            shape,
            x.to_i64_vec().into_iter().map(|v| v as f32).collect(),
        ),
        (false, DType::I32 | DType::I64) => int_tensor(to, shape, x.to_i64_vec()),
    }
}
