//! KIR, the kernel IR: one kernel description that lowers to both targets.
//!
//! # The kernel model (decided for this project; see also the crate docs)
//!
//! A kernel is a SIMT program run by `grid` blocks of `block` threads, written as **block-level
//! statements** ([`BlockStmt`]): *phases* of per-thread code, *barriers* between them, and
//! *uniform loops* (same trip count in every thread) that may contain phases and barriers.
//! Per-thread code ([`Stmt`]) has no barriers. Values cross a barrier only through memory:
//! global buffers (kernel parameters), per-block **shared** buffers, or per-thread **private**
//! buffers; `let` variables and mutable locals declared in a phase die at its end.
//!
//! That restriction is what gives barriers and shared memory a host meaning without a
//! whole-function transformation: the host lowering runs each block as a sequence of phases and
//! each phase as a loop over thread ids (as OpenCL-on-CPU implementations do), with shared buffers
//! allocated once per block and private buffers as one slot per thread. The GPU lowering emits the
//! phases back to back with `gpu.barrier` between them. Tiled matmul (shared tiles, accumulators
//! in private buffers across k-steps) and flash attention (per-row running max/sum in private
//! buffers, K/V tiles in shared memory) both fit this model.
//!
//! Value types ([`VTy`]) are f32, i32, i64, bool and index. Buffers have storage dtypes; f16 and
//! bf16 are widened to f32 on load and rounded to nearest-even on store, so kernels compute in f32.
//! Transcendentals (exp, log, sin, cos) are expanded by our own math library in the lowering,
//! identically for both targets, so host and GPU results agree bit for bit.

mod build;
pub(crate) mod check;
pub mod lanes;
pub mod mma;
pub mod passes;
mod print;

pub use build::{KernelBuilder, Scope};
pub use check::check;
pub use print::to_text;

use mmada_ir::DType;
use serde::{Deserialize, Serialize};

/// Value types of KIR expressions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VTy {
    /// 32-bit float.
    F32,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
    /// Boolean (i1).
    Bool,
    /// Machine index (64-bit), used for addressing and loop counters.
    Index,
}

impl VTy {
    /// The value type a buffer of `dtype` loads as (f64 buffers are narrowed to f32; the
    /// planner rejects f64 graphs, which are interpreter-only).
    pub fn of_storage(dtype: DType) -> VTy {
        match dtype {
            DType::F64 | DType::F32 | DType::F16 | DType::BF16 => VTy::F32,
            DType::I32 => VTy::I32,
            DType::I64 => VTy::I64,
            DType::Bool => VTy::Bool,
        }
    }

    /// True for I32, I64 and Index.
    pub fn is_int(self) -> bool {
        matches!(self, VTy::I32 | VTy::I64 | VTy::Index)
    }

    /// The storage dtype that holds values of this type exactly (index values as i64).
    pub fn storage(self) -> DType {
        match self {
            VTy::F32 => DType::F32,
            VTy::I32 => DType::I32,
            VTy::I64 | VTy::Index => DType::I64,
            VTy::Bool => DType::Bool,
        }
    }
}

/// A variable bound once (`let`) or a loop counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VarId(pub u32);

/// A mutable scalar local to one phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LocalId(pub u32);

/// A buffer a kernel reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BufRef {
    /// Global memory: the `i`-th kernel parameter.
    Param(u32),
    /// Per-block shared memory.
    Shared(u32),
    /// Per-thread memory that lives across phases.
    Private(u32),
}

/// How a kernel uses a parameter buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Access {
    /// Only loads.
    Read,
    /// Only stores.
    Write,
    /// Loads and stores.
    ReadWrite,
}

/// A global buffer parameter: `len` elements of `dtype`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ParamDecl {
    /// Name for dumps.
    pub name: String,
    /// Storage dtype.
    pub dtype: DType,
    /// Number of elements.
    pub len: u64,
    /// Read, write or both.
    pub access: Access,
}

/// A shared or private scratch buffer of `len` elements stored as `dtype`: like parameters,
/// f16/bf16 elements are widened to f32 on load and rounded to nearest-even on store, so a
/// bf16 shared tile holds half the bytes of an f32 one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScratchDecl {
    /// Name for dumps.
    pub name: String,
    /// Storage dtype of the elements.
    pub dtype: DType,
    /// Number of elements (per block for shared, per thread for private).
    pub len: u64,
    /// Shared only: in the launch's dynamic shared memory (sized at launch, up to the device's
    /// opt-in limit, 227 KiB on sm_90) rather than declared statically (at most 48 KiB).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dynamic: bool,
}

