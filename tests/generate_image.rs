//! Text-to-image sampling (spec §6.2): the mask-count schedule with its clamp, the
//! compounding temperature, the schedules, by hand; one compiled MaskGIT step with guidance
//! against the same step written out here on interpreter logits (guidance over the image ids
//! only, the Gumbel-max categorical sample, log-probability confidences with their noise, the
//! least confident positions re-masked, the null prompt's image part mirroring); and the
//! committed digit classifier's held-out accuracy.

mod common;

use indexmap::IndexMap;
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::HostCpu;
use mmada_ir::{interp, philox, DType, RngDist, Shape, Tensor};
use mmada_models::checkpoint::init_weights;
use mmada_models::config::LladaConfig;
use mmada_models::digit_classifier::{features, DigitClassifier};
use mmada_models::digits::Digits;
use mmada_models::image_sampler::{
    mask_counts, temperatures, ImageOptions, ImageSampler, Schedule, TemperatureRule,
};
use mmada_models::llada::forward_graph;
use mmada_models::prompt::{Image, Prompter};
use mmada_models::sampler_step::IMAGE_STREAMS;
use mmada_models::tokenizer::TextTokenizer;
use mmada_models::vocab::UnifiedVocab;
use mmada_runtime::Target;

#[test]
fn mask_counts_and_temperatures_by_hand() {
    // Linear, 10 positions, 4 steps: ⌊10·(0.75, 0.5, 0.25, 1e-6)⌋ = 7, 5, 2, 0 → the last
    // clamped up to 1.
    assert_eq!(mask_counts(10, 4, Schedule::Linear), vec![7, 5, 2, 1]);
    // Cosine, 64 positions, 15 steps: ⌊64·cos(π/30)⌋ = 63 (≤ 64 − 1), …, γ(1) = 0 → 1.
    let c = mask_counts(64, 15, Schedule::Cosine);
    assert_eq!((c[0], c[14]), (63, 1));
    assert!(c.windows(2).all(|w| w[1] < w[0] || w[1] == 1), "{c:?}");
    // The upper clamp: cosine over 2 positions wants ⌊2·cos(π/4)⌋ = 1 then 0 → 1, 1; over 1
    // position the count can only be 1 (min(unknown − 1, ·) = 0, then max(1, ·)).
    assert_eq!(mask_counts(2, 2, Schedule::Cosine), vec![1, 1]);
    assert_eq!(mask_counts(1, 3, Schedule::Cosine), vec![1, 1, 1]);
    // 100 positions, one step: γ(1) = 0 → 1; pow 2 over 4 steps: ⌊8·(1 − r²)⌋ = 7, 6, 3, 0.
    assert_eq!(mask_counts(100, 1, Schedule::Cosine), vec![1]);
    assert_eq!(mask_counts(8, 4, Schedule::Pow(2.0)), vec![7, 6, 3, 1]);
    assert!((Schedule::Sigmoid.gamma(0.0) - 1.0).abs() < 1e-12);
    assert_eq!(Schedule::Sigmoid.gamma(1.0), 1e-6);
    assert_eq!(Schedule::parse("pow0.5").unwrap(), Schedule::Pow(0.5));
    assert!(Schedule::parse("pow-1").is_err() && Schedule::parse("cos").is_err());
    // The reference's compounding temperature: 1·0.75, ·0.5, ·0.25, ·0; MaskGIT's: 1 − ratio.
    let t = temperatures(1.0, 4, TemperatureRule::Compounding);
    assert_eq!(t, vec![0.75, 0.375, 0.09375, 0.0]);
    let m = temperatures(2.0, 4, TemperatureRule::MaskGit);
    assert_eq!(m, vec![1.5, 1.0, 0.5, 0.0]);
}

#[test]
fn committed_digit_classifier_recognises_held_out_digits() {
    let d = Digits::embedded().unwrap();
    let c = DigitClassifier::embedded().unwrap();
    let test = d.indices(true);
    let right = test
        .iter()
        .filter(|&&i| c.predict(&features(&d.chw(i)).unwrap()) == d.labels[i] as usize)
        .count();
    let acc = right as f64 / test.len() as f64;
    assert!(acc >= 0.9, "held-out accuracy {acc}");
}

