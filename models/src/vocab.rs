//! The unified vocabulary of MMaDA (spec §2): text ids from the tokenizer, the special ids
//! that frame tasks and images, and the image codes placed after the text ids.
//!
//! `UnifiedVocab` knows every id:
//! - [`UnifiedVocab::mmada_8b`]: the released layout (mask 126336, image offset 126349, …);
//! - [`UnifiedVocab::from_tokenizer`]: any tokenizer with the same structure (the embedded tiny
//!   one names all its special tokens; the LLaDA tokenizer has the task and image tokens as
//!   reserved tokens at the fixed ids of spec §2.2, which MMaDA re-purposes);
//! - [`UnifiedVocab::load`]: a checkpoint directory's `tokenizer.json` plus `config.json`.

use crate::config::LladaConfig;
use crate::tokenizer::TextTokenizer;
use crate::ModelsError;
use std::path::Path;

/// Every special id of spec §2.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecialIds {
    /// `<|startoftext|>` (BOS, `<|sot|>`).
    pub bos: i64,
    /// `<|endoftext|>` (EOS, `<|eot|>`; also the text padding).
    pub eos: i64,
    /// `<|soi|>`: start of image.
    pub soi: i64,
    /// `<|eoi|>`: end of image.
    pub eoi: i64,
    /// `<|sov|>` (reserved, video).
    pub sov: i64,
    /// `<|eov|>` (reserved, video).
    pub eov: i64,
    /// `<|t2i|>`: text-to-image task token.
    pub t2i: i64,
    /// `<|mmu|>`: multimodal-understanding task token.
    pub mmu: i64,
    /// `<|t2v|>` (reserved).
    pub t2v: i64,
    /// `<|v2v|>` (reserved).
    pub v2v: i64,
    /// `<|lvg|>` (reserved).
    pub lvg: i64,
    /// `[iPAD]`: the left padding of the t2i text block.
    pub ipad: i64,
    /// `<|r2i|>`: reasoning-to-image task token.
    pub r2i: i64,
    /// `[MASK]` (`<|mdm_mask|>`), for text and image positions.
    pub mask: i64,
    /// `<|start_header_id|>`.
    pub start_header: i64,
    /// `<|end_header_id|>`: the end of a prompt in chat rows.
    pub end_header: i64,
    /// `<|eot_id|>`: end of a chat turn.
    pub eot_id: i64,
}

/// The task and image tokens with the ids MMaDA gives them in the LLaDA tokenizer's reserved
/// range (spec §2.2, `use_reserved_token=True`): used when the tokenizer has no token of that
/// name.
pub const MMADA_RESERVED: [(&str, i64); 11] = [
    ("<|soi|>", 126_084),
    ("<|eoi|>", 126_085),
    ("<|sov|>", 126_086),
    ("<|eov|>", 126_087),
    ("<|t2i|>", 126_088),
    ("<|mmu|>", 126_089),
    ("<|t2v|>", 126_090),
    ("<|v2v|>", 126_091),
    ("<|lvg|>", 126_092),
    ("[iPAD]", 126_093),
    ("<|r2i|>", 126_094),
];

/// The unified vocabulary: text ids `0..text_len`, then `codebook_size` image codes from
/// `image_offset`, inside an embedding table of `rows` rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnifiedVocab {
    /// The special ids.
    pub ids: SpecialIds,
    /// Text ids (`len(tokenizer)`, spec §2.1).
    pub text_len: usize,
    /// Unified id of image code 0 (= `text_len`: MMaDA adds no tokens, spec §2.3).
    pub image_offset: i64,
    /// Image codes (MAGVIT-v2: 8192).
    pub codebook_size: usize,
    /// Embedding rows of the model (≥ `image_offset + codebook_size`).
    pub rows: usize,
}

impl UnifiedVocab {
    /// The MMaDA-8B layout (spec §2.2–2.3): 126349 text ids, 8192 image codes at 126349..134540,
    /// 134656 embedding rows.
    pub fn mmada_8b() -> UnifiedVocab {
        let r = |i: usize| MMADA_RESERVED[i].1;
        UnifiedVocab {
            ids: SpecialIds {
                bos: 126_080,
                eos: 126_081,
                soi: r(0),
                eoi: r(1),
                sov: r(2),
                eov: r(3),
                t2i: r(4),
                mmu: r(5),
                t2v: r(6),
                v2v: r(7),
                lvg: r(8),
                ipad: r(9),
                r2i: r(10),
                mask: 126_336,
                start_header: 126_346,
                end_header: 126_347,
                eot_id: 126_348,
            },
            text_len: 126_349,
            image_offset: 126_349,
            codebook_size: 8192,
            rows: 134_656,
        }
    }

