//! `mmada train --stage unigrpo` (issue 13): a resumed run continues bit-identically (also
//! from between two inner steps of a rollout batch), a SIGKILL during a save keeps the
//! previous checkpoint, a reward returning NaN drops the completion with the count in the
//! metrics, and bad options are refused with one clear line.

mod common;

use common::{assert_one_line_error, mmada_cli};
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::HostCpu;
use mmada_models::reward::{Completion, Reward, Sample};
use mmada_models::trainer::{train_with, Silent, StepRecord, TrainOptions};
use mmada_models::unigrpo::{GrpoOptions, RolloutOptions};
use mmada_models::ModelsError;
use mmada_runtime::Target;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A reward with spread on a random model: the completion's length in characters, mod 7;
/// every `nan_every`-th call (when set) returns NaN.
struct LengthReward {
    calls: AtomicUsize,
    nan_every: Option<usize>,
}

impl Reward for LengthReward {
    fn name(&self) -> &str {
        "length"
    }
    fn score(&self, s: &Sample) -> Result<f64, ModelsError> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        if self.nan_every.is_some_and(|k| n % k == k - 1) {
            return Ok(f64::NAN);
        }
        let Completion::Text(t) = s.completion else {
            return Ok(0.0);
        };
        Ok((t.chars().count() % 7) as f64)
    }
}

fn options(out: &Path, steps: usize) -> TrainOptions {
    let g = GrpoOptions {
        group_size: 3,
        inner_steps: 2,
        prompt_len: 96,
        ref_refresh: 4,
        rollout: RolloutOptions {
            gen_length: 16,
            steps: 8,
            block_length: 16,
            temperature: 1.0,
            ..RolloutOptions::default()
        },
        ..GrpoOptions::default()
    };
    TrainOptions {
        batch: 2,
        seq: g.seq(),
        steps,
        lr: 1e-3,
        warmup: 0,
        save_every: 3,
        out: out.to_path_buf(),
        unigrpo: Some(g),
        ..TrainOptions::default()
    }
}

fn run(opts: &TrainOptions, resume: Option<&Path>, nan_every: Option<usize>) -> Vec<StepRecord> {
    let backend = BackendOptions {
        host: Some(HostCpu::native()),
        gpu_archs: vec![],
    };
    let reward = Box::new(LengthReward {
        calls: AtomicUsize::new(0),
        nan_every,
    });
    train_with(
        opts,
        resume,
        Target::Cpu,
        backend,
        &mut Silent,
        Some(reward),
    )
    .unwrap()
}

/// What must match exactly between two runs (timings aside).
fn figures(r: &StepRecord) -> Vec<(String, u64)> {
    let mut v = vec![
        ("loss".to_string(), r.loss.to_bits()),
        ("grad_norm".to_string(), r.grad_norm.to_bits()),
        ("lr".to_string(), r.lr.to_bits()),
    ];
    for (k, x) in &r.metrics {
        if !k.starts_with("rollout_") {
            v.push((k.clone(), x.to_bits()));
        }
    }
    v
}

