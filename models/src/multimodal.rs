//! `mmada train --multimodal`: text-to-image, multimodal-understanding and text rows in one
//! batch (spec §4.2, §8.2), on the embedded digits by default.
//!
//! The image–text data is built from the embedded handwritten digits ([`crate::digits`]):
//! - every digit is image codes of the image tokenizer: of the committed `vq-digits` by default
//!   (32 px → 8×8 = 64 codes of 256; its codes are committed beside it, see
//!   [`crate::digit_codes`]), or of the `--vq` tokenizer, which encodes them at the start;
//! - **t2i** items are the training captions (`captions.jsonl`, two per image); 10 % of the t2i
//!   rows of a step (`cond_dropout`, the reference's `cond_dropout_prob`) get the CFG null
//!   prompt instead of their caption, chosen by a Philox draw keyed by the seed, the step and
//!   the row, so a resumed run draws the same;
//! - **mmu** items pair every training image with every question of `questions.json`; the
//!   answer is the question's format of the image's label (`classes[label].answers`);
//! - **text** rows are the text data of `mmada train` (the embedded corpus by default).
//!
//! The three item lists are shuffled and served by their own [`Batcher`], whose positions are
//! saved in checkpoints (`data` for text, `streams.t2i` and `streams.mmu`). The step graph is
//! [`crate::multimodal_step`]; the trainer runs it as an objective (`crate::trainer`).

use crate::data::{Batcher, DataPosition, Row};
use crate::digit_codes::{digit_codes, embedded_digit_codes};
use crate::digits::{Digits, CAPTIONS, SIDE};
use crate::image_tokenizer::{embedded_vq_digits, load_magvit};
use crate::loss::rng_offset;
use crate::loss::RowKind;
use crate::magvit::MagvitConfig;
use crate::multimodal_step::{mixed_train_step_graph, MixCoefs, MixShape};
use crate::prompt::{Image, Layout, Prompter};
use crate::tokenizer::TextTokenizer;
use crate::train_step::StepHyper;
use crate::vocab::UnifiedVocab;
use crate::ModelsError;
use indexmap::IndexMap;
use mmada_ir::{DType, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The questions of the mmu rows (`models/assets/data/digits/questions.json`).
pub const QUESTIONS: &str = include_str!("../assets/data/digits/questions.json");

/// Options of the multimodal mix (the `--multimodal` flags of `mmada train`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MultimodalOptions {
    /// Image tokenizer directory (default: the committed `vq-digits`, built in).
    pub vq: Option<PathBuf>,
    /// Text-to-image rows per batch.
    pub batch_t2i: usize,
    /// Multimodal-understanding rows per batch.
    pub batch_mmu: usize,
    /// Loss coefficient of the t2i rows.
    pub coef_t2i: f64,
    /// Loss coefficient of the mmu rows.
    pub coef_mmu: f64,
    /// Fraction of t2i rows trained with the null caption (CFG dropout).
    pub cond_dropout: f64,
    /// Lowest masking ratio of the mmu answers: their `t` is uniform on `[floor, 1]` instead
    /// of the reference's `[0, 1]` (see `benches/RESULTS.md`: a small model learns to read the
    /// image from mostly-masked answers).
    #[serde(default)]
    pub mmu_mask_floor: f64,
}

impl Default for MultimodalOptions {
    fn default() -> Self {
        MultimodalOptions {
            vq: None,
            batch_t2i: 4,
            batch_mmu: 2,
            coef_t2i: 1.0,
            coef_mmu: 1.0,
            cond_dropout: 0.1,
            mmu_mask_floor: 0.0,
        }
    }
}

impl MultimodalOptions {
    /// Checks the numbers; errors name the option.
    pub fn check(&self) -> Result<(), String> {
        for (name, v) in [("coef-t2i", self.coef_t2i), ("coef-mmu", self.coef_mmu)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("--{name} must be a finite number ≥ 0, got {v}"));
            }
        }
        if !(self.mmu_mask_floor.is_finite() && (0.0..1.0).contains(&self.mmu_mask_floor)) {
            return Err(format!(
                "--mmu-mask-floor must be in [0, 1), got {}",
                self.mmu_mask_floor
            ));
        }
        if !(self.cond_dropout.is_finite() && (0.0..=1.0).contains(&self.cond_dropout)) {
            return Err(format!(
                "--cond-dropout must be between 0 and 1, got {}",
                self.cond_dropout
            ));
        }
        Ok(())
    }
}

/// What the mix takes from the run's options.
#[derive(Clone, Copy, Debug)]
pub struct MixRun {
    /// Row length `L` (`--seq`).
    pub seq: usize,
    /// Text rows per batch (`--batch`).
    pub batch: usize,
    /// Seed of data order, caption dropout and noise.
    pub seed: u64,
    /// Loss coefficient of the text rows.
    pub coef_lm: f64,
}

