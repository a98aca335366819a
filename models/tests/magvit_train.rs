//! The image tokenizer's training terms (spec §7, the official quantiser's): the commitment and
//! entropy values against a direct f64 computation, the entropy's gradient against finite
//! differences, the straight-through gradient by hand, and a compiled training step that lowers
//! the loss on a fixed batch.

use indexmap::IndexMap;
use mmada_ir::gradcheck::check_gradients;
use mmada_ir::interp::interpret;
use mmada_ir::{DType, Graph, Tensor, UnaryOp};
use mmada_models::magvit::{lfq_train, train_step_graph, MagvitConfig, COMMIT_BETA};
use rand::{Rng, SeedableRng};

fn zs(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.5f32..1.5)).collect()
}

fn h2(p: f64) -> f64 {
    let t = |x: f64| if x > 0.0 { -x * x.ln() } else { 0.0 };
    t(p) + t(1.0 - p)
}

#[test]
fn commitment_and_entropy_match_a_direct_computation() {
    let (b, c, h, w) = (2, 5, 3, 2);
    let z = zs(b * c * h * w, 3);
    let mut g = Graph::new();
    let zi = g.input("z", DType::F32, [b, c, h, w]).unwrap();
    let (q, commit, entropy) = lfq_train(&mut g, zi).unwrap();
    g.set_output("q", q).unwrap();
    g.set_output("commit", commit).unwrap();
    g.set_output("entropy", entropy).unwrap();
    let mut ins = IndexMap::new();
    ins.insert(
        "z".to_string(),
        Tensor::from_f32([b, c, h, w], z.clone()).unwrap(),
    );
    let out = interpret(&g, &ins).unwrap();
    // By hand, in f64.
    let n = (b * h * w) as f64;
    let mut c1 = 0.0;
    let mut hsum = 0.0;
    let mut mean_p = vec![0.0; c];
    for bi in 0..b {
        for ci in 0..c {
            for p in 0..h * w {
                let v = z[(bi * c + ci) * h * w + p] as f64;
                let q = if v > 0.0 { 1.0 } else { -1.0 };
                c1 += (q - v) * (q - v);
                // softmax(−(z−1)², −(z+1)²) = σ(4z).
                let pp = 1.0 / (1.0 + (-4.0 * v).exp());
                hsum += h2(pp);
                mean_p[ci] += pp / n;
            }
        }
    }
    let total = (b * c * h * w) as f64;
    let commit_want = (1.0 + COMMIT_BETA) * c1 / total;
    let entropy_want = hsum / total - mean_p.iter().map(|&p| h2(p)).sum::<f64>() / c as f64;
    let got = |k: &str| out[k].to_f64_vec()[0];
    assert!(
        (got("commit") - commit_want).abs() < 1e-5,
        "{} vs {commit_want}",
        got("commit")
    );
    assert!(
        (got("entropy") - entropy_want).abs() < 1e-5,
        "{} vs {entropy_want}",
        got("entropy")
    );
    let qv = out["q"].to_f32_vec();
    for (a, v) in qv.iter().zip(&z) {
        assert_eq!(*a, if *v > 0.0 { 1.0 } else { -1.0 });
    }
}

