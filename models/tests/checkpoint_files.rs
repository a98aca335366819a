//! The files of a checkpoint, as other tools read them (issue 15): every safetensors file has
//! the `format: pt` metadata; `config.json` has every official field, with the values of the
//! model it describes; the tokenizer files open with the `tokenizers` crate; round trips in
//! f32 and bf16, single file and sharded, give the logits of the weights written; re-saving a
//! loaded official-layout checkpoint gives the same tensor bytes and config fields.

mod common;

use mmada_codegen::backend::BackendOptions;
use mmada_ir::{DType, Tensor};
use mmada_models::checkpoint::{init_weights, load_model, save_model};
use mmada_models::config::{LladaConfig, OFFICIAL_FIELDS};
use mmada_models::logits::logits_from_checkpoint;
use mmada_models::tokenizer::{BpeTokenizer, TextTokenizer};
use mmada_runtime::checkpoint::load_dir;
use mmada_runtime::tensor_io::safetensors_metadata;
use mmada_runtime::Target;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn host() -> BackendOptions {
    BackendOptions {
        gpu_archs: vec![],
        ..BackendOptions::default()
    }
}

fn json(path: &Path) -> serde_json::Map<String, Value> {
    match serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap() {
        Value::Object(m) => m,
        other => panic!("{}: not an object: {other}", path.display()),
    }
}

/// The `__metadata__` `format` of a safetensors file.
fn format_of(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).unwrap();
    safetensors_metadata(&bytes, path)
        .unwrap()
        .get("format")
        .cloned()
}

fn safetensors_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    v.sort();
    v
}

