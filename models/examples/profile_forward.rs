use indexmap::IndexMap;
use mmada_codegen::backend::BackendOptions;
use mmada_models::bench::{cases, prepare};
use mmada_runtime::{CpuExecutor, Executable, Executor, Target};

fn main() {
    let which: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let case = cases()[which].clone();
    let cfg = mmada_models::config::LladaConfig::preset(case.preset).unwrap();
    let g = match case.figure {
        mmada_models::bench::Figure::Forward => {
            mmada_models::llada::forward_graph(&cfg, case.batch, case.seq, false).unwrap()
        }
        _ => mmada_models::train_step::train_step_graph(
            &cfg,
            case.batch,
            case.seq,
            Default::default(),
        )
        .unwrap(),
    };
    let art = mmada_codegen::compile::compile(
        &g,
        &mmada_codegen::compile::CompileOptions {
            name: "x".into(),
            backend: BackendOptions {
                gpu_archs: vec![],
                ..Default::default()
            },
            ptx_check: mmada_codegen::compile::PtxCheck::Skip,
        },
    )
    .unwrap();
    let (_e, ins) = prepare(
        &case,
        Target::Cpu,
        BackendOptions {
            gpu_archs: vec![],
            ..Default::default()
        },
    )
    .unwrap();
    let mut exe = CpuExecutor::new(Executable::new(art).unwrap()).unwrap();
    for (n, t) in mmada_models::bench::random_weights(&cfg, 7).unwrap() {
        if case.figure == mmada_models::bench::Figure::TrainStep {
            let z = mmada_ir::Tensor::zeros(mmada_ir::DType::F32, t.shape().clone());
            exe.set_input(&mmada_models::train_step::exp_avg(&n), &z)
                .unwrap();
            exe.set_input(&mmada_models::train_step::exp_avg_sq(&n), &z)
                .unwrap();
        }
        exe.set_input(&n, &t).unwrap();
    }
    for _ in 0..3 {
        exe.run(&ins).unwrap();
    }
    let t0 = std::time::Instant::now();
    let (_, times) = exe.run_profiled(&ins).unwrap();
    println!(
        "run {:.2} ms, {} launches",
        t0.elapsed().as_secs_f64() * 1e3,
        times.len()
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
        println!("{k:<16} {:>8.2} ms x{n}", s * 1e3);
    }
    let mut v: Vec<_> = times.iter().collect();
    v.sort_by(|a, b| b.seconds.partial_cmp(&a.seconds).unwrap());
    for t in v.iter().take(14) {
        println!("{:>8.3} ms {} {}", t.seconds * 1e3, t.kernel, t.node);
    }
}
