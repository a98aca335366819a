//! `mmada inspect`: what an artifact holds — entries, memory, kernels with their template
//! configurations and ptxas reports, sections.

use crate::error::CliError;
use mmada_codegen::artifact::Artifact;
use mmada_codegen::plan::{BufferKind, Dispatch};
use std::path::PathBuf;

/// Arguments of `mmada inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// The artifact.
    artifact: PathBuf,
}

/// Runs `mmada inspect`.
pub fn run(a: Args) -> Result<(), CliError> {
    let art = Artifact::read(&a.artifact)?;
    let m = &art.manifest;
    println!("artifact {} ({})", a.artifact.display(), m.name);
    println!(
        "  mmada {}, LLVM {}, PTX features {}",
        m.mmada_version, m.llvm_version, m.ptx_features
    );
    println!(
        "  host code: {}",
        m.host_cpu.as_ref().map_or("none".into(), |c| format!(
            "{} ({} f32 lanes)",
            c.name,
            c.f32_lanes()
        ))
    );
    println!("  GPU targets: {}", super::archs_text(&m.gpu_archs));
    let exe = mmada_runtime::Executable::new(art.clone())?;
    let prog = &exe.program;
    let (mut resident, mut data, mut intermediates, mut buffers) = (0u64, 0u64, 0u64, 0usize);
    let resident_bufs: Vec<usize> = prog.resident().iter().map(|b| b.buffer).collect();
    for (i, b) in prog.buffers.iter().enumerate() {
        let bytes = b.len * b.dtype.size_bytes() as u64;
        match b.kind {
            BufferKind::Input { .. } if resident_bufs.contains(&i) => resident += bytes,
            BufferKind::Input { .. } => data += bytes,
            BufferKind::Intermediate if b.len > 0 => {
                intermediates += bytes;
                buffers += 1;
            }
            _ => {}
        }
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "  memory: resident (parameters, state) {:.2} MiB, data inputs {:.2} MiB, \
         intermediates and outputs {:.2} MiB in {buffers} buffers (shared where lifetimes allow)",
        mib(resident),
        mib(data),
        mib(intermediates),
    );
    println!("  entries:");
    for (e, info) in prog.entries.iter().zip(&m.entries) {
        let calls = e
            .launches
            .iter()
            .filter(|l| matches!(l.host, Dispatch::Call(_)))
            .count();
        println!(
            "    {:<12} {} inputs ({} resident), {} outputs, {} launches ({calls} library calls \
             on the host), {} in-place updates, graph sha256 {}",
            e.name,
            e.inputs.len(),
            e.inputs
                .iter()
                .filter(|b| b.role != mmada_ir::Role::Data)
                .count(),
            e.outputs.iter().filter(|b| !e.is_update(&b.name)).count(),
            e.launches.len(),
            e.updates.len(),
            &info.graph_sha256[..16],
        );
        let (planned, largest) = entry_intermediates(prog, e);
        let resident_used: u64 = e
            .inputs
            .iter()
            .map(|b| prog.buffers[b.buffer].len * b.dtype.size_bytes() as u64)
            .sum();
        let largest = largest.map_or("none".into(), |(bytes, node)| {
            format!("{:.2} MiB, written by {node}", mib(bytes))
        });
        println!(
            "      planned peak {:.2} MiB: inputs {:.2} MiB, intermediates and outputs {:.2} \
             MiB; largest intermediate {largest}",
            mib(resident_used + planned),
            mib(resident_used),
            mib(planned),
        );
    }
    if !m.choices.settings.is_empty() {
        let set: Vec<String> = m
            .choices
            .settings
            .iter()
            .flat_map(|(k, knobs)| knobs.iter().map(move |(n, v)| format!("{k}.{n}={v}")))
            .collect();
        println!("  knob settings: {}", set.join(" "));
    }
    if !m.choices.tuned.is_empty() {
        let used = m
            .kernels
            .iter()
            .filter(|k| k.template.as_ref().is_some_and(|t| t.tuned))
            .count();
        println!(
            "  tuning cache: {} tuned choices applied, {used} kernels built from them",
            m.choices.tuned.len()
        );
    }
    println!("  kernels:");
    for k in &m.kernels {
        let ptx: Vec<String> = k
            .ptxas
            .iter()
            .map(|(a, i)| {
                format!(
                    "{a}: {} regs, {} B spill, {} B smem",
                    i.registers,
                    i.spill_stores + i.spill_loads,
                    i.shared_bytes
                )
            })
            .collect();
        let template = k.template.as_ref().map_or(String::new(), |t| {
            format!(
                "{}[{}]{}",
                t.key,
                t.config.describe(),
                match (t.tuned, t.chosen) {
                    (true, _) => " (tuned)",
                    (false, true) => " (chosen)",
                    _ => "",
                }
            )
        });
        println!(
            "    {} {template} grid={} block={} {}",
            k.name,
            k.grid,
            k.block,
            ptx.join("; ")
        );
    }
    println!("  sections:");
    for s in &m.sections {
        println!(
            "    {:<28} {:>10} bytes  sha256 {}",
            s.name,
            s.len,
            &s.sha256[..16]
        );
    }
    Ok(())
}

/// The bytes of the intermediate buffers an entry's launches use (the memory it needs besides
/// its inputs: buffers are planned for the whole artifact, so this is what the entry holds at
/// its peak), and its largest intermediate with the node that writes it.
fn entry_intermediates(
    prog: &mmada_codegen::program::Program,
    e: &mmada_codegen::program::Entry,
) -> (u64, Option<(u64, String)>) {
    let bytes = |i: usize| {
        let b = &prog.buffers[i];
        b.len * b.dtype.size_bytes() as u64
    };
    let mut used = std::collections::BTreeSet::new();
    let mut largest: Option<(u64, String)> = None;
    for l in &e.launches {
        for &a in &l.args {
            if prog.buffers[a].kind == BufferKind::Intermediate {
                used.insert(a);
            }
        }
        if let Some(&out) = l.args.last() {
            let n = bytes(out);
            let bigger = largest.as_ref().is_none_or(|(m, _)| n > *m);
            if prog.buffers[out].kind == BufferKind::Intermediate && bigger {
                largest = Some((n, l.node.clone()));
            }
        }
    }
    (used.iter().map(|&i| bytes(i)).sum(), largest)
}
