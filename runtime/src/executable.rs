//! An artifact opened for execution: its program (entries over one buffer table), constants
//! and input checks, shared by all executors; and the [`Executor`] interface.

use crate::RuntimeError;
use indexmap::IndexMap;
use mmada_codegen::artifact::Artifact;
use mmada_codegen::kir::Kernel;
use mmada_codegen::program::{Entry, Program};
use mmada_ir::{Role, Tensor};
use std::collections::HashSet;

/// What every executor needs from an artifact.
pub struct Executable {
    /// The artifact.
    pub artifact: Artifact,
    /// Its program, validated against its kernels and constants.
    pub program: Program,
    /// Constant blob.
    pub constants: Vec<u8>,
}

impl Executable {
    /// Opens an artifact (already checksummed by [`Artifact::read`]) and validates its
    /// program: a plan whose indices, lengths or shapes lie is an error here, before any
    /// buffer exists.
    pub fn new(artifact: Artifact) -> Result<Executable, RuntimeError> {
        let program: Program = serde_json::from_slice(artifact.section("program.json")?)
            .map_err(|e| RuntimeError::Missing(format!("artifact program is malformed: {e}")))?;
        let kernels: Vec<Kernel> = serde_json::from_slice(artifact.section("kernels.kir.json")?)
            .map_err(|e| RuntimeError::Missing(format!("artifact kernels are malformed: {e}")))?;
        let constants = artifact.section("constants.bin")?.to_vec();
        program.validate(constants.len() as u64, &kernels)?;
        Ok(Executable {
            artifact,
            program,
            constants,
        })
    }

    /// The entry called `name`.
    pub fn entry(&self, name: &str) -> Result<&Entry, RuntimeError> {
        Ok(self.program.entry(name)?)
    }

    /// Index of the entry called `name`.
    pub fn entry_index(&self, name: &str) -> Result<usize, RuntimeError> {
        self.entry(name)?;
        Ok(self
            .program
            .entries
            .iter()
            .position(|e| e.name == name)
            .unwrap_or(0))
    }

    /// The entry [`Executor::run`] runs: the first one.
    pub fn default_entry(&self) -> &Entry {
        // `validate` guarantees at least one entry.
        &self.program.entries[0]
    }

    /// Every buffer bound to an input `name` of `t`'s dtype and shape, in any entry (one for a
    /// resident input; entries may also have data inputs of one name and different shapes).
    pub fn input_buffers(&self, name: &str, t: &Tensor) -> Result<Vec<usize>, RuntimeError> {
        let mut bufs = Vec::new();
        let mut mismatch = None;
        for e in &self.program.entries {
            if let Some(b) = e.input(name) {
                match check_tensor(b, t) {
                    Ok(()) if !bufs.contains(&b.buffer) => bufs.push(b.buffer),
                    Ok(()) => {}
                    Err(err) => mismatch = mismatch.or(Some(err)),
                }
            }
        }
        if let (true, Some(err)) = (bufs.is_empty(), mismatch) {
            return Err(err);
        }
        if bufs.is_empty() {
            let mut known: Vec<&str> = Vec::new();
            for b in self.program.entries.iter().flat_map(|e| &e.inputs) {
                if !known.contains(&b.name.as_str()) {
                    known.push(&b.name);
                }
            }
            return Err(RuntimeError::Input {
                name: name.to_string(),
                msg: format!("no entry has such an input (inputs: {})", known.join(", ")),
            });
        }
        Ok(bufs)
    }

    /// Checks that `inputs` hold every data input of entry `e` and every parameter/state
    /// input not yet `resident`, each with the right dtype and shape, and nothing unknown;
    /// returns the buffer of each input, in order.
    pub fn check_inputs(
        &self,
        e: &Entry,
        inputs: &IndexMap<String, Tensor>,
        resident: &HashSet<String>,
    ) -> Result<Vec<usize>, RuntimeError> {
        let mut bufs = Vec::with_capacity(inputs.len());
        for (name, t) in inputs {
            let b = e.input(name).ok_or_else(|| {
                let known: Vec<&str> = e.inputs.iter().map(|b| b.name.as_str()).collect();
                RuntimeError::Input {
                    name: name.to_string(),
                    msg: format!(
                        "entry '{}' has no such input (inputs: {})",
                        e.name,
                        known.join(", ")
                    ),
                }
            })?;
            check_tensor(b, t)?;
            bufs.push(b.buffer);
        }
        for b in &e.inputs {
            let kept = b.role != Role::Data && resident.contains(&b.name);
            if inputs.contains_key(&b.name) || kept {
                continue;
            }
            return Err(RuntimeError::Input {
                name: b.name.clone(),
                msg: format!("missing (expected {}{})", b.dtype, b.shape),
            });
        }
        Ok(bufs)
    }

