//! Warp shuffles and 16-bit scratch tiles: hand-written KIR kernels that use them, run on the
//! host through the host lowering against the reference interpreter (or exact hand
//! computation), and their PTX through ptxas when it is available.
//!
//! - `warp_ops`: per warp, a butterfly sum (5 `xor` shuffles), a `down(3)` shift and an
//!   `idx(5)` broadcast, in 64-thread blocks (two warps each);
//! - `bf16_transpose`: 16 × 16 tiles staged through a bf16 shared tile and written back
//!   transposed.

use indexmap::IndexMap;
use mmada_codegen::backend::{compile_kernels, BackendOptions};
use mmada_codegen::kir::{Access, BlockStmt, Expr, Kernel, KernelBuilder, ShuffleMode, WARP};
use mmada_codegen::ptxas::{assemble, find_ptxas};
use mmada_codegen::HostCpu;
use mmada_codegen::SmArch;
use mmada_ir::{interp, max_rel_error, DType, Graph, Tensor};
use rand::{Rng, SeedableRng};

const BLOCK: u32 = 64;

/// `sum[w]` = Σ of warp w's 32 values, `down[t]` = x of lane + 3 (own value past lane 31),
/// `bcast[t]` = x of lane 5 of t's warp.
fn warp_ops(blocks: u64) -> Kernel {
    let n = blocks * BLOCK as u64;
    let mut kb = KernelBuilder::new("warp_ops", blocks, BLOCK);
    let x = kb.param("x", DType::F32, n, Access::Read);
    let sum = kb.param("sum", DType::F32, n / WARP as u64, Access::Write);
    let down = kb.param("down", DType::F32, n, Access::Write);
    let bcast = kb.param("bcast", DType::F32, n, Access::Write);
    // Slot 0: the running value; 1: the shuffled value; 2, 3: down and idx results.
    let v = kb.private("v", DType::F32, 4);
    let gid = || Expr::BlockId * Expr::idx(BLOCK as u64) + Expr::ThreadId;
    let mut body = vec![kb.phase(|s| s.store(v, Expr::idx(0), Expr::load(x, gid())))];
    let shuffle = |mode, from: u64, to: u64| BlockStmt::Shuffle {
        mode,
        src: v,
        src_index: from,
        dst: v,
        dst_index: to,
    };
    body.push(shuffle(ShuffleMode::Down(3), 0, 2));
    body.push(shuffle(ShuffleMode::Idx(5), 0, 3));
    for m in [16, 8, 4, 2, 1] {
        body.push(shuffle(ShuffleMode::Xor(m), 0, 1));
        body.push(kb.phase(|s| {
            let a = Expr::load(v, Expr::idx(0));
            let b = Expr::load(v, Expr::idx(1));
            s.store(v, Expr::idx(0), a + b);
        }));
    }
    body.push(kb.phase(|s| {
        s.store(down, gid(), Expr::load(v, Expr::idx(2)));
        s.store(bcast, gid(), Expr::load(v, Expr::idx(3)));
        s.if_(
            Expr::LaneId.eq(Expr::idx(0)),
            |s| {
                s.store(
                    sum,
                    gid() / Expr::idx(WARP as u64),
                    Expr::load(v, Expr::idx(0)),
                )
            },
            |_| {},
        );
    }));
    kb.finish(body)
}

/// `out[b, j, i] = f32(bf16(x[b, i, j]))` through a bf16 shared tile.
fn bf16_transpose(blocks: u64) -> Kernel {
    const T: u64 = 16;
    let mut kb = KernelBuilder::new("bf16_transpose", blocks, (T * T) as u32);
    let x = kb.param("x", DType::F32, blocks * T * T, Access::Read);
    let out = kb.param("out", DType::F32, blocks * T * T, Access::Write);
    let tile = kb.shared("tile", DType::BF16, T * T);
    let base = || Expr::BlockId * Expr::idx(T * T);
    let (i, j) = (
        || Expr::ThreadId / Expr::idx(T),
        || Expr::ThreadId % Expr::idx(T),
    );
    let body = vec![
        kb.phase(|s| s.store(tile, Expr::ThreadId, Expr::load(x, base() + Expr::ThreadId))),
        BlockStmt::Barrier,
        kb.phase(|s| {
            let transposed = j() * Expr::idx(T) + i();
            s.store(out, base() + Expr::ThreadId, Expr::load(tile, transposed));
        }),
    ];
    kb.finish(body)
}

