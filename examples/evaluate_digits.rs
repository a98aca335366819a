//! Judges the tiny multimodal model on the embedded digits (issue 11, acceptance 3):
//!
//! `cargo run --release --example evaluate_digits -- MODEL_DIR [GRID.png] [SAMPLES_PER_CLASS]`
//!
//! - text to image: "the digit c" for every class c, `SAMPLES_PER_CLASS` seeds each (default
//!   5), 15 MaskGIT steps, guidance 3.5; each decoded image is classified by the committed
//!   digit classifier; prints the fraction recognised as their prompt's digit and writes a
//!   grid (one row per class) to GRID.png;
//! - captions: ten held-out digits of each class, "What digit is this?", greedy, decoded as
//!   `mmada generate caption` does by default (blocks of 4 positions, one per step, the answer
//!   room of the training rows); prints the fraction of answers that name the image's digit,
//!   and some of the wrong answers.
//!
//! Environment: `EVAL_CAPTION` (t2i prompt, `{}` = the digit; default "the digit {}"),
//! `EVAL_GUIDANCE` (3.5), `EVAL_TEMPERATURE` (1), `EVAL_TIMESTEPS` (15), `EVAL_SPLIT=train` (caption training images instead of held-out ones),
//! `EVAL_GEN` (answer length; default the rest of the text block in whole blocks), `EVAL_BLOCK`
//! (block length; default 4), `EVAL_QUESTION` (default
//! "What digit is this?"), `EVAL_TEXT_LEN` (the text budget; default the training value from
//! the checkpoint's trainer_state.json, seq − 67 for the built-in tokenizer's 64 codes).
//!
//! The image tokenizer is the committed vq-digits (the one `mmada train --multimodal` uses).

