//! Philox4x32-10 and the uniform/normal/Gumbel transforms in KIR, operation for operation the
//! same as `mmada_ir::philox` (32-bit words are carried in i64 values masked to 32 bits), so
//! compiled kernels reproduce the interpreter's random bits exactly.

use crate::kir::{Expr, KBinary, KUnary, Scope, VTy};
use mmada_ir::RngDist;

const M0: i64 = 0xD251_1F53;
const M1: i64 = 0xCD9E_8D57;
const W0: i64 = 0x9E37_79B9;
const W1: i64 = 0xBB67_AE85;
const MASK: i64 = 0xffff_ffff;

fn and(a: Expr, b: Expr) -> Expr {
    Expr::bin(KBinary::And, a, b)
}
fn xor(a: Expr, b: Expr) -> Expr {
    Expr::bin(KBinary::Xor, a, b)
}
fn shr(a: Expr, n: i64) -> Expr {
    Expr::bin(KBinary::ShrU, a, Expr::i64(n))
}

/// The four Philox words (as i64 in [0, 2^32)) of element `i` (index) for i64 `seed` and
/// `offset`, with `stream` as the third counter word.
pub fn philox_words(s: &mut Scope, seed: Expr, offset: Expr, stream: u32, i: Expr) -> [Expr; 4] {
    let c = s.let_(offset + Expr::cast(VTy::I64, i));
    let mut ctr = [
        s.let_(and(c.clone(), Expr::i64(MASK))),
        s.let_(and(shr(c, 32), Expr::i64(MASK))),
        Expr::i64(stream as i64),
        Expr::i64(0),
    ];
    let mut k0 = s.let_(and(seed.clone(), Expr::i64(MASK)));
    let mut k1 = s.let_(and(shr(seed, 32), Expr::i64(MASK)));
    for r in 0..10 {
        if r > 0 {
            k0 = s.let_(and(k0 + Expr::i64(W0), Expr::i64(MASK)));
            k1 = s.let_(and(k1 + Expr::i64(W1), Expr::i64(MASK)));
        }
        let p0 = s.let_(Expr::i64(M0) * ctr[0].clone());
        let p1 = s.let_(Expr::i64(M1) * ctr[2].clone());
        let hi0 = shr(p0.clone(), 32);
        let lo0 = and(p0, Expr::i64(MASK));
        let hi1 = shr(p1.clone(), 32);
        let lo1 = and(p1, Expr::i64(MASK));
        let n0 = s.let_(xor(xor(hi1, ctr[1].clone()), k0.clone()));
        let n1 = s.let_(lo1);
        let n2 = s.let_(xor(xor(hi0, ctr[3].clone()), k1.clone()));
        let n3 = s.let_(lo0);
        ctr = [n0, n1, n2, n3];
    }
    ctr
}

/// u in [0, 1) from a word.
fn uniform_co(x: Expr) -> Expr {
    Expr::cast(VTy::F32, shr(x, 8)) * Expr::f32(1.0 / 16_777_216.0)
}

/// u in (0, 1) from a word.
fn uniform_oo(x: Expr) -> Expr {
    (Expr::cast(VTy::F32, shr(x, 8)) + Expr::f32(0.5)) * Expr::f32(1.0 / 16_777_216.0)
}

/// The f32 value of element `i` of an `Rng` node.
pub fn sample(
    s: &mut Scope,
    dist: RngDist,
    seed: Expr,
    offset: Expr,
    stream: u32,
    i: Expr,
) -> Expr {
    let w = philox_words(s, seed, offset, stream, i);
    match dist {
        RngDist::Uniform => uniform_co(w[0].clone()),
        RngDist::Normal => {
            let u1 = s.let_(uniform_oo(w[0].clone()));
            let u2 = s.let_(uniform_co(w[1].clone()));
            let l = s.let_(Expr::un(KUnary::Log, u1));
            let r = s.let_(Expr::un(KUnary::Sqrt, Expr::f32(-2.0) * l));
            let a = s.let_(Expr::f32(std::f32::consts::TAU) * u2);
            r * Expr::un(KUnary::Cos, a)
        }
        RngDist::Gumbel => {
            let u = s.let_(uniform_oo(w[0].clone()));
            let l = s.let_(Expr::un(KUnary::Log, u));
            let l2 = s.let_(Expr::un(KUnary::Log, Expr::un(KUnary::Neg, l)));
            Expr::un(KUnary::Neg, l2)
        }
    }
}
