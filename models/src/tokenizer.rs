//! The text tokenizer (HF `tokenizers` reading a `tokenizer.json`, as MMaDA checkpoints ship)
//! and the chat template of spec §3.1.

use crate::ModelsError;
use std::path::Path;

/// The tiny tokenizer of the embedded default (1024 byte-level BPE tokens + 17 MMaDA special
/// tokens at 1024..=1040; see models/assets/tokenizer/tiny/README.md).
pub const TINY_TOKENIZER_JSON: &str = include_str!("../assets/tokenizer/tiny/tokenizer.json");

/// The chat template of [`TextTokenizer::chat_prompt`] in the Jinja form `tokenizer_config.json`
/// carries (transformers' `apply_chat_template`): BOS, then per message
/// `<|start_header_id|>{role}<|end_header_id|>\n{content.strip()}<|eot_id|>`, then the assistant
/// header and one newline when a generation prompt is asked for.
pub const CHAT_TEMPLATE_JINJA: &str = "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n{{ message['content'] | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n{% endif %}";

/// A `tokenizer.json` as the HF `tokenizers` crate reads it: encoding and decoding only, with
/// no assumption about its special tokens (any real tokenizer, e.g. Qwen3's, loads).
#[derive(Clone)]
pub struct BpeTokenizer {
    tok: tokenizers::Tokenizer,
}

impl BpeTokenizer {
    /// Loads a `tokenizer.json`; errors name the file.
    pub fn from_file(path: &Path) -> Result<BpeTokenizer, ModelsError> {
        let tok =
            tokenizers::Tokenizer::from_file(path).map_err(|e| ModelsError::TokenizerLoad {
                path: path.display().to_string(),
                msg: e.to_string(),
            })?;
        Ok(BpeTokenizer { tok })
    }

    /// Parses the text of a `tokenizer.json` (`name` is used in errors).
    pub fn from_json(json: &str, name: &str) -> Result<BpeTokenizer, ModelsError> {
        let tok: tokenizers::Tokenizer =
            json.parse()
                .map_err(|e: tokenizers::Error| ModelsError::TokenizerLoad {
                    path: name.into(),
                    msg: e.to_string(),
                })?;
        Ok(BpeTokenizer { tok })
    }

    /// The `tokenizer.json` text of this tokenizer (what `from_json` reads back).
    pub fn to_json(&self) -> Result<String, ModelsError> {
        self.tok
            .to_string(true)
            .map_err(|e| ModelsError::TokenizerLoad {
                path: "<tokenizer>".into(),
                msg: format!("serialising tokenizer.json: {e}"),
            })
    }

    /// The added tokens by id: `(id, text, special)`.
    pub fn added_tokens(&self) -> Vec<(u32, String, bool)> {
        let mut v: Vec<(u32, String, bool)> = self
            .tok
            .get_added_tokens_decoder()
            .into_iter()
            .map(|(id, t)| (id, t.content, t.special))
            .collect();
        v.sort();
        v
    }

    /// The id of a token by its exact text (special or ordinary), if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<i64> {
        self.tok.token_to_id(token).map(i64::from)
    }

    /// The text of the token with this id, if any.
    pub fn token_text(&self, id: i64) -> Option<String> {
        u32::try_from(id).ok().and_then(|i| self.tok.id_to_token(i))
    }

    /// Number of ids (with added tokens), `len(tokenizer)` of HF.
    pub fn len(&self) -> usize {
        self.tok.get_vocab_size(true)
    }

    /// True when the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token ids of `text`: added tokens written in the text are recognised; nothing is added
    /// (no BOS).
    pub fn encode(&self, text: &str) -> Result<Vec<i64>, ModelsError> {
        let e = self
            .tok
            .encode(text, false)
            .map_err(|e| ModelsError::Encode(e.to_string()))?;
        Ok(e.get_ids().iter().map(|&i| i64::from(i)).collect())
    }

    fn decode_ids(&self, ids: &[i64], skip_special: bool) -> Result<String, ModelsError> {
        let mut v = Vec::with_capacity(ids.len());
        for &i in ids {
            match u32::try_from(i) {
                Ok(u) if (u as usize) < self.len() => v.push(u),
                _ => {
                    return Err(ModelsError::Encode(format!(
                        "id {i} is not a text id (0..{})",
                        self.len()
                    )))
                }
            }
        }
        self.tok
            .decode(&v, skip_special)
            .map_err(|e| ModelsError::Encode(e.to_string()))
    }

    /// Text of ids, keeping special tokens (as their text). Errors on ids outside the vocabulary.
    pub fn decode_all(&self, ids: &[i64]) -> Result<String, ModelsError> {
        self.decode_ids(ids, false)
    }

    /// Text of ids, skipping special tokens. Errors on ids outside the vocabulary.
    pub fn decode(&self, ids: &[i64]) -> Result<String, ModelsError> {
        self.decode_ids(ids, true)
    }
}

