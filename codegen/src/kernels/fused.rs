//! Kernels for fused groups (and single elementwise, view and reduction nodes, which are
//! treated as one-node groups): one thread per output element, or, when the root is a
//! reduction, one thread per output (short reductions) or one block per output with a
//! shared-memory tree (long reductions).
//!
//! Values are computed in f32 for float dtypes; every f16/bf16 intermediate is rounded to its
//! storage type exactly where the interpreter rounds it, so fused and unfused programs agree.

use super::index::{add, linearize, mul, next_pow2, unravel};
use crate::kir::{
    Access, BlockStmt, BufRef, Expr, KBinary, KCmp, KUnary, Kernel, KernelBuilder, Scope, VTy,
};
use crate::CodegenError;
use mmada_ir::{
    BinaryOp, CompareOp, DType, FusedBody, Literal, Op, Operand, ReduceOp, Shape, UnaryOp,
};
use std::collections::HashMap;

/// Reductions at most this long run one thread per output.
const SERIAL_REDUCE_MAX: usize = 64;
/// The input multi-index of a reshape from `in_shape` to `out_shape` at output index `idx`. The
/// dimensions are cut into the shortest runs whose extents multiply to the same number on both
/// sides (a reshape only splits and merges dimensions within a run), and each run is
/// linearised and unravelled on its own: `[n, c, 2h, 2w]` of `[n, c, h, 2, w, 2]` reads
/// `[n, c, y / 2, y % 2, x / 2, x % 2]` instead of dividing one linear offset six times.
fn reshape_index(idx: &[Expr], out_shape: &Shape, in_shape: &Shape) -> Vec<Expr> {
    let (o, i) = (&out_shape.0, &in_shape.0);
    let mut out = Vec::with_capacity(i.len());
    let (mut a, mut b) = (0usize, 0usize);
    while a < o.len() || b < i.len() {
        // One run: o[a..a2] and i[b..b2] with equal products (unit dims join the run).
        let (mut a2, mut b2) = (a, b);
        let (mut po, mut pi) = (1usize, 1usize);
        loop {
            if po <= pi && a2 < o.len() {
                po *= o[a2];
                a2 += 1;
            } else if b2 < i.len() {
                pi *= i[b2];
                b2 += 1;
            } else if a2 < o.len() {
                po *= o[a2];
                a2 += 1;
            } else {
                break;
            }
            if po == pi && (a2 == o.len() || o[a2] != 1) && (b2 == i.len() || i[b2] != 1) {
                break;
            }
        }
        if po != pi {
            // Not a split/merge (cannot happen for equal element counts); the whole reshape.
            return unravel(linearize(idx, out_shape), in_shape);
        }
        let lin = linearize(&idx[a..a2], &Shape(o[a..a2].to_vec()));
        out.extend(unravel(lin, &Shape(i[b..b2].to_vec())));
        (a, b) = (a2, b2);
    }
    out
}

fn unsupported(msg: String) -> CodegenError {
    CodegenError::Unsupported {
        node: "fused body".into(),
        msg,
    }
}

/// Value type of a storage dtype.
pub fn vty(d: DType) -> VTy {
    VTy::of_storage(d)
}

/// Rounds an f32 value to the precision of a 16-bit float storage dtype.
pub fn round_to(d: DType, e: Expr) -> Expr {
    match d {
        DType::F16 => Expr::un(KUnary::RoundF16, e),
        DType::BF16 => Expr::un(KUnary::RoundBF16, e),
        _ => e,
    }
}

fn const_expr(d: DType, v: &Literal, i: usize) -> Expr {
    match d {
        DType::F64 => Expr::f32(v.get_f64(i) as f32),
        DType::F32 | DType::F16 | DType::BF16 => round_to(d, Expr::f32(v.get_f64(i) as f32)),
        DType::I32 => Expr::i32(v.get_i64(i) as i32),
        DType::I64 => Expr::i64(v.get_i64(i)),
        DType::Bool => Expr::bool(v.get_f64(i) != 0.0),
    }
}

