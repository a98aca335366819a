//! The full-size MMaDA-8B preset compiles here (it cannot run here): forward and training step
//! at the spec's packed length (1539 tokens), PTX for sm_90, and the plan holds exactly the
//! 8,082,690,048 parameters of spec §1.1.

use mmada_codegen::backend::BackendOptions;
use mmada_codegen::compile::{compile, CompileOptions, PtxCheck};
use mmada_codegen::plan::BufferKind;
use mmada_codegen::program::Program;
use mmada_ir::Role;
use mmada_models::config::LladaConfig;

#[test]
fn mmada_8b_forward_and_train_step_compile() {
    let cfg = LladaConfig::preset("mmada-8b").unwrap();
    for (what, g) in [
        (
            "forward",
            mmada_models::llada::forward_graph(&cfg, 1, 1539, true).unwrap(),
        ),
        (
            "train-step",
            mmada_models::train_step::train_step_graph(&cfg, 1, 1539, Default::default()).unwrap(),
        ),
    ] {
        let art = compile(
            &g,
            &CompileOptions {
                name: format!("mmada-8b {what}"),
                backend: BackendOptions {
                    host: None,
                    gpu_archs: vec![mmada_codegen::SmArch::SM90],
                },
                ptx_check: PtxCheck::Skip,
                ..CompileOptions::default()
            },
        )
        .unwrap();
        let prog: Program = serde_json::from_slice(art.section("program.json").unwrap()).unwrap();
        let entry = &prog.entries[0];
        let params: u64 = entry
            .inputs
            .iter()
            .filter(|b| b.role == Role::Param)
            .map(|b| b.shape.numel() as u64)
            .sum();
        assert_eq!(params, 8_082_690_048, "{what}");
        assert!(prog
            .buffers
            .iter()
            .all(|b| !matches!(b.kind, BufferKind::Constant { bytes, .. } if bytes > 1 << 20)));
        let ptx = art.section_str("ptx.sm_90").unwrap();
        assert!(ptx.contains(".target sm_90"));
        eprintln!(
            "mmada-8b {what}: {} launches, {} kernels",
            entry.launches.len(),
            art.manifest.kernels.len()
        );
    }
}
