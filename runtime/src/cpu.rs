//! The CPU executor: loads the artifact's host library and runs each launch's blocks, split
//! across threads (blocks of one launch are independent by construction). Each launch is
//! dispatched on its host [`Dispatch`]: a generated kernel over its own grid, or a library call.

use crate::cpu_attention::attention_f32;
use crate::cpu_attention_grad::{attention_grad_f32, GradBuffers};
use crate::cpu_conv::conv_f32;
use crate::cpu_gemm::gemm_f32_cut;
use crate::executable::{Executable, Executor, Transfers};
use crate::thread_pool::ThreadPool;
use crate::RuntimeError;
use indexmap::IndexMap;
use mmada_codegen::kernels::attention::AttentionShape;
use mmada_codegen::kernels::conv::ConvShape;
use mmada_codegen::kernels::matmul::MatMulShape;
use mmada_codegen::plan::{BufferKind, Dispatch, LibraryCall};
use mmada_ir::{Role, Tensor};
use std::collections::HashSet;

type KernelFn = unsafe extern "C" fn(*const *mut u8, i64, i64);

/// Every buffer of an executor in one zeroed allocation, aligned to 2 MiB and advised as
/// transparent huge pages (Linux) before it is first touched: the weights and the few
/// intermediates a run cycles through sit in a handful of 2 MiB pages rather than thousands of
/// 4 KiB ones. Measured on bench-tiny: the single arena 14.3 → 14.1 ms per forward (18.3 →
/// 17.8 ms in the build machine's slow mode; 8 interleaved runs each, the advice not yet in
/// effect then); the huge pages themselves no further change (5 more rounds).
struct Arena {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

/// Alignment of each buffer in the arena (a cache line).
const BUFFER_ALIGN: usize = 64;
const HUGE_PAGE: usize = 2 << 20;

impl Arena {
    /// An arena holding buffers of the given byte sizes; returns it with their offsets.
    fn new(sizes: &[usize]) -> Result<(Arena, Vec<usize>), RuntimeError> {
        let mut offsets = Vec::with_capacity(sizes.len());
        let mut end = 0usize;
        let too_big =
            || RuntimeError::Load("the plan's host buffers exceed the address space".into());
        for &s in sizes {
            offsets.push(end);
            end = end
                .checked_add(s.max(1))
                .and_then(|e| e.checked_next_multiple_of(BUFFER_ALIGN))
                .ok_or_else(too_big)?;
        }
        if let Some(phys) = physical_memory() {
            if end as u64 > phys {
                return Err(RuntimeError::Load(format!(
                    "the plan needs {:.1} GiB of host buffers, this machine has {:.1} GiB",
                    end as f64 / (1u64 << 30) as f64,
                    phys as f64 / (1u64 << 30) as f64
                )));
            }
        }
        let layout = std::alloc::Layout::from_size_align(end.max(1), HUGE_PAGE)
            .map_err(|e| RuntimeError::Load(format!("host buffers of {end} bytes: {e}")))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            return Err(RuntimeError::Load(format!(
                "cannot allocate {end} bytes of host buffers"
            )));
        }
        // Advised before the first touch, so that zeroing faults the memory in as huge pages
        // (advice after the pages exist only lets a background daemon merge them later).
        #[cfg(target_os = "linux")]
        // SAFETY: the range is this allocation; the advice only changes its page size.
        unsafe {
            libc::madvise(ptr as *mut libc::c_void, layout.size(), libc::MADV_HUGEPAGE);
        }
        // SAFETY: the allocation holds `layout.size()` bytes.
        unsafe { std::ptr::write_bytes(ptr, 0, layout.size()) };
        Ok((Arena { ptr, layout }, offsets))
    }
}

/// Bytes of physical memory, where the OS says.
fn physical_memory() -> Option<u64> {
    #[cfg(unix)]
    {
        // SAFETY: sysconf only reads system configuration.
        let (pages, size) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if pages > 0 && size > 0 {
            return (pages as u64).checked_mul(size as u64);
        }
    }
    None
}

// SAFETY: the arena owns its allocation exclusively; moving it to another thread moves that
// ownership (as a Vec would), and a shared reference gives no way to write through it.
unsafe impl Send for Arena {}
unsafe impl Sync for Arena {}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: allocated in `Arena::new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// One buffer: a range of the executor's arena (which outlives it), 64-byte aligned.
struct HostBuffer {
    ptr: *mut u8,
    bytes: usize,
}

// SAFETY: a buffer is a range of an arena owned by the same executor, moved along with it.
// Through `&HostBuffer` it is only read (`as_bytes`) or its address taken; the executor writes
// through those addresses only while running, which takes `&mut CpuExecutor`.
unsafe impl Send for HostBuffer {}
unsafe impl Sync for HostBuffer {}

impl HostBuffer {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: the range lies inside the arena, which outlives the buffer.
        unsafe { std::slice::from_raw_parts(self.ptr, self.bytes) }
    }
    fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above; `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.bytes) }
    }
}

