//! The generated PTX must assemble with ptxas for sm_80 and sm_90, without spills.
//!
//! ptxas comes from the PyPI wheel `nvidia-cuda-nvcc` (scripts/setup.sh installs it and CI sets
//! `MMADA_PTXAS`). Without it this test is skipped loudly, unless `MMADA_REQUIRE_PTXAS=1`, as in
//! CI, where a missing ptxas fails the test.

mod common;

use mmada_codegen::ptxas::{assemble, find_ptxas};
use mmada_codegen::SmArch;
use mmada_models::GraphSpec;

fn ptxas_or_skip() -> Option<std::path::PathBuf> {
    let found = find_ptxas();
    if found.is_none() {
        if std::env::var("MMADA_REQUIRE_PTXAS").is_ok_and(|v| v == "1") {
            panic!("ptxas not found but MMADA_REQUIRE_PTXAS=1 (set MMADA_PTXAS or run scripts/setup.sh)");
        }
        eprintln!("\n*** SKIPPED: ptxas not found; set MMADA_PTXAS or run scripts/setup.sh ***\n");
    }
    found
}

#[test]
fn every_op_kind_assembles_for_sm80_and_sm90() {
    let Some(ptxas) = ptxas_or_skip() else { return };
    for dt in [mmada_ir::DType::F32, mmada_ir::DType::BF16] {
        let g = common::all_ops_graph(dt);
        let art = common::compile_all(&g);
        for arch in [SmArch::SM80, SmArch::SM90] {
            let ptx = art.section_str(&format!("ptx.{arch}")).unwrap();
            let report = assemble(&ptxas, ptx, arch).unwrap_or_else(|e| panic!("{dt} {arch}: {e}"));
            assert_eq!(report.len(), art.manifest.kernels.len());
            let regs = report.iter().map(|k| k.registers).max().unwrap_or(0);
            let spills: u32 = report.iter().map(|k| k.spill_stores + k.spill_loads).sum();
            eprintln!(
                "all ops {dt} {arch}: {} kernels, max {regs} registers, {spills} spill bytes",
                report.len()
            );
            assert_eq!(spills, 0, "{dt} {arch} spills");
        }
    }
}

#[test]
fn example_ptx_assembles_for_sm80_and_sm90_without_spills() {
    let Some(ptxas) = ptxas_or_skip() else { return };
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/softmax_linear.toml");
    let spec = GraphSpec::read(std::path::Path::new(path)).unwrap();
    let g = spec.build(path).unwrap();
    let art = common::compile_all(&g);
    eprintln!(
        "{:<28} {:>6} {:>6} {:>8} {:>8}",
        "kernel", "arch", "regs", "spill B", "smem B"
    );
    for arch in [SmArch::SM80, SmArch::SM90] {
        let ptx = art.section_str(&format!("ptx.{arch}")).unwrap();
        assert!(ptx.contains(&format!(".target {arch}")));
        let report = assemble(&ptxas, ptx, arch).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            report.len(),
            art.manifest.kernels.len(),
            "one report per kernel"
        );
        for k in &report {
            eprintln!(
                "{:<28} {:>6} {:>6} {:>8} {:>8}",
                k.name,
                arch.to_string(),
                k.registers,
                k.spill_stores + k.spill_loads,
                k.shared_bytes
            );
            assert_eq!(
                k.spill_stores + k.spill_loads,
                0,
                "{} spills on {arch}",
                k.name
            );
            assert!(k.registers > 0);
        }
    }
}

