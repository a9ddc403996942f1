//! The op engine: every op, single-threaded (commits, compare failures, values), then
//! under 6 x nproc threads on per-CPU slots in both index modes, with and without the
//! test hooks, and under a signal storm.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

#[path = "support/affinity.rs"]
mod affinity;
#[path = "support/child.rs"]
mod child;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use restartable::arch::{self, ByCpu, ByMmCid, Index, OpResult, Relaxed, Release};
use restartable::hooks::{self, Hooks, NoHooks, StatsHooks, TestHooks};
use restartable::ThreadArea;

/// Hook settings are process-global: tests that change them run one at a time.
static HOOK_LOCK: Mutex<()> = Mutex::new(());

fn area() -> ThreadArea {
    ThreadArea::current().expect("rseq must be available in the default environment")
}

/// Runs `f(area, cpu)` until it does not abort; returns the result and the attempts.
fn retry<I: Index>(mut f: impl FnMut(ThreadArea, u32) -> OpResult) -> (OpResult, u64) {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let a = area();
        let cpu = I::current(a);
        match f(a, cpu) {
            OpResult::Aborted { cpu: c } => assert_eq!(c, cpu),
            r => return (r, attempts),
        }
    }
}

fn single_thread_ops<I: Index, H: Hooks>() {
    // load_cbne_store
    let mut v: isize = 5;
    let p = &mut v as *mut isize;
    // SAFETY: `v` is private to this thread.
    let (r, _) = retry::<I>(|a, c| unsafe { arch::load_cbne_store::<I, H>(a, c, p, 5, 7) });
    assert_eq!(r, OpResult::Committed);
    assert_eq!(v, 7);
    // SAFETY: as above.
    let (r, _) = retry::<I>(|a, c| unsafe { arch::load_cbne_store::<I, H>(a, c, p, 5, 9) });
    assert_eq!(r, OpResult::CompareFailed);
    assert_eq!(v, 7);

    // load_add_store
    let mut n: isize = 40;
    let p = &mut n as *mut isize;
    // SAFETY: as above.
    let (r, _) = retry::<I>(|a, c| unsafe { arch::load_add_store::<I, H>(a, c, p, 2) });
    assert_eq!(r, OpResult::Committed);
    assert_eq!(n, 42);
    // SAFETY: as above.
    let _ = retry::<I>(|a, c| unsafe { arch::load_add_store::<I, H>(a, c, p, -50) });
    assert_eq!(n, -8);

    // load_cbeq_store_add_load_store: pop from a two-node list.
    #[repr(C)]
    struct Node {
        data: isize,
        next: isize,
    }
    let mut second = Node { data: 2, next: 0 };
    let mut first = Node {
        data: 1,
        next: &mut second as *mut Node as isize,
    };
    let mut head: isize = &mut first as *mut Node as isize;
    let hp = &mut head as *mut isize;
    let voff = core::mem::offset_of!(Node, next) as isize;
    let mut popped: isize = 0;
    let lp = &mut popped as *mut isize;
    for expected in [
        &mut first as *mut Node as isize,
        &mut second as *mut Node as isize,
    ] {
        // SAFETY: the list nodes outlive the calls; `popped` is private.
        let (r, _) = retry::<I>(|a, c| unsafe {
            arch::load_cbeq_store_add_load_store::<I, H>(a, c, hp, 0, voff, lp)
        });
        assert_eq!(r, OpResult::Committed);
        assert_eq!(popped, expected);
    }
    assert_eq!(head, 0);
    // SAFETY: as above; the list is empty now.
    let (r, _) = retry::<I>(|a, c| unsafe {
        arch::load_cbeq_store_add_load_store::<I, H>(a, c, hp, 0, voff, lp)
    });
    assert_eq!(r, OpResult::CompareFailed);
    assert_eq!(first.data + second.data, 3);

    // load_add_load_load_add_store: **(*ptr + off) += inc.
    let mut target: isize = 10;
    let mut entries: [isize; 4] = [0; 4];
    entries[2] = &mut target as *mut isize as isize;
    let mut list_ptr: isize = entries.as_mut_ptr() as isize;
    let pp = &mut list_ptr as *mut isize;
    // SAFETY: every pointer followed is valid and private to this thread.
    let (r, _) = retry::<I>(|a, c| unsafe {
        arch::load_add_load_load_add_store::<I, H>(a, c, pp, 2 * 8, 5)
    });
    assert_eq!(r, OpResult::Committed);
    assert_eq!(target, 15);

    // load_cbne_store_store, both orderings.
    let mut v: isize = 1;
    let mut v2: isize = 0;
    let (p, p2) = (&mut v as *mut isize, &mut v2 as *mut isize);
    // SAFETY: private data.
    let (r, _) = retry::<I>(|a, c| unsafe {
        arch::load_cbne_store_store::<I, Relaxed, H>(a, c, p, 1, p2, 22, 2)
    });
    assert_eq!((r, v, v2), (OpResult::Committed, 2, 22));
    // SAFETY: private data.
    let (r, _) = retry::<I>(|a, c| unsafe {
        arch::load_cbne_store_store::<I, Release, H>(a, c, p, 2, p2, 33, 3)
    });
    assert_eq!((r, v, v2), (OpResult::Committed, 3, 33));
    // SAFETY: private data.
    let (r, _) = retry::<I>(|a, c| unsafe {
        arch::load_cbne_store_store::<I, Release, H>(a, c, p, 2, p2, 44, 4)
    });
    assert_eq!((r, v, v2), (OpResult::CompareFailed, 3, 33));

    // load_cbne_load_cbne_store
    let mut v: isize = 1;
    let v2: isize = 8;
    let p = &mut v as *mut isize;
    // SAFETY: private data.
    let (r, _) = retry::<I>(|a, c| unsafe {
        arch::load_cbne_load_cbne_store::<I, H>(a, c, p, 1, &v2, 9, 5)
    });
    assert_eq!((r, v), (OpResult::CompareFailed, 1));
    // SAFETY: private data.
    let (r, _) = retry::<I>(|a, c| unsafe {
        arch::load_cbne_load_cbne_store::<I, H>(a, c, p, 0, &v2, 8, 5)
    });
    assert_eq!((r, v), (OpResult::CompareFailed, 1));
    // SAFETY: private data.
    let (r, _) = retry::<I>(|a, c| unsafe {
        arch::load_cbne_load_cbne_store::<I, H>(a, c, p, 1, &v2, 8, 5)
    });
    assert_eq!((r, v), (OpResult::Committed, 5));

    // load_cbne_memcpy_store, both orderings.
    let src: Vec<u8> = (0..200u8).collect();
    let mut dst = vec![0u8; 200];
    let mut v: isize = 0;
    let p = &mut v as *mut isize;
    // SAFETY: private buffers of the right length.
    let (r, _) = retry::<I>(|a, c| unsafe {
        arch::load_cbne_memcpy_store::<I, Relaxed, H>(
            a,
            c,
            p,
            0,
            dst.as_mut_ptr(),
            src.as_ptr(),
            200,
            1,
        )
    });
    assert_eq!((r, v), (OpResult::Committed, 1));
    assert_eq!(dst, src);
    let mut dst2 = vec![0u8; 200];
    // SAFETY: private buffers of the right length.
    let (r, _) = retry::<I>(|a, c| unsafe {
        arch::load_cbne_memcpy_store::<I, Release, H>(
            a,
            c,
            p,
            0,
            dst2.as_mut_ptr(),
            src.as_ptr(),
            200,
            2,
        )
    });
    assert_eq!((r, v), (OpResult::CompareFailed, 1));
    assert!(dst2.iter().all(|&b| b == 0), "no copy on compare failure");
}

