//! The CPU executor: loads the artifact's host library and runs each launch's blocks, split
//! across threads (blocks of one launch are independent by construction).

use crate::executable::{Executable, Executor};
use crate::RuntimeError;
use indexmap::IndexMap;
use mmada_codegen::plan::BufferKind;
use mmada_ir::Tensor;
use rayon::prelude::*;
use std::collections::HashSet;

type Entry = unsafe extern "C" fn(*const *mut u8, i64, i64);

/// Host buffers, 8-byte aligned.
struct HostBuffer {
    words: Vec<u64>,
    bytes: usize,
}

impl HostBuffer {
    fn zeros(bytes: usize) -> HostBuffer {
        HostBuffer {
            words: vec![0; bytes.div_ceil(8).max(1)],
            bytes,
        }
    }
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: u64 storage reinterpreted as bytes within its length.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr() as *const u8, self.bytes) }
    }
    fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr() as *mut u8, self.bytes) }
    }
    fn ptr(&mut self) -> *mut u8 {
        self.words.as_mut_ptr() as *mut u8
    }
}

/// Pointer table shared by the threads of one launch.
struct Args(Vec<*mut u8>);
// SAFETY: the pointers address buffers that outlive the launch; blocks write disjoint elements.
unsafe impl Send for Args {}
unsafe impl Sync for Args {}

/// Runs artifacts on the host.
pub struct CpuExecutor {
    exe: Executable,
    _dir: tempfile::TempDir,
    /// Keeps the host library loaded while `entries` point into it.
    _lib: libloading::Library,
    entries: Vec<Entry>,
    buffers: Vec<HostBuffer>,
    threads: usize,
    resident: HashSet<String>,
}

impl CpuExecutor {
    /// Loads the host library of an executable.
    pub fn new(exe: Executable) -> Result<CpuExecutor, RuntimeError> {
        let so = exe.artifact.section("host.so").map_err(|_| {
            RuntimeError::Missing(
                "the artifact has no host code (it was compiled without the cpu target)".into(),
            )
        })?;
        let dir = tempfile::tempdir().map_err(|e| RuntimeError::Load(format!("temp dir: {e}")))?;
        let path = dir.path().join("kernels.so");
        std::fs::write(&path, so).map_err(|e| RuntimeError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        // SAFETY: the library is our own generated code; loading it runs no initialisers
        // beyond the C runtime's.
        let lib = unsafe { libloading::Library::new(&path) }
            .map_err(|e| RuntimeError::Load(e.to_string()))?;
        let mut entries = Vec::with_capacity(exe.plan.launches.len());
        for l in &exe.plan.launches {
            let sym = format!("{}__entry", l.kernel);
            // SAFETY: every kernel entry has the signature `Entry`.
            let f: libloading::Symbol<Entry> = unsafe { lib.get(sym.as_bytes()) }
                .map_err(|e| RuntimeError::Load(format!("{sym}: {e}")))?;
            entries.push(*f);
        }
        let mut buffers: Vec<HostBuffer> = exe
            .plan
            .buffers
            .iter()
            .map(|b| HostBuffer::zeros(b.len as usize * b.dtype.size_bytes()))
            .collect();
        for (i, b) in exe.plan.buffers.iter().enumerate() {
            if let BufferKind::Constant { offset, bytes } = &b.kind {
                let src = &exe.constants[*offset as usize..(*offset + *bytes) as usize];
                buffers[i].as_bytes_mut().copy_from_slice(src);
            }
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(CpuExecutor {
            exe,
            _dir: dir,
            _lib: lib,
            entries,
            buffers,
            threads,
            resident: HashSet::new(),
        })
    }
}

impl Executor for CpuExecutor {
    fn target(&self) -> &'static str {
        "cpu"
    }

    fn run(
        &mut self,
        inputs: &IndexMap<String, Tensor>,
    ) -> Result<IndexMap<String, Tensor>, RuntimeError> {
        self.exe.check_inputs_with(inputs, &self.resident)?;
        for (name, t) in inputs {
            self.set_input(name, t)?;
        }
        for (l, &entry) in self.exe.plan.launches.iter().zip(&self.entries) {
            let args = Args(l.args.iter().map(|&a| self.buffers[a].ptr()).collect());
            let grid = l.grid as i64;
            let chunks = (self.threads as i64 * 4).min(grid).max(1);
            if chunks == 1 {
                // SAFETY: the argument table matches the kernel's parameters (checked when the
                // plan was built); block range is within the grid.
                unsafe { entry(args.0.as_ptr(), 0, grid) };
            } else {
                let per = (grid + chunks - 1) / chunks;
                (0..chunks).into_par_iter().for_each(|c| {
                    let lo = c * per;
                    let hi = ((c + 1) * per).min(grid);
                    if lo < hi {
                        let a = &args;
                        // SAFETY: as above; different chunks run disjoint blocks.
                        unsafe { entry(a.0.as_ptr(), lo, hi) };
                    }
                });
            }
        }
        let mut out = IndexMap::new();
        for b in &self.exe.plan.outputs {
            let t =
                Tensor::from_le_bytes(b.dtype, b.shape.clone(), self.buffers[b.buffer].as_bytes())?;
            out.insert(b.name.clone(), t);
        }
        for u in &self.exe.plan.updates {
            let src = self.buffers[u.from].as_bytes().to_vec();
            self.buffers[u.to].as_bytes_mut().copy_from_slice(&src);
        }
        Ok(out)
    }

    fn set_input(&mut self, name: &str, t: &Tensor) -> Result<(), RuntimeError> {
        let buf = self.exe.check_input(name, t)?;
        self.buffers[buf]
            .as_bytes_mut()
            .copy_from_slice(&t.to_le_bytes());
        self.resident.insert(name.to_string());
        Ok(())
    }

    fn get_input(&mut self, name: &str) -> Result<Tensor, RuntimeError> {
        let b = self
            .exe
            .plan
            .inputs
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| RuntimeError::Input {
                name: name.into(),
                msg: "the graph has no such input".into(),
            })?;
        Ok(Tensor::from_le_bytes(
            b.dtype,
            b.shape.clone(),
            self.buffers[b.buffer].as_bytes(),
        )?)
    }
}
