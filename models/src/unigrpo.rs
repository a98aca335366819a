//! `mmada train --stage unigrpo`: MMaDA's RL stage (spec §5) on the generic trainer.
//!
//! One trainer step is one gradient step. Every μ steps a **rollout** draws P prompts
//! (`--batch`) and G completions of each (`--group-size`) from π_old — the current parameters
//! — with the compiled text sampler (for `--reward t2i`, the MaskGIT image step), which is an
//! entry of the same artifact as the training step and reads the same resident parameters;
//! the rewards score them. The μ inner gradient
//! steps that follow keep those completions and see fresh masks
//! ([`crate::grpo_noising`]); π_old's and π_ref's log-probabilities under each inner step's mask
//! are computed once, right after the rollout. The objective is [`crate::unigrpo_step`].
//!
//! The reference policy π_ref is a frozen copy of the parameters at the start (resident as
//! `ref.<name>`), refreshed every `--ref-refresh` steps when that is not 0; with β = 0 there
//! is none. Checkpoints carry it, and the rollout batch in progress, in `objective.safetensors`,
//! so a run resumed between two inner steps continues bit-identically.
//!
//! Every completion (its text, or for images its codes) and its reward go to
//! `<out>/rollouts.jsonl`.
//!
//! Prompts of a rollout share one compiled length (`--prompt-len`): shorter prompts are
//! left-padded with the end-of-text id, which attention does not see (`key_mask`, in the
//! sampler and the objective alike; with RoPE's relative positions a padded prompt gives the
//! unpadded prompt's logits); longer ones are left out of the task (counted). The
//! completion is the whole generated span by default (d1's choice: text after the first
//! end-of-turn or end-of-text is padding the policy chose to write); `--trim-padding` masks
//! only up to and including that first end token (dLLM-RL's choice), so a short answer's
//! reward is not spread over the padding after it.
//!
//! Defaults, against the two public references (spec §5.3; UniGRPO's own are unpublished):
//!
//! | option | here | d1 diffu-GRPO | dLLM-RL (MMaDA) |
//! |---|---|---|---|
//! | `--group-size` G | 4 | 6 | 16 |
//! | `--inner-steps` μ | 4 | 12 | 1 (2 masked copies) |
//! | `--clip-eps` ε | 0.2 | 0.5 | 0.2 |
//! | `--kl-beta` β | 0.04 | 0.04 | 0.01 (vs π_old) |
//! | `--ref-refresh` | 64 | 64 | — |
//! | `--rollout-temperature` | 0.8 | — | 0.8 |
//! | `--noising` | structured | d1 | random |
//!
//! G and μ are smaller than d1's to fit a tiny model on two cores; the rest follow d1 where
//! the references agree with it.

use crate::config::LladaConfig;
use crate::data::{Batcher, DataPosition, EMBEDDED_GSM};
use crate::grpo_noising::{masks, Noising, RowSpan};
use crate::image_sampler::{generate_on, ImageOptions, Schedule, TemperatureRule};
use crate::image_tokenizer::{embedded_vq_digits, ImageTokenizer};
use crate::objective::Objective;
use crate::prompt::{Image, Layout};
use crate::reward::{Completion, Reward, Sample};
use crate::sampler_step::{
    block_step_graph, image_step_graph, text_step_graph, ImageStepSpec, TextStepSpec, BLOCK_STEP,
    IMAGE_STEP, TEXT_STEP,
};
use crate::text_sampler::{decode, KvCache, TextOptions};
use crate::tokenizer::TextTokenizer;
use crate::train_step::StepHyper;
use crate::unigrpo_step::{
    grpo_step_graph, logprob_graph, ref_name, GrpoSpec, LOGPROB, REF_LOGPROB,
};
use crate::vocab::UnifiedVocab;
use crate::ModelsError;
use indexmap::IndexMap;
use mmada_ir::{DType, Graph, Remasking, Shape, Tensor};
use mmada_runtime::{Executor, Target};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// How rollouts are sampled (the text sampler's options, spec §6.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutOptions {
    /// Generated positions per completion.
    pub gen_length: usize,
    /// Denoising steps in all.
    pub steps: usize,
    /// Block length of the semi-autoregressive schedule.
    pub block_length: usize,
    /// Gumbel temperature (> 0: G completions of one prompt must differ).
    pub temperature: f32,
    /// Confidence-threshold parallel decoding (Fast-dLLM).
    pub threshold: Option<f32>,
    /// Fast-dLLM's dual KV cache.
    pub dual_cache: bool,
}

impl Default for RolloutOptions {
    fn default() -> Self {
        RolloutOptions {
            gen_length: 64,
            steps: 32,
            block_length: 32,
            temperature: 0.8,
            threshold: None,
            dual_cache: false,
        }
    }
}

/// UniGRPO's options (module docs for the defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GrpoOptions {
    /// Completions per prompt G.
    pub group_size: usize,
    /// Gradient steps per rollout batch μ.
    pub inner_steps: usize,
    /// Clip range ε of the ratio.
    pub clip_eps: f64,
    /// KL coefficient β (0: no reference policy).
    pub kl_beta: f64,
    /// Copy the parameters into the reference policy every this many steps (0: never). The
    /// copy is taken at that step; a rollout in progress keeps the reference log-probs it
    /// computed at its start, so the new reference acts from the next rollout on.
    pub ref_refresh: usize,
    /// Leave groups whose rewards are all equal out of the objective.
    pub drop_zero_variance: bool,
    /// Which completion tokens are masked.
    pub noising: Noising,
    /// Reward: math, caption, t2i or clip.
    pub reward: String,
    /// HF CLIP weights for `--reward clip`.
    pub clip_weights: Option<PathBuf>,
    /// Tokens every prompt is padded to.
    pub prompt_len: usize,
    /// Mask only up to the completion's first end-of-turn / end-of-text (included), not the
    /// padding the sampler wrote after it (dLLM-RL's choice; d1 masks the whole span).
    #[serde(default)]
    pub trim_padding: bool,
    /// The sampler of the rollouts.
    pub rollout: RolloutOptions,
}

