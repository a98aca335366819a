//! CLIP's towers (`mmada_models::clip`) against the independent float64 NumPy reference
//! `scripts/reference/clip_reference.py` on the tiny random CLIP of `tests/fixtures/tiny_clip`
//! (which the script also checked against transformers 4.46.0's CLIPModel: 2.8e-7 on the unit
//! embeddings), and the CLIP reward end to end (tokenizer, preprocessing, towers, score).
//!
//! Tolerances: the embeddings are unit vectors computed in f32 through 2 layers of width
//! ≤ 48, so each entry's error is a few f32 ulps of O(1) sums (1.7e-7 seen): 2e-6 absolute.
//! The logits are exp(2.6592) = 14.3 times a cosine, 2e-5 (1.5e-6 seen); the reward is 10
//! times a cosine, 2e-5.

use indexmap::IndexMap;
use mmada_codegen::compile::{compile, CompileOptions, PtxCheck};
use mmada_ir::{Graph, Tensor};
use mmada_models::clip::{image_graph, text_graph, ClipConfig, Tower};
use mmada_models::clip_model::{ClipModel, OPENAI_MEAN, OPENAI_STD};
use mmada_models::reward::clip::ClipReward;
use mmada_models::reward::{Completion, Reward, Sample};
use mmada_runtime::tensor_io::read_safetensors;
use mmada_runtime::{open_artifact, Target};
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_clip")
}

fn read(name: &str) -> IndexMap<String, Tensor> {
    read_safetensors(&fixture().join(name)).unwrap()
}

fn config() -> ClipConfig {
    let text = std::fs::read_to_string(fixture().join("config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Runs `g` on the CPU with the fixture's weights of `tower` and `input`.
fn run(g: &Graph, cfg: &ClipConfig, tower: Tower, input: (&str, Tensor), out: &str) -> Vec<f32> {
    let art = compile(
        g,
        &CompileOptions {
            name: "clip-test".into(),
            ptx_check: PtxCheck::Skip,
            ..CompileOptions::default()
        },
    )
    .unwrap();
    let mut exe = open_artifact(art, Target::Cpu).unwrap();
    let w = read("model.safetensors");
    for (n, _) in cfg.param_specs(tower) {
        exe.set_input(&n, &w[&n]).unwrap();
    }
    let mut ins = IndexMap::new();
    ins.insert(input.0.to_string(), input.1);
    exe.run(&ins).unwrap()[out].to_f32_vec()
}

fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let worst = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0.0, f64::max);

    assert!(worst <= tol, "{what}: max |error| {worst:.3e} > {tol:e}");
}

#[test]
fn towers_match_the_numpy_reference() {
    let cfg = config();
    let ins = read("inputs.safetensors");
    let want = read("outputs.safetensors");
    let img = run(
        &image_graph(&cfg, 2).unwrap(),
        &cfg,
        Tower::Vision,
        ("pixel_values", ins["pixel_values"].clone()),
        "image_embeds",
    );
    assert_close(
        &img,
        &want["image_embeds"].to_f64_vec(),
        2e-6,
        "image_embeds",
    );
    let txt = run(
        &text_graph(&cfg, 4).unwrap(),
        &cfg,
        Tower::Text,
        ("input_ids", ins["input_ids"].clone()),
        "text_embeds",
    );
    assert_close(&txt, &want["text_embeds"].to_f64_vec(), 2e-6, "text_embeds");

    // logits_per_image = exp(logit_scale) · image · textᵀ.
    let scale = (read("model.safetensors")["logit_scale"].to_f64_vec()[0]).exp();
    let p = cfg.projection_dim;
    let logits: Vec<f32> = (0..2)
        .flat_map(|i| {
            let (img, txt) = (&img, &txt);
            (0..4).map(move |j| {
                let c: f64 = (0..p)
                    .map(|k| img[i * p + k] as f64 * txt[j * p + k] as f64)
                    .sum();
                (scale * c) as f32
            })
        })
        .collect();
    assert_close(
        &logits,
        &want["logits_per_image"].to_f64_vec(),
        2e-5,
        "logits_per_image",
    );

    // The legacy rule (eos_token_id 2): pool at the first largest id. Row 3 holds id 63
    // before its end id 62, so it pools elsewhere and differs from the new rule.
    let mut legacy = cfg.clone();
    legacy.text_config.eos_token_id = 2;
    let old = run(
        &text_graph(&legacy, 4).unwrap(),
        &legacy,
        Tower::Text,
        ("input_ids", ins["input_ids"].clone()),
        "text_embeds",
    );
    let want_old = want["text_embeds_legacy"].to_f64_vec();
    assert_close(&old, &want_old, 2e-6, "text_embeds (legacy eos 2)");
    let row3 = 3 * p..4 * p;
    let moved = old[row3.clone()]
        .iter()
        .zip(&txt[row3])
        .any(|(a, b)| (a - b).abs() > 1e-3);
    assert!(moved, "the legacy rule must pool row 3 at another position");
}

/// `reward.json`: the texts, their ids and the reward of each (image, text) pair.
struct RewardCase {
    texts: Vec<String>,
    text_ids: Vec<Vec<i64>>,
    reward: Vec<Vec<f64>>,
}

fn reward_case() -> RewardCase {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("reward.json")).unwrap())
            .unwrap();
    let rows = |k: &str| v[k].as_array().unwrap().clone();
    RewardCase {
        texts: rows("texts")
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect(),
        text_ids: rows("text_ids")
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_i64().unwrap())
                    .collect()
            })
            .collect(),
        reward: rows("reward")
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            })
            .collect(),
    }
}

