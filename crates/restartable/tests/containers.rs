//! Conservation of every per-CPU container under 6 × nproc threads, in both index
//! modes: plain; under delay injection at every numbered point and under the yield,
//! sleep and signal events; while threads hop CPUs; under a signal storm; when every
//! sequence aborts (forward progress through the fallback); and while a thief steals
//! whole lists with fences. Each test asserts exact results (sums, every id exactly
//! once, items intact) and, where it injects interruptions, that aborts happened.
//!
//! Sizes (threads × iterations) are chosen so that the whole file runs in a few
//! seconds in release mode on a 2-core machine; `RESTARTABLE_STRESS=N` multiplies the
//! iterations by N for longer runs.
//!
//! The rseq-off modes (seccomp, valgrind, mixed registration) and the resident-memory
//! check run in child processes: see `containers_env.rs`.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

#[path = "support/child.rs"]
mod child;
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;
use restartable::hooks::{self, Hooks, StatsHooks, TestHooks};
use restartable::percpu::MAX_CONSECUTIVE_ABORTS;
use restartable::{
    IndexBy, PerCpuBuffer, PerCpuCounter, PerCpuLock, PerCpuMemcpyBuffer, PerCpuPool, PerCpuStack,
    StackNode,
};

/// Hook settings are process-global: tests that change them run one at a time, and
/// put everything back (even when they fail).
static HOOK_SETTINGS: Mutex<()> = Mutex::new(());

