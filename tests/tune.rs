//! `mmada tune` on a small graph (a product, a scaled softmax, a row sum): the cache makes a
//! second run time nothing; a changed candidate set retunes only its template; garbage in the
//! cache is skipped with one warning while two tuners write at once; a candidate that computes
//! a wrong result is rejected by the correctness gate; compile builds with the winners.

mod common;

use indexmap::IndexMap;
use mmada_codegen::artifact::Artifact;
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::compile::{compile, CompileOptions, LowerCache, PtxCheck};
use mmada_codegen::template::{Choices, TargetLimits};
use mmada_codegen::tune::cache::{RecordKind, Scope, Status, TuneCache};
use mmada_codegen::tune::host_winners;
use mmada_codegen::HostCpu;
use mmada_ir::{DType, Graph, Tensor};
use mmada_runtime::tune::{tune, TuneOptions, TuneReport, Workload};
use std::time::Duration;

/// `r = Σ_last softmax(scale · x @ w) · (x @ w)` (scale 0.5; a broken candidate gets 0.75), with `x` `[37, 300]`, `w` `[300, 70]`.
fn graph(scale: f64) -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [37, 300]).unwrap();
    let w = g.param("w", DType::F32, [300, 70]).unwrap();
    let h = g.matmul(x, w).unwrap();
    let hs = g.binary_scalar(mmada_ir::BinaryOp::Mul, h, scale).unwrap();
    let s = g.softmax(hs, -1).unwrap();
    let p = g.mul(s, h).unwrap();
    let r = g.sum(p, -1, false).unwrap();
    g.set_output("r", r).unwrap();
    g.set_output("h", hs).unwrap();
    g
}

fn workload() -> Workload {
    let x: Vec<f32> = (0..37 * 300)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
        .collect();
    let w: Vec<f32> = (0..300 * 70)
        .map(|i| ((i * 53 % 97) as f32 - 48.0) / 480.0)
        .collect();
    let mut inputs = IndexMap::new();
    inputs.insert("x".to_string(), Tensor::from_f32([37, 300], x).unwrap());
    Workload {
        entry: "main".into(),
        resident: vec![("w".into(), Tensor::from_f32([300, 70], w).unwrap())],
        inputs,
    }
}

fn backend() -> BackendOptions {
    BackendOptions {
        host: Some(HostCpu::native()),
        gpu_archs: Vec::new(),
    }
}

fn scope() -> Scope {
    mmada_codegen::tune::host_scope(&HostCpu::native(), "mmada test")
}

fn limits() -> TargetLimits {
    TargetLimits::new(Some(&HostCpu::native()), &[])
}

/// A hill climb (beam of 1), so that the searches end well within the budget: a search cut
/// off by its budget leaves partial winners that the next run continues.
fn options(budget_s: f64) -> TuneOptions {
    TuneOptions {
        budget: Duration::from_secs_f64(budget_s),
        reps: 5,
        recheck_rounds: 3,
        parallel: 2,
        beam_width: 1,
        ..TuneOptions::default()
    }
}

/// Compiles `graph(0.5)`; `broken(choices)` says when to compile `graph(0.75)` instead (a
/// candidate that computes something else with the same plan).
fn compiler(
    broken: impl Fn(&Choices) -> bool + Sync,
) -> impl Fn(&Choices) -> Result<Artifact, String> + Sync {
    let lower = LowerCache::default();
    move |choices: &Choices| {
        let g = graph(if broken(choices) { 0.75 } else { 0.5 });
        let opts = CompileOptions {
            name: "tune-test".into(),
            backend: backend(),
            ptx_check: PtxCheck::Skip,
            choices: choices.clone(),
            lower_cache: Some(lower.clone()),
            ..CompileOptions::default()
        };
        compile(&g, &opts).map_err(|e| e.to_string())
    }
}

fn run(cache: &TuneCache, budget_s: f64) -> TuneReport {
    let compile = compiler(|_| false);
    tune(
        &compile,
        &workload(),
        cache,
        &scope(),
        &limits(),
        &options(budget_s),
        &mut |_, _| {},
    )
    .unwrap()
}

