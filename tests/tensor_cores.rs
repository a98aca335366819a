//! Tensor-core products (issue 12): the bf16 GEMM kernel built on `mma.sync` m16n8k16, run on
//! the host through the exact emulation of its fragments (`kir::mma::emulate`).
//! - compiled bf16 matmuls (odd sizes, batches, operands read transposed) through the GPU
//!   kernel on the host against the interpreter, and the host's own SIMT kernel beside it;
//! - the kernel on its own against a product computed here in f64 from the same bf16 values;
//! - wrong fragment layouts, on the kernel's side and on the emulation's, must fail;
//! - the PTX holds the tensor-core instruction and assembles without spills (ptxas, when
//!   present).

mod common;

use common::{compile_all, gpu_kernels_on_host, program, random_inputs};
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::compile::{compile_kernel, CompileOptions, PtxCheck};
use mmada_codegen::kernels::matmul::MatMulShape;
use mmada_codegen::kernels::tensor_core_matmul::{
    tensor_core_matmul_kernel, tensor_core_matmul_kernel_with,
};
use mmada_codegen::kir::mma::{self, FragmentLayout, FragmentMap};
use mmada_codegen::kir::Kernel;
use mmada_codegen::{HostCpu, SmArch};
use mmada_ir::{interp, max_rel_error, DType, Graph, Tensor};
use mmada_runtime::{open_artifact, Target};
use rand::{Rng, SeedableRng};

/// (batch, m, k, n, A transposed, B transposed).
type Case = (usize, usize, usize, usize, bool, bool);

const CASES: &[Case] = &[
    (1, 1, 1, 1, false, false),
    (1, 16, 16, 8, false, false),  // one product
    (1, 64, 64, 64, false, false), // one block, two k-tiles
    (2, 37, 53, 29, false, false), // odd sizes: every edge partial
    (1, 70, 33, 130, true, false), // A read transposed, three column blocks
    (3, 19, 100, 65, false, true), // B read transposed (as Q·Kᵀ), four k-tiles
    (1, 129, 48, 7, true, true),
];

fn graph(c: Case) -> Graph {
    let (b, m, k, n, at, bt) = c;
    let mut g = Graph::new();
    let a_shape = if at { [b, k, m] } else { [b, m, k] };
    let b_shape = if bt { [b, n, k] } else { [b, k, n] };
    let mut x = g.input("a", DType::BF16, a_shape).unwrap();
    let mut y = g.input("b", DType::BF16, b_shape).unwrap();
    if at {
        x = g.transpose(x).unwrap();
    }
    if bt {
        y = g.transpose(y).unwrap();
    }
    let z = g.matmul(x, y).unwrap();
    g.set_output("c", z).unwrap();
    g
}

#[test]
fn bf16_matmuls_on_tensor_cores_match_the_interpreter_through_the_emulation() {
    for &c in CASES {
        let g = graph(c);
        let art = compile_all(&g);
        // The GPU launch runs the tensor-core kernel, the host its SIMT variant.
        let kernels: Vec<Kernel> =
            serde_json::from_slice(art.section("kernels.kir.json").unwrap()).unwrap();
        let prog = program(&art);
        let launch = &prog.entries[0].launches[0];
        let gpu = kernels
            .iter()
            .find(|k| k.name == launch.gpu.kernel)
            .unwrap();
        assert!(
            mma::contains_mma(&gpu.body),
            "{c:?}: the GPU kernel has no mma"
        );
        let host = launch.host.kernel().expect("host kernel");
        assert_ne!(host.kernel, launch.gpu.kernel, "{c:?}");
        let (on_host, replaced) = gpu_kernels_on_host(&art);
        assert_eq!(replaced, 1, "{c:?}");
        for (variant, art) in [("host simt", art), ("tensor cores", on_host)] {
            let mut exe = open_artifact(art, Target::Cpu).unwrap();
            for seed in [1u64, 2] {
                let ins = random_inputs(&g, seed, -1.0, 1.0);
                let want = interp::interpret(&g, &ins).unwrap();
                let got = exe.run(&ins).unwrap();
                // Both round the f32 sum once to bf16 (2^-8 relative); the sums differ in
                // order (f32, a few ulps). Sums of k products of values in [-1, 1] that
                // cancel carry absolute error: judged against at least 1.
                let e = max_rel_error(&got["c"], &want["c"], 1.0);
                eprintln!("{variant} {c:?} seed {seed}: {e:e}");
                assert!(e <= 1e-2, "{variant} {c:?}: error {e:e}");
            }
        }
    }
}