    /// The vocabulary of the embedded tiny model: the tiny tokenizer (1041 ids, its special
    /// tokens named) and the `tiny` preset's 256 image codes in 1344 rows.
    pub fn tiny(tok: &TextTokenizer) -> Result<UnifiedVocab, ModelsError> {
        UnifiedVocab::from_tokenizer(tok, "<embedded tiny tokenizer>", 256, 1344)
    }

    /// The vocabulary of a tokenizer with MMaDA's structure. Each special token is looked up by
    /// name; the task and image tokens a tokenizer does not name take the reserved ids of
    /// [`MMADA_RESERVED`] when the tokenizer reaches them (as LLaDA's does). `path` names the
    /// tokenizer in errors.
    pub fn from_tokenizer(
        tok: &TextTokenizer,
        path: &str,
        codebook_size: usize,
        rows: usize,
    ) -> Result<UnifiedVocab, ModelsError> {
        let text_len = tok.len();
        let missing = |token: &str| ModelsError::MissingSpecial {
            path: path.to_string(),
            token: token.to_string(),
        };
        let reserved = |i: usize| -> Result<i64, ModelsError> {
            let (name, id) = MMADA_RESERVED[i];
            match tok.token_id(name) {
                Some(v) => Ok(v),
                None if (id as usize) < text_len => Ok(id),
                None => Err(missing(name)),
            }
        };
        let ids = SpecialIds {
            bos: tok.bos,
            eos: tok.eos,
            soi: reserved(0)?,
            eoi: reserved(1)?,
            sov: reserved(2)?,
            eov: reserved(3)?,
            t2i: reserved(4)?,
            mmu: reserved(5)?,
            t2v: reserved(6)?,
            v2v: reserved(7)?,
            lvg: reserved(8)?,
            ipad: reserved(9)?,
            r2i: reserved(10)?,
            mask: tok.mask,
            start_header: tok.start_header,
            end_header: tok.end_header,
            eot_id: tok.eot_id,
        };
        let v = UnifiedVocab {
            ids,
            text_len,
            image_offset: text_len as i64,
            codebook_size,
            rows,
        };
        v.check(path)?;
        Ok(v)
    }

    /// Reads a checkpoint directory: `tokenizer.json` for the text ids and `config.json` for
    /// the codebook size (`codebook_size`; without it 8192, or the rows after the text ids
    /// when fewer), the embedding rows and the `[MASK]` id,
    /// which must agree with the tokenizer's `<|mdm_mask|>`.
    pub fn load(dir: &Path) -> Result<(TextTokenizer, UnifiedVocab), ModelsError> {
        let tok_path = dir.join("tokenizer.json");
        let cfg_path = dir.join("config.json");
        let tok = TextTokenizer::from_file(&tok_path)?;
        let cfg = LladaConfig::read(&cfg_path)?;
        let cfg_name = cfg_path.display().to_string();
        if cfg.mask_token_id != tok.mask {
            return Err(ModelsError::Field {
                path: cfg_name,
                field: "mask_token_id".into(),
                msg: format!(
                    "{} differs from the tokenizer's <|mdm_mask|> id {}",
                    cfg.mask_token_id, tok.mask
                ),
            });
        }
        // Without `codebook_size`: MMaDA's 8192 codes, or, for a text model with fewer rows
        // (a bench preset trained on text), the rows after the text ids, so text commands
        // work; image commands then refuse any image tokenizer of another codebook by name.
        let codebook = cfg
            .codebook_size
            .unwrap_or_else(|| 8192.min(cfg.rows().saturating_sub(tok.len())));
        let vocab = UnifiedVocab::from_tokenizer(
            &tok,
            &tok_path.display().to_string(),
            codebook,
            cfg.rows(),
        )
        .map_err(|e| match e {
            ModelsError::Field { field, msg, .. } if field == "rows" => ModelsError::Field {
                path: cfg_name.clone(),
                field: "embedding_size".into(),
                msg,
            },
            e => e,
        })?;
        Ok((tok, vocab))
    }