impl Default for GrpoOptions {
    fn default() -> Self {
        GrpoOptions {
            group_size: 4,
            inner_steps: 4,
            clip_eps: 0.2,
            kl_beta: 0.04,
            ref_refresh: 64,
            drop_zero_variance: false,
            noising: Noising::Structured,
            reward: "math".into(),
            clip_weights: None,
            prompt_len: 96,
            trim_padding: false,
            rollout: RolloutOptions::default(),
        }
    }
}

impl GrpoOptions {
    /// Checks the options on their own; errors name the option.
    pub fn check(&self) -> Result<(), String> {
        if self.group_size < 2 {
            return Err(format!(
                "--group-size must be at least 2, got {}: the advantage is a completion's reward \
                 against the mean of its group, and a group of one has none",
                self.group_size
            ));
        }
        if self.inner_steps == 0 {
            return Err("--inner-steps (μ) must be at least 1, got 0".into());
        }
        if !(self.clip_eps.is_finite() && self.clip_eps > 0.0) {
            return Err(format!(
                "--clip-eps must be a finite number above 0, got {}",
                self.clip_eps
            ));
        }
        if !(self.kl_beta.is_finite() && self.kl_beta >= 0.0) {
            return Err(format!(
                "--kl-beta must be a finite number ≥ 0, got {}",
                self.kl_beta
            ));
        }
        if self.prompt_len == 0 {
            return Err("--prompt-len must be at least 1".into());
        }
        if !crate::reward::NAMES.contains(&self.reward.as_str()) {
            return Err(format!(
                "--reward must be one of {}, got '{}'",
                crate::reward::NAMES.join(", "),
                self.reward
            ));
        }
        let r = &self.rollout;
        if !(r.temperature.is_finite() && r.temperature > 0.0) {
            return Err(format!(
                "--rollout-temperature must be above 0, got {}: at 0 the G completions of a \
                 prompt are identical and every advantage is 0",
                r.temperature
            ));
        }
        if crate::reward::scores_images(&self.reward) {
            // The image sampler reads only --rollout-steps and --rollout-temperature.
            if r.steps == 0 {
                return Err("--rollout-steps must be at least 1".into());
            }
            if r.dual_cache || r.threshold.is_some() || self.trim_padding {
                return Err(
                    "--rollout-dual-cache, --rollout-threshold and --trim-padding are options \
                     of text completions; --reward t2i and clip sample images (MaskGIT), \
                     whose completion is the image positions"
                        .into(),
                );
            }
            return Ok(());
        }
        self.text_options(0)
            .check(self.prompt_len, usize::MAX)
            .map_err(|e| e.to_string().replace("--", "--rollout-"))?;
        Ok(())
    }

    /// Checks the sequence against the model: prompt plus completion within
    /// `max_sequence_length`.
    pub fn check_model(&self, cfg: &LladaConfig) -> Result<(), String> {
        let l = self.seq();
        if l > cfg.max_sequence_length {
            return Err(format!(
                "--prompt-len {} plus --rollout-gen-length {} is {l} tokens, longer than the \
                 model's max_sequence_length {}",
                self.prompt_len, self.rollout.gen_length, cfg.max_sequence_length
            ));
        }
        Ok(())
    }

    /// Positions per row.
    pub fn seq(&self) -> usize {
        self.prompt_len + self.rollout.gen_length
    }

    /// The text sampler's options for rollout `seed`.
    pub fn text_options(&self, seed: u64) -> TextOptions {
        let r = &self.rollout;
        TextOptions {
            gen_length: r.gen_length,
            steps: r.steps,
            block_length: r.block_length,
            temperature: r.temperature,
            cfg_scale: 0.0,
            remasking: Remasking::LowConfidence,
            seed,
            early_exit: None,
            threshold: r.threshold,
            cache: if r.dual_cache {
                KvCache::Dual
            } else {
                KvCache::None
            },
        }
    }
}

/// One prompt of the task: its ids (unpadded), text and reference answer.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskPrompt {
    /// Token ids of the prompt (for text-to-image the whole row, image positions `[MASK]`).
    pub ids: Vec<i64>,
    /// The question's text (for the reward).
    pub text: String,
    /// The reference answer.
    pub target: String,
    /// Text-to-image: the row's t2i layout (key mask and image positions).
    pub layout: Option<Layout>,
    /// Captioning: the image the prompt shows (its index in the embedded digits, and its
    /// pixels, CHW in [−1, 1]), for a CLIP bonus; `rollouts.jsonl` logs the index.
    pub image: Option<(usize, Vec<f32>)>,
}

/// The math task's prompts: `question` / `answer` rows of the JSONL files (or the embedded
/// GSM-style problems) as chat prompts. Returns the prompts that fit and how many did not.
pub fn math_prompts(
    tok: &TextTokenizer,
    data: &[PathBuf],
    prompt_len: usize,
) -> Result<(Vec<TaskPrompt>, usize), ModelsError> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(alias = "prompt")]
        question: String,
        answer: String,
    }
    let mut texts: Vec<(String, String)> = Vec::new();
    if data.is_empty() {
        texts.push(("<embedded>/gsm_symbolic.jsonl".into(), EMBEDDED_GSM.into()));
    }
    for p in data {
        let t = std::fs::read_to_string(p).map_err(|e| ModelsError::Io {
            path: p.display().to_string(),
            source: e,
        })?;
        texts.push((p.display().to_string(), t));
    }
    let (mut out, mut skipped) = (Vec::new(), 0);
    for (path, text) in &texts {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let raw: Raw = serde_json::from_str(line).map_err(|e| ModelsError::DataLine {
                path: path.clone(),
                line: i + 1,
                msg: format!("a math row needs \"question\" (or \"prompt\") and \"answer\": {e}"),
            })?;
            let ids = tok.chat_prompt(&[("user", raw.question.as_str())])?;
            if ids.len() > prompt_len {
                skipped += 1;
                continue;
            }
            out.push(TaskPrompt {
                ids,
                text: raw.question,
                target: raw.answer,
                layout: None,
                image: None,
            });
        }
    }
    Ok((out, skipped))
}

