//! The f32 math library of compiled kernels, in Rust: the same algorithms, constants and
//! operation order (fma where the kernels use fma), so that values derived with it — the
//! transforms of [`crate::philox`] — are bit-identical between the interpreter and host or GPU
//! kernels. See codegen's `mlir/mathlib.rs` for the algorithms; the two must change together.
//!
//! The interpreter's own `exp`/`log`/`sin`/`cos` ops use the platform's libm (the reference);
//! these twins serve bit-exactness where it is required.

/// ln 2, high part (exact in f32; k·LN2_HI is exact for |k| < 2^8).
pub const LN2_HI: f32 = f32::from_bits(0x3f31_7200);
/// ln 2 − LN2_HI, rounded to f32.
pub const LN2_LO: f32 = f32::from_bits(0x35bf_be8e);
/// π/2 = PIO2_1 + PIO2_2 + PIO2_3 (first two exact).
pub const PIO2_1: f32 = f32::from_bits(0x3fc9_0000);
/// Second part of π/2.
pub const PIO2_2: f32 = f32::from_bits(0x39fd_a000);
/// Third part of π/2.
pub const PIO2_3: f32 = f32::from_bits(0x33a2_2169);

/// The Taylor coefficients of e^r used by [`exp`].
pub const EXP_COEFFS: [f32; 8] = [
    1.0,
    1.0,
    0.5,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5040.0,
];
/// Coefficients of (ln((1+s)/(1−s)) − 2s)/(2s) in z = s², used by [`log`].
pub const LOG_COEFFS: [f32; 7] = [
    0.0,
    1.0 / 3.0,
    1.0 / 5.0,
    1.0 / 7.0,
    1.0 / 9.0,
    1.0 / 11.0,
    1.0 / 13.0,
];
/// (sin r − r)/(r·z) in z = r².
pub const SIN_COEFFS: [f32; 5] = [
    -1.0 / 6.0,
    1.0 / 120.0,
    -1.0 / 5040.0,
    1.0 / 362_880.0,
    -1.0 / 39_916_800.0,
];
/// (cos r − 1)/z in z = r².
pub const COS_COEFFS: [f32; 6] = [
    -0.5,
    1.0 / 24.0,
    -1.0 / 720.0,
    1.0 / 40_320.0,
    -1.0 / 3_628_800.0,
    1.0 / 479_001_600.0,
];

/// NaN-propagating max (MLIR `arith.maximumf`).
#[inline]
fn maximum(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

/// NaN-propagating min (MLIR `arith.minimumf`).
#[inline]
fn minimum(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.min(b)
    }
}

/// Horner evaluation with fma, highest coefficient first, as the kernels do.
#[inline]
pub fn horner(z: f32, c: &[f32]) -> f32 {
    let mut acc = c[c.len() - 1];
    for &ci in c[..c.len() - 1].iter().rev() {
        acc = acc.mul_add(z, ci);
    }
    acc
}

#[inline]
fn pow2i(k: i32) -> f32 {
    f32::from_bits(((k + 127) << 23) as u32)
}

/// e^x, as the kernels compute it.
#[inline]
pub fn exp(x: f32) -> f32 {
    let xc = minimum(maximum(x, -104.0), 89.0);
    let kf = xc.mul_add(std::f32::consts::LOG2_E, 0.5).floor();
    let r = kf.mul_add(-LN2_HI, xc);
    let r = kf.mul_add(-LN2_LO, r);
    let p = horner(r, &EXP_COEFFS);
    let k = kf as i32;
    let k1 = k >> 1;
    let k2 = k - k1;
    p * pow2i(k1) * pow2i(k2)
}

/// ln x, as the kernels compute it.
pub fn log(x: f32) -> f32 {
    let den = x < f32::MIN_POSITIVE;
    let xs = if den { x * 8_388_608.0 } else { x };
    let adj = if den { -23 } else { 0 };
    let bits = xs.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 127 + adj;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    if m > std::f32::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let poly = horner(z, &LOG_COEFFS);
    let s2 = s + s;
    let lm = s2.mul_add(poly, s2);
    let ef = e as f32;
    let r = ef.mul_add(LN2_HI, ef.mul_add(LN2_LO, lm));
    if x.is_nan() || x < 0.0 {
        f32::NAN
    } else if x == 0.0 {
        f32::NEG_INFINITY
    } else if x == f32::INFINITY {
        f32::INFINITY
    } else {
        r
    }
}

fn sin_cos(x: f32, cos: bool) -> f32 {
    let kf = x.mul_add(std::f32::consts::FRAC_2_PI, 0.5).floor();
    let r = kf.mul_add(-PIO2_1, x);
    let r = kf.mul_add(-PIO2_2, r);
    let r = kf.mul_add(-PIO2_3, r);
    let z = r * r;
    let sin_r = (r * z).mul_add(horner(z, &SIN_COEFFS), r);
    let cos_r = z.mul_add(horner(z, &COS_COEFFS), 1.0);
    let k = (kf as i32).wrapping_add(cos as i32);
    let q = k & 3;
    let v = if q & 1 == 1 { cos_r } else { sin_r };
    if q & 2 == 2 {
        -v
    } else {
        v
    }
}

/// sin x, as the kernels compute it.
pub fn sin(x: f32) -> f32 {
    sin_cos(x, false)
}

/// cos x, as the kernels compute it.
pub fn cos(x: f32) -> f32 {
    sin_cos(x, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twins_are_accurate() {
        for i in 0..20_000 {
            let x = -80.0 + i as f32 * 0.008;
            let e = exp(x) as f64;
            assert!(
                (e - (x as f64).exp()).abs() <= 2.5e-7 * (x as f64).exp(),
                "exp {x}"
            );
            let y = 0.001 + i as f32 * 0.05;
            assert!(
                (log(y) as f64 - (y as f64).ln()).abs() <= 3e-7 * (y as f64).ln().abs().max(1.0)
            );
            let a = -50.0 + i as f32 * 0.005;
            assert!((sin(a) as f64 - (a as f64).sin()).abs() < 3e-7);
            assert!((cos(a) as f64 - (a as f64).cos()).abs() < 3e-7);
        }
        assert!(log(-1.0).is_nan() && log(f32::NAN).is_nan());
        assert_eq!(log(0.0), f32::NEG_INFINITY);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
    }
}
