//! Softmax kernels ([`Op::Softmax`] roots of fused groups, the group's other nodes computing the
//! softmax's input): one kernel per row takes the row's maximum, writes and sums the
//! exponentials, then scales them by the reciprocal of the sum. The row is read from memory by
//! the first pass and from cache by the later ones (which recompute the fused input). The
//! composite form (max, sum of exponentials, normalisation) took three kernels that each read
//! the row from memory, two of them recomputing the exponentials.
//!
//! - [`softmax_kernel`]: one block per row, maximum and sum reduced through shared-memory trees
//!   (the GPU kernel);
//! - [`softmax_kernel_host`]: one thread per row, the sum accumulated in `host_lanes`
//!   partial sums so the loop vectorises (the host variant).
//!
//! Values are f32; a 16-bit output is rounded once, after the division (the exponentials are
//! recomputed for the division rather than read back rounded).

use super::fused::{declare_args, round_to, tree_reduce, unary, BodyEval};
use super::index::{add, mul, next_pow2, unravel};
use super::rows::{host_grid_for, per_item, row_base, stride, without_axis};
use crate::kir::{Access, BlockStmt, BufRef, Expr, KBinary, Kernel, KernelBuilder, Scope, VTy};
use crate::CodegenError;
use mmada_ir::{DType, FusedBody, Op, Operand, ReduceOp, Shape, UnaryOp};

/// The facts of the softmax at a fused body's root.
struct Rows<'b> {
    body: &'b FusedBody,
    src: Operand,
    shape: Shape,
    axis: usize,
    /// Row length.
    len: u64,
    rows: u64,
    dt: DType,
}

impl<'b> Rows<'b> {
    fn of(body: &'b FusedBody) -> Result<Self, CodegenError> {
        let root = &body.nodes[body.root];
        let Op::Softmax { axis } = root.op else {
            return Err(CodegenError::Unsupported {
                node: "fused body".into(),
                msg: "softmax kernel for a body whose root is not a softmax".into(),
            });
        };
        let len = root.shape.0[axis] as u64;
        Ok(Rows {
            body,
            src: root.operands[0],
            shape: root.shape.clone(),
            axis,
            len,
            rows: root.shape.numel() as u64 / len.max(1),
            dt: root.dtype,
        })
    }

    /// Linear index of element `j` of the row starting at `base` (in the output).
    fn at(&self, base: &Expr, j: &Expr) -> Expr {
        add(
            base.clone(),
            mul(j.clone(), Expr::idx(stride(&self.shape, self.axis))),
        )
    }

    /// The softmax's input at element `j` of row `o`, as f32.
    fn input(
        &self,
        s: &mut Scope,
        args: &[BufRef],
        o: &Expr,
        j: &Expr,
    ) -> Result<Expr, CodegenError> {
        let outer = unravel(o.clone(), &without_axis(&self.shape, self.axis));
        let mut it = outer.into_iter();
        let idx: Vec<Expr> = (0..self.shape.rank())
            .map(|d| {
                if d == self.axis {
                    j.clone()
                } else {
                    it.next().unwrap_or(Expr::idx(0))
                }
            })
            .collect();
        BodyEval::new(self.body, args).value(s, self.src, &idx)
    }

    /// `exp(x − m)` at element `j` of row `o`.
    fn exp_at(
        &self,
        s: &mut Scope,
        args: &[BufRef],
        o: &Expr,
        j: &Expr,
        m: &Expr,
    ) -> Result<Expr, CodegenError> {
        let x = self.input(s, args, o, j)?;
        let z = Expr::bin(KBinary::Sub, x, m.clone());
        Ok(s.let_(unary(UnaryOp::Exp, z, VTy::F32)))
    }

