//! Benchmarks of the configurations in `shared/BENCHMARKS.md`: the bench-tiny and bench-small
//! training step (masked-diffusion LM loss, backward, clipping, AdamW) and forward pass, with
//! achieved FLOP/s and the ratio to the official PyTorch figures measured on the build machine.

use crate::config::LladaConfig;
use crate::llada::forward_graph;
use crate::loss::{row_weights, RowKind};
use crate::magvit::{decode_graph, encode_graph, MagvitConfig};
use crate::train_step::{exp_avg, exp_avg_sq, train_step_graph, StepHyper};
use indexmap::IndexMap;
use mmada_codegen::backend::BackendOptions;
use mmada_codegen::compile::{compile, CompileOptions, PtxCheck};
use mmada_codegen::template::Choices;
use mmada_ir::{DType, Tensor};
use mmada_runtime::{open_artifact, Executor, Target};
use std::time::Instant;

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Figure {
    /// One whole training step (batch of BENCHMARKS.md).
    TrainStep,
    /// Logits of one sequence.
    Forward,
    /// MAGVIT-v2: codes of one image.
    Encode,
    /// MAGVIT-v2: the image of one code grid.
    Decode,
}

/// The MAGVIT-v2 case name (the released architecture, one 256 px image).
pub const MAGVIT_256: &str = "magvit-256";

impl Case {
    /// True for the image-tokenizer cases.
    pub fn is_magvit(&self) -> bool {
        self.preset.starts_with("magvit")
    }
}

/// One benchmark case.
#[derive(Clone, Debug)]
pub struct Case {
    /// Preset name.
    pub preset: &'static str,
    /// Figure.
    pub figure: Figure,
    /// Batch.
    pub batch: usize,
    /// Sequence length.
    pub seq: usize,
    /// The official implementation's figure on the build machine (seconds; BENCHMARKS.md,
    /// upper end of the measured range), for CPU runs.
    pub reference_s: f64,
}

/// The cases of BENCHMARKS.md that run on a CPU.
pub fn cases() -> Vec<Case> {
    vec![
        Case {
            preset: "bench-tiny",
            figure: Figure::TrainStep,
            batch: 4,
            seq: 256,
            reference_s: 0.187,
        },
        Case {
            preset: "bench-tiny",
            figure: Figure::Forward,
            batch: 1,
            seq: 256,
            reference_s: 0.0152,
        },
        Case {
            preset: "bench-small",
            figure: Figure::TrainStep,
            batch: 2,
            seq: 512,
            reference_s: 1.22,
        },
        Case {
            preset: "bench-small",
            figure: Figure::Forward,
            batch: 1,
            seq: 512,
            reference_s: 0.178,
        },
        // BENCHMARKS.md: MAGVIT-v2, one 256 px image (256 codes), 2 threads.
        Case {
            preset: MAGVIT_256,
            figure: Figure::Encode,
            batch: 1,
            seq: 256,
            reference_s: 4.5,
        },
        Case {
            preset: MAGVIT_256,
            figure: Figure::Decode,
            batch: 1,
            seq: 256,
            reference_s: 3.5,
        },
    ]
}

/// Floating-point operations of a graph's convolutions and matrix products (2 per
/// multiply-add), the work that dominates the image tokenizer.
pub fn graph_flops(g: &mmada_ir::Graph) -> f64 {
    let mut total = 0.0;
    for id in g.node_ids() {
        let Ok(n) = g.try_node(id) else { continue };
        let ops = g.operands(id);
        let shape = |k: usize| {
            ops.get(k)
                .and_then(|&o| g.try_node(o).ok())
                .map(|o| o.shape.clone())
        };
        match &n.op {
            mmada_ir::Op::Conv2d { geom } => {
                if let Some(w) = shape(1) {
                    // out elements × (in/groups · kh · kw) multiply-adds.
                    let per = (w.0[1] * w.0[2] * w.0[3]) as f64;
                    let _ = geom;
                    total += 2.0 * n.shape.numel() as f64 * per;
                }
            }
            mmada_ir::Op::MatMul => {
                if let Some(a) = shape(0) {
                    let k = *a.0.last().unwrap_or(&0) as f64;
                    total += 2.0 * n.shape.numel() as f64 * k;
                }
            }
            _ => {}
        }
    }
    total
}

