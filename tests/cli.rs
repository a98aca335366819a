//! The CLI as a user runs it: compile then run gives the interpreter's numbers; bad artifacts,
//! inputs and paths give one-line errors, never panics.

use indexmap::IndexMap;
use mmada_ir::{max_rel_error, Tensor};
use mmada_runtime::tensor_io::{read_safetensors, write_safetensors};
use std::path::{Path, PathBuf};

mod common;

use common::assert_one_line_error;
use common::mmada_cli as mmada;

fn example() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/softmax_linear.toml"
    ))
}

fn compiled(dir: &Path) -> PathBuf {
    let art = dir.join("s.mmada");
    let (ok, out, err) = mmada(
        &[
            "compile",
            example().to_str().unwrap(),
            "-o",
            "s.mmada",
            "--no-ptxas",
        ],
        dir,
    );
    assert!(ok, "compile failed: {out}{err}");
    art
}

#[test]
fn compile_then_run_gives_the_interpreter_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    compiled(d);
    let (ok, out, err) = mmada(&["inspect", "s.mmada"], d);
    assert!(ok, "{err}");
    assert!(
        out.contains("in 2 buffers") && out.contains("2 launches"),
        "inspect should show the product and softmax launches and their buffers: {out}"
    );
    let (ok, _, err) = mmada(
        &["inputs", "s.mmada", "-o", "in.safetensors", "--seed", "3"],
        d,
    );
    assert!(ok, "{err}");
    let (ok, _, err) = mmada(
        &[
            "run",
            "s.mmada",
            "--input",
            "in.safetensors",
            "--output",
            "out.safetensors",
            "--target",
            "cpu",
        ],
        d,
    );
    assert!(ok, "{err}");
    let (ok, _, err) = mmada(
        &[
            "run",
            "s.mmada",
            "--input",
            "in.safetensors",
            "--output",
            "ref.safetensors",
            "--reference",
        ],
        d,
    );
    assert!(ok, "{err}");
    let got = read_safetensors(&d.join("out.safetensors")).unwrap();
    let want = read_safetensors(&d.join("ref.safetensors")).unwrap();
    let e = max_rel_error(&got["y"], &want["y"], 1e-30);
    assert!(e <= 1e-5, "CLI run differs from the reference by {e:e}");
    assert_eq!(got["y"].shape().0, vec![37, 29]);
}

#[test]
fn truncated_and_altered_artifacts_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let art = compiled(d);
    mmada(&["inputs", "s.mmada", "-o", "in.safetensors"], d);
    let bytes = std::fs::read(&art).unwrap();
    std::fs::write(d.join("trunc.mmada"), &bytes[..bytes.len() / 2]).unwrap();
    assert_one_line_error(
        mmada(
            &[
                "run",
                "trunc.mmada",
                "--input",
                "in.safetensors",
                "--output",
                "o.safetensors",
                "--target",
                "cpu",
            ],
            d,
        ),
        "truncated or was altered",
    );
    let mut altered = bytes.clone();
    let mid = altered.len() / 2;
    altered[mid] ^= 0x40;
    std::fs::write(d.join("alt.mmada"), &altered).unwrap();
    assert_one_line_error(
        mmada(
            &[
                "run",
                "alt.mmada",
                "--input",
                "in.safetensors",
                "--output",
                "o.safetensors",
                "--target",
                "cpu",
            ],
            d,
        ),
        "truncated or was altered",
    );
    std::fs::write(d.join("junk.mmada"), b"hello").unwrap();
    assert_one_line_error(
        mmada(&["inspect", "junk.mmada"], d),
        "not an mmada artifact",
    );
    // A file of the previous format (one graph, version 1) is named as such, and so is one
    // from a newer mmada.
    for (version, needle) in [
        (1u32, "written by an older mmada"),
        (3, "newer than this mmada"),
    ] {
        let mut old = bytes.clone();
        old[8..12].copy_from_slice(&version.to_le_bytes());
        let n = old.len();
        use sha2::Digest;
        let digest = sha2::Sha256::digest(&old[..n - 32]);
        old[n - 32..].copy_from_slice(&digest);
        std::fs::write(d.join("v.mmada"), &old).unwrap();
        assert_one_line_error(mmada(&["inspect", "v.mmada"], d), needle);
    }
}

