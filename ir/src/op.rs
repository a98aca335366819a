//! The op set of the IR and the shape/dtype rule of each op.
//!
//! Ops are a closed enum: the verifier, the interpreter, the passes and codegen all `match`
//! exhaustively, so adding a variant fails to compile until every layer handles it.
//! Broadcasting is explicit (a [`Op::Broadcast`] node); binary ops take equal shapes and dtypes.

use crate::error::{render_operands, IrError, Result};
use crate::fused::FusedBody;
use crate::{DType, Shape};
use serde::{Deserialize, Serialize};

/// What a graph input is for. Parameters and state can be updated in place by a compiled step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Ordinary data fed on each call.
    Data,
    /// A trainable parameter.
    Param,
    /// Optimiser state or another persistent buffer.
    State,
}

/// Literal tensor values of a [`Op::Constant`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Literal {
    /// Floating-point values (stored as f64, rounded to the node dtype).
    Float(Vec<f64>),
    /// Integer values.
    Int(Vec<i64>),
    /// Boolean values.
    Bool(Vec<bool>),
}

impl Literal {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Literal::Float(v) => v.len(),
            Literal::Int(v) => v.len(),
            Literal::Bool(v) => v.len(),
        }
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value `i` as f64.
    pub fn get_f64(&self, i: usize) -> f64 {
        match self {
            Literal::Float(v) => v[i],
            Literal::Int(v) => v[i] as f64,
            Literal::Bool(v) => v[i] as u8 as f64,
        }
    }

    /// Value `i` as i64 (floats truncated).
    pub fn get_i64(&self, i: usize) -> i64 {
        match self {
            Literal::Float(v) => v[i] as i64,
            Literal::Int(v) => v[i],
            Literal::Bool(v) => v[i] as i64,
        }
    }
}

/// Elementwise ops of one operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnaryOp {
    /// -x
    Neg,
    /// |x|
    Abs,
    /// e^x
    Exp,
    /// ln x
    Log,
    /// sin x
    Sin,
    /// cos x
    Cos,
    /// √x
    Sqrt,
    /// 1/√x
    Rsqrt,
    /// 1/x
    Recip,
    /// ⌊x⌋
    Floor,
    /// 1/(1+e^-x)
    Sigmoid,
    /// logical not (bool only)
    Not,
}

impl UnaryOp {
    /// All unary ops.
    pub const ALL: [UnaryOp; 12] = [
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sin,
        UnaryOp::Cos,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Recip,
        UnaryOp::Floor,
        UnaryOp::Sigmoid,
        UnaryOp::Not,
    ];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Abs => "abs",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Recip => "recip",
            UnaryOp::Floor => "floor",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Not => "not",
        }
    }

    /// Which operand dtypes the op accepts.
    pub fn accepts(self, dt: DType) -> bool {
        match self {
            UnaryOp::Neg | UnaryOp::Abs => dt.is_float() || dt.is_int(),
            UnaryOp::Not => dt == DType::Bool,
            _ => dt.is_float(),
        }
    }
}

/// Elementwise ops of two operands of equal dtype and shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BinaryOp {
    /// a + b
    Add,
    /// a - b
    Sub,
    /// a · b
    Mul,
    /// a / b (integers: truncated toward zero; division by zero is an error in the interpreter)
    Div,
    /// max(a, b) (NaN-propagating for floats)
    Max,
    /// min(a, b) (NaN-propagating for floats)
    Min,
    /// logical and (bool only)
    And,
    /// logical or (bool only)
    Or,
}

impl BinaryOp {
    /// All binary ops.
    pub const ALL: [BinaryOp; 8] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::And,
        BinaryOp::Or,
    ];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Max => "max",
            BinaryOp::Min => "min",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
        }
    }

    /// Which operand dtype the op accepts.
    pub fn accepts(self, dt: DType) -> bool {
        match self {
            BinaryOp::And | BinaryOp::Or => dt == DType::Bool,
            _ => dt.is_float() || dt.is_int(),
        }
    }
}

/// Comparisons; the result is `Bool`. Float comparisons with NaN are false except `Ne`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompareOp {
    /// a < b
    Lt,
    /// a <= b
    Le,
    /// a > b
    Gt,
    /// a >= b
    Ge,
    /// a == b
    Eq,
    /// a != b
    Ne,
}

impl CompareOp {
    /// All comparisons.
    pub const ALL: [CompareOp; 6] = [
        CompareOp::Lt,
        CompareOp::Le,
        CompareOp::Gt,
        CompareOp::Ge,
        CompareOp::Eq,
        CompareOp::Ne,
    ];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
        }
    }
}

/// Reductions over a set of axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReduceOp {
    /// Σ (floats accumulate in at least f32; the interpreter uses f64)
    Sum,
    /// max (NaN-propagating)
    Max,
    /// min (NaN-propagating)
    Min,
}

impl ReduceOp {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
        }
    }
}