/// Pointer table shared by the threads of one launch.
struct Args(Vec<*mut u8>);
// SAFETY: the pointers address buffers that outlive the launch; blocks write disjoint elements.
unsafe impl Send for Args {}
unsafe impl Sync for Args {}

/// How the host computes one launch, resolved when the executor is made.
#[derive(Clone, Copy)]
enum HostLaunch {
    /// A kernel of the host library over `grid` blocks.
    Kernel { entry: KernelFn, grid: u64 },
    /// f32 gemm.
    Gemm(MatMulShape),
    /// f32 stride-1 convolution.
    Conv(ConvShape),
    /// f32 fused attention.
    Attention(AttentionShape),
    /// A piece of f32 attention's backward.
    AttentionGrad(AttentionShape, mmada_ir::AttentionPart),
}

/// Runs artifacts on the host.
pub struct CpuExecutor {
    exe: Executable,
    _dir: tempfile::TempDir,
    /// Keeps the host library loaded while `code` points into it.
    _lib: libloading::Library,
    /// Per entry, per launch.
    code: Vec<Vec<HostLaunch>>,
    buffers: Vec<HostBuffer>,
    /// Storage of `buffers` (declared after them: dropped last).
    _arena: Arena,
    resident: HashSet<String>,
    profile: Option<Vec<LaunchTime>>,
    transfers: Transfers,
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
        let mut code = Vec::with_capacity(exe.program.entries.len());
        for e in &exe.program.entries {
            let mut launches = Vec::with_capacity(e.launches.len());
            for l in &e.launches {
                launches.push(match &l.host {
                    Dispatch::Call(LibraryCall::GemmF32(s)) => HostLaunch::Gemm(*s),
                    Dispatch::Call(LibraryCall::ConvF32(s)) => HostLaunch::Conv(*s),
                    Dispatch::Call(LibraryCall::AttentionF32(s)) => HostLaunch::Attention(*s),
                    Dispatch::Call(LibraryCall::AttentionGradF32 { shape: s, part }) => {
                        HostLaunch::AttentionGrad(*s, *part)
                    }
                    Dispatch::Kernel(k) => {
                        let sym = format!("{}__entry", k.kernel);
                        // SAFETY: every kernel entry has the signature `KernelFn`.
                        let f: libloading::Symbol<KernelFn> = unsafe { lib.get(sym.as_bytes()) }
                            .map_err(|e| RuntimeError::Load(format!("{sym}: {e}")))?;
                        HostLaunch::Kernel {
                            entry: *f,
                            grid: k.grid,
                        }
                    }
                });
            }
            code.push(launches);
        }
        let sizes: Vec<usize> = exe
            .program
            .buffers
            .iter()
            .enumerate()
            .map(|(i, b)| {
                usize::try_from(b.len)
                    .ok()
                    .and_then(|n| n.checked_mul(b.dtype.size_bytes()))
                    .ok_or_else(|| {
                        RuntimeError::Load(format!("artifact plan: buffer {i} is too large"))
                    })
            })
            .collect::<Result<_, _>>()?;
        let (arena, offsets) = Arena::new(&sizes)?;
        let mut buffers: Vec<HostBuffer> = sizes
            .iter()
            .zip(&offsets)
            .map(|(&bytes, &at)| HostBuffer {
                // SAFETY: `at + bytes` is within the arena (Arena::new laid them out).
                ptr: unsafe { arena.ptr.add(at) },
                bytes,
            })
            .collect();
        for (i, b) in exe.program.buffers.iter().enumerate() {
            if let BufferKind::Constant { offset, bytes } = &b.kind {
                let src = &exe.constants[*offset as usize..(*offset + *bytes) as usize];
                buffers[i].as_bytes_mut().copy_from_slice(src);
            }
        }
        Ok(CpuExecutor {
            exe,
            _dir: dir,
            _lib: lib,
            code,
            buffers,
            _arena: arena,
            resident: HashSet::new(),
            profile: None,
            transfers: Transfers::default(),
        })
    }
}

