//! `alloc-bench`: `PerCpuAlloc` against `std::alloc::System`, mimalloc,
//! tikv-jemallocator and snmalloc-rs, each called through its `GlobalAlloc` methods,
//! side by side in one run, at 1, nproc and 4 x nproc threads.
//!
//! Workloads (figures are ns per alloc+free pair, aggregate: elapsed x threads /
//! pairs, so lower is better and perfect scaling keeps the figure flat):
//! - `churn`: each thread allocates four objects of mixed small sizes (16-512 bytes)
//!   and frees them, over and over (same-thread alloc+free);
//! - `remote`: a producer pinned to one CPU allocates 64-byte objects and hands them
//!   through a ring to a consumer pinned to another CPU, which frees them (frees on
//!   another CPU); reported at 2 threads. The ring is handed over in batches of 64
//!   slots (8 cache lines), the consumer at least a batch behind the producer, so a
//!   line of the ring crosses between the CPUs once per 8 objects; a thread that
//!   waited 256 spins for the other sleeps on a futex until the other's next batch
//!   wakes it. A no-op allocator (one constant address, no allocation) runs in the
//!   same rounds and its figure, printed under the table, is the handoff's own
//!   cost; also printed there, each thread's CPU per pair outside its waits;
//! - `remote-slot` (a diagnostic, not in the default list): `remote` with the ring
//!   handed over one slot at a time, the consumer spinning with a `swap` on the slot
//!   the producer fills next (the `remote` workload before branch `remote13`);
//! - `larson`: threads replace random entries of a shared table of 4,096 objects of
//!   random sizes (16-1,024 bytes), freeing what they replace, so objects are freed
//!   by other threads than the ones that allocated them;
//! - `threads`: threads created, doing 1,000 churn pairs and exiting, `n` at a time
//!   (figure: µs per thread);
//! - `rss`: peak resident memory (VmHWM) of a child process per allocator running
//!   larson with a long-lived table of 65,536 objects of 16-4,096 bytes at 4 x nproc
//!   threads for 2 x duration;
//! - `churn64` (a diagnostic, not in the default list): one 64-byte object allocated
//!   and freed, over and over: the bare fast path.
//!
//! Each figure is the median of `runs` runs of `duration`; in each round every
//! allocator runs once, in turn, so that a change in the machine's load hits them all.
//!
//! `--processes N` runs each mode's table (default, `--library-owned`, `--no-rseq`) in
//! N separate child processes, the modes in turn, and prints per mode a table of all
//! the processes' rounds (each cell the median `[quartiles]`; the ratio column the
//! median of the per-round ratios, each round's `PerCpuAlloc` over the lowest other
//! allocator in the same round of the same process, and the rounds in which it was
//! the lowest) and a table of each cell's per-process medians (lowest-highest). One
//! process draws one of a process-level state of the host (a whole process whose
//! figures for an allocator run at one level, another process at another); several
//! show its spread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use clap::builder::{PossibleValuesParser, RangedU64ValueParser};
use clap::Parser;

/// The workloads `--workload` accepts.
const WORKLOADS: [&str; 7] = [
    "churn",
    "churn64",
    "remote",
    "remote-slot",
    "larson",
    "threads",
    "rss",
];

#[path = "../../restartable/tests/support/seccomp.rs"]
mod seccomp;

static PERCPU: restartable_alloc::PerCpuAlloc = restartable_alloc::PerCpuAlloc::new();
static MIMALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
static JEMALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
static SNMALLOC: snmalloc_rs::SnMalloc = snmalloc_rs::SnMalloc;

const ALLOCATORS: [&str; 5] = ["PerCpuAlloc", "System", "mimalloc", "jemalloc", "snmalloc"];

/// Runs `$body` with `$a` bound to the allocator named `$name`.
macro_rules! with_alloc {
    ($name:expr, $a:ident => $body:expr) => {
        match $name {
            "PerCpuAlloc" => {
                let $a = &PERCPU;
                $body
            }
            "System" => {
                let $a = &System;
                $body
            }
            "mimalloc" => {
                let $a = &MIMALLOC;
                $body
            }
            "jemalloc" => {
                let $a = &JEMALLOC;
                $body
            }
            "snmalloc" => {
                let $a = &SNMALLOC;
                $body
            }
            other => panic!("unknown allocator {other}"),
        }
    };
}

#[derive(Parser, Debug)]
#[command(about = "PerCpuAlloc against System, mimalloc, jemalloc and snmalloc, in one run")]
struct Args {
    /// Runs per figure (the median is reported).
    #[arg(long, default_value_t = 5, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    runs: usize,
    /// Duration of one run, in milliseconds.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    duration_ms: u64,
    /// Thread counts (default: 1, nproc, 4 x nproc).
    #[arg(long, value_delimiter = ',', value_parser = RangedU64ValueParser::<usize>::new().range(1..=4096))]
    threads: Vec<usize>,
    /// Workloads (churn64 and remote-slot, diagnostics, are not in the default
    /// list). `remote` and `remote-slot` also run a no-op allocator in each round
    /// and print its figure, the handoff's own cost, under the table.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "churn,remote,larson,threads,rss",
        value_parser = PossibleValuesParser::new(WORKLOADS)
    )]
    workload: Vec<String>,
    /// Also run the whole table again with glibc's rseq registration off
    /// (`GLIBC_TUNABLES=glibc.pthread.rseq=0`: the library registers its own areas).
    #[arg(long)]
    library_owned: bool,
    /// Figures from the threads' CPU time (CLOCK_THREAD_CPUTIME_ID) instead of
    /// elapsed time: on a shared, loaded machine this leaves out the time a thread
    /// waited for a CPU (spinning waits still count; `remote`'s threads spin
    /// 256 times, then sleep until the other wakes them).
    #[arg(long)]
    cpu_time: bool,
    /// Also run the whole table again with rseq unavailable to the process
    /// (`GLIBC_TUNABLES=glibc.pthread.rseq=0` and a seccomp filter that makes `rseq`
    /// fail with ENOSYS): PerCpuAlloc's fallback path.
    #[arg(long)]
    no_rseq: bool,
    /// Only these allocators (for profiling one of them with `perf`); the ratio
    /// column needs PerCpuAlloc and at least one other.
    #[arg(long, value_delimiter = ',', value_parser = PossibleValuesParser::new(ALLOCATORS))]
    only: Vec<String>,
    /// Also print every run's figure, unrounded, on a line of its own
    /// (`raw <workload> <threads> <allocator> <value>`), for scripts that compare
    /// runs round by round (`remote` also prints the no-op allocator as
    /// `handoff`, and each thread's CPU per pair outside its waits as workloads
    /// `remote-producer` and `remote-consumer`).
    #[arg(long)]
    raw: bool,
    /// Run each mode's table (the default environment, and with `--library-owned` /
    /// `--no-rseq` those) in this many separate processes, one after the other with
    /// the modes in turn; every cell is then the median over all processes' rounds,
    /// `[quartiles]`, and the ratio column the median of the per-round ratios (each
    /// round's `PerCpuAlloc` over the lowest other in that round of that process),
    /// followed by the rounds in which `PerCpuAlloc` was the lowest. A second table
    /// gives each cell's per-process medians, lowest-highest. With `--raw`, every
    /// round of every process (`raw <workload> <threads> <allocator> <value> <mode>
    /// <process>`, after a line `process <mode> <process> pid <pid>`). A process
    /// that fails, or prints other figures than asked for, ends the run (status 1).
    /// 1 (the default): one process per mode, the table and `--raw` lines as without
    /// this option.
    #[arg(long, default_value_t = 1, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1000))]
    processes: usize,
    /// Internal: measure peak RSS of one allocator in this process.
    #[arg(long, hide = true)]
    rss_child: Option<String>,
    /// Internal (`--processes`' children): print `pid: <pid>` first.
    #[arg(long, hide = true)]
    print_pid: bool,
}

fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn pin(cpu: usize) {
    // SAFETY: a valid CPU set for this thread (an error is ignored: unpinned).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
    }
}

/// Runs `body(thread index, stop flag) -> operations` on `threads` threads for
/// `duration`, after a barrier; returns ns per operation, aggregate.
fn timed<F>(threads: usize, duration: Duration, body: F) -> f64
where
    F: Fn(usize, &AtomicBool) -> u64 + Send + Sync + 'static,
{
    let body = Arc::new(body);
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(threads + 1));
    let ops = Arc::new(AtomicU64::new(0));
    let cpu_ns = Arc::new(AtomicU64::new(0));
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let (body, stop, barrier, ops, cpu_ns) = (
                body.clone(),
                stop.clone(),
                barrier.clone(),
                ops.clone(),
                cpu_ns.clone(),
            );
            std::thread::spawn(move || {
                barrier.wait();
                let c0 = thread_cpu_ns();
                let n = body(t, &stop);
                cpu_ns.fetch_add(thread_cpu_ns() - c0, Ordering::Relaxed);
                ops.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
    let elapsed = start.elapsed();
    let ops = ops.load(Ordering::Relaxed).max(1) as f64;
    if CPU_TIME.load(Ordering::Relaxed) {
        cpu_ns.load(Ordering::Relaxed) as f64 / ops
    } else {
        elapsed.as_nanos() as f64 * threads as f64 / ops
    }
}

/// Report CPU time per operation instead of elapsed time (`--cpu-time`).
static CPU_TIME: AtomicBool = AtomicBool::new(false);

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Calls `a.alloc` out of line, as `#[global_allocator]`'s `__rust_alloc` shim
/// does: a program never gets an allocator's fast path inlined into its own loops,
/// so neither does this benchmark (the C allocators are calls anyway).
///
/// # Safety
/// As for [`GlobalAlloc::alloc`].
#[inline(never)]
unsafe fn shim_alloc<A: GlobalAlloc>(a: &A, l: Layout) -> *mut u8 {
    // SAFETY: forwarded contract.
    unsafe { a.alloc(l) }
}

/// Calls `a.dealloc` out of line (see [`shim_alloc`]).
///
/// # Safety
/// As for [`GlobalAlloc::dealloc`].
#[inline(never)]
unsafe fn shim_dealloc<A: GlobalAlloc>(a: &A, p: *mut u8, l: Layout) {
    // SAFETY: forwarded contract.
    unsafe { a.dealloc(p, l) }
}

const SIZES: [usize; 16] = [
    16, 24, 32, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 448, 512, 40,
];

#[inline(never)]
fn churn_batch<A: GlobalAlloc>(a: &A, round: usize) {
    let mut ps = [std::ptr::null_mut(); 4];
    for i in 0..32 {
        for (k, p) in ps.iter_mut().enumerate() {
            let l = Layout::from_size_align(SIZES[(round + i * 4 + k) & 15], 8).unwrap();
            // SAFETY: a valid, non-zero layout.
            *p = unsafe { shim_alloc(a, l) };
            // SAFETY: a live object of at least 16 bytes.
            unsafe { p.write_volatile(1) };
        }
        for (k, p) in ps.iter().enumerate().rev() {
            let l = Layout::from_size_align(SIZES[(round + i * 4 + k) & 15], 8).unwrap();
            // SAFETY: allocated above with `l`.
            unsafe { shim_dealloc(a, *p, l) };
        }
    }
}

fn churn<A: GlobalAlloc + Sync + 'static>(a: &'static A, threads: usize, d: Duration) -> f64 {
    timed(threads, d, move |_, stop| {
        let mut n = 0;
        let mut round = 0;
        while !stop.load(Ordering::Relaxed) {
            churn_batch(a, round);
            round += 1;
            n += 128;
        }
        n
    })
}

/// One 64-byte object allocated and freed, over and over (a diagnostic: the bare
/// fast path).
fn churn64<A: GlobalAlloc + Sync + 'static>(a: &'static A, threads: usize, d: Duration) -> f64 {
    let l = Layout::from_size_align(64, 8).unwrap();
    timed(threads, d, move |_, stop| {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..128 {
                // SAFETY: a valid layout; freed at once.
                unsafe {
                    let p = shim_alloc(a, l);
                    p.write_volatile(1);
                    shim_dealloc(a, p, l);
                }
            }
            n += 128;
        }
        n
    })
}

/// The no-op "allocator" of the `remote` workload's handoff figure: `alloc` returns
/// one constant, suitably aligned address and `dealloc` does nothing, so a
/// `remote` run with it times the ring and the two threads' loops alone. Not a
/// general allocator: every object it hands out is the same 64 bytes, which is
/// sound only because `remote` never reads or writes an object.
struct Handoff;

/// The 64 bytes [`Handoff`] hands out.
#[repr(align(64))]
struct HandoffObject {
    _bytes: [u8; 64],
}
static mut HANDOFF_OBJECT: HandoffObject = HandoffObject { _bytes: [0; 64] };

// SAFETY: `alloc` returns a non-null, writable address aligned to 64, valid for the
// only layout `remote` asks for (64 bytes, align 8); `remote`, its only user, never
// reads or writes through it, so handing the same address out again before it is
// freed overlaps nothing that is used.
unsafe impl GlobalAlloc for Handoff {
    unsafe fn alloc(&self, _: Layout) -> *mut u8 {
        (&raw mut HANDOFF_OBJECT).cast::<u8>()
    }
    unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
}

/// The no-op allocator run beside the others in `remote` (its figure: the handoff).
static HANDOFF: Handoff = Handoff;

/// Slots of the `remote` ring, a cache line of them.
#[repr(align(64))]
struct Line([AtomicPtr<u8>; 8]);

/// Slots of the `remote` ring.
const RING: usize = 1024;
/// Slots a `remote` thread claims at once: 8 cache lines.
const BATCH: usize = 64;

/// How the `remote` workload hands objects from the producer to the consumer.
#[derive(Clone, Copy, PartialEq)]
enum Ring {
    /// Batches of [`BATCH`] slots (the `remote` workload): the consumer waits, with
    /// plain loads, until the last slot of the next batch is full, then takes the
    /// batch; the producer waits until the last slot of its next batch is empty,
    /// then fills it. So the consumer stays at least a batch behind the producer
    /// and each cache line of the ring crosses between the CPUs once per 8 objects.
    /// A thread that waited long sleeps until the other wakes it ([`Sleeper`]).
    Batched,
    /// One slot at a time (the `remote-slot` diagnostic, the `remote` workload
    /// before branch `remote13`): the consumer spins with a `swap` on the very slot
    /// the producer fills next, so the line crosses for every object and the
    /// spinning swaps take it from the producer.
    Slot,
}

/// Spins of a `remote` thread waiting for the other before it sleeps.
const SPINS: u32 = 256;

/// A `remote` thread's sleeping flag (1 while it sleeps or is about to), a futex
/// word in a cache line of its own.
#[derive(Default)]
#[repr(align(64))]
struct Sleeper(AtomicU32);

