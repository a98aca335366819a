//! Artifact loading under attack: truncated files, flipped bits, and hand-edited programs
//! (buffer indices, lengths, dtypes, shapes, grids, kernel names, gemm shapes, constant ranges
//! that lie) and kernel lists. Every case gives an error at load, or — where the edit left a
//! consistent program — runs; never a panic or an out-of-bounds access (a case that validated
//! is run, so a bad access would crash this test). It found one: a host launch whose grid was
//! edited ran that many blocks, past its buffers.

mod common;

use indexmap::IndexMap;
use mmada_codegen::artifact::Artifact;
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::compile::{compile_entries, CompileOptions, PtxCheck};
use mmada_codegen::HostCpu;
use mmada_ir::{DType, Graph, Tensor};
use mmada_runtime::{CpuExecutor, Executable, Executor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use std::panic::{catch_unwind, AssertUnwindSafe};

const FUZZ_EDITS: usize = 2000;

/// Two entries over a shared parameter `w`: `y = softmax(x @ w + 1)` (a gemm on the host, a
/// fused softmax) and `s = Σ w²` (a reduction), with a constant.
fn artifact() -> Artifact {
    let mut a = Graph::new();
    let x = a.input("x", DType::F32, [5, 19]).unwrap();
    let w = a.param("w", DType::F32, [19, 7]).unwrap();
    let h = a.matmul(x, w).unwrap();
    let h = a.binary_scalar(mmada_ir::BinaryOp::Add, h, 1.0).unwrap();
    let y = a.softmax(h, -1).unwrap();
    a.set_output("y", y).unwrap();
    let mut b = Graph::new();
    let w = b.param("w", DType::F32, [19, 7]).unwrap();
    let ww = b.mul(w, w).unwrap();
    let s = b.sum(ww, -1, false).unwrap();
    b.set_output("s", s).unwrap();
    let opts = CompileOptions {
        backend: BackendOptions {
            host: Some(HostCpu::native()),
            gpu_archs: vec![],
        },
        ptx_check: PtxCheck::Skip,
        ..CompileOptions::default()
    };
    compile_entries(&[("a", &a), ("b", &b)], &opts).unwrap().0
}

/// Every number and string in a JSON value, by path.
fn leaves(v: &Value, path: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                path.push(Step::Key(k.clone()));
                leaves(x, path, out);
                path.pop();
            }
        }
        Value::Array(a) => {
            path.push(Step::Whole);
            out.push(path.clone());
            path.pop();
            for (i, x) in a.iter().enumerate() {
                path.push(Step::Index(i));
                leaves(x, path, out);
                path.pop();
            }
        }
        _ => out.push(path.clone()),
    }
}

#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
    /// The array itself (remove, duplicate or clear an element).
    Whole,
}

fn at<'a>(v: &'a mut Value, path: &[Step]) -> &'a mut Value {
    let mut cur = v;
    for s in path {
        cur = match s {
            Step::Key(k) => &mut cur[k.as_str()],
            Step::Index(i) => &mut cur[*i],
            Step::Whole => return cur,
        };
    }
    cur
}

/// One random edit of a leaf (or of an array) of `v`.
fn mutate(v: &mut Value, rng: &mut ChaCha8Rng) -> String {
    let mut paths = Vec::new();
    leaves(v, &mut Vec::new(), &mut paths);
    let path = &paths[rng.random_range(0..paths.len())];
    let whole = matches!(path.last(), Some(Step::Whole));
    let target = at(v, path);
    let desc = format!("{path:?}");
    if whole {
        if let Value::Array(a) = target {
            match (rng.random_range(0..3), a.is_empty()) {
                (0, false) => {
                    let i = rng.random_range(0..a.len());
                    a.remove(i);
                }
                (1, false) => {
                    let i = rng.random_range(0..a.len());
                    let x = a[i].clone();
                    a.push(x);
                }
                _ => a.clear(),
            }
        }
        return desc;
    }
    *target = match target.clone() {
        Value::Number(n) => {
            let x = n.as_u64().unwrap_or(0);
            let choices = [
                0,
                1,
                x.saturating_sub(1),
                x + 1,
                x * 2,
                x / 2,
                rng.random_range(0..64),
                u64::MAX,
                1 << 40,
                (1 << 32) + 1,
            ];
            if rng.random_range(0..12) == 0 {
                Value::from(-1)
            } else {
                Value::from(choices[rng.random_range(0..choices.len())])
            }
        }
        Value::String(s) => {
            let choices = [
                "",
                "f32",
                "bf16",
                "i64",
                "bool",
                "intermediate",
                "input",
                "constant",
            ];
            if rng.random_bool(0.3) {
                Value::from(format!("{s}x"))
            } else {
                Value::from(choices[rng.random_range(0..choices.len())])
            }
        }
        Value::Bool(b) => Value::from(!b),
        Value::Null => Value::from(0),
        other => other,
    };
    desc
}

