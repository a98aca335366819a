//! Attention's backward ([`mmada_ir::Op::AttentionGrad`]) in FlashAttention-2's structure on
//! SIMT f32 (template `attention_grad`, knobs `block` = rows per block, `key_tile` = rows of
//! the other side per shared tile). Three kernels, none holding a `[B, H, T, S]` buffer and
//! none using atomics:
//!
//! - **Stats**: the forward's key loop with no values ([`super::attention::AttentionOut::Stats`]),
//!   writing each query row's `(m, l)`.
//! - **dQ**: one thread per query row (and chunk of head-dim columns). Per shared tile of K, V
//!   and the mask's bias, for each key: the forward's score `s` (rounded as the forward rounds
//!   it), `p = exp(s − m) / l`, `dp = dO · v`, `ds = p (dp − Δ)`, `dq += ds · k`; at the end
//!   `dq · scale`.
//! - **dK | dV**: one thread per key row of a K/V head (and chunk of the packed `D + Dv`
//!   columns), looping over the group's query heads and their query tiles (q, dO, `m`, `l`, `Δ`
//!   staged in shared memory): `dv += p · dO`, `dk += ds · q`; at the end `dk · scale`. A key
//!   head owns its rows, so grouped heads accumulate without conflicts.
//!
//! A thread's own row (q and dO, or k and v) is read from its buffer (cached); its
//! accumulators are private, at most [`COLUMN_CHUNK`] columns: wider rows split their columns
//! over more blocks, each recomputing the scores. The score and the probability use the same
//! expressions as the forward kernel, so the recomputed `p` is the forward's.

use super::attention::{attention_kernel_for, stage_rows, AttentionOut, AttentionShape};
use super::fused::round_to;
use super::index::{add, mul, next_pow2};
use crate::kir::{Access, BlockStmt, BufRef, Expr, KBinary, Kernel, KernelBuilder, Scope};
use crate::template::GPU_STATIC_SHARED_BYTES;
use mmada_ir::attention_grad::stat_dtype;
use mmada_ir::{AttentionPart, DType};

/// The most accumulator columns a thread keeps (private registers).
pub const COLUMN_CHUNK: u64 = 64;

/// The kernel of backward piece `part` for operands of `dtype`; parameters as the op's
/// operands (q, k[, mask] or q, k, v, dO, stats, Δ[, mask]), then out.
pub fn attention_grad_kernel(
    name: &str,
    a: AttentionShape,
    part: AttentionPart,
    dtype: DType,
    max_block: u64,
    key_tile: u64,
) -> Kernel {
    match part {
        AttentionPart::Stats => {
            attention_kernel_for(name, a, dtype, max_block, key_tile, AttentionOut::Stats)
        }
        AttentionPart::Q | AttentionPart::Kv => grad_kernel(
            name,
            a,
            part == AttentionPart::Kv,
            dtype,
            max_block,
            key_tile,
        ),
    }
}

/// The operand buffers of a dQ or dK | dV kernel.
struct Params {
    q: BufRef,
    k: BufRef,
    v: BufRef,
    d_o: BufRef,
    stats: BufRef,
    delta: BufRef,
    mask: Option<BufRef>,
    out: BufRef,
}