    /// Stores the final value of element `j`: the stored exponential (f32 outputs) or a
    /// recomputed one (16-bit outputs), times the reciprocal of the row's sum (within an ulp of
    /// the division, and a multiplication rather than a division per element).
    #[allow(clippy::too_many_arguments)]
    fn store_normalised(
        &self,
        s: &mut Scope,
        args: &[BufRef],
        out: BufRef,
        o: &Expr,
        base: &Expr,
        j: &Expr,
        m: &Expr,
        inv: &Expr,
    ) -> Result<(), CodegenError> {
        let at = s.let_(self.at(base, j));
        let e = if self.dt == DType::F32 {
            Expr::load(out, at.clone())
        } else {
            self.exp_at(s, args, o, j, m)?
        };
        let y = Expr::bin(KBinary::Mul, e, inv.clone());
        s.store(out, at, round_to(self.dt, y));
        Ok(())
    }
}

/// The output is read back (the stored exponentials) for f32, only written otherwise.
fn out_access(dt: DType) -> Access {
    if dt == DType::F32 {
        Access::ReadWrite
    } else {
        Access::Write
    }
}

/// Runs `f(j)` for this thread's elements of a row of `len` in a block of `block` threads:
/// `j` = thread id, + block, + 2·block, …
fn own_elements(s: &mut Scope, len: u64, block: u64, f: impl FnOnce(&mut Scope, Expr)) {
    s.for_(Expr::ThreadId, Expr::idx(len), Expr::idx(block), f);
}

/// One block per row: the GPU kernel.
pub fn softmax_kernel(
    name: &str,
    body: &FusedBody,
    max_block: u64,
) -> Result<Kernel, CodegenError> {
    let rw = Rows::of(body)?;
    let block = next_pow2(rw.len).clamp(32, max_block);
    let mut kb = KernelBuilder::new(name, rw.rows.max(1), block as u32);
    let args = declare_args(&mut kb, body);
    let out = kb.param("out", rw.dt, rw.shape.numel() as u64, out_access(rw.dt));
    let pmax = kb.shared("pmax", DType::F32, block);
    let psum = kb.shared("psum", DType::F32, block);
    let o = Expr::BlockId;
    let mut err = None;
    let mut note = |r: Result<(), CodegenError>| {
        if let Err(e) = r {
            err = Some(e);
        }
    };
    let mut stmts: Vec<BlockStmt> = vec![kb.phase(|s| {
        let m = s.local(Expr::f32(f32::NEG_INFINITY));
        own_elements(s, rw.len, block, |s, j| {
            note(rw.input(s, &args, &o, &j).map(|x| {
                s.set(m, Expr::bin(KBinary::Max, Expr::Local(m), x));
            }))
        });
        s.store(pmax, Expr::ThreadId, Expr::Local(m));
    })];
    stmts.extend(tree_reduce(&mut kb, pmax, ReduceOp::Max, block));
    stmts.push(BlockStmt::Barrier);
    stmts.push(kb.phase(|s| {
        let m = s.let_(Expr::load(pmax, Expr::idx(0)));
        let base = s.let_(row_base(&o, &rw.shape, rw.axis));
        let acc = s.local(Expr::f32(0.0));
        own_elements(s, rw.len, block, |s, j| {
            note(rw.exp_at(s, &args, &o, &j, &m).map(|e| {
                if rw.dt == DType::F32 {
                    s.store(out, rw.at(&base, &j), e.clone());
                }
                s.set(acc, Expr::bin(KBinary::Add, Expr::Local(acc), e));
            }))
        });
        s.store(psum, Expr::ThreadId, Expr::Local(acc));
    }));
    stmts.extend(tree_reduce(&mut kb, psum, ReduceOp::Sum, block));
    stmts.push(BlockStmt::Barrier);
    stmts.push(kb.phase(|s| {
        let m = s.let_(Expr::load(pmax, Expr::idx(0)));
        let sum = Expr::load(psum, Expr::idx(0));
        let inv = s.let_(Expr::bin(KBinary::Div, Expr::f32(1.0), sum));
        let base = s.let_(row_base(&o, &rw.shape, rw.axis));
        own_elements(s, rw.len, block, |s, j| {
            note(rw.store_normalised(s, &args, out, &o, &base, &j, &m, &inv))
        });
    }));
    err.map_or(Ok(kb.finish(stmts)), Err)
}

