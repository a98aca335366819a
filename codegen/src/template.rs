//! Kernel templates as values, and the choices the planner takes.
//!
//! Every kernel family is a [`Template`]: a stable key, a space of knobs, a validity predicate
//! per target (threads per block, shared memory, divisibility), and a heuristic default. The
//! planner builds each kernel from the configuration [`Choices`] resolves for its template:
//! the heuristic default, overridden by the user's or the tuner's settings, checked against the
//! targets being built. The resolved configuration travels with the kernel
//! ([`crate::kir::Kernel::template`]) into the artifact, where `mmada inspect` shows it.
//!
//! | key | knobs (default) | kernels |
//! |---|---|---|
//! | `elementwise` | `block` (256), `host_lanes` (CPU), `host_split` (4) | fused elementwise groups, views, casts |
//! | `reduction` | `block` (256), `host_lanes` (CPU), `host_split` (4) | sums, max/min over axes, fused into their inputs |
//! | `softmax` | `block` (256), `host_lanes` (CPU), `host_split` (4) | row softmax, fused into its input |
//! | `matmul` | `tile` (16), `mma` (1), `host_library` (1), `host_split` (0) | batched matrix products (generated kernel; the CPU calls gemm for f32 when `host_library = 1`; bf16 on the GPU uses tensor cores when `mma = 1`) |
//! | `conv` | `block` (256), `host_split` (4) | 2-D convolution and its gradients |
//! | `conv_gemm` | `tile` (16) | stride-1 convolutions as an implicit GEMM (generated kernel; the CPU calls its shifted-product routine) |
//! | `scan` | `block` (256), `host_split` (4) | cumulative sums, top-k |
//! | `index` | `block` (256), `host_split` (4) | gathers, scatter-adds |
//! | `rng` | `block` (256), `host_split` (4) | Philox random streams |
//! | `remask` | `block` (256), `host_split` (4) | the fused confidence top-k remask of a sampler step (one block per row) |
//! | `attention` | `block` (64), `key_tile` (32), `mma` (1) | fused attention forward: `block` query rows per block, K/V staged `key_tile` keys at a time (generated kernel; the CPU calls its per-head routine for f32); bf16 on the GPU on tensor cores when `mma = 1` |
//! | `attention_grad` | `block` (64), `key_tile` (32) | attention's backward pieces (statistics, dQ, dK \| dV): `block` own rows (queries or keys) per block, the other side staged `key_tile` rows at a time (generated SIMT kernel; the CPU calls its routines for f32) |
//!
//! Each knob says which code it changes ([`KnobTarget`]); `mmada tune` searches a target's
//! knobs only. Configurations come from, in order of precedence: the user's `--knob` settings
//! (per template), the tuner's winners (per kernel, by tune key: [`crate::tune::key`]), the
//! heuristic default.
//!
//! A knob's value is an upper bound where the problem is smaller (a row of 40 elements gets a
//! block of 64 under `block = 256`). `host_lanes` is the width of the host variants' partial
//! accumulators and of the host lowering's lane loop: 16 f32 with AVX-512, 8 with AVX2, 4
//! otherwise (`--host-cpu generic` assumes SSE2 only).

use crate::host_cpu::HostCpu;
use crate::SmArch;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which code a knob changes: the tuner searches, per target, only the knobs that change it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KnobTarget {
    /// Host code and its dispatch only.
    Host,
    /// GPU kernels only.
    Gpu,
    /// Both.
    Both,
}

impl KnobTarget {
    /// Whether a knob of this kind changes the code of `target` (`host`: the CPU; else GPU).
    pub fn changes(self, host: bool) -> bool {
        match self {
            KnobTarget::Both => true,
            KnobTarget::Host => host,
            KnobTarget::Gpu => !host,
        }
    }
}

/// One knob of a template: a name and the values it may take.
#[derive(Clone, Copy, Debug)]
pub struct Knob {
    /// Name (`block`, `tile`, `host_lanes`).
    pub name: &'static str,
    /// Allowed values, ascending.
    pub values: &'static [u64],
    /// What it controls.
    pub doc: &'static str,
    /// The code it changes.
    pub target: KnobTarget,
}

/// A configuration: a value for each knob of one template.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Config(pub BTreeMap<String, u64>);

impl Config {
    /// The value of knob `name` (0 when the configuration has none: a bug in the template).
    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// `tile=16 block=256`.
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// What the kernels are built for: the limits a configuration must respect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetLimits {
    /// Host lane width of this CPU (f32 values per vector), when host code is built.
    pub host_lanes: Option<u64>,
    /// The GPU architectures built (empty: none).
    pub gpu_archs: Vec<SmArch>,
}