/// Evaluates body nodes at multi-indices, binding each value once per index in one scope.
pub(super) struct BodyEval<'b> {
    body: &'b FusedBody,
    args: &'b [BufRef],
    memo: HashMap<String, Expr>,
}

impl<'b> BodyEval<'b> {
    pub(super) fn new(body: &'b FusedBody, args: &'b [BufRef]) -> BodyEval<'b> {
        BodyEval {
            body,
            args,
            memo: HashMap::new(),
        }
    }

    fn shape_of(&self, o: Operand) -> &Shape {
        match o {
            Operand::Arg(a) => &self.body.args[a].1,
            Operand::Node(j) => &self.body.nodes[j].shape,
        }
    }

    fn dtype_of(&self, o: Operand) -> DType {
        match o {
            Operand::Arg(a) => self.body.args[a].0,
            Operand::Node(j) => self.body.nodes[j].dtype,
        }
    }

    pub(super) fn value(
        &mut self,
        s: &mut Scope,
        o: Operand,
        idx: &[Expr],
    ) -> Result<Expr, CodegenError> {
        let key = format!("{o:?}@{idx:?}");
        if let Some(e) = self.memo.get(&key) {
            return Ok(e.clone());
        }
        let e = match o {
            Operand::Arg(a) => {
                let lin = linearize(idx, &self.body.args[a].1);
                s.let_(Expr::load(self.args[a], lin))
            }
            Operand::Node(j) => {
                let e = self.node(s, j, idx)?;
                s.let_(e)
            }
        };
        self.memo.insert(key, e.clone());
        Ok(e)
    }

    fn node(&mut self, s: &mut Scope, j: usize, idx: &[Expr]) -> Result<Expr, CodegenError> {
        let body = self.body;
        let n = &body.nodes[j];
        let ops = &n.operands;
        let dt = n.dtype;
        Ok(match &n.op {
            Op::Constant { value } => {
                if value.len() != 1 {
                    return Err(unsupported(
                        "non-scalar constant inside a fused body".into(),
                    ));
                }
                const_expr(dt, value, 0)
            }
            Op::Unary { op } => {
                let x = self.value(s, ops[0], idx)?;
                round_to(dt, unary(*op, x, vty(dt)))
            }
            Op::Binary { op } => {
                let a = self.value(s, ops[0], idx)?;
                let b = self.value(s, ops[1], idx)?;
                round_to(dt, binary(*op, a, b, vty(dt)))
            }
            Op::Compare { op } => {
                let a = self.value(s, ops[0], idx)?;
                let b = self.value(s, ops[1], idx)?;
                Expr::cmp(cmp(*op), a, b)
            }
            Op::Where => {
                let c = self.value(s, ops[0], idx)?;
                let a = self.value(s, ops[1], idx)?;
                let b = self.value(s, ops[2], idx)?;
                Expr::select(c, a, b)
            }
            Op::Cast { to } => {
                let from = self.dtype_of(ops[0]);
                let x = self.value(s, ops[0], idx)?;
                if from == *to {
                    x
                } else if vty(from) == vty(*to) {
                    round_to(*to, x)
                } else {
                    round_to(*to, Expr::cast(vty(*to), x))
                }
            }
            Op::Reshape { .. } => {
                let in_shape = self.shape_of(ops[0]).clone();
                let in_idx = reshape_index(idx, &n.shape, &in_shape);
                self.value(s, ops[0], &in_idx)?
            }
            Op::Permute { perm } => {
                let mut in_idx = vec![Expr::idx(0); perm.len()];
                for (d, &p) in perm.iter().enumerate() {
                    in_idx[p] = idx[d].clone();
                }
                self.value(s, ops[0], &in_idx)?
            }
            Op::Broadcast { shape } => {
                let in_shape = self.shape_of(ops[0]).clone();
                let off = shape.rank() - in_shape.rank();
                let in_idx: Vec<Expr> = (0..in_shape.rank())
                    .map(|d| {
                        if in_shape.0[d] == 1 {
                            Expr::idx(0)
                        } else {
                            idx[d + off].clone()
                        }
                    })
                    .collect();
                self.value(s, ops[0], &in_idx)?
            }
            Op::Iota { axis } => Expr::cast(vty(dt), idx[*axis].clone()),
            Op::Rng { dist, stream } => {
                let seed = self.value(s, ops[0], &[])?;
                let offset = self.value(s, ops[1], &[])?;
                let i = s.let_(linearize(idx, &n.shape));
                super::rng::sample(s, *dist, seed, offset, *stream, i)
            }
            Op::Slice { start, .. } => {
                let in_idx: Vec<Expr> = idx
                    .iter()
                    .zip(start)
                    .map(|(e, &st)| add(e.clone(), Expr::idx(st as u64)))
                    .collect();
                self.value(s, ops[0], &in_idx)?
            }
            Op::Pad { lo, value, .. } => {
                let in_shape = self.shape_of(ops[0]).clone();
                let mut ok = Expr::bool(true);
                let mut in_idx = Vec::with_capacity(idx.len());
                for (d, e) in idx.iter().enumerate() {
                    let (l, n_d) = (lo[d] as u64, in_shape.0[d] as u64);
                    if l == 0 && in_shape.0[d] == n.shape.0[d] {
                        in_idx.push(e.clone());
                        continue;
                    }
                    let inside = Expr::cmp(KCmp::Ge, e.clone(), Expr::idx(l)).and(Expr::cmp(
                        KCmp::Lt,
                        e.clone(),
                        Expr::idx(l + n_d),
                    ));
                    ok = ok.and(inside);
                    let shifted = Expr::bin(KBinary::Max, e.clone(), Expr::idx(l)) - Expr::idx(l);
                    in_idx.push(s.let_(Expr::bin(KBinary::Min, shifted, Expr::idx(n_d - 1))));
                }
                let ok = s.let_(ok);
                let v = self.value(s, ops[0], &in_idx)?;
                Expr::select(ok, v, const_expr(dt, &Literal::Float(vec![*value]), 0))
            }
            Op::Concat { axis, .. } => {
                let a = *axis;
                let mut bounds = Vec::with_capacity(ops.len());
                let mut start = 0u64;
                for &o in ops {
                    let len = self.shape_of(o).0[a] as u64;
                    bounds.push((start, len));
                    start += len;
                }
                // Empty operands hold no element: they are never read.
                let (mut vals, mut starts) = (Vec::new(), Vec::new());
                for (k, &o) in ops.iter().enumerate() {
                    let (st, len) = bounds[k];
                    if len == 0 {
                        continue;
                    }
                    starts.push(st);
                    let mut in_idx = idx.to_vec();
                    let shifted =
                        Expr::bin(KBinary::Max, idx[a].clone(), Expr::idx(st)) - Expr::idx(st);
                    in_idx[a] = s.let_(Expr::bin(KBinary::Min, shifted, Expr::idx(len - 1)));
                    vals.push(self.value(s, o, &in_idx)?);
                }
                // A balanced tree of selects on the operands' starts: depth log2(count), not
                // count (a chain of 1024 nested selects overflowed the artifact's JSON reader).
                fn pick(vals: &[Expr], starts: &[u64], at: &Expr) -> Expr {
                    if vals.len() <= 1 {
                        return vals.first().cloned().unwrap_or(Expr::f32(0.0));
                    }
                    let mid = vals.len() / 2;
                    let c = Expr::cmp(KCmp::Lt, at.clone(), Expr::idx(starts[mid]));
                    let (lo, hi) = (&vals[..mid], &vals[mid..]);
                    let (slo, shi) = (&starts[..mid], &starts[mid..]);
                    Expr::select(c, pick(lo, slo, at), pick(hi, shi, at))
                }
                pick(&vals, &starts, &idx[a])
            }
            Op::Gather { axis } => {
                let x_shape = self.shape_of(ops[0]).clone();
                let extent = x_shape.0[*axis] as i64;
                let iv = self.value(s, ops[1], idx)?;
                let iv = Expr::cast(VTy::I64, iv);
                let clamped = Expr::bin(
                    KBinary::Max,
                    Expr::bin(KBinary::Min, iv, Expr::i64(extent - 1)),
                    Expr::i64(0),
                );
                let mut in_idx = idx.to_vec();
                in_idx[*axis] = s.let_(Expr::cast(VTy::Index, clamped));
                self.value(s, ops[0], &in_idx)?
            }
            Op::Reduce { .. } => {
                return Err(unsupported(
                    "a reduction that is not the root of its group".into(),
                ))
            }
            Op::MatMul
            | Op::Input { .. }
            | Op::Fused { .. }
            | Op::ScatterAdd { .. }
            | Op::TopK { .. }
            | Op::Remask { .. }
            | Op::Attention { .. }
            | Op::AttentionGrad { .. }
            | Op::CumSum { .. }
            | Op::Softmax { .. }
            | Op::Conv2d { .. }
            | Op::Conv2dInputGrad { .. }
            | Op::Conv2dWeightGrad { .. } => {
                return Err(unsupported(format!("{} inside a fused body", n.op.name())))
            }
        })
    }
}

