//! Fused attention ([`mmada_ir::Op::Attention`]), forward: the FlashAttention-2 structure on
//! SIMT f32 (template `attention`, knobs `block` = query rows per block, `key_tile` = keys per
//! shared tile).
//!
//! - One block per (batch, query head, block of `block` query rows); one thread per query row.
//! - The thread keeps its query row, its output accumulator (`Dv` f32) and its running maximum
//!   and sum in private buffers across the key loop (registers: the loops over the head dims
//!   are unrolled). Above head dim 64 the query rows move to shared memory, transposed, and a
//!   block takes 32 rows: at 128, query row and accumulator together spill. Above 128 they
//!   are read from the q buffer itself.
//! - Per key tile: the block stages `key_tile` rows of K and V (and the mask's bias) in shared
//!   memory; barrier; each thread computes the tile's scores `(q · k) · scale (+ bias)` into a
//!   private row, their maximum, rescales its accumulator and sum once by `exp(m_old − m_new)`,
//!   then adds `exp(s − m_new) · v` for each key; barrier.
//! - At the end, `o = acc / sum`, rounded to the output dtype.
//!
//! No `[B, H, T, S]` buffer exists. Masked keys get the dtype's lowest value added (the reference's
//! boolean bias), so a row whose keys are all masked averages all values, as the reference does.
//! This is the portable baseline (the host runs it too, through its lowering of the same
//! description); tensor-core variants come with the bf16 kernels.

use super::fused::round_to;
use super::index::{add, mul, next_pow2};
use crate::kir::{
    Access, BlockStmt, BufRef, Expr, KBinary, KCmp, KUnary, Kernel, KernelBuilder, Scope,
};
use crate::template::GPU_STATIC_SHARED_BYTES;
use mmada_ir::{AttentionDims, DType};

/// The largest head dim whose query row a thread keeps in registers.
const QUERY_IN_REGISTERS_MAX: u64 = 64;

/// Where a thread keeps its query row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QueryRow {
    /// A private buffer (registers).
    Registers,
    /// A shared tile, transposed.
    Shared,
    /// The q parameter itself.
    Global,
}

/// The facts one attention kernel is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttentionShape {
    /// Batch.
    pub b: u64,
    /// Query heads.
    pub h: u64,
    /// Key/value heads.
    pub hk: u64,
    /// Query rows.
    pub t: u64,
    /// Keys.
    pub s: u64,
    /// Query/key head dim.
    pub d: u64,
    /// Value head dim.
    pub dv: u64,
    /// The score scale's f32 bits.
    pub scale_bits: u32,
    /// Whether a key mask (bool `[B, S]`) is the 4th operand.
    pub masked: bool,
}

impl AttentionShape {
    /// The shape of an attention node with these dims.
    pub fn new(dims: &AttentionDims, scale: f64, masked: bool) -> AttentionShape {
        AttentionShape {
            b: dims.b as u64,
            h: dims.h as u64,
            hk: dims.hk as u64,
            t: dims.t as u64,
            s: dims.s as u64,
            d: dims.d as u64,
            dv: dims.dv as u64,
            scale_bits: (scale as f32).to_bits(),
            masked,
        }
    }

    /// The score scale.
    pub fn scale(&self) -> f32 {
        f32::from_bits(self.scale_bits)
    }
}

/// What an attention kernel writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionOut {
    /// The attention output `[B, H, T, Dv]` in the operands' dtype (parameters q, k, v[, mask],
    /// out).
    Values,
    /// The softmax statistics `(m, l)` of each row, f32 `[B, H, T, 2]` (parameters q, k[,
    /// mask], out): [`mmada_ir::AttentionPart::Stats`]. The same key loop with no values.
    Stats,
}

/// The attention forward kernel for operands of `dtype`; parameters q, k, v[, mask], out.
pub fn attention_kernel(
    name: &str,
    a: AttentionShape,
    dtype: DType,
    max_block: u64,
    key_tile: u64,
) -> Kernel {
    attention_kernel_for(name, a, dtype, max_block, key_tile, AttentionOut::Values)
}

