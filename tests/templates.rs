//! Kernel templates driven with non-default knobs through both targets: a matmul with 8 × 8
//! tiles (default 16 × 16) and a tree reduction with 64-thread blocks (default 256). The GPU
//! kernels run on the host through the host lowering of the same KIR against the interpreter,
//! the PTX goes through ptxas, and `mmada inspect` shows the choices.

mod common;

use common::{gpu_kernels_on_host, worst_error_cpu};
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::compile::{compile, CompileOptions, PtxCheck};
use mmada_codegen::template::Choices;
use mmada_codegen::HostCpu;
use mmada_codegen::SmArch;
use mmada_ir::{DType, Graph};
use std::process::Command;

/// `y = x @ w` (`[3, 37, 300] × [3, 300, 29]`) and `s = Σ_last x · x`.
fn graph() -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [3, 37, 300]).unwrap();
    let w = g.input("w", DType::F32, [3, 300, 29]).unwrap();
    let y = g.matmul(x, w).unwrap();
    let xx = g.mul(x, x).unwrap();
    let s = g.sum(xx, -1, false).unwrap();
    g.set_output("y", y).unwrap();
    g.set_output("s", s).unwrap();
    g
}

fn options(knobs: &[&str], ptx_check: PtxCheck) -> CompileOptions {
    let settings: Vec<String> = knobs.iter().map(|s| s.to_string()).collect();
    CompileOptions {
        name: "templates".into(),
        backend: BackendOptions {
            host: Some(HostCpu::native()),
            gpu_archs: vec![SmArch::SM80, SmArch::SM90],
        },
        ptx_check,
        choices: Choices::parse(&settings).unwrap(),
        ..CompileOptions::default()
    }
}

#[test]
fn non_default_knobs_run_on_both_targets_and_show_in_inspect() {
    let check = common::ptx_check();
    let g = graph();
    let art = compile(
        &g,
        &options(&["matmul.tile=8", "reduction.block=64"], check),
    )
    .unwrap();
    let by_key = |key: &str| {
        art.manifest
            .kernels
            .iter()
            .filter(|k| k.template.as_ref().is_some_and(|t| t.key == key))
            .collect::<Vec<_>>()
    };
    let mm = by_key("matmul");
    assert_eq!(mm.len(), 1);
    let t = mm[0].template.as_ref().unwrap();
    assert!(t.chosen && t.config.get("tile") == 8, "{t:?}");
    assert_eq!(
        (mm[0].block, mm[0].grid),
        (64, 3 * 5 * 4),
        "8 × 8 threads, 5 × 4 tiles"
    );
    // The GPU reduction: one 64-thread block per row (the default would take 256).
    let red: Vec<_> = by_key("reduction")
        .into_iter()
        .filter(|k| !k.name.starts_with("host_"))
        .collect();
    assert_eq!(red.len(), 1);
    assert_eq!((red[0].block, red[0].grid), (64, 3 * 37));
    if check == PtxCheck::Require {
        for k in [mm[0], red[0]] {
            let archs: Vec<SmArch> = k.ptxas.iter().map(|(a, _)| *a).collect();
            assert_eq!(archs, [SmArch::SM80, SmArch::SM90], "{}", k.name);
            for (a, info) in &k.ptxas {
                assert_eq!(info.spill_stores + info.spill_loads, 0, "{} {a}", k.name);
            }
        }
    }
    // Host run (gemm and host variants) and the GPU kernels themselves, on the host.
    let host = worst_error_cpu(&g, &art, &[1, 2], -1.0, 1.0, 1.0);
    assert!(host <= 1e-5, "host variants {host:e}");
    let (gpu_on_host, replaced) = gpu_kernels_on_host(&art);
    assert_eq!(replaced, 2, "the gemm call and the host reduction");
    let gpu = worst_error_cpu(&g, &gpu_on_host, &[1, 2], -1.0, 1.0, 1.0);
    assert!(gpu <= 1e-5, "GPU kernels on the host {gpu:e}");

    // The defaults differ, so the knobs did something.
    let plain = compile(&g, &options(&[], PtxCheck::Skip)).unwrap();
    let t = plain
        .manifest
        .kernels
        .iter()
        .find_map(|k| k.template.as_ref().filter(|t| t.key == "matmul"))
        .unwrap();
    assert!(!t.chosen && t.config.get("tile") == 16);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.mmada");
    art.write(&path).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mmada"))
        .arg("inspect")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("matmul[host_library=1 host_split=0 mma=1 tile=8] (chosen)"),
        "{text}"
    );
    assert!(text.contains("reduction[block=64 host_lanes="), "{text}");
    assert!(
        text.contains("knob settings: matmul.tile=8 reduction.block=64"),
        "{text}"
    );
}

