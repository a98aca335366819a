//! Helpers shared by the integration tests.
#![allow(dead_code)]

use indexmap::IndexMap;
use mmada_codegen::artifact::Artifact;
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::compile::{compile, CompileOptions, PtxCheck};
use mmada_codegen::plan::Dispatch;
use mmada_codegen::program::Program;
use mmada_codegen::HostCpu;
use mmada_codegen::SmArch;
use mmada_ir::{interp, max_rel_error, DType, Graph, Op, Tensor};
use rand::{Rng, SeedableRng};

/// Compiles with host code for this CPU and PTX for sm_80/sm_90 (ptxas not run).
pub fn compile_all(g: &Graph) -> Artifact {
    compile(
        g,
        &CompileOptions {
            name: "test".into(),
            backend: BackendOptions {
                host: Some(HostCpu::native()),
                gpu_archs: vec![SmArch::SM80, SmArch::SM90],
            },
            ptx_check: PtxCheck::Skip,
            ..CompileOptions::default()
        },
    )
    .expect("compile")
}

/// The program of an artifact.
pub fn program(art: &Artifact) -> Program {
    serde_json::from_slice(art.section("program.json").expect("program section")).expect("program")
}

/// Random inputs for every graph input: floats uniform in [lo, hi), ints in [0, 10), bools.
pub fn random_inputs(g: &Graph, seed: u64, lo: f64, hi: f64) -> IndexMap<String, Tensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = IndexMap::new();
    for id in g.inputs() {
        let n = g.node(id);
        let Op::Input { name, .. } = &n.op else {
            unreachable!()
        };
        let vals: Vec<f64> = (0..n.shape.numel())
            .map(|_| match n.dtype {
                DType::Bool => rng.random_range(0..2) as f64,
                DType::I32 | DType::I64 => rng.random_range(0..10) as f64,
                _ => rng.random_range(lo..hi),
            })
            .collect();
        out.insert(
            name.clone(),
            Tensor::from_f64(n.dtype, n.shape.clone(), &vals).unwrap(),
        );
    }
    out
}

/// Runs the artifact on the CPU and the graph on the interpreter for each seed; returns the
/// worst relative error (with `floor` as the denominator floor) over all outputs and seeds.
pub fn worst_error_cpu(
    g: &Graph,
    art: &Artifact,
    seeds: &[u64],
    lo: f64,
    hi: f64,
    floor: f64,
) -> f64 {
    let mut exe =
        mmada_runtime::open_artifact(art.clone(), mmada_runtime::Target::Cpu).expect("open");
    let mut worst: f64 = 0.0;
    for &s in seeds {
        let ins = random_inputs(g, s, lo, hi);
        let want = interp::interpret(g, &ins).expect("interpret");
        let got = exe.run(&ins).expect("run");
        for (name, w) in &want {
            let e = max_rel_error(&got[name], w, floor);
            if e > worst {
                eprintln!("seed {s} output {name}: max rel error {e:.3e}");
            }
            worst = worst.max(e);
        }
    }
    worst
}

/// The op-coverage graph (see `mmada_models::selfcheck`).
pub fn all_ops_graph(dt: DType) -> Graph {
    mmada_models::selfcheck::all_ops_graph(dt).expect("coverage graph")
}

/// The example graph `y = softmax(x @ w + b)` over rows, at any size.
pub fn softmax_linear(m: usize, k: usize, n: usize) -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [m, k]).unwrap();
    let w = g.input("w", DType::F32, [k, n]).unwrap();
    let b = g.input("b", DType::F32, [n]).unwrap();
    let h = g.matmul(x, w).unwrap();
    let h = g.add2(h, b).unwrap();
    let y = g.softmax(h, -1).unwrap();
    g.set_output("y", y).unwrap();
    g
}

/// The same artifact with every launch running its GPU kernel on the host (through the host
/// lowering of the same KIR) instead of a host variant or a library call; returns it with the
/// number of launches changed.
pub fn gpu_kernels_on_host(art: &Artifact) -> (Artifact, usize) {
    let mut art = art.clone();
    let mut prog = program(&art);
    let mut replaced = 0;
    for l in prog.entries.iter_mut().flat_map(|e| e.launches.iter_mut()) {
        let gpu = Dispatch::Kernel(l.gpu.clone());
        if l.host != gpu {
            l.host = gpu;
            replaced += 1;
        }
    }
    art.sections
        .insert("program.json".into(), serde_json::to_vec(&prog).unwrap());
    (art, replaced)
}