/// The dQ kernel (`kv` false) or the dK | dV kernel (`kv` true).
fn grad_kernel(
    name: &str,
    a: AttentionShape,
    kv: bool,
    dtype: DType,
    max_block: u64,
    tile: u64,
) -> Kernel {
    let AttentionShape {
        b,
        h,
        hk,
        t,
        s,
        d,
        dv,
        ..
    } = a;
    let group = (h / hk.max(1)).max(1);
    // The thread's rows: query rows (dQ) or key rows (dK | dV); the tiles' rows: the other side.
    let (own, other) = if kv { (s, t) } else { (t, s) };
    // Blocks split the columns into chunks: dK's (or dQ's) D columns, then dV's Dv.
    let cols = if kv { d + dv } else { d };
    let chunk = if kv { d.max(dv) } else { d }.clamp(1, COLUMN_CHUNK);
    let chunks_k = d.div_ceil(chunk).max(1);
    let chunks = if kv {
        chunks_k + dv.div_ceil(chunk)
    } else {
        chunks_k
    };
    let block = next_pow2(own).clamp(32, max_block.max(32));
    let own_blocks = own.div_ceil(block).max(1);
    let heads = if kv { hk } else { h };
    let grid = (b * heads * own_blocks * chunks).max(1);
    let mut kb = KernelBuilder::new(name, grid, block as u32);
    let p = Params {
        q: kb.param("q", dtype, b * h * t * d, Access::Read),
        k: kb.param("k", dtype, b * hk * s * d, Access::Read),
        v: kb.param("v", dtype, b * hk * s * dv, Access::Read),
        d_o: kb.param("d_o", dtype, b * h * t * dv, Access::Read),
        stats: kb.param("stats", stat_dtype(dtype), b * h * t * 2, Access::Read),
        delta: kb.param("delta", stat_dtype(dtype), b * h * t, Access::Read),
        mask: a
            .masked
            .then(|| kb.param("key_mask", DType::Bool, b * s, Access::Read)),
        out: if kv {
            kb.param("out", dtype, b * hk * s * cols, Access::Write)
        } else {
            kb.param("out", dtype, b * h * t * d, Access::Write)
        },
    };
    // Rows of the other side per tile: the knob, fewer when the tiles would pass the static
    // shared limit. dQ stages k, v and the key's bias; dK | dV stages q, dO, m, l and Δ.
    let per_row = if kv { d + dv + 3 } else { d + dv + 1 };
    let mut bt = tile.max(1);
    while bt > 1 && bt * per_row * 4 > GPU_STATIC_SHARED_BYTES {
        bt /= 2;
    }
    // Tile layout, per row of the other side: [x (d), y (dv), extra (1 or 3)].
    let x_tile = kb.shared("x_tile", DType::F32, (bt * d).max(1));
    let y_tile = kb.shared("y_tile", DType::F32, (bt * dv).max(1));
    let extra = if kv { 3 } else { 1 };
    let e_tile = kb.shared("extra_tile", DType::F32, bt * extra);
    let acc = kb.private("acc", DType::F32, chunk);
    let masked_bias = dtype.lowest() as f32;

    // Block coordinates: (batch · heads + head), the thread's row, its chunk, the batch.
    let coords = move |s_: &mut Scope| {
        let per_head = own_blocks * chunks;
        let bh = s_.let_(Expr::BlockId / Expr::idx(per_head));
        let rest = s_.let_(Expr::BlockId % Expr::idx(per_head));
        let row = s_.let_(add(
            mul(rest.clone() / Expr::idx(chunks), Expr::idx(block)),
            Expr::ThreadId,
        ));
        let c = s_.let_(rest % Expr::idx(chunks));
        let batch = s_.let_(bh.clone() / Expr::idx(heads));
        (bh, row, c, batch)
    };
    // Chunk `c`: whether it holds dV columns, and its first column within dK (dQ) or dV.
    let chunk_cols = move |s_: &mut Scope, c: &Expr| {
        let is_v = s_.let_(Expr::idx(chunks_k - 1).lt(c.clone()));
        let k0 = mul(c.clone(), Expr::idx(chunk));
        let v0 = mul(
            Expr::bin(KBinary::Sub, c.clone(), Expr::idx(chunks_k)),
            Expr::idx(chunk),
        );
        (is_v, k0, v0)
    };
    let tiles = other.div_ceil(bt);
    // dK | dV loops over the group's query heads too.
    let steps = if kv { group * tiles } else { tiles };

    let mut body = vec![kb.phase(|s_| {
        for i in 0..chunk {
            s_.store(acc, Expr::idx(i), Expr::f32(0.0));
        }
    })];
    let main = kb.block_for(Expr::idx(0), Expr::idx(steps), Expr::idx(1), |kb, step| {
        let stage = kb.phase(|s_| {
            let (bh, _, _, batch) = coords(s_);
            let first = s_.let_(mul(step.clone() % Expr::idx(tiles), Expr::idx(bt)));
            if kv {
                // Query head `group · kv_head + step / tiles`: stage q, dO, m, l, Δ.
                let head = add(
                    mul(bh.clone() % Expr::idx(hk), Expr::idx(group)),
                    step.clone() / Expr::idx(tiles),
                );
                let qh = s_.let_(add(mul(batch, Expr::idx(h)), head));
                let row0 = s_.let_(add(mul(qh, Expr::idx(t)), first.clone()));
                stage_rows(
                    s_,
                    &[(x_tile, p.q, d), (y_tile, p.d_o, dv)],
                    &row0,
                    &first,
                    t,
                    bt,
                    block,
                );
                s_.for_(Expr::ThreadId, Expr::idx(bt), Expr::idx(block), |s_, j| {
                    let live = add(first.clone(), j.clone()).lt(Expr::idx(t));
                    let r = s_.let_(add(row0.clone(), j.clone()));
                    let at = |i: u64| add(mul(j.clone(), Expr::idx(3)), Expr::idx(i));
                    s_.if_(
                        live,
                        |s_| {
                            let m = Expr::load(p.stats, mul(r.clone(), Expr::idx(2)));
                            let l = Expr::load(
                                p.stats,
                                add(mul(r.clone(), Expr::idx(2)), Expr::idx(1)),
                            );
                            s_.store(e_tile, at(0), m);
                            s_.store(e_tile, at(1), l);
                            s_.store(e_tile, at(2), Expr::load(p.delta, r.clone()));
                        },
                        |s_| {
                            for i in 0..3 {
                                s_.store(e_tile, at(i), Expr::f32(0.0));
                            }
                        },
                    );
                });
            } else {
                // Keys of K/V head `batch · hk + head / group`: stage k, v and the bias.
                let kvh = s_.let_(add(
                    mul(batch.clone(), Expr::idx(hk)),
                    (bh % Expr::idx(h)) / Expr::idx(group),
                ));
                let row0 = s_.let_(add(mul(kvh, Expr::idx(s)), first.clone()));
                stage_rows(
                    s_,
                    &[(x_tile, p.k, d), (y_tile, p.v, dv)],
                    &row0,
                    &first,
                    s,
                    bt,
                    block,
                );
                s_.for_(Expr::ThreadId, Expr::idx(bt), Expr::idx(block), |s_, j| {
                    let key = s_.let_(add(first.clone(), j.clone()));
                    let bias = match p.mask {
                        Some(m) => Expr::select(
                            Expr::load(m, add(mul(batch.clone(), Expr::idx(s)), key.clone())),
                            Expr::f32(0.0),
                            Expr::f32(masked_bias),
                        ),
                        None => Expr::f32(0.0),
                    };
                    s_.if_(
                        key.lt(Expr::idx(s)),
                        |s_| s_.store(e_tile, j.clone(), bias),
                        |s_| s_.store(e_tile, j.clone(), Expr::f32(0.0)),
                    );
                });
            }
        });
        let update = kb.phase(|s_| {
            let (bh, row, c, batch) = coords(s_);
            let first = s_.let_(mul(step.clone() % Expr::idx(tiles), Expr::idx(bt)));
            s_.if_(
                row.clone().lt(Expr::idx(own)),
                |s_| {
                    // The thread's own rows: q and dO (dQ) or k and v (dK | dV).
                    let (x_base, y_base) = if kv {
                        let kr = s_.let_(add(mul(bh.clone(), Expr::idx(s)), row.clone()));
                        (
                            s_.let_(mul(kr.clone(), Expr::idx(d))),
                            s_.let_(mul(kr, Expr::idx(dv))),
                        )
                    } else {
                        let qr = s_.let_(add(mul(bh.clone(), Expr::idx(t)), row.clone()));
                        (
                            s_.let_(mul(qr.clone(), Expr::idx(d))),
                            s_.let_(mul(qr, Expr::idx(dv))),
                        )
                    };
                    // dQ: the row's statistics and Δ; dK | dV: the key's own bias.
                    let (own_m, own_l, own_delta) = if kv {
                        (Expr::f32(0.0), Expr::f32(0.0), Expr::f32(0.0))
                    } else {
                        let qr = add(mul(bh.clone(), Expr::idx(t)), row.clone());
                        let qr = s_.let_(qr);
                        (
                            s_.let_(Expr::load(p.stats, mul(qr.clone(), Expr::idx(2)))),
                            s_.let_(Expr::load(
                                p.stats,
                                add(mul(qr.clone(), Expr::idx(2)), Expr::idx(1)),
                            )),
                            s_.let_(Expr::load(p.delta, qr)),
                        )
                    };
                    let key_bias = match (kv, p.mask) {
                        (true, Some(m)) => Some(s_.let_(Expr::select(
                            Expr::load(m, add(mul(batch.clone(), Expr::idx(s)), row.clone())),
                            Expr::f32(0.0),
                            Expr::f32(masked_bias),
                        ))),
                        _ => None,
                    };
                    s_.for_(Expr::idx(0), Expr::idx(bt), Expr::idx(1), |s_, j| {
                        let live = add(first.clone(), j.clone()).lt(Expr::idx(other));
                        s_.if_(
                            live,
                            |s_| {
                                let xb = s_.let_(mul(j.clone(), Expr::idx(d)));
                                let yb = s_.let_(mul(j.clone(), Expr::idx(dv)));
                                // q · k in the forward's order (the query element first).
                                let dot = s_.local(Expr::f32(0.0));
                                for i in 0..d {
                                    let tile_x = Expr::load(x_tile, add(xb.clone(), Expr::idx(i)));
                                    let own_x = Expr::load(
                                        if kv { p.k } else { p.q },
                                        add(x_base.clone(), Expr::idx(i)),
                                    );
                                    let (qx, kx) =
                                        if kv { (tile_x, own_x) } else { (own_x, tile_x) };
                                    s_.set(dot, Expr::fma(qx, kx, Expr::Local(dot)));
                                }
                                let mut sc = Expr::bin(
                                    KBinary::Mul,
                                    round_to(dtype, Expr::Local(dot)),
                                    Expr::f32(a.scale()),
                                );
                                sc = round_to(dtype, sc);
                                let bias = match (kv, p.mask) {
                                    (true, Some(_)) => key_bias.clone(),
                                    (false, Some(_)) => Some(Expr::load(e_tile, j.clone())),
                                    _ => None,
                                };
                                if let Some(bias) = bias {
                                    sc = round_to(dtype, Expr::bin(KBinary::Add, sc, bias));
                                }
                                let (m, l, delta) = if kv {
                                    let at = |i: u64| {
                                        Expr::load(
                                            e_tile,
                                            add(mul(j.clone(), Expr::idx(3)), Expr::idx(i)),
                                        )
                                    };
                                    (at(0), at(1), at(2))
                                } else {
                                    (own_m.clone(), own_l.clone(), own_delta.clone())
                                };
                                let z = Expr::bin(KBinary::Sub, sc, m);
                                let pr = s_.let_(Expr::bin(
                                    KBinary::Div,
                                    Expr::un(crate::kir::KUnary::Exp, z),
                                    l,
                                ));
                                // dV chunks: dv += p · dO. dK (dQ) chunks: dp = dO · v,
                                // ds = p (dp − Δ), dk += ds · q (dq += ds · k).
                                let accumulate =
                                    |s_: &mut Scope,
                                     tile: BufRef,
                                     tb: &Expr,
                                     f: &Expr,
                                     c0: Expr,
                                     n: u64| {
                                        let c0 = s_.let_(c0);
                                        for i in 0..chunk {
                                            let col = s_.let_(add(c0.clone(), Expr::idx(i)));
                                            let x = Expr::load(tile, add(tb.clone(), col.clone()));
                                            let ai = Expr::load(acc, Expr::idx(i));
                                            let next = Expr::fma(f.clone(), x, ai);
                                            s_.if_(
                                                col.lt(Expr::idx(n)),
                                                |s_| s_.store(acc, Expr::idx(i), next),
                                                |_| {},
                                            );
                                        }
                                    };
                                let (is_v, k0, v0) = chunk_cols(s_, &c);
                                let k_branch = |s_: &mut Scope| {
                                    let dp = s_.local(Expr::f32(0.0));
                                    for i in 0..dv {
                                        let tile_y =
                                            Expr::load(y_tile, add(yb.clone(), Expr::idx(i)));
                                        let own_y = Expr::load(
                                            if kv { p.v } else { p.d_o },
                                            add(y_base.clone(), Expr::idx(i)),
                                        );
                                        s_.set(dp, Expr::fma(tile_y, own_y, Expr::Local(dp)));
                                    }
                                    let ds = s_.let_(Expr::bin(
                                        KBinary::Mul,
                                        pr.clone(),
                                        Expr::bin(KBinary::Sub, Expr::Local(dp), delta),
                                    ));
                                    accumulate(s_, x_tile, &xb, &ds, k0, d);
                                };
                                if kv {
                                    // Two one-sided ifs: the host lowering mishandles an
                                    // if/else whose branches both read shared tiles here.
                                    let is_k = c.clone().lt(Expr::idx(chunks_k));
                                    s_.if_(
                                        is_v,
                                        |s_| accumulate(s_, y_tile, &yb, &pr, v0, dv),
                                        |_| {},
                                    );
                                    s_.if_(is_k, k_branch, |_| {});
                                } else {
                                    k_branch(s_);
                                }
                            },
                            |_| {},
                        );
                    });
                },
                |_| {},
            );
        });
        vec![stage, BlockStmt::Barrier, update, BlockStmt::Barrier]
    });
    body.push(main);
    body.push(kb.phase(|s_| {
        let (bh, row, c, _) = coords(s_);
        s_.if_(
            row.clone().lt(Expr::idx(own)),
            |s_| {
                let base = s_.let_(mul(add(mul(bh, Expr::idx(own)), row), Expr::idx(cols)));
                let (is_v, k0, v0) = chunk_cols(s_, &c);
                // dK (dQ) columns are scaled; dV columns follow dK's in the packed row.
                let write = |s_: &mut Scope, c0: Expr, first_col: u64, n: u64, scale: bool| {
                    let c0 = s_.let_(c0);
                    for i in 0..chunk {
                        let col = s_.let_(add(c0.clone(), Expr::idx(i)));
                        let mut x = Expr::load(acc, Expr::idx(i));
                        if scale {
                            x = Expr::bin(KBinary::Mul, x, Expr::f32(a.scale()));
                        }
                        let at = add(add(base.clone(), Expr::idx(first_col)), col.clone());
                        s_.if_(
                            col.lt(Expr::idx(n)),
                            |s_| s_.store(p.out, at, round_to(dtype, x)),
                            |_| {},
                        );
                    }
                };
                if kv {
                    s_.if_(
                        is_v,
                        |s_| write(s_, v0, d, dv, false),
                        |s_| write(s_, k0, 0, d, true),
                    );
                } else {
                    write(s_, k0, 0, d, true);
                }
            },
            |_| {},
        );
    }));
    kb.finish(body)
}
