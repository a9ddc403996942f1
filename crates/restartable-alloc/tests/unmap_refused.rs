//! `munmap` refused (as the kernel does with `ENOMEM` when splitting a mapping would
//! pass `vm.max_map_count`): the range is neither lost nor used twice. It stays
//! counted as mapped until a later unmap or a mapping that fails for want of
//! address space unmaps it. The refusals are injected (`os::refuse_unmaps`): the
//! real limit is root's to lower, for the whole machine. Each scenario runs in a
//! child process (the injection is process-wide).

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use std::alloc::{GlobalAlloc, Layout};

use common::child::{in_child, Spec};
use restartable_alloc::{os, PerCpuAlloc};

#[global_allocator]
static A: PerCpuAlloc = PerCpuAlloc::new();

const MIB: usize = 1 << 20;

/// Whether any page of `[p, p + len)` is mapped (`mincore` says `ENOMEM` for a range
/// with an unmapped page; asked page by page).
fn any_mapped(p: usize, len: usize) -> bool {
    let mut v = 0u8;
    (0..len / 4096).any(|i| {
        // SAFETY: (test) `mincore` only reads the mapping state; one byte of output.
        unsafe { libc::mincore((p + i * 4096) as *mut libc::c_void, 4096, &mut v) == 0 }
    })
}

/// A large object freed while `munmap` is refused: its range stays mapped and
/// counted in `mapped_bytes` (and its pages are released); the next large object
/// freed unmaps both, and the figures come back to where they were.
#[test]
fn a_refused_unmap_is_counted_and_done_later() {
    in_child(
        "a_refused_unmap_is_counted_and_done_later",
        "refused-large",
        Spec::within(300),
        || {
            let l = Layout::from_size_align(3 * MIB, 8).unwrap();
            drop(std::hint::black_box(vec![0u8; 100]));
            let before = restartable_alloc::stats_summary().mapped_bytes;
            // SAFETY: (test) a valid layout.
            let (p, q) = unsafe { (A.alloc(l), A.alloc(l)) };
            assert!(!p.is_null() && !q.is_null());
            // SAFETY: (test) fresh objects of 3 MiB.
            unsafe {
                p.write_bytes(1, l.size());
                q.write_bytes(2, l.size());
            }
            os::refuse_unmaps(1);
            // SAFETY: (test) allocated above with `l`.
            unsafe { A.dealloc(p, l) };
            let s = restartable_alloc::stats_summary();
            assert!(any_mapped(p as usize, l.size()), "refused, yet unmapped");
            assert_eq!(os::deferred_bytes(), l.size(), "{s:?}");
            assert_eq!(s.large_bytes, l.size() as u64, "{s:?}");
            assert_eq!(s.mapped_bytes, before + 2 * l.size() as u64, "{s:?}");
            // The next unmap succeeds: the refused range goes with it.
            // SAFETY: (test) allocated above with `l`.
            unsafe { A.dealloc(q, l) };
            let s = restartable_alloc::stats_summary();
            assert!(
                !any_mapped(p as usize, l.size()),
                "the refused range is still mapped after a later unmap: lost"
            );
            assert!(!any_mapped(q as usize, l.size()));
            assert_eq!(os::deferred_bytes(), 0, "{s:?}");
            assert_eq!(s.mapped_bytes, before, "{s:?}");
        },
    );
}

/// Under an address-space limit, the page heap's free runs are unmapped to make
/// room for a large object, and the kernel refuses every one of them: the object
/// still fails cleanly (null), the heap's figures add up (the runs are deferred,
/// not lost), and once the refusals stop the deferred ranges are unmapped when the
/// next mapping fails, so the object fits.
#[test]
fn refused_unmaps_of_free_runs_are_retried_when_room_is_needed() {
    in_child(
        "refused_unmaps_of_free_runs_are_retried_when_room_is_needed",
        "refused-free-runs",
        Spec::within(300).env(&[("RUST_BACKTRACE", "0")]),
        || {
            drop(std::hint::black_box(vec![0u8; 100]));
            let mut keep = Vec::with_capacity(1 << 20);
            common::limit_address_space(256 * MIB);
            let small = Layout::from_size_align(1000, 8).unwrap();
            loop {
                // SAFETY: (test) a valid layout.
                let p = unsafe { A.alloc(small) };
                if p.is_null() || keep.len() == keep.capacity() {
                    break;
                }
                keep.push(p as usize);
            }
            assert!(keep.len() * small.size() > 64 * MIB, "{}", keep.len());
            for &p in &keep {
                // SAFETY: (test) allocated above with `small`.
                unsafe { A.dealloc(p as *mut u8, small) };
            }
            restartable_alloc::release_memory();
            let large = Layout::from_size_align(64 * MIB, 8).unwrap();
            let mapped = restartable_alloc::stats_summary().mapped_bytes;
            os::refuse_unmaps(usize::MAX);
            // SAFETY: (test) a valid layout.
            let p = unsafe { A.alloc(large) };
            os::refuse_unmaps(0);
            let refused = restartable_alloc::stats_summary();
            let deferred = os::deferred_bytes();
            // SAFETY: (test) a valid layout.
            let q = unsafe { A.alloc(large) };
            let after = restartable_alloc::stats_summary();
            let deferred_after = os::deferred_bytes();
            // Room for the checks' messages (a panic under the limit would fail to
            // allocate its backtrace and hang in the standard library).
            if !q.is_null() {
                // SAFETY: (test) allocated above with `large`.
                unsafe { A.dealloc(q, large) };
            }
            drop(keep);
            println!("refused: {refused:?}, deferred {deferred}");
            assert!(
                p.is_null(),
                "a 64 MiB object fitted with every unmap refused"
            );
            assert!(deferred > 64 * MIB, "{refused:?}");
            assert_eq!(
                refused.mapped_bytes, mapped,
                "mapped bytes lost: {refused:?}"
            );
            assert!(
                !q.is_null(),
                "no room after the refusals stopped: {after:?}"
            );
            assert_eq!(deferred_after, 0, "{after:?}");
        },
    );
}