/// The digit-caption task: every training digit as codes of the built-in image tokenizer in
/// the mmu layout of the training rows (`mmu_prompt`: `<|mmu|> <|soi|> codes <|eoi|>`, then the
/// text block up to the assistant header, for rows of `seq` = `Lt + N + 3` tokens) with the
/// question "What digit is this?"; the target is its label.
pub fn caption_prompts(
    tok: &TextTokenizer,
    cfg: &LladaConfig,
    prompt_len: usize,
    seq: usize,
) -> Result<(Vec<TaskPrompt>, usize), ModelsError> {
    let digits = crate::digits::Digits::embedded()?;
    let codes = crate::digit_codes::embedded_digit_codes()?;
    let codebook = cfg.codebook_size.unwrap_or(256);
    let vocab =
        crate::vocab::UnifiedVocab::from_tokenizer(tok, "<run tokenizer>", codebook, cfg.rows())?;
    let n = codes.first().map_or(0, Vec::len);
    let text_len = seq.checked_sub(n + 3).filter(|&t| t >= 2).ok_or_else(|| {
        ModelsError::Options(format!(
            "--prompt-len plus --rollout-gen-length ({seq}) leaves no room for the text after \
             the {n} image codes"
        ))
    })?;
    let p = crate::prompt::Prompter::new(tok, &vocab, text_len)?;
    let question = "What digit is this?";
    let (mut out, mut skipped) = (Vec::new(), 0);
    for i in digits.indices(false) {
        let (ids, _) = p.mmu_prompt(&codes[i], question)?;
        if ids.len() > prompt_len {
            skipped += 1;
            continue;
        }
        out.push(TaskPrompt {
            ids,
            text: question.into(),
            target: digits.labels[i].to_string(),
            layout: None,
            image: Some((i, digits.chw(i))),
        });
    }
    Ok((out, skipped))
}

/// The digit text-to-image task: every distinct caption of the training digits (8 phrasings
/// × 10 digits in the embedded captions) as a t2i layout of `seq` = `Lt + N + 3` positions
/// (the rows of `mmada train --multimodal`), its image part `n` masks; the target is the
/// label. Captions longer than the text block are left out (their count is returned), not cut.
pub fn t2i_prompts(
    tok: &TextTokenizer,
    vocab: &UnifiedVocab,
    n: usize,
    seq: usize,
) -> Result<(Vec<TaskPrompt>, usize), ModelsError> {
    #[derive(Deserialize)]
    struct Row {
        image: usize,
        caption: String,
        split: String,
    }
    let digits = crate::digits::Digits::embedded()?;
    let text_len = seq.checked_sub(n + 3).filter(|&t| t >= 2).ok_or_else(|| {
        ModelsError::Options(format!(
            "--prompt-len plus --rollout-gen-length ({seq}) leaves no room for the caption \
             before the {n} image positions of a t2i row (Lt + {n} + 3)"
        ))
    })?;
    let p = crate::prompt::Prompter::new(tok, vocab, text_len)?;
    let mut seen = std::collections::BTreeSet::new();
    let (mut out, mut skipped) = (Vec::new(), 0);
    for (i, line) in crate::digits::CAPTIONS.lines().enumerate() {
        let r: Row = serde_json::from_str(line).map_err(|e| ModelsError::DataLine {
            path: "<embedded>/captions.jsonl".into(),
            line: i + 1,
            msg: e.to_string(),
        })?;
        let label = *digits
            .labels
            .get(r.image)
            .ok_or_else(|| ModelsError::DataLine {
                path: "<embedded>/captions.jsonl".into(),
                line: i + 1,
                msg: format!("image {} is not in the embedded digits", r.image),
            })?;
        if r.split != "train" || !seen.insert((r.caption.clone(), label)) {
            continue;
        }
        // `<|t2i|>`, the caption and its end must fit the block of Lt + 1.
        if p.text_ids(&r.caption)?.len() + 2 > text_len + 1 {
            skipped += 1;
            continue;
        }
        let layout = p.t2i(&r.caption, Image::Masked(n))?;
        out.push(TaskPrompt {
            ids: layout.ids.clone(),
            text: r.caption,
            target: label.to_string(),
            layout: Some(layout),
            image: None,
        });
    }
    Ok((out, skipped))
}

/// A rollout batch and what the inner steps need of it.
#[derive(Clone, Debug, PartialEq)]
struct Rollout {
    /// Rollout number (step / μ).
    index: usize,
    /// Prompt and completion `[B, L]`.
    ids: Vec<i64>,
    /// Rewards `[B]` (0 where not valid).
    reward: Vec<f64>,
    /// Rows with a finite reward.
    valid: Vec<bool>,
    /// Keys attention reads `[B, L]`: false on each prompt's left padding.
    key_mask: Vec<bool>,
    /// Per inner step, π_old's and π_ref's log-probabilities `[B, L]`.
    old: Vec<Tensor>,
    refl: Vec<Tensor>,
    /// Figures of the rollout: reward mean and std, rows dropped, seconds, tokens generated.
    stats: BTreeMap<String, f64>,
}

/// What UniGRPO takes from the run's options.
#[derive(Clone, Debug, PartialEq)]
pub struct GrpoRun {
    /// Prompts per rollout (`--batch`).
    pub prompts: usize,
    /// Seed of the prompt order, the rollouts and the masks.
    pub seed: u64,
    /// JSONL files of the math task (empty: the embedded problems).
    pub data: Vec<PathBuf>,
    /// Output directory (for `rollouts.jsonl`).
    pub out: PathBuf,
}

