//! Our math library, emitted as plain arithmetic on MLIR values so that the host and the GPU
//! compute the same bits without libm or libdevice.
//!
//! Algorithms (standard techniques; constants are mathematical facts):
//! - `exp`: n = round(x·log2 e); r = x − n·ln2 (two-part Cody–Waite with fma); e^r by its degree-7
//!   Taylor polynomial on |r| ≤ ln2/2 (truncation < 1e-8 relative); scaling by 2^n split in two
//!   powers so that denormal results round once. Accuracy ≈ 1 ulp.
//! - `log`: x = m·2^e with m in [√½, √2) (denormals pre-scaled by 2^23); s = (m−1)/(m+1);
//!   ln m = 2s + 2s·Σ_{k=1..6} s^{2k}/(2k+1); result e·ln2 + ln m. ≈ 1–2 ulp.
//! - `sin`/`cos`: k = round(x·2/π), r = x − k·π/2 (three-part Cody–Waite with fma, accurate for
//!   |x| up to about 1e5), Taylor polynomials to degree 11/12 on |r| ≤ π/4, quadrant from k mod 4.
//! - f16/bf16 ↔ f32: exact widening; narrowing rounds to nearest even (NaN stays NaN, overflow
//!   becomes infinity), done with integer operations.

use super::emit::{Emitter, V};
use crate::CodegenError;
use melior::dialect::arith::{CmpfPredicate, CmpiPredicate};
use melior::ir::{Block, Type};

type R = Result<V, CodegenError>;

/// ln 2 split so that `k · LN2_HI` is exact for |k| < 2^8: high part (exact in f32) …
pub const LN2_HI: f32 = f32::from_bits(0x3f31_7200); // 0.693145751953125
/// … and the rest, rounded to f32.
pub const LN2_LO: f32 = f32::from_bits(0x35bf_be8e); // 1.4286068e-6
/// π/2 in three parts for Cody–Waite reduction: 1.5703125 (exact) …
pub const PIO2_1: f32 = f32::from_bits(0x3fc9_0000);
/// … 4.837512969970703125e-4 (exact) …
pub const PIO2_2: f32 = f32::from_bits(0x39fd_a000);
/// … and the rest, rounded to f32 (7.5497901e-8).
pub const PIO2_3: f32 = f32::from_bits(0x33a2_2169);

