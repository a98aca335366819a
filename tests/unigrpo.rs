//! UniGRPO's objective (issue 13, acceptance 1): for a fixed batch (completions, masks,
//! π_old / π_ref log-probabilities and rewards given), the objective and its diagnostics equal
//! an independent float64 NumPy computation of eqs. 3–5 (`scripts/reference/
//! unigrpo_reference.py`, fixture `tests/fixtures/tiny_unigrpo`), and the gradient of every
//! parameter equals central finite differences in f64.

mod common;

use common::compile_all;
use indexmap::IndexMap;
use mmada_ir::gradcheck::{check_gradients, float, Fill, GradInput};
use mmada_ir::{interp, DType, Graph, Tensor};
use mmada_models::checkpoint::load_model;
use mmada_models::config::LladaConfig;
use mmada_models::llada::param_specs;
use mmada_models::unigrpo_step::{declare_batch, grpo_loss_graph, objective, GrpoBatch, GrpoSpec};
use mmada_runtime::tensor_io::read_safetensors;
use mmada_runtime::{open_artifact, Target};
use std::path::Path;

const FIXTURE: &str = "tests/fixtures/tiny_unigrpo/batch.safetensors";

fn fixture() -> (
    LladaConfig,
    IndexMap<String, Tensor>,
    IndexMap<String, Tensor>,
) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (cfg, w) = load_model(&root.join("tests/fixtures/tiny_llada")).unwrap();
    let batch = read_safetensors(&root.join(FIXTURE)).unwrap();
    (cfg, w, batch)
}

fn spec(drop: bool) -> GrpoSpec {
    GrpoSpec {
        prompts: 2,
        group: 3,
        seq: 9,
        clip_eps: 0.2,
        kl_beta: 0.04,
        drop_zero_variance: drop,
        vocab: None,
    }
}

fn cast(t: &Tensor, d: DType) -> Tensor {
    Tensor::from_f64(d, t.shape().clone(), &t.to_f64_vec()).unwrap()
}

/// The inputs of case `c` in dtype `fd` for the float values.
fn inputs(
    w: &IndexMap<String, Tensor>,
    batch: &IndexMap<String, Tensor>,
    c: &str,
    fd: DType,
) -> IndexMap<String, Tensor> {
    let mut ins: IndexMap<String, Tensor> =
        w.iter().map(|(k, v)| (k.clone(), cast(v, fd))).collect();
    ins.insert("input_ids".into(), batch["input_ids"].clone());
    ins.insert("masked".into(), batch["masked"].clone());
    ins.insert("scored".into(), batch["masked"].clone());
    ins.insert("key_mask".into(), batch["key_mask"].clone());
    ins.insert("old_logp".into(), cast(&batch["old_logp"], fd));
    ins.insert("ref_logp".into(), cast(&batch["ref_logp"], fd));
    ins.insert("reward".into(), cast(&batch[&format!("{c}.reward")], fd));
    ins.insert("valid".into(), batch[&format!("{c}.valid")].clone());
    ins
}

/// Compares every output of case `c` with the NumPy values; returns the worst error of the
/// scalars (and of the advantages), each relative to `max(|want|, floor)`: `floor` tiny gives
/// relative errors; 1 gives absolute errors for values below 1.
fn compare(
    out: &IndexMap<String, Tensor>,
    batch: &IndexMap<String, Tensor>,
    c: &str,
    floor: f64,
) -> f64 {
    let mut worst: f64 = 0.0;
    for k in ["objective", "kl", "clip_frac", "entropy", "kept"] {
        let want = batch[&format!("{c}.expected.{k}")].get_f64(0);
        let got = out[k].get_f64(0);
        worst = worst.max((got - want).abs() / want.abs().max(floor.max(1e-12)));
        eprintln!("case {c} {k}: {got} vs NumPy {want}");
    }
    let want = batch[&format!("{c}.expected.advantage")].to_f64_vec();
    for (g, w) in out["advantage"].to_f64_vec().iter().zip(&want) {
        worst = worst.max((g - w).abs() / w.abs().max(1.0));
    }
    worst
}