/// Byte alignment of each dynamic shared buffer in the launch's dynamic shared memory.
pub const DYNAMIC_SHARED_ALIGN: u64 = 16;

/// Threads per warp: a warp is 32 consecutive thread slots of a block (threads `32w..32w+31`),
/// on the host as on the GPU.
pub const WARP: u32 = 32;

/// Which lane each thread of a warp reads in a [`BlockStmt::Shuffle`] (lane = thread id % 32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ShuffleMode {
    /// Lane `lane ^ mask` (butterfly; `mask < 32`).
    Xor(u32),
    /// Lane `lane + delta`; lanes whose source would pass lane 31 read their own value.
    Down(u32),
    /// Lane `source` (a broadcast; `source < 32`).
    Idx(u32),
}

impl ShuffleMode {
    /// The lane that `lane` reads from.
    pub fn source(self, lane: u32) -> u32 {
        match self {
            ShuffleMode::Xor(m) => lane ^ m,
            ShuffleMode::Down(d) if lane + d < WARP => lane + d,
            ShuffleMode::Down(_) => lane,
            ShuffleMode::Idx(s) => s,
        }
    }
}

/// Block-level statements: the same in every thread of a block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum BlockStmt {
    /// Per-thread code run by every thread of the block.
    Phase(Vec<Stmt>),
    /// All threads of the block wait here; memory written before is visible after.
    Barrier,
    /// A warp shuffle: every thread `t` sets `dst[dst_index]` (its own private slot) to
    /// `src[src_index]` of the thread of its warp that `mode` names, all reads before any write.
    /// `src` and `dst` are private buffers of one value type (f32 or i32), not the same slot.
    /// On the GPU, `shfl.sync` over the full warp; on the host, a loop over the block's threads
    /// reading the other thread's private slot, so the result is the same bit for bit.
    Shuffle {
        /// Lane selection.
        mode: ShuffleMode,
        /// Private buffer read.
        src: BufRef,
        /// Element of `src` read.
        src_index: u64,
        /// Private buffer written.
        dst: BufRef,
        /// Element of `dst` written.
        dst_index: u64,
    },
    /// A warp-wide tensor-core product `acc += A·B` (m16n8k16, bf16 inputs, f32 accumulate)
    /// over each warp's fragments; every thread of the block takes part, and the fragment
    /// layouts are those of [`mma::PTX`]. On the GPU, `nvvm.mma.sync`; on the host, the exact
    /// emulation of [`mma::emulate`] (a host KIR pass rewrites it before lowering).
    Mma(mma::MmaOperands),
    /// Host only, made by the lane-split pass ([`passes::LaneSplit`]): a phase whose thread
    /// loop runs as `for base in (0..block).step_by(lanes) { for lane in 0..lanes }`, the
    /// thread id being `base + lane`, with `body`'s index arithmetic rewritten as
    /// `uniform + c·lane` (see [`lanes`]) so that LLVM vectorises the lanes.
    LanePhase {
        /// The outer loop's variable (a multiple of `lanes`).
        base: VarId,
        /// The inner loop's variable.
        lane: VarId,
        /// Lanes of the inner loop.
        lanes: u64,
        /// The rewritten per-thread code.
        body: Vec<Stmt>,
    },
    /// A uniform loop (bounds may not depend on the thread id or per-thread state).
    For {
        /// Loop counter (index).
        var: VarId,
        /// First value.
        start: Expr,
        /// Exclusive bound.
        end: Expr,
        /// Positive step.
        step: Expr,
        /// Body.
        body: Vec<BlockStmt>,
    },
}

/// Per-thread statements.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Stmt {
    /// Binds `var` to a value.
    Let {
        /// Variable.
        var: VarId,
        /// Value.
        value: Expr,
    },
    /// Assigns a mutable local.
    Set {
        /// Local.
        local: LocalId,
        /// Value.
        value: Expr,
    },
    /// Writes one element of a buffer (narrowing f32 to f16/bf16 storage by round-to-nearest-even).
    Store {
        /// Buffer.
        buf: BufRef,
        /// Element index (index type).
        index: Expr,
        /// Value (the buffer's value type).
        value: Expr,
    },
    /// A per-thread loop.
    For {
        /// Loop counter (index).
        var: VarId,
        /// First value.
        start: Expr,
        /// Exclusive bound.
        end: Expr,
        /// Positive step.
        step: Expr,
        /// Body.
        body: Vec<Stmt>,
    },
    /// Conditional.
    If {
        /// Condition (bool).
        cond: Expr,
        /// Taken when true.
        then: Vec<Stmt>,
        /// Taken when false.
        otherwise: Vec<Stmt>,
    },
}

