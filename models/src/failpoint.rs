//! Failpoints for crash tests: with `MMADA_FAILPOINT=<name>@<step>` set, the process kills
//! itself with SIGKILL (as the OOM killer or a power cut would end it, with no chance to clean
//! up) when it reaches the point `name` at that step. Tests use it to crash at an exact place
//! instead of sleeping and polling; unset, a failpoint costs one environment look-up.
//!
//! Points: `save-after-weights`, `save-after-optimizer`, `save-after-objective` (the
//! objective's own state, UniGRPO's), `save-before-publish` (inside
//! [`crate::trainer::save_checkpoint`], in that order).

/// Kills the process here when `MMADA_FAILPOINT` names this point and step.
pub fn hit(name: &str, step: usize) {
    let Ok(spec) = std::env::var("MMADA_FAILPOINT") else {
        return;
    };
    let (point, at) = match spec.split_once('@') {
        Some((p, s)) => (p, s.parse::<usize>().ok()),
        None => (spec.as_str(), None),
    };
    if point == name && at.is_none_or(|s| s == step) {
        eprintln!("failpoint {name} at step {step}: killing the process");
        // SAFETY: sends a signal to this process; nothing is accessed.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