/// The image tokenizer of a run: the directory's, or the built-in `vq-digits`.
pub fn image_tokenizer(
    m: &MultimodalOptions,
) -> Result<(MagvitConfig, IndexMap<String, Tensor>), ModelsError> {
    match &m.vq {
        Some(dir) => load_magvit(dir),
        None => embedded_vq_digits(),
    }
}

#[derive(Deserialize)]
struct QuestionFile {
    questions: Vec<Question>,
    classes: Vec<Class>,
}

#[derive(Deserialize)]
struct Question {
    question: String,
    answer_format: String,
}

#[derive(Deserialize)]
struct Class {
    label: u8,
    answers: BTreeMap<String, String>,
}

/// The questions and, per label, the answer of each question (`answers[label][question]`).
fn questions() -> Result<(Vec<String>, Vec<Vec<String>>), ModelsError> {
    let name = "<embedded>/digits/questions.json";
    let q: QuestionFile = serde_json::from_str(QUESTIONS)
        .map_err(|e| ModelsError::Options(format!("{name}: {e}")))?;
    let mut answers = vec![Vec::new(); 10];
    for c in &q.classes {
        let row = answers
            .get_mut(c.label as usize)
            .ok_or_else(|| ModelsError::Options(format!("{name}: label {} > 9", c.label)))?;
        for qu in &q.questions {
            let a = c.answers.get(&qu.answer_format).ok_or_else(|| {
                ModelsError::Options(format!(
                    "{name}: class {} has no '{}' answer",
                    c.label, qu.answer_format
                ))
            })?;
            row.push(a.clone());
        }
    }
    if answers.iter().any(|a| a.len() != q.questions.len()) {
        return Err(ModelsError::Options(format!(
            "{name}: every label 0–9 needs its answers"
        )));
    }
    Ok((
        q.questions.into_iter().map(|q| q.question).collect(),
        answers,
    ))
}

/// A caption of a training image.
#[derive(Clone, Debug)]
struct CaptionItem {
    image: usize,
    caption: String,
}

/// An (image, question) pair.
#[derive(Clone, Copy, Debug)]
struct QuestionItem {
    image: usize,
    question: usize,
}

#[derive(Deserialize)]
struct CaptionLine {
    image: usize,
    caption: String,
    split: String,
}

/// The training captions of `captions.jsonl`.
fn caption_items(digits: &Digits) -> Result<Vec<CaptionItem>, ModelsError> {
    let mut out = Vec::new();
    for (i, line) in CAPTIONS.lines().enumerate() {
        let c: CaptionLine = serde_json::from_str(line).map_err(|e| ModelsError::DataLine {
            path: "<embedded>/digits/captions.jsonl".into(),
            line: i + 1,
            msg: e.to_string(),
        })?;
        if c.split == "train" && c.image < digits.len() && !digits.test[c.image] {
            out.push(CaptionItem {
                image: c.image,
                caption: c.caption,
            });
        }
    }
    Ok(out)
}

/// The multimodal objective: a t2i, an mmu and a text batcher, the digits' codes, and the
/// prompter that lays rows out.
pub struct Multimodal {
    seed: u64,
    coef_lm: f64,
    m: MultimodalOptions,
    mix: MixShape,
    tok: TextTokenizer,
    vocab: UnifiedVocab,
    codes: Vec<Vec<i64>>,
    labels: Vec<u8>,
    questions: Vec<String>,
    answers: Vec<Vec<String>>,
    t2i: Batcher<CaptionItem>,
    mmu: Batcher<QuestionItem>,
    text: Batcher<Row>,
}

/// Stream names in checkpoints.
const T2I: &str = "t2i";
const MMU: &str = "mmu";

