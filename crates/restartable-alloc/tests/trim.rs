//! `restartable_alloc::trim` (C's `malloc_trim`) called in a loop while other threads
//! allocate and free at full speed (the pattern stress, with cross-thread frees):
//! every per-CPU slot stopped, fenced and drained, the transfer caches flushed and the
//! free pages released with `madvise` under the workers' feet. The allocator's
//! sequences are held open between their header load and their commit (a `TestHooks`
//! delay at injection point 4), so that a drain that took a slot without stopping and
//! fencing it would meet a running sequence (compare-twice aborts the process when a
//! count changes under one); a page released while a span still used it would read
//! back as zeros (the pattern check). Afterwards the statistics add up: the bytes in
//! use are what they were before the stress, nothing stays in the transfer caches or
//! among the resident free pages.
//!
//! Each registration and index mode in its own child process: glibc's areas by
//! mm_cid, by CPU (`RESTARTABLE_ALLOC_INDEX=cpu`), the library's own registration
//! (`GLIBC_TUNABLES=glibc.pthread.rseq=0`), and no rseq at all (seccomp `ENOSYS`: the
//! fallback thread caches, which `trim` flushes only for its own thread).
//! (Written by the review of `malloc_trim`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use std::time::Duration;

use common::child::{enosys_filter, in_child, Spec, BY_CPU, LIBRARY_OWNED};
use restartable::hooks::{self, TestHooks};
use restartable_alloc::PerCpuAlloc;

#[global_allocator]
static A: PerCpuAlloc<TestHooks> = PerCpuAlloc::with_hooks();

/// The stress with `trim` in a loop, then the statistics checked; `caches`: whether
/// per-CPU caches (and fences to drain them) are expected.
fn trim_under_stress(caches: bool) {
    let threads = 2 * common::nproc();
    hooks::set_loops(4, 3000);
    hooks::set_compare_twice(true);
    // Warm up (the caches set up, the test's own statics at their final size), then
    // the baseline, drained.
    common::stress(threads, Duration::from_millis(500), || {});
    restartable_alloc::trim(0);
    // (Its per-slot vector, counted in use by this reading, freed: the reading after
    // counts its own.)
    let mut before = restartable_alloc::stats();
    before.cpu_cache_bytes_per_slot = Vec::new();
    assert_eq!(
        before.caches_by_mm_cid.is_some(),
        caches,
        "per-CPU caches expected: {caches}; {before:?}"
    );

    let (mut trims, mut released) = (0u64, 0usize);
    let ops = common::stress(threads, Duration::from_secs(3), || {
        // Mostly everything, sometimes keeping 1 MiB of free pages resident.
        let keep = if trims % 4 == 3 { 1 << 20 } else { 0 };
        released += restartable_alloc::trim(keep);
        trims += 1;
    });
    let got = restartable_alloc::trim(0);
    let after = restartable_alloc::stats();
    hooks::reset();
    eprintln!(
        "{ops} stress ops, {trims} trims released {released} bytes (and {got} after); \
         before {before:?}; after {after:?}"
    );
    assert!(ops > 1000, "the stress ran ({ops} ops)");
    assert!(trims > 10, "trim ran {trims} times");
    assert_eq!(
        after.in_use_bytes, before.in_use_bytes,
        "bytes in use after the stress (everything freed) differ from before"
    );
    assert_eq!(after.transfer_cache_bytes, 0, "{after:?}");
    if caches && restartable::fences_supported() {
        // Drained by the last trim; only the refill of this reading's own vector (one
        // batch of one class) since.
        assert!(after.cpu_cache_bytes <= 64 << 10, "{after:?}");
    }
    assert_eq!(after.page_heap_free_bytes, 0, "{after:?}");
    assert!(
        after.released_total_bytes >= before.released_total_bytes + released as u64,
        "{released} bytes released by the trims, not in the total: {after:?}"
    );
    // The allocator still works, contents kept.
    let v: Vec<u64> = (0..100_000).collect();
    assert_eq!(v.iter().sum::<u64>(), 4_999_950_000);
}

#[test]
fn trim_while_threads_allocate_loses_nothing() {
    // Whether this machine has rseq at all (else only the fallback child runs).
    let rseq = restartable::status().is_registered();
    let roles: [(&str, Spec, bool); 4] = [
        ("mm-cid", Spec::within(120), true),
        ("by-cpu", Spec::within(120).env(&[BY_CPU]), true),
        (
            "library-owned",
            Spec::within(120).env(&[LIBRARY_OWNED]),
            true,
        ),
        (
            "no-rseq",
            Spec::within(120)
                .env(&[LIBRARY_OWNED])
                .pre_exec(enosys_filter),
            false,
        ),
    ];
    for (role, spec, caches) in roles {
        if caches && !rseq && common::child::role().is_none() {
            common::child::shared::skip(format!("no rseq here: trim test, {role}"));
            continue;
        }
        in_child(
            "trim_while_threads_allocate_loses_nothing",
            role,
            spec,
            || trim_under_stress(caches),
        );
    }
}

/// What `trim` returns is every byte it released: also what the page heap's own
/// limit released while the drained caches and the flushed transfer caches emptied
/// spans (8 MiB of free pages reached inside the call). 600 spans of 16-byte objects,
/// each pinned by one object freed last, after a trim emptied the caches (so they
/// sit in the per-CPU cache or the transfer cache): the next trim frees them all at
/// once. In a child: nothing else
/// allocates or frees meanwhile, so the page heap's total counts this call only.
#[test]
fn trim_counts_every_byte_it_releases() {
    in_child(
        "trim_counts_every_byte_it_releases",
        "counts",
        Spec::within(120),
        || {
            use std::alloc::{alloc, dealloc, Layout};
            let l = Layout::from_size_align(16, 16).unwrap();
            // Objects per span of this class (64 KiB spans).
            let per_span = 64 * 1024 / 16;
            let n = 600 * per_span;
            let mut objs: Vec<usize> = Vec::with_capacity(n);
            for _ in 0..n {
                // SAFETY: (test) a non-zero layout.
                let p = unsafe { alloc(l) };
                assert!(!p.is_null());
                // SAFETY: (test) a fresh 16-byte object.
                unsafe { p.write_bytes(0x5a, 16) };
                objs.push(p as usize);
            }
            let last: Vec<usize> = objs.iter().copied().step_by(per_span).collect();
            for (i, &p) in objs.iter().enumerate() {
                if i % per_span != 0 {
                    // SAFETY: (test) a live object of layout `l`, freed once.
                    unsafe { dealloc(p as *mut u8, l) };
                }
            }
            drop(objs);
            // The caches emptied (every span still pinned), so that the pinning
            // objects all find room in them.
            restartable_alloc::trim(0);
            for &p in &last {
                // SAFETY: (test) as above.
                unsafe { dealloc(p as *mut u8, l) };
            }
            for keep in [16 << 20, 0] {
                let before = restartable_alloc::stats().released_total_bytes;
                let got = restartable_alloc::trim(keep);
                let after = restartable_alloc::stats().released_total_bytes;
                eprintln!(
                    "trim({keep}) returned {got}; the page heap released {}",
                    after - before
                );
                assert_eq!(
                    got as u64,
                    after - before,
                    "trim({keep}) returned {got} bytes, the page heap released {} meanwhile",
                    after - before
                );
            }
        },
    );
}
