//! The interpreter's indexing, scan, convolution and random ops against independently computed
//! values, on odd shapes.

use indexmap::IndexMap;
use mmada_ir::{interp::interpret, philox, ConvGeom, DType, Graph, Op, RngDist, Tensor};
use rand::{Rng, SeedableRng};

fn rv(n: usize, seed: u64) -> Vec<f32> {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(-1.0f32..1.0)).collect()
}

fn one(g: &Graph, name: &str, t: Tensor) -> IndexMap<String, Tensor> {
    let mut m = IndexMap::new();
    m.insert(name.to_string(), t);
    interpret(g, &m).unwrap()
}

#[test]
fn iota_slice_pad_concat() {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [3, 5]).unwrap();
    let io = g.iota(DType::I64, [2, 3], 1).unwrap();
    let sl = g
        .add(
            Op::Slice {
                start: vec![1, 2],
                end: vec![3, 5],
            },
            &[x],
        )
        .unwrap();
    let pd = g.pad(x, &[1, 0], &[0, 2], -7.0).unwrap();
    let cc = g.concat(&[x, sl], 1).unwrap_err();
    let _ = cc; // shapes differ along axis 0: an error, as it should be
    let x2 = g
        .add(
            Op::Slice {
                start: vec![0, 0],
                end: vec![3, 2],
            },
            &[x],
        )
        .unwrap();
    let cc = g.concat(&[x, x2], 1).unwrap();
    for (n, id) in [("io", io), ("sl", sl), ("pd", pd), ("cc", cc)] {
        g.set_output(n, id).unwrap();
    }
    let xv = rv(15, 1);
    let o = one(&g, "x", Tensor::from_f32([3, 5], xv.clone()).unwrap());
    assert_eq!(o["io"].to_i64_vec(), vec![0, 1, 2, 0, 1, 2]);
    let sl = o["sl"].to_f32_vec();
    for i in 0..2 {
        for j in 0..3 {
            assert_eq!(sl[i * 3 + j], xv[(i + 1) * 5 + j + 2]);
        }
    }
    let pd = o["pd"].to_f32_vec();
    assert_eq!(o["pd"].shape().0, vec![4, 7]);
    for i in 0..4 {
        for j in 0..7 {
            let want = if i >= 1 && j < 5 {
                xv[(i - 1) * 5 + j]
            } else {
                -7.0
            };
            assert_eq!(pd[i * 7 + j], want);
        }
    }
    let cc = o["cc"].to_f32_vec();
    for i in 0..3 {
        for j in 0..7 {
            let want = if j < 5 {
                xv[i * 5 + j]
            } else {
                xv[i * 5 + j - 5]
            };
            assert_eq!(cc[i * 7 + j], want);
        }
    }
}

#[test]
fn gather_scatter_topk_cumsum() {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [4, 6]).unwrap();
    let idx = g
        .constant_f64(
            DType::I64,
            [4, 2],
            vec![5.0, 0.0, 3.0, 3.0, 1.0, 2.0, 0.0, 5.0],
        )
        .unwrap();
    let ga = g.gather(x, idx, 1).unwrap();
    let zeros = g.full(DType::F32, 0.0, [4, 6]).unwrap();
    let src = g.gather(x, idx, 1).unwrap();
    let sc = g.scatter_add(zeros, idx, src, 1).unwrap();
    let tk = g.topk(x, 3, 1).unwrap();
    let am = g.argmax(x, 0).unwrap();
    let cs = g.cumsum(x, 1, false).unwrap();
    let cr = g.cumsum(x, 0, true).unwrap();
    for (n, id) in [
        ("ga", ga),
        ("sc", sc),
        ("tk", tk),
        ("am", am),
        ("cs", cs),
        ("cr", cr),
    ] {
        g.set_output(n, id).unwrap();
    }
    let mut xv = rv(24, 2);
    xv[7] = xv[9]; // a tie in row 1
    xv[20] = f32::NAN; // NaN counts as largest
    let o = one(&g, "x", Tensor::from_f32([4, 6], xv.clone()).unwrap());
    let iv = [[5usize, 0], [3, 3], [1, 2], [0, 5]];
    let ga = o["ga"].to_f32_vec();
    let sc = o["sc"].to_f32_vec();
    for r in 0..4 {
        for (k, &c) in iv[r].iter().enumerate() {
            assert_eq!(ga[r * 2 + k].to_bits(), xv[r * 6 + c].to_bits());
        }
        for c in 0..6 {
            let want: f32 = iv[r]
                .iter()
                .filter(|&&i| i == c)
                .map(|&i| xv[r * 6 + i])
                .sum();
            if want.is_nan() {
                assert!(sc[r * 6 + c].is_nan());
            } else {
                assert_eq!(sc[r * 6 + c], want, "scatter row {r} col {c}");
            }
        }
    }
    let tk = o["tk"].to_i64_vec();
    for r in 0..4 {
        let mut order: Vec<usize> = (0..6).collect();
        order.sort_by(|&a, &b| {
            let (va, vb) = (xv[r * 6 + a], xv[r * 6 + b]);
            match (va.is_nan(), vb.is_nan()) {
                (true, false) => std::cmp::Ordering::Less,
                (false, true) => std::cmp::Ordering::Greater,
                _ => vb
                    .partial_cmp(&va)
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(a.cmp(&b)),
            }
        });
        assert_eq!(
            &tk[r * 3..r * 3 + 3],
            &order[..3].iter().map(|&v| v as i64).collect::<Vec<_>>()[..]
        );
    }
    assert_eq!(o["tk"].shape().0, vec![4, 3]);
    assert_eq!(o["am"].shape().0, vec![1, 6]);
    let cs = o["cs"].to_f32_vec();
    for r in 0..4 {
        let mut acc = 0f64;
        for c in 0..6 {
            acc += xv[r * 6 + c] as f64;
            let got = cs[r * 6 + c];
            assert!(
                got.is_nan() == acc.is_nan() && (acc.is_nan() || (got as f64 - acc).abs() < 1e-6)
            );
        }
    }
    let cr = o["cr"].to_f32_vec();
    for c in 0..6 {
        let mut acc = 0f64;
        for r in (0..4).rev() {
            acc += xv[r * 6 + c] as f64;
            let got = cr[r * 6 + c];
            assert!(
                got.is_nan() == acc.is_nan() && (acc.is_nan() || (got as f64 - acc).abs() < 1e-6)
            );
        }
    }
}

