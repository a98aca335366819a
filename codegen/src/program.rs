//! A program: several entries (named graphs, each planned on its own) over one buffer table.
//!
//! Entries share their resident inputs — parameters, optimiser state, caches (graph inputs
//! whose role is not `Data`) — by name: `forward` and `train-step` of one model name the same
//! weight buffers, so a training step updates what the next forward reads, with nothing copied
//! in between. Everything else an entry owns: its data inputs, intermediates, constants and
//! outputs. Entries run one at a time on one stream, in any order.
//!
//! [`Program::validate`] checks a program read from a file against its kernels before anything
//! is allocated: every index in range, every binding and kernel parameter within its buffer,
//! library calls sized to their buffers. A plan that lies gives an error, never an
//! out-of-bounds access.

use crate::kir::Kernel;
use crate::plan::{Binding, BufferDesc, BufferKind, Dispatch, Launch, LibraryCall, Plan, Update};
use crate::CodegenError;
use mmada_ir::{DType, Role};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One named graph of a program.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Entry name (`forward`, `train-step`, `main` for a single graph).
    pub name: String,
    /// Graph inputs.
    pub inputs: Vec<Binding>,
    /// Graph outputs.
    pub outputs: Vec<Binding>,
    /// Launches in execution order.
    pub launches: Vec<Launch>,
    /// In-place updates applied after the launches.
    pub updates: Vec<Update>,
}

impl Entry {
    /// The input binding called `name`.
    pub fn input(&self, name: &str) -> Option<&Binding> {
        self.inputs.iter().find(|b| b.name == name)
    }

    /// The output binding called `name`.
    pub fn output(&self, name: &str) -> Option<&Binding> {
        self.outputs.iter().find(|b| b.name == name)
    }

    /// Whether output `name` is an in-place update of an input (read the input instead).
    pub fn is_update(&self, name: &str) -> bool {
        self.updates.iter().any(|u| u.output == name)
    }
}

/// Entries over one buffer table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    /// Buffers, indexed by position, shared by all entries.
    pub buffers: Vec<BufferDesc>,
    /// Entries, in the order they were given.
    pub entries: Vec<Entry>,
}

fn bad(msg: impl Into<String>) -> CodegenError {
    CodegenError::Artifact {
        path: "<plan>".into(),
        msg: msg.into(),
    }
}

