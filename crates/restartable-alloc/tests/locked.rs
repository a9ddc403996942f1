//! Memory the program locked (`mlock`, `mlockall`) cannot be given back with
//! `madvise(MADV_DONTNEED)`: the kernel refuses (`EINVAL`) and the pages keep what
//! was written in them. The page heap must then not take them for released: a
//! released run reads as zero, and `alloc_zeroed` hands out the objects of spans
//! carved from one without writing them (an audit's finding: `vec![0u8; n]` from
//! safe code then held the bytes of freed objects). In a child process.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use std::alloc::{GlobalAlloc, Layout};

use common::child::{in_child, Spec};
use restartable_alloc::PerCpuAlloc;

#[global_allocator]
static A: PerCpuAlloc = PerCpuAlloc::new();

/// The size of the objects [`alloc_and_lock`] allocates.
const LOCKED_OBJECT: usize = 8192;

/// Allocates `count` objects of `layout` (none null) and returns their addresses;
/// the caller frees them with the same layout.
fn alloc_objects(count: usize, layout: Layout) -> Vec<usize> {
    (0..count)
        .map(|_| {
            // SAFETY: (test) `layout` has a non-zero size.
            let p = unsafe { A.alloc(layout) };
            assert!(!p.is_null(), "allocation {layout:?} failed");
            p as usize
        })
        .collect()
}

/// Allocates 256 objects of [`LOCKED_OBJECT`] bytes, fills them with 0xAB and locks
/// (`mlock`) the pages they cover: returns their addresses and the locked range
/// `lo..hi`.
fn alloc_and_lock() -> (Vec<usize>, usize, usize) {
    let n = LOCKED_OBJECT;
    let objs = alloc_objects(256, Layout::from_size_align(n, 8).unwrap());
    for &p in &objs {
        // SAFETY: (test) `p` is a live object of `n` bytes.
        unsafe { (p as *mut u8).write_bytes(0xAB, n) };
    }
    let lo = *objs.iter().min().unwrap() & !4095;
    let hi = objs.iter().max().unwrap() + n;
    assert!(hi - lo <= 6 << 20, "objects spread over {} bytes", hi - lo);
    // SAFETY: mlock of pages this process mapped; it changes no memory.
    let r = unsafe { libc::mlock(lo as *const libc::c_void, hi - lo) };
    assert_eq!(r, 0, "mlock: {}", std::io::Error::last_os_error());
    (objs, lo, hi)
}

/// Objects of 8 KiB (at least `ZEROED_FROM_SPANS_MIN`: `alloc_zeroed` takes them
/// from fresh spans without a write) fill 2 MiB of spans, are written, locked
/// (`mlock` of their range, within the usual 8 MiB `RLIMIT_MEMLOCK`), freed, and the
/// heap asked to release everything (`release_memory`). Then `alloc_zeroed` objects
/// of the class are taken until 64 of them lie in the locked range (the pages are
/// reused: a backed run is taken before a released one); each must read as zero.
#[test]
fn alloc_zeroed_is_zero_on_pages_that_could_not_be_released() {
    in_child(
        "alloc_zeroed_is_zero_on_pages_that_could_not_be_released",
        "locked",
        Spec::within(60),
        || {
            let (n, l) = (
                LOCKED_OBJECT,
                Layout::from_size_align(LOCKED_OBJECT, 8).unwrap(),
            );
            assert!(n >= restartable_alloc::ZEROED_FROM_SPANS_MIN);
            let (objs, lo, hi) = alloc_and_lock();
            // SAFETY: (test) objects freed once with their layout, read within their size.
            unsafe {
                for &p in &objs {
                    A.dealloc(p as *mut u8, l);
                }
                restartable_alloc::release_memory();
                let mut held = Vec::new();
                let mut reused = 0;
                while reused < 64 {
                    assert!(
                        held.len() < 100_000,
                        "the locked pages were not reused ({reused} objects)"
                    );
                    let p = A.alloc_zeroed(l);
                    assert!(!p.is_null());
                    held.push(p);
                    if (lo..hi).contains(&(p as usize)) {
                        reused += 1;
                        let s = std::slice::from_raw_parts(p, n);
                        let bad = s.iter().filter(|&&b| b != 0).count();
                        assert_eq!(
                            bad,
                            0,
                            "alloc_zeroed gave {p:p} with {bad} bytes not zero, in locked \
                             pages: {:?}",
                            restartable_alloc::stats()
                        );
                    }
                }
                for p in held {
                    A.dealloc(p, l);
                }
            }
        },
    );
}