fn host_options() -> CompileOptions {
    CompileOptions {
        name: "kernel".into(),
        backend: BackendOptions {
            host: Some(HostCpu::native()),
            gpu_archs: vec![],
        },
        ptx_check: PtxCheck::Skip,
        ..CompileOptions::default()
    }
}

/// Runs a GEMM kernel of shape `s` on the host (its products emulated) with random bf16
/// operands; returns the worst error against the f64 product of the same bf16 values,
/// relative to the sum of |a·b| over k (so cancellation does not hide an error).
fn kernel_error(k: &Kernel, s: MatMulShape, seed: u64) -> f64 {
    let art = compile_kernel(k, &host_options()).unwrap();
    let mut exe = open_artifact(art, Target::Cpu).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (m, kk, n) = (s.m as usize, s.k as usize, s.n as usize);
    let mut rand = |len: usize| -> Tensor {
        let v: Vec<f64> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
        Tensor::from_f64(DType::BF16, vec![len], &v).unwrap()
    };
    let a = rand(m * kk);
    let b = rand(kk * n);
    let (av, bv) = (a.to_f64_vec(), b.to_f64_vec());
    let mut ins = indexmap::IndexMap::new();
    ins.insert("a".to_string(), a);
    ins.insert("b".to_string(), b);
    let got = exe.run(&ins).unwrap()["c"].to_f64_vec();
    let mut worst: f64 = 0.0;
    for i in 0..m {
        for j in 0..n {
            let (mut sum, mut mag) = (0.0, 0.0);
            for p in 0..kk {
                let x = av[i * kk + p] * bv[p * n + j];
                sum += x;
                mag += x.abs();
            }
            worst = worst.max((got[i * n + j] - sum).abs() / mag.max(1e-3));
        }
    }
    worst
}

const SHAPE: MatMulShape = MatMulShape {
    batch: 1,
    m: 45,
    k: 80,
    n: 70,
    a_trans: false,
    b_trans: false,
};

/// bf16 output rounding (2^-9 of |c| ≤ Σ|a·b|) plus f32 sums: well under 1e-2; every wrong
/// layout below mixes up elements and lands near 1.
const TOL: f64 = 1e-2;

static A_SWAPPED: [(u64, u64); 8] = [
    (0, 0),
    (0, 1),
    (0, 8), // slots 2 and 4 exchanged: rows g + 8 and columns + 8 mixed up
    (8, 1),
    (8, 0),
    (0, 9),
    (8, 8),
    (8, 9),
];
static B_PAIRS: [(u64, u64); 4] = [(1, 0), (0, 0), (8, 0), (9, 0)]; // the k pair reversed
static C_HALVES: [(u64, u64); 4] = [(8, 0), (8, 1), (0, 0), (0, 1)]; // row halves exchanged

fn corrupted() -> Vec<(&'static str, FragmentLayout)> {
    let p = mma::PTX;
    vec![
        (
            "A slots 2 and 4 exchanged",
            FragmentLayout {
                a: FragmentMap {
                    offsets: &A_SWAPPED,
                    ..p.a
                },
                ..p
            },
        ),
        (
            "B pair reversed",
            FragmentLayout {
                b: FragmentMap {
                    offsets: &B_PAIRS,
                    ..p.b
                },
                ..p
            },
        ),
        (
            "C row halves exchanged",
            FragmentLayout {
                c: FragmentMap {
                    offsets: &C_HALVES,
                    ..p.c
                },
                ..p
            },
        ),
        (
            "A groups along columns (g and t roles exchanged)",
            FragmentLayout {
                a: FragmentMap {
                    row_g: 0,
                    row_t: 2,
                    col_g: 1,
                    col_t: 0,
                    offsets: &[
                        (0, 0),
                        (1, 0),
                        (0, 8),
                        (1, 8),
                        (8, 0),
                        (9, 0),
                        (8, 8),
                        (9, 8),
                    ],
                },
                ..p
            },
        ),
    ]
}