    /// The binding of input `name` in any entry.
    pub fn input_binding(&self, name: &str) -> Result<&mmada_codegen::plan::Binding, RuntimeError> {
        self.program
            .entries
            .iter()
            .find_map(|e| e.input(name))
            .ok_or_else(|| RuntimeError::Input {
                name: name.into(),
                msg: "no entry has such an input".into(),
            })
    }

    /// The binding of output `name` of entry `e`, unless it is an in-place update.
    pub fn output_binding<'a>(
        &self,
        e: &'a Entry,
        name: &str,
    ) -> Result<&'a mmada_codegen::plan::Binding, RuntimeError> {
        let b = e.output(name).ok_or_else(|| {
            let known: Vec<&str> = e
                .outputs
                .iter()
                .filter(|b| !e.is_update(&b.name))
                .map(|b| b.name.as_str())
                .collect();
            RuntimeError::Input {
                name: name.into(),
                msg: format!(
                    "entry '{}' has no such output (outputs: {})",
                    e.name,
                    known.join(", ")
                ),
            }
        })?;
        if e.is_update(name) {
            return Err(RuntimeError::Input {
                name: name.into(),
                msg: format!(
                    "is an in-place update in entry '{}': read the input it updates",
                    e.name
                ),
            });
        }
        Ok(b)
    }
}

fn check_tensor(b: &mmada_codegen::plan::Binding, t: &Tensor) -> Result<(), RuntimeError> {
    if t.dtype() != b.dtype || t.shape() != &b.shape {
        return Err(RuntimeError::Input {
            name: b.name.clone(),
            msg: format!(
                "expected {}{}, got {}{}",
                b.dtype,
                b.shape,
                t.dtype(),
                t.shape()
            ),
        });
    }
    Ok(())
}

/// Copies between the host and an executor's buffers since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfers {
    /// Tensors copied into buffers (inputs, parameters).
    pub to_device: u64,
    /// Tensors copied out of buffers (outputs, inputs read back).
    pub to_host: u64,
    /// Of those, resident inputs read back (parameters, optimiser state, caches).
    pub resident_to_host: u64,
    /// Bytes copied out.
    pub bytes_to_host: u64,
}

/// Runs the entries of a compiled program.
///
/// Parameter and state inputs are resident: once given (to [`Executor::set_input`] or to a
/// run) they stay in the executor's buffers, shared by every entry that names them; later runs
/// may omit them, and outputs declared as their in-place updates overwrite them at the end of
/// each run. A run leaves its outputs in the executor: [`Executor::read_output`] copies out the
/// ones wanted, until the same entry runs again.
pub trait Executor {
    /// "cpu" or "cuda".
    fn target(&self) -> &'static str;
    /// The program being run.
    fn executable(&self) -> &Executable;
    /// Runs entry `entry` on named inputs, copying nothing back.
    fn run_entry(
        &mut self,
        entry: &str,
        inputs: &IndexMap<String, Tensor>,
    ) -> Result<(), RuntimeError>;
    /// Copies output `name` of the last run of `entry` to the host.
    fn read_output(&mut self, entry: &str, name: &str) -> Result<Tensor, RuntimeError>;
    /// Sets an input's value without running (in every entry that has it).
    fn set_input(&mut self, name: &str, t: &Tensor) -> Result<(), RuntimeError>;
    /// Reads the current value of an input (e.g. a parameter after some update steps).
    fn get_input(&mut self, name: &str) -> Result<Tensor, RuntimeError>;
    /// Host copies so far.
    fn transfers(&self) -> Transfers;

    /// Runs `entry` and returns its outputs (all but in-place updates).
    fn run_entry_outputs(
        &mut self,
        entry: &str,
        inputs: &IndexMap<String, Tensor>,
    ) -> Result<IndexMap<String, Tensor>, RuntimeError> {
        self.run_entry(entry, inputs)?;
        let e = self.executable().entry(entry)?;
        let names: Vec<String> = e
            .outputs
            .iter()
            .filter(|b| !e.is_update(&b.name))
            .map(|b| b.name.clone())
            .collect();
        let mut out = IndexMap::new();
        for n in names {
            let t = self.read_output(entry, &n)?;
            out.insert(n, t);
        }
        Ok(out)
    }

    /// Runs the first entry and returns its outputs.
    fn run(
        &mut self,
        inputs: &IndexMap<String, Tensor>,
    ) -> Result<IndexMap<String, Tensor>, RuntimeError> {
        let entry = self.executable().default_entry().name.clone();
        self.run_entry_outputs(&entry, inputs)
    }
}