struct HookSettings(#[allow(dead_code)] MutexGuard<'static, ()>);

impl Drop for HookSettings {
    fn drop(&mut self) {
        hooks::reset();
    }
}

fn hook_settings() -> HookSettings {
    let g = HOOK_SETTINGS.lock().unwrap_or_else(|e| e.into_inner());
    hooks::reset();
    HookSettings(g)
}

/// Iterations scaled by `RESTARTABLE_STRESS` (default 1).
fn reps(base: usize) -> usize {
    let k: usize = std::env::var("RESTARTABLE_STRESS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    base * k.max(1)
}

fn check_environment() {
    let s = restartable::status();
    assert!(
        s.is_registered(),
        "these tests expect rseq in the default environment: {s}"
    );
}

// ---------------------------------------------------------------------------------
// 1. Plain conservation.

fn every_container_conserves(index: IndexBy) {
    check_environment();
    let w = Work::new(threads(), reps(2000));
    every_container::<restartable::hooks::NoHooks>(index, &w);
}

#[test]
fn every_container_conserves_by_cpu() {
    every_container_conserves(IndexBy::Cpu);
}

#[test]
fn every_container_conserves_by_mm_cid() {
    if !restartable::status().mm_cid {
        eprintln!("notice: mm_cid unavailable; containers index by CPU instead");
    }
    every_container_conserves(IndexBy::MmCid);
}

#[test]
fn mm_cid_mode_is_used_where_the_kernel_has_it() {
    let c = restartable::PerCpuCounter::with_index(IndexBy::MmCid);
    let expected = if restartable::status().mm_cid {
        IndexBy::MmCid
    } else {
        IndexBy::Cpu
    };
    assert_eq!(c.index(), expected);
}

// ---------------------------------------------------------------------------------
// 2. Injection: delay loops at points 1..=9, and the yield / sleep / signal events.

/// Delay loops at each numbered point in turn (1-6 inside the sequences' asm, 7-9 in
/// Rust between reading the CPU and the sequence), with compare-twice on: results
/// stay exact. (How many aborts the delays cause depends on the scheduler and is only
/// printed; that an interruption at each point inside a sequence aborts it is forced
/// and asserted by the next test.)
#[test]
fn delay_injection_at_every_point_keeps_containers_exact() {
    check_environment();
    let _h = hook_settings();
    let w = Work::new(threads(), reps(40));
    let mut per_point = [0u64; 10];
    for (point, aborts_at) in per_point.iter_mut().enumerate().skip(1) {
        hooks::reset();
        hooks::set_compare_twice(true);
        hooks::set_loops(point, 10_000);
        for index in MODES {
            let results = every_container::<TestHooks>(index, &w);
            print_runs(&format!("point {point} {index:?}"), &results);
            *aborts_at += results.iter().map(|r| r.total().aborts).sum::<u64>();
        }
    }
    eprintln!("aborts per point: {:?}", &per_point[1..]);
}

/// A delay loop that, uninterrupted, runs for far longer than the signal period of
/// [`interruptions_inside_every_sequence_abort_it`] (about a billion iterations: a
/// quarter of a second or more): a sequence that reaches it stays inside until a
/// signal or a preemption ends the attempt.
const STALL: i32 = 1 << 30;

/// The injection points inside the critical sections, and the containers whose
/// sequences pass through each: 2 (before the CPU check) and 3 (after it) in every
/// sequence; 4 (after the first compare) in every sequence that compares (not the
/// counter's add); 5 (between the copy and the commit) in the buffers' (and the
/// pool's) push and pop;
/// 6 (between the two compares) in the stack's push (values and nodes).
const POINTS_INSIDE: [(usize, &[&str]); 5] = [
    (2, &CONTAINERS),
    (3, &CONTAINERS),
    (
        4,
        &[BAGS[0], BAGS[1], BAGS[2], BAGS[3], BAGS[4], BAGS[5], "lock"],
    ),
    (5, &[BAGS[1], BAGS[2], BAGS[3], BAGS[4], BAGS[5]]),
    (6, &[BAGS[0], BAGS[7]]),
];

/// The positive control of the kernel's half: a thread interrupted inside a sequence
/// must abort it, at every point inside the critical section, for every container,
/// in both index modes. Forced, not hoped for: each worker gets a signal every 100 µs
/// from its own timer while a [`STALL`] delay at the point keeps every attempt inside
/// the sequence until a signal (or a preemption) arrives. So every attempt that
/// reaches the point aborts; after `MAX_CONSECUTIVE_ABORTS` the operation completes
/// on the fallback, and the results must still be exact. (The delay is switched on
/// once the container is prepopulated, and off when the workers are done.)
#[test]
fn interruptions_inside_every_sequence_abort_it() {
    check_environment();
    install_counting_handler(libc::SIGUSR1);
    let _h = hook_settings();
    for (point, containers) in POINTS_INSIDE {
        let stall = move || hooks::set_loops(point, STALL);
        let w = Work {
            storm: Some(Duration::from_micros(100)),
            begin: &stall,
            ..Work::new(2, 2)
        };
        for index in MODES {
            for &name in containers {
                let r = one_container::<TestHooks>(name, index, &w);
                hooks::set_loops(point, 0);
                print_runs(
                    &format!("stall at {point} {index:?}"),
                    std::slice::from_ref(&r),
                );
                assert!(
                    r.total().aborts > 0,
                    "{name} ({index:?}): interrupted inside its sequence at point {point}, \
                     yet no attempt aborted: {:?}",
                    r.total()
                );
            }
        }
    }
}

/// Points 7-9 at -1 with the `-m` events, between reading the CPU and the sequence:
/// yield every 4th time; `SIGUSR1` (a counting handler) every 2nd time; yield and
/// signal every time; sleep 1 ms every 8th time; and `SIGUSR2` every 4th time, whose
/// handler moves the thread to the other CPU, so that the sequence runs on another
/// CPU than it was prepared for and must abort. Results stay exact, compare-twice
/// finds nothing, and with the migrating signal every container counts aborts (by
/// CPU: an mm_cid may follow the thread, so nothing has to abort in that mode).
#[test]
fn yield_sleep_signal_events_keep_containers_exact() {
    check_environment();
    install_counting_handler(libc::SIGUSR1);
    let migrating = install_migrating_handler(libc::SIGUSR2);
    let _h = hook_settings();
    hooks::set_compare_twice(true);
    for p in 7..=9 {
        hooks::set_loops(p, -1);
    }
    // (modulo, sleep ms, yield, signal, iterations)
    let mut configs = vec![
        (4, 0, true, 0, reps(40)),
        (2, 0, false, libc::SIGUSR1, reps(40)),
        (1, 0, true, libc::SIGUSR1, reps(10)),
        (8, 1, false, 0, reps(6)),
    ];
    if migrating {
        configs.push((4, 0, false, libc::SIGUSR2, reps(20)));
    } else {
        eprintln!("notice: one CPU allowed; the migrating signal is not tried");
    }
    for (modulo, sleep_ms, yield_now, signal, n) in configs {
        hooks::set_events(modulo, sleep_ms, yield_now, signal);
        let w = Work::new(threads(), n);
        for index in MODES {
            let signals = signals_handled();
            let results = every_container::<TestHooks>(index, &w);
            let what = format!(
                "m{modulo} s{sleep_ms} y{} k{signal} {index:?}",
                yield_now as u8
            );
            print_runs(&what, &results);
            if signal != 0 {
                assert!(signals_handled() > signals, "{what}: no signal was handled");
            }
            if signal == libc::SIGUSR2 && index == IndexBy::Cpu {
                for r in &results {
                    assert!(
                        r.total().aborts > 0,
                        "{what}: {}: no sequence aborted although threads were moved \
                         to another CPU before their sequences",
                        r.name
                    );
                }
            }
        }
    }
}

/// A lock attempt that retries on another CPU decides what to expect from its own
/// CPU's instance. Forced, single thread: CPU A's instance exists, CPU B's was never
/// created, the thread starts on B, and a migrating signal lands just before every
/// second attempt's sequence (injection points 7-9, every sixth injection), so
/// attempts alternate between the two CPUs: compare failed on B, aborted, compare
/// failed on A, aborted, ... An expectation carried over from the failed attempt's
/// instance ("uncreated" from B, tried on A; "ready" from A, tried on B) fails every
/// time and the lock never returns (seen as a livelock of the whole suite under
/// load); deciding per attempt locks within a few attempts.
#[test]
fn lock_retry_on_another_cpu_decides_from_its_own_instance() {
    check_environment();
    let cpus = allowed_cpus();
    if !install_migrating_handler(libc::SIGUSR2) {
        eprintln!("notice: one CPU allowed; attempts cannot alternate between CPUs");
        return;
    }
    let _h = hook_settings();
    let lock = PerCpuLock::<u64, TestHooks>::with_hooks(IndexBy::Cpu);
    let done = AtomicBool::new(false);
    let timed_out = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            pin_current_thread(cpus[0]);
            *lock.lock() += 1;
            pin_current_thread(cpus[1]);
            for p in 7..=9 {
                hooks::set_loops(p, -1);
            }
            hooks::set_events(6, 0, false, libc::SIGUSR2);
            hooks::reset_thread_stats();
            let g = lock.lock();
            let stats = hooks::thread_stats();
            let cpu = g.cpu();
            drop(g);
            done.store(true, Ordering::Release);
            (cpu, stats)
        });
        let start = Instant::now();
        while !done.load(Ordering::Acquire) && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let timed_out = !done.load(Ordering::Acquire);
        // Stop the events either way, so that a livelocked worker gets out and joins.
        hooks::reset();
        let (cpu, stats) = worker.join().expect("the locking thread panicked");
        assert!(
            cpu.is_some(),
            "the second lock went to the shared fallback instead of a CPU's"
        );
        // Per attempt pair, one compare failure and one abort; a few preemptions
        // may add some. A carried-over expectation fails until something else
        // breaks the rhythm: many thousands.
        assert!(
            stats.compare_failures + stats.aborts <= 100,
            "the lock took {} failed compares and {} aborts before it held an \
             instance: its retries kept a stale expectation",
            stats.compare_failures,
            stats.aborts
        );
        timed_out
    });
    assert!(
        !timed_out,
        "PerCpuLock::lock did not return within 30 s while its retries alternated \
         between a created and an uncreated instance (livelock)"
    );
    let mut lock = lock;
    assert_eq!(lock.iter_mut().map(|v| *v).sum::<u64>(), 1);
}

