//! Test hooks for the critical sections: statistics, delay injection and the
//! compare-twice check, chosen per call site by a type parameter.
//!
//! [`NoHooks`] compiles to the bare sequences (what containers use unless told
//! otherwise, and what `rseq bench` measures). [`StatsHooks`] only counts outcomes
//! per thread. [`TestHooks`] adds everything the reference stress test needs:
//! - delay loops at numbered points: 1-6 inside the asm of each sequence (1 before
//!   the descriptor is stored, 2 before the CPU check, 3 after it, 4 after the
//!   compares, 5 after the commit or the speculative stores, 6 in second loads), 7-9
//!   in Rust between preparation and commit (7 after reading the CPU, 8 after
//!   preparing, 9 just before the sequence);
//! - with a point's count set to -1, the events of `-m N`: every N-th time, sleep,
//!   yield, send the thread a signal, or move it to another CPU ([`set_migrate`]:
//!   pinned there until its sequence's outcome, so the sequence certainly runs on
//!   another CPU than the one its caller read);
//! - compare-twice: re-check the CPU and the compared values just before the commit,
//!   and abort the process loudly if they changed (a bug in the sequence);
//! - two switches that exist only to prove the tests can fail or finish:
//!   "skip the CPU check" (a deliberately broken sequence) and "trap in every
//!   sequence" (an `int3` inside the sequence makes every attempt abort, exercising
//!   the containers' forward-progress fallback).
//!
//! All configuration is process-global and set before the threads start.
//!
//! # Soundness
//! Everything here is safe to call except [`set_skip_cpu_check`]: delays, events
//! (a forced migration included: the scheduler may move a thread at any point),
//! compare-twice and the trap only slow sequences down, make them abort, or end the
//! process, while a sequence without its CPU check can commit on another CPU's data
//! concurrently with that CPU's own sequences (two threads popping the same node, two
//! guards of one lock). That switch is an `unsafe fn`, and the switch bytes the
//! sequences read are private to the crate, so safe code cannot break a sequence.

use core::cell::Cell;
use core::mem::ManuallyDrop;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU8, Ordering};

use crate::arch::OpResult;

mod cpu_mask;
use cpu_mask::CpuMask;

/// Selects the instrumentation compiled into a sequence. Implemented by [`NoHooks`],
/// [`StatsHooks`] and [`TestHooks`]. `Send + Sync` so that a container generic over
/// `H` is shareable between threads whatever `H` is (they hold it as `PhantomData`).
pub trait Hooks: sealed::Sealed + Send + Sync + 'static {
    /// Delay injection, compare-twice and the test switches are compiled in.
    const INJECT: bool;
    /// Outcomes are counted per thread.
    const STATS: bool;
}

/// No instrumentation: the bare sequences.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;
/// Per-thread outcome counts only.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatsHooks;
/// Counts, delay injection and compare-twice (the stress test's build).
#[derive(Debug, Clone, Copy, Default)]
pub struct TestHooks;

impl Hooks for NoHooks {
    const INJECT: bool = false;
    const STATS: bool = false;
}
impl Hooks for StatsHooks {
    const INJECT: bool = false;
    const STATS: bool = true;
}
impl Hooks for TestHooks {
    const INJECT: bool = true;
    const STATS: bool = true;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::NoHooks {}
    impl Sealed for super::StatsHooks {}
    impl Sealed for super::TestHooks {}
}

/// Number of injection points (1..=9; index 0 unused).
pub const POINTS: usize = 10;

/// Loop counts per point, read by the asm of hooked sequences (`{loops}+4*n`).
pub(crate) static LOOPS: [AtomicI32; POINTS] = [const { AtomicI32::new(0) }; POINTS];

/// Switch bytes read by the asm of hooked sequences. Private to the crate: the byte at
/// [`FLAG_SKIP_CPU_CHECK`] breaks every hooked sequence, and only the `unsafe`
/// [`set_skip_cpu_check`] may set it.
pub(crate) static FLAGS: [AtomicU8; 4] = [const { AtomicU8::new(0) }; 4];
/// Byte offsets in [`FLAGS`], used as asm literals.
pub(crate) const FLAG_COMPARE_TWICE: usize = 0;
pub(crate) const FLAG_SKIP_CPU_CHECK: usize = 1;
pub(crate) const FLAG_TRAP: usize = 2;

