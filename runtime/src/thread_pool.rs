//! The CPU executor's threads: one process-wide pool of workers that spin between launches.
//!
//! A launch on the host is short (a 256×256×256 product takes 0.15 ms on two cores), so the
//! time a sleeping thread needs to wake up (tens of microseconds through the kernel) is a large
//! part of it. The workers here therefore busy-wait for the next job for a short while
//! ([`SPIN`]) after each one, and only then park; a run of back-to-back launches never sleeps.
//!
//! Each thread owns a contiguous share of every job's tasks (the caller the first), so
//! consecutive kernels over the same tensor hand each core the part it wrote before; the
//! others take what is left once theirs is done. On the build machine this cut the bench-tiny
//! forward in its slow mode (stretches in which memory-bound kernels run 2–3× slower) from
//! 19.7 to 18.3 ms; in its usual mode nothing changed (14.6 ms) — 18 interleaved runs each,
//! against tasks taken in order by whichever thread was free.
//!
//! One caller at a time: the pool is shared by every executor of the process, and a caller
//! that finds it busy (another thread is running a job, e.g. tests in parallel) runs its tasks
//! itself instead of waiting, so the machine is never oversubscribed.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, TryLockError};
use std::time::{Duration, Instant};

/// How long an idle worker busy-waits for the next job before parking.
pub const SPIN: Duration = Duration::from_millis(5);

/// A job: tasks `0..tasks`, each run once by some thread.
type Task<'a> = &'a (dyn Fn(usize) + Sync);

struct Shared {
    /// Incremented to publish a job.
    epoch: AtomicU64,
    /// The job of the current epoch: a pointer to the caller's `Task` (valid until every
    /// worker has checked out of the epoch, which the caller waits for).
    job: AtomicPtr<()>,
    tasks: AtomicUsize,
    /// Next task of each thread's range (thread 0 is the caller): the tasks are cut into one
    /// contiguous range per thread, which that thread runs first and the others then share.
    cursors: Vec<AtomicUsize>,
    /// Workers that have not finished the current epoch yet.
    pending: AtomicUsize,
    /// Set when a task panicked on a worker.
    panicked: AtomicBool,
    shutdown: AtomicBool,
    /// Parked workers wait here.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

/// A fixed set of worker threads plus the calling thread.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: usize,
    /// Held by the caller of a job: one job at a time.
    busy: Mutex<()>,
}

impl ThreadPool {
    /// A pool whose jobs run on `threads` threads: the caller and `threads - 1` workers.
    pub fn new(threads: usize) -> ThreadPool {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            tasks: AtomicUsize::new(0),
            cursors: (0..threads.max(1)).map(|_| AtomicUsize::new(0)).collect(),
            pending: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut workers = 0;
        for i in 1..threads.max(1) {
            let s = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("mmada-cpu-{i}"))
                .spawn(move || worker(&s, i));
            // A thread that cannot be started only means fewer threads.
            if spawned.is_ok() {
                workers += 1;
            }
        }
        ThreadPool {
            shared,
            workers,
            busy: Mutex::new(()),
        }
    }

    /// The process-wide pool: one thread per available core (`MMADA_THREADS` overrides).
    pub fn global() -> &'static ThreadPool {
        static POOL: OnceLock<ThreadPool> = OnceLock::new();
        POOL.get_or_init(|| ThreadPool::new(default_threads()))
    }

    /// Threads a job can use (workers and the caller).
    pub fn threads(&self) -> usize {
        self.workers + 1
    }

    /// Runs `f(0)`, …, `f(tasks - 1)`, each once, spread over the pool, and returns when all
    /// are done. Thread `k` of `T` first runs the tasks `k·n/T .. (k+1)·n/T` in order, then
    /// helps with what is left of the others' ranges: consecutive launches over the same data
    /// give each thread the same part of it (it stays in that core's cache), and a thread
    /// that falls behind is still helped.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if tasks == 0 {
            return;
        }
        let guard = match self.busy.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        if tasks == 1 || self.workers == 0 || guard.is_none() {
            (0..tasks).for_each(f);
            return;
        }
        let s = &*self.shared;
        let task: Task = f;
        s.job
            .store(&task as *const Task as *mut (), Ordering::Relaxed);
        s.tasks.store(tasks, Ordering::Relaxed);
        let t = s.cursors.len();
        for (k, c) in s.cursors.iter().enumerate() {
            c.store(k * tasks / t, Ordering::Relaxed);
        }
        s.pending.store(self.workers, Ordering::Relaxed);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|p| p.into_inner());
            s.wake.notify_all();
        }
        // The caller works too; a panic here must still wait for the workers, which hold a
        // pointer to `task`.
        let mine = catch_unwind(AssertUnwindSafe(|| take_tasks(s, task, 0)));
        while s.pending.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
        }
        drop(guard);
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::AcqRel) {
            panic!("a task of the CPU thread pool panicked on a worker thread");
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        let _g = self.shared.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.shared.wake.notify_all();
    }
}

