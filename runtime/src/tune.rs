//! The autotuner: searches each kernel template's knobs on this machine's CPU, one tune key at
//! a time, and records every timing in the cache (`mmada_codegen::tune::cache`).
//!
//! 1. **Default.** The workload's graph is compiled with the heuristic defaults; each launch
//!    carries its kernel's tune key. Keys whose template's candidate set already has a
//!    winner in the cache are done: a second run over the same graph times nothing.
//! 2. **Candidates.** Per template, the [`Space`] of the host knobs: every candidate when the
//!    space is small (at most [`TuneOptions::exhaustive_max`]), else a beam search: start at
//!    the default, try every one-knob change of the `beam_width` best configurations so far,
//!    repeat. A trial compiles the graph with one candidate of *each* template at once (keys
//!    belong to one template, so their timings do not mix); trials of a round compile in
//!    parallel, and a candidate that changes only the dispatch reuses the lowered code.
//! 3. **Gate.** Before a candidate's time counts, every launch of a key it changes is run on
//!    exactly the inputs the default's launch saw (the default and the candidate executors
//!    step through the entry together, the candidate's argument buffers overwritten with the
//!    default's before each compared launch), and every buffer it touches must match the
//!    default's: f32 to 1e-4 of the buffer's largest magnitude (a different summation order
//!    moves the last bits), bf16/f16 to 1e-2, integers and booleans exactly. A candidate that
//!    fails is recorded as `wrong` and never wins.
//! 4. **Timing.** Warm-up runs, then up to `reps` profiled runs of the whole entry (the
//!    kernels see the caches they see in real use); a key's sample is the sum of its launches
//!    in one run, its time the median. A trial stops early once its hopeless keys (at
//!    `early_stop`× their best time so far) take more than half of the time of the keys it times: those keys are recorded
//!    as `early_stop` (ranked, never winners), and templates of the trial none of whose keys
//!    lost are tried again in a later round. Queues are taken from their end, so the beam tries
//!    the last knob (`host_split`, which needs no new code) first.
//! 5. **Recheck.** The graph compiled with the winners runs interleaved with the default
//!    (`recheck_rounds` each). A candidate wins the search only if its median beats the
//!    default's by more than `noise`; a winner slower than the default in the recheck goes
//!    back to the default. Winners, default or not, are recorded, so the key is not tuned
//!    again — unless the search stopped at its budget with candidates left: such winners are
//!    marked partial (compile uses them; `tune` searches the key again).

use crate::cpu::CpuExecutor;
use crate::cuda::CudaExecutor;
use crate::executable::{Executable, Executor};
use crate::RuntimeError;
use indexmap::IndexMap;
use mmada_codegen::artifact::Artifact;
use mmada_codegen::program::Program;
use mmada_codegen::template::{self, Choices, Config, TargetLimits};
use mmada_codegen::tune::cache::{Loaded, Record, RecordKind, Scope, Status, TuneCache};
use mmada_codegen::tune::space::Space;
use mmada_ir::{DType, Tensor};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Where the kernels are tuned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TuneTarget {
    /// This machine's CPU: the host knobs, timed with a monotonic clock.
    Cpu,
    /// CUDA device 0: the GPU knobs, timed with device events around each launch.
    Cuda,
}

/// What the tuner needs of an executor beyond [`Executor`]: each launch's time, one launch at
/// a time, and its raw buffers (for the correctness gate).
pub trait TuneDevice: Executor {
    /// Runs the entry like [`Executor::run_entry`]; returns each launch's seconds.
    fn run_timed(
        &mut self,
        entry: &str,
        inputs: &IndexMap<String, Tensor>,
    ) -> Result<Vec<f64>, RuntimeError>;
    /// Runs launch `i` of the entry alone, on the buffers as they are.
    fn run_one(&mut self, entry: &str, i: usize) -> Result<(), RuntimeError>;
    /// The bytes of program buffer `b`.
    fn read_buffer(&mut self, b: usize) -> Result<Vec<u8>, RuntimeError>;
    /// Overwrites program buffer `b`.
    fn write_buffer(&mut self, b: usize, bytes: &[u8]) -> Result<(), RuntimeError>;
}

impl TuneDevice for CpuExecutor {
    fn run_timed(
        &mut self,
        entry: &str,
        inputs: &IndexMap<String, Tensor>,
    ) -> Result<Vec<f64>, RuntimeError> {
        Ok(self
            .run_profiled(entry, inputs)?
            .into_iter()
            .map(|t| t.seconds)
            .collect())
    }
    fn run_one(&mut self, entry: &str, i: usize) -> Result<(), RuntimeError> {
        self.run_launch(entry, i)
    }
    fn read_buffer(&mut self, b: usize) -> Result<Vec<u8>, RuntimeError> {
        self.buffer_bytes(b)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| err(format!("no buffer {b}")))
    }
    fn write_buffer(&mut self, b: usize, bytes: &[u8]) -> Result<(), RuntimeError> {
        self.set_buffer_bytes(b, bytes)
    }
}

