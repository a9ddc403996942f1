//! What a gauge's `set` and a counter's `absolute` guarantee against per-CPU adds
//! running at the same time (see `GaugeCell`'s docs).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use metrics::{CounterFn, GaugeFn};
use restartable_metrics::{CounterCell, GaugeCell};

const THREADS: usize = 4;

/// Adds that returned before `set` started are replaced; adds that start after it
/// returned are all on top; nothing else.
#[test]
fn gauge_set_replaces_earlier_adds_and_keeps_later_ones() {
    let g = GaugeCell::new();
    let barrier = Barrier::new(THREADS + 1);
    let just_set = std::thread::scope(|s| {
        for t in 0..THREADS {
            let (g, barrier) = (&g, &barrier);
            s.spawn(move || {
                for i in 0..50_000 {
                    if (i + t) % 3 == 0 {
                        g.decrement(1.0);
                    } else {
                        g.increment(2.0);
                    }
                }
                g.increment(0.5); // the shared non-integral path too
                barrier.wait(); // all done
                barrier.wait(); // set done
                for _ in 0..10_000 {
                    g.increment(3.0);
                    g.decrement(1.0);
                }
                g.increment(0.25);
            });
        }
        barrier.wait();
        g.set(-7.5);
        let right_after = g.value();
        barrier.wait(); // before asserting: a panic here must not strand the workers
        right_after
    });
    assert_eq!(just_set, -7.5);
    assert_eq!(
        g.value(),
        -7.5 + (THREADS * 10_000 * 2) as f64 + THREADS as f64 * 0.25
    );
}

/// `set` while adds run: each add is counted exactly once or replaced, never lost
/// once `set` returned and never doubled. Thread `t` adds `2^(26 t)`, so the final
/// value splits into how many adds of each thread were kept; each must be at least
/// the adds it started after seeing `set` return and at most all its adds.
#[test]
fn gauge_set_racing_adds_counts_each_add_once() {
    const ADDS: u64 = 1_000_000; // < 2^26: the fields do not carry into each other
    const SHIFT: u32 = 26;
    let threads = 2; // 2 × 26 bits: exact in an f64
    let g = GaugeCell::new();
    g.increment(12345.0); // replaced by the set below
    let set_done = AtomicBool::new(false);
    let started: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
    let mut rounds = 0;
    let mut mid_stream = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    // Repeat until a round where the set landed while a thread was adding (it had
    // some adds replaced and some kept): slow under load, not wrong. Every round
    // checks the bounds.
    while !mid_stream {
        rounds += 1;
        g.set(0.0);
        set_done.store(false, Ordering::SeqCst);
        let after: Vec<u64> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let (g, set_done, started) = (&g, &set_done, &started[t]);
                    s.spawn(move || {
                        let delta = (1u64 << (SHIFT * t as u32)) as f64;
                        let mut after = 0;
                        for i in 0..ADDS {
                            let seen = set_done.load(Ordering::SeqCst);
                            started.store(i + 1, Ordering::SeqCst);
                            g.increment(delta);
                            after += u64::from(seen);
                        }
                        after
                    })
                })
                .collect();
            // Set once every worker is well under way.
            while started.iter().any(|c| c.load(Ordering::SeqCst) < ADDS / 4) {
                assert!(
                    Instant::now() < deadline,
                    "workers did not get going in 60 s"
                );
                std::thread::yield_now();
            }
            g.set(0.0);
            set_done.store(true, Ordering::SeqCst);
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let v = g.value();
        assert_eq!(v.fract(), 0.0, "{v}");
        let v = v as u64;
        let mask = (1u64 << SHIFT) - 1;
        for (t, &after) in after.iter().enumerate() {
            let kept = (v >> (SHIFT * t as u32)) & mask;
            assert!(after <= kept && kept <= ADDS, "round {rounds}, thread {t}: kept {kept} of {ADDS} adds, {after} of them started after set returned");
            mid_stream |= 0 < kept && kept < ADDS;
        }
        assert!(
            v >> (SHIFT * threads as u32) == 0,
            "round {rounds}: value {v} beyond the fields"
        );
        assert!(
            Instant::now() < deadline,
            "no set landed mid-stream in {rounds} rounds (60 s)"
        );
        for c in &started {
            c.store(0, Ordering::SeqCst);
        }
    }
}

/// Sets alone are exact and the last one wins, with adds running between them.
#[test]
fn gauge_set_only_is_exact() {
    let g = GaugeCell::new();
    for i in 0..1000 {
        g.set(f64::from(i) * 0.1);
        assert_eq!(g.value(), f64::from(i) * 0.1);
        g.increment(1.0);
        assert_eq!(g.value(), f64::from(i) * 0.1 + 1.0);
    }
}

/// `absolute` raises the counter to at least its argument and keeps increments that
/// run at the same time.
#[test]
fn counter_absolute_racing_increments() {
    let c = CounterCell::new();
    const INCS: u64 = 200_000;
    let max_abs = std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..INCS {
                    c.increment(1);
                }
            });
        }
        let mut max_abs = 0;
        for k in 1..=2000u64 {
            let v = k * 300;
            c.absolute(v);
            assert!(c.value() >= v);
            max_abs = v;
        }
        max_abs
    });
    let total = THREADS as u64 * INCS;
    let v = c.value();
    assert!(v >= total.max(max_abs), "{v} < max({total}, {max_abs})");
    assert!(v <= total + max_abs, "{v} > {total} + {max_abs}");
}

/// Counters add up exactly from many threads (the per-CPU path and, for threads
/// without rseq, the shared fallback).
#[test]
fn counter_increments_add_up() {
    let c = CounterCell::new();
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let c = &c;
            s.spawn(move || {
                for _ in 0..100_000 {
                    c.increment(t + 1);
                }
            });
        }
    });
    assert_eq!(c.value(), 100_000 * (1..=8).sum::<u64>());
}