#[test]
fn the_kernel_alone_matches_an_f64_product_of_its_bf16_operands() {
    let k = tensor_core_matmul_kernel("tc_gemm", SHAPE);
    for seed in [3u64, 4] {
        let e = kernel_error(&k, SHAPE, seed);
        eprintln!("hardware layout, seed {seed}: {e:e}");
        assert!(e <= TOL, "seed {seed}: {e:e}");
    }
}

#[test]
fn a_kernel_loading_fragments_in_a_wrong_layout_fails_on_the_emulation() {
    for (what, layout) in corrupted() {
        // Each corrupted map still gives every element one owner (the kernel stays in bounds).
        for (map, rows, cols) in [
            (layout.a, mma::M, mma::K),
            (layout.b, mma::K, mma::N),
            (layout.c, mma::M, mma::N),
        ] {
            let mut seen = std::collections::HashSet::new();
            for lane in 0..32 {
                for i in 0..map.slots() {
                    let (r, c) = map.at(lane, i);
                    assert!(r < rows && c < cols && seen.insert((r, c)), "{what}");
                }
            }
        }
        let k = tensor_core_matmul_kernel_with("tc_gemm_wrong", SHAPE, &layout);
        let e = kernel_error(&k, SHAPE, 3);
        eprintln!("kernel built with {what}: {e:e}");
        assert!(
            e > 0.1,
            "{what}: error {e:e} — the emulation did not notice"
        );
    }
}

#[test]
fn an_emulation_in_a_wrong_layout_fails_the_correct_kernel() {
    for (what, layout) in corrupted() {
        let mut k = tensor_core_matmul_kernel("tc_gemm_emulated", SHAPE);
        assert!(mma::emulate(&mut k, &layout));
        let e = kernel_error(&k, SHAPE, 3);
        eprintln!("emulation with {what}: {e:e}");
        assert!(e > 0.1, "{what}: error {e:e}");
    }
}

#[test]
fn the_ptx_issues_bf16_mma_sync() {
    let g = graph((2, 37, 53, 29, false, true));
    let art = compile_all(&g);
    for arch in [SmArch::SM80, SmArch::SM90] {
        let ptx = art.section_str(&format!("ptx.{arch}")).unwrap();
        let n = ptx
            .matches("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32")
            .count();
        // 2 k16 slices × 8 products per k-tile (the loop is not unrolled by LLVM, or is).
        assert!(
            n >= 16 && n.is_multiple_of(16),
            "{arch}: {n} mma instructions"
        );
    }
}

/// (batch, heads, K/V heads, queries, keys, head dim, value dim, masked).
type AttnCase = (usize, usize, usize, usize, usize, usize, usize, bool);

