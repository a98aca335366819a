//! Helpers shared by the models tests.

use mmada_models::config::LladaConfig;

/// A two-layer model small enough for the interpreter: d 16, 2 heads, MLP 24, 40 rows.
pub fn small_cfg() -> LladaConfig {
    LladaConfig {
        d_model: 16,
        n_layers: 2,
        n_heads: 2,
        n_kv_heads: Some(2),
        mlp_hidden_size: 24,
        vocab_size: 37,
        embedding_size: Some(40),
        new_vocab_size: Some(40),
        mask_token_id: 39,
        eos_token_id: 36,
        pad_token_id: Some(36),
        bos_token_id: Some(35),
        ..LladaConfig::preset("tiny").unwrap()
    }
}