/// Rounds f32 weights to bf16 and back.
fn bf16_rounded(w: &indexmap::IndexMap<String, Tensor>) -> indexmap::IndexMap<String, Tensor> {
    w.iter()
        .map(|(n, t)| {
            let b = Tensor::from_f64(DType::BF16, t.shape().clone(), &t.to_f64_vec()).unwrap();
            (
                n.clone(),
                Tensor::from_f32(t.shape().clone(), b.to_f32_vec()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn written_checkpoints_open_elsewhere_and_round_trip_in_f32_and_bf16_single_and_sharded() {
    let cfg = common::small_cfg();
    let weights = init_weights(&cfg, 77, 0, 0.5);
    let ids = Tensor::from_i64([2, 9], (0..18).map(|i| (i * 7 + 3) % 37).collect()).unwrap();
    // Reference logits: the f32 weights, and their bf16 rounding, each written as f32.
    let reference = |w: &indexmap::IndexMap<String, Tensor>| {
        let d = tempfile::tempdir().unwrap();
        save_model(d.path(), &cfg, w, DType::F32, u64::MAX).unwrap();
        logits_from_checkpoint(d.path(), &ids, None, Target::Cpu, host()).unwrap()
    };
    let want_f32 = reference(&weights);
    let want_bf16 = reference(&bf16_rounded(&weights));
    assert_ne!(want_f32.to_f32_vec(), want_bf16.to_f32_vec());
    for dtype in [DType::F32, DType::BF16] {
        // 4 KiB shards split the 40 × 16 embedding from the rest: several files and an index.
        for shard in [u64::MAX, 4096] {
            let d = tempfile::tempdir().unwrap();
            save_model(d.path(), &cfg, &weights, dtype, shard).unwrap();
            let files = safetensors_files(d.path());
            assert_eq!(files.len() > 1, shard == 4096, "{files:?}");
            for f in &files {
                assert_eq!(format_of(f).as_deref(), Some("pt"), "{}", f.display());
            }
            if shard == 4096 {
                let idx = json(&d.path().join("model.safetensors.index.json"));
                assert_eq!(idx["metadata"]["format"], "pt");
            }
            // config.json: every official field, the values of this model, the dtype on disk.
            let c = json(&d.path().join("config.json"));
            for f in OFFICIAL_FIELDS {
                assert!(c.contains_key(f), "{dtype} config.json lacks {f}");
            }
            let stored = load_dir(d.path()).unwrap();
            let wte = &stored["model.transformer.wte.weight"];
            assert_eq!(wte.dtype(), dtype);
            assert_eq!(
                wte.shape().0,
                vec![c["embedding_size"].as_u64().unwrap() as usize, 16]
            );
            assert_eq!(c["d_model"], 16);
            assert_eq!(c["n_layers"], 2);
            let blocks = stored
                .keys()
                .filter(|k| k.ends_with("attn_norm.weight"))
                .count();
            assert_eq!(blocks, 2);
            assert_eq!(
                stored["model.transformer.blocks.0.ff_proj.weight"]
                    .shape()
                    .0,
                vec![c["mlp_hidden_size"].as_u64().unwrap() as usize, 16]
            );
            let torch = if dtype == DType::F32 {
                "float32"
            } else {
                "bfloat16"
            };
            assert_eq!(c["torch_dtype"], torch);
            assert_eq!(c["block_group_size"], 1);
            assert_eq!(c["alibi"], false);
            assert_eq!(c["layer_norm_with_affine"], true);
            assert_eq!(c["residual_dropout"], 0.0);
            assert_eq!(c["mask_token_id"], cfg.mask_token_id);
            let back = LladaConfig::read(&d.path().join("config.json")).unwrap();
            assert_eq!(back, cfg.stored_as(dtype));
            // `mmada logits` (its library function) on what was written.
            let got = logits_from_checkpoint(d.path(), &ids, None, Target::Cpu, host()).unwrap();
            let want = if dtype == DType::F32 {
                &want_f32
            } else {
                &want_bf16
            };
            assert_eq!(
                got.to_f32_vec(),
                want.to_f32_vec(),
                "{dtype}, shard limit {shard}"
            );
        }
    }
}

#[test]
fn resaving_a_loaded_official_checkpoint_keeps_the_tensor_bytes_and_config_fields() {
    // The fixture's sharded bf16 checkpoint has the official layout and configuration (written
    // by the independent NumPy reference, with `init_device: meta`, `precision: amp_bf16`,
    // `auto_map`, `w_clip_vit`, `tie_word_embeddings`: fields this implementation never uses).
    let src =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny_llada/model-bf16");
    let (cfg, weights) = load_model(&src).unwrap();
    let d = tempfile::tempdir().unwrap();
    save_model(d.path(), &cfg, &weights, DType::BF16, 30_000).unwrap();
    let (a, b) = (load_dir(&src).unwrap(), load_dir(d.path()).unwrap());
    assert_eq!(a.len(), b.len());
    for (n, t) in &a {
        assert_eq!(t.dtype(), DType::BF16);
        assert_eq!(b[n].dtype(), DType::BF16, "{n}");
        assert_eq!(b[n].shape(), t.shape(), "{n}");
        assert_eq!(b[n].to_le_bytes(), t.to_le_bytes(), "{n}");
    }
    let (orig, again) = (
        json(&src.join("config.json")),
        json(&d.path().join("config.json")),
    );
    for (k, v) in &orig {
        assert_eq!(again.get(k), Some(v), "config field {k}");
    }
    // What is added is only the official fields the source lacked.
    for k in again.keys().filter(|k| !orig.contains_key(*k)) {
        assert!(OFFICIAL_FIELDS.contains(&k.as_str()), "added {k}");
    }
    assert_eq!(again["torch_dtype"], "bfloat16");
}

#[test]
fn fields_that_change_the_architecture_are_refused_by_name() {
    for (field, value) in [
        ("alibi", Value::Bool(true)),
        ("block_group_size", Value::from(2)),
        ("layer_norm_with_affine", Value::Bool(false)),
        ("bias_for_layer_norm", Value::Bool(true)),
        ("multi_query_attention", Value::Bool(true)),
    ] {
        let mut c: serde_json::Map<String, Value> =
            match serde_json::to_value(common::small_cfg()).unwrap() {
                Value::Object(m) => m,
                _ => unreachable!(),
            };
        c.insert(field.into(), value);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.json");
        std::fs::write(&p, Value::Object(c).to_string()).unwrap();
        let e = LladaConfig::read(&p).unwrap_err().to_string();
        assert!(e.contains(field), "{field}: {e}");
    }
}

#[test]
fn saved_tokenizer_files_load_and_name_the_special_tokens() {
    let tok = TextTokenizer::tiny().unwrap();
    let d = tempfile::tempdir().unwrap();
    tok.save_pretrained(d.path(), 4096).unwrap();
    // tokenizer.json loads with the tokenizers crate and encodes as the embedded one.
    let back = TextTokenizer::from_file(&d.path().join("tokenizer.json")).unwrap();
    let raw = BpeTokenizer::from_file(&d.path().join("tokenizer.json")).unwrap();
    let text = "In the year 2889, 17 marbles: <|soi|> and [iPAD]?";
    assert_eq!(back.encode(text).unwrap(), tok.encode(text).unwrap());
    assert_eq!(raw.len(), tok.len());
    assert_eq!(
        (back.mask, back.eos, back.bos),
        (tok.mask, tok.eos, tok.bos)
    );
    let cfg = json(&d.path().join("tokenizer_config.json"));
    let map = json(&d.path().join("special_tokens_map.json"));
    assert_eq!(cfg["tokenizer_class"], "PreTrainedTokenizerFast");
    assert_eq!(cfg["model_max_length"], 4096);
    for m in [&cfg, &map] {
        assert_eq!(m["bos_token"], "<|startoftext|>");
        assert_eq!(m["eos_token"], "<|endoftext|>");
        assert_eq!(m["mask_token"], "<|mdm_mask|>");
        let extra: Vec<&str> = m["additional_special_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for t in [
            "<|soi|>",
            "<|eoi|>",
            "<|t2i|>",
            "<|mmu|>",
            "<|eot_id|>",
            "[iPAD]",
        ] {
            assert!(extra.contains(&t), "{t} missing from {extra:?}");
        }
    }
    // Every added token sits at its id.
    let dec = cfg["added_tokens_decoder"].as_object().unwrap();
    assert_eq!(dec.len(), 17);
    for (id, t) in dec {
        let content = t["content"].as_str().unwrap();
        assert_eq!(tok.token_id(content), Some(id.parse::<i64>().unwrap()));
        assert_eq!(t["special"], true);
    }
}
