//! The measuring loop: `threads` threads started together by a barrier, each running
//! batches of one operation until the coordinator raises a stop flag after a fixed
//! duration; the ops and the time of every thread are added up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use restartable::hooks::{self, Stats};

/// Operations per batch: the stop flag is read once per batch (one relaxed load of a
/// line nobody writes until the end, negligible against 128 operations).
pub const BATCH: u64 = 128;

/// One batch of one implementation: `BATCH` operations on the shared state. Each
/// implementation has its own `#[inline(never)]` batch function so that its loop can
/// be found by name in the disassembly (`objdump -d --disassemble=...`), with the
/// operation inlined into it as a user's code would have it.
pub type BatchFn<S> = fn(&S);

/// The result of one run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Threads that ran.
    pub threads: usize,
    /// Operations completed by all threads between the barrier and the stop flag.
    pub ops: u64,
    /// From the first thread's start to the last thread's end.
    pub elapsed: Duration,
    /// CPU time the threads spent between their start and end, added up
    /// (`CLOCK_THREAD_CPUTIME_ID`): below `elapsed × threads` when they waited for a
    /// CPU (other processes, more threads than CPUs) or slept (a blocking lock).
    pub cpu_time: Duration,
    /// Sequence outcomes counted by `StatsHooks` containers (zero for the others).
    pub stats: Stats,
}

impl Sample {
    /// Per-thread nanoseconds per operation: elapsed × threads / ops.
    pub fn ns_per_op(&self) -> f64 {
        self.elapsed.as_nanos() as f64 * self.threads as f64 / self.ops.max(1) as f64
    }

    /// Share of the wall time the threads were on a CPU: cpu_time / (elapsed × threads).
    pub fn on_cpu(&self) -> f64 {
        self.cpu_time.as_secs_f64() / (self.elapsed.as_secs_f64() * self.threads as f64).max(1e-12)
    }

    /// Aggregate throughput, millions of operations per second.
    pub fn mops(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-12) / 1e6
    }
}

/// A stop flag on a cache line of its own.
#[repr(align(128))]
struct Stop(AtomicBool);

/// Runs `batch` on `threads` threads for about `duration`.
///
/// Each thread first runs one batch outside the measurement (it registers the thread,
/// touches its slots and warms the caches; the caller's checks count these `BATCH`
/// operations per thread as [`warmup_ops`]), resets its `StatsHooks` counts, then
/// waits at the barrier with the others. The times are each thread's own
/// `Instant`s, so thread creation and joining are not measured.
pub fn run_threads<S: Sync>(
    state: &S,
    threads: usize,
    duration: Duration,
    batch: BatchFn<S>,
) -> Sample {
    let threads = threads.max(1);
    let stop = Stop(AtomicBool::new(false));
    let barrier = Barrier::new(threads + 1);
    let per_thread: Vec<(Instant, Instant, u64, Stats, Duration)> = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    batch(state);
                    hooks::reset_thread_stats();
                    barrier.wait();
                    let start = Instant::now();
                    let cpu_start = thread_cpu_time();
                    let mut ops = 0u64;
                    loop {
                        batch(state);
                        ops += BATCH;
                        if stop.0.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    let end = Instant::now();
                    let cpu = thread_cpu_time().saturating_sub(cpu_start);
                    (start, end, ops, hooks::thread_stats(), cpu)
                })
            })
            .collect();
        barrier.wait();
        thread::sleep(duration);
        stop.0.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let start = per_thread.iter().map(|t| t.0).min().expect("threads >= 1");
    let end = per_thread.iter().map(|t| t.1).max().expect("threads >= 1");
    let mut stats = Stats::default();
    for t in &per_thread {
        stats += t.3;
    }
    Sample {
        threads,
        ops: per_thread.iter().map(|t| t.2).sum(),
        elapsed: end.duration_since(start),
        cpu_time: per_thread.iter().map(|t| t.4).sum(),
        stats,
    }
}

/// This thread's CPU time so far.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The operations each run performs outside the measurement (one batch per thread).
pub fn warmup_ops(threads: usize) -> u64 {
    threads.max(1) as u64 * BATCH
}

/// The CPUs this thread may run on (every possible CPU if the mask cannot be read).
pub fn allowed_cpus() -> Vec<usize> {
    restartable::allowed_cpus().unwrap_or_else(|_| (0..restartable::possible_cpus()).collect())
}

/// Runs `f` once on a thread pinned to each allowed CPU, one after the other (to put
/// initial items in every CPU's slot of a per-CPU container).
pub fn on_each_cpu<F: Fn() + Sync>(f: F) {
    for cpu in allowed_cpus() {
        thread::scope(|s| {
            s.spawn(|| {
                // If it fails the items land on another CPU: harmless.
                let _ = crate::affinity::pin_to(cpu);
                f();
            });
        });
    }
}

/// Median of a non-empty slice (the mean of the middle two for an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn counts_every_operation() {
        let hits = std::sync::atomic::AtomicU64::new(0);
        fn op(h: &std::sync::atomic::AtomicU64) {
            for _ in 0..BATCH {
                h.fetch_add(1, Ordering::Relaxed);
            }
        }
        let s = run_threads(&hits, 2, Duration::from_millis(5), op);
        assert_eq!(s.ops + warmup_ops(2), hits.load(Ordering::Relaxed));
        assert!(s.ns_per_op() > 0.0 && s.mops() > 0.0);
    }
}