#[test]
fn a_second_run_times_nothing_and_compile_builds_with_the_winners() {
    let dir = tempfile::tempdir().unwrap();
    let cache = TuneCache::open(dir.path()).unwrap();
    let first = run(&cache, 60.0);
    assert!(
        first.timings > first.keys.len(),
        "defaults and candidates were timed"
    );
    let templates: std::collections::HashSet<&str> =
        first.keys.iter().map(|k| k.template.as_str()).collect();
    for t in ["matmul", "softmax", "reduction", "elementwise"] {
        assert!(templates.contains(t), "{t} in {templates:?}");
    }
    assert!(first.keys.iter().all(|k| !k.cached && k.timed >= 1));
    // Every winner is at least as fast as the default where the recheck measured it.
    for k in &first.keys {
        assert!(k.is_default || k.winner_s <= k.default_s, "{k:?}");
    }
    let second = run(&cache, 60.0);
    assert_eq!(second.timings, 0, "the cache answers every key");
    assert_eq!(
        second.compiles, 1,
        "only the default build, to list the keys"
    );
    assert!(second.keys.iter().all(|k| k.cached));
    assert_eq!(second.tuned, first.tuned);

    // compile reads the winners: each tuned key's kernels carry its configuration.
    let loaded = cache.load(&scope()).unwrap();
    let tuned = host_winners(&loaded, &limits(), false);
    assert_eq!(
        tuned.len(),
        first.keys.len(),
        "a winner per key, default or not"
    );
    let choices = Choices {
        tuned: tuned.clone(),
        ..Choices::default()
    };
    let art = compile(
        &graph(0.5),
        &CompileOptions {
            backend: backend(),
            ptx_check: PtxCheck::Skip,
            choices,
            ..CompileOptions::default()
        },
    )
    .unwrap();
    for k in art
        .manifest
        .kernels
        .iter()
        .filter_map(|k| k.template.as_ref())
    {
        let key = k.tune_key.as_deref().unwrap();
        let want = &tuned[key];
        assert_eq!(&k.config, want, "{key}");
        assert_eq!(k.tuned, first.tuned.contains_key(key), "{key}");
    }
    assert_eq!(
        art.manifest.choices.tuned.len(),
        first.tuned.len(),
        "the manifest records the winners it used"
    );
}

#[test]
fn a_changed_candidate_set_retunes_only_its_template() {
    let dir = tempfile::tempdir().unwrap();
    let cache = TuneCache::open(dir.path()).unwrap();
    run(&cache, 60.0);
    // As if the matmul template's knobs had changed since: its records name another set.
    let text = std::fs::read_to_string(cache.file()).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["template"] == "matmul" {
            v["candidates"] = serde_json::Value::String("0000000000000000".into());
        }
        out.push_str(&v.to_string());
        out.push('\n');
    }
    std::fs::write(cache.file(), out).unwrap();
    let again = run(&cache, 60.0);
    assert!(again.timings > 0);
    let retuned: Vec<&str> = again
        .keys
        .iter()
        .filter(|k| !k.cached)
        .map(|k| k.template.as_str())
        .collect();
    assert!(!retuned.is_empty());
    assert!(retuned.iter().all(|t| *t == "matmul"), "{retuned:?}");
    assert!(again
        .keys
        .iter()
        .filter(|k| k.template != "matmul")
        .all(|k| k.cached));
}

