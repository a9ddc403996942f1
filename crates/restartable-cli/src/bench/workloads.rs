//! The workloads and their implementations: for each, the rseq container (as users
//! get it: `NoHooks`, the fast path inlined into the loop), the baselines a Rust user
//! would otherwise reach for, and "floors" that are not alternatives but explain a
//! cost (a plain thread-local add; the allocation a push makes).
//!
//! Every implementation has its own `#[inline(never)]` batch function (`BATCH`
//! operations), named after it, so its loop can be read in the disassembly:
//! `objdump -d --no-show-raw-insn target/release/rseq | grep -A40 'counter_rseq'`.

use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crossbeam_queue::{ArrayQueue, SegQueue};
use fast_counter::ConcurrentCounter;
use restartable::arch::{self, ByCpu, Index, OpResult};
use restartable::hooks::{NoHooks, StatsHooks};
use restartable::{
    IndexBy, PerCpu, PerCpuBuffer, PerCpuCounter, PerCpuLock, PerCpuPool, PerCpuStack, ThreadArea,
};

use super::cpu_readers as cpu;
use super::harness::{on_each_cpu, run_threads, warmup_ops, BatchFn, Sample, BATCH};

/// The workloads, in the order they are measured and printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum WorkloadId {
    /// Read the current CPU number.
    Cpu,
    /// Increment a counter.
    Counter,
    /// Lock, add one, unlock.
    Lock,
    /// Push then pop a stack.
    Stack,
    /// Push then pop a bounded buffer.
    Buffer,
    /// Take an object from a pool and give it back.
    Pool,
}

impl WorkloadId {
    pub const ALL: [WorkloadId; 6] = [
        WorkloadId::Cpu,
        WorkloadId::Counter,
        WorkloadId::Lock,
        WorkloadId::Stack,
        WorkloadId::Buffer,
        WorkloadId::Pool,
    ];

    /// The name used on the command line and in the JSON.
    pub fn code(self) -> &'static str {
        match self {
            WorkloadId::Cpu => "cpu",
            WorkloadId::Counter => "counter",
            WorkloadId::Lock => "lock",
            WorkloadId::Stack => "stack",
            WorkloadId::Buffer => "buffer",
            WorkloadId::Pool => "pool",
        }
    }

    /// What one operation is.
    pub fn title(self) -> &'static str {
        match self {
            WorkloadId::Cpu => "CPU id read",
            WorkloadId::Counter => "counter increment",
            WorkloadId::Lock => "lock + add + unlock",
            WorkloadId::Stack => "stack push + pop",
            WorkloadId::Buffer => "buffer push + pop",
            WorkloadId::Pool => "pool get + drop",
        }
    }
}

/// What an implementation is to the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The `restartable` implementation.
    Rseq,
    /// An alternative; the fastest one is the "best baseline".
    Baseline,
    /// Not an alternative: the cost of part of the work, to explain the others.
    Floor,
}

impl Kind {
    pub fn code(self) -> &'static str {
        match self {
            Kind::Rseq => "rseq",
            Kind::Baseline => "baseline",
            Kind::Floor => "floor",
        }
    }
}

/// One measurement: runs the implementation on `threads` threads for a duration, on a
/// fresh instance, and checks the result where it can be checked.
pub type RunFn = Box<dyn Fn(usize, Duration) -> Result<Sample, String>>;

/// One implementation of a workload.
pub struct Impl {
    pub name: &'static str,
    pub kind: Kind,
    /// The timed build (`NoHooks` for the rseq containers).
    pub run: RunFn,
    /// The same container built with `StatsHooks`, for the abort-rate pass.
    pub stats_run: Option<RunFn>,
}

