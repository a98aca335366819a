//! The CUDA executor (cudarc, driver API, loaded dynamically): loads the artifact's PTX for the
//! device's SM version, allocates every buffer once, uploads constants and inputs, launches the
//! plan on one stream and downloads the outputs.
//!
//! cudarc panics when libcuda is missing, so presence is checked first and reported as an
//! ordinary error.

use crate::executable::{Executable, Executor};
use crate::RuntimeError;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};
use indexmap::IndexMap;
use mmada_codegen::plan::BufferKind;
use mmada_ir::Tensor;
use std::collections::HashSet;
use std::sync::Arc;

fn cuda_err(e: impl std::fmt::Debug) -> RuntimeError {
    RuntimeError::Cuda(format!("{e:?}"))
}

/// True when a CUDA driver library can be loaded and reports at least one device.
pub fn cuda_available() -> bool {
    // SAFETY: only tries to dlopen the driver library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return false;
    }
    CudaContext::device_count().map(|n| n > 0).unwrap_or(false)
}

/// Runs artifacts on an NVIDIA GPU.
pub struct CudaExecutor {
    exe: Executable,
    stream: Arc<CudaStream>,
    functions: Vec<CudaFunction>,
    buffers: Vec<CudaSlice<u8>>,
    device: String,
    arch: u32,
    resident: HashSet<String>,
}

impl CudaExecutor {
    /// Opens device `ordinal` and loads the matching PTX.
    pub fn new(exe: Executable, ordinal: usize) -> Result<CudaExecutor, RuntimeError> {
        // SAFETY: only tries to dlopen the driver library.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(RuntimeError::NoCuda(
                "the CUDA driver library (libcuda.so) is not installed".into(),
            ));
        }
        let count = CudaContext::device_count().map_err(|e| {
            RuntimeError::NoCuda(format!("the CUDA driver reports no usable device ({e:?})"))
        })?;
        if count as usize <= ordinal {
            return Err(RuntimeError::NoCuda(format!(
                "device {ordinal} requested, {count} present"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(cuda_err)?;
        let (major, minor) = ctx.compute_capability().map_err(cuda_err)?;
        let cc = (major * 10 + minor) as u32;
        let device = ctx.name().map_err(cuda_err)?;
        // The newest PTX not newer than the device (PTX is forward compatible).
        let arch = exe
            .artifact
            .manifest
            .gpu_archs
            .iter()
            .copied()
            .filter(|&a| a <= cc)
            .max()
            .ok_or_else(|| {
                RuntimeError::Missing(format!(
                    "the artifact has PTX for {:?}, none runs on {device} (sm_{cc})",
                    exe.artifact.manifest.gpu_archs
                ))
            })?;
        let ptx = exe
            .artifact
            .section_str(&format!("ptx.sm_{arch}"))?
            .to_string();
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .map_err(cuda_err)?;
        let mut functions = Vec::with_capacity(exe.plan.launches.len());
        for l in &exe.plan.launches {
            functions.push(module.load_function(&l.kernel).map_err(cuda_err)?);
        }
        let stream = ctx.default_stream();
        let mut buffers = Vec::with_capacity(exe.plan.buffers.len());
        for b in &exe.plan.buffers {
            let bytes = (b.len as usize * b.dtype.size_bytes()).max(1);
            let mut s = stream.alloc_zeros::<u8>(bytes).map_err(cuda_err)?;
            if let BufferKind::Constant { offset, bytes } = &b.kind {
                let src = &exe.constants[*offset as usize..(*offset + *bytes) as usize];
                stream.memcpy_htod(src, &mut s).map_err(cuda_err)?;
            }
            buffers.push(s);
        }
        Ok(CudaExecutor {
            exe,
            stream,
            functions,
            buffers,
            device,
            arch,
            resident: HashSet::new(),
        })
    }

    /// Device name and the SM version of the PTX in use.
    pub fn device(&self) -> (String, u32) {
        (self.device.clone(), self.arch)
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) -> Result<(), RuntimeError> {
        self.stream.synchronize().map_err(cuda_err)
    }

    /// Queues every launch of the plan (no copies, no synchronisation): for timing.
    pub fn launch_all(&mut self) -> Result<(), RuntimeError> {
        for (l, f) in self.exe.plan.launches.iter().zip(&self.functions) {
            let cfg = LaunchConfig {
                grid_dim: (l.grid as u32, 1, 1),
                block_dim: (l.block, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut b = self.stream.launch_builder(f);
            for &a in &l.args {
                b.arg(&self.buffers[a]);
            }
            // SAFETY: argument count and types match the kernel (one pointer per parameter);
            // buffers are sized by the same plan the kernel was generated from.
            unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        }
        Ok(())
    }
}

impl Executor for CudaExecutor {
    fn target(&self) -> &'static str {
        "cuda"
    }

    fn run(
        &mut self,
        inputs: &IndexMap<String, Tensor>,
    ) -> Result<IndexMap<String, Tensor>, RuntimeError> {
        self.exe.check_inputs_with(inputs, &self.resident)?;
        for (name, t) in inputs {
            self.set_input(name, t)?;
        }
        self.launch_all()?;
        let mut out = IndexMap::new();
        for b in &self.exe.plan.outputs {
            if self.exe.plan.updates.iter().any(|u| u.output == b.name) {
                continue;
            }
            let mut bytes = self
                .stream
                .clone_dtoh(&self.buffers[b.buffer])
                .map_err(cuda_err)?;
            bytes.truncate(b.shape.numel() * b.dtype.size_bytes());
            out.insert(
                b.name.clone(),
                Tensor::from_le_bytes(b.dtype, b.shape.clone(), &bytes)?,
            );
        }
        for u in self
            .exe
            .plan
            .updates
            .clone()
            .into_iter()
            .filter(|u| u.from != u.to)
        {
            // Two distinct buffers (the planner drops updates of a buffer onto itself).
            let (from, to) = (u.from, u.to);
            let src = std::mem::replace(
                &mut self.buffers[from],
                self.stream.null().map_err(cuda_err)?,
            );
            let res = self.stream.memcpy_dtod(&src, &mut self.buffers[to]);
            self.buffers[from] = src;
            res.map_err(cuda_err)?;
        }
        Ok(out)
    }

    fn set_input(&mut self, name: &str, t: &Tensor) -> Result<(), RuntimeError> {
        let buf = self.exe.check_input(name, t)?;
        let bytes = t.to_le_bytes();
        self.stream
            .memcpy_htod(&bytes, &mut self.buffers[buf])
            .map_err(cuda_err)?;
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
            .cloned()
            .ok_or_else(|| RuntimeError::Input {
                name: name.into(),
                msg: "the graph has no such input".into(),
            })?;
        let mut bytes = self
            .stream
            .clone_dtoh(&self.buffers[b.buffer])
            .map_err(cuda_err)?;
        bytes.truncate(b.shape.numel() * b.dtype.size_bytes());
        Ok(Tensor::from_le_bytes(b.dtype, b.shape.clone(), &bytes)?)
    }
}