/// Runs the tensor-core attention kernel `k` on the host with random bf16 q, k, v (and a key
/// mask whose second batch row, if any, masks every key); returns the worst error against
/// the interpreter's f32 attention of the same bf16 values, judged against at least 1
/// (outputs are averages of values in [-2, 2]).
fn attention_error(kernel: &Kernel, c: AttnCase, seed: u64) -> f64 {
    let (b, h, hk, t, s, d, dv, masked) = c;
    let art = compile_kernel(kernel, &host_options()).unwrap();
    let mut exe = open_artifact(art, Target::Cpu).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut bf16 = |len: usize| -> Vec<f64> {
        let v: Vec<f64> = (0..len).map(|_| rng.random_range(-2.0..2.0)).collect();
        Tensor::from_f64(DType::BF16, vec![len], &v)
            .unwrap()
            .to_f64_vec()
    };
    let (qv, kv, vv) = (
        bf16(b * h * t * d),
        bf16(b * hk * s * d),
        bf16(b * hk * s * dv),
    );
    let mv: Vec<f64> = (0..b * s)
        .map(|i| f64::from(i / s != 1 && i % 3 != 1))
        .collect();
    let mut ins = indexmap::IndexMap::new();
    let mut g = Graph::new();
    let mut want_ins = indexmap::IndexMap::new();
    let mut operands = Vec::new();
    for (name, vals, shape) in [
        ("q", &qv, [b, h, t, d]),
        ("k", &kv, [b, hk, s, d]),
        ("v", &vv, [b, hk, s, dv]),
    ] {
        ins.insert(
            name.to_string(),
            Tensor::from_f64(DType::BF16, vec![vals.len()], vals).unwrap(),
        );
        operands.push(g.input(name, DType::F32, shape).unwrap());
        want_ins.insert(
            name.to_string(),
            Tensor::from_f64(DType::F32, shape.to_vec(), vals).unwrap(),
        );
    }
    let m = masked.then(|| {
        ins.insert(
            "key_mask".to_string(),
            Tensor::from_f64(DType::Bool, vec![b * s], &mv).unwrap(),
        );
        want_ins.insert(
            "mask".to_string(),
            Tensor::from_f64(DType::Bool, vec![b, s], &mv).unwrap(),
        );
        g.input("mask", DType::Bool, [b, s]).unwrap()
    });
    let scale = 1.0 / (d as f64).sqrt();
    let o = g
        .attention(operands[0], operands[1], operands[2], m, scale)
        .unwrap();
    g.set_output("o", o).unwrap();
    let want = interp::interpret(&g, &want_ins).unwrap()["o"].to_f64_vec();
    let got = exe.run(&ins).unwrap()["out"].to_f64_vec();
    want.iter()
        .zip(&got)
        .map(|(w, x)| (w - x).abs() / w.abs().max(1.0))
        .fold(0.0, f64::max)
}

#[test]
fn tensor_core_attention_matches_f32_and_fails_under_a_wrong_emulation() {
    use mmada_codegen::kernels::attention::AttentionShape;
    use mmada_codegen::kernels::tensor_core_attention::tensor_core_attention_kernel;
    let cases: &[AttnCase] = &[
        (2, 2, 1, 70, 45, 64, 64, true), // grouped heads, two query blocks, an all-masked row
        (1, 1, 1, 17, 100, 128, 128, false), // four key tiles, the largest head dim
        (1, 4, 2, 5, 33, 40, 24, true),  // head dims padded to 48 and 24
    ];
    for &c in cases {
        let (b, h, hk, t, s, d, dv, masked) = c;
        let shape = AttentionShape {
            b: b as u64,
            h: h as u64,
            hk: hk as u64,
            t: t as u64,
            s: s as u64,
            d: d as u64,
            dv: dv as u64,
            scale_bits: ((1.0 / (d as f64).sqrt()) as f32).to_bits(),
            masked,
        };
        let kernel = tensor_core_attention_kernel("tc_attention", shape);
        assert!(mma::contains_mma(&kernel.body));
        // P is rounded to bf16 (2^-9) before P·V, the output once more: about 1e-2 at worst
        // for averages judged against 1.
        let e = attention_error(&kernel, c, 5);
        eprintln!("attention {c:?}: {e:e}");
        assert!(e <= 1e-2, "{c:?}: {e:e}");
        // The wrong layouts on the first case only (each run emulates every product).
        let wrong = if c == cases[0] { corrupted() } else { vec![] };
        for (what, layout) in wrong {
            let mut k = kernel.clone();
            assert!(mma::emulate(&mut k, &layout));
            let e = attention_error(&k, c, 5);
            eprintln!("attention {c:?}, emulation with {what}: {e:e}");
            assert!(e > 0.1, "{c:?} {what}: {e:e}");
        }
    }
}