static MODULO: AtomicI64 = AtomicI64::new(0);
static SLEEP_MS: AtomicI32 = AtomicI32::new(0);
static YIELD: AtomicBool = AtomicBool::new(false);
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static MIGRATE: AtomicBool = AtomicBool::new(false);

/// Sets the delay loop count at `point` (1..=9). `-1` at points 7-9 enables the
/// [`set_events`] events there instead of a loop.
///
/// # Panics
/// If `point` is not in 1..=9.
pub fn set_loops(point: usize, count: i32) {
    assert!((1..POINTS).contains(&point), "injection points are 1..=9");
    LOOPS[point].store(count, Ordering::Relaxed);
}

/// The events at points whose count is -1, every `modulo`-th time (0: never): sleep
/// `sleep_ms` milliseconds, yield, and/or send the thread `signal` (0: none).
pub fn set_events(modulo: i64, sleep_ms: i32, yield_now: bool, signal: i32) {
    MODULO.store(modulo, Ordering::Relaxed);
    SLEEP_MS.store(sleep_ms, Ordering::Relaxed);
    YIELD.store(yield_now, Ordering::Relaxed);
    SIGNAL.store(signal, Ordering::Relaxed);
}

/// Adds a move to another CPU to the events of [`set_events`]: at each event, the
/// calling thread is pinned (`sched_setaffinity`) to the next CPU of its affinity
/// mask after the one its caller read (at injection point 7, in the containers'
/// `cpu_id` mode) or else the one it runs on (the kernel moves it before the call
/// returns), and stays pinned there until the outcome of its next [`TestHooks`]
/// sequence is recorded; then its mask is restored. At point 7 the sequence so
/// certainly runs on another CPU than the one whose data it was prepared for, even
/// if the scheduler moved the thread since the read, and its CPU check must abort
/// it (by mm_cid, a move need not change the thread's index: such a sequence may
/// commit). Each move followed by a sequence counts in [`thread_migrations`]; a move
/// whose container operation ends before its sequence (a push onto a full array) is
/// undone when the operation returns and not counted. Nothing moves where the
/// thread's mask has one CPU, or where the kernel refuses. Masks of any size are
/// handled (more than `CPU_SETSIZE` CPUs included), without `malloc`; the move and
/// the restore keep the thread's `errno` (they run in signal handlers too).
///
/// Sound: the scheduler may move a thread at any point, this only forces it. The
/// saved mask is per thread: a signal handler that runs hooked sequences inside the
/// window restores it at its own point 7 or outcome (the interrupted sequence then
/// runs unpinned and is not counted), a child forked inside the window inherits the
/// pin and the saved mask and restores it likewise, and a thread that exits pinned
/// takes both with it. A `sched_setaffinity` on the thread from elsewhere while it is
/// pinned is undone by the restore; a restore the kernel refuses (a cpuset changed
/// meanwhile) leaves the thread pinned to an allowed CPU.
pub fn set_migrate(on: bool) {
    MIGRATE.store(on, Ordering::Relaxed);
}

/// The [`set_migrate`] move (if it is on), for a caller's own injection points: a
/// stress test that calls the ops of [`crate::arch`] directly and injects its own
/// events between reading the index and the op. Pins the calling thread to the next
/// CPU of its mask after `read_cpu` (the CPU the caller read; `None`: the one it runs
/// on) until the outcome of its next [`TestHooks`] sequence is recorded, as the
/// event does at point 7.
pub fn migrate_now(read_cpu: Option<u32>) {
    if MIGRATE.load(Ordering::Relaxed) {
        migrate(read_cpu);
    }
}

/// Enables compare-twice in [`TestHooks`] sequences.
pub fn set_compare_twice(on: bool) {
    FLAGS[FLAG_COMPARE_TWICE].store(on as u8, Ordering::Relaxed);
}

