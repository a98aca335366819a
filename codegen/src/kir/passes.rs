//! KIR transforms as a list of passes, each visiting every kernel, with a dump after each.
//!
//! The host pipeline is [`EmulateMma`] (tensor-core products, see [`super::mma`]) then
//! [`LaneSplit`] (see [`super::lanes`]); the GPU pipeline is empty. The
//! kernels stored in an artifact are the ones before any pass: both targets start from the same
//! description, and a pass only rewrites it for one target's lowering.

use super::lanes::{split_phase, with_lane_vars};
use super::{check, to_text, BlockStmt, Kernel};
use crate::CodegenError;
use mmada_passes::DumpSink;

/// A kernel-to-kernel rewrite.
pub trait KirPass {
    /// Name used in dumps.
    fn name(&self) -> &'static str;
    /// Rewrites one kernel; returns whether it changed.
    fn run(&self, k: &mut Kernel) -> Result<bool, CodegenError>;
}

/// Host only: phases whose thread loop would not vectorise (thread-dependent `div`/`rem` by
/// less than the block) become [`BlockStmt::LanePhase`]s of `lanes` lanes.
pub struct LaneSplit {
    /// Lanes of the inner loop (the CPU's f32 vector width), unless the kernel's template
    /// configuration sets `host_lanes`.
    pub lanes: u64,
}

impl KirPass for LaneSplit {
    fn name(&self) -> &'static str {
        "lane-split"
    }

    fn run(&self, k: &mut Kernel) -> Result<bool, CodegenError> {
        let (mut out, first) = with_lane_vars(k);
        let block = k.block as u64;
        let lanes = k
            .template
            .as_ref()
            .and_then(|t| t.config.0.get("host_lanes").copied())
            .unwrap_or(self.lanes);
        let mut changed = false;
        let split = |stmts: &mut Vec<BlockStmt>, changed: &mut bool| {
            fn walk(
                stmts: &mut [BlockStmt],
                block: u64,
                lanes: u64,
                first: u32,
                changed: &mut bool,
            ) {
                for s in stmts.iter_mut() {
                    match s {
                        BlockStmt::Phase(body) => {
                            if let Some(sp) = split_phase(body, block, lanes, first) {
                                *s = BlockStmt::LanePhase {
                                    base: sp.base,
                                    lane: sp.lane,
                                    lanes,
                                    body: sp.body,
                                };
                                *changed = true;
                            }
                        }
                        BlockStmt::For { body, .. } => walk(body, block, lanes, first, changed),
                        BlockStmt::Barrier
                        | BlockStmt::Shuffle { .. }
                        | BlockStmt::Mma(_)
                        | BlockStmt::LanePhase { .. } => {}
                    }
                }
            }
            walk(stmts, block, lanes, first, changed);
        };
        split(&mut out.body, &mut changed);
        if changed {
            *k = out;
        }
        Ok(changed)
    }
}

/// Host only: every [`BlockStmt::Mma`] becomes its exact emulation over shared memory under
/// the hardware's fragment layout ([`super::mma::emulate`] with [`super::mma::PTX`]).
pub struct EmulateMma;

impl KirPass for EmulateMma {
    fn name(&self) -> &'static str {
        "emulate-mma"
    }

    fn run(&self, k: &mut Kernel) -> Result<bool, CodegenError> {
        Ok(super::mma::emulate(k, &super::mma::PTX))
    }
}

/// The passes of the host lowering.
pub fn host_pipeline(lanes: u64) -> Vec<Box<dyn KirPass>> {
    vec![Box::new(EmulateMma), Box::new(LaneSplit { lanes })]
}

/// Runs `passes` over every kernel in order, checking each result and writing
/// `NN-after-<pass>.kir.txt` of all kernels to `dump` after each pass.
pub fn run(
    kernels: &[Kernel],
    passes: &[Box<dyn KirPass>],
    dump: &DumpSink,
) -> Result<Vec<Kernel>, CodegenError> {
    let mut ks = kernels.to_vec();
    for (i, p) in passes.iter().enumerate() {
        for k in &mut ks {
            p.run(k)?;
            check(k).map_err(|e| CodegenError::Kir(format!("after {}: {e}", p.name())))?;
        }
        if dump.enabled() {
            let text: Vec<String> = ks.iter().map(to_text).collect();
            dump.write(
                &format!("{:02}-after-{}.kir.txt", i + 1, p.name()),
                &text.join("\n"),
            )?;
        }
    }
    Ok(ks)
}