/// The UniGRPO objective.
pub struct UniGrpo {
    opts: GrpoRun,
    g: GrpoOptions,
    cfg: LladaConfig,
    tok: TextTokenizer,
    reward: Box<dyn Reward>,
    batcher: Batcher<TaskPrompt>,
    prompts: usize,
    skipped: usize,
    spec: GrpoSpec,
    text: TextStepSpec,
    /// Text-to-image (`--reward t2i`): the image sampler's step and the reward's decoder.
    image: Option<ImageTask>,
    rollout: Option<Rollout>,
}

/// What text-to-image rollouts need besides the text task's fields.
struct ImageTask {
    /// The MaskGIT step of the rollouts (an entry of the artifact, on its resident weights).
    spec: ImageStepSpec,
    /// The built-in image tokenizer's decoder: codes → pixels for the reward.
    decoder: ImageTokenizer,
}

/// A sampled rollout batch, scored: rows `[B, L]`, key masks, rewards.
struct Sampled {
    ids: Vec<i64>,
    key_mask: Vec<bool>,
    reward: Vec<f64>,
    valid: Vec<bool>,
    dropped: usize,
    /// `rollouts.jsonl` lines.
    log: String,
}

impl Sampled {
    /// An empty batch of these rows and key masks.
    fn new(ids: Vec<i64>, key_mask: Vec<bool>) -> Sampled {
        Sampled {
            ids,
            key_mask,
            reward: Vec::new(),
            valid: Vec::new(),
            dropped: 0,
            log: String::new(),
        }
    }

    /// Scores completion `r` of rollout `index` (prompt `tp`) with `reward` and records it,
    /// `logged` being what `rollouts.jsonl` shows of it (its text, or its codes). A
    /// non-finite score leaves the row out of the objective with a warning.
    fn score(
        &mut self,
        reward: &dyn Reward,
        (index, r, tp): (usize, usize, &TaskPrompt),
        completion: Completion,
        logged: serde_json::Value,
    ) -> Result<(), ModelsError> {
        let score = reward.score(&Sample {
            prompt: &tp.text,
            target: &tp.target,
            completion,
            image: tp.image.as_ref().map(|(_, chw)| chw.as_slice()),
        })?;
        let reward = reward.name();
        let mut line = serde_json::json!({
            "rollout": index,
            "row": r,
            "prompt": tp.text,
            "target": tp.target,
            "completion": logged,
            "reward": if score.is_finite() { Some(score) } else { None },
        });
        if let Some((i, _)) = &tp.image {
            line["image"] = serde_json::json!(i);
        }
        self.log.push_str(&line.to_string());
        self.log.push('\n');
        if score.is_finite() {
            self.reward.push(score);
            self.valid.push(true);
        } else {
            eprintln!(
                "warning: rollout {index}, completion {r}: the {reward} reward is {score}; the \
                 completion is left out of the objective"
            );
            self.dropped += 1;
            self.reward.push(0.0);
            self.valid.push(false);
        }
        Ok(())
    }
}

/// The image task of `--reward t2i` for rows of `seq` positions: the built-in image
/// tokenizer (its codebook must be the model's), the caption prompts and the sampler's step.
fn image_task(
    tok: &TextTokenizer,
    cfg: &LladaConfig,
    rows: usize,
    seq: usize,
) -> Result<(Vec<TaskPrompt>, usize, ImageTask), ModelsError> {
    let (vq_cfg, vq_w) = embedded_vq_digits()?;
    let codebook = cfg.codebook_size.unwrap_or(256);
    if vq_cfg.codebook_size() != codebook {
        return Err(ModelsError::Options(format!(
            "--reward t2i and clip decode with the built-in image tokenizer of {} codes; the model has \
             {codebook}",
            vq_cfg.codebook_size()
        )));
    }
    let side = crate::digits::SIDE;
    let backend = mmada_codegen::backend::BackendOptions {
        host: Some(mmada_codegen::HostCpu::native()),
        gpu_archs: Vec::new(),
    };
    let decoder = ImageTokenizer::new(vq_cfg, &vq_w, side, side, Target::Cpu, backend)?;
    let n = decoder.num_codes();
    let vocab = UnifiedVocab::from_tokenizer(tok, "<run tokenizer>", codebook, cfg.rows())?;
    let (prompts, skipped) = t2i_prompts(tok, &vocab, n, seq)?;
    let image = prompts
        .first()
        .and_then(|p| p.layout.as_ref())
        .and_then(|l| l.image.clone())
        .ok_or_else(|| {
            ModelsError::Options(format!(
                "no caption of the t2i task fits rows of {seq} (--prompt-len plus \
                 --rollout-gen-length): {skipped} are longer than the text block of {} ids",
                seq.saturating_sub(n + 2)
            ))
        })?;
    let spec = ImageStepSpec {
        batch: rows,
        seq,
        image,
        image_offset: vocab.image_offset,
        codebook,
        cfg: false,
    };
    Ok((prompts, skipped, ImageTask { spec, decoder }))
}

fn bool_tensor<const N: usize>(v: &[bool], shape: [usize; N]) -> Result<Tensor, ModelsError> {
    let f: Vec<f64> = v.iter().map(|&b| f64::from(u8::from(b))).collect();
    Ok(Tensor::from_f64(DType::Bool, shape.to_vec(), &f)?)
}

fn scalar_i64(v: i64) -> Result<Tensor, ModelsError> {
    Ok(Tensor::from_i64(Shape::scalar(), vec![v])?)
}