/// Makes [`TestHooks`] sequences skip their CPU check: a deliberately broken
/// sequence, so that tests can show they catch what they exist to catch (the stress
/// test's hidden `--break-cpu-check`). Switching it off (`on = false`, or [`reset`])
/// is always sound.
///
/// # Safety
/// With the switch on, a [`TestHooks`] sequence prepared for one CPU commits even when
/// its thread has moved to another: it races that CPU's own sequences on data that
/// only they may write. Every `TestHooks` container is then unsound (two threads pop
/// the same node and both free it; two guards of one [`PerCpuLock`] give two `&mut`
/// to one value), and so is every `TestHooks` op of [`crate::arch`]. The caller must
/// make sure that, from the call with `on = true` until the switch is off again, no
/// `TestHooks` sequence runs whose racing commits are undefined behaviour to it, or
/// else accept that this process is a deliberate failure: run it only in a process
/// whose purpose is to show that a test detects the broken sequence, and whose
/// results are then thrown away. Sequences with [`NoHooks`] or [`StatsHooks`] (every
/// container by default) never read the switch.
///
/// [`PerCpuLock`]: crate::PerCpuLock
pub unsafe fn set_skip_cpu_check(on: bool) {
    FLAGS[FLAG_SKIP_CPU_CHECK].store(on as u8, Ordering::Relaxed);
}

/// Makes every [`TestHooks`] sequence execute `int3` after its CPU check: the kernel
/// delivers `SIGTRAP` while the thread is inside the sequence, so every attempt
/// aborts. The caller must install a `SIGTRAP` handler first.
pub fn set_trap(on: bool) {
    FLAGS[FLAG_TRAP].store(on as u8, Ordering::Relaxed);
}

/// Resets every injection setting to its default (no delays, no events, no switches).
pub fn reset() {
    for l in &LOOPS {
        l.store(0, Ordering::Relaxed);
    }
    for f in &FLAGS {
        f.store(0, Ordering::Relaxed);
    }
    set_events(0, 0, false, 0);
    set_migrate(false);
}

/// Per-thread outcome counts of [`StatsHooks`] / [`TestHooks`] sequences.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Sequences that committed.
    pub commits: u64,
    /// Sequences that exited on a failed compare.
    pub compare_failures: u64,
    /// Sequences that aborted (interrupted, or not on the expected CPU).
    pub aborts: u64,
    /// Operations that completed on a container's fallback path (no rseq, or too
    /// many consecutive aborts).
    pub fallbacks: u64,
}

impl core::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.commits += o.commits;
        self.compare_failures += o.compare_failures;
        self.aborts += o.aborts;
        self.fallbacks += o.fallbacks;
    }
}

thread_local! {
    static STATS: Cell<Stats> = const {
        Cell::new(Stats { commits: 0, compare_failures: 0, aborts: 0, fallbacks: 0 })
    };
    /// [`thread_migrations`].
    static MIGRATIONS: Cell<u64> = const { Cell::new(0) };
    static MOD_COUNT: Cell<i64> = const { Cell::new(0) };
    /// The thread's affinity mask before a [`set_migrate`] move pinned it, until the
    /// outcome of its next sequence restores it. Not dropped with the thread (no
    /// destructor to register, which could allocate inside a signal handler): a
    /// thread that exits pinned leaves a large mask's pages mapped.
    static UNPINNED_MASK: Cell<Option<ManuallyDrop<CpuMask>>> = const { Cell::new(None) };
}

// `UNPINNED_MASK` is read in signal handlers: a type with drop glue would make the
// first access register a thread-local destructor (which may allocate).
const _: () = assert!(!core::mem::needs_drop::<Cell<Option<ManuallyDrop<CpuMask>>>>());

/// This thread's counts so far.
pub fn thread_stats() -> Stats {
    STATS.try_with(|s| s.get()).unwrap_or_default()
}

/// Resets this thread's counts ([`thread_stats`] and [`thread_migrations`]).
pub fn reset_thread_stats() {
    let _ = STATS.try_with(|s| s.set(Stats::default()));
    let _ = MIGRATIONS.try_with(|m| m.set(0));
}

/// This thread's sequences so far that ran after a move to another CPU forced by
/// [`set_migrate`] (not an outcome: each of them is counted in [`thread_stats`]
/// under its outcome too). After a move at injection point 7 each one ran on
/// another CPU than its caller read, so each aborted, unless the CPU check was
/// skipped. Kept apart from [`Stats`], whose fields are public API.
pub fn thread_migrations() -> u64 {
    MIGRATIONS.try_with(|m| m.get()).unwrap_or(0)
}

