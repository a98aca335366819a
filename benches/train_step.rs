//! Criterion benchmarks of the BENCHMARKS.md configurations on the CPU: the bench-tiny training
//! step and forward pass (compiled once, then timed). `mmada bench` prints the same figures with
//! FLOP/s and the ratio to the official PyTorch implementation.

use criterion::{criterion_group, criterion_main, Criterion};
use mmada_codegen::backend::BackendOptions;
use mmada_models::bench::{cases, prepare, Figure};
use mmada_runtime::Target;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("bench-tiny");
    group.sample_size(10);
    for case in cases().into_iter().filter(|c| c.preset == "bench-tiny") {
        let backend = BackendOptions {
            gpu_archs: vec![],
            ..BackendOptions::default()
        };
        let (mut exe, ins) = match prepare(&case, Target::Cpu, backend) {
            Ok(x) => x,
            Err(e) => panic!("preparing {}: {e}", case.preset),
        };
        let name = match case.figure {
            Figure::TrainStep => "train step (batch 4 × 256)",
            Figure::Forward => "forward (1 × 256)",
            Figure::Encode | Figure::Decode => continue,
        };
        group.bench_function(name, |b| {
            b.iter(|| exe.run(&ins).expect("run"));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
