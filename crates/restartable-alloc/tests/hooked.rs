//! `PerCpuAlloc<TestHooks>` as the global allocator: the pattern stress with delay
//! injection inside the allocator's sequences, compare-twice, migration, yields and
//! signal storms; forward progress when every attempt aborts; and a positive control
//! showing that the stress catches a broken sequence.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::child::{marker, role, run_child_with};
use restartable::hooks::{self, TestHooks};
use restartable_alloc::PerCpuAlloc;

#[global_allocator]
static A: PerCpuAlloc<TestHooks> = PerCpuAlloc::with_hooks();

/// The hooks are process-wide: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

extern "C" fn ignore(_: libc::c_int) {}

fn install_handler(sig: libc::c_int) {
    // SAFETY: (test) a zeroed sigaction with a handler that does nothing is valid.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = ignore as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(sig, &sa, std::ptr::null_mut()), 0);
    }
}

static MIGRATE_TO: [std::sync::atomic::AtomicUsize; 2] = [
    std::sync::atomic::AtomicUsize::new(0),
    std::sync::atomic::AtomicUsize::new(1),
];

/// Moves the interrupted thread to the other of two CPUs (async-signal-safe: only
/// system calls).
extern "C" fn migrate_on_signal(_: libc::c_int) {
    let (a, b) = (
        MIGRATE_TO[0].load(Ordering::Relaxed),
        MIGRATE_TO[1].load(Ordering::Relaxed),
    );
    // SAFETY: (test) sched_getcpu only reads.
    let now = unsafe { libc::sched_getcpu() };
    let to = if now == a as i32 { b } else { a };
    // SAFETY: (test) a valid set for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(to, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
    }
}

fn install_migrating_handler(sig: libc::c_int) {
    // SAFETY: (test) a zeroed sigaction with a handler that only makes system calls.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = migrate_on_signal as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(sig, &sa, std::ptr::null_mut()), 0);
    }
}

/// Signals every stress worker, and moves one to a random CPU.
fn storm(r: &mut common::Rng) {
    let workers = common::WORKERS.lock().unwrap();
    for &(_, pt) in workers.iter() {
        // SAFETY: (test) workers leave the list (under this lock) before exiting.
        unsafe { libc::pthread_kill(pt, libc::SIGUSR1) };
    }
    if let Some(&(tid, _)) = workers.get(r.below(workers.len().max(1) as u64) as usize) {
        let n = common::nproc();
        // SAFETY: (test) a valid CPU set for an existing thread (or an error).
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(r.below(n as u64) as usize, &mut set);
            libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set);
        }
    }
}

#[test]
fn stress_with_injection_migration_yields_and_signals() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if role().is_some() {
        return;
    }
    install_handler(libc::SIGUSR1);
    for point in 1..=6 {
        hooks::set_loops(point, 200);
    }
    hooks::set_loops(9, -1);
    hooks::set_events(500, 0, true, libc::SIGUSR1);
    hooks::set_compare_twice(true);
    let start = Instant::now();
    let mut r = common::Rng::new(3);
    let mut rounds = 0;
    // Until aborts were seen in the allocator's sequences (certain with delays inside
    // them and signals every 500 operations; bounded for a loaded machine).
    while common::ABORTS.load(Ordering::Relaxed) == 0 || rounds == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no abort seen in 90 s of signal storms"
        );
        let n = common::stress(6 * common::nproc(), Duration::from_secs(2), || {
            storm(&mut r)
        });
        assert!(n > 1000);
        rounds += 1;
    }
    hooks::reset();
    println!(
        "{rounds} rounds: {} commits, {} aborts",
        common::COMMITS.load(Ordering::Relaxed),
        common::ABORTS.load(Ordering::Relaxed)
    );
    assert!(common::COMMITS.load(Ordering::Relaxed) > 0);
}

#[test]
fn every_attempt_aborting_still_allocates() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if role().is_some() {
        return;
    }
    install_handler(libc::SIGTRAP);
    let mut r = common::Rng::new(11);
    // Warm up: this thread registered, caches set up.
    drop(std::hint::black_box(Box::new(1u64)));
    hooks::reset_thread_stats();
    hooks::set_trap(true);
    let mut objs = Vec::with_capacity(100);
    for i in 0..100 {
        objs.push(common::new_obj(common::random_layout(&mut r)));
        if i % 3 == 0 {
            let k = r.below(objs.len() as u64) as usize;
            common::check_and_free(objs.swap_remove(k));
        }
    }
    for o in objs.drain(..) {
        common::check_and_free(o);
    }
    hooks::set_trap(false);
    let st = hooks::thread_stats();
    drop(objs);
    println!("trap: {st:?}");
    assert_eq!(st.commits, 0, "a sequence committed through int3: {st:?}");
    assert!(
        st.aborts >= restartable_alloc::front::MAX_ABORTS as u64,
        "the allocator did not try its sequences: {st:?}"
    );
}

#[test]
fn a_broken_sequence_is_caught() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let r = "broken";
    match role().as_deref() {
        None => {
            if common::nproc() < 2 {
                eprintln!("notice: one CPU; a stale CPU cannot happen; skipped");
                return;
            }
            let o = run_child_with(
                "a_broken_sequence_is_caught",
                r,
                &[("RESTARTABLE_ALLOC_INDEX", "cpu")],
                &[],
                Duration::from_secs(360),
                None,
            );
            assert!(
                !o.success,
                "the stress did not notice sequences that skip their CPU check:\n{}\n{}",
                o.stdout, o.stderr
            );
            assert!(!o.stdout.contains(&marker(r)));
            let all = format!("{}{}", o.stdout, o.stderr);
            assert!(
                all.contains("handed out twice") || all.contains("overwritten"),
                "the child failed, but not by the stress's checks:\n{all}"
            );
        }
        Some("broken") => {
            // This child is expected to hand an object out twice and fail its checks;
            // it exits 0 only if 240 s of stress found nothing (about 2 s is usual).
            drop(std::hint::black_box(Box::new(0u64)));
            assert_eq!(restartable_alloc::stats().caches_by_mm_cid, Some(false));
            install_migrating_handler(libc::SIGUSR2);
            // SAFETY: this child process exists to run broken sequences: the objects
            // handed out twice are only ever checked and leaked by the stress, and the
            // child's failure is the expected outcome.
            unsafe { hooks::set_skip_cpu_check(true) };
            // Between the compare and the commit: a wide window for two CPUs' threads
            // in one slot.
            hooks::set_loops(3, 2000);
            // Move to the other CPU between reading the CPU and the sequence.
            hooks::set_loops(9, -1);
            hooks::set_events(4, 0, false, libc::SIGUSR2);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(240) {
                common::stress(2 * common::nproc(), Duration::from_secs(2), || {});
            }
            println!("{}", marker(r));
        }
        Some(_) => {}
    }
}