#[inline(always)]
pub(crate) fn record<H: Hooks>(r: OpResult) -> OpResult {
    if H::STATS {
        record_slow(r);
    }
    if H::INJECT {
        end_move();
    }
    r
}

#[inline(never)]
fn record_slow(r: OpResult) {
    update_stats(|v| match r {
        OpResult::Committed => v.commits += 1,
        OpResult::CompareFailed => v.compare_failures += 1,
        OpResult::Aborted { .. } => v.aborts += 1,
    });
}

/// Counts an operation completed on a container's fallback path.
#[inline(always)]
pub(crate) fn record_fallback<H: Hooks>() {
    if H::STATS {
        update_stats(|v| v.fallbacks += 1);
    }
}

/// Applies `f` to this thread's counts (nothing once its TLS is gone).
fn update_stats(f: impl FnOnce(&mut Stats)) {
    let _ = STATS.try_with(|s| {
        let mut v = s.get();
        f(&mut v);
        s.set(v);
    });
}

/// Injection point `n` (7..=9) in Rust code: a delay loop, or the `-m` events.
#[inline(always)]
pub(crate) fn inject_c<H: Hooks>(n: usize) {
    if H::INJECT {
        inject_c_slow(n, None);
    }
}

/// Injection point 7, just after the caller read its index `index` with `I`: as
/// [`inject_c`], and a [`set_migrate`] move avoids the CPU read (where `I` reads the
/// CPU), so that the sequence runs on another CPU even if the scheduler moved the
/// thread since the read.
#[inline(always)]
pub(crate) fn inject_after_read<I: crate::arch::Index, H: Hooks>(index: u32) {
    if H::INJECT {
        let by_cpu = I::OFFSET == <crate::arch::ByCpu as crate::arch::Index>::OFFSET;
        inject_c_slow(7, by_cpu.then_some(index));
    }
}

/// Injection point `n`; a [`set_migrate`] move avoids `read_cpu` (else the CPU the
/// thread runs on).
#[inline(never)]
fn inject_c_slow(n: usize, read_cpu: Option<u32>) {
    if n == 7 {
        // The caller has just read its index: a move whose sequence never ran (a
        // [`migrate_now`] caller's operation that ended before it; the containers
        // undo theirs when the operation returns) is undone and not counted.
        unpin();
    }
    let loops = LOOPS[n].load(Ordering::Relaxed);
    for _ in 0..loops.max(0) {
        core::hint::black_box(());
        core::sync::atomic::compiler_fence(Ordering::SeqCst);
    }
    let modulo = MODULO.load(Ordering::Relaxed);
    if loops == -1 && modulo > 0 {
        let _ = MOD_COUNT.try_with(|c| {
            if c.get() >= modulo - 1 {
                c.set(0);
                let ms = SLEEP_MS.load(Ordering::Relaxed);
                if ms > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(ms as u64));
                }
                if YIELD.load(Ordering::Relaxed) {
                    std::thread::yield_now();
                }
                let sig = SIGNAL.load(Ordering::Relaxed);
                if sig > 0 {
                    // SAFETY: sends a signal to the calling thread; the caller who set
                    // `signal` installed a handler for it.
                    unsafe {
                        libc::pthread_kill(libc::pthread_self(), sig);
                    }
                }
                migrate_now(read_cpu);
            } else {
                c.set(c.get() + 1);
            }
        });
    }
}

/// The [`set_migrate`] event: pins the calling thread to the CPU after `avoid` (by
/// default the one it runs on) in its mask (the mask saved before its first move, if
/// it is still pinned), so that it runs on another CPU than `avoid` when this
/// returns. If it cannot, the thread keeps the mask it had.
fn migrate(avoid: Option<u32>) {
    errno_kept(|| migrate_keeping_errno(avoid));
}

