//! Serialization of graphs holding every op kind, before and after the optimisation passes
//! (fused bodies included): lossless round trips, and malformed files are errors, never panics.

mod common;

use mmada_ir::{display, serialize, DType};
use rand::{Rng, SeedableRng};

#[test]
fn every_op_round_trips_losslessly() {
    for dt in [DType::F32, DType::BF16] {
        let g = common::all_ops_graph(dt);
        let a = serialize::to_json(&g).unwrap();
        let back = serialize::from_json(&a).unwrap();
        assert_eq!(a, serialize::to_json(&back).unwrap());
        assert_eq!(
            display::to_text(&g).unwrap().lines().count(),
            display::to_text(&back).unwrap().lines().count()
        );
        let mut fused = g.clone();
        mmada_passes::default_pipeline().run(&mut fused).unwrap();
        let f = serialize::to_json(&fused).unwrap();
        assert!(f.contains("\"fused\"") || f.contains("fused"));
        let fback = serialize::from_json(&f).unwrap();
        assert_eq!(f, serialize::to_json(&fback).unwrap());
        // Dot dumps render every node.
        assert!(display::to_dot(&fused).unwrap().starts_with("digraph"));
    }
}

#[test]
fn malformed_files_never_panic() {
    let mut fused = common::all_ops_graph(DType::F32);
    mmada_passes::default_pipeline().run(&mut fused).unwrap();
    let text = serialize::to_json(&fused).unwrap().into_bytes();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    let mut rejected = 0;
    for i in 0..4000 {
        let mut m = text.clone();
        match i % 3 {
            0 => m.truncate(rng.random_range(0..m.len())),
            1 => {
                let p = rng.random_range(0..m.len());
                m[p] = rng.random_range(0x20u8..0x7f);
            }
            _ => {
                let digits: Vec<usize> = m
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.is_ascii_digit())
                    .map(|(i, _)| i)
                    .collect();
                let p = digits[rng.random_range(0..digits.len())];
                m[p] = b'0' + rng.random_range(0..10u8);
            }
        }
        let r = std::panic::catch_unwind(|| {
            serialize::from_json(&String::from_utf8_lossy(&m)).is_err()
        });
        match r {
            Ok(true) => rejected += 1,
            Ok(false) => {}
            Err(_) => panic!("the decoder panicked on mutation {i}"),
        }
    }
    assert!(rejected > 2000, "{rejected}");
}