impl TuneDevice for CudaExecutor {
    fn run_timed(
        &mut self,
        entry: &str,
        inputs: &IndexMap<String, Tensor>,
    ) -> Result<Vec<f64>, RuntimeError> {
        self.run_entry_timed(entry, inputs)
    }
    fn run_one(&mut self, entry: &str, i: usize) -> Result<(), RuntimeError> {
        self.run_launch(entry, i)
    }
    fn read_buffer(&mut self, b: usize) -> Result<Vec<u8>, RuntimeError> {
        self.buffer_bytes(b)
    }
    fn write_buffer(&mut self, b: usize, bytes: &[u8]) -> Result<(), RuntimeError> {
        self.set_buffer_bytes(b, bytes)
    }
}

/// How hard to search.
#[derive(Clone, Debug)]
pub struct TuneOptions {
    /// Where to tune (the compile function must build code for it).
    pub target: TuneTarget,
    /// Wall-clock budget for the search (the round under way finishes; the recheck follows).
    pub budget: Duration,
    /// Tune only this template.
    pub only: Option<String>,
    /// Untimed runs before each candidate's timed ones.
    pub warmup: usize,
    /// Timed runs per candidate (the median counts; at least 5).
    pub reps: usize,
    /// Configurations kept per template by the beam search.
    pub beam_width: usize,
    /// Spaces with at most this many candidates are searched exhaustively.
    pub exhaustive_max: usize,
    /// A trial stops once its keys are this many times slower than their best.
    pub early_stop: f64,
    /// Relative noise margin: a winner must beat the default by more than this.
    pub noise: f64,
    /// Interleaved rounds of the recheck.
    pub recheck_rounds: usize,
    /// Trials compiled at once.
    pub parallel: usize,
    /// Tune every key again, even those with a winner in the cache (the new winner, being
    /// newer, replaces the old one).
    pub retune: bool,
}

impl Default for TuneOptions {
    fn default() -> Self {
        TuneOptions {
            target: TuneTarget::Cpu,
            budget: Duration::from_secs(60),
            only: None,
            warmup: 1,
            reps: 5,
            beam_width: 3,
            exhaustive_max: 16,
            early_stop: 3.0,
            noise: 0.03,
            recheck_rounds: 7,
            parallel: std::thread::available_parallelism().map_or(1, |n| n.get()),
            retune: false,
        }
    }
}

/// What is timed: one entry of the compiled graph, with its resident inputs (weights,
/// optimiser state: set once per executor) and its per-run inputs.
#[derive(Clone, Debug)]
pub struct Workload {
    /// The entry.
    pub entry: String,
    /// Inputs set once.
    pub resident: Vec<(String, Tensor)>,
    /// Inputs of every run.
    pub inputs: IndexMap<String, Tensor>,
}

/// Compiles the workload's graph under some choices (the tuner fills `tuned` or `settings`).
pub type CompileFn<'a> = dyn Fn(&Choices) -> Result<Artifact, String> + Sync + 'a;

/// The outcome for one tune key.
#[derive(Clone, Debug)]
pub struct KeyResult {
    /// The tune key.
    pub key: String,
    /// Its template.
    pub template: String,
    /// Launches of the key in one run of the entry.
    pub launches: usize,
    /// The winner.
    pub winner: Config,
    /// Whether the winner is the default.
    pub is_default: bool,
    /// Seconds per run of the key's launches: the default's and the winner's (recheck medians,
    /// or the search's when the default won).
    pub default_s: f64,
    /// See `default_s`.
    pub winner_s: f64,
    /// Candidates timed for the key (the default included).
    pub timed: usize,
    /// Candidates rejected by the correctness gate.
    pub wrong: usize,
    /// The winner came from the cache (nothing was timed for this key).
    pub cached: bool,
}

impl KeyResult {
    /// Default time over winner time.
    pub fn speedup(&self) -> f64 {
        if self.winner_s > 0.0 {
            self.default_s / self.winner_s
        } else {
            1.0
        }
    }
}

/// What a tuning run did.
#[derive(Clone, Debug, Default)]
pub struct TuneReport {
    /// Per key, in launch order.
    pub keys: Vec<KeyResult>,
    /// Timing measurements made (one per key per candidate timed); 0 when all came from the
    /// cache.
    pub timings: usize,
    /// Graph compilations.
    pub compiles: usize,
    /// Candidates rejected by the correctness gate (per key).
    pub wrong: usize,
    /// The recheck's whole-entry medians (default, tuned) in seconds, when it ran.
    pub entry_s: Option<(f64, f64)>,
    /// The recheck's per-round whole-entry times (default, tuned).
    pub rounds: Vec<(f64, f64)>,
    /// The winners as compile takes them.
    pub tuned: IndexMap<String, Config>,
    /// The cache's warning about ignored lines, if any.
    pub cache_warning: Option<String>,
}