impl Multimodal {
    /// The objective of run `run` with the mix `m`: encodes the digits, lays out the items, and
    /// resumes the streams at `text_pos` and `streams`. `rows_of_model` is the model's
    /// embedding rows (the image codes must fit after the text ids).
    pub fn new(
        m: &MultimodalOptions,
        run: MixRun,
        tok: TextTokenizer,
        rows_of_model: usize,
        text_rows: Vec<Row>,
        text_pos: DataPosition,
        streams: &BTreeMap<String, DataPosition>,
    ) -> Result<Multimodal, ModelsError> {
        let m = m.clone();
        let (vq_cfg, vq_weights) = image_tokenizer(&m)?;
        let f = vq_cfg.factor();
        if !SIDE.is_multiple_of(f) {
            return Err(ModelsError::Options(format!(
                "the image tokenizer downsamples by {f}, which does not divide the {SIDE} px digits"
            )));
        }
        let n = (SIDE / f) * (SIDE / f);
        let vocab = UnifiedVocab::from_tokenizer(
            &tok,
            "the run's tokenizer",
            vq_cfg.codebook_size(),
            rows_of_model,
        )?;
        let too_short = || {
            ModelsError::Options(format!(
                "--seq {}: a multimodal row holds {n} image tokens, <|soi|>, <|eoi|>, a task \
                 token and at least BOS and EOS, so --seq must be at least {}",
                run.seq,
                n + 5
            ))
        };
        let text_len = run
            .seq
            .checked_sub(n + 3)
            .filter(|&t| t >= 2)
            .ok_or_else(too_short)?;
        let mix = MixShape {
            t2i: m.batch_t2i,
            mmu: m.batch_mmu,
            lm: run.batch,
            text_len,
            image_tokens: n,
        };
        let digits = Digits::embedded()?;
        // The built-in tokenizer's codes are committed beside it; another is run on the digits.
        let codes = match &m.vq {
            None => embedded_digit_codes()?,
            Some(_) => digit_codes(&vq_cfg, &vq_weights, &digits)?,
        };
        if codes.len() != digits.len() || codes.iter().any(|c| c.len() != n) {
            return Err(ModelsError::Options(format!(
                "the digits' codes are not {} × {n}",
                digits.len()
            )));
        }
        let (questions, answers) = questions()?;
        let caps = caption_items(&digits)?;
        let pairs: Vec<QuestionItem> = digits
            .indices(false)
            .into_iter()
            .flat_map(|image| {
                (0..questions.len()).map(move |question| QuestionItem { image, question })
            })
            .collect();
        // Every question with every answer must fit the text budget whole (a cut answer would
        // teach nothing); captions are cut as spec §3.2 says.
        let mut longest = (0, "", "");
        {
            let p = Prompter::new(&tok, &vocab, text_len)?;
            for q in &questions {
                for a in answers.iter().flatten() {
                    let convo = format!("{}{a}", p.chat_text(&[("user", q)]));
                    let need = p.text_ids(&convo)?.len() + 1;
                    if need > longest.0 {
                        longest = (need, q.as_str(), a.as_str());
                    }
                }
            }
        }
        let (need, q, a) = longest;
        if need > text_len {
            return Err(ModelsError::Options(format!(
                "--seq {}: the text budget is {text_len} tokens (seq − {n} image tokens − 3), but \
                 the question {q:?} with the answer {a:?} needs {need}; use --seq {} or more",
                run.seq,
                need + n + 3
            )));
        }
        let pos = |k: &str| streams.get(k).copied().unwrap_or_default();
        // Each stream gets its own order: the seed is mixed with the stream's name.
        let t2i = Batcher::new(caps, run.seed ^ 0x7432_6900, pos(T2I))?;
        let mmu = Batcher::new(pairs, run.seed ^ 0x6d6d_7500, pos(MMU))?;
        let text = Batcher::new(text_rows, run.seed, text_pos)?;
        Ok(Multimodal {
            seed: run.seed,
            coef_lm: run.coef_lm,
            m,
            mix,
            tok,
            vocab,
            codes,
            labels: digits.labels.clone(),
            questions,
            answers,
            t2i,
            mmu,
            text,
        })
    }

    /// The batch shape.
    pub fn mix(&self) -> MixShape {
        self.mix
    }

    /// True when t2i row `row` of step `step` gets the null caption (a Philox draw below
    /// `cond_dropout`).
    pub fn drops_caption(&self, step: usize, row: usize) -> bool {
        let w = mmada_ir::philox::words(self.seed as i64, rng_offset(step), 0xC0D0, row as u64);
        (w[0] as f64 / 4_294_967_296.0) < self.m.cond_dropout
    }

    /// The layouts of step `step`'s rows, in batch order (t2i, mmu), and the text rows; advances
    /// the streams.
    pub fn layouts(&mut self, step: usize) -> Result<(Vec<Layout>, Vec<Row>), ModelsError> {
        let p = Prompter::new(&self.tok, &self.vocab, self.mix.text_len)?;
        let mut out = Vec::with_capacity(self.mix.t2i + self.mix.mmu);
        for (row, item) in self.t2i.next_batch(self.mix.t2i).into_iter().enumerate() {
            let caption = if self.drops_caption(step, row) {
                ""
            } else {
                item.caption.as_str()
            };
            out.push(p.t2i(caption, Image::Codes(&self.codes[item.image]))?);
        }
        for item in self.mmu.next_batch(self.mix.mmu) {
            let label = self.labels[item.image] as usize;
            out.push(p.mmu(
                &self.codes[item.image],
                &self.questions[item.question],
                &self.answers[label][item.question],
            )?);
        }
        Ok((out, self.text.next_batch(self.mix.lm)))
    }
}