/// One IR operation. Operand count and meaning are given per variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Op {
    /// A graph input (0 operands); its dtype and shape are the node's.
    Input {
        /// Name callers bind data to.
        name: String,
        /// Data, parameter or state.
        role: Role,
    },
    /// Literal values (0 operands), row-major, as many as the node shape has elements.
    Constant {
        /// The values.
        value: Literal,
    },
    /// Elementwise unary op (1 operand).
    Unary {
        /// Which op.
        op: UnaryOp,
    },
    /// Elementwise binary op (2 operands of equal dtype and shape).
    Binary {
        /// Which op.
        op: BinaryOp,
    },
    /// Elementwise comparison (2 operands of equal dtype and shape) giving `Bool`.
    Compare {
        /// Which comparison.
        op: CompareOp,
    },
    /// `cond ? a : b` (3 operands: bool condition, then a and b of equal dtype; all equal shape).
    Where,
    /// Conversion to another dtype (1 operand). Float→int truncates toward zero; →bool is `!= 0`.
    Cast {
        /// Target dtype.
        to: DType,
    },
    /// Reduction over `axes` (1 operand). With `keep_dims` the reduced axes stay as size 1.
    Reduce {
        /// Which reduction.
        op: ReduceOp,
        /// Axes to reduce, ascending, unique.
        axes: Vec<usize>,
        /// Keep reduced axes as extent 1.
        keep_dims: bool,
    },
    /// Batched matrix product `[..., m, k] × [..., k, n] → [..., m, n]` (2 operands of equal
    /// float dtype; batch dims must be equal; accumulates in f32 or wider).
    MatMul,
    /// View with a new shape of equal element count (1 operand).
    Reshape {
        /// Target shape.
        shape: Shape,
    },
    /// Axis permutation (1 operand): output dim `d` is input dim `perm[d]`.
    Permute {
        /// The permutation.
        perm: Vec<usize>,
    },
    /// NumPy broadcast to `shape` (1 operand, right-aligned, size-1 dims stretch).
    Broadcast {
        /// Target shape.
        shape: Shape,
    },
    /// A fused group of ops created by a pass. Operands are the body's arguments in order.
    /// Semantics are exactly those of the body (see [`FusedBody`]).
    Fused {
        /// The fused subgraph.
        body: Box<FusedBody>,
    },
}

impl Op {
    /// Short op name for dumps and errors.
    pub fn name(&self) -> String {
        match self {
            Op::Input { .. } => "input".into(),
            Op::Constant { .. } => "constant".into(),
            Op::Unary { op } => op.name().into(),
            Op::Binary { op } => op.name().into(),
            Op::Compare { op } => op.name().into(),
            Op::Where => "where".into(),
            Op::Cast { to } => format!("cast<{to}>"),
            Op::Reduce { op, .. } => format!("reduce_{}", op.name()),
            Op::MatMul => "matmul".into(),
            Op::Reshape { .. } => "reshape".into(),
            Op::Permute { .. } => "permute".into(),
            Op::Broadcast { .. } => "broadcast".into(),
            Op::Fused { .. } => "fused".into(),
        }
    }

    /// Number of operands the op takes.
    pub fn arity(&self) -> usize {
        match self {
            Op::Input { .. } | Op::Constant { .. } => 0,
            Op::Unary { .. }
            | Op::Cast { .. }
            | Op::Reduce { .. }
            | Op::Reshape { .. }
            | Op::Permute { .. }
            | Op::Broadcast { .. } => 1,
            Op::Binary { .. } | Op::Compare { .. } | Op::MatMul => 2,
            Op::Where => 3,
            Op::Fused { body } => body.num_args,
        }
    }

    /// True for ops that compute each output element from the same-index elements of their
    /// operands (no data movement): unary, binary, compare, where, cast.
    pub fn is_elementwise(&self) -> bool {
        matches!(
            self,
            Op::Unary { .. } | Op::Binary { .. } | Op::Compare { .. } | Op::Where | Op::Cast { .. }
        )
    }

    /// True for pure views (reshape, permute, broadcast): only the indexing changes.
    pub fn is_movement(&self) -> bool {
        matches!(
            self,
            Op::Reshape { .. } | Op::Permute { .. } | Op::Broadcast { .. }
        )
    }