#[test]
fn each_op_single_thread_by_cpu() {
    single_thread_ops::<ByCpu, NoHooks>();
    single_thread_ops::<ByCpu, StatsHooks>();
    let _g = HOOK_LOCK.lock().unwrap();
    single_thread_ops::<ByCpu, TestHooks>();
}

#[test]
fn each_op_single_thread_by_mm_cid() {
    if !restartable::status().mm_cid {
        child::skip("mm_cid unavailable");
        return;
    }
    single_thread_ops::<ByMmCid, NoHooks>();
    let _g = HOOK_LOCK.lock().unwrap();
    single_thread_ops::<ByMmCid, TestHooks>();
}

#[test]
fn stats_count_commits_and_compare_failures() {
    std::thread::spawn(|| {
        hooks::reset_thread_stats();
        let mut v: isize = 0;
        let p = &mut v as *mut isize;
        for i in 0..100 {
            // SAFETY: private data.
            let _ = retry::<ByCpu>(|a, c| unsafe {
                arch::load_cbne_store::<ByCpu, StatsHooks>(a, c, p, i, i + 1)
            });
        }
        // SAFETY: private data.
        let _ = retry::<ByCpu>(|a, c| unsafe {
            arch::load_cbne_store::<ByCpu, StatsHooks>(a, c, p, -1, 0)
        });
        let s = hooks::thread_stats();
        assert_eq!(s.commits, 100);
        assert_eq!(s.compare_failures, 1);
        assert_eq!(v, 100);
    })
    .join()
    .unwrap();
}

