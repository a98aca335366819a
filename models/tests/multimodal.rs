//! The multimodal step (t2i, mmu and text rows in one batch) against hand computations of spec
//! §4.2 from its own logits and masks; the rows of the embedded image–text data against the
//! layouts and answers they should hold.

mod common;

use common::small_cfg;

use indexmap::IndexMap;
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::compile::{compile, CompileOptions, PtxCheck};
use mmada_ir::{interp::interpret, DType, Tensor};
use mmada_models::digit_codes::{digit_codes, embedded_digit_codes};
use mmada_models::digits::Digits;
use mmada_models::image_tokenizer::{embedded_vq_digits, ImageTokenizer};
use mmada_models::llada::param_specs;
use mmada_models::loss::RowKind;
use mmada_models::multimodal::MultimodalOptions;
use mmada_models::multimodal::{mixed_row_weights, MixRun, Multimodal};
use mmada_models::multimodal_step::{mixed_loss_graph, MixCoefs, MixShape};
use mmada_models::prompt::Task;
use mmada_models::tokenizer::TextTokenizer;
use mmada_runtime::{open_artifact, Target};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

fn host() -> BackendOptions {
    BackendOptions {
        host: Some(mmada_codegen::HostCpu::native()),
        gpu_archs: vec![],
    }
}

/// `CE = logsumexp(row) − row[y]` in f64.
fn ce(row: &[f32], y: i64) -> f64 {
    let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = row.iter().map(|&x| (x as f64 - m).exp()).sum();
    m + z.ln() - row[y as usize] as f64
}