/// A workload: its implementations, and those that cannot run here (with the reason).
pub struct Workload {
    pub impls: Vec<Impl>,
    pub unavailable: Vec<(&'static str, String)>,
}

// Implementation names (the JSON's `impl` values).
pub const CPU_RSEQ: &str = "current_cpu()";
pub const CPU_GLIBC: &str = "sched_getcpu()";
pub const CPU_VDSO: &str = "vDSO getcpu";
pub const CPU_RDPID: &str = "rdpid";
pub const CPU_RDTSCP: &str = "rdtscp";
pub const CPU_SYSCALL: &str = "getcpu syscall";
pub const COUNTER_RSEQ: &str = "PerCpuCounter::add";
pub const COUNTER_STATIC: &str = "static PerCpuCounter::add";
pub const COUNTER_TLS: &str = "thread-local add";
pub const COUNTER_RAW: &str = "raw op";
pub const COUNTER_HOISTED: &str = "raw op, area hoisted";
pub const COUNTER_ATOMIC: &str = "AtomicI64::fetch_add";
pub const COUNTER_PERCPU_ATOMIC: &str = "per-CPU AtomicI64";
pub const COUNTER_MUTEX: &str = "Mutex<i64>";
pub const COUNTER_SHARDED: &str = "fast-counter";
pub const LOCK_RSEQ: &str = "PerCpuLock";
pub const LOCK_MUTEX: &str = "std Mutex";
pub const LOCK_SPIN: &str = "spin lock";
pub const STACK_RSEQ: &str = "PerCpuStack";
pub const STACK_NODES: &str = "PerCpuStack nodes";
pub const BUFFER_RSEQ: &str = "PerCpuBuffer";
pub const MUTEX_VEC: &str = "Mutex<Vec>";
pub const SEG_QUEUE: &str = "SegQueue";
pub const ARRAY_QUEUE: &str = "ArrayQueue";
pub const ALLOC: &str = "Box alloc+free";
pub const BUFFER_BOX: &str = "PerCpuBuffer<Box>";
pub const POOL_RSEQ: &str = "PerCpuPool";
pub const POOL_LOCKFREE: &str = "lockfree-object-pool";
pub const POOL_OBJECT: &str = "object-pool";
pub const POOL_SLAB: &str = "sharded-slab Pool";

/// One line of description per implementation, for the table's legend and the docs.
pub fn describe(name: &str) -> &'static str {
    match name {
        CPU_RSEQ => "restartable::current_cpu(): one load from the rseq area",
        CPU_GLIBC => "glibc sched_getcpu() (reads glibc's rseq area since 2.35)",
        CPU_VDSO => "__vdso_getcpu via dlvsym (reads the CPU number with rdpid/lsl)",
        CPU_RDPID => "the rdpid instruction (IA32_TSC_AUX)",
        CPU_RDTSCP => "the rdtscp instruction (TSC + IA32_TSC_AUX)",
        CPU_SYSCALL => "syscall(SYS_getcpu)",
        COUNTER_RSEQ => "PerCpuCounter::add(1): one restartable sequence, no atomic",
        COUNTER_STATIC => {
            "PerCpuCounter::add(1) on a `static` (const new, storage set up on first use)"
        }
        COUNTER_RAW => "arch::load_add_store on PerCpu slots, base and stride in registers",
        COUNTER_HOISTED => "the raw op with the ThreadArea read once per batch, not per add",
        COUNTER_TLS => "a thread_local Cell<i64> += 1 (the floor: no sharing at all)",
        COUNTER_ATOMIC => "one shared AtomicI64::fetch_add(1, Relaxed)",
        COUNTER_PERCPU_ATOMIC => "cache-padded AtomicI64 per CPU, chosen by sched_getcpu()",
        COUNTER_MUTEX => "std::sync::Mutex<i64>",
        COUNTER_SHARDED => "fast_counter::ConcurrentCounter (per-thread cells, 4 x nproc)",
        LOCK_RSEQ => "*PerCpuLock<u64>::lock() += 1",
        LOCK_MUTEX => "*std::sync::Mutex<u64>::lock() += 1",
        LOCK_SPIN => "test-and-test-and-set spin lock (yields every 64 spins)",
        STACK_RSEQ => "PerCpuStack<u64>: push(x) then pop() (allocates and frees a node)",
        STACK_NODES => "PerCpuStack<u64>: pop_node() then push_node() (owned nodes, no allocation)",
        BUFFER_RSEQ => "PerCpuBuffer<u64, 256>: push(x) then pop() (the word stored in the slot)",
        MUTEX_VEC => "Mutex<Vec<u64>>: push, then pop (two lock round trips)",
        SEG_QUEUE => "crossbeam_queue::SegQueue<u64>: push then pop (FIFO)",
        ARRAY_QUEUE => "crossbeam_queue::ArrayQueue<u64>: push then pop (FIFO)",
        ALLOC => "Box::new(u64) then drop (what a push cost when it allocated)",
        BUFFER_BOX => {
            "PerCpuBuffer<Box<u64>, 256>: push(box) then pop() (the box moves, no allocation)"
        }
        POOL_RSEQ => "PerCpuPool<Vec<u8>>: get(), then drop the handle",
        POOL_LOCKFREE => "lockfree_object_pool::LinearObjectPool<Vec<u8>>: pull(), then drop",
        POOL_OBJECT => "object_pool::Pool<Vec<u8>>: pull(Vec::new), then drop",
        POOL_SLAB => "sharded_slab::Pool<Vec<u8>>: create_with(), then clear(key)",
        _ => "",
    }
}

