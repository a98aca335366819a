//! LLaDA/MMaDA model configuration with the official `config.json` field names (spec §1.4),
//! its validation, and the built-in presets.

use crate::ModelsError;
use serde::{Deserialize, Serialize};
use std::path::Path;

fn default_eps() -> f64 {
    1e-5
}
fn default_theta() -> f64 {
    500_000.0
}
fn default_true() -> bool {
    true
}
fn silu() -> String {
    "silu".into()
}
fn llama() -> String {
    "llama".into()
}
fn rms() -> String {
    "rms".into()
}
/// The most bytes one process can address on x86-64 (47-bit user space): a configuration whose
/// tensors need more can never run, and is rejected before any work.
pub const ADDRESSABLE_BYTES: u64 = 1 << 47;

fn default_max_seq() -> usize {
    4096
}

/// The architecture fields of an MMaDA/LLaDA `config.json`. Unknown fields are ignored (HF
/// configs carry many); fields that would change the architecture in ways this implementation
/// does not support are rejected by [`LladaConfig::validate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LladaConfig {
    /// Hidden size.
    pub d_model: usize,
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Key/value heads (must equal `n_heads`).
    #[serde(default)]
    pub n_kv_heads: Option<usize>,
    /// MLP hidden size.
    pub mlp_hidden_size: usize,
    /// Kept for compatibility; `mlp_hidden_size` decides the size.
    #[serde(default)]
    pub mlp_ratio: Option<usize>,
    /// Tokenizer vocabulary size (ids the text tokenizer produces).
    pub vocab_size: usize,
    /// Embedding rows (≥ vocab; MMaDA: 134656). Defaults to `vocab_size`.
    #[serde(default)]
    pub embedding_size: Option<usize>,
    /// MMaDA's resized vocabulary (equals `embedding_size` in released configs).
    #[serde(default)]
    pub new_vocab_size: Option<usize>,
    /// LLaDA's original embedding rows.
    #[serde(default)]
    pub llm_vocab_size: Option<usize>,
    /// Image codebook size (MAGVIT-v2: 8192).
    #[serde(default)]
    pub codebook_size: Option<usize>,
    /// Image tokens per image.
    #[serde(default)]
    pub num_vq_tokens: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// Must be true.
    #[serde(default = "default_true")]
    pub rope: bool,
    /// RoPE in f32 (always, here).
    #[serde(default = "default_true")]
    pub rope_full_precision: bool,
    /// Must be "silu".
    #[serde(default = "silu")]
    pub activation_type: String,
    /// Must be "llama".
    #[serde(default = "llama")]
    pub block_type: String,
    /// Must be "rms".
    #[serde(default = "rms")]
    pub layer_norm_type: String,
    /// Must be false (the head is untied).
    #[serde(default)]
    pub weight_tying: bool,
    /// Must be false.
    #[serde(default)]
    pub include_bias: bool,
    /// Must be false.
    #[serde(default)]
    pub include_qkv_bias: bool,
    /// Must be false.
    #[serde(default)]
    pub attention_layer_norm: bool,
    /// Must be false.
    #[serde(default)]
    pub scale_logits: bool,
    /// Must be false.
    #[serde(default)]
    pub input_emb_norm: bool,
    /// Maximum sequence length (sizes nothing here; RoPE is computed per shape).
    #[serde(default = "default_max_seq")]
    pub max_sequence_length: usize,
    /// `[MASK]` id (MMaDA: 126336).
    pub mask_token_id: i64,
    /// EOS id (MMaDA: 126081).
    pub eos_token_id: i64,
    /// Padding id (MMaDA: EOS).
    #[serde(default)]
    pub pad_token_id: Option<i64>,
    /// BOS id (MMaDA: 126080).
    #[serde(default)]
    pub bos_token_id: Option<i64>,
    /// "mmada" or "llada".
    #[serde(default)]
    pub model_type: Option<String>,
    /// HF architectures list.
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
}

impl LladaConfig {
    /// Embedding (and LM head) rows.
    pub fn rows(&self) -> usize {
        self.embedding_size.unwrap_or(self.vocab_size)
    }

    /// Head dimension.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }

    /// BOS id (EOS − 1 when the config does not say, as in LLaDA's tokenizer).
    pub fn bos(&self) -> i64 {
        self.bos_token_id.unwrap_or(self.eos_token_id - 1)
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        let d = self.d_model;
        2 * self.rows() * d + self.n_layers * (4 * d * d + 3 * d * self.mlp_hidden_size + 2 * d) + d
    }