#[test]
fn mixed_losses_equal_the_spec_formulas() {
    let cfg = small_cfg();
    let v = cfg.rows();
    // Odd sizes: 3 t2i, 2 mmu and 2 text rows; Lt = 5, N = 7, so L = 15.
    let mix = MixShape {
        t2i: 3,
        mmu: 2,
        lm: 2,
        text_len: 5,
        image_tokens: 7,
    };
    let coefs = MixCoefs {
        t2i: 0.7,
        mmu: 0.4,
        lm: 1.3,
        // The mmu rows' masking ratio is drawn from [0.6, 1]; the text rows' from [0, 1].
        mmu_mask_floor: 0.6,
    };
    let (b, l, n) = (mix.rows(), mix.seq(), mix.image_tokens);
    let mut m = mixed_loss_graph(&cfg, mix, coefs).unwrap();
    m.graph.set_output("masked", m.masked).unwrap();
    m.graph.set_output("p", m.p.unwrap()).unwrap();
    m.graph.set_output("logits", m.logits).unwrap();

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(23);
    let mut ins: IndexMap<String, Tensor> = IndexMap::new();
    for p in param_specs(&cfg) {
        let k: usize = p.shape.iter().product();
        let w: Vec<f32> = if p.shape.len() == 1 {
            (0..k).map(|_| rng.random_range(0.8..1.2)).collect()
        } else {
            (0..k).map(|_| rng.random_range(-0.3..0.3)).collect()
        };
        ins.insert(
            p.name.clone(),
            Tensor::from_f32(p.shape.clone(), w).unwrap(),
        );
    }
    let ids: Vec<i64> = (0..b * l).map(|_| rng.random_range(0..37)).collect();
    // t2i rows read no prompt mask; mmu rows have long prompts, text rows short or none.
    let prompt_len = [0usize, 0, 0, 11, 9, 3, 0];
    let prompt: Vec<f64> = (0..b * l)
        .map(|i| ((i % l) < prompt_len[i / l]) as u8 as f64)
        .collect();
    // Key mask: the t2i rows' first positions are padding.
    let pads = [2usize, 0, 4, 0, 0, 0, 0];
    let keys: Vec<f64> = (0..b * l)
        .map(|i| ((i % l) >= pads[i / l]) as u8 as f64)
        .collect();
    let answer_lens = [l - 11, l - 9];
    let kinds = [RowKind::Sft { answer_len: l - 3 }, RowKind::Lm];
    let w = mixed_row_weights(&answer_lens, &kinds, l);
    ins.insert(
        "input_ids".into(),
        Tensor::from_i64([b, l], ids.clone()).unwrap(),
    );
    ins.insert(
        "prompt_mask".into(),
        Tensor::from_f64(DType::Bool, [b, l], &prompt).unwrap(),
    );
    ins.insert(
        "key_mask".into(),
        Tensor::from_f64(DType::Bool, [b, l], &keys).unwrap(),
    );
    ins.insert(
        "row_weight".into(),
        Tensor::from_f64(DType::F32, [4], &w).unwrap(),
    );
    ins.insert(
        "seed".into(),
        Tensor::from_i64(Vec::<usize>::new(), vec![91]).unwrap(),
    );
    ins.insert(
        "offset".into(),
        Tensor::from_i64(Vec::<usize>::new(), vec![3 << 32]).unwrap(),
    );
    let art = compile(
        &m.graph,
        &CompileOptions {
            name: "mixed_loss".into(),
            backend: host(),
            ptx_check: PtxCheck::Skip,
            ..CompileOptions::default()
        },
    )
    .unwrap();
    let mut exe = open_artifact(art, Target::Cpu).unwrap();
    let out = exe.run(&ins).unwrap();
    let masked = out["masked"].to_bool_vec();
    let p: Vec<f64> = out["p"].to_f64_vec();
    assert!(p[..2].iter().all(|&x| x >= 0.6), "mmu p {p:?}");
    let lg = out["logits"].to_f32_vec();
    let ce_at = |r: usize, i: usize| ce(&lg[(r * l + i) * v..(r * l + i + 1) * v], ids[r * l + i]);

    // t2i: masks only image positions (at least one per row); token mean over the masked image
    // positions plus soi and eoi of all t2i rows.
    let img = mix.t2i_image_start()..mix.t2i_image_start() + n;
    let (mut s, mut c) = (0.0, 0.0);
    for r in 0..mix.t2i {
        let row = &masked[r * l..(r + 1) * l];
        assert!(
            row.iter().enumerate().all(|(i, &x)| !x || img.contains(&i)),
            "row {r}: {row:?}"
        );
        assert!(row.iter().any(|&x| x), "row {r} masks nothing");
        for (i, &x) in row.iter().enumerate() {
            if x || i == img.start - 1 || i == l - 1 {
                s += ce_at(r, i);
                c += 1.0;
            }
        }
    }
    let t2i = s / c;
    // mmu and text: Σ_b w_b / p_b Σ_{masked} CE; prompts never masked.
    let mut parts = [0.0f64; 2];
    for k in 0..4 {
        let r = mix.t2i + k;
        let mut sum = 0.0;
        for i in 0..l {
            if masked[r * l + i] {
                assert!(i >= prompt_len[r], "row {r}: prompt position {i} masked");
                sum += ce_at(r, i);
            }
        }
        parts[k / 2] += w[k] * sum / p[k];
    }
    let [mmu, lm] = parts;
    for (name, got, want) in [
        ("loss.t2i", out["loss.t2i"].get_f64(0), t2i),
        ("loss.mmu", out["loss.mmu"].get_f64(0), mmu),
        ("loss.lm", out["loss.lm"].get_f64(0), lm),
        (
            "loss",
            out["loss"].get_f64(0),
            coefs.t2i * t2i + coefs.mmu * mmu + coefs.lm * lm,
        ),
    ] {
        // f32 sums of ~100 terms of size ~4: a relative 1e-5 is far above their rounding.
        assert!(
            (got - want).abs() <= 1e-5 * want.abs(),
            "{name}: {got} vs hand computation {want}"
        );
    }
    // And the compiled step agrees with the reference interpreter.
    let want = interpret(&m.graph, &ins).unwrap();
    for name in ["loss", "loss.t2i", "loss.mmu", "loss.lm"] {
        let (a, e) = (out[name].get_f64(0), want[name].get_f64(0));
        assert!(
            (a - e).abs() <= 1e-5 * e.abs(),
            "{name}: compiled {a} vs interpreter {e}"
        );
    }
    assert_eq!(out["masked"].to_bool_vec(), want["masked"].to_bool_vec());
}

