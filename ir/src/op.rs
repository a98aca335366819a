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
    /// x, through which no gradient flows (PyTorch's `detach`): the max subtracted inside
    /// softmax, whose gradient is exactly zero in exact arithmetic
    StopGradient,
}

impl UnaryOp {
    /// All unary ops.
    pub const ALL: [UnaryOp; 13] = [
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
        UnaryOp::StopGradient,
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
            UnaryOp::StopGradient => "stop_gradient",
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
    /// Remainder of truncated division (integers only; sign of the dividend, like Rust `%`).
    Rem,
    /// logical and (bool only)
    And,
    /// logical or (bool only)
    Or,
}

impl BinaryOp {
    /// All binary ops.
    pub const ALL: [BinaryOp; 9] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::Rem,
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
            BinaryOp::Rem => "rem",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
        }
    }

    /// Which operand dtype the op accepts.
    pub fn accepts(self, dt: DType) -> bool {
        match self {
            BinaryOp::And | BinaryOp::Or => dt == DType::Bool,
            BinaryOp::Rem => dt.is_int(),
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

/// Distribution of an [`Op::Rng`] node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RngDist {
    /// Uniform on [0, 1): the top 24 bits of the first Philox word, times 2^-24.
    Uniform,
    /// Standard normal by Box–Muller from the first two Philox words.
    Normal,
    /// Standard Gumbel, −ln(−ln u) with u in (0, 1).
    Gumbel,
}

/// How an [`Op::Remask`] ranks the candidate positions of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Remasking {
    /// By the softmax probability of the chosen token (LLaDA's `low_confidence`).
    LowConfidence,
    /// By a uniform random number per position (LLaDA's `random`).
    Random,
}

/// Which piece of attention's backward an [`Op::AttentionGrad`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionPart {
    /// The softmax statistics of each query row: operands q, k[, mask]; result f32 (f64 for f64
    /// operands)
    /// `[B, H, T, 2]` holding the row's score maximum `m` and `l = Σ exp(s − m)`.
    Stats,
    /// `dQ`: operands q, k, v, dO, stats, Δ[, mask]; result `[B, H, T, D]`.
    Q,
    /// `dK | dV` packed along the last axis: operands as for `Q`; result `[B, Hk, S, D + Dv]`.
    Kv,
}

/// Convolution geometry shared by [`Op::Conv2d`] and its gradient ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConvGeom {
    /// Stride (height, width).
    pub stride: [usize; 2],
    /// Zero padding (top, bottom, left, right); asymmetric padding is allowed.
    pub padding: [usize; 4],
    /// Channel groups (input and output channels must be divisible by it).
    pub groups: usize,
}

impl ConvGeom {
    /// Whether a convolution of this geometry with a `kh × kw` kernel is an implicit GEMM for
    /// the code generator (stride 1, one group, and not a 1×1 without padding, which is a plain
    /// matrix product); the `conv-to-gemm` pass lowers the others.
    pub fn implicit_gemm(&self, kh: usize, kw: usize) -> bool {
        self.groups == 1 && self.stride == [1, 1] && !(kh == 1 && kw == 1 && self.padding == [0; 4])
    }