#[test]
fn entropy_gradient_matches_finite_differences_and_q_passes_straight_through() {
    let (b, c, h, w) = (1, 3, 2, 2);
    let worst = check_gradients(
        &[mmada_ir::gradcheck::float("z", &[b, c, h, w], -1.5, 1.5)],
        1e-4,
        |g, ins| {
            let (_, _, e) = lfq_train(g, ins[0])?;
            Ok(e)
        },
    )
    .unwrap();
    assert!(
        worst <= 1e-4,
        "entropy gradient vs finite differences {worst:e}"
    );
    // d Σ q·r / dz = r (straight through).
    let z = zs(b * c * h * w, 5);
    let r = zs(b * c * h * w, 6);
    let mut g = Graph::new();
    let zi = g.input("z", DType::F64, [b, c, h, w]).unwrap();
    let ri = g.input("r", DType::F64, [b, c, h, w]).unwrap();
    let zf = g.cast(zi, DType::F32).unwrap();
    let (q, _, _) = lfq_train(&mut g, zf).unwrap();
    let q = g.cast(q, DType::F64).unwrap();
    let rs = g.unary(UnaryOp::StopGradient, ri).unwrap();
    let qr = g.mul(q, rs).unwrap();
    let s = g
        .reduce(mmada_ir::ReduceOp::Sum, qr, &[0, 1, 2, 3], false)
        .unwrap();
    let gz = mmada_ir::autodiff::grad(&mut g, s, &[zi]).unwrap()[0];
    g.set_output("gz", gz).unwrap();
    let mut ins = IndexMap::new();
    let to64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    ins.insert(
        "z".into(),
        Tensor::from_f64(DType::F64, [b, c, h, w], &to64(&z)).unwrap(),
    );
    ins.insert(
        "r".into(),
        Tensor::from_f64(DType::F64, [b, c, h, w], &to64(&r)).unwrap(),
    );
    let out = interpret(&g, &ins).unwrap();
    for (a, want) in out["gz"].to_f64_vec().iter().zip(&r) {
        assert!((a - *want as f64).abs() < 1e-6);
    }
}

#[test]
fn a_compiled_training_step_lowers_the_loss() {
    // A small tokenizer (ch 32, two levels, 8 px → 4×4 codes of 6 bits), 20 steps on one batch.
    let cfg = MagvitConfig {
        ch: 32,
        ch_mult: vec![1, 1],
        num_res_blocks: vec![1, 1],
        dec_ch_mult: vec![1, 1],
        dec_num_res_blocks: vec![1, 1],
        resolution: 8,
        z_channels: 6,
        ..MagvitConfig::default()
    };
    let g = train_step_graph(&cfg, 2, 8, 8, Default::default()).unwrap();
    let art = mmada_codegen::compile::compile(&g, &Default::default()).unwrap();
    let mut exe = mmada_runtime::open_artifact(art, mmada_runtime::Target::Cpu).unwrap();
    for (k, (name, shape)) in cfg.param_specs().into_iter().enumerate() {
        let fan_in: usize = shape.iter().skip(1).product();
        let std = 1.0 / (fan_in.max(1) as f32).sqrt();
        let sh = mmada_ir::Shape(shape.clone());
        let t = if shape.len() == 1 {
            let v = if name.contains("norm") && name.ends_with("weight") {
                1.0
            } else {
                0.0
            };
            Tensor::from_f32(sh.clone(), vec![v; sh.numel()]).unwrap()
        } else {
            mmada_runtime::init::init_tensor(&sh, mmada_ir::Role::Param, 1, k as u32, std).unwrap()
        };
        exe.set_input(&name, &t).unwrap();
        let zero = Tensor::zeros(DType::F32, sh);
        exe.set_input(&format!("{name}.exp_avg"), &zero).unwrap();
        exe.set_input(&format!("{name}.exp_avg_sq"), &zero).unwrap();
    }
    let px = zs(2 * 3 * 8 * 8, 9)
        .iter()
        .map(|v| v / 1.5)
        .collect::<Vec<f32>>();
    let mut losses = Vec::new();
    for step in 1..=20 {
        let mut ins = IndexMap::new();
        ins.insert(
            "pixels".to_string(),
            Tensor::from_f32([2, 3, 8, 8], px.clone()).unwrap(),
        );
        let (b1, b2): (f32, f32) = (0.9, 0.999);
        for (n, v) in [
            ("lr", 2e-3f32),
            ("bc1", 1.0 - b1.powi(step)),
            ("bc2", 1.0 - b2.powi(step)),
        ] {
            ins.insert(
                n.into(),
                Tensor::from_f32(Vec::<usize>::new(), vec![v]).unwrap(),
            );
        }
        let out = exe.run(&ins).unwrap();
        losses.push(out["recon_loss"].to_f64_vec()[0]);
    }
    eprintln!("recon loss {:.4} → {:.4}", losses[0], losses[19]);
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(losses[19] < 0.7 * losses[0], "{losses:?}");
}