#[test]
fn digit_rows_hold_their_codes_captions_and_answers() {
    let tok = TextTokenizer::tiny().unwrap();
    let (vq_cfg, vq_w) = embedded_vq_digits().unwrap();
    let digits = Digits::embedded().unwrap();
    let codes = digit_codes(&vq_cfg, &vq_w, &digits).unwrap();
    assert_eq!(codes.len(), 5000);
    // The committed codes are what the committed weights give.
    assert!(
        embedded_digit_codes().unwrap() == codes,
        "digit-codes.u16.gz is stale"
    );
    // The batched encoder gives the codes of the one-image tokenizer.
    let mut single =
        ImageTokenizer::new(vq_cfg.clone(), &vq_w, 32, 32, Target::Cpu, host()).unwrap();
    for i in [0usize, 1777, 4999] {
        assert_eq!(
            single.encode(&digits.chw(i)).unwrap().to_i64_vec(),
            codes[i],
            "image {i}"
        );
    }
    let m = MultimodalOptions::default();
    let run = MixRun {
        seq: 128,
        batch: 1,
        seed: 5,
        coef_lm: 1.0,
    };
    let text = mmada_models::data::embedded_rows(&tok, 128).unwrap().rows;
    let mut mm = Multimodal::new(
        &m,
        run,
        TextTokenizer::tiny().unwrap(),
        1344,
        text,
        Default::default(),
        &BTreeMap::new(),
    )
    .unwrap();
    let mix = mm.mix();
    assert_eq!((mix.text_len, mix.image_tokens, mix.seq()), (61, 64, 128));
    let offset = 1041i64;
    let label_of = |c: &[i64]| -> Vec<u8> {
        (0..5000)
            .filter(|&i| codes[i] == c)
            .map(|i| digits.labels[i])
            .collect()
    };
    let words = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    let (mut nulls, mut t2i_rows) = (0, 0);
    for step in 0..60 {
        let (lays, text) = mm.layouts(step).unwrap();
        assert_eq!(text.len(), 1);
        assert_eq!(lays.len(), 6);
        for (row, lay) in lays.iter().enumerate() {
            assert_eq!(lay.len(), 128);
            let img = lay.image.clone().unwrap();
            let c: Vec<i64> = lay.ids[img.clone()].iter().map(|&id| id - offset).collect();
            let labels = label_of(&c);
            assert!(
                !labels.is_empty(),
                "step {step} row {row}: codes of no digit"
            );
            let text_ids: Vec<i64> = lay.ids.iter().copied().filter(|&i| i < offset).collect();
            let text = tok.decode(&text_ids).unwrap();
            match lay.task {
                Task::T2i => {
                    t2i_rows += 1;
                    assert_eq!(img, 63..127);
                    if mm.drops_caption(step, row) {
                        nulls += 1;
                        assert!(text.trim().is_empty(), "null caption holds {text:?}");
                    } else {
                        // Every caption names the digit as a word or a numeral.
                        let d = labels[0] as usize;
                        assert!(
                            text.contains(words[d]) || text.contains(&d.to_string()),
                            "caption {text:?} of a {d}"
                        );
                    }
                }
                Task::Mmu => {
                    assert_eq!(img, 2..66);
                    // The answer (after the assistant header) is the label's, as word, numeral or
                    // sentence; it is all of the response, not prompt.
                    let d = labels[0] as usize;
                    let answer = text.rsplit("assistant").next().unwrap();
                    assert!(
                        answer.contains(words[d]) || answer.contains(&d.to_string()),
                        "answer {answer:?} for a {d} ({text:?})"
                    );
                    let first_answer = lay.prompt_mask.iter().position(|&p| !p).unwrap();
                    assert!(
                        first_answer > 66 && lay.prompt_mask[first_answer..].iter().all(|&p| !p)
                    );
                }
                t => panic!("unexpected {t:?} row"),
            }
        }
    }
    // About 10 % of the t2i rows get the null caption (240 draws: 24 expected, 3σ ≈ 14).
    assert!(
        (10..=40).contains(&nulls),
        "{nulls} null captions of {t2i_rows}"
    );
}