impl Program {
    /// The entry called `name`, or an error listing the entries there are.
    pub fn entry(&self, name: &str) -> Result<&Entry, CodegenError> {
        self.entries.iter().find(|e| e.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
            bad(format!(
                "has no entry '{name}' (entries: {})",
                names.join(", ")
            ))
        })
    }

    /// Resident inputs (parameters, state) by name, each with its one buffer.
    pub fn resident(&self) -> Vec<&Binding> {
        let mut seen = std::collections::HashSet::new();
        self.entries
            .iter()
            .flat_map(|e| &e.inputs)
            .filter(|b| b.role != Role::Data && seen.insert(b.name.as_str()))
            .collect()
    }

    /// Links planned graphs into one program. Each plan's constants are appended to one blob;
    /// resident inputs of the same name become one buffer (their dtypes and shapes must agree).
    pub fn link(plans: Vec<(String, Plan, Vec<u8>)>) -> Result<(Program, Vec<u8>), CodegenError> {
        let mut prog = Program::default();
        let mut blob: Vec<u8> = Vec::new();
        // Resident name -> (buffer, entry that declared it first).
        let mut resident: HashMap<String, (usize, String)> = HashMap::new();
        for (name, plan, constants) in plans {
            if name.is_empty() || prog.entries.iter().any(|e| e.name == name) {
                return Err(CodegenError::Unsupported {
                    node: format!("entry '{name}'"),
                    msg: "entry names must be distinct and not empty".into(),
                });
            }
            while !blob.len().is_multiple_of(8) {
                blob.push(0);
            }
            let const_base = blob.len() as u64;
            blob.extend_from_slice(&constants);
            let base = prog.buffers.len();
            // Where each of this plan's buffers goes in the program.
            let mut map: Vec<usize> = (base..base + plan.buffers.len()).collect();
            let mut fresh = 0usize;
            for (i, b) in plan.buffers.iter().enumerate() {
                let shared = plan
                    .inputs
                    .iter()
                    .find(|bind| bind.buffer == i && bind.role != Role::Data)
                    .and_then(|bind| resident.get(&bind.name).map(|r| (bind, r)));
                if let Some((bind, (buf, first))) = shared {
                    let have = &prog.buffers[*buf];
                    if have.dtype != b.dtype || have.len != b.len {
                        return Err(CodegenError::Unsupported {
                            node: format!("input '{}'", bind.name),
                            msg: format!(
                                "entries '{first}' and '{name}' declare it differently \
                                 ({} × {} against {} × {})",
                                have.dtype, have.len, b.dtype, b.len
                            ),
                        });
                    }
                    map[i] = *buf;
                    continue;
                }
                let mut desc = b.clone();
                if let BufferKind::Constant { offset, .. } = &mut desc.kind {
                    *offset += const_base;
                }
                map[i] = base + fresh;
                fresh += 1;
                prog.buffers.push(desc);
            }
            for bind in &plan.inputs {
                if bind.role != Role::Data {
                    resident
                        .entry(bind.name.clone())
                        .or_insert((map[bind.buffer], name.clone()));
                }
            }
            let rebind = |b: &Binding| Binding {
                buffer: map[b.buffer],
                ..b.clone()
            };
            prog.entries.push(Entry {
                name,
                inputs: plan.inputs.iter().map(rebind).collect(),
                outputs: plan.outputs.iter().map(rebind).collect(),
                launches: plan
                    .launches
                    .iter()
                    .map(|l| Launch {
                        args: l.args.iter().map(|&a| map[a]).collect(),
                        ..l.clone()
                    })
                    .collect(),
                updates: plan
                    .updates
                    .iter()
                    .map(|u| Update {
                        from: map[u.from],
                        to: map[u.to],
                        ..u.clone()
                    })
                    .collect(),
            });
        }
        Ok((prog, blob))
    }

    /// Checks everything an executor relies on, against the constant blob's length and the
    /// kernels (their parameters' dtypes and lengths). Run on every program read from a file.
    pub fn validate(&self, constants_len: u64, kernels: &[Kernel]) -> Result<(), CodegenError> {
        let nb = self.buffers.len();
        let mut total: u64 = 0;
        for (i, b) in self.buffers.iter().enumerate() {
            let bytes = b
                .len
                .checked_mul(b.dtype.size_bytes() as u64)
                .ok_or_else(|| bad(format!("buffer {i} is too large")))?;
            total = total
                .checked_add(bytes)
                .filter(|&t| t <= isize::MAX as u64)
                .ok_or_else(|| bad("the buffers exceed the address space"))?;
            if let BufferKind::Constant { offset, bytes: n } = &b.kind {
                let end = offset.checked_add(*n);
                if end.is_none_or(|e| e > constants_len) || *n != bytes {
                    return Err(bad(format!("constant buffer {i} is out of range")));
                }
            }
        }
        if self.entries.is_empty() {
            return Err(bad("has no entries"));
        }
        let kernels: HashMap<&str, &Kernel> =
            kernels.iter().map(|k| (k.name.as_str(), k)).collect();
        // The most elements any launch touches in each buffer.
        let mut used: Vec<u64> = vec![0; nb];
        for (ei, e) in self.entries.iter().enumerate() {
            if self.entries[..ei].iter().any(|o| o.name == e.name) {
                return Err(bad(format!("entry '{}' appears twice", e.name)));
            }
            let at = |what: String| bad(format!("entry '{}': {what}", e.name));
            for (kind, binds) in [("input", &e.inputs), ("output", &e.outputs)] {
                for b in binds {
                    let Some(desc) = self.buffers.get(b.buffer) else {
                        return Err(at(format!(
                            "{kind} '{}' names buffer {}, which does not exist",
                            b.name, b.buffer
                        )));
                    };
                    let numel = b
                        .shape
                        .0
                        .iter()
                        .try_fold(1u64, |a, &d| a.checked_mul(d as u64));
                    if desc.dtype != b.dtype || numel != Some(desc.len) {
                        return Err(at(format!(
                            "{kind} '{}' ({}{}) does not match its buffer ({} × {})",
                            b.name, b.dtype, b.shape, desc.dtype, desc.len
                        )));
                    }
                }
            }
            for u in &e.updates {
                let (Some(f), Some(t)) = (self.buffers.get(u.from), self.buffers.get(u.to)) else {
                    return Err(at(format!(
                        "update of '{}' names a missing buffer",
                        u.input
                    )));
                };
                if f.dtype != t.dtype || f.len != t.len {
                    return Err(at(format!(
                        "update of '{}' copies between buffers of different sizes",
                        u.input
                    )));
                }
            }
            for l in &e.launches {
                let at = |what: String| at(format!("launch of {}: {what}", l.node));
                if let Some(&a) = l.args.iter().find(|&&a| a >= nb) {
                    return Err(at(format!("buffer {a} does not exist")));
                }
                for k in l.kernels() {
                    let Some(kir) = kernels.get(k.kernel.as_str()) else {
                        return Err(at(format!("kernel {} is not in the artifact", k.kernel)));
                    };
                    // The compiled code assumes its grid and block (block ids index batches
                    // and tiles): a launch must use exactly those.
                    if k.shared_bytes as u64 != kir.dynamic_shared_layout().1 {
                        return Err(at(format!(
                            "kernel {} needs {} bytes of dynamic shared memory, the launch \
                             gives {}",
                            k.kernel,
                            kir.dynamic_shared_layout().1,
                            k.shared_bytes
                        )));
                    }
                    if k.grid != kir.grid || k.block != kir.block {
                        return Err(at(format!(
                            "kernel {} was compiled for grid {} × block {}, the launch says \
                             {} × {}",
                            k.kernel, kir.grid, kir.block, k.grid, k.block
                        )));
                    }
                    if kir.params.len() != l.args.len() {
                        return Err(at(format!(
                            "kernel {} takes {} buffers, the launch passes {}",
                            k.kernel,
                            kir.params.len(),
                            l.args.len()
                        )));
                    }
                    for (p, &a) in kir.params.iter().zip(&l.args) {
                        let b = &self.buffers[a];
                        if p.dtype != b.dtype || p.len > b.len {
                            return Err(at(format!(
                                "kernel {} parameter {} ({} × {}) does not fit buffer {a} \
                                 ({} × {})",
                                k.kernel, p.name, p.dtype, p.len, b.dtype, b.len
                            )));
                        }
                        used[a] = used[a].max(p.len);
                    }
                }
                if let Dispatch::Call(LibraryCall::GemmF32(s)) = &l.host {
                    let [a, b, c] = l.args[..] else {
                        return Err(at("gemm takes 3 buffers".into()));
                    };
                    let need =
                        |x: u64, y: u64| s.batch.checked_mul(x).and_then(|v| v.checked_mul(y));
                    let fits = |buf: usize, n: Option<u64>| {
                        let d = &self.buffers[buf];
                        d.dtype == DType::F32 && n.is_some_and(|n| n <= d.len)
                    };
                    if !(fits(a, need(s.m, s.k))
                        && fits(b, need(s.k, s.n))
                        && fits(c, need(s.m, s.n)))
                        || c == a
                        || c == b
                    {
                        return Err(at("gemm shapes do not fit its buffers".into()));
                    }
                    for (buf, n) in [
                        (a, need(s.m, s.k)),
                        (b, need(s.k, s.n)),
                        (c, need(s.m, s.n)),
                    ] {
                        used[buf] = used[buf].max(n.unwrap_or(0));
                    }
                }
                if let Dispatch::Call(LibraryCall::ConvF32(s)) = &l.host {
                    let [x, w, y] = l.args[..] else {
                        return Err(at("conv takes 3 buffers".into()));
                    };
                    let prod = |v: &[u64]| v.iter().try_fold(1u64, |a, &b| a.checked_mul(b));
                    // The padded plane holds the input at its offset (see runtime/src/cpu_conv.rs).
                    let holds =
                        |p: u64, len: u64, pad: u64| len.checked_add(pad).is_some_and(|e| e <= p);
                    let sane = s
                        .padded_hw()
                        .is_some_and(|(ph, pw)| holds(ph, s.h, s.pt) && holds(pw, s.w, s.pl));
                    let sizes = [
                        (x, prod(&[s.n, s.c, s.h, s.w])),
                        (w, prod(&[s.o, s.c, s.kh, s.kw])),
                        (y, prod(&[s.n, s.o, s.oh, s.ow])),
                    ];
                    let fits = sizes.iter().all(|&(buf, n)| {
                        let d = &self.buffers[buf];
                        d.dtype == DType::F32 && n.is_some_and(|n| n <= d.len)
                    });
                    if !sane || !fits || y == x || y == w {
                        return Err(at("conv shapes do not fit its buffers".into()));
                    }
                    for (buf, n) in sizes {
                        used[buf] = used[buf].max(n.unwrap_or(0));
                    }
                }
                let attention = match &l.host {
                    Dispatch::Call(LibraryCall::AttentionF32(s)) => {
                        Some(("attention", s, attention_call_sizes(s, None)))
                    }
                    Dispatch::Call(LibraryCall::AttentionGradF32 { shape, part }) => Some((
                        "attention backward",
                        shape,
                        attention_call_sizes(shape, Some(*part)),
                    )),
                    _ => None,
                };
                if let Some((what, s, sizes)) = attention {
                    if l.args.len() != sizes.len() {
                        return Err(at(format!("{what} takes {} buffers", sizes.len())));
                    }
                    let out = l.args[sizes.len() - 1];
                    let fits = l.args.iter().zip(&sizes).all(|(&buf, &(dt, n))| {
                        let d = &self.buffers[buf];
                        d.dtype == dt && n.is_some_and(|n| n <= d.len)
                    });
                    let heads = s.hk > 0 && s.h.is_multiple_of(s.hk);
                    if !fits || !heads || l.args[..sizes.len() - 1].contains(&out) {
                        return Err(at(format!("{what} shapes do not fit its buffers")));
                    }
                    for (&buf, &(_, n)) in l.args.iter().zip(&sizes) {
                        used[buf] = used[buf].max(n.unwrap_or(0));
                    }
                }
            }
            for b in e.outputs.iter().chain(&e.inputs) {
                used[b.buffer] = used[b.buffer].max(self.buffers[b.buffer].len);
            }
        }
        // No intermediate is larger than its largest use: a plan cannot make the executor
        // allocate memory nothing needs.
        for (i, b) in self.buffers.iter().enumerate() {
            if b.kind == BufferKind::Intermediate && b.len > used[i] {
                return Err(bad(format!(
                    "buffer {i} holds {} elements, its launches use {}",
                    b.len, used[i]
                )));
            }
        }
        Ok(())
    }
}

