//! KIR validation: types, variable scoping, and the barrier discipline (uniform block-level
//! control flow; no per-thread value crosses a phase boundary except through memory).

use super::{
    BlockStmt, BufRef, Const, Expr, KBinary, KUnary, Kernel, ShuffleMode, Stmt, VTy, WARP,
};
use std::collections::HashSet;

fn buf_ty(k: &Kernel, b: BufRef) -> Result<VTy, String> {
    match b {
        BufRef::Param(i) => k
            .params
            .get(i as usize)
            .map(|p| VTy::of_storage(p.dtype))
            .ok_or(format!("no parameter {i}")),
        BufRef::Shared(i) => k
            .shared
            .get(i as usize)
            .map(|s| VTy::of_storage(s.dtype))
            .ok_or(format!("no shared buffer {i}")),
        BufRef::Private(i) => k
            .private
            .get(i as usize)
            .map(|s| VTy::of_storage(s.dtype))
            .ok_or(format!("no private buffer {i}")),
    }
}

/// The type of an expression, or why it is ill-typed.
pub fn type_of(k: &Kernel, e: &Expr) -> Result<VTy, String> {
    Ok(match e {
        Expr::Const(c) => match c {
            Const::F32(_) => VTy::F32,
            Const::I32(_) => VTy::I32,
            Const::I64(_) => VTy::I64,
            Const::Bool(_) => VTy::Bool,
            Const::Index(_) => VTy::Index,
        },
        Expr::Var(v) => *k
            .vars
            .get(v.0 as usize)
            .ok_or(format!("no variable {}", v.0))?,
        Expr::Local(l) => *k
            .locals
            .get(l.0 as usize)
            .ok_or(format!("no local {}", l.0))?,
        Expr::ThreadId | Expr::BlockId | Expr::LaneId => VTy::Index,
        Expr::Load { buf, index } => {
            if type_of(k, index)? != VTy::Index {
                return Err("load index must be index-typed".into());
            }
            buf_ty(k, *buf)?
        }
        Expr::Unary(op, a) => {
            let t = type_of(k, a)?;
            let ok = match op {
                KUnary::Neg | KUnary::Abs => t != VTy::Bool,
                KUnary::Not => t == VTy::Bool || t.is_int(),
                _ => t == VTy::F32,
            };
            if !ok {
                return Err(format!("{op:?} on {t:?}"));
            }
            t
        }
        Expr::Binary(op, a, b) => {
            let (ta, tb) = (type_of(k, a)?, type_of(k, b)?);
            if ta != tb {
                return Err(format!("{op:?} on {ta:?} and {tb:?}"));
            }
            let ok = match op {
                KBinary::Add
                | KBinary::Sub
                | KBinary::Mul
                | KBinary::Div
                | KBinary::Max
                | KBinary::Min => ta != VTy::Bool,
                KBinary::Rem => ta.is_int(),
                KBinary::And | KBinary::Or | KBinary::Xor => ta != VTy::F32,
                KBinary::Shl | KBinary::ShrU | KBinary::ShrS => ta.is_int(),
            };
            if !ok {
                return Err(format!("{op:?} on {ta:?}"));
            }
            ta
        }
        Expr::Cmp(op, a, b) => {
            let (ta, tb) = (type_of(k, a)?, type_of(k, b)?);
            if ta != tb {
                return Err(format!("{op:?} on {ta:?} and {tb:?}"));
            }
            VTy::Bool
        }
        Expr::Select(c, a, b) => {
            if type_of(k, c)? != VTy::Bool {
                return Err("select condition must be bool".into());
            }
            let (ta, tb) = (type_of(k, a)?, type_of(k, b)?);
            if ta != tb {
                return Err(format!("select branches {ta:?} and {tb:?}"));
            }
            ta
        }
        Expr::Cast(to, a) => {
            type_of(k, a)?;
            *to
        }
        Expr::Bitcast(to, a) => {
            let t = type_of(k, a)?;
            match (t, to) {
                (VTy::F32, VTy::I32) | (VTy::I32, VTy::F32) => *to,
                _ => return Err(format!("bitcast {t:?} to {to:?}")),
            }
        }
        Expr::Fma(a, b, c) => {
            for x in [a, b, c] {
                if type_of(k, x)? != VTy::F32 {
                    return Err("fma operands must be f32".into());
                }
            }
            VTy::F32
        }
    })
}

struct Checker<'k> {
    k: &'k Kernel,
    defined: HashSet<u32>,
}