impl Default for TargetLimits {
    fn default() -> Self {
        TargetLimits {
            host_lanes: Some(16),
            gpu_archs: vec![SmArch::SM80, SmArch::SM90],
        }
    }
}

/// Threads per block any CUDA GPU takes.
pub const GPU_MAX_THREADS: u64 = 1024;
/// Static shared memory per block a kernel may declare (more needs dynamic shared memory).
pub const GPU_STATIC_SHARED_BYTES: u64 = 48 * 1024;
/// Shared memory per block with the opt-in attribute on sm_90 (227 KiB; sm_80 allows 163 KiB).
pub const GPU_MAX_SHARED_BYTES: u64 = 227 * 1024;

impl TargetLimits {
    /// The limits of the targets of a build.
    pub fn new(host: Option<&HostCpu>, gpu_archs: &[SmArch]) -> TargetLimits {
        TargetLimits {
            host_lanes: host.map(HostCpu::f32_lanes),
            gpu_archs: gpu_archs.to_vec(),
        }
    }

    fn gpu(&self) -> bool {
        !self.gpu_archs.is_empty()
    }
}

/// A kernel family.
#[derive(Debug)]
pub struct Template {
    /// Stable key (`matmul`), used in choices, the tuning cache and the artifact.
    pub key: &'static str,
    /// The knobs.
    pub knobs: &'static [Knob],
    /// Shared-memory bytes per block a configuration needs.
    shared_bytes: fn(&Config) -> u64,
    /// Threads per block a configuration runs (its largest block).
    threads: fn(&Config) -> u64,
    /// The heuristic default.
    default: fn(&TargetLimits) -> Config,
}

const BLOCK: Knob = Knob {
    name: "block",
    values: &[32, 64, 128, 256, 512, 1024],
    doc: "threads per block (at most; small problems take fewer)",
    target: KnobTarget::Both,
};
const HOST_LANES: Knob = Knob {
    name: "host_lanes",
    values: &[1, 2, 4, 8, 16, 32],
    doc: "partial accumulators per host thread and lanes of the host thread loop (the CPU's f32 \
          vector width by default)",
    target: KnobTarget::Host,
};
const HOST_SPLIT: Knob = Knob {
    name: "host_split",
    values: &[0, 1, 2, 4, 8, 16],
    doc: "chunks of the grid per host thread (0: the calling thread runs the whole launch, no \
          hand-off to the pool)",
    target: KnobTarget::Host,
};
const GEMM_SPLIT: Knob = Knob {
    name: "host_split",
    values: &[0, 1, 2, 3],
    doc: "how the host product is cut across threads: 0 the heuristic (batches first, then the \
          longer side), 1 one part per product (batches still spread), 2 rows of C, 3 columns \
          of C",
    target: KnobTarget::Host,
};
const HOST_LIBRARY: Knob = Knob {
    name: "host_library",
    values: &[0, 1],
    doc: "f32 products on the host: 1 the gemm library, 0 the generated tiled kernel",
    target: KnobTarget::Host,
};
const TILE: Knob = Knob {
    name: "tile",
    values: &[4, 8, 16, 32],
    doc: "output tile edge: tile × tile threads per block, two tile² f32 shared tiles",
    target: KnobTarget::Both,
};

const MMA: Knob = Knob {
    name: "mma",
    values: &[0, 1],
    doc: "bf16 products on tensor cores on the GPU (mma.sync m16n8k16, f32 accumulate, \
          64 × 64 tiles of 4 warps); 0 keeps the SIMT kernel",
    target: KnobTarget::Gpu,
};

const MMA_ATTENTION: Knob = Knob {
    name: "mma",
    values: &[0, 1],
    doc: "bf16 attention with head dims up to 128 on tensor cores on the GPU (FlashAttention-2 \
          on mma.sync m16n8k16: 64 query rows of 4 warps, 32-key tiles, P from registers); 0 \
          keeps the SIMT kernel",
    target: KnobTarget::Gpu,
};

const KEY_TILE: Knob = Knob {
    name: "key_tile",
    values: &[8, 16, 32, 64],
    doc: "keys per shared K/V tile (at most; fewer when the tiles would pass 48 KiB)",
    target: KnobTarget::Gpu,
};
const ATTENTION_BLOCK: Knob = Knob {
    name: "block",
    values: &[32, 64, 128, 256, 512, 1024],
    doc: "query rows per block (at most)",
    target: KnobTarget::Gpu,
};