#[test]
fn one_artifact_holds_forward_and_train_step_entries() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ok, out, err) = mmada(
        &[
            "compile",
            "--preset",
            "tiny",
            "--graph",
            "forward,train-step",
            "--batch",
            "2",
            "--seq",
            "32",
            "--targets",
            "cpu",
            "-o",
            "both.mmada",
            "-v",
        ],
        d,
    );
    assert!(ok, "{err}");
    assert!(out.contains("entries forward, train-step"), "{out}");
    for stage in mmada_codegen::compile::STAGES {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(stage)),
            "no {stage} timing in:\n{out}"
        );
    }
    let (ok, out, err) = mmada(&["inspect", "both.mmada"], d);
    assert!(ok, "{err}");
    let entry = |name: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no entry {name} in:\n{out}"))
            .to_string()
    };
    // Both entries name the 39 parameters of the tiny model (4 layers × 9 + 3); the step also
    // their 78 moments. The parameters are one set of buffers (the inspect line above counts
    // each buffer once).
    assert!(entry("forward ").contains("(39 resident)"), "{out}");
    assert!(entry("train-step ").contains("(117 resident)"), "{out}");
    // Running an entry that is not there names the ones that are.
    let ids = Tensor::from_i64([2, 32], vec![1; 64]).unwrap();
    let mut ins = IndexMap::new();
    ins.insert("input_ids".to_string(), ids);
    write_safetensors(&d.join("in.safetensors"), &ins).unwrap();
    assert_one_line_error(
        mmada(
            &[
                "run",
                "both.mmada",
                "--entry",
                "sample",
                "--input",
                "in.safetensors",
                "--output",
                "o.safetensors",
            ],
            d,
        ),
        "entries: forward, train-step",
    );
}

#[test]
fn wrong_input_name_and_shape_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    compiled(d);
    let mut ins: IndexMap<String, Tensor> = IndexMap::new();
    ins.insert(
        "x".into(),
        Tensor::from_f32([37, 53], vec![0.0; 37 * 53]).unwrap(),
    );
    ins.insert(
        "w".into(),
        Tensor::from_f32([53, 29], vec![0.0; 53 * 29]).unwrap(),
    );
    ins.insert(
        "bias".into(),
        Tensor::from_f32([29], vec![0.0; 29]).unwrap(),
    );
    write_safetensors(&d.join("badname.safetensors"), &ins).unwrap();
    for target in ["cpu", "reference"] {
        let mut args = vec![
            "run",
            "s.mmada",
            "--input",
            "badname.safetensors",
            "--output",
            "o.safetensors",
        ];
        if target == "reference" {
            args.push("--reference");
        } else {
            args.extend(["--target", "cpu"]);
        }
        assert_one_line_error(mmada(&args, d), "'bias'");
    }
    ins.shift_remove("bias");
    ins.insert("b".into(), Tensor::from_f32([30], vec![0.0; 30]).unwrap());
    write_safetensors(&d.join("badshape.safetensors"), &ins).unwrap();
    assert_one_line_error(
        mmada(
            &[
                "run",
                "s.mmada",
                "--input",
                "badshape.safetensors",
                "--output",
                "o.safetensors",
                "--target",
                "cpu",
            ],
            d,
        ),
        "input 'b': expected f32[29], got f32[30]",
    );
    ins.shift_remove("b");
    write_safetensors(&d.join("missing.safetensors"), &ins).unwrap();
    assert_one_line_error(
        mmada(
            &[
                "run",
                "s.mmada",
                "--input",
                "missing.safetensors",
                "--output",
                "o.safetensors",
                "--target",
                "cpu",
            ],
            d,
        ),
        "input 'b': missing",
    );
}

#[test]
fn missing_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_one_line_error(
        mmada(
            &[
                "run",
                "nope.mmada",
                "--input",
                "in.safetensors",
                "--output",
                "o.safetensors",
            ],
            d,
        ),
        "nope.mmada",
    );
    assert_one_line_error(
        mmada(&["compile", "nope.toml", "-o", "x.mmada"], d),
        "nope.toml",
    );
    compiled(d);
    assert_one_line_error(
        mmada(
            &[
                "run",
                "s.mmada",
                "--input",
                "nope.safetensors",
                "--output",
                "o.safetensors",
                "--target",
                "cpu",
            ],
            d,
        ),
        "nope.safetensors",
    );
    std::fs::write(
        d.join("bad.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}",
    )
    .unwrap();
    assert_one_line_error(
        mmada(
            &[
                "run",
                "s.mmada",
                "--input",
                "bad.safetensors",
                "--output",
                "o.safetensors",
                "--target",
                "cpu",
            ],
            d,
        ),
        "bad.safetensors",
    );
}