impl Checker<'_> {
    fn expr(&self, e: &Expr, uniform: bool) -> Result<VTy, String> {
        self.scan(e, uniform)?;
        type_of(self.k, e)
    }

    fn scan(&self, e: &Expr, uniform: bool) -> Result<(), String> {
        match e {
            Expr::Var(v) => {
                if !self.defined.contains(&v.0) {
                    return Err(format!("variable v{} used outside its scope", v.0));
                }
            }
            Expr::ThreadId if uniform => {
                return Err("a uniform loop bound depends on the thread id".into())
            }
            Expr::Local(_) if uniform => {
                return Err("a uniform loop bound depends on a per-thread local".into())
            }
            Expr::Load { buf, index } => {
                if uniform && !matches!(buf, BufRef::Param(_)) {
                    return Err("a uniform loop bound reads per-thread or shared memory".into());
                }
                self.scan(index, uniform)?;
            }
            Expr::Unary(_, a) | Expr::Cast(_, a) | Expr::Bitcast(_, a) => self.scan(a, uniform)?,
            Expr::Binary(_, a, b) | Expr::Cmp(_, a, b) => {
                self.scan(a, uniform)?;
                self.scan(b, uniform)?;
            }
            Expr::Select(a, b, c) | Expr::Fma(a, b, c) => {
                self.scan(a, uniform)?;
                self.scan(b, uniform)?;
                self.scan(c, uniform)?;
            }
            Expr::Const(_) | Expr::ThreadId | Expr::BlockId | Expr::LaneId | Expr::Local(_) => {}
        }
        Ok(())
    }

    fn define(&mut self, v: u32) -> Result<(), String> {
        if !self.defined.insert(v) {
            return Err(format!("variable v{v} is bound twice"));
        }
        Ok(())
    }

    fn stmts(&mut self, stmts: &[Stmt]) -> Result<(), String> {
        let saved = self.defined.clone();
        for s in stmts {
            match s {
                Stmt::Let { var, value } => {
                    let t = self.expr(value, false)?;
                    if self.k.vars.get(var.0 as usize) != Some(&t) {
                        return Err(format!("v{} declared with another type than {t:?}", var.0));
                    }
                    self.define(var.0)?;
                }
                Stmt::Set { local, value } => {
                    let t = self.expr(value, false)?;
                    if self.k.locals.get(local.0 as usize) != Some(&t) {
                        return Err(format!("local l{} assigned a {t:?}", local.0));
                    }
                }
                Stmt::Store { buf, index, value } => {
                    if self.expr(index, false)? != VTy::Index {
                        return Err("store index must be index-typed".into());
                    }
                    let t = self.expr(value, false)?;
                    if buf_ty(self.k, *buf)? != t {
                        return Err(format!("store of {t:?} into {buf:?}"));
                    }
                    if let BufRef::Param(i) = buf {
                        if self.k.params[*i as usize].access == super::Access::Read {
                            return Err(format!("store into read-only parameter {i}"));
                        }
                    }
                }
                Stmt::For {
                    var,
                    start,
                    end,
                    step,
                    body,
                } => {
                    for b in [start, end, step] {
                        if self.expr(b, false)? != VTy::Index {
                            return Err("loop bounds must be index-typed".into());
                        }
                    }
                    self.define(var.0)?;
                    self.stmts(body)?;
                }
                Stmt::If {
                    cond,
                    then,
                    otherwise,
                } => {
                    if self.expr(cond, false)? != VTy::Bool {
                        return Err("if condition must be bool".into());
                    }
                    self.stmts(then)?;
                    self.stmts(otherwise)?;
                }
            }
        }
        // Variables die at the end of the statement list that declared them.
        self.defined = saved;
        Ok(())
    }

    fn shuffle(
        &self,
        mode: ShuffleMode,
        src: (BufRef, u64),
        dst: (BufRef, u64),
    ) -> Result<(), String> {
        if !self.k.block.is_multiple_of(WARP) {
            return Err(format!(
                "a shuffle needs whole warps, the block has {} threads",
                self.k.block
            ));
        }
        let (ShuffleMode::Xor(n) | ShuffleMode::Down(n) | ShuffleMode::Idx(n)) = mode;
        if n >= WARP {
            return Err(format!("shuffle {mode:?}: lanes are 0..32"));
        }
        let mut ty = None;
        for (b, i) in [src, dst] {
            let BufRef::Private(p) = b else {
                return Err(format!("shuffles move private values, not {b:?}"));
            };
            let decl = &self.k.private[p as usize];
            if i >= decl.len {
                return Err(format!(
                    "shuffle slot {i} of {} (length {})",
                    decl.name, decl.len
                ));
            }
            if !matches!(decl.dtype, mmada_ir::DType::F32 | mmada_ir::DType::I32) {
                return Err(format!(
                    "shuffles move f32 or i32 values, {} is {}",
                    decl.name, decl.dtype
                ));
            }
            if ty.is_some_and(|t| t != decl.dtype) {
                return Err("shuffle source and destination differ in type".into());
            }
            ty = Some(decl.dtype);
        }
        if src == dst {
            return Err("a shuffle reads and writes one slot (the host needs them apart)".into());
        }
        Ok(())
    }

    fn mma(&self, ops: &super::mma::MmaOperands) -> Result<(), String> {
        use super::mma::{A_SLOTS, B_SLOTS, C_SLOTS};
        if !self.k.block.is_multiple_of(WARP) {
            return Err(format!(
                "a tensor-core product needs whole warps, the block has {} threads",
                self.k.block
            ));
        }
        let mut seen = Vec::new();
        for (what, (b, first), slots, dtype) in [
            ("A", ops.a, A_SLOTS, mmada_ir::DType::BF16),
            ("B", ops.b, B_SLOTS, mmada_ir::DType::BF16),
            ("accumulator", ops.acc, C_SLOTS, mmada_ir::DType::F32),
        ] {
            let BufRef::Private(p) = b else {
                return Err(format!("mma {what} fragment must be private, not {b:?}"));
            };
            let decl = &self.k.private[p as usize];
            if decl.dtype != dtype {
                return Err(format!(
                    "mma {what} fragment {} is {}, must be {dtype}",
                    decl.name, decl.dtype
                ));
            }
            if first + slots > decl.len {
                return Err(format!(
                    "mma {what} fragment {}[{first}..{}] passes its length {}",
                    decl.name,
                    first + slots,
                    decl.len
                ));
            }
            seen.push(p);
        }
        if seen[2] == seen[0] || seen[2] == seen[1] {
            return Err("the mma accumulator shares a buffer with an input fragment".into());
        }
        Ok(())
    }

    fn block_stmts(&mut self, stmts: &[BlockStmt]) -> Result<(), String> {
        for s in stmts {
            match s {
                BlockStmt::Phase(b) => self.stmts(b)?,
                BlockStmt::LanePhase {
                    base,
                    lane,
                    lanes,
                    body,
                } => {
                    if *lanes < 2 || !(self.k.block as u64).is_multiple_of(*lanes) {
                        return Err(format!(
                            "a lane phase of {lanes} lanes in a block of {}",
                            self.k.block
                        ));
                    }
                    for v in [base, lane] {
                        if self.k.vars.get(v.0 as usize) != Some(&VTy::Index) {
                            return Err(format!("lane variable v{} is not an index", v.0));
                        }
                        self.define(v.0)?;
                    }
                    self.stmts(body)?;
                    self.defined.remove(&base.0);
                    self.defined.remove(&lane.0);
                }
                BlockStmt::Barrier => {}
                BlockStmt::Mma(ops) => self.mma(ops)?,
                BlockStmt::Shuffle {
                    mode,
                    src,
                    src_index,
                    dst,
                    dst_index,
                } => self.shuffle(*mode, (*src, *src_index), (*dst, *dst_index))?,
                BlockStmt::For {
                    var,
                    start,
                    end,
                    step,
                    body,
                } => {
                    for b in [start, end, step] {
                        if self.expr(b, true)? != VTy::Index {
                            return Err("loop bounds must be index-typed".into());
                        }
                    }
                    self.define(var.0)?;
                    self.block_stmts(body)?;
                    self.defined.remove(&var.0);
                }
            }
        }
        Ok(())
    }
}