    /// Infers the output dtype and shape from the operands' dtypes and shapes, or explains why
    /// the operands are invalid. `Input` and `Constant` take their type from the node itself and
    /// are handled by the caller.
    pub fn infer(&self, operands: &[(DType, &Shape)]) -> Result<(DType, Shape)> {
        let bad = |msg: String| IrError::BadOperands {
            op: self.name(),
            msg,
            operands: render_operands(operands),
        };
        if operands.len() != self.arity() {
            return Err(bad(format!(
                "expects {} operands, got {}",
                self.arity(),
                operands.len()
            )));
        }
        match self {
            Op::Input { .. } | Op::Constant { .. } => {
                Err(bad("inputs and constants carry their own type".into()))
            }
            Op::Unary { op } => {
                let (dt, s) = operands[0];
                if !op.accepts(dt) {
                    return Err(bad(format!("{} does not accept {dt}", op.name())));
                }
                Ok((dt, s.clone()))
            }
            Op::Binary { op } => {
                let ((da, sa), (db, sb)) = (operands[0], operands[1]);
                if da != db {
                    return Err(bad(format!(
                        "dtypes differ ({da} vs {db}); cast explicitly"
                    )));
                }
                if sa != sb {
                    return Err(bad(format!(
                        "shapes differ ({sa} vs {sb}); broadcast explicitly"
                    )));
                }
                if !op.accepts(da) {
                    return Err(bad(format!("{} does not accept {da}", op.name())));
                }
                Ok((da, sa.clone()))
            }
            Op::Compare { .. } => {
                let ((da, sa), (db, sb)) = (operands[0], operands[1]);
                if da != db || sa != sb {
                    return Err(bad("operands must have equal dtype and shape".into()));
                }
                Ok((DType::Bool, sa.clone()))
            }
            Op::Where => {
                let ((dc, sc), (da, sa), (db, sb)) = (operands[0], operands[1], operands[2]);
                if dc != DType::Bool {
                    return Err(bad(format!("condition must be bool, got {dc}")));
                }
                if da != db {
                    return Err(bad(format!("branch dtypes differ ({da} vs {db})")));
                }
                if sc != sa || sa != sb {
                    return Err(bad("condition and branches must have equal shapes".into()));
                }
                Ok((da, sa.clone()))
            }
            Op::Cast { to } => Ok((*to, operands[0].1.clone())),
            Op::Reduce {
                op,
                axes,
                keep_dims,
            } => {
                let (dt, s) = operands[0];
                if dt == DType::Bool {
                    return Err(bad(format!("reduce_{} does not accept bool", op.name())));
                }
                if axes.is_empty() {
                    return Err(bad("no axes to reduce".into()));
                }
                for w in axes.windows(2) {
                    if w[0] >= w[1] {
                        return Err(bad(format!("axes {axes:?} must be ascending and unique")));
                    }
                }
                if let Some(&a) = axes.iter().find(|&&a| a >= s.rank()) {
                    return Err(bad(format!("axis {a} out of range for rank {}", s.rank())));
                }
                let dims = s
                    .dims()
                    .iter()
                    .enumerate()
                    .filter_map(|(i, &d)| {
                        if axes.contains(&i) {
                            keep_dims.then_some(1)
                        } else {
                            Some(d)
                        }
                    })
                    .collect::<Vec<_>>();
                Ok((dt, Shape(dims)))
            }
            Op::MatMul => {
                let ((da, sa), (db, sb)) = (operands[0], operands[1]);
                if da != db || !da.is_float() {
                    return Err(bad("operands must share one float dtype".into()));
                }
                if sa.rank() < 2 || sa.rank() != sb.rank() {
                    return Err(bad("operands must have equal rank ≥ 2".into()));
                }
                let r = sa.rank();
                if sa.0[..r - 2] != sb.0[..r - 2] {
                    return Err(bad("batch dimensions differ".into()));
                }
                if sa.0[r - 1] != sb.0[r - 2] {
                    return Err(bad(format!(
                        "contraction dims differ ({} vs {})",
                        sa.0[r - 1],
                        sb.0[r - 2]
                    )));
                }
                let mut dims = sa.0.clone();
                dims[r - 1] = sb.0[r - 1];
                Ok((da, Shape(dims)))
            }
            Op::Reshape { shape } => {
                let (dt, s) = operands[0];
                if s.numel() != shape.numel() {
                    return Err(bad(format!(
                        "cannot reshape {s} ({} elements) to {shape} ({} elements)",
                        s.numel(),
                        shape.numel()
                    )));
                }
                Ok((dt, shape.clone()))
            }
            Op::Permute { perm } => {
                let (dt, s) = operands[0];
                let mut seen = vec![false; s.rank()];
                if perm.len() != s.rank() {
                    return Err(bad(format!("permutation {perm:?} has wrong length")));
                }
                for &p in perm {
                    if p >= s.rank() || seen[p] {
                        return Err(bad(format!("{perm:?} is not a permutation")));
                    }
                    seen[p] = true;
                }
                Ok((dt, Shape(perm.iter().map(|&p| s.0[p]).collect())))
            }
            Op::Broadcast { shape } => {
                let (dt, s) = operands[0];
                if !crate::shape::can_broadcast(s, shape) {
                    return Err(bad(format!("{s} cannot broadcast to {shape}")));
                }
                Ok((dt, shape.clone()))
            }
            Op::Fused { body } => {
                body.check_args(operands).map_err(bad)?;
                Ok((body.dtype(), body.shape()))
            }
        }
    }
}
