//! Universal prompting (spec §3): the sequence layouts of every MMaDA task, as ids with a
//! prompt mask (positions never masked) and a key mask (positions attention may read).
//!
//! | task | layout | spec |
//! |---|---|---|
//! | [`Prompter::t2i`] | `[iPAD]… <\|t2i\|> BOS caption EOS <\|soi\|> image <\|eoi\|>` | §3.2 |
//! | [`Prompter::mmu`] | `<\|mmu\|> <\|soi\|> image <\|eoi\|> BOS chat answer EOS…` | §3.3 |
//! | [`Prompter::mmu_infer`] | `<\|mmu\|> <\|soi\|> image <\|eoi\|> BOS chat header [MASK]…` | §3.3 |
//! | [`Prompter::lm`] | `BOS text EOS EOS…` | §3.4 |
//! | [`Prompter::chat`], [`Prompter::chat_infer`] | `BOS chat answer EOS…` / `… [MASK]…` | §3.4 |
//! | [`Prompter::r2i`] | `<\|r2i\|> BOS chat <think>…</think> EOS… <\|soi\|> image <\|eoi\|>` | §3.5 |
//!
//! Text always starts with exactly one BOS. The text blocks of t2i (`Lt + 1` ids) and of mmu and
//! r2i (`Lt` ids) have fixed lengths, so rows of all tasks share one batch length (§3.6).

use crate::tokenizer::TextTokenizer;
use crate::vocab::UnifiedVocab;
use crate::ModelsError;
use std::ops::Range;

/// The thinking-mode prefix of mixed long-CoT prompts (spec §3.5), prepended to the question.
pub const THINK_PREFIX: &str = "You should first think about the reasoning process in the mind \
and then provide the user with the answer. The reasoning process is enclosed within <think> \
</think> tags, i.e. <think> reasoning process here </think> answer here\n";

/// The instruction of the reasoning-to-image (r2i) prompt (spec §3.5).
pub const R2I_PREFIX: &str = "You should first think out a more detailed version of the \
description and then provide the user with the image. The detailed description is enclosed \
within <think> </think> tags, i.e. <think> detailed description here </think> image here\n";

/// How a chat turn ends in the text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TurnEnd {
    /// The special token `<|eot_id|>` (the template of spec §3.1, used at inference).
    #[default]
    Special,
    /// The literal text `<eot_id>` (no pipes), as most of the official training-data builders
    /// write it; it tokenizes as ordinary text (spec §3.1, "Quirk").
    Literal,
}

/// The image part of a layout.
#[derive(Clone, Copy, Debug)]
pub enum Image<'a> {
    /// Image codes in `0..codebook_size`, raster order.
    Codes(&'a [i64]),
    /// `n` image positions, all `[MASK]` (generation).
    Masked(usize),
}

/// Which task a layout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Text to image.
    T2i,
    /// Multimodal understanding.
    Mmu,
    /// Plain text.
    Lm,
    /// Chat (text SFT).
    Chat,
    /// Reasoning to image.
    R2i,
}

/// One sequence: ids, what is prompt (never masked), and which keys attention reads.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Layout {
    /// The task.
    pub task: Task,
    /// Unified ids.
    pub ids: Vec<i64>,
    /// True at prompt positions: never masked in training, kept in sampling.
    pub prompt_mask: Vec<bool>,
    /// True where attention may read (false only on t2i's `[iPAD]` padding).
    pub key_mask: Vec<bool>,
    /// Positions of the image tokens, if the layout has an image.
    pub image: Option<Range<usize>>,
}

impl Layout {
    /// Length of the sequence.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when the sequence is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Builds the layouts of spec §3 for one tokenizer and vocabulary.
pub struct Prompter<'a> {
    tok: &'a TextTokenizer,
    vocab: &'a UnifiedVocab,
    /// The text budget `Lt` (`max_seq_length` of the YAMLs).
    pub text_len: usize,
    /// How chat turns end in training rows built from text.
    pub turn_end: TurnEnd,
}