pub(super) fn unary(op: UnaryOp, x: Expr, t: VTy) -> Expr {
    match op {
        UnaryOp::Neg => Expr::un(KUnary::Neg, x),
        UnaryOp::Abs => Expr::un(KUnary::Abs, x),
        UnaryOp::Exp => Expr::un(KUnary::Exp, x),
        UnaryOp::Log => Expr::un(KUnary::Log, x),
        UnaryOp::Sin => Expr::un(KUnary::Sin, x),
        UnaryOp::Cos => Expr::un(KUnary::Cos, x),
        UnaryOp::Sqrt => Expr::un(KUnary::Sqrt, x),
        UnaryOp::Rsqrt => Expr::f32(1.0) / Expr::un(KUnary::Sqrt, x),
        UnaryOp::Recip => Expr::f32(1.0) / x,
        UnaryOp::Floor => Expr::un(KUnary::Floor, x),
        UnaryOp::Sigmoid => {
            Expr::f32(1.0) / (Expr::f32(1.0) + Expr::un(KUnary::Exp, Expr::un(KUnary::Neg, x)))
        }
        UnaryOp::StopGradient => x,
        UnaryOp::Not => {
            let _ = t;
            Expr::un(KUnary::Not, x)
        }
    }
}

fn binary(op: BinaryOp, a: Expr, b: Expr, t: VTy) -> Expr {
    let k = match op {
        BinaryOp::Add => KBinary::Add,
        BinaryOp::Sub => KBinary::Sub,
        BinaryOp::Mul => KBinary::Mul,
        BinaryOp::Div => KBinary::Div,
        BinaryOp::Max => KBinary::Max,
        BinaryOp::Min => KBinary::Min,
        BinaryOp::Rem => KBinary::Rem,
        BinaryOp::And => KBinary::And,
        BinaryOp::Or => KBinary::Or,
    };
    if matches!(op, BinaryOp::Div | BinaryOp::Rem) && t != VTy::F32 {
        // Integer division or remainder by zero is undefined in hardware; the kernel yields 0
        // (the interpreter reports an error instead).
        let zero = match t {
            VTy::I32 => Expr::i32(0),
            _ => Expr::i64(0),
        };
        let one = match t {
            VTy::I32 => Expr::i32(1),
            _ => Expr::i64(1),
        };
        let is_zero = Expr::cmp(KCmp::Eq, b.clone(), zero.clone());
        let safe = Expr::select(is_zero.clone(), one, b);
        return Expr::select(is_zero, zero, Expr::bin(k, a, safe));
    }
    Expr::bin(k, a, b)
}