/// A text tokenizer with the MMaDA special-token ids (its [`BpeTokenizer`] is `bpe`, and its
/// methods are reachable through `Deref`).
#[derive(Clone)]
pub struct TextTokenizer {
    bpe: BpeTokenizer,
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

impl std::ops::Deref for TextTokenizer {
    type Target = BpeTokenizer;
    fn deref(&self) -> &BpeTokenizer {
        &self.bpe
    }
}

impl TextTokenizer {
    /// The MMaDA special tokens of a tokenizer; errors name the first one it lacks.
    pub fn from_bpe(bpe: BpeTokenizer, path: &str) -> Result<TextTokenizer, ModelsError> {
        let id = |t: &str| {
            bpe.token_id(t).ok_or_else(|| ModelsError::MissingSpecial {
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
            bpe,
        })
    }

    /// Loads a `tokenizer.json` with the MMaDA special tokens.
    pub fn from_file(path: &Path) -> Result<TextTokenizer, ModelsError> {
        let bpe = BpeTokenizer::from_file(path)?;
        TextTokenizer::from_bpe(bpe, &path.display().to_string())
    }

    /// The embedded tiny tokenizer.
    pub fn tiny() -> Result<TextTokenizer, ModelsError> {
        let name = "<embedded tiny tokenizer>";
        TextTokenizer::from_bpe(BpeTokenizer::from_json(TINY_TOKENIZER_JSON, name)?, name)
    }

    /// Writes the tokenizer files of an HF checkpoint into `dir` (each atomically):
    /// `tokenizer.json`, `tokenizer_config.json` (class `PreTrainedTokenizerFast`, the special
    /// tokens, the chat template of [`TextTokenizer::chat_prompt`] in Jinja, and
    /// `model_max_length`) and `special_tokens_map.json`, so that `mmada generate` and
    /// transformers' `AutoTokenizer.from_pretrained(dir)` read the checkpoint directory alone.
    pub fn save_pretrained(&self, dir: &Path, model_max_length: usize) -> Result<(), ModelsError> {
        use serde_json::{json, Map, Value};
        let text = |id: i64| {
            self.token_text(id)
                .ok_or_else(|| ModelsError::TokenizerLoad {
                    path: "<tokenizer>".into(),
                    msg: format!("special id {id} has no token"),
                })
        };
        let (bos, eos, mask) = (text(self.bos)?, text(self.eos)?, text(self.mask)?);
        let named = [bos.as_str(), eos.as_str(), mask.as_str()];
        let added = self.added_tokens();
        let additional: Vec<&str> = added
            .iter()
            .filter(|(_, t, special)| *special && !named.contains(&t.as_str()))
            .map(|(_, t, _)| t.as_str())
            .collect();
        let mut decoder = Map::new();
        for (id, t, special) in &added {
            decoder.insert(
                id.to_string(),
                json!({"content": t, "lstrip": false, "normalized": false, "rstrip": false,
                       "single_word": false, "special": special}),
            );
        }
        let map = json!({
            "bos_token": bos, "eos_token": eos, "pad_token": eos, "mask_token": mask,
            "additional_special_tokens": additional,
        });
        let mut config = json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": model_max_length,
            "clean_up_tokenization_spaces": false,
            "chat_template": CHAT_TEMPLATE_JINJA,
            "added_tokens_decoder": Value::Object(decoder),
        });
        if let (Value::Object(c), Value::Object(m)) = (&mut config, &map) {
            c.extend(m.clone());
        }
        let write = |name: &str, body: String| {
            mmada_runtime::tensor_io::atomic_write(&dir.join(name), body.as_bytes())
                .map_err(ModelsError::from)
        };
        write("tokenizer.json", self.to_json()?)?;
        let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
        write("tokenizer_config.json", pretty(&config))?;
        write("special_tokens_map.json", pretty(&map))?;
        Ok(())
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