/// The attention kernel at the model's head dims (64: bench-small; 128: MMaDA-8B), f32 and
/// bf16, masked: the query row and the accumulator live in registers (fully unrolled loops
/// over the head dim), with no spills.
#[test]
fn attention_kernels_assemble_without_spills_at_model_head_dims() {
    let Some(ptxas) = ptxas_or_skip() else { return };
    for d in [64usize, 128] {
        for dt in [mmada_ir::DType::F32, mmada_ir::DType::BF16] {
            let mut g = mmada_ir::Graph::new();
            let q = g.input("q", dt, [1, 4, 100, d]).unwrap();
            let k = g.input("k", dt, [1, 4, 300, d]).unwrap();
            let v = g.input("v", dt, [1, 4, 300, d]).unwrap();
            let m = g.input("m", mmada_ir::DType::Bool, [1, 300]).unwrap();
            let o = g.attention(q, k, v, Some(m), 0.125).unwrap();
            g.set_output("o", o).unwrap();
            let art = common::compile_all(&g);
            for arch in [SmArch::SM80, SmArch::SM90] {
                let ptx = art.section_str(&format!("ptx.{arch}")).unwrap();
                let report = assemble(&ptxas, ptx, arch).unwrap_or_else(|e| panic!("{e}"));
                for k in report.iter().filter(|k| k.name.starts_with("attention")) {
                    eprintln!(
                        "attention d {d} {dt} {arch}: {} registers, {} spill bytes, {} shared",
                        k.registers,
                        k.spill_stores + k.spill_loads,
                        k.shared_bytes
                    );
                    assert_eq!(k.spill_stores + k.spill_loads, 0, "d {d} {dt} {arch}");
                }
                assert!(report.iter().any(|k| k.name.starts_with("attention")));
                // bf16 up to head dim 128 runs on tensor cores.
                let mma = ptx.contains("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32");
                assert_eq!(mma, dt == mmada_ir::DType::BF16, "d {d} {dt} {arch}");
            }
        }
    }
}

/// Host code and PTX for sm_80, sm_90 and sm_90a (ptxas not run by the compiler).
fn compile_with_sm90a(g: &mmada_ir::Graph) -> mmada_codegen::artifact::Artifact {
    use mmada_codegen::backend::BackendOptions;
    use mmada_codegen::compile::{compile, CompileOptions, PtxCheck};
    compile(
        g,
        &CompileOptions {
            backend: BackendOptions {
                host: None,
                gpu_archs: vec![SmArch::SM80, SmArch::SM90, SmArch::SM90A],
            },
            ptx_check: PtxCheck::Skip,
            ..CompileOptions::default()
        },
    )
    .unwrap()
}

/// The tensor-core GEMM (bf16, `mma.sync` m16n8k16) at a model-sized product, plain and with
/// B read transposed: 32 f32 accumulators and 24 bf16 fragment slots per thread in registers;
/// for sm_80, sm_90 and sm_90a (`mma.sync` runs on all three; a wgmma variant for sm_90a is
/// not built yet).
#[test]
fn tensor_core_matmul_assembles_without_spills() {
    let Some(ptxas) = ptxas_or_skip() else { return };
    for b_trans in [false, true] {
        let dt = mmada_ir::DType::BF16;
        let mut g = mmada_ir::Graph::new();
        let a = g.input("a", dt, [256, 2048]).unwrap();
        let b_shape = if b_trans { [1024, 2048] } else { [2048, 1024] };
        let mut b = g.input("b", dt, b_shape).unwrap();
        if b_trans {
            b = g.transpose(b).unwrap();
        }
        let c = g.matmul(a, b).unwrap();
        g.set_output("c", c).unwrap();
        let art = compile_with_sm90a(&g);
        for arch in [SmArch::SM80, SmArch::SM90, SmArch::SM90A] {
            let ptx = art.section_str(&format!("ptx.{arch}")).unwrap();
            assert!(ptx.contains("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"));
            let report = assemble(&ptxas, ptx, arch).unwrap_or_else(|e| panic!("{e}"));
            let k = report
                .iter()
                .find(|k| k.name.starts_with("matmul"))
                .expect("matmul kernel");
            eprintln!(
                "tensor-core matmul b_trans {b_trans} {arch}: {} registers, {} spill bytes, {} shared",
                k.registers,
                k.spill_stores + k.spill_loads,
                k.shared_bytes
            );
            assert_eq!(k.spill_stores + k.spill_loads, 0, "{arch}");
        }
    }
}