/// Large objects of 1 MiB (each its own mapping), written once.
fn large_objects(n: usize) -> Vec<usize> {
    let l = Layout::from_size_align(MIB, 8).unwrap();
    (0..n)
        .map(|_| {
            // SAFETY: (test) a valid layout.
            let p = unsafe { A.alloc(l) };
            assert!(!p.is_null());
            // SAFETY: (test) a fresh object of 1 MiB.
            unsafe { p.write(1) };
            p as usize
        })
        .collect()
}

fn free_large(p: usize) {
    // SAFETY: (test) allocated by `large_objects` with this layout.
    unsafe { A.dealloc(p as *mut u8, Layout::from_size_align(MIB, 8).unwrap()) };
}

/// While the limit holds (retries of deferred ranges refused, other unmaps going
/// through, as the kernel does at `vm.max_map_count` for unmaps that would split a
/// mapping), each unmap tries at most one deferred range again, not every one of
/// them (which made the work quadratic); no range is lost meanwhile, and once the
/// limit is gone one unmap takes them all.
#[test]
fn deferred_ranges_are_retried_a_bounded_number_of_times() {
    in_child(
        "deferred_ranges_are_retried_a_bounded_number_of_times",
        "bounded-retries",
        Spec::within(300),
        || {
            const DEFERRED: usize = 64;
            const UNMAPS: usize = 64;
            drop(std::hint::black_box(vec![0u8; 100]));
            let mut held = Vec::with_capacity(DEFERRED + UNMAPS + 1);
            let before = restartable_alloc::stats_summary().mapped_bytes;
            held.extend(large_objects(DEFERRED + UNMAPS + 1));
            let deferred: Vec<usize> = held.drain(..DEFERRED).collect();
            os::refuse_unmaps(DEFERRED);
            for &p in &deferred {
                free_large(p);
            }
            assert_eq!(os::deferred_bytes(), DEFERRED * MIB);
            os::refuse_deferred_retries(true);
            let tried = os::deferred_retries();
            for p in held.drain(..UNMAPS) {
                free_large(p);
            }
            let retries = os::deferred_retries() - tried;
            let s = restartable_alloc::stats_summary();
            os::refuse_deferred_retries(false);
            println!("{retries} retries for {UNMAPS} unmaps, {DEFERRED} ranges deferred");
            assert!(
                retries <= UNMAPS,
                "{retries} retries of deferred ranges for {UNMAPS} unmaps"
            );
            assert_eq!(os::deferred_bytes(), DEFERRED * MIB, "{s:?}");
            assert_eq!(
                s.mapped_bytes,
                before + (DEFERRED + 1) as u64 * MIB as u64,
                "{s:?}"
            );
            free_large(held.pop().unwrap());
            let s = restartable_alloc::stats_summary();
            assert_eq!(os::deferred_bytes(), 0, "{s:?}");
            assert_eq!(s.mapped_bytes, before, "{s:?}");
            for &p in &deferred {
                assert!(!any_mapped(p, MIB), "{p:#x} still mapped");
            }
        },
    );
}

