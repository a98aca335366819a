//! `mmada train` as a user runs it: on the embedded default the loss falls by more than 30 %;
//! `--resume` from a mid-run checkpoint reproduces the uninterrupted run's next losses exactly;
//! a process killed with SIGKILL while saving leaves the previous checkpoint loadable.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

fn mmada() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mmada"));
    c.env_remove("MMADA_DUMP_DIR");
    c
}

fn losses(out: &Path) -> Vec<(usize, f64)> {
    task_losses(out)
        .into_iter()
        .map(|(s, l, _)| (s, l))
        .collect()
}

/// A fresh output directory holding a copy of `<out>/checkpoint-<step>` as its `latest`.
fn copy_of_checkpoint(out: &Path, step: usize) -> tempfile::TempDir {
    let b = tempfile::tempdir().unwrap();
    let name = format!("checkpoint-{step}");
    let dst = b.path().join(&name);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(out.join(&name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    std::fs::write(b.path().join("latest"), &name).unwrap();
    b
}

fn train(out: &Path, args: &[&str]) {
    let st = mmada()
        .args(["train", "--target", "cpu", "--log", "--out"])
        .arg(out)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "mmada train {args:?} failed");
}

#[test]
fn embedded_default_loss_falls_by_30_percent() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    train(dir.path(), &["--steps", "100", "--save-every", "0"]);
    let secs = t0.elapsed().as_secs_f64();
    let l = losses(dir.path());
    assert_eq!(l.len(), 100);
    let mean = |s: &[(usize, f64)]| s.iter().map(|x| x.1).sum::<f64>() / s.len() as f64;
    let (head, tail) = (mean(&l[..10]), mean(&l[80..]));
    eprintln!(
        "100 steps in {secs:.1}s: loss {head:.3} → {tail:.3} ({:.0}% lower)",
        100.0 * (1.0 - tail / head)
    );
    assert!(tail <= 0.7 * head, "loss fell from {head} to {tail} only");
    assert!(dir.path().join("loss-curve.png").is_file());
    assert!(dir
        .path()
        .join("checkpoint-100/model.safetensors")
        .is_file());
    assert!(dir.path().join("checkpoint-100/config.json").is_file());
}

#[test]
fn resume_reproduces_the_uninterrupted_run_exactly() {
    let a = tempfile::tempdir().unwrap();
    let small = [
        "--batch", "4", "--seq", "160", "--steps", "30", "--warmup", "5",
    ];
    train(a.path(), &[&small[..], &["--save-every", "15"]].concat());
    let full = losses(a.path());
    // Resume a copy of the mid-run checkpoint in a fresh directory.
    let b = copy_of_checkpoint(a.path(), 15);
    train(
        b.path(),
        &[&small[..], &["--save-every", "15", "--resume"]].concat(),
    );
    let resumed = losses(b.path());
    assert_eq!(resumed.len(), 15);
    for (r, f) in resumed.iter().zip(&full[15..]) {
        assert_eq!(r.0, f.0);
        assert_eq!(
            r.1.to_bits(),
            f.1.to_bits(),
            "step {}: {} vs {}",
            r.0,
            r.1,
            f.1
        );
    }
}

