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
        for i in 0..self.exe.program.entries[entry].launches.len() {
            self.launch_one(entry, i)?;
        }
        Ok(())
    }

    /// Queues launch `i` of entry `entry`.
    fn launch_one(&self, entry: usize, i: usize) -> Result<(), RuntimeError> {
        let l = &self.exe.program.entries[entry].launches[i];
        let f = &self.functions[entry][i];
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
        Ok(())
    }

    /// Copies an entry's inputs to their buffers.
    fn upload(&mut self, ei: usize, inputs: &IndexMap<String, Tensor>) -> Result<(), RuntimeError> {
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
        Ok(())
    }

    /// Applies an entry's out-of-place updates (device copies).
    fn apply_updates(&mut self, ei: usize) -> Result<(), RuntimeError> {
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

    /// Runs entry `entry` like [`Executor::run_entry`] with a pair of device events around
    /// every launch; returns each launch's seconds (for the tuner).
    pub fn run_entry_timed(
        &mut self,
        entry: &str,
        inputs: &IndexMap<String, Tensor>,
    ) -> Result<Vec<f64>, RuntimeError> {
        let ei = self.exe.entry_index(entry)?;
        self.upload(ei, inputs)?;
        let timing = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let mut events = Vec::new();
        for i in 0..self.exe.program.entries[ei].launches.len() {
            let start = self.stream.record_event(timing).map_err(cuda_err)?;
            self.launch_one(ei, i)?;
            let end = self.stream.record_event(timing).map_err(cuda_err)?;
            events.push((start, end));
        }
        self.synchronize()?;
        let times = events
            .iter()
            .map(|(a, b)| a.elapsed_ms(b).map(|ms| ms as f64 * 1e-3).map_err(cuda_err))
            .collect::<Result<Vec<f64>, RuntimeError>>()?;
        self.apply_updates(ei)?;
        Ok(times)
    }

    /// Runs launch `i` of entry `entry` alone on the buffers as they are, and waits for it (for
    /// the tuner's correctness gate).
    pub fn run_launch(&mut self, entry: &str, i: usize) -> Result<(), RuntimeError> {
        let ei = self.exe.entry_index(entry)?;
        let n = self.exe.program.entries[ei].launches.len();
        if i >= n {
            return Err(RuntimeError::Missing(format!(
                "entry {entry} has {n} launches, no launch {i}"
            )));
        }
        self.launch_one(ei, i)?;
        self.synchronize()
    }

    /// Bytes of program buffer `b` (its allocation may be larger: at least one byte).
    fn buffer_len(&self, b: usize) -> Result<usize, RuntimeError> {
        self.exe
            .program
            .buffers
            .get(b)
            .map(|d| d.len as usize * d.dtype.size_bytes())
            .ok_or_else(|| RuntimeError::Missing(format!("no buffer {b}")))
    }

    /// The bytes of buffer `b` of the program (a device-to-host copy).
    pub fn buffer_bytes(&mut self, b: usize) -> Result<Vec<u8>, RuntimeError> {
        let n = self.buffer_len(b)?;
        let mut bytes = self.stream.clone_dtoh(&self.buffers[b]).map_err(cuda_err)?;
        bytes.truncate(n);
        Ok(bytes)
    }

    /// Overwrites buffer `b` with `bytes` (of its exact length).
    pub fn set_buffer_bytes(&mut self, b: usize, bytes: &[u8]) -> Result<(), RuntimeError> {
        let n = self.buffer_len(b)?;
        if n != bytes.len() {
            return Err(RuntimeError::Missing(format!(
                "buffer {b} holds {n} bytes, not {}",
                bytes.len()
            )));
        }
        if n == 0 {
            return Ok(());
        }
        let mut view = self.buffers[b].slice_mut(0..n);
        self.stream.memcpy_htod(bytes, &mut view).map_err(cuda_err)
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
        self.upload(ei, inputs)?;
        self.launch_entry(ei)?;
        self.apply_updates(ei)
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

/// The name and compute capability (e.g. 90) of device `ordinal`.
pub fn device_info(ordinal: usize) -> Result<(String, u32), RuntimeError> {
    if !cuda_available() {
        return Err(RuntimeError::NoCuda(
            "the CUDA driver library is missing or reports no device".into(),
        ));
    }
    let ctx = CudaContext::new(ordinal).map_err(cuda_err)?;
    let (major, minor) = ctx.compute_capability().map_err(cuda_err)?;
    Ok((ctx.name().map_err(cuda_err)?, (major * 10 + minor) as u32))
}

/// The CUDA driver's version (e.g. 13000 for CUDA 13.0), when the driver library loads.
pub fn driver_version() -> Option<i32> {
    // SAFETY: only tries to dlopen the driver library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return None;
    }
    let mut v: std::ffi::c_int = 0;
    // SAFETY: the library is present; the call writes one int.
    let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    (r == cudarc::driver::sys::CUresult::CUDA_SUCCESS).then_some(v)
}
