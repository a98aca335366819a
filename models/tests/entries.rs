//! One artifact with two entries, `train-step` and `forward`, over shared parameters: three
//! training steps, then a forward, equal the interpreter running the same sequence (each step's
//! updated parameters and moments fed to the next), and no parameter is copied to the host in
//! between.

mod common;

use common::small_cfg;

use indexmap::IndexMap;
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::compile::{compile_entries, CompileOptions, PtxCheck};
use mmada_ir::interp::interpret;
use mmada_ir::{max_rel_error, DType, Tensor};
use mmada_models::llada::{forward_graph, param_specs};
use mmada_models::loss::{row_weights, RowKind};
use mmada_models::train_step::{exp_avg, exp_avg_sq, train_step_graph, StepHyper};
use mmada_runtime::{open_artifact, Target};
use rand::{Rng, SeedableRng};

fn scalar_f32(v: f32) -> Tensor {
    Tensor::from_f32(Vec::<usize>::new(), vec![v]).unwrap()
}

#[test]
fn train_steps_then_forward_share_resident_parameters() {
    let cfg = small_cfg();
    let (b, l) = (2, 7);
    let step_g = train_step_graph(&cfg, b, l, StepHyper::default()).unwrap();
    let fwd_g = forward_graph(&cfg, 1, l, false).unwrap();
    let (art, _) = compile_entries(
        &[("train-step", &step_g), ("forward", &fwd_g)],
        &CompileOptions {
            name: "entries".into(),
            backend: BackendOptions {
                gpu_archs: vec![],
                ..BackendOptions::default()
            },
            ptx_check: PtxCheck::Skip,
            ..CompileOptions::default()
        },
    )
    .unwrap();
    let names: Vec<&str> = art
        .manifest
        .entries
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(names, ["train-step", "forward"]);

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(23);
    let mut state: IndexMap<String, Tensor> = IndexMap::new();
    for p in param_specs(&cfg) {
        let n: usize = p.shape.iter().product();
        let v: Vec<f32> = if p.shape.len() == 1 {
            (0..n).map(|_| rng.random_range(0.8..1.2)).collect()
        } else {
            (0..n).map(|_| rng.random_range(-0.3..0.3)).collect()
        };
        state.insert(
            p.name.clone(),
            Tensor::from_f32(p.shape.clone(), v).unwrap(),
        );
        let zeros = Tensor::zeros(DType::F32, p.shape.clone());
        state.insert(exp_avg(&p.name), zeros.clone());
        state.insert(exp_avg_sq(&p.name), zeros);
    }
    let mut exe = open_artifact(art, Target::Cpu).unwrap();
    for (n, t) in &state {
        exe.set_input(n, t).unwrap();
    }
    let uploads = exe.transfers().to_device;
    assert_eq!(uploads, state.len() as u64);

    let w = row_weights(&[RowKind::Lm, RowKind::Lm], l, 1.0, 1.0);
    let mut losses = Vec::new();
    for step in 0..3u32 {
        let ids: Vec<i64> = (0..b * l).map(|_| rng.random_range(0..37)).collect();
        let mut data: IndexMap<String, Tensor> = IndexMap::new();
        data.insert("input_ids".into(), Tensor::from_i64([b, l], ids).unwrap());
        data.insert("prompt_mask".into(), Tensor::zeros(DType::Bool, [b, l]));
        data.insert(
            "row_weight".into(),
            Tensor::from_f64(DType::F32, [b], &w).unwrap(),
        );
        data.insert(
            "seed".into(),
            Tensor::from_i64(Vec::<usize>::new(), vec![5]).unwrap(),
        );
        data.insert(
            "offset".into(),
            Tensor::from_i64(Vec::<usize>::new(), vec![i64::from(step) << 32]).unwrap(),
        );
        let t = f64::from(step + 1);
        data.insert("lr".into(), scalar_f32(3e-3));
        data.insert("bc1".into(), scalar_f32((1.0 - 0.9f64.powf(t)) as f32));
        data.insert("bc2".into(), scalar_f32((1.0 - 0.999f64.powf(t)) as f32));

        // The interpreter: the whole state in, the updates out and carried to the next step.
        let mut ins = state.clone();
        ins.extend(data.clone());
        let want = interpret(&step_g, &ins).unwrap();
        for (out, inp) in step_g.updates() {
            state.insert(inp.clone(), want[out].clone());
        }
        // The artifact: only the data goes in; the state is resident.
        exe.run_entry("train-step", &data).unwrap();
        let loss = exe.read_output("train-step", "loss").unwrap();
        let e = max_rel_error(&loss, &want["loss"], 1e-6);
        assert!(e <= 1e-5, "step {step}: loss differs by {e:e}");
        losses.push(loss.to_f64_vec()[0]);
    }
    let ids: Vec<i64> = (0..l as i64).map(|i| (i * 5 + 3) % 37).collect();
    let mut data: IndexMap<String, Tensor> = IndexMap::new();
    data.insert("input_ids".into(), Tensor::from_i64([1, l], ids).unwrap());
    let mut ins: IndexMap<String, Tensor> = state
        .iter()
        .filter(|(n, _)| fwd_g.input_by_name(n).is_some())
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect();
    ins.extend(data.clone());
    let want = interpret(&fwd_g, &ins).unwrap();
    exe.run_entry("forward", &data).unwrap();
    let logits = exe.read_output("forward", "logits").unwrap();
    let e = max_rel_error(&logits, &want["logits"], 1e-3);
    eprintln!("losses {losses:?}; forward after 3 steps: logits differ by {e:.2e}");
    assert!(e <= 1e-4, "logits after three steps differ by {e:e}");

    // Three losses and the logits came back; no parameter or moment did, and nothing was
    // uploaded but the data.
    let t = exe.transfers();
    assert_eq!(t.to_host, 4, "{t:?}");
    assert_eq!(t.resident_to_host, 0, "{t:?}");
    assert_eq!(t.to_device, uploads + 3 * 8 + 1, "{t:?}");

    // The resident parameters are the interpreter's after three steps.
    let name = &param_specs(&cfg)[1].name;
    let got = exe.get_input(name).unwrap();
    assert!(max_rel_error(&got, &state[name], 1e-3) <= 1e-5);
    assert_eq!(exe.transfers().resident_to_host, 1);
}
