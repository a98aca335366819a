//! Text generation: the compiled sampler (`TextSampler`, and `mmada generate text` with
//! `--print-ids`) against a step-by-step run of the same algorithm written out here on the
//! reference interpreter's logits (spec §6.1: blocks, commit counts, greedy argmax, softmax
//! confidence, the most confident masked positions of the current block), token for token;
//! guidance against the same reference; and the errors of bad options and of a model that
//! produces NaN mid-run.

mod common;

use common::{assert_one_line_error, mmada_cli};
use indexmap::IndexMap;
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::HostCpu;
use mmada_ir::{interp, DType, Shape, Tensor};
use mmada_models::checkpoint::{init_weights, save_model};
use mmada_models::config::LladaConfig;
use mmada_models::llada::forward_graph;
use mmada_models::text_sampler::{commit_schedule, KvCache, TextOptions, TextSampler};
use mmada_runtime::Target;

/// A 2-layer model on the tiny vocabulary with a sharpened head (random weights whose
/// logits spread over several units, so greedy decisions have clear margins).
fn model() -> (LladaConfig, IndexMap<String, Tensor>) {
    model_with_layers(2)
}

/// [`model`] with `layers` layers.
fn model_with_layers(layers: usize) -> (LladaConfig, IndexMap<String, Tensor>) {
    let mut cfg = common::small_tiny_config();
    cfg.n_layers = layers;
    cfg.max_sequence_length = 64;
    let mut w = init_weights(&cfg, 5, 0, 0.02);
    let head = "model.transformer.ff_out.weight";
    let h = w[head].to_f32_vec().iter().map(|v| v * 60.0).collect();
    w.insert(
        head.into(),
        Tensor::from_f32(w[head].shape().clone(), h).unwrap(),
    );
    (cfg, w)
}

/// The algorithm of spec §6.1 on interpreter logits; also returns the smallest relative
/// margin of any decision (between the chosen and the next logit, or between the last
/// committed and the first passed-over confidence).
fn reference(
    cfg: &LladaConfig,
    w: &IndexMap<String, Tensor>,
    prompt: &[i64],
    o: &TextOptions,
) -> (Vec<i64>, f64) {
    let l = prompt.len() + o.gen_length;
    let g = forward_graph(cfg, 2, l, false).unwrap();
    let v = cfg.rows();
    let mask = cfg.mask_token_id;
    let mut x: Vec<i64> = prompt.to_vec();
    x.extend(std::iter::repeat_n(mask, o.gen_length));
    let mut margin = f64::INFINITY;
    let blocks = o.gen_length / o.block_length;
    for b in 0..blocks {
        let (start, end) = (
            prompt.len() + b * o.block_length,
            prompt.len() + (b + 1) * o.block_length,
        );
        // With a threshold: one token at least, every one above it, until the block is full.
        let schedule = match o.threshold {
            None => commit_schedule(o.block_length, o.steps / blocks),
            Some(_) => vec![1; o.block_length],
        };
        for k in schedule {
            if !x[start..end].contains(&mask) {
                break;
            }
            // Row 0 conditional, row 1 with the prompt masked (used when cfg_scale > 0).
            let mut ids = x.clone();
            ids.extend(
                x.iter()
                    .enumerate()
                    .map(|(i, &t)| if i < prompt.len() { mask } else { t }),
            );
            let mut ins = w.clone();
            ins.insert(
                "input_ids".into(),
                Tensor::from_i64(Shape(vec![2, l]), ids).unwrap(),
            );
            let lg = interp::interpret(&g, &ins).unwrap()["logits"].to_f32_vec();
            let mut cands: Vec<(f64, usize, i64)> = Vec::new();
            // Every [MASK] before the block's end is a candidate (the reference's
            // `mask_index` over the whole sequence): those of the block, and any left in the
            // prompt.
            for p in 0..end {
                if x[p] != mask {
                    continue;
                }
                let row: Vec<f32> = (0..v)
                    .map(|j| {
                        let c = lg[p * v + j];
                        if o.cfg_scale > 0.0 {
                            let u = lg[(l + p) * v + j];
                            u + (c - u) * (o.cfg_scale + 1.0)
                        } else {
                            c
                        }
                    })
                    .collect();
                let mut order: Vec<usize> = (0..v).collect();
                order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                let (top, second) = (row[order[0]] as f64, row[order[1]] as f64);
                margin = margin.min((top - second) / top.abs().max(1.0));
                let m = top;
                let sum: f64 = row.iter().map(|&z| (z as f64 - m).exp()).sum();
                cands.push((1.0 / sum, p, order[0] as i64));
            }
            cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            if k < cands.len() && k > 0 {
                margin = margin.min((cands[k - 1].0 - cands[k].0) / cands[k - 1].0);
            }
            let thr = o.threshold.map_or(2.0, f64::from);
            for (r, &(c, p, t)) in cands.iter().enumerate() {
                if r < k || c > thr {
                    x[p] = t;
                }
                if o.threshold.is_some() {
                    margin = margin.min((c - thr).abs());
                }
            }
        }
    }
    (x[prompt.len()..].to_vec(), margin)
}

