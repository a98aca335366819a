//! The masked-diffusion losses against hand computations of the spec's formulas (§4.2), and one
//! compiled training step against the same step run by the reference interpreter.

mod common;

use common::small_cfg;

use indexmap::IndexMap;
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::compile::{compile, CompileOptions, PtxCheck};
use mmada_ir::{interp::interpret, max_rel_error, DType, Graph, Tensor};
use mmada_models::llada::param_specs;
use mmada_models::loss::{
    masked_diffusion_loss, row_weights, sample_image_mask, token_mean_loss, RowKind,
};
use mmada_models::train_step::{exp_avg, exp_avg_sq, train_step_graph, StepHyper};
use mmada_runtime::{open_artifact, Target};
use rand::{Rng, SeedableRng};

#[test]
fn text_losses_equal_the_spec_formulas() {
    // Random logits, targets, masks and p; rows 0–1 pretraining (LM), rows 2–4 SFT.
    let (b, l, v) = (5, 7, 11);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    let lg: Vec<f32> = (0..b * l * v)
        .map(|_| rng.random_range(-3.0..3.0))
        .collect();
    let x0: Vec<i64> = (0..b * l).map(|_| rng.random_range(0..v as i64)).collect();
    let prompt_len = [0usize, 0, 2, 3, 1];
    let mut masked = vec![false; b * l];
    for r in 0..b {
        for i in prompt_len[r]..l {
            masked[r * l + i] = rng.random_bool(0.5);
        }
    }
    let p: Vec<f32> = (0..b).map(|_| rng.random_range(0.05..1.0)).collect();
    let kinds: Vec<RowKind> = (0..b)
        .map(|r| {
            if r < 2 {
                RowKind::Lm
            } else {
                RowKind::Sft {
                    answer_len: l - prompt_len[r],
                }
            }
        })
        .collect();
    let (c_lm, c_sft) = (0.1, 0.5);
    let w = row_weights(&kinds, l, c_lm, c_sft);

    let mut g = Graph::new();
    let li = g.input("logits", DType::F32, [b, l, v]).unwrap();
    let xi = g.input("x0", DType::I64, [b, l]).unwrap();
    let mi = g.input("masked", DType::Bool, [b, l]).unwrap();
    let pi = g.input("p", DType::F32, [b]).unwrap();
    let wi = g.input("w", DType::F32, [b]).unwrap();
    let loss = masked_diffusion_loss(&mut g, li, xi, mi, pi, wi).unwrap();
    g.set_output("loss", loss).unwrap();
    let mut ins = IndexMap::new();
    ins.insert(
        "logits".to_string(),
        Tensor::from_f32([b, l, v], lg.clone()).unwrap(),
    );
    ins.insert(
        "x0".to_string(),
        Tensor::from_i64([b, l], x0.clone()).unwrap(),
    );
    let mf: Vec<f64> = masked.iter().map(|&m| m as u8 as f64).collect();
    ins.insert(
        "masked".to_string(),
        Tensor::from_f64(DType::Bool, [b, l], &mf).unwrap(),
    );
    ins.insert("p".to_string(), Tensor::from_f32([b], p.clone()).unwrap());
    ins.insert(
        "w".to_string(),
        Tensor::from_f64(DType::F32, [b], &w).unwrap(),
    );
    let got = interpret(&g, &ins).unwrap()["loss"].get_f64(0);

    // Hand computation: CE_i = logsumexp(logits_i) − logits_i[x0_i];
    // L_lm = 1/(B_lm·L) Σ_{b∈LM} Σ_{i∈M_b} CE/p_b; L_sft = 1/B_sft Σ_{b∈SFT} 1/A_b Σ CE/p_b.
    let ce = |r: usize, i: usize| {
        let row = &lg[(r * l + i) * v..(r * l + i + 1) * v];
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let z: f64 = row.iter().map(|&x| (x as f64 - m).exp()).sum();
        m + z.ln() - row[x0[r * l + i] as usize] as f64
    };
    let mut lm = 0.0;
    for r in 0..2 {
        for i in 0..l {
            if masked[r * l + i] {
                lm += ce(r, i) / p[r] as f64;
            }
        }
    }
    lm /= (2 * l) as f64;
    let mut sft = 0.0;
    for r in 2..5 {
        let a = (l - prompt_len[r]) as f64;
        let mut s = 0.0;
        for i in 0..l {
            if masked[r * l + i] {
                assert!(i >= prompt_len[r], "prompt positions are never masked");
                s += ce(r, i) / p[r] as f64;
            }
        }
        sft += s / a;
    }
    sft /= 3.0;
    let want = c_lm * lm + c_sft * sft;
    assert!(
        (got - want).abs() <= 1e-5 * want.abs(),
        "loss {got} vs hand computation {want}"
    );
}