/// A locked free run (refused by `madvise`) does not keep the page heap from
/// releasing its other free runs: 40 spans of 8 KiB objects (2.5 MiB, a run longer
/// than any list of one length holds, so the first the release takes) are locked and
/// freed, one span after them stays in use, and the 10 spans after that (a run of 80
/// pages) are freed unlocked. `release_memory` must release the unlocked run: only
/// the locked one stays backed.
#[test]
fn a_locked_run_does_not_keep_the_others_from_being_released() {
    in_child(
        "a_locked_run_does_not_keep_the_others_from_being_released",
        "locked-run",
        Spec::within(60),
        || {
            let n = 8192;
            let l = Layout::from_size_align(n, 8).unwrap();
            let span = 64 << 10;
            // SAFETY: (test) valid layouts; objects freed once with their layout.
            unsafe {
                // Objects of fresh spans, carved in address order: find 51 spans in
                // a row among them.
                let mut objs = alloc_objects(2048, l);
                objs.sort_unstable();
                let first = objs
                    .iter()
                    .map(|&p| p & !(span - 1))
                    .find(|&s| (0..51 * span / n).all(|i| objs.binary_search(&(s + i * n)).is_ok()))
                    .expect("51 spans in a row");
                let locked = first..first + 40 * span;
                let live = first + 40 * span;
                assert_eq!(libc::mlock(first as *const libc::c_void, 40 * span), 0);
                for &p in &objs {
                    if p != live {
                        A.dealloc(p as *mut u8, l);
                    }
                }
                restartable_alloc::release_memory();
                let s = restartable_alloc::stats();
                assert!(
                    s.page_heap_free_bytes <= locked.len() as u64,
                    "free pages left backed beyond the locked run ({} bytes): {s:?}",
                    locked.len()
                );
                A.dealloc(live as *mut u8, l);
            }
        },
    );
}

