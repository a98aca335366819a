//! What the tuner may try for a template on one target: its search space.
//!
//! The searched knobs are those that change the target's code ([`KnobTarget::changes`]); the
//! others stay at the heuristic default. Candidate 0 is always the default; the rest are every
//! valid combination, in knob order (the last knob varies fastest), each checked against the
//! target's limits by the template's validity predicate ([`Template::check`]: threads per
//! block, shared memory, whole warps). The [`Space::checksum`] names the candidate set: the
//! tuning cache keeps it with every timing, so changing a template's knobs or values
//! invalidates that template's entries and no other's.

use crate::template::{Config, Knob, KnobTarget, TargetLimits, Template};
use sha2::{Digest, Sha256};

/// The search space of one template on one target.
#[derive(Clone, Debug)]
pub struct Space {
    /// The template.
    pub template: &'static Template,
    /// The knobs searched, in the template's order.
    pub knobs: Vec<&'static Knob>,
    /// The heuristic default (candidate 0).
    pub default: Config,
    limits: TargetLimits,
    host: bool,
}

impl Space {
    /// The space of `t` for the host CPU (`host`) or the GPU, under `limits`.
    pub fn new(t: &'static Template, limits: &TargetLimits, host: bool) -> Space {
        let knobs = t
            .knobs
            .iter()
            .filter(|k| KnobTarget::changes(k.target, host))
            .collect();
        Space {
            template: t,
            knobs,
            default: t.default_config(limits),
            limits: limits.clone(),
            host,
        }
    }

    /// Whether `c` is a configuration of this template valid on the target.
    pub fn is_valid(&self, c: &Config) -> bool {
        self.template.check(c, &self.limits).is_ok()
    }

    /// `c` with the knobs that cannot matter under its other values set to their defaults,
    /// so that no two candidates build the same host code: with the gemm library
    /// (`host_library = 1`) the generated kernel's `tile` is unused on the host, and with the
    /// generated kernel the library's cut (`host_split`) is.
    pub fn normalize(&self, c: &Config) -> Config {
        let mut c = c.clone();
        if self.host && c.0.contains_key("host_library") {
            let unused = if c.get("host_library") == 1 {
                "tile"
            } else {
                "host_split"
            };
            if let Some(&d) = self.default.0.get(unused) {
                c.0.insert(unused.to_string(), d);
            }
        }
        c
    }

    /// Every valid candidate, the default first.
    pub fn candidates(&self) -> Vec<Config> {
        let mut out = vec![self.default.clone()];
        let mut current = vec![0usize; self.knobs.len()];
        if self.knobs.is_empty() {
            return out;
        }
        loop {
            let mut c = self.default.clone();
            for (k, &i) in self.knobs.iter().zip(&current) {
                c.0.insert(k.name.to_string(), k.values[i]);
            }
            let c = self.normalize(&c);
            if self.is_valid(&c) && !out.contains(&c) {
                out.push(c);
            }
            // Odometer over the knob values, the last knob fastest.
            let mut d = self.knobs.len();
            loop {
                if d == 0 {
                    return out;
                }
                d -= 1;
                current[d] += 1;
                if current[d] < self.knobs[d].values.len() {
                    break;
                }
                current[d] = 0;
            }
        }
    }

    /// The valid configurations that differ from `c` in exactly one searched knob.
    pub fn neighbours(&self, c: &Config) -> Vec<Config> {
        let mut out = Vec::new();
        for k in &self.knobs {
            for &v in k.values {
                if c.0.get(k.name) == Some(&v) {
                    continue;
                }
                let mut n = c.clone();
                n.0.insert(k.name.to_string(), v);
                let n = self.normalize(&n);
                if self.is_valid(&n) && &n != c && !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out
    }

    /// 16 hex digits naming the candidate set: the template key, the target kind, every knob
    /// (name, values, target) and the candidates themselves.
    pub fn checksum(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.template.key.as_bytes());
        h.update(if self.host { b"host" as &[u8] } else { b"gpu" });
        for k in self.template.knobs {
            h.update(format!("|{}={:?}@{:?}", k.name, k.values, k.target).as_bytes());
        }
        for c in self.candidates() {
            h.update(format!("|{}", c.describe()).as_bytes());
        }
        hex::encode(h.finalize())[..16].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::{ATTENTION, ELEMENTWISE, MATMUL};
    use crate::{HostCpu, SmArch};

    #[test]
    fn host_spaces_search_host_knobs_only() {
        let host = TargetLimits::new(Some(&HostCpu::generic()), &[]);
        let m = Space::new(&MATMUL, &host, true);
        let names: Vec<&str> = m.knobs.iter().map(|k| k.name).collect();
        assert_eq!(names, ["tile", "host_library", "host_split"]);
        let c = m.candidates();
        assert_eq!(c[0], MATMUL.default_config(&host));
        // The library with 4 cuts, the generated kernel with 4 tiles; mma stays at its default.
        assert_eq!(c.len(), 8);
        assert!(c.iter().all(|c| c.get("mma") == 1));
        let unique: std::collections::HashSet<_> = c.iter().collect();
        assert_eq!(unique.len(), c.len(), "no candidate twice");
        // Attention's knobs only change GPU code.
        assert_eq!(Space::new(&ATTENTION, &host, true).candidates().len(), 1);
        // One knob away from the default: the generated kernel, 3 other cuts (another tile
        // changes nothing with the library).
        assert_eq!(m.neighbours(&m.default).len(), 4);
    }

    #[test]
    fn gpu_limits_filter_candidates_and_checksums_follow_the_set() {
        let gpu = TargetLimits::new(None, &[SmArch::SM90]);
        let e = Space::new(&ELEMENTWISE, &gpu, false);
        assert!(e.candidates().iter().all(|c| c.get("block") <= 1024));
        let host16 = TargetLimits::new(Some(&HostCpu::generic()), &[]);
        let a = Space::new(&ELEMENTWISE, &host16, true);
        // 6 blocks × 6 lane widths × 6 splits.
        assert_eq!(a.candidates().len(), 216);
        assert_ne!(a.checksum(), e.checksum(), "host and GPU sets differ");
        assert_eq!(
            a.checksum(),
            Space::new(&ELEMENTWISE, &host16, true).checksum()
        );
        assert_ne!(
            a.checksum(),
            Space::new(&MATMUL, &host16, true).checksum(),
            "each template its own set"
        );
    }
}