fn host() -> BackendOptions {
    BackendOptions {
        host: Some(HostCpu::native()),
        gpu_archs: vec![],
    }
}

fn options(gen_length: usize, steps: usize, block_length: usize, cfg_scale: f32) -> TextOptions {
    TextOptions {
        gen_length,
        steps,
        block_length,
        cfg_scale,
        ..TextOptions::default()
    }
}

#[test]
fn commit_schedule_by_hand() {
    assert_eq!(commit_schedule(8, 4), vec![2, 2, 2, 2]);
    assert_eq!(commit_schedule(6, 4), vec![2, 2, 1, 1]);
    assert_eq!(commit_schedule(3, 5), vec![1, 1, 1, 0, 0]);
    assert_eq!(commit_schedule(32, 1), vec![32]);
    assert_eq!(commit_schedule(7, 3).iter().sum::<usize>(), 7);
}

#[test]
fn greedy_generation_matches_the_step_by_step_reference() {
    let (cfg, w) = model();
    let prompt = [3i64, 17, 9, 200, 41];
    for (o, name) in [
        (options(16, 8, 8, 0.0), "2 blocks, 2 per step"),
        (options(12, 8, 6, 0.0), "2 blocks, 2-2-1-1 per block"),
        (options(12, 4, 12, 0.0), "1 block, 3 per step"),
        (options(12, 8, 6, 1.5), "guidance 1.5"),
        (
            TextOptions {
                threshold: Some(0.5),
                ..options(16, 16, 8, 0.0)
            },
            "threshold 0.5",
        ),
    ] {
        let (want, margin) = reference(&cfg, &w, &prompt, &o);
        // Decisions at least 1e-4 apart: far above the compiled forward's ~1e-6 differences.
        eprintln!("{name}: closest decision {margin:e}");
        assert!(
            margin > 1e-5,
            "{name}: the reference's closest decision is {margin:e}"
        );
        let mut s =
            TextSampler::new(cfg.clone(), &w, 1, prompt.len(), o, Target::Cpu, host()).unwrap();
        let got = s.generate(&[prompt.to_vec()], &mut |_, _| {}).unwrap();
        assert_eq!(got.ids[0], want, "{name}");
        if o.threshold.is_none() {
            assert_eq!(got.steps, o.steps);
        } else {
            assert!(got.steps < o.gen_length, "{name}: {} steps", got.steps);
        }
        assert!(
            !want.contains(&cfg.mask_token_id),
            "{name}: left masks: {want:?}"
        );
        // Only the step counters and the sequence crossed: no logits came back.
        let t = s.executor().transfers();
        assert!(t.bytes_to_host < 64 * (o.steps as u64 + 2), "{t:?}");
    }
}

