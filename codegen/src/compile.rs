//! The compiler driver: a named list of stages from graphs to an artifact.
//!
//! | # | stage | what it does | dumps (under the [`DumpSink`]) |
//! |---|---|---|---|
//! | 1 | `verify` | checks each entry's graph | — |
//! | 2 | `passes` | the graph pipeline of [`mmada_passes::pipeline_for`] (host-only builds turn attention's backward pieces back into primitive ops) | `<entry>/00-source.txt`, `<entry>/NN-after-<pass>.txt\|.dot` |
//! | 3 | `plan` | buffers, kernels and launches of each graph, with the [`Choices`] | `<entry>/NN-plan.json` |
//! | 4 | `memory` | intermediates with disjoint lifetimes share storage | `<entry>/NN-memory.json` |
//! | 5 | `link` | the entries over one buffer table ([`Program`]) | `program.json` |
//! | 6 | `kir` | checks the kernels, runs each target's KIR passes (host: the lane split) | `kernels/kernels.kir.txt`, `kernels/host-kir/NN-after-<pass>.kir.txt` |
//! | 7 | `lower` | KIR → MLIR → LLVM → host library and PTX per architecture | `kernels/…` |
//! | 8 | `ptxas` | assembles the PTX (registers, spills) | — |
//! | 9 | `package` | sections and manifest | `manifest.json` |
//!
//! Each stage is timed ([`Report`]); `mmada compile -v` prints the table.

use crate::artifact::{Artifact, EntryInfo, KernelInfo, Manifest};
use crate::backend::{kir_passes, lower, BackendOptions, CompiledKernels};
use crate::kir::Kernel;
use crate::memory::share_buffers;
use crate::plan::{disjoint_kernels, plan};
use crate::program::Program;
use crate::template::{Choices, TargetLimits};
use crate::{ptxas, CodegenError};
use indexmap::IndexMap;
use mmada_ir::{serialize, verify, Graph};
use mmada_passes::DumpSink;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

/// Whether to assemble the PTX with ptxas while compiling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PtxCheck {
    /// When ptxas can be found.
    Auto,
    /// Always; missing ptxas is an error.
    Require,
    /// Never.
    Skip,
}

/// Options of [`compile`].
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Name recorded in the manifest.
    pub name: String,
    /// Targets.
    pub backend: BackendOptions,
    /// ptxas validation.
    pub ptx_check: PtxCheck,
    /// Knob choices of kernel templates (defaults where absent).
    pub choices: Choices,
    /// Where every stage writes what it produced (nowhere by default).
    pub dump: DumpSink,
    /// Machine code lowered by earlier compiles, by a hash of the kernels and targets: the
    /// tuner compiles one graph under many candidates, and a candidate that changes only how
    /// launches are dispatched (not the kernels) then skips the lowering.
    pub lower_cache: Option<LowerCache>,
}

/// Lowered machine code by a hash of what was lowered (see [`CompileOptions::lower_cache`]).
pub type LowerCache =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, CompiledKernels>>>;

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            name: "graph".into(),
            backend: BackendOptions::default(),
            ptx_check: PtxCheck::Auto,
            choices: Choices::default(),
            dump: DumpSink::none(),
            lower_cache: None,
        }
    }
}

/// The stages, in order.
pub const STAGES: [&str; 9] = [
    "verify", "passes", "plan", "memory", "link", "kir", "lower", "ptxas", "package",
];

/// How long each stage took.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// (stage, time), in [`STAGES`] order; stages run per entry are summed.
    pub stages: Vec<(&'static str, Duration)>,
    /// Intermediate bytes of each entry before and after memory sharing.
    pub memory: Vec<(String, crate::memory::Sharing)>,
}

impl Report {
    fn add(&mut self, stage: &'static str, t: Duration) {
        match self.stages.iter_mut().find(|(s, _)| *s == stage) {
            Some((_, d)) => *d += t,
            None => self.stages.push((stage, t)),
        }
    }

