//! Without a CUDA driver, the CUDA executor is an ordinary error (cudarc would panic if asked
//! to load a missing libcuda; the runtime checks first).

mod common;

use mmada_runtime::{cuda_available, open_artifact, RuntimeError, Target};

#[test]
fn cuda_executor_without_cuda_is_an_error() {
    if cuda_available() {
        eprintln!("CUDA is present on this machine: this test checks the no-CUDA path; see tests/cuda_exec.rs");
        return;
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/softmax_linear.toml");
    let spec = mmada_models::GraphSpec::read(std::path::Path::new(path)).unwrap();
    let g = spec.build(path).unwrap();
    let art = common::compile_all(&g);
    match open_artifact(art, Target::Cuda) {
        Err(RuntimeError::NoCuda(msg)) => {
            eprintln!("no CUDA device: {msg}");
            assert!(!msg.is_empty());
        }
        Err(other) => panic!("expected NoCuda, got {other}"),
        Ok(_) => panic!("a CUDA executor opened on a machine without CUDA"),
    }
    assert_eq!(Target::default_for_machine(), Target::Cpu);
}
