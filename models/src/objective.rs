//! What a training run optimises ([`Objective`]): the step graph, each step's data, and the
//! hooks an objective with state of its own needs (UniGRPO's rollouts). The loop that runs any
//! objective is [`crate::trainer::run_loop`].

use crate::config::LladaConfig;
use crate::data::DataPosition;
use crate::train_step::StepHyper;
use crate::ModelsError;
use indexmap::IndexMap;
use mmada_ir::Tensor;
use mmada_runtime::Executor;
use std::collections::BTreeMap;

/// What a run optimises: the compiled step's graph and each step's data. Everything else —
/// resident weights and AdamW state, the learning-rate schedule, checkpoints and resume,
/// metrics and plots — is the trainer's loop, shared by every objective (the masked-diffusion
/// loss now, UniGRPO later).
pub trait Objective {
    /// Name for logs and artifacts.
    fn name(&self) -> &str;
    /// The whole step: inputs the parameters (role `Param`, official names), their moments
    /// (`<name>.exp_avg`, `<name>.exp_avg_sq`), `lr`, `bc1`, `bc2` and the objective's data;
    /// outputs `loss`, `grad_norm` and the parameters' and moments' in-place updates.
    fn step_graph(
        &self,
        cfg: &LladaConfig,
        hyper: StepHyper,
    ) -> Result<mmada_ir::Graph, ModelsError>;
    /// Further entries compiled into the step's artifact, sharing its resident parameters
    /// (UniGRPO: the rollout sampler and the log-probability passes). None by default.
    fn entries(&self, _cfg: &LladaConfig) -> Result<Vec<(String, mmada_ir::Graph)>, ModelsError> {
        Ok(Vec::new())
    }
    /// Called once the parameters and moments are resident, before the first step, with the
    /// objective's state of the checkpoint resumed from (empty otherwise).
    fn init(
        &mut self,
        _exe: &mut dyn Executor,
        _resumed: &IndexMap<String, Tensor>,
    ) -> Result<(), ModelsError> {
        Ok(())
    }
    /// The data inputs of step `step`, in order from the data position (advances it). The
    /// executor holds the current parameters, for objectives that run other entries first.
    fn data(
        &mut self,
        step: usize,
        exe: &mut dyn Executor,
    ) -> Result<IndexMap<String, Tensor>, ModelsError>;
    /// The objective's figures of a step from the step's outputs (none by default).
    fn metrics(&mut self, _out: &IndexMap<String, Tensor>) -> BTreeMap<String, f64> {
        BTreeMap::new()
    }
    /// Metrics drawn as `<out>/<name>-curve.png` charts: (metric, title, y label).
    fn curves(&self) -> Vec<(&'static str, &'static str, &'static str)> {
        Vec::new()
    }
    /// The objective's state saved with a checkpoint (none by default).
    fn state(&self, _exe: &mut dyn Executor) -> Result<IndexMap<String, Tensor>, ModelsError> {
        Ok(IndexMap::new())
    }
    /// Where the data stands, saved in checkpoints so a resumed run continues exactly.
    fn position(&self) -> DataPosition;
    /// Where further data streams stand (none by default).
    fn streams(&self) -> BTreeMap<String, DataPosition> {
        BTreeMap::new()
    }
    /// Tokens one step trains on (for throughput).
    fn tokens_per_step(&self) -> usize;
}
