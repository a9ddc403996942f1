//! Workloads shared by the container tests (`containers.rs`, and the child processes
//! of `containers_env.rs`): each runs many threads on one container and asserts that
//! nothing was lost, duplicated or torn, returning every thread's outcome counts.
//!
//! - [`counter`]: signed adds (negative deltas included); the sum must be exact.
//! - [`lock`]: lock, increment a pair of words with plain loads and stores, unlock; the
//!   pair must agree inside every critical section and add up exactly at the end.
//! - [`bag`] (stack, buffer, memcpy buffer): prepopulated with unique ids; threads pop
//!   and push back, minting fresh ids when a pop finds nothing; at the end a drain
//!   must return every id exactly once, every item intact.

#![allow(dead_code)]

#[path = "../support/affinity.rs"]
mod affinity;
pub use affinity::pin_current_thread;

use std::sync::atomic::{compiler_fence, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

use restartable::hooks::{self, Hooks, Stats};
use restartable::{
    IndexBy, PerCpuBuffer, PerCpuCounter, PerCpuLock, PerCpuMemcpyBuffer, PerCpuPool, PerCpuStack,
    StackNode,
};

/// Capacity per CPU of the buffers under test: small, so that they fill up and the
/// "full" path runs too.
pub const CAP: usize = 64;

/// Threads per test: 6 × the CPUs this process may run on, so that threads outnumber
/// cores and get preempted (12 on a 2-core machine).
pub fn threads() -> usize {
    6 * allowed_cpus().len()
}

/// The CPUs this process may run on (the main thread's affinity, read once).
pub fn allowed_cpus() -> &'static [usize] {
    static CPUS: OnceLock<Vec<usize>> = OnceLock::new();
    CPUS.get_or_init(|| {
        // SAFETY: an all-zero cpu_set_t is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
        // SAFETY: `set` is a valid cpu_set_t of the size passed; the pid is this
        // process's main thread, never pinned by these tests.
        let r = unsafe {
            libc::sched_getaffinity(
                libc::getpid(),
                core::mem::size_of::<libc::cpu_set_t>(),
                &mut set,
            )
        };
        assert_eq!(
            r,
            0,
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        );
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `i` is below CPU_SETSIZE.
            .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
            .collect();
        assert!(!cpus.is_empty());
        cpus
    })
}

static SIGNALS: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_signal(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::Relaxed);
}

/// Signals handled so far by the handler of [`install_counting_handler`].
pub fn signals_handled() -> u64 {
    SIGNALS.load(Ordering::Relaxed)
}

fn install_handler(sig: libc::c_int, handler: extern "C" fn(libc::c_int)) {
    // SAFETY: an all-zero sigaction is valid (no flags, empty mask) before we fill it.
    let mut sa: libc::sigaction = unsafe { core::mem::zeroed() };
    sa.sa_sigaction = handler as usize;
    sa.sa_flags = libc::SA_RESTART;
    // SAFETY: `sa.sa_mask` is a valid sigset_t to initialize.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    // SAFETY: `sa` is fully initialized; the handlers used here are async-signal-safe
    // (an atomic add, or raw system calls); no old action is asked for.
    let r = unsafe { libc::sigaction(sig, &sa, core::ptr::null_mut()) };
    assert_eq!(
        r,
        0,
        "sigaction({sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// Installs a handler for `sig` that only counts (with `SA_RESTART`): the signal
/// interrupts the thread, aborting the sequence in flight.
pub fn install_counting_handler(sig: libc::c_int) {
    install_handler(sig, count_signal);
}

/// The CPUs a [`install_migrating_handler`] handler moves threads between (set before
/// the handler is installed; read in the handler without locking).
static MIGRATE_CPUS: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

extern "C" fn migrate_on_signal(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::Relaxed);
    let (a, b) = (
        MIGRATE_CPUS[0].load(Ordering::Relaxed),
        MIGRATE_CPUS[1].load(Ordering::Relaxed),
    );
    // SAFETY: sched_getcpu only reads (the rseq area or the vDSO).
    let now = unsafe { libc::sched_getcpu() };
    let to = if now == a as i32 { b } else { a };
    // SAFETY: an all-zero cpu_set_t is a valid empty set; `to` is below CPU_SETSIZE.
    let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::CPU_SET(to, &mut set) };
    // SAFETY: a raw system call on this thread with a valid set (async-signal-safe).
    unsafe { libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set) };
}