/// Validates a kernel; the error says what is wrong and where.
pub fn check(k: &Kernel) -> Result<(), String> {
    if k.block == 0 || k.block > 1024 {
        return Err(format!(
            "{}: block size {} not in 1..=1024",
            k.name, k.block
        ));
    }
    if k.grid == 0 || k.grid > i32::MAX as u64 {
        return Err(format!("{}: grid {} not in 1..=2^31-1", k.name, k.grid));
    }
    if k.private.iter().any(|p| p.dynamic) {
        return Err(format!("{}: private buffers cannot be dynamic", k.name));
    }
    let static_bytes: u64 = k
        .shared
        .iter()
        .filter(|s| !s.dynamic)
        .map(|s| s.len * s.dtype.size_bytes() as u64)
        .sum();
    if static_bytes > crate::template::GPU_STATIC_SHARED_BYTES {
        return Err(format!(
            "{}: {static_bytes} bytes of static shared memory, more than the {} a kernel may \
             declare (use dynamic shared buffers)",
            k.name,
            crate::template::GPU_STATIC_SHARED_BYTES
        ));
    }
    let (_, dynamic_bytes) = k.dynamic_shared_layout();
    if dynamic_bytes + static_bytes > crate::template::GPU_MAX_SHARED_BYTES {
        return Err(format!(
            "{}: {} bytes of shared memory, more than the {} an H100 block can have",
            k.name,
            dynamic_bytes + static_bytes,
            crate::template::GPU_MAX_SHARED_BYTES
        ));
    }
    let mut c = Checker {
        k,
        defined: HashSet::new(),
    };
    c.block_stmts(&k.body)
        .map_err(|e| format!("kernel {}: {e}", k.name))
}
