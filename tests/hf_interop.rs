//! Optional (issue 15): checkpoints written by `mmada train`, in f32 and bf16, open with
//! transformers' safetensors loader, `PretrainedConfig` and `AutoTokenizer`, and their
//! logits there (through the independent NumPy reference) equal `mmada logits`:
//! `scripts/hf_load_check.py`. Runs with the Python named by `MMADA_HF_PYTHON` (default
//! `python3`) when it has numpy, safetensors, torch and transformers, and is skipped with a
//! loud message otherwise (CI has none). `MMADA_OFFICIAL=DIR` (a checkout of Gen-Verse/MMaDA)
//! adds the official `MMadaModelLM.from_pretrained`.

use std::path::Path;
use std::process::Command;

#[test]
fn trained_checkpoints_open_with_transformers_and_give_our_logits() {
    let py = std::env::var("MMADA_HF_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&py)
        .args([
            "-c",
            "import numpy, safetensors, torch, transformers, tokenizers",
        ])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "\n*** SKIPPED trained_checkpoints_open_with_transformers_and_give_our_logits: \
             '{py}' lacks numpy/safetensors/torch/transformers; set MMADA_HF_PYTHON to a \
             Python that has them (README: checkpoints elsewhere) ***\n"
        );
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mmada = env!("CARGO_BIN_EXE_mmada");
    for dtype in ["f32", "bf16"] {
        let out = tempfile::tempdir().unwrap();
        let st = Command::new(mmada)
            .args([
                "train", "--target", "cpu", "--log", "--steps", "3", "--batch", "2",
            ])
            .args(["--seq", "32", "--save-dtype", dtype, "--out"])
            .arg(out.path())
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let mut c = Command::new(&py);
        c.arg(root.join("scripts/hf_load_check.py"))
            .arg(out.path().join("checkpoint-3"))
            .args(["--mmada", mmada]);
        if let Ok(dir) = std::env::var("MMADA_OFFICIAL") {
            c.args(["--official", &dir]);
        }
        let r = c.output().unwrap();
        let text = String::from_utf8_lossy(&r.stdout);
        eprintln!(
            "--save-dtype {dtype}:\n{text}{}",
            String::from_utf8_lossy(&r.stderr)
        );
        assert!(r.status.success(), "hf_load_check.py failed for {dtype}");
        assert!(text.contains("all checks passed"));
    }
}