    /// Bytes of the f32 parameters, or `None` when the count overflows 64 bits.
    pub fn param_bytes(&self) -> Option<u64> {
        let (d, f, r, n) = (
            self.d_model as u64,
            self.mlp_hidden_size as u64,
            self.rows() as u64,
            self.n_layers as u64,
        );
        let dd = d.checked_mul(d)?;
        let layer = dd
            .checked_mul(4)?
            .checked_add(d.checked_mul(f)?.checked_mul(3)?)?
            .checked_add(d.checked_mul(2)?)?;
        r.checked_mul(d)?
            .checked_mul(2)?
            .checked_add(layer.checked_mul(n)?)?
            .checked_add(d)?
            .checked_mul(4)
    }

    /// Checks that a batch of `batch` rows of `seq` tokens fits the model and memory: `seq` at
    /// most `max_sequence_length`, and the largest activation (`[batch, seq, max(rows, ffn)]`
    /// f32, the logits or the MLP's hidden layer) addressable. Errors name the option.
    pub fn check_shape(&self, batch: usize, seq: usize) -> Result<(), String> {
        if batch == 0 {
            return Err("--batch must be at least 1, got 0".into());
        }
        if seq == 0 {
            return Err("--seq must be at least 1, got 0".into());
        }
        if seq > self.max_sequence_length {
            return Err(format!(
                "--seq {seq} exceeds the model's max_sequence_length {}",
                self.max_sequence_length
            ));
        }
        let widest = self.rows().max(self.mlp_hidden_size).max(self.d_model) as u64;
        let bytes = (batch as u64)
            .checked_mul(seq as u64)
            .and_then(|t| t.checked_mul(widest))
            .and_then(|t| t.checked_mul(4));
        match bytes {
            Some(b) if b <= ADDRESSABLE_BYTES => Ok(()),
            _ => Err(format!(
                "--batch {batch} × --seq {seq}: one activation of [{batch}, {seq}, {widest}] \
                 f32 exceeds the {} TiB a process can address",
                ADDRESSABLE_BYTES >> 40
            )),
        }
    }

    /// Checks that the configuration describes the architecture implemented here; errors name
    /// the field (`path` is the file, for messages).
    pub fn validate(&self, path: &str) -> Result<(), ModelsError> {
        let bad = |field: &str, msg: String| ModelsError::Field {
            path: path.to_string(),
            field: field.to_string(),
            msg,
        };
        let positive = [
            ("d_model", self.d_model),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("mlp_hidden_size", self.mlp_hidden_size),
            ("vocab_size", self.vocab_size),
        ];
        for (f, v) in positive {
            if v == 0 {
                return Err(bad(f, "must be positive".into()));
            }
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return Err(bad(
                "n_heads",
                format!("{} does not divide d_model {}", self.n_heads, self.d_model),
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(bad(
                "n_heads",
                "the head dimension must be even for RoPE".into(),
            ));
        }
        if let Some(kv) = self.n_kv_heads {
            if kv != self.n_heads {
                return Err(bad(
                    "n_kv_heads",
                    format!(
                        "{kv} ≠ n_heads {}: grouped-query attention is not supported",
                        self.n_heads
                    ),
                ));
            }
        }
        if self.rows() < self.vocab_size {
            return Err(bad(
                "embedding_size",
                format!(
                    "{} is smaller than vocab_size {}",
                    self.rows(),
                    self.vocab_size
                ),
            ));
        }
        if let Some(n) = self.new_vocab_size {
            if n != self.rows() {
                return Err(bad(
                    "new_vocab_size",
                    format!("{n} differs from embedding_size {}", self.rows()),
                ));
            }
        }
        let ids = [
            ("mask_token_id", self.mask_token_id),
            ("eos_token_id", self.eos_token_id),
        ];
        for (f, v) in ids {
            if v < 0 || v as usize >= self.rows() {
                return Err(bad(
                    f,
                    format!("{v} is outside the {} embedding rows", self.rows()),
                ));
            }
        }
        let must = |f: &str, ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(bad(
                    f,
                    format!("must be {what} (the MMaDA/LLaDA architecture)"),
                ))
            }
        };
        must(
            "activation_type",
            self.activation_type == "silu",
            "\"silu\"",
        )?;
        must("block_type", self.block_type == "llama", "\"llama\"")?;
        must("layer_norm_type", self.layer_norm_type == "rms", "\"rms\"")?;
        must("rope", self.rope, "true")?;
        must("weight_tying", !self.weight_tying, "false")?;
        must("include_bias", !self.include_bias, "false")?;
        must("include_qkv_bias", !self.include_qkv_bias, "false")?;
        must("attention_layer_norm", !self.attention_layer_norm, "false")?;
        must("scale_logits", !self.scale_logits, "false")?;
        must("input_emb_norm", !self.input_emb_norm, "false")?;
        if self.rms_norm_eps.is_nan() || self.rms_norm_eps <= 0.0 {
            return Err(bad("rms_norm_eps", "must be positive".into()));
        }
        if self.rope_theta.is_nan() || self.rope_theta <= 0.0 {
            return Err(bad("rope_theta", "must be positive".into()));
        }
        if self.max_sequence_length == 0 {
            return Err(bad("max_sequence_length", "must be positive".into()));
        }
        match self.param_bytes() {
            Some(b) if b <= ADDRESSABLE_BYTES => Ok(()),
            _ => Err(bad(
                "d_model",
                format!(
                    "with n_layers {}, mlp_hidden_size {} and {} embedding rows the parameters \
                     would take more than the {} TiB a process can address",
                    self.n_layers,
                    self.mlp_hidden_size,
                    self.rows(),
                    ADDRESSABLE_BYTES >> 40
                ),
            )),
        }
    }