impl Sleeper {
    /// Sleeps until [`Sleeper::wake`] (or [`SLEEP_TIMEOUT_NS`]), unless `ready()`
    /// is true once the flag is up (so that a wake between the check and the sleep
    /// is not lost). `ready()` must include the stop: a thread wakes the other
    /// when it leaves the run, and the timeout is a safety net only.
    fn sleep(&self, ready: &impl Fn() -> bool) {
        self.0.store(1, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        if !ready() {
            let ns = SLEEP_TIMEOUT_NS.load(Ordering::Relaxed);
            let timeout = libc::timespec {
                tv_sec: (ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (ns % 1_000_000_000) as libc::c_long,
            };
            let timeout: *const libc::timespec = if ns == 0 { std::ptr::null() } else { &timeout };
            SLEEPS.fetch_add(1, Ordering::Relaxed);
            // SAFETY: a futex wait on our own word, with a valid timeout or none;
            // it returns at once if the word is no longer 1.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.0.as_ptr(),
                    libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                    1u32,
                    timeout,
                )
            };
        }
        self.0.store(0, Ordering::Relaxed);
    }

    /// Wakes the other thread if it sleeps (called by a thread after each batch it
    /// filled or emptied, and when it leaves the run: a fence and a read of a line
    /// nobody writes while both threads are awake).
    ///
    /// No wake is lost: the sleeper stores its flag, then a SeqCst fence, then
    /// re-checks `ready()`; the waker published (the batch's last slot, or the
    /// stop it saw) before its SeqCst fence, then reads the flag. Of the two
    /// fences, whichever comes second in their single total order sees the other
    /// side's write: the waker the flag (and wakes), or the sleeper the slot or
    /// the stop (and does not sleep). The wake counts in [`WAKES`] if `count`.
    fn wake(&self, count: bool) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.0.load(Ordering::Relaxed) != 0 {
            self.0.store(0, Ordering::Relaxed);
            if count {
                WAKES.fetch_add(1, Ordering::Relaxed);
            }
            // SAFETY: a futex wake on a word of ours.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.0.as_ptr(),
                    libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                    1u32,
                )
            };
        }
    }
}

/// How long a sleeping `remote` thread waits for a wake at most, in ns (0: no
/// limit). Not needed for progress (every wait is ended by a wake); the tests set
/// 0 to show it.
static SLEEP_TIMEOUT_NS: AtomicU64 = AtomicU64::new(1_000_000);
/// Futex waits of `remote`'s threads so far (for the tests).
static SLEEPS: AtomicU64 = AtomicU64::new(0);
/// Wakes of a sleeping `remote` thread by the other's batches so far (for the
/// tests; the wakes when a thread leaves the run are not counted).
static WAKES: AtomicU64 = AtomicU64::new(0);

/// Pairs of `remote`: a producer pinned to CPU 0 allocates 64-byte objects and
/// hands them through a ring of [`RING`] slots to a consumer pinned to CPU 1, which
/// frees them; ns per pair, aggregate over the two threads (each thread's time
/// counts, so elapsed x 2 / pairs, or both threads' CPU time / pairs).
///
/// Also returns the producer's and the consumer's CPU time outside their waits for
/// the other (`Ring::Batched` only; `Ring::Slot` counts its spinning as busy), ns
/// per pair: what each thread's own work costs, whichever thread is the slower.
fn remote<A: GlobalAlloc + Sync + 'static>(
    a: &'static A,
    d: Duration,
    ring_kind: Ring,
) -> (f64, [f64; 2]) {
    let ring: Arc<Vec<Line>> = Arc::new(
        (0..RING / 8)
            .map(|_| {
                Line(std::array::from_fn(
                    |_| AtomicPtr::new(std::ptr::null_mut()),
                ))
            })
            .collect(),
    );
    let cpus = nproc();
    let l = Layout::from_size_align(64, 8).unwrap();
    let r2 = ring.clone();
    // `Ring::Batched`: the producer's and the consumer's sleeping flags.
    let sleepers: Arc<[Sleeper; 2]> = Arc::new(Default::default());
    // Thread 0 produces, thread 1 consumes; only the consumer counts pairs.
    let ns = timed(2, d, move |t, stop| {
        pin(t % cpus);
        let c0 = thread_cpu_ns();
        let slot = |i: usize| &r2[(i % RING) / 8].0[i % 8];
        let mut i = 0usize;
        let mut n = 0u64;
        let mut waited = 0u64;
        if t == 0 {
            'produce: while !stop.load(Ordering::Relaxed) {
                match ring_kind {
                    Ring::Batched => {
                        // The consumer empties slots in order: the batch's last
                        // slot empty means all of it is.
                        let empty = || slot(i + BATCH - 1).load(Ordering::Acquire).is_null();
                        if !await_turn(empty, stop, &mut waited, &sleepers[0]) {
                            break 'produce;
                        }
                        for k in i..i + BATCH {
                            slot(k).store(alloc_remote(a, l), Ordering::Release);
                        }
                        i += BATCH;
                        sleepers[1].wake(true);
                        #[cfg(test)]
                        tests::pause_after_batch(stop);
                    }
                    Ring::Slot => {
                        if slot(i).load(Ordering::Acquire).is_null() {
                            slot(i).store(alloc_remote(a, l), Ordering::Release);
                            i += 1;
                        } else {
                            std::hint::spin_loop();
                        }
                    }
                }
            }
            // A consumer asleep waiting for a batch sees the stop once woken.
            sleepers[1].wake(false);
        } else {
            match ring_kind {
                Ring::Batched => 'consume: loop {
                    // The producer fills slots in order, each store a release: the
                    // batch's last slot full means all of it is, and visible.
                    let full = || !slot(i + BATCH - 1).load(Ordering::Acquire).is_null();
                    if !await_turn(full, stop, &mut waited, &sleepers[1]) {
                        break 'consume;
                    }
                    for k in i..i + BATCH {
                        let p = slot(k).load(Ordering::Acquire);
                        slot(k).store(std::ptr::null_mut(), Ordering::Release);
                        // SAFETY: allocated by the producer with `l`, handed over
                        // once (only this thread empties slots).
                        unsafe { shim_dealloc(a, p, l) };
                    }
                    i += BATCH;
                    n += BATCH as u64;
                    sleepers[0].wake(true);
                },
                Ring::Slot => loop {
                    let p = slot(i).swap(std::ptr::null_mut(), Ordering::Acquire);
                    if p.is_null() {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        std::hint::spin_loop();
                        continue;
                    }
                    // SAFETY: allocated by the producer with `l`, handed over once.
                    unsafe { shim_dealloc(a, p, l) };
                    i += 1;
                    n += 1;
                },
            }
            // A producer asleep waiting for room sees the stop once woken.
            sleepers[0].wake(false);
        }
        let busy = (thread_cpu_ns() - c0).saturating_sub(waited);
        REMOTE_BUSY_NS[t].store(busy, Ordering::Relaxed);
        if t == 1 {
            REMOTE_PAIRS.store(n, Ordering::Relaxed);
        }
        n
    });
    // Whatever the producer left after the stop (both threads have been joined).
    for line in ring.iter() {
        for slot in &line.0 {
            let p = slot.swap(std::ptr::null_mut(), Ordering::Acquire);
            if !p.is_null() {
                // SAFETY: allocated by the producer with `l`, never taken.
                unsafe { shim_dealloc(a, p, l) };
            }
        }
    }
    let pairs = REMOTE_PAIRS.load(Ordering::Relaxed).max(1) as f64;
    let busy = REMOTE_BUSY_NS
        .each_ref()
        .map(|b| b.load(Ordering::Relaxed) as f64 / pairs);
    (ns, busy)
}

/// Allocates one of `remote`'s objects; out of memory ends the program (the ring's
/// slots use null for "empty", and a null must never reach a `dealloc`).
fn alloc_remote<A: GlobalAlloc>(a: &A, l: Layout) -> *mut u8 {
    // SAFETY: a valid, non-zero layout.
    let p = unsafe { shim_alloc(a, l) };
    if p.is_null() {
        std::alloc::handle_alloc_error(l);
    }
    p
}

