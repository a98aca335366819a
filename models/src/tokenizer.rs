//! The text tokenizer (HF `tokenizers` reading a `tokenizer.json`, as MMaDA checkpoints ship)
//! and the chat template of spec §3.1.

use crate::ModelsError;
use std::path::Path;

/// The tiny tokenizer of the embedded default (1024 byte-level BPE tokens + 17 MMaDA special
/// tokens at 1024..=1040; see models/assets/tokenizer/tiny/README.md).
pub const TINY_TOKENIZER_JSON: &str = include_str!("../assets/tokenizer/tiny/tokenizer.json");

/// A text tokenizer with the MMaDA special-token ids.
pub struct TextTokenizer {
    tok: tokenizers::Tokenizer,
    /// `<|startoftext|>`.
    pub bos: i64,
    /// `<|endoftext|>`.
    pub eos: i64,
    /// `<|start_header_id|>`.
    pub start_header: i64,
    /// `<|end_header_id|>`.
    pub end_header: i64,
    /// `<|eot_id|>`.
    pub eot_id: i64,
    /// `<|mdm_mask|>` (`[MASK]`).
    pub mask: i64,
}

impl TextTokenizer {
    fn from_tokenizer(
        tok: tokenizers::Tokenizer,
        path: &str,
    ) -> Result<TextTokenizer, ModelsError> {
        let id = |t: &str| {
            tok.token_to_id(t)
                .map(|v| v as i64)
                .ok_or_else(|| ModelsError::MissingSpecial {
                    path: path.to_string(),
                    token: t.to_string(),
                })
        };
        Ok(TextTokenizer {
            bos: id("<|startoftext|>")?,
            eos: id("<|endoftext|>")?,
            start_header: id("<|start_header_id|>")?,
            end_header: id("<|end_header_id|>")?,
            eot_id: id("<|eot_id|>")?,
            mask: id("<|mdm_mask|>")?,
            tok,
        })
    }

    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<TextTokenizer, ModelsError> {
        let p = path.display().to_string();
        let tok =
            tokenizers::Tokenizer::from_file(path).map_err(|e| ModelsError::TokenizerLoad {
                path: p.clone(),
                msg: e.to_string(),
            })?;
        TextTokenizer::from_tokenizer(tok, &p)
    }

    /// The embedded tiny tokenizer.
    pub fn tiny() -> Result<TextTokenizer, ModelsError> {
        let tok: tokenizers::Tokenizer =
            TINY_TOKENIZER_JSON
                .parse()
                .map_err(|e: tokenizers::Error| ModelsError::TokenizerLoad {
                    path: "<embedded tiny tokenizer>".into(),
                    msg: e.to_string(),
                })?;
        TextTokenizer::from_tokenizer(tok, "<embedded tiny tokenizer>")
    }

    /// Number of ids (with special tokens).
    pub fn len(&self) -> usize {
        self.tok.get_vocab_size(true)
    }

    /// True when the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token ids of `text` (special tokens written in the text are recognised; nothing is
    /// added).
    pub fn encode(&self, text: &str) -> Result<Vec<i64>, ModelsError> {
        let e = self
            .tok
            .encode(text, false)
            .map_err(|e| ModelsError::Encode(e.to_string()))?;
        Ok(e.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// Text of ids, skipping special tokens.
    pub fn decode(&self, ids: &[i64]) -> Result<String, ModelsError> {
        let v: Vec<u32> = ids.iter().filter(|&&i| i >= 0).map(|&i| i as u32).collect();
        self.tok
            .decode(&v, true)
            .map_err(|e| ModelsError::Encode(e.to_string()))
    }

    /// The chat template of spec §3.1: `BOS` then, per message,
    /// `<|start_header_id|>{role}<|end_header_id|>\n{content.strip()}<|eot_id|>`, then the
    /// assistant header `<|start_header_id|>assistant<|end_header_id|>\n` (single newline).
    pub fn chat_prompt(&self, messages: &[(&str, &str)]) -> Result<Vec<i64>, ModelsError> {
        let mut ids = vec![self.bos];
        for (role, content) in messages {
            ids.push(self.start_header);
            ids.extend(self.encode(role)?);
            ids.push(self.end_header);
            ids.extend(self.encode(&format!("\n{}", content.trim()))?);
            ids.push(self.eot_id);
        }
        ids.push(self.start_header);
        ids.extend(self.encode("assistant")?);
        ids.push(self.end_header);
        ids.extend(self.encode("\n")?);
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_tokenizer_special_ids_and_chat_template() {
        let t = TextTokenizer::tiny().unwrap();
        assert_eq!(t.len(), 1041);
        assert_eq!((t.bos, t.eos, t.mask), (1024, 1025, 1037));
        assert_eq!((t.start_header, t.end_header, t.eot_id), (1038, 1039, 1040));
        let p = t.chat_prompt(&[("user", "  What is 2+2? ")]).unwrap();
        assert_eq!(p[0], 1024);
        assert_eq!(p[1], 1038);
        assert!(p.contains(&1040));
        let text = t.decode(&p).unwrap();
        assert!(
            text.contains("What is 2+2?") && text.contains("assistant"),
            "{text}"
        );
        let s = "Natalia sold 48 clips in April × 2 = 96 €.";
        assert_eq!(t.decode(&t.encode(s).unwrap()).unwrap(), s);
    }
}
