//! The dump sink: where every compiler stage writes what it produced, when asked to.
//!
//! One sink is made by the caller (the CLI, from `--dump DIR` or `MMADA_DUMP_DIR`) and handed
//! down through every stage; no stage reads the environment. A sink with no directory writes
//! nothing and costs nothing. Paths are relative to the sink's root; folders are created on
//! first use.

use crate::PassError;
use std::path::{Path, PathBuf};

/// Writes stage dumps under one directory, or nowhere.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DumpSink {
    root: Option<PathBuf>,
}

impl DumpSink {
    /// A sink that writes nothing.
    pub fn none() -> DumpSink {
        DumpSink { root: None }
    }

    /// A sink writing under `dir` (created when the first file is written).
    pub fn to_dir(dir: impl Into<PathBuf>) -> DumpSink {
        DumpSink {
            root: Some(dir.into()),
        }
    }

    /// The root directory, when the sink writes.
    pub fn dir(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// Whether anything is written (stages skip rendering dumps otherwise).
    pub fn enabled(&self) -> bool {
        self.root.is_some()
    }

    /// The sink for a sub-folder of this one.
    pub fn sub(&self, folder: &str) -> DumpSink {
        DumpSink {
            root: self.root.as_ref().map(|r| r.join(folder)),
        }
    }

    /// Writes `text` to `name` under the root (no-op without a root).
    pub fn write(&self, name: &str, text: &str) -> Result<(), PassError> {
        let Some(root) = &self.root else {
            return Ok(());
        };
        let path = root.join(name);
        let io = |p: &Path, e| PassError::Dump {
            path: p.display().to_string(),
            source: e,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        std::fs::write(&path, text).map_err(|e| io(&path, e))
    }

    /// Writes the text (`.txt`) and Graphviz (`.dot`) forms of a graph as `stem.txt`/`stem.dot`.
    pub fn write_graph(&self, stem: &str, g: &mmada_ir::Graph) -> Result<(), PassError> {
        if !self.enabled() {
            return Ok(());
        }
        let invalid = |e| PassError::Invalid {
            pass: stem.to_string(),
            source: e,
        };
        self.write(
            &format!("{stem}.txt"),
            &mmada_ir::display::to_text(g).map_err(invalid)?,
        )?;
        self.write(
            &format!("{stem}.dot"),
            &mmada_ir::display::to_dot(g).map_err(invalid)?,
        )
    }
}