fn migrate_keeping_errno(avoid: Option<u32>) {
    let avoid = avoid.unwrap_or_else(crate::sys::getcpu_fallback) as usize;
    let (mask, saved) = match UNPINNED_MASK.try_with(|m| m.take()) {
        Ok(Some(saved)) => (ManuallyDrop::into_inner(saved), true),
        Ok(None) => match CpuMask::of_this_thread() {
            Some(mask) => (mask, false),
            None => return,
        },
        Err(_) => return,
    };
    // The saved mask stays saved until the restore (pinned now, or still pinned by
    // the move before); a mask just read is kept only if the thread was pinned.
    if pin_to_next(&mask, avoid) || saved {
        let _ = UNPINNED_MASK.try_with(|m| m.set(Some(ManuallyDrop::new(mask))));
    }
}

/// Runs `f`, then gives the calling thread back the `errno` it had: the move and the
/// restore run inside signal handlers, where a system call that fails (the mask read
/// refused while it grows past `CPU_SETSIZE`, a pin or restore the kernel refuses)
/// must not change the `errno` of the code the signal interrupted.
fn errno_kept<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: `__errno_location` returns this thread's `errno`, valid for as long as
    // the thread lives.
    let saved = unsafe { *libc::__errno_location() };
    let r = f();
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
    r
}

/// Pins this thread to the first CPU of `mask` after `avoid` (cyclically), if there
/// is one other than `avoid`; whether it did.
fn pin_to_next(mask: &CpuMask, avoid: usize) -> bool {
    let Some(to) = cpu_mask::next_after(mask.words(), avoid) else {
        return false;
    };
    CpuMask::only(to).is_some_and(|one| one.apply())
}

/// After a sequence's outcome: if a [`set_migrate`] move pinned the thread, restores
/// its mask and counts the move (its sequence ran on the other CPU).
#[inline(never)]
fn end_move() {
    if unpin() {
        let _ = MIGRATIONS.try_with(|m| m.set(m.get() + 1));
    }
}

/// At the end of a container operation: restores the mask of a thread that a
/// [`set_migrate`] move left pinned because the operation ended before its sequence
/// (not counted: no sequence ran on the other CPU).
#[inline(always)]
pub(crate) fn end_operation<H: Hooks>() {
    if H::INJECT {
        end_operation_slow();
    }
}

#[inline(never)]
fn end_operation_slow() {
    unpin();
}

/// Restores the mask of a thread that a [`set_migrate`] move pinned; whether it was
/// pinned.
fn unpin() -> bool {
    errno_kept(unpin_keeping_errno)
}

fn unpin_keeping_errno() -> bool {
    let Ok(Some(mask)) = UNPINNED_MASK.try_with(|m| m.take()) else {
        return false;
    };
    // A failure leaves the thread pinned to an allowed CPU: nothing to undo.
    ManuallyDrop::into_inner(mask).apply();
    true
}

/// Called by the asm of [`TestHooks`] sequences when compare-twice finds that the
/// CPU or a compared value changed between the compare and the commit: a bug in the
/// sequence. Aborts the process with a message.
#[cold]
#[inline(never)]
pub(crate) fn compare_twice_failed(what: &str) -> ! {
    eprintln!("restartable: compare-twice check failed: {what}");
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno() -> i32 {
        // SAFETY: this thread's errno.
        unsafe { *libc::__errno_location() }
    }

    fn set_errno(e: i32) {
        // SAFETY: this thread's errno.
        unsafe { *libc::__errno_location() = e };
    }

    /// A move and a restore that the kernel refuses (a saved mask of a CPU that is
    /// not possible) leave the caller's `errno` as it was: they run inside signal
    /// handlers.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn a_refused_move_and_restore_keep_errno() {
        std::thread::spawn(|| {
            let nowhere = crate::possible_cpus();
            let refused = CpuMask::only(nowhere).expect("a mask");
            assert!(
                !refused.apply(),
                "the kernel took a mask of CPU {nowhere} alone"
            );
            UNPINNED_MASK.with(|m| m.set(Some(ManuallyDrop::new(refused))));
            set_errno(12345);
            // The move pins to the saved mask's one CPU: refused, the mask kept.
            migrate(Some(0));
            assert_eq!(errno(), 12345, "after the refused move");
            // The restore to it: refused too.
            assert!(unpin(), "the saved mask was dropped");
            assert_eq!(errno(), 12345, "after the refused restore");
        })
        .join()
        .expect("the test thread");
    }
}