    fn time<T>(
        &mut self,
        stage: &'static str,
        f: impl FnOnce() -> Result<T, CodegenError>,
    ) -> Result<T, CodegenError> {
        let t = Instant::now();
        let r = f();
        self.add(stage, t.elapsed());
        r
    }
}

/// The LLVM version linked into this build, "major.minor.patch".
pub fn llvm_version() -> String {
    let (a, b, c) = inkwell::support::get_llvm_version();
    format!("{a}.{b}.{c}")
}

/// Compiles one graph into an artifact with one entry, `main`.
pub fn compile(graph: &Graph, opts: &CompileOptions) -> Result<Artifact, CodegenError> {
    Ok(compile_entries(&[("main", graph)], opts)?.0)
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, CodegenError> {
    serde_json::to_string_pretty(v).map_err(|e| CodegenError::Kir(e.to_string()))
}

/// Compiles named graphs into one artifact whose entries share their resident inputs (see
/// [`Program`]). Returns the artifact and the stage timings.
pub fn compile_entries(
    entries: &[(&str, &Graph)],
    opts: &CompileOptions,
) -> Result<(Artifact, Report), CodegenError> {
    let mut report = Report::default();
    let dump = &opts.dump;
    let mut choices = opts.choices.clone();
    choices.targets = TargetLimits::new(opts.backend.host.as_ref(), &opts.backend.gpu_archs);
    choices.check().map_err(|msg| CodegenError::Unsupported {
        node: "kernel choices".into(),
        msg,
    })?;
    let mut sources: Vec<(String, String)> = Vec::new();
    let mut planned_graphs: Vec<(String, String)> = Vec::new();
    let mut plans = Vec::new();
    let mut kernels: Vec<Kernel> = Vec::new();
    for (name, graph) in entries {
        let name = name.to_string();
        let sink = dump.sub(&name);
        report.time("verify", || {
            verify(graph)?;
            if graph.outputs().is_empty() {
                return Err(CodegenError::Unsupported {
                    node: format!("entry '{name}'"),
                    msg: "its graph has no outputs".into(),
                });
            }
            Ok(())
        })?;
        sources.push((name.clone(), serialize::to_json(graph)?));
        let mut g = (*graph).clone();
        let mut pm = mmada_passes::pipeline_for(opts.backend.gpu_archs.is_empty());
        pm.verify_each(true).dump_to(sink.clone(), 0);
        let n_passes = pm.names().len();
        report.time("passes", || Ok(pm.run(&mut g)?))?;
        planned_graphs.push((name.clone(), serialize::to_json(&g)?));
        let mut planned = report.time("plan", || plan(&g, &choices))?;
        sink.write(
            &format!("{:02}-plan.json", n_passes + 1),
            &json(&planned.plan)?,
        )?;
        let sharing = report.time("memory", || Ok(share_buffers(&mut planned.plan)))?;
        sink.write(
            &format!("{:02}-memory.json", n_passes + 2),
            &json(&planned.plan)?,
        )?;
        report.memory.push((name.clone(), sharing));
        // Kernels of several entries are one set: names are content hashes, so a kernel two
        // entries share is the same kernel.
        for k in planned.kernels {
            if !kernels.iter().any(|have| have.name == k.name) {
                kernels.push(k);
            }
        }
        plans.push((name, planned.plan, planned.constants));
    }
    let art = finish(
        opts,
        &choices,
        &mut report,
        (sources, planned_graphs),
        plans,
        kernels,
    )?;
    Ok((art, report))
}

/// Compiles one hand-built kernel into an artifact whose entry `main` runs it once: each
/// read-only parameter is an input named after it (a flat tensor of its length), each
/// write-only parameter an output. For testing and measuring kernels on their own; the
/// entry's "source" section holds the kernel's KIR as JSON instead of a graph.
pub fn compile_kernel(kernel: &Kernel, opts: &CompileOptions) -> Result<Artifact, CodegenError> {
    use crate::kir::Access;
    use crate::plan::{Binding, BufferDesc, BufferKind, Dispatch, KernelLaunch, Launch, Plan};
    crate::kir::check(kernel).map_err(CodegenError::Kir)?;
    let mut choices = opts.choices.clone();
    choices.targets = TargetLimits::new(opts.backend.host.as_ref(), &opts.backend.gpu_archs);
    let mut plan = Plan {
        buffers: Vec::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        launches: Vec::new(),
        updates: Vec::new(),
    };
    for (i, p) in kernel.params.iter().enumerate() {
        if kernel.params[..i].iter().any(|q| q.name == p.name) {
            return Err(CodegenError::Kir(format!(
                "kernel {}: two parameters are named '{}'",
                kernel.name, p.name
            )));
        }
        let binding = Binding {
            name: p.name.clone(),
            buffer: i,
            dtype: p.dtype,
            shape: mmada_ir::Shape(vec![p.len as usize]),
            role: mmada_ir::Role::Data,
        };
        let kind = match p.access {
            Access::Read => {
                plan.inputs.push(binding);
                BufferKind::Input {
                    name: p.name.clone(),
                }
            }
            Access::Write => {
                plan.outputs.push(binding);
                BufferKind::Intermediate
            }
            Access::ReadWrite => {
                return Err(CodegenError::Kir(format!(
                    "kernel {}: parameter '{}' is read and written; a kernel artifact takes \
                     inputs and outputs apart",
                    kernel.name, p.name
                )))
            }
        };
        plan.buffers.push(BufferDesc {
            dtype: p.dtype,
            len: p.len,
            kind,
        });
    }
    let launch = KernelLaunch {
        kernel: kernel.name.clone(),
        grid: kernel.grid,
        block: kernel.block,
        shared_bytes: kernel.dynamic_shared_layout().1 as u32,
    };
    plan.launches.push(Launch {
        node: kernel.name.clone(),
        args: (0..kernel.params.len()).collect(),
        gpu: launch.clone(),
        host: Dispatch::Kernel(launch),
        host_split: crate::template::HOST_SPLIT_DEFAULT as u32,
        tune_key: None,
    });
    let source = json(kernel)?;
    let mut report = Report::default();
    finish(
        opts,
        &choices,
        &mut report,
        (
            vec![("main".into(), source.clone())],
            vec![("main".into(), source)],
        ),
        vec![("main".into(), plan, Vec::new())],
        vec![kernel.clone()],
    )
}

/// (entry name, text) pairs: graph sources, planned graphs.
type NamedTexts = Vec<(String, String)>;

/// Stages 5–9 (link to package) over planned entries.
fn finish(
    opts: &CompileOptions,
    choices: &Choices,
    report: &mut Report,
    (sources, planned_graphs): (NamedTexts, NamedTexts),
    plans: Vec<(String, crate::plan::Plan, Vec<u8>)>,
    kernels: Vec<Kernel>,
) -> Result<Artifact, CodegenError> {
    let dump = &opts.dump;
    let (program, constants) = report.time("link", || Program::link(plans))?;
    dump.write("program.json", &json(&program)?)?;
    let disjoint = disjoint_kernels(program.entries.iter().flat_map(|e| &e.launches), &kernels);
    let kernel_dump = dump.sub("kernels");
    let per_target = report.time("kir", || kir_passes(&kernels, &opts.backend, &kernel_dump))?;
    let compiled = report.time("lower", || {
        let Some(cache) = opts.lower_cache.as_ref().filter(|_| !kernel_dump.enabled()) else {
            return lower(&per_target, &disjoint, &opts.backend, &kernel_dump);
        };
        let mut h = Sha256::new();
        h.update(
            serde_json::to_vec(&per_target.host).map_err(|e| CodegenError::Kir(e.to_string()))?,
        );
        h.update(
            serde_json::to_vec(&per_target.gpu).map_err(|e| CodegenError::Kir(e.to_string()))?,
        );
        let mut names: Vec<&String> = disjoint.iter().collect();
        names.sort();
        h.update(format!("{names:?} {:?}", opts.backend).as_bytes());
        let key = hex::encode(h.finalize());
        let hit = cache.lock().ok().and_then(|c| c.get(&key).cloned());
        if let Some(c) = hit {
            return Ok(c);
        }
        let c = lower(&per_target, &disjoint, &opts.backend, &kernel_dump)?;
        if let Ok(mut m) = cache.lock() {
            m.insert(key, c.clone());
        }
        Ok(c)
    })?;

    let mut infos: Vec<KernelInfo> = kernels
        .iter()
        .map(|k| KernelInfo {
            name: k.name.clone(),
            grid: k.grid,
            block: k.block,
            template: k.template.clone(),
            ptxas: Vec::new(),
        })
        .collect();
    report.time("ptxas", || {
        let ptxas_bin = match opts.ptx_check {
            PtxCheck::Skip => None,
            PtxCheck::Auto => ptxas::find_ptxas(),
            PtxCheck::Require => Some(ptxas::find_ptxas().ok_or_else(|| CodegenError::Ptxas {
                arch: "-".into(),
                msg: "ptxas not found (set MMADA_PTXAS or put ptxas on PATH)".into(),
            })?),
        };
        if let Some(bin) = &ptxas_bin {
            for (arch, ptx) in &compiled.ptx {
                for info in ptxas::assemble(bin, ptx, *arch)? {
                    if let Some(k) = infos.iter_mut().find(|k| k.name == info.name) {
                        k.ptxas.push((*arch, info));
                    }
                }
            }
        }
        Ok(())
    })?;

    let art = report.time("package", || {
        let mut sections: IndexMap<String, Vec<u8>> = IndexMap::new();
        let mut entry_infos = Vec::new();
        for ((name, source), (_, planned)) in sources.iter().zip(&planned_graphs) {
            sections.insert(
                format!("graph.{name}.source.json"),
                source.clone().into_bytes(),
            );
            sections.insert(
                format!("graph.{name}.planned.json"),
                planned.clone().into_bytes(),
            );
            entry_infos.push(EntryInfo {
                name: name.clone(),
                graph_sha256: hex::encode(Sha256::digest(source.as_bytes())),
            });
        }
        sections.insert(
            "program.json".into(),
            serde_json::to_vec(&program).map_err(|e| CodegenError::Kir(e.to_string()))?,
        );
        sections.insert("constants.bin".into(), constants);
        sections.insert(
            "kernels.kir.json".into(),
            serde_json::to_vec(&kernels).map_err(|e| CodegenError::Kir(e.to_string()))?,
        );
        if let Some(lib) = compiled.host_lib {
            sections.insert("host.so".into(), lib);
        }
        for (arch, ptx) in &compiled.ptx {
            sections.insert(format!("ptx.{arch}"), ptx.clone().into_bytes());
        }
        let manifest = Manifest {
            format: "mmada-artifact".into(),
            mmada_version: env!("CARGO_PKG_VERSION").into(),
            llvm_version: llvm_version(),
            name: opts.name.clone(),
            entries: entry_infos,
            host_cpu: opts.backend.host.clone(),
            gpu_archs: compiled.ptx.iter().map(|(a, _)| *a).collect(),
            ptx_features: crate::llvm::PTX_FEATURES.into(),
            choices: {
                // The winners the kernels were built from (not the whole cache).
                let used: std::collections::HashSet<&str> = kernels
                    .iter()
                    .filter_map(|k| k.template.as_ref())
                    .filter(|t| t.tuned)
                    .filter_map(|t| t.tune_key.as_deref())
                    .collect();
                let mut c = choices.clone();
                c.tuned.retain(|k, _| used.contains(k.as_str()));
                c
            },
            kernels: infos,
            sections: Vec::new(),
        };
        dump.write("manifest.json", &json(&manifest)?)?;
        Ok(Artifact { manifest, sections })
    })?;
    Ok(art)
}