#[test]
fn cli_print_ids_matches_the_reference_and_bad_inputs_are_one_line_errors() {
    let (cfg, w) = model();
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    std::fs::create_dir_all(&m).unwrap();
    save_model(&m, &cfg, &w, DType::F32, u64::MAX).unwrap();
    let ms = m.to_str().unwrap();
    let o = options(32, 16, 8, 0.0);
    let (want, _) = reference(&cfg, &w, &[3, 17, 9], &o);
    let args = [
        "generate",
        "text",
        "--model",
        ms,
        "--prompt-ids",
        "3,17,9",
        "--gen-length",
        "32",
        "--steps",
        "16",
        "--block-length",
        "8",
        "--temperature",
        "0",
        "--remasking",
        "low_confidence",
        "--print-ids",
    ];
    let (ok, out, err) = mmada_cli(&args, dir.path());
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let got: Vec<i64> = v["generated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    assert_eq!(got, want);
    let run = |extra: &[&str]| {
        let mut a = vec!["generate", "text", "--model", ms, "--print-ids"];
        a.extend_from_slice(extra);
        mmada_cli(&a, dir.path())
    };
    let long: Vec<String> = (0..60).map(|i| (i % 50).to_string()).collect();
    let long: &'static str = Box::leak(long.join(",").into_boxed_str());
    let base = ["--gen-length", "16", "--steps", "8", "--block-length", "8"];
    let with = |p: &'static str| {
        let mut v = vec!["--prompt-ids", p];
        v.extend_from_slice(&base);
        v
    };
    assert_one_line_error(run(&with(long)), "max_sequence_length 64");
    assert_one_line_error(run(&with("3,5000,9")), "outside the vocabulary");
    assert_one_line_error(run(&with("3,-1,9")), "outside the vocabulary");
    let p = ["--prompt-ids", "3,4"];
    assert_one_line_error(
        run(&[&p[..], &["--gen-length", "20", "--block-length", "8"]].concat()),
        "not a multiple of --block-length",
    );
    assert_one_line_error(
        run(&[
            &p[..],
            &["--gen-length", "16", "--block-length", "8", "--steps", "5"],
        ]
        .concat()),
        "not a multiple of the number of blocks",
    );
    assert_one_line_error(
        run(&[
            &p[..],
            &[
                "--gen-length",
                "16",
                "--block-length",
                "8",
                "--temperature=-1",
            ],
        ]
        .concat()),
        "--temperature",
    );
    let missing = dir.path().join("nowhere");
    assert_one_line_error(
        mmada_cli(
            &[
                "generate",
                "text",
                "--model",
                missing.to_str().unwrap(),
                "--prompt-ids",
                "1",
            ],
            dir.path(),
        ),
        "nowhere",
    );
}

#[test]
fn nan_logits_mid_run_stop_with_an_error_naming_the_step() {
    let (cfg, mut w) = model();
    let prompt = [3i64, 17, 9, 200, 41];
    let o = options(16, 8, 8, 0.0);
    let (want, _) = reference(&cfg, &w, &prompt, &o);
    // The token the first step commits gets a NaN embedding: step 1 is finite, step 2 reads
    // the NaN row and must stop.
    let first = *want.iter().find(|&&t| !prompt.contains(&t)).unwrap();
    let emb = "model.transformer.wte.weight";
    let mut e = w[emb].to_f32_vec();
    let d = cfg.d_model;
    e[first as usize * d] = f32::NAN;
    w.insert(
        emb.into(),
        Tensor::from_f32(w[emb].shape().clone(), e).unwrap(),
    );
    let mut s = TextSampler::new(cfg.clone(), &w, 1, prompt.len(), o, Target::Cpu, host()).unwrap();
    let err = s
        .generate(&[prompt.to_vec()], &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("step 2 of 8"), "{err}");
    assert!(err.contains("NaN"), "{err}");
}

#[test]
fn prefix_and_dual_caches_are_exact_for_one_layer_and_close_for_two() {
    // One layer: a position's keys and values depend on its own token only, so the cache of
    // the unchanged prefix (and, for the dual cache, suffix) is exact and the cached sampler
    // must give the no-cache tokens. Two layers: the cache is a block old (Fast-dLLM's
    // approximation). Three blocks, so the prefix cache runs its entries for runs of 24, 16
    // and 8 positions.
    for layers in [1usize, 2] {
        let (cfg, w) = model_with_layers(layers);
        let prompt = [3i64, 17, 9, 200, 41];
        let o = options(24, 12, 8, 0.0);
        let run = |cache: KvCache| {
            let o = TextOptions { cache, ..o };
            let mut s =
                TextSampler::new(cfg.clone(), &w, 1, prompt.len(), o, Target::Cpu, host()).unwrap();
            s.generate(&[prompt.to_vec()], &mut |_, _| {}).unwrap().ids[0].clone()
        };
        let plain = run(KvCache::None);
        for cache in [KvCache::Prefix, KvCache::Dual] {
            let got = run(cache);
            let same = plain.iter().zip(&got).filter(|(a, b)| a == b).count();
            eprintln!(
                "{layers} layers, {cache:?}: {same}/{} tokens agree",
                plain.len()
            );
            if layers == 1 {
                assert_eq!(got, plain, "{cache:?}");
            } else {
                assert!(!got.contains(&cfg.mask_token_id), "{cache:?}");
                assert!(same * 2 >= plain.len(), "{cache:?}: {same}/{}", plain.len());
            }
        }
        // One block: nothing follows it, so the dual cache (prompt cached, block fresh) and
        // the prefix cache are the same computation.
        let one = |cache: KvCache| {
            let o = TextOptions {
                cache,
                ..options(8, 4, 8, 0.0)
            };
            let mut s =
                TextSampler::new(cfg.clone(), &w, 1, prompt.len(), o, Target::Cpu, host()).unwrap();
            s.generate(&[prompt.to_vec()], &mut |_, _| {}).unwrap().ids[0].clone()
        };
        assert_eq!(one(KvCache::Prefix), one(KvCache::Dual));
    }
}