impl<'c> Emitter<'c, '_> {
    fn mulf(&self, b: &Block<'c>, x: V, y: V) -> R {
        self.bin(b, "arith.mulf", x, y)
    }
    fn addf(&self, b: &Block<'c>, x: V, y: V) -> R {
        self.bin(b, "arith.addf", x, y)
    }
    fn subf(&self, b: &Block<'c>, x: V, y: V) -> R {
        self.bin(b, "arith.subf", x, y)
    }
    fn f2i(&self, b: &Block<'c>, x: V) -> R {
        self.cast(b, "arith.bitcast", x, self.i(32))
    }
    fn i2f(&self, b: &Block<'c>, x: V) -> R {
        self.cast(b, "arith.bitcast", x, Type::float32(self.c))
    }
    fn floorf(&self, b: &Block<'c>, x: V) -> R {
        self.intrinsic(b, "llvm.floor.f32", &[x], Type::float32(self.c))
    }

    /// Horner evaluation c[0] + z·(c[1] + z·(c[2] + …)) with fma.
    fn horner(&self, b: &Block<'c>, z: V, coeffs: &[f32]) -> R {
        let mut acc = self.f(b, coeffs[coeffs.len() - 1])?;
        for &c in coeffs[..coeffs.len() - 1].iter().rev() {
            let cv = self.f(b, c)?;
            acc = self.fma(b, acc, z, cv)?;
        }
        Ok(acc)
    }

    /// 2^k for an i32 k in [-126, 127], as f32 bits built directly.
    fn pow2i(&self, b: &Block<'c>, k: V) -> R {
        let bias = self.i32c(b, 127)?;
        let e = self.bin(b, "arith.addi", k, bias)?;
        let sh = self.i32c(b, 23)?;
        let bits = self.bin(b, "arith.shli", e, sh)?;
        self.i2f(b, bits)
    }

    /// e^x.
    pub(crate) fn exp(&self, b: &Block<'c>, x: V) -> R {
        let lo = self.f(b, -104.0)?;
        let hi = self.f(b, 89.0)?;
        // Clamped by compare-and-select: NaN fails both tests and passes through (cheaper on
        // x86 than NaN-propagating maximum/minimum, which need fix-up instructions).
        let below = self.cmpf(b, CmpfPredicate::Olt, x, lo)?;
        let xc = self.select(b, below, lo, x)?;
        let above = self.cmpf(b, CmpfPredicate::Ogt, xc, hi)?;
        let xc = self.select(b, above, hi, xc)?;
        let log2e = self.f(b, std::f32::consts::LOG2_E)?;
        let half = self.f(b, 0.5)?;
        let t = self.fma(b, xc, log2e, half)?;
        let kf = self.floorf(b, t)?;
        let ln2_hi = self.f(b, -LN2_HI)?;
        let ln2_lo = self.f(b, -LN2_LO)?;
        let r = self.fma(b, kf, ln2_hi, xc)?;
        let r = self.fma(b, kf, ln2_lo, r)?;
        let p = self.horner(
            b,
            r,
            &[
                1.0,
                1.0,
                0.5,
                1.0 / 6.0,
                1.0 / 24.0,
                1.0 / 120.0,
                1.0 / 720.0,
                1.0 / 5040.0,
            ],
        )?;
        // kf is an integer in [-150, 128], or NaN (then p is NaN and so is the result): only
        // NaN needs replacing before a plain conversion.
        let nan = self.cmpf(b, CmpfPredicate::Uno, kf, kf)?;
        let zero = self.f(b, 0.0)?;
        let kf = self.select(b, nan, zero, kf)?;
        let k = self.cast(b, "arith.fptosi", kf, self.i(32))?;
        let one = self.i32c(b, 1)?;
        let k1 = self.bin(b, "arith.shrsi", k, one)?;
        let k2 = self.bin(b, "arith.subi", k, k1)?;
        let s1 = self.pow2i(b, k1)?;
        let s2 = self.pow2i(b, k2)?;
        let y = self.mulf(b, p, s1)?;
        self.mulf(b, y, s2)
    }

    /// ln x.
    pub(crate) fn log(&self, b: &Block<'c>, x: V) -> R {
        let tiny = self.f(b, f32::MIN_POSITIVE)?;
        let den = self.cmpf(b, CmpfPredicate::Olt, x, tiny)?;
        let two23 = self.f(b, 8_388_608.0)?;
        let scaled = self.mulf(b, x, two23)?;
        let xs = self.select(b, den, scaled, x)?;
        let m23 = self.i32c(b, -23)?;
        let z0 = self.i32c(b, 0)?;
        let adj = self.select(b, den, m23, z0)?;
        let bits = self.f2i(b, xs)?;
        let c23 = self.i32c(b, 23)?;
        let ff = self.i32c(b, 0xff)?;
        let e = self.bin(b, "arith.shrui", bits, c23)?;
        let e = self.bin(b, "arith.andi", e, ff)?;
        let c127 = self.i32c(b, 127)?;
        let e = self.bin(b, "arith.subi", e, c127)?;
        let e = self.bin(b, "arith.addi", e, adj)?;
        let mmask = self.i32c(b, 0x007f_ffff)?;
        let one_bits = self.i32c(b, 0x3f80_0000)?;
        let mb = self.bin(b, "arith.andi", bits, mmask)?;
        let mb = self.bin(b, "arith.ori", mb, one_bits)?;
        let m = self.i2f(b, mb)?;
        let sqrt2 = self.f(b, std::f32::consts::SQRT_2)?;
        let big = self.cmpf(b, CmpfPredicate::Ogt, m, sqrt2)?;
        let half = self.f(b, 0.5)?;
        let mh = self.mulf(b, m, half)?;
        let m = self.select(b, big, mh, m)?;
        let one = self.i32c(b, 1)?;
        let e1 = self.bin(b, "arith.addi", e, one)?;
        let e = self.select(b, big, e1, e)?;
        let onef = self.f(b, 1.0)?;
        let f = self.subf(b, m, onef)?;
        let twof = self.f(b, 2.0)?;
        let den2 = self.addf(b, twof, f)?;
        let s = self.bin(b, "arith.divf", f, den2)?;
        let z = self.mulf(b, s, s)?;
        let poly = self.horner(
            b,
            z,
            &[
                0.0,
                1.0 / 3.0,
                1.0 / 5.0,
                1.0 / 7.0,
                1.0 / 9.0,
                1.0 / 11.0,
                1.0 / 13.0,
            ],
        )?;
        let s2 = self.addf(b, s, s)?;
        let lm = self.fma(b, s2, poly, s2)?;
        let ef = self.cast(b, "arith.sitofp", e, Type::float32(self.c))?;
        let ln2_hi = self.f(b, LN2_HI)?;
        let ln2_lo = self.f(b, LN2_LO)?;
        let t = self.fma(b, ef, ln2_lo, lm)?;
        let r = self.fma(b, ef, ln2_hi, t)?;
        // Special values: +inf → +inf, 0 → -inf, negative → NaN, NaN → NaN.
        let inf = self.f(b, f32::INFINITY)?;
        let ninf = self.f(b, f32::NEG_INFINITY)?;
        let nan = self.f(b, f32::NAN)?;
        let zf = self.f(b, 0.0)?;
        let is_inf = self.cmpf(b, CmpfPredicate::Oeq, x, inf)?;
        let r = self.select(b, is_inf, inf, r)?;
        let is_zero = self.cmpf(b, CmpfPredicate::Oeq, x, zf)?;
        let r = self.select(b, is_zero, ninf, r)?;
        let bad = self.cmpf(b, CmpfPredicate::Ult, x, zf)?; // negative or NaN
        self.select(b, bad, nan, r)
    }

    /// sin x (or cos x when `cos`).
    pub(crate) fn sin_cos(&self, b: &Block<'c>, x: V, cos: bool) -> R {
        let two_over_pi = self.f(b, std::f32::consts::FRAC_2_PI)?;
        let half = self.f(b, 0.5)?;
        let t = self.fma(b, x, two_over_pi, half)?;
        let kf = self.floorf(b, t)?;
        let c1 = self.f(b, -PIO2_1)?;
        let c2 = self.f(b, -PIO2_2)?;
        let c3 = self.f(b, -PIO2_3)?;
        let r = self.fma(b, kf, c1, x)?;
        let r = self.fma(b, kf, c2, r)?;
        let r = self.fma(b, kf, c3, r)?;
        let z = self.mulf(b, r, r)?;
        // sin r = r + r·z·P(z); cos r = 1 + z·Q(z)
        let ps = self.horner(
            b,
            z,
            &[
                -1.0 / 6.0,
                1.0 / 120.0,
                -1.0 / 5040.0,
                1.0 / 362_880.0,
                -1.0 / 39_916_800.0,
            ],
        )?;
        let rz = self.mulf(b, r, z)?;
        let sin_r = self.fma(b, rz, ps, r)?;
        let pc = self.horner(
            b,
            z,
            &[
                -0.5,
                1.0 / 24.0,
                -1.0 / 720.0,
                1.0 / 40_320.0,
                -1.0 / 3_628_800.0,
                1.0 / 479_001_600.0,
            ],
        )?;
        let onef = self.f(b, 1.0)?;
        let cos_r = self.fma(b, z, pc, onef)?;
        // Quadrant q = k mod 4 (two's complement and-mask handles negative k).
        // Only k mod 4 matters; saturation keeps the conversion defined for huge |x| (where
        // the reduction is meaningless anyway) and NaN/inf inputs give NaN through r.
        let k = self.fptosi_sat(b, kf, 32)?;
        let k = if cos {
            let one = self.i32c(b, 1)?;
            self.bin(b, "arith.addi", k, one)?
        } else {
            k
        };
        let three = self.i32c(b, 3)?;
        let q = self.bin(b, "arith.andi", k, three)?;
        let one = self.i32c(b, 1)?;
        let two = self.i32c(b, 2)?;
        let odd = self.bin(b, "arith.andi", q, one)?;
        let use_cos = self.cmpi(b, CmpiPredicate::Eq, odd, one)?;
        let v = self.select(b, use_cos, cos_r, sin_r)?;
        let hi = self.bin(b, "arith.andi", q, two)?;
        let neg = self.cmpi(b, CmpiPredicate::Eq, hi, two)?;
        let nv = self.op1(b, "arith.negf", &[v], Type::float32(self.c))?;
        self.select(b, neg, nv, v)
    }

    /// f16 bits (i16) → f32.
    pub(crate) fn f16_bits_to_f32(&self, b: &Block<'c>, h16: V) -> R {
        let h = self.cast(b, "arith.extui", h16, self.i(32))?;
        let c8000 = self.i32c(b, 0x8000)?;
        let c16 = self.i32c(b, 16)?;
        let sign = self.bin(b, "arith.andi", h, c8000)?;
        let sign = self.bin(b, "arith.shli", sign, c16)?;
        let c10 = self.i32c(b, 10)?;
        let c1f = self.i32c(b, 0x1f)?;
        let e = self.bin(b, "arith.shrui", h, c10)?;
        let e = self.bin(b, "arith.andi", e, c1f)?;
        let c3ff = self.i32c(b, 0x3ff)?;
        let m = self.bin(b, "arith.andi", h, c3ff)?;
        let c13 = self.i32c(b, 13)?;
        let m13 = self.bin(b, "arith.shli", m, c13)?;
        // normal: ((e + 112) << 23) | m << 13
        let c112 = self.i32c(b, 112)?;
        let c23 = self.i32c(b, 23)?;
        let en = self.bin(b, "arith.addi", e, c112)?;
        let en = self.bin(b, "arith.shli", en, c23)?;
        let normal = self.bin(b, "arith.ori", en, m13)?;
        // inf/nan: 0x7f800000 | m << 13
        let cinf = self.i32c(b, 0x7f80_0000)?;
        let special = self.bin(b, "arith.ori", cinf, m13)?;
        // zero/subnormal: m · 2^-24 (exact in f32)
        let mf = self.cast(b, "arith.sitofp", m, Type::float32(self.c))?;
        let scale = self.f(b, 5.960_464_5e-8)?;
        let sub = self.mulf(b, mf, scale)?;
        let sub = self.f2i(b, sub)?;
        let zero = self.i32c(b, 0)?;
        let is_sub = self.cmpi(b, CmpiPredicate::Eq, e, zero)?;
        let is_special = self.cmpi(b, CmpiPredicate::Eq, e, c1f)?;
        let bits = self.select(b, is_special, special, normal)?;
        let bits = self.select(b, is_sub, sub, bits)?;
        let bits = self.bin(b, "arith.ori", bits, sign)?;
        self.i2f(b, bits)
    }

    /// bf16 bits (i16) → f32.
    pub(crate) fn bf16_bits_to_f32(&self, b: &Block<'c>, h16: V) -> R {
        let h = self.cast(b, "arith.extui", h16, self.i(32))?;
        let c16 = self.i32c(b, 16)?;
        let bits = self.bin(b, "arith.shli", h, c16)?;
        self.i2f(b, bits)
    }

    /// f32 → bf16 bits (i16), round to nearest even, NaN → quiet NaN.
    pub(crate) fn f32_to_bf16_bits(&self, b: &Block<'c>, x: V) -> R {
        let u = self.f2i(b, x)?;
        let c16 = self.i32c(b, 16)?;
        let one = self.i32c(b, 1)?;
        let lsb = self.bin(b, "arith.shrui", u, c16)?;
        let lsb = self.bin(b, "arith.andi", lsb, one)?;
        let c7fff = self.i32c(b, 0x7fff)?;
        let bias = self.bin(b, "arith.addi", c7fff, lsb)?;
        let r = self.bin(b, "arith.addi", u, bias)?;
        let r = self.bin(b, "arith.shrui", r, c16)?;
        let qnan = self.i32c(b, 0x7fc0)?;
        let is_nan = self.cmpf(b, CmpfPredicate::Uno, x, x)?;
        let r = self.select(b, is_nan, qnan, r)?;
        self.cast(b, "arith.trunci", r, self.i(16))
    }

    /// f32 → f16 bits (i16), round to nearest even; overflow → inf; NaN → quiet NaN.
    pub(crate) fn f32_to_f16_bits(&self, b: &Block<'c>, x: V) -> R {
        let u = self.f2i(b, x)?;
        let sign_mask = self.i32c(b, i32::MIN)?;
        let sign = self.bin(b, "arith.andi", u, sign_mask)?;
        let a = self.bin(b, "arith.xori", u, sign)?; // |x| bits
                                                     // |x| >= 65536 (or inf/nan): 0x7c00, or 0x7e00 for NaN
        let f16max = self.i32c(b, (127 + 16) << 23)?;
        let f32inf = self.i32c(b, 255 << 23)?;
        let over = self.cmpi(b, CmpiPredicate::Sge, a, f16max)?;
        let is_nan = self.cmpi(b, CmpiPredicate::Sgt, a, f32inf)?;
        let c7e00 = self.i32c(b, 0x7e00)?;
        let c7c00 = self.i32c(b, 0x7c00)?;
        let special = self.select(b, is_nan, c7e00, c7c00)?;
        // subnormal/zero: add the magic 2^-1 · 2^(127-15+23-10+1-127)... i.e. the float whose
        // addition aligns the 10 result bits at the bottom, then subtract its bits.
        let magic_bits = self.i32c(b, ((127 - 15) + (23 - 10) + 1) << 23)?;
        let magic = self.i2f(b, magic_bits)?;
        let af = self.i2f(b, a)?;
        let sum = self.addf(b, af, magic)?;
        let sum = self.f2i(b, sum)?;
        let sub = self.bin(b, "arith.subi", sum, magic_bits)?;
        // normal: rebias exponent and round to nearest even on the 13 dropped bits
        let c13 = self.i32c(b, 13)?;
        let one = self.i32c(b, 1)?;
        let odd = self.bin(b, "arith.shrui", a, c13)?;
        let odd = self.bin(b, "arith.andi", odd, one)?;
        let rebias = self.i32c(b, ((15 - 127) << 23) + 0xfff)?;
        let n = self.bin(b, "arith.addi", a, rebias)?;
        let n = self.bin(b, "arith.addi", n, odd)?;
        let normal = self.bin(b, "arith.shrui", n, c13)?;
        let min_normal = self.i32c(b, 113 << 23)?;
        let is_sub = self.cmpi(b, CmpiPredicate::Slt, a, min_normal)?;
        let v = self.select(b, is_sub, sub, normal)?;
        let v = self.select(b, over, special, v)?;
        let c16 = self.i32c(b, 16)?;
        let s16 = self.bin(b, "arith.shrui", sign, c16)?;
        let v = self.bin(b, "arith.ori", v, s16)?;
        self.cast(b, "arith.trunci", v, self.i(16))
    }
}
