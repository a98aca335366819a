//! `mmada tokenize` / `mmada detokenize` as a user runs them: an image to MAGVIT-v2 codes and
//! back on the small reference tokenizer (`tests/fixtures/tiny_magvit`), text ids, prompt
//! layouts; and every bad input of the issue gives one clear `error:` line, never a panic.

mod common;

use common::assert_one_line_error;
use common::mmada_cli as mmada;
use mmada_runtime::tensor_io;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
fn vq() -> String {
    root()
        .join("tests/fixtures/tiny_magvit")
        .display()
        .to_string()
}
fn image(name: &str) -> PathBuf {
    root().join("models/tests/fixtures/images").join(name)
}

fn png_size(p: &Path) -> (u32, u32) {
    let b = std::fs::read(p).unwrap();
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n");
    let be = |o: usize| u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    (be(16), be(20))
}

fn tokenize(dir: &Path, input: &Path, out: &str) -> (bool, String, String) {
    mmada(
        &[
            "tokenize",
            "image",
            "--vq",
            &vq(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            out,
            "--resolution",
            "16",
            "--target",
            "cpu",
        ],
        dir,
    )
}

#[test]
fn image_to_codes_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = tokenize(dir.path(), &image("parity_src.png"), "codes.safetensors");
    assert!(ok, "{err}");
    assert!(out.contains("[1, 16]"), "{out}");
    let t = tensor_io::read_safetensors(&dir.path().join("codes.safetensors")).unwrap();
    let codes = &t["codes"];
    assert_eq!(codes.shape().0, [1, 16]);
    assert!(codes.to_i64_vec().iter().all(|&c| (0..8192).contains(&c)));
    let (ok, _, err) = mmada(
        &[
            "detokenize",
            "image",
            "--vq",
            &vq(),
            "--codes",
            "codes.safetensors",
            "--output",
            "out.png",
            "--target",
            "cpu",
        ],
        dir.path(),
    );
    assert!(ok, "{err}");
    assert_eq!(png_size(&dir.path().join("out.png")), (16, 16));
    // A CMYK JPEG is converted to RGB (documented in image_io), so it tokenizes.
    let (ok, _, err) = tokenize(dir.path(), &image("cmyk_adobe.jpg"), "cmyk.safetensors");
    assert!(ok, "CMYK JPEG: {err}");
}

#[test]
fn bad_images_give_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A truncated PNG.
    let full = std::fs::read(image("parity_src.png")).unwrap();
    std::fs::write(d.join("cut.png"), &full[..full.len() / 2]).unwrap();
    assert_one_line_error(tokenize(d, &d.join("cut.png"), "c.safetensors"), "cut.png");
    // A text file named .png.
    std::fs::write(d.join("text.png"), "not an image\n").unwrap();
    assert_one_line_error(
        tokenize(d, &d.join("text.png"), "c.safetensors"),
        "text.png",
    );
    // A 100000×100000 header: refused before anything is allocated.
    assert_one_line_error(
        tokenize(d, &image("bomb_100000.png"), "c.safetensors"),
        "100000x100000",
    );
    // A missing file.
    assert_one_line_error(
        tokenize(d, &d.join("nope.png"), "c.safetensors"),
        "nope.png",
    );
    assert!(!d.join("c.safetensors").exists(), "no output on failure");
}

#[test]
fn bad_codes_give_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write = |name: &str, t: mmada_ir::Tensor| {
        let mut m = indexmap::IndexMap::new();
        m.insert("codes".to_string(), t);
        tensor_io::write_safetensors(&d.join(name), &m).unwrap();
    };
    let detok = |name: &str| {
        mmada(
            &[
                "detokenize",
                "image",
                "--vq",
                &vq(),
                "--codes",
                name,
                "--output",
                "o.png",
                "--target",
                "cpu",
            ],
            d,
        )
    };
    write(
        "short.safetensors",
        mmada_ir::Tensor::from_i64([1, 15], vec![0; 15]).unwrap(),
    );
    assert_one_line_error(detok("short.safetensors"), "a square");
    let mut big = vec![3i64; 16];
    big[5] = 8192;
    write(
        "big.safetensors",
        mmada_ir::Tensor::from_i64([1, 16], big).unwrap(),
    );
    assert_one_line_error(detok("big.safetensors"), "codes[5] = 8192");
    write(
        "float.safetensors",
        mmada_ir::Tensor::from_f32([1, 16], vec![0.0; 16]).unwrap(),
    );
    assert_one_line_error(detok("float.safetensors"), "integer");
    assert!(!d.join("o.png").exists());
}

#[test]
fn text_ids_and_prompt_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tiny = root().join("models/assets/tokenizer/tiny");
    let (ok, out, err) = mmada(
        &[
            "tokenize",
            "text",
            "--tokenizer",
            tiny.to_str().unwrap(),
            "a 7",
        ],
        d,
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "[64,380]");
    // A caption longer than the text budget is truncated as spec §3.2 says: the text block
    // keeps Lt + 1 ids and ends in EOS, right before <|soi|>.
    let long = "seven ".repeat(40);
    let (ok, out, err) = mmada(
        &[
            "tokenize",
            "prompt",
            "--task",
            "t2i",
            "--text",
            &long,
            "--text-len",
            "8",
            "--image-tokens",
            "4",
        ],
        d,
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let ids: Vec<i64> = v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 8 + 4 + 3);
    assert_eq!((ids[0], ids[1], ids[8], ids[9]), (1030, 1024, 1025, 1026));
    assert_eq!(v["key_mask"].as_array().unwrap().len(), 15);
    // A tokenizer.json without MMaDA's special tokens: the tiny one with its added tokens
    // removed, next to a config.json.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tiny.join("tokenizer.json")).unwrap())
            .unwrap();
    let mut stripped = json.clone();
    stripped["added_tokens"] = serde_json::json!([]);
    let model = d.join("model");
    std::fs::create_dir(&model).unwrap();
    std::fs::write(model.join("tokenizer.json"), stripped.to_string()).unwrap();
    let cfg = mmada_models::config::LladaConfig::preset("tiny").unwrap();
    std::fs::write(model.join("config.json"), cfg.to_json()).unwrap();
    assert_one_line_error(
        mmada(
            &[
                "tokenize", "prompt", "--task", "lm", "--model", "model", "--text", "hi",
            ],
            d,
        ),
        "no special token '<|startoftext|>'",
    );
    // mmu without an image.
    assert_one_line_error(
        mmada(&["tokenize", "prompt", "--task", "mmu", "--text", "q"], d),
        "--codes",
    );
}
