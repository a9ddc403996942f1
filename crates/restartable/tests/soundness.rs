//! Regression tests of the safe API's soundness promises (issue 11), each named after
//! what it guards:
//!
//! - a `ThreadArea` kept while its thread's registration ends commits nothing, by
//!   mm_cid or by CPU (library-owned mode, in a child process: the kernel resets
//!   `mm_cid` to 0, which slot 0 would otherwise match), and threads doing so next to
//!   registered threads lose nothing;
//! - a `PerCpuLock` whose first `T::default()` panics is not left locked;
//! - `registration::prepare_unload` clears `rseq_cs` (before a `dlclose`).
//!
//! (The compile-fail tests guard the unsafe switch of the test hooks; the unit tests
//! of `percpu::stack` a steal whose fence fails; those of `percpu::storage::pool` the
//! reset of freed bytes.)
//!
//! A child is this test binary re-executed with `RESTARTABLE_SOUNDNESS_CHILD` naming
//! its role; it runs under a time limit and must print its marker line.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

#[path = "support/child.rs"]
mod child;
mod common;

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Barrier, Mutex};
use std::time::Duration;

use child::OutputWithin as _;
use common::{allowed_cpus, pin_current_thread, threads};
use restartable::arch::{self, ByCpu, ByMmCid, Index, NoHooks, OpResult, TestHooks};
use restartable::hooks;
use restartable::registration::{self, Owner, Reason};
use restartable::{PerCpuLock, ThreadArea};

const ROLE: &str = "RESTARTABLE_SOUNDNESS_CHILD";
const LIBRARY_OWNED: (&str, &str) = ("GLIBC_TUNABLES", "glibc.pthread.rseq=0");
/// How long a child may take: its work takes well under a second.
const CHILD_TIME_LIMIT: Duration = Duration::from_secs(120);

fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

fn marker(role: &str) -> String {
    format!("soundness child {role}: ok")
}