    /// The tokenizer and vocabulary of a checkpoint directory: [`UnifiedVocab::load`] when it
    /// has a `tokenizer.json`, else the embedded tiny pair when its `config.json` uses the tiny
    /// tokenizer's `[MASK]` id (the checkpoints `mmada train` writes for the tiny models).
    pub fn for_checkpoint(dir: &Path) -> Result<(TextTokenizer, UnifiedVocab), ModelsError> {
        if dir.join("tokenizer.json").exists() {
            return UnifiedVocab::load(dir);
        }
        let cfg_path = dir.join("config.json");
        let cfg = LladaConfig::read(&cfg_path)?;
        let tok = TextTokenizer::tiny()?;
        if cfg.mask_token_id != tok.mask {
            return Err(ModelsError::Input(format!(
                "{} has no tokenizer.json and its mask_token_id {} is not the embedded tiny                  tokenizer's ({}): add the checkpoint's tokenizer.json",
                dir.display(),
                cfg.mask_token_id,
                tok.mask
            )));
        }
        let codebook = cfg.codebook_size.unwrap_or(256);
        let vocab =
            UnifiedVocab::from_tokenizer(&tok, "<embedded tiny tokenizer>", codebook, cfg.rows())?;
        Ok((tok, vocab))
    }

    /// Checks that every special id is a text id, that they are distinct, and that the image
    /// codes fit the embedding rows.
    fn check(&self, path: &str) -> Result<(), ModelsError> {
        let named = self.named();
        for (i, (name, id)) in named.iter().enumerate() {
            if *id < 0 || *id as usize >= self.text_len {
                return Err(ModelsError::Field {
                    path: path.to_string(),
                    field: (*name).to_string(),
                    msg: format!("id {id} is outside the {} text ids", self.text_len),
                });
            }
            if let Some((other, _)) = named[..i].iter().find(|(_, o)| o == id) {
                return Err(ModelsError::Field {
                    path: path.to_string(),
                    field: (*name).to_string(),
                    msg: format!("id {id} is also {other}"),
                });
            }
        }
        let end = self.text_len as u64 + self.codebook_size as u64;
        if self.codebook_size == 0 || end > self.rows as u64 {
            return Err(ModelsError::Field {
                path: path.to_string(),
                field: "rows".into(),
                msg: format!(
                    "{} text ids + {} image codes need {end} embedding rows, the model has {}",
                    self.text_len, self.codebook_size, self.rows
                ),
            });
        }
        Ok(())
    }