    /// Reads and validates a `config.json`.
    pub fn read(path: &Path) -> Result<LladaConfig, ModelsError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ModelsError::Io {
            path: p.clone(),
            source: e,
        })?;
        let cfg: LladaConfig = serde_json::from_str(&text).map_err(|e| ModelsError::Toml {
            path: p.clone(),
            msg: format!("config.json: {e}"),
        })?;
        cfg.validate(&p)?;
        Ok(cfg)
    }

    /// The config as pretty JSON with the official field names.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into())
    }

    /// A preset by name: `tiny`, `bench-tiny`, `bench-small`, `mmada-8b`.
    pub fn preset(name: &str) -> Option<LladaConfig> {
        let base = |d, l, h, mlp, vocab: usize, rows: usize, mask, eos| LladaConfig {
            d_model: d,
            n_layers: l,
            n_heads: h,
            n_kv_heads: Some(h),
            mlp_hidden_size: mlp,
            mlp_ratio: Some(4),
            vocab_size: vocab,
            embedding_size: Some(rows),
            new_vocab_size: Some(rows),
            llm_vocab_size: Some(vocab),
            codebook_size: None,
            num_vq_tokens: None,
            rms_norm_eps: 1e-5,
            rope_theta: 500_000.0,
            rope: true,
            rope_full_precision: true,
            activation_type: "silu".into(),
            block_type: "llama".into(),
            layer_norm_type: "rms".into(),
            weight_tying: false,
            include_bias: false,
            include_qkv_bias: false,
            attention_layer_norm: false,
            scale_logits: false,
            input_emb_norm: false,
            max_sequence_length: 4096,
            mask_token_id: mask,
            eos_token_id: eos,
            pad_token_id: Some(eos),
            bos_token_id: Some(eos - 1),
            model_type: Some("mmada".into()),
            architectures: Some(vec!["MMadaModelLM".into()]),
        };
        Some(match name {
            // The embedded default: the tiny tokenizer's 1041 ids + a 256-code image range.
            "tiny" => LladaConfig {
                codebook_size: Some(256),
                num_vq_tokens: Some(16),
                ..base(128, 4, 4, 352, 1041, 1344, 1037, 1025)
            },
            // BENCHMARKS.md: bench-tiny and bench-small (random weights; ids in range).
            "bench-tiny" => base(256, 4, 8, 704, 4096, 4096, 4095, 4094),
            "bench-small" => base(512, 8, 8, 1408, 8192, 8192, 8191, 8190),
            // spec §1.1/§1.4: MMaDA-8B.
            "mmada-8b" => LladaConfig {
                llm_vocab_size: Some(126_464),
                codebook_size: Some(8192),
                num_vq_tokens: Some(1024),
                bos_token_id: Some(126_080),
                ..base(4096, 32, 32, 12288, 134_656, 134_656, 126_336, 126_081)
            },
            _ => return None,
        })
    }

    /// Names of the presets.
    pub const PRESETS: [&'static str; 4] = ["tiny", "bench-tiny", "bench-small", "mmada-8b"];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_count_parameters() {
        for p in LladaConfig::PRESETS {
            LladaConfig::preset(p).unwrap().validate(p).unwrap();
        }
        // BENCHMARKS.md and spec §1.1.
        assert_eq!(
            LladaConfig::preset("bench-tiny").unwrap().num_params(),
            5_310_720
        );
        assert_eq!(
            LladaConfig::preset("bench-small").unwrap().num_params(),
            34_087_424
        );
        assert_eq!(
            LladaConfig::preset("mmada-8b").unwrap().num_params(),
            8_082_690_048
        );
    }

    #[test]
    fn bad_configs_name_the_field() {
        let mut c = LladaConfig::preset("tiny").unwrap();
        c.n_kv_heads = Some(2);
        assert!(c
            .validate("x")
            .unwrap_err()
            .to_string()
            .contains("n_kv_heads"));
        let mut c = LladaConfig::preset("tiny").unwrap();
        c.weight_tying = true;
        assert!(c
            .validate("x")
            .unwrap_err()
            .to_string()
            .contains("weight_tying"));
        let mut c = LladaConfig::preset("tiny").unwrap();
        c.mask_token_id = 99_999;
        assert!(c
            .validate("x")
            .unwrap_err()
            .to_string()
            .contains("mask_token_id"));
    }
}