#[test]
fn bench_sampling_on_a_checkpoint_times_the_reference_tokens_and_rejects_bad_prompt_files() {
    // `mmada bench --sampling --checkpoint DIR --prompt-ids FILE`: BENCHMARKS.md's setting
    // (gen 128, block 32, 128 steps, τ 0) on a saved model; the no-cache ids it dumps are the
    // step-by-step reference's, the dual figure dumps 128 committed ids.
    let (mut cfg, w) = model();
    cfg.max_sequence_length = 160;
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    std::fs::create_dir_all(&m).unwrap();
    save_model(&m, &cfg, &w, DType::F32, u64::MAX).unwrap();
    let prompt = [3i64, 17, 9, 41, 5];
    std::fs::write(dir.path().join("p.txt"), "3 17 9\n41 5\n").unwrap();
    let (want, _) = reference(&cfg, &w, &prompt, &options(128, 128, 32, 0.0));
    let args = [
        "bench",
        "--sampling",
        "--target",
        "cpu",
        "--checkpoint",
        "m",
        "--prompt-ids",
        "p.txt",
        "--reps",
        "1",
        "--json",
        "--dump-ids",
        "ids",
    ];
    let (ok, out, err) = mmada_cli(&args, dir.path());
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0]["figure"], "sampling-nocache");
    assert_eq!(lines[0]["agreement"], 1.0);
    assert_eq!(lines[0]["steps"], 128);
    assert_eq!(lines[1]["figure"], "sampling-prefix");
    assert_eq!(lines[2]["figure"], "sampling-dual");
    let ids = |name: &str| -> Vec<i64> {
        std::fs::read_to_string(dir.path().join("ids").join(name))
            .unwrap()
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect()
    };
    assert_eq!(ids("prompt.txt"), prompt);
    assert_eq!(ids("sampling-nocache.txt"), want);
    for figure in ["sampling-prefix.txt", "sampling-dual.txt"] {
        let got = ids(figure);
        assert_eq!(got.len(), 128, "{figure}");
        assert!(!got.contains(&cfg.mask_token_id), "{figure}");
    }
    // A prompt file with a word in it names the file and the token.
    std::fs::write(dir.path().join("bad.txt"), "3 seventeen 9").unwrap();
    let mut bad = args;
    bad[7] = "bad.txt";
    assert_one_line_error(
        mmada_cli(&bad, dir.path()),
        "bad.txt: token 1 ('seventeen')",
    );
    // An id outside the vocabulary is the sampler's one-line error.
    std::fs::write(dir.path().join("big.txt"), "3 99999 9").unwrap();
    bad[7] = "big.txt";
    assert_one_line_error(mmada_cli(&bad, dir.path()), "outside the vocabulary");
}

#[test]
fn the_step_runs_the_head_on_the_block_only_and_a_prompt_with_masks_still_infills() {
    // The plan of the step with the head on the current block holds no [B, L, rows] buffer
    // (only [B, Bk, rows] logits); with the head everywhere it does.
    use mmada_models::sampler_step::TextStepSpec;
    use mmada_models::text_sampler::compile_text_step;
    let (cfg, w) = model();
    // B·L above d_model, so the embedding table is smaller than [B, L, rows].
    let (b, l, bk) = (3, 37, 8);
    let spec = |head_block| TextStepSpec {
        batch: b,
        seq: l,
        cfg: false,
        remasking: mmada_ir::Remasking::LowConfidence,
        fill_cache: false,
        head_block,
        key_mask: false,
    };
    let largest = |head_block| {
        let art = compile_text_step(&cfg, spec(head_block), host()).unwrap();
        common::program(&art)
            .buffers
            .iter()
            .map(|d| d.len)
            .max()
            .unwrap()
    };
    let full = (b * l * cfg.rows()) as u64;
    assert!(largest(Some(bk)) < full, "a [B, L, rows] buffer is planned");
    assert!(largest(None) >= full);
    // A prompt with a [MASK]: the reference fills it like a generated position (it competes
    // in every step's top-k), so the sampler falls back to the head on every position and
    // still gives the reference's tokens.
    let mask = cfg.mask_token_id;
    let prompt = [3i64, mask, 9, 200, 41];
    let o = options(16, 8, 8, 0.0);
    let (want, _) = reference(&cfg, &w, &prompt, &o);
    let mut s = TextSampler::new(cfg.clone(), &w, 1, prompt.len(), o, Target::Cpu, host()).unwrap();
    let got = s.generate(&[prompt.to_vec()], &mut |_, _| {}).unwrap();
    assert_eq!(got.ids[0], want);
}