// ---------------------------------------------------------------------------------
// 3. Migration.

/// Every thread pins itself to another CPU every 8 iterations (the lock workload does
/// it while holding a guard): results stay exact.
#[test]
fn threads_hopping_cpus_keep_containers_exact() {
    check_environment();
    let cpus = allowed_cpus();
    if cpus.len() < 2 {
        eprintln!("notice: one CPU allowed; the threads cannot migrate (still checked)");
    }
    let hops = AtomicU64::new(0);
    let tick = |t: usize, j: usize| {
        if j.is_multiple_of(8) {
            pin_current_thread(cpus[(t + j / 8) % cpus.len()]);
            hops.fetch_add(1, Ordering::Relaxed);
        }
    };
    let w = Work {
        tick: &tick,
        ..Work::new(threads(), reps(600))
    };
    for index in MODES {
        let results = every_container::<StatsHooks>(index, &w);
        print_runs(&format!("migration {index:?}"), &results);
    }
    assert!(hops.load(Ordering::Relaxed) > 0);
}

// ---------------------------------------------------------------------------------
// 4. Signal storm.

/// How long [`signal_storm_keeps_containers_exact`] keeps a container's storm going
/// until one of its bare sequences has been hit: generous, so that only a container
/// whose sequences signals cannot abort (a broken abort path) reaches it.
const STORM_PATIENCE: Duration = Duration::from_secs(240);