/// `--reward caption --clip DIR`: caption rollouts scored by correctness plus the CLIP bonus
/// of the prompt's image (the pair scoring itself is checked against the reference in
/// `tests/clip.rs`): each logged reward is recomputed from the logged answer and the logged
/// image (its index in the embedded digits), and the bonuses are not all equal.
/// The lines of a run's `rollouts.jsonl`.
fn rollout_lines(out: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(out.join("rollouts.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Each logged image rollout's reward equals `reward` of its logged codes, decoded by the
/// built-in image tokenizer, and its caption.
fn assert_image_rewards_recompute(lines: &[serde_json::Value], reward: &dyn Reward) {
    use mmada_models::image_tokenizer::{embedded_vq_digits, ImageTokenizer};
    let (vq_cfg, vq_w) = embedded_vq_digits().unwrap();
    let be = BackendOptions {
        host: Some(HostCpu::native()),
        gpu_archs: vec![],
    };
    let mut tk = ImageTokenizer::new(vq_cfg, &vq_w, 32, 32, Target::Cpu, be).unwrap();
    for v in lines {
        let codes: Vec<i64> = v["completion"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_i64().unwrap())
            .collect();
        let pixels = tk
            .decode(&mmada_ir::Tensor::from_i64([1, 64], codes).unwrap())
            .unwrap();
        let want = reward
            .score(&Sample {
                prompt: v["prompt"].as_str().unwrap(),
                target: v["target"].as_str().unwrap(),
                completion: Completion::Image(&pixels),
                image: None,
            })
            .unwrap();
        let got = v["reward"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-6, "reward {got}, recomputed {want}");
    }
}

fn g_clip(opts: &TrainOptions) -> &Path {
    opts.unigrpo
        .as_ref()
        .unwrap()
        .clip_weights
        .as_deref()
        .unwrap()
}

#[test]
fn caption_rollouts_get_the_clip_bonus_of_their_image() {
    use mmada_models::clip_model::ClipModel;
    use mmada_models::digit_classifier::named_digit;
    use mmada_models::reward::clip::ClipReward;
    let out = tempfile::tempdir().unwrap();
    let mut opts = options(out.path(), 2);
    let g = opts.unigrpo.as_mut().unwrap();
    g.reward = "caption".into();
    g.clip_weights = Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_clip"));
    g.group_size = 2;
    g.prompt_len = 90;
    g.rollout.gen_length = 8;
    g.rollout.steps = 8;
    g.rollout.block_length = 8;
    opts.seq = g.seq();
    let backend = BackendOptions {
        host: Some(HostCpu::native()),
        gpu_archs: vec![],
    };
    let recs = train_with(&opts, None, Target::Cpu, backend, &mut Silent, None).unwrap();
    assert!(recs.iter().all(|r| r.loss.is_finite()));
    let clip = ClipReward::new(ClipModel::open(g_clip(&opts)).unwrap());
    let digits = mmada_models::digits::Digits::embedded().unwrap();
    let mut bonus = Vec::new();
    for v in rollout_lines(out.path()) {
        let answer = v["completion"].as_str().unwrap();
        let label: usize = v["target"].as_str().unwrap().parse().unwrap();
        let image = v["image"].as_u64().unwrap() as usize;
        assert_eq!(
            digits.labels[image] as usize, label,
            "the logged image is the prompt's"
        );
        let correct = f64::from(u8::from(named_digit(answer) == Some(label)));
        let b = clip.score_pair(&digits.chw(image), answer, false).unwrap();
        let got = v["reward"].as_f64().unwrap();
        assert!(
            (got - correct - b).abs() < 1e-6,
            "'{answer}': {got} vs {correct} + {b}"
        );
        bonus.push(b);
    }
    assert_eq!(bonus.len(), 4, "1 rollout × 2 prompts × 2 completions");
    assert!(
        bonus.iter().any(|&b| (b - bonus[0]).abs() > 1e-6),
        "{bonus:?}"
    );
}

/// `--reward clip`: the t2i rollouts scored by 0.1·max(100·cos, 0) of the CLIP towers compiled
/// from `--clip` (the tiny random CLIP fixture, whose towers `tests/clip.rs` checks against
/// the NumPy reference). Every logged reward is recomputed from the logged codes and caption.
#[test]
fn clip_rewards_score_the_t2i_rollouts_with_the_given_clip() {
    use mmada_models::clip_model::ClipModel;
    use mmada_models::reward::clip::ClipReward;
    let out = tempfile::tempdir().unwrap();
    let mut opts = options(out.path(), 2);
    let clip = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_clip");
    let g = opts.unigrpo.as_mut().unwrap();
    g.reward = "clip".into();
    g.clip_weights = Some(clip.clone());
    g.group_size = 2;
    g.prompt_len = 70;
    g.rollout.gen_length = 40;
    g.rollout.steps = 4;
    opts.seq = g.seq();
    let backend = BackendOptions {
        host: Some(HostCpu::native()),
        gpu_archs: vec![],
    };
    let recs = train_with(&opts, None, Target::Cpu, backend, &mut Silent, None).unwrap();
    assert_eq!(recs.len(), 2);
    assert!(recs.iter().all(|r| r.loss.is_finite()));

    let reward = ClipReward::new(ClipModel::open(&clip).unwrap());
    let lines = rollout_lines(out.path());
    assert_eq!(lines.len(), 2 * 2, "1 rollout × 2 prompts × 2 completions");
    assert_image_rewards_recompute(&lines, &reward);
    let seen: Vec<f64> = lines
        .iter()
        .map(|v| v["reward"].as_f64().unwrap())
        .collect();
    // Random towers still tell the images apart: not one constant.
    assert!(seen.iter().any(|&r| (r - seen[0]).abs() > 1e-6), "{seen:?}");
}

/// `--reward t2i`: image rollouts from the MaskGIT step on the artifact's own weights,
/// decoded by the built-in image tokenizer and scored by the committed digit classifier. Every
/// logged reward is recomputed here from the logged codes, and the rollout batch the
/// checkpoint keeps holds those codes at the image positions (in the unified vocabulary)
/// with the caption and `<|eoi|>` untouched.
#[test]
fn t2i_rollouts_are_images_scored_by_the_digit_classifier() {
    use mmada_models::reward::digit_image::DigitImageReward;
    use mmada_models::tokenizer::TextTokenizer;
    use mmada_models::vocab::UnifiedVocab;
    let out = tempfile::tempdir().unwrap();
    let mut opts = options(out.path(), 4);
    let g = opts.unigrpo.as_mut().unwrap();
    g.reward = "t2i".into();
    g.group_size = 2;
    // Rows of 110 as `mmada train --multimodal --seq 110`: Lt = 43, image at 45..109.
    g.prompt_len = 70;
    g.rollout.gen_length = 40;
    g.rollout.steps = 4;
    opts.seq = g.seq();
    let backend = BackendOptions {
        host: Some(HostCpu::native()),
        gpu_archs: vec![],
    };
    let recs = train_with(&opts, None, Target::Cpu, backend, &mut Silent, None).unwrap();
    assert_eq!(recs.len(), 4);
    for r in &recs {
        assert!(
            r.loss.is_finite() && r.grad_norm.is_finite(),
            "step {}",
            r.step
        );
        let m = r.metrics["reward_mean"];
        assert!((0.0..=1.0).contains(&m), "step {}: reward mean {m}", r.step);
    }
    assert!(recs.iter().any(|r| r.metrics["reward_std"] > 0.0));
    assert!(recs.iter().any(|r| r.grad_norm > 0.0));
    // A rollout's first inner step runs on the parameters that sampled it: every ratio is 1
    // exactly when the objective's log-probabilities are π_old's (same image-code softmax).
    for r in recs.iter().filter(|r| r.step % 2 == 0) {
        assert_eq!(r.metrics["clip_frac"], 0.0, "step {}", r.step);
    }

    let reward = DigitImageReward::embedded().unwrap();
    let lines = rollout_lines(out.path());
    assert_eq!(
        lines.len(),
        2 * 2 * 2,
        "2 rollouts × 2 prompts × 2 completions"
    );
    let codes_of = |v: &serde_json::Value| -> Vec<i64> {
        v["completion"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_i64().unwrap())
            .collect()
    };
    for v in &lines {
        let codes = codes_of(v);
        assert_eq!(codes.len(), 64);
        assert!(codes.iter().all(|&c| (0..256).contains(&c)), "{codes:?}");
    }
    assert_image_rewards_recompute(&lines, &reward);

    let tok = TextTokenizer::tiny().unwrap();
    let vocab = UnifiedVocab::tiny(&tok).unwrap();
    let st = mmada_runtime::tensor_io::read_safetensors(
        &out.path().join("checkpoint-3/objective.safetensors"),
    )
    .unwrap();
    assert_eq!(st["rollout.index"].get_f64(0), 1.0);
    let ids = st["rollout.input_ids"].to_i64_vec();
    assert_eq!(ids.len(), 4 * 110);
    for v in lines.iter().filter(|v| v["rollout"] == 1) {
        let r = v["row"].as_u64().unwrap() as usize;
        let row = &ids[r * 110..(r + 1) * 110];
        let want: Vec<i64> = codes_of(v).iter().map(|c| c + vocab.image_offset).collect();
        assert_eq!(&row[45..109], &want[..], "row {r}: image positions");
        assert_eq!(row[109], vocab.ids.eoi, "row {r}: <|eoi|>");
        assert_eq!(row[44], vocab.ids.soi, "row {r}: <|soi|>");
        assert!(!row.contains(&vocab.ids.mask), "row {r} keeps a [MASK]");
    }
}

#[test]
fn resume_between_inner_steps_reproduces_the_uninterrupted_run_exactly() {
    let a = tempfile::tempdir().unwrap();
    let full = run(&options(a.path(), 8), None, None);
    assert_eq!(full.len(), 8);
    // The rewards have spread, so the surrogate and its gradient are not trivially zero.
    assert!(full.iter().any(|r| r.metrics["reward_std"] > 0.0));
    assert!(full.iter().any(|r| r.grad_norm > 0.0));
    assert!(full.iter().all(|r| r.metrics["kl"].is_finite()));
    // Checkpoint 3 is taken between the two inner steps of rollout 1 (steps 2 and 3): the
    // resumed run must reuse that rollout batch, its reference policy and its log-probs.
    let b = tempfile::tempdir().unwrap();
    let dst = b.path().join("checkpoint-3");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(a.path().join("checkpoint-3")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    std::fs::write(b.path().join("latest"), "checkpoint-3").unwrap();
    let st =
        mmada_runtime::tensor_io::read_safetensors(&dst.join("objective.safetensors")).unwrap();
    assert_eq!(st["rollout.index"].get_f64(0), 1.0);
    let resumed = run(&options(b.path(), 8), Some(b.path()), None);
    assert_eq!(resumed.len(), 5);
    for (x, y) in full[3..].iter().zip(&resumed) {
        assert_eq!(x.step, y.step);
        assert_eq!(figures(x), figures(y), "step {}", x.step);
    }
    for name in ["reward-mean-curve.png", "kl-curve.png", "loss-curve.png"] {
        let bytes = std::fs::read(b.path().join(name)).unwrap();
        assert_eq!(&bytes[1..4], b"PNG", "{name}");
    }
}

#[test]
fn a_nan_reward_drops_the_completion_and_is_counted() {
    let d = tempfile::tempdir().unwrap();
    let mut o = options(d.path(), 2);
    o.save_every = 0;
    let recs = run(&o, None, Some(4));
    // 6 completions per rollout, every 4th call NaN: calls 3 (rollout 0) are dropped.
    let r = &recs[0];
    assert_eq!(r.metrics["dropped_nan"], 1.0, "{:?}", r.metrics);
    assert_eq!(r.metrics["kept"], 5.0, "{:?}", r.metrics);
    assert!(r.loss.is_finite() && r.metrics["reward_mean"].is_finite());
}

#[test]
fn bad_unigrpo_options_are_refused_by_name() {
    let d = tempfile::tempdir().unwrap();
    let base = [
        "train", "--stage", "unigrpo", "--target", "cpu", "--steps", "1",
    ];
    let cases: [(&[&str], &str); 6] = [
        (&["--group-size", "1"], "--group-size must be at least 2"),
        (
            &["--inner-steps", "0"],
            "--inner-steps (μ) must be at least 1",
        ),
        (
            &["--clip-eps", "0"],
            "--clip-eps must be a finite number above 0",
        ),
        (
            &["--clip-eps=-0.2"],
            "--clip-eps must be a finite number above 0",
        ),
        (
            &["--prompt-len", "5000"],
            "longer than the model's max_sequence_length",
        ),
        (&["--reward", "clip"], "needs HF CLIP weights"),
    ];
    for (args, needle) in cases {
        let all: Vec<&str> = base.iter().chain(args).copied().collect();
        assert_one_line_error(mmada_cli(&all, d.path()), needle);
    }
    assert_one_line_error(
        mmada_cli(&[&base[..], &["--seq", "64"]].concat(), d.path()),
        "--seq does not apply to --stage unigrpo",
    );
}

#[test]
fn sigkill_while_saving_keeps_the_previous_checkpoint() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let args = [
        "train",
        "--stage",
        "unigrpo",
        "--target",
        "cpu",
        "--log",
        "--batch",
        "1",
        "--group-size",
        "2",
        "--inner-steps",
        "2",
        "--rollout-gen-length",
        "16",
        "--rollout-steps",
        "4",
        "--rollout-block-length",
        "16",
        "--steps",
        "4",
        "--save-every",
        "1",
        "--out",
    ];
    for point in [
        "save-after-optimizer",
        "save-after-objective",
        "save-before-publish",
    ] {
        let _ = std::fs::remove_dir_all(out);
        std::fs::create_dir_all(out).unwrap();
        let st = std::process::Command::new(env!("CARGO_BIN_EXE_mmada"))
            .args(args)
            .arg(out)
            .env("MMADA_FAILPOINT", format!("{point}@3"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(st.signal(), Some(9), "{point}: killed by SIGKILL ({st:?})");
        assert_eq!(
            std::fs::read_to_string(out.join("latest")).unwrap(),
            "checkpoint-2",
            "{point}"
        );
        assert!(!out.join("checkpoint-3").exists(), "{point}");
        let ck = mmada_models::trainer::load_checkpoint(&out.join("checkpoint-2")).unwrap();
        assert_eq!(ck.state.step, 2);
        assert!(
            ck.objective.keys().any(|k| k.starts_with("ref.")),
            "{point}"
        );
    }
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_mmada"))
        .args(args)
        .arg(out)
        .arg("--resume")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        std::fs::read_to_string(out.join("latest")).unwrap(),
        "checkpoint-4"
    );
}