/// Defines an `#[inline(never)]` batch function: `BATCH` times `$body`.
macro_rules! batch_fn {
    ($name:ident($s:ident: &$S:ty) $body:block) => {
        #[inline(never)]
        fn $name($s: &$S) {
            for _ in 0..BATCH $body
        }
    };
}

/// A [`RunFn`] from a constructor, a batch function and a check of the final state
/// against the number of operations performed (warm-up included).
fn runner<S, M, C>(make: M, batch: BatchFn<S>, check: C) -> RunFn
where
    S: Sync + 'static,
    M: Fn() -> S + 'static,
    C: Fn(S, u64) -> Result<(), String> + 'static,
{
    Box::new(move |threads, duration| {
        let state = make();
        let sample = run_threads(&state, threads, duration, batch);
        check(state, sample.ops + warmup_ops(threads))?;
        Ok(sample)
    })
}

fn no_check<S>(_: S, _: u64) -> Result<(), String> {
    Ok(())
}

fn expect_total(what: &str, got: i64, ops: u64) -> Result<(), String> {
    if got == ops as i64 {
        Ok(())
    } else {
        Err(format!("{what}: total {got} after {ops} increments"))
    }
}

/// Cache-line padding (128 bytes: adjacent-line prefetch pairs 64-byte lines).
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(T);

// ---------------------------------------------------------------- CPU id read

batch_fn!(cpu_rseq(_s: &()) {
    black_box(restartable::current_cpu());
});
batch_fn!(cpu_glibc(_s: &()) {
    black_box(cpu::sched_getcpu());
});
batch_fn!(cpu_syscall(_s: &()) {
    black_box(cpu::getcpu_syscall());
});
batch_fn!(cpu_vdso(f: &cpu::VdsoGetcpu) {
    black_box(cpu::call_vdso(*f));
});
#[cfg(target_arch = "x86_64")]
batch_fn!(cpu_rdpid(_s: &()) {
    black_box(cpu::rdpid());
});
#[cfg(target_arch = "x86_64")]
batch_fn!(cpu_rdtscp(_s: &()) {
    black_box(cpu::rdtscp());
});