impl UniGrpo {
    /// The objective of a run: the task's prompts, resuming at `pos`.
    pub fn new(
        opts: &GrpoRun,
        g: &GrpoOptions,
        cfg: &LladaConfig,
        tok: &TextTokenizer,
        reward: Box<dyn Reward>,
        pos: DataPosition,
    ) -> Result<UniGrpo, ModelsError> {
        g.check().map_err(ModelsError::Options)?;
        g.check_model(cfg).map_err(ModelsError::Options)?;
        let task = |len: usize| match reward.name() {
            "caption" => caption_prompts(tok, cfg, len, g.seq()),
            _ => math_prompts(tok, &opts.data, len),
        };
        if opts.prompts == 0 {
            return Err(ModelsError::Options(
                "--batch (prompts per rollout) must be at least 1".into(),
            ));
        }
        let (prompts, skipped, image) = if crate::reward::scores_images(reward.name()) {
            let (p, s, t) = image_task(tok, cfg, opts.prompts * g.group_size, g.seq())?;
            (p, s, Some(t))
        } else {
            let (p, s) = task(g.prompt_len)?;
            (p, s, None)
        };
        if prompts.is_empty() {
            let shortest = task(usize::MAX)?.0.iter().map(|p| p.ids.len()).min();
            return Err(ModelsError::Options(format!(
                "no prompt of the task fits --prompt-len {} ({skipped} are longer; the shortest \
                 has {} tokens)",
                g.prompt_len,
                shortest.unwrap_or(0)
            )));
        }
        let n = prompts.len();
        let spec = GrpoSpec {
            prompts: opts.prompts,
            group: g.group_size,
            seq: g.seq(),
            clip_eps: g.clip_eps,
            kl_beta: g.kl_beta,
            drop_zero_variance: g.drop_zero_variance,
            vocab: image
                .as_ref()
                .map(|t| (t.spec.image_offset as usize, t.spec.codebook)),
        };
        let text = TextStepSpec {
            batch: spec.rows(),
            seq: spec.seq,
            cfg: false,
            remasking: Remasking::LowConfidence,
            fill_cache: g.rollout.dual_cache,
            head_block: Some(g.rollout.block_length),
            key_mask: true,
        };
        Ok(UniGrpo {
            opts: opts.clone(),
            g: g.clone(),
            cfg: cfg.clone(),
            tok: tok.clone(),
            reward,
            batcher: Batcher::new(prompts, opts.seed, pos)?,
            prompts: n,
            skipped,
            spec,
            text,
            image,
            rollout: None,
        })
    }

    /// Positions a completion has: the image's codes, or `--rollout-gen-length`.
    fn completion_len(&self) -> usize {
        match &self.image {
            Some(t) => t.spec.image.len(),
            None => self.g.rollout.gen_length,
        }
    }

    /// Prompts of the task.
    pub fn prompts(&self) -> usize {
        self.prompts
    }

    /// Prompts left out (longer than `--prompt-len`).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The rows to mask of a rollout's sequences (`[B, L]` ids): the completion runs to the
    /// row's end, or with `trim_padding` to its first end-of-turn or end-of-text.
    fn spans(&self, ids: &[i64]) -> Vec<RowSpan> {
        let (l, lp) = (self.spec.seq, self.g.prompt_len);
        if let Some(t) = &self.image {
            // The completion is the image; the `<|eoi|>` after it is prompt.
            let img = &t.spec.image;
            return (0..ids.len() / l)
                .map(|_| RowSpan {
                    prompt_len: img.start,
                    end: img.end,
                    len: l,
                })
                .collect();
        }
        ids.chunks(l)
            .map(|row| {
                let end = if self.g.trim_padding {
                    row[lp..]
                        .iter()
                        .position(|&t| t == self.tok.eos || t == self.tok.eot_id)
                        .map_or(l, |i| lp + i + 1)
                } else {
                    l
                };
                RowSpan {
                    prompt_len: lp,
                    end,
                    len: l,
                }
            })
            .collect()
    }

    /// The text of a completion: its ids up to the first end-of-turn or end-of-text,
    /// special tokens dropped.
    fn completion_text(&self, ids: &[i64]) -> Result<String, ModelsError> {
        let end = ids
            .iter()
            .position(|&t| t == self.tok.eos || t == self.tok.eot_id)
            .unwrap_or(ids.len());
        let keep: Vec<i64> = ids[..end]
            .iter()
            .copied()
            .filter(|&t| t >= 0 && (t as usize) < self.tok.len())
            .collect();
        self.tok.decode(&keep)
    }

    /// Samples the text completions of a rollout batch (`batch`, each prompt `gs` times,
    /// left-padded to `--prompt-len`) with the text sampler, and scores them.
    fn sample_text(
        &mut self,
        index: usize,
        batch: &[TaskPrompt],
        seed: u64,
        exe: &mut dyn Executor,
    ) -> Result<Sampled, ModelsError> {
        let (gs, l, lp) = (self.spec.group, self.spec.seq, self.g.prompt_len);
        let rows = batch.len() * gs;
        let mut prompts = Vec::with_capacity(rows);
        let mut key_mask = Vec::with_capacity(rows * l);
        for tp in batch {
            let pad = lp - tp.ids.len();
            let mut ids = vec![self.tok.eos; pad];
            ids.extend_from_slice(&tp.ids);
            for _ in 0..gs {
                prompts.push(ids.clone());
                key_mask.extend((0..l).map(|i| i >= pad));
            }
        }
        exe.set_input("key_mask", &bool_tensor(&key_mask, [rows, l])?)?;
        let topts = self.g.text_options(seed);
        let gen = decode(exe, &self.cfg, self.text, &topts, &prompts, &mut |_, _| {})?;
        let mut out = Sampled::new(Vec::with_capacity(rows * l), key_mask);
        for (r, completion) in gen.ids.iter().enumerate() {
            out.ids.extend_from_slice(&prompts[r]);
            out.ids.extend_from_slice(completion);
            let tp = &batch[r / gs];
            let text = self.completion_text(completion)?;
            let logged = serde_json::json!(text);
            out.score(
                self.reward.as_ref(),
                (index, r, tp),
                Completion::Text(&text),
                logged,
            )?;
        }
        Ok(out)
    }