/// Chunks of a launch's grid per host thread by default.
pub const HOST_SPLIT_DEFAULT: u64 = 4;

fn block_default(_: &TargetLimits) -> Config {
    Config(BTreeMap::from([
        ("block".into(), 256),
        ("host_split".into(), HOST_SPLIT_DEFAULT),
    ]))
}

fn block_and_lanes_default(t: &TargetLimits) -> Config {
    let mut c = block_default(t);
    c.0.insert("host_lanes".into(), t.host_lanes.unwrap_or(16));
    c
}

fn block_threads(c: &Config) -> u64 {
    c.get("block")
}

fn no_shared(_: &Config) -> u64 {
    0
}

/// A tree reduction keeps one f32 (or i64) partial per thread in shared memory.
fn tree_shared(c: &Config) -> u64 {
    c.get("block") * 8
}

macro_rules! block_template {
    ($name:ident, $key:literal) => {
        /// See the table in the module docs.
        pub static $name: Template = Template {
            key: $key,
            knobs: &[BLOCK, HOST_SPLIT],
            shared_bytes: no_shared,
            threads: block_threads,
            default: block_default,
        };
    };
}

block_template!(CONV, "conv");
block_template!(SCAN, "scan");
block_template!(INDEX, "index");
block_template!(RNG, "rng");
block_template!(REMASK, "remask");

/// See the table in the module docs.
pub static ELEMENTWISE: Template = Template {
    key: "elementwise",
    knobs: &[BLOCK, HOST_LANES, HOST_SPLIT],
    shared_bytes: no_shared,
    threads: block_threads,
    default: block_and_lanes_default,
};

/// See the table in the module docs.
pub static REDUCTION: Template = Template {
    key: "reduction",
    knobs: &[BLOCK, HOST_LANES, HOST_SPLIT],
    shared_bytes: tree_shared,
    threads: block_threads,
    default: block_and_lanes_default,
};

/// See the table in the module docs.
pub static SOFTMAX: Template = Template {
    key: "softmax",
    knobs: &[BLOCK, HOST_LANES, HOST_SPLIT],
    shared_bytes: tree_shared,
    threads: block_threads,
    default: block_and_lanes_default,
};

/// See the table in the module docs.
pub static MATMUL: Template = Template {
    key: "matmul",
    knobs: &[TILE, MMA, HOST_LIBRARY, GEMM_SPLIT],
    // The SIMT kernel's two f32 tiles, or the tensor-core kernel's two padded bf16 tiles.
    shared_bytes: |c| (2 * c.get("tile") * c.get("tile") * 4).max(10_240),
    threads: |c| (c.get("tile") * c.get("tile")).max(128),
    default: |_| {
        Config(BTreeMap::from([
            ("tile".into(), 16),
            ("mma".into(), 1),
            ("host_library".into(), 1),
            ("host_split".into(), 0),
        ]))
    },
};

/// See the table in the module docs.
pub static CONV_GEMM: Template = Template {
    key: "conv_gemm",
    knobs: &[TILE],
    shared_bytes: |c| 2 * c.get("tile") * c.get("tile") * 4,
    threads: |c| c.get("tile") * c.get("tile"),
    default: |_| Config(BTreeMap::from([("tile".into(), 16)])),
};

/// See the table in the module docs.
pub static ATTENTION: Template = Template {
    key: "attention",
    knobs: &[ATTENTION_BLOCK, KEY_TILE, MMA_ATTENTION],
    // SIMT: K, V (head dims up to 128) and the bias of one key tile. Tensor cores: padded bf16
    // tiles of 64 query rows and 32 keys at head dim 128, and the bias.
    shared_bytes: |c| (c.get("key_tile") * (128 + 128 + 1) * 4).max(34_944),
    threads: |c| c.get("block").max(128),
    default: |_| {
        Config(BTreeMap::from([
            ("block".into(), 64),
            ("key_tile".into(), 32),
            ("mma".into(), 1),
        ]))
    },
};

/// Attention's backward pieces (statistics, dQ, dK | dV; SIMT f32).
pub static ATTENTION_GRAD: Template = Template {
    key: "attention_grad",
    knobs: &[ATTENTION_BLOCK, KEY_TILE],
    // The other side's tile: two rows of head dims up to 128 and three statistics per row.
    shared_bytes: |c| c.get("key_tile") * (128 + 128 + 3) * 4,
    threads: |c| c.get("block"),
    default: |_| {
        Config(BTreeMap::from([
            ("block".into(), 64),
            ("key_tile".into(), 32),
        ]))
    },
};