/// Every worker gets `SIGUSR1` every 50 µs from its own timer while it works on the
/// bare sequences (no delay loops), and results stay exact. Each run lasts tens of
/// milliseconds (thousands of signals), and the runs of a container repeat (each one
/// checked) until a signal or a preemption has aborted one of its sequences: how
/// often a signal lands in a sequence only a few instructions long is chance, so the
/// test waits for it (up to [`STORM_PATIENCE`]) instead of hoping for it in one run.
#[test]
fn signal_storm_keeps_containers_exact() {
    check_environment();
    install_counting_handler(libc::SIGUSR1);
    let w = |n| Work {
        storm: Some(Duration::from_micros(50)),
        ..Work::new(threads(), reps(n))
    };
    for index in MODES {
        for name in CONTAINERS {
            let started = Instant::now();
            let (signals, mut total, mut runs) = (signals_handled(), hooks::Stats::default(), 0);
            while total.aborts == 0 {
                assert!(
                    started.elapsed() < STORM_PATIENCE,
                    "{name} ({index:?}): {runs} runs under the signal storm ({} signals) \
                     and no sequence was aborted: {total:?}",
                    signals_handled() - signals
                );
                // The counter's add takes nanoseconds: more of them for the same time.
                let n = if name == "counter" { 20_000 } else { 2_000 };
                let r = one_container::<StatsHooks>(name, index, &w(n));
                print_runs(&format!("signal storm {index:?}"), std::slice::from_ref(&r));
                total += r.total();
                runs += 1;
            }
            eprintln!(
                "signal storm {index:?}: {name}: first abort after {runs} runs, {} signals",
                signals_handled() - signals
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// 5. Forward progress.

/// `hooks::set_trap(true)`: every hooked sequence executes `int3` inside its critical
/// section, so every attempt aborts. Every operation must still complete, through the
/// container's fallback after exactly `MAX_CONSECUTIVE_ABORTS` aborts, with exact
/// results.
#[test]
fn operations_finish_through_the_fallback_when_every_attempt_aborts() {
    check_environment();
    install_counting_handler(libc::SIGTRAP);
    let _h = hook_settings();
    hooks::set_trap(true);
    let w = Work::new(threads(), reps(4));
    let max = u64::from(MAX_CONSECUTIVE_ABORTS);
    for index in MODES {
        let results = every_container::<TestHooks>(index, &w);
        print_runs(&format!("trap {index:?}"), &results);
        for Run { name, stats, .. } in &results {
            let t = total(stats);
            assert_eq!(
                t.commits, 0,
                "{name} ({index:?}): a trapped sequence committed"
            );
            assert!(t.fallbacks > 0, "{name} ({index:?}): no fallback was taken");
            assert!(t.aborts >= max, "{name} ({index:?}): {} aborts", t.aborts);
            for s in stats {
                // Every attempted operation gives up after exactly `max` aborts.
                assert_eq!(
                    s.aborts % max,
                    0,
                    "{name} ({index:?}): an operation stopped retrying early or late: {s:?}"
                );
                if ["counter", "lock"].contains(name) {
                    // One sequence per operation, each completed on the fallback.
                    let ops = (w.reps * BAG_OPS) as u64;
                    assert_eq!(s.fallbacks, ops, "{name} ({index:?}): {s:?}");
                    assert_eq!(s.aborts, ops * max, "{name} ({index:?}): {s:?}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// 6. Steal with fences while the owners keep pushing and popping.

/// A thief steals one slot at a time (`steal`), and everything now and then
/// (`steal_all`), pausing `pause` between steals, while 6 × nproc threads push unique
/// ids and pop some. The owners run at a lower priority (nice 10) so that the thief
/// gets the CPU while they work, and keep going until the thief has taken something
/// `target` times: at full speed for `cap` ids each, then slowly (a push per
/// millisecond) for up to [`STEAL_PATIENCE`]. Every id must be seen exactly once
/// across stolen batches, pops and the final drain.
fn steal_while_owners_push<H: Hooks>(index: IndexBy, target: usize, cap: usize, pause: Duration) {
    let mut stack = PerCpuStack::<u64, H>::with_hooks(index);
    let slots = restartable::possible_cpus();
    let (done, enough) = (AtomicBool::new(false), AtomicBool::new(false));
    let nonempty_seen = AtomicUsize::new(0);
    let nice = |_| {
        // SAFETY: raises this thread's nice value (always permitted); no pointers.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
    };
    let w = Work {
        setup: &nice,
        ..Work::new(threads(), cap)
    };
    let start = Instant::now();
    let ((stolen, rounds, nonempty), out) = std::thread::scope(|s| {
        let (stack, done, enough, nonempty_seen) = (&stack, &done, &enough, &nonempty_seen);
        let thief = s.spawn(move || {
            let (mut got, mut rounds, mut nonempty) = (Vec::new(), 0usize, 0usize);
            while !done.load(Ordering::Acquire) {
                let batch = if rounds % 8 == 7 {
                    stack.steal_all()
                } else {
                    stack.steal(rounds % slots)
                }
                .expect("membarrier rseq fences are supported here");
                nonempty += usize::from(!batch.is_empty());
                nonempty_seen.store(nonempty, Ordering::Relaxed);
                got.extend(batch);
                rounds += 1;
                if nonempty >= target {
                    enough.store(true, Ordering::Relaxed);
                }
                // Leave the slots open for a while (spinning keeps this thread's
                // share of the CPU; a sleep would hand it to the owners for long).
                let t = Instant::now();
                while t.elapsed() < pause {
                    std::hint::spin_loop();
                }
            }
            (got, rounds, nonempty)
        });
        let _stop_thief = OnDrop(|| done.store(true, Ordering::Release));
        let out = run(&w, |t| {
            let mut popped = Vec::new();
            let mut pushed = 0;
            while pushed % 64 != 0 || !enough.load(Ordering::Relaxed) {
                if pushed >= cap {
                    // Past the planned amount and the thief still wants more: go on
                    // slowly (bounded memory), leaving it the CPU, until it has it.
                    assert!(
                        start.elapsed() < STEAL_PATIENCE,
                        "the thief took something only {} times of {target} in {:?} \
                         while the owners pushed",
                        nonempty_seen.load(Ordering::Relaxed),
                        STEAL_PATIENCE
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
                // Values and owned nodes alternate: both forms share the lists.
                if pushed % 2 == 0 {
                    stack.push(fresh_id(t, pushed));
                } else {
                    stack.push_node(StackNode::new(fresh_id(t, pushed)));
                }
                pushed += 1;
                if pushed % 3 == 0 {
                    popped.extend(stack.pop());
                } else if pushed % 5 == 0 {
                    popped.extend(stack.pop_node().map(StackNode::into_inner));
                }
            }
            (pushed, popped)
        });
        done.store(true, Ordering::Release);
        (thief.join().unwrap(), out)
    });
    let elapsed = start.elapsed();
    let what = format!("steal ({index:?})");
    let mut seen = stolen;
    let stolen_count = seen.len();
    let mut expected = Vec::new();
    let mut stats = Vec::new();
    for (t, ((pushed, popped), s)) in out.into_iter().enumerate() {
        expected.extend((0..pushed).map(|j| fresh_id(t, j)));
        seen.extend(popped);
        stats.push(s);
    }
    seen.extend(stack.drain());
    print_runs(
        &what,
        &[Run {
            name: "stack",
            stats,
            elapsed,
        }],
    );
    eprintln!(
        "{what}: {rounds} steals, {nonempty} non-empty, {stolen_count} of {} ids stolen",
        expected.len()
    );
    assert_same_ids(&what, seen, expected);
    assert!(
        nonempty >= target,
        "{what}: the thief took something {nonempty} times, {target} wanted"
    );
}

/// How long the owners of [`steal_while_owners_push`] keep pushing for a thief that
/// has not yet taken what it wants.
const STEAL_PATIENCE: Duration = Duration::from_secs(240);

#[test]
fn steal_while_owners_push_loses_and_duplicates_nothing() {
    check_environment();
    if !restartable::fences_supported() {
        child::skip("membarrier rseq fences unsupported: steal test");
        return;
    }
    for index in MODES {
        steal_while_owners_push::<StatsHooks>(index, reps(100), 100_000, Duration::from_micros(50));
    }
}

/// The buffer's and the pool's `steal`/`steal_all` (a fence, no stop word) while
/// owners keep pushing and popping (getting and returning objects): every id is
/// found exactly once afterwards, and the thief must actually take something
/// `target` times (the owners go on, for up to [`STEAL_PATIENCE`], until it has).
#[test]
fn buffer_and_pool_steal_while_owners_work_lose_and_duplicate_nothing() {
    check_environment();
    if !restartable::fences_supported() {
        child::skip("membarrier rseq fences unsupported: the steal test cannot run");
        return;
    }
    for index in MODES {
        buffer_steal_while_owners_push::<StatsHooks>(index, reps(100));
        pool_steal_while_owners_use(index, reps(100));
    }
}

/// The buffer's steal must fence after it swaps the offset for its mark: an owner's
/// sequence that compared the offset before the swap may still commit, and without
/// the fence it could do so after the thief took the values and reopened the slot
/// (an offset that counts stolen values: duplicates, or values lost). A delay between
/// the compare and the commit (points 4 and 5) makes that window wide; with the
/// fence taken out this test failed in 4 runs of 5 (duplicated ids), with it in 0 of
/// the runs made.
#[test]
fn buffer_steal_never_lets_a_sequence_in_flight_commit_after_it() {
    check_environment();
    if !restartable::fences_supported() {
        child::skip("membarrier rseq fences unsupported: the steal test cannot run");
        return;
    }
    let _h = hook_settings();
    hooks::set_loops(4, 1000);
    hooks::set_loops(5, 1000);
    for index in MODES {
        for _ in 0..3 {
            buffer_steal_while_owners_push::<TestHooks>(index, reps(50));
        }
    }
}

/// Two `sum_and_reset` callers at once: each add is returned by one of them only.
/// Without turns both read the same slots, both returned that sum, and the counter was
/// left at minus it. Each round one add is made, then the two callers, released
/// together by a spinning barrier, reset, with a delay (point 8) between their reads
/// and their subtraction that makes them overlap: between them they must return
/// exactly 1. Without the turns this failed in 5 runs of 5, by round 48.
#[test]
fn concurrent_sum_and_reset_return_each_add_once() {
    check_environment();
    let _h = hook_settings();
    hooks::set_loops(8, 1_000_000);
    let c = PerCpuCounter::<TestHooks>::with_hooks(IndexBy::Cpu);
    let rounds = 200;
    let arrived = AtomicUsize::new(0);
    let meet = |r: usize| {
        arrived.fetch_add(1, Ordering::AcqRel);
        let mut spins = 0u32;
        while arrived.load(Ordering::Acquire) < 2 * (r + 1) {
            // Spin so that the two resets start together; yield now and then in
            // case the other caller waits for a CPU (a loaded machine).
            spins += 1;
            if spins.is_multiple_of(8192) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    };
    let per_round: Vec<Vec<i64>> = std::thread::scope(|s| {
        let callers: Vec<_> = (0..2)
            .map(|t| {
                let (c, meet) = (&c, &meet);
                s.spawn(move || {
                    (0..rounds)
                        .map(|r| {
                            if t == 0 {
                                c.add(1);
                            }
                            // After the add (its caller arrives only once it is made).
                            meet(2 * r);
                            let n = c.sum_and_reset();
                            // Both reset before the next round's add.
                            meet(2 * r + 1);
                            n
                        })
                        .collect()
                })
            })
            .collect();
        callers.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (r, (&a, &b)) in per_round[0].iter().zip(&per_round[1]).enumerate() {
        assert!(
            a + b == 1 && a >= 0 && b >= 0,
            "round {r}: the resets returned {a} and {b}"
        );
    }
    assert_eq!(c.sum(), 0);
}

/// `steal` allocates the room a slot's values need before it stops the slot; it once
/// reserved the whole capacity on every call, so that stealing from an empty slot of a
/// `PerCpuBuffer<T, 65536>` allocated 65,536 values' worth.
#[test]
fn stealing_from_an_empty_slot_reserves_nothing() {
    check_environment();
    if !restartable::fences_supported() {
        child::skip("membarrier rseq fences unsupported: the steal test cannot run");
        return;
    }
    let buf: PerCpuBuffer<u64, 65536> = PerCpuBuffer::new();
    let got = buf
        .steal(0)
        .expect("membarrier rseq fences are supported here");
    assert!(got.is_empty());
    assert!(got.capacity() < 64, "reserved {} values", got.capacity());
    // A slot with values: room for them, not for the capacity.
    for v in 0..10 {
        buf.push(v).expect("room");
    }
    let mut all = buf
        .steal_all()
        .expect("membarrier rseq fences are supported here");
    all.sort_unstable();
    assert_eq!(all, (0..10).collect::<Vec<u64>>());
}

/// The thief of the steal tests: steals slot after slot (every 8th round, all of
/// them) until `done`, flagging `enough` once `target` steals took something.
fn steal_until<F: FnMut(usize) -> Vec<u64>>(
    mut steal: F,
    slots: usize,
    target: usize,
    done: &AtomicBool,
    enough: &AtomicBool,
) -> (Vec<u64>, usize, usize) {
    let (mut got, mut rounds, mut nonempty) = (Vec::new(), 0usize, 0usize);
    while !done.load(Ordering::Acquire) {
        let batch = steal(if rounds % 8 == 7 {
            usize::MAX
        } else {
            rounds % slots
        });
        nonempty += usize::from(!batch.is_empty());
        got.extend(batch);
        rounds += 1;
        if nonempty >= target {
            enough.store(true, Ordering::Relaxed);
        }
        std::thread::yield_now();
    }
    (got, rounds, nonempty)
}

/// What [`owners_beside_thief`] returns: the thief's (stolen ids, rounds, non-empty
/// steals) and each owner's (steps, state).
type ThiefAndOwners<S> = ((Vec<u64>, usize, usize), Vec<(usize, S)>);

/// Runs a thief ([`steal_until`] with `steal`, which takes one slot or, given
/// `usize::MAX`, all of them) beside `threads()` owners until the thief has taken
/// something `target` times. Owner `t` calls `step(t, n, &mut state)` for n = 0, 1,
/// ... and stops at a multiple of 64 once the thief has enough; past 200,000 steps it
/// goes on one step per millisecond, for up to [`STEAL_PATIENCE`]. Returns the
/// thief's (stolen ids, rounds, non-empty steals) and each owner's (steps, state).
fn owners_beside_thief<S: Send + Default>(
    what: &str,
    target: usize,
    steal: impl Fn(usize) -> Vec<u64> + Send,
    step: impl Fn(usize, usize, &mut S) + Sync,
) -> ThiefAndOwners<S> {
    let slots = restartable::possible_cpus();
    let (done, enough) = (AtomicBool::new(false), AtomicBool::new(false));
    let start = Instant::now();
    std::thread::scope(|s| {
        let (done, enough, step) = (&done, &enough, &step);
        let thief = s.spawn(move || steal_until(steal, slots, target, done, enough));
        let _stop_thief = OnDrop(|| done.store(true, Ordering::Release));
        let owners: Vec<_> = (0..threads())
            .map(|t| {
                s.spawn(move || {
                    let (mut n, mut state) = (0usize, S::default());
                    while !n.is_multiple_of(64) || !enough.load(Ordering::Relaxed) {
                        if n >= 200_000 {
                            assert!(
                                start.elapsed() < STEAL_PATIENCE,
                                "{what}: the thief did not take something {target} \
                                 times in {STEAL_PATIENCE:?}"
                            );
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        step(t, n, &mut state);
                        n += 1;
                    }
                    (n, state)
                })
            })
            .collect();
        let owners = owners
            .into_iter()
            .map(|h| h.join().expect("owner"))
            .collect();
        done.store(true, Ordering::Release);
        (thief.join().expect("thief"), owners)
    })
}

fn buffer_steal_while_owners_push<H: Hooks>(index: IndexBy, target: usize) {
    let mut buf = PerCpuBuffer::<u64, 64, H>::with_hooks(index);
    let what = format!("buffer steal ({index:?})");
    let ((stolen, rounds, nonempty), owners) = owners_beside_thief(
        &what,
        target,
        |cpu| {
            if cpu == usize::MAX {
                buf.steal_all()
            } else {
                buf.steal(cpu)
            }
            .expect("membarrier rseq fences are supported here")
        },
        |t, n, kept: &mut Vec<u64>| {
            if let Err(v) = buf.push(fresh_id(t, n)) {
                kept.push(v);
            }
            if (n + 1) % 3 == 0 {
                kept.extend(buf.pop());
            }
        },
    );
    let stolen_count = stolen.len();
    let mut seen = stolen;
    let mut expected = Vec::new();
    for (t, (pushed, kept)) in owners.into_iter().enumerate() {
        expected.extend((0..pushed).map(|j| fresh_id(t, j)));
        seen.extend(kept);
    }
    seen.extend(buf.drain());
    eprintln!(
        "{what}: {rounds} steals, {nonempty} non-empty, {stolen_count} of {} ids stolen",
        expected.len()
    );
    assert_same_ids(&what, seen, expected);
    assert!(
        nonempty >= target,
        "{what}: {nonempty} non-empty steals, {target} wanted"
    );
}

fn pool_steal_while_owners_use(index: IndexBy, target: usize) {
    let made = AtomicU64::new(0);
    let make = || made.fetch_add(1, Ordering::Relaxed);
    let mut pool = PerCpuPool::<u64, _, 16, StatsHooks>::with_hooks(index, make);
    let what = format!("pool steal ({index:?})");
    let ((stolen, rounds, nonempty), _) = owners_beside_thief(
        &what,
        target,
        |cpu| {
            if cpu == usize::MAX {
                pool.steal_all()
            } else {
                pool.steal(cpu)
            }
            .expect("membarrier rseq fences are supported here")
        },
        |_, _, _: &mut ()| {
            let a = pool.get();
            let b = pool.get();
            assert_ne!(*a, *b, "one object handed out twice");
            drop(a);
            drop(b);
        },
    );
    let stolen_count = stolen.len();
    let mut seen = stolen;
    seen.extend(pool.drain());
    let made = made.load(Ordering::Relaxed);
    eprintln!(
        "{what}: {rounds} steals, {nonempty} non-empty, {stolen_count} of {made} objects stolen"
    );
    assert_same_ids(&what, seen, (0..made).collect());
    assert!(
        nonempty >= target,
        "{what}: {nonempty} non-empty steals, {target} wanted"
    );
}

/// Regression: a push compares the list head, then the slot's stop word. A steal
/// that cleared the head and reopened the slot right after its (single) fence let a
/// push that had read the old head just before see the slot open and link its node
/// to the detached list, which the thief then freed: a use after free (a crash, or
/// lost and duplicated ids). A delay between the push's two compares (point 4) and a
/// thief that steals without pause make that window wide: with the old steal this
/// test failed in 30 runs out of 30. (Not with compare-twice: a thief's store to a
/// stop word is a legitimate remote write that the fence, not the sequence, takes
/// care of, and compare-twice would report it.)
#[test]
fn steal_never_links_a_push_to_the_detached_list() {
    check_environment();
    if !restartable::fences_supported() {
        child::skip("membarrier rseq fences unsupported: steal test");
        return;
    }
    let _h = hook_settings();
    hooks::set_loops(4, 1000);
    for index in MODES {
        for _ in 0..2 {
            steal_while_owners_push::<TestHooks>(index, reps(50), 4_000, Duration::ZERO);
        }
    }
}

/// The calling thread's affinity mask.
fn own_mask() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 is this thread.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    assert_eq!(
        r,
        0,
        "sched_getaffinity: {}",
        std::io::Error::last_os_error()
    );
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `c` is below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// `hooks::set_migrate`: an event at point 7 moves the thread off the CPU it read,
/// pinned elsewhere until its sequence's outcome. With the event at every attempt,
/// every attempt runs on another CPU than it read, so every one aborts on its CPU
/// check and counts as a migration, until the operation takes the fallback after
/// [`MAX_CONSECUTIVE_ABORTS`]; the sum is exact and the thread has its mask back.
#[test]
fn forced_migration_aborts_every_attempt_and_restores_the_mask() {
    check_environment();
    if allowed_cpus().len() < 2 {
        child::skip("one CPU allowed: no migration to force");
        return;
    }
    let _h = hook_settings();
    hooks::set_loops(7, -1);
    hooks::set_events(1, 0, false, 0);
    hooks::set_migrate(true);
    let c = PerCpuCounter::<TestHooks>::with_hooks(IndexBy::Cpu);
    let adds: u64 = 20;
    let (stats, moves, before, after) = std::thread::scope(|s| {
        s.spawn(|| {
            let before = own_mask();
            hooks::reset_thread_stats();
            for _ in 0..adds {
                c.add(1);
            }
            (
                hooks::thread_stats(),
                hooks::thread_migrations(),
                before,
                own_mask(),
            )
        })
        .join()
        .unwrap()
    });
    assert_eq!(after, before, "the thread's mask was not restored");
    assert_eq!(c.sum(), adds as i64);
    let attempts = adds * u64::from(MAX_CONSECUTIVE_ABORTS);
    assert_eq!(
        (stats.commits, stats.aborts, moves, stats.fallbacks),
        (0, attempts, attempts, adds),
        "{stats:?}, {moves} migrations"
    );
}

/// Sets the calling thread's affinity mask to `cpus`.
fn set_own_mask(cpus: &[usize]) {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: `c` is an allowed CPU, below CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 is this thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    assert_eq!(
        r,
        0,
        "sched_setaffinity({cpus:?}): {}",
        std::io::Error::last_os_error()
    );
}

/// `hooks::set_migrate`: a move at point 7 whose operation then ends before its
/// sequence (a push onto a full array: no sequence runs) is undone when the operation
/// returns, so a container operation never leaves its thread pinned, and it is not
/// counted as a migration.
#[test]
fn forced_migration_of_an_operation_without_a_sequence_restores_the_mask() {
    check_environment();
    let cpus = allowed_cpus();
    if cpus.len() < 2 {
        child::skip("one CPU allowed: no migration to force");
        return;
    }
    let both = [cpus[0], cpus[1]];
    let _h = hook_settings();
    let buf = PerCpuMemcpyBuffer::<u64, 2, TestHooks>::with_hooks(IndexBy::Cpu);
    let (full, moves, after) = std::thread::scope(|s| {
        s.spawn(|| {
            // Both CPUs' arrays full, each filled from its own CPU, before any event.
            for cpu in both {
                set_own_mask(&[cpu]);
                while buf.push(7).is_ok() {}
            }
            set_own_mask(&both);
            hooks::reset_thread_stats();
            hooks::set_loops(7, -1);
            hooks::set_events(1, 0, false, 0);
            hooks::set_migrate(true);
            let full = buf.push(8).is_err();
            let r = (full, hooks::thread_migrations(), own_mask());
            hooks::reset();
            r
        })
        .join()
        .unwrap()
    });
    assert!(full, "a push onto full arrays succeeded");
    assert_eq!(after, both, "the push left its thread pinned");
    assert_eq!(moves, 0, "no sequence ran after the move, none is counted");
}

// ---------------------------------------------------------------------------------
// The tests above can fail.

/// With the CPU check switched off (a deliberately broken sequence), a thread that
/// read its CPU and then moved (here: a signal handler moves it to the other CPU
/// between reading the CPU and the sequence) takes a lock instance that the threads
/// of that CPU take too: the lock workload's checks must see it (two holders, or
/// lost increments). This shows that the conservation checks catch what they exist
/// to catch. It tries until caught, for up to [`BROKEN_PATIENCE`] (a few rounds on a
/// quiet machine).
#[test]
fn a_sequence_without_its_cpu_check_is_caught() {
    check_environment();
    if !install_migrating_handler(libc::SIGUSR2) {
        child::skip("one CPU allowed: a stale CPU cannot happen");
        return;
    }
    let _h = hook_settings();
    // SAFETY: a deliberately broken sequence: the lock below is the only `TestHooks`
    // container while the switch is on (`hook_settings` resets it when this test
    // ends), and this test exists to see its two holders; what they race on are
    // atomics.
    unsafe { hooks::set_skip_cpu_check(true) };
    // Between the compare and the commit: a wide window for two holders.
    hooks::set_loops(4, 2000);
    // Move to the other CPU between reading the CPU and the sequence.
    hooks::set_loops(7, -1);
    hooks::set_events(4, 0, false, libc::SIGUSR2);
    let deadline = Instant::now() + BROKEN_PATIENCE;
    let mut rounds = 0;
    loop {
        rounds += 1;
        let (lost, overlaps) = broken_lock_round(threads(), 200);
        if lost > 0 || overlaps > 0 {
            eprintln!(
                "broken CPU check caught in round {rounds}: {lost} increments lost or extra, \
                 {overlaps} overlapping holders"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a broken CPU check went unnoticed in {rounds} rounds"
        );
    }
}

/// How long [`a_sequence_without_its_cpu_check_is_caught`] keeps trying.
const BROKEN_PATIENCE: Duration = Duration::from_secs(240);

/// The lock workload without panics: returns (increments lost or extra, critical
/// sections that found the words disagreeing).
fn broken_lock_round(threads: usize, n: usize) -> (u64, usize) {
    let mut lock = PerCpuLock::<[AtomicU64; 2], TestHooks>::with_hooks(IndexBy::Cpu);
    let overlaps = AtomicUsize::new(0);
    run(&Work::new(threads, n), |_| {
        for _ in 0..n {
            let g = lock.lock();
            let a = g[0].load(Ordering::Relaxed);
            let b = g[1].load(Ordering::Relaxed);
            if a != b {
                overlaps.fetch_add(1, Ordering::Relaxed);
            }
            g[0].store(a + 1, Ordering::Relaxed);
            for _ in 0..200 {
                std::hint::spin_loop();
            }
            g[1].store(b + 1, Ordering::Relaxed);
        }
    });
    let sum: u64 = lock.iter_mut().map(|v| *v[0].get_mut()).sum();
    (
        ((threads * n) as u64).abs_diff(sum),
        overlaps.load(Ordering::Relaxed),
    )
}

/// The `const` constructors: containers held in `static`s work, and storage set up on
/// first use by many threads at once is set up once (every add and value counted).
#[test]
fn const_constructed_containers_are_set_up_once_under_a_race() {
    static REQUESTS: PerCpuCounter = PerCpuCounter::new();
    static WORDS: PerCpuBuffer<u64, 8> = PerCpuBuffer::new();
    REQUESTS.inc();
    WORDS.push(5).unwrap();
    assert_eq!(WORDS.pop(), Some(5));
    assert_eq!(REQUESTS.sum(), 1);
    for round in 0..50 {
        let c = PerCpuCounter::new();
        let b: PerCpuBuffer<Box<u64>, 64> = PerCpuBuffer::new();
        let start = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (c, b, start) = (&c, &b, &start);
                s.spawn(move || {
                    start.wait();
                    c.add(1 + t as i64);
                    let _ = b.push(Box::new(t));
                });
            }
        });
        assert_eq!(c.sum(), 10, "round {round}");
        let mut b = b;
        let mut got: Vec<u64> = b.drain().into_iter().map(|v| *v).collect();
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2, 3], "round {round}");
    }
}

/// Gets and drops on a pool of `T` (3 handles held at once per thread, so the 4-object
/// caches overflow to the shared list too), then drains it: every object made is
/// drained exactly once.
fn pool_conserves<T: Default + Send>(what: &str) {
    let made = AtomicUsize::new(0);
    let make = || {
        made.fetch_add(1, Ordering::Relaxed);
        T::default()
    };
    let mut pool = PerCpuPool::<T, _, 4>::new(make);
    std::thread::scope(|s| {
        for _ in 0..threads() {
            s.spawn(|| {
                for _ in 0..reps(5000) {
                    let a = pool.get();
                    let b = pool.get();
                    let c = pool.get();
                    drop((a, b, c));
                    drop(pool.get());
                }
            });
        }
    });
    let made = made.load(Ordering::Relaxed);
    let drained = pool.drain().len();
    assert!(made >= 3, "{what}: {made} objects made");
    assert_eq!(
        drained, made,
        "{what}: {made} objects made, {drained} drained"
    );
}

/// The pool takes objects from its caches through a register when no box of its
/// type can have the address 0, 1 or 2 (the pop's sentinels), and through the
/// buffer's copy otherwise: a box of a zero-sized type has its alignment as address,
/// so a pool of `()` or `[u16; 0]` takes the copy path, a pool of `u8` or of an
/// 8-aligned zero-sized type the register path. Both conserve their objects.
#[test]
fn pools_of_zero_sized_and_byte_sized_objects_conserve_them() {
    check_environment();
    #[derive(Default)]
    #[repr(align(8))]
    struct Aligned;
    pool_conserves::<()>("()");
    pool_conserves::<[u16; 0]>("[u16; 0]");
    pool_conserves::<Aligned>("align(8) ZST");
    pool_conserves::<u8>("u8");
}
