//! Composite blocks beyond the transformer: LFQ quantisation and decoding (MAGVIT-v2, spec §7),
//! masked means, group statistics, categorical sampling by Gumbel-max; interpreter against
//! independent computations, and compiled against the interpreter.

mod common;

use indexmap::IndexMap;
use mmada_ir::{interp::interpret, max_rel_error, DType, Graph, Tensor};
use mmada_models::nn;
use mmada_runtime::{open_artifact, Target};
use rand::{Rng, SeedableRng};

fn compiled_equals_interpreter(
    g: &Graph,
    ins: &IndexMap<String, Tensor>,
    tol: f64,
) -> IndexMap<String, Tensor> {
    let want = interpret(g, ins).unwrap();
    let art = common::compile_all(g);
    let got = open_artifact(art, Target::Cpu).unwrap().run(ins).unwrap();
    for (n, w) in &want {
        let e = max_rel_error(&got[n], w, 1e-6);
        assert!(e <= tol, "{n}: compiled vs interpreter {e:e}");
    }
    want
}

#[test]
fn lfq_codes_and_decode_follow_the_spec() {
    let (b, c, h, w) = (2, 13, 3, 5);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
    let z: Vec<f32> = (0..b * c * h * w)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let mut g = Graph::new();
    let zi = g.input("z", DType::F32, [b, c, h, w]).unwrap();
    let codes = nn::lfq_codes(&mut g, zi).unwrap();
    let bits = nn::lfq_decode(&mut g, codes, c, h, w).unwrap();
    g.set_output("codes", codes).unwrap();
    g.set_output("bits", bits).unwrap();
    let mut ins = IndexMap::new();
    ins.insert(
        "z".to_string(),
        Tensor::from_f32([b, c, h, w], z.clone()).unwrap(),
    );
    let out = compiled_equals_interpreter(&g, &ins, 0.0);
    let codes = out["codes"].to_i64_vec();
    let bits = out["bits"].to_f32_vec();
    for bi in 0..b {
        for p in 0..h * w {
            // Channel 0 is the most significant bit; z > 0 is a one, z ≤ 0 a zero.
            let mut k = 0i64;
            for ch in 0..c {
                let v = z[(bi * c + ch) * h * w + p];
                k = 2 * k + (v > 0.0) as i64;
                let q = bits[(bi * c + ch) * h * w + p];
                assert_eq!(q, if v > 0.0 { 1.0 } else { -1.0 });
            }
            assert_eq!(codes[bi * h * w + p], k);
            assert!((0..8192).contains(&k));
        }
    }
}

#[test]
fn masked_mean_clip_and_group_std() {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [4, 9]).unwrap();
    let m = g.input("m", DType::Bool, [4, 9]).unwrap();
    let mm = g.masked_mean(x, m, &[1]).unwrap();
    let cl = g.clip(x, -0.25, 0.5).unwrap();
    let sd = g.std(x, 1, false, true).unwrap();
    g.set_output("mm", mm).unwrap();
    g.set_output("clip", cl).unwrap();
    g.set_output("std", sd).unwrap();
    let ins = common::random_inputs(&g, 3, -1.0, 1.0);
    let out = compiled_equals_interpreter(&g, &ins, 1e-5);
    let (xv, mv) = (ins["x"].to_f64_vec(), ins["m"].to_bool_vec());
    for r in 0..4 {
        let row = &xv[r * 9..(r + 1) * 9];
        let sel: Vec<f64> = (0..9).filter(|&j| mv[r * 9 + j]).map(|j| row[j]).collect();
        if !sel.is_empty() {
            let want = sel.iter().sum::<f64>() / sel.len() as f64;
            assert!((out["mm"].get_f64(r) - want).abs() < 1e-6);
        }
        let mean = row.iter().sum::<f64>() / 9.0;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 8.0;
        assert!((out["std"].get_f64(r) - var.sqrt()).abs() < 1e-6);
        for (j, v) in row.iter().enumerate() {
            let want = v.clamp(-0.25, 0.5) as f32 as f64;
            assert_eq!(out["clip"].get_f64(r * 9 + j), want);
        }
    }
}