#[test]
fn the_objective_equals_the_numpy_computation_of_eqs_3_to_5() {
    let (cfg, w, batch) = fixture();
    for c in ["a", "b"] {
        let drop = batch[&format!("{c}.drop_zero_variance")].get_f64(0) != 0.0;
        // f64 through the interpreter: the formulas, to 1e-9.
        let cfg64 = cfg.computing_in(DType::F64);
        let (g, _, _) = grpo_loss_graph(&cfg64, &spec(drop)).unwrap();
        let out = interp::interpret(&g, &inputs(&w, &batch, c, DType::F64)).unwrap();
        let worst = compare(&out, &batch, c, 0.0);
        assert!(worst < 1e-9, "case {c}: f64 objective off by {worst:e}");
        // f32, compiled for the host: rounding of f32 logits. Every scalar is a mean of terms
        // of size ~1 that cancel (J to ~0.07; the k3 KL, exp(r) − r − 1, to ~4e-3), and f32
        // carries ~6e-8 of each term's size, so the errors are bounded in absolute terms:
        // 1e-6 (~16 f32 ulps of 1). Relative to the KL that is up to ~3e-4, which is why a
        // relative bound is not the dtype's.
        let (g, _, _) = grpo_loss_graph(&cfg, &spec(drop)).unwrap();
        let mut exe = open_artifact(compile_all(&g), Target::Cpu).unwrap();
        let out = exe.run(&inputs(&w, &batch, c, DType::F32)).unwrap();
        let worst = compare(&out, &batch, c, 1.0);
        assert!(
            worst < 1e-6,
            "case {c}: compiled f32 objective off by {worst:e} (absolute)"
        );
        let loss = out["loss"].get_f64(0);
        let want = batch[&format!("{c}.expected.objective")].get_f64(0);
        assert!(
            (loss + want).abs() < 1e-6,
            "loss {loss} is not −J = {}",
            -want
        );
    }
}