/// Locked free runs past the page heap's limit are asked once, not on every free:
/// eight runs of 15 locked spans (7.5 MiB, within the usual 8 MiB
/// `RLIMIT_MEMLOCK`), each between spans in use, are freed; then other spans are
/// freed 1 MiB at a time (the caches drained each time, so their spans reach the
/// page heap), which puts the backed free pages past the 8 MiB limit again and
/// again. Each time the unlocked pages are released; the locked runs are refused
/// once each, and not asked again (an audit's finding: each free past the limit
/// made up to eight refused `madvise` calls, under `mlockall` on every free); the
/// refusals leave `errno` as it was.
#[test]
fn locked_runs_are_not_asked_again_on_every_free() {
    in_child(
        "locked_runs_are_not_asked_again_on_every_free",
        "locked-again",
        Spec::within(300),
        || {
            let n = 8192;
            let l = Layout::from_size_align(n, 8).unwrap();
            let span = 64 << 10;
            let per_span = span / n;
            // Spans of a group: one in use, then 15 locked.
            let group = 16;
            // SAFETY: (test) valid layouts; objects freed once with their layout.
            unsafe {
                let mut objs = alloc_objects(8192, l);
                objs.sort_unstable();
                let whole =
                    |s: usize| (0..per_span).all(|i| objs.binary_search(&(s + i * n)).is_ok());
                // 8 groups and a last span in use, 129 whole spans in a row.
                let first = objs
                    .iter()
                    .map(|&p| p & !(span - 1))
                    .find(|&s| (0..8 * group + 1).all(|k| whole(s + k * span)))
                    .expect("129 spans in a row");
                let window = first..first + (8 * group + 1) * span;
                let in_use = |p: usize| ((p - first) / span).is_multiple_of(group);
                for g in 0..8 {
                    let start = first + (g * group + 1) * span;
                    assert_eq!(
                        libc::mlock(start as *const libc::c_void, (group - 1) * span),
                        0,
                        "mlock: {}",
                        std::io::Error::last_os_error()
                    );
                }
                let drain = || {
                    let _ = restartable_alloc::front::drain_all();
                    restartable_alloc::middle::flush_transfer_caches();
                };
                let (locked, rest): (Vec<usize>, Vec<usize>) =
                    objs.iter().partition(|&&p| window.contains(&p));
                for &p in &locked {
                    if !in_use(p) {
                        A.dealloc(p as *mut u8, l);
                    }
                }
                drain();
                let before = restartable_alloc::backend::page_heap::stats();
                let mut passes = 0;
                // The refused releases leave `errno` alone (C's `free` must).
                *libc::__errno_location() = 4321;
                for batch in rest.chunks(16 * per_span) {
                    let released = restartable_alloc::backend::page_heap::stats().released_total;
                    for &p in batch {
                        A.dealloc(p as *mut u8, l);
                    }
                    drain();
                    let h = restartable_alloc::backend::page_heap::stats();
                    passes += usize::from(h.released_total > released);
                }
                let errno = *libc::__errno_location();
                let after = restartable_alloc::backend::page_heap::stats();
                println!("{passes} release passes; before {before:?}\nafter {after:?}");
                assert_eq!(errno, 4321, "errno changed by the frees (refused releases)");
                assert!(passes >= 10, "only {passes} release passes");
                assert!(
                    after.refusals - before.refusals <= 8,
                    "{} refused releases in {passes} passes over 8 locked runs",
                    after.refusals - before.refusals
                );
                assert!(
                    after.refusals > before.refusals,
                    "no release refused: {after:?}"
                );
                assert!(after.refused_free <= 8 * (group - 1) * span, "{after:?}");
                for &p in &locked {
                    if in_use(p) {
                        A.dealloc(p as *mut u8, l);
                    }
                }
            }
        },
    );
}

/// Runs refused once (locked) are asked again by an explicit release: 256 objects
/// of 8 KiB are locked (`mlock`) and freed, `release_memory` is refused for their
/// pages (they stay backed, as refused runs); then the program unlocks them, and
/// the next `release_memory` (C's `malloc_trim`) releases them: no backed free page
/// is left. (The heap's own releases leave refused runs alone; an explicit release
/// must not, or pages unlocked later stay resident until reused.)
#[test]
fn an_explicit_release_asks_the_refused_runs_again() {
    in_child(
        "an_explicit_release_asks_the_refused_runs_again",
        "locked-explicit",
        Spec::within(300),
        || {
            let l = Layout::from_size_align(LOCKED_OBJECT, 8).unwrap();
            let (objs, lo, hi) = alloc_and_lock();
            let range = (lo as *const libc::c_void, hi - lo);
            // SAFETY: (test) objects freed once with their layout; the range was locked
            // by `alloc_and_lock`.
            unsafe {
                for &p in &objs {
                    A.dealloc(p as *mut u8, l);
                }
                restartable_alloc::release_memory();
                let locked = restartable_alloc::backend::page_heap::stats();
                assert!(
                    locked.refused_free > 0 && locked.refusals > 0,
                    "the locked pages were not refused: {locked:?}"
                );
                assert_eq!(libc::munlock(range.0, range.1), 0);
                restartable_alloc::release_memory();
                let after = restartable_alloc::backend::page_heap::stats();
                assert_eq!(
                    after.backed_free, 0,
                    "unlocked pages left backed after an explicit release: {after:?}"
                );
                assert_eq!(after.refused_free, 0, "{after:?}");
            }
        },
    );
}