/// Runs this test binary's test `test` in a child with `ROLE=role` and `env`; panics
/// with its output unless it exits successfully within [`CHILD_TIME_LIMIT`] having
/// printed the marker of `role`.
fn run_child(test: &str, role: &str, env: &[(&str, &str)]) {
    let mut cmd = child::this_test(test, &[], env);
    cmd.env(ROLE, role);
    let out = cmd.output_within(CHILD_TIME_LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- child {role}:\n{stdout}{stderr}---");
    assert!(
        out.status.success(),
        "child {role} failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(&marker(role)),
        "child {role} did not run its checks:\n{stdout}\n{stderr}"
    );
}

/// Whether the library runs real sequences here (not built for the fallback).
fn asm_built() -> bool {
    if !arch::ASM_AVAILABLE {
        eprintln!("notice: the library was built without its rseq backend; skipped");
    }
    arch::ASM_AVAILABLE
}

// ---------------------------------------------------------------------------------
// A ThreadArea kept while the registration ends.

/// `*v += 1` by an op on `index`'s data, with `area` (which may be stale).
fn stale_add<I: Index>(area: ThreadArea, index: u32, v: &AtomicIsize) -> OpResult {
    // SAFETY: `area` is this thread's; `v` is only written by sequences (and by no
    // one else) in this test; an op that commits writes it once.
    unsafe { arch::load_add_store::<I, NoHooks>(area, index, v.as_ptr(), 1) }
}

/// `*v += 1` as a compare-and-store by an op on `index`'s data, with `area` (which
/// may be stale) and a delay between the compare and the commit (injection point 4):
/// two such ops without the kernel's protection lose an increment.
fn stale_cas_inc<I: Index>(area: ThreadArea, index: u32, v: &AtomicIsize) -> OpResult {
    let old = v.load(Ordering::Relaxed);
    // SAFETY: as in `stale_add`.
    unsafe { arch::load_cbne_store::<I, TestHooks>(area, index, v.as_ptr(), old, old + 1) }
}

/// Results of the ops a thread-local destructor ran on a stale area at thread exit.
static AT_EXIT: Mutex<Vec<(&'static str, OpResult)>> = Mutex::new(Vec::new());
static AT_EXIT_WORD: AtomicIsize = AtomicIsize::new(0);
/// What `ThreadArea::current()` said in that destructor: the thread must no longer
/// be registered, or the destructor did not run after the library's.
static AT_EXIT_REASON: Mutex<Option<Option<Reason>>> = Mutex::new(None);

/// Holds an area obtained while registered; its destructor, running after the
/// library's own (it was first used before the thread registered), tries ops with it.
struct KeepsArea(std::cell::Cell<Option<ThreadArea>>);

impl Drop for KeepsArea {
    fn drop(&mut self) {
        if let Some(area) = self.0.get() {
            *AT_EXIT_REASON.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(ThreadArea::current().err());
            let mut r = AT_EXIT.lock().unwrap_or_else(|e| e.into_inner());
            r.push((
                "mm_cid slot 0",
                stale_add::<ByMmCid>(area, 0, &AT_EXIT_WORD),
            ));
            r.push((
                "mm_cid read now",
                stale_add::<ByMmCid>(area, ByMmCid::current(area), &AT_EXIT_WORD),
            ));
            r.push((
                "cpu read now",
                stale_add::<ByCpu>(area, ByCpu::current(area), &AT_EXIT_WORD),
            ));
        }
    }
}

thread_local! {
    static KEEPS_AREA: KeepsArea = const { KeepsArea(std::cell::Cell::new(None)) };
}

/// Library-owned mode: a `ThreadArea` taken before `disable_current_thread()` (or
/// kept by a thread-local destructor that runs after the thread unregistered) makes
/// every op abort: by mm_cid on slot 0 (the kernel resets `mm_cid` to 0 on
/// unregistration), by the mm_cid or the CPU read afterwards. And 6 × nproc threads
/// doing so, next to as many registered threads incrementing their mm_cid's word,
/// lose no increment (each increment a compare-and-store with a delay before its
/// commit, so that unprotected commits would lose some).
#[test]
fn a_thread_area_kept_past_unregistration_never_commits() {
    const TEST: &str = "a_thread_area_kept_past_unregistration_never_commits";
    const ME: &str = "stale-area";
    if role().as_deref() != Some(ME) {
        if asm_built() {
            run_child(TEST, ME, &[LIBRARY_OWNED]);
        }
        return;
    }
    let s = restartable::status();
    eprintln!("status: {s}");
    assert_eq!(
        registration::process_owner(),
        Some(Owner::Library),
        "library-owned mode expected: {s}"
    );
    assert!(s.is_registered(), "{s}");
    if !s.mm_cid {
        eprintln!("notice: the kernel does not maintain mm_cid; only the CPU index checked");
    }

    // Every part runs, and reports what went wrong, before the test fails.
    let mut problems = Vec::new();

    // One thread, step by step.
    let one = std::thread::spawn(|| {
        let mut problems = Vec::new();
        let area = ThreadArea::current().expect("registered");
        let word = AtomicIsize::new(0);
        // While registered, the same op commits (retried if preempted or migrated).
        while stale_add::<ByCpu>(area, area.cpu_id(), &word) != OpResult::Committed {}
        registration::disable_current_thread().expect("disable");
        assert_eq!(ThreadArea::current().err(), Some(Reason::Disabled));
        for (what, r) in [
            ("mm_cid slot 0", stale_add::<ByMmCid>(area, 0, &word)),
            (
                "mm_cid read now",
                stale_add::<ByMmCid>(area, ByMmCid::current(area), &word),
            ),
            (
                "cpu read now",
                stale_add::<ByCpu>(area, ByCpu::current(area), &word),
            ),
        ] {
            if !matches!(r, OpResult::Aborted { .. }) {
                problems.push(format!(
                    "after disable_current_thread, {what}: an op on the kept area returned {r:?}"
                ));
            }
        }
        problems
    })
    .join()
    .expect("single thread");
    problems.extend(one);

    // Thread exit: a destructor that runs after the library's unregistration.
    std::thread::spawn(|| {
        KEEPS_AREA.with(|_| ());
        let area = ThreadArea::current().expect("registered");
        KEEPS_AREA.with(|k| k.0.set(Some(area)));
    })
    .join()
    .expect("exiting thread");
    let at_exit = std::mem::take(&mut *AT_EXIT.lock().unwrap());
    assert_eq!(at_exit.len(), 3, "the destructor did not run: {at_exit:?}");
    assert_eq!(
        *AT_EXIT_REASON.lock().unwrap(),
        Some(Some(Reason::ThreadExiting)),
        "the test's thread-local destructor ran while the thread was still registered \
         (destructor order): the case it checks did not happen"
    );
    for (what, r) in &at_exit {
        if !matches!(r, OpResult::Aborted { .. }) {
            problems.push(format!(
                "at thread exit, {what}: an op on the kept area returned {r:?}"
            ));
        }
    }

    // Many threads: stale ones on slot 0, registered ones on their own mm_cid, every
    // increment a compare-and-store with a wide window before its commit.
    hooks::set_loops(4, 2_000);
    const REPS: u64 = 10_000;
    let n = threads();
    let words: Vec<AtomicIsize> = (0..restartable::possible_cpus().max(n * 2))
        .map(|_| AtomicIsize::new(0))
        .collect();
    let fallback = AtomicU64::new(0);
    let stale_commits = AtomicU64::new(0);
    let start = Barrier::new(2 * n);
    std::thread::scope(|scope| {
        for t in 0..2 * n {
            let (words, fallback, stale_commits, start) =
                (&words, &fallback, &stale_commits, &start);
            scope.spawn(move || {
                let stale = t % 2 == 0;
                let area = ThreadArea::current().expect("registered");
                if stale {
                    registration::disable_current_thread().expect("disable");
                }
                start.wait();
                for _ in 0..REPS {
                    if stale {
                        match stale_cas_inc::<ByMmCid>(area, 0, &words[0]) {
                            OpResult::Committed => {
                                stale_commits.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {
                                fallback.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        continue;
                    }
                    loop {
                        let Ok((area, i)) = ByMmCid::enter() else {
                            fallback.fetch_add(1, Ordering::Relaxed);
                            break;
                        };
                        let Some(w) = words.get(i as usize) else {
                            fallback.fetch_add(1, Ordering::Relaxed);
                            break;
                        };
                        if stale_cas_inc::<ByMmCid>(area, i, w) == OpResult::Committed {
                            break;
                        }
                    }
                }
            });
        }
    });
    hooks::reset();
    let sum: i64 = words
        .iter()
        .map(|w| w.load(Ordering::Relaxed) as i64)
        .sum::<i64>()
        + fallback.load(Ordering::Relaxed) as i64;
    let expected = (2 * n) as i64 * REPS as i64;
    let stale_commits = stale_commits.load(Ordering::Relaxed);
    eprintln!(
        "{} threads ({n} with a stale area): {sum} of {expected} increments, {stale_commits} \
         stale commits",
        2 * n
    );
    if sum != expected || stale_commits != 0 {
        problems.push(format!(
            "{} threads: {} increments lost, {stale_commits} commits with an unregistered \
             area",
            2 * n,
            expected - sum
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    println!("{}", marker(ME));
}

// ---------------------------------------------------------------------------------
// PerCpuLock and a panicking T::default().

/// `Default` panics while `PANICS_LEFT` is not zero.
#[derive(Debug)]
struct DefaultMayPanic(u64);

static PANICS_LEFT: AtomicUsize = AtomicUsize::new(0);

impl Default for DefaultMayPanic {
    fn default() -> Self {
        if PANICS_LEFT
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            panic!("DefaultMayPanic::default panics, as asked");
        }
        DefaultMayPanic(0)
    }
}

/// Pinned to one CPU, the first lock of that CPU's instance panics in
/// `T::default()` (caught); the next `lock()` on the same CPU must return (it spun
/// forever when the lock word stayed set), create the value and count.
#[test]
fn a_panicking_default_leaves_the_lock_unlocked() {
    let (done, result) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        pin_current_thread(allowed_cpus()[0]);
        let mut lock: PerCpuLock<DefaultMayPanic> = PerCpuLock::new();
        PANICS_LEFT.store(1, Ordering::Relaxed);
        let first = panic::catch_unwind(AssertUnwindSafe(|| lock.lock().0 += 1));
        assert!(
            first.is_err(),
            "the first T::default() should have panicked"
        );
        let cpu = {
            let mut g = lock.lock();
            g.0 += 1;
            g.cpu()
        };
        lock.lock().0 += 1;
        let total: u64 = lock.iter_mut().map(|v| v.0).sum();
        let _ = done.send((cpu, total));
    });
    match result.recv_timeout(Duration::from_secs(60)) {
        Ok((cpu, total)) => {
            eprintln!("locked again on instance {cpu:?}; total {total}");
            assert_eq!(total, 2);
            worker.join().expect("worker");
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!(
            "lock() still spinning 60 s after T::default() panicked: the instance stayed \
             locked"
        ),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(e) = worker.join() {
                panic::resume_unwind(e);
            }
            unreachable!("the worker ended without a result or a panic");
        }
    }
}

// ---------------------------------------------------------------------------------
// Unloading: prepare_unload.

/// After a sequence, `prepare_unload()` leaves the thread's `rseq_cs` cleared (what a
/// shared object needs before `dlclose`), and sequences keep working afterwards.
#[test]
fn prepare_unload_clears_rseq_cs() {
    std::thread::spawn(|| {
        let rseq_cs = |area: ThreadArea| {
            // SAFETY: this thread's registered area; `rseq_cs` is 8-byte aligned.
            unsafe { std::ptr::addr_of!((*area.as_ptr()).rseq_cs).read_volatile() }
        };
        let word = AtomicIsize::new(0);
        let add = || loop {
            let Ok((area, cpu)) = ByCpu::enter() else {
                return None;
            };
            if stale_add::<ByCpu>(area, cpu, &word) == OpResult::Committed {
                return Some(area);
            }
        };
        let Some(area) = add() else {
            child::skip("rseq unavailable to this thread");
            registration::prepare_unload();
            return;
        };
        registration::prepare_unload();
        assert_eq!(rseq_cs(area), 0, "rseq_cs still set after prepare_unload");
        assert!(add().is_some());
        assert_eq!(word.load(Ordering::Relaxed), 2);
    })
    .join()
    .expect("thread");
}