/// Runs a kernel's host code on f32 buffers (inputs first, then outputs).
fn run_host(k: &Kernel, bufs: &mut [Vec<f32>]) {
    let opts = BackendOptions {
        host: Some(HostCpu::native()),
        gpu_archs: vec![],
    };
    let out = compile_kernels(
        std::slice::from_ref(k),
        &Default::default(),
        &opts,
        &Default::default(),
    )
    .expect("compile");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.so");
    std::fs::write(&path, out.host_lib.expect("host lib")).unwrap();
    let args: Vec<*mut u8> = bufs.iter_mut().map(|b| b.as_mut_ptr() as *mut u8).collect();
    // SAFETY: the buffers have the kernel's parameter lengths and outlive the call.
    unsafe {
        let lib = libloading::Library::new(&path).unwrap();
        let sym = format!("{}__entry", k.name);
        let f: libloading::Symbol<unsafe extern "C" fn(*const *mut u8, i64, i64)> =
            lib.get(sym.as_bytes()).unwrap();
        f(args.as_ptr(), 0, k.grid as i64);
    }
}

/// Assembles the kernel's PTX for sm_80 and sm_90 when ptxas is there; returns the shared
/// bytes ptxas reports.
fn ptxas_shared_bytes(k: &Kernel) -> Option<u32> {
    let require = std::env::var("MMADA_REQUIRE_PTXAS").is_ok_and(|v| v == "1");
    let Some(bin) = find_ptxas() else {
        assert!(!require, "MMADA_REQUIRE_PTXAS=1 but ptxas is not found");
        eprintln!("*** ptxas not found: {} not assembled ***", k.name);
        return None;
    };
    let opts = BackendOptions {
        host: None,
        gpu_archs: vec![SmArch::SM80, SmArch::SM90],
    };
    let out = compile_kernels(
        std::slice::from_ref(k),
        &Default::default(),
        &opts,
        &Default::default(),
    )
    .expect("compile PTX");
    let mut smem = None;
    for (arch, ptx) in &out.ptx {
        let report = assemble(&bin, ptx, *arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].spill_stores + report[0].spill_loads, 0, "{arch}");
        smem = Some(report[0].shared_bytes);
    }
    smem
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

#[test]
fn warp_shuffles_match_the_interpreter_and_exact_lane_arithmetic() {
    let blocks = 7u64;
    let n = (blocks * BLOCK as u64) as usize;
    let k = warp_ops(blocks);
    mmada_codegen::kir::check(&k).unwrap();
    let x = random(n, 3);
    let mut bufs = vec![x.clone(), vec![0.0; n / 32], vec![0.0; n], vec![0.0; n]];
    run_host(&k, &mut bufs);
    // The warp sums against the interpreter's row sums of x viewed as [n / 32, 32].
    let mut g = Graph::new();
    let xi = g.input("x", DType::F32, [n / 32, 32]).unwrap();
    let s = g.sum(xi, -1, false).unwrap();
    g.set_output("s", s).unwrap();
    let mut ins = IndexMap::new();
    ins.insert(
        "x".to_string(),
        Tensor::from_f32([n / 32, 32], x.clone()).unwrap(),
    );
    let want = interp::interpret(&g, &ins).unwrap();
    let got = Tensor::from_f32([n / 32], bufs[1].clone()).unwrap();
    // 32 values in [-1, 1): a different summation order moves the f32 sum by a few ulps of 32.
    let e = max_rel_error(&got, &want["s"], 1.0);
    assert!(e <= 1e-5, "warp sums differ from the interpreter by {e:e}");
    // down(3) and idx(5) only move values: exact, lane by lane.
    for (t, (down, bcast)) in bufs[2].iter().zip(&bufs[3]).enumerate() {
        let (lane, base) = (t % 32, t - t % 32);
        let from = if lane + 3 < 32 { t + 3 } else { t };
        assert_eq!(down.to_bits(), x[from].to_bits(), "down at thread {t}");
        assert_eq!(bcast.to_bits(), x[base + 5].to_bits(), "idx at thread {t}");
    }
    assert_eq!(ShuffleMode::Xor(16).source(3), 19);
    assert_eq!(ShuffleMode::Down(3).source(30), 30);
    ptxas_shared_bytes(&k);
}

