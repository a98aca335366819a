//! The embedded digits as image codes: encoding all of them with an image tokenizer, and the
//! file that keeps them (`models/assets/vq-digits/digit-codes.u16.gz` holds those of the
//! committed tokenizer, written by `mmada train-vq --evaluate models/assets/vq-digits`).
//!
//! File format: gzip of `MMCODES1`, then u32 little-endian `count`, `n` (codes per image) and
//! `codebook`, then `count · n` codes as u16 little-endian, image after image, raster order.

use crate::digits::{Digits, SIDE};
use crate::magvit::{encode_graph, MagvitConfig};
use crate::ModelsError;
use indexmap::IndexMap;
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::compile::{compile, CompileOptions, PtxCheck};
use mmada_ir::Tensor;
use mmada_runtime::{open_artifact, Target};
use std::io::{Read, Write};
use std::path::Path;

/// The committed codes of the committed tokenizer.
const EMBEDDED: &[u8] = include_bytes!("../assets/vq-digits/digit-codes.u16.gz");

/// Name of the codes file in a tokenizer directory.
pub const FILE: &str = "digit-codes.u16.gz";

const MAGIC: &[u8; 8] = b"MMCODES1";

/// The codes (`n` per image, raster order) of every embedded digit, encoded by the compiled
/// encoder in batches of 100 on the CPU.
pub fn digit_codes(
    cfg: &MagvitConfig,
    weights: &IndexMap<String, Tensor>,
    digits: &Digits,
) -> Result<Vec<Vec<i64>>, ModelsError> {
    let bsz = 100;
    let g = encode_graph(cfg, bsz, SIDE, SIDE)?;
    let art = compile(
        &g,
        &CompileOptions {
            name: format!("vq_encode_b{bsz}"),
            backend: BackendOptions {
                host: Some(mmada_codegen::HostCpu::native()),
                gpu_archs: vec![],
            },
            ptx_check: PtxCheck::Skip,
            ..CompileOptions::default()
        },
    )?;
    let mut enc = open_artifact(art, Target::Cpu)?;
    for (n, t) in weights {
        if n.starts_with("encoder.") {
            enc.set_input(n, t)?;
        }
    }
    let all: Vec<usize> = (0..digits.len()).collect();
    let mut out = Vec::with_capacity(digits.len());
    for chunk in all.chunks(bsz) {
        let px = digits.batch_chw(chunk, bsz);
        let mut ins = IndexMap::new();
        ins.insert(
            "pixels".to_string(),
            Tensor::from_f32([bsz, 3, SIDE, SIDE], px)?,
        );
        let codes = enc
            .run(&ins)?
            .shift_remove("codes")
            .ok_or_else(|| ModelsError::Input("the encoder produced no codes".into()))?
            .to_i64_vec();
        let n = codes.len() / bsz;
        for k in 0..chunk.len() {
            out.push(codes[k * n..(k + 1) * n].to_vec());
        }
    }
    Ok(out)
}

/// Writes codes of a `codebook`-code tokenizer (all `n` long, each below `codebook` ≤ 65536).
pub fn write_codes(path: &Path, codes: &[Vec<i64>], codebook: usize) -> Result<(), ModelsError> {
    let bad = |msg: String| ModelsError::Options(format!("{}: {msg}", path.display()));
    let n = codes.first().map_or(0, |c| c.len());
    if codebook > 1 << 16 || codes.iter().any(|c| c.len() != n) {
        return Err(bad("codes must be rows of one length below 65536".into()));
    }
    let mut raw = MAGIC.to_vec();
    for v in [codes.len(), n, codebook] {
        raw.extend((v as u32).to_le_bytes());
    }
    for &c in codes.iter().flatten() {
        if c < 0 || c as usize >= codebook {
            return Err(bad(format!("code {c} outside the codebook of {codebook}")));
        }
        raw.extend((c as u16).to_le_bytes());
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&raw)
        .and_then(|_| gz.finish())
        .map_err(|e| bad(e.to_string()))
        .and_then(|bytes| Ok(mmada_runtime::tensor_io::atomic_write(path, &bytes)?))
}

/// Reads codes from the bytes of a codes file (`name` for messages): every code checked
/// against the file's codebook.
pub fn read_codes(bytes: &[u8], name: &str) -> Result<(Vec<Vec<i64>>, usize), ModelsError> {
    let bad = |msg: String| ModelsError::Options(format!("{name}: {msg}"));
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut raw)
        .map_err(|e| bad(format!("not a gzip file: {e}")))?;
    if raw.len() < 20 || &raw[..8] != MAGIC {
        return Err(bad("not an MMCODES1 file".into()));
    }
    let word = |o: usize| u32::from_le_bytes([raw[o], raw[o + 1], raw[o + 2], raw[o + 3]]) as usize;
    let (count, n, codebook) = (word(8), word(12), word(16));
    let body = &raw[20..];
    if count.checked_mul(n).and_then(|k| k.checked_mul(2)) != Some(body.len()) {
        return Err(bad(format!(
            "{count} × {n} codes do not fit its {} bytes",
            body.len()
        )));
    }
    let flat: Vec<i64> = body
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]) as i64)
        .collect();
    if let Some(c) = flat.iter().find(|&&c| c as usize >= codebook) {
        return Err(bad(format!("code {c} outside its codebook of {codebook}")));
    }
    Ok((
        flat.chunks(n.max(1)).map(|c| c.to_vec()).collect(),
        codebook,
    ))
}

/// The committed codes of the built-in `vq-digits` tokenizer.
pub fn embedded_digit_codes() -> Result<Vec<Vec<i64>>, ModelsError> {
    Ok(read_codes(EMBEDDED, "<embedded vq-digits>/digit-codes.u16.gz")?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE);
        let codes = vec![vec![0, 255, 7], vec![300, 1, 2]];
        write_codes(&p, &codes, 301).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(read_codes(&bytes, "x").unwrap(), (codes.clone(), 301));
        // A code outside the codebook, rows of two lengths.
        assert!(write_codes(&p, &codes, 300).is_err());
        assert!(write_codes(&p, &[vec![1], vec![1, 2]], 300).is_err());
        // Truncated, not gzip, wrong magic, a code above the file's own codebook.
        let e = read_codes(&bytes[..bytes.len() / 2], "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x:"), "{e}");
        assert!(read_codes(b"hello", "x").is_err());
        let gz = |raw: &[u8]| {
            let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            g.write_all(raw).unwrap();
            g.finish().unwrap()
        };
        assert!(read_codes(&gz(b"MMCODES2\0\0\0\0\0\0\0\0\0\0\0\0"), "x").is_err());
        let mut raw = MAGIC.to_vec();
        for v in [1u32, 1, 4] {
            raw.extend(v.to_le_bytes());
        }
        raw.extend(9u16.to_le_bytes());
        let e = read_codes(&gz(&raw), "x").unwrap_err().to_string();
        assert!(e.contains("outside"), "{e}");
        raw.pop();
        assert!(read_codes(&gz(&raw), "x").is_err());
    }

    #[test]
    fn committed_codes_cover_every_digit() {
        let c = embedded_digit_codes().unwrap();
        assert_eq!(c.len(), 5000);
        assert!(c
            .iter()
            .all(|r| r.len() == 64 && r.iter().all(|&x| (0..256).contains(&x))));
    }
}