fn model() -> (LladaConfig, IndexMap<String, Tensor>) {
    let cfg = common::small_tiny_config();
    let mut w = init_weights(&cfg, 9, 0, 0.02);
    // A head that scores text ids far above image ids: guidance and sampling must still stay
    // inside the image ids.
    let head = "model.transformer.ff_out.weight";
    let d = cfg.d_model;
    let mut h: Vec<f32> = w[head].to_f32_vec().iter().map(|v| v * 40.0).collect();
    for row in 0..1041 {
        for j in 0..d {
            h[row * d + j] *= 10.0;
        }
    }
    w.insert(
        head.into(),
        Tensor::from_f32(w[head].shape().clone(), h).unwrap(),
    );
    (cfg, w)
}

#[test]
fn one_guided_step_matches_the_step_written_out_on_interpreter_logits() {
    let (cfg, w) = model();
    let tok = TextTokenizer::tiny().unwrap();
    let vocab = UnifiedVocab::tiny(&tok).unwrap();
    let n = 9;
    let p = Prompter::new(&tok, &vocab, 12).unwrap();
    let prompts = vec![
        p.t2i("the digit 3", Image::Masked(n)).unwrap(),
        p.t2i("a white 8 on black", Image::Masked(n)).unwrap(),
    ];
    let null = p.t2i_null(Image::Masked(n)).unwrap();
    let (k, wscale) = (3usize, 2.0f32);
    let opts = ImageOptions {
        timesteps: k,
        guidance_scale: wscale,
        temperature: 1.0,
        seed: 11,
        ..ImageOptions::default()
    };
    let host = BackendOptions {
        host: Some(HostCpu::native()),
        gpu_archs: vec![],
    };
    let (off, kk) = (vocab.image_offset, vocab.codebook_size);
    let mut s = ImageSampler::new(
        cfg.clone(),
        &w,
        2,
        &prompts[0],
        (off, kk),
        opts,
        Target::Cpu,
        host,
    )
    .unwrap();
    // Run the first step only (a one-step schedule would clamp differently): compare samples.
    let codes = s.generate(&prompts, &null, &mut |_, _| {}).unwrap();
    assert_eq!(codes.len(), 2);
    assert!(codes.iter().flatten().all(|&c| (0..kk as i64).contains(&c)));
    // The reference for step 1 from the all-masked state: interpreter logits of [cond; null].
    let l = prompts[0].len();
    let img = prompts[0].image.clone().unwrap();
    let g = forward_graph(&cfg, 4, l, true).unwrap();
    let mut ids = Vec::new();
    let mut keys = Vec::new();
    for lay in [&prompts[0], &prompts[1], &null, &null] {
        ids.extend_from_slice(&lay.ids);
        keys.extend(lay.key_mask.iter().map(|&b| f64::from(u8::from(b))));
    }
    let mut ins = w.clone();
    ins.insert(
        "input_ids".into(),
        Tensor::from_i64(Shape(vec![4, l]), ids).unwrap(),
    );
    ins.insert(
        "attention_mask".into(),
        Tensor::from_f64(DType::Bool, Shape(vec![4, l]), &keys).unwrap(),
    );
    let lg = interp::interpret(&g, &ins).unwrap()["logits"].to_f32_vec();
    let v = cfg.rows();
    let mut samples = vec![0i64; 2 * n];
    let mut margin = f64::INFINITY;
    for b in 0..2 {
        for (j, pos) in img.clone().enumerate() {
            let mut best = (f32::NEG_INFINITY, 0usize, f32::NEG_INFINITY);
            for c in 0..kk {
                let at = |row: usize| lg[(row * l + pos) * v + off as usize + c];
                let guided = (1.0 + wscale) * at(b) - wscale * at(2 + b);
                let i = ((b * n + j) * kk + c) as u64;
                let z = guided + philox::sample(RngDist::Gumbel, 11, 0, IMAGE_STREAMS.0, i);
                if z > best.0 {
                    best = (z, c, best.0);
                } else if z > best.2 {
                    best.2 = z;
                }
            }
            margin = margin.min((best.0 - best.2) as f64);
            samples[b * n + j] = best.1 as i64;
        }
    }
    assert!(margin > 1e-3, "closest sample decision {margin:e}");
    // The sampler after one step: rerun with one step and compare its samples.
    let opts1 = ImageOptions {
        timesteps: 1,
        ..opts
    };
    let host = BackendOptions {
        host: Some(HostCpu::native()),
        gpu_archs: vec![],
    };
    let mut s1 =
        ImageSampler::new(cfg, &w, 2, &prompts[0], (off, kk), opts1, Target::Cpu, host).unwrap();
    let got = s1.generate(&prompts, &null, &mut |_, _| {}).unwrap();
    assert_eq!(got.concat(), samples);
    // One step leaves mask_counts(9, 1) = 1 position masked per row, the least confident by
    // log p[ŝ] (the temperature after the step is 0); the others hold ŝ as image ids; the null
    // rows' image part mirrors it.
    let (x, xn) = s1.sequences().unwrap();
    let xn = xn.unwrap();
    for b in 0..2 {
        let mut worst = (f64::INFINITY, 0usize);
        for (j, pos) in img.clone().enumerate() {
            let guided: Vec<f64> = (0..kk)
                .map(|c| {
                    let at = |row: usize| lg[(row * l + pos) * v + off as usize + c] as f64;
                    (1.0 + wscale as f64) * at(b) - wscale as f64 * at(2 + b)
                })
                .collect();
            let m = guided.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + guided.iter().map(|g| (g - m).exp()).sum::<f64>().ln();
            let lp = guided[samples[b * n + j] as usize] - lse;
            if lp < worst.0 {
                worst = (lp, j);
            }
        }
        for (j, pos) in img.clone().enumerate() {
            let want = if j == worst.1 {
                cfg_mask()
            } else {
                samples[b * n + j] + off
            };
            assert_eq!(x[b * l + pos], want, "row {b} image position {j}");
            assert_eq!(xn[b * l + pos], want, "null row {b} image position {j}");
        }
        assert_eq!(&x[b * l..b * l + img.start], &prompts[b].ids[..img.start]);
        assert_eq!(&xn[b * l..b * l + img.start], &null.ids[..img.start]);
    }
}