/// Per-CPU data for the concurrent tests: one padded slot per CPU (or mm_cid).
#[repr(C, align(128))]
struct Slot {
    v: isize,
    v2: isize,
}

fn slots() -> Vec<Slot> {
    (0..restartable::possible_cpus())
        .map(|_| Slot { v: 0, v2: 0 })
        .collect()
}

#[derive(Clone, Copy)]
struct SlotsPtr(*mut Slot);
// SAFETY: the slots are only written by sequences of their own CPU (the point of
// the test) and read after every thread joined.
unsafe impl Send for SlotsPtr {}
// SAFETY: as above.
unsafe impl Sync for SlotsPtr {}

fn threads() -> usize {
    6 * std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// 6 x nproc threads each add 1 `reps` times on their CPU's slot with
/// `load_add_store`, and run `load_cbne_store` increments (read, compare, store) on
/// `v2`: both totals must be exact.
fn concurrent_counts<I: Index, H: Hooks>(reps: usize) -> hooks::Stats {
    let mut data = slots();
    let base = SlotsPtr(data.as_mut_ptr());
    let total = Arc::new(Mutex::new(hooks::Stats::default()));
    let n = threads();
    std::thread::scope(|s| {
        for _ in 0..n {
            let total = total.clone();
            s.spawn(move || {
                let base = base;
                hooks::reset_thread_stats();
                for _ in 0..reps {
                    loop {
                        let a = area();
                        let cpu = I::current(a);
                        // SAFETY: slot `cpu` is written only by sequences for `cpu`.
                        let p = unsafe { core::ptr::addr_of_mut!((*base.0.add(cpu as usize)).v) };
                        // SAFETY: as above.
                        if unsafe { arch::load_add_store::<I, H>(a, cpu, p, 1) }
                            == OpResult::Committed
                        {
                            break;
                        }
                    }
                    loop {
                        let a = area();
                        let cpu = I::current(a);
                        // SAFETY: as above.
                        let p = unsafe { core::ptr::addr_of_mut!((*base.0.add(cpu as usize)).v2) };
                        // SAFETY: reading the slot of our CPU; the sequence re-checks it.
                        let old = unsafe { p.read_volatile() };
                        // SAFETY: as above.
                        if unsafe { arch::load_cbne_store::<I, H>(a, cpu, p, old, old + 1) }
                            == OpResult::Committed
                        {
                            break;
                        }
                    }
                }
                *total.lock().unwrap() += hooks::thread_stats();
            });
        }
    });
    let sum: isize = data.iter().map(|s| s.v).sum();
    let sum2: isize = data.iter().map(|s| s.v2).sum();
    assert_eq!(sum as usize, n * reps, "load_add_store lost updates");
    assert_eq!(sum2 as usize, n * reps, "load_cbne_store lost updates");
    let t = *total.lock().unwrap();
    t
}

#[test]
fn concurrent_ops_are_exact_both_index_modes() {
    concurrent_counts::<ByCpu, NoHooks>(20_000);
    if restartable::status().mm_cid {
        concurrent_counts::<ByMmCid, NoHooks>(20_000);
    }
}

/// How long a test repeats its (each time checked) runs until the event it asserts
/// (an abort) has happened: generous, so that only a broken abort path reaches it.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(240);

/// Runs `round` (which checks its own results) until its counts show an abort, for up
/// to [`PATIENCE`]; returns the counts summed over the rounds.
fn until_aborted(what: &str, mut round: impl FnMut() -> hooks::Stats) -> hooks::Stats {
    let started = std::time::Instant::now();
    let (mut total, mut rounds) = (hooks::Stats::default(), 0);
    while total.aborts == 0 {
        assert!(
            started.elapsed() < PATIENCE,
            "{what}: no abort in {rounds} rounds ({PATIENCE:?}): {total:?}"
        );
        total += round();
        rounds += 1;
    }
    eprintln!("{what}: first abort in round {rounds}: {total:?}");
    total
}

/// Delay loops at points 1-6 under 6 x nproc threads: every result stays exact, every
/// round commits exactly once per operation, and preemption inside the widened
/// sequences aborts some (rounds repeat until one did: preemption is the scheduler's
/// choice, so the test waits for it rather than hoping for it in one round).
#[test]
fn injected_delays_cause_counted_aborts_and_results_stay_exact() {
    let _g = HOOK_LOCK.lock().unwrap();
    hooks::reset();
    for p in 1..=6 {
        hooks::set_loops(p, 2_000);
    }
    let round = |s: hooks::Stats| {
        assert_eq!(s.commits as usize, 2 * threads() * 3_000, "{s:?}");
        s
    };
    until_aborted("delays, by CPU", || {
        round(concurrent_counts::<ByCpu, TestHooks>(3_000))
    });
    if restartable::status().mm_cid {
        until_aborted("delays, by mm_cid", || {
            round(concurrent_counts::<ByMmCid, TestHooks>(3_000))
        });
    }
    hooks::reset();
}

#[test]
fn compare_twice_passes_on_correct_sequences() {
    let _g = HOOK_LOCK.lock().unwrap();
    hooks::reset();
    hooks::set_compare_twice(true);
    hooks::set_loops(4, 500);
    concurrent_counts::<ByCpu, TestHooks>(2_000);
    single_thread_ops::<ByCpu, TestHooks>();
    hooks::reset();
}

extern "C" fn on_signal(_: libc::c_int) {}

/// A per-thread POSIX timer sending `SIGUSR2` to the calling thread every
/// `period_us` microseconds, deleted on drop.
struct ThreadTimer(libc::timer_t);

impl ThreadTimer {
    fn start(period_us: i64) -> ThreadTimer {
        // SAFETY: plain-data structs filled before use; the timer targets this thread
        // (SIGEV_THREAD_ID), which has a handler for SIGUSR2.
        unsafe {
            let mut sev: libc::sigevent = core::mem::zeroed();
            sev.sigev_notify = libc::SIGEV_THREAD_ID;
            sev.sigev_signo = libc::SIGUSR2;
            sev.sigev_notify_thread_id = libc::gettid();
            let mut t: libc::timer_t = core::ptr::null_mut();
            assert_eq!(
                libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut t),
                0
            );
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: period_us * 1000,
            };
            let spec = libc::itimerspec {
                it_interval: ts,
                it_value: ts,
            };
            assert_eq!(libc::timer_settime(t, 0, &spec, core::ptr::null_mut()), 0);
            ThreadTimer(t)
        }
    }
}

