//! Bad checkpoints, configs and data give errors that name the tensor, field, file or line —
//! never a panic.

use indexmap::IndexMap;
use mmada_ir::{DType, Tensor};
use mmada_models::checkpoint::load_model;
use mmada_models::config::LladaConfig;
use mmada_models::data::parse_jsonl;
use mmada_models::logits::check_ids;
use mmada_models::tokenizer::TextTokenizer;
use mmada_runtime::tensor_io::{read_safetensors, write_safetensors};
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny_llada")
}

/// A copy of the fixture checkpoint with its weights transformed by `f`.
fn variant(f: impl FnOnce(&mut IndexMap<String, Tensor>)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let mut w = read_safetensors(&fixture().join("model.safetensors")).unwrap();
    f(&mut w);
    write_safetensors(&dir.path().join("model.safetensors"), &w).unwrap();
    dir
}

fn err_of(dir: &Path) -> String {
    match load_model(dir) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_tensors_name_the_tensor() {
    let d = variant(|w| {
        w.shift_remove("model.transformer.blocks.1.q_proj.weight");
    });
    let e = err_of(d.path());
    assert!(
        e.contains("model.transformer.blocks.1.q_proj.weight") && e.contains("missing"),
        "{e}"
    );

    let d = variant(|w| {
        w.insert(
            "model.transformer.blocks.0.q_proj.bias".into(),
            Tensor::zeros(DType::F32, [32]),
        );
    });
    let e = err_of(d.path());
    assert!(
        e.contains("model.transformer.blocks.0.q_proj.bias") && e.contains("not a parameter"),
        "{e}"
    );

    let d = variant(|w| {
        w.insert(
            "model.transformer.ln_f.weight".into(),
            Tensor::zeros(DType::F32, [31]),
        );
    });
    let e = err_of(d.path());
    assert!(
        e.contains("model.transformer.ln_f.weight") && e.contains("[31]"),
        "{e}"
    );

    let d = variant(|w| {
        w.insert(
            "model.transformer.ln_f.weight".into(),
            Tensor::zeros(DType::I64, [32]),
        );
    });
    let e = err_of(d.path());
    assert!(
        e.contains("model.transformer.ln_f.weight") && e.contains("i64"),
        "{e}"
    );
}

#[test]
fn truncated_and_inconsistent_files_name_the_file_or_field() {
    // Truncated safetensors.
    let d = variant(|_| {});
    let p = d.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let e = err_of(d.path());
    assert!(e.contains("model.safetensors"), "{e}");
    // Sharded: an index naming a tensor its shard lacks.
    let d = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(fixture().join("model-bf16")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), d.path().join(f.file_name())).unwrap();
    }
    let ip = d.path().join("model.safetensors.index.json");
    let idx = std::fs::read_to_string(&ip).unwrap();
    let idx = idx.replacen(
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        1,
    );
    std::fs::write(&ip, idx).unwrap();
    let e = err_of(d.path());
    assert!(
        e.contains("model.safetensors.index.json") || e.contains("shard"),
        "{e}"
    );
    // Inconsistent config: heads that do not divide d_model, then grouped-query attention.
    for (field, from, to) in [
        ("n_heads", "\"n_heads\": 4", "\"n_heads\": 5"),
        ("n_kv_heads", "\"n_kv_heads\": 4", "\"n_kv_heads\": 2"),
        (
            "weight_tying",
            "\"weight_tying\": false",
            "\"weight_tying\": true",
        ),
    ] {
        let d = variant(|_| {});
        let cp = d.path().join("config.json");
        let c = std::fs::read_to_string(&cp).unwrap();
        assert!(c.contains(from), "fixture config lacks {from}");
        std::fs::write(&cp, c.replace(from, to)).unwrap();
        let e = err_of(d.path());
        assert!(e.contains(field) && e.contains("config.json"), "{e}");
    }
    // Malformed config.json.
    let d = variant(|_| {});
    std::fs::write(d.path().join("config.json"), "{\"d_model\": ").unwrap();
    assert!(err_of(d.path()).contains("config.json"));
    // No weights at all.
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(fixture().join("config.json"), d.path().join("config.json")).unwrap();
    assert!(err_of(d.path()).contains("model.safetensors"));
}

#[test]
fn malformed_jsonl_names_the_line() {
    let tok = TextTokenizer::tiny().unwrap();
    let good = r#"{"text": "hello there"}"#;
    for (bad, needle) in [
        ("{\"text\": \"ok\"\n", "not a valid row"),
        ("{\"txt\": \"typo\"}", "not a valid row"),
        ("{\"prompt\": \"only a prompt\"}", "expected"),
        ("[1, 2, 3]", "not a valid row"),
        ("{\"question\": \"q\", \"answer\": \"a\"}", "expected"),
    ] {
        let text = format!("{good}\n{good}\n{bad}\n");
        let e = parse_jsonl(&text, "data.jsonl", &tok, 64)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("data.jsonl:3:"), "{e}");
        assert!(e.contains(needle), "{e}");
    }
    let ok = parse_jsonl(good, "x", &tok, 64).unwrap();
    assert_eq!(ok.rows.len(), 1);
    assert_eq!(ok.rows[0].ids.len(), 64);
}

#[test]
fn bad_token_ids_name_the_position() {
    let cfg = LladaConfig::read(&fixture().join("config.json")).unwrap();
    let ids = Tensor::from_i64([2, 3], vec![1, 2, 3, 4, 61, 5]).unwrap();
    let e = check_ids(&cfg, &ids).unwrap_err().to_string();
    assert!(e.contains("input_ids[1, 1] = 61"), "{e}");
    let f = Tensor::from_f32([2, 3], vec![0.0; 6]).unwrap();
    assert!(check_ids(&cfg, &f)
        .unwrap_err()
        .to_string()
        .contains("integer"));
}