fn cfg_mask() -> i64 {
    LladaConfig::preset("tiny").unwrap().mask_token_id
}

#[test]
fn cli_paints_and_captions_and_refuses_bad_options() {
    use common::{assert_one_line_error, mmada_cli};
    let cfg = LladaConfig::preset("tiny").unwrap();
    let w = init_weights(&cfg, 3, 0, 0.02);
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    std::fs::create_dir_all(&m).unwrap();
    mmada_models::checkpoint::save_model(&m, &cfg, &w, DType::F32, u64::MAX).unwrap();
    let vq = format!("{}/models/assets/vq-digits", env!("CARGO_MANIFEST_DIR"));
    let ms = m.to_str().unwrap();
    let png = dir.path().join("out.png");
    let pngs = png.to_str().unwrap();
    let paint = [
        "generate",
        "image",
        "--model",
        ms,
        "--prompt",
        "the digit 7",
    ];
    assert_one_line_error(
        mmada_cli(&[&paint[..], &["-o", pngs]].concat(), dir.path()),
        "--vq DIR is required",
    );
    let steps = ["--timesteps", "4"];
    let (ok, out, err) = mmada_cli(
        &[&paint[..], &steps, &["--vq", &vq, "-o", pngs]].concat(),
        dir.path(),
    );
    assert!(ok, "{err}");
    assert!(out.contains("64 codes"), "{out}");
    let img = image_size(&png);
    assert_eq!(img, (32, 32));
    let (ok, _out, err) = mmada_cli(
        &[
            "generate",
            "caption",
            "--model",
            ms,
            "--vq",
            &vq,
            "--image",
            pngs,
            "--gen-length",
            "8",
            "--steps",
            "4",
            "--block-length",
            "8",
        ],
        dir.path(),
    );
    assert!(ok, "{err}");
    assert!(err.contains("tokens/s"), "{err}");
    for (bad, needle) in [
        ("--guidance-scale=-1", "--guidance-scale"),
        ("--schedule=cos", "--schedule cos"),
        ("--temperature=nan", "--temperature"),
        ("--timesteps=0", "--timesteps"),
    ] {
        assert_one_line_error(
            mmada_cli(
                &[&paint[..], &["--vq", &vq, "-o", pngs, bad]].concat(),
                dir.path(),
            ),
            needle,
        );
    }
    assert_one_line_error(
        mmada_cli(
            &["generate", "caption", "--model", ms, "--image", pngs],
            dir.path(),
        ),
        "--vq DIR is required",
    );
}