fn default_threads() -> usize {
    std::env::var("MMADA_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Runs tasks as thread `me`: its own range first, then the other ranges in turn.
fn take_tasks(s: &Shared, f: Task, me: usize) {
    let tasks = s.tasks.load(Ordering::Relaxed);
    let t = s.cursors.len();
    for k in (0..t).map(|d| (me + d) % t) {
        let end = (k + 1) * tasks / t;
        loop {
            let i = s.cursors[k].fetch_add(1, Ordering::Relaxed);
            if i >= end {
                break;
            }
            f(i);
        }
    }
}

fn worker(s: &Shared, me: usize) {
    // Epoch 0 is the pool's creation: a job published before this thread first runs must
    // still find it.
    let mut seen = 0;
    loop {
        // Busy-wait for the next epoch, then park.
        let start = Instant::now();
        let mut spins = 0u32;
        let epoch = loop {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                break e;
            }
            if s.shutdown.load(Ordering::Relaxed) {
                return;
            }
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) && start.elapsed() > SPIN {
                s.sleepers.fetch_add(1, Ordering::SeqCst);
                let mut g = s.lock.lock().unwrap_or_else(|p| p.into_inner());
                while s.epoch.load(Ordering::SeqCst) == seen && !s.shutdown.load(Ordering::SeqCst) {
                    g = s.wake.wait(g).unwrap_or_else(|p| p.into_inner());
                }
                drop(g);
                s.sleepers.fetch_sub(1, Ordering::SeqCst);
            }
        };
        seen = epoch;
        // SAFETY: the caller published a pointer to its `Task` before bumping the epoch and
        // keeps it alive until `pending` reaches zero, which needs this worker's decrement.
        let f: Task = unsafe { *(s.job.load(Ordering::Relaxed) as *const Task) };
        if catch_unwind(AssertUnwindSafe(|| take_tasks(s, f, me))).is_err() {
            s.panicked.store(true, Ordering::Release);
        }
        s.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        let pool = ThreadPool::new(3);
        for tasks in [0usize, 1, 2, 5, 64, 1000] {
            let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            pool.run(tasks, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn parked_workers_wake_up() {
        let pool = ThreadPool::new(2);
        let sum = AtomicUsize::new(0);
        pool.run(8, &|i| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        std::thread::sleep(SPIN * 3);
        pool.run(8, &|i| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 56);
    }

    #[test]
    fn concurrent_callers_run_inline() {
        let pool = Arc::new(ThreadPool::new(2));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let p = pool.clone();
                std::thread::spawn(move || {
                    let sum = AtomicUsize::new(0);
                    for _ in 0..200 {
                        p.run(16, &|i| {
                            sum.fetch_add(i, Ordering::Relaxed);
                        });
                    }
                    sum.load(Ordering::Relaxed)
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().ok(), Some(200 * 120));
        }
    }

    #[test]
    fn a_panicking_task_reaches_the_caller() {
        let pool = ThreadPool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(64, &|i| {
                if i == 40 {
                    panic!("task 40");
                }
            })
        }));
        assert!(r.is_err());
        // The pool still works afterwards.
        let n = AtomicUsize::new(0);
        pool.run(10, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 10);
    }
}