/// Copies a buffer out as a tensor. f32 buffers (logits: 4 MB for one bench-tiny sequence,
/// 0.36 ms through the byte-wise conversion) are copied as words, in parallel.
fn read_tensor(
    dtype: mmada_ir::DType,
    shape: &mmada_ir::Shape,
    buf: &HostBuffer,
) -> Result<Tensor, RuntimeError> {
    let n = shape.numel();
    if dtype != mmada_ir::DType::F32 || cfg!(target_endian = "big") || buf.bytes != n * 4 {
        return Ok(Tensor::from_le_bytes(dtype, shape.clone(), buf.as_bytes())?);
    }
    let mut v = vec![0f32; n];
    const PART: usize = 1 << 16;
    let (src, dst) = (buf.as_ptr() as usize, v.as_mut_ptr() as usize);
    ThreadPool::global().run(n.div_ceil(PART), &|p| {
        let (lo, hi) = (p * PART, ((p + 1) * PART).min(n));
        // SAFETY: the buffer holds `n` f32 values (checked above, 8-byte aligned storage);
        // parts copy disjoint ranges into the distinct vector.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (src as *const f32).add(lo),
                (dst as *mut f32).add(lo),
                hi - lo,
            )
        };
    });
    Ok(Tensor::from_f32(shape.clone(), v)?)
}