/// The attention kernel writing `what` (see [`AttentionOut`]).
pub fn attention_kernel_for(
    name: &str,
    a: AttentionShape,
    dtype: DType,
    max_block: u64,
    key_tile: u64,
    what: AttentionOut,
) -> Kernel {
    let stats_only = what == AttentionOut::Stats;
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
    // The statistics need no values.
    let dv = if stats_only { 0 } else { dv };
    // Where a thread's query row lives: registers up to head dim 64; above, shared memory
    // (transposed, so a warp reads 32 consecutive words; at 128, registers for the query row
    // and the accumulator together spill on sm_80/sm_90), with 32 rows per block; above 128
    // (MAGVIT-v2's 512-channel attention), the q buffer itself.
    let q_mode = if d <= QUERY_IN_REGISTERS_MAX {
        QueryRow::Registers
    } else if d <= 2 * QUERY_IN_REGISTERS_MAX {
        QueryRow::Shared
    } else {
        QueryRow::Global
    };
    let mut block = next_pow2(t).clamp(32, max_block.max(32));
    if q_mode != QueryRow::Registers {
        block = block.min(32);
    }
    let q_blocks = t.div_ceil(block).max(1);
    let group = (h / hk.max(1)).max(1);
    let mut kb = KernelBuilder::new(name, (b * h * q_blocks).max(1), block as u32);
    let q = kb.param("q", dtype, b * h * t * d, Access::Read);
    let k = kb.param("k", dtype, b * hk * s * d, Access::Read);
    let v = (!stats_only).then(|| kb.param("v", dtype, b * hk * s * dv, Access::Read));
    let mask = a
        .masked
        .then(|| kb.param("key_mask", DType::Bool, b * s, Access::Read));
    let out = if stats_only {
        let f = mmada_ir::attention_grad::stat_dtype(dtype);
        kb.param("out", f, b * h * t * 2, Access::Write)
    } else {
        kb.param("out", dtype, b * h * t * dv, Access::Write)
    };
    // The bias of a disallowed key (the dtype's lowest value, as the unfused graph adds) and
    // the running maximum's start (below every score).
    let masked_bias = dtype.lowest() as f32;
    let lowest = f32::MIN;
    // Keys per tile: the knob, fewer when the tiles would pass the static shared limit.
    let q_bytes = if q_mode == QueryRow::Shared {
        block * d * 4
    } else {
        0
    };
    let mut bk = key_tile.max(1);
    while bk > 1 && q_bytes + (bk * (d + dv + 1) * 4) > GPU_STATIC_SHARED_BYTES {
        bk /= 2;
    }
    let k_tile = kb.shared("k_tile", DType::F32, bk * d);
    let v_tile = kb.shared("v_tile", DType::F32, (bk * dv).max(1));
    let bias_tile = kb.shared("bias_tile", DType::F32, bk);
    // Element i of the thread's query row (whose first element is q[base]): q_row[i]
    // (private), q_tile[i·block + thread] (shared) or q[base + i].
    let q_row = match q_mode {
        QueryRow::Registers => kb.private("q_row", DType::F32, d.max(1)),
        QueryRow::Shared => kb.shared("q_tile", DType::F32, d * block),
        QueryRow::Global => q,
    };
    let q_at = move |i: u64, base: &Expr| match q_mode {
        QueryRow::Registers => Expr::idx(i),
        QueryRow::Shared => add(Expr::idx(i * block), Expr::ThreadId),
        QueryRow::Global => add(base.clone(), Expr::idx(i)),
    };
    let acc = kb.private("acc", DType::F32, dv.max(1));
    let stats = kb.private("max_sum", DType::F32, 2);
    let scores = kb.private("scores", DType::F32, bk);

    // Block coordinates: batch, query head, first query row; the thread's row; the K/V head.
    let coords = |s_: &mut Scope| {
        let bh = s_.let_(Expr::BlockId / Expr::idx(q_blocks));
        let row = s_.let_(add(
            mul(Expr::BlockId % Expr::idx(q_blocks), Expr::idx(block)),
            Expr::ThreadId,
        ));
        let batch = s_.let_(bh.clone() / Expr::idx(h));
        let head = s_.let_(bh.clone() % Expr::idx(h));
        let kv = s_.let_(add(
            mul(batch.clone(), Expr::idx(hk)),
            head / Expr::idx(group),
        ));
        (bh, row, batch, kv)
    };
    let exp = |e: Expr| Expr::un(KUnary::Exp, e);

    let mut body = vec![kb.phase(|s_| {
        let (bh, row, _, _) = coords(s_);
        s_.if_(
            row.clone().lt(Expr::idx(t)),
            |s_| {
                let base = s_.let_(mul(add(mul(bh, Expr::idx(t)), row), Expr::idx(d)));
                if q_mode != QueryRow::Global {
                    for i in 0..d {
                        let x = Expr::load(q, add(base.clone(), Expr::idx(i)));
                        s_.store(q_row, q_at(i, &base), x);
                    }
                }
                for i in 0..dv {
                    s_.store(acc, Expr::idx(i), Expr::f32(0.0));
                }
                s_.store(stats, Expr::idx(0), Expr::f32(lowest));
                s_.store(stats, Expr::idx(1), Expr::f32(0.0));
            },
            |_| {},
        );
    })];
    let tiles = s.div_ceil(bk);
    let key_loop = kb.block_for(Expr::idx(0), Expr::idx(tiles), Expr::idx(1), |kb, kt| {
        let stage = kb.phase(|s_| {
            let (_, _, batch, kv) = coords(s_);
            let key0 = s_.let_(mul(kt.clone(), Expr::idx(bk)));
            let row0 = s_.let_(add(mul(kv, Expr::idx(s)), key0.clone()));
            let mut tiles = vec![(k_tile, k, d)];
            tiles.extend(v.map(|v| (v_tile, v, dv)));
            stage_rows(s_, &tiles, &row0, &key0, s, bk, block);
            if let Some(m) = mask {
                s_.for_(Expr::ThreadId, Expr::idx(bk), Expr::idx(block), |s_, j| {
                    let key = s_.let_(add(key0.clone(), j.clone()));
                    let at = add(mul(batch.clone(), Expr::idx(s)), key.clone());
                    s_.if_(
                        key.lt(Expr::idx(s)),
                        |s_| {
                            let allowed = Expr::load(m, at);
                            let bias =
                                Expr::select(allowed, Expr::f32(0.0), Expr::f32(masked_bias));
                            s_.store(bias_tile, j.clone(), bias);
                        },
                        |s_| s_.store(bias_tile, j.clone(), Expr::f32(0.0)),
                    );
                });
            }
        });
        let update = kb.phase(|s_| {
            let (bh, row, _, _) = coords(s_);
            let key0 = s_.let_(mul(kt.clone(), Expr::idx(bk)));
            let q_base = s_.let_(mul(add(mul(bh, Expr::idx(t)), row.clone()), Expr::idx(d)));
            s_.if_(
                row.lt(Expr::idx(t)),
                |s_| {
                    let m_old = s_.let_(Expr::load(stats, Expr::idx(0)));
                    let m = s_.local(m_old.clone());
                    // Scores of the tile's keys, and their maximum.
                    s_.for_(Expr::idx(0), Expr::idx(bk), Expr::idx(1), |s_, j| {
                        let live = add(key0.clone(), j.clone()).lt(Expr::idx(s));
                        s_.if_(
                            live,
                            |s_| {
                                let dot = s_.local(Expr::f32(0.0));
                                let kb_ = s_.let_(mul(j.clone(), Expr::idx(d)));
                                for i in 0..d {
                                    let kx = Expr::load(k_tile, add(kb_.clone(), Expr::idx(i)));
                                    let qx = Expr::load(q_row, q_at(i, &q_base));
                                    s_.set(dot, Expr::fma(qx, kx, Expr::Local(dot)));
                                }
                                let mut sc = Expr::bin(
                                    KBinary::Mul,
                                    round_to(dtype, Expr::Local(dot)),
                                    Expr::f32(a.scale()),
                                );
                                sc = round_to(dtype, sc);
                                if mask.is_some() {
                                    let bias = Expr::load(bias_tile, j.clone());
                                    sc = round_to(dtype, Expr::bin(KBinary::Add, sc, bias));
                                }
                                let sc = s_.let_(sc);
                                s_.store(scores, j.clone(), sc.clone());
                                s_.set(m, Expr::bin(KBinary::Max, Expr::Local(m), sc));
                            },
                            |_| {},
                        );
                    });
                    // Rescale the running sum and accumulator once per tile.
                    let m_new = s_.let_(Expr::Local(m));
                    let c = s_.let_(exp(Expr::bin(KBinary::Sub, m_old, m_new.clone())));
                    let l0 = Expr::bin(KBinary::Mul, Expr::load(stats, Expr::idx(1)), c.clone());
                    let l = s_.local(l0);
                    for i in 0..dv {
                        let ai = Expr::bin(KBinary::Mul, Expr::load(acc, Expr::idx(i)), c.clone());
                        s_.store(acc, Expr::idx(i), ai);
                    }
                    s_.for_(Expr::idx(0), Expr::idx(bk), Expr::idx(1), |s_, j| {
                        let live = add(key0.clone(), j.clone()).lt(Expr::idx(s));
                        s_.if_(
                            live,
                            |s_| {
                                let z = Expr::bin(
                                    KBinary::Sub,
                                    Expr::load(scores, j.clone()),
                                    m_new.clone(),
                                );
                                let p = s_.let_(exp(z));
                                s_.set(l, Expr::bin(KBinary::Add, Expr::Local(l), p.clone()));
                                let vb = s_.let_(mul(j.clone(), Expr::idx(dv)));
                                for i in 0..dv {
                                    let vx = Expr::load(v_tile, add(vb.clone(), Expr::idx(i)));
                                    let ai = Expr::load(acc, Expr::idx(i));
                                    s_.store(acc, Expr::idx(i), Expr::fma(p.clone(), vx, ai));
                                }
                            },
                            |_| {},
                        );
                    });
                    s_.store(stats, Expr::idx(0), m_new);
                    s_.store(stats, Expr::idx(1), Expr::Local(l));
                },
                |_| {},
            );
        });
        vec![stage, BlockStmt::Barrier, update, BlockStmt::Barrier]
    });
    body.push(key_loop);
    body.push(kb.phase(|s_| {
        let (bh, row, _, _) = coords(s_);
        s_.if_(
            row.clone().lt(Expr::idx(t)),
            |s_| {
                if stats_only {
                    let base = s_.let_(mul(add(mul(bh, Expr::idx(t)), row), Expr::idx(2)));
                    for i in 0..2 {
                        let x = Expr::load(stats, Expr::idx(i));
                        s_.store(out, add(base.clone(), Expr::idx(i)), x);
                    }
                    return;
                }
                let base = s_.let_(mul(add(mul(bh, Expr::idx(t)), row), Expr::idx(dv)));
                let l = s_.let_(Expr::load(stats, Expr::idx(1)));
                // A row with no keys (S = 0) has sum 0: its output is 0, not NaN.
                let inv = s_.let_(Expr::select(
                    Expr::cmp(KCmp::Gt, l.clone(), Expr::f32(0.0)),
                    Expr::bin(KBinary::Div, Expr::f32(1.0), l),
                    Expr::f32(0.0),
                ));
                for i in 0..dv {
                    let o = Expr::bin(KBinary::Mul, Expr::load(acc, Expr::idx(i)), inv.clone());
                    s_.store(out, add(base.clone(), Expr::idx(i)), round_to(dtype, o));
                }
            },
            |_| {},
        );
    }));
    kb.finish(body)
}

/// Stages rows `first..first + bt` (row `first + j` of the source at flat row `row0 + j`) of
/// each `(tile, source, width)` into its shared tile, zeros past `limit`.
pub(super) fn stage_rows(
    s_: &mut Scope,
    what: &[(BufRef, BufRef, u64)],
    row0: &Expr,
    first: &Expr,
    limit: u64,
    bt: u64,
    block: u64,
) {
    for &(tile, src, w) in what {
        if w == 0 {
            continue;
        }
        s_.for_(
            Expr::ThreadId,
            Expr::idx(bt * w),
            Expr::idx(block),
            |s_, e| {
                let j = s_.let_(e.clone() / Expr::idx(w));
                let col = e.clone() % Expr::idx(w);
                let at = add(mul(add(row0.clone(), j.clone()), Expr::idx(w)), col);
                s_.if_(
                    add(first.clone(), j).lt(Expr::idx(limit)),
                    |s_| s_.store(tile, e.clone(), Expr::load(src, at)),
                    |s_| s_.store(tile, e.clone(), Expr::f32(0.0)),
                );
            },
        );
    }
}
