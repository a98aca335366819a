//! Text rendering of KIR for dumps and golden tests.

use super::{BlockStmt, BufRef, Const, Expr, Kernel, Stmt};
use std::fmt::Write;

fn buf(b: &BufRef) -> String {
    match b {
        BufRef::Param(i) => format!("p{i}"),
        BufRef::Shared(i) => format!("smem{i}"),
        BufRef::Private(i) => format!("priv{i}"),
    }
}

fn expr(e: &Expr) -> String {
    match e {
        Expr::Const(c) => match c {
            Const::F32(v) => format!("{v:?}f"),
            Const::I32(v) => format!("{v}i32"),
            Const::I64(v) => format!("{v}i64"),
            Const::Bool(v) => format!("{v}"),
            Const::Index(v) => format!("{v}"),
        },
        Expr::Var(v) => format!("v{}", v.0),
        Expr::Local(l) => format!("l{}", l.0),
        Expr::ThreadId => "tid".into(),
        Expr::BlockId => "bid".into(),
        Expr::LaneId => "lane".into(),
        Expr::Load { buf: b, index } => format!("{}[{}]", buf(b), expr(index)),
        Expr::Unary(op, a) => format!("{op:?}({})", expr(a)).to_lowercase(),
        Expr::Binary(op, a, b) => format!("{:?}({}, {})", op, expr(a), expr(b)).to_lowercase(),
        Expr::Cmp(op, a, b) => format!("{:?}({}, {})", op, expr(a), expr(b)).to_lowercase(),
        Expr::Select(c, a, b) => format!("select({}, {}, {})", expr(c), expr(a), expr(b)),
        Expr::Cast(t, a) => format!("cast<{t:?}>({})", expr(a)),
        Expr::Bitcast(t, a) => format!("bitcast<{t:?}>({})", expr(a)),
        Expr::Fma(a, b, c) => format!("fma({}, {}, {})", expr(a), expr(b), expr(c)),
    }
}

fn stmts(out: &mut String, ss: &[Stmt], ind: usize) {
    let pad = "  ".repeat(ind);
    for s in ss {
        match s {
            Stmt::Let { var, value } => {
                let _ = writeln!(out, "{pad}let v{} = {}", var.0, expr(value));
            }
            Stmt::Set { local, value } => {
                let _ = writeln!(out, "{pad}l{} = {}", local.0, expr(value));
            }
            Stmt::Store {
                buf: b,
                index,
                value,
            } => {
                let _ = writeln!(out, "{pad}{}[{}] = {}", buf(b), expr(index), expr(value));
            }
            Stmt::For {
                var,
                start,
                end,
                step,
                body,
            } => {
                let _ = writeln!(
                    out,
                    "{pad}for v{} in {}..{} step {} {{",
                    var.0,
                    expr(start),
                    expr(end),
                    expr(step)
                );
                stmts(out, body, ind + 1);
                let _ = writeln!(out, "{pad}}}");
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                let _ = writeln!(out, "{pad}if {} {{", expr(cond));
                stmts(out, then, ind + 1);
                if !otherwise.is_empty() {
                    let _ = writeln!(out, "{pad}}} else {{");
                    stmts(out, otherwise, ind + 1);
                }
                let _ = writeln!(out, "{pad}}}");
            }
        }
    }
}

fn block_stmts(out: &mut String, ss: &[BlockStmt], ind: usize) {
    let pad = "  ".repeat(ind);
    for s in ss {
        match s {
            BlockStmt::Phase(b) => {
                let _ = writeln!(out, "{pad}phase {{");
                stmts(out, b, ind + 1);
                let _ = writeln!(out, "{pad}}}");
            }
            BlockStmt::LanePhase {
                base,
                lane,
                lanes,
                body,
            } => {
                let _ = writeln!(
                    out,
                    "{pad}lane-phase tid = v{} + v{} (lanes {lanes}) {{",
                    base.0, lane.0
                );
                stmts(out, body, ind + 1);
                let _ = writeln!(out, "{pad}}}");
            }
            BlockStmt::Mma(ops) => {
                let _ = writeln!(
                    out,
                    "{pad}mma.m16n8k16 {}[{}..+4] += {}[{}..+8] x {}[{}..+4]",
                    buf(&ops.acc.0),
                    ops.acc.1,
                    buf(&ops.a.0),
                    ops.a.1,
                    buf(&ops.b.0),
                    ops.b.1
                );
            }
            BlockStmt::Barrier => {
                let _ = writeln!(out, "{pad}barrier");
            }
            BlockStmt::Shuffle {
                mode,
                src,
                src_index,
                dst,
                dst_index,
            } => {
                let _ = writeln!(
                    out,
                    "{pad}shuffle {mode:?}: {}[{dst_index}] <- {}[{src_index}]",
                    buf(dst),
                    buf(src)
                );
            }
            BlockStmt::For {
                var,
                start,
                end,
                step,
                body,
            } => {
                let _ = writeln!(
                    out,
                    "{pad}uniform for v{} in {}..{} step {} {{",
                    var.0,
                    expr(start),
                    expr(end),
                    expr(step)
                );
                block_stmts(out, body, ind + 1);
                let _ = writeln!(out, "{pad}}}");
            }
        }
    }
}

/// Renders a kernel as readable text.
pub fn to_text(k: &Kernel) -> String {
    let mut out = format!("kernel {} grid={} block={}\n", k.name, k.grid, k.block);
    for (i, p) in k.params.iter().enumerate() {
        let _ = writeln!(
            out,
            "  param p{i} {}: {}[{}] {:?}",
            p.name, p.dtype, p.len, p.access
        );
    }
    for (i, s) in k.shared.iter().enumerate() {
        let _ = writeln!(out, "  shared smem{i} {}: {}[{}]", s.name, s.dtype, s.len);
    }
    for (i, s) in k.private.iter().enumerate() {
        let _ = writeln!(out, "  private priv{i} {}: {}[{}]", s.name, s.dtype, s.len);
    }
    block_stmts(&mut out, &k.body, 1);
    out
}
