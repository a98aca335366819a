//! Helpers to write kernels: a [`KernelBuilder`] owns declarations, a [`Scope`] collects
//! per-thread statements.

use super::{
    check::type_of, Access, BlockStmt, BufRef, Expr, Kernel, LocalId, ParamDecl, ScratchDecl, Stmt,
    VTy, VarId,
};
use mmada_ir::DType;

/// Declares buffers, variables and locals of one kernel.
pub struct KernelBuilder {
    k: Kernel,
}

impl KernelBuilder {
    /// A kernel of `grid` blocks of `block` threads.
    pub fn new(name: &str, grid: u64, block: u32) -> KernelBuilder {
        KernelBuilder {
            k: Kernel {
                name: name.to_string(),
                params: Vec::new(),
                shared: Vec::new(),
                private: Vec::new(),
                locals: Vec::new(),
                vars: Vec::new(),
                grid,
                block,
                body: Vec::new(),
                template: None,
            },
        }
    }

    /// A builder adding to `k`'s declarations (its body is replaced by [`Self::finish`]).
    pub fn resume(k: Kernel) -> KernelBuilder {
        KernelBuilder { k }
    }

    /// The same builder launching `grid` blocks of `block` threads, for kernels whose launch
    /// is decided after their parameters are declared.
    pub fn with_launch(mut self, grid: u64, block: u32) -> KernelBuilder {
        self.k.grid = grid;
        self.k.block = block;
        self
    }

    /// Threads per block.
    pub fn block(&self) -> u32 {
        self.k.block
    }

    /// Declares the next global buffer parameter.
    pub fn param(&mut self, name: &str, dtype: DType, len: u64, access: Access) -> BufRef {
        self.k.params.push(ParamDecl {
            name: name.to_string(),
            dtype,
            len,
            access,
        });
        BufRef::Param(self.k.params.len() as u32 - 1)
    }

    /// Declares a per-block shared buffer.
    pub fn shared(&mut self, name: &str, dtype: DType, len: u64) -> BufRef {
        self.k.shared.push(ScratchDecl {
            name: name.to_string(),
            dtype,
            len,
            dynamic: false,
        });
        BufRef::Shared(self.k.shared.len() as u32 - 1)
    }

    /// Declares a per-block shared buffer in the launch's dynamic shared memory (for tiles
    /// above the 48 KiB a kernel may declare statically).
    pub fn shared_dynamic(&mut self, name: &str, dtype: DType, len: u64) -> BufRef {
        self.k.shared.push(ScratchDecl {
            name: name.to_string(),
            dtype,
            len,
            dynamic: true,
        });
        BufRef::Shared(self.k.shared.len() as u32 - 1)
    }

    /// Declares a per-thread buffer that survives barriers.
    pub fn private(&mut self, name: &str, dtype: DType, len: u64) -> BufRef {
        self.k.private.push(ScratchDecl {
            name: name.to_string(),
            dtype,
            len,
            dynamic: false,
        });
        BufRef::Private(self.k.private.len() as u32 - 1)
    }

    /// A fresh variable of type `ty`.
    pub fn var(&mut self, ty: VTy) -> VarId {
        self.k.vars.push(ty);
        VarId(self.k.vars.len() as u32 - 1)
    }

    /// A fresh mutable local of type `ty`.
    pub fn local(&mut self, ty: VTy) -> LocalId {
        self.k.locals.push(ty);
        LocalId(self.k.locals.len() as u32 - 1)
    }

    /// Type of an expression (index for ill-typed input; [`super::check`] reports errors).
    pub fn ty(&self, e: &Expr) -> VTy {
        type_of(&self.k, e).unwrap_or(VTy::Index)
    }

    /// A uniform loop at block level.
    pub fn block_for(
        &mut self,
        start: Expr,
        end: Expr,
        step: Expr,
        f: impl FnOnce(&mut KernelBuilder, Expr) -> Vec<BlockStmt>,
    ) -> BlockStmt {
        let var = self.var(VTy::Index);
        let body = f(self, Expr::Var(var));
        BlockStmt::For {
            var,
            start,
            end,
            step,
            body,
        }
    }

    /// A phase built with a [`Scope`].
    pub fn phase(&mut self, f: impl FnOnce(&mut Scope)) -> BlockStmt {
        let mut s = Scope::new(self);
        f(&mut s);
        BlockStmt::Phase(s.finish())
    }

    /// Finishes the kernel with its body.
    pub fn finish(mut self, body: Vec<BlockStmt>) -> Kernel {
        self.k.body = body;
        self.k
    }
}

/// Collects per-thread statements.
pub struct Scope<'a> {
    kb: &'a mut KernelBuilder,
    stmts: Vec<Stmt>,
}

impl<'a> Scope<'a> {
    /// An empty scope.
    pub fn new(kb: &'a mut KernelBuilder) -> Scope<'a> {
        Scope {
            kb,
            stmts: Vec::new(),
        }
    }

    /// The kernel builder.
    pub fn kb(&mut self) -> &mut KernelBuilder {
        self.kb
    }

    /// Binds `e` to a variable and returns a reference to it (constants, variables and thread or
    /// block ids are returned as they are).
    pub fn let_(&mut self, e: Expr) -> Expr {
        if matches!(
            e,
            Expr::Const(_) | Expr::Var(_) | Expr::ThreadId | Expr::BlockId | Expr::LaneId
        ) {
            return e;
        }
        let ty = self.kb.ty(&e);
        let var = self.kb.var(ty);
        self.stmts.push(Stmt::Let { var, value: e });
        Expr::Var(var)
    }

    /// Declares a mutable local initialised to `init`.
    pub fn local(&mut self, init: Expr) -> LocalId {
        let ty = self.kb.ty(&init);
        let l = self.kb.local(ty);
        self.stmts.push(Stmt::Set {
            local: l,
            value: init,
        });
        l
    }

    /// Assigns a local.
    pub fn set(&mut self, local: LocalId, value: Expr) {
        self.stmts.push(Stmt::Set { local, value });
    }

    /// Stores `value` to `buf[index]`.
    pub fn store(&mut self, buf: BufRef, index: Expr, value: Expr) {
        self.stmts.push(Stmt::Store { buf, index, value });
    }

    /// A per-thread loop; `f` receives the counter.
    pub fn for_(&mut self, start: Expr, end: Expr, step: Expr, f: impl FnOnce(&mut Scope, Expr)) {
        let var = self.kb.var(VTy::Index);
        let mut inner = Scope::new(self.kb);
        f(&mut inner, Expr::Var(var));
        let body = inner.finish();
        self.stmts.push(Stmt::For {
            var,
            start,
            end,
            step,
            body,
        });
    }

    /// `if cond { then } else { otherwise }`.
    pub fn if_(
        &mut self,
        cond: Expr,
        then: impl FnOnce(&mut Scope),
        otherwise: impl FnOnce(&mut Scope),
    ) {
        let mut t = Scope::new(self.kb);
        then(&mut t);
        let then = t.finish();
        let mut o = Scope::new(self.kb);
        otherwise(&mut o);
        let otherwise = o.finish();
        self.stmts.push(Stmt::If {
            cond,
            then,
            otherwise,
        });
    }

    /// The collected statements.
    pub fn finish(self) -> Vec<Stmt> {
        self.stmts
    }
}