/// Runs every entry of a validated program on random inputs of its declared shapes.
fn run_all(exe: Executable) {
    let Ok(mut cpu) = CpuExecutor::new(exe) else {
        return;
    };
    let entries: Vec<_> = cpu.executable().program.entries.clone();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for e in &entries {
        let mut ins = IndexMap::new();
        for b in &e.inputs {
            let n = b.shape.numel();
            let vals: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
            if let Ok(t) = Tensor::from_f64(b.dtype, b.shape.clone(), &vals) {
                ins.insert(b.name.clone(), t);
            }
        }
        let _ = cpu.run_entry_outputs(&e.name, &ins);
    }
}

/// Opens a (possibly edited) in-memory artifact; errors are fine, panics are not.
fn open_and_maybe_run(art: Artifact) -> Result<bool, String> {
    catch_unwind(AssertUnwindSafe(|| match Executable::new(art) {
        Ok(exe) => {
            run_all(exe);
            true
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty());
            false
        }
    }))
    .map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

#[test]
fn ten_thousand_damaged_artifacts_give_errors_not_panics() {
    let art = artifact();
    // The undamaged artifact opens and runs.
    assert_eq!(open_and_maybe_run(art.clone()), Ok(true));
    let bytes = art.to_bytes().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    let mut cases = 0;

    // Files: every truncation point class, and bit flips (the trailing checksum catches them).
    for _ in 0..1500 {
        let n = rng.random_range(0..bytes.len());
        let r = catch_unwind(|| Artifact::from_bytes(&bytes[..n], "t.mmada").is_err());
        assert_eq!(r.ok(), Some(true), "truncated at {n}");
        cases += 1;
    }
    for _ in 0..1500 {
        let mut b = bytes.clone();
        let i = rng.random_range(0..b.len());
        b[i] ^= 1 << rng.random_range(0..8);
        let r = catch_unwind(|| Artifact::from_bytes(&b, "t.mmada").is_err());
        assert_eq!(r.ok(), Some(true), "bit flip at byte {i}");
        cases += 1;
    }

    // Hand edits with every checksum recomputed: the program, the kernel list, the manifest.
    let mut opened = 0;
    for section in [
        "program.json",
        "program.json",
        "program.json",
        "kernels.kir.json",
    ] {
        let base: Value = serde_json::from_slice(art.section(section).unwrap()).unwrap();
        for i in 0..FUZZ_EDITS {
            let mut v = base.clone();
            let what = mutate(&mut v, &mut rng);
            if rng.random_bool(0.2) {
                mutate(&mut v, &mut rng); // two edits that may agree with each other
            }
            let mut edited = art.clone();
            edited
                .sections
                .insert(section.into(), serde_json::to_vec(&v).unwrap());
            // Through the file format, so the edited file is read as a user's would be.
            let file = edited.to_bytes().unwrap();
            let read = Artifact::from_bytes(&file, "edited.mmada").unwrap();
            match open_and_maybe_run(read) {
                Ok(ran) => opened += ran as usize,
                Err(p) => panic!("{section} case {i}, edit {what}: panicked: {p}"),
            }
            cases += 1;
        }
    }
    // Manifest edits: section offsets and lengths that lie, checksums recomputed.
    let mlen = u64::from_le_bytes(bytes[12..20].try_into().unwrap()) as usize;
    let manifest: Value = serde_json::from_slice(&bytes[20..20 + mlen]).unwrap();
    for _ in 0..1000 {
        let mut m = manifest.clone();
        mutate(&mut m, &mut rng);
        let mj = serde_json::to_vec(&m).unwrap();
        let mut b = bytes[..12].to_vec();
        b.extend_from_slice(&(mj.len() as u64).to_le_bytes());
        b.extend_from_slice(&mj);
        b.extend_from_slice(&bytes[20 + mlen..bytes.len() - 32]);
        use sha2::Digest;
        let d = sha2::Sha256::digest(&b);
        b.extend_from_slice(&d);
        let r = catch_unwind(|| match Artifact::from_bytes(&b, "m.mmada") {
            Ok(a) => open_and_maybe_run(a).is_ok(),
            Err(_) => true,
        });
        assert_eq!(r.ok(), Some(true));
        cases += 1;
    }
    eprintln!("{cases} damaged artifacts, {opened} edits left a consistent program that ran");
    assert!(cases >= 10_000);
}