#[test]
fn conv2d_matches_naive_loops() {
    let (n, c, h, w, o, kh, kw) = (2, 4, 7, 6, 6, 3, 2);
    let geom = ConvGeom {
        stride: [2, 1],
        padding: [1, 0, 0, 1],
        groups: 2,
    };
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [n, c, h, w]).unwrap();
    let wt = g.input("w", DType::F32, [o, c / 2, kh, kw]).unwrap();
    let y = g.conv2d(x, wt, geom).unwrap();
    g.set_output("y", y).unwrap();
    let (xv, wv) = (rv(n * c * h * w, 3), rv(o * (c / 2) * kh * kw, 4));
    let mut ins = IndexMap::new();
    ins.insert(
        "x".into(),
        Tensor::from_f32([n, c, h, w], xv.clone()).unwrap(),
    );
    ins.insert(
        "w".into(),
        Tensor::from_f32([o, c / 2, kh, kw], wv.clone()).unwrap(),
    );
    let out = interpret(&g, &ins).unwrap();
    let ys = out["y"].shape().0.clone();
    let (oh, ow) = ((h + 1 - kh) / 2 + 1, (w + 1 - kw) + 1);
    assert_eq!(ys, vec![n, o, oh, ow]);
    let yv = out["y"].to_f32_vec();
    for b in 0..n {
        for oc in 0..o {
            let grp = oc / (o / 2);
            for yy in 0..oh {
                for xx in 0..ow {
                    let mut s = 0f64;
                    for ci in 0..c / 2 {
                        for i in 0..kh {
                            for j in 0..kw {
                                let hy = (yy * 2 + i) as i64 - 1;
                                let wx = (xx + j) as i64;
                                if hy < 0 || hy >= h as i64 || wx >= w as i64 {
                                    continue;
                                }
                                let ch = grp * (c / 2) + ci;
                                s += xv[((b * c + ch) * h + hy as usize) * w + wx as usize] as f64
                                    * wv[((oc * (c / 2) + ci) * kh + i) * kw + j] as f64;
                            }
                        }
                    }
                    let got = yv[((b * o + oc) * oh + yy) * ow + xx];
                    assert!((got as f64 - s).abs() < 1e-5, "{got} vs {s}");
                }
            }
        }
    }
}

#[test]
fn rng_is_philox_and_deterministic() {
    let mut g = Graph::new();
    let seed = g.input("seed", DType::I64, Vec::<usize>::new()).unwrap();
    let off = g.scalar_i64(1000).unwrap();
    let u = g.rng(RngDist::Uniform, 3, seed, off, [5, 7]).unwrap();
    let z = g.rng(RngDist::Normal, 0, seed, off, [5, 7]).unwrap();
    g.set_output("u", u).unwrap();
    g.set_output("z", z).unwrap();
    let o = one(
        &g,
        "seed",
        Tensor::from_i64(Vec::<usize>::new(), vec![-42]).unwrap(),
    );
    let u = o["u"].to_f32_vec();
    for (i, &v) in u.iter().enumerate() {
        let w = philox::philox4x32_10(
            [1000 + i as u32, 0, 3, 0],
            [(-42i64) as u64 as u32, ((-42i64) as u64 >> 32) as u32],
        );
        assert_eq!(v, (w[0] >> 8) as f32 / 16_777_216.0);
    }
    let o2 = one(
        &g,
        "seed",
        Tensor::from_i64(Vec::<usize>::new(), vec![-42]).unwrap(),
    );
    assert_eq!(o["z"], o2["z"]);
}