#[test]
fn a_bf16_shared_tile_rounds_like_the_interpreter_cast() {
    let blocks = 5u64;
    let n = (blocks * 256) as usize;
    let k = bf16_transpose(blocks);
    assert_eq!(k.shared[0].dtype, DType::BF16);
    let x = random(n, 4);
    let mut bufs = vec![x.clone(), vec![0.0; n]];
    run_host(&k, &mut bufs);
    let mut g = Graph::new();
    let xi = g.input("x", DType::F32, [blocks as usize, 16, 16]).unwrap();
    let h = g.cast(xi, DType::BF16).unwrap();
    let f = g.cast(h, DType::F32).unwrap();
    let t = g.permute(f, &[0, 2, 1]).unwrap();
    g.set_output("t", t).unwrap();
    let mut ins = IndexMap::new();
    ins.insert(
        "x".to_string(),
        Tensor::from_f32([blocks as usize, 16, 16], x.clone()).unwrap(),
    );
    let want = interp::interpret(&g, &ins).unwrap()["t"].to_f64_vec();
    for (i, (&got, &w)) in bufs[1].iter().zip(&want).enumerate() {
        assert_eq!(got as f64, w, "element {i}: bf16 rounding differs");
    }
    // Some values really were rounded (bf16 keeps 8 bits of mantissa).
    assert!(bufs[1].iter().zip(&x).any(|(a, b)| a != b));
    // 256 bf16 values: 512 bytes of shared memory, half the f32 tile.
    if let Some(smem) = ptxas_shared_bytes(&k) {
        assert_eq!(smem, 512);
    }
}

/// `out[b, i] = x[b, N − 1 − i]` through a 96 KiB f32 tile in dynamic shared memory (above the
/// 48 KiB a kernel may declare statically).
fn dynamic_reverse(blocks: u64) -> Kernel {
    const N: u64 = 24 * 1024;
    let mut kb = KernelBuilder::new("dynamic_reverse", blocks, 256);
    let x = kb.param("x", DType::F32, blocks * N, Access::Read);
    let out = kb.param("out", DType::F32, blocks * N, Access::Write);
    let tile = kb.shared_dynamic("tile", DType::F32, N);
    let base = || Expr::BlockId * Expr::idx(N);
    let body = vec![
        kb.phase(|s| {
            s.for_(Expr::ThreadId, Expr::idx(N), Expr::idx(256), |s, i| {
                s.store(tile, i.clone(), Expr::load(x, base() + i));
            })
        }),
        BlockStmt::Barrier,
        kb.phase(|s| {
            s.for_(Expr::ThreadId, Expr::idx(N), Expr::idx(256), |s, i| {
                let from = Expr::idx(N - 1) - i.clone();
                s.store(out, base() + i, Expr::load(tile, from));
            })
        }),
    ];
    kb.finish(body)
}

#[test]
fn a_dynamic_shared_tile_above_48_kib_runs_on_the_host_and_assembles() {
    let blocks = 3u64;
    let k = dynamic_reverse(blocks);
    mmada_codegen::kir::check(&k).unwrap();
    assert_eq!(
        k.dynamic_shared_layout().1,
        96 * 1024,
        "the launch's dynamic bytes"
    );
    let n = (blocks * 24 * 1024) as usize;
    let x = random(n, 5);
    let mut bufs = vec![x.clone(), vec![0.0; n]];
    run_host(&k, &mut bufs);
    let chunk = 24 * 1024;
    for (i, got) in bufs[1].iter().enumerate() {
        let (b, j) = (i / chunk, i % chunk);
        assert_eq!(
            got.to_bits(),
            x[b * chunk + chunk - 1 - j].to_bits(),
            "element {i}"
        );
    }
    // The PTX addresses the tile through MLIR's dynamic shared memory symbol (a zero-sized
    // shared array at the start of the launch's dynamic shared memory), with no static tile.
    let opts = BackendOptions {
        host: None,
        gpu_archs: vec![SmArch::SM90],
    };
    let out = compile_kernels(
        std::slice::from_ref(&k),
        &Default::default(),
        &opts,
        &Default::default(),
    )
    .unwrap();
    let ptx = &out.ptx[0].1;
    assert!(ptx.contains("__dynamic_shmem"), "{ptx}");
    assert!(!ptx.contains(".b8 tile"), "{ptx}");
    if let Some(smem) = ptxas_shared_bytes(&k) {
        assert!(
            smem <= 16,
            "static shared memory {smem} bytes: the tile is not dynamic"
        );
    }
    // A static tile that large is rejected with a message that says what to do.
    let mut too_big = k.clone();
    too_big.shared[0].dynamic = false;
    let e = mmada_codegen::kir::check(&too_big).unwrap_err();
    assert!(e.contains("dynamic shared"), "{e}");
}