/// The (dtype, element count) of each buffer of a host attention call, in argument order:
/// the forward (`part` None: q, k, v[, mask], out) or a backward piece (q, k[, v, dO, stats,
/// Δ][, mask], out). `None` counts overflow.
fn attention_call_sizes(
    s: &crate::kernels::attention::AttentionShape,
    part: Option<mmada_ir::AttentionPart>,
) -> Vec<(DType, Option<u64>)> {
    use mmada_ir::AttentionPart;
    let prod = |v: &[u64]| v.iter().try_fold(1u64, |a, &b| a.checked_mul(b));
    let mut sizes = vec![
        (DType::F32, prod(&[s.b, s.h, s.t, s.d])),
        (DType::F32, prod(&[s.b, s.hk, s.s, s.d])),
    ];
    if part != Some(AttentionPart::Stats) {
        sizes.push((DType::F32, prod(&[s.b, s.hk, s.s, s.dv])));
    }
    if matches!(part, Some(AttentionPart::Q | AttentionPart::Kv)) {
        sizes.extend([
            (DType::F32, prod(&[s.b, s.h, s.t, s.dv])),
            (DType::F32, prod(&[s.b, s.h, s.t, 2])),
            (DType::F32, prod(&[s.b, s.h, s.t])),
        ]);
    }
    if s.masked {
        sizes.push((DType::Bool, prod(&[s.b, s.s])));
    }
    let out = match part {
        None => prod(&[s.b, s.h, s.t, s.dv]),
        Some(AttentionPart::Stats) => prod(&[s.b, s.h, s.t, 2]),
        Some(AttentionPart::Q) => prod(&[s.b, s.h, s.t, s.d]),
        Some(AttentionPart::Kv) => {
            s.d.checked_add(s.dv)
                .and_then(|w| prod(&[s.b, s.hk, s.s, w]))
        }
    };
    sizes.push((DType::F32, out));
    sizes
}