/// Progress callback: a phase and a message.
pub type Progress<'a> = dyn FnMut(&str, &str) + 'a;

fn err(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Load(msg.into())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::INFINITY,
        n if n % 2 == 1 => s[n / 2],
        n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
    }
}

fn template_of_key(key: &str) -> &str {
    key.split(':').next().unwrap_or("")
}

/// An executor of `target` over the artifact, with the resident inputs set.
fn executor(
    art: Artifact,
    w: &Workload,
    target: TuneTarget,
) -> Result<Box<dyn TuneDevice>, RuntimeError> {
    let exe = Executable::new(art)?;
    let mut exe: Box<dyn TuneDevice> = match target {
        TuneTarget::Cpu => Box::new(CpuExecutor::new(exe)?),
        TuneTarget::Cuda => Box::new(CudaExecutor::new(exe, 0)?),
    };
    for (n, t) in &w.resident {
        exe.set_input(n, t)?;
    }
    Ok(exe)
}

/// Launch indices of each tune key in the entry.
fn launches_by_key(program: &Program, entry: usize) -> IndexMap<String, Vec<usize>> {
    let mut out: IndexMap<String, Vec<usize>> = IndexMap::new();
    for (i, l) in program.entries[entry].launches.iter().enumerate() {
        if let Some(k) = &l.tune_key {
            out.entry(k.clone()).or_default().push(i);
        }
    }
    out
}

