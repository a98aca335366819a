//! Host lane split: how a phase's thread loop is laid out so that LLVM can vectorise it.
//!
//! On the host a phase is a loop over thread ids. Fused kernels compute their indices from the
//! flat element number with `div` and `rem` (`p[((i / 32) % 256) * 256 + i % 32]` for a head
//! transpose), which LLVM's vectoriser cannot see through: such kernels ran one element at a
//! time. Here the loop becomes `for base in (0..block).step_by(LANES) { for lane in 0..LANES }`,
//! with `LANES` the host's f32 vector width (the templates' `host_lanes`: 16 with AVX-512),
//! and every index expression is rewritten, exactly, as `u + c·lane` where `u` does not depend
//! on the lane whenever the arithmetic allows it:
//!
//! - `tid` is `base + lane`, and `base` is a multiple of `LANES`;
//! - `(u + c·lane) % D` is `u % D + c·lane`, and `(u + c·lane) / D` is `u / D`, when `D` and
//!   `u` are both multiples of `LANES·c` (then `u % D + c·lane` stays below `D`);
//! - sums and products by constants keep the form, tracking what `u` is a multiple of.
//!
//! Nothing is moved or reordered: each rewritten expression is evaluated where the original
//! was, so the rewrite is exact for every value (the tests evaluate both forms).

use super::{BlockStmt, Const, Expr, KBinary, Kernel, Stmt, VTy, VarId};
use std::collections::HashMap;

/// A phase body rewritten for the two-level thread loop.
pub struct LaneSplit {
    /// The outer loop's variable (a multiple of the lane count).
    pub base: VarId,
    /// The inner loop's variable, `0..lanes`.
    pub lane: VarId,
    /// The rewritten statements (they read `tid` only through `base` and `lane`).
    pub body: Vec<Stmt>,
}

/// A copy of `k` with index variables appended for the rewrite (the base, the lane and one per
/// `let`, the most [`split_phase`] can create in a phase); returns it with the first new id.
pub fn with_lane_vars(k: &Kernel) -> (Kernel, u32) {
    fn lets(stmts: &[Stmt]) -> usize {
        stmts
            .iter()
            .map(|s| match s {
                Stmt::Let { .. } => 1,
                Stmt::For { body, .. } => lets(body),
                Stmt::If {
                    then, otherwise, ..
                } => lets(then) + lets(otherwise),
                Stmt::Set { .. } | Stmt::Store { .. } => 0,
            })
            .sum()
    }
    fn most(stmts: &[BlockStmt]) -> usize {
        stmts
            .iter()
            .map(|s| match s {
                BlockStmt::Phase(body) | BlockStmt::LanePhase { body, .. } => lets(body),
                BlockStmt::For { body, .. } => most(body),
                BlockStmt::Barrier | BlockStmt::Shuffle { .. } | BlockStmt::Mma(_) => 0,
            })
            .max()
            .unwrap_or(0)
    }
    let mut out = k.clone();
    let first = k.vars.len() as u32;
    out.vars
        .extend(std::iter::repeat_n(VTy::Index, most(&k.body) + 2));
    (out, first)
}

/// `u + c·lane`, with `u` independent of the lane and a multiple of `align` (0: `u` is 0).
#[derive(Clone, Debug)]
struct Affine {
    u: Expr,
    align: u64,
    c: u64,
    /// `u` is known to be non-negative (all index values are; signed ones may not be).
    nonneg: bool,
}

/// What is known about a value across the lanes.
#[derive(Clone, Debug)]
enum Form {
    Affine(Affine),
    /// Depends on the lane in an unknown way.
    Varying,
}