/// One thread per row: the host variant. The maximum is one accumulator (any order gives the
/// same maximum, and LLVM vectorises the loop); the sum runs in `n_lanes` partial sums (template knob `host_lanes`)
/// combined in order.
pub fn softmax_kernel_host(
    name: &str,
    body: &FusedBody,
    n_lanes: u64,
) -> Result<Kernel, CodegenError> {
    let rw = Rows::of(body)?;
    let (grid, block) = host_grid_for(rw.rows);
    let mut kb = KernelBuilder::new(name, grid, block);
    let args = declare_args(&mut kb, body);
    let out = kb.param("out", rw.dt, rw.shape.numel() as u64, out_access(rw.dt));
    let lanes = kb.private("lanes", DType::F32, n_lanes);
    let full = rw.len / n_lanes * n_lanes;
    let mut err = None;
    let mut note = |r: Result<(), CodegenError>| {
        if let Err(e) = r {
            err = Some(e);
        }
    };
    let phase = per_item(&mut kb, rw.rows, |s, o| {
        let o = s.let_(o);
        let base = s.let_(row_base(&o, &rw.shape, rw.axis));
        let m = s.local(Expr::f32(f32::NEG_INFINITY));
        s.for_(Expr::idx(0), Expr::idx(rw.len), Expr::idx(1), |s, j| {
            note(rw.input(s, &args, &o, &j).map(|x| {
                s.set(m, Expr::bin(KBinary::Max, Expr::Local(m), x));
            }))
        });
        let m = s.let_(Expr::Local(m));
        let lane_loop = |s: &mut Scope, f: &mut dyn FnMut(&mut Scope, Expr)| {
            s.for_(Expr::idx(0), Expr::idx(n_lanes), Expr::idx(1), |s, lane| {
                f(s, lane)
            })
        };
        lane_loop(s, &mut |s, lane| s.store(lanes, lane, Expr::f32(0.0)));
        // Exponential of element j, stored (f32 outputs) and added to partial sum `lane`.
        let mut exp_into = |s: &mut Scope, j: Expr, lane: Expr| {
            note(rw.exp_at(s, &args, &o, &j, &m).map(|e| {
                if rw.dt == DType::F32 {
                    s.store(out, rw.at(&base, &j), e.clone());
                }
                let acc = Expr::load(lanes, lane.clone());
                s.store(lanes, lane, Expr::bin(KBinary::Add, acc, e));
            }))
        };
        s.for_(
            Expr::idx(0),
            Expr::idx(full),
            Expr::idx(n_lanes),
            |s, j0| {
                lane_loop(s, &mut |s, lane| {
                    let j = s.let_(add(j0.clone(), lane.clone()));
                    exp_into(s, j, lane)
                })
            },
        );
        if full < rw.len {
            s.for_(Expr::idx(full), Expr::idx(rw.len), Expr::idx(1), |s, j| {
                exp_into(s, j, Expr::idx(0))
            });
        }
        let sum = s.local(Expr::load(lanes, Expr::idx(0)));
        for lane in 1..n_lanes {
            let l = Expr::load(lanes, Expr::idx(lane));
            s.set(sum, Expr::bin(KBinary::Add, Expr::Local(sum), l));
        }
        let inv = s.let_(Expr::bin(KBinary::Div, Expr::f32(1.0), Expr::Local(sum)));
        s.for_(Expr::idx(0), Expr::idx(rw.len), Expr::idx(1), |s, j| {
            note(rw.store_normalised(s, &args, out, &o, &base, &j, &m, &inv))
        });
    });
    err.map_or(Ok(kb.finish(vec![phase])), Err)
}
