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
/// PyTorch's name of a dtype, as `torch_dtype` in `config.json` writes it.
pub fn torch_dtype(d: mmada_ir::DType) -> &'static str {
    use mmada_ir::DType::*;
    match d {
        F64 => "float64",
        F32 => "float32",
        F16 => "float16",
        BF16 => "bfloat16",
        I32 => "int32",
        I64 => "int64",
        Bool => "bool",
    }
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
fn compute_f32() -> mmada_ir::DType {
    mmada_ir::DType::F32
}

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
    /// The dtype the graphs built from this configuration declare their weights (and the
    /// samplers' K/V caches) in and compute in: f32, or bf16 for inference (`mmada compile
    /// --dtype bf16`; norms, RoPE and the softmax statistics stay f32, products accumulate
    /// in f32). A build option, not a field of config.json.
    #[serde(skip, default = "compute_f32")]
    pub dtype: mmada_ir::DType,
    /// The rest of the official configuration, and any field this implementation does not know
    /// (kept as read and written back unchanged).
    #[serde(flatten)]
    pub hf: HfFields,
}

/// The fields of the official `config.json` (spec §1.4) that do not size the model, with the
/// values that reproduce it here: written into every `config.json` so that the official
/// `MMadaConfig` / `LLaDAConfig` and transformers open our checkpoints. Those that would
/// change the architecture are checked by [`LladaConfig::validate`]; dropouts, initialisation
/// and precision are metadata here (sampling has no dropout; training here applies none).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HfFields {
    /// ALiBi attention bias (must be false: RoPE only).
    #[serde(default)]
    pub alibi: bool,
    /// ALiBi's maximum bias (unused).
    #[serde(default = "default_alibi_max")]
    pub alibi_bias_max: f64,
    /// Attention-probability dropout.
    #[serde(default)]
    pub attention_dropout: f64,
    /// Residual dropout.
    #[serde(default)]
    pub residual_dropout: f64,
    /// Embedding dropout.
    #[serde(default)]
    pub embedding_dropout: f64,
    /// Affine Q/K norms (unused: `attention_layer_norm` is false).
    #[serde(default = "default_true")]
    pub attention_layer_norm_with_affine: bool,
    /// Norms with a weight (must be true: the checkpoints hold the norm weights).
    #[serde(default = "default_true")]
    pub layer_norm_with_affine: bool,
    /// Norms with a bias (must be false).
    #[serde(default)]
    pub bias_for_layer_norm: bool,
    /// Blocks per FSDP group (must be 1).
    #[serde(default = "default_one")]
    pub block_group_size: usize,
    /// The official code's flash-attention switch (an implementation choice there).
    #[serde(default)]
    pub flash_attention: bool,
    /// Multi-query attention (must not be true; `n_kv_heads` says the heads).
    #[serde(default)]
    pub multi_query_attention: Option<bool>,
    /// Ids added after the LLaDA vocabulary by the official tokenizer set-up.
    #[serde(default)]
    pub num_new_special_tokens: usize,
    /// Initialisation scheme of a fresh model (ours: normal).
    #[serde(default = "default_init_fn")]
    pub init_fn: String,
    /// Initialisation standard deviation.
    #[serde(default = "default_init_std")]
    pub init_std: f64,
    /// Where the official code builds a fresh model's tensors (`None`: its default device).
    #[serde(default)]
    pub init_device: Option<String>,
    /// Truncation of the initialisation, in standard deviations.
    #[serde(default)]
    pub init_cutoff_factor: Option<f64>,
    /// Training precision of the official trainer (`amp_bf16` in the released configs).
    #[serde(default)]
    pub precision: Option<String>,
    /// KV cache in the official code (unsupported there; false).
    #[serde(default)]
    pub use_cache: bool,
    /// The dtype of the weights on disk (`float32`, `bfloat16`); set when saving.
    #[serde(default)]
    pub torch_dtype: Option<String>,
    /// The transformers release the files are written for ([`TRANSFORMERS_VERSION`] when
    /// we create them).
    #[serde(default)]
    pub transformers_version: Option<String>,
    /// Fields not named above, as read.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The transformers release our checkpoints are tested against (`scripts/hf_load_check.py`).