impl<'a> Prompter<'a> {
    /// A prompter with text budget `text_len` (≥ 2: BOS and EOS must fit).
    pub fn new(
        tok: &'a TextTokenizer,
        vocab: &'a UnifiedVocab,
        text_len: usize,
    ) -> Result<Prompter<'a>, ModelsError> {
        if text_len < 2 {
            return Err(ModelsError::Options(format!(
                "text length {text_len}: the text block needs at least BOS and EOS (2)"
            )));
        }
        Ok(Prompter {
            tok,
            vocab,
            text_len,
            turn_end: TurnEnd::Special,
        })
    }

    /// With this turn end.
    pub fn with_turn_end(mut self, turn_end: TurnEnd) -> Prompter<'a> {
        self.turn_end = turn_end;
        self
    }

    /// `tok(s)` with exactly one leading BOS (an empty text is `[BOS]`).
    pub fn text_ids(&self, s: &str) -> Result<Vec<i64>, ModelsError> {
        let ids = self.tok.encode(s)?;
        let bos = self.vocab.ids.bos;
        Ok(if ids.first() == Some(&bos) {
            ids
        } else {
            std::iter::once(bos).chain(ids).collect()
        })
    }

    /// The chat template of spec §3.1 as text, without BOS: per message
    /// `<|start_header_id|>{role}<|end_header_id|>\n{content.strip()}` and the turn end, then the
    /// assistant header `<|start_header_id|>assistant<|end_header_id|>\n`.
    pub fn chat_text(&self, messages: &[(&str, &str)]) -> String {
        let end = match self.turn_end {
            TurnEnd::Special => "<|eot_id|>",
            TurnEnd::Literal => "<eot_id>",
        };
        let mut s = String::new();
        for (role, content) in messages {
            s.push_str(&format!(
                "<|start_header_id|>{role}<|end_header_id|>\n{}{end}",
                content.trim()
            ));
        }
        s.push_str("<|start_header_id|>assistant<|end_header_id|>\n");
        s
    }

    fn image_ids(&self, image: Image) -> Result<Vec<i64>, ModelsError> {
        match image {
            Image::Codes(c) => self.vocab.image_ids(c),
            Image::Masked(n) => Ok(vec![self.vocab.ids.mask; n]),
        }
    }

    /// `ids` then EOS, EOS-padded to `len`; if longer, the first `len − 1` ids and EOS.
    fn fixed_text(&self, mut ids: Vec<i64>, len: usize) -> Vec<i64> {
        let eos = self.vocab.ids.eos;
        ids.push(eos);
        if ids.len() > len {
            ids.truncate(len - 1);
            ids.push(eos);
        }
        ids.resize(len, eos);
        ids
    }

    /// Number of leading positions of `ids` up to and including the last `<|end_header_id|>`
    /// (0 when there is none).
    fn through_last_header(&self, ids: &[i64]) -> usize {
        let h = self.vocab.ids.end_header;
        ids.iter().rposition(|&i| i == h).map_or(0, |p| p + 1)
    }

    /// Text to image (spec §3.2): the text block `<|t2i|> BOS caption EOS` is left-padded with
    /// `[iPAD]` to exactly `Lt + 1` ids; a longer one keeps its first `Lt` ids and ends in EOS.
    /// Then `<|soi|> image <|eoi|>`. Prompt: everything but the image tokens. Key mask: false
    /// on `[iPAD]`. The CFG null prompt is `caption = ""` (see [`Prompter::t2i_null`]).
    pub fn t2i(&self, caption: &str, image: Image) -> Result<Layout, ModelsError> {
        let s = &self.vocab.ids;
        let block = self.text_len + 1;
        let mut text = vec![s.t2i];
        text.extend(self.text_ids(caption)?);
        text.push(s.eos);
        let pad = block.saturating_sub(text.len());
        if text.len() > block {
            text.truncate(block - 1);
            text.push(s.eos);
        }
        let img = self.image_ids(image)?;
        let n = img.len();
        let mut ids = vec![s.ipad; pad];
        ids.extend(text);
        ids.push(s.soi);
        ids.extend(img);
        ids.push(s.eoi);
        let image = block + 1..block + 1 + n;
        let prompt_mask = (0..ids.len()).map(|i| !image.contains(&i)).collect();
        let key_mask = (0..ids.len()).map(|i| i >= pad).collect();
        Ok(Layout {
            task: Task::T2i,
            ids,
            prompt_mask,
            key_mask,
            image: Some(image),
        })
    }

    /// The unconditional (CFG null) t2i prompt: `[iPAD]… <|t2i|> BOS EOS <|soi|> image <|eoi|>`.
    pub fn t2i_null(&self, image: Image) -> Result<Layout, ModelsError> {
        self.t2i("", image)
    }

    /// Multimodal understanding, training layout (spec §3.3): `<|mmu|> <|soi|> image <|eoi|>`
    /// then `BOS chat(question) answer EOS` EOS-padded to exactly `Lt` ids (a longer text keeps
    /// its first `Lt − 1` ids and EOS). Prompt: the image part and the text through the last
    /// `<|end_header_id|>`; the rest (`\n`, answer, padding) is the maskable response.
    pub fn mmu(&self, codes: &[i64], question: &str, answer: &str) -> Result<Layout, ModelsError> {
        let s = &self.vocab.ids;
        let convo = format!("{}{answer}", self.chat_text(&[("user", question)]));
        let text = self.fixed_text(self.text_ids(&convo)?, self.text_len);
        let img = self.vocab.image_ids(codes)?;
        let n = img.len();
        let head = n + 3;
        let prompt = head + self.through_last_header(&text);
        let mut ids = vec![s.mmu, s.soi];
        ids.extend(img);
        ids.push(s.eoi);
        ids.extend(text);
        Ok(Layout {
            task: Task::Mmu,
            prompt_mask: (0..ids.len()).map(|i| i < prompt).collect(),
            key_mask: vec![true; ids.len()],
            ids,
            image: Some(2..2 + n),
        })
    }

    /// The prompt of an mmu question exactly as the training layout ([`Prompter::mmu`]) has
    /// it: `<|mmu|> <|soi|> image <|eoi|> BOS chat(question)` through the last
    /// `<|end_header_id|>` (the newline after it belongs to the answer, as in training, where it
    /// may merge with the answer's first word), and the number of text positions left in the
    /// `Lt` text block for the answer.
    pub fn mmu_prompt(
        &self,
        codes: &[i64],
        question: &str,
    ) -> Result<(Vec<i64>, usize), ModelsError> {
        let l = self.mmu(codes, question, "")?;
        let n = l.prompt_mask.iter().filter(|&&p| p).count();
        let mut ids = l.ids;
        let room = ids.len() - n;
        ids.truncate(n);
        Ok((ids, room))
    }

    /// Multimodal understanding, inference layout (spec §3.3): `<|mmu|> <|soi|> image <|eoi|>`,
    /// then `BOS` and the chat template of `messages` ending with the assistant header, then
    /// `gen_len` `[MASK]`s to be decoded. Prompt: everything before the masks.
    pub fn mmu_infer(
        &self,
        codes: &[i64],
        messages: &[(&str, &str)],
        gen_len: usize,
    ) -> Result<Layout, ModelsError> {
        let s = &self.vocab.ids;
        let img = self.vocab.image_ids(codes)?;
        let n = img.len();
        let mut ids = vec![s.mmu, s.soi];
        ids.extend(img);
        ids.push(s.eoi);
        ids.extend(self.text_ids(&self.chat_text(messages))?);
        Ok(self.with_masks(Task::Mmu, ids, gen_len, Some(2..2 + n)))
    }

    fn with_masks(
        &self,
        task: Task,
        mut ids: Vec<i64>,
        gen_len: usize,
        image: Option<Range<usize>>,
    ) -> Layout {
        let prompt = ids.len();
        ids.extend(std::iter::repeat_n(self.vocab.ids.mask, gen_len));
        Layout {
            task,
            prompt_mask: (0..ids.len()).map(|i| i < prompt).collect(),
            key_mask: vec![true; ids.len()],
            ids,
            image,
        }
    }

    /// Plain text (spec §3.4): `BOS text EOS` EOS-padded to `len`, or its first `len` ids (no
    /// EOS) when longer. No prompt; padding is a target.
    pub fn lm(&self, text: &str, len: usize) -> Result<Layout, ModelsError> {
        let mut ids = self.text_ids(text)?;
        ids.push(self.vocab.ids.eos);
        ids.truncate(len);
        ids.resize(len, self.vocab.ids.eos);
        Ok(Layout {
            task: Task::Lm,
            prompt_mask: vec![false; len],
            key_mask: vec![true; len],
            ids,
            image: None,
        })
    }

    /// Chat SFT (spec §3.4): `BOS chat(messages) answer EOS` EOS-padded to `len` (its first `len`
    /// ids when longer). Prompt: through the last `<|end_header_id|>` (none if truncation cut
    /// it off).
    pub fn chat(
        &self,
        messages: &[(&str, &str)],
        answer: &str,
        len: usize,
    ) -> Result<Layout, ModelsError> {
        let convo = format!("{}{answer}", self.chat_text(messages));
        let mut ids = self.text_ids(&convo)?;
        ids.push(self.vocab.ids.eos);
        ids.truncate(len);
        ids.resize(len, self.vocab.ids.eos);
        let prompt = self.through_last_header(&ids);
        Ok(Layout {
            task: Task::Chat,
            prompt_mask: (0..len).map(|i| i < prompt).collect(),
            key_mask: vec![true; len],
            ids,
            image: None,
        })
    }

    /// Chat inference (spec §3.1, §6.1): `BOS chat(messages)` ending with the assistant header,
    /// then `gen_len` `[MASK]`s.
    pub fn chat_infer(
        &self,
        messages: &[(&str, &str)],
        gen_len: usize,
    ) -> Result<Layout, ModelsError> {
        let ids = self.text_ids(&self.chat_text(messages))?;
        Ok(self.with_masks(Task::Chat, ids, gen_len, None))
    }

    /// Reasoning to image (spec §3.5): `<|r2i|>`, then the text block `BOS
    /// chat(R2I_PREFIX + short) <think>long</think> EOS` EOS-padded to `Lt` ids, then
    /// `<|soi|> image <|eoi|>`. Prompt: the task token, the text through the last
    /// `<|end_header_id|>`, `<|soi|>` and `<|eoi|>`; the think text and the image are maskable.
    pub fn r2i(&self, short: &str, long: &str, image: Image) -> Result<Layout, ModelsError> {
        let s = &self.vocab.ids;
        let question = format!("{R2I_PREFIX}{short}");
        let convo = format!(
            "{}<think>{long}</think>",
            self.chat_text(&[("user", &question)])
        );
        let text = self.fixed_text(self.text_ids(&convo)?, self.text_len);
        // No header left after truncation: the whole text block is prompt (as the reference).
        let prompt_text = match self.through_last_header(&text) {
            0 => text.len(),
            p => p,
        };
        let img = self.image_ids(image)?;
        let n = img.len();
        let soi = 1 + text.len();
        let mut ids = vec![s.r2i];
        ids.extend(text);
        ids.push(s.soi);
        ids.extend(img);
        ids.push(s.eoi);
        let eoi = ids.len() - 1;
        let prompt_mask = (0..ids.len())
            .map(|i| i == 0 || (1..1 + prompt_text).contains(&i) || i == soi || i == eoi)
            .collect();
        Ok(Layout {
            task: Task::R2i,
            key_mask: vec![true; ids.len()],
            ids,
            prompt_mask,
            image: Some(soi + 1..soi + 1 + n),
        })
    }

    /// A mixed long-CoT question (spec §3.5): [`THINK_PREFIX`] then the question; use it as the
    /// user content of [`Prompter::chat`], [`Prompter::mmu`] or their inference forms.
    pub fn cot_question(question: &str) -> String {
        format!("{THINK_PREFIX}{question}")
    }
}