impl Form {
    fn uniform(u: Expr, align: u64, nonneg: bool) -> Form {
        Form::Affine(Affine {
            u,
            align,
            c: 0,
            nonneg,
        })
    }
    fn is_uniform(&self) -> bool {
        matches!(self, Form::Affine(a) if a.c == 0)
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

struct Rewriter {
    block: u64,
    /// Lanes of the inner loop.
    lanes: u64,
    /// A `div` or `rem` by less than the block size was made lane-affine: the flat thread
    /// loop would not vectorise, the split one does.
    helps: bool,
    base: VarId,
    lane: VarId,
    next: u32,
    forms: HashMap<VarId, Form>,
}

/// Rewrites one phase body of a kernel with `block` threads; fresh variables are numbered from
/// `first_free_var`. `None` when the split would not help: no thread-dependent `div` or `rem`
/// by less than the block size, which LLVM sees through itself (the flat loop then vectorises
/// better, as the split loop of 16 lanes is fully unrolled before LLVM's loop vectoriser runs).
pub fn split_phase(
    body: &[Stmt],
    block: u64,
    lanes: u64,
    first_free_var: u32,
) -> Option<LaneSplit> {
    if lanes < 2 || !block.is_multiple_of(lanes) {
        return None;
    }
    let mut r = Rewriter {
        block,
        lanes,
        helps: false,
        base: VarId(first_free_var),
        lane: VarId(first_free_var + 1),
        next: first_free_var + 2,
        forms: HashMap::new(),
    };
    let body = r.stmts(body);
    r.helps.then_some(LaneSplit {
        base: r.base,
        lane: r.lane,
        body,
    })
}

impl Rewriter {
    fn lane_term(&self, c: u64) -> Expr {
        let lane = Expr::Var(self.lane);
        if c == 1 {
            lane
        } else {
            Expr::bin(KBinary::Mul, lane, Expr::idx(c))
        }
    }

    /// The expression of an affine value.
    fn build(&self, a: &Affine) -> Expr {
        if a.c == 0 {
            a.u.clone()
        } else {
            Expr::bin(KBinary::Add, a.u.clone(), self.lane_term(a.c))
        }
    }

    /// Rewrites `e`; returns the new expression and its form (for an affine value the new
    /// expression is `build` of the form).
    fn expr(&mut self, e: &Expr) -> (Expr, Form) {
        match e {
            Expr::Const(Const::Index(k)) => (e.clone(), Form::uniform(e.clone(), *k, true)),
            Expr::Const(_) => (e.clone(), Form::uniform(e.clone(), 1, false)),
            Expr::ThreadId => {
                let a = Affine {
                    u: Expr::Var(self.base),
                    align: self.lanes,
                    c: 1,
                    nonneg: true,
                };
                (self.build(&a), Form::Affine(a))
            }
            Expr::BlockId => (e.clone(), Form::uniform(e.clone(), 1, true)),
            // `tid % 32` on the host, computed from the split thread id as it stands.
            Expr::LaneId => (e.clone(), Form::Varying),
            Expr::Var(v) => match self.forms.get(v) {
                Some(Form::Affine(a)) => {
                    let a = a.clone();
                    (self.build(&a), Form::Affine(a))
                }
                Some(Form::Varying) => (e.clone(), Form::Varying),
                // Defined outside the phase (block-level loops): the same for every thread.
                None => (e.clone(), Form::uniform(e.clone(), 1, false)),
            },
            Expr::Local(_) => (e.clone(), Form::Varying),
            Expr::Load { buf, index } => {
                let (i, form) = self.expr(index);
                let out = Expr::load(*buf, i);
                if form.is_uniform() {
                    (out.clone(), Form::uniform(out, 1, false))
                } else {
                    (out, Form::Varying)
                }
            }
            Expr::Binary(op, a, b) => self.binary(*op, a, b),
            Expr::Unary(op, a) => {
                let a = self.expr(a);
                let out = Expr::un(*op, a.0);
                self.all_uniform(out, &[&a.1])
            }
            Expr::Cmp(op, a, b) => {
                let (a, b) = (self.expr(a), self.expr(b));
                let out = Expr::cmp(*op, a.0, b.0);
                self.all_uniform(out, &[&a.1, &b.1])
            }
            Expr::Select(c, a, b) => {
                let (c, a, b) = (self.expr(c), self.expr(a), self.expr(b));
                let out = Expr::select(c.0, a.0, b.0);
                self.all_uniform(out, &[&c.1, &a.1, &b.1])
            }
            Expr::Cast(t, a) => {
                let a = self.expr(a);
                let out = Expr::cast(*t, a.0);
                self.all_uniform(out, &[&a.1])
            }
            Expr::Bitcast(t, a) => {
                let a = self.expr(a);
                let out = Expr::bitcast(*t, a.0);
                self.all_uniform(out, &[&a.1])
            }
            Expr::Fma(a, b, c) => {
                let (a, b, c) = (self.expr(a), self.expr(b), self.expr(c));
                let out = Expr::fma(a.0, b.0, c.0);
                self.all_uniform(out, &[&a.1, &b.1, &c.1])
            }
        }
    }

    fn all_uniform(&self, out: Expr, parts: &[&Form]) -> (Expr, Form) {
        if parts.iter().all(|f| f.is_uniform()) {
            (out.clone(), Form::uniform(out, 1, false))
        } else {
            (out, Form::Varying)
        }
    }

    fn binary(&mut self, op: KBinary, a: &Expr, b: &Expr) -> (Expr, Form) {
        let (ea, fa) = self.expr(a);
        let (eb, fb) = self.expr(b);
        let konst = |e: &Expr| match e {
            Expr::Const(Const::Index(k)) => Some(*k),
            _ => None,
        };
        let (x, y) = match (&fa, &fb) {
            (Form::Affine(x), Form::Affine(y)) => (x.clone(), y.clone()),
            _ => return (Expr::bin(op, ea, eb), Form::Varying),
        };
        let affine = |this: &Self, a: Affine| (this.build(&a), Form::Affine(a));
        match op {
            KBinary::Add => affine(
                self,
                Affine {
                    u: Expr::bin(KBinary::Add, x.u, y.u),
                    align: gcd(x.align, y.align),
                    c: x.c + y.c,
                    nonneg: x.nonneg && y.nonneg,
                },
            ),
            KBinary::Mul if konst(b).is_some() || konst(a).is_some() => {
                let (v, k) = match konst(b) {
                    Some(k) => (x, k),
                    None => (y, konst(a).unwrap_or(1)),
                };
                affine(
                    self,
                    Affine {
                        u: Expr::bin(KBinary::Mul, v.u, Expr::idx(k)),
                        align: v.align.saturating_mul(k),
                        c: v.c * k,
                        nonneg: v.nonneg,
                    },
                )
            }
            KBinary::Rem | KBinary::Div if konst(b).is_some_and(|d| d > 0) => {
                let d = konst(b).unwrap_or(1);
                let lanes = self.lanes * x.c;
                let exact = x.c == 0 || (x.nonneg && d % lanes == 0 && x.align % lanes == 0);
                if !exact {
                    return (Expr::bin(op, ea, eb), Form::Varying);
                }
                if x.c > 0 && d < self.block {
                    self.helps = true;
                }
                let u = Expr::bin(op, x.u, eb);
                if op == KBinary::Rem {
                    affine(
                        self,
                        Affine {
                            u,
                            align: gcd(x.align, d),
                            c: x.c,
                            nonneg: x.nonneg,
                        },
                    )
                } else {
                    affine(
                        self,
                        Affine {
                            u,
                            align: 1,
                            c: 0,
                            nonneg: x.nonneg,
                        },
                    )
                }
            }
            _ if x.c == 0 && y.c == 0 => {
                let out = Expr::bin(op, ea, eb);
                (out.clone(), Form::uniform(out, 1, false))
            }
            _ => (Expr::bin(op, ea, eb), Form::Varying),
        }
    }

    fn fresh(&mut self) -> VarId {
        let v = VarId(self.next);
        self.next += 1;
        v
    }

    fn stmts(&mut self, stmts: &[Stmt]) -> Vec<Stmt> {
        let mut out = Vec::with_capacity(stmts.len());
        for s in stmts {
            match s {
                Stmt::Let { var, value } => {
                    let (e, f) = self.expr(value);
                    match f {
                        // Name the lane-free part so later uses share it.
                        Form::Affine(a) if a.c > 0 => {
                            let u = self.fresh();
                            out.push(Stmt::Let { var: u, value: a.u });
                            let a = Affine {
                                u: Expr::Var(u),
                                ..a
                            };
                            out.push(Stmt::Let {
                                var: *var,
                                value: self.build(&a),
                            });
                            self.forms.insert(*var, Form::Affine(a));
                        }
                        Form::Affine(a) => {
                            out.push(Stmt::Let {
                                var: *var,
                                value: e,
                            });
                            let a = Affine {
                                u: Expr::Var(*var),
                                ..a
                            };
                            self.forms.insert(*var, Form::Affine(a));
                        }
                        Form::Varying => {
                            out.push(Stmt::Let {
                                var: *var,
                                value: e,
                            });
                            self.forms.insert(*var, Form::Varying);
                        }
                    }
                }
                Stmt::Set { local, value } => out.push(Stmt::Set {
                    local: *local,
                    value: self.expr(value).0,
                }),
                Stmt::Store { buf, index, value } => out.push(Stmt::Store {
                    buf: *buf,
                    index: self.expr(index).0,
                    value: self.expr(value).0,
                }),
                Stmt::For {
                    var,
                    start,
                    end,
                    step,
                    body,
                } => {
                    let (s0, f0) = self.expr(start);
                    let (s1, f1) = self.expr(end);
                    let (s2, f2) = self.expr(step);
                    let form = if f0.is_uniform() && f1.is_uniform() && f2.is_uniform() {
                        Form::uniform(Expr::Var(*var), 1, false)
                    } else {
                        Form::Varying
                    };
                    self.forms.insert(*var, form);
                    let body = self.stmts(body);
                    out.push(Stmt::For {
                        var: *var,
                        start: s0,
                        end: s1,
                        step: s2,
                        body,
                    });
                }
                Stmt::If {
                    cond,
                    then,
                    otherwise,
                } => {
                    let cond = self.expr(cond).0;
                    let then = self.stmts(then);
                    let otherwise = self.stmts(otherwise);
                    out.push(Stmt::If {
                        cond,
                        then,
                        otherwise,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kir::BufRef;

    /// Evaluates an index expression (`Load` of param 0 returns its index times 3 plus 1).
    fn eval(e: &Expr, tid: u64, bid: u64, vars: &HashMap<VarId, u64>) -> u64 {
        let ev = |x: &Expr| eval(x, tid, bid, vars);
        match e {
            Expr::Const(Const::Index(k)) => *k,
            Expr::ThreadId => tid,
            Expr::BlockId => bid,
            Expr::LaneId => tid % 32,
            Expr::Var(v) => vars[v],
            Expr::Load { index, .. } => ev(index) * 3 + 1,
            Expr::Binary(op, a, b) => {
                let (a, b) = (ev(a), ev(b));
                match op {
                    KBinary::Add => a.wrapping_add(b),
                    KBinary::Sub => a.wrapping_sub(b),
                    KBinary::Mul => a.wrapping_mul(b),
                    KBinary::Div => a / b,
                    KBinary::Rem => a % b,
                    KBinary::Min => a.min(b),
                    KBinary::Max => a.max(b),
                    _ => unreachable!(),
                }
            }
            _ => unreachable!("{e:?}"),
        }
    }

    /// Runs the statements (lets and stores only) and returns the stored (index, value) pairs.
    fn run(stmts: &[Stmt], tid: u64, bid: u64, vars: &mut HashMap<VarId, u64>) -> Vec<(u64, u64)> {
        let mut out = vec![];
        for s in stmts {
            match s {
                Stmt::Let { var, value } => {
                    let v = eval(value, tid, bid, vars);
                    vars.insert(*var, v);
                }
                Stmt::Store { index, value, .. } => {
                    out.push((eval(index, tid, bid, vars), eval(value, tid, bid, vars)))
                }
                _ => unreachable!(),
            }
        }
        out
    }

    /// A random index expression over `tid`, `bid`, earlier variables and loads.
    fn random_expr(r: &mut u64, depth: u32, vars: u32) -> Expr {
        let mut next = || {
            *r ^= *r << 13;
            *r ^= *r >> 7;
            *r ^= *r << 17;
            *r
        };
        let pick = next() % if depth == 0 { 4 } else { 10 };
        let konst = [1u64, 3, 8, 16, 32, 48, 64, 256, 8192][(next() % 9) as usize];
        match pick {
            0 => Expr::ThreadId,
            1 => Expr::BlockId,
            2 => Expr::idx(konst),
            3 if vars > 0 => Expr::Var(VarId((next() % vars as u64) as u32)),
            3 => Expr::ThreadId,
            4 => Expr::bin(
                KBinary::Rem,
                random_expr(r, depth - 1, vars),
                Expr::idx(konst),
            ),
            5 => Expr::bin(
                KBinary::Div,
                random_expr(r, depth - 1, vars),
                Expr::idx(konst),
            ),
            6 => Expr::bin(
                KBinary::Mul,
                random_expr(r, depth - 1, vars),
                Expr::idx(konst.min(256)),
            ),
            7 => Expr::load(BufRef::Param(0), random_expr(r, depth - 1, vars)),
            8 => Expr::bin(
                KBinary::Min,
                random_expr(r, depth - 1, vars),
                random_expr(r, depth - 1, vars),
            ),
            _ => Expr::bin(
                KBinary::Add,
                random_expr(r, depth - 1, vars),
                random_expr(r, depth - 1, vars),
            ),
        }
    }

    #[test]
    fn rewrite_is_exact_for_every_thread() {
        let mut r = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..300 {
            let mut body = vec![];
            for v in 0..4u32 {
                body.push(Stmt::Let {
                    var: VarId(v),
                    value: random_expr(&mut r, 4, v),
                });
            }
            body.push(Stmt::Store {
                buf: BufRef::Param(1),
                index: random_expr(&mut r, 4, 4),
                value: Expr::Var(VarId(3)),
            });
            let lanes = [16, 8, 4][(r % 3) as usize];
            let Some(split) = split_phase(&body, 256, lanes, 4) else {
                continue;
            };
            for bid in [0u64, 1, 7, 300] {
                for tid in 0..256u64 {
                    let want = run(&body, tid, bid, &mut HashMap::new());
                    let mut vars = HashMap::new();
                    vars.insert(split.base, tid / lanes * lanes);
                    vars.insert(split.lane, tid % lanes);
                    let got = run(&split.body, 0, bid, &mut vars);
                    assert_eq!(got, want, "tid {tid} bid {bid}: {body:?}");
                }
            }
        }
    }

    #[test]
    fn head_transpose_indices_become_contiguous_in_the_lane() {
        // v0 = bid·256 + tid; p[((v0 / 32) % 256) · 256 + v0 % 32]
        let v0 = Expr::bin(
            KBinary::Add,
            Expr::bin(KBinary::Mul, Expr::BlockId, Expr::idx(256)),
            Expr::ThreadId,
        );
        let body = vec![
            Stmt::Let {
                var: VarId(0),
                value: v0,
            },
            Stmt::Store {
                buf: BufRef::Param(1),
                index: Expr::Var(VarId(0)),
                value: Expr::load(
                    BufRef::Param(0),
                    Expr::bin(
                        KBinary::Add,
                        Expr::bin(
                            KBinary::Mul,
                            Expr::bin(
                                KBinary::Rem,
                                Expr::bin(KBinary::Div, Expr::Var(VarId(0)), Expr::idx(32)),
                                Expr::idx(256),
                            ),
                            Expr::idx(256),
                        ),
                        Expr::bin(KBinary::Rem, Expr::Var(VarId(0)), Expr::idx(32)),
                    ),
                ),
            },
        ];
        let split = split_phase(&body, 256, 16, 1).expect("a div by 32 < 256 threads");
        let Stmt::Store { value, .. } = &split.body[2] else {
            panic!("{:?}", split.body)
        };
        let Expr::Load { index, .. } = value else {
            panic!("{value:?}")
        };
        // The load index is `uniform + lane`.
        let Expr::Binary(KBinary::Add, _, lane) = &**index else {
            panic!("{index:?}")
        };
        assert_eq!(**lane, Expr::Var(split.lane));
    }
}