    /// The special ids with their token names.
    pub fn named(&self) -> [(&'static str, i64); 17] {
        let s = &self.ids;
        [
            ("<|startoftext|>", s.bos),
            ("<|endoftext|>", s.eos),
            ("<|soi|>", s.soi),
            ("<|eoi|>", s.eoi),
            ("<|sov|>", s.sov),
            ("<|eov|>", s.eov),
            ("<|t2i|>", s.t2i),
            ("<|mmu|>", s.mmu),
            ("<|t2v|>", s.t2v),
            ("<|v2v|>", s.v2v),
            ("<|lvg|>", s.lvg),
            ("[iPAD]", s.ipad),
            ("<|r2i|>", s.r2i),
            ("<|mdm_mask|>", s.mask),
            ("<|start_header_id|>", s.start_header),
            ("<|end_header_id|>", s.end_header),
            ("<|eot_id|>", s.eot_id),
        ]
    }

    /// Unified id of image code `code`; errors when the code is outside the codebook.
    pub fn image_id(&self, code: i64) -> Result<i64, ModelsError> {
        if code < 0 || code as u64 >= self.codebook_size as u64 {
            return Err(ModelsError::Input(format!(
                "image code {code} is outside the codebook of {} codes",
                self.codebook_size
            )));
        }
        Ok(self.image_offset + code)
    }

    /// Unified ids of image codes.
    pub fn image_ids(&self, codes: &[i64]) -> Result<Vec<i64>, ModelsError> {
        codes.iter().map(|&c| self.image_id(c)).collect()
    }

    /// The image code of a unified id, if it is one.
    pub fn image_code(&self, id: i64) -> Option<i64> {
        let k = id - self.image_offset;
        (k >= 0 && (k as u64) < self.codebook_size as u64).then_some(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmada_8b_ids_match_spec_2_2_and_2_3() {
        let v = UnifiedVocab::mmada_8b();
        let want = [
            ("<|startoftext|>", 126_080),
            ("<|endoftext|>", 126_081),
            ("<|soi|>", 126_084),
            ("<|eoi|>", 126_085),
            ("<|sov|>", 126_086),
            ("<|eov|>", 126_087),
            ("<|t2i|>", 126_088),
            ("<|mmu|>", 126_089),
            ("<|t2v|>", 126_090),
            ("<|v2v|>", 126_091),
            ("<|lvg|>", 126_092),
            ("[iPAD]", 126_093),
            ("<|r2i|>", 126_094),
            ("<|mdm_mask|>", 126_336),
            ("<|start_header_id|>", 126_346),
            ("<|end_header_id|>", 126_347),
            ("<|eot_id|>", 126_348),
        ];
        assert_eq!(v.named(), want);
        assert_eq!(v.image_offset, 126_349);
        assert_eq!(v.image_id(0).unwrap(), 126_349);
        assert_eq!(v.image_id(8191).unwrap(), 134_540);
        assert!(v.image_id(8192).is_err() && v.image_id(-1).is_err());
        assert_eq!(v.image_code(134_540), Some(8191));
        assert_eq!(v.image_code(126_348), None);
        assert_eq!(v.image_code(134_541), None);
        assert_eq!(v.rows, 134_656);
        v.check("mmada-8b").unwrap();
        // The preset of the transformer agrees.
        let cfg = LladaConfig::preset("mmada-8b").unwrap();
        assert_eq!(cfg.rows(), v.rows);
        assert_eq!(cfg.mask_token_id, v.ids.mask);
        assert_eq!(cfg.eos_token_id, v.ids.eos);
        assert_eq!(cfg.bos_token_id, Some(v.ids.bos));
        assert_eq!(cfg.codebook_size, Some(v.codebook_size));
    }

    #[test]
    fn tiny_vocab_names_every_special_and_places_images_after_text() {
        let tok = TextTokenizer::tiny().unwrap();
        let v = UnifiedVocab::tiny(&tok).unwrap();
        let ids: Vec<i64> = v.named().iter().map(|(_, i)| *i).collect();
        // README of the tiny tokenizer: 1024..=1040 in this order (bos, eos, soi, …, mask,
        // start_header, end_header, eot_id).
        assert_eq!(ids, (1024..=1040).collect::<Vec<i64>>());
        assert_eq!((v.text_len, v.image_offset), (1041, 1041));
        assert_eq!(v.image_id(255).unwrap(), 1296);
        let cfg = LladaConfig::preset("tiny").unwrap();
        assert_eq!(
            (cfg.rows(), cfg.codebook_size),
            (v.rows, Some(v.codebook_size))
        );
        // Too few rows for the codebook: named.
        let e = UnifiedVocab::from_tokenizer(&tok, "t.json", 256, 1100).unwrap_err();
        assert!(e.to_string().contains("embedding rows"), "{e}");
    }

    #[test]
    fn a_text_checkpoint_without_codebook_size_loads_with_the_rows_it_has() {
        let tok = TextTokenizer::tiny().unwrap();
        let dir = tempfile::tempdir().unwrap();
        tok.save_pretrained(dir.path(), 4096).unwrap();
        // bench-tiny's 4,096 rows with the tiny tokenizer's ids: no room for 8,192 codes.
        let mut cfg = LladaConfig::preset("bench-tiny").unwrap();
        cfg.codebook_size = None;
        cfg.mask_token_id = tok.mask;
        cfg.eos_token_id = tok.eos;
        std::fs::write(dir.path().join("config.json"), cfg.to_json()).unwrap();
        let (_, v) = UnifiedVocab::load(dir.path()).unwrap();
        assert_eq!(v.codebook_size, 4096 - 1041);
        // With room, MMaDA's 8192.
        cfg.embedding_size = Some(1041 + 8192);
        cfg.new_vocab_size = Some(1041 + 8192);
        std::fs::write(dir.path().join("config.json"), cfg.to_json()).unwrap();
        assert_eq!(
            UnifiedVocab::load(dir.path()).unwrap().1.codebook_size,
            8192
        );
    }
}