/// Installs a handler for `sig` that moves the interrupted thread to another CPU
/// (between the first two allowed CPUs): a signal sent between reading the CPU and
/// the sequence then makes the sequence run on another CPU than it was prepared for.
/// Returns false (and installs nothing) when fewer than two CPUs are allowed.
pub fn install_migrating_handler(sig: libc::c_int) -> bool {
    let cpus = allowed_cpus();
    if cpus.len() < 2 {
        return false;
    }
    MIGRATE_CPUS[0].store(cpus[0], Ordering::Relaxed);
    MIGRATE_CPUS[1].store(cpus[1], Ordering::Relaxed);
    install_handler(sig, migrate_on_signal);
    true
}

/// A timer that sends `SIGUSR1` to the calling thread every `period` (a per-thread
/// signal storm driven by the kernel's high-resolution timers, so that it does not
/// depend on a helper thread getting the CPU). Deleted on drop.
struct SignalTimer(libc::timer_t);

impl SignalTimer {
    fn start(period: Duration) -> SignalTimer {
        // SAFETY: an all-zero sigevent is valid before we fill the fields we use.
        let mut ev: libc::sigevent = unsafe { core::mem::zeroed() };
        ev.sigev_notify = libc::SIGEV_THREAD_ID;
        ev.sigev_signo = libc::SIGUSR1;
        // SAFETY: gettid has no preconditions.
        ev.sigev_notify_thread_id = unsafe { libc::gettid() };
        let mut timer: libc::timer_t = core::ptr::null_mut();
        // SAFETY: `ev` and `timer` are valid for the call.
        let r = unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut timer) };
        assert_eq!(r, 0, "timer_create: {}", std::io::Error::last_os_error());
        let ts = libc::timespec {
            tv_sec: period.as_secs() as libc::time_t,
            tv_nsec: period.subsec_nanos() as libc::c_long,
        };
        let spec = libc::itimerspec {
            it_interval: ts,
            it_value: ts,
        };
        // SAFETY: `timer` was just created; `spec` is valid.
        let r = unsafe { libc::timer_settime(timer, 0, &spec, core::ptr::null_mut()) };
        assert_eq!(r, 0, "timer_settime: {}", std::io::Error::last_os_error());
        SignalTimer(timer)
    }
}

impl Drop for SignalTimer {
    fn drop(&mut self) {
        // SAFETY: the timer was created by `start` and is deleted once.
        unsafe { libc::timer_delete(self.0) };
    }
}

fn no_setup(_: usize) {}
fn no_begin() {}
fn no_tick(_: usize, _: usize) {}

/// How to run a workload.
#[derive(Clone, Copy)]
pub struct Work<'a> {
    /// Worker threads.
    pub threads: usize,
    /// Iterations per thread.
    pub reps: usize,
    /// Run by each worker (with its number) before its first operation.
    pub setup: &'a (dyn Fn(usize) + Sync),
    /// Run by each worker before each iteration (with its number and the iteration).
    pub tick: &'a (dyn Fn(usize, usize) + Sync),
    /// When set, every worker gets `SIGUSR1` with this period while it works (a
    /// signal storm, from a per-thread timer); the caller installs the handler.
    pub storm: Option<Duration>,
    /// Run once before the workers start (after the container was prepopulated).
    pub begin: &'a (dyn Fn() + Sync),
}

impl Work<'static> {
    /// `threads` workers doing `reps` iterations, nothing else.
    pub fn new(threads: usize, reps: usize) -> Self {
        Work {
            threads,
            reps,
            setup: &no_setup,
            tick: &no_tick,
            storm: None,
            begin: &no_begin,
        }
    }
}