    /// Samples the images of a rollout batch (`--reward t2i`: each caption `gs` times) with
    /// the MaskGIT step, without guidance (the policy whose log-probabilities the objective
    /// takes), `--rollout-steps` steps and `--rollout-temperature` as the initial noise on the
    /// confidences; decodes them with the built-in image tokenizer and scores them.
    fn sample_images(
        &mut self,
        index: usize,
        batch: &[TaskPrompt],
        seed: u64,
        exe: &mut dyn Executor,
    ) -> Result<Sampled, ModelsError> {
        let gs = self.spec.group;
        let t = self
            .image
            .as_mut()
            .ok_or_else(|| ModelsError::Options("internal: no image task".into()))?;
        let mut layouts = Vec::with_capacity(batch.len() * gs);
        for tp in batch {
            let lay = tp.layout.as_ref().ok_or_else(|| {
                ModelsError::Options(format!("internal: prompt '{}' has no t2i layout", tp.text))
            })?;
            layouts.extend(std::iter::repeat_n(lay.clone(), gs));
        }
        let opts = ImageOptions {
            timesteps: self.g.rollout.steps,
            guidance_scale: 0.0,
            temperature: self.g.rollout.temperature,
            schedule: Schedule::Cosine,
            temperature_rule: TemperatureRule::Compounding,
            seed,
        };
        let null = layouts[0].clone();
        let codes = generate_on(exe, &t.spec, &opts, &layouts, &null, &mut |_, _| {})?;
        let cap = layouts.len() * self.spec.seq;
        let mut out = Sampled::new(Vec::with_capacity(cap), Vec::with_capacity(cap));
        let n = t.spec.image.len();
        for (r, c) in codes.iter().enumerate() {
            let mut row = layouts[r].ids.clone();
            for (slot, &code) in row[t.spec.image.clone()].iter_mut().zip(c) {
                *slot = code + t.spec.image_offset;
            }
            out.ids.extend_from_slice(&row);
            out.key_mask.extend_from_slice(&layouts[r].key_mask);
            let pixels = t.decoder.decode(&Tensor::from_i64([1, n], c.clone())?)?;
            let tp = &batch[r / gs];
            let logged = serde_json::json!(c);
            out.score(
                self.reward.as_ref(),
                (index, r, tp),
                Completion::Image(&pixels),
                logged,
            )?;
        }
        Ok(out)
    }