/// The last `remote` run's CPU time outside the waits, in ns, of the producer
/// and the consumer (their CPU time less what [`await_turn`] measured).
static REMOTE_BUSY_NS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// The last `remote` run's pairs.
static REMOTE_PAIRS: AtomicU64 = AtomicU64::new(0);

/// Waits until `ready()` or the stop; false on the stop. If `ready()` is not true
/// at once, adds the thread's CPU time spent waiting to `waited`: the spinning part
/// by the monotonic clock (vDSO, cheap; a spin phase longer than 1 ms was preempted
/// and is left out, its CPU time then counted as busy), the sleeping part (see
/// [`Sleeper`]) by the thread's CPU clock (a system call, paid only once a wait has
/// gone on for a while).
fn await_turn(ready: impl Fn() -> bool, stop: &AtomicBool, waited: &mut u64, me: &Sleeper) -> bool {
    if ready() {
        return true;
    }
    let start = Instant::now();
    // The spinning part, unless it was preempted (longer than 1 ms).
    let spun = || {
        let spun = start.elapsed();
        if spun < Duration::from_millis(1) {
            spun.as_nanos() as u64
        } else {
            0
        }
    };
    let mut spins = 0u32;
    let mut cpu_at_sleep = None;
    let ok = loop {
        if ready() {
            break true;
        }
        if stop.load(Ordering::Relaxed) {
            break false;
        }
        if spins < SPINS {
            spins += 1;
            std::hint::spin_loop();
            continue;
        }
        if cpu_at_sleep.is_none() {
            *waited += spun();
            cpu_at_sleep = Some(thread_cpu_ns());
        }
        me.sleep(&|| ready() || stop.load(Ordering::Relaxed));
    };
    *waited += match cpu_at_sleep {
        Some(c) => thread_cpu_ns() - c,
        None => spun(),
    };
    ok
}

/// Objects of the larson table carry their size in their first word.
fn larson_op<A: GlobalAlloc>(a: &A, table: &[AtomicPtr<u8>], r: &mut Rng, min: u64, span: u64) {
    let size = (min + r.next() % span) as usize;
    let l = Layout::from_size_align(size, 8).unwrap();
    // SAFETY: a valid layout.
    let p = unsafe { shim_alloc(a, l) };
    // SAFETY: a live object of at least 16 bytes.
    unsafe { p.cast::<usize>().write(size) };
    let old = table[(r.next() as usize) % table.len()].swap(p, Ordering::AcqRel);
    if !old.is_null() {
        // SAFETY: an object of the table, now ours; its first word is its size.
        unsafe {
            let s = old.cast::<usize>().read();
            shim_dealloc(a, old, Layout::from_size_align(s, 8).unwrap());
        }
    }
}

fn free_table<A: GlobalAlloc>(a: &A, table: &[AtomicPtr<u8>]) {
    for slot in table {
        let p = slot.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if !p.is_null() {
            // SAFETY: as in `larson_op`.
            unsafe {
                let s = p.cast::<usize>().read();
                shim_dealloc(a, p, Layout::from_size_align(s, 8).unwrap());
            }
        }
    }
}

fn larson<A: GlobalAlloc + Sync + 'static>(a: &'static A, threads: usize, d: Duration) -> f64 {
    let table: Arc<Vec<AtomicPtr<u8>>> = Arc::new(
        (0..4096)
            .map(|_| AtomicPtr::new(std::ptr::null_mut()))
            .collect(),
    );
    let t2 = table.clone();
    let ns = timed(threads, d, move |t, stop| {
        let mut r = Rng(0x9E37_79B9 + t as u64 * 7919);
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..64 {
                larson_op(a, &t2, &mut r, 16, 1009);
            }
            n += 64;
        }
        n
    });
    free_table(a, &table);
    ns
}