#[test]
fn image_loss_masks_exactly_k_positions_and_takes_the_token_mean() {
    // MaskGIT: exactly k = max(1, round(N·cos(πu/2))) of the N positions are masked.
    let (b, n) = (6, 23);
    let mut g = Graph::new();
    let seed = g.input("seed", DType::I64, Vec::<usize>::new()).unwrap();
    let off = g.input("offset", DType::I64, Vec::<usize>::new()).unwrap();
    let m = sample_image_mask(&mut g, seed, off, b, n).unwrap();
    g.set_output("mask", m).unwrap();
    let u = g
        .rng(mmada_ir::RngDist::Uniform, 2, seed, off, [b, 1])
        .unwrap();
    g.set_output("u", u).unwrap();
    for s in 0..20i64 {
        let mut ins = IndexMap::new();
        ins.insert(
            "seed".to_string(),
            Tensor::from_i64(Vec::<usize>::new(), vec![s]).unwrap(),
        );
        ins.insert(
            "offset".to_string(),
            Tensor::from_i64(Vec::<usize>::new(), vec![s * 1000]).unwrap(),
        );
        let o = interpret(&g, &ins).unwrap();
        let mask = o["mask"].to_bool_vec();
        for r in 0..b {
            // The same f32 operations as the graph: r = cos(u·π/2), k = max(1, ⌊n·r + ½⌋).
            let uu = o["u"].get_f64(r) as f32;
            let ratio = (uu * std::f32::consts::FRAC_PI_2).cos();
            let k = (n as f32 * ratio + 0.5).floor().max(1.0) as usize;
            let count = mask[r * n..(r + 1) * n].iter().filter(|&&x| x).count();
            assert_eq!(count, k, "row {r}: {count} masked, k = {k}");
        }
    }
    // Token mean over kept labels.
    let (b, t, v) = (2, 5, 7);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let lg: Vec<f32> = (0..b * t * v)
        .map(|_| rng.random_range(-2.0..2.0))
        .collect();
    let y: Vec<i64> = (0..b * t).map(|_| rng.random_range(0..v as i64)).collect();
    let keep: Vec<f64> = (0..b * t).map(|i| (i % 3 != 1) as u8 as f64).collect();
    let mut g = Graph::new();
    let li = g.input("l", DType::F32, [b, t, v]).unwrap();
    let yi = g.input("y", DType::I64, [b, t]).unwrap();
    let ki = g.input("k", DType::Bool, [b, t]).unwrap();
    let loss = token_mean_loss(&mut g, li, yi, ki).unwrap();
    g.set_output("loss", loss).unwrap();
    let mut ins = IndexMap::new();
    ins.insert(
        "l".to_string(),
        Tensor::from_f32([b, t, v], lg.clone()).unwrap(),
    );
    ins.insert(
        "y".to_string(),
        Tensor::from_i64([b, t], y.clone()).unwrap(),
    );
    ins.insert(
        "k".to_string(),
        Tensor::from_f64(DType::Bool, [b, t], &keep).unwrap(),
    );
    let got = interpret(&g, &ins).unwrap()["loss"].get_f64(0);
    let (mut s, mut c) = (0.0, 0.0);
    for i in 0..b * t {
        if keep[i] != 0.0 {
            let row = &lg[i * v..(i + 1) * v];
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let z: f64 = row.iter().map(|&x| (x as f64 - m).exp()).sum();
            s += m + z.ln() - row[y[i] as usize] as f64;
            c += 1.0;
        }
    }
    assert!((got - s / c).abs() < 1e-5, "{got} vs {}", s / c);
}

