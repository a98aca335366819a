//! An artifact opened for execution: its plan, constants and input checks, shared by all
//! executors.

use crate::RuntimeError;
use indexmap::IndexMap;
use mmada_codegen::artifact::Artifact;
use mmada_codegen::plan::{BufferKind, Plan};
use mmada_ir::{Role, Tensor};
use std::collections::HashSet;

/// What every executor needs from an artifact.
pub struct Executable {
    /// The artifact.
    pub artifact: Artifact,
    /// Its plan.
    pub plan: Plan,
    /// Constant blob.
    pub constants: Vec<u8>,
}

impl Executable {
    /// Opens an artifact (already validated by [`Artifact::read`]).
    pub fn new(artifact: Artifact) -> Result<Executable, RuntimeError> {
        let plan: Plan = serde_json::from_slice(artifact.section("plan.json")?)
            .map_err(|e| RuntimeError::Missing(format!("artifact plan is malformed: {e}")))?;
        let constants = artifact.section("constants.bin")?.to_vec();
        for (i, b) in plan.buffers.iter().enumerate() {
            if let BufferKind::Constant { offset, bytes } = &b.kind {
                let end = offset.saturating_add(*bytes);
                if end > constants.len() as u64 || *bytes != b.len * b.dtype.size_bytes() as u64 {
                    return Err(RuntimeError::Missing(format!(
                        "artifact plan: constant buffer {i} is out of range"
                    )));
                }
            }
        }
        for l in &plan.launches {
            if let Some(&a) = l.args.iter().find(|&&a| a >= plan.buffers.len()) {
                return Err(RuntimeError::Missing(format!(
                    "artifact plan: launch of {} uses buffer {a}, which does not exist",
                    l.kernel
                )));
            }
        }
        Ok(Executable {
            artifact,
            plan,
            constants,
        })
    }

    /// Checks one input tensor against its binding; returns its buffer.
    pub fn check_input(&self, name: &str, t: &Tensor) -> Result<usize, RuntimeError> {
        let b = self
            .plan
            .inputs
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.plan.inputs.iter().map(|b| b.name.as_str()).collect();
                RuntimeError::Input {
                    name: name.to_string(),
                    msg: format!("the graph has no such input (inputs: {})", known.join(", ")),
                }
            })?;
        if t.dtype() != b.dtype || t.shape() != &b.shape {
            return Err(RuntimeError::Input {
                name: name.to_string(),
                msg: format!(
                    "expected {}{}, got {}{}",
                    b.dtype,
                    b.shape,
                    t.dtype(),
                    t.shape()
                ),
            });
        }
        Ok(b.buffer)
    }

    /// Checks that `inputs` hold every data input and every parameter/state input not yet
    /// `resident`, each with the right dtype and shape, and nothing unknown.
    pub fn check_inputs_with(
        &self,
        inputs: &IndexMap<String, Tensor>,
        resident: &HashSet<String>,
    ) -> Result<(), RuntimeError> {
        for (name, t) in inputs {
            self.check_input(name, t)?;
        }
        for b in &self.plan.inputs {
            let kept = b.role != Role::Data && resident.contains(&b.name);
            if inputs.contains_key(&b.name) || kept {
                continue;
            }
            return Err(RuntimeError::Input {
                name: b.name.clone(),
                msg: format!("missing (expected {}{})", b.dtype, b.shape),
            });
        }
        Ok(())
    }
}

/// Runs a compiled graph.
///
/// Parameter and state inputs are resident: once given (to [`Executor::set_input`] or to a
/// run) they stay in the executor's buffers, later runs may omit them, and outputs declared as
/// their in-place updates overwrite them at the end of each run.
pub trait Executor {
    /// "cpu" or "cuda".
    fn target(&self) -> &'static str;
    /// Runs the graph on named inputs and returns named outputs.
    fn run(
        &mut self,
        inputs: &IndexMap<String, Tensor>,
    ) -> Result<IndexMap<String, Tensor>, RuntimeError>;
    /// Sets an input's value without running (parameters and state stay resident).
    fn set_input(&mut self, name: &str, t: &Tensor) -> Result<(), RuntimeError>;
    /// Reads the current value of an input (e.g. a parameter after some update steps).
    fn get_input(&mut self, name: &str) -> Result<Tensor, RuntimeError>;
}
