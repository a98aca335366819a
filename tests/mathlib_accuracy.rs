//! Accuracy of the math library the kernels use (exp, log, sin, cos, sigmoid, f16/bf16
//! conversions), measured through compiled host kernels against f64 references.
//!
//! Bounds: exp and log within 2 ulp of the correctly rounded result (our algorithms are ≈1 ulp);
//! sin/cos within 2 ulp where |result| ≥ 2^-4 and within 2^-24 absolute near zeros, for
//! |x| ≤ 1e4 (the Cody–Waite reduction is exact enough there); f16/bf16 conversions bit-exact
//! (round to nearest even), matching the `half` crate.

mod common;

use half::{bf16, f16};
use indexmap::IndexMap;
use mmada_ir::{DType, Graph, NodeId, Tensor, UnaryOp};
use mmada_runtime::{open_artifact, Target};

/// Compiles `f(x)` for an f32 vector input `x` and returns its compiled output on the CPU.
fn run_on_cpu(xs: &[f32], f: impl FnOnce(&mut Graph, NodeId) -> NodeId) -> Tensor {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [xs.len()]).unwrap();
    let y = f(&mut g, x);
    g.set_output("y", y).unwrap();
    let art = common::compile_all(&g);
    let mut exe = open_artifact(art, Target::Cpu).unwrap();
    let mut ins = IndexMap::new();
    ins.insert(
        "x".to_string(),
        Tensor::from_f32([xs.len()], xs.to_vec()).unwrap(),
    );
    exe.run(&ins).unwrap()["y"].clone()
}

fn run_unary(op: UnaryOp, xs: &[f32]) -> Vec<f32> {
    run_on_cpu(xs, |g, x| g.unary(op, x).unwrap()).to_f32_vec()
}

/// Distance in units in the last place between an f32 and an f64 reference.
fn ulps(got: f32, want: f64) -> f64 {
    if got.is_nan() && want.is_nan() {
        return 0.0;
    }
    if got as f64 == want {
        return 0.0;
    }
    let w = want as f32;
    if w.is_infinite() || got.is_infinite() {
        return if got == w { 0.0 } else { f64::INFINITY };
    }
    let ulp = if w == 0.0 {
        f32::from_bits(1) as f64
    } else {
        let next = f32::from_bits(w.abs().to_bits() + 1) as f64;
        next - w.abs() as f64
    };
    (got as f64 - want).abs() / ulp
}

fn sweep(lo: f32, hi: f32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| lo + (hi - lo) * (i as f32 + 0.37) / n as f32)
        .collect()
}

#[test]
fn exp_within_2_ulp() {
    let mut xs = sweep(-103.0, 88.7, 200_003);
    xs.extend(sweep(-1.0, 1.0, 10_001));
    xs.extend([
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        88.72,
        89.0,
        100.0,
        -104.0,
        -110.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ]);
    let got = run_unary(UnaryOp::Exp, &xs);
    let mut worst: f64 = 0.0;
    for (&x, &y) in xs.iter().zip(&got) {
        let want = (x as f64).exp();
        // Results in the subnormal range have fewer bits; compare them absolutely.
        let e = if want < f32::MIN_POSITIVE as f64 {
            (y as f64 - want).abs() / f32::from_bits(1) as f64
        } else {
            ulps(y, want)
        };
        assert!(e <= 2.0, "exp({x:e}) = {y:e}, want {want:e} ({e} ulp)");
        worst = worst.max(e);
    }
    assert!(run_unary(UnaryOp::Exp, &[f32::NAN])[0].is_nan());
    eprintln!("exp: worst {worst:.2} ulp over {} inputs", xs.len());
}

#[test]
fn log_within_2_ulp() {
    let mut xs: Vec<f32> = Vec::new();
    for e in -149..128 {
        for m in [1.0f32, 1.1, 1.3, 1.414, 1.4143, 1.5, 1.7, 1.99] {
            let v = m * 2f32.powi(e);
            if v.is_finite() && v > 0.0 {
                xs.push(v);
            }
        }
    }
    xs.extend(sweep(0.5, 2.0, 100_001));
    xs.extend(sweep(1e-3, 1e3, 100_001));
    let got = run_unary(UnaryOp::Log, &xs);
    let mut worst: f64 = 0.0;
    for (&x, &y) in xs.iter().zip(&got) {
        let e = ulps(y, (x as f64).ln());
        assert!(
            e <= 2.0,
            "log({x:e}) = {y:e}, want {:e} ({e} ulp)",
            (x as f64).ln()
        );
        worst = worst.max(e);
    }
    let special = run_unary(UnaryOp::Log, &[0.0, -1.0, f32::INFINITY, f32::NAN, 1.0]);
    assert_eq!(special[0], f32::NEG_INFINITY);
    assert!(special[1].is_nan());
    assert_eq!(special[2], f32::INFINITY);
    assert!(special[3].is_nan());
    assert_eq!(special[4], 0.0);
    eprintln!("log: worst {worst:.2} ulp over {} inputs", xs.len());
}