/// Unary operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KUnary {
    /// -x
    Neg,
    /// |x|
    Abs,
    /// √x (correctly rounded)
    Sqrt,
    /// ⌊x⌋
    Floor,
    /// logical not
    Not,
    /// e^x (our math library)
    Exp,
    /// ln x (our math library)
    Log,
    /// sin x (our math library)
    Sin,
    /// cos x (our math library)
    Cos,
    /// Round an f32 to the nearest f16 value (nearest even), keeping it as f32.
    RoundF16,
    /// Round an f32 to the nearest bf16 value (nearest even), keeping it as f32.
    RoundBF16,
}

/// Binary operations (operands of one type; shifts and bit ops on integers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KBinary {
    /// a + b
    Add,
    /// a - b
    Sub,
    /// a · b
    Mul,
    /// a / b (signed for i32/i64, unsigned for index)
    Div,
    /// remainder (signed for i32/i64, unsigned for index)
    Rem,
    /// NaN-propagating max (floats), signed max (ints)
    Max,
    /// NaN-propagating min (floats), signed min (ints)
    Min,
    /// bitwise / logical and
    And,
    /// bitwise / logical or
    Or,
    /// bitwise / logical xor
    Xor,
    /// shift left
    Shl,
    /// logical shift right
    ShrU,
    /// arithmetic shift right
    ShrS,
}

/// Comparisons (ordered for floats: false when either side is NaN, except `Ne`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KCmp {
    /// <
    Lt,
    /// <=
    Le,
    /// >
    Gt,
    /// >=
    Ge,
    /// ==
    Eq,
    /// !=
    Ne,
}

/// A constant.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Const {
    /// f32 value, stored as its bits: JSON has no ±∞ or NaN, and two kernels that differ only
    /// in the sign of an infinity must not look alike (kernels are deduplicated by the hash of
    /// their encoding).
    F32(#[serde(with = "f32_bits")] f32),
    /// i32 value.
    I32(i32),
    /// i64 value.
    I64(i64),
    /// bool value.
    Bool(bool),
    /// index value.
    Index(u64),
}

mod f32_bits {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(v.to_bits())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
        u32::deserialize(d).map(f32::from_bits)
    }
}

/// Expressions (trees; share values with `Let`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    /// A constant.
    Const(Const),
    /// A `let` variable or loop counter.
    Var(VarId),
    /// Current value of a mutable local.
    Local(LocalId),
    /// Thread index within the block (index).
    ThreadId,
    /// Block index within the grid (index).
    BlockId,
    /// Lane within the warp, `ThreadId % 32` (index).
    LaneId,
    /// One element of a buffer, widened to the buffer's value type.
    Load {
        /// Buffer.
        buf: BufRef,
        /// Element index (index type).
        index: Box<Expr>,
    },
    /// Unary operation.
    Unary(KUnary, Box<Expr>),
    /// Binary operation.
    Binary(KBinary, Box<Expr>, Box<Expr>),
    /// Comparison, giving bool.
    Cmp(KCmp, Box<Expr>, Box<Expr>),
    /// `c ? a : b` (both sides are evaluated; use `If` to guard memory accesses).
    Select(Box<Expr>, Box<Expr>, Box<Expr>),
    /// Numeric conversion (float→int truncates toward zero and saturates; NaN → 0).
    Cast(VTy, Box<Expr>),
    /// Reinterprets f32 bits as i32 or back.
    Bitcast(VTy, Box<Expr>),
    /// Fused multiply-add a·b + c with one rounding (f32).
    Fma(Box<Expr>, Box<Expr>, Box<Expr>),
}

/// A complete kernel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Kernel {
    /// Symbol name (unique in an artifact).
    pub name: String,
    /// Global buffer parameters, in launch-argument order.
    pub params: Vec<ParamDecl>,
    /// Per-block shared buffers.
    pub shared: Vec<ScratchDecl>,
    /// Per-thread buffers that live across phases.
    pub private: Vec<ScratchDecl>,
    /// Type of each mutable local (indexed by [`LocalId`]).
    pub locals: Vec<VTy>,
    /// Type of each variable (indexed by [`VarId`]).
    pub vars: Vec<VTy>,
    /// Number of blocks.
    pub grid: u64,
    /// Threads per block.
    pub block: u32,
    /// Body.
    pub body: Vec<BlockStmt>,
    /// The template and configuration it was built from (set by the planner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<crate::template::TemplateUse>,
}