/// Floating-point operations of a case.
pub fn case_flops(case: &Case) -> Result<f64, Box<dyn std::error::Error>> {
    if case.is_magvit() {
        let (g, _) = case_graph(case)?;
        return Ok(graph_flops(&g));
    }
    let cfg = LladaConfig::preset(case.preset).ok_or("unknown preset")?;
    Ok(flops(&cfg, case.batch, case.seq, case.figure))
}

/// Floating-point operations of a forward pass (matrix products and attention; ×3 for a
/// training step).
pub fn flops(cfg: &LladaConfig, batch: usize, seq: usize, figure: Figure) -> f64 {
    let (d, f, v, n) = (
        cfg.d_model as f64,
        cfg.mlp_hidden_size as f64,
        cfg.rows() as f64,
        cfg.n_layers as f64,
    );
    let tokens = (batch * seq) as f64;
    let dense = 2.0 * tokens * (n * (4.0 * d * d + 3.0 * d * f) + v * d);
    let attn = n * batch as f64 * 4.0 * (seq as f64).powi(2) * d;
    let fwd = dense + attn;
    match figure {
        Figure::TrainStep => 3.0 * fwd,
        _ => fwd,
    }
}

/// Random weights: [`crate::checkpoint::init_weights`] with std 0.02 and streams from 0.
pub fn random_weights(cfg: &LladaConfig, seed: i64) -> IndexMap<String, Tensor> {
    crate::checkpoint::init_weights(cfg, seed, 0, 0.02)
}

/// A prepared benchmark: an executor with resident weights (and optimiser state) and the
/// per-run inputs.
pub type Prepared = (Box<dyn Executor>, IndexMap<String, Tensor>);

/// Compiles a case and returns its executor and inputs.
pub fn prepare(
    case: &Case,
    target: Target,
    backend: BackendOptions,
) -> Result<Prepared, Box<dyn std::error::Error>> {
    prepare_with(case, target, backend, Choices::default())
}

/// [`prepare`] with knob choices (the tuner's winners, `--knob` settings).
pub fn prepare_with(
    case: &Case,
    target: Target,
    backend: BackendOptions,
    choices: Choices,
) -> Result<Prepared, Box<dyn std::error::Error>> {
    let (art, ins) = compile_case_with(case, backend, choices)?;
    let mut exe = open_artifact(art, target)?;
    set_weights(exe.as_mut(), case)?;
    Ok((exe, ins))
}

/// Compiles a case's graph; returns the artifact and the per-run inputs.
fn compile_case(
    case: &Case,
    backend: BackendOptions,
) -> Result<(mmada_codegen::artifact::Artifact, IndexMap<String, Tensor>), Box<dyn std::error::Error>>
{
    compile_case_with(case, backend, Choices::default())
}

type CompiledCase = (mmada_codegen::artifact::Artifact, IndexMap<String, Tensor>);

fn compile_case_with(
    case: &Case,
    backend: BackendOptions,
    choices: Choices,
) -> Result<CompiledCase, Box<dyn std::error::Error>> {
    let (g, ins) = case_graph(case)?;
    let art = compile(
        &g,
        &CompileOptions {
            name: format!("{}-{:?}", case.preset, case.figure),
            backend,
            ptx_check: PtxCheck::Skip,
            choices,
            ..CompileOptions::default()
        },
    )?;
    Ok((art, ins))
}

/// Random MAGVIT-v2 weights: convolution weights normal with std 1/√fan-in (activations stay
/// O(1) through the network), every 1-D tensor (biases, norm scales) ones; seed 7.
pub fn magvit_weights(cfg: &MagvitConfig) -> IndexMap<String, Tensor> {
    let mut out = IndexMap::new();
    for (k, (name, shape)) in cfg.param_specs().into_iter().enumerate() {
        let fan_in: usize = shape.iter().skip(1).product();
        let std = 1.0 / (fan_in.max(1) as f32).sqrt();
        let shape = mmada_ir::Shape(shape);
        if let Some(t) =
            mmada_runtime::init::init_tensor(&shape, mmada_ir::Role::Param, 7, k as u32, std)
        {
            out.insert(name, t);
        }
    }
    out
}