#[test]
fn every_parameter_gradient_matches_finite_differences_in_f64() {
    let (cfg, _, batch) = fixture();
    let cfg64 = cfg.computing_in(DType::F64);
    let ids: Vec<i64> = batch["input_ids"].to_i64_vec();
    let bools =
        |k: &str| -> Vec<bool> { batch[k].to_f64_vec().iter().map(|&v| v != 0.0).collect() };
    let specs = param_specs(&cfg64);
    let mut ins: Vec<GradInput> = specs
        .iter()
        .map(|p| {
            let name: &'static str = Box::leak(p.name.clone().into_boxed_str());
            let norm = p.shape.len() == 1;
            let (lo, hi) = if norm { (0.7, 1.3) } else { (-0.5, 0.5) };
            float(name, &p.shape, lo, hi)
        })
        .collect();
    let n = specs.len();
    ins.push(GradInput {
        name: "input_ids",
        shape: vec![6, 9],
        fill: Fill::Int(ids),
    });
    for (name, from) in [
        ("masked", "masked"),
        ("scored", "masked"),
        ("key_mask", "key_mask"),
    ] {
        ins.push(GradInput {
            name,
            shape: vec![6, 9],
            fill: Fill::Bool(bools(from)),
        });
    }
    // π_old and π_ref far enough from π_θ that both sides of the clip are exercised.
    ins.push(float("old_logp", &[6, 9], -6.0, -2.0));
    ins.push(float("ref_logp", &[6, 9], -6.0, -2.0));
    ins.push(float("reward", &[6], 0.0, 2.5));
    ins.push(GradInput {
        name: "valid",
        shape: vec![6],
        fill: Fill::Bool(vec![true, true, false, true, true, true]),
    });
    let worst = check_gradients(&ins, 1e-5, |g: &mut Graph, x| {
        let params: IndexMap<String, _> = specs
            .iter()
            .zip(x)
            .map(|(p, &id)| (p.name.clone(), id))
            .collect();
        let b = GrpoBatch {
            input_ids: x[n],
            masked: x[n + 1],
            scored: x[n + 2],
            key_mask: x[n + 3],
            old_logp: x[n + 4],
            ref_logp: x[n + 5],
            reward: x[n + 6],
            valid: x[n + 7],
        };
        Ok(objective(g, &cfg64, &params, &spec(false), b)?.objective)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("worst relative error of the gradients vs finite differences: {worst:e}");
    assert!(worst < 1e-5);
    // The batch declaration names the inputs the driver feeds.
    let mut g = Graph::new();
    let b = declare_batch(&mut g, &cfg, &spec(false)).unwrap();
    assert_eq!(g.try_node(b.old_logp).unwrap().dtype, DType::F32);
}

/// With a vocabulary range (text-to-image: the sampler draws from the image codes only) the
/// log-probabilities are the log-softmax over those ids of the model's logits, computed here
/// on the host from the forward's logits; without one, over the whole vocabulary. Positions
/// whose id is outside the range (the prompt) stay finite.
#[test]
fn restricted_logprobs_are_the_log_softmax_over_the_range() {
    use mmada_models::llada::{declare_params, logits};
    use mmada_models::loss::apply_mask;
    use mmada_models::unigrpo_step::logprob_graph;
    let (cfg, w, batch) = fixture();
    let cfg = cfg.computing_in(DType::F64);
    let (b, l) = (6, 9);
    let v = cfg.rows();
    let (first, count) = (17, 29);
    // Ids half inside the range, half outside, from a fixed LCG.
    let mut s: u64 = 12345;
    let ids: Vec<i64> = (0..b * l)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % v as u64) as i64
        })
        .collect();
    assert!(ids.iter().any(|&t| t < first as i64) && ids.iter().any(|&t| t >= first as i64));
    let ids = Tensor::from_i64([b, l], ids).unwrap();
    let mut ins: IndexMap<String, Tensor> = w
        .iter()
        .map(|(k, t)| (k.clone(), cast(t, DType::F64)))
        .collect();
    ins.insert("input_ids".into(), ids.clone());
    ins.insert("masked".into(), batch["masked"].clone());
    ins.insert("key_mask".into(), batch["key_mask"].clone());
    // The logits of the masked input.
    let mut g = Graph::new();
    let params = declare_params(&mut g, &cfg).unwrap();
    let x0 = g.input("input_ids", DType::I64, [b, l]).unwrap();
    let m = g.input("masked", DType::Bool, [b, l]).unwrap();
    let km = g.input("key_mask", DType::Bool, [b, l]).unwrap();
    let xt = apply_mask(&mut g, x0, m, cfg.mask_token_id).unwrap();
    let lg = logits(&mut g, &cfg, &params, xt, Some(km)).unwrap();
    g.set_output("logits", lg).unwrap();
    let lg = interp::interpret(&g, &ins).unwrap()["logits"].to_f64_vec();
    let ids = ids.to_i64_vec();
    for vocab in [None, Some((first, count))] {
        let g = logprob_graph(&cfg, b, l, vocab, false).unwrap();
        let got = interp::interpret(&g, &ins).unwrap()["logp"].to_f64_vec();
        let (lo, n) = vocab.unwrap_or((0, v));
        let mut checked = 0;
        for p in 0..b * l {
            assert!(got[p].is_finite(), "{vocab:?}: position {p} is {}", got[p]);
            let id = ids[p] as usize;
            if id < lo || id >= lo + n {
                continue;
            }
            let row = &lg[p * v + lo..p * v + lo + n];
            let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = mx + row.iter().map(|x| (x - mx).exp()).sum::<f64>().ln();
            let want = lg[p * v + id] - lse;
            assert!(
                (got[p] - want).abs() < 1e-12 * want.abs().max(1.0),
                "{vocab:?}: position {p}: {} vs {want}",
                got[p]
            );
            checked += 1;
        }
        assert!(checked >= 5, "{vocab:?}: only {checked} positions in range");
    }
}