impl Kernel {
    /// Byte offset of each dynamic shared buffer (by index into `shared`; `None` for static
    /// ones) and the dynamic shared bytes a launch must provide.
    pub fn dynamic_shared_layout(&self) -> (Vec<Option<u64>>, u64) {
        let mut end = 0u64;
        let offsets = self
            .shared
            .iter()
            .map(|s| {
                s.dynamic.then(|| {
                    let at = end.next_multiple_of(DYNAMIC_SHARED_ALIGN);
                    end = at + s.len * s.dtype.size_bytes() as u64;
                    at
                })
            })
            .collect();
        (offsets, end)
    }
}

/// Expression constructors.
impl Expr {
    /// Index constant.
    pub fn idx(v: u64) -> Expr {
        Expr::Const(Const::Index(v))
    }
    /// f32 constant.
    pub fn f32(v: f32) -> Expr {
        Expr::Const(Const::F32(v))
    }
    /// i32 constant.
    pub fn i32(v: i32) -> Expr {
        Expr::Const(Const::I32(v))
    }
    /// i64 constant.
    pub fn i64(v: i64) -> Expr {
        Expr::Const(Const::I64(v))
    }
    /// bool constant.
    pub fn bool(v: bool) -> Expr {
        Expr::Const(Const::Bool(v))
    }
    /// Load `buf[index]`.
    pub fn load(buf: BufRef, index: Expr) -> Expr {
        Expr::Load {
            buf,
            index: Box::new(index),
        }
    }
    /// Binary op.
    pub fn bin(op: KBinary, a: Expr, b: Expr) -> Expr {
        Expr::Binary(op, Box::new(a), Box::new(b))
    }
    /// Unary op.
    pub fn un(op: KUnary, a: Expr) -> Expr {
        Expr::Unary(op, Box::new(a))
    }
    /// Comparison.
    pub fn cmp(op: KCmp, a: Expr, b: Expr) -> Expr {
        Expr::Cmp(op, Box::new(a), Box::new(b))
    }
    /// `c ? a : b`.
    pub fn select(c: Expr, a: Expr, b: Expr) -> Expr {
        Expr::Select(Box::new(c), Box::new(a), Box::new(b))
    }
    /// Numeric conversion.
    pub fn cast(to: VTy, a: Expr) -> Expr {
        Expr::Cast(to, Box::new(a))
    }
    /// Bit reinterpretation.
    pub fn bitcast(to: VTy, a: Expr) -> Expr {
        Expr::Bitcast(to, Box::new(a))
    }
    /// a·b + c, one rounding.
    pub fn fma(a: Expr, b: Expr, c: Expr) -> Expr {
        Expr::Fma(Box::new(a), Box::new(b), Box::new(c))
    }
    /// self < o
    pub fn lt(self, o: Expr) -> Expr {
        Expr::cmp(KCmp::Lt, self, o)
    }
    /// self == o
    pub fn eq(self, o: Expr) -> Expr {
        Expr::cmp(KCmp::Eq, self, o)
    }
    /// logical/bitwise and
    pub fn and(self, o: Expr) -> Expr {
        Expr::bin(KBinary::And, self, o)
    }
}

macro_rules! expr_op {
    ($tr:ident, $m:ident, $op:ident) => {
        impl std::ops::$tr for Expr {
            type Output = Expr;
            fn $m(self, o: Expr) -> Expr {
                Expr::bin(KBinary::$op, self, o)
            }
        }
    };
}
expr_op!(Add, add, Add);
expr_op!(Sub, sub, Sub);
expr_op!(Mul, mul, Mul);
expr_op!(Div, div, Div);
expr_op!(Rem, rem, Rem);

#[cfg(test)]
mod tests {
    use super::Const;

    #[test]
    fn f32_constants_keep_infinities_and_nan_bits_in_json() {
        for v in [f32::INFINITY, f32::NEG_INFINITY, -0.0, 1.5e-42, f32::MAX] {
            let j = serde_json::to_string(&Const::F32(v)).unwrap();
            let back: Const = serde_json::from_str(&j).unwrap();
            assert_eq!(back, Const::F32(v), "{j}");
        }
        let nan = f32::from_bits(0x7fc0_0001);
        let j = serde_json::to_string(&Const::F32(nan)).unwrap();
        let Const::F32(back) = serde_json::from_str(&j).unwrap() else {
            panic!("{j}")
        };
        assert_eq!(back.to_bits(), nan.to_bits());
        assert_ne!(
            serde_json::to_string(&Const::F32(f32::INFINITY)).unwrap(),
            serde_json::to_string(&Const::F32(f32::NEG_INFINITY)).unwrap()
        );
    }
}