/// Every template, in the order of the module docs.
pub static TEMPLATES: [&Template; 12] = [
    &ELEMENTWISE,
    &REDUCTION,
    &SOFTMAX,
    &MATMUL,
    &CONV,
    &CONV_GEMM,
    &SCAN,
    &INDEX,
    &RNG,
    &REMASK,
    &ATTENTION,
    &ATTENTION_GRAD,
];

/// The template with this key.
pub fn template(key: &str) -> Option<&'static Template> {
    TEMPLATES.iter().copied().find(|t| t.key == key)
}

impl Template {
    /// The heuristic default for these targets.
    pub fn default_config(&self, t: &TargetLimits) -> Config {
        (self.default)(t)
    }

    /// Whether `c` is a configuration of this template that every target can run.
    pub fn check(&self, c: &Config, t: &TargetLimits) -> Result<(), String> {
        for (name, v) in &c.0 {
            let Some(k) = self.knobs.iter().find(|k| k.name == name) else {
                return Err(format!("template {} has no knob '{name}'", self.key));
            };
            if !k.values.contains(v) {
                return Err(format!(
                    "{}.{name} = {v} is not one of {:?} ({})",
                    self.key, k.values, k.doc
                ));
            }
        }
        if let Some(k) = self.knobs.iter().find(|k| !c.0.contains_key(k.name)) {
            return Err(format!(
                "{} configuration lacks knob '{}'",
                self.key, k.name
            ));
        }
        if t.gpu() {
            let threads = (self.threads)(c);
            if threads > GPU_MAX_THREADS {
                return Err(format!(
                    "{} [{}] runs {threads} threads per block, GPUs take at most \
                     {GPU_MAX_THREADS}",
                    self.key,
                    c.describe()
                ));
            }
            let shared = (self.shared_bytes)(c);
            if shared > GPU_STATIC_SHARED_BYTES {
                return Err(format!(
                    "{} [{}] needs {shared} bytes of shared memory per block, more than the \
                     {GPU_STATIC_SHARED_BYTES} a kernel may declare statically",
                    self.key,
                    c.describe()
                ));
            }
            if !threads.is_multiple_of(32) && self.key != "matmul" {
                return Err(format!(
                    "{} [{}]: blocks must be whole warps (multiples of 32 threads)",
                    self.key,
                    c.describe()
                ));
            }
        }
        Ok(())
    }
}

/// The template and configuration a kernel was built from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TemplateUse {
    /// Template key.
    pub key: String,
    /// The configuration used.
    pub config: Config,
    /// Whether it differs from the heuristic default.
    pub chosen: bool,
    /// The kernel's tune key ([`crate::tune::key`]), when it was built from a graph node.
    #[serde(default)]
    pub tune_key: Option<String>,
    /// Whether the tuner's winner for that key was applied.
    #[serde(default)]
    pub tuned: bool,
}

/// Knob settings by template key (absent knobs take the default), and the targets they must
/// run on. `plan` resolves one configuration per template from it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choices {
    /// Settings: template key → knob → value.
    pub settings: IndexMap<String, BTreeMap<String, u64>>,
    /// The targets (filled in by the compiler driver from the build's targets).
    #[serde(default)]
    pub targets: TargetLimits,
    /// The tuner's winners: tune key → configuration (read from the tuning cache by the
    /// compiler driver; a winner invalid for the targets is not applied).
    #[serde(default)]
    pub tuned: IndexMap<String, Config>,
}

