//! `mmada compile --dump DIR` and `MMADA_DUMP_DIR=DIR mmada compile` write the same files:
//! every graph stage, the plan, the memory plan, the program, the kernels' IR, MLIR, LLVM IR
//! and PTX.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn dump_flag_and_environment_give_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/softmax_linear.toml");
    let run = |extra: &[&str], env: Option<&Path>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mmada"));
        c.args(["compile", spec, "--no-ptxas", "-o"])
            .args(extra)
            .current_dir(dir.path())
            .env_remove("MMADA_DUMP_DIR")
            .env("MMADA_TUNE_CACHE", dir.path().join(".tune-cache"));
        if let Some(e) = env {
            c.env("MMADA_DUMP_DIR", e);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (a, b) = (dir.path().join("flag"), dir.path().join("env"));
    run(&["a.mmada", "--dump", a.to_str().unwrap()], None);
    run(&["b.mmada"], Some(&b));
    let (fa, fb) = (files(&a), files(&b));
    let names: Vec<&String> = fa.keys().collect();
    for want in [
        "main/00-source.txt",
        "main/01-after-dce.txt",
        "main/02-after-conv-to-gemm.txt",
        "main/06-after-fuse-attention.txt",
        "main/08-after-fuse-remask.txt",
        "main/09-after-fuse-elementwise.dot",
        "main/10-after-dce.txt",
        "main/11-plan.json",
        "main/12-memory.json",
        "program.json",
        "manifest.json",
        "kernels/kernels.kir.txt",
        "kernels/host-kir/01-after-emulate-mma.kir.txt",
        "kernels/host-kir/02-after-lane-split.kir.txt",
        "kernels/host.mlir",
        "kernels/host.opt.ll",
        "kernels/gpu.sm_90.ptx",
    ] {
        assert!(fa.contains_key(want), "{want} not in {names:?}");
    }
    assert_eq!(
        fa.keys().collect::<Vec<_>>(),
        fb.keys().collect::<Vec<_>>(),
        "the same file names"
    );
    for (name, bytes) in &fa {
        assert!(
            bytes == &fb[name],
            "{name} differs between --dump and MMADA_DUMP_DIR"
        );
    }
    let fused = String::from_utf8_lossy(&fa["main/09-after-fuse-elementwise.txt"]).into_owned();
    assert!(fused.contains("fused"), "{fused}");
}