    /// Output height and width for an input of `h`×`w` and a `kh`×`kw` kernel, if positive.
    pub fn output_hw(&self, h: usize, w: usize, kh: usize, kw: usize) -> Option<(usize, usize)> {
        let ph = h + self.padding[0] + self.padding[1];
        let pw = w + self.padding[2] + self.padding[3];
        if ph < kh || pw < kw || self.stride[0] == 0 || self.stride[1] == 0 {
            return None;
        }
        Some((
            (ph - kh) / self.stride[0] + 1,
            (pw - kw) / self.stride[1] + 1,
        ))
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
    /// 0, 1, 2, … along `axis`, in the node's dtype and shape (0 operands).
    Iota {
        /// The axis whose index is the value.
        axis: usize,
    },
    /// Counter-based random numbers, f32 (2 operands: i64 scalars `seed` and `offset`).
    /// Element `i` (row-major) is derived from Philox4x32-10 with key = (seed low word, seed
    /// high word) and counter = (low word of offset + i, high word of offset + i, `stream`, 0),
    /// so the same (seed, offset) gives the same bits on every target.
    Rng {
        /// Distribution.
        dist: RngDist,
        /// Third counter word, to separate independent streams drawn with one seed and offset.
        stream: u32,
    },
    /// The window `[start, end)` of each dim (1 operand).
    Slice {
        /// First index per dim.
        start: Vec<usize>,
        /// Exclusive end per dim.
        end: Vec<usize>,
    },
    /// Constant padding (1 operand): `lo[d]` elements before and `hi[d]` after each dim.
    Pad {
        /// Padding before, per dim.
        lo: Vec<usize>,
        /// Padding after, per dim.
        hi: Vec<usize>,
        /// Fill value.
        value: f64,
    },
    /// Concatenation along `axis` (`count` operands of one dtype, equal other dims).
    Concat {
        /// Axis.
        axis: usize,
        /// Number of operands.
        count: usize,
    },
    /// Take along an axis (2 operands: `x`, integer `idx`): result has idx's shape and
    /// `out[p] = x[p with p[axis] = idx[p]]`; other dims of idx and x must be equal.
    /// An index outside `[0, x.shape[axis])` is an error in the interpreter and is clamped by
    /// compiled kernels.
    Gather {
        /// Axis.
        axis: usize,
    },
    /// Scatter-add along an axis (3 operands: `base`, integer `idx`, `src` of idx's shape):
    /// `out = base; out[p with p[axis] = idx[p]] += src[p]` for every position p of src, in
    /// row-major order of p (deterministic).
    ScatterAdd {
        /// Axis.
        axis: usize,
    },
    /// Indices (i64) of the `k` largest values along `axis`, in descending order of value; NaN
    /// counts as largest and ties go to the lower index (1 operand).
    TopK {
        /// How many.
        k: usize,
        /// Axis.
        axis: usize,
    },
    /// Inclusive cumulative sum along `axis` (1 operand); `reverse` sums from the end.
    CumSum {
        /// Axis.
        axis: usize,
        /// Sum from the last element backwards.
        reverse: bool,
    },
    /// Softmax along `axis` (1 float operand): `exp(x − max) / Σ exp(x − max)` over each row,
    /// computed in f64 by the interpreter and in f32 by kernels, rounded once to the dtype (as
    /// PyTorch computes a bf16 softmax in f32). One kernel per row (max, exponentials and
    /// their sum, scaling), where the composite form took three.
    Softmax {
        /// Axis.
        axis: usize,
    },
    /// 2-D convolution (cross-correlation, as in PyTorch) of `x` [N, C, H, W] with `w`
    /// [O, C/groups, KH, KW] (2 operands of one float dtype) → [N, O, OH, OW].
    Conv2d {
        /// Stride, padding, groups.
        geom: ConvGeom,
    },
    /// Gradient of [`Op::Conv2d`] with respect to its input (2 operands: `g` [N, O, OH, OW],
    /// `w`) → [N, C, H, W] with H, W given.
    Conv2dInputGrad {
        /// The forward convolution's geometry.
        geom: ConvGeom,
        /// Input height and width of the forward convolution.
        input_hw: [usize; 2],
    },
    /// Gradient of [`Op::Conv2d`] with respect to its weight (2 operands: `x`, `g`) →
    /// [O, C/groups, KH, KW] with KH, KW given.
    Conv2dWeightGrad {
        /// The forward convolution's geometry.
        geom: ConvGeom,
        /// Kernel height and width.
        kernel_hw: [usize; 2],
    },
    /// The confidence top-k remask of one masked-diffusion text sampler step (spec §6.1), fused:
    /// 8 operands `logits` (f32 `[B, L, V]`), `x` (i64 `[B, L]`, the sequence), and the
    /// scalars `temperature` (f32), `seed`, `offset`, `block_end`, `k` (i64) and `threshold`
    /// (f32); result i64 `[B, L]`, the sequence with the chosen positions committed.
    ///
    /// A position `(b, l)` is a candidate when `x[b, l] == mask_id` and `l < block_end`. For a
    /// candidate, the token is `x̂ = argmax_v(ℓ[v] + τ·G[v])` (ties to the lower id), with `G`
    /// the Gumbel numbers of an `Rng { Gumbel, stream }` node of shape `[B, L, V]` on (seed,
    /// offset); its confidence is `softmax(ℓ)[x̂]` (`LowConfidence`, un-noised logits) or element
    /// `(b, l)` of an `Rng { Uniform, stream + 1 }` node of shape `[B, L]` (`Random`). Non
    /// candidates have confidence −∞. In each row a candidate gets `x̂` when its confidence is
    /// among the `k` highest (ties to the lower position) or above `threshold` (Fast-dLLM's
    /// parallel decoding; a threshold above 1 turns it off); every other position keeps `x`.
    /// [`crate::Graph::remask_unfused`] builds the same computation from primitive ops;
    /// the `fuse_remask` pass recognises it. Kernels stream over V: no probability row is
    /// stored.
    Remask {
        /// The `[MASK]` id.
        mask_id: i64,
        /// Confidence rule.
        remasking: Remasking,
        /// Philox stream of the Gumbel noise (the uniform numbers use `stream + 1`).
        stream: u32,
    },
    /// Bidirectional scaled dot-product attention, fused (spec §1.3): 3 operands `q` `[B, H,
    /// T, D]`, `k` `[B, Hk, S, D]`, `v` `[B, Hk, S, Dv]` of one float dtype, and with `masked`
    /// a 4th, the key mask (bool `[B, S]`, true = attend); result `[B, H, T, Dv]`. Query head
    /// `h` reads key/value head `h / (H / Hk)` (grouped K/V heads; `H` a multiple of `Hk`), and
    /// `T` may differ from `S` (a block of queries against a longer cached K/V). Per row:
    /// `s = (q · kᵀ) · scale`, plus the dtype's minimum at keys the mask disallows (as the
    /// reference's boolean bias), `p = softmax(s)`, `o = p · v`.
    /// [`crate::Graph::attention_unfused`] builds this from primitive ops and *is* the
    /// semantics (the interpreter evaluates it); the `fuse_attention` pass recognises it.
    /// Kernels stream over key blocks with a running maximum and sum: no `[B, H, T, S]`
    /// buffer.
    Attention {
        /// Score scale, usually `1/√D`, rounded to the dtype.
        scale: f64,
        /// Whether the 4th operand, the key mask, is present.
        masked: bool,
    },
    /// A piece of [`Op::Attention`]'s backward in FlashAttention-2's form (see
    /// [`crate::attention_grad`]): the row statistics, then `dQ` per query row and `dK | dV`
    /// per key row, each recomputing the probabilities `p = exp(s − m) / l` from q, k and the
    /// statistics, so no `[B, H, T, S]` buffer exists. `Δ` is f32 `[B, H, T]`, `rowsum(dO ⊙
    /// O)`. Statistics and products are f32 (f64 for f64 operands); `dQ` and `dK | dV` round to q's dtype. At least
    /// one key. [`crate::Graph::attention_grad_unfused`] builds each piece from primitive ops
    /// and is its semantics.
    AttentionGrad {
        /// The forward's score scale.
        scale: f64,
        /// Whether the last operand is the key mask.
        masked: bool,
        /// Which piece.
        part: AttentionPart,
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
            Op::Iota { .. } => "iota".into(),
            Op::Rng { dist, .. } => format!("rng_{}", format!("{dist:?}").to_lowercase()),
            Op::Slice { .. } => "slice".into(),
            Op::Pad { .. } => "pad".into(),
            Op::Concat { .. } => "concat".into(),
            Op::Gather { .. } => "gather".into(),
            Op::ScatterAdd { .. } => "scatter_add".into(),
            Op::TopK { .. } => "topk".into(),
            Op::CumSum { .. } => "cumsum".into(),
            Op::Softmax { .. } => "softmax".into(),
            Op::Conv2d { .. } => "conv2d".into(),
            Op::Conv2dInputGrad { .. } => "conv2d_input_grad".into(),
            Op::Conv2dWeightGrad { .. } => "conv2d_weight_grad".into(),
            Op::Remask { .. } => "remask".into(),
            Op::Attention { .. } => "attention".into(),
            Op::AttentionGrad { part, .. } => match part {
                AttentionPart::Stats => "attention_stats".into(),
                AttentionPart::Q => "attention_grad_q".into(),
                AttentionPart::Kv => "attention_grad_kv".into(),
            },
            Op::Fused { .. } => "fused".into(),
        }
    }