impl Choices {
    /// Parses `key.knob=value` settings (`matmul.tile=32`) and checks each against its
    /// template's knob space. The targets are set later, by the driver.
    pub fn parse(settings: &[String]) -> Result<Choices, String> {
        let mut c = Choices::default();
        for s in settings {
            let (lhs, v) = s
                .split_once('=')
                .ok_or_else(|| format!("knob setting '{s}' is not KEY.KNOB=VALUE"))?;
            let (key, knob) = lhs
                .split_once('.')
                .ok_or_else(|| format!("knob setting '{s}' is not KEY.KNOB=VALUE"))?;
            let t = template(key).ok_or_else(|| {
                let keys: Vec<&str> = TEMPLATES.iter().map(|t| t.key).collect();
                format!(
                    "no kernel template '{key}' (templates: {})",
                    keys.join(", ")
                )
            })?;
            let k = t.knobs.iter().find(|k| k.name == knob).ok_or_else(|| {
                let names: Vec<&str> = t.knobs.iter().map(|k| k.name).collect();
                format!(
                    "template {key} has no knob '{knob}' (knobs: {})",
                    names.join(", ")
                )
            })?;
            let v: u64 = v
                .trim()
                .parse()
                .map_err(|_| format!("knob {key}.{knob}: '{v}' is not a whole number"))?;
            if !k.values.contains(&v) {
                return Err(format!(
                    "knob {key}.{knob} = {v} is not one of {:?} ({})",
                    k.values, k.doc
                ));
            }
            c.settings
                .entry(key.to_string())
                .or_default()
                .insert(knob.to_string(), v);
        }
        Ok(c)
    }

    /// The configuration of `t`: its default for the targets with these settings applied,
    /// checked against the targets.
    pub fn config(&self, t: &Template) -> Result<TemplateUse, String> {
        self.config_for(t, None)
    }

    /// The configuration of the kernel with tune key `key` of template `t`: the default, then
    /// the tuner's winner for the key (when it is valid for the targets), then the settings;
    /// checked against the targets.
    pub fn config_for(&self, t: &Template, key: Option<&str>) -> Result<TemplateUse, String> {
        let default = t.default_config(&self.targets);
        let mut config = default.clone();
        let mut tuned = false;
        if let Some(w) = key.and_then(|k| self.tuned.get(k)) {
            let mut with = default.clone();
            with.0.extend(w.0.iter().map(|(k, v)| (k.clone(), *v)));
            if t.check(&with, &self.targets).is_ok() {
                tuned = with != default;
                config = with;
            }
        }
        if let Some(s) = self.settings.get(t.key) {
            config.0.extend(s.iter().map(|(k, v)| (k.clone(), *v)));
            // Tuned only if a winner's knob survived the settings.
            let mut untuned = default.clone();
            untuned.0.extend(s.iter().map(|(k, v)| (k.clone(), *v)));
            tuned = tuned && config != untuned;
        }
        t.check(&config, &self.targets)?;
        Ok(TemplateUse {
            key: t.key.to_string(),
            chosen: config != default,
            config,
            tune_key: key.map(str::to_string),
            tuned,
        })
    }

    /// Checks every setting against the targets (before any work is done).
    pub fn check(&self) -> Result<(), String> {
        for key in self.settings.keys() {
            let t = template(key).ok_or_else(|| format!("no kernel template '{key}'"))?;
            self.config(t)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_for_every_target() {
        for t in TEMPLATES {
            for limits in [
                TargetLimits::default(),
                TargetLimits::new(Some(&HostCpu::generic()), &[]),
                TargetLimits::new(None, &[SmArch::SM90A]),
            ] {
                let c = t.default_config(&limits);
                t.check(&c, &limits).unwrap();
            }
        }
    }

    #[test]
    fn settings_are_parsed_and_checked() {
        let c = Choices::parse(&["matmul.tile=8".into(), "softmax.block=128".into()]).unwrap();
        let m = c.config(&MATMUL).unwrap();
        assert!(m.chosen && m.config.get("tile") == 8);
        assert!(!c.config(&ELEMENTWISE).unwrap().chosen);
        for bad in [
            "matmul.tile=12",
            "matmul.block=256",
            "gemm.tile=8",
            "matmul",
            "matmul.tile=x",
        ] {
            assert!(Choices::parse(&[bad.into()]).is_err(), "{bad}");
        }
        // 32 × 32 threads fit a GPU block, and 8 KiB of tiles fit the shared memory; a block
        // of 1024 threads with a 4-lane host is fine too.
        let ok = Choices::parse(&["matmul.tile=32".into(), "reduction.block=1024".into()]).unwrap();
        ok.check().unwrap();
        // The host-only build takes 1-lane accumulators.
        let mut host = Choices::parse(&["reduction.host_lanes=1".into()]).unwrap();
        host.targets = TargetLimits::new(Some(&HostCpu::generic()), &[]);
        host.check().unwrap();
        assert_eq!(ELEMENTWISE.default_config(&host.targets).get("block"), 256);
        assert_eq!(
            REDUCTION.default_config(&host.targets).get("host_lanes"),
            4,
            "generic x86-64 has 4-lane vectors"
        );
    }
}
