//! Fused attention forward on tensor cores (template `attention`, knob `mma = 1`, bf16 with
//! head dims up to 128): FlashAttention-2's loop with both products on `mma.sync` m16n8k16.
//!
//! - One block of 4 warps per (batch, query head, 64 query rows); warp `w` owns rows
//!   `16w … 16w + 15` of the block. The block stages its Q rows once in shared memory (bf16,
//!   zero-padded to a multiple of 16 columns).
//! - Per tile of 32 keys: the block stages K, V and the key mask's bias in shared memory;
//!   each warp computes its 16 × 32 scores `S = Q·Kᵀ` as 4 products per 16-wide slice of the
//!   head dim (f32 accumulators in registers); each thread scales them and adds the bias; the
//!   row maximum of a score row, spread over the 4 lanes `4g … 4g + 3`, takes two butterfly
//!   shuffles (xor 1, xor 2); `m' = max(m, rowmax)`, `α = exp(m − m')`, `P = exp(S − m')`;
//!   the output accumulators are scaled by α; `P` is rounded to bf16 and, because a C
//!   fragment pair of two adjacent 8-key tiles is exactly an A fragment, feeds `P·V` from the
//!   thread's own registers (no shared-memory round trip).
//! - Each thread keeps a partial row sum `l` of its own probabilities, rescaled by α like the
//!   accumulators; the four partials of a row are added once, at the end (two shuffles).
//!   `O = acc / l`, rounded to bf16.
//!
//! Keys past `S` (the last tile's padding) take no part: their score is not counted in the
//! maximum and their probability is 0. Masked keys get bf16's lowest value added, like the
//! unfused graph, so a row whose keys are all masked averages all values.
//!
//! On the host the products run through the exact fragment emulation ([`crate::kir::mma`]).

use super::attention::AttentionShape;
use super::fused::round_to;
use super::index::{add, mul};
use crate::kir::mma::{self, FragmentLayout, A_SLOTS, B_SLOTS, C_SLOTS};
use crate::kir::{
    Access, BlockStmt, BufRef, Expr, KBinary, KCmp, KUnary, Kernel, KernelBuilder, Scope,
    ShuffleMode,
};
use mmada_ir::DType;

/// Query rows per block (16 per warp).
pub const BLOCK_M: u64 = 64;
/// Keys per staged tile.
pub const BLOCK_N: u64 = 32;
/// Threads per block.
pub const THREADS: u32 = 128;
/// The largest head dim (query/key and value) the kernel takes.
pub const MAX_HEAD_DIM: u64 = 128;

/// Whether the tensor-core kernel computes this attention.
pub fn applies(a: &AttentionShape, dtype: DType) -> bool {
    dtype == DType::BF16 && a.d <= MAX_HEAD_DIM && a.dv <= MAX_HEAD_DIM && a.hk > 0
}

/// For each A slot of a 16-key slice of P: which of the slice's two 8-key score tiles (the
/// first or the second) and which C slot of it holds the same element in the same lane. The
/// fragment tables make this lane-independent (a test checks every lane).
pub fn p_from_scores(layout: &FragmentLayout) -> Vec<(u64, usize)> {
    (0..layout.a.slots())
        .map(|ia| {
            let (r, c) = layout.a.at(0, ia);
            let tile = c / mma::N;
            let ci = (0..layout.c.slots())
                .find(|&ci| layout.c.at(0, ci) == (r, c % mma::N))
                .unwrap_or(0);
            (tile, ci)
        })
        .collect()
}

/// Which of a thread's two score rows (`g` or `g + 8`) C slot `i` belongs to.
fn half(layout: &FragmentLayout, i: usize) -> u64 {
    layout.c.offsets[i].0 / 8
}

/// Combines, with `op`, slots 0 and 1 of `red` (a thread's part of its two score rows) over
/// the 4 lanes `4g … 4g + 3` that share each row: two butterfly shuffles (xor 1, xor 2)
/// through `red_in`, leaving every lane with the row's result in `red`.
fn quad_reduce(kb: &mut KernelBuilder, op: KBinary, red: BufRef, red_in: BufRef) -> Vec<BlockStmt> {
    let mut out = Vec::new();
    for mask_bits in [1, 2] {
        for hf in 0..2 {
            out.push(BlockStmt::Shuffle {
                mode: ShuffleMode::Xor(mask_bits),
                src: red,
                src_index: hf,
                dst: red_in,
                dst_index: hf,
            });
        }
        out.push(kb.phase(|s_| {
            for hf in 0..2 {
                let v = Expr::bin(
                    op,
                    Expr::load(red, Expr::idx(hf)),
                    Expr::load(red_in, Expr::idx(hf)),
                );
                s_.store(red, Expr::idx(hf), v);
            }
        }));
    }
    out
}

