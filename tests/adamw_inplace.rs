//! AdamW as an elementwise graph with in-place parameter/state updates: parameters and moments
//! stay resident in the executor across steps, and three compiled steps match a direct f64
//! implementation of `torch.optim.AdamW` (and the interpreter run step by step).

mod common;

use indexmap::IndexMap;
use mmada_ir::{interp, max_rel_error, DType, Graph, Role, Tensor};
use mmada_runtime::{open_artifact, Target};
use rand::{Rng, SeedableRng};

const SHAPE: [usize; 2] = [13, 7];
const BETAS: (f64, f64) = (0.9, 0.999);
const EPS: f64 = 1e-8;
const WD: f64 = 0.01;

fn adamw_graph() -> Graph {
    let mut g = Graph::new();
    let p = g.add_input("p", Role::Param, DType::F32, SHAPE).unwrap();
    let m = g.add_input("m", Role::State, DType::F32, SHAPE).unwrap();
    let v = g.add_input("v", Role::State, DType::F32, SHAPE).unwrap();
    let grad = g.input("grad", DType::F32, SHAPE).unwrap();
    let lr = g.input("lr", DType::F32, Vec::<usize>::new()).unwrap();
    let bc1 = g.input("bc1", DType::F32, Vec::<usize>::new()).unwrap();
    let bc2 = g.input("bc2", DType::F32, Vec::<usize>::new()).unwrap();
    let (pn, mn, vn) =
        mmada_models::nn::adamw(&mut g, p, grad, m, v, lr, bc1, bc2, BETAS, EPS, WD).unwrap();
    g.set_output("p_new", pn).unwrap();
    g.set_output("m_new", mn).unwrap();
    g.set_output("v_new", vn).unwrap();
    g.set_update("p_new", "p").unwrap();
    g.set_update("m_new", "m").unwrap();
    g.set_update("v_new", "v").unwrap();
    g
}

fn scalar(v: f64) -> Tensor {
    Tensor::from_f32(Vec::<usize>::new(), vec![v as f32]).unwrap()
}

#[test]
fn three_compiled_adamw_steps_match_reference() {
    let g = adamw_graph();
    let art = common::compile_all(&g);
    let mut exe = open_artifact(art, Target::Cpu).unwrap();
    let n = SHAPE[0] * SHAPE[1];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let p0: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let zeros = Tensor::from_f32(SHAPE, vec![0.0; n]).unwrap();
    exe.set_input("p", &Tensor::from_f32(SHAPE, p0.clone()).unwrap())
        .unwrap();
    exe.set_input("m", &zeros).unwrap();
    exe.set_input("v", &zeros).unwrap();
    // Reference state in f64, and the interpreter's state.
    let (mut rp, mut rm, mut rv): (Vec<f64>, Vec<f64>, Vec<f64>) = (
        p0.iter().map(|&x| x as f64).collect(),
        vec![0.0; n],
        vec![0.0; n],
    );
    let mut ip = Tensor::from_f32(SHAPE, p0).unwrap();
    let (mut im, mut iv) = (zeros.clone(), zeros.clone());
    let lr = 1e-2;
    for t in 1..=3 {
        let gv: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let bc1 = 1.0 - BETAS.0.powi(t);
        let bc2 = 1.0 - BETAS.1.powi(t);
        let mut ins = IndexMap::new();
        ins.insert(
            "grad".to_string(),
            Tensor::from_f32(SHAPE, gv.clone()).unwrap(),
        );
        ins.insert("lr".to_string(), scalar(lr));
        ins.insert("bc1".to_string(), scalar(bc1));
        ins.insert("bc2".to_string(), scalar(bc2));
        exe.run(&ins).unwrap(); // p, m, v are resident and updated in place
        let mut full = ins.clone();
        full.insert("p".to_string(), ip.clone());
        full.insert("m".to_string(), im.clone());
        full.insert("v".to_string(), iv.clone());
        let o = interp::interpret(&g, &full).unwrap();
        (ip, im, iv) = (o["p_new"].clone(), o["m_new"].clone(), o["v_new"].clone());
        for i in 0..n {
            let gi = gv[i] as f64;
            rp[i] -= lr * WD * rp[i];
            rm[i] = BETAS.0 * rm[i] + (1.0 - BETAS.0) * gi;
            rv[i] = BETAS.1 * rv[i] + (1.0 - BETAS.1) * gi * gi;
            rp[i] -= lr * (rm[i] / bc1) / ((rv[i] / bc2).sqrt() + EPS);
        }
    }
    let p = exe.get_input("p").unwrap();
    let want = Tensor::from_f64(DType::F32, SHAPE, &rp).unwrap();
    let e = max_rel_error(&p, &want, 1e-3);
    assert!(e <= 1e-5, "compiled vs reference AdamW: {e:e}");
    assert!(max_rel_error(&p, &ip, 1e-3) <= 1e-5);
    assert!(max_rel_error(&exe.get_input("v").unwrap(), &iv, 1e-6) <= 1e-5);
    // Data inputs are still required on every run.
    let err = exe
        .run(&IndexMap::new())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("missing"), "{err}");
}