/// Makes the random weights (seed 7) resident, with zero optimiser state for a training step.
fn set_weights(exe: &mut dyn Executor, case: &Case) -> Result<(), Box<dyn std::error::Error>> {
    if case.is_magvit() {
        let prefix = if case.figure == Figure::Encode {
            "encoder."
        } else {
            "decoder."
        };
        for (n, t) in magvit_weights(&MagvitConfig::default()) {
            if n.starts_with(prefix) {
                exe.set_input(&n, &t)?;
            }
        }
        return Ok(());
    }
    let cfg = LladaConfig::preset(case.preset).ok_or("unknown preset")?;
    for (n, t) in random_weights(&cfg, 7) {
        if case.figure == Figure::TrainStep {
            let z = Tensor::zeros(DType::F32, t.shape().clone());
            exe.set_input(&exp_avg(&n), &z)?;
            exe.set_input(&exp_avg_sq(&n), &z)?;
        }
        exe.set_input(&n, &t)?;
    }
    Ok(())
}

/// Time spent in one kernel over a profiled run: every launch of it, summed.
#[derive(Clone, Debug)]
pub struct KernelTime {
    /// Kernel symbol (or the host routine's kernel, for library matrix products).
    pub kernel: String,
    /// One graph node it computes, as an example.
    pub node: String,
    /// Launches.
    pub launches: usize,
    /// Seconds, all launches together.
    pub seconds: f64,
}

/// Runs a case on the CPU with per-launch timing (after two warm-up runs) and returns the
/// total run time and the time per kernel, slowest first.
pub fn profile(
    case: &Case,
    backend: BackendOptions,
) -> Result<(f64, Vec<KernelTime>), Box<dyn std::error::Error>> {
    let (art, ins) = compile_case(case, backend)?;
    let mut exe = mmada_runtime::CpuExecutor::new(mmada_runtime::Executable::new(art)?)?;
    set_weights(&mut exe, case)?;
    for _ in 0..2 {
        exe.run(&ins)?;
    }
    let t0 = Instant::now();
    let times = exe.run_profiled("main", &ins)?;
    let total = t0.elapsed().as_secs_f64();
    let mut by_kernel: IndexMap<String, KernelTime> = IndexMap::new();
    for t in times {
        let e = by_kernel.entry(t.kernel.clone()).or_insert(KernelTime {
            kernel: t.kernel,
            node: t.node,
            launches: 0,
            seconds: 0.0,
        });
        e.launches += 1;
        e.seconds += t.seconds;
    }
    let mut v: Vec<KernelTime> = by_kernel.into_values().collect();
    v.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    Ok((total, v))
}