/// Whether the CUDA tests can run here. Without a device they are skipped with a message,
/// unless `MMADA_REQUIRE_CUDA=1` (set by `scripts/gpu-check.sh` on GPU machines), where a
/// missing device fails the test instead.
pub fn cuda_or_skip() -> bool {
    if mmada_runtime::cuda_available() {
        return true;
    }
    if std::env::var("MMADA_REQUIRE_CUDA").is_ok_and(|v| v == "1") {
        panic!("MMADA_REQUIRE_CUDA=1 but no CUDA device (driver library or device) was found");
    }
    eprintln!("SKIPPED: no CUDA device (MMADA_REQUIRE_CUDA=1 makes this a failure)");
    false
}

/// Runs the `mmada` binary with `args` in `dir` (no dump directory from the environment, and a
/// tuning cache in `dir`, so that a user's `~/.cache/mmada/tune` never changes what a test
/// compiles); returns (success, stdout, stderr).
pub fn mmada_cli(args: &[&str], dir: &std::path::Path) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mmada"))
        .args(args)
        .current_dir(dir)
        .env_remove("MMADA_DUMP_DIR")
        .env("MMADA_TUNE_CACHE", dir.join(".tune-cache"))
        .output()
        .expect("spawn mmada");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts a failed run printed exactly one `error:` line mentioning `needle`, and no panic.
pub fn assert_one_line_error(res: (bool, String, String), needle: &str) {
    let (ok, _out, err) = res;
    assert!(!ok, "expected failure, stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(needle), "'{needle}' not in: {err}");
}

/// `Require` when ptxas is there or `MMADA_REQUIRE_PTXAS=1` (CI), else `Skip` with a loud line.
pub fn ptx_check() -> mmada_codegen::compile::PtxCheck {
    let require = std::env::var("MMADA_REQUIRE_PTXAS").is_ok_and(|v| v == "1");
    if require || mmada_codegen::ptxas::find_ptxas().is_some() {
        mmada_codegen::compile::PtxCheck::Require
    } else {
        eprintln!("*** ptxas not found: the PTX is not assembled in this run ***");
        mmada_codegen::compile::PtxCheck::Skip
    }
}

/// The tiny preset's vocabulary on a smaller transformer (d 64, 2 layers of 2 heads, MLP 176),
/// fast on the reference interpreter.
pub fn small_tiny_config() -> mmada_models::config::LladaConfig {
    let mut cfg = mmada_models::config::LladaConfig::preset("tiny").expect("tiny preset");
    cfg.d_model = 64;
    cfg.n_layers = 2;
    cfg.n_heads = 2;
    cfg.n_kv_heads = Some(2);
    cfg.mlp_hidden_size = 176;
    cfg
}

/// (batch, query heads, K/V heads, queries, keys, head dim, value dim, masked).
pub type AttentionCase = (usize, usize, usize, usize, usize, usize, usize, bool);

pub const ATTENTION_CASES: &[AttentionCase] = &[
    (1, 1, 1, 1, 1, 1, 1, false),
    (2, 3, 3, 37, 53, 8, 8, true),
    (1, 4, 2, 5, 70, 16, 12, true), // grouped heads, a query block against 70 cached keys
    (2, 2, 1, 67, 33, 5, 7, false), // more query rows than one block, odd dims
    (1, 2, 2, 9, 130, 32, 32, true), // keys over five tiles of 32
    (3, 1, 1, 4, 6, 3, 2, true),
    (1, 2, 1, 40, 45, 72, 20, true), // head dim above 64: query rows in shared memory
    (1, 1, 1, 33, 21, 160, 9, false), // above 128: query rows read from q
];

/// Random inputs; in masked cases the last batch row has every key masked (when there are
/// two rows or more) and the middle row all but the first three (when there are three).
pub fn attention_inputs(g: &Graph, c: AttentionCase, seed: u64) -> IndexMap<String, Tensor> {
    let mut ins = random_inputs(g, seed, -2.0, 2.0);
    let (b, s) = (c.0, c.4);
    if let Some(m) = ins.get_mut("mask") {
        let mut v = m.to_f64_vec();
        if b >= 2 {
            v[(b - 1) * s..b * s].fill(0.0);
        }
        if b >= 3 {
            v[s + 3..2 * s].fill(0.0);
        }
        *m = Tensor::from_f64(DType::Bool, vec![b, s], &v).unwrap();
    }
    ins
}