/// What the target runs for the key's launches: equal fingerprints mean equal code (kernel
/// names carry a hash of the kernel).
fn fingerprint(program: &Program, entry: usize, launches: &[usize], target: TuneTarget) -> String {
    launches
        .iter()
        .map(|&i| {
            let l = &program.entries[entry].launches[i];
            match target {
                TuneTarget::Cpu => format!(
                    "{}|{}",
                    serde_json::to_string(&l.host).unwrap_or_default(),
                    l.host_split
                ),
                TuneTarget::Cuda => serde_json::to_string(&l.gpu).unwrap_or_default(),
            }
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// What [`time_runs`] measured.
struct Timed {
    /// Each key's samples (seconds of its launches per run).
    samples: HashMap<String, Vec<f64>>,
    /// Each whole run's seconds.
    totals: Vec<f64>,
    /// Whether the early stop cut the runs short.
    stopped: bool,
}

/// Times `reps` runs (after `warmup`). `stop(key_medians)` is asked after each run from the
/// second on.
fn time_runs(
    exe: &mut dyn TuneDevice,
    w: &Workload,
    keys: &IndexMap<String, Vec<usize>>,
    warmup: usize,
    reps: usize,
    stop: &dyn Fn(&HashMap<String, f64>) -> bool,
) -> Result<Timed, RuntimeError> {
    for _ in 0..warmup {
        exe.run_entry(&w.entry, &w.inputs)?;
    }
    let mut samples: HashMap<String, Vec<f64>> = HashMap::new();
    let mut totals = Vec::new();
    for r in 0..reps {
        let t0 = Instant::now();
        let times = exe.run_timed(&w.entry, &w.inputs)?;
        totals.push(t0.elapsed().as_secs_f64());
        for (key, idx) in keys {
            let s: f64 = idx.iter().filter_map(|&i| times.get(i)).sum();
            samples.entry(key.clone()).or_default().push(s);
        }
        if r >= 1 {
            let medians: HashMap<String, f64> = samples
                .iter()
                .map(|(k, v)| (k.clone(), median(v)))
                .collect();
            if stop(&medians) {
                return Ok(Timed {
                    samples,
                    totals,
                    stopped: true,
                });
            }
        }
    }
    Ok(Timed {
        samples,
        totals,
        stopped: false,
    })
}

/// Whether two buffers of `dtype` agree (see the module docs for the tolerances).
fn agree(dtype: DType, a: &[u8], b: &[u8]) -> Result<bool, String> {
    if a.len() != b.len() {
        return Ok(false);
    }
    if a == b {
        return Ok(true);
    }
    if !dtype.is_float() {
        return Ok(false);
    }
    let n = a.len() / dtype.size_bytes().max(1);
    let ta = Tensor::from_le_bytes(dtype, vec![n], a).map_err(|e| e.to_string())?;
    let tb = Tensor::from_le_bytes(dtype, vec![n], b).map_err(|e| e.to_string())?;
    let (va, vb) = (ta.to_f64_vec(), tb.to_f64_vec());
    // Per element, relative to its own size plus the buffer's median magnitude (so values
    // that cancel to near zero get the buffer's scale, and one huge sentinel does not loosen
    // every other element).
    let mut mags: Vec<f64> = va
        .iter()
        .filter(|v| v.is_finite())
        .map(|v| v.abs())
        .collect();
    let mid = mags.len() / 2;
    let typical = if mags.is_empty() {
        0.0
    } else {
        *mags.select_nth_unstable_by(mid, f64::total_cmp).1
    };
    let rtol = if dtype == DType::F32 { 1e-4 } else { 1e-2 };
    Ok(va.iter().zip(&vb).all(|(x, y)| {
        (x.is_nan() && y.is_nan())
            || x == y
            || (x - y).abs() <= rtol * (x.abs().max(y.abs()) + typical)
    }))
}

/// The correctness gate: runs the entry on the default executor launch by launch; before each
/// launch of `checked`, the candidate gets the default's argument buffers and runs the same
/// launch; returns the keys (of `checked`) whose launches disagreed.
fn gate(
    reference: &mut dyn TuneDevice,
    candidate: &mut dyn TuneDevice,
    w: &Workload,
    checked: &HashMap<usize, String>,
) -> Result<HashSet<String>, RuntimeError> {
    let rp = &reference.executable().program.clone();
    let cp = &candidate.executable().program.clone();
    let entry = reference.executable().entry_index(&w.entry)?;
    let (re, ce) = (&rp.entries[entry], &cp.entries[entry]);
    let same_shape = rp.buffers.len() == cp.buffers.len()
        && rp
            .buffers
            .iter()
            .zip(&cp.buffers)
            .all(|(a, b)| a.len == b.len && a.dtype == b.dtype)
        && re.launches.len() == ce.launches.len()
        && re
            .launches
            .iter()
            .zip(&ce.launches)
            .all(|(a, b)| a.args == b.args);
    if !same_shape {
        // A candidate whose plan differs cannot be compared launch by launch: it fails.
        return Ok(checked.values().cloned().collect());
    }
    let dtypes: Vec<DType> = rp.buffers.iter().map(|b| b.dtype).collect();
    let launches: Vec<Vec<usize>> = re.launches.iter().map(|l| l.args.clone()).collect();
    for (n, t) in &w.resident {
        reference.set_input(n, t)?;
        candidate.set_input(n, t)?;
    }
    for (n, t) in &w.inputs {
        reference.set_input(n, t)?;
    }
    let mut wrong = HashSet::new();
    for (i, args) in launches.iter().enumerate() {
        if let Some(key) = checked.get(&i) {
            for &b in args {
                let bytes = reference.read_buffer(b)?;
                candidate.write_buffer(b, &bytes)?;
            }
            // The result buffer (last; not also an operand, as in an in-place update) is
            // poisoned in both, so a candidate that skips part of it cannot pass on what the
            // default wrote there in an earlier run.
            if let Some((&out, operands)) = args.split_last() {
                if !operands.contains(&out) {
                    let n = reference.read_buffer(out)?.len();
                    reference.write_buffer(out, &vec![0xff; n])?;
                    candidate.write_buffer(out, &vec![0xff; n])?;
                }
            }
            candidate.run_one(&w.entry, i)?;
            reference.run_one(&w.entry, i)?;
            for &b in args {
                let (x, y) = (reference.read_buffer(b)?, candidate.read_buffer(b)?);
                if !agree(dtypes[b], &x, &y).map_err(err)? {
                    wrong.insert(key.clone());
                }
            }
        } else {
            reference.run_one(&w.entry, i)?;
        }
    }
    Ok(wrong)
}

/// One template's search state.
struct Search {
    space: Space,
    checksum: String,
    keys: Vec<String>,
    exhaustive: bool,
    queue: Vec<Config>,
    seen: HashSet<Config>,
    /// Every evaluated configuration and its score (sum of its keys' medians; infinite when
    /// wrong or failed).
    scored: Vec<(Config, f64)>,
}

impl Search {
    fn new(space: Space, keys: Vec<String>, exhaustive_max: usize) -> Search {
        let candidates = space.candidates();
        let exhaustive = candidates.len() <= exhaustive_max;
        let mut seen: HashSet<Config> = HashSet::new();
        seen.insert(space.default.clone());
        let queue = if exhaustive {
            candidates.into_iter().skip(1).collect()
        } else {
            space.neighbours(&space.default)
        };
        seen.extend(queue.iter().cloned());
        Search {
            checksum: space.checksum(),
            space,
            keys,
            exhaustive,
            queue,
            seen,
            scored: Vec::new(),
        }
    }

    /// The score of configuration `c`: the sum over the template's keys of the key's latest
    /// time under `c` (infinite where a key has none).
    fn score(&self, c: &Config, states: &HashMap<String, KeyState>) -> f64 {
        self.keys
            .iter()
            .map(|k| {
                states.get(k).map_or(f64::INFINITY, |st| {
                    st.measured
                        .iter()
                        .rev()
                        .find(|m| &m.1 == c)
                        .map_or(f64::INFINITY, |m| m.2)
                })
            })
            .sum()
    }

    /// After a round: the beam's next neighbours.
    fn expand(&mut self, width: usize) {
        if self.exhaustive || !self.queue.is_empty() {
            return;
        }
        let mut best = self.scored.clone();
        best.sort_by(|a, b| a.1.total_cmp(&b.1));
        for (c, s) in best.into_iter().take(width) {
            if !s.is_finite() {
                continue;
            }
            for n in self.space.neighbours(&c) {
                if self.seen.insert(n.clone()) {
                    self.queue.push(n);
                }
            }
        }
    }
}

/// Per-key state during the search.
#[derive(Default)]
struct KeyState {
    /// (fingerprint, config, median or infinity, complete) of each candidate evaluated; an
    /// incomplete (early-stopped) measurement ranks the beam but never wins.
    measured: Vec<(String, Config, f64, bool)>,
    timed: usize,
    wrong: usize,
}

impl KeyState {
    fn best(&self) -> f64 {
        self.measured
            .iter()
            .filter(|m| m.3)
            .map(|m| m.2)
            .fold(f64::INFINITY, f64::min)
    }
}

/// Tunes the workload's kernels on the CPU. See the module docs.
#[allow(clippy::too_many_arguments)]
pub fn tune(
    compile: &CompileFn,
    w: &Workload,
    cache: &TuneCache,
    scope: &Scope,
    limits: &TargetLimits,
    opts: &TuneOptions,
    progress: &mut Progress,
) -> Result<TuneReport, RuntimeError> {
    let t_start = Instant::now();
    let reps = opts.reps.max(5);
    let loaded: Loaded = cache.load(scope)?;
    let mut report = TuneReport {
        cache_warning: loaded.warning(&cache.file()),
        ..TuneReport::default()
    };
    if let Some(only) = &opts.only {
        if template::template(only).is_none() {
            let keys: Vec<&str> = template::TEMPLATES.iter().map(|t| t.key).collect();
            return Err(err(format!(
                "--only: no kernel template '{only}' (templates: {})",
                keys.join(", ")
            )));
        }
    }
    let base_choices = Choices {
        targets: limits.clone(),
        ..Choices::default()
    };
    progress("compile", "the default candidates");
    let default_art = compile(&base_choices).map_err(err)?;
    report.compiles += 1;
    let mut reference = executor(default_art, w, opts.target)?;
    let entry = reference.executable().entry_index(&w.entry)?;
    let program = reference.executable().program.clone();
    let all_keys = launches_by_key(&program, entry);

    // Which keys need tuning, grouped by template.
    let mut searches: IndexMap<String, Search> = IndexMap::new();
    let mut cached: IndexMap<String, Record> = IndexMap::new();
    for key in all_keys.keys() {
        let tkey = template_of_key(key);
        let Some(t) = template::template(tkey) else {
            continue;
        };
        if opts.only.as_deref().is_some_and(|o| o != tkey) {
            continue;
        }
        let space = Space::new(t, limits, opts.target == TuneTarget::Cpu);
        let checksum = space.checksum();
        let done = loaded
            .winner(key, &checksum)
            .filter(|w| !opts.retune && !w.partial);
        if let Some(win) = done {
            cached.insert(key.clone(), win.clone());
            continue;
        }
        if space.candidates().len() < 2 {
            continue;
        }
        searches
            .entry(tkey.to_string())
            .or_insert_with(|| Search::new(space, Vec::new(), opts.exhaustive_max))
            .keys
            .push(key.clone());
    }
    let to_tune: IndexMap<String, Vec<usize>> = all_keys
        .iter()
        .filter(|(k, _)| searches.values().any(|s| s.keys.contains(k)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut states: HashMap<String, KeyState> = HashMap::new();
    let mut records: Vec<Record> = Vec::new();
    let checksum_of = |searches: &IndexMap<String, Search>, key: &str| {
        searches
            .get(template_of_key(key))
            .map(|s| s.checksum.clone())
            .unwrap_or_default()
    };

    if !to_tune.is_empty() {
        // Resume: what the cache already timed for these keys and candidate sets (a search
        // that stopped at its budget goes on where it stopped; nothing is timed twice).
        for key in to_tune.keys() {
            let search = &searches[template_of_key(key)];
            let st = states.entry(key.clone()).or_default();
            for r in loaded.timings(key, &search.checksum) {
                let (t, complete) = match r.status {
                    Status::Ok => (r.median_s, true),
                    Status::EarlyStop => (r.median_s, false),
                    Status::Wrong | Status::Failed => (f64::INFINITY, false),
                };
                st.measured
                    .push((String::new(), r.config.clone(), t, complete));
            }
        }
        // The default, where the cache has no complete timing of it.
        let untimed: IndexMap<String, Vec<usize>> = to_tune
            .iter()
            .filter(|(k, _)| {
                let default = &searches[template_of_key(k)].space.default;
                !states[*k].measured.iter().any(|m| &m.1 == default && m.3)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !untimed.is_empty() {
            progress("time", "the default candidates");
            let samples = time_runs(reference.as_mut(), w, &untimed, opts.warmup, reps, &|_| {
                false
            })?
            .samples;
            for (key, idx) in &untimed {
                let s = samples.get(key).cloned().unwrap_or_default();
                let search = &searches[template_of_key(key)];
                let st = states.entry(key.clone()).or_default();
                st.measured.push((
                    fingerprint(&program, entry, idx, opts.target),
                    search.space.default.clone(),
                    median(&s),
                    true,
                ));
                st.timed += 1;
                report.timings += 1;
                records.push(Record::new(
                    RecordKind::Timing,
                    scope,
                    template_of_key(key),
                    key,
                    &search.checksum,
                    search.space.default.clone(),
                    s,
                    Status::Ok,
                ));
            }
        }
        for s in searches.values_mut() {
            // Every configuration measured so far is scored and never queued again.
            let mut configs: Vec<Config> = Vec::new();
            for k in &s.keys {
                for m in &states[k].measured {
                    if !configs.contains(&m.1) {
                        configs.push(m.1.clone());
                    }
                }
            }
            for c in configs {
                let score = s.score(&c, &states);
                s.queue.retain(|q| q != &c);
                s.seen.insert(c.clone());
                s.scored.push((c, score));
            }
        }
        cache.append(&records)?;
        records.clear();

        // Rounds of trials until the budget is spent or every queue is empty.
        let mut round = 0;
        while t_start.elapsed() < opts.budget {
            for s in searches.values_mut() {
                s.expand(opts.beam_width);
            }
            let mut trials: Vec<IndexMap<String, Config>> = Vec::new();
            for _ in 0..opts.parallel.max(1) {
                let mut trial = IndexMap::new();
                for (t, s) in searches.iter_mut() {
                    if let Some(c) = s.queue.pop() {
                        trial.insert(t.clone(), c);
                    }
                }
                if trial.is_empty() {
                    break;
                }
                trials.push(trial);
            }
            if trials.is_empty() {
                break;
            }
            round += 1;
            progress(
                "compile",
                &format!(
                    "round {round}: {} trial(s), {:.0}s of {:.0}s used",
                    trials.len(),
                    t_start.elapsed().as_secs_f64(),
                    opts.budget.as_secs_f64()
                ),
            );
            let compiled: Vec<Result<Artifact, String>> = std::thread::scope(|sc| {
                let handles: Vec<_> = trials
                    .iter()
                    .map(|trial| {
                        let mut choices = base_choices.clone();
                        for (t, c) in trial {
                            choices.settings.insert(t.clone(), c.0.clone());
                        }
                        sc.spawn(move || compile(&choices))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err("the compile panicked".into()))
                    })
                    .collect()
            });
            report.compiles += compiled.len();
            for (trial, art) in trials.iter().zip(compiled) {
                let trial_keys: Vec<String> = trial
                    .keys()
                    .flat_map(|t| searches[t].keys.clone())
                    .collect();
                let config_of = |key: &str| trial[template_of_key(key)].clone();
                let art = match art {
                    Ok(a) => a,
                    Err(e) => {
                        progress("warn", &format!("a candidate did not compile: {e}"));
                        for key in &trial_keys {
                            let cs = checksum_of(&searches, key);
                            records.push(Record::new(
                                RecordKind::Timing,
                                scope,
                                template_of_key(key),
                                key,
                                &cs,
                                config_of(key),
                                Vec::new(),
                                Status::Failed,
                            ));
                            states.entry(key.clone()).or_default().measured.push((
                                String::new(),
                                config_of(key),
                                f64::INFINITY,
                                false,
                            ));
                        }
                        for (t, c) in trial {
                            if let Some(s) = searches.get_mut(t) {
                                s.scored.push((c.clone(), f64::INFINITY));
                            }
                        }
                        continue;
                    }
                };
                let mut cand = executor(art, w, opts.target)?;
                let cprog = cand.executable().program.clone();
                let ckeys = launches_by_key(&cprog, entry);
                // Keys whose code this candidate changes; the others repeat a measurement.
                let mut changed: IndexMap<String, Vec<usize>> = IndexMap::new();
                let mut repeats: Vec<(String, f64, bool)> = Vec::new();
                for key in &trial_keys {
                    let Some(idx) = ckeys.get(key) else {
                        continue;
                    };
                    let fp = fingerprint(&cprog, entry, idx, opts.target);
                    match states[key].measured.iter().find(|m| m.0 == fp) {
                        Some(m) => repeats.push((key.clone(), m.2, m.3)),
                        None => {
                            changed.insert(key.clone(), idx.clone());
                        }
                    }
                }
                for (key, t, complete) in repeats {
                    let fp = fingerprint(&cprog, entry, &ckeys[&key], opts.target);
                    if let Some(s) = states.get_mut(&key) {
                        s.measured.push((fp, config_of(&key), t, complete));
                    }
                }
                let mut wrong = HashSet::new();
                if !changed.is_empty() {
                    let checked: HashMap<usize, String> = changed
                        .iter()
                        .flat_map(|(k, idx)| idx.iter().map(move |&i| (i, k.clone())))
                        .collect();
                    wrong = gate(reference.as_mut(), cand.as_mut(), w, &checked)?;
                }
                let timed: IndexMap<String, Vec<usize>> = changed
                    .iter()
                    .filter(|(k, _)| !wrong.contains(*k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let bests: HashMap<String, f64> = timed
                    .keys()
                    .map(|k| (k.clone(), states[k].best()))
                    .collect();
                let early = opts.early_stop;
                let hopeless = |k: &str, t: f64| bests.get(k).is_some_and(|b| t >= early * b);
                let (samples, stopped) = if timed.is_empty() {
                    (HashMap::new(), false)
                } else {
                    // Stop once every key is hopeless, or the hopeless ones take most of a run
                    // (a 30× slower product would otherwise dominate the trial).
                    let t = time_runs(cand.as_mut(), w, &timed, opts.warmup, reps, &|m| {
                        let all: f64 = m.values().sum();
                        let lost: f64 = m
                            .iter()
                            .filter(|(k, t)| hopeless(k, **t))
                            .map(|(_, t)| t)
                            .sum();
                        lost > 0.5 * all
                    })?;
                    (t.samples, t.stopped)
                };
                // A cut-short trial: templates none of whose keys lost are tried again later
                // (their samples are too few to count).
                let mut retry: HashSet<String> = HashSet::new();
                if stopped {
                    for t in trial.keys() {
                        let lost = searches[t].keys.iter().any(|k| {
                            wrong.contains(k)
                                || samples.get(k).is_some_and(|v| hopeless(k, median(v)))
                        });
                        if !lost {
                            retry.insert(t.clone());
                        }
                    }
                }
                for (key, idx) in &changed {
                    if retry.contains(template_of_key(key)) {
                        continue;
                    }
                    let fp = fingerprint(&cprog, entry, idx, opts.target);
                    let cs = checksum_of(&searches, key);
                    let st = states.entry(key.clone()).or_default();
                    let (status, s, t) = if wrong.contains(key) {
                        st.wrong += 1;
                        report.wrong += 1;
                        (Status::Wrong, Vec::new(), f64::INFINITY)
                    } else {
                        let s = samples.get(key).cloned().unwrap_or_default();
                        let m = median(&s);
                        st.timed += 1;
                        report.timings += 1;
                        let status = if stopped {
                            Status::EarlyStop
                        } else {
                            Status::Ok
                        };
                        // An early-stopped candidate lost; its partial median only ranks it.
                        (status, s, m)
                    };
                    let complete = status == Status::Ok;
                    st.measured.push((fp, config_of(key), t, complete));
                    records.push(Record::new(
                        RecordKind::Timing,
                        scope,
                        template_of_key(key),
                        key,
                        &cs,
                        config_of(key),
                        s,
                        status,
                    ));
                }
                for (t, c) in trial {
                    if retry.contains(t) {
                        if let Some(s) = searches.get_mut(t) {
                            s.queue.push(c.clone());
                        }
                        continue;
                    }
                    if let Some(s) = searches.get_mut(t) {
                        let score = s.score(c, &states);
                        s.scored.push((c.clone(), score));
                    }
                }
            }
            cache.append(&records)?;
            records.clear();
        }
    }

    // Searches whose candidates ran out; the others stopped at the budget.
    let finished: HashSet<String> = searches
        .iter_mut()
        .filter_map(|(t, s)| {
            s.expand(opts.beam_width);
            s.queue.is_empty().then(|| t.clone())
        })
        .collect();

    // Winners of the search, then the recheck.
    let mut winners: IndexMap<String, (Config, f64, f64)> = IndexMap::new();
    for key in to_tune.keys() {
        let st = &states[key];
        let default = &searches[template_of_key(key)].space.default;
        let default_t = st
            .measured
            .iter()
            .find(|m| &m.1 == default)
            .map_or(f64::INFINITY, |m| m.2);
        let best = st
            .measured
            .iter()
            .filter(|m| m.3 && m.2.is_finite())
            .min_by(|a, b| a.2.total_cmp(&b.2));
        let (c, t) = match best {
            Some(b) if &b.1 != default && b.2 < default_t * (1.0 - opts.noise) => {
                (b.1.clone(), b.2)
            }
            _ => (default.clone(), default_t),
        };
        winners.insert(key.clone(), (c, default_t, t));
    }
    let changed: IndexMap<String, Config> = winners
        .iter()
        .filter(|(k, (c, _, _))| c != &searches[template_of_key(k)].space.default)
        .map(|(k, (c, _, _))| (k.clone(), c.clone()))
        .collect();
    if !changed.is_empty() {
        progress("recheck", "the winners against the default, interleaved");
        let mut tuned_choices = base_choices.clone();
        tuned_choices.tuned = changed.clone();
        let art = compile(&tuned_choices).map_err(err)?;
        report.compiles += 1;
        let mut tuned = executor(art, w, opts.target)?;
        let tprog = tuned.executable().program.clone();
        let tkeys = launches_by_key(&tprog, entry);
        for (n, t) in &w.resident {
            reference.set_input(n, t)?;
        }
        let mut def_s: HashMap<String, Vec<f64>> = HashMap::new();
        let mut tun_s: HashMap<String, Vec<f64>> = HashMap::new();
        for _ in 0..opts.warmup.max(1) {
            reference.run_entry(&w.entry, &w.inputs)?;
            tuned.run_entry(&w.entry, &w.inputs)?;
        }
        for _ in 0..opts.recheck_rounds.max(3) {
            let d = time_runs(reference.as_mut(), w, &to_tune, 0, 1, &|_| false)?;
            let t = time_runs(tuned.as_mut(), w, &tkeys, 0, 1, &|_| false)?;
            report.rounds.push((d.totals[0], t.totals[0]));
            for (k, v) in d.samples {
                def_s.entry(k).or_default().extend(v);
            }
            for (k, v) in t.samples {
                tun_s.entry(k).or_default().extend(v);
            }
        }
        let d: Vec<f64> = report.rounds.iter().map(|r| r.0).collect();
        let t: Vec<f64> = report.rounds.iter().map(|r| r.1).collect();
        report.entry_s = Some((median(&d), median(&t)));
        for (key, (c, default_t, winner_t)) in winners.iter_mut() {
            if !changed.contains_key(key) {
                continue;
            }
            let d = median(def_s.get(key).map_or(&[][..], |v| v));
            let t = median(tun_s.get(key).map_or(&[][..], |v| v));
            if !(t.is_finite() && t <= d) {
                // Not faster when rechecked: back to the default.
                *c = searches[template_of_key(key)].space.default.clone();
                *winner_t = d;
            } else {
                *winner_t = t;
            }
            *default_t = d;
        }
    }
    for (key, (c, default_t, winner_t)) in &winners {
        let mut r = Record::new(
            RecordKind::Winner,
            scope,
            template_of_key(key),
            key,
            &checksum_of(&searches, key),
            c.clone(),
            vec![*winner_t],
            Status::Ok,
        );
        r.default_s = Some(*default_t);
        r.partial = !finished.contains(template_of_key(key));
        records.push(r);
    }
    cache.append(&records)?;

    for (key, idx) in &all_keys {
        if let Some((c, d, t)) = winners.get(key) {
            let st = &states[key];
            let search = &searches[template_of_key(key)];
            report.keys.push(KeyResult {
                key: key.clone(),
                template: template_of_key(key).to_string(),
                launches: idx.len(),
                is_default: c == &search.space.default,
                winner: c.clone(),
                default_s: *d,
                winner_s: *t,
                timed: st.timed,
                wrong: st.wrong,
                cached: false,
            });
        } else if let Some(r) = cached.get(key) {
            let default = template::template(template_of_key(key))
                .map(|t| t.default_config(limits))
                .unwrap_or_default();
            report.keys.push(KeyResult {
                key: key.clone(),
                template: template_of_key(key).to_string(),
                launches: idx.len(),
                is_default: r.config == default,
                winner: r.config.clone(),
                default_s: r.default_s.unwrap_or(r.median_s),
                winner_s: r.median_s,
                timed: 0,
                wrong: 0,
                cached: true,
            });
        }
    }
    report.tuned = report
        .keys
        .iter()
        .filter(|k| !k.is_default)
        .map(|k| (k.key.clone(), k.winner.clone()))
        .collect();
    Ok(report)
}
