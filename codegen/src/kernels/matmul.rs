//! Batched matrix product `[B, M, K] × [B, K, N]`: `tile × tile` output tiles per block (template
//! `matmul`, knob `tile`, 16 by default), one output per thread, A and B tiles staged through shared memory, the accumulator in a private buffer
//! across the k-loop's barriers; f32 accumulation with fma.
//!
//! This is the f32 kernel and the host's kernel for 16-bit operands; on the GPU, bf16 products
//! take the tensor-core kernel of [`super::tensor_core_matmul`] (knob `mma`).

use super::fused::round_to;
use super::index::{add, mul};
use crate::kir::{Access, BlockStmt, BufRef, Expr, Kernel, KernelBuilder, Scope};
use mmada_ir::DType;

/// Shapes of one matmul.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MatMulShape {
    /// Batch count (product of leading dims).
    pub batch: u64,
    /// Rows of A and C.
    pub m: u64,
    /// Contraction length.
    pub k: u64,
    /// Columns of B and C.
    pub n: u64,
    /// A is stored transposed (`[B, K, M]`).
    #[serde(default)]
    pub a_trans: bool,
    /// B is stored transposed (`[B, N, K]`).
    #[serde(default)]
    pub b_trans: bool,
}

/// Where a tiled product reads one element of an operand: given the scope, the batch index, the
/// row of C (for A) or column of C (for B) and the contraction index, the flat element index
/// and an extra in-bounds condition (`None` when every in-range element exists; the kernel
/// itself checks the row, column and contraction ranges).
pub(super) type Locate<'a> = &'a dyn Fn(&mut Scope, Expr, Expr, Expr) -> (Expr, Option<Expr>);

/// The tiled matmul kernel for operands of `dtype` (result also `dtype`), `tile × tile` threads
/// per block.
pub fn matmul_kernel(name: &str, s: MatMulShape, dtype: DType, tile: u64) -> Kernel {
    let mut kb = KernelBuilder::new(name, 1, 1);
    let a = kb.param("a", dtype, s.batch * s.m * s.k, Access::Read);
    let b = kb.param("b", dtype, s.batch * s.k * s.n, Access::Read);
    let c = kb.param("c", dtype, s.batch * s.m * s.n, Access::Write);
    let (m, k, n) = (s.m, s.k, s.n);
    let a_at =
        move |_: &mut Scope, batch: Expr, row: Expr, ak: Expr| (a_index(&s, batch, row, ak), None);
    let b_at =
        move |_: &mut Scope, batch: Expr, col: Expr, bk: Expr| (b_index(&s, batch, col, bk), None);
    let dims = Product {
        batch: s.batch,
        m,
        k,
        n,
    };
    tiled_product(kb, dims, tile, (a, &a_at), (b, &b_at), c, dtype)
}

/// The flat index of `A[batch][row][ak]` (read transposed when `s.a_trans`).
pub(super) fn a_index(s: &MatMulShape, batch: Expr, row: Expr, ak: Expr) -> Expr {
    let at = if s.a_trans {
        add(mul(ak, Expr::idx(s.m)), row)
    } else {
        add(mul(row, Expr::idx(s.k)), ak)
    };
    add(mul(batch, Expr::idx(s.m * s.k)), at)
}

/// The flat index of `B[batch][bk][col]` (read transposed when `s.b_trans`).
pub(super) fn b_index(s: &MatMulShape, batch: Expr, col: Expr, bk: Expr) -> Expr {
    let at = if s.b_trans {
        add(mul(col, Expr::idx(s.k)), bk)
    } else {
        add(mul(bk, Expr::idx(s.n)), col)
    };
    add(mul(batch, Expr::idx(s.k * s.n)), at)
}

/// The sizes of a batched product `C[b] = A[b] · B[b]`, `[m, k] × [k, n]`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Product {
    pub batch: u64,
    pub m: u64,
    pub k: u64,
    pub n: u64,
}