#[test]
fn the_reward_of_images_and_captions_matches_the_reference() {
    let case = reward_case();
    let model = ClipModel::open(&fixture()).unwrap();
    for (text, ids) in case.texts.iter().zip(&case.text_ids) {
        let mut want = ids.clone();
        want.resize(12, 0);
        assert_eq!(model.text_ids(text).unwrap(), want, "ids of '{text}'");
    }
    // Longer than the 12 positions: cut, keeping the end id.
    let long = vec!["a"; 15].join(" ");
    let mut want = vec![61];
    want.extend([1; 10]);
    want.push(62);
    assert_eq!(model.text_ids(&long).unwrap(), want);
    let images = read("reward_inputs.safetensors")["images"].to_f32_vec();
    let r = ClipReward::new(model);
    let plane = 3 * 16 * 16;
    // Each text twice, so the second score comes from the cached text embedding.
    for _ in 0..2 {
        for (i, img) in images.chunks(plane).enumerate() {
            for (j, text) in case.texts.iter().enumerate() {
                let got = r
                    .score(&Sample {
                        prompt: text,
                        target: "",
                        completion: Completion::Image(img),
                        image: None,
                    })
                    .unwrap();
                let want = case.reward[i][j];
                assert!(
                    (got - want).abs() < 2e-5,
                    "image {i}, '{text}': reward {got} vs {want}"
                );
            }
        }
    }
    let e = r
        .score(&Sample {
            prompt: "a",
            target: "",
            completion: Completion::Text("a"),
            image: None,
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("scores images"), "{e}");
}

#[test]
fn images_are_resized_and_normalised_as_the_processor_does() {
    let model = ClipModel::open(&fixture()).unwrap();
    // A flat 32 px image resizes to flat 16 px: every value is (byte/255 − mean)/std.
    let v = 0.25f32;
    let px = model.pixel_values(&vec![v; 3 * 32 * 32]).unwrap();
    assert_eq!(px.len(), 3 * 16 * 16);
    let byte = (((v + 1.0) / 2.0) * 255.0).floor();
    for c in 0..3 {
        let want = (byte / 255.0 - OPENAI_MEAN[c]) / OPENAI_STD[c];
        for &x in &px[c * 256..(c + 1) * 256] {
            assert!((x - want).abs() < 1e-5, "channel {c}: {x} vs {want}");
        }
    }
    let e = model
        .pixel_values(&[0.0; 3 * 10 * 11])
        .unwrap_err()
        .to_string();
    assert!(e.contains("square RGB"), "{e}");
}

/// A copy of the fixture with `edit` applied (the copy is deleted when it is dropped).
fn edited(edit: impl Fn(&Path)) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture().join(f), d.path().join(f)).unwrap();
    }
    edit(d.path());
    d
}

/// A copy of the fixture with `edit` applied, opened: "opened" or the error.
fn open_edited(edit: impl Fn(&Path)) -> String {
    let d = edited(edit);
    match ClipModel::open(d.path()) {
        Ok(_) => "opened".into(),
        Err(e) => e.to_string(),
    }
}

