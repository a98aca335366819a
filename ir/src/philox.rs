//! Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11), the
//! counter-based generator behind [`crate::Op::Rng`], and the mapping from its words to
//! uniform, normal and Gumbel f32 values.
//!
//! Compiled kernels implement the same function with the same operation order (see codegen's
//! `kernels::rng`), and the transforms use [`crate::mathlib`], the bit-exact twin of the kernels'
//! math library, so interpreter and kernels produce identical bits.

use crate::mathlib;
use crate::RngDist;

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Philox4x32 with `rounds` rounds on `ctr` under `key`.
pub fn philox4x32(ctr: [u32; 4], key: [u32; 2], rounds: u32) -> [u32; 4] {
    let (mut c, mut k) = (ctr, key);
    for r in 0..rounds {
        if r > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let p0 = M0 as u64 * c[0] as u64;
        let p1 = M1 as u64 * c[2] as u64;
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// Philox4x32-10.
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    philox4x32(ctr, key, 10)
}

/// The Philox words of element `i` of an `Rng` node.
pub fn words(seed: i64, offset: i64, stream: u32, i: u64) -> [u32; 4] {
    let c = (offset as u64).wrapping_add(i);
    let s = seed as u64;
    philox4x32_10(
        [c as u32, (c >> 32) as u32, stream, 0],
        [s as u32, (s >> 32) as u32],
    )
}

/// u in [0, 1): the top 24 bits of `x` scaled by 2^-24 (exact).
pub fn uniform_co(x: u32) -> f32 {
    (x >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// u in (0, 1): the top 24 bits of `x` plus one half, scaled by 2^-24 (exact).
pub fn uniform_oo(x: u32) -> f32 {
    ((x >> 8) as f32 + 0.5) * (1.0 / 16_777_216.0)
}

/// The value of element `i` of an `Rng` node.
pub fn sample(dist: RngDist, seed: i64, offset: i64, stream: u32, i: u64) -> f32 {
    let w = words(seed, offset, stream, i);
    match dist {
        RngDist::Uniform => uniform_co(w[0]),
        RngDist::Normal => {
            let u1 = uniform_oo(w[0]);
            let u2 = uniform_co(w[1]);
            let r = (-2.0f32 * mathlib::log(u1)).sqrt();
            r * mathlib::cos(std::f32::consts::TAU * u2)
        }
        RngDist::Gumbel => {
            let u = uniform_oo(w[0]);
            -mathlib::log(-mathlib::log(u))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors of Philox4x32-10 from the Random123 distribution (kat_vectors).
    #[test]
    fn random123_known_answers() {
        let cases: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
            (
                [0, 0, 0, 0],
                [0, 0],
                [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
            ),
            (
                [0xffffffff; 4],
                [0xffffffff; 2],
                [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
            ),
            (
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0],
                [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
            ),
        ];
        for (c, k, want) in cases {
            assert_eq!(philox4x32_10(c, k), want);
        }
        // Philox4x32-7 vectors too (same round function, fewer rounds).
        assert_eq!(
            philox4x32([0, 0, 0, 0], [0, 0], 7),
            [0x5f6fb709, 0x0d893f64, 0x4f121f81, 0x4f730a48]
        );
    }

    #[test]
    fn transforms_are_in_range_and_roughly_distributed() {
        let n = 20_000u64;
        let (mut su, mut sn, mut sn2, mut sg) = (0f64, 0f64, 0f64, 0f64);
        for i in 0..n {
            let u = sample(RngDist::Uniform, 42, 7, 0, i);
            assert!((0.0..1.0).contains(&u));
            su += u as f64;
            let z = sample(RngDist::Normal, 42, 7, 0, i) as f64;
            sn += z;
            sn2 += z * z;
            sg += sample(RngDist::Gumbel, 42, 7, 0, i) as f64;
        }
        let nf = n as f64;
        assert!((su / nf - 0.5).abs() < 0.01);
        assert!((sn / nf).abs() < 0.03);
        assert!((sn2 / nf - 1.0).abs() < 0.03);
        // Gumbel mean is the Euler–Mascheroni constant.
        assert!((sg / nf - 0.577_215_7).abs() < 0.03);
    }
}