pub const TRANSFORMERS_VERSION: &str = "4.46.0";

/// The official field names every `config.json` we write contains (spec §1.4): the sizing
/// fields of [`LladaConfig`] and the [`HfFields`].
pub const OFFICIAL_FIELDS: [&str; 52] = [
    "d_model",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "mlp_hidden_size",
    "mlp_ratio",
    "vocab_size",
    "embedding_size",
    "new_vocab_size",
    "llm_vocab_size",
    "codebook_size",
    "num_vq_tokens",
    "rms_norm_eps",
    "rope_theta",
    "rope",
    "rope_full_precision",
    "activation_type",
    "block_type",
    "layer_norm_type",
    "weight_tying",
    "include_bias",
    "include_qkv_bias",
    "attention_layer_norm",
    "scale_logits",
    "input_emb_norm",
    "max_sequence_length",
    "mask_token_id",
    "eos_token_id",
    "pad_token_id",
    "bos_token_id",
    "model_type",
    "architectures",
    "alibi",
    "alibi_bias_max",
    "attention_dropout",
    "residual_dropout",
    "embedding_dropout",
    "attention_layer_norm_with_affine",
    "layer_norm_with_affine",
    "bias_for_layer_norm",
    "block_group_size",
    "flash_attention",
    "multi_query_attention",
    "num_new_special_tokens",
    "init_fn",
    "init_std",
    "init_device",
    "init_cutoff_factor",
    "precision",
    "use_cache",
    "torch_dtype",
    "transformers_version",
];

fn default_alibi_max() -> f64 {
    8.0
}
fn default_one() -> usize {
    1
}
fn default_init_fn() -> String {
    "normal".into()
}
fn default_init_std() -> f64 {
    0.02
}

impl Default for HfFields {
    fn default() -> Self {
        HfFields {
            alibi: false,
            alibi_bias_max: default_alibi_max(),
            attention_dropout: 0.0,
            residual_dropout: 0.0,
            embedding_dropout: 0.0,
            attention_layer_norm_with_affine: true,
            layer_norm_with_affine: true,
            bias_for_layer_norm: false,
            block_group_size: 1,
            flash_attention: false,
            multi_query_attention: None,
            num_new_special_tokens: 0,
            init_fn: default_init_fn(),
            init_std: default_init_std(),
            init_device: None,
            init_cutoff_factor: None,
            precision: None,
            use_cache: false,
            torch_dtype: None,
            transformers_version: Some(TRANSFORMERS_VERSION.into()),
            extra: serde_json::Map::new(),
        }
    }
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
        let h = &self.hf;
        must("alibi", !h.alibi, "false")?;
        must("layer_norm_with_affine", h.layer_norm_with_affine, "true")?;
        must("bias_for_layer_norm", !h.bias_for_layer_norm, "false")?;
        must("block_group_size", h.block_group_size == 1, "1")?;
        must(
            "multi_query_attention",
            h.multi_query_attention != Some(true),
            "false or null",
        )?;
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

    /// The config as pretty JSON with the official field names (every one of
    /// [`OFFICIAL_FIELDS`], then the unknown fields as read).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into())
    }

    /// The same configuration building graphs in `dtype` (see [`LladaConfig::dtype`]).
    pub fn computing_in(&self, dtype: mmada_ir::DType) -> LladaConfig {
        LladaConfig {
            dtype,
            ..self.clone()
        }
    }

    /// The config of weights stored as `dtype` (sets `torch_dtype`; a `transformers_version`
    /// is filled in when the config had none).
    pub fn stored_as(&self, dtype: mmada_ir::DType) -> LladaConfig {
        let mut c = self.clone();
        c.hf.torch_dtype = Some(torch_dtype(dtype).into());
        if c.hf.transformers_version.is_none() {
            c.hf.transformers_version = Some(TRANSFORMERS_VERSION.into());
        }
        c
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
            hf: HfFields::default(),
            dtype: mmada_ir::DType::F32,
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