/// Convolutions of several geometries: stride 1 with symmetric, asymmetric and no padding, a
/// padded 1×1 and a 1×3 (implicit GEMM: template `conv_gemm`, the host's `conv_f32` call), and
/// a stride-2 one (im2col + matmul) beside them, with `conv_gemm.tile=8`. The host call and the
/// GPU kernels themselves (on the host) against the interpreter; PTX through ptxas.
#[test]
fn stride_one_convolutions_are_implicit_gemms_on_both_targets() {
    use mmada_codegen::plan::{Dispatch, LibraryCall};
    use mmada_ir::ConvGeom;
    let geom = |stride: usize, padding: [usize; 4]| ConvGeom {
        stride: [stride, stride],
        padding,
        groups: 1,
    };
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [2, 5, 11, 13]).unwrap();
    let convs = [
        ("same", [7, 5, 3, 3], geom(1, [1, 1, 1, 1])),
        ("asym", [4, 5, 3, 3], geom(1, [0, 1, 0, 1])),
        ("valid", [3, 5, 3, 3], geom(1, [0, 0, 0, 0])),
        ("pad1x1", [6, 5, 1, 1], geom(1, [1, 0, 0, 1])),
        ("row", [2, 5, 1, 3], geom(1, [0, 0, 1, 1])),
        ("down", [3, 5, 3, 3], geom(2, [0, 1, 0, 1])),
    ];
    for (name, ws, geom) in convs {
        let w = g.input(&format!("w_{name}"), DType::F32, ws).unwrap();
        let y = g.conv2d(x, w, geom).unwrap();
        g.set_output(name, y).unwrap();
    }
    let check = common::ptx_check();
    let art = compile(&g, &options(&["conv_gemm.tile=8"], check)).unwrap();
    let gemms: Vec<_> = art
        .manifest
        .kernels
        .iter()
        .filter(|k| k.template.as_ref().is_some_and(|t| t.key == "conv_gemm"))
        .collect();
    assert_eq!(gemms.len(), 5, "one implicit GEMM per stride-1 convolution");
    for k in &gemms {
        let t = k.template.as_ref().unwrap();
        assert!(
            t.chosen && t.config.get("tile") == 8 && k.block == 64,
            "{t:?}"
        );
    }
    let prog = common::program(&art);
    let calls = prog
        .entries
        .iter()
        .flat_map(|e| &e.launches)
        .filter(|l| matches!(l.host, Dispatch::Call(LibraryCall::ConvF32(_))))
        .count();
    assert_eq!(
        calls, 5,
        "the host runs each stride-1 convolution as a conv_f32 call"
    );
    let host = worst_error_cpu(&g, &art, &[1, 2], -1.0, 1.0, 1.0);
    assert!(host <= 1e-5, "host conv_f32 {host:e}");
    let (gpu_on_host, replaced) = gpu_kernels_on_host(&art);
    assert!(
        replaced >= 6,
        "5 conv calls and the stride-2 product: {replaced}"
    );
    let gpu = worst_error_cpu(&g, &gpu_on_host, &[1, 2], -1.0, 1.0, 1.0);
    assert!(gpu <= 1e-5, "GPU kernels on the host {gpu:e}");
}