#[test]
fn garbage_in_the_cache_is_skipped_with_one_warning_while_two_tuners_write() {
    let dir = tempfile::tempdir().unwrap();
    let cache = TuneCache::open(dir.path()).unwrap();
    let other_device = r#"{"format":"mmada-tune","version":1,"kind":"winner","key":"matmul:x","template":"matmul","candidates":"c","target":"cuda:H200:sm_90","compiler":"mmada test","config":{},"median_s":1.0,"samples":[1.0],"status":"ok","default_s":1.0,"unix_time":1}"#;
    let mut garbage = Vec::new();
    garbage.extend_from_slice(b"not json at all\n");
    garbage.extend_from_slice(&[0xff, 0xfe, 0x00, b'{', b'\n']);
    garbage.extend_from_slice(br#"{"format":"mmada-tune","version":7,"whatever":[]}"#);
    garbage.push(b'\n');
    garbage.extend_from_slice(other_device.as_bytes());
    garbage.push(b'\n');
    garbage.extend_from_slice(&other_device.as_bytes()[..60]);
    std::fs::write(cache.file(), &garbage).unwrap();

    // Two tuners at once on the same cache (threads: the lock is per open file).
    let (a, b) = std::thread::scope(|s| {
        let ha = s.spawn(|| run(&cache, 60.0));
        let hb = s.spawn(|| run(&cache, 60.0));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    for r in [&a, &b] {
        let w = r.cache_warning.as_deref().expect("one warning");
        assert_eq!(w.lines().count(), 1, "{w}");
        assert!(w.contains(&cache.file().display().to_string()), "{w}");
    }
    assert!(a.timings + b.timings > 0, "garbage is not a cache hit");
    // Every line the tuners wrote is intact: only the garbage is skipped.
    let loaded = cache.load(&scope()).unwrap();
    let s = &loaded.skipped;
    assert_eq!((s.foreign_version, s.foreign_scope), (1, 1), "{s:?}");
    // The cut-off line got a newline before the first append: it is now one corrupt line.
    assert_eq!(s.corrupt + s.truncated, 3, "{s:?}");
    let winners = loaded
        .records
        .iter()
        .filter(|r| r.kind == RecordKind::Winner)
        .count();
    let tuned_keys = [&a, &b]
        .iter()
        .flat_map(|r| r.keys.iter())
        .filter(|k| !k.cached)
        .count();
    assert_eq!(
        winners, tuned_keys,
        "one winner line per key tuned, none torn"
    );
    let (kept, dropped) = cache.compact().unwrap();
    // Dropped: the three corrupt lines. Kept: every record, the other device's, and the
    // version-7 line (a newer binary's, not this one's to delete).
    assert_eq!(dropped, 3);
    assert_eq!(
        kept,
        loaded.records.len() + 2,
        "the other device's record and the newer version's stay"
    );
    let after = cache.load(&scope()).unwrap().skipped;
    assert_eq!(
        (after.foreign_scope, after.foreign_version, after.corrupt),
        (1, 1, 0)
    );
}

#[test]
fn a_candidate_with_a_wrong_result_is_rejected_by_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let cache = TuneCache::open(dir.path()).unwrap();
    // The elementwise candidate the beam tries first (host_split = 16) miscompiles: it scales
    // by 0.75 instead of 0.5. Its plan is the default's; only the numbers differ.
    let broken = |c: &Choices| {
        c.settings
            .get("elementwise")
            .is_some_and(|k| k.get("host_split") == Some(&16))
    };
    let compile = compiler(broken);
    let opts = TuneOptions {
        only: Some("elementwise".into()),
        ..options(2.0)
    };
    let report = tune(
        &compile,
        &workload(),
        &cache,
        &scope(),
        &limits(),
        &opts,
        &mut |_, _| {},
    )
    .unwrap();
    assert!(report.wrong >= 1, "the gate caught it");
    assert!(report.keys.iter().all(|k| k.template == "elementwise"));
    let loaded = cache.load(&scope()).unwrap();
    let wrong: Vec<_> = loaded
        .records
        .iter()
        .filter(|r| r.status == Status::Wrong)
        .collect();
    assert!(!wrong.is_empty());
    for r in &wrong {
        assert_eq!(r.config.get("host_split"), 16);
        let k = report.keys.iter().find(|k| k.key == r.key).unwrap();
        assert_ne!(k.winner, r.config, "a wrong candidate never wins");
        assert!(k.wrong >= 1);
    }
}

fn mmada(args: &[&str], cache: &std::path::Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mmada"))
        .args(args)
        .env("MMADA_TUNE_CACHE", cache)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The command line: tune a spec twice (the second run times nothing), compile with the
/// winners (inspect marks them) and without (`--no-tune-cache`), and the usage errors.
#[test]
fn the_tune_command_feeds_compile_and_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let spec = "examples/softmax_linear.toml";
    let plot = dir.path().join("speedup.png");
    let plot_s = plot.display().to_string();
    let (ok, first) = mmada(
        &[
            "tune", spec, "--budget", "60s", "--beam", "1", "--plot", &plot_s,
        ],
        &cache,
    );
    assert!(ok, "{first}");
    assert!(
        first.contains("tuned examples/softmax_linear.toml on cpu:"),
        "{first}"
    );
    assert!(
        std::fs::metadata(&plot).unwrap().len() > 1000,
        "a PNG was written"
    );
    let (ok, second) = mmada(&["tune", spec, "--budget", "60s", "--beam", "1"], &cache);
    assert!(ok, "{second}");
    assert!(second.contains(" 0 timings, 1 compiles"), "{second}");
    assert!(second.contains("cache"), "{second}");

    // The table's winners: (template, the winner's knobs) of each row not won by the default.
    let winners: Vec<(String, String)> = first
        .lines()
        .filter_map(|l| {
            // Rows start with their index.
            l.split_whitespace().next()?.parse::<usize>().ok()?;
            let (_, rest) = l.split_once('×')?;
            let winner = rest.trim().split(" (").next()?.to_string();
            let template = l.split_whitespace().nth(1)?.split(':').next()?.to_string();
            (winner != "default").then_some((template, winner))
        })
        .collect();
    let art = dir.path().join("a.mmada").display().to_string();
    let (ok, out) = mmada(&["compile", spec, "--targets", "cpu", "-o", &art], &cache);
    assert!(ok, "{out}");
    let (_, inspect) = mmada(&["inspect", &art], &cache);
    // Each winner's configuration is what a kernel of its template was built from. (Not
    // whether inspect calls it "(tuned)": a winner that happens to equal the compile-time
    // default builds the same kernel and is not marked, and which configuration wins depends
    // on the timings.)
    for (template, winner) in &winners {
        assert!(
            inspect.contains(&format!("{template}[{winner}]")),
            "{template}[{winner}] in\n{first}\n{inspect}"
        );
    }
    if winners.is_empty() {
        assert!(!inspect.contains("(tuned)"), "{first}\n{inspect}");
    }
    let (ok, out) = mmada(
        &[
            "compile",
            spec,
            "--targets",
            "cpu",
            "--no-tune-cache",
            "-o",
            &art,
        ],
        &cache,
    );
    assert!(ok, "{out}");
    let (_, inspect) = mmada(&["inspect", &art], &cache);
    assert!(!inspect.contains("(tuned)"), "{inspect}");

    for (args, want) in [
        (vec!["tune", spec, "--budget", "soon"], "--budget"),
        (vec!["tune", spec, "--budget=-3s"], "--budget"),
        (vec!["tune", spec, "--budget", "0s"], "--budget"),
        (
            vec!["tune", spec, "--target", "gpu"],
            "--target must be cpu or cuda",
        ),
        (
            vec!["tune", spec, "--only", "gemm"],
            "no kernel template 'gemm'",
        ),
        (vec!["tune", "--preset", "nope"], "--preset"),
        (vec!["tune"], "--preset"),
    ] {
        let (ok, out) = mmada(&args, &cache);
        assert!(!ok && out.contains(want), "{args:?}: {out}");
        assert!(!out.contains("panicked"), "{out}");
    }
}

/// The host knobs the tuner searches compute the same numbers as the reference interpreter:
/// the product by the generated kernel and every cut of the library call, the elementwise,
/// softmax and reduction kernels inline, at other lane widths and chunk counts.
#[test]
fn every_host_knob_matches_the_interpreter() {
    let g = graph(0.5);
    for knobs in [
        vec!["matmul.host_library=0", "matmul.tile=8"],
        vec!["matmul.host_split=1"],
        vec!["matmul.host_split=2", "elementwise.host_split=0"],
        vec![
            "matmul.host_split=3",
            "softmax.host_split=16",
            "reduction.host_split=1",
        ],
        vec![
            "elementwise.host_lanes=1",
            "softmax.host_lanes=2",
            "reduction.host_lanes=32",
        ],
        vec![
            "elementwise.host_lanes=32",
            "elementwise.block=64",
            "reduction.block=32",
        ],
    ] {
        let settings: Vec<String> = knobs.iter().map(|k| k.to_string()).collect();
        let art = compile(
            &g,
            &CompileOptions {
                backend: backend(),
                ptx_check: PtxCheck::Skip,
                choices: Choices::parse(&settings).unwrap(),
                ..CompileOptions::default()
            },
        )
        .unwrap();
        // f32 sums of 300 products of O(1) terms against the f64 interpreter: errors relative
        // to max(|want|, 1) (the outputs are O(1)–O(10); near-zero ones cancel).
        let e = common::worst_error_cpu(&g, &art, &[1, 2], -1.0, 1.0, 1.0);
        assert!(e < 1e-4, "{knobs:?}: {e:e}");
    }
}

/// On a CUDA device (skipped without one; `MMADA_REQUIRE_CUDA=1` in `scripts/gpu-check.sh`
/// makes that a failure): the GPU knobs are searched with device-event timing and the gate on
/// the device, and a second run hits the cache.
#[test]
fn tuning_on_a_cuda_device() {
    if !common::cuda_or_skip() {
        let dir = tempfile::tempdir().unwrap();
        let (ok, out) = mmada(
            &["tune", "examples/softmax_linear.toml", "--target", "cuda"],
            &dir.path().join("cache"),
        );
        assert!(!ok && out.contains("no CUDA device"), "{out}");
        return;
    }
    let (_, cc) = mmada_runtime::cuda::device_info(0).unwrap();
    let arch = [mmada_codegen::SmArch::SM80, mmada_codegen::SmArch::SM90]
        .into_iter()
        .filter(|a| a.runs_on(cc))
        .max()
        .unwrap();
    let lower = LowerCache::default();
    let compile = move |choices: &Choices| {
        let opts = CompileOptions {
            backend: BackendOptions {
                host: None,
                gpu_archs: vec![arch],
            },
            ptx_check: PtxCheck::Skip,
            choices: choices.clone(),
            lower_cache: Some(lower.clone()),
            ..CompileOptions::default()
        };
        compile(&graph(0.5), &opts).map_err(|e| e.to_string())
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = TuneCache::open(dir.path()).unwrap();
    let scope = mmada_codegen::tune::gpu_scope("test device", cc, 0, "mmada test");
    let limits = TargetLimits::new(None, &[arch]);
    let opts = TuneOptions {
        target: mmada_runtime::tune::TuneTarget::Cuda,
        ..options(5.0)
    };
    let run = || {
        let w = workload();
        tune(&compile, &w, &cache, &scope, &limits, &opts, &mut |_, _| {}).unwrap()
    };
    let first = run();
    assert!(first.timings > first.keys.len(), "{first:?}");
    assert_eq!(
        first.wrong, 0,
        "no GPU candidate of this graph computes another result"
    );
    for k in &first.keys {
        assert!(k.is_default || k.winner_s <= k.default_s, "{k:?}");
    }
    assert_eq!(run().timings, 0);
}

/// A search cut off by its budget records partial winners (compile uses them); the next run
/// continues it from the cached timings, timing no (kernel, candidate) pair twice, and a third
/// run times nothing.
#[test]
fn a_search_cut_by_its_budget_resumes_without_timing_anything_twice() {
    let dir = tempfile::tempdir().unwrap();
    let cache = TuneCache::open(dir.path()).unwrap();
    let compile = compiler(|_| false);
    let go = |budget_s: f64| {
        let opts = TuneOptions {
            beam_width: 2,
            ..options(budget_s)
        };
        let w = workload();
        tune(
            &compile,
            &w,
            &cache,
            &scope(),
            &limits(),
            &opts,
            &mut |_, _| {},
        )
        .unwrap()
    };
    let first = go(0.2);
    let loaded = cache.load(&scope()).unwrap();
    assert!(
        loaded
            .records
            .iter()
            .any(|r| r.kind == RecordKind::Winner && r.partial),
        "one round in 0.2 s leaves searches unfinished"
    );
    let second = go(120.0);
    assert!(second.timings > 0, "the search went on");
    let mut seen = std::collections::HashSet::new();
    for r in cache.load(&scope()).unwrap().records {
        if r.kind == RecordKind::Timing {
            assert!(
                seen.insert((r.key.clone(), r.config.describe())),
                "{} [{}] timed twice",
                r.key,
                r.config.describe()
            );
        }
    }
    assert!(first.timings + second.timings == seen.len());
    assert_eq!(go(120.0).timings, 0, "finished: the cache answers");
}