#[test]
fn bf16_checkpoints_carry_the_hf_files_and_resume_exactly() {
    let a = tempfile::tempdir().unwrap();
    let small = [
        "--batch",
        "2",
        "--seq",
        "64",
        "--steps",
        "8",
        "--warmup",
        "2",
        "--save-every",
        "4",
        "--save-dtype",
        "bf16",
    ];
    train(a.path(), &small);
    let full = losses(a.path());
    let ck = a.path().join("checkpoint-4");
    // The model files are bf16 with the `format: pt` metadata; the optimiser state holds the
    // f32 masters; the tokenizer files are beside them.
    for f in ["model.safetensors", "optimizer.safetensors"] {
        let bytes = std::fs::read(ck.join(f)).unwrap();
        let meta = mmada_runtime::tensor_io::safetensors_metadata(&bytes, &ck.join(f)).unwrap();
        assert_eq!(meta.get("format").map(String::as_str), Some("pt"), "{f}");
    }
    let model = mmada_runtime::tensor_io::read_safetensors(&ck.join("model.safetensors")).unwrap();
    let optim =
        mmada_runtime::tensor_io::read_safetensors(&ck.join("optimizer.safetensors")).unwrap();
    for (n, t) in &model {
        assert_eq!(t.dtype(), mmada_ir::DType::BF16, "{n}");
        let m = &optim[&format!("{n}.master")];
        assert_eq!(m.dtype(), mmada_ir::DType::F32);
        let rounded =
            mmada_ir::Tensor::from_f64(mmada_ir::DType::BF16, m.shape().clone(), &m.to_f64_vec())
                .unwrap();
        assert_eq!(
            rounded.to_le_bytes(),
            t.to_le_bytes(),
            "{n}: bf16 file ≠ rounded master"
        );
    }
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        assert!(ck.join(f).is_file(), "{f}");
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["torch_dtype"], "bfloat16");
    // Resuming from the bf16 checkpoint continues the run exactly (the masters, not the
    // rounded weights, are loaded).
    let b = copy_of_checkpoint(a.path(), 4);
    train(b.path(), &[&small[..], &["--resume"]].concat());
    let resumed = losses(b.path());
    assert_eq!(resumed.len(), 4);
    for (r, f) in resumed.iter().zip(&full[4..]) {
        assert_eq!(
            r.1.to_bits(),
            f.1.to_bits(),
            "step {}: {} vs {}",
            r.0,
            r.1,
            f.1
        );
    }
}

#[test]
fn sigkill_while_saving_keeps_the_previous_checkpoint() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let args = [
        "train",
        "--target",
        "cpu",
        "--log",
        "--batch",
        "4",
        "--seq",
        "160",
        "--steps",
        "30",
        "--save-every",
        "10",
        "--out",
    ];
    // Each failpoint of the save: the process is SIGKILLed there while writing checkpoint-20
    // (weights written; optimiser state written; everything written but not yet published).
    for point in [
        "save-after-weights",
        "save-after-optimizer",
        "save-before-publish",
    ] {
        let _ = std::fs::remove_dir_all(out);
        std::fs::create_dir_all(out).unwrap();
        let st = mmada()
            .args(args)
            .arg(out)
            .env("MMADA_FAILPOINT", format!("{point}@20"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(st.signal(), Some(9), "{point}: killed by SIGKILL ({st:?})");
        assert_eq!(
            std::fs::read_to_string(out.join("latest")).unwrap(),
            "checkpoint-10",
            "{point}"
        );
        assert!(
            !out.join("checkpoint-20").exists(),
            "{point}: a half-written checkpoint was published"
        );
        let partial = std::fs::read_dir(out).unwrap().flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("checkpoint-20.partial-")
        });
        assert!(partial, "{point}: the kill came mid-save");
        let ck = mmada_models::trainer::load_checkpoint(&out.join("checkpoint-10")).unwrap();
        assert_eq!(ck.state.step, 10);
    }
    // And training resumes from it.
    let st = mmada()
        .args(args)
        .arg(out)
        .arg("--resume")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        std::fs::read_to_string(out.join("latest")).unwrap(),
        "checkpoint-30"
    );
}

/// One step of a run's metrics: step, loss, and the loss of each task.
type TaskStep = (usize, f64, Vec<(String, f64)>);

/// The steps of a run's metrics.
fn task_losses(out: &Path) -> Vec<TaskStep> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let parts = v["parts"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, x)| (k.clone(), x.as_f64().unwrap()))
                        .collect()
                })
                .unwrap_or_default();
            (
                v["step"].as_u64().unwrap() as usize,
                v["loss"].as_f64().unwrap(),
                parts,
            )
        })
        .collect()
}