#[test]
fn one_compiled_training_step_matches_the_interpreter() {
    let cfg = small_cfg();
    let (b, l) = (3, 9);
    let g = train_step_graph(&cfg, b, l, StepHyper::default()).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    let mut ins: IndexMap<String, Tensor> = IndexMap::new();
    for p in param_specs(&cfg) {
        let n: usize = p.shape.iter().product();
        let v: Vec<f32> = if p.shape.len() == 1 {
            (0..n).map(|_| rng.random_range(0.8..1.2)).collect()
        } else {
            (0..n).map(|_| rng.random_range(-0.3..0.3)).collect()
        };
        ins.insert(
            p.name.clone(),
            Tensor::from_f32(p.shape.clone(), v).unwrap(),
        );
        // Non-zero moments, as in the middle of training.
        let m: Vec<f32> = (0..n).map(|_| rng.random_range(-0.01..0.01)).collect();
        let vv: Vec<f32> = (0..n).map(|_| rng.random_range(0.0..1e-4)).collect();
        ins.insert(
            exp_avg(&p.name),
            Tensor::from_f32(p.shape.clone(), m).unwrap(),
        );
        ins.insert(
            exp_avg_sq(&p.name),
            Tensor::from_f32(p.shape.clone(), vv).unwrap(),
        );
    }
    let ids: Vec<i64> = (0..b * l).map(|_| rng.random_range(0..37)).collect();
    ins.insert("input_ids".into(), Tensor::from_i64([b, l], ids).unwrap());
    let prompt: Vec<f64> = (0..b * l)
        .map(|i| ((i % l) < 2 && i / l == 1) as u8 as f64)
        .collect();
    ins.insert(
        "prompt_mask".into(),
        Tensor::from_f64(DType::Bool, [b, l], &prompt).unwrap(),
    );
    let w = row_weights(
        &[RowKind::Lm, RowKind::Sft { answer_len: l - 2 }, RowKind::Lm],
        l,
        1.0,
        1.0,
    );
    ins.insert(
        "row_weight".into(),
        Tensor::from_f64(DType::F32, [b], &w).unwrap(),
    );
    ins.insert(
        "seed".into(),
        Tensor::from_i64(Vec::<usize>::new(), vec![77]).unwrap(),
    );
    ins.insert(
        "offset".into(),
        Tensor::from_i64(Vec::<usize>::new(), vec![5 << 32]).unwrap(),
    );
    for (n, v) in [("lr", 3e-3f32), ("bc1", 0.271), ("bc2", 0.00399)] {
        ins.insert(
            n.into(),
            Tensor::from_f32(Vec::<usize>::new(), vec![v]).unwrap(),
        );
    }
    let want = interpret(&g, &ins).unwrap();
    let art = compile(
        &g,
        &CompileOptions {
            name: "step".into(),
            backend: BackendOptions {
                gpu_archs: vec![],
                ..BackendOptions::default()
            },
            ptx_check: PtxCheck::Skip,
            ..CompileOptions::default()
        },
    )
    .unwrap();
    let mut exe = open_artifact(art, Target::Cpu).unwrap();
    let out = exe.run(&ins).unwrap();
    let e = max_rel_error(&out["loss"], &want["loss"], 1e-6);
    assert!(e <= 1e-5, "loss {e:e}");
    let e = max_rel_error(&out["grad_norm"], &want["grad_norm"], 1e-6);
    assert!(e <= 1e-4, "grad norm {e:e}");
    let mut worst: f64 = 0.0;
    for p in param_specs(&cfg) {
        for name in [p.name.clone(), exp_avg(&p.name), exp_avg_sq(&p.name)] {
            let got = exe.get_input(&name).unwrap();
            let w = &want[&format!("update.{name}")];
            // Parameters: relative to their scale; moments: absolute floor of their scale.
            let e = max_rel_error(&got, w, 1e-3);
            worst = worst.max(e);
            assert!(e <= 1e-5, "{name}: compiled vs interpreter {e:e}");
        }
    }
    eprintln!("compiled step vs interpreter: worst relative error {worst:.2e}");
}
