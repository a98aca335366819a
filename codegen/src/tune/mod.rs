//! Autotuning data: what a kernel is tuned as ([`key`]), what may be tried for it
//! ([`space`]), and the persistent record of every timing ([`cache`]). The search itself times
//! kernels, so it lives with the executors (`mmada_runtime::tune`).

pub mod cache;
pub mod key;
pub mod space;

use crate::template::{self, Config, KnobTarget, TargetLimits};
use crate::HostCpu;
use indexmap::IndexMap;
use sha2::{Digest, Sha256};

/// The cache scope of host code built for `cpu` by compiler `compiler` (e.g.
/// `mmada 0.1.0 llvm 22.1.0`): `cpu:<name>:<8 hex digits of the feature string>`.
pub fn host_scope(cpu: &HostCpu, compiler: &str) -> cache::Scope {
    let features = hex::encode(Sha256::digest(cpu.features.as_bytes()));
    cache::Scope {
        target: format!("cpu:{}:{}", cpu.name, &features[..8]),
        compiler: compiler.to_string(),
    }
}

/// The cache scope of GPU kernels timed on `device` (its name) of compute capability `cc`
/// under driver version `driver`: `cuda:<name>:sm_<cc>:<driver>`.
pub fn gpu_scope(device: &str, cc: u32, driver: i32, compiler: &str) -> cache::Scope {
    cache::Scope {
        target: format!("cuda:{device}:sm_{cc}:{driver}"),
        compiler: compiler.to_string(),
    }
}

/// The tuned configuration of every key with a winner in `loaded` (a GPU scope) made with its
/// template's current GPU candidate set under `limits` (the tuned architecture), keeping the
/// knobs that change GPU code.
pub fn gpu_winners(loaded: &cache::Loaded, limits: &TargetLimits) -> IndexMap<String, Config> {
    winners(loaded, limits, false, &|k| k != KnobTarget::Host)
}

/// The tuned configuration of every key with a winner in `loaded` made with its template's
/// current host candidate set. With `gpu_too` (the build also makes GPU kernels, which the
/// host tuning did not time) a winner that changes a knob the GPU kernels see (`block`,
/// `tile`) is left out whole: applying only its host-only knobs would build a configuration
/// that was never timed.
pub fn host_winners(
    loaded: &cache::Loaded,
    limits: &TargetLimits,
    gpu_too: bool,
) -> IndexMap<String, Config> {
    // The tuner searched the host alone: its candidate set has no GPU limits.
    let host_only = TargetLimits {
        host_lanes: limits.host_lanes,
        gpu_archs: Vec::new(),
    };
    let mut out = winners(loaded, &host_only, true, &|_| true);
    if gpu_too {
        out.retain(|key, c| {
            let Some(t) = key.split(':').next().and_then(template::template) else {
                return false;
            };
            let default = t.default_config(&host_only);
            t.knobs
                .iter()
                .filter(|k| k.target != KnobTarget::Host)
                .all(|k| c.0.get(k.name) == default.0.get(k.name))
        });
    }
    out
}

/// Winners whose candidate set is the current one of their template on the searched target
/// (`host`, under `limits`), with the knobs `keep` accepts.
fn winners(
    loaded: &cache::Loaded,
    limits: &TargetLimits,
    host: bool,
    keep: &dyn Fn(KnobTarget) -> bool,
) -> IndexMap<String, Config> {
    let mut out = IndexMap::new();
    let keys: Vec<&str> = {
        let mut seen = std::collections::HashSet::new();
        loaded
            .records
            .iter()
            .filter(|r| r.kind == cache::RecordKind::Winner)
            .map(|r| r.key.as_str())
            .filter(|k| seen.insert(*k))
            .collect()
    };
    for key in keys {
        let Some(t) = key.split(':').next().and_then(template::template) else {
            continue;
        };
        let checksum = space::Space::new(t, limits, host).checksum();
        let Some(w) = loaded.winner(key, &checksum) else {
            continue;
        };
        let mut c = w.config.clone();
        c.0.retain(|name, _| t.knobs.iter().any(|k| k.name == name && keep(k.target)));
        out.insert(key.to_string(), c);
    }
    out
}