fn cpu_workload() -> Workload {
    let mut impls = vec![
        Impl {
            name: CPU_RSEQ,
            kind: Kind::Rseq,
            run: runner(|| (), cpu_rseq, no_check),
            stats_run: None,
        },
        Impl {
            name: CPU_GLIBC,
            kind: Kind::Baseline,
            run: runner(|| (), cpu_glibc, no_check),
            stats_run: None,
        },
    ];
    let mut unavailable = Vec::new();
    match cpu::vdso_getcpu() {
        Ok(f) => impls.push(Impl {
            name: CPU_VDSO,
            kind: Kind::Baseline,
            run: runner(move || f, cpu_vdso, no_check),
            stats_run: None,
        }),
        Err(why) => unavailable.push((CPU_VDSO, why)),
    }
    #[cfg(target_arch = "x86_64")]
    {
        for (name, flag, batch) in [
            (CPU_RDPID, "rdpid", cpu_rdpid as BatchFn<()>),
            (CPU_RDTSCP, "rdtscp", cpu_rdtscp as BatchFn<()>),
        ] {
            if cpu::has_flag(flag) {
                impls.push(Impl {
                    name,
                    kind: Kind::Baseline,
                    run: runner(|| (), batch, no_check),
                    stats_run: None,
                });
            } else {
                unavailable.push((name, format!("/proc/cpuinfo does not list {flag}")));
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        unavailable.push((CPU_RDPID, "not x86_64".to_string()));
        unavailable.push((CPU_RDTSCP, "not x86_64".to_string()));
    }
    impls.push(Impl {
        name: CPU_SYSCALL,
        kind: Kind::Baseline,
        run: runner(|| (), cpu_syscall, no_check),
        stats_run: None,
    });
    Workload { impls, unavailable }
}

// ---------------------------------------------------------------- counter

thread_local! {
    static LOCAL_COUNT: Cell<i64> = const { Cell::new(0) };
}

batch_fn!(counter_rseq(c: &PerCpuCounter) {
    c.inc();
});
/// The counter of [`COUNTER_STATIC`]: a `static`, as most users hold one.
static STATIC_COUNTER: PerCpuCounter = PerCpuCounter::new();

batch_fn!(counter_static(_s: &i64) {
    STATIC_COUNTER.add(1);
});
batch_fn!(counter_rseq_stats(c: &PerCpuCounter<StatsHooks>) {
    c.inc();
});
batch_fn!(counter_tls(_s: &()) {
    // `black_box` hides the cell's address, so every add is a load and a store to
    // the thread's own memory, as the per-CPU add is to its slot.
    LOCAL_COUNT.with(|c| {
        let c = black_box(c);
        c.set(c.get() + 1);
    });
});
batch_fn!(counter_atomic(a: &Padded<AtomicI64>) {
    a.0.fetch_add(1, Ordering::Relaxed);
});
/// Cache-padded atomics, one per possible CPU.
struct PerCpuAtomics(Vec<Padded<AtomicI64>>);

batch_fn!(counter_percpu_atomic(v: &PerCpuAtomics) {
    let i = cpu::sched_getcpu() as usize;
    v.0[i].0.fetch_add(1, Ordering::Relaxed);
});
batch_fn!(counter_mutex(m: &Mutex<i64>) {
    *m.lock().unwrap_or_else(PoisonError::into_inner) += 1;
});
batch_fn!(counter_sharded(c: &ConcurrentCounter) {
    c.add(1);
});

/// The op `PerCpuCounter::add` wraps, called directly (a diagnostic: what the add
/// costs once the container's per-call bookkeeping is out of the loop).
struct RawCounter {
    slots: PerCpu<AtomicI64>,
    fallback: AtomicI64,
}

#[inline(never)]
fn counter_raw(c: &RawCounter) {
    // Locals: the compiler keeps them in registers across the asm blocks, whereas
    // fields read through `&self` are reloaded after each (the asm may write memory).
    let base = c.slots.base() as usize;
    let shift = c.slots.stride_shift();
    let slots = c.slots.slots();
    for _ in 0..BATCH {
        loop {
            let Ok((area, cpu)) = ByCpu::enter() else {
                c.fallback.fetch_add(1, Ordering::Relaxed);
                break;
            };
            if cpu as usize >= slots {
                c.fallback.fetch_add(1, Ordering::Relaxed);
                break;
            }
            let slot = (base + ((cpu as usize) << shift)) as *mut isize;
            // SAFETY: `slot` is slot `cpu` of `c.slots` (in range, checked above), an
            // aligned AtomicI64 that only sequences for `cpu` write (this benchmark
            // writes it nowhere else); `cpu` was read from `area` by `enter`.
            match unsafe { arch::load_add_store::<ByCpu, NoHooks>(area, cpu, slot, 1) } {
                OpResult::Aborted { .. } => continue,
                _ => break,
            }
        }
    }
}

/// The raw op with the thread's area looked up once per batch: per increment, one
/// load of `cpu_id`, the slot computation and the sequence (the shape of the
/// reference library's loop).
#[inline(never)]
fn counter_hoisted(c: &RawCounter) {
    let base = c.slots.base() as usize;
    let shift = c.slots.stride_shift();
    let slots = c.slots.slots();
    let Ok(area) = ThreadArea::current() else {
        c.fallback.fetch_add(BATCH as i64, Ordering::Relaxed);
        return;
    };
    for _ in 0..BATCH {
        loop {
            let cpu = ByCpu::current(area);
            // Also catches the kernel's "not registered" values (-1, -2 as u32).
            if cpu as usize >= slots {
                c.fallback.fetch_add(1, Ordering::Relaxed);
                break;
            }
            let slot = (base + ((cpu as usize) << shift)) as *mut isize;
            // SAFETY: as in `counter_raw`; `area` is this thread's (a ThreadArea cannot
            // leave its thread) and `cpu` was just read from it.
            match unsafe { arch::load_add_store::<ByCpu, NoHooks>(area, cpu, slot, 1) } {
                OpResult::Aborted { .. } => continue,
                _ => break,
            }
        }
    }
}

fn raw_counter_total(name: &'static str, c: RawCounter, ops: u64) -> Result<(), String> {
    let sum: i64 = c.slots.iter().map(|s| s.load(Ordering::Relaxed)).sum();
    expect_total(name, sum + c.fallback.load(Ordering::Relaxed), ops)
}

fn new_raw_counter() -> RawCounter {
    RawCounter {
        slots: PerCpu::new(IndexBy::Cpu),
        fallback: AtomicI64::new(0),
    }
}

fn sharded_cells() -> usize {
    4 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn counter_workload() -> Workload {
    let impls = vec![
        Impl {
            name: COUNTER_RSEQ,
            kind: Kind::Rseq,
            run: runner(PerCpuCounter::new, counter_rseq, |c, ops| {
                expect_total(COUNTER_RSEQ, c.sum(), ops)
            }),
            stats_run: Some(runner(
                || PerCpuCounter::<StatsHooks>::with_hooks(IndexBy::Cpu),
                counter_rseq_stats,
                |c, ops| expect_total(COUNTER_RSEQ, c.sum(), ops),
            )),
        },
        Impl {
            name: COUNTER_STATIC,
            kind: Kind::Rseq,
            run: runner(
                || STATIC_COUNTER.sum(),
                counter_static,
                |before, ops| {
                    // Other runs add to the same static: this run added `ops` at least.
                    let added = STATIC_COUNTER.sum() - before;
                    if added >= ops as i64 {
                        Ok(())
                    } else {
                        Err(format!(
                            "{COUNTER_STATIC}: {added} added after {ops} increments"
                        ))
                    }
                },
            ),
            stats_run: None,
        },
        Impl {
            name: COUNTER_RAW,
            kind: Kind::Rseq,
            run: runner(new_raw_counter, counter_raw, |c, ops| {
                raw_counter_total(COUNTER_RAW, c, ops)
            }),
            stats_run: None,
        },
        Impl {
            name: COUNTER_HOISTED,
            kind: Kind::Rseq,
            run: runner(new_raw_counter, counter_hoisted, |c, ops| {
                raw_counter_total(COUNTER_HOISTED, c, ops)
            }),
            stats_run: None,
        },
        Impl {
            name: COUNTER_TLS,
            kind: Kind::Floor,
            run: runner(|| (), counter_tls, no_check),
            stats_run: None,
        },
        Impl {
            name: COUNTER_ATOMIC,
            kind: Kind::Baseline,
            run: runner(Padded::default, counter_atomic, |a, ops| {
                expect_total(COUNTER_ATOMIC, a.0.load(Ordering::Relaxed), ops)
            }),
            stats_run: None,
        },
        Impl {
            name: COUNTER_PERCPU_ATOMIC,
            kind: Kind::Baseline,
            run: runner(
                || {
                    PerCpuAtomics(
                        (0..restartable::possible_cpus())
                            .map(|_| Padded::default())
                            .collect(),
                    )
                },
                counter_percpu_atomic,
                |v, ops| {
                    let sum = v.0.iter().map(|a| a.0.load(Ordering::Relaxed)).sum();
                    expect_total(COUNTER_PERCPU_ATOMIC, sum, ops)
                },
            ),
            stats_run: None,
        },
        Impl {
            name: COUNTER_MUTEX,
            kind: Kind::Baseline,
            run: runner(
                || Mutex::new(0i64),
                counter_mutex,
                |m, ops| {
                    let v = m.into_inner().unwrap_or_else(PoisonError::into_inner);
                    expect_total(COUNTER_MUTEX, v, ops)
                },
            ),
            stats_run: None,
        },
        Impl {
            name: COUNTER_SHARDED,
            kind: Kind::Baseline,
            run: runner(
                || ConcurrentCounter::new(sharded_cells()),
                counter_sharded,
                |c, ops| expect_total(COUNTER_SHARDED, c.sum() as i64, ops),
            ),
            stats_run: None,
        },
    ];
    Workload {
        impls,
        unavailable: Vec::new(),
    }
}

// ---------------------------------------------------------------- lock

/// A test-and-test-and-set spin lock around a value (a relaxed atomic, so that the
/// baseline needs no `unsafe`: its load and store cost what a plain add does).
#[repr(align(128))]
#[derive(Default)]
struct SpinLock {
    locked: AtomicBool,
    value: AtomicU64,
}

impl SpinLock {
    #[inline(always)]
    fn add_one(&self) {
        let mut spins = 0u32;
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.locked.load(Ordering::Relaxed) {
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(64) {
                    std::thread::yield_now();
                } else {
                    core::hint::spin_loop();
                }
            }
        }
        let v = self.value.load(Ordering::Relaxed);
        self.value.store(v + 1, Ordering::Relaxed);
        self.locked.store(false, Ordering::Release);
    }
}

batch_fn!(lock_rseq(l: &PerCpuLock<u64>) {
    *l.lock() += 1;
});
batch_fn!(lock_rseq_stats(l: &PerCpuLock<u64, StatsHooks>) {
    *l.lock() += 1;
});
batch_fn!(lock_mutex(m: &Mutex<u64>) {
    *m.lock().unwrap_or_else(PoisonError::into_inner) += 1;
});
batch_fn!(lock_spin(s: &SpinLock) {
    s.add_one();
});

fn per_cpu_lock_total<H: restartable::hooks::Hooks>(
    mut l: PerCpuLock<u64, H>,
    ops: u64,
) -> Result<(), String> {
    let sum: u64 = l.iter_mut().map(|v| *v).sum();
    expect_total(LOCK_RSEQ, sum as i64, ops)
}

fn lock_workload() -> Workload {
    let impls = vec![
        Impl {
            name: LOCK_RSEQ,
            kind: Kind::Rseq,
            run: runner(PerCpuLock::<u64>::new, lock_rseq, per_cpu_lock_total),
            stats_run: Some(runner(
                || PerCpuLock::<u64, StatsHooks>::with_hooks(IndexBy::Cpu),
                lock_rseq_stats,
                per_cpu_lock_total,
            )),
        },
        Impl {
            name: LOCK_MUTEX,
            kind: Kind::Baseline,
            run: runner(
                || Mutex::new(0u64),
                lock_mutex,
                |m, ops| {
                    let v = m.into_inner().unwrap_or_else(PoisonError::into_inner);
                    expect_total(LOCK_MUTEX, v as i64, ops)
                },
            ),
            stats_run: None,
        },
        Impl {
            name: LOCK_SPIN,
            kind: Kind::Baseline,
            run: runner(SpinLock::default, lock_spin, |s, ops| {
                expect_total(LOCK_SPIN, s.value.load(Ordering::Relaxed) as i64, ops)
            }),
            stats_run: None,
        },
    ];
    Workload {
        impls,
        unavailable: Vec::new(),
    }
}

// ---------------------------------------------------------------- stack and buffer

/// Items put in every CPU's slot (and, in total, in the shared baselines) before a
/// run, so that pops find items even right after a migration.
const PREFILL_PER_CPU: usize = 64;
/// Per-CPU capacity of the measured buffer.
const BUF_CAP: usize = 256;

fn prefill_total() -> usize {
    PREFILL_PER_CPU * super::harness::allowed_cpus().len().max(1)
}

batch_fn!(stack_rseq(s: &PerCpuStack<u64>) {
    s.push(black_box(1));
    black_box(s.pop());
});
batch_fn!(stack_nodes(s: &PerCpuStack<u64>) {
    if let Some(n) = s.pop_node() {
        s.push_node(black_box(n));
    }
});
batch_fn!(stack_nodes_stats(s: &PerCpuStack<u64, StatsHooks>) {
    if let Some(n) = s.pop_node() {
        s.push_node(black_box(n));
    }
});
batch_fn!(stack_rseq_stats(s: &PerCpuStack<u64, StatsHooks>) {
    s.push(black_box(1));
    black_box(s.pop());
});
batch_fn!(buffer_rseq(b: &PerCpuBuffer<u64, BUF_CAP>) {
    let _ = black_box(b.push(black_box(1)));
    black_box(b.pop());
});
batch_fn!(buffer_rseq_stats(b: &PerCpuBuffer<u64, BUF_CAP, StatsHooks>) {
    let _ = black_box(b.push(black_box(1)));
    black_box(b.pop());
});
batch_fn!(buffer_box(b: &(PerCpuBuffer<Box<u64>, BUF_CAP>, Mutex<Option<Box<u64>>>)) {
    // One box goes round: pop one, push it back (like the reference's pointer buffer).
    if let Some(x) = b.0.pop() {
        let _ = black_box(b.0.push(black_box(x)));
    }
});
batch_fn!(pool_rseq(p: &PerCpuPool<Vec<u8>>) {
    let o = p.get();
    black_box(&*o);
    drop(o);
});
batch_fn!(pool_lockfree(p: &lockfree_object_pool::LinearObjectPool<Vec<u8>>) {
    let o = p.pull();
    black_box(&*o);
    drop(o);
});
batch_fn!(pool_object(p: &object_pool::Pool<Vec<u8>>) {
    let o = p.pull(Vec::new);
    black_box(&*o);
    drop(o);
});
batch_fn!(pool_slab(p: &sharded_slab::Pool<Vec<u8>>) {
    if let Some(key) = p.create_with(|v| { black_box(v); }) {
        black_box(p.clear(key));
    }
});
batch_fn!(mutex_vec(m: &Mutex<Vec<u64>>) {
    m.lock().unwrap_or_else(PoisonError::into_inner).push(black_box(1));
    black_box(m.lock().unwrap_or_else(PoisonError::into_inner).pop());
});
batch_fn!(seg_queue(q: &SegQueue<u64>) {
    q.push(black_box(1));
    black_box(q.pop());
});
batch_fn!(array_queue(q: &ArrayQueue<u64>) {
    let _ = black_box(q.push(black_box(1)));
    black_box(q.pop());
});
batch_fn!(alloc_free(_s: &()) {
    drop(black_box(Box::new(black_box(1u64))));
});

/// Pops must never lose items: after the run at least the prefilled items are there
/// (more if some pop found its CPU's list empty and returned `None`).
fn expect_at_least(what: &str, got: usize) -> Result<(), String> {
    let want = prefill_total();
    if got >= want {
        Ok(())
    } else {
        Err(format!("{what}: {got} items left, {want} were put in"))
    }
}

fn shared_baselines(unbounded: bool) -> Vec<Impl> {
    let mut v = vec![Impl {
        name: MUTEX_VEC,
        kind: Kind::Baseline,
        run: runner(
            || Mutex::new(vec![0u64; prefill_total()]),
            mutex_vec,
            |m, _| {
                let n = m.into_inner().unwrap_or_else(PoisonError::into_inner).len();
                expect_at_least(MUTEX_VEC, n)
            },
        ),
        stats_run: None,
    }];
    if unbounded {
        v.push(Impl {
            name: SEG_QUEUE,
            kind: Kind::Baseline,
            run: runner(
                || {
                    let q = SegQueue::new();
                    (0..prefill_total()).for_each(|_| q.push(0u64));
                    q
                },
                seg_queue,
                |q, _| expect_at_least(SEG_QUEUE, q.len()),
            ),
            stats_run: None,
        });
    }
    v.push(Impl {
        name: ARRAY_QUEUE,
        kind: Kind::Baseline,
        run: runner(
            || {
                let q = ArrayQueue::new(BUF_CAP * super::harness::allowed_cpus().len().max(1));
                (0..prefill_total()).for_each(|_| {
                    let _ = q.push(0u64);
                });
                q
            },
            array_queue,
            |q, _| expect_at_least(ARRAY_QUEUE, q.len()),
        ),
        stats_run: None,
    });
    v.push(Impl {
        name: ALLOC,
        kind: Kind::Floor,
        run: runner(|| (), alloc_free, no_check),
        stats_run: None,
    });
    v
}

fn new_stack<H: restartable::hooks::Hooks>() -> PerCpuStack<u64, H> {
    let s = PerCpuStack::<u64, H>::with_hooks(IndexBy::Cpu);
    on_each_cpu(|| (0..PREFILL_PER_CPU).for_each(|_| s.push(0)));
    s
}

fn new_buffer<H: restartable::hooks::Hooks>() -> PerCpuBuffer<u64, BUF_CAP, H> {
    let b = PerCpuBuffer::<u64, BUF_CAP, H>::with_hooks(IndexBy::Cpu);
    on_each_cpu(|| {
        (0..PREFILL_PER_CPU).for_each(|_| {
            let _ = b.push(0);
        })
    });
    b
}

fn stack_workload() -> Workload {
    let mut impls = vec![Impl {
        name: STACK_RSEQ,
        kind: Kind::Rseq,
        run: runner(new_stack, stack_rseq, |mut s, _| {
            expect_at_least(STACK_RSEQ, s.drain().len())
        }),
        stats_run: Some(runner(new_stack, stack_rseq_stats, |mut s, _| {
            expect_at_least(STACK_RSEQ, s.drain().len())
        })),
    }];
    impls.push(Impl {
        name: STACK_NODES,
        kind: Kind::Rseq,
        run: runner(new_stack, stack_nodes, |mut s, _| {
            expect_at_least(STACK_NODES, s.drain().len())
        }),
        stats_run: Some(runner(new_stack, stack_nodes_stats, |mut s, _| {
            expect_at_least(STACK_NODES, s.drain().len())
        })),
    });
    impls.extend(shared_baselines(true));
    Workload {
        impls,
        unavailable: Vec::new(),
    }
}

fn new_box_buffer() -> (PerCpuBuffer<Box<u64>, BUF_CAP>, Mutex<Option<Box<u64>>>) {
    let b = PerCpuBuffer::<Box<u64>, BUF_CAP>::with_index(IndexBy::Cpu);
    on_each_cpu(|| {
        (0..PREFILL_PER_CPU).for_each(|_| {
            let _ = b.push(Box::new(0));
        })
    });
    (b, Mutex::new(None))
}

fn buffer_workload() -> Workload {
    let mut impls = vec![
        Impl {
            name: BUFFER_RSEQ,
            kind: Kind::Rseq,
            run: runner(new_buffer, buffer_rseq, |mut b, _| {
                expect_at_least(BUFFER_RSEQ, b.drain().len())
            }),
            stats_run: Some(runner(new_buffer, buffer_rseq_stats, |mut b, _| {
                expect_at_least(BUFFER_RSEQ, b.drain().len())
            })),
        },
        Impl {
            name: BUFFER_BOX,
            kind: Kind::Rseq,
            run: runner(new_box_buffer, buffer_box, |(mut b, _), _| {
                // Pops and pushes move boxes: none is lost or made.
                let n = b.drain().len();
                let want = prefill_total();
                if n == want {
                    Ok(())
                } else {
                    Err(format!("{BUFFER_BOX}: {n} boxes left, {want} were put in"))
                }
            }),
            stats_run: None,
        },
    ];
    impls.extend(shared_baselines(false));
    Workload {
        impls,
        unavailable: Vec::new(),
    }
}

fn new_pool() -> PerCpuPool<Vec<u8>> {
    let p: PerCpuPool<Vec<u8>> = PerCpuPool::new(|| Vec::with_capacity(64));
    on_each_cpu(|| p.prefill(PREFILL_PER_CPU));
    p
}

/// Every pool ends with at least the objects it was prefilled with (more when a get
/// found its CPU's cache empty and made one).
fn pool_workload() -> Workload {
    let impls = vec![
        Impl {
            name: POOL_RSEQ,
            kind: Kind::Rseq,
            run: runner(new_pool, pool_rseq, |mut p, _| {
                expect_at_least(POOL_RSEQ, p.drain().len())
            }),
            stats_run: None,
        },
        Impl {
            name: POOL_LOCKFREE,
            kind: Kind::Baseline,
            run: runner(
                || {
                    let p = lockfree_object_pool::LinearObjectPool::new(
                        || Vec::with_capacity(64),
                        |v: &mut Vec<u8>| v.clear(),
                    );
                    let held: Vec<_> = (0..prefill_total()).map(|_| p.pull()).collect();
                    drop(held);
                    p
                },
                pool_lockfree,
                no_check,
            ),
            stats_run: None,
        },
        Impl {
            name: POOL_OBJECT,
            kind: Kind::Baseline,
            run: runner(
                || object_pool::Pool::new(prefill_total(), || Vec::with_capacity(64)),
                pool_object,
                |p, _| expect_at_least(POOL_OBJECT, p.len()),
            ),
            stats_run: None,
        },
        Impl {
            name: POOL_SLAB,
            kind: Kind::Baseline,
            run: runner(sharded_slab::Pool::new, pool_slab, no_check),
            stats_run: None,
        },
    ];
    Workload {
        impls,
        unavailable: Vec::new(),
    }
}

/// The workload `id` with its implementations.
pub fn build(id: WorkloadId) -> Workload {
    match id {
        WorkloadId::Cpu => cpu_workload(),
        WorkloadId::Counter => counter_workload(),
        WorkloadId::Lock => lock_workload(),
        WorkloadId::Stack => stack_workload(),
        WorkloadId::Buffer => buffer_workload(),
        WorkloadId::Pool => pool_workload(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every implementation runs and passes its own check.
    #[test]
    fn every_impl_runs_and_checks() {
        for id in WorkloadId::ALL {
            let w = build(id);
            for i in &w.impls {
                for threads in [1, 3] {
                    let s = (i.run)(threads, Duration::from_millis(2))
                        .unwrap_or_else(|e| panic!("{}: {e}", i.name));
                    assert!(s.ops > 0, "{}", i.name);
                    if let Some(st) = &i.stats_run {
                        st(threads, Duration::from_millis(2))
                            .unwrap_or_else(|e| panic!("{} (stats): {e}", i.name));
                    }
                }
                assert!(
                    !describe(i.name).is_empty(),
                    "{} has no description",
                    i.name
                );
            }
        }
    }
}