/// The graph of a case and its per-run (data) inputs.
pub fn case_graph(
    case: &Case,
) -> Result<(mmada_ir::Graph, IndexMap<String, Tensor>), Box<dyn std::error::Error>> {
    if case.is_magvit() {
        let cfg = MagvitConfig::default();
        let side = (case.seq as f64).sqrt() as usize;
        let px = side * cfg.factor();
        let mut ins = IndexMap::new();
        let g = if case.figure == Figure::Encode {
            let n = case.batch * 3 * px * px;
            let v: Vec<f32> = (0..n as u64)
                .map(|i| {
                    (mmada_ir::philox::words(3, 0, 11, i)[0] as f64 / 2f64.powi(31) - 1.0) as f32
                })
                .collect();
            ins.insert(
                "pixels".to_string(),
                Tensor::from_f32([case.batch, 3, px, px], v)?,
            );
            encode_graph(&cfg, case.batch, px, px)?
        } else {
            let k = cfg.codebook_size() as u64;
            let v: Vec<i64> = (0..(case.batch * case.seq) as u64)
                .map(|i| (mmada_ir::philox::words(3, 0, 12, i)[0] as u64 % k) as i64)
                .collect();
            ins.insert(
                "codes".to_string(),
                Tensor::from_i64([case.batch, case.seq], v)?,
            );
            decode_graph(&cfg, case.batch, side, side)?
        };
        return Ok((g, ins));
    }
    let cfg = LladaConfig::preset(case.preset).ok_or("unknown preset")?;
    let (b, l) = (case.batch, case.seq);
    let g = match case.figure {
        Figure::TrainStep => train_step_graph(&cfg, b, l, StepHyper::default())?,
        _ => forward_graph(&cfg, b, l, false)?,
    };
    let ids: Vec<i64> = (0..(b * l) as u64)
        .map(|i| (mmada_ir::philox::words(3, 0, 9, i)[0] as u64 % cfg.vocab_size as u64) as i64)
        .collect();
    let mut ins = IndexMap::new();
    ins.insert("input_ids".to_string(), Tensor::from_i64([b, l], ids)?);
    if case.figure == Figure::TrainStep {
        let w = row_weights(&vec![RowKind::Lm; b], l, 1.0, 1.0);
        ins.insert("prompt_mask".into(), Tensor::zeros(DType::Bool, [b, l]));
        ins.insert("row_weight".into(), Tensor::from_f64(DType::F32, [b], &w)?);
        ins.insert(
            "seed".into(),
            Tensor::from_i64(Vec::<usize>::new(), vec![10086])?,
        );
        ins.insert(
            "offset".into(),
            Tensor::from_i64(Vec::<usize>::new(), vec![0])?,
        );
        // BENCHMARKS.md: lr 1e-4; bias corrections of step 1.
        for (n, v) in [("lr", 1e-4f32), ("bc1", 0.1), ("bc2", 0.001)] {
            ins.insert(n.into(), Tensor::from_f32(Vec::<usize>::new(), vec![v])?);
        }
    }
    Ok((g, ins))
}

/// Median seconds of `reps` runs after `warmup` runs.
pub fn time_runs(
    exe: &mut dyn Executor,
    ins: &IndexMap<String, Tensor>,
    warmup: usize,
    reps: usize,
) -> Result<f64, mmada_runtime::RuntimeError> {
    for _ in 0..warmup {
        exe.run(ins)?;
    }
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        exe.run(ins)?;
        t.push(t0.elapsed().as_secs_f64());
    }
    t.sort_by(|a, b| a.total_cmp(b));
    Ok(t[t.len() / 2])
}

/// The text-sampling setting of BENCHMARKS.md: prompt 64, gen 128, block 32, 128 steps, τ 0.
pub const SAMPLING_PROMPT: usize = 64;

/// What text sampling is timed on: a model and one prompt.
#[derive(Clone, Debug)]
pub struct SamplingModel {
    /// Shown as the config column (a preset name or the checkpoint's directory).
    pub name: String,
    /// The architecture.
    pub cfg: LladaConfig,
    /// The weights (f32).
    pub weights: IndexMap<String, Tensor>,
    /// The prompt ids.
    pub prompt: Vec<i64>,
}

/// The fixed pseudo-random prompt of [`SAMPLING_PROMPT`] text ids for a vocabulary of
/// `vocab_size` (the last two ids, mask and end-of-text, are left out).
pub fn sampling_prompt(vocab_size: usize) -> Vec<i64> {
    let text = vocab_size.saturating_sub(2).max(1) as i64;
    (0..SAMPLING_PROMPT as i64)
        .map(|i| (i * 7919 + 13) % text)
        .collect()
}

impl SamplingModel {
    /// A preset with random weights (seed 7) and [`sampling_prompt`].
    pub fn random(preset: &str) -> Result<SamplingModel, Box<dyn std::error::Error>> {
        let cfg = LladaConfig::preset(preset).ok_or_else(|| format!("no preset '{preset}'"))?;
        Ok(SamplingModel {
            name: preset.to_string(),
            weights: random_weights(&cfg, 7),
            prompt: sampling_prompt(cfg.vocab_size),
            cfg,
        })
    }
}

