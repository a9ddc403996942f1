//! The allocator where the environment gets in the way, each scenario in a child
//! process (this binary re-executed with a role) where process-wide state matters:
//! seccomp and valgrind (no rseq: the fallback path), library-owned registration
//! (`GLIBC_TUNABLES=glibc.pthread.rseq=0`), an address-space limit, fork while other
//! threads allocate, 10,000 threads coming and going, and memory given back after a
//! 1 GiB burst.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::time::{Duration, Instant};

use common::child::{enosys_filter, in_child, role, rss, Spec, BY_CPU, LIBRARY_OWNED};
use restartable::registration::{Owner, Reason, Registration};
use restartable_alloc::front::FastPath;
use restartable_alloc::PerCpuAlloc;

#[global_allocator]
static A: PerCpuAlloc = PerCpuAlloc::new();

/// The library's own areas found through its thread-local, not at one offset.
const OWN_AREA_TLS: (&str, &str) = ("RESTARTABLE_OWN_AREA", "thread-local");
const MIB: usize = 1 << 20;

/// std collections, strings and threads, then the pattern stress; shared by the
/// children.
fn workload(threads: usize, stress: Duration) {
    let mut m = std::collections::HashMap::new();
    for i in 0..20_000u32 {
        m.insert(i.to_string(), vec![i; (i % 50) as usize]);
        if i % 3 == 0 {
            m.remove(&(i / 2).to_string());
        }
    }
    assert!(m.len() > 1000);
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || (0..2000).map(|i| format!("{t}-{i}")).collect::<Vec<_>>())
        })
        .collect();
    for h in hs {
        assert_eq!(h.join().unwrap().len(), 2000);
    }
    let n = common::stress(threads, stress, || {});
    assert!(n > 1000, "only {n} operations");
}

fn fallback_checks(expected: &[Reason]) {
    let s = restartable::status();
    let reason = s.reason().expect("rseq must be unavailable here");
    assert!(expected.contains(&reason), "unexpected reason {reason:?}");
    workload(8, Duration::from_secs(1));
    let st = restartable_alloc::stats();
    assert_eq!(st.caches_by_mm_cid, None, "caches set up without rseq");
    assert!(st.in_use_bytes > 0);
}

#[test]
fn fallback_under_seccomp_enosys_library_owned() {
    in_child(
        "fallback_under_seccomp_enosys_library_owned",
        "seccomp-library",
        Spec::within(120)
            .env(&[LIBRARY_OWNED])
            .pre_exec(enosys_filter),
        || fallback_checks(&[Reason::NoSyscall]),
    );
}

#[test]
fn fallback_under_seccomp_enosys_libc_owned() {
    in_child(
        "fallback_under_seccomp_enosys_libc_owned",
        "seccomp-libc",
        Spec::within(120).pre_exec(enosys_filter),
        || fallback_checks(&[Reason::LibcNotRegistered, Reason::NoSyscall]),
    );
}

#[test]
fn fallback_under_valgrind() {
    if role().is_none()
        && std::process::Command::new("valgrind")
            .arg("--version")
            .output()
            .is_err()
    {
        panic!("valgrind is not installed (CI installs it: see .ci/run)");
    }
    in_child(
        "fallback_under_valgrind",
        "valgrind",
        Spec::within(300).under(&["valgrind", "-q", "--error-exitcode=99"]),
        || {
            let s = restartable::status();
            assert!(s.reason().is_some(), "rseq under valgrind: {s}");
            workload(3, Duration::from_millis(500));
            assert_eq!(restartable_alloc::stats().caches_by_mm_cid, None);
        },
    );
}