/// The row weights of the mmu and text rows (spec §4.2): `1/(B_mmu·A_b)` for mmu rows, and for
/// text rows `1/(B_lm·L)` (pretraining) or `1/(B_lm·A_b)` (chat/SFT), so `L_mmu` and `L_lm` are
/// each a mean over their rows.
pub fn mixed_row_weights(mmu_answer_lens: &[usize], text: &[RowKind], seq: usize) -> Vec<f64> {
    let nm = mmu_answer_lens.len().max(1) as f64;
    let nt = text.len().max(1) as f64;
    let mmu = mmu_answer_lens
        .iter()
        .map(|&a| 1.0 / (nm * a.max(1) as f64));
    let txt = text.iter().map(|k| match *k {
        RowKind::Lm => 1.0 / (nt * seq as f64),
        RowKind::Sft { answer_len } => 1.0 / (nt * answer_len.max(1) as f64),
    });
    mmu.chain(txt).collect()
}

impl Multimodal {
    /// The compiled step's graph.
    pub fn step_graph(
        &self,
        cfg: &crate::config::LladaConfig,
        hyper: StepHyper,
    ) -> Result<mmada_ir::Graph, ModelsError> {
        let coefs = MixCoefs {
            t2i: self.m.coef_t2i,
            mmu: self.m.coef_mmu,
            lm: self.coef_lm,
            mmu_mask_floor: self.m.mmu_mask_floor,
        };
        Ok(mixed_train_step_graph(cfg, self.mix, coefs, hyper)?)
    }

    /// The data inputs of step `step` (advances the streams).
    pub fn data(&mut self, step: usize) -> Result<IndexMap<String, Tensor>, ModelsError> {
        let (layouts, text) = self.layouts(step)?;
        let (b, l) = (self.mix.rows(), self.mix.seq());
        let mut ids = Vec::with_capacity(b * l);
        let mut prompt = Vec::with_capacity(b * l);
        let mut keys = Vec::with_capacity(b * l);
        let mut answer_lens = Vec::new();
        for lay in &layouts {
            if lay.len() != l {
                return Err(ModelsError::Options(format!(
                    "a {:?} row has {} ids, not {l}",
                    lay.task,
                    lay.len()
                )));
            }
            ids.extend_from_slice(&lay.ids);
            prompt.extend(lay.prompt_mask.iter().map(|&p| p as u8 as f64));
            keys.extend(lay.key_mask.iter().map(|&k| k as u8 as f64));
            if lay.task == crate::prompt::Task::Mmu {
                answer_lens.push(lay.prompt_mask.iter().filter(|&&p| !p).count());
            }
        }
        for r in &text {
            ids.extend_from_slice(&r.ids);
            prompt.extend((0..l).map(|i| (i < r.prompt_len) as u8 as f64));
            keys.extend(std::iter::repeat_n(1.0, l));
        }
        let kinds: Vec<RowKind> = text.iter().map(|r| r.kind).collect();
        let w = mixed_row_weights(&answer_lens, &kinds, l);
        let mut m = IndexMap::new();
        m.insert("input_ids".into(), Tensor::from_i64([b, l], ids)?);
        m.insert(
            "prompt_mask".into(),
            Tensor::from_f64(DType::Bool, [b, l], &prompt)?,
        );
        m.insert(
            "key_mask".into(),
            Tensor::from_f64(DType::Bool, [b, l], &keys)?,
        );
        if !w.is_empty() {
            m.insert(
                "row_weight".into(),
                Tensor::from_f64(DType::F32, [w.len()], &w)?,
            );
        }
        m.insert(
            "seed".into(),
            Tensor::from_i64(Vec::<usize>::new(), vec![self.seed as i64])?,
        );
        m.insert(
            "offset".into(),
            Tensor::from_i64(Vec::<usize>::new(), vec![rng_offset(step)])?,
        );
        Ok(m)
    }

    /// Where the text stream is.
    pub fn position(&self) -> DataPosition {
        self.text.pos
    }

    /// Where the t2i and mmu streams are.
    pub fn streams(&self) -> BTreeMap<String, DataPosition> {
        BTreeMap::from([
            (T2I.to_string(), self.t2i.pos),
            (MMU.to_string(), self.mmu.pos),
        ])
    }

    /// Tokens per step.
    pub fn tokens_per_step(&self) -> usize {
        self.mix.rows() * self.mix.seq()
    }
}