#[test]
fn a_left_padded_prompt_with_its_key_mask_generates_what_the_unpadded_prompt_does() {
    // UniGRPO batches prompts of different lengths by left padding: with the padding out of
    // attention (key_mask) and RoPE's relative positions, a padded row is the unpadded row.
    use mmada_codegen::compile::{compile_entries, CompileOptions, PtxCheck};
    use mmada_models::sampler_step::{
        block_step_graph, cache_names, prefix_step_graph, prefix_step_name, text_step_graph,
        TextStepSpec, BLOCK_STEP, TEXT_STEP,
    };
    use mmada_models::text_sampler::decode;
    let (cfg, w) = model();
    let prompt = vec![3i64, 17, 9, 200, 41, 5, 88];
    let pad = 4;
    for cache in [KvCache::None, KvCache::Prefix, KvCache::Dual] {
        let mut o = options(16, 16, 8, 0.0);
        o.cache = cache;
        let cached = cache != KvCache::None;
        let run = |lp: usize, key_mask: bool, prompts: &[Vec<i64>]| {
            let spec = TextStepSpec {
                batch: prompts.len(),
                seq: lp + o.gen_length,
                cfg: false,
                remasking: mmada_ir::Remasking::LowConfidence,
                fill_cache: cached,
                head_block: Some(o.block_length),
                key_mask,
            };
            let g = text_step_graph(&cfg, spec).unwrap();
            let mut entries = vec![(TEXT_STEP.to_string(), g)];
            if cache == KvCache::Dual {
                entries.push((BLOCK_STEP.into(), block_step_graph(&cfg, spec, 8).unwrap()));
            }
            if cache == KvCache::Prefix {
                for (j, run) in [(0, 16), (1, 8)] {
                    let g = prefix_step_graph(&cfg, spec, 8, run).unwrap();
                    entries.push((prefix_step_name(j), g));
                }
            }
            let refs: Vec<(&str, &mmada_ir::Graph)> =
                entries.iter().map(|(n, g)| (n.as_str(), g)).collect();
            let copts = CompileOptions {
                name: "padded".into(),
                backend: host(),
                ptx_check: PtxCheck::Skip,
                ..CompileOptions::default()
            };
            let art = compile_entries(&refs, &copts).unwrap().0;
            let mut exe = mmada_runtime::open_artifact(art, Target::Cpu).unwrap();
            for (n, t) in &w {
                exe.set_input(n, t).unwrap();
            }
            if key_mask {
                // Row 0 padded, row 1 a full-length prompt: the mask is per row.
                let l = spec.seq;
                let km: Vec<f64> = (0..2 * l)
                    .map(|i| f64::from(u8::from(i >= l || i % l >= pad)))
                    .collect();
                let km = Tensor::from_f64(DType::Bool, [2, l], &km).unwrap();
                exe.set_input("key_mask", &km).unwrap();
            }
            if cached {
                let shape = Shape(vec![spec.batch, cfg.n_heads, spec.seq, cfg.head_dim()]);
                for i in 0..cfg.n_layers {
                    let (k, v) = cache_names(i);
                    exe.set_input(&k, &Tensor::zeros(DType::F32, shape.clone()))
                        .unwrap();
                    exe.set_input(&v, &Tensor::zeros(DType::F32, shape.clone()))
                        .unwrap();
                }
            }
            decode(exe.as_mut(), &cfg, spec, &o, prompts, &mut |_, _| {}).unwrap()
        };
        let want = run(prompt.len(), false, std::slice::from_ref(&prompt));
        let mut padded = vec![cfg.eos_token_id; pad];
        padded.extend_from_slice(&prompt);
        let other: Vec<i64> = (0..padded.len() as i64)
            .map(|i| (i * 37 + 11) % 1000)
            .collect();
        let got = run(padded.len(), true, &[padded.clone(), other]);
        assert_eq!(got.ids[0], want.ids[0], "{cache:?}");
        // Without the key mask the padding changes the generation (the check can fail).
        let unmasked = run(padded.len(), false, &[padded.clone(), padded]);
        assert_ne!(
            unmasked.ids[0], want.ids[0],
            "{cache:?}: padding had no effect"
        );
    }
}
