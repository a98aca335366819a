//! KIR → MLIR (func/scf/arith/memref/llvm-intrinsic ops), for both targets.
//!
//! The same statement and expression code serves the host and the GPU; they differ only in how
//! the thread and block ids, shared and private buffers and barriers are realised
//! (see [`crate::kir`] for the model):
//! - host: `scf.for` over the block range given to the function, each phase an `scf.for` over
//!   thread ids; shared buffers are allocas reused by every block; private buffer `i` of thread
//!   `t` lives at `t*len + i` of one alloca; barriers separate phases and need no instruction;
//! - GPU: `gpu.thread_id x` / `gpu.block_id x`, shared buffers are workgroup attributions,
//!   private buffers and locals are allocas, barriers are `gpu.barrier`.
//!
//! No `math` dialect op is used: transcendentals come from [`super::mathlib`] and f16/bf16
//! conversions are integer code, so both targets compute the same bits and the GPU path needs no
//! libdevice.

use crate::kir::{
    BlockStmt, BufRef, Const, Expr, KBinary, KCmp, KUnary, Kernel, ShuffleMode, Stmt, VTy, WARP,
};
use crate::CodegenError;
use melior::{
    dialect::arith::CmpfPredicate,
    dialect::arith::CmpiPredicate,
    ir::{
        attribute::{FloatAttribute, IntegerAttribute},
        operation::OperationBuilder,
        r#type::{IntegerType, MemRefType},
        Attribute, Block, BlockLike, Identifier, Location, Region, RegionLike, Type, Value,
        ValueLike,
    },
    Context,
};
use mlir_sys::MlirValue;
use mmada_ir::DType;
use std::collections::HashMap;

/// Which lowering is being produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// In-process host code.
    Host,
    /// A CUDA kernel (NVVM).
    Gpu,
}

/// A raw SSA value (lifetime-free; valid while its defining op lives in the module).
pub(crate) type V = MlirValue;

/// Emits one kernel body.
pub(crate) struct Emitter<'c, 'k> {
    pub(crate) c: &'c Context,
    pub(crate) loc: Location<'c>,
    pub(crate) target: Target,
    pub(crate) k: &'k Kernel,
    vars: HashMap<u32, V>,
    locals: Vec<V>,
    pub(crate) params: Vec<V>,
    pub(crate) shared: Vec<V>,
    pub(crate) private: Vec<V>,
    tid: Option<V>,
    bid: Option<V>,
}

pub(crate) fn val<'c, 'a>(v: V) -> Value<'c, 'a> {
    // SAFETY: `v` was produced by an operation of the module being built; the module outlives
    // the emitter, so the value is live.
    unsafe { Value::from_raw(v) }
}

impl<'c, 'k> Emitter<'c, 'k> {
    pub(crate) fn new(c: &'c Context, target: Target, k: &'k Kernel) -> Emitter<'c, 'k> {
        Emitter {
            c,
            loc: Location::unknown(c),
            target,
            k,
            vars: HashMap::new(),
            locals: Vec::new(),
            params: Vec::new(),
            shared: Vec::new(),
            private: Vec::new(),
            tid: None,
            bid: None,
        }
    }

    // ----- types -----