fn write_preprocessor(d: &Path, v: serde_json::Value) {
    std::fs::write(d.join("preprocessor_config.json"), v.to_string()).unwrap();
}

/// `preprocessor_config.json`: a shortest edge of 20 and a crop of 16 take the central 16 px
/// (offset ⌊(20 − 16)/2⌋ = 2) of the 20 px resize, normalised with the file's mean and std;
/// steps switched off, another crop size or rescale factor are refused by name.
#[test]
fn the_processor_config_sets_the_resize_crop_and_normalisation() {
    use mmada_models::image_io::{preprocess, to_rgb8, Fit};
    let d = edited(|d| {
        write_preprocessor(
            d,
            serde_json::json!({"size": {"shortest_edge": 20}, "crop_size": {"height": 16,
            "width": 16}, "image_mean": [0.5, 0.4, 0.3], "image_std": [0.25, 0.5, 1.0],
            "rescale_factor": 1.0 / 255.0, "do_resize": true}),
        )
    });
    let model = ClipModel::open(d.path()).unwrap();
    let chw: Vec<f32> = (0..3 * 32 * 32)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let got = model.pixel_values(&chw).unwrap();
    let big = preprocess(&to_rgb8(&chw, 32, 32).unwrap(), 20, Fit::ResizeCrop).unwrap();
    let (mean, std) = ([0.5f32, 0.4, 0.3], [0.25f32, 0.5, 1.0]);
    for c in 0..3 {
        for r in 0..16 {
            for x in 0..16 {
                let v = big[(c * 20 + r + 2) * 20 + x + 2];
                let want = ((v + 1.0) / 2.0 - mean[c]) / std[c];
                let g = got[(c * 16 + r) * 16 + x];
                assert!((g - want).abs() < 1e-6, "[{c}, {r}, {x}]: {g} vs {want}");
            }
        }
    }
    for (v, needle) in [
        (
            serde_json::json!({"do_center_crop": false}),
            "do_center_crop",
        ),
        (serde_json::json!({"crop_size": 15}), "crop_size"),
        (
            serde_json::json!({"size": {"shortest_edge": 8}}),
            "field 'size'",
        ),
        (serde_json::json!({"rescale_factor": 0.5}), "rescale_factor"),
        (serde_json::json!({"image_std": [1, 0, 1]}), "image_std"),
    ] {
        let e = open_edited(|d| write_preprocessor(d, v.clone()));
        assert!(e.contains(needle), "{v}: {e}");
    }
}

/// NaN weights make a NaN reward (which the trainer drops and counts), not a silent 0.
#[test]
fn a_nan_cosine_is_a_nan_reward() {
    let d = edited(|d| {
        let mut w = read_safetensors(&d.join("model.safetensors")).unwrap();
        let n = "visual_projection.weight";
        let t = &w[n];
        let nan = Tensor::from_f32(t.shape().clone(), vec![f32::NAN; t.numel()]).unwrap();
        w.insert(n.into(), nan);
        mmada_runtime::tensor_io::write_safetensors(&d.join("model.safetensors"), &w).unwrap();
    });
    let r = ClipReward::new(ClipModel::open(d.path()).unwrap());
    let img = vec![0.0f32; 3 * 16 * 16];
    let v = r
        .score(&Sample {
            prompt: "a picture of the digit 7",
            target: "",
            completion: Completion::Image(&img),
            image: None,
        })
        .unwrap();
    assert!(v.is_nan(), "{v}");
}