    /// Samples rollout `index`, scores it and computes the log-probabilities of its inner
    /// steps.
    fn roll_out(&mut self, index: usize, exe: &mut dyn Executor) -> Result<Rollout, ModelsError> {
        let t0 = Instant::now();
        let (p, gs, l) = (self.spec.prompts, self.spec.group, self.spec.seq);
        let batch = self.batcher.next_batch(p);
        // A fresh sampler seed per rollout.
        let seed = self
            .opts
            .seed
            .wrapping_add((index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let Sampled {
            ids,
            key_mask,
            reward,
            valid,
            dropped,
            log,
        } = if self.image.is_some() {
            self.sample_images(index, &batch, seed, exe)?
        } else {
            self.sample_text(index, &batch, seed, exe)?
        };
        let km = bool_tensor(&key_mask, [p * gs, l])?;
        let kept: Vec<f64> = reward
            .iter()
            .zip(&valid)
            .filter(|(_, &v)| v)
            .map(|(&r, _)| r)
            .collect();
        let mean = kept.iter().sum::<f64>() / kept.len().max(1) as f64;
        let var = kept.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / kept.len().max(1) as f64;
        let rollout_s = t0.elapsed().as_secs_f64();
        self.append_rollouts(&log)?;
        // π_old and π_ref under each inner step's mask.
        let ids_t = Tensor::from_i64(Shape(vec![p * gs, l]), ids.clone())?;
        let (mut old, mut refl) = (Vec::new(), Vec::new());
        let spans = self.spans(&ids);
        for n in 0..self.g.inner_steps {
            let step = index * self.g.inner_steps + n;
            let (m, _) = self.mask(index, n, step, &spans)?;
            let mut ins = IndexMap::new();
            ins.insert("input_ids".to_string(), ids_t.clone());
            ins.insert("masked".to_string(), m);
            ins.insert("key_mask".to_string(), km.clone());
            exe.run_entry(LOGPROB, &ins)?;
            let o = exe.read_output(LOGPROB, "logp")?;
            let r = if self.g.kl_beta > 0.0 {
                exe.run_entry(REF_LOGPROB, &ins)?;
                exe.read_output(REF_LOGPROB, "logp")?
            } else {
                o.clone()
            };
            old.push(o);
            refl.push(r);
        }
        let mut stats = BTreeMap::new();
        stats.insert("reward_mean".into(), mean);
        stats.insert("reward_std".into(), var.sqrt());
        stats.insert("dropped_nan".into(), dropped as f64);
        stats.insert("rollout_seconds".into(), rollout_s);
        stats.insert(
            "rollout_tokens_per_second".into(),
            (p * gs * self.completion_len()) as f64 / rollout_s.max(1e-9),
        );
        Ok(Rollout {
            index,
            ids,
            reward,
            valid,
            key_mask,
            old,
            refl,
            stats,
        })
    }

    /// The input and scored masks of inner step `n` of rollout `index`, gradient step `step`.
    fn mask(
        &self,
        index: usize,
        n: usize,
        step: usize,
        spans: &[RowSpan],
    ) -> Result<(Tensor, Tensor), ModelsError> {
        let mut m = masks(
            self.g.noising,
            self.opts.seed,
            index,
            n,
            self.g.inner_steps,
            step,
            spans,
        );
        if let Some(t) = &self.image {
            // What follows a t2i row's image (`<|eoi|>`) is prompt, not padding: visible.
            let (l, end) = (self.spec.seq, t.spec.image.end);
            for (i, v) in m.input.iter_mut().enumerate() {
                if i % l >= end {
                    *v = false;
                }
            }
        }
        let shape = [self.spec.rows(), self.spec.seq];
        Ok((
            bool_tensor(&m.input, shape)?,
            bool_tensor(&m.scored, shape)?,
        ))
    }

    /// Appends a rollout's completions to `<out>/rollouts.jsonl` (one object per completion:
    /// rollout, row, prompt, target, completion text or image codes, reward or null). A resumed run appends
    /// from the rollout it resumes in, so that rollout's lines can appear twice (identical).
    fn append_rollouts(&self, lines: &str) -> Result<(), ModelsError> {
        use std::io::Write;
        let p = self.opts.out.join("rollouts.jsonl");
        let io = |e| ModelsError::Io {
            path: p.display().to_string(),
            source: e,
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(io)?;
        f.write_all(lines.as_bytes()).map_err(io)
    }

    fn copy_to_reference(&self, exe: &mut dyn Executor) -> Result<(), ModelsError> {
        for p in crate::llada::param_specs(&self.cfg) {
            let w = exe.get_input(&p.name)?;
            exe.set_input(&ref_name(&p.name), &w)?;
        }
        Ok(())
    }
}

impl Objective for UniGrpo {
    fn name(&self) -> &str {
        "unigrpo"
    }

    fn step_graph(&self, cfg: &LladaConfig, hyper: StepHyper) -> Result<Graph, ModelsError> {
        Ok(grpo_step_graph(cfg, &self.spec, hyper)?)
    }

    fn entries(&self, cfg: &LladaConfig) -> Result<Vec<(String, Graph)>, ModelsError> {
        let (b, l, v) = (self.spec.rows(), self.spec.seq, self.spec.vocab);
        let sampler = match &self.image {
            Some(t) => (IMAGE_STEP.to_string(), image_step_graph(cfg, &t.spec)?),
            None => (TEXT_STEP.to_string(), text_step_graph(cfg, self.text)?),
        };
        let mut e = vec![
            sampler,
            (LOGPROB.to_string(), logprob_graph(cfg, b, l, v, false)?),
        ];
        if self.g.rollout.dual_cache && self.image.is_none() {
            let blk = block_step_graph(cfg, self.text, self.g.rollout.block_length)?;
            e.push((BLOCK_STEP.to_string(), blk));
        }
        if self.g.kl_beta > 0.0 {
            e.push((REF_LOGPROB.to_string(), logprob_graph(cfg, b, l, v, true)?));
        }
        Ok(e)
    }

    fn init(
        &mut self,
        exe: &mut dyn Executor,
        resumed: &IndexMap<String, Tensor>,
    ) -> Result<(), ModelsError> {
        if self.g.kl_beta > 0.0 {
            let specs = crate::llada::param_specs(&self.cfg);
            if resumed.is_empty() {
                self.copy_to_reference(exe)?;
            } else {
                for p in specs {
                    let n = ref_name(&p.name);
                    let t = resumed.get(&n).ok_or_else(|| {
                        ModelsError::Options(format!(
                            "resume: the checkpoint's objective state lacks the reference \
                             policy's '{n}'"
                        ))
                    })?;
                    exe.set_input(&n, t)?;
                }
            }
        }
        if let Some(t) = resumed.get("rollout.index") {
            let index = t.get_f64(0) as usize;
            let get = |k: &str| {
                resumed.get(k).cloned().ok_or_else(|| {
                    ModelsError::Options(format!(
                        "resume: the checkpoint's rollout state lacks '{k}'"
                    ))
                })
            };
            let mut old = Vec::new();
            let mut refl = Vec::new();
            for n in 0..self.g.inner_steps {
                old.push(get(&format!("rollout.old_logp.{n}"))?);
                refl.push(get(&format!("rollout.ref_logp.{n}"))?);
            }
            let stats = resumed
                .iter()
                .filter_map(|(k, v)| {
                    Some((k.strip_prefix("rollout.stats.")?.to_string(), v.get_f64(0)))
                })
                .collect();
            self.rollout = Some(Rollout {
                index,
                ids: get("rollout.input_ids")?.to_i64_vec(),
                reward: get("rollout.reward")?.to_f64_vec(),
                valid: get("rollout.valid")?
                    .to_f64_vec()
                    .iter()
                    .map(|&v| v != 0.0)
                    .collect(),
                key_mask: get("rollout.key_mask")?
                    .to_f64_vec()
                    .iter()
                    .map(|&v| v != 0.0)
                    .collect(),
                old,
                refl,
                stats,
            });
        }
        Ok(())
    }

    fn data(
        &mut self,
        step: usize,
        exe: &mut dyn Executor,
    ) -> Result<IndexMap<String, Tensor>, ModelsError> {
        let mu = self.g.inner_steps;
        let (index, n) = (step / mu, step % mu);
        if self.g.kl_beta > 0.0
            && self.g.ref_refresh > 0
            && step > 0
            && step.is_multiple_of(self.g.ref_refresh)
        {
            self.copy_to_reference(exe)?;
        }
        if self.rollout.as_ref().is_none_or(|r| r.index != index) {
            self.rollout = Some(self.roll_out(index, exe)?);
        }
        let r = self
            .rollout
            .as_ref()
            .ok_or_else(|| ModelsError::Options("internal: no rollout batch".into()))?;
        let (mask, scored) = self.mask(index, n, step, &self.spans(&r.ids))?;
        let (b, l) = (self.spec.rows(), self.spec.seq);
        let mut ins = IndexMap::new();
        ins.insert(
            "input_ids".to_string(),
            Tensor::from_i64(Shape(vec![b, l]), r.ids.clone())?,
        );
        ins.insert("masked".to_string(), mask);
        ins.insert("scored".to_string(), scored);
        ins.insert("key_mask".to_string(), bool_tensor(&r.key_mask, [b, l])?);
        ins.insert("old_logp".to_string(), r.old[n].clone());
        ins.insert("ref_logp".to_string(), r.refl[n].clone());
        ins.insert(
            "reward".to_string(),
            Tensor::from_f64(DType::F32, [b], &r.reward)?,
        );
        ins.insert("valid".to_string(), bool_tensor(&r.valid, [b])?);
        Ok(ins)
    }

    fn metrics(&mut self, out: &IndexMap<String, Tensor>) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        for k in ["objective", "kl", "clip_frac", "entropy", "kept"] {
            if let Some(t) = out.get(k) {
                m.insert(k.to_string(), t.get_f64(0));
            }
        }
        if let Some(r) = &self.rollout {
            m.extend(r.stats.iter().map(|(k, v)| (k.clone(), *v)));
        }
        m
    }

    fn curves(&self) -> Vec<(&'static str, &'static str, &'static str)> {
        vec![
            (
                "reward_mean",
                "mmada train --stage unigrpo: mean reward of the rollout batch",
                "reward",
            ),
            (
                "kl",
                "mmada train --stage unigrpo: KL to the reference policy (k3)",
                "KL (nats per token)",
            ),
        ]
    }

    fn state(&self, exe: &mut dyn Executor) -> Result<IndexMap<String, Tensor>, ModelsError> {
        let mut s = IndexMap::new();
        if self.g.kl_beta > 0.0 {
            for p in crate::llada::param_specs(&self.cfg) {
                let n = ref_name(&p.name);
                s.insert(n.clone(), exe.get_input(&n)?);
            }
        }
        if let Some(r) = &self.rollout {
            let (b, l) = (self.spec.rows(), self.spec.seq);
            s.insert("rollout.index".into(), scalar_i64(r.index as i64)?);
            s.insert(
                "rollout.input_ids".into(),
                Tensor::from_i64(Shape(vec![b, l]), r.ids.clone())?,
            );
            s.insert(
                "rollout.reward".into(),
                Tensor::from_f64(DType::F64, [b], &r.reward)?,
            );
            s.insert("rollout.valid".into(), bool_tensor(&r.valid, [b])?);
            s.insert("rollout.key_mask".into(), bool_tensor(&r.key_mask, [b, l])?);
            for (n, (o, rf)) in r.old.iter().zip(&r.refl).enumerate() {
                s.insert(format!("rollout.old_logp.{n}"), o.clone());
                s.insert(format!("rollout.ref_logp.{n}"), rf.clone());
            }
            for (k, v) in &r.stats {
                s.insert(
                    format!("rollout.stats.{k}"),
                    Tensor::from_f64(DType::F64, Shape::scalar(), &[*v])?,
                );
            }
        }
        Ok(s)
    }

    fn position(&self) -> DataPosition {
        self.batcher.pos
    }

    fn tokens_per_step(&self) -> usize {
        self.spec.rows() * self.spec.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--reward t2i` rows of 110 (Lt 43): the inner steps mask only the 64 image positions
    /// (45..109), score only masked ones, and never hide the `<|eoi|>` after the image or the
    /// caption before it; captions that do not fit a short text block are left out and
    /// counted, not cut.
    #[test]
    fn t2i_masks_cover_the_image_only_and_short_blocks_skip_long_captions() {
        let cfg = LladaConfig::preset("tiny").unwrap();
        let tok = TextTokenizer::tiny().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let run = GrpoRun {
            prompts: 2,
            seed: 7,
            data: Vec::new(),
            out: dir.path().to_path_buf(),
        };
        let mut g = GrpoOptions {
            reward: "t2i".into(),
            group_size: 2,
            inner_steps: 3,
            prompt_len: 70,
            ..GrpoOptions::default()
        };
        g.rollout.gen_length = 40;
        let reward = || crate::reward::by_name("t2i", None).unwrap();
        let u = UniGrpo::new(&run, &g, &cfg, &tok, reward(), DataPosition::default()).unwrap();
        assert_eq!((u.prompts(), u.skipped()), (80, 0));
        assert_eq!(u.spec.vocab, Some((1041, 256)));
        let ids = vec![5i64; 4 * 110];
        let spans = u.spans(&ids);
        let mut masked_any = 0;
        for n in 0..3 {
            let (input, scored) = u.mask(1, n, 3 + n, &spans).unwrap();
            let (input, scored) = (input.to_bool_vec(), scored.to_bool_vec());
            for (i, (&m, &s)) in input.iter().zip(&scored).enumerate() {
                let p = i % 110;
                let image = (45..109).contains(&p);
                assert!(!m || image, "step {n}: position {p} masked in the input");
                assert!(!s || (m && image), "step {n}: position {p} scored");
                masked_any += usize::from(m);
            }
        }
        assert!(masked_any > 0);
        // Rows of 70 + 5: Lt = 8, a block of 9 for `<|t2i|>`, the caption and its end: the
        // short captions ("zero", "handwritten 0") fit, the long ones do not.
        g.rollout.gen_length = 5;
        let short = UniGrpo::new(&run, &g, &cfg, &tok, reward(), DataPosition::default()).unwrap();
        assert!(short.skipped() > 0 && short.prompts() + short.skipped() == 80);
        assert!(short.prompts() > 0);
        // Rows of 70: Lt = 3, too short for any caption: one clear error.
        g.rollout.gen_length = 0;
        let e = UniGrpo::new(&run, &g, &cfg, &tok, reward(), DataPosition::default())
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("no caption of the t2i task fits"),
            "{e}"
        );
        // No text block at all: one clear error.
        g.prompt_len = 68;
        let e = UniGrpo::new(&run, &g, &cfg, &tok, reward(), DataPosition::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("no room for the caption"), "{e}");
    }
}