/// A mapping fails for want of address space while the oldest deferred range is
/// still refused (it would still split a mapping) but a later one can go (its
/// neighbours went meanwhile): the failure's retry tries each deferred range, not
/// only the first, so the later one makes room and the mapping is done. (A retry
/// that stopped at the first refusal gave up: null.) The mapping (a large object
/// past the heap's free pages) is refused until address space is given back
/// (`os::refuse_maps_of`).
#[test]
fn a_mapping_failure_retries_every_deferred_range() {
    in_child(
        "a_mapping_failure_retries_every_deferred_range",
        "every-deferred-range",
        Spec::within(300),
        || {
            drop(std::hint::black_box(vec![0u8; 100]));
            let older = large_objects(1)[0];
            let later = Layout::from_size_align(2 * MIB, 8).unwrap();
            // SAFETY: (test) a valid layout.
            let p = unsafe { A.alloc(later) };
            assert!(!p.is_null());
            os::refuse_unmaps(2);
            free_large(older);
            // SAFETY: (test) allocated above with `later`.
            unsafe { A.dealloc(p, later) };
            assert_eq!(os::deferred_bytes(), 3 * MIB);
            os::refuse_deferred_retries_of(MIB);
            let big = Layout::from_size_align(512 * MIB, 8).unwrap();
            os::refuse_maps_of(big.size());
            // SAFETY: (test) a valid layout.
            let q = unsafe { A.alloc(big) };
            os::refuse_maps_of(0);
            os::refuse_deferred_retries_of(0);
            let (refused, deferred) = (os::refused_maps(), os::deferred_bytes());
            if !q.is_null() {
                // SAFETY: (test) allocated above with `big`.
                unsafe { A.dealloc(q, big) };
            }
            println!("{refused} mappings refused, {deferred} bytes deferred after");
            assert_eq!(refused, 1, "the mapping was not refused once");
            assert!(
                !q.is_null(),
                "the mapping failed while a deferred range could be unmapped"
            );
            assert_eq!(deferred, MIB, "the later range is still deferred");
            assert!(!any_mapped(p as usize, later.size()));
            assert_eq!(os::deferred_bytes(), 0);
            assert!(!any_mapped(older, MIB));
        },
    );
}

/// Whether the retry hook below was reached; set by it.
static AT_HOOK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Set once the test forked: the hook lets its thread go.
static FORKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `os::fork_takes_of_deferred` before the test forks.
static TAKES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The retry hook of [`a_fork_during_a_retry_leaves_no_range_behind`]: the first
/// time, holds its thread (inside the retry, the deferred ranges' lock held) until
/// the fork is done, or until the fork handlers wait for that lock (then the retry
/// must end first). No timeout: one of the two happens.
fn hold_until_forked() {
    use std::sync::atomic::Ordering;
    if AT_HOOK.swap(true, Ordering::SeqCst) {
        return;
    }
    while !FORKED.load(Ordering::SeqCst)
        && os::fork_takes_of_deferred() == TAKES.load(Ordering::SeqCst)
    {
        std::hint::spin_loop();
    }
}

/// A `fork` while a thread retries the deferred ranges: the child gets every range
/// either unmapped or still listed (so unmapped by its own next unmap), never one
/// that the retrying thread (absent from the child) had taken out of the list,
/// which would stay mapped in the child for ever. The thread is held inside the
/// retry (the hook) until the fork handlers wait for the list's lock (or, were
/// they not to take it, until the fork is done: the child then inherits the lock
/// held, or a range out of the list).
#[test]
fn a_fork_during_a_retry_leaves_no_range_behind() {
    in_child(
        "a_fork_during_a_retry_leaves_no_range_behind",
        "fork-retry",
        Spec::within(300),
        || {
            use std::sync::atomic::Ordering;
            const DEFERRED: usize = 8;
            drop(std::hint::black_box(vec![0u8; 100]));
            let mut held = large_objects(DEFERRED + 2);
            let deferred: Vec<usize> = held.drain(..DEFERRED).collect();
            os::refuse_unmaps(DEFERRED);
            for &p in &deferred {
                free_large(p);
            }
            assert_eq!(os::deferred_bytes(), DEFERRED * MIB);
            let (in_thread, in_child) = (held[0], held[1]);
            // SAFETY: (test) the hook allocates nothing, unmaps nothing and returns.
            unsafe { os::set_retry_hook(Some(hold_until_forked)) };
            TAKES.store(os::fork_takes_of_deferred(), Ordering::SeqCst);
            let t = std::thread::spawn(move || free_large(in_thread));
            while !AT_HOOK.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            // SAFETY: (test) the child makes only allocator calls, `mincore` and
            // `_exit`.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // The child's next unmap retries what is listed.
                free_large(in_child);
                let left = deferred.iter().filter(|&&p| any_mapped(p, MIB)).count();
                let code = if left == 0 && os::deferred_bytes() == 0 {
                    0
                } else {
                    10 + left as i32
                };
                // SAFETY: (test) leaves the child at once.
                unsafe { libc::_exit(code) };
            }
            FORKED.store(true, Ordering::SeqCst);
            assert!(pid > 0);
            t.join().unwrap();
            // SAFETY: (test) removing the hook.
            unsafe { os::set_retry_hook(None) };
            let mut status = 0;
            // SAFETY: (test) our child; `status` is ours.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "the forked child kept deferred ranges mapped (exit {}: 10 + ranges left)",
                libc::WEXITSTATUS(status)
            );
            free_large(in_child);
            assert_eq!(os::deferred_bytes(), 0);
        },
    );
}