use mmada_codegen::backend::BackendOptions;
use mmada_codegen::HostCpu;
use mmada_ir::Tensor;
use mmada_models::checkpoint::load_model;
use mmada_models::digit_classifier::{features, named_digit, DigitClassifier};
use mmada_models::digit_codes::embedded_digit_codes;
use mmada_models::digits::{Digits, SIDE};
use mmada_models::image_io;
use mmada_models::image_sampler::{ImageOptions, ImageSampler};
use mmada_models::image_tokenizer::{embedded_vq_digits, ImageTokenizer};
use mmada_models::prompt::{Image, Prompter};
use mmada_models::text_sampler::{TextOptions, TextSampler};
use mmada_models::vocab::UnifiedVocab;
use mmada_runtime::Target;
use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(
        args.get(1)
            .ok_or("usage: evaluate_digits MODEL_DIR [GRID.png] [N]")?,
    );
    let grid_path = args.get(2).map(PathBuf::from);
    let per_class: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let host = BackendOptions {
        host: Some(HostCpu::native()),
        gpu_archs: vec![],
    };
    let (cfg, weights) = load_model(&dir)?;
    let (tok, vocab) = UnifiedVocab::for_checkpoint(&dir)?;
    let (vcfg, vw) = embedded_vq_digits()?;
    let mut tk = ImageTokenizer::new(vcfg, &vw, SIDE, SIDE, Target::Cpu, host.clone())?;
    let n = tk.num_codes();
    let clf = DigitClassifier::embedded()?;
    // Text to image: one batch of ten prompts (one per class) per seed.
    // The text budget the model was trained with (seq − N − 3: 61 for `--seq 128`).
    let trained = mmada_models::trainer::trained_seq(&dir)?.and_then(|s| s.checked_sub(n + 3));
    let text_len: usize = match std::env::var("EVAL_TEXT_LEN") {
        Ok(v) => v.parse()?,
        Err(_) => trained.unwrap_or(61),
    };
    let p = Prompter::new(&tok, &vocab, text_len)?;
    let caption = std::env::var("EVAL_CAPTION").unwrap_or_else(|_| "the digit {}".into());
    let guidance: f32 = std::env::var("EVAL_GUIDANCE").map_or(Ok(3.5), |v| v.parse())?;
    let temperature: f32 = std::env::var("EVAL_TEMPERATURE").map_or(Ok(1.0), |v| v.parse())?;
    let timesteps: usize = std::env::var("EVAL_TIMESTEPS").map_or(Ok(15), |v| v.parse())?;
    let prompts: Vec<_> = (0..10)
        .map(|c| p.t2i(&caption.replace("{}", &c.to_string()), Image::Masked(n)))
        .collect::<Result<_, _>>()?;
    let null = p.t2i_null(Image::Masked(n))?;
    let mut right = 0;
    let mut rows: Vec<Vec<image_io::RgbImage>> = vec![Vec::new(); 10];
    let t0 = Instant::now();
    for seed in 0..per_class {
        let opts = ImageOptions {
            seed: seed as u64,
            guidance_scale: guidance,
            temperature,
            timesteps,
            ..ImageOptions::default()
        };
        let mut s = ImageSampler::new(
            cfg.clone(),
            &weights,
            10,
            &prompts[0],
            (vocab.image_offset, vocab.codebook_size),
            opts,
            Target::Cpu,
            host.clone(),
        )?;
        let codes = s.generate(&prompts, &null, &mut |_, _| {})?;
        for (c, code) in codes.iter().enumerate() {
            let px = tk.decode(&Tensor::from_i64([1, n], code.clone())?)?;
            if clf.predict(&features(&px)?) == c {
                right += 1;
            }
            rows[c].push(image_io::to_rgb8(&px, SIDE as u32, SIDE as u32)?);
        }
    }
    let total = 10 * per_class;
    println!(
        "t2i: {right}/{total} = {:.1}% recognised as their prompt's digit ({:.1} s)",
        100.0 * right as f64 / total as f64,
        t0.elapsed().as_secs_f64()
    );
    if let Some(g) = &grid_path {
        let flat: Vec<image_io::RgbImage> = rows.into_iter().flatten().collect();
        let grid = image_io::grid(&flat, per_class as u32, 2)?;
        image_io::save_png(&grid, g)?;
        println!("wrote {}", g.display());
    }
    // Captions of held-out digits.
    let digits = Digits::embedded()?;
    let codes = embedded_digit_codes()?;
    let held_out = std::env::var("EVAL_SPLIT").map_or(true, |v| v != "train");
    // Ten images of each class (the embedded digits are not in random order: the first 100
    // of a split are not a sample of all classes).
    let pool = digits.indices(held_out);
    let labels = &digits.labels;
    let test: Vec<usize> = (0..10u8)
        .flat_map(|c| {
            pool.iter()
                .copied()
                .filter(move |&i| labels[i] == c)
                .take(10)
        })
        .collect();
    let q = Prompter::new(&tok, &vocab, text_len)?;
    let question = std::env::var("EVAL_QUESTION").unwrap_or_else(|_| "What digit is this?".into());
    let question = question.as_str();
    let (first, room) = q.mmu_prompt(&codes[test[0]], question)?;
    // As `mmada generate caption` decodes: blocks of 4, the answer filling the rest of the
    // text block in whole blocks, one position per step.
    let block: usize = std::env::var("EVAL_BLOCK").map_or(Ok(4), |v| v.parse())?;
    let gen: usize =
        std::env::var("EVAL_GEN").map_or(Ok((room / block).max(1) * block), |v| v.parse())?;
    let opts = TextOptions {
        gen_length: gen,
        steps: gen,
        block_length: block,
        early_exit: Some(vocab.ids.eot_id),
        ..TextOptions::default()
    };
    let mut s = TextSampler::new(cfg, &weights, 1, first.len(), opts, Target::Cpu, host)?;
    let mut named = 0;
    let t1 = Instant::now();
    let mut examples = Vec::new();
    for &i in &test {
        let (ids, _) = q.mmu_prompt(&codes[i], question)?;
        let out = s.generate(&[ids], &mut |_, _| {})?;
        let text: Vec<i64> = out.ids[0]
            .iter()
            .copied()
            .filter(|&t| t >= 0 && (t as usize) < tok.len() && t != tok.mask)
            .collect();
        let answer = tok.decode(&text)?.trim().to_string();
        if named_digit(&answer) == Some(digits.labels[i] as usize) {
            named += 1;
        }
        if examples.len() < 10 && named_digit(&answer) != Some(digits.labels[i] as usize) {
            examples.push(format!("{} → {answer:?}", digits.labels[i]));
        }
    }
    println!(
        "caption: {named}/{} = {:.1}% name the digit of the image ({:.1} s); wrong, e.g. {}",
        test.len(),
        100.0 * named as f64 / test.len() as f64,
        t1.elapsed().as_secs_f64(),
        examples.join("; ")
    );
    Ok(())
}