#[test]
fn bad_specs_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("bad.toml"),
        "name = \"x\"\n[inputs]\nx = { dtype = \"f33\", shape = [2] }\n[outputs]\ny = \"exp(x)\"\n",
    )
    .unwrap();
    assert_one_line_error(
        mmada(&["compile", "bad.toml", "-o", "x.mmada"], d),
        "inputs.x.dtype",
    );
    std::fs::write(
        d.join("bad2.toml"),
        "name = \"x\"\n[inputs]\nx = { dtype = \"f32\", shape = [2, 3] }\n[outputs]\ny = \"x @ x\"\n",
    )
    .unwrap();
    assert_one_line_error(
        mmada(&["compile", "bad2.toml", "-o", "x.mmada"], d),
        "contraction dims differ",
    );
}

/// Model compile options that cannot hold are refused by name.
#[test]
fn bad_model_compile_options_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = ["compile", "--preset", "tiny", "-o", "x.mmada"];
    for (extra, want) in [
        (&["--dtype", "f16"][..], "--dtype must be f32 or bf16"),
        (
            &["--dtype", "bf16", "--graph", "train-step"][..],
            "bf16 training",
        ),
        (
            &["--graph", "dual-cache-step", "--block", "0"][..],
            "--block",
        ),
        (
            &["--graph", "dual-cache-step", "--seq", "16", "--block", "32"][..],
            "longer than --seq",
        ),
        (&["--graph", "backward"][..], "dual-cache-step"),
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        assert_one_line_error(mmada(&args, d), want);
    }
}

/// `mmada bench` times both bench-tiny figures and reports positive rates and ratios; with
/// `--profile` it prints the per-kernel table whose launches add up to the run's.
#[test]
fn bench_reports_times_and_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = mmada(
        &[
            "bench",
            "--only",
            "bench-tiny",
            "--target",
            "cpu",
            "--reps",
            "1",
        ],
        dir.path(),
    );
    assert!(ok, "{err}");
    for fig in ["train step", "forward"] {
        let line = out
            .lines()
            .find(|l| l.starts_with("bench-tiny") && l.contains(fig))
            .unwrap_or_else(|| panic!("no {fig} line in:\n{out}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        let gflops: f64 = cols[cols.len() - 4].parse().unwrap();
        assert!(gflops > 0.0, "{line}");
        assert!(line.ends_with('x'), "{line}");
    }
    let (ok, out, err) = mmada(
        &["bench", "--only", "bench-tiny", "--profile", "3"],
        dir.path(),
    );
    assert!(ok, "{err}");
    let head = out
        .lines()
        .find(|l| l.starts_with("bench-tiny train step:"))
        .unwrap_or_else(|| panic!("{out}"));
    let launches: usize = head
        .split_whitespace()
        .skip_while(|w| !w.ends_with("ms,"))
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    // The per-kind lines (before the kernel table) add up to the run's launches.
    let kinds: usize = out
        .lines()
        .skip_while(|l| !l.starts_with("bench-tiny train step:"))
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with("kernel"))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w[w.len() - 2].parse::<usize>().unwrap()
        })
        .sum();
    assert_eq!(kinds, launches, "{out}");
    assert!(
        out.contains("gemm"),
        "the host calls gemm for products: {out}"
    );
    // --json: one object per line with the documented fields.
    let (ok, out, err) = mmada(
        &[
            "bench",
            "--only",
            "bench-tiny",
            "--target",
            "cpu",
            "--reps",
            "1",
            "--json",
        ],
        dir.path(),
    );
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let figures: Vec<&str> = lines
        .iter()
        .map(|v| v["figure"].as_str().unwrap())
        .collect();
    assert_eq!(figures, ["train-step", "forward"], "{out}");
    for v in &lines {
        assert_eq!(v["config"], "bench-tiny");
        for k in ["median_s", "tokens_per_s", "gflops", "speedup"] {
            assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{k} in {v}");
        }
    }
}

/// `-o` and `--output` naming a FIFO (as `/dev/null` or a pipe would be) write into it; the
/// atomic rename used for files must never replace such a path with a regular file (it once
/// turned this machine's `/dev/null` into a file).
#[test]
fn outputs_to_a_fifo_write_into_it_and_keep_it() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fifo = d.join("pipe");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(&fifo).unwrap())
    };
    let spec = example();
    let (ok, _out, err) = mmada(
        &[
            "compile",
            spec.to_str().unwrap(),
            "--targets",
            "cpu",
            "--no-ptxas",
            "-o",
            "pipe",
        ],
        d,
    );
    assert!(ok, "{err}");
    // Checked before joining: on a replaced FIFO the reader would wait forever.
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    let bytes = reader.join().unwrap();
    assert_eq!(&bytes[..8], b"MMADAART");
}