fn thread_churn<A: GlobalAlloc + Sync + 'static>(
    a: &'static A,
    threads: usize,
    d: Duration,
) -> f64 {
    let start = Instant::now();
    let created = AtomicUsize::new(0);
    while start.elapsed() < d {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                std::thread::spawn(move || {
                    for round in 0..8 {
                        churn_batch(a, round);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        created.fetch_add(threads, Ordering::Relaxed);
    }
    start.elapsed().as_nanos() as f64 / 1000.0 / created.load(Ordering::Relaxed) as f64
}

/// In a child: larson with a long-lived table at `threads` threads; prints VmHWM.
fn rss_child(name: &str, threads: usize, d: Duration) {
    with_alloc!(name, a => {
        let table: Arc<Vec<AtomicPtr<u8>>> =
            Arc::new((0..65536).map(|_| AtomicPtr::new(std::ptr::null_mut())).collect());
        let t2 = table.clone();
        timed(threads, d, move |t, stop| {
            let mut r = Rng(0x1234_5678 + t as u64 * 104_729);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    larson_op(a, &t2, &mut r, 16, 4081);
                }
                n += 64;
            }
            n
        });
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let hwm = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap();
        println!("{hwm}");
        free_table(a, &table);
    });
}

fn rss_of(name: &str, threads: usize, d: Duration) -> f64 {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--rss-child", name, "--threads", &threads.to_string()])
        .args(["--duration-ms", &d.as_millis().to_string()])
        .output()
        .expect("run the RSS child");
    assert!(out.status.success(), "RSS child for {name} failed: {out:?}");
    let kib: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("VmHWM");
    kib / 1024.0
}

fn median(mut v: Vec<f64>) -> f64 {
    quantile(&mut v, 0.5)
}

fn machine() -> String {
    format!(
        "{} CPUs; Linux {}; {}; {}",
        nproc(),
        restartable::sys::kernel_release(),
        restartable::sys::libc_version(),
        restartable::status()
    )
}

fn main() {
    let args = Args::parse();
    let d = Duration::from_millis(args.duration_ms);
    CPU_TIME.store(args.cpu_time, Ordering::Relaxed);
    let threads = if args.threads.is_empty() {
        vec![1, nproc(), 4 * nproc()]
    } else {
        args.threads.clone()
    };
    if let Some(name) = &args.rss_child {
        rss_child(name, threads[0], d);
        return;
    }
    let allocators: Vec<&str> = ALLOCATORS
        .iter()
        .copied()
        .filter(|a| args.only.is_empty() || args.only.iter().any(|o| o == a))
        .collect();
    if allocators.is_empty() {
        eprintln!("--only: none of {:?} is one of {ALLOCATORS:?}", args.only);
        std::process::exit(2);
    }
    if args.processes > 1 {
        processes(&args, &allocators, &threads);
        return;
    }
    if args.print_pid {
        println!("pid: {}", std::process::id());
    }
    println!("machine: {}", machine());
    println!(
        "method: median of {} runs x {} ms, allocators interleaved in each round; ns per alloc+free pair, aggregate over threads (threads: us per thread created; rss: MiB peak)",
        args.runs, args.duration_ms
    );
    print!("\n| workload | threads |");
    for a in &allocators {
        print!(" {a} |");
    }
    println!(" PerCpuAlloc / best other |");
    print!("|---|---|");
    for _ in 0..=allocators.len() {
        print!("---|");
    }
    println!();
    let mut notes = Vec::new();
    for w in &args.workload {
        let counts: Vec<usize> = match w.as_str() {
            "remote" | "remote-slot" => vec![2],
            "rss" => vec![4 * nproc()],
            _ => threads.clone(),
        };
        for &t in &counts {
            let mut runs: Vec<Vec<f64>> = vec![Vec::new(); allocators.len()];
            let mut handoff = Vec::new();
            // `remote`: each thread's CPU outside its waits, per allocator, then
            // the no-op allocator's.
            let mut busy: Vec<[Vec<f64>; 2]> = vec![Default::default(); allocators.len() + 1];
            let ring = match w.as_str() {
                "remote" => Some(Ring::Batched),
                "remote-slot" => Some(Ring::Slot),
                _ => None,
            };
            let mut record_busy = |i: usize, name: &str, b: [f64; 2]| {
                if ring == Some(Ring::Batched) {
                    for (side, v) in ["producer", "consumer"].iter().zip(b) {
                        if args.raw {
                            println!("raw {w}-{side} {t} {name} {v:.4}");
                        }
                    }
                    busy[i][0].push(b[0]);
                    busy[i][1].push(b[1]);
                }
            };
            let rounds = if w == "rss" { 1 } else { args.runs };
            for _ in 0..rounds {
                if let Some(ring) = ring {
                    let (v, b) = remote(&HANDOFF, d, ring);
                    if args.raw {
                        println!("raw {w} {t} handoff {v:.4}");
                    }
                    handoff.push(v);
                    record_busy(allocators.len(), "handoff", b);
                }
                for (i, name) in allocators.iter().enumerate() {
                    let v = with_alloc!(*name, a => match w.as_str() {
                        "churn" => churn(a, t, d),
                        "churn64" => churn64(a, t, d),
                        "remote" | "remote-slot" => {
                            let (v, b) = remote(a, d, ring.unwrap());
                            record_busy(i, name, b);
                            v
                        }
                        "larson" => larson(a, t, d),
                        "threads" => thread_churn(a, t, d),
                        "rss" => rss_of(name, t, 2 * d),
                        other => unreachable!("clap accepts only {WORKLOADS:?}, not {other}"),
                    });
                    if args.raw {
                        println!("raw {w} {t} {name} {v:.4}");
                    }
                    runs[i].push(v);
                }
            }
            let med: Vec<f64> = runs.into_iter().map(median).collect();
            let best_other = med[1..].iter().cloned().fold(f64::INFINITY, f64::min);
            print!("| {w} | {t} |");
            for v in &med {
                print!(" {v:.1} |");
            }
            if allocators[0] == ALLOCATORS[0] && med.len() > 1 {
                println!(" {:.2} |", med[0] / best_other);
            } else {
                println!(" - |");
            }
            if !handoff.is_empty() {
                let h = median(handoff);
                let mut note = format!(
                    "{w}: the handoff alone (a no-op allocator in the same rounds) {h:.1} ns per pair"
                );
                if allocators[0] == ALLOCATORS[0] {
                    note += &format!("; PerCpuAlloc's figure less it {:.1}", med[0] - h);
                }
                notes.push(note);
            }
            if ring == Some(Ring::Batched) {
                let mut note = format!(
                    "{w}: CPU per pair outside the waits for the other thread, producer + consumer (medians):"
                );
                let names = allocators.iter().copied().chain(["handoff"]);
                for (name, [p, c]) in names.zip(busy) {
                    note += &format!(" {name} {:.1} + {:.1};", median(p), median(c));
                }
                notes.push(note.trim_end_matches(';').to_string());
            }
        }
    }
    for note in &notes {
        println!("\n{note}");
    }
    let forwarded: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--library-owned" && a != "--no-rseq")
        .collect();
    for (on, mode) in [
        (args.library_owned, Mode::LibraryOwned),
        (args.no_rseq, Mode::NoRseq),
    ] {
        if on {
            println!("\n{}:", mode.heading());
            rerun(&forwarded, mode);
        }
    }
}

/// An environment a table is run in (`--library-owned`, `--no-rseq`).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    /// As the benchmark was started.
    Default,
    /// `GLIBC_TUNABLES=glibc.pthread.rseq=0`: the library registers its own areas.
    LibraryOwned,
    /// glibc's registration off and `rseq` failing with ENOSYS (seccomp).
    NoRseq,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Default => "default",
            Mode::LibraryOwned => "library-owned",
            Mode::NoRseq => "no-rseq",
        }
    }

    fn heading(self) -> &'static str {
        match self {
            Mode::Default => "the default environment",
            Mode::LibraryOwned => {
                "with GLIBC_TUNABLES=glibc.pthread.rseq=0 (the library registers its own areas)"
            }
            Mode::NoRseq => {
                "with rseq unavailable (glibc's registration off, seccomp: rseq fails with ENOSYS)"
            }
        }
    }
}

/// What one child process of `--processes` printed: its `machine:` line and its
/// `raw` figures, each (workload, threads, allocator)'s in round order.
#[derive(Default, Debug)]
struct ProcessRounds {
    machine: String,
    pid: u32,
    rounds: std::collections::BTreeMap<(String, usize, String), Vec<f64>>,
    /// The `raw` lines, without `raw `, in the child's order.
    raw: Vec<String>,
}

impl ProcessRounds {
    /// Reads a child's standard output (the table of `--raw`): the `machine:` and
    /// `pid:` lines and every `raw <workload> <threads> <allocator> <value>` line.
    /// An error names the first line that is not what the child prints (a figure
    /// that is not a finite number, a `raw` line of other than four fields), or the
    /// `machine:` or `pid:` line that is missing.
    fn parse(out: &str) -> Result<ProcessRounds, String> {
        let mut p = ProcessRounds::default();
        let (mut machine, mut pid) = (None, None);
        for line in out.lines() {
            if let Some(m) = line.strip_prefix("machine: ") {
                machine = Some(m.to_string());
            } else if let Some(v) = line.strip_prefix("pid: ") {
                let v = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("printed {line:?}, not a pid"))?;
                pid = Some(v);
            } else if let Some(raw) = line.strip_prefix("raw ") {
                let f: Vec<&str> = raw.split_whitespace().collect();
                let figure = match f[..] {
                    [w, t, a, v] => t
                        .parse::<usize>()
                        .ok()
                        .zip(v.parse::<f64>().ok().filter(|v| v.is_finite()))
                        .map(|(t, v)| (w, t, a, v)),
                    _ => None,
                };
                let Some((w, t, a, v)) = figure else {
                    return Err(format!(
                        "printed {line:?}, not `raw <workload> <threads> <allocator> <figure>`"
                    ));
                };
                p.rounds
                    .entry((w.to_string(), t, a.to_string()))
                    .or_default()
                    .push(v);
                p.raw.push(raw.to_string());
            }
        }
        p.machine = machine.ok_or("printed no `machine:` line")?;
        p.pid = pid.ok_or("printed no `pid:` line")?;
        Ok(p)
    }

    /// Whether the child printed exactly the figures `expected` names (each
    /// (workload, threads, allocator) and its number of rounds), and no others: an
    /// error names the first that is missing, short, or not asked for.
    fn check(&self, expected: &[Series]) -> Result<(), String> {
        for (key, n) in expected {
            let got = self.rounds.get(key).map_or(0, Vec::len);
            if got != *n {
                return Err(format!(
                    "(pid {}) printed {got} rounds of `{} {} {}`, not {n}",
                    self.pid, key.0, key.1, key.2
                ));
            }
        }
        if let Some(key) = self
            .rounds
            .keys()
            .find(|k| !expected.iter().any(|(e, _)| e == *k))
        {
            return Err(format!(
                "(pid {}) printed figures of `{} {} {}`, which were not asked for",
                self.pid, key.0, key.1, key.2
            ));
        }
        Ok(())
    }

    fn get(&self, w: &str, t: usize, a: &str) -> &[f64] {
        self.rounds
            .get(&(w.to_string(), t, a.to_string()))
            .map_or(&[], |v| v.as_slice())
    }
}

