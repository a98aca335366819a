//! Options a user gets wrong: each gives one `error:` line naming the option and the limit,
//! before any compilation or large allocation (so it comes at once; timed by hand, not here).

use std::path::Path;

mod common;

use common::mmada_cli as mmada;

/// Exactly one `error:` line on stderr containing every needle, no panic, nothing trained.
fn one_line_error(args: &[&str], dir: &Path, needles: &[&str]) {
    let (ok, out, err) = mmada(args, dir);
    assert!(!ok, "{args:?} succeeded: {out}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: expected one line, got:\n{err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "{args:?}: '{n}' not in: {err}");
    }
    assert!(!out.contains("trained"), "{out}");
    assert!(
        !dir.join("runs").exists(),
        "{args:?} created a run directory"
    );
}

#[test]
fn bad_training_options_are_named_with_their_limit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    one_line_error(
        &["train", "--lr", "nan"],
        d,
        &["--lr", "finite", "above 0", "NaN"],
    );
    one_line_error(&["train", "--lr=-1e-3"], d, &["--lr", "above 0"]);
    one_line_error(&["train", "--lr", "inf"], d, &["--lr", "finite"]);
    one_line_error(
        &["train", "--batch", "0"],
        d,
        &["--batch", "at least 1", "got 0"],
    );
    one_line_error(&["train", "--steps", "0"], d, &["--steps", "at least 1"]);
    one_line_error(&["train", "--keep", "0"], d, &["--keep", "at least 1"]);
    one_line_error(
        &["train", "--seq", "100000000"],
        d,
        &["--seq 100000000", "max_sequence_length 4096"],
    );
    one_line_error(
        &["train", "--min-lr-scale", "1.5"],
        d,
        &["--min-lr-scale", "between 0 and 1"],
    );
}

#[test]
fn bad_compile_options_are_named_with_their_limit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = ["compile", "--preset", "tiny", "-o", "x.mmada"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        base.iter().chain(extra).copied().collect()
    };
    one_line_error(&with(&["--batch", "0"]), d, &["--batch", "at least 1"]);
    one_line_error(
        &with(&["--seq", "100000000"]),
        d,
        &["--seq 100000000", "max_sequence_length"],
    );
    one_line_error(&with(&["--graph", "backward"]), d, &["--graph", "backward"]);
    one_line_error(&with(&["--targets", "sm_9"]), d, &["--targets", "sm_9"]);
    one_line_error(
        &with(&["--knob", "matmul.tile=12"]),
        d,
        &["matmul.tile", "12"],
    );
    one_line_error(&with(&["--knob", "gemm.tile=8"]), d, &["gemm"]);
    assert!(!d.join("x.mmada").exists());
}

#[test]
fn a_config_too_large_to_address_is_rejected_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = mmada_models::config::LladaConfig::preset("tiny").unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&cfg.to_json()).unwrap();
    v["d_model"] = 1_000_000_000u64.into();
    let path = dir.path().join("config.json");
    std::fs::write(&path, v.to_string()).unwrap();
    one_line_error(
        &["compile", path.to_str().unwrap(), "-o", "x.mmada"],
        dir.path(),
        &["config.json", "d_model", "TiB"],
    );
}