/// The tensor-core attention kernel (bf16); parameters q, k, v[, key mask], out.
pub fn tensor_core_attention_kernel(name: &str, a: AttentionShape) -> Kernel {
    let layout = &mma::PTX;
    let dtype = DType::BF16;
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
    let d16 = d.next_multiple_of(mma::K).max(mma::K);
    let dv8 = dv.next_multiple_of(mma::N).max(mma::N);
    // Row strides in shared memory: 8 bf16 of padding spread a warp's fragment loads.
    let (q_stride, k_stride, v_stride) = (d16 + 8, d16 + 8, dv8 + 8);
    let q_blocks = t.div_ceil(BLOCK_M).max(1);
    let group = (h / hk.max(1)).max(1);
    let s_tiles = BLOCK_N / mma::N;
    let o_tiles = dv8 / mma::N;
    let slices = BLOCK_N / mma::K;

    let mut kb = KernelBuilder::new(name, (b * h * q_blocks).max(1), THREADS);
    let q = kb.param("q", dtype, b * h * t * d, Access::Read);
    let k = kb.param("k", dtype, b * hk * s * d, Access::Read);
    let v = kb.param("v", dtype, b * hk * s * dv, Access::Read);
    let mask = a
        .masked
        .then(|| kb.param("key_mask", DType::Bool, b * s, Access::Read));
    let out = kb.param("out", dtype, b * h * t * dv, Access::Write);
    let q_tile = kb.shared("q_tile", DType::BF16, BLOCK_M * q_stride);
    let k_tile = kb.shared("k_tile", DType::BF16, BLOCK_N * k_stride);
    let v_tile = kb.shared("v_tile", DType::BF16, BLOCK_N * v_stride);
    let bias_tile = kb.shared("bias_tile", DType::F32, BLOCK_N);
    let s_acc = kb.private("scores", DType::F32, s_tiles * C_SLOTS);
    let o_acc = kb.private("acc", DType::F32, o_tiles * C_SLOTS);
    // Per row half: running maximum (0, 1) and partial sum (2, 3).
    let stats = kb.private("max_sum", DType::F32, 4);
    let red = kb.private("row_red", DType::F32, 2);
    let red_in = kb.private("row_red_in", DType::F32, 2);
    let a_frag = kb.private("q_frag", DType::BF16, A_SLOTS);
    let b_frag = kb.private("kv_frag", DType::BF16, 4 * B_SLOTS);
    let p_frag = kb.private("p_frag", DType::BF16, slices * A_SLOTS);
    let masked_bias = dtype.lowest() as f32;
    let p_map = p_from_scores(layout);

    struct At {
        bh: Expr,
        q0: Expr,
        batch: Expr,
        kv: Expr,
        lane: Expr,
        warp_row: Expr,
    }
    let at = |s_: &mut Scope| {
        let bh = s_.let_(Expr::BlockId / Expr::idx(q_blocks));
        let q0 = s_.let_(mul(Expr::BlockId % Expr::idx(q_blocks), Expr::idx(BLOCK_M)));
        let batch = s_.let_(bh.clone() / Expr::idx(h));
        let head = s_.let_(bh.clone() % Expr::idx(h));
        let kv = s_.let_(add(
            mul(batch.clone(), Expr::idx(hk)),
            head / Expr::idx(group),
        ));
        let lane = s_.let_(Expr::LaneId);
        let warp_row = s_.let_(mul(Expr::ThreadId / Expr::idx(32), Expr::idx(mma::M)));
        At {
            bh,
            q0,
            batch,
            kv,
            lane,
            warp_row,
        }
    };
    // Copies rows × cols (cols ≤ width) of a row-major source into a padded bf16 tile, zeros
    // outside; `src_at(row, col)` gives the flat source index, `live(row)` whether the row
    // exists.
    let stage = |s_: &mut Scope,
                 tile: BufRef,
                 (rows, width, stride, cols): (u64, u64, u64, u64),
                 src: BufRef,
                 row_ok: &dyn Fn(Expr) -> Expr,
                 src_at: &dyn Fn(Expr, Expr) -> Expr| {
        s_.for_(
            Expr::ThreadId,
            Expr::idx(rows * width),
            Expr::idx(THREADS as u64),
            |s_, e| {
                let r = s_.let_(e.clone() / Expr::idx(width));
                let c = s_.let_(e % Expr::idx(width));
                let dst = s_.let_(add(mul(r.clone(), Expr::idx(stride)), c.clone()));
                let ok = row_ok(r.clone()).and(c.clone().lt(Expr::idx(cols)));
                let from = src_at(r, c);
                s_.if_(
                    ok,
                    |s_| s_.store(tile, dst.clone(), Expr::load(src, from)),
                    |s_| s_.store(tile, dst.clone(), Expr::f32(0.0)),
                );
            },
        );
    };
    let exp = |e: Expr| Expr::un(KUnary::Exp, e);
    let max = |x: Expr, y: Expr| Expr::bin(KBinary::Max, x, y);

    // Q rows of the block; accumulators and statistics.
    let mut body = vec![
        kb.phase(|s_| {
            let p = at(s_);
            let (bh, q0) = (p.bh.clone(), p.q0.clone());
            stage(
                s_,
                q_tile,
                (BLOCK_M, d16, q_stride, d),
                q,
                &|r| add(q0.clone(), r).lt(Expr::idx(t)),
                &|r, c| {
                    add(
                        mul(
                            add(mul(bh.clone(), Expr::idx(t)), add(q0.clone(), r)),
                            Expr::idx(d),
                        ),
                        c,
                    )
                },
            );
            for i in 0..o_tiles * C_SLOTS {
                s_.store(o_acc, Expr::idx(i), Expr::f32(0.0));
            }
            for hf in 0..2 {
                s_.store(stats, Expr::idx(hf), Expr::f32(f32::MIN));
                s_.store(stats, Expr::idx(2 + hf), Expr::f32(0.0));
            }
        }),
        BlockStmt::Barrier,
    ];
    let tiles = s.div_ceil(BLOCK_N).max(1);
    let key_loop = kb.block_for(Expr::idx(0), Expr::idx(tiles), Expr::idx(1), |kb, kt| {
        let key0 = mul(kt, Expr::idx(BLOCK_N));
        let mut steps = vec![kb.phase(|s_| {
            let p = at(s_);
            let key0 = s_.let_(key0.clone());
            let kv_row = s_.let_(add(mul(p.kv.clone(), Expr::idx(s)), key0.clone()));
            let live = |r: Expr| add(key0.clone(), r).lt(Expr::idx(s));
            for (tile, src, width, stride, cols) in [
                (k_tile, k, d16, k_stride, d),
                (v_tile, v, dv8, v_stride, dv),
            ] {
                let kv_row = kv_row.clone();
                stage(
                    s_,
                    tile,
                    (BLOCK_N, width, stride, cols),
                    src,
                    &live,
                    &|r, c| add(mul(add(kv_row.clone(), r), Expr::idx(cols)), c),
                );
            }
            s_.for_(
                Expr::ThreadId,
                Expr::idx(BLOCK_N),
                Expr::idx(THREADS as u64),
                |s_, j| match mask {
                    Some(m) => {
                        let key = s_.let_(add(key0.clone(), j.clone()));
                        let at = add(mul(p.batch.clone(), Expr::idx(s)), key.clone());
                        s_.if_(
                            key.lt(Expr::idx(s)),
                            |s_| {
                                let bias = Expr::select(
                                    Expr::load(m, at),
                                    Expr::f32(0.0),
                                    Expr::f32(masked_bias),
                                );
                                s_.store(bias_tile, j.clone(), bias);
                            },
                            |s_| s_.store(bias_tile, j.clone(), Expr::f32(0.0)),
                        );
                    }
                    None => s_.store(bias_tile, j, Expr::f32(0.0)),
                },
            );
        })];
        steps.push(BlockStmt::Barrier);
        // S = Q·Kᵀ for the warp's 16 rows and the tile's 32 keys.
        steps.push(kb.phase(|s_| {
            for i in 0..s_tiles * C_SLOTS {
                s_.store(s_acc, Expr::idx(i), Expr::f32(0.0));
            }
        }));
        for ks in 0..d16 / mma::K {
            steps.push(kb.phase(|s_| {
                let p = at(s_);
                for i in 0..layout.a.slots() {
                    let (r, c) = layout.a.at_expr(&p.lane, i);
                    let row = add(p.warp_row.clone(), r);
                    let at = add(
                        mul(row, Expr::idx(q_stride)),
                        add(c, Expr::idx(ks * mma::K)),
                    );
                    s_.store(a_frag, Expr::idx(i as u64), Expr::load(q_tile, at));
                }
                for nt in 0..s_tiles {
                    for i in 0..layout.b.slots() {
                        // B[k][n] = K[key n][dim k].
                        let (r, c) = layout.b.at_expr(&p.lane, i);
                        let key = add(Expr::idx(nt * mma::N), c);
                        let at = add(
                            mul(key, Expr::idx(k_stride)),
                            add(r, Expr::idx(ks * mma::K)),
                        );
                        let slot = Expr::idx(nt * B_SLOTS + i as u64);
                        s_.store(b_frag, slot, Expr::load(k_tile, at));
                    }
                }
            }));
            for nt in 0..s_tiles {
                steps.push(BlockStmt::Mma(mma::MmaOperands {
                    a: (a_frag, 0),
                    b: (b_frag, nt * B_SLOTS),
                    acc: (s_acc, nt * C_SLOTS),
                }));
            }
        }
        // Scale, bias, this thread's part of each row maximum.
        steps.push(kb.phase(|s_| {
            let p = at(s_);
            let key0 = s_.let_(key0.clone());
            let mut part = [Expr::f32(f32::MIN), Expr::f32(f32::MIN)];
            for nt in 0..s_tiles {
                for i in 0..layout.c.slots() {
                    let (_, c) = layout.c.at_expr(&p.lane, i);
                    let col = s_.let_(add(Expr::idx(nt * mma::N), c));
                    let live = add(key0.clone(), col.clone()).lt(Expr::idx(s));
                    let slot = Expr::idx(nt * C_SLOTS + i as u64);
                    let x = Expr::bin(
                        KBinary::Add,
                        Expr::bin(
                            KBinary::Mul,
                            Expr::load(s_acc, slot.clone()),
                            Expr::f32(a.scale()),
                        ),
                        Expr::load(bias_tile, col),
                    );
                    let x = s_.let_(Expr::select(live, x, Expr::f32(f32::MIN)));
                    s_.store(s_acc, slot, x.clone());
                    let hf = half(layout, i) as usize;
                    part[hf] = max(part[hf].clone(), x);
                }
            }
            for (hf, m) in part.into_iter().enumerate() {
                s_.store(red, Expr::idx(hf as u64), m);
            }
        }));
        // The row maxima over the 4 lanes of each row.
        steps.extend(quad_reduce(kb, KBinary::Max, red, red_in));
        // New maxima, rescaling, probabilities (as the A fragments of P·V).
        steps.push(kb.phase(|s_| {
            let p = at(s_);
            let key0 = s_.let_(key0.clone());
            let mut m_new = Vec::new();
            let mut alpha = Vec::new();
            for hf in 0..2 {
                let m_old = s_.let_(Expr::load(stats, Expr::idx(hf)));
                let m = s_.let_(max(m_old.clone(), Expr::load(red, Expr::idx(hf))));
                alpha.push(s_.let_(exp(Expr::bin(KBinary::Sub, m_old, m.clone()))));
                s_.store(stats, Expr::idx(hf), m.clone());
                m_new.push(m);
            }
            let mut sums = [
                Expr::bin(
                    KBinary::Mul,
                    Expr::load(stats, Expr::idx(2)),
                    alpha[0].clone(),
                ),
                Expr::bin(
                    KBinary::Mul,
                    Expr::load(stats, Expr::idx(3)),
                    alpha[1].clone(),
                ),
            ];
            for nt in 0..s_tiles {
                for i in 0..layout.c.slots() {
                    let (_, c) = layout.c.at_expr(&p.lane, i);
                    let live = add(key0.clone(), add(Expr::idx(nt * mma::N), c)).lt(Expr::idx(s));
                    let hf = half(layout, i) as usize;
                    let slot = Expr::idx(nt * C_SLOTS + i as u64);
                    let z = Expr::bin(
                        KBinary::Sub,
                        Expr::load(s_acc, slot.clone()),
                        m_new[hf].clone(),
                    );
                    let pr = s_.let_(Expr::select(live, exp(z), Expr::f32(0.0)));
                    s_.store(s_acc, slot, pr.clone());
                    sums[hf] = Expr::bin(KBinary::Add, sums[hf].clone(), pr);
                }
            }
            for (hf, l) in sums.into_iter().enumerate() {
                s_.store(stats, Expr::idx(2 + hf as u64), l);
            }
            for j in 0..slices {
                for (ia, &(tile, ci)) in p_map.iter().enumerate() {
                    let from = Expr::idx((2 * j + tile) * C_SLOTS + ci as u64);
                    s_.store(
                        p_frag,
                        Expr::idx(j * A_SLOTS + ia as u64),
                        Expr::load(s_acc, from),
                    );
                }
            }
            for nt in 0..o_tiles {
                for i in 0..layout.c.slots() {
                    let slot = Expr::idx(nt * C_SLOTS + i as u64);
                    let scaled = Expr::bin(
                        KBinary::Mul,
                        Expr::load(o_acc, slot.clone()),
                        alpha[half(layout, i) as usize].clone(),
                    );
                    s_.store(o_acc, slot, scaled);
                }
            }
        }));
        // O += P·V, four 8-column tiles of V at a time.
        for j in 0..slices {
            for g0 in (0..o_tiles).step_by(4) {
                let g1 = (g0 + 4).min(o_tiles);
                steps.push(kb.phase(|s_| {
                    let p = at(s_);
                    for nt in g0..g1 {
                        for i in 0..layout.b.slots() {
                            // B[k][n] = V[key k][column n].
                            let (r, c) = layout.b.at_expr(&p.lane, i);
                            let key = add(Expr::idx(j * mma::K), r);
                            let col = add(Expr::idx(nt * mma::N), c);
                            let at = add(mul(key, Expr::idx(v_stride)), col);
                            let slot = Expr::idx((nt - g0) * B_SLOTS + i as u64);
                            s_.store(b_frag, slot, Expr::load(v_tile, at));
                        }
                    }
                }));
                for nt in g0..g1 {
                    steps.push(BlockStmt::Mma(mma::MmaOperands {
                        a: (p_frag, j * A_SLOTS),
                        b: (b_frag, (nt - g0) * B_SLOTS),
                        acc: (o_acc, nt * C_SLOTS),
                    }));
                }
            }
        }
        steps.push(BlockStmt::Barrier);
        steps
    });
    body.push(key_loop);
    // The row sums over the 4 lanes of each row, then O = acc / l.
    body.push(kb.phase(|s_| {
        for hf in 0..2 {
            s_.store(red, Expr::idx(hf), Expr::load(stats, Expr::idx(2 + hf)));
        }
    }));
    body.extend(quad_reduce(&mut kb, KBinary::Add, red, red_in));
    body.push(kb.phase(|s_| {
        let p = at(s_);
        let mut inv = Vec::new();
        for hf in 0..2 {
            let l = s_.let_(Expr::load(red, Expr::idx(hf)));
            inv.push(s_.let_(Expr::select(
                Expr::cmp(KCmp::Gt, l.clone(), Expr::f32(0.0)),
                Expr::bin(KBinary::Div, Expr::f32(1.0), l),
                Expr::f32(0.0),
            )));
        }
        for nt in 0..o_tiles {
            for i in 0..layout.c.slots() {
                let (r, c) = layout.c.at_expr(&p.lane, i);
                let row = s_.let_(add(add(p.q0.clone(), p.warp_row.clone()), r));
                let col = s_.let_(add(Expr::idx(nt * mma::N), c));
                let ok = row
                    .clone()
                    .lt(Expr::idx(t))
                    .and(col.clone().lt(Expr::idx(dv)));
                let dst = add(
                    mul(add(mul(p.bh.clone(), Expr::idx(t)), row), Expr::idx(dv)),
                    col,
                );
                let slot = Expr::idx(nt * C_SLOTS + i as u64);
                let o = Expr::bin(
                    KBinary::Mul,
                    Expr::load(o_acc, slot),
                    inv[half(layout, i) as usize].clone(),
                );
                s_.if_(ok, |s_| s_.store(out, dst, round_to(dtype, o)), |_| {});
            }
        }
    }));
    kb.finish(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probabilities of P feed `P·V` as the A fragment from the same lane's score slots,
    /// in every lane: what lets P stay in registers.
    #[test]
    fn scores_become_the_a_fragment_in_every_lane() {
        let l = &mma::PTX;
        let map = p_from_scores(l);
        for lane in 0..32 {
            for (ia, &(tile, ci)) in map.iter().enumerate() {
                let (r, c) = l.a.at(lane, ia);
                let (sr, sc) = l.c.at(lane, ci);
                assert_eq!((r, c), (sr, sc + tile * mma::N), "lane {lane} slot {ia}");
            }
        }
    }
}