/// An edit of a copy's `config.json`.
fn config_edit(f: impl Fn(&mut serde_json::Value)) -> impl Fn(&Path) {
    move |d: &Path| {
        let p = d.join("config.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&p, v.to_string()).unwrap();
    }
}

#[test]
fn bad_directories_give_clear_errors() {
    assert_eq!(open_edited(|_| {}), "opened");
    let e = open_edited(|d| std::fs::remove_file(d.join("tokenizer.json")).unwrap());
    assert!(e.contains("no tokenizer.json"), "{e}");
    let e = open_edited(|d| std::fs::remove_file(d.join("model.safetensors")).unwrap());
    assert!(e.contains("no model.safetensors"), "{e}");
    let e = open_edited(config_edit(|v| {
        v["vision_config"]["hidden_act"] = "relu".into()
    }));
    assert!(
        e.contains("vision_config.hidden_act") && e.contains("relu"),
        "{e}"
    );
    let e = open_edited(config_edit(|v| {
        v["text_config"]["num_attention_heads"] = 5.into()
    }));
    assert!(e.contains("5 heads do not divide hidden_size 32"), "{e}");
    // A wider projection than the weights have: the tensor is named with both shapes.
    let e = open_edited(config_edit(|v| {
        v["text_config"]["pad_token_id"] = 64.into()
    }));
    assert!(
        e.contains("pad_token_id") && e.contains("outside the vocabulary"),
        "{e}"
    );
    let e = open_edited(config_edit(|v| {
        v["text_config_dict"] = serde_json::json!({"hidden_act": "gelu"})
    }));
    assert!(e.contains("'text_config_dict'"), "{e}");
    let e = open_edited(config_edit(|v| {
        v["vision_config"]["image_size"] = (1u64 << 40).into();
        v["vision_config"]["patch_size"] = 1.into();
    }));
    assert!(e.contains("vision_config.image_size"), "{e}");
    let e = open_edited(config_edit(|v| v["projection_dim"] = 17.into()));
    assert!(
        e.contains("text_projection.weight") && e.contains("[17, 32]"),
        "{e}"
    );
    let e = open_edited(|d| {
        let mut w = read_safetensors(&d.join("model.safetensors")).unwrap();
        w.shift_remove("vision_model.post_layernorm.bias");
        w.insert(
            "extra.weight".into(),
            Tensor::from_f32([1], vec![0.0]).unwrap(),
        );
        mmada_runtime::tensor_io::write_safetensors(&d.join("model.safetensors"), &w).unwrap();
    });
    assert!(
        e.contains("vision_model.post_layernorm.bias") && e.contains("missing"),
        "{e}"
    );
}

/// transformers' default `CLIPConfig()` is OpenAI's ViT-B/32: its graphs build, and their
/// parameters (plus `logit_scale`) are the 397 tensors and 151,277,313 values that
/// `CLIPModel(CLIPConfig())` has in transformers 4.46.0.
#[test]
fn the_default_config_is_vit_b32_with_its_parameter_count() {
    let cfg: ClipConfig = serde_json::from_str("{}").unwrap();
    let specs: Vec<_> = [Tower::Text, Tower::Vision]
        .iter()
        .flat_map(|&t| cfg.param_specs(t))
        .collect();
    let values: usize = specs.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    assert_eq!((specs.len() + 1, values + 1), (398, 151_277_313));
    let img = image_graph(&cfg, 1).unwrap();
    let txt = text_graph(&cfg, 1).unwrap();
    assert_eq!(
        img.node(img.outputs()[0].1).shape.0,
        [1, 512],
        "image_embeds"
    );
    assert_eq!(
        txt.node(txt.outputs()[0].1).shape.0,
        [1, 512],
        "text_embeds"
    );
}

/// `--reward caption --clip DIR`: correctness plus 0.1·CLIP(image, answer), the image being
/// the prompt's; each pair's CLIP part is the reference's, each correctness the caption rule's.
#[test]
fn the_caption_reward_adds_the_clip_bonus_of_the_prompt_image() {
    use mmada_models::reward::caption::CaptionReward;
    let case = reward_case();
    let r = CaptionReward::new(Some(ClipReward::new(ClipModel::open(&fixture()).unwrap())));
    let images = read("reward_inputs.safetensors")["images"].to_f32_vec();
    // "…digit 7" and "…SEVEN" name 7, "…a three" does not.
    let correct = [1.0, 1.0, 0.0];
    for (i, img) in images.chunks(3 * 16 * 16).enumerate() {
        for (j, text) in case.texts.iter().enumerate() {
            let got = r
                .score(&Sample {
                    prompt: "What digit is this?",
                    target: "7",
                    completion: Completion::Text(text),
                    image: Some(img),
                })
                .unwrap();
            let want = correct[j] + case.reward[i][j];
            assert!(
                (got - want).abs() < 2e-5,
                "image {i}, '{text}': {got} vs {want}"
            );
        }
    }
    let e = r
        .score(&Sample {
            prompt: "What digit is this?",
            target: "7",
            completion: Completion::Text("7"),
            image: None,
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs the prompt's image"), "{e}");
    let e = mmada_models::reward::by_name("math", Some(&fixture()))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("--clip is read by --reward clip and --reward caption"),
        "{e}"
    );
}