/// The tiled product over the parameters of `kb` (made with any grid; it is set here): A and B
/// elements are read where their `Locate` says, C is written `[batch, m, n]` row-major.
pub(super) fn tiled_product(
    kb: KernelBuilder,
    p: Product,
    tile: u64,
    (a, a_at): (BufRef, Locate<'_>),
    (b, b_at): (BufRef, Locate<'_>),
    c: BufRef,
    dtype: DType,
) -> Kernel {
    let Product { m, k, n, batch } = p;
    let (tm, tn) = (m.div_ceil(tile), n.div_ceil(tile));
    let mut kb = kb.with_launch((batch * tm * tn).max(1), (tile * tile) as u32);
    let a_tile = kb.shared("a_tile", DType::F32, tile * tile);
    let b_tile = kb.shared("b_tile", DType::F32, tile * tile);
    let acc = kb.private("acc", DType::F32, 1);

    // Per-thread coordinates, recomputed in each phase (phase-local values do not survive
    // barriers).
    let coords = |s_: &mut Scope| {
        let bid = Expr::BlockId;
        let batch = s_.let_(bid.clone() / Expr::idx(tm * tn));
        let t = s_.let_(bid % Expr::idx(tm * tn));
        let row0 = mul(t.clone() / Expr::idx(tn), Expr::idx(tile));
        let col0 = mul(t % Expr::idx(tn), Expr::idx(tile));
        let ty = s_.let_(Expr::ThreadId / Expr::idx(tile));
        let tx = s_.let_(Expr::ThreadId % Expr::idx(tile));
        let row = s_.let_(add(row0, ty.clone()));
        let col = s_.let_(add(col0, tx.clone()));
        (batch, ty, tx, row, col)
    };
    // Stores the operand element (or 0 outside) into `tile_buf[ti]`.
    let stage =
        |s_: &mut Scope, ok: Expr, at: (Expr, Option<Expr>), buf: BufRef, src: BufRef, ti: Expr| {
            let (at, extra) = at;
            let ok = match extra {
                Some(e) => ok.and(e),
                None => ok,
            };
            s_.if_(
                ok,
                |s_| s_.store(buf, ti.clone(), Expr::load(src, at)),
                |s_| s_.store(buf, ti.clone(), Expr::f32(0.0)),
            );
        };

    let mut body = vec![kb.phase(|s_| s_.store(acc, Expr::idx(0), Expr::f32(0.0)))];
    let k_tiles = k.div_ceil(tile);
    let kloop = kb.block_for(Expr::idx(0), Expr::idx(k_tiles), Expr::idx(1), |kb, kt| {
        vec![
            kb.phase(|s_| {
                let (batch, ty, tx, row, col) = coords(s_);
                let tile_idx = s_.let_(add(mul(ty.clone(), Expr::idx(tile)), tx.clone()));
                let ak = s_.let_(add(mul(kt.clone(), Expr::idx(tile)), tx.clone()));
                let a_ok = row
                    .clone()
                    .lt(Expr::idx(m))
                    .and(ak.clone().lt(Expr::idx(k)));
                let at = a_at(s_, batch.clone(), row, ak);
                stage(s_, a_ok, at, a_tile, a, tile_idx.clone());
                let bk = s_.let_(add(mul(kt.clone(), Expr::idx(tile)), ty));
                let b_ok = bk
                    .clone()
                    .lt(Expr::idx(k))
                    .and(col.clone().lt(Expr::idx(n)));
                let at = b_at(s_, batch, col, bk);
                stage(s_, b_ok, at, b_tile, b, tile_idx);
            }),
            BlockStmt::Barrier,
            kb.phase(|s_| {
                let ty = s_.let_(Expr::ThreadId / Expr::idx(tile));
                let tx = s_.let_(Expr::ThreadId % Expr::idx(tile));
                let sum = s_.local(Expr::load(acc, Expr::idx(0)));
                for kk in 0..tile {
                    let av =
                        Expr::load(a_tile, add(mul(ty.clone(), Expr::idx(tile)), Expr::idx(kk)));
                    let bv =
                        Expr::load(b_tile, add(mul(Expr::idx(kk), Expr::idx(tile)), tx.clone()));
                    s_.set(sum, Expr::fma(av, bv, Expr::Local(sum)));
                }
                s_.store(acc, Expr::idx(0), Expr::Local(sum));
            }),
            BlockStmt::Barrier,
        ]
    });
    body.push(kloop);
    body.push(kb.phase(|s_| {
        let (batch, _ty, _tx, row, col) = coords(s_);
        let ok = row
            .clone()
            .lt(Expr::idx(m))
            .and(col.clone().lt(Expr::idx(n)));
        let at = add(
            mul(batch, Expr::idx(m * n)),
            add(mul(row, Expr::idx(n)), col),
        );
        s_.if_(
            ok,
            |s_| {
                s_.store(
                    c,
                    at.clone(),
                    round_to(dtype, Expr::load(acc, Expr::idx(0))),
                )
            },
            |_| {},
        );
    }));
    kb.finish(body)
}