#[test]
fn gumbel_max_sampling_follows_the_softmax() {
    // 4000 rows of the same 5 logits: sample frequencies must match softmax probabilities.
    let (rows, v) = (4000, 5);
    let logits = [0.3f32, -1.0, 1.2, 0.0, 0.7];
    let mut g = Graph::new();
    let l = g.input("l", DType::F32, [rows, v]).unwrap();
    let seed = g.input("seed", DType::I64, Vec::<usize>::new()).unwrap();
    let off = g.scalar_i64(0).unwrap();
    let s = g.sample_categorical(l, seed, off, 0).unwrap();
    g.set_output("s", s).unwrap();
    let mut ins = IndexMap::new();
    let lv: Vec<f32> = (0..rows).flat_map(|_| logits).collect();
    ins.insert("l".to_string(), Tensor::from_f32([rows, v], lv).unwrap());
    ins.insert(
        "seed".to_string(),
        Tensor::from_i64(Vec::<usize>::new(), vec![10086]).unwrap(),
    );
    let out = compiled_equals_interpreter(&g, &ins, 0.0);
    let s = out["s"].to_i64_vec();
    let z: f64 = logits.iter().map(|&x| (x as f64).exp()).sum();
    for (k, &lk) in logits.iter().enumerate() {
        let p = (lk as f64).exp() / z;
        let f = s.iter().filter(|&&x| x == k as i64).count() as f64 / rows as f64;
        // 4 standard errors.
        let se = (p * (1.0 - p) / rows as f64).sqrt();
        assert!(
            (f - p).abs() < 4.0 * se,
            "category {k}: frequency {f} vs probability {p}"
        );
    }
}

#[test]
fn broadcasts_of_inputs_with_leading_unit_dims_read_in_bounds() {
    // Regression: `[1, 4]` reshaped to `[1, 1, 1, 4]` and broadcast to `[1, 13, 1, 4]` read
    // element `i` instead of `i % 4` of the 4-element input (the fused index re-linearised
    // `[0, 0, 0, i % 4]` to the unbounded `i`), so LFQ decoding of given codes came out wrong on
    // the compiled targets only. Both a direct LFQ decode of codes and a plain broadcast.
    let mut g = Graph::new();
    let k = g.input("k", DType::I64, [1, 4]).unwrap();
    let q = nn::lfq_decode(&mut g, k, 13, 1, 4).unwrap();
    g.set_output("q", q).unwrap();
    let x = g.input("x", DType::F32, [1, 5]).unwrap();
    let r = g.reshape(x, [1, 1, 5]).unwrap();
    let b = g.broadcast_to(r, [3, 2, 5]).unwrap();
    let y = g.input("y", DType::F32, [3, 2, 5]).unwrap();
    let s = g.add2(b, y).unwrap();
    g.set_output("s", s).unwrap();
    let mut ins = IndexMap::new();
    ins.insert(
        "k".to_string(),
        Tensor::from_i64([1, 4], vec![4097, 0, 8191, 2]).unwrap(),
    );
    ins.insert(
        "x".to_string(),
        Tensor::from_f32([1, 5], vec![1.0, 2.0, 3.0, 4.0, 5.0]).unwrap(),
    );
    let yv: Vec<f32> = (0..30).map(|i| i as f32 * 0.5).collect();
    ins.insert("y".to_string(), Tensor::from_f32([3, 2, 5], yv).unwrap());
    let out = compiled_equals_interpreter(&g, &ins, 0.0);
    // And the interpreter against hand computation.
    let q = out["q"].to_f32_vec();
    for c in 0..13 {
        assert_eq!(q[c * 4 + 2], 1.0, "8191 has every bit");
        assert_eq!(q[c * 4 + 1], -1.0, "0 has none");
    }
    assert_eq!(out["s"].to_f32_vec()[29], 5.0 + 14.5);
}