    /// Number of operands the op takes.
    pub fn arity(&self) -> usize {
        match self {
            Op::Input { .. } | Op::Constant { .. } | Op::Iota { .. } => 0,
            Op::Unary { .. }
            | Op::Cast { .. }
            | Op::Reduce { .. }
            | Op::Reshape { .. }
            | Op::Permute { .. }
            | Op::Broadcast { .. }
            | Op::Slice { .. }
            | Op::Pad { .. }
            | Op::TopK { .. }
            | Op::CumSum { .. }
            | Op::Softmax { .. } => 1,
            Op::Binary { .. }
            | Op::Compare { .. }
            | Op::MatMul
            | Op::Rng { .. }
            | Op::Gather { .. }
            | Op::Conv2d { .. }
            | Op::Conv2dInputGrad { .. }
            | Op::Conv2dWeightGrad { .. } => 2,
            Op::Where | Op::ScatterAdd { .. } => 3,
            Op::Remask { .. } => 8,
            Op::Attention { masked, .. } => 3 + *masked as usize,
            Op::AttentionGrad { masked, part, .. } => match part {
                AttentionPart::Stats => 2 + *masked as usize,
                AttentionPart::Q | AttentionPart::Kv => 6 + *masked as usize,
            },
            Op::Concat { count, .. } => *count,
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

    /// True for ops whose every output element is a function of the output index and of
    /// operand elements at computable indices (elementwise, views, slices, padding,
    /// concatenation, gathers, iota, random numbers): these can be inlined into fused kernels.
    pub fn is_index_map(&self) -> bool {
        self.is_elementwise()
            || self.is_movement()
            || matches!(
                self,
                Op::Iota { .. }
                    | Op::Rng { .. }
                    | Op::Slice { .. }
                    | Op::Pad { .. }
                    | Op::Concat { .. }
                    | Op::Gather { .. }
            )
    }

    /// True for ops whose result type is carried by the node rather than inferred from operands:
    /// inputs, constants, iota and random numbers.
    pub fn is_self_typed(&self) -> bool {
        matches!(
            self,
            Op::Input { .. } | Op::Constant { .. } | Op::Iota { .. } | Op::Rng { .. }
        )
    }

    /// Checks a self-typed op (iota, rng) against the node's declared type and its operands.
    pub fn check_self_typed(
        &self,
        dtype: DType,
        shape: &Shape,
        operands: &[(DType, &Shape)],
    ) -> Result<()> {
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
            Op::Iota { axis } => {
                if *axis >= shape.rank() {
                    return Err(bad(format!("axis {axis} out of range for {shape}")));
                }
                if dtype == DType::Bool {
                    return Err(bad("iota of bool".into()));
                }
                Ok(())
            }
            Op::Rng { .. } => {
                for (i, (d, s)) in operands.iter().enumerate() {
                    if *d != DType::I64 || s.numel() != 1 {
                        return Err(bad(format!(
                            "operand {i} (seed, offset) must be an i64 scalar"
                        )));
                    }
                }
                if dtype != DType::F32 {
                    return Err(bad(format!("random numbers are f32, not {dtype}")));
                }
                Ok(())
            }
            _ => Ok(()),
        }
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
            Op::Input { .. } | Op::Constant { .. } | Op::Iota { .. } => {
                Err(bad("inputs, constants and iota carry their own type".into()))
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
            Op::Rng { .. } => Err(bad("rng carries its own shape; use Graph::rng".into())),
            Op::Slice { start, end } => {
                let (dt, s) = operands[0];
                if start.len() != s.rank() || end.len() != s.rank() {
                    return Err(bad("start/end must have one entry per dim".into()));
                }
                let mut dims = Vec::with_capacity(s.rank());
                for d in 0..s.rank() {
                    if start[d] > end[d] || end[d] > s.0[d] {
                        return Err(bad(format!(
                            "window {}..{} out of range for dim {d} of extent {}",
                            start[d], end[d], s.0[d]
                        )));
                    }
                    dims.push(end[d] - start[d]);
                }
                Ok((dt, Shape(dims)))
            }
            Op::Pad { lo, hi, .. } => {
                let (dt, s) = operands[0];
                if lo.len() != s.rank() || hi.len() != s.rank() {
                    return Err(bad("lo/hi must have one entry per dim".into()));
                }
                Ok((
                    dt,
                    Shape((0..s.rank()).map(|d| lo[d] + s.0[d] + hi[d]).collect()),
                ))
            }
            Op::Concat { axis, count } => {
                if *count == 0 {
                    return Err(bad("nothing to concatenate".into()));
                }
                let (dt, s0) = operands[0];
                if *axis >= s0.rank() {
                    return Err(bad(format!("axis {axis} out of range")));
                }
                let mut dims = s0.0.clone();
                dims[*axis] = 0;
                for (d, s) in operands {
                    if *d != dt || s.rank() != s0.rank() {
                        return Err(bad("operands must share dtype and rank".into()));
                    }
                    for k in 0..s.rank() {
                        if k != *axis && s.0[k] != s0.0[k] {
                            return Err(bad(format!("dim {k} differs between operands")));
                        }
                    }
                    dims[*axis] += s.0[*axis];
                }
                Ok((dt, Shape(dims)))
            }
            Op::Gather { axis } => {
                let ((dx, sx), (di, si)) = (operands[0], operands[1]);
                if !di.is_int() {
                    return Err(bad(format!("indices must be integers, got {di}")));
                }
                if sx.rank() != si.rank() || *axis >= sx.rank() {
                    return Err(bad("x and idx must have equal rank > axis".into()));
                }
                for k in 0..sx.rank() {
                    if k != *axis && sx.0[k] != si.0[k] {
                        return Err(bad(format!("dim {k} of idx must equal x's")));
                    }
                }
                Ok((dx, si.clone()))
            }
            Op::ScatterAdd { axis } => {
                let ((db, sb), (di, si), (ds, ss)) = (operands[0], operands[1], operands[2]);
                if !di.is_int() {
                    return Err(bad(format!("indices must be integers, got {di}")));
                }
                if db != ds || db == DType::Bool {
                    return Err(bad("base and src must share a numeric dtype".into()));
                }
                if si != ss || sb.rank() != si.rank() || *axis >= sb.rank() {
                    return Err(bad("idx and src must have one shape, of base's rank".into()));
                }
                for k in 0..sb.rank() {
                    if k != *axis && sb.0[k] != si.0[k] {
                        return Err(bad(format!("dim {k} of idx must equal base's")));
                    }
                }
                Ok((db, sb.clone()))
            }
            Op::TopK { k, axis } => {
                let (dt, s) = operands[0];
                if *axis >= s.rank() || *k == 0 || *k > s.0[*axis] {
                    return Err(bad(format!("k = {k} along axis {axis} of {s}")));
                }
                if dt == DType::Bool {
                    return Err(bad("topk of bool".into()));
                }
                let mut dims = s.0.clone();
                dims[*axis] = *k;
                Ok((DType::I64, Shape(dims)))
            }
            Op::CumSum { axis, .. } => {
                let (dt, s) = operands[0];
                if *axis >= s.rank() || dt == DType::Bool {
                    return Err(bad(format!("cumsum along axis {axis} of {dt}{s}")));
                }
                Ok((dt, s.clone()))
            }
            Op::Softmax { axis } => {
                let (dt, s) = operands[0];
                if *axis >= s.rank() || !dt.is_float() {
                    return Err(bad(format!("softmax along axis {axis} of {dt}{s}")));
                }
                Ok((dt, s.clone()))
            }
            Op::Conv2d { geom } => {
                let ((dx, sx), (dw, sw)) = (operands[0], operands[1]);
                conv_check(geom, dx, sx, dw, sw).map_err(bad)?;
                let (oh, ow) = geom
                    .output_hw(sx.0[2], sx.0[3], sw.0[2], sw.0[3])
                    .ok_or_else(|| bad("kernel larger than the padded input".into()))?;
                Ok((dx, Shape(vec![sx.0[0], sw.0[0], oh, ow])))
            }
            Op::Conv2dInputGrad { geom, input_hw } => {
                let ((dg, sg), (dw, sw)) = (operands[0], operands[1]);
                if dg != dw || !dg.is_float() || sg.rank() != 4 || sw.rank() != 4 {
                    return Err(bad("g and w must be 4-d of one float dtype".into()));
                }
                let c = sw.0[1] * geom.groups;
                let x = Shape(vec![sg.0[0], c, input_hw[0], input_hw[1]]);
                conv_check(geom, dg, &x, dw, sw).map_err(bad)?;
                let hw = geom.output_hw(input_hw[0], input_hw[1], sw.0[2], sw.0[3]);
                if hw != Some((sg.0[2], sg.0[3])) || sg.0[1] != sw.0[0] {
                    return Err(bad("g does not match the convolution's output".into()));
                }
                Ok((dg, x))
            }
            Op::Conv2dWeightGrad { geom, kernel_hw } => {
                let ((dx, sx), (dg, sg)) = (operands[0], operands[1]);
                if dx != dg || !dx.is_float() || sx.rank() != 4 || sg.rank() != 4 {
                    return Err(bad("x and g must be 4-d of one float dtype".into()));
                }
                if geom.groups == 0 || !sx.0[1].is_multiple_of(geom.groups) {
                    return Err(bad("channels not divisible by groups".into()));
                }
                let w = Shape(vec![
                    sg.0[1],
                    sx.0[1] / geom.groups,
                    kernel_hw[0],
                    kernel_hw[1],
                ]);
                conv_check(geom, dx, sx, dg, &w).map_err(bad)?;
                let hw = geom.output_hw(sx.0[2], sx.0[3], kernel_hw[0], kernel_hw[1]);
                if hw != Some((sg.0[2], sg.0[3])) || sg.0[0] != sx.0[0] {
                    return Err(bad("g does not match the convolution's output".into()));
                }
                Ok((dx, w))
            }
            Op::Remask { .. } => {
                let ((dl, sl), (dx, sx)) = (operands[0], operands[1]);
                if dl != DType::F32 || sl.rank() != 3 {
                    return Err(bad(format!("logits must be f32 [B, L, V], got {dl}{sl}")));
                }
                if dx != DType::I64 || sx.0[..] != sl.0[..2] {
                    return Err(bad(format!(
                        "x must be i64 [{}, {}], got {dx}{sx}",
                        sl.0[0], sl.0[1]
                    )));
                }
                let want = [
                    DType::F32,
                    DType::I64,
                    DType::I64,
                    DType::I64,
                    DType::I64,
                    DType::F32,
                ];
                let names = [
                    "temperature",
                    "seed",
                    "offset",
                    "block_end",
                    "k",
                    "threshold",
                ];
                for ((&(d, s), w), n) in operands[2..].iter().zip(want).zip(names) {
                    if d != w || s.rank() != 0 {
                        return Err(bad(format!("{n} must be a {w} scalar, got {d}{s}")));
                    }
                }
                Ok((DType::I64, sx.clone()))
            }
            Op::Attention { scale, masked } => {
                crate::attention::check(operands, *scale, *masked).map_err(bad)
            }
            Op::AttentionGrad {
                scale,
                masked,
                part,
            } => crate::attention_grad::check(operands, *scale, *masked, *part).map_err(bad),
            Op::Fused { body } => {
                body.check_args(operands).map_err(bad)?;
                Ok((body.dtype(), body.shape()))
            }
        }
    }
}

/// Checks the operands of a convolution: x [N, C, H, W], w [O, C/groups, KH, KW].
fn conv_check(
    geom: &ConvGeom,
    dx: DType,
    sx: &Shape,
    dw: DType,
    sw: &Shape,
) -> std::result::Result<(), String> {
    if dx != dw || !dx.is_float() {
        return Err("x and w must share one float dtype".into());
    }
    if sx.rank() != 4 || sw.rank() != 4 {
        return Err("x must be [N, C, H, W] and w [O, C/groups, KH, KW]".into());
    }
    let g = geom.groups;
    if g == 0 || !sx.0[1].is_multiple_of(g) || !sw.0[0].is_multiple_of(g) {
        return Err(format!(
            "channels ({} in, {} out) not divisible by groups {g}",
            sx.0[1], sw.0[0]
        ));
    }
    if sw.0[1] != sx.0[1] / g {
        return Err(format!(
            "w has {} input channels per group, x has {} / {g}",
            sw.0[1], sx.0[1]
        ));
    }
    if geom.stride[0] == 0 || geom.stride[1] == 0 {
        return Err("stride must be positive".into());
    }
    Ok(())
}
