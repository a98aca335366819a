//! The pass trait and the pass manager.

use crate::{DumpSink, PassError};
use mmada_ir::{verify, Graph};

/// A graph-to-graph transformation.
pub trait Pass {
    /// Name used in dumps and errors.
    fn name(&self) -> &'static str;
    /// Rewrites the graph in place; returns whether anything changed.
    fn run(&self, g: &mut Graph) -> Result<bool, PassError>;
}

/// Runs passes in order with verification and optional numbered dumps.
pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
    verify_each: bool,
    dump: DumpSink,
    /// Number of the first dump file (the caller's earlier stages take the ones before).
    first_index: usize,
}

impl Default for PassManager {
    fn default() -> Self {
        PassManager::new()
    }
}

impl PassManager {
    /// An empty pipeline. Verifies after each pass in debug builds; dumps nothing until
    /// given a sink ([`PassManager::dump_to`]).
    pub fn new() -> PassManager {
        PassManager {
            passes: Vec::new(),
            verify_each: cfg!(debug_assertions),
            dump: DumpSink::none(),
            first_index: 0,
        }
    }

    /// Appends a pass.
    pub fn add(&mut self, pass: impl Pass + 'static) -> &mut Self {
        self.passes.push(Box::new(pass));
        self
    }

    /// Forces verification after every pass (or turns it off).
    pub fn verify_each(&mut self, on: bool) -> &mut Self {
        self.verify_each = on;
        self
    }

    /// Writes the graph after each pass to `sink` as `NN-after-<pass>.txt|.dot`, numbered
    /// from `first_index + 1` (the graph as given is `NN = first_index`, `NN-source`).
    pub fn dump_to(&mut self, sink: DumpSink, first_index: usize) -> &mut Self {
        self.dump = sink;
        self.first_index = first_index;
        self
    }

    /// Names of the passes in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    fn dump(&self, index: usize, name: &str, g: &Graph) -> Result<(), PassError> {
        let n = self.first_index + index;
        let stem = if index == 0 {
            format!("{n:02}-source")
        } else {
            format!("{n:02}-after-{name}")
        };
        self.dump.write_graph(&stem, g)
    }

    /// Verifies the input, then runs every pass in order. Returns the names of passes that
    /// changed the graph.
    pub fn run(&self, g: &mut Graph) -> Result<Vec<&'static str>, PassError> {
        verify(g).map_err(|e| PassError::Invalid {
            pass: "input".into(),
            source: e,
        })?;
        self.dump(0, "input", g)?;
        let mut changed = Vec::new();
        for (i, p) in self.passes.iter().enumerate() {
            if p.run(g)? {
                changed.push(p.name());
            }
            if self.verify_each {
                verify(g).map_err(|e| PassError::Invalid {
                    pass: p.name().into(),
                    source: e,
                })?;
            }
            self.dump(i + 1, p.name(), g)?;
        }
        Ok(changed)
    }
}