impl Drop for ThreadTimer {
    fn drop(&mut self) {
        // SAFETY: a timer created by `start` and not yet deleted.
        unsafe { libc::timer_delete(self.0) };
    }
}

fn install_noop_handler(sig: libc::c_int) {
    // SAFETY: installing a handler that does nothing, for a signal only tests use.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigaction(sig, &sa, core::ptr::null_mut());
    }
}

/// A timer signal every 50 µs to every thread while 6 x nproc threads run the bare
/// (hook-free) sequences for half a second: no update is lost. The storm goes on
/// past the half second until a signal (or a preemption) has aborted a sequence, for
/// up to [`PATIENCE`]: the abort path is exercised for sure, not by luck.
#[test]
fn signal_storm_loses_no_update() {
    install_noop_handler(libc::SIGUSR2);
    let stop = AtomicBool::new(false);
    let mut data = slots();
    let base = SlotsPtr(data.as_mut_ptr());
    let n = threads();
    let aborts = AtomicI64::new(0);
    let aborts_seen = AtomicBool::new(false);
    let done_ops = AtomicI64::new(0);
    std::thread::scope(|s| {
        for _ in 0..n {
            let (stop, aborts, done_ops, aborts_seen) = (&stop, &aborts, &done_ops, &aborts_seen);
            s.spawn(move || {
                let base = base;
                hooks::reset_thread_stats();
                let timer = ThreadTimer::start(50);
                let mut ops = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..1000 {
                        loop {
                            let a = area();
                            let cpu = ByCpu::current(a);
                            // SAFETY: slot `cpu` is written only by sequences for `cpu`.
                            let p =
                                unsafe { core::ptr::addr_of_mut!((*base.0.add(cpu as usize)).v) };
                            // SAFETY: as above.
                            if unsafe { arch::load_add_store::<ByCpu, StatsHooks>(a, cpu, p, 1) }
                                == OpResult::Committed
                            {
                                break;
                            }
                        }
                    }
                    ops += 1000;
                    if hooks::thread_stats().aborts > 0 {
                        aborts_seen.store(true, Ordering::Relaxed);
                    }
                }
                drop(timer);
                aborts.fetch_add(hooks::thread_stats().aborts as i64, Ordering::Relaxed);
                done_ops.fetch_add(ops, Ordering::Relaxed);
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        let started = std::time::Instant::now();
        while !aborts_seen.load(Ordering::Relaxed) && started.elapsed() < PATIENCE {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let sum: isize = data.iter().map(|s| s.v).sum();
    assert_eq!(
        sum as i64,
        done_ops.load(Ordering::Relaxed),
        "lost updates under a signal storm"
    );
    assert!(
        aborts.load(Ordering::Relaxed) > 0,
        "the storm never interrupted a sequence: the abort path was not exercised"
    );
}

/// The kernel itself aborts a sequence it interrupts: a thread pinned to one CPU (so
/// the CPU check cannot fail) runs a sequence stalled by a delay of about a billion
/// iterations (a quarter of a second or more) while another thread signals it every
/// millisecond: the attempt must abort (a signal or a preemption lands inside it, it
/// cannot run to its end untouched), and the next attempt, without the delay, commits.
/// Should an attempt commit all the same, it is counted and the test tries again, for
/// up to [`PATIENCE`].
#[test]
fn kernel_aborts_an_interrupted_sequence() {
    let _g = HOOK_LOCK.lock().unwrap();
    hooks::reset();
    std::thread::spawn(|| {
        install_noop_handler(libc::SIGUSR2);
        affinity::pin_current_thread(restartable::current_cpu() as usize);
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() } as usize;
        let done = Arc::new(AtomicBool::new(false));
        let killer = std::thread::spawn({
            let done = done.clone();
            move || {
                while !done.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    // SAFETY: the target thread joins this thread before it exits.
                    unsafe { libc::pthread_kill(me as libc::pthread_t, libc::SIGUSR2) };
                }
            }
        });
        let _stop = OnDrop(|| done.store(true, Ordering::Relaxed));
        let mut v: isize = 0;
        let mut commits = 0;
        let started = std::time::Instant::now();
        let cpu = area().cpu_id();
        hooks::set_loops(3, 1 << 30);
        loop {
            let a = area();
            // SAFETY: private data.
            let r = unsafe { arch::load_add_store::<ByCpu, TestHooks>(a, cpu, &mut v, 1) };
            match r {
                OpResult::Aborted { cpu: c } => {
                    assert_eq!(c, cpu);
                    break;
                }
                OpResult::Committed => commits += 1,
                r => panic!("load_add_store: {r:?}"),
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{commits} stalled sequences committed although signalled every ms"
            );
        }
        hooks::set_loops(3, 0);
        done.store(true, Ordering::Relaxed);
        killer.join().unwrap();
        assert_eq!(v, commits, "the aborted attempt committed nothing");
        assert_eq!(
            area().cpu_id(),
            cpu,
            "pinned: the abort came from the kernel, not the CPU check"
        );
        let (r, _) = retry::<ByCpu>(|a, c| {
            // SAFETY: private data.
            unsafe { arch::load_add_store::<ByCpu, TestHooks>(a, c, &mut v, 1) }
        });
        assert_eq!(r, OpResult::Committed);
        assert_eq!(v, commits + 1, "the later attempt committed once");
    })
    .join()
    .unwrap();
    hooks::reset();
}

/// Calls its function when dropped, also while unwinding.
struct OnDrop<F: FnMut()>(F);
impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}
