use indexmap::IndexMap;
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::compile::{compile, CompileOptions, PtxCheck};
use mmada_ir::Tensor;
use mmada_models::config::LladaConfig;
use mmada_models::llada::param_specs;
use mmada_models::train_step::{exp_avg, exp_avg_sq, train_step_graph, StepHyper};
use mmada_runtime::{CpuExecutor, Executable, Executor};
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn main() {
    let preset = std::env::args().nth(1).unwrap_or("bench-tiny".into());
    let cfg = LladaConfig::preset(&preset).unwrap();
    let (b, l) = (4, 256);
    let t0 = Instant::now();
    let g = train_step_graph(&cfg, b, l, StepHyper::default()).unwrap();
    println!(
        "graph: {} nodes in {:.2}s",
        g.len(),
        t0.elapsed().as_secs_f64()
    );
    let t0 = Instant::now();
    let art = compile(
        &g,
        &CompileOptions {
            name: "step".into(),
            backend: BackendOptions {
                gpu_archs: vec![],
                ..Default::default()
            },
            ptx_check: PtxCheck::Skip,
        },
    )
    .unwrap();
    println!(
        "compile: {} kernels in {:.2}s",
        art.manifest.kernels.len(),
        t0.elapsed().as_secs_f64()
    );
    let mut exe = CpuExecutor::new(Executable::new(art).unwrap()).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    for p in param_specs(&cfg) {
        let n: usize = p.shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-0.05..0.05)).collect();
        exe.set_input(&p.name, &Tensor::from_f32(p.shape.clone(), v).unwrap())
            .unwrap();
        exe.set_input(
            &exp_avg(&p.name),
            &Tensor::from_f32(p.shape.clone(), vec![0.0; n]).unwrap(),
        )
        .unwrap();
        exe.set_input(
            &exp_avg_sq(&p.name),
            &Tensor::from_f32(p.shape.clone(), vec![0.0; n]).unwrap(),
        )
        .unwrap();
    }
    let mut ins = IndexMap::new();
    let ids: Vec<i64> = (0..b * l)
        .map(|_| rng.random_range(0..cfg.vocab_size as i64))
        .collect();
    ins.insert(
        "input_ids".to_string(),
        Tensor::from_i64([b, l], ids).unwrap(),
    );
    ins.insert(
        "prompt_mask".to_string(),
        Tensor::from_f64(mmada_ir::DType::Bool, [b, l], &vec![0.0; b * l]).unwrap(),
    );
    ins.insert(
        "row_weight".to_string(),
        Tensor::from_f32([b], vec![1.0 / (b * l) as f32; b]).unwrap(),
    );
    ins.insert(
        "seed".to_string(),
        Tensor::from_i64(Vec::<usize>::new(), vec![1]).unwrap(),
    );
    ins.insert(
        "offset".to_string(),
        Tensor::from_i64(Vec::<usize>::new(), vec![0]).unwrap(),
    );
    for (n, v) in [("lr", 1e-4f32), ("bc1", 0.1), ("bc2", 0.001)] {
        ins.insert(
            n.to_string(),
            Tensor::from_f32(Vec::<usize>::new(), vec![v]).unwrap(),
        );
    }
    exe.run(&ins).unwrap();
    let t0 = Instant::now();
    let (out, times) = exe.run_profiled(&ins).unwrap();
    println!(
        "step: {:.3}s loss {:?}",
        t0.elapsed().as_secs_f64(),
        out["loss"].to_f32_vec()
    );
    let mut cat: IndexMap<String, (f64, usize)> = IndexMap::new();
    for t in &times {
        let k = t
            .kernel
            .rsplit_once('_')
            .map(|x| x.0)
            .unwrap_or(&t.kernel)
            .to_string();
        let e = cat.entry(k).or_insert((0.0, 0));
        e.0 += t.seconds;
        e.1 += 1;
    }
    for (k, (s, n)) in &cat {
        println!("category {k:<16} {:>8.2} ms  x{n}", s * 1e3);
    }
    let mut agg: IndexMap<String, (f64, usize, String)> = IndexMap::new();
    for t in &times {
        let e = agg
            .entry(t.kernel.clone())
            .or_insert((0.0, 0, t.node.clone()));
        e.0 += t.seconds;
        e.1 += 1;
    }
    agg.sort_by(|_, a, _, b| b.0.partial_cmp(&a.0).unwrap());
    for (k, (s, n, node)) in agg.iter().take(40) {
        println!("{k:<30} {:>8.2} ms  x{n}  e.g. {node}", s * 1e3);
    }
    let mut v: Vec<_> = times.iter().collect();
    v.sort_by(|a, b| b.seconds.partial_cmp(&a.seconds).unwrap());
    for t in v.iter().take(12) {
        println!("{:>8.2} ms {} {}", t.seconds * 1e3, t.kernel, t.node);
    }
}