#[test]
fn multimodal_t2i_mmu_and_text_losses_each_fall_by_30_percent() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    train(
        dir.path(),
        &[
            "--multimodal",
            "--batch",
            "8",
            "--batch-t2i",
            "1",
            "--batch-mmu",
            "1",
            "--seq",
            "110",
            "--steps",
            "1000",
            "--save-every",
            "0",
        ],
    );
    let secs = t0.elapsed().as_secs_f64();
    let l = task_losses(dir.path());
    assert_eq!(l.len(), 1000);
    // The text loss is the slow one: about 40 % lower after 1000 steps (58 % after the
    // default run's 2000).
    for task in ["t2i", "mmu", "lm"] {
        let mean = |s: &[TaskStep]| {
            let v: Vec<f64> = s
                .iter()
                .map(|r| r.2.iter().find(|p| p.0 == task).expect(task).1)
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        let (head, tail) = (mean(&l[..20]), mean(&l[l.len() - 50..]));
        eprintln!(
            "{task}: 1000 steps in {secs:.1}s: loss {head:.3} → {tail:.3} ({:.0}% lower)",
            100.0 * (1.0 - tail / head)
        );
        assert!(
            tail <= 0.7 * head,
            "{task} loss fell from {head} to {tail} only"
        );
    }
    assert!(dir.path().join("task-losses.png").is_file());
}

#[test]
fn multimodal_resume_reproduces_the_uninterrupted_run_exactly() {
    let a = tempfile::tempdir().unwrap();
    let small = [
        "--multimodal",
        "--batch",
        "2",
        "--batch-t2i",
        "3",
        "--batch-mmu",
        "2",
        "--seq",
        "110",
        "--steps",
        "24",
        "--warmup",
        "4",
    ];
    train(a.path(), &[&small[..], &["--save-every", "12"]].concat());
    let full = task_losses(a.path());
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(a.path().join("checkpoint-12/trainer_state.json")).unwrap(),
    )
    .unwrap();
    // 12 steps × 3 t2i rows of 9,000 captions, × 2 mmu rows of 31,500 pairs.
    assert_eq!(state["streams"]["t2i"]["cursor"], 36, "{state}");
    assert_eq!(state["streams"]["mmu"]["cursor"], 24, "{state}");
    let b = copy_of_checkpoint(a.path(), 12);
    train(
        b.path(),
        &[&small[..], &["--save-every", "12", "--resume"]].concat(),
    );
    let resumed = task_losses(b.path());
    assert_eq!(resumed.len(), 12);
    for (r, f) in resumed.iter().zip(&full[12..]) {
        assert_eq!(r.0, f.0);
        assert_eq!(
            r.1.to_bits(),
            f.1.to_bits(),
            "step {}: {} vs {}",
            r.0,
            r.1,
            f.1
        );
        assert_eq!(r.2, f.2, "step {}", r.0);
        assert_eq!(r.2.len(), 3);
    }
    // A resume with other multimodal options is refused.
    let other: Vec<&str> = small
        .iter()
        .map(|&a| if a == "3" { "1" } else { a })
        .collect();
    let st = mmada()
        .args(["train", "--target", "cpu", "--log", "--out"])
        .arg(b.path())
        .args(&other)
        .arg("--resume")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!st.status.success());
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(err.contains("multimodal"), "{err}");
}

#[test]
fn bad_multimodal_options_give_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let o = mmada()
            .args(["train", "--target", "cpu", "--log", "--out"])
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    for (args, needle) in [
        (
            &["--multimodal", "--seq", "100"][..],
            "use --seq 110 or more",
        ),
        (
            &["--multimodal", "--cond-dropout", "2"][..],
            "--cond-dropout",
        ),
        (&["--multimodal", "--coef-t2i=-1"][..], "--coef-t2i"),
        (
            &["--multimodal", "--mmu-mask-floor", "1"][..],
            "--mmu-mask-floor",
        ),
        (
            &["--multimodal", "--vq", "/nonexistent/vq"][..],
            "/nonexistent/vq",
        ),
        (&["--batch-t2i", "3"][..], "--multimodal"),
    ] {
        let (ok, err) = run(args);
        assert!(!ok, "{args:?} succeeded");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        let last = err.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
        assert!(
            err.lines().filter(|l| l.starts_with("error")).count() == 1 && err.contains(needle),
            "{args:?}: '{needle}' not in one error line: {err} (last: {last})"
        );
    }
}