/// The `q`-quantile (0..=1) of `v` (sorted in place), the nearest rank.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// A cell of `--processes`: the median of all rounds `[first quartile, third]`.
fn spread(mut v: Vec<f64>, digits: usize) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let (m, lo, hi) = (
        quantile(&mut v, 0.5),
        quantile(&mut v, 0.25),
        quantile(&mut v, 0.75),
    );
    format!("{m:.digits$} [{lo:.digits$}, {hi:.digits$}]")
}

/// One cell of the `--processes` table: every process's rounds of one allocator,
/// all together.
fn all_rounds(procs: &[ProcessRounds], w: &str, t: usize, a: &str) -> Vec<f64> {
    procs.iter().flat_map(|p| p.get(w, t, a)).copied().collect()
}

/// The per-round ratios of `PerCpuAlloc` (`names[0]`) to the lowest of the other
/// `names` in the same round of the same process, over all processes; and the
/// rounds in which it was the lowest. A round that some allocator lacks is left out.
fn round_ratios(procs: &[ProcessRounds], w: &str, t: usize, names: &[&str]) -> (Vec<f64>, usize) {
    let mut ratios = Vec::new();
    let mut lowest = 0;
    for p in procs {
        let cols: Vec<&[f64]> = names.iter().map(|a| p.get(w, t, a)).collect();
        let rounds = cols.iter().map(|c| c.len()).min().unwrap_or(0);
        for r in 0..rounds {
            let best = cols[1..].iter().map(|c| c[r]).fold(f64::INFINITY, f64::min);
            ratios.push(cols[0][r] / best);
            lowest += usize::from(cols[0][r] < best);
        }
    }
    (ratios, lowest)
}

/// A figure a `--processes` child prints (workload, threads, allocator) and how many
/// rounds of it.
type Series = ((String, usize, String), usize);

/// The rows of a table: each workload with each of its thread counts.
fn rows<'a>(workloads: &'a [String], threads: &[usize]) -> Vec<(&'a str, usize)> {
    let mut rows = Vec::new();
    for w in workloads {
        let counts: Vec<usize> = match w.as_str() {
            "remote" | "remote-slot" => vec![2],
            "rss" => vec![4 * nproc()],
            _ => threads.to_vec(),
        };
        for t in counts {
            rows.push((w.as_str(), t));
        }
    }
    rows
}

/// Every figure a `--processes` child prints with `--raw`, and its rounds: each
/// row's allocators (`rss` once, the others `--runs` times); `remote` and
/// `remote-slot` also the no-op `handoff`, and `remote` each side's CPU per pair
/// (`remote-producer`, `remote-consumer`) of every allocator and the handoff.
fn expected_series(args: &Args, allocators: &[&str], threads: &[usize]) -> Vec<Series> {
    let mut v = Vec::new();
    for (w, t) in rows(&args.workload, threads) {
        let n = if w == "rss" { 1 } else { args.runs };
        let mut names: Vec<&str> = allocators.to_vec();
        if w == "remote" || w == "remote-slot" {
            names.push("handoff");
        }
        for a in &names {
            v.push(((w.to_string(), t, a.to_string()), n));
        }
        if w == "remote" {
            for side in ["remote-producer", "remote-consumer"] {
                for a in &names {
                    v.push(((side.to_string(), t, a.to_string()), n));
                }
            }
        }
    }
    v
}

/// The arguments of a `--processes` child: this run's options for one table in
/// one process, its raw figures printed.
fn child_args(args: &Args, threads: &[usize]) -> Vec<String> {
    let mut v = vec![
        "--raw".to_string(),
        "--print-pid".to_string(),
        format!("--runs={}", args.runs),
        format!("--duration-ms={}", args.duration_ms),
        format!("--workload={}", args.workload.join(",")),
        format!(
            "--threads={}",
            threads
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
    ];
    if args.cpu_time {
        v.push("--cpu-time".into());
    }
    if !args.only.is_empty() {
        v.push(format!("--only={}", args.only.join(",")));
    }
    v
}

/// Runs one child of `--processes` in `mode`; its figures. A child that could not
/// start, failed, or printed other than `expected` ends this run with a message
/// and exit status 1.
fn run_child(args: &[String], mode: Mode, expected: &[Series]) -> ProcessRounds {
    let result = command_in(mode, args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("could not start: {e}"))
        .and_then(|out| child_result(out.status, &out.stdout, expected));
    result.unwrap_or_else(|e| {
        eprintln!("alloc-bench --processes: a {} process {e}", mode.name());
        std::process::exit(1);
    })
}

/// A `--processes` child's figures from its exit status and standard output, or
/// what was wrong with them.
fn child_result(
    status: std::process::ExitStatus,
    stdout: &[u8],
    expected: &[Series],
) -> Result<ProcessRounds, String> {
    if !status.success() {
        return Err(format!("failed: {status}"));
    }
    let p = ProcessRounds::parse(&String::from_utf8_lossy(stdout))?;
    p.check(expected)?;
    Ok(p)
}

/// `--processes N`: each mode's table in N child processes (the modes in turn:
/// default, library-owned, no-rseq, default, ...), then one table per mode from
/// all their rounds.
fn processes(args: &Args, allocators: &[&str], threads: &[usize]) {
    let mut modes = vec![Mode::Default];
    if args.library_owned {
        modes.push(Mode::LibraryOwned);
    }
    if args.no_rseq {
        modes.push(Mode::NoRseq);
    }
    let child = child_args(args, threads);
    let expected = expected_series(args, allocators, threads);
    let mut procs: Vec<Vec<ProcessRounds>> = modes.iter().map(|_| Vec::new()).collect();
    for k in 0..args.processes {
        for (m, &mode) in modes.iter().enumerate() {
            let p = run_child(&child, mode, &expected);
            if args.raw {
                println!("process {} {k} pid {}", mode.name(), p.pid);
                for raw in &p.raw {
                    println!("raw {raw} {} {k}", mode.name());
                }
            }
            procs[m].push(p);
        }
    }
    println!(
        "method: {} processes per mode, the modes in turn, each {} runs x {} ms with the allocators interleaved in each round; ns per alloc+free pair, aggregate over threads (threads: us per thread created; rss: MiB peak, one per process)",
        args.processes, args.runs, args.duration_ms
    );
    println!(
        "cells: median of all processes' rounds [quartiles]; ratio: per round, PerCpuAlloc over the lowest other in the same round of the same process, median [quartiles], then the rounds PerCpuAlloc was the lowest"
    );
    for (m, mode) in modes.iter().enumerate() {
        let procs = &procs[m];
        println!(
            "
{}:",
            mode.heading()
        );
        println!("machine: {}", procs[0].machine);
        print_process_tables(args, procs, allocators, threads);
    }
}

/// The two tables of one mode of `--processes`: all rounds, and per-process medians.
fn print_process_tables(
    args: &Args,
    procs: &[ProcessRounds],
    allocators: &[&str],
    threads: &[usize],
) {
    let ratio = allocators[0] == ALLOCATORS[0] && allocators.len() > 1;
    let rows = rows(&args.workload, threads);
    let header = |last: &str| {
        print!("\n| workload | threads | rounds |");
        for a in allocators {
            print!(" {a} |");
        }
        println!(" {last} |");
        print!("|---|---|---|");
        for _ in 0..=allocators.len() {
            print!("---|");
        }
        println!();
    };
    header("PerCpuAlloc / best other, per round");
    let mut notes = Vec::new();
    for &(w, t) in &rows {
        let n = all_rounds(procs, w, t, allocators[0]).len();
        print!("| {w} | {t} | {n} |");
        for a in allocators {
            print!(" {} |", spread(all_rounds(procs, w, t, a), 1));
        }
        if ratio {
            let (r, lowest) = round_ratios(procs, w, t, allocators);
            println!(" {}, lowest in {lowest} of {} |", spread(r, 2), n);
        } else {
            println!(" - |");
        }
        if w == "remote" || w == "remote-slot" {
            let h = all_rounds(procs, w, t, "handoff");
            if !h.is_empty() {
                notes.push(format!(
                    "{w}: the handoff alone (a no-op allocator in the same rounds) {} ns per pair",
                    spread(h, 1)
                ));
            }
        }
        if w == "remote" {
            let mut note = format!(
                "{w}: CPU per pair outside the waits for the other thread, producer + consumer (medians of all rounds):"
            );
            for a in allocators.iter().copied().chain(["handoff"]) {
                let p = all_rounds(procs, "remote-producer", t, a);
                let c = all_rounds(procs, "remote-consumer", t, a);
                if !p.is_empty() && !c.is_empty() {
                    note += &format!(" {a} {:.1} + {:.1};", median(p), median(c));
                }
            }
            notes.push(note.trim_end_matches(';').to_string());
        }
    }
    header("PerCpuAlloc / best other, per-process medians");
    for &(w, t) in &rows {
        print!("| {w} | {t} | {} |", procs.len());
        for a in allocators {
            let meds: Vec<f64> = procs
                .iter()
                .map(|p| p.get(w, t, a))
                .filter(|v| !v.is_empty())
                .map(|v| median(v.to_vec()))
                .collect();
            print!(" {} |", low_high(&meds, 1));
        }
        if ratio {
            let meds: Vec<f64> = procs
                .iter()
                .map(|p| round_ratios(std::slice::from_ref(p), w, t, allocators).0)
                .filter(|v| !v.is_empty())
                .map(median)
                .collect();
            println!(" {} |", low_high(&meds, 2));
        } else {
            println!(" - |");
        }
    }
    for note in &notes {
        println!("\n{note}");
    }
}

/// The lowest and highest of `v`, `lo-hi`.
fn low_high(v: &[f64], digits: usize) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.digits$}-{hi:.digits$}")
}