    pub(crate) fn vty(&self, t: VTy) -> Type<'c> {
        match t {
            VTy::F32 => Type::float32(self.c),
            VTy::I32 => IntegerType::new(self.c, 32).into(),
            VTy::I64 => IntegerType::new(self.c, 64).into(),
            VTy::Bool => IntegerType::new(self.c, 1).into(),
            VTy::Index => Type::index(self.c),
        }
    }

    pub(crate) fn storage_ty(&self, d: DType) -> Type<'c> {
        match d {
            DType::F64 => Type::float64(self.c),
            DType::F32 => Type::float32(self.c),
            DType::F16 | DType::BF16 => IntegerType::new(self.c, 16).into(),
            DType::I32 => IntegerType::new(self.c, 32).into(),
            DType::I64 => IntegerType::new(self.c, 64).into(),
            DType::Bool => IntegerType::new(self.c, 8).into(),
        }
    }

    pub(crate) fn memref(&self, elem: Type<'c>, len: u64, space: Option<&str>) -> Type<'c> {
        let space = space.and_then(|s| Attribute::parse(self.c, s));
        MemRefType::new(elem, &[len as i64], None, space).into()
    }

    pub(crate) fn i(&self, bits: u32) -> Type<'c> {
        IntegerType::new(self.c, bits).into()
    }

    // ----- generic op helpers -----

    /// Appends an op and returns its first result (if any).
    pub(crate) fn op(
        &self,
        b: &Block<'c>,
        name: &str,
        operands: &[V],
        results: &[Type<'c>],
        attrs: &[(&str, Attribute<'c>)],
    ) -> Result<Option<V>, CodegenError> {
        let ops: Vec<Value> = operands.iter().map(|&v| val(v)).collect();
        let attrs: Vec<(Identifier, Attribute)> = attrs
            .iter()
            .map(|(n, a)| (Identifier::new(self.c, n), *a))
            .collect();
        let op = OperationBuilder::new(name, self.loc)
            .add_operands(&ops)
            .add_results(results)
            .add_attributes(&attrs)
            .build()
            .map_err(|e| CodegenError::Mlir(format!("building {name}: {e}")))?;
        let r = b.append_operation(op);
        Ok(if results.is_empty() {
            None
        } else {
            Some(
                r.result(0)
                    .map_err(|e| CodegenError::Mlir(e.to_string()))?
                    .to_raw(),
            )
        })
    }

    /// Appends an op with exactly one result.
    pub(crate) fn op1(
        &self,
        b: &Block<'c>,
        name: &str,
        operands: &[V],
        result: Type<'c>,
    ) -> Result<V, CodegenError> {
        self.op(b, name, operands, &[result], &[])?
            .ok_or_else(|| CodegenError::Mlir(format!("{name} has no result")))
    }

    pub(crate) fn ty_of(&self, v: V) -> Type<'c> {
        val(v).r#type()
    }

    pub(crate) fn cst(&self, b: &Block<'c>, c: Const) -> Result<V, CodegenError> {
        let attr: Attribute = match c {
            Const::F32(v) => FloatAttribute::new(self.c, Type::float32(self.c), v as f64).into(),
            Const::I32(v) => IntegerAttribute::new(self.i(32), v as i64).into(),
            Const::I64(v) => IntegerAttribute::new(self.i(64), v).into(),
            Const::Bool(v) => IntegerAttribute::new(self.i(1), v as i64).into(),
            Const::Index(v) => IntegerAttribute::new(Type::index(self.c), v as i64).into(),
        };
        let ty = match c {
            Const::F32(_) => Type::float32(self.c),
            Const::I32(_) => self.i(32),
            Const::I64(_) => self.i(64),
            Const::Bool(_) => self.i(1),
            Const::Index(_) => Type::index(self.c),
        };
        self.op(b, "arith.constant", &[], &[ty], &[("value", attr)])?
            .ok_or_else(|| CodegenError::Mlir("constant".into()))
    }

    pub(crate) fn f(&self, b: &Block<'c>, v: f32) -> Result<V, CodegenError> {
        self.cst(b, Const::F32(v))
    }

    pub(crate) fn i32c(&self, b: &Block<'c>, v: i32) -> Result<V, CodegenError> {
        self.cst(b, Const::I32(v))
    }

    pub(crate) fn idx(&self, b: &Block<'c>, v: u64) -> Result<V, CodegenError> {
        self.cst(b, Const::Index(v))
    }

    /// Binary op whose result type equals the operand type.
    pub(crate) fn bin(&self, b: &Block<'c>, name: &str, x: V, y: V) -> Result<V, CodegenError> {
        let t = self.ty_of(x);
        self.op1(b, name, &[x, y], t)
    }

    pub(crate) fn cmpf(
        &self,
        b: &Block<'c>,
        p: CmpfPredicate,
        x: V,
        y: V,
    ) -> Result<V, CodegenError> {
        let attr = IntegerAttribute::new(self.i(64), p as i64).into();
        self.op(
            b,
            "arith.cmpf",
            &[x, y],
            &[self.i(1)],
            &[("predicate", attr)],
        )?
        .ok_or_else(|| CodegenError::Mlir("cmpf".into()))
    }

    pub(crate) fn cmpi(
        &self,
        b: &Block<'c>,
        p: CmpiPredicate,
        x: V,
        y: V,
    ) -> Result<V, CodegenError> {
        let attr = IntegerAttribute::new(self.i(64), p as i64).into();
        self.op(
            b,
            "arith.cmpi",
            &[x, y],
            &[self.i(1)],
            &[("predicate", attr)],
        )?
        .ok_or_else(|| CodegenError::Mlir("cmpi".into()))
    }

    pub(crate) fn select(&self, b: &Block<'c>, c: V, x: V, y: V) -> Result<V, CodegenError> {
        let t = self.ty_of(x);
        self.op1(b, "arith.select", &[c, x, y], t)
    }

    pub(crate) fn cast(
        &self,
        b: &Block<'c>,
        name: &str,
        x: V,
        to: Type<'c>,
    ) -> Result<V, CodegenError> {
        self.op1(b, name, &[x], to)
    }

    // ----- loops -----

    /// Emits `scf.for %i = lo to hi step st { body(%i) }`.
    pub(crate) fn for_loop(
        &mut self,
        b: &Block<'c>,
        lo: V,
        hi: V,
        st: V,
        body: impl FnOnce(&mut Self, &Block<'c>, V) -> Result<(), CodegenError>,
    ) -> Result<(), CodegenError> {
        let inner = Block::new(&[(Type::index(self.c), self.loc)]);
        let iv = inner
            .argument(0)
            .map_err(|e| CodegenError::Mlir(e.to_string()))?
            .to_raw();
        body(self, &inner, iv)?;
        self.op(&inner, "scf.yield", &[], &[], &[])?;
        let region = Region::new();
        region.append_block(inner);
        let op = OperationBuilder::new("scf.for", self.loc)
            .add_operands(&[val(lo), val(hi), val(st)])
            .add_regions([region])
            .build()
            .map_err(|e| CodegenError::Mlir(format!("scf.for: {e}")))?;
        b.append_operation(op);
        Ok(())
    }

    // ----- kernel structure -----

    /// Allocates locals (and, on the host, shared and private buffers) at function entry.
    pub(crate) fn alloc_entry(&mut self, entry: &Block<'c>) -> Result<(), CodegenError> {
        let segs = Attribute::parse(self.c, "array<i32: 0, 0>")
            .ok_or_else(|| CodegenError::Mlir("operandSegmentSizes".into()))?;
        let alloca = |this: &Self, ty: Type<'c>| -> Result<V, CodegenError> {
            this.op(
                entry,
                "memref.alloca",
                &[],
                &[ty],
                &[("operandSegmentSizes", segs)],
            )?
            .ok_or_else(|| CodegenError::Mlir("alloca".into()))
        };
        for &t in &self.k.locals.clone() {
            let ty = self.memref(self.vty(t), 1, None);
            let v = alloca(self, ty)?;
            self.locals.push(v);
        }
        match self.target {
            Target::Host => {
                for s in &self.k.shared.clone() {
                    let ty = self.memref(self.storage_ty(s.dtype), s.len, None);
                    let v = alloca(self, ty)?;
                    self.shared.push(v);
                }
                let threads = self.k.block as u64;
                for s in &self.k.private.clone() {
                    let ty = self.memref(self.storage_ty(s.dtype), s.len * threads, None);
                    let v = alloca(self, ty)?;
                    self.private.push(v);
                }
            }
            Target::Gpu => {
                for s in &self.k.private.clone() {
                    let ty = self.memref(self.storage_ty(s.dtype), s.len, None);
                    let v = alloca(self, ty)?;
                    self.private.push(v);
                }
                let x = Attribute::parse(self.c, "#gpu<dim x>")
                    .ok_or_else(|| CodegenError::Mlir("gpu dim".into()))?;
                self.tid = self.op(
                    entry,
                    "gpu.thread_id",
                    &[],
                    &[Type::index(self.c)],
                    &[("dimension", x)],
                )?;
                self.bid = self.op(
                    entry,
                    "gpu.block_id",
                    &[],
                    &[Type::index(self.c)],
                    &[("dimension", x)],
                )?;
            }
        }
        Ok(())
    }

    /// Emits the whole body. On the host, `blocks` is the `[begin, end)` range of block ids this
    /// call runs.
    pub(crate) fn body(
        &mut self,
        entry: &Block<'c>,
        blocks: Option<(V, V)>,
    ) -> Result<(), CodegenError> {
        let body = self.k.body.clone();
        match (self.target, blocks) {
            (Target::Host, Some((lo, hi))) => {
                let one = self.idx(entry, 1)?;
                self.for_loop(entry, lo, hi, one, |this, blk, bid| {
                    this.bid = Some(bid);
                    this.block_stmts(blk, &body)
                })
            }
            _ => self.block_stmts(entry, &body),
        }
    }

    fn block_stmts(&mut self, b: &Block<'c>, stmts: &[BlockStmt]) -> Result<(), CodegenError> {
        for s in stmts {
            match s {
                BlockStmt::LanePhase {
                    base,
                    lane,
                    lanes,
                    body,
                } => {
                    if self.target != Target::Host {
                        return Err(CodegenError::Kir(format!(
                            "{}: lane phases are host-only",
                            self.k.name
                        )));
                    }
                    // Two loops, bases and lanes, with indices rewritten as `uniform + lane`
                    // so that LLVM vectorises the lanes (see `kir::lanes`).
                    let lo = self.idx(b, 0)?;
                    let hi = self.idx(b, self.k.block as u64)?;
                    let n = self.idx(b, *lanes)?;
                    let one = self.idx(b, 1)?;
                    let (bv, lv) = (base.0, lane.0);
                    self.for_loop(b, lo, hi, n, |this, blk, base| {
                        this.vars.insert(bv, base);
                        let zero = this.idx(blk, 0)?;
                        this.for_loop(blk, zero, n, one, |this, blk, lane| {
                            this.vars.insert(lv, lane);
                            this.tid = this.op(
                                blk,
                                "arith.addi",
                                &[base, lane],
                                &[Type::index(this.c)],
                                &[],
                            )?;
                            this.stmts(blk, body)
                        })
                    })?;
                }
                BlockStmt::Phase(body) => match self.target {
                    Target::Host => {
                        let lo = self.idx(b, 0)?;
                        let hi = self.idx(b, self.k.block as u64)?;
                        let one = self.idx(b, 1)?;
                        self.for_loop(b, lo, hi, one, |this, blk, t| {
                            this.tid = Some(t);
                            this.stmts(blk, body)
                        })?;
                    }
                    Target::Gpu => self.stmts(b, body)?,
                },
                BlockStmt::Mma(ops) => match self.target {
                    Target::Host => {
                        return Err(CodegenError::Kir(format!(
                            "kernel {}: tensor-core products reach the host lowering only \
                             through the emulation pass (kir::passes::EmulateMma)",
                            self.k.name
                        )))
                    }
                    Target::Gpu => self.mma_gpu(b, ops)?,
                },
                BlockStmt::Barrier => {
                    if self.target == Target::Gpu {
                        self.op(b, "gpu.barrier", &[], &[], &[])?;
                    }
                }
                BlockStmt::Shuffle {
                    mode,
                    src,
                    src_index,
                    dst,
                    dst_index,
                } => match self.target {
                    Target::Host => {
                        self.shuffle_host(b, *mode, (*src, *src_index), (*dst, *dst_index))?
                    }
                    Target::Gpu => {
                        self.shuffle_gpu(b, *mode, (*src, *src_index), (*dst, *dst_index))?
                    }
                },
                BlockStmt::For {
                    var,
                    start,
                    end,
                    step,
                    body,
                } => {
                    let lo = self.expr(b, start)?;
                    let hi = self.expr(b, end)?;
                    let st = self.expr(b, step)?;
                    let var = var.0;
                    self.for_loop(b, lo, hi, st, |this, blk, iv| {
                        this.vars.insert(var, iv);
                        this.block_stmts(blk, body)
                    })?;
                }
            }
        }
        Ok(())
    }

    /// The host meaning of a warp shuffle: a loop over the block's threads, each reading the
    /// private slot of the thread of its warp that `mode` names (private buffers are laid out
    /// thread by thread, so that is an ordinary load).
    fn shuffle_host(
        &mut self,
        b: &Block<'c>,
        mode: ShuffleMode,
        src: (BufRef, u64),
        dst: (BufRef, u64),
    ) -> Result<(), CodegenError> {
        let (BufRef::Private(ps), BufRef::Private(pd)) = (src.0, dst.0) else {
            return Err(CodegenError::Kir("shuffles move private values".into()));
        };
        let (ms, ls) = (self.private[ps as usize], self.k.private[ps as usize].len);
        let (md, ld) = (self.private[pd as usize], self.k.private[pd as usize].len);
        let elem = self.storage_ty(self.k.private[ps as usize].dtype);
        let lo = self.idx(b, 0)?;
        let hi = self.idx(b, self.k.block as u64)?;
        let one = self.idx(b, 1)?;
        self.for_loop(b, lo, hi, one, |this, blk, t| {
            let w = this.idx(blk, WARP as u64)?;
            let lane = this.bin(blk, "arith.remui", t, w)?;
            let base = this.bin(blk, "arith.subi", t, lane)?;
            let from = match mode {
                ShuffleMode::Xor(m) => {
                    let m = this.idx(blk, m as u64)?;
                    this.bin(blk, "arith.xori", lane, m)?
                }
                ShuffleMode::Down(d) => {
                    let d = this.idx(blk, d as u64)?;
                    let cand = this.bin(blk, "arith.addi", lane, d)?;
                    let inside = this.cmpi(blk, CmpiPredicate::Ult, cand, w)?;
                    this.select(blk, inside, cand, lane)?
                }
                ShuffleMode::Idx(s) => this.idx(blk, s as u64)?,
            };
            let thread = this.bin(blk, "arith.addi", base, from)?;
            let (ls, si) = (this.idx(blk, ls)?, this.idx(blk, src.1)?);
            let at = this.bin(blk, "arith.muli", thread, ls)?;
            let at = this.bin(blk, "arith.addi", at, si)?;
            let v = this.op1(blk, "memref.load", &[ms, at], elem)?;
            let (ld, di) = (this.idx(blk, ld)?, this.idx(blk, dst.1)?);
            let to = this.bin(blk, "arith.muli", t, ld)?;
            let to = this.bin(blk, "arith.addi", to, di)?;
            this.op(blk, "memref.store", &[v, md, to], &[], &[])?;
            Ok(())
        })
    }

    /// A tensor-core product on the GPU: the bf16 slot pairs `2r, 2r + 1` of A and B packed
    /// into 32-bit registers (the lower slot in the low half), one `nvvm.mma.sync` m16n8k16
    /// (row-major A, column-major B, f32 accumulate), the four results stored back.
    fn mma_gpu(
        &mut self,
        b: &Block<'c>,
        ops: &crate::kir::mma::MmaOperands,
    ) -> Result<(), CodegenError> {
        use crate::kir::mma::{A_SLOTS, B_SLOTS, C_SLOTS};
        let i32t = self.i(32);
        let raw = |this: &Self, buf: BufRef, slot: u64| -> Result<V, CodegenError> {
            let i = this.idx(b, slot)?;
            let (m, i) = this.locate(b, buf, i)?;
            this.op1(b, "memref.load", &[m, i], this.i(16))
        };
        let sixteen = self.cst(b, Const::I32(16))?;
        let pack = |this: &Self, buf: BufRef, first: u64, n: u64| {
            (0..n / 2)
                .map(|r| -> Result<V, CodegenError> {
                    let lo = raw(this, buf, first + 2 * r)?;
                    let hi = raw(this, buf, first + 2 * r + 1)?;
                    let lo = this.cast(b, "arith.extui", lo, i32t)?;
                    let hi = this.cast(b, "arith.extui", hi, i32t)?;
                    let hi = this.bin(b, "arith.shli", hi, sixteen)?;
                    this.bin(b, "arith.ori", lo, hi)
                })
                .collect::<Result<Vec<V>, CodegenError>>()
        };
        let a = pack(self, ops.a.0, ops.a.1, A_SLOTS)?;
        let bb = pack(self, ops.b.0, ops.b.1, B_SLOTS)?;
        let mut c = Vec::new();
        for s in 0..C_SLOTS {
            let i = self.idx(b, ops.acc.1 + s)?;
            c.push(self.load(b, ops.acc.0, i)?);
        }
        let f32t = Type::float32(self.c);
        let result = Type::parse(self.c, "!llvm.struct<(f32, f32, f32, f32)>")
            .ok_or_else(|| CodegenError::Mlir("mma result type".into()))?;
        let attr = |s: &str| {
            Attribute::parse(self.c, s).ok_or_else(|| CodegenError::Mlir(format!("attr {s}")))
        };
        let operands: Vec<Value> = a.iter().chain(&bb).chain(&c).map(|&v| val(v)).collect();
        let op = OperationBuilder::new("nvvm.mma.sync", self.loc)
            .add_operands(&operands)
            .add_results(&[result])
            .add_attributes(&[
                (
                    Identifier::new(self.c, "layoutA"),
                    attr("#nvvm.mma_layout<row>")?,
                ),
                (
                    Identifier::new(self.c, "layoutB"),
                    attr("#nvvm.mma_layout<col>")?,
                ),
                (
                    Identifier::new(self.c, "multiplicandAPtxType"),
                    attr("#nvvm.mma_type<bf16>")?,
                ),
                (
                    Identifier::new(self.c, "multiplicandBPtxType"),
                    attr("#nvvm.mma_type<bf16>")?,
                ),
                (
                    Identifier::new(self.c, "shape"),
                    attr("#nvvm.shape<m = 16, n = 8, k = 16>")?,
                ),
                (
                    Identifier::new(self.c, "operandSegmentSizes"),
                    attr("array<i32: 4, 2, 4>")?,
                ),
            ])
            .build()
            .map_err(|e| CodegenError::Mlir(format!("building nvvm.mma.sync: {e}")))?;
        let d = b
            .append_operation(op)
            .result(0)
            .map_err(|e| CodegenError::Mlir(e.to_string()))?
            .to_raw();
        for s in 0..C_SLOTS {
            let pos = attr(&format!("array<i64: {s}>"))?;
            let v = self
                .op(b, "llvm.extractvalue", &[d], &[f32t], &[("position", pos)])?
                .ok_or_else(|| CodegenError::Mlir("extractvalue".into()))?;
            let i = self.idx(b, ops.acc.1 + s)?;
            self.store(b, ops.acc.0, i, v)?;
        }
        Ok(())
    }

    /// A warp shuffle on the GPU: `gpu.shuffle` (NVVM `shfl.sync`, full mask) of each thread's
    /// value; out-of-range `down` lanes keep their own value.
    fn shuffle_gpu(
        &mut self,
        b: &Block<'c>,
        mode: ShuffleMode,
        src: (BufRef, u64),
        dst: (BufRef, u64),
    ) -> Result<(), CodegenError> {
        let si = self.idx(b, src.1)?;
        let v = self.load(b, src.0, si)?;
        let (name, n) = match mode {
            ShuffleMode::Xor(m) => ("xor", m),
            ShuffleMode::Down(d) => ("down", d),
            ShuffleMode::Idx(s) => ("idx", s),
        };
        let offset = self.cst(b, Const::I32(n as i32))?;
        let width = self.cst(b, Const::I32(WARP as i32))?;
        let attr = Attribute::parse(self.c, &format!("#gpu<shuffle_mode {name}>"))
            .ok_or_else(|| CodegenError::Mlir("shuffle mode".into()))?;
        let op = OperationBuilder::new("gpu.shuffle", self.loc)
            .add_operands(&[val(v), val(offset), val(width)])
            .add_results(&[self.ty_of(v), self.i(1)])
            .add_attributes(&[(Identifier::new(self.c, "mode"), attr)])
            .build()
            .map_err(|e| CodegenError::Mlir(format!("building gpu.shuffle: {e}")))?;
        let r = b.append_operation(op);
        let got = r
            .result(0)
            .map_err(|e| CodegenError::Mlir(e.to_string()))?
            .to_raw();
        let valid = r
            .result(1)
            .map_err(|e| CodegenError::Mlir(e.to_string()))?
            .to_raw();
        let out = self.select(b, valid, got, v)?;
        let di = self.idx(b, dst.1)?;
        self.store(b, dst.0, di, out)
    }

    fn stmts(&mut self, b: &Block<'c>, stmts: &[Stmt]) -> Result<(), CodegenError> {
        for s in stmts {
            match s {
                Stmt::Let { var, value } => {
                    let v = self.expr(b, value)?;
                    self.vars.insert(var.0, v);
                }
                Stmt::Set { local, value } => {
                    let v = self.expr(b, value)?;
                    let zero = self.idx(b, 0)?;
                    let m = self.locals[local.0 as usize];
                    self.op(b, "memref.store", &[v, m, zero], &[], &[])?;
                }
                Stmt::Store { buf, index, value } => {
                    let i = self.expr(b, index)?;
                    let v = self.expr(b, value)?;
                    self.store(b, *buf, i, v)?;
                }
                Stmt::For {
                    var,
                    start,
                    end,
                    step,
                    body,
                } => {
                    let lo = self.expr(b, start)?;
                    let hi = self.expr(b, end)?;
                    let st = self.expr(b, step)?;
                    let var = var.0;
                    self.for_loop(b, lo, hi, st, |this, blk, iv| {
                        this.vars.insert(var, iv);
                        this.stmts(blk, body)
                    })?;
                }
                Stmt::If {
                    cond,
                    then,
                    otherwise,
                } => {
                    let c = self.expr(b, cond)?;
                    let tb = Block::new(&[]);
                    self.stmts(&tb, then)?;
                    self.op(&tb, "scf.yield", &[], &[], &[])?;
                    let eb = Block::new(&[]);
                    self.stmts(&eb, otherwise)?;
                    self.op(&eb, "scf.yield", &[], &[], &[])?;
                    let (tr, er) = (Region::new(), Region::new());
                    tr.append_block(tb);
                    er.append_block(eb);
                    let op = OperationBuilder::new("scf.if", self.loc)
                        .add_operands(&[val(c)])
                        .add_regions([tr, er])
                        .build()
                        .map_err(|e| CodegenError::Mlir(format!("scf.if: {e}")))?;
                    b.append_operation(op);
                }
            }
        }
        Ok(())
    }

    /// The memref and element index for an access (private buffers are thread-strided on the
    /// host).
    fn locate(&self, b: &Block<'c>, buf: BufRef, i: V) -> Result<(V, V), CodegenError> {
        Ok(match buf {
            BufRef::Param(p) => (self.params[p as usize], i),
            BufRef::Shared(s) => (self.shared[s as usize], i),
            BufRef::Private(p) => {
                let m = self.private[p as usize];
                match self.target {
                    Target::Gpu => (m, i),
                    Target::Host => {
                        let len = self.idx(b, self.k.private[p as usize].len)?;
                        let t = self
                            .tid
                            .ok_or_else(|| CodegenError::Mlir("no thread id".into()))?;
                        let base = self.bin(b, "arith.muli", t, len)?;
                        (m, self.bin(b, "arith.addi", base, i)?)
                    }
                }
            }
        })
    }

    /// The storage dtype of a buffer's elements.
    fn buf_dtype(&self, buf: BufRef) -> DType {
        match buf {
            BufRef::Param(p) => self.k.params[p as usize].dtype,
            BufRef::Shared(s) => self.k.shared[s as usize].dtype,
            BufRef::Private(p) => self.k.private[p as usize].dtype,
        }
    }

    /// Loads one element, widened to its value type (f16/bf16/f64 → f32, bool bytes → i1).
    fn load(&self, b: &Block<'c>, buf: BufRef, i: V) -> Result<V, CodegenError> {
        let (m, i) = self.locate(b, buf, i)?;
        let dt = self.buf_dtype(buf);
        let raw = self.op1(b, "memref.load", &[m, i], self.storage_ty(dt))?;
        match dt {
            DType::F64 => self.cast(b, "arith.truncf", raw, Type::float32(self.c)),
            DType::F16 => self.f16_bits_to_f32(b, raw),
            DType::BF16 => self.bf16_bits_to_f32(b, raw),
            DType::Bool => {
                let zero = self
                    .op(
                        b,
                        "arith.constant",
                        &[],
                        &[self.i(8)],
                        &[("value", IntegerAttribute::new(self.i(8), 0).into())],
                    )?
                    .ok_or_else(|| CodegenError::Mlir("constant".into()))?;
                self.cmpi(b, CmpiPredicate::Ne, raw, zero)
            }
            DType::F32 | DType::I32 | DType::I64 => Ok(raw),
        }
    }

    /// Stores one element, narrowed to its storage dtype (f32 → f16/bf16 nearest-even).
    fn store(&self, b: &Block<'c>, buf: BufRef, i: V, v: V) -> Result<(), CodegenError> {
        let (m, i) = self.locate(b, buf, i)?;
        let v = match self.buf_dtype(buf) {
            DType::F64 => self.cast(b, "arith.extf", v, Type::float64(self.c))?,
            DType::F16 => self.f32_to_f16_bits(b, v)?,
            DType::BF16 => self.f32_to_bf16_bits(b, v)?,
            DType::Bool => self.cast(b, "arith.extui", v, self.i(8))?,
            DType::F32 | DType::I32 | DType::I64 => v,
        };
        self.op(b, "memref.store", &[v, m, i], &[], &[])?;
        Ok(())
    }

    // ----- expressions -----

    pub(crate) fn expr(&mut self, b: &Block<'c>, e: &Expr) -> Result<V, CodegenError> {
        let ty = crate::kir::check::type_of(self.k, e).map_err(CodegenError::Kir)?;
        match e {
            Expr::Const(c) => self.cst(b, *c),
            Expr::Var(v) => self.vars.get(&v.0).copied().ok_or_else(|| {
                CodegenError::Kir(format!("{}: variable v{} has no value", self.k.name, v.0))
            }),
            Expr::Local(l) => {
                let zero = self.idx(b, 0)?;
                let m = self.locals[l.0 as usize];
                self.op1(b, "memref.load", &[m, zero], self.vty(ty))
            }
            Expr::ThreadId => self
                .tid
                .ok_or_else(|| CodegenError::Kir("thread id used outside a phase".into())),
            Expr::BlockId => self
                .bid
                .ok_or_else(|| CodegenError::Kir("block id unavailable".into())),
            Expr::LaneId => {
                let t = self
                    .tid
                    .ok_or_else(|| CodegenError::Kir("lane id used outside a phase".into()))?;
                let w = self.idx(b, WARP as u64)?;
                self.bin(b, "arith.remui", t, w)
            }
            Expr::Load { buf, index } => {
                let i = self.expr(b, index)?;
                self.load(b, *buf, i)
            }
            Expr::Unary(op, a) => {
                let x = self.expr(b, a)?;
                self.unary(b, *op, x, ty)
            }
            Expr::Binary(op, a, c) => {
                let x = self.expr(b, a)?;
                let y = self.expr(b, c)?;
                let at = crate::kir::check::type_of(self.k, a).map_err(CodegenError::Kir)?;
                self.binary(b, *op, x, y, at)
            }
            Expr::Cmp(op, a, c) => {
                let x = self.expr(b, a)?;
                let y = self.expr(b, c)?;
                let at = crate::kir::check::type_of(self.k, a).map_err(CodegenError::Kir)?;
                self.compare(b, *op, x, y, at)
            }
            Expr::Select(c, x, y) => {
                let c = self.expr(b, c)?;
                let x = self.expr(b, x)?;
                let y = self.expr(b, y)?;
                self.select(b, c, x, y)
            }
            Expr::Cast(to, a) => {
                let x = self.expr(b, a)?;
                let from = crate::kir::check::type_of(self.k, a).map_err(CodegenError::Kir)?;
                self.convert(b, x, from, *to)
            }
            Expr::Bitcast(to, a) => {
                let x = self.expr(b, a)?;
                self.cast(b, "arith.bitcast", x, self.vty(*to))
            }
            Expr::Fma(x, y, z) => {
                let x = self.expr(b, x)?;
                let y = self.expr(b, y)?;
                let z = self.expr(b, z)?;
                self.fma(b, x, y, z)
            }
        }
    }

    /// Calls an LLVM intrinsic by name (`llvm.call_intrinsic`). Used instead of the
    /// `llvm.intr.*` ops, which the GPU conversion rewrites into libdevice calls.
    pub(crate) fn intrinsic(
        &self,
        b: &Block<'c>,
        name: &str,
        args: &[V],
        result: Type<'c>,
    ) -> Result<V, CodegenError> {
        let segs = Attribute::parse(self.c, &format!("array<i32: {}, 0>", args.len()))
            .ok_or_else(|| CodegenError::Mlir("operandSegmentSizes".into()))?;
        let bundles = Attribute::parse(self.c, "array<i32>")
            .ok_or_else(|| CodegenError::Mlir("op_bundle_sizes".into()))?;
        let intrin = melior::ir::attribute::StringAttribute::new(self.c, name).into();
        self.op(
            b,
            "llvm.call_intrinsic",
            args,
            &[result],
            &[
                ("intrin", intrin),
                ("operandSegmentSizes", segs),
                ("op_bundle_sizes", bundles),
            ],
        )?
        .ok_or_else(|| CodegenError::Mlir(format!("{name} has no result")))
    }

    pub(crate) fn fma(&self, b: &Block<'c>, x: V, y: V, z: V) -> Result<V, CodegenError> {
        self.intrinsic(b, "llvm.fma.f32", &[x, y, z], Type::float32(self.c))
    }

    fn unary(&self, b: &Block<'c>, op: KUnary, x: V, ty: VTy) -> Result<V, CodegenError> {
        let t = self.vty(ty);
        match (op, ty) {
            (KUnary::Neg, VTy::F32) => self.op1(b, "arith.negf", &[x], t),
            (KUnary::Neg, _) => {
                let z = self.zero(b, ty)?;
                self.bin(b, "arith.subi", z, x)
            }
            (KUnary::Abs, VTy::F32) => self.intrinsic(b, "llvm.fabs.f32", &[x], t),
            (KUnary::Abs, _) => {
                let z = self.zero(b, ty)?;
                let n = self.bin(b, "arith.subi", z, x)?;
                let neg = self.cmpi(b, CmpiPredicate::Slt, x, z)?;
                self.select(b, neg, n, x)
            }
            (KUnary::Sqrt, _) => self.intrinsic(b, "llvm.sqrt.f32", &[x], t),
            (KUnary::Floor, _) => self.intrinsic(b, "llvm.floor.f32", &[x], t),
            (KUnary::Not, _) => {
                let ones = match ty {
                    VTy::Bool => self.cst(b, Const::Bool(true))?,
                    VTy::I32 => self.i32c(b, -1)?,
                    _ => self.cst(b, Const::I64(-1))?,
                };
                self.bin(b, "arith.xori", x, ones)
            }
            (KUnary::Exp, _) => self.exp(b, x),
            (KUnary::Log, _) => self.log(b, x),
            (KUnary::Sin, _) => self.sin_cos(b, x, false),
            (KUnary::Cos, _) => self.sin_cos(b, x, true),
            (KUnary::RoundF16, _) => {
                let h = self.f32_to_f16_bits(b, x)?;
                self.f16_bits_to_f32(b, h)
            }
            (KUnary::RoundBF16, _) => {
                let h = self.f32_to_bf16_bits(b, x)?;
                self.bf16_bits_to_f32(b, h)
            }
        }
    }

    fn zero(&self, b: &Block<'c>, ty: VTy) -> Result<V, CodegenError> {
        self.cst(
            b,
            match ty {
                VTy::F32 => Const::F32(0.0),
                VTy::I32 => Const::I32(0),
                VTy::I64 => Const::I64(0),
                VTy::Bool => Const::Bool(false),
                VTy::Index => Const::Index(0),
            },
        )
    }

    fn binary(&self, b: &Block<'c>, op: KBinary, x: V, y: V, ty: VTy) -> Result<V, CodegenError> {
        let float = ty == VTy::F32;
        let index = ty == VTy::Index;
        let name = match op {
            KBinary::Add if float => "arith.addf",
            KBinary::Add => "arith.addi",
            KBinary::Sub if float => "arith.subf",
            KBinary::Sub => "arith.subi",
            KBinary::Mul if float => "arith.mulf",
            KBinary::Mul => "arith.muli",
            KBinary::Div if float => "arith.divf",
            KBinary::Div if index => "arith.divui",
            KBinary::Div => "arith.divsi",
            KBinary::Rem if index => "arith.remui",
            KBinary::Rem => "arith.remsi",
            KBinary::Max if float => "arith.maximumf",
            KBinary::Max if index => "arith.maxui",
            KBinary::Max => "arith.maxsi",
            KBinary::Min if float => "arith.minimumf",
            KBinary::Min if index => "arith.minui",
            KBinary::Min => "arith.minsi",
            KBinary::And => "arith.andi",
            KBinary::Or => "arith.ori",
            KBinary::Xor => "arith.xori",
            KBinary::Shl => "arith.shli",
            KBinary::ShrU => "arith.shrui",
            KBinary::ShrS => "arith.shrsi",
        };
        self.bin(b, name, x, y)
    }

    fn compare(&self, b: &Block<'c>, op: KCmp, x: V, y: V, ty: VTy) -> Result<V, CodegenError> {
        match ty {
            VTy::F32 => {
                let p = match op {
                    KCmp::Lt => CmpfPredicate::Olt,
                    KCmp::Le => CmpfPredicate::Ole,
                    KCmp::Gt => CmpfPredicate::Ogt,
                    KCmp::Ge => CmpfPredicate::Oge,
                    KCmp::Eq => CmpfPredicate::Oeq,
                    KCmp::Ne => CmpfPredicate::Une,
                };
                self.cmpf(b, p, x, y)
            }
            _ => {
                let unsigned = matches!(ty, VTy::Index | VTy::Bool);
                let p = match (op, unsigned) {
                    (KCmp::Lt, false) => CmpiPredicate::Slt,
                    (KCmp::Le, false) => CmpiPredicate::Sle,
                    (KCmp::Gt, false) => CmpiPredicate::Sgt,
                    (KCmp::Ge, false) => CmpiPredicate::Sge,
                    (KCmp::Lt, true) => CmpiPredicate::Ult,
                    (KCmp::Le, true) => CmpiPredicate::Ule,
                    (KCmp::Gt, true) => CmpiPredicate::Ugt,
                    (KCmp::Ge, true) => CmpiPredicate::Uge,
                    (KCmp::Eq, _) => CmpiPredicate::Eq,
                    (KCmp::Ne, _) => CmpiPredicate::Ne,
                };
                self.cmpi(b, p, x, y)
            }
        }
    }

    /// f32 → signed integer of `bits` bits, truncating toward zero, saturating at the integer
    /// range, NaN → 0 (Rust `as` semantics; `fptosi` alone is undefined out of range).
    pub(crate) fn fptosi_sat(&self, b: &Block<'c>, x: V, bits: u32) -> Result<V, CodegenError> {
        let t = self.i(bits);
        let (lo, hi) = if bits == 32 {
            (-2_147_483_648.0f32, 2_147_483_520.0f32) // largest f32 below 2^31
        } else {
            (-9.223_372e18f32, 9.223_371_5e18f32) // f32 values just inside i64's range
        };
        let lov = self.f(b, lo)?;
        let hiv = self.f(b, hi)?;
        let c = self.bin(b, "arith.maximumf", x, lov)?;
        let c = self.bin(b, "arith.minimumf", c, hiv)?;
        let nan = self.cmpf(b, CmpfPredicate::Uno, x, x)?;
        let zero = self.f(b, 0.0)?;
        let c = self.select(b, nan, zero, c)?;
        let i = self.cast(b, "arith.fptosi", c, t)?;
        // Values at or above 2^31 (2^63) saturate to the maximum.
        let top = self.f(
            b,
            if bits == 32 {
                2_147_483_648.0
            } else {
                9.223_372e18
            },
        )?;
        let over = self.cmpf(b, CmpfPredicate::Oge, x, top)?;
        let max = self.cst(
            b,
            if bits == 32 {
                Const::I32(i32::MAX)
            } else {
                Const::I64(i64::MAX)
            },
        )?;
        self.select(b, over, max, i)
    }

    /// Numeric conversion between value types.
    pub(crate) fn convert(
        &self,
        b: &Block<'c>,
        x: V,
        from: VTy,
        to: VTy,
    ) -> Result<V, CodegenError> {
        use VTy::*;
        if from == to {
            return Ok(x);
        }
        let t = self.vty(to);
        match (from, to) {
            (F32, I32) => self.fptosi_sat(b, x, 32),
            (F32, I64) => self.fptosi_sat(b, x, 64),
            (F32, Index) => {
                let i = self.fptosi_sat(b, x, 64)?;
                self.cast(b, "arith.index_cast", i, t)
            }
            (F32, Bool) => {
                let z = self.f(b, 0.0)?;
                self.cmpf(b, CmpfPredicate::Une, x, z)
            }
            (I32 | I64, F32) => self.cast(b, "arith.sitofp", x, t),
            (Index, F32) => {
                let i = self.cast(b, "arith.index_cast", x, self.i(64))?;
                self.cast(b, "arith.sitofp", i, t)
            }
            (Bool, F32) => self.cast(b, "arith.uitofp", x, t),
            (I32, I64) => self.cast(b, "arith.extsi", x, t),
            (I64, I32) => self.cast(b, "arith.trunci", x, t),
            (I32 | I64, Index) | (Index, I32 | I64) => self.cast(b, "arith.index_cast", x, t),
            (Bool, I32 | I64) => self.cast(b, "arith.extui", x, t),
            (Bool, Index) => self.cast(b, "arith.index_castui", x, t),
            (I32 | I64 | Index, Bool) => {
                let z = self.zero(b, from)?;
                self.cmpi(b, CmpiPredicate::Ne, x, z)
            }
            _ => Err(CodegenError::Kir(format!(
                "no conversion {from:?} -> {to:?}"
            ))),
        }
    }
}
