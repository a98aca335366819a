//! The released MAGVIT-v2 architecture (spec §7, 95,387,004 parameters) builds and compiles at
//! full size: the encoder of one 256 px image and the decoder of its 16×16 codes, PTX for sm_90
//! (assembled by ptxas when it is there; required in CI).

mod common;

use mmada_codegen::backend::BackendOptions;
use mmada_codegen::compile::{compile, CompileOptions, PtxCheck};
use mmada_codegen::program::Program;
use mmada_ir::Role;
use mmada_models::magvit::{decode_graph, encode_graph, MagvitConfig};

#[test]
fn released_magvit_encoder_and_decoder_compile_for_sm90() {
    let check = common::ptx_check();
    let cfg = MagvitConfig::default();
    let mut total = 0u64;
    for (what, g) in [
        ("encode", encode_graph(&cfg, 1, 256, 256).unwrap()),
        ("decode", decode_graph(&cfg, 1, 16, 16).unwrap()),
    ] {
        let art = compile(
            &g,
            &CompileOptions {
                name: format!("magvit-256 {what}"),
                backend: BackendOptions {
                    host: None,
                    gpu_archs: vec![mmada_codegen::SmArch::SM90],
                },
                ptx_check: check,
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
        total += params;
        let outs: Vec<(&str, String)> = entry
            .outputs
            .iter()
            .map(|b| (b.name.as_str(), b.shape.to_string()))
            .collect();
        match what {
            "encode" => {
                assert_eq!(params, 55_439_171);
                assert!(outs.contains(&("codes", "[1, 256]".into())), "{outs:?}");
            }
            _ => {
                assert_eq!(params, 39_947_833);
                assert!(
                    outs.contains(&("pixels", "[1, 3, 256, 256]".into())),
                    "{outs:?}"
                );
            }
        }
        let ptx = art.section_str("ptx.sm_90").unwrap();
        assert!(ptx.contains(".target sm_90"));
        if check == PtxCheck::Require {
            assert!(art.manifest.kernels.iter().all(|k| !k.ptxas.is_empty()));
        }
        eprintln!(
            "magvit {what}: {} launches, {} kernels",
            entry.launches.len(),
            art.manifest.kernels.len()
        );
    }
    assert_eq!(total, 95_387_004);
}