#[test]
fn sin_cos_accurate_up_to_1e4() {
    let mut xs = sweep(-10.0, 10.0, 100_001);
    xs.extend(sweep(-10_000.0, 10_000.0, 100_001));
    for (op, f) in [
        (UnaryOp::Sin, f64::sin as fn(f64) -> f64),
        (UnaryOp::Cos, f64::cos),
    ] {
        let got = run_unary(op, &xs);
        let (mut worst_ulp, mut worst_abs): (f64, f64) = (0.0, 0.0);
        for (&x, &y) in xs.iter().zip(&got) {
            let want = f(x as f64);
            if want.abs() >= 0.0625 {
                let e = ulps(y, want);
                assert!(e <= 2.0, "{op:?}({x:e}) = {y:e}, want {want:e} ({e} ulp)");
                worst_ulp = worst_ulp.max(e);
            } else {
                let e = (y as f64 - want).abs();
                assert!(
                    e <= 2f64.powi(-24),
                    "{op:?}({x:e}) = {y:e}, want {want:e} (abs {e:e})"
                );
                worst_abs = worst_abs.max(e);
            }
        }
        eprintln!("{op:?}: worst {worst_ulp:.2} ulp (|y| ≥ 1/16), {worst_abs:.2e} abs near zeros");
        let special = run_unary(op, &[f32::NAN, f32::INFINITY]);
        assert!(special[0].is_nan() && special[1].is_nan());
    }
}

#[test]
fn sigmoid_relative_error() {
    let xs = sweep(-30.0, 30.0, 100_001);
    let got = run_unary(UnaryOp::Sigmoid, &xs);
    let mut worst: f64 = 0.0;
    for (&x, &y) in xs.iter().zip(&got) {
        let want = 1.0 / (1.0 + (-(x as f64)).exp());
        let e = ((y as f64 - want) / want).abs();
        worst = worst.max(e);
    }
    eprintln!("sigmoid: worst relative error {worst:.2e}");
    assert!(worst <= 4e-7, "{worst:e}");
}

fn roundtrip(dt: DType, xs: &[f32]) -> (Vec<u8>, Vec<f32>) {
    // h = cast(x, dt): the store rounds to dt; reading it back widens to f32.
    let h = run_on_cpu(xs, |g, x| g.cast(x, dt).unwrap());
    (h.to_le_bytes(), h.to_f32_vec())
}

fn interesting_f32() -> Vec<f32> {
    let mut xs = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        65504.0,
        65519.0,
        65520.0,
        65536.0,
        1e10,
        -1e10,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MIN_POSITIVE,
        6.1e-5,
        5.96e-8,
        2.98e-8,
        2.99e-8,
        1e-10,
        3.0e38,
        f32::MAX,
    ];
    // Every 97th f32 bit pattern (both signs), including subnormals, ties and NaNs.
    let mut b: u32 = 0;
    while b < 0xffff_ff00 {
        xs.push(f32::from_bits(b));
        b = b.wrapping_add(97 * 4099);
    }
    // Exact ties for both formats.
    for k in 0..2000u32 {
        xs.push(f32::from_bits(0x3f80_0000 + (k << 12) + 0x1000)); // f16 ties
        xs.push(f32::from_bits(0x3f80_0000 + (k << 16) + 0x8000)); // bf16 ties
    }
    xs
}

#[test]
fn f16_and_bf16_rounding_is_bit_exact() {
    let xs = interesting_f32();
    let (bytes, back) = roundtrip(DType::F16, &xs);
    for (i, &x) in xs.iter().enumerate() {
        let got = u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]);
        let want = f16::from_f32(x);
        if x.is_nan() {
            assert!(f16::from_bits(got).is_nan(), "f16({x:e})");
        } else {
            assert_eq!(got, want.to_bits(), "f16({x:e} = {:#x})", x.to_bits());
            assert_eq!(back[i].to_bits(), want.to_f32().to_bits());
        }
    }
    let (bytes, back) = roundtrip(DType::BF16, &xs);
    for (i, &x) in xs.iter().enumerate() {
        let got = u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]);
        let want = bf16::from_f32(x);
        if x.is_nan() {
            assert!(bf16::from_bits(got).is_nan(), "bf16({x:e})");
        } else {
            assert_eq!(got, want.to_bits(), "bf16({x:e} = {:#x})", x.to_bits());
            assert_eq!(back[i].to_bits(), want.to_f32().to_bits());
        }
    }
    eprintln!("f16/bf16: {} values bit-exact", xs.len());
}

#[test]
fn every_f16_and_bf16_value_widens_exactly() {
    for dt in [DType::F16, DType::BF16] {
        let bits: Vec<u16> = (0..=u16::MAX).collect();
        let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        let t = Tensor::from_le_bytes(dt, [bits.len()], &bytes).unwrap();
        let mut g = Graph::new();
        let x = g.input("x", dt, [bits.len()]).unwrap();
        let y = g.cast(x, DType::F32).unwrap();
        g.set_output("y", y).unwrap();
        let art = common::compile_all(&g);
        let mut exe = open_artifact(art, Target::Cpu).unwrap();
        let mut ins = IndexMap::new();
        ins.insert("x".to_string(), t);
        let got = exe.run(&ins).unwrap()["y"].to_f32_vec();
        for (&b, &y) in bits.iter().zip(&got) {
            let want = if dt == DType::F16 {
                f16::from_bits(b).to_f32()
            } else {
                bf16::from_bits(b).to_f32()
            };
            if want.is_nan() {
                assert!(y.is_nan());
            } else {
                assert_eq!(y.to_bits(), want.to_bits(), "{dt} bits {b:#x}");
            }
        }
    }
}
