//! Smoke test of the whole backend on a hand-written KIR kernel with shared memory, barriers and
//! private buffers: host code must give the right sums, PTX must assemble.

use mmada_codegen::backend::{compile_kernels, BackendOptions};
use mmada_codegen::kir::{Access, BlockStmt, Expr, KBinary, KernelBuilder, VTy};
use mmada_codegen::HostCpu;
use mmada_ir::DType;

/// Row sums of a rows×cols matrix: one block per row, tree reduction in shared memory.
fn row_sum_kernel(rows: u64, cols: u64, threads: u32) -> mmada_codegen::kir::Kernel {
    let mut kb = KernelBuilder::new("row_sum", rows, threads);
    let x = kb.param("x", DType::F32, rows * cols, Access::Read);
    let y = kb.param("y", DType::F32, rows, Access::Write);
    let sm = kb.shared("partial", DType::F32, threads as u64);
    let mut body: Vec<BlockStmt> = vec![kb.phase(|s| {
        let acc = s.local(Expr::f32(0.0));
        s.for_(
            Expr::ThreadId,
            Expr::idx(cols),
            Expr::idx(threads as u64),
            |s, j| {
                let v = Expr::load(x, Expr::BlockId * Expr::idx(cols) + j);
                s.set(acc, Expr::Local(acc) + v);
            },
        );
        s.store(sm, Expr::ThreadId, Expr::Local(acc));
    })];
    let mut stride = threads as u64 / 2;
    while stride > 0 {
        body.push(BlockStmt::Barrier);
        body.push(kb.phase(|s| {
            s.if_(
                Expr::ThreadId.lt(Expr::idx(stride)),
                |s| {
                    let a = Expr::load(sm, Expr::ThreadId);
                    let b = Expr::load(sm, Expr::ThreadId + Expr::idx(stride));
                    s.store(sm, Expr::ThreadId, Expr::bin(KBinary::Add, a, b));
                },
                |_| {},
            );
        }));
        stride /= 2;
    }
    body.push(BlockStmt::Barrier);
    body.push(kb.phase(|s| {
        s.if_(
            Expr::ThreadId.eq(Expr::idx(0)),
            |s| s.store(y, Expr::BlockId, Expr::load(sm, Expr::idx(0))),
            |_| {},
        );
    }));
    let _ = VTy::F32;
    kb.finish(body)
}

#[test]
fn row_sum_host_and_ptx() {
    let (rows, cols) = (37u64, 53u64);
    let k = row_sum_kernel(rows, cols, 32);
    let opts = BackendOptions {
        host: Some(HostCpu::native()),
        gpu_archs: vec![mmada_codegen::SmArch::SM80, mmada_codegen::SmArch::SM90],
    };
    let out =
        compile_kernels(&[k], &Default::default(), &opts, &Default::default()).expect("compile");
    let lib = out.host_lib.expect("host lib");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.so");
    std::fs::write(&path, lib).unwrap();
    let x: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7) % 13) as f32 - 6.0)
        .collect();
    let mut y = vec![0f32; rows as usize];
    unsafe {
        let lib = libloading::Library::new(&path).unwrap();
        let f: libloading::Symbol<unsafe extern "C" fn(*const *mut u8, i64, i64)> =
            lib.get(b"row_sum__entry").unwrap();
        let args = [x.as_ptr() as *mut u8, y.as_mut_ptr() as *mut u8];
        f(args.as_ptr(), 0, rows as i64);
    }
    for r in 0..rows as usize {
        let want: f32 = x[r * cols as usize..(r + 1) * cols as usize].iter().sum();
        assert!((y[r] - want).abs() < 1e-4, "row {r}: {} vs {want}", y[r]);
    }
    assert_eq!(out.ptx.len(), 2);
    assert!(out.ptx[0].1.contains(".target sm_80"));
    assert!(out.ptx[1].1.contains("bar.sync"));
}