#[test]
fn caption_of_a_trained_layout_model_decodes_the_training_prompt_in_blocks() {
    // With `--text-len` (or a checkpoint of `mmada train --multimodal`), `generate caption`
    // prompts as the training rows do (through the assistant header) and fills the rest of the
    // text block in blocks of 4, one position per step: the library sampler on
    // `Prompter::mmu_prompt` gives the same answer.
    use common::mmada_cli;
    use mmada_models::image_io::{load_rgb, preprocess, Fit};
    use mmada_models::image_tokenizer::{load_magvit, ImageTokenizer};
    use mmada_models::text_sampler::{TextOptions, TextSampler};
    let cfg = LladaConfig::preset("tiny").unwrap();
    let mut w = init_weights(&cfg, 3, 0, 0.02);
    // A sharper head, so the greedy answer is not the same filler token everywhere.
    let head = "model.transformer.ff_out.weight";
    let h = w[head].to_f32_vec().iter().map(|v| v * 40.0).collect();
    w.insert(
        head.into(),
        Tensor::from_f32(w[head].shape().clone(), h).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    std::fs::create_dir_all(&m).unwrap();
    mmada_models::checkpoint::save_model(&m, &cfg, &w, DType::F32, u64::MAX).unwrap();
    let vq = format!("{}/models/assets/vq-digits", env!("CARGO_MANIFEST_DIR"));
    // A held-out digit as the image.
    let digits = Digits::embedded().unwrap();
    let i = digits.indices(true)[3];
    let img = mmada_models::image_io::to_rgb8(&digits.chw(i), 32, 32).unwrap();
    let png = dir.path().join("d.png");
    mmada_models::image_io::save_png(&img, &png).unwrap();
    let question = "Which number is shown?";
    let (ok, out, err) = mmada_cli(
        &[
            "generate",
            "caption",
            "--model",
            m.to_str().unwrap(),
            "--vq",
            &vq,
            "--image",
            png.to_str().unwrap(),
            "--question",
            question,
            "--text-len",
            "43",
        ],
        dir.path(),
    );
    assert!(ok, "{err}");
    let (vcfg, vw) = load_magvit(std::path::Path::new(&vq)).unwrap();
    let host = BackendOptions {
        host: Some(HostCpu::native()),
        gpu_archs: vec![],
    };
    let mut tk = ImageTokenizer::new(vcfg, &vw, 32, 32, Target::Cpu, host.clone()).unwrap();
    let chw = preprocess(
        &load_rgb(&png, &Default::default()).unwrap(),
        32,
        Fit::ResizeCrop,
    )
    .unwrap();
    let codes = tk.encode(&chw).unwrap().to_i64_vec();
    let (tok, vocab) = UnifiedVocab::for_checkpoint(&m).unwrap();
    let (ids, room) = Prompter::new(&tok, &vocab, 43)
        .unwrap()
        .mmu_prompt(&codes, question)
        .unwrap();
    let gen = room / 4 * 4;
    let opts = TextOptions {
        gen_length: gen,
        steps: gen,
        block_length: 4,
        early_exit: Some(vocab.ids.eot_id),
        ..TextOptions::default()
    };
    let mut s = TextSampler::new(cfg, &w, 1, ids.len(), opts, Target::Cpu, host).unwrap();
    let got = s.generate(&[ids], &mut |_, _| {}).unwrap();
    let text: Vec<i64> = got.ids[0]
        .iter()
        .copied()
        .filter(|&t| t >= 0 && (t as usize) < tok.len() && t != tok.mask)
        .collect();
    let want = tok.decode(&text).unwrap().trim().to_string();
    assert!(!want.is_empty());
    assert_eq!(out.trim_end_matches('\n'), want, "{err}");
    assert!(err.contains(&format!("in {gen} steps")), "{err}");
}

fn image_size(p: &std::path::Path) -> (u32, u32) {
    let img = mmada_models::image_io::load_rgb(p, &Default::default()).unwrap();
    (img.width(), img.height())
}