/// Time spent in one launch of a profiled run.
#[derive(Clone, Debug)]
pub struct LaunchTime {
    /// Kernel symbol.
    pub kernel: String,
    /// The graph node it computes.
    pub node: String,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl CpuExecutor {
    fn launch(&self, entry: usize, i: usize) {
        let l = &self.exe.program.entries[entry].launches[i];
        let p = |j: usize| self.buffers[l.args[j]].as_ptr();
        let (entry, grid) = match self.code[entry][i] {
            HostLaunch::Gemm(s) => {
                // SAFETY: the program was validated: A, B and C are f32 buffers that hold
                // this shape, and C is distinct from A and B.
                let (a, b, c) = (p(0) as *mut f32, p(1) as *mut f32, p(2) as *mut f32);
                unsafe { gemm_f32_cut(&s, a, b, c, l.host_split) };
                return;
            }
            HostLaunch::Conv(s) => {
                // SAFETY: the program was validated: x, w and y are f32 buffers that hold this
                // shape, the shape is consistent, and y is distinct from x and w.
                unsafe { conv_f32(&s, p(0) as *mut f32, p(1) as *mut f32, p(2) as *mut f32) };
                return;
            }
            HostLaunch::Attention(s) => {
                // SAFETY: the program was validated: q, k, v and out are f32 buffers (the
                // mask a bool buffer) that hold this shape, and out is distinct from the rest.
                let out = p(l.args.len() - 1) as *mut f32;
                let mask = s.masked.then(|| p(3) as *const u8);
                unsafe { attention_f32(&s, p(0) as _, p(1) as _, p(2) as _, mask, out) };
                return;
            }
            HostLaunch::AttentionGrad(s, part) => {
                // SAFETY: the program was validated: every operand is an f32 buffer (the mask
                // a bool buffer) that holds this shape, and out is distinct from the rest.
                let stats = part == mmada_ir::AttentionPart::Stats;
                let n = l.args.len();
                let (f, none) = (|i: usize| p(i) as *const f32, std::ptr::null::<f32>());
                let bufs = GradBuffers {
                    q: f(0),
                    k: f(1),
                    v: if stats { none } else { f(2) },
                    d_o: if stats { none } else { f(3) },
                    stats: if stats { none } else { f(4) },
                    delta: if stats { none } else { f(5) },
                    mask: s.masked.then(|| p(n - 2) as *const u8),
                    out: p(n - 1) as *mut f32,
                };
                unsafe { attention_grad_f32(&s, part, bufs) };
                return;
            }
            HostLaunch::Kernel { entry, grid } => (entry, grid as i64),
        };
        let args = Args(l.args.iter().map(|&a| self.buffers[a].as_ptr()).collect());
        if l.host_split == 0 {
            if grid > 0 {
                // SAFETY: as below, with the whole grid in one chunk on this thread.
                unsafe { entry(args.0.as_ptr(), 0, grid) };
            }
            return;
        }
        let pool = ThreadPool::global();
        let chunks = (pool.threads() as i64 * l.host_split as i64)
            .min(grid)
            .max(1);
        let per = (grid + chunks - 1) / chunks;
        pool.run(chunks as usize, &|c| {
            let lo = c as i64 * per;
            let hi = ((c as i64 + 1) * per).min(grid);
            if lo < hi {
                let a = &args;
                // SAFETY: the argument table matches the kernel's parameters and every
                // parameter fits its buffer (checked when the program was validated);
                // different chunks run disjoint blocks of the grid.
                unsafe { entry(a.0.as_ptr(), lo, hi) };
            }
        });
    }

    /// Runs launch `i` of entry `entry` alone, on the buffers as they are (for the tuner's
    /// correctness gate, which feeds two executors the same inputs launch by launch).
    pub fn run_launch(&mut self, entry: &str, i: usize) -> Result<(), RuntimeError> {
        let ei = self.exe.entry_index(entry)?;
        let n = self.exe.program.entries[ei].launches.len();
        if i >= n {
            return Err(RuntimeError::Load(format!(
                "entry {entry} has {n} launches, no launch {i}"
            )));
        }
        self.launch(ei, i);
        Ok(())
    }

    /// The bytes of buffer `b` of the program.
    pub fn buffer_bytes(&self, b: usize) -> Option<&[u8]> {
        self.buffers.get(b).map(HostBuffer::as_bytes)
    }

    /// Overwrites buffer `b` with `bytes` (of its exact length).
    pub fn set_buffer_bytes(&mut self, b: usize, bytes: &[u8]) -> Result<(), RuntimeError> {
        match self.buffers.get_mut(b) {
            Some(buf) if buf.bytes == bytes.len() => {
                buf.as_bytes_mut().copy_from_slice(bytes);
                Ok(())
            }
            Some(buf) => Err(RuntimeError::Load(format!(
                "buffer {b} holds {} bytes, not {}",
                buf.bytes,
                bytes.len()
            ))),
            None => Err(RuntimeError::Load(format!("no buffer {b}"))),
        }
    }

    /// Runs entry `entry` like [`Executor::run_entry`] and returns the time of every launch.
    pub fn run_profiled(
        &mut self,
        entry: &str,
        inputs: &IndexMap<String, Tensor>,
    ) -> Result<Vec<LaunchTime>, RuntimeError> {
        self.profile = Some(Vec::new());
        let out = self.run_entry(entry, inputs);
        let times = self.profile.take().unwrap_or_default();
        out.map(|()| times)
    }
}

impl Executor for CpuExecutor {
    fn target(&self) -> &'static str {
        "cpu"
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
            self.buffers[b]
                .as_bytes_mut()
                .copy_from_slice(&t.to_le_bytes());
            self.transfers.to_device += 1;
            self.resident.insert(name.clone());
        }
        for i in 0..self.exe.program.entries[ei].launches.len() {
            let t = std::time::Instant::now();
            self.launch(ei, i);
            if let Some(p) = self.profile.as_mut() {
                let l = &self.exe.program.entries[ei].launches[i];
                p.push(LaunchTime {
                    kernel: l.host.label(),
                    node: l.node.clone(),
                    seconds: t.elapsed().as_secs_f64(),
                });
            }
        }
        let e = &self.exe.program.entries[ei];
        for u in e.updates.iter().filter(|u| u.from != u.to) {
            // Distinct buffers of one size (validated): a copy inside the executor's memory.
            let (src, dst) = (self.buffers[u.from].as_ptr(), self.buffers[u.to].as_ptr());
            // SAFETY: both ranges lie in the arena, do not overlap (distinct buffers) and
            // have the same length.
            unsafe { std::ptr::copy_nonoverlapping(src, dst, self.buffers[u.to].bytes) };
        }
        Ok(())
    }

    fn read_output(&mut self, entry: &str, name: &str) -> Result<Tensor, RuntimeError> {
        let e = self.exe.entry(entry)?;
        let b = self.exe.output_binding(e, name)?;
        let t = read_tensor(b.dtype, &b.shape, &self.buffers[b.buffer])?;
        self.transfers.to_host += 1;
        self.transfers.bytes_to_host += self.buffers[b.buffer].bytes as u64;
        Ok(t)
    }

    fn set_input(&mut self, name: &str, t: &Tensor) -> Result<(), RuntimeError> {
        let bufs = self.exe.input_buffers(name, t)?;
        let bytes = t.to_le_bytes();
        for b in bufs {
            self.buffers[b].as_bytes_mut().copy_from_slice(&bytes);
        }
        self.transfers.to_device += 1;
        self.resident.insert(name.to_string());
        Ok(())
    }

    fn get_input(&mut self, name: &str) -> Result<Tensor, RuntimeError> {
        let b = self.exe.input_binding(name)?;
        let t = Tensor::from_le_bytes(b.dtype, b.shape.clone(), self.buffers[b.buffer].as_bytes())?;
        self.transfers.to_host += 1;
        self.transfers.bytes_to_host += self.buffers[b.buffer].bytes as u64;
        if b.role != Role::Data {
            self.transfers.resident_to_host += 1;
        }
        Ok(t)
    }

    fn transfers(&self) -> Transfers {
        self.transfers
    }
}

#[cfg(test)]
mod tests {
    /// The executor can be handed to and shared with other threads, as before its buffers
    /// moved into an arena.
    #[test]
    fn executor_is_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<super::CpuExecutor>();
    }
}