/// One text-sampling measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingResult {
    /// Median seconds per generation.
    pub median_s: f64,
    /// Generated tokens per second at the median.
    pub tokens_per_s: f64,
    /// Fraction of generated tokens equal to the no-cache greedy output (1 for the no-cache
    /// figure when runs are deterministic).
    pub agreement: f64,
    /// Denoising steps of the last timed generation (fewer than the tokens when the
    /// confidence threshold commits several per step).
    pub steps: usize,
    /// The generated ids of the last timed generation.
    pub ids: Vec<i64>,
    /// The no-cache greedy ids the agreement is counted against.
    pub reference_ids: Vec<i64>,
}

/// Times text sampling of `model` (BENCHMARKS.md's setting: gen 128, block 32, 128 steps,
/// τ 0): median of `reps` generations after one warm-up, with `cache` and the confidence
/// `threshold` (none and none: the plain sampler); agreement is against the no-cache greedy
/// output.
pub fn time_sampling(
    model: &SamplingModel,
    reps: usize,
    cache: crate::text_sampler::KvCache,
    threshold: Option<f32>,
    target: Target,
    backend: BackendOptions,
) -> Result<SamplingResult, Box<dyn std::error::Error>> {
    use crate::text_sampler::{KvCache, TextOptions, TextSampler};
    let base = TextOptions {
        gen_length: 128,
        steps: 128,
        block_length: 32,
        ..TextOptions::default()
    };
    let prompts = [model.prompt.clone()];
    let new = |opts| {
        TextSampler::new(
            model.cfg.clone(),
            &model.weights,
            1,
            model.prompt.len(),
            opts,
            target,
            backend.clone(),
        )
    };
    let mut plain = new(base)?;
    let reference = plain.generate(&prompts, &mut |_, _| {})?;
    let opts = TextOptions {
        cache,
        threshold,
        ..base
    };
    let mut s = if cache != KvCache::None || threshold.is_some() {
        let mut s = new(opts)?;
        s.generate(&prompts, &mut |_, _| {})?;
        s
    } else {
        plain
    };
    let mut times = Vec::with_capacity(reps);
    let mut same = 0usize;
    let mut last = reference.clone();
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        let g = s.generate(&prompts, &mut |_, _| {})?;
        times.push(t0.elapsed().as_secs_f64());
        same += g.ids[0]
            .iter()
            .zip(&reference.ids[0])
            .filter(|(a, b)| a == b)
            .count();
        last = g;
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let median_s = times[times.len() / 2];
    Ok(SamplingResult {
        median_s,
        tokens_per_s: opts.gen_length as f64 / median_s,
        agreement: same as f64 / (opts.gen_length * times.len()) as f64,
        steps: last.steps,
        ids: last.ids.swap_remove(0),
        reference_ids: reference.ids[0].clone(),
    })
}

/// A case as the tuner times it: its graph, and a workload whose resident inputs are the
/// case's deterministic weights (and zero optimiser state for the training step).
pub fn case_workload(
    case: &Case,
) -> Result<(mmada_ir::Graph, mmada_runtime::tune::Workload), Box<dyn std::error::Error>> {
    let (g, inputs) = case_graph(case)?;
    let mut resident = Vec::new();
    if case.is_magvit() {
        let prefix = if case.figure == Figure::Encode {
            "encoder."
        } else {
            "decoder."
        };
        resident.extend(
            magvit_weights(&MagvitConfig::default())
                .into_iter()
                .filter(|(n, _)| n.starts_with(prefix)),
        );
    } else {
        let cfg = LladaConfig::preset(case.preset).ok_or("unknown preset")?;
        for (n, t) in random_weights(&cfg, 7) {
            if case.figure == Figure::TrainStep {
                let z = Tensor::zeros(DType::F32, t.shape().clone());
                resident.push((exp_avg(&n), z.clone()));
                resident.push((exp_avg_sq(&n), z));
            }
            resident.push((n, t));
        }
    }
    Ok((
        g,
        mmada_runtime::tune::Workload {
            entry: "main".into(),
            resident,
            inputs,
        },
    ))
}
