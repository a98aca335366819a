//! The CUDA executor (cudarc, driver API, loaded dynamically): loads the artifact's PTX for the
//! device's SM version, allocates every buffer of the program once, uploads constants and
//! inputs, launches an entry on one stream, and downloads only the outputs asked for. Resident
//! buffers (parameters, optimiser state, caches) stay on the device between runs and entries.
//!
//! cudarc panics when libcuda is missing, so presence is checked first and reported as an
//! ordinary error.

use crate::executable::{Executable, Executor, Transfers};
use crate::RuntimeError;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};
use indexmap::IndexMap;
use mmada_codegen::plan::BufferKind;
use mmada_ir::{Role, Tensor};
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
    /// Per entry, per launch.
    functions: Vec<Vec<CudaFunction>>,
    buffers: Vec<CudaSlice<u8>>,
    device: String,
    arch: mmada_codegen::SmArch,
    resident: HashSet<String>,
    transfers: Transfers,
}

/// Above this, a kernel's dynamic shared memory needs its limit raised first.
const DEFAULT_DYNAMIC_SHARED: u32 = 48 * 1024;

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
        // The newest PTX that runs on the device (portable PTX is forward compatible; an
        // architecture-specific `sm_90a` runs only on its own capability, and is preferred
        // there).
        let arch = exe
            .artifact
            .manifest
            .gpu_archs
            .iter()
            .copied()
            .filter(|a| a.runs_on(cc))
            .max()
            .ok_or_else(|| {
                RuntimeError::Missing(format!(
                    "the artifact has PTX for {}, none runs on {device} (sm_{cc})",
                    exe.artifact
                        .manifest
                        .gpu_archs
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        let ptx = exe
            .artifact
            .section_str(&format!("ptx.{arch}"))?
            .to_string();
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .map_err(cuda_err)?;
        let mut functions = Vec::with_capacity(exe.program.entries.len());
        for e in &exe.program.entries {
            let mut fs = Vec::with_capacity(e.launches.len());
            for l in &e.launches {
                let f = module.load_function(&l.gpu.kernel).map_err(cuda_err)?;
                if l.gpu.shared_bytes > DEFAULT_DYNAMIC_SHARED {
                    f.set_attribute(
                        cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        l.gpu.shared_bytes as i32,
                    )
                    .map_err(cuda_err)?;
                }
                fs.push(f);
            }
            functions.push(fs);
        }
        let stream = ctx.default_stream();
        let mut buffers = Vec::with_capacity(exe.program.buffers.len());
        for b in &exe.program.buffers {
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
            transfers: Transfers::default(),
        })
    }

    /// Device name and the architecture of the PTX in use.
    pub fn device(&self) -> (String, mmada_codegen::SmArch) {
        (self.device.clone(), self.arch)
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) -> Result<(), RuntimeError> {
        self.stream.synchronize().map_err(cuda_err)
    }

    /// Queues every launch of entry `entry` (no copies, no synchronisation): for timing.
    pub fn launch_entry(&mut self, entry: usize) -> Result<(), RuntimeError> {
        let e = &self.exe.program.entries[entry];
        for (l, f) in e.launches.iter().zip(&self.functions[entry]) {
            let cfg = LaunchConfig {
                grid_dim: (l.gpu.grid as u32, 1, 1),
                block_dim: (l.gpu.block, 1, 1),
                shared_mem_bytes: l.gpu.shared_bytes,
            };
            let mut b = self.stream.launch_builder(f);
            for &a in &l.args {
                b.arg(&self.buffers[a]);
            }
            // SAFETY: argument count and types match the kernel (one pointer per parameter);
            // the program was validated: every parameter fits its buffer.
            unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        }
        Ok(())
    }

    fn download(&mut self, b: &mmada_codegen::plan::Binding) -> Result<Tensor, RuntimeError> {
        let mut bytes = self
            .stream
            .clone_dtoh(&self.buffers[b.buffer])
            .map_err(cuda_err)?;
        bytes.truncate(b.shape.numel() * b.dtype.size_bytes());
        self.transfers.to_host += 1;
        self.transfers.bytes_to_host += bytes.len() as u64;
        Ok(Tensor::from_le_bytes(b.dtype, b.shape.clone(), &bytes)?)
    }
}

impl Executor for CudaExecutor {
    fn target(&self) -> &'static str {
        "cuda"
    }

    fn executable(&self) -> &Executable {
        &self.exe
    }

    fn run_entry(
        &mut self,
        entry: &str,
        inputs: &IndexMap<String, Tensor>,
    ) -> Result<(), RuntimeError> {
        let ei = self.exe.entry_index(entry)?;
        let bufs = self
            .exe
            .check_inputs(&self.exe.program.entries[ei], inputs, &self.resident)?;
        for ((name, t), b) in inputs.iter().zip(bufs) {
            self.stream
                .memcpy_htod(&t.to_le_bytes(), &mut self.buffers[b])
                .map_err(cuda_err)?;
            self.transfers.to_device += 1;
            self.resident.insert(name.clone());
        }
        self.launch_entry(ei)?;
        let updates: Vec<(usize, usize)> = self.exe.program.entries[ei]
            .updates
            .iter()
            .filter(|u| u.from != u.to)
            .map(|u| (u.from, u.to))
            .collect();
        for (from, to) in updates {
            // Two distinct buffers of one size (validated).
            let src = std::mem::replace(
                &mut self.buffers[from],
                self.stream.null().map_err(cuda_err)?,
            );
            let res = self.stream.memcpy_dtod(&src, &mut self.buffers[to]);
            self.buffers[from] = src;
            res.map_err(cuda_err)?;
        }
        Ok(())
    }

    fn read_output(&mut self, entry: &str, name: &str) -> Result<Tensor, RuntimeError> {
        let e = self.exe.entry(entry)?;
        let b = self.exe.output_binding(e, name)?.clone();
        self.download(&b)
    }

    fn set_input(&mut self, name: &str, t: &Tensor) -> Result<(), RuntimeError> {
        let bufs = self.exe.input_buffers(name, t)?;
        let bytes = t.to_le_bytes();
        for b in bufs {
            self.stream
                .memcpy_htod(&bytes, &mut self.buffers[b])
                .map_err(cuda_err)?;
        }
        self.transfers.to_device += 1;
        self.resident.insert(name.to_string());
        Ok(())
    }

    fn get_input(&mut self, name: &str) -> Result<Tensor, RuntimeError> {
        let b = self.exe.input_binding(name)?.clone();
        if b.role != Role::Data {
            self.transfers.resident_to_host += 1;
        }
        self.download(&b)
    }

    fn transfers(&self) -> Transfers {
        self.transfers
    }
}