/// This benchmark as a child process in `mode`'s environment, with `args`.
fn command_in(mode: Mode, args: &[String]) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().unwrap();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args);
    if mode != Mode::Default {
        cmd.env("GLIBC_TUNABLES", "glibc.pthread.rseq=0");
    }
    if mode == Mode::NoRseq {
        // SAFETY: the filter installation makes only system calls.
        unsafe {
            cmd.pre_exec(|| seccomp::install_filter(&seccomp::rseq_errno_filter(libc::ENOSYS)));
        }
    }
    cmd
}

/// Runs this benchmark again in `mode`'s environment (`--library-owned`, `--no-rseq`).
fn rerun(args: &[String], mode: Mode) {
    let st = command_in(mode, args).status().expect("re-run");
    if !st.success() {
        eprintln!("the re-run failed: {st}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One `remote` at a time: its figures and counters are statics, and its
    /// threads pin themselves to the same two CPUs.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Set: the producer, after a batch, waits (at most 10 s) for the consumer to
    /// sleep and then for the stop, so that the run ends with the consumer asleep
    /// (unless the stop came before the consumer slept).
    static PAUSE_AFTER_BATCH: AtomicBool = AtomicBool::new(false);
    /// Runs that ended with the consumer asleep (forced by `PAUSE_AFTER_BATCH`).
    static ENDED_ASLEEP: AtomicU64 = AtomicU64::new(0);

    /// The producer's pause after a batch (see [`PAUSE_AFTER_BATCH`]).
    pub(super) fn pause_after_batch(stop: &AtomicBool) {
        if !PAUSE_AFTER_BATCH.load(Ordering::Relaxed) {
            return;
        }
        let sleeps = SLEEPS.load(Ordering::Relaxed);
        let t0 = Instant::now();
        let within = || t0.elapsed() < Duration::from_secs(10);
        // SLEEPS counts a sleep after its last check of the stop: once it moves,
        // with no timeout and no batch coming, the consumer sleeps until a wake.
        // If the stop comes first, the run is not one that ends asleep.
        while SLEEPS.load(Ordering::Relaxed) == sleeps && !stop.load(Ordering::Relaxed) && within()
        {
            std::thread::sleep(Duration::from_micros(100));
        }
        let asleep = SLEEPS.load(Ordering::Relaxed) > sleeps;
        while !stop.load(Ordering::Relaxed) && within() {
            std::thread::sleep(Duration::from_micros(100));
        }
        if asleep && stop.load(Ordering::Relaxed) {
            ENDED_ASLEEP.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `--processes`' figures come from every process's rounds: a cell holds all of
    /// them, in order, and the ratio is taken round by round (the same round of the
    /// same process, over the lowest of the others), not from the medians.
    #[test]
    fn process_rounds_all_counted_and_ratios_per_round() {
        let a = ProcessRounds::parse(
            "machine: m\npid: 7\n| churn | 1 | 2.0 |\n\
             raw churn 1 PerCpuAlloc 2.0\nraw churn 1 System 4.0\nraw churn 1 jemalloc 8.0\n\
             raw churn 1 PerCpuAlloc 9.0\nraw churn 1 System 3.0\nraw churn 1 jemalloc 1.0\n",
        )
        .unwrap();
        let b = ProcessRounds::parse(
            "pid: 8\nmachine: m\n\
             raw churn 1 PerCpuAlloc 5.0\nraw churn 1 System 10.0\nraw churn 1 jemalloc 20.0\n",
        )
        .unwrap();
        assert_eq!((a.pid, b.pid, a.machine.as_str()), (7, 8, "m"));
        assert_eq!(a.raw.len() + b.raw.len(), 9);
        let procs = [a, b];
        assert_eq!(
            all_rounds(&procs, "churn", 1, "PerCpuAlloc"),
            vec![2.0, 9.0, 5.0]
        );
        let names = ["PerCpuAlloc", "System", "jemalloc"];
        let (r, lowest) = round_ratios(&procs, "churn", 1, &names);
        assert_eq!(r, vec![0.5, 9.0, 0.5]);
        assert_eq!(lowest, 2);
        assert_eq!(spread(r, 2), "0.50 [0.50, 9.00]");
        assert_eq!(
            spread(all_rounds(&procs, "churn", 1, "System"), 1),
            "4.0 [4.0, 10.0]"
        );
        assert_eq!(low_high(&[3.0, 1.5, 2.0], 1), "1.5-3.0");
    }

    /// A `--processes` child that failed, printed a line that is not a figure, or
    /// printed fewer, more or other figures than its options ask for is an error
    /// that says so (the run then exits with status 1), never a short table; the
    /// figures `--runs 2 --workload churn,remote,rss --only PerCpuAlloc,System` ask
    /// for are taken.
    #[test]
    fn process_child_failures_and_short_output_are_errors() {
        use std::os::unix::process::ExitStatusExt;
        use std::process::ExitStatus;
        let args = Args::parse_from([
            "alloc-bench",
            "--runs=2",
            "--workload=churn,remote,rss",
            "--threads=1",
        ]);
        let allocators = ["PerCpuAlloc", "System"];
        let expected = expected_series(&args, &allocators, &[1]);
        let rss = 4 * nproc();
        let mut full = String::from("pid: 9\nmachine: m\n");
        for (w, t, rounds) in [("churn", 1, 2), ("remote", 2, 2), ("rss", rss, 1)] {
            for _ in 0..rounds {
                let mut names = allocators.to_vec();
                if w == "remote" {
                    names.push("handoff");
                }
                for a in &names {
                    full += &format!("raw {w} {t} {a} 3.5\n");
                    if w == "remote" {
                        full += &format!("raw remote-producer 2 {a} 1.0\n");
                        full += &format!("raw remote-consumer 2 {a} 1.0\n");
                    }
                }
            }
        }
        let ok = ExitStatus::from_raw(0);
        let p = child_result(ok, full.as_bytes(), &expected).unwrap();
        assert_eq!((p.pid, p.raw.len()), (9, 4 + 2 * 9 + 2));
        let err = |status: ExitStatus, out: &str| {
            child_result(status, out.as_bytes(), &expected)
                .map(|_| ())
                .unwrap_err()
        };
        // Killed by SIGSEGV; exited with status 3.
        assert!(err(ExitStatus::from_raw(11), &full).contains("signal: 11"));
        assert!(err(ExitStatus::from_raw(3 << 8), &full).contains("exit status: 3"));
        let last_round = full.rfind("raw rss").unwrap();
        let short = &full[..last_round];
        assert!(
            err(ok, short).contains("printed 0 rounds of `rss "),
            "{}",
            err(ok, short)
        );
        let one_less = full.replacen("raw churn 1 System 3.5\n", "", 1);
        assert!(err(ok, &one_less).contains("printed 1 rounds of `churn 1 System`, not 2"));
        let again = format!("{full}raw churn 1 System 3.5\n");
        assert!(err(ok, &again).contains("printed 3 rounds of `churn 1 System`, not 2"));
        let extra = format!("{full}raw churn 1 jemalloc 3.5\n");
        assert!(err(ok, &extra).contains("`churn 1 jemalloc`, which were not asked for"));
        for garbage in [
            "raw churn 1 System 3.5x\n",
            "raw churn 1 System NaN\n",
            "raw churn one System 3.5\n",
            "raw churn 1 System\n",
        ] {
            let e = err(ok, &format!("{full}{garbage}"));
            assert!(e.contains(&format!("{:?}", garbage.trim_end())), "{e}");
        }
        assert!(err(ok, &full.replace("pid: 9", "pid: x")).contains("not a pid"));
        assert!(err(ok, &full.replace("pid: 9\n", "")).contains("no `pid:` line"));
        assert!(err(ok, &full.replace("machine: m\n", "")).contains("no `machine:` line"));
        assert!(err(ok, "").contains("no `machine:` line"));
    }

    /// `remote(a, d, ring)` with no sleep timeout, so that only wakes end a sleep:
    /// a lost wake-up leaves a thread asleep for good, and the run fails here
    /// after 60 s instead of hanging.
    fn remote_without_timeout(a: &'static Counting, d: Duration, ring: Ring) -> (f64, [f64; 2]) {
        SLEEP_TIMEOUT_NS.store(0, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(remote(a, d, ring)).unwrap());
        let r = rx.recv_timeout(Duration::from_secs(60));
        r.expect("remote did not end: a thread was never woken")
    }

    /// `System`, counting what `remote` allocates and frees; each allocation
    /// takes at least `delay`.
    struct Counting {
        allocs: AtomicU64,
        frees: AtomicU64,
        delay: Duration,
    }

    impl Counting {
        fn leak(delay: Duration) -> &'static Counting {
            Box::leak(Box::new(Counting {
                allocs: AtomicU64::new(0),
                frees: AtomicU64::new(0),
                delay,
            }))
        }

        fn counts(&self) -> (u64, u64) {
            (
                self.allocs.load(Ordering::Relaxed),
                self.frees.load(Ordering::Relaxed),
            )
        }
    }

    // SAFETY: forwards to `System`.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            self.allocs.fetch_add(1, Ordering::Relaxed);
            let t0 = Instant::now();
            while t0.elapsed() < self.delay {
                std::hint::spin_loop();
            }
            // SAFETY: forwarded contract.
            unsafe { System.alloc(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            self.frees.fetch_add(1, Ordering::Relaxed);
            // SAFETY: forwarded contract.
            unsafe { System.dealloc(p, l) }
        }
    }

    /// Every object the producer allocates is freed exactly once (the run's
    /// leftovers too), and the pairs the consumer counts are objects it freed;
    /// the run ends with no sleep timeout (no wake-up lost, at the end either).
    /// Runs again (at most 20 times) until a run counted pairs: on a loaded
    /// machine a 50 ms run may not get both threads a CPU.
    #[test]
    fn remote_frees_every_object_once() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        for ring in [Ring::Batched, Ring::Slot] {
            let mut counted = false;
            for _ in 0..20 {
                let a = Counting::leak(Duration::ZERO);
                let (ns, busy) = remote_without_timeout(a, Duration::from_millis(50), ring);
                let (allocs, frees) = a.counts();
                assert_eq!(allocs, frees, "every object freed");
                let pairs = REMOTE_PAIRS.load(Ordering::Relaxed);
                assert!(pairs <= frees, "pairs {pairs}, frees {frees}");
                assert!(ns > 0.0 && busy.iter().all(|b| *b >= 0.0));
                if pairs > 0 {
                    counted = true;
                    break;
                }
            }
            assert!(counted, "no pairs in 20 runs");
        }
    }

    /// The stop comes while the consumer sleeps waiting for a batch that will not
    /// come: the producer's wake when it leaves ends the consumer's sleep (no sleep
    /// timeout), and every object is freed exactly once. Runs again (at most 20
    /// times) until a run ended so (a 200 ms run: on a loaded machine a niced
    /// consumer may not get a CPU to fall asleep on before a shorter run's stop).
    #[test]
    fn remote_ends_while_consumer_sleeps() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        /// Ends the pause when the test does, passed or failed.
        struct Paused;
        impl Drop for Paused {
            fn drop(&mut self) {
                PAUSE_AFTER_BATCH.store(false, Ordering::Relaxed);
            }
        }
        let ended = ENDED_ASLEEP.load(Ordering::Relaxed);
        PAUSE_AFTER_BATCH.store(true, Ordering::Relaxed);
        let _paused = Paused;
        for _ in 0..20 {
            let a = Counting::leak(Duration::ZERO);
            remote_without_timeout(a, Duration::from_millis(200), Ring::Batched);
            let (allocs, frees) = a.counts();
            assert_eq!(allocs, frees, "every object freed");
            if ENDED_ASLEEP.load(Ordering::Relaxed) > ended {
                break;
            }
        }
        assert!(
            ENDED_ASLEEP.load(Ordering::Relaxed) > ended,
            "no run ended with the consumer asleep"
        );
    }

    /// A producer far slower than the consumer (each allocation 20 µs, a batch
    /// 1.3 ms, far beyond the consumer's spins): the consumer sleeps, the
    /// producer's batches wake it (no sleep timeout), and every object is still
    /// freed exactly once.
    /// Runs again (at most 20 times) until a run saw a wake.
    #[test]
    fn remote_sleeping_consumer_is_woken() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (sleeps, wakes) = (
            SLEEPS.load(Ordering::Relaxed),
            WAKES.load(Ordering::Relaxed),
        );
        for _ in 0..20 {
            let a = Counting::leak(Duration::from_micros(20));
            remote_without_timeout(a, Duration::from_millis(100), Ring::Batched);
            let (allocs, frees) = a.counts();
            assert_eq!(allocs, frees, "every object freed");
            if WAKES.load(Ordering::Relaxed) > wakes {
                break;
            }
        }
        assert!(
            SLEEPS.load(Ordering::Relaxed) > sleeps,
            "the consumer slept"
        );
        assert!(WAKES.load(Ordering::Relaxed) > wakes, "a batch woke it");
    }
}
