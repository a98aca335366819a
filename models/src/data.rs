//! Training data: JSONL rows, tokenised into fixed-length rows, shuffled deterministically and
//! served in mixed batches.
//!
//! Row formats (one JSON object per line):
//! - `{"text": ...}`: plain text, a pretraining (LM) row: `BOS text EOS`, EOS-padded;
//! - `{"prompt": ..., "answer": ...}`: a chat/SFT row: the chat template of spec §3.1 around the
//!   prompt (never masked), then `answer EOS`, EOS-padded (padding is a target, spec §4.2);
//! - `{"question": ..., "cot": ..., "answer": ...}`: a chain-of-thought row, an SFT row whose
//!   answer is `cot`, a newline and `#### answer` (GSM8K style).
//!
//! Rows longer than the sequence length keep their prompt and lose the end of the answer
//! (LM rows: the end of the text); rows whose prompt alone does not fit are skipped and counted.

use crate::loss::RowKind;
use crate::tokenizer::TextTokenizer;
use crate::ModelsError;
use serde::Deserialize;
use std::path::Path;

/// The embedded default dataset: GSM-style problems with step-by-step answers (reasoning-gym
/// 0.1.25, seed 42) and paragraphs of a public-domain novel (models/assets/data/README.md).
pub const EMBEDDED_GSM: &str = include_str!("../assets/data/gsm_symbolic.jsonl");
/// Plain-text rows of the embedded default.
pub const EMBEDDED_TEXT: &str = include_str!("../assets/data/text.jsonl");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRow {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    question: Option<String>,
    #[serde(default)]
    cot: Option<String>,
    #[serde(default)]
    answer: Option<String>,
}

/// One tokenised training row of exactly `seq` ids.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Token ids (EOS-padded).
    pub ids: Vec<i64>,
    /// Number of leading prompt positions (never masked); 0 for LM rows.
    pub prompt_len: usize,
    /// LM or SFT.
    pub kind: RowKind,
}

/// Rows of a dataset and how many were skipped because their prompt does not fit.
#[derive(Clone, Debug, Default)]
pub struct Rows {
    /// The rows.
    pub rows: Vec<Row>,
    /// Rows skipped (prompt longer than the sequence).
    pub skipped: usize,
}

/// Tokenises one JSONL text (from `path`, for messages) into rows of length `seq`.
pub fn parse_jsonl(
    text: &str,
    path: &str,
    tok: &TextTokenizer,
    seq: usize,
) -> Result<Rows, ModelsError> {
    let mut rows = Vec::new();
    let mut skipped = 0;
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |msg: String| ModelsError::DataLine {
            path: path.to_string(),
            line: lineno,
            msg,
        };
        let raw: RawRow =
            serde_json::from_str(line).map_err(|e| bad(format!("not a valid row: {e}")))?;
        let row = match raw {
            RawRow { text: Some(t), prompt: None, question: None, cot: None, answer: None } => {
                let mut ids = vec![tok.bos];
                ids.extend(tok.encode(&t)?);
                ids.push(tok.eos);
                ids.truncate(seq);
                ids.resize(seq, tok.eos);
                Row { ids, prompt_len: 0, kind: RowKind::Lm }
            }
            RawRow { text: None, prompt: Some(p), question: None, cot: None, answer: Some(a) } => {
                match sft_row(tok, &p, &a, seq)? {
                    Some(r) => r,
                    None => {
                        skipped += 1;
                        continue;
                    }
                }
            }
            RawRow { text: None, prompt: None, question: Some(q), cot: Some(c), answer: Some(a) } => {
                let answer = format!("{}\n#### {}", c.trim(), a.trim());
                match sft_row(tok, &q, &answer, seq)? {
                    Some(r) => r,
                    None => {
                        skipped += 1;
                        continue;
                    }
                }
            }
            _ => {
                return Err(bad(
                    "expected {\"text\"}, {\"prompt\", \"answer\"} or {\"question\", \"cot\", \"answer\"}".into(),
                ))
            }
        };
        rows.push(row);
    }
    Ok(Rows { rows, skipped })
}

/// An SFT row, or `None` when the prompt alone fills the sequence.
fn sft_row(
    tok: &TextTokenizer,
    prompt: &str,
    answer: &str,
    seq: usize,
) -> Result<Option<Row>, ModelsError> {
    let mut ids = tok.chat_prompt(&[("user", prompt)])?;
    let prompt_len = ids.len();
    if prompt_len >= seq {
        return Ok(None);
    }
    ids.extend(tok.encode(answer)?);
    ids.push(tok.eos);
    ids.truncate(seq);
    ids.resize(seq, tok.eos);
    Ok(Some(Row {
        ids,
        prompt_len,
        kind: RowKind::Sft {
            answer_len: seq - prompt_len,
        },
    }))
}

/// Reads a JSONL file into rows.
pub fn read_jsonl(path: &Path, tok: &TextTokenizer, seq: usize) -> Result<Rows, ModelsError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ModelsError::Io {
        path: p.clone(),
        source: e,
    })?;
    parse_jsonl(&text, &p, tok, seq)
}

/// The embedded default dataset, tokenised.
pub fn embedded_rows(tok: &TextTokenizer, seq: usize) -> Result<Rows, ModelsError> {
    let mut rows = parse_jsonl(EMBEDDED_GSM, "<embedded>/gsm_symbolic.jsonl", tok, seq)?;
    let text = parse_jsonl(EMBEDDED_TEXT, "<embedded>/text.jsonl", tok, seq)?;
    rows.rows.extend(text.rows);
    rows.skipped += text.skipped;
    Ok(rows)
}

/// Where a data stream is: epoch and position inside the epoch's order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataPosition {
    /// Epoch number.
    pub epoch: u64,
    /// Index of the next row in this epoch's order.
    pub cursor: usize,
}

/// Serves rows (or any items) in a deterministic shuffled order (a permutation per epoch
/// derived from the seed), batch after batch, and can restart from a [`DataPosition`].
pub struct Batcher<T = Row> {
    rows: Vec<T>,
    seed: u64,
    order: Vec<usize>,
    /// Current position.
    pub pos: DataPosition,
}

fn permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    // Fisher–Yates driven by Philox words: reproducible on every platform.
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let w = mmada_ir::philox::words(seed as i64, (epoch << 32) as i64, 0xDA7A, i as u64);
        let r = ((w[0] as u64) << 32 | w[1] as u64) % (i as u64 + 1);
        v.swap(i, r as usize);
    }
    v
}

impl<T: Clone> Batcher<T> {
    /// A batcher over `rows` starting at `pos`.
    pub fn new(rows: Vec<T>, seed: u64, pos: DataPosition) -> Result<Batcher<T>, ModelsError> {
        if rows.is_empty() {
            return Err(ModelsError::NoRows("dataset".into()));
        }
        let order = permutation(rows.len(), seed, pos.epoch);
        Ok(Batcher {
            rows,
            seed,
            order,
            pos,
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The next `b` rows (crossing into the next epoch, reshuffled, when needed).
    pub fn next_batch(&mut self, b: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(b);
        while out.len() < b {
            if self.pos.cursor >= self.order.len() {
                self.pos.epoch += 1;
                self.pos.cursor = 0;
                self.order = permutation(self.rows.len(), self.seed, self.pos.epoch);
            }
            out.push(self.rows[self.order[self.pos.cursor]].clone());
            self.pos.cursor += 1;
        }
        out
    }
}