/// The tensor-core attention (bf16, head dim 128, a key mask) assembles for sm_90a too.
#[test]
fn tensor_core_attention_assembles_for_sm90a() {
    let Some(ptxas) = ptxas_or_skip() else { return };
    let dt = mmada_ir::DType::BF16;
    let mut g = mmada_ir::Graph::new();
    let q = g.input("q", dt, [1, 4, 100, 128]).unwrap();
    let k = g.input("k", dt, [1, 4, 300, 128]).unwrap();
    let v = g.input("v", dt, [1, 4, 300, 128]).unwrap();
    let m = g.input("m", mmada_ir::DType::Bool, [1, 300]).unwrap();
    let o = g.attention(q, k, v, Some(m), 0.088).unwrap();
    g.set_output("o", o).unwrap();
    let art = compile_with_sm90a(&g);
    let arch = SmArch::SM90A;
    let ptx = art.section_str(&format!("ptx.{arch}")).unwrap();
    assert!(ptx.contains(".target sm_90a"));
    assert!(ptx.contains("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"));
    let report = assemble(&ptxas, ptx, arch).unwrap_or_else(|e| panic!("{e}"));
    let k = report
        .iter()
        .find(|k| k.name.starts_with("attention"))
        .expect("attention kernel");
    eprintln!(
        "tensor-core attention d 128 {arch}: {} registers, {} spill bytes",
        k.registers,
        k.spill_stores + k.spill_loads
    );
    assert_eq!(k.spill_stores + k.spill_loads, 0);
}

/// Attention's backward kernels (statistics, dQ, dK | dV) of a training graph at the model's
/// head dims (64: bench-small; 128: MMaDA-8B), f32 and bf16, masked, grouped heads: private
/// accumulators of at most 64 columns, no spills, for sm_80, sm_90 and sm_90a.
#[test]
fn attention_backward_kernels_assemble_without_spills() {
    let Some(ptxas) = ptxas_or_skip() else { return };
    for d in [64usize, 128] {
        for dt in [mmada_ir::DType::F32, mmada_ir::DType::BF16] {
            let mut g = mmada_ir::Graph::new();
            let q = g.param("q", dt, [1, 4, 100, d]).unwrap();
            let k = g.param("k", dt, [1, 2, 300, d]).unwrap();
            let v = g.param("v", dt, [1, 2, 300, d]).unwrap();
            let m = g.input("m", mmada_ir::DType::Bool, [1, 300]).unwrap();
            let o = g.attention(q, k, v, Some(m), 0.125).unwrap();
            let l = g.reduce(mmada_ir::ReduceOp::Sum, o, &[0, 1, 2, 3], false);
            let l = l.unwrap();
            let grads = mmada_ir::autodiff::grad(&mut g, l, &[q, k, v]).unwrap();
            for (name, gid) in ["q", "k", "v"].iter().zip(grads) {
                g.set_output(&format!("grad_{name}"), gid).unwrap();
            }
            let art = compile_with_sm90a(&g);
            for arch in [SmArch::SM80, SmArch::SM90, SmArch::SM90A] {
                let ptx = art.section_str(&format!("ptx.{arch}")).unwrap();
                let report = assemble(&ptxas, ptx, arch).unwrap_or_else(|e| panic!("{e}"));
                let pieces: Vec<_> = report
                    .iter()
                    .filter(|k| k.name.starts_with("attention_grad"))
                    .collect();
                for k in &pieces {
                    eprintln!(
                        "attention backward {} d {d} {dt} {arch}: {} registers, {} spill bytes, \
                         {} shared",
                        k.name,
                        k.registers,
                        k.spill_stores + k.spill_loads,
                        k.shared_bytes
                    );
                    assert_eq!(k.spill_stores + k.spill_loads, 0, "d {d} {dt} {arch}");
                }
                assert_eq!(pieces.len(), 3, "d {d} {dt} {arch}: the three pieces");
            }
        }
    }
}