/// Convolutions whose kernel is no larger than their stride (a ViT's patch embedding, and a
/// 2×2 kernel at stride 3 with padding on odd sizes), forward and both gradients, through the
/// disjoint-patch lowering (one slice of the strided view, permuted, no concatenation of
/// taps), against the interpreter on both targets. The 16×16 patches of the last case made
/// 256 nested selects before; CLIP's 32×32 ones made 1024 and an artifact that would not open.
#[test]
fn disjoint_patch_convolutions_and_their_gradients_match_the_interpreter() {
    use mmada_ir::{ConvGeom, Op};
    let mut g = Graph::new();
    let cases = [
        ("patch4", [2, 3, 16, 12], [5, 3, 4, 4], [4, 4], [0; 4]),
        ("gap", [1, 2, 11, 7], [3, 2, 2, 2], [3, 3], [1, 0, 0, 2]),
        ("patch16", [1, 3, 32, 48], [4, 3, 16, 16], [16, 16], [0; 4]),
        // 3 outputs of stride 3 read rows 0..9 of 10: the last row is cropped, its
        // gradient 0.
        ("crop", [2, 2, 10, 10], [3, 2, 2, 2], [3, 3], [0; 4]),
    ];
    for (name, xs, ws, stride, padding) in cases {
        let geom = ConvGeom {
            stride,
            padding,
            groups: 1,
        };
        let x = g.input(&format!("x_{name}"), DType::F32, xs).unwrap();
        let w = g.input(&format!("w_{name}"), DType::F32, ws).unwrap();
        let y = g.conv2d(x, w, geom).unwrap();
        g.set_output(name, y).unwrap();
        let ys = g.node(y).shape.clone();
        let dy = g.input(&format!("dy_{name}"), DType::F32, ys).unwrap();
        let dx = g
            .add(
                Op::Conv2dInputGrad {
                    geom,
                    input_hw: [xs[2], xs[3]],
                },
                &[dy, w],
            )
            .unwrap();
        g.set_output(&format!("{name}_dx"), dx).unwrap();
        let dw = g
            .add(
                Op::Conv2dWeightGrad {
                    geom,
                    kernel_hw: [ws[2], ws[3]],
                },
                &[x, dy],
            )
            .unwrap();
        g.set_output(&format!("{name}_dw"), dw).unwrap();
    }
    let art = compile(&g, &options(&[], common::ptx_check())).unwrap();
    let host = worst_error_cpu(&g, &art, &[3, 4], -1.0, 1.0, 1.0);
    assert!(host <= 1e-5, "host {host:e}");
    let (gpu_on_host, _) = gpu_kernels_on_host(&art);
    let gpu = worst_error_cpu(&g, &gpu_on_host, &[3], -1.0, 1.0, 1.0);
    assert!(gpu <= 1e-5, "GPU kernels on the host {gpu:e}");
}

/// A concatenation of 300 operands in one fused kernel (a balanced tree of selects, depth 9)
/// opens and equals the interpreter; as a chain it was 300 selects deep, past the JSON
/// reader's nesting limit of the artifact.
#[test]
fn a_concatenation_of_many_operands_compiles_opens_and_matches() {
    let mut g = Graph::new();
    let parts: Vec<_> = (0..300)
        .map(|i| {
            let x = g
                .input(&format!("x{i}"), DType::F32, [2, 1 + i % 3])
                .unwrap();
            g.unary(mmada_ir::UnaryOp::Exp, x).unwrap()
        })
        .collect();
    let y = g.concat(&parts, 1).unwrap();
    g.set_output("y", y).unwrap();
    let art = compile(&g, &options(&[], common::ptx_check())).unwrap();
    let host = worst_error_cpu(&g, &art, &[5], -1.0, 1.0, 1.0);
    assert!(host <= 1e-6, "host {host:e}");
}

/// A concatenation with a zero-length operand (which shape inference allows) compiles, opens
/// and equals the interpreter: the empty operand is left out of the kernel, never read.
#[test]
fn a_concatenation_with_an_empty_operand_matches() {
    let mut g = Graph::new();
    let a = g.input("a", DType::F32, [3, 2]).unwrap();
    let e = g.input("e", DType::F32, [3, 0]).unwrap();
    let b = g.input("b", DType::F32, [3, 5]).unwrap();
    let parts: Vec<_> = [a, e, b]
        .iter()
        .map(|&x| g.unary(mmada_ir::UnaryOp::Exp, x).unwrap())
        .collect();
    let y = g.concat(&parts, 1).unwrap();
    g.set_output("y", y).unwrap();
    let art = compile(&g, &options(&[], common::ptx_check())).unwrap();
    let host = worst_error_cpu(&g, &art, &[5], -1.0, 1.0, 1.0);
    assert!(host <= 1e-6, "host {host:e}");
}