fn cmp(op: CompareOp) -> KCmp {
    match op {
        CompareOp::Lt => KCmp::Lt,
        CompareOp::Le => KCmp::Le,
        CompareOp::Gt => KCmp::Gt,
        CompareOp::Ge => KCmp::Ge,
        CompareOp::Eq => KCmp::Eq,
        CompareOp::Ne => KCmp::Ne,
    }
}

pub(super) fn declare_args(kb: &mut KernelBuilder, body: &FusedBody) -> Vec<BufRef> {
    body.args
        .iter()
        .enumerate()
        .map(|(i, (d, s))| kb.param(&format!("arg{i}"), *d, s.numel() as u64, Access::Read))
        .collect()
}

/// One thread per output element, at most `max_block` threads per block (template
/// `elementwise`, or `rng`/`index` for a lone random stream or gather).
pub fn elementwise_kernel(
    name: &str,
    body: &FusedBody,
    max_block: u64,
) -> Result<Kernel, CodegenError> {
    let out_shape = body.shape();
    let n = out_shape.numel() as u64;
    let (grid, block) = super::rows::grid_for(n, max_block);
    let block = block as u64;
    let mut kb = KernelBuilder::new(name, grid, block as u32);
    let args = declare_args(&mut kb, body);
    let out = kb.param("out", body.dtype(), n, Access::Write);
    let dt = body.dtype();
    let mut err = None;
    let phase = kb.phase(|s| {
        let lin = s.let_(add(mul(Expr::BlockId, Expr::idx(block)), Expr::ThreadId));
        let compute = |s: &mut Scope, err: &mut Option<CodegenError>| {
            // The multi-index stays symbolic (not let-bound) so loads of operands with the
            // output's shape re-linearise to `lin` for free.
            let idx = unravel(lin.clone(), &out_shape);
            let mut ev = BodyEval::new(body, &args);
            match ev.value(s, Operand::Node(body.root), &idx) {
                Ok(v) => s.store(out, lin.clone(), v),
                Err(e) => *err = Some(e),
            }
        };
        if n.is_multiple_of(block) {
            // Every thread has an element: no bounds check, so host loops vectorise.
            compute(s, &mut err);
        } else {
            s.if_(
                lin.clone().lt(Expr::idx(n)),
                |s| compute(s, &mut err),
                |_| {},
            );
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    let _ = dt;
    Ok(kb.finish(vec![phase]))
}

fn reduce_init(op: ReduceOp, t: VTy) -> Expr {
    match (op, t) {
        (ReduceOp::Sum, VTy::F32) => Expr::f32(0.0),
        (ReduceOp::Sum, VTy::I32) => Expr::i32(0),
        (ReduceOp::Sum, _) => Expr::i64(0),
        (ReduceOp::Max, VTy::F32) => Expr::f32(f32::NEG_INFINITY),
        (ReduceOp::Max, VTy::I32) => Expr::i32(i32::MIN),
        (ReduceOp::Max, _) => Expr::i64(i64::MIN),
        (ReduceOp::Min, VTy::F32) => Expr::f32(f32::INFINITY),
        (ReduceOp::Min, VTy::I32) => Expr::i32(i32::MAX),
        (ReduceOp::Min, _) => Expr::i64(i64::MAX),
    }
}

fn reduce_combine(op: ReduceOp, a: Expr, b: Expr) -> Expr {
    match op {
        ReduceOp::Sum => Expr::bin(KBinary::Add, a, b),
        ReduceOp::Max => Expr::bin(KBinary::Max, a, b),
        ReduceOp::Min => Expr::bin(KBinary::Min, a, b),
    }
}

/// The facts of the reduction rooted at a fused body's root, shared by its kernels.
struct Reduction<'b> {
    body: &'b FusedBody,
    op: ReduceOp,
    axes: Vec<usize>,
    src: Operand,
    in_rank: usize,
    /// The source shape with the reduced axes set to 1 (output multi-indices).
    kept: Shape,
    /// The reduced axes' sizes (reduced-element multi-indices).
    red: Shape,
    r_len: u64,
    n_out: u64,
    dt: DType,
    t: VTy,
}

impl<'b> Reduction<'b> {
    fn of(body: &'b FusedBody) -> Result<Self, CodegenError> {
        let root = &body.nodes[body.root];
        let Op::Reduce { op, axes, .. } = &root.op else {
            return Err(unsupported("reduction kernel for a non-reduction".into()));
        };
        let src = root.operands[0];
        let in_shape = match src {
            Operand::Arg(a) => &body.args[a].1,
            Operand::Node(j) => &body.nodes[j].shape,
        };
        let kept = Shape(
            in_shape
                .dims()
                .iter()
                .enumerate()
                .map(|(d, &n)| if axes.contains(&d) { 1 } else { n })
                .collect(),
        );
        let red = Shape(axes.iter().map(|&a| in_shape.0[a]).collect());
        Ok(Reduction {
            body,
            op: *op,
            axes: axes.clone(),
            src,
            in_rank: in_shape.rank(),
            r_len: red.numel() as u64,
            kept,
            red,
            n_out: root.shape.numel() as u64,
            dt: root.dtype,
            t: vty(root.dtype),
        })
    }

    /// The source multi-index of reduced element `r` of output `o`.
    fn input_index(&self, o: &Expr, r: &Expr) -> Vec<Expr> {
        let kidx = unravel(o.clone(), &self.kept);
        let ridx = unravel(r.clone(), &self.red);
        (0..self.in_rank)
            .map(|d| match self.axes.iter().position(|&a| a == d) {
                Some(k) => ridx[k].clone(),
                None => kidx[d].clone(),
            })
            .collect()
    }

    /// The value reduced: the body's source at reduced element `r` of output `o`.
    fn element(
        &self,
        s: &mut Scope,
        args: &[BufRef],
        o: &Expr,
        r: &Expr,
    ) -> Result<Expr, CodegenError> {
        BodyEval::new(self.body, args).value(s, self.src, &self.input_index(o, r))
    }

    /// One thread's serial fold of output `o`'s elements into one accumulator, in order.
    fn serial_fold(
        &self,
        s: &mut Scope,
        args: &[BufRef],
        o: &Expr,
    ) -> Result<crate::kir::LocalId, CodegenError> {
        let acc = s.local(reduce_init(self.op, self.t));
        let mut err = None;
        s.for_(
            Expr::idx(0),
            Expr::idx(self.r_len),
            Expr::idx(1),
            |s, r| match self.element(s, args, o, &r) {
                Ok(v) => s.set(acc, reduce_combine(self.op, Expr::Local(acc), v)),
                Err(e) => err = Some(e),
            },
        );
        err.map_or(Ok(acc), Err)
    }

    /// A kernel with one thread per output, folding serially.
    fn serial_kernel(&self, name: &str, grid: u64, block: u32) -> Result<Kernel, CodegenError> {
        let mut kb = KernelBuilder::new(name, grid, block);
        let args = declare_args(&mut kb, self.body);
        let out = kb.param("out", self.dt, self.n_out, Access::Write);
        let mut err = None;
        let phase = super::rows::per_item(&mut kb, self.n_out, |s, o| {
            match self.serial_fold(s, &args, &o) {
                Ok(acc) => s.store(out, o, round_to(self.dt, Expr::Local(acc))),
                Err(e) => err = Some(e),
            }
        });
        err.map_or(Ok(kb.finish(vec![phase])), Err)
    }
}

/// The reduction rooted at the body's root: one block per output with a shared-memory tree of
/// at most `max_block` threads (template `reduction`), or one thread per output for short rows.
pub fn reduce_kernel(name: &str, body: &FusedBody, max_block: u64) -> Result<Kernel, CodegenError> {
    let rd = Reduction::of(body)?;
    let (op, r_len, n_out, dt, t) = (rd.op, rd.r_len, rd.n_out, rd.dt, rd.t);
    if r_len as usize <= SERIAL_REDUCE_MAX {
        let (grid, block) = super::rows::grid_for(n_out, max_block);
        return rd.serial_kernel(name, grid, block);
    }
    let block = next_pow2(r_len).clamp(32, max_block);
    let mut kb = KernelBuilder::new(name, n_out, block as u32);
    let args = declare_args(&mut kb, body);
    let out = kb.param("out", dt, n_out, Access::Write);
    let partial = kb.shared("partial", t.storage(), block);
    let mut err = None;
    let mut stmts: Vec<BlockStmt> = vec![kb.phase(|s| {
        let acc = s.local(reduce_init(op, t));
        s.for_(
            Expr::ThreadId,
            Expr::idx(r_len),
            Expr::idx(block),
            |s, r| match rd.element(s, &args, &Expr::BlockId, &r) {
                Ok(v) => s.set(acc, reduce_combine(op, Expr::Local(acc), v)),
                Err(e) => err = Some(e),
            },
        );
        s.store(partial, Expr::ThreadId, Expr::Local(acc));
    })];
    if let Some(e) = err {
        return Err(e);
    }
    stmts.extend(tree_reduce(&mut kb, partial, op, block));
    stmts.push(BlockStmt::Barrier);
    stmts.push(kb.phase(|s| {
        s.if_(
            Expr::ThreadId.eq(Expr::idx(0)),
            |s| {
                let v = Expr::load(partial, Expr::idx(0));
                s.store(out, Expr::BlockId, round_to(dt, v));
            },
            |_| {},
        );
    }));
    Ok(kb.finish(stmts))
}

/// Folds the `block` partial results in shared buffer `partial` into `partial[0]` by halving
/// (a barrier before each step; the caller adds the one after the last).
pub(super) fn tree_reduce(
    kb: &mut KernelBuilder,
    partial: BufRef,
    op: ReduceOp,
    block: u64,
) -> Vec<BlockStmt> {
    let mut stmts = Vec::new();
    let mut stride = block / 2;
    while stride > 0 {
        stmts.push(BlockStmt::Barrier);
        stmts.push(kb.phase(|s| {
            s.if_(
                Expr::ThreadId.lt(Expr::idx(stride)),
                |s| {
                    let a = Expr::load(partial, Expr::ThreadId);
                    let b = Expr::load(partial, add(Expr::ThreadId, Expr::idx(stride)));
                    s.store(partial, Expr::ThreadId, reduce_combine(op, a, b));
                },
                |_| {},
            );
        }));
        stride /= 2;
    }
    stmts
}

/// The host variant of a reduction: one thread per output, accumulating into
/// `lanes` independent partial results (the template's `host_lanes`: the CPU's f32 vector width) (so the loop over lanes vectorises without
/// reassociating any sum), then combining the lanes in order. Slow on a GPU (one thread per
/// output), fast on a CPU; the planner uses it only for host execution.
pub fn reduce_kernel_lanes(
    name: &str,
    body: &FusedBody,
    n_lanes: u64,
) -> Result<Kernel, CodegenError> {
    let rd = Reduction::of(body)?;
    let (op, r_len, n_out, dt, t) = (rd.op, rd.r_len, rd.n_out, rd.dt, rd.t);
    if matches!(op, ReduceOp::Max | ReduceOp::Min) && rd.axes.contains(&(rd.in_rank - 1)) {
        // Maximum and minimum give the same result in any order (NaN and ±0 included), so one
        // accumulator suffices and LLVM vectorises the loop itself. (With 16 lanes and a row
        // of 256, LLVM unrolled the lane loop and vectorised across lanes with gathers.)
        let (grid, block) = super::rows::host_grid_for(n_out);
        return rd.serial_kernel(name, grid, block);
    }
    let mut err = None;
    if !rd.axes.contains(&(rd.in_rank - 1)) {
        // Column mode: the innermost axis is kept, so 16 consecutive outputs read 16
        // consecutive inputs; each thread owns 16 outputs and walks the reduced elements.
        let groups = n_out.div_ceil(n_lanes);
        let (grid, block) = super::rows::host_grid_for(groups);
        let mut kb = KernelBuilder::new(name, grid, block);
        let args = declare_args(&mut kb, body);
        let out = kb.param("out", dt, n_out, Access::Write);
        let lanes = kb.private("lanes", t.storage(), n_lanes);
        let body_phase = super::rows::per_item(&mut kb, groups, |s, grp| {
            s.for_(Expr::idx(0), Expr::idx(n_lanes), Expr::idx(1), |s, lane| {
                s.store(lanes, lane, reduce_init(op, t));
            });
            s.for_(Expr::idx(0), Expr::idx(r_len), Expr::idx(1), |s, r| {
                s.for_(Expr::idx(0), Expr::idx(n_lanes), Expr::idx(1), |s, lane| {
                    // Lanes past the last output compute a clamped (valid) element and are
                    // never stored.
                    let o = add(mul(grp.clone(), Expr::idx(n_lanes)), lane.clone());
                    let o = if n_out.is_multiple_of(n_lanes) {
                        o
                    } else {
                        Expr::bin(KBinary::Min, o, Expr::idx(n_out - 1))
                    };
                    let o = s.let_(o);
                    match rd.element(s, &args, &o, &r) {
                        Ok(v) => {
                            let acc = Expr::load(lanes, lane.clone());
                            s.store(lanes, lane, reduce_combine(op, acc, v));
                        }
                        Err(e) => err = Some(e),
                    }
                });
            });
            s.for_(Expr::idx(0), Expr::idx(n_lanes), Expr::idx(1), |s, lane| {
                let o = s.let_(add(mul(grp.clone(), Expr::idx(n_lanes)), lane.clone()));
                let v = round_to(dt, Expr::load(lanes, lane));
                s.if_(
                    o.clone().lt(Expr::idx(n_out)),
                    |s| s.store(out, o.clone(), v.clone()),
                    |_| {},
                );
            });
        });
        if let Some(e) = err {
            return Err(e);
        }
        return Ok(kb.finish(vec![body_phase]));
    }
    let (grid, block) = super::rows::host_grid_for(n_out);
    let mut kb = KernelBuilder::new(name, grid, block);
    let args = declare_args(&mut kb, body);
    let out = kb.param("out", dt, n_out, Access::Write);
    let lanes = kb.private("lanes", t.storage(), n_lanes);
    let full = r_len / n_lanes * n_lanes;
    let body_phase = super::rows::per_item(&mut kb, n_out, |s, o| {
        s.for_(Expr::idx(0), Expr::idx(n_lanes), Expr::idx(1), |s, lane| {
            s.store(lanes, lane, reduce_init(op, t));
        });
        s.for_(
            Expr::idx(0),
            Expr::idx(full),
            Expr::idx(n_lanes),
            |s, r0| {
                s.for_(Expr::idx(0), Expr::idx(n_lanes), Expr::idx(1), |s, lane| {
                    let r = s.let_(add(r0.clone(), lane.clone()));
                    match rd.element(s, &args, &o, &r) {
                        Ok(v) => {
                            let acc = Expr::load(lanes, lane.clone());
                            s.store(lanes, lane, reduce_combine(op, acc, v));
                        }
                        Err(e) => err = Some(e),
                    }
                });
            },
        );
        if full < r_len {
            s.for_(
                Expr::idx(full),
                Expr::idx(r_len),
                Expr::idx(1),
                |s, r| match rd.element(s, &args, &o, &r) {
                    Ok(v) => {
                        let acc = Expr::load(lanes, Expr::idx(0));
                        s.store(lanes, Expr::idx(0), reduce_combine(op, acc, v));
                    }
                    Err(e) => err = Some(e),
                },
            );
        }
        let total = s.local(Expr::load(lanes, Expr::idx(0)));
        for lane in 1..n_lanes {
            s.set(
                total,
                reduce_combine(op, Expr::Local(total), Expr::load(lanes, Expr::idx(lane))),
            );
        }
        s.store(out, o, round_to(dt, Expr::Local(total)));
    });
    if let Some(e) = err {
        return Err(e);
    }
    Ok(kb.finish(vec![body_phase]))
}