/// The sum of per-thread counts.
pub fn total(stats: &[Stats]) -> Stats {
    let mut t = Stats::default();
    for s in stats {
        t += *s;
    }
    t
}

/// Calls its function when dropped, also while unwinding.
pub struct OnDrop<F: FnMut()>(pub F);
impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// Runs `body(t)` on `w.threads` threads started together; returns, per thread, what
/// it returned and its outcome counts (taken at its end). With `w.storm`, each thread
/// gets `SIGUSR1` from its own timer while it works (the caller installs the
/// handler). A worker's panic is propagated.
pub fn run<R: Send>(w: &Work<'_>, body: impl Fn(usize) -> R + Sync) -> Vec<(R, Stats)> {
    let barrier = Barrier::new(w.threads);
    let signals_before = signals_handled();
    (w.begin)();
    let out = std::thread::scope(|s| {
        let handles: Vec<_> = (0..w.threads)
            .map(|t| {
                let (barrier, body) = (&barrier, &body);
                s.spawn(move || {
                    barrier.wait();
                    let storm = w.storm.map(SignalTimer::start);
                    (w.setup)(t);
                    let r = body(t);
                    if storm.is_some() {
                        // A fast run can end before its timer's first signal: keep the
                        // timer going until one arrived, so the check below is forced.
                        let waited = Instant::now();
                        while signals_handled() == signals_before
                            && waited.elapsed() < Duration::from_secs(60)
                        {
                            std::thread::sleep(Duration::from_micros(100));
                        }
                    }
                    drop(storm);
                    (r, hooks::thread_stats())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect::<Vec<_>>()
    });
    if w.storm.is_some() {
        assert!(
            signals_handled() > signals_before,
            "the signal storm delivered no signal"
        );
    }
    out
}

fn stats_of<R>(out: Vec<(R, Stats)>) -> Vec<Stats> {
    out.into_iter().map(|(_, s)| s).collect()
}

/// `PerCpuCounter`: every thread adds positive and negative deltas; the sum (and its
/// parts) must be exact, and `sum_and_reset` must return it all.
pub fn counter<H: Hooks>(index: IndexBy, w: &Work<'_>) -> Vec<Stats> {
    let c = PerCpuCounter::<H>::with_hooks(index);
    let out = run(w, |t| {
        let mut expect = 0i64;
        for j in 0..w.reps {
            (w.tick)(t, j);
            match j % 4 {
                0 => {
                    c.inc();
                    expect += 1;
                }
                1 => {
                    let d = 3 * (t as i64 + 1);
                    c.add(d);
                    expect += d;
                }
                2 => {
                    c.dec();
                    expect -= 1;
                }
                _ => {
                    let d = -((j % 7) as i64) - 2 * t as i64;
                    c.add(d);
                    expect += d;
                }
            }
        }
        expect
    });
    let expect: i64 = out.iter().map(|(e, _)| e).sum();
    assert_eq!(
        c.sum(),
        expect,
        "PerCpuCounter ({:?}): adds lost or duplicated",
        c.index()
    );
    let parts: i64 = c.per_cpu().iter().sum::<i64>() + c.fallback_value();
    assert_eq!(parts, expect, "per-CPU values + fallback != sum");
    assert_eq!(c.sum_and_reset(), expect);
    assert_eq!(c.sum(), 0, "sum_and_reset left something behind");
    stats_of(out)
}

/// `PerCpuLock`: every thread locks, increments the two words of its CPU's instance
/// with plain (non-RMW) loads and stores, and unlocks. Two holders of one instance
/// would show as words that disagree or as lost increments. The guard is held across
/// `tick` (a migration, in the migration test) and, now and then, a yield.
pub fn lock<H: Hooks>(index: IndexBy, w: &Work<'_>) -> Vec<Stats> {
    let mut lock = PerCpuLock::<[AtomicU64; 2], H>::with_hooks(index);
    let out = run(w, |t| {
        for j in 0..w.reps {
            let g = lock.lock();
            let a = g[0].load(Ordering::Relaxed);
            let b = g[1].load(Ordering::Relaxed);
            assert_eq!(a, b, "two holders of one per-CPU lock instance");
            g[0].store(a + 1, Ordering::Relaxed);
            (w.tick)(t, j);
            if j % 64 == 63 {
                std::thread::yield_now();
            }
            compiler_fence(Ordering::SeqCst);
            g[1].store(b + 1, Ordering::Relaxed);
        }
    });
    let mut sum = 0u64;
    for v in lock.iter_mut() {
        let (a, b) = (*v[0].get_mut(), *v[1].get_mut());
        assert_eq!(a, b, "an instance's words disagree");
        sum += a;
    }
    assert_eq!(
        sum,
        (w.threads * w.reps) as u64,
        "PerCpuLock ({:?}): increments lost or duplicated",
        lock.index()
    );
    stats_of(out)
}

/// A 64-byte item whose words are all derived from its id: a torn copy (half of one
/// item, half of another) or a stale one fails [`Item::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Item {
    id: u64,
    words: [u64; 7],
}

impl Item {
    /// The item of `id`.
    pub fn new(id: u64) -> Item {
        let mut words = [0u64; 7];
        for (k, w) in words.iter_mut().enumerate() {
            *w = id
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .rotate_left(9 * k as u32 + 1)
                ^ (k as u64 + 1);
        }
        Item { id, words }
    }

    /// Its id, after checking that every word matches it.
    pub fn check(&self) -> u64 {
        assert_eq!(*self, Item::new(self.id), "torn or corrupted item");
        self.id
    }
}

const _: () = assert!(core::mem::size_of::<Item>() == 64);

/// A container of values with push, pop and drain, for [`bag`].
pub trait Bag: Sync {
    /// What it holds.
    type V: Send;
    /// How many ids to put in before the threads start.
    const PREPOP: u64;
    /// The value of `id`.
    fn make(id: u64) -> Self::V;
    /// The id of `v`, checking it is intact.
    fn id(v: &Self::V) -> u64;
    /// Push; gives the value back when full.
    fn put(&self, v: Self::V) -> Result<(), Self::V>;
    /// Pop.
    fn take(&self) -> Option<Self::V>;
    /// Everything left, with exclusive access.
    fn drain_all(&mut self) -> Vec<Self::V>;
}

impl<H: Hooks> Bag for PerCpuStack<u64, H> {
    type V = u64;
    const PREPOP: u64 = 256;
    fn make(id: u64) -> u64 {
        id
    }
    fn id(v: &u64) -> u64 {
        *v
    }
    fn put(&self, v: u64) -> Result<(), u64> {
        self.push(v);
        Ok(())
    }
    fn take(&self) -> Option<u64> {
        self.pop()
    }
    fn drain_all(&mut self) -> Vec<u64> {
        self.drain()
    }
}

impl<H: Hooks> Bag for PerCpuBuffer<Item, CAP, H> {
    type V = Item;
    const PREPOP: u64 = CAP as u64 / 2;
    fn make(id: u64) -> Item {
        Item::new(id)
    }
    fn id(v: &Item) -> u64 {
        v.check()
    }
    fn put(&self, v: Item) -> Result<(), Item> {
        self.push(v)
    }
    fn take(&self) -> Option<Item> {
        self.pop()
    }
    fn drain_all(&mut self) -> Vec<Item> {
        self.drain()
    }
}

impl<H: Hooks> Bag for PerCpuMemcpyBuffer<Item, CAP, H> {
    type V = Item;
    const PREPOP: u64 = CAP as u64 / 2;
    fn make(id: u64) -> Item {
        Item::new(id)
    }
    fn id(v: &Item) -> u64 {
        v.check()
    }
    fn put(&self, v: Item) -> Result<(), Item> {
        self.push(v)
    }
    fn take(&self) -> Option<Item> {
        self.pop()
    }
    fn drain_all(&mut self) -> Vec<Item> {
        self.drain()
    }
}

/// The stack with owned nodes: pushes and pops move the nodes (no allocation).
impl<H: Hooks> Bag for Nodes<PerCpuStack<u64, H>> {
    type V = StackNode<u64>;
    const PREPOP: u64 = 256;
    fn make(id: u64) -> StackNode<u64> {
        StackNode::new(id)
    }
    fn id(v: &StackNode<u64>) -> u64 {
        **v
    }
    fn put(&self, v: StackNode<u64>) -> Result<(), StackNode<u64>> {
        self.0.push_node(v);
        Ok(())
    }
    fn take(&self) -> Option<StackNode<u64>> {
        self.0.pop_node()
    }
    fn drain_all(&mut self) -> Vec<StackNode<u64>> {
        self.0.drain().into_iter().map(StackNode::new).collect()
    }
}

/// A stack used through its owned-node API.
pub struct Nodes<S>(pub S);

/// The buffer holding word-sized values (boxes) in its slots: no allocation inside
/// the buffer, ownership moved by the sequence.
impl<H: Hooks> Bag for PerCpuBuffer<Box<Item>, CAP, H> {
    type V = Box<Item>;
    const PREPOP: u64 = CAP as u64 / 2;
    fn make(id: u64) -> Box<Item> {
        Box::new(Item::new(id))
    }
    fn id(v: &Box<Item>) -> u64 {
        v.check()
    }
    fn put(&self, v: Box<Item>) -> Result<(), Box<Item>> {
        self.push(v)
    }
    fn take(&self) -> Option<Box<Item>> {
        self.pop()
    }
    fn drain_all(&mut self) -> Vec<Box<Item>> {
        self.drain()
    }
}

/// The object pool: `put` returns an object, `take` gets a free one (never making
/// one: `try_get`), detached from the pool so that the workload holds it.
impl<H: Hooks> Bag for PerCpuPool<Item, fn() -> Item, CAP, H> {
    type V = Box<Item>;
    const PREPOP: u64 = CAP as u64 / 2;
    fn make(id: u64) -> Box<Item> {
        Box::new(Item::new(id))
    }
    fn id(v: &Box<Item>) -> u64 {
        v.check()
    }
    fn put(&self, v: Box<Item>) -> Result<(), Box<Item>> {
        PerCpuPool::put(self, v);
        Ok(())
    }
    fn take(&self) -> Option<Box<Item>> {
        self.try_get().map(|p| p.into_box())
    }
    fn drain_all(&mut self) -> Vec<Box<Item>> {
        self.drain().into_iter().map(Box::new).collect()
    }
}

/// A buffer whose pushes commit with a release store (`push_release`, the reference's
/// `-M`).
pub struct ReleasePush<B>(pub B);

impl<H: Hooks> Bag for ReleasePush<PerCpuBuffer<Item, CAP, H>> {
    type V = Item;
    const PREPOP: u64 = CAP as u64 / 2;
    fn make(id: u64) -> Item {
        Item::new(id)
    }
    fn id(v: &Item) -> u64 {
        v.check()
    }
    fn put(&self, v: Item) -> Result<(), Item> {
        self.0.push_release(v)
    }
    fn take(&self) -> Option<Item> {
        self.0.pop()
    }
    fn drain_all(&mut self) -> Vec<Item> {
        self.0.drain()
    }
}

impl<H: Hooks> Bag for ReleasePush<PerCpuMemcpyBuffer<Item, CAP, H>> {
    type V = Item;
    const PREPOP: u64 = CAP as u64 / 2;
    fn make(id: u64) -> Item {
        Item::new(id)
    }
    fn id(v: &Item) -> u64 {
        v.check()
    }
    fn put(&self, v: Item) -> Result<(), Item> {
        self.0.push_release(v)
    }
    fn take(&self) -> Option<Item> {
        self.0.pop()
    }
    fn drain_all(&mut self) -> Vec<Item> {
        self.0.drain()
    }
}

/// A fresh id for thread `t`, distinct from every prepopulated id and every other
/// thread's.
pub fn fresh_id(t: usize, n: usize) -> u64 {
    ((t as u64 + 1) << 40) | n as u64
}

/// Asserts that `seen` holds every id of `expected` exactly once and nothing else.
pub fn assert_same_ids(what: &str, mut seen: Vec<u64>, mut expected: Vec<u64>) {
    let (sum_seen, sum_expected) = (
        seen.iter().fold(0u64, |a, &b| a.wrapping_add(b)),
        expected.iter().fold(0u64, |a, &b| a.wrapping_add(b)),
    );
    seen.sort_unstable();
    expected.sort_unstable();
    if seen != expected {
        let dups: Vec<u64> = seen
            .windows(2)
            .filter(|p| p[0] == p[1])
            .map(|p| p[0])
            .collect();
        let set: std::collections::HashSet<u64> = seen.iter().copied().collect();
        let lost: Vec<u64> = expected
            .iter()
            .copied()
            .filter(|i| !set.contains(i))
            .collect();
        panic!(
            "{what}: {} ids seen, {} expected; {} duplicated (first {:x?}), {} lost (first {:x?})",
            seen.len(),
            expected.len(),
            dups.len(),
            &dups[..dups.len().min(5)],
            lost.len(),
            &lost[..lost.len().min(5)],
        );
    }
    assert_eq!(sum_seen, sum_expected, "{what}: id sums differ");
}

/// Stack, buffer, memcpy buffer: prepopulate, then every thread pops bursts of one to
/// four values (minting a fresh id when a pop finds nothing) and pushes as many back
/// (keeping what does not fit); at the end each thread pushes what it holds. Every
/// prepopulated and minted id must come out of the final drain (or be held because
/// the container was full) exactly once, intact.
pub fn bag<B: Bag>(mut b: B, what: &str, w: &Work<'_>) -> Vec<Stats> {
    for id in 0..B::PREPOP {
        assert!(b.put(B::make(id)).is_ok(), "{what}: prepopulating");
    }
    let out = run(w, |t| {
        let mut held: Vec<B::V> = Vec::new();
        let mut fresh: Vec<u64> = Vec::new();
        for j in 0..w.reps {
            (w.tick)(t, j);
            let burst = 1 + j % 4;
            for _ in 0..burst {
                match b.take() {
                    Some(v) => {
                        B::id(&v);
                        held.push(v);
                    }
                    None => {
                        let id = fresh_id(t, fresh.len());
                        fresh.push(id);
                        held.push(B::make(id));
                    }
                }
            }
            for _ in 0..burst {
                let v = held.pop().expect("held at least a burst");
                if let Err(v) = b.put(v) {
                    held.push(v);
                    break;
                }
            }
        }
        let mut left = Vec::new();
        for v in held {
            if let Err(v) = b.put(v) {
                left.push(B::id(&v));
            }
        }
        (fresh, left)
    });
    let mut seen: Vec<u64> = b.drain_all().iter().map(B::id).collect();
    assert!(
        b.drain_all().is_empty(),
        "{what}: a second drain found values"
    );
    let mut expected: Vec<u64> = (0..B::PREPOP).collect();
    let mut stats = Vec::with_capacity(out.len());
    for ((fresh, left), s) in out {
        expected.extend(fresh);
        seen.extend(left);
        stats.push(s);
    }
    assert_same_ids(what, seen, expected);
    stats
}

/// Operations per iteration of [`bag`] (a burst of 1-4 pops and as many pushes): the
/// counter and lock runs of [`every_container`] do this many iterations more, so that
/// every container does about the same number of operations.
pub const BAG_OPS: usize = 5;

/// One container's run in [`every_container`].
pub struct Run {
    /// The container.
    pub name: &'static str,
    /// Each thread's outcome counts.
    pub stats: Vec<Stats>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Run {
    /// The counts summed over threads.
    pub fn total(&self) -> Stats {
        total(&self.stats)
    }
}

/// Runs `f`, timing it.
pub fn timed(name: &'static str, f: impl FnOnce() -> Vec<Stats>) -> Run {
    let start = Instant::now();
    let stats = f();
    Run {
        name,
        stats,
        elapsed: start.elapsed(),
    }
}

/// Every container with hooks `H` in index mode `index`, each under `w` (the counter
/// and the lock with [`BAG_OPS`] × the iterations).
pub fn every_container<H: Hooks>(index: IndexBy, w: &Work<'_>) -> Vec<Run> {
    CONTAINERS
        .iter()
        .map(|&name| one_container::<H>(name, index, w))
        .collect()
}

/// The names of the containers [`every_bag`] runs, in its order.
pub const BAGS: [&str; 8] = [
    "stack",
    "buffer",
    "buffer (release)",
    "memcpy buffer",
    "memcpy buffer (release)",
    "word buffer",
    "pool",
    "stack (nodes)",
];

/// The stack, the buffers and the memcpy buffers (each also with release pushes)
/// under [`bag`].
pub fn every_bag<H: Hooks>(index: IndexBy, w: &Work<'_>) -> Vec<Run> {
    BAGS.iter()
        .map(|&name| one_bag::<H>(name, index, w))
        .collect()
}

/// The container of [`BAGS`] called `name` under [`bag`].
pub fn one_bag<H: Hooks>(name: &'static str, index: IndexBy, w: &Work<'_>) -> Run {
    let what = format!("{name} ({index:?})");
    timed(name, || match name {
        "stack" => bag(PerCpuStack::<u64, H>::with_hooks(index), &what, w),
        "buffer" => bag(PerCpuBuffer::<Item, CAP, H>::with_hooks(index), &what, w),
        "buffer (release)" => bag(
            ReleasePush(PerCpuBuffer::<Item, CAP, H>::with_hooks(index)),
            &what,
            w,
        ),
        "memcpy buffer" => bag(
            PerCpuMemcpyBuffer::<Item, CAP, H>::with_hooks(index),
            &what,
            w,
        ),
        "memcpy buffer (release)" => bag(
            ReleasePush(PerCpuMemcpyBuffer::<Item, CAP, H>::with_hooks(index)),
            &what,
            w,
        ),
        "word buffer" => bag(
            PerCpuBuffer::<Box<Item>, CAP, H>::with_hooks(index),
            &what,
            w,
        ),
        "pool" => bag(
            PerCpuPool::<Item, fn() -> Item, CAP, H>::with_hooks(index, || {
                panic!("the workload never asks the pool to make an object")
            }),
            &what,
            w,
        ),
        "stack (nodes)" => bag(Nodes(PerCpuStack::<u64, H>::with_hooks(index)), &what, w),
        _ => panic!("no container called {name:?}"),
    })
}

/// The container of [`CONTAINERS`] called `name` under its workload (the counter and
/// the lock with [`BAG_OPS`] × the iterations, as in [`every_container`]).
pub fn one_container<H: Hooks>(name: &'static str, index: IndexBy, w: &Work<'_>) -> Run {
    let single = Work {
        reps: w.reps * BAG_OPS,
        ..*w
    };
    match name {
        "counter" => timed(name, || counter::<H>(index, &single)),
        "lock" => timed(name, || lock::<H>(index, &single)),
        _ => one_bag::<H>(name, index, w),
    }
}

/// The names of the containers [`every_container`] runs, in its order.
pub const CONTAINERS: [&str; 10] = [
    "counter", "lock", BAGS[0], BAGS[1], BAGS[2], BAGS[3], BAGS[4], BAGS[5], BAGS[6], BAGS[7],
];

/// Prints one line per run: counts summed over threads, and the wall time.
pub fn print_runs(what: &str, runs: &[Run]) {
    for r in runs {
        let t = r.total();
        eprintln!(
            "{what:<22} {:<24} commits {:>7} cmpfail {:>7} aborts {:>6} fallbacks {:>6} {:>6.1} ms",
            r.name,
            t.commits,
            t.compare_failures,
            t.aborts,
            t.fallbacks,
            r.elapsed.as_secs_f64() * 1e3
        );
    }
}

/// Both index modes.
pub const MODES: [IndexBy; 2] = [IndexBy::Cpu, IndexBy::MmCid];
