//! The pass trait and the pass manager.

use crate::PassError;
use mmada_ir::{display, verify, Graph};
use std::path::PathBuf;

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
    dump_dir: Option<PathBuf>,
}

impl Default for PassManager {
    fn default() -> Self {
        PassManager::new()
    }
}

impl PassManager {
    /// An empty pipeline. Verifies after each pass in debug builds; dumps go to
    /// `$MMADA_DUMP_DIR/graph` when that variable is set.
    pub fn new() -> PassManager {
        PassManager {
            passes: Vec::new(),
            verify_each: cfg!(debug_assertions),
            dump_dir: std::env::var_os("MMADA_DUMP_DIR").map(|d| PathBuf::from(d).join("graph")),
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

    /// Sets (or clears) the dump directory.
    pub fn dump_dir(&mut self, dir: Option<PathBuf>) -> &mut Self {
        self.dump_dir = dir;
        self
    }

    /// Names of the passes in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    fn dump(&self, index: usize, name: &str, g: &Graph) -> Result<(), PassError> {
        let Some(dir) = &self.dump_dir else {
            return Ok(());
        };
        let io = |path: &PathBuf, e| PassError::Dump {
            path: path.display().to_string(),
            source: e,
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let invalid = |e| PassError::Invalid {
            pass: name.to_string(),
            source: e,
        };
        let txt = dir.join(format!("{index:02}-after-{name}.txt"));
        std::fs::write(&txt, display::to_text(g).map_err(invalid)?).map_err(|e| io(&txt, e))?;
        let dot = dir.join(format!("{index:02}-after-{name}.dot"));
        std::fs::write(&dot, display::to_dot(g).map_err(invalid)?).map_err(|e| io(&dot, e))?;
        Ok(())
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