/// Library-owned registration: the areas at one offset (an executable: the same
/// inlined fast path as under glibc's areas), then through the library's
/// thread-local (`RESTARTABLE_OWN_AREA=thread-local`: the inlined thread-local path
/// of a shared object loaded with `dlopen`).
#[test]
fn library_owned_registration_reenters_safely() {
    for (role, env, offset) in [
        ("library-owned", &[LIBRARY_OWNED][..], true),
        (
            "library-owned-tls",
            &[LIBRARY_OWNED, OWN_AREA_TLS][..],
            false,
        ),
    ] {
        in_child(
            "library_owned_registration_reenters_safely",
            role,
            Spec::within(120).env(env),
            || {
                assert_eq!(
                    restartable::status().registration,
                    Registration::Registered(Owner::Library)
                );
                assert_eq!(
                    restartable::registration::AreaOffset::get().is_some(),
                    offset
                );
                workload(12, Duration::from_secs(2));
                assert!(restartable_alloc::stats().caches_by_mm_cid.is_some());
                // The areas at one offset: the library's own fast path (by mm_cid here,
                // the area taken unchecked as glibc's is); else the thread-local one.
                let path = restartable_alloc::front::fast_path();
                assert_eq!(path, common::expected_fast_path());
                assert_ne!(path, FastPath::LibcUnchecked);
                if !offset {
                    assert_eq!(path, FastPath::ThreadLocal);
                }
            },
        );
    }
}

#[test]
fn address_space_limit_gives_null() {
    in_child(
        "address_space_limit_gives_null",
        "rlimit",
        Spec::within(120),
        || {
            // Set up caches and threads' state before limiting.
            drop(std::hint::black_box(vec![0u8; 100]));
            common::limit_address_space(256 * MIB);
            // Large objects first (small objects' address space serving large ones
            // after them is `tests/oom.rs`).
            for (size, align) in [(3 * MIB, 8), (100, 1 << 16), (48 * 1024, 8), (4000, 64)] {
                let l = Layout::from_size_align(size, align).unwrap();
                let mut held = Vec::with_capacity(100_000);
                let mut failed = false;
                for _ in 0..100_000 {
                    // SAFETY: (test) a valid layout.
                    let p = unsafe { A.alloc(l) };
                    if p.is_null() {
                        failed = true;
                        break;
                    }
                    held.push(p as usize);
                }
                assert!(
                    failed,
                    "{l:?}: never failed within the limit ({} objects)",
                    held.len()
                );
                assert!(held.len() > 10, "{l:?}: failed too early ({})", held.len());
                // SAFETY: (test) a valid layout; null on failure.
                assert!(unsafe { A.alloc(Layout::from_size_align(1 << 30, 8).unwrap()) }.is_null());
                for &p in &held {
                    // SAFETY: (test) allocated above with `l`.
                    unsafe { A.dealloc(p as *mut u8, l) };
                }
                restartable_alloc::release_memory();
                // Memory is usable again after the frees.
                // SAFETY: (test) a valid layout.
                let p = unsafe { A.alloc(l) };
                assert!(!p.is_null(), "{l:?}: no recovery after freeing");
                // SAFETY: (test) allocated above with `l`.
                unsafe { A.dealloc(p, l) };
                println!("{l:?}: null after {} objects", held.len());
            }
        },
    );
}

