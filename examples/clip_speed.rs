//! Times the CLIP reward's towers at OpenAI's ViT-B/32 size (transformers' default
//! `CLIPConfig()`, 151 M parameters) with random weights: compile and load, then the median
//! of 7 image-tower and text-tower runs (one image, one 77-position text), on the host.
//!
//! `cargo run --release --example clip_speed` (writes 605 MB of weights to a temp dir).

use indexmap::IndexMap;
use mmada_ir::Tensor;
use mmada_models::clip::{ClipConfig, Tower};
use mmada_models::clip_model::ClipModel;
use std::time::Instant;

fn median_ms(mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..7)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[3]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cfg: ClipConfig = serde_json::from_str("{}")?;
    let mut w = IndexMap::new();
    let mut state = 1u64;
    for tower in [Tower::Text, Tower::Vision] {
        for (name, shape) in cfg.param_specs(tower) {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.04
                })
                .collect();
            w.insert(name, Tensor::from_f32(shape, v)?);
        }
    }
    w.insert(
        "logit_scale".into(),
        Tensor::from_f32(Vec::<usize>::new(), vec![2.6592])?,
    );
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("config.json"), "{}")?;
    let tok = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tiny_clip/tokenizer.json"
    );
    std::fs::copy(tok, dir.path().join("tokenizer.json"))?;
    mmada_runtime::tensor_io::write_safetensors(&dir.path().join("model.safetensors"), &w)?;
    drop(w);
    let t0 = Instant::now();
    let mut m = ClipModel::open(dir.path())?;
    println!(
        "ViT-B/32: compile and load {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    let px = m.pixel_values(&vec![0.1f32; 3 * 32 * 32])?;
    let image = median_ms(|| {
        m.image_embeds(&px)
            .map(drop)
            .unwrap_or_else(|e| panic!("{e}"));
    });
    let mut ids = vec![49406i64, 320, 1125, 539, 49407];
    ids.resize(77, 49407);
    let text = median_ms(|| {
        m.text_embeds(&ids)
            .map(drop)
            .unwrap_or_else(|e| panic!("{e}"));
    });
    println!("image tower {image:.1} ms per image, text tower {text:.1} ms per text (median of 7)");
    Ok(())
}