#[test]
fn fork_while_other_threads_allocate() {
    if role().is_some() {
        return;
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bg = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // Sizes whose caches hold at most two objects (four up to 64 KiB,
            // `MID_MAX_CAPACITY`): nearly every operation takes the middle's and the
            // page heap's locks.
            let mut r = common::Rng::new(7);
            let hs: Vec<_> = (0..4)
                .map(|t| {
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        let mut keep = Vec::new();
                        let mut r = common::Rng::new(t + 100);
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            let n = 40_000 + r.below(200_000) as usize;
                            keep.push(vec![1u8; n]);
                            if keep.len() > 8 {
                                keep.swap_remove(r.below(8) as usize);
                            }
                        }
                    })
                })
                .collect();
            let _ = r.next();
            for h in hs {
                h.join().unwrap();
            }
        })
    };
    let forks = 100;
    for i in 0..forks {
        // SAFETY: (test) the child only allocates through the allocator and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let mut v: Vec<Vec<u8>> = Vec::new();
            for k in 0..1000usize {
                let n = if k % 100 == 0 {
                    300_000
                } else {
                    1 + (k * 97) % 20_000
                };
                v.push(vec![k as u8; n]);
            }
            let ok = v
                .iter()
                .enumerate()
                .all(|(k, x)| x.iter().all(|&b| b == k as u8));
            drop(v);
            restartable_alloc::release_memory();
            // SAFETY: (test) leave the child without running the parent's atexit code.
            unsafe { libc::_exit(if ok { 0 } else { 3 }) };
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut status = 0;
        loop {
            // SAFETY: (test) our child.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                break;
            }
            if Instant::now() > deadline {
                // SAFETY: (test) our child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("fork {i}: the child hung for 20 s (a lock held across fork?)");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "fork {i}: child status {status:#x}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    bg.join().unwrap();
}

/// 10,000 threads, 16 at a time, each allocating and freeing (a few of its objects
/// freed by the main thread); resident memory must not grow with the thread count.
fn thread_churn() {
    let handed = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Box<[u8]>>::new()));
    let mut rss_after_warmup = 0;
    let total = 10_000;
    let mut started = 0;
    while started < total {
        let hs: Vec<_> = (0..16)
            .map(|t| {
                let handed = handed.clone();
                let seed = (started + t) as u64;
                std::thread::spawn(move || {
                    let mut r = common::Rng::new(seed);
                    let mut mine = Vec::new();
                    for _ in 0..200 {
                        let n = 1 + r.below(2000) as usize;
                        mine.push(vec![seed as u8; n].into_boxed_slice());
                    }
                    let mut h = handed.lock().unwrap();
                    for _ in 0..5 {
                        h.push(mine.pop().unwrap());
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        started += 16;
        handed.lock().unwrap().clear();
        if started == 2000 {
            rss_after_warmup = rss();
        }
    }
    let end = rss();
    println!(
        "thread churn: {total} threads; RSS after 2,000: {} KiB, after {total}: {} KiB",
        rss_after_warmup / 1024,
        end / 1024
    );
    assert!(
        end <= rss_after_warmup + 16 * MIB,
        "resident memory grew with threads: {} -> {} KiB",
        rss_after_warmup / 1024,
        end / 1024
    );
}

#[test]
fn ten_thousand_threads_stay_bounded() {
    in_child(
        "ten_thousand_threads_stay_bounded",
        "thread-churn",
        Spec::within(180),
        || {
            thread_churn();
        },
    );
}

#[test]
fn ten_thousand_threads_stay_bounded_library_owned() {
    in_child(
        "ten_thousand_threads_stay_bounded_library_owned",
        "thread-churn-library",
        Spec::within(180).env(&[LIBRARY_OWNED]),
        || {
            thread_churn();
        },
    );
}

/// The documented bound on what stays resident after a burst is freed (see the
/// crate docs): the caches' bound for this machine plus 32 MiB for spans kept by
/// cached objects and the allocator's metadata.
fn burst_bound() -> usize {
    let slots = restartable::possible_cpus();
    restartable_alloc::Stats::cached_bound(slots) + 32 * MIB
}

#[test]
fn memory_returns_after_a_1_gib_burst() {
    in_child(
        "memory_returns_after_a_1_gib_burst",
        "burst",
        Spec::within(180),
        || {
            drop(std::hint::black_box(vec![0u8; 1000]));
            let before = rss();
            let hs: Vec<_> = (0..2)
                .map(|t| {
                    std::thread::spawn(move || {
                        let mut r = common::Rng::new(t + 9);
                        let mut v: Vec<Box<[u8]>> = Vec::new();
                        let mut bytes = 0;
                        while bytes < 512 * MIB {
                            let n = 16 + r.below(64 * 1024) as usize;
                            v.push(vec![0x5A; n].into_boxed_slice());
                            bytes += n;
                        }
                        v
                    })
                })
                .collect();
            let held: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
            let peak = rss();
            assert!(
                peak >= before + 900 * MIB,
                "the burst was not resident: {peak}"
            );
            drop(held);
            let after = rss();
            let st = restartable_alloc::stats();
            restartable_alloc::release_memory();
            let released = rss();
            println!(
                "burst: RSS before {} MiB, peak {} MiB, after free {} MiB, after release_memory {} MiB; bound {} MiB; {st:?}",
                before / MIB,
                peak / MIB,
                after / MIB,
                released / MIB,
                burst_bound() / MIB
            );
            assert!(
                after <= before + burst_bound(),
                "after the burst, {} MiB stay resident (bound {} MiB)",
                (after - before) / MIB,
                burst_bound() / MIB
            );
            assert!(
                released <= before + 16 * MIB,
                "release_memory left {} MiB",
                (released - before) / MIB
            );
        },
    );
}

#[test]
fn idle_cpu_caches_are_drained_by_another_thread() {
    if role().is_none() {
        if common::two_allowed_cpus().is_none() {
            common::child::shared::skip(format!(
                "needs two allowed CPUs, this process may run on {:?} only",
                common::allowed_cpus()
            ));
            return;
        }
        if !restartable::fences_supported() {
            common::child::shared::skip("needs membarrier rseq fences");
            return;
        }
    }
    in_child(
        "idle_cpu_caches_are_drained_by_another_thread",
        "idle-drain",
        Spec::within(60).env(&[BY_CPU]),
        || {
            // The child inherits the parent's CPUs (checked there).
            let (busy, idle) = common::two_allowed_cpus().expect("two allowed CPUs");
            common::affinity::pin_current_thread(busy);
            // A thread on the idle CPU leaves free objects in that CPU's caches, then
            // exits.
            std::thread::spawn(move || {
                common::affinity::pin_current_thread(idle);
                let v: Vec<Box<[u8; 200]>> = (0..100).map(|_| Box::new([1; 200])).collect();
                drop(std::hint::black_box(v));
            })
            .join()
            .unwrap();
            let exited = Instant::now();
            let exited_ms = restartable_alloc::front::now_ms();
            let cached = restartable_alloc::stats().cpu_cache_bytes_per_slot[idle];
            assert!(
                cached >= 100 * 200,
                "CPU {idle}'s cache holds only {cached} bytes"
            );
            // The busy CPU keeps visiting the middle (more objects of a class at once than
            // its cache can ever hold). A visit at (the allocator's) time `now` scans the
            // slots once `now` reaches the last scan's time plus `IDLE_MS`, and drains a
            // slot whose owners' last visit (for the idle CPU, at most `exited_ms`) plus
            // `IDLE_MS` is below `now`. So a scan that left the idle slot alone ran by
            // `exited_ms + IDLE_MS` and the next is due by `exited_ms + 2 x IDLE_MS`: a
            // round of visits that begins after that, on the allocator's clock, scans and
            // drains it (and, had the slot been busy then, a round that begins `IDLE_MS`
            // after the end of that one scans again). Bounded by such rounds, counted on
            // the allocator's own clock, not by time: under load the test takes longer,
            // never fails for it.
            const SCANS: usize = 3;
            let idle_ms = restartable_alloc::front::IDLE_MS;
            let class = restartable_alloc::size_class::class_of_size(200_000);
            let held = restartable_alloc::size_class::max_capacity(class) + 2;
            let mut certain = exited_ms + 2 * idle_ms + 1;
            let mut scans = 0;
            loop {
                let began = restartable_alloc::front::now_ms();
                // black_box: an unused allocation may be optimized away entirely.
                let v: Vec<Vec<u8>> = (0..held)
                    .map(|_| std::hint::black_box(vec![0u8; 200_000]))
                    .collect();
                drop(std::hint::black_box(v));
                let now = restartable_alloc::stats().cpu_cache_bytes_per_slot[idle];
                if now == 0 {
                    println!(
                        "CPU {idle}'s {cached} cached bytes drained {:?} after its thread \
                         exited ({scans} rounds that had to scan before)",
                        exited.elapsed()
                    );
                    break;
                }
                if began >= certain {
                    scans += 1;
                    certain = restartable_alloc::front::now_ms() + idle_ms + 1;
                }
                assert!(
                    scans < SCANS,
                    "CPU {idle}'s idle cache still holds {now} bytes after {scans} rounds of \
                     middle visits that each had to scan the slots and drain it ({:?} after \
                     its thread exited)",
                    exited.elapsed()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        },
    );
}

/// Capacities follow use within the budget: a hot class grows from 0 to its most,
/// the slot's capacities never exceed the budget, and once other classes want the
/// budget the resize passes (by this thread, through fences) shrink the class that
/// went cold.
#[test]
fn caches_resize_within_the_budget() {
    use restartable_alloc::front;
    use restartable_alloc::size_class::{
        class_of_size, max_cached_bytes_per_cpu, max_capacity, size,
    };
    if role().is_none() && !restartable::fences_supported() {
        common::child::shared::skip("needs membarrier rseq fences");
        return;
    }
    in_child(
        "caches_resize_within_the_budget",
        "resize",
        Spec::within(120).env(&[BY_CPU]),
        || {
            // Slot `cpu` of the caches (indexed by CPU), whichever CPUs are allowed.
            let cpu = common::allowed_cpus()[0];
            common::affinity::pin_current_thread(cpu);
            let hot = class_of_size(64);
            let l = Layout::from_size_align(64, 8).unwrap();
            // More than the class can ever cache, allocated and freed twice.
            for _ in 0..2 {
                // SAFETY: (test) valid layouts; every object freed with its layout.
                unsafe {
                    let v: Vec<*mut u8> = (0..2 * max_capacity(hot)).map(|_| A.alloc(l)).collect();
                    for p in v {
                        A.dealloc(p, l);
                    }
                }
            }
            let grown = front::class_capacity(cpu, hot);
            assert_eq!(
                grown,
                max_capacity(hot),
                "the hot class did not grow to its most"
            );
            // Large classes want far more than the budget: keep them missing (more
            // objects at once than they can cache) until the cold class has shrunk. A
            // middle visit runs a resize pass once the last one is `RESIZE_MS` old on the
            // allocator's clock: each round begins once that clock is `RESIZE_MS` past
            // the end of the round before (by when any earlier pass had run), so its
            // first visit runs one. The first pass clears the cold class's misses; once
            // the large classes have filled the budget (in the first round here) and
            // been denied growth, the next pass shrinks it. Bounded by rounds, not by
            // time: under load the test takes longer, never fails for it.
            const ROUNDS: usize = 10;
            let big: Vec<usize> = (1..=restartable_alloc::size_class::CLASSES)
                .filter(|&c| size(c) >= 8192)
                .collect();
            let start = Instant::now();
            let mut max_budget = 0;
            let mut rounds = 0;
            let mut ended = front::now_ms();
            loop {
                while front::now_ms() < ended + front::RESIZE_MS {
                    std::thread::sleep(Duration::from_millis(10));
                }
                rounds += 1;
                for &c in &big {
                    let l = Layout::from_size_align(size(c), 8).unwrap();
                    // SAFETY: as above.
                    unsafe {
                        let v: Vec<*mut u8> =
                            (0..max_capacity(c) + 1).map(|_| A.alloc(l)).collect();
                        for p in v {
                            A.dealloc(p, l);
                        }
                    }
                    max_budget = max_budget.max(front::capacity_bytes(cpu));
                }
                ended = front::now_ms();
                if front::class_capacity(cpu, hot) < grown {
                    break;
                }
                assert!(
                    rounds < ROUNDS,
                    "the cold class kept its capacity {grown} through {rounds} rounds, each \
                     with a resize pass (capacities {} bytes, budget {})",
                    front::capacity_bytes(cpu),
                    max_cached_bytes_per_cpu()
                );
            }
            assert!(
                max_budget <= max_cached_bytes_per_cpu(),
                "capacities reached {max_budget} bytes, above the budget"
            );
            assert!(
                max_budget + size(big[big.len() - 1]) * 2 > max_cached_bytes_per_cpu() / 2,
                "the large classes never came near the budget ({max_budget} bytes)"
            );
            println!(
                "cold class shrank from {grown} to {} after {rounds} rounds ({:?}); capacities \
                 peaked at {max_budget} bytes",
                front::class_capacity(cpu, hot),
                start.elapsed()
            );
        },
    );
}

/// A slot caches four 64 KiB objects (`size_class::MID_MAX_CAPACITY`): what a zlib
/// stream frees (window, `prev`, `head`, pending buffer), freed into a drained slot,
/// stays in the slot's cache, and the next stream's four allocations take them all
/// from it (twice the class's `capacity`, 2, sent two of them to the middle).
#[test]
fn a_slot_caches_a_zlib_streams_four_64_kib_buffers() {
    use restartable_alloc::front;
    use restartable_alloc::size_class::{class_of_size, MID_MAX_CAPACITY};
    if role().is_none() && !restartable::fences_supported() {
        common::child::shared::skip("needs membarrier rseq fences (to drain the slot)");
        return;
    }
    in_child(
        "a_slot_caches_a_zlib_streams_four_64_kib_buffers",
        "four-64k",
        Spec::within(60).env(&[BY_CPU]),
        || {
            let cpu = common::allowed_cpus()[0];
            common::affinity::pin_current_thread(cpu);
            let c = class_of_size(64 * 1024);
            let l = Layout::from_size_align(64 * 1024, 8).unwrap();
            // SAFETY: (test) valid layouts; every object freed with its layout.
            unsafe {
                let v: Vec<*mut u8> = (0..MID_MAX_CAPACITY).map(|_| A.alloc(l)).collect();
                front::drain_slot(cpu).expect("the slot drains");
                for &p in &v {
                    A.dealloc(p, l);
                }
                assert_eq!(
                    front::class_count(cpu, c),
                    MID_MAX_CAPACITY,
                    "64 KiB objects cached after {MID_MAX_CAPACITY} frees into a drained slot"
                );
                let again: Vec<*mut u8> = (0..MID_MAX_CAPACITY).map(|_| A.alloc(l)).collect();
                assert_eq!(
                    front::class_count(cpu, c),
                    0,
                    "the next {MID_MAX_CAPACITY} allocations left objects in the cache"
                );
                let mut a = v.clone();
                let mut b = again.clone();
                a.sort();
                b.sort();
                assert_eq!(a, b, "the allocations did not take the cached objects");
                for p in again {
                    A.dealloc(p, l);
                }
            }
        },
    );
}

/// `alloc_zeroed` of small objects of at least `ZEROED_FROM_SPANS_MIN` bytes hands
/// out objects of fresh spans without writing them (counted), and objects that were
/// used before still read as zero (written by the allocator).
#[test]
fn alloc_zeroed_from_fresh_spans_writes_nothing_and_reads_zero() {
    in_child(
        "alloc_zeroed_from_fresh_spans_writes_nothing_and_reads_zero",
        "zeroed",
        Spec::within(60),
        || {
            let n = 5000;
            assert!(n >= restartable_alloc::ZEROED_FROM_SPANS_MIN);
            let l = Layout::from_size_align(n, 8).unwrap();
            let before = restartable_alloc::stats().zeroed_without_memset;
            // SAFETY: (test) valid layouts; every object freed with its layout.
            unsafe {
                // Nothing of this class was ever freed in this new process: every
                // object comes from a fresh span.
                let v: Vec<*mut u8> = (0..100).map(|_| A.alloc_zeroed(l)).collect();
                let fresh = restartable_alloc::stats().zeroed_without_memset - before;
                assert_eq!(
                    fresh, 100,
                    "only {fresh} of 100 objects came from fresh spans"
                );
                for &p in &v {
                    assert!(std::slice::from_raw_parts(p, n).iter().all(|&b| b == 0));
                    p.write_bytes(0xAB, n);
                }
                for p in v {
                    A.dealloc(p, l);
                }
                // Used objects now sit in caches and spans: zeroed ones must be cleared.
                let v: Vec<*mut u8> = (0..200).map(|_| A.alloc_zeroed(l)).collect();
                for &p in &v {
                    assert!(
                        std::slice::from_raw_parts(p, n).iter().all(|&b| b == 0),
                        "a used object handed out by alloc_zeroed is not zero"
                    );
                }
                for p in v {
                    A.dealloc(p, l);
                }
            }
        },
    );
}

/// Forks while another thread holds a class's lock of the middle (as a thread
/// inside the allocator would), and lets the child allocate from that class. With
/// the fork handlers the fork waits for the lock and the child allocates; without
/// them (the positive control, `disable_fork_handlers`) the child inherits the lock
/// held by a thread it does not have and hangs: the test sees both.
///
/// The lock is held until the fork has begun, whatever the scheduling: this test's
/// own `pthread_atfork` handler, run before the allocator's, says when. Without the
/// handlers it is held until the fork is over (the child inherits it held, for
/// sure); with them the fork cannot be over before it is given back, so it is given
/// back a second after the fork began, or at once should the fork be over (broken
/// handlers: then the child inherits it held and hangs, and the test says so).
fn fork_with_a_lock_held(handlers: bool) -> bool {
    use restartable_alloc::size_class::class_of_size;
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Set by this test's `pthread_atfork` handler: the parent is in `fork`.
    static IN_FORK: AtomicBool = AtomicBool::new(false);
    /// Set by the parent once its `fork` has returned.
    static FORKED: AtomicBool = AtomicBool::new(false);
    extern "C" fn entering_fork() {
        IN_FORK.store(true, Ordering::SeqCst);
    }
    /// Whether `flag` was set within `limit`.
    fn set_within(flag: &AtomicBool, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !flag.load(Ordering::SeqCst) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }
    let n = 150_000;
    let l = Layout::from_size_align(n, 8).unwrap();
    let held = std::sync::Arc::new(std::sync::Barrier::new(2));
    let holder = {
        let held = held.clone();
        std::thread::spawn(move || {
            let lock = restartable_alloc::middle::lock_of(class_of_size(n));
            lock.take();
            held.wait();
            assert!(
                set_within(&IN_FORK, Duration::from_secs(20)),
                "the parent did not enter fork within 20 s"
            );
            if handlers {
                set_within(&FORKED, Duration::from_secs(1));
            } else {
                assert!(
                    set_within(&FORKED, Duration::from_secs(20)),
                    "fork without the handlers did not return within 20 s"
                );
            }
            // SAFETY: (test) taken above on this thread.
            unsafe { lock.give() };
        })
    };
    held.wait();
    // Registered after the allocator's (the holder's `take` installed them), so it
    // runs before them in `fork`. (Once: this process forks once.)
    // SAFETY: (test) a handler that only stores to an atomic.
    let rc = unsafe { libc::pthread_atfork(Some(entering_fork), None, None) };
    assert_eq!(rc, 0, "pthread_atfork");
    if !handlers {
        // SAFETY: (test) this child process exists to fork with a lock held and
        // watch its own child hang; nothing else runs in it afterwards.
        unsafe { restartable_alloc::sync::disable_fork_handlers() };
    }
    // SAFETY: (test) the child only allocates through the allocator and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid > 0 {
        FORKED.store(true, Ordering::SeqCst);
    }
    if pid == 0 {
        // SAFETY: (test) a valid layout; the class's caches are empty here (nothing
        // of it was allocated before), so this goes to the middle.
        let ok = unsafe {
            let p = A.alloc(l);
            !p.is_null() && {
                p.write_bytes(1, n);
                A.dealloc(p, l);
                true
            }
        };
        // SAFETY: (test) leave the child without running the parent's atexit code.
        unsafe { libc::_exit(if ok { 0 } else { 3 }) };
    }
    holder.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut status = 0;
    loop {
        // SAFETY: (test) our child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "child status {status:#x}"
            );
            return true;
        }
        if Instant::now() > deadline {
            // SAFETY: (test) our child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: (test) reap it.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn fork_handlers_let_a_child_allocate_and_without_them_it_hangs() {
    for (role, handlers) in [("fork-handlers-on", true), ("fork-handlers-off", false)] {
        in_child(
            "fork_handlers_let_a_child_allocate_and_without_them_it_hangs",
            role,
            Spec::within(60),
            || {
                let finished = fork_with_a_lock_held(handlers);
                if handlers {
                    assert!(
                        finished,
                        "the child hung for 10 s with the fork handlers on"
                    );
                } else {
                    assert!(
                        !finished,
                        "without the fork handlers the child still allocated: the test \
                         cannot tell whether the handlers matter"
                    );
                }
            },
        );
    }
}
