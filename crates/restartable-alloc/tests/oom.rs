//! Out of address space and back (an audit's findings): under an `RLIMIT_AS` limit,
//! the address space of small objects' spans, once they are all freed, serves the
//! next requests of any kind. `RLIMIT_AS` counts every mapped byte, resident or not:
//! free pages given back with `madvise` still count, so a heap that keeps them mapped
//! would refuse every large object (each its own mapping) for ever after a burst of
//! small ones, even with nothing in use. Each scenario runs in a child process.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use std::alloc::{GlobalAlloc, Layout};

use common::child::{in_child, Spec};
use restartable_alloc::PerCpuAlloc;

#[global_allocator]
static A: PerCpuAlloc = PerCpuAlloc::new();

const MIB: usize = 1 << 20;

/// Allocates objects of `l` until the allocator says null (at most `max`), writing
/// their first byte; returns them.
fn fill(l: Layout, max: usize) -> Vec<usize> {
    let mut held = Vec::with_capacity(max);
    while held.len() < max {
        // SAFETY: (test) a valid layout.
        let p = unsafe { A.alloc(l) };
        if p.is_null() {
            return held;
        }
        // SAFETY: (test) a fresh object of at least one byte.
        unsafe { p.write(1) };
        held.push(p as usize);
    }
    panic!("{l:?}: never failed within the limit ({max} objects)");
}

fn free_all(l: Layout, held: Vec<usize>) {
    for p in held {
        // SAFETY: (test) allocated by `fill` with `l`.
        unsafe { A.dealloc(p as *mut u8, l) };
    }
}

/// Small objects fill the address space up to the limit; once they are freed (and
/// the caches emptied: `release_memory`), large objects (their own mappings) fit
/// again, about as many as the limit holds, and so do objects of another size
/// class (new spans). Then the other way round, so the large objects' space goes
/// back to spans. Three rounds: nothing is lost on the way.
#[test]
fn freed_small_objects_address_space_serves_large_objects() {
    in_child(
        "freed_small_objects_address_space_serves_large_objects",
        "small-then-large",
        Spec::within(120),
        || {
            // Set up caches and threads' state before limiting.
            drop(std::hint::black_box(vec![0u8; 100]));
            common::limit_address_space(256 * MIB);
            let small = Layout::from_size_align(1000, 8).unwrap();
            let other = Layout::from_size_align(40_000, 8).unwrap();
            let large = Layout::from_size_align(3 * MIB, 8).unwrap();
            let mut first_large = 0;
            for round in 0..3 {
                let held = fill(small, 1 << 20);
                assert!(
                    held.len() * small.size() > 64 * MIB,
                    "round {round}: {}",
                    held.len()
                );
                free_all(small, held);
                restartable_alloc::release_memory();
                let held = fill(large, 1000);
                let n = held.len();
                println!(
                    "round {round}: {n} large objects after the small ones; {:?}",
                    restartable_alloc::stats()
                );
                // The limit holds more than 60 such objects (256 MiB): at least half
                // of them must fit.
                assert!(
                    n * large.size() > 100 * MIB,
                    "round {round}: only {n} objects of 3 MiB after freeing every small object"
                );
                if round == 0 {
                    first_large = n;
                } else {
                    assert!(
                        n + 2 >= first_large,
                        "round {round}: {n} large objects, {first_large} in round 0"
                    );
                }
                free_all(large, held);
                let held = fill(other, 1 << 20);
                assert!(
                    held.len() * other.size() > 100 * MIB,
                    "round {round}: {}",
                    held.len()
                );
                free_all(other, held);
                restartable_alloc::release_memory();
            }
            let s = restartable_alloc::stats();
            assert_eq!(s.large_bytes, 0, "{s:?}");
        },
    );
}

/// A request no address space can hold (2^62 bytes, or 8 bytes aligned to 2^50)
/// fails without costing the page heap its free pages: they are unmapped only when
/// they could make room for the request. (A program that tries a huge allocation and falls back to a smaller
/// one must not lose its heap's cache each time.)
#[test]
fn an_impossible_request_keeps_the_free_pages() {
    in_child(
        "an_impossible_request_keeps_the_free_pages",
        "impossible",
        Spec::within(60),
        || {
            // Free pages in the page heap: spans of 40,000-byte objects, all freed.
            let l = Layout::from_size_align(40_000, 8).unwrap();
            let held: Vec<usize> = (0..200)
                .map(|_| {
                    // SAFETY: (test) a valid layout.
                    let p = unsafe { A.alloc(l) };
                    assert!(!p.is_null());
                    p as usize
                })
                .collect();
            free_all(l, held);
            restartable_alloc::release_memory();
            let before = restartable_alloc::stats();
            assert!(before.released_bytes > 0, "{before:?}");
            // Huge, and small but aligned beyond any address space.
            let huge = Layout::from_size_align(1 << 62, 8).unwrap();
            let aligned = Layout::from_size_align(8, 1 << 50).unwrap();
            for l in [huge, huge, aligned, aligned] {
                // SAFETY: (test) a valid layout.
                assert!(unsafe { A.alloc(l) }.is_null(), "{l:?}");
            }
            let after = restartable_alloc::stats();
            assert_eq!(
                (after.released_bytes, after.mapped_bytes),
                (before.released_bytes, before.mapped_bytes),
                "free pages unmapped for a request they could not serve:\n{before:?}\n{after:?}"
            );
        },
    );
}

/// Threads of [`two_threads_out_of_address_space_both_use_the_freed_room`] that
/// reached the failed-mapping hook.
static AT_HOOK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The failed-mapping hook of that test: holds each thread there until two have
/// failed (at most 200 s, then it lets it go and the test's count says why).
fn wait_for_two() {
    use std::sync::atomic::Ordering;
    if AT_HOOK.fetch_add(1, Ordering::SeqCst) >= 2 {
        return;
    }
    let start = std::time::Instant::now();
    while AT_HOOK.load(Ordering::SeqCst) < 2 && start.elapsed().as_secs() < 200 {
        std::hint::spin_loop();
    }
}

/// Two threads whose large objects fail to map at the same time, the address space
/// held by the page heap's free runs: both get their object. Both are held after
/// their failed mapping (the test hook) until both failed; then the first unmaps the
/// free runs and maps into the room, and the second finds nothing left to unmap: it
/// must map again (address space was given back since its attempt) rather than fail
/// with room to spare.
#[test]
fn two_threads_out_of_address_space_both_use_the_freed_room() {
    in_child(
        "two_threads_out_of_address_space_both_use_the_freed_room",
        "two-threads",
        Spec::within(300),
        || {
            use std::sync::atomic::{AtomicBool, Ordering};
            use std::sync::Arc;
            let large = Layout::from_size_align(3 * MIB, 8).unwrap();
            let go = Arc::new(AtomicBool::new(false));
            // The threads (their stacks are mappings too) and their state exist
            // before the limit.
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let go = go.clone();
                    std::thread::spawn(move || {
                        drop(std::hint::black_box(vec![0u8; 100]));
                        while !go.load(Ordering::SeqCst) {
                            std::thread::yield_now();
                        }
                        // SAFETY: (test) a valid layout.
                        unsafe { A.alloc(large) as usize }
                    })
                })
                .collect();
            drop(std::hint::black_box(vec![0u8; 100]));
            common::limit_address_space(256 * MIB);
            // The address space is the page heap's: small objects up to the limit,
            // all freed.
            let small = Layout::from_size_align(1000, 8).unwrap();
            let held = fill(small, 1 << 20);
            assert!(held.len() * small.size() > 64 * MIB, "{}", held.len());
            free_all(small, held);
            restartable_alloc::release_memory();
            // What the limit still holds (the vector of objects was its own mapping)
            // is taken outside the allocator: only the page heap's free runs are left.
            let mut rest = 0;
            for chunk in [MIB, 64 << 10, 4 << 10] {
                // SAFETY: (test) fresh reservations, never touched or freed.
                while unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        chunk,
                        libc::PROT_NONE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                        -1,
                        0,
                    )
                } != libc::MAP_FAILED
                {
                    rest += chunk;
                }
            }
            println!("{rest} bytes left under the limit taken");
            // SAFETY: (test) the hook allocates nothing and returns.
            unsafe { restartable_alloc::os::set_map_failed_hook(Some(wait_for_two)) };
            go.store(true, Ordering::SeqCst);
            let got: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            // SAFETY: (test) removing the hook.
            unsafe { restartable_alloc::os::set_map_failed_hook(None) };
            let failed = AT_HOOK.load(Ordering::SeqCst);
            println!("{failed} failed mappings, objects {got:x?}");
            assert!(
                failed >= 2,
                "the large objects did not both fail to map first ({failed}): the limit left room"
            );
            assert!(
                got.iter().all(|&p| p != 0),
                "a thread got no object with the page heap's address space freed: {got:x?}\n{:?}",
                restartable_alloc::stats()
            );
            for p in got {
                // SAFETY: (test) allocated above with `large`.
                unsafe { A.dealloc(p as *mut u8, large) };
            }
        },
    );
}

/// Whether any page of `[p, p + len)` is mapped (`mincore` says `ENOMEM` for a range
/// with an unmapped page; asked page by page).
fn any_mapped(p: usize, len: usize) -> bool {
    let mut v = 0u8;
    (0..len / 4096).any(|i| {
        // SAFETY: (test) `mincore` only reads the mapping state; one byte of output.
        unsafe { libc::mincore((p + i * 4096) as *mut libc::c_void, 4096, &mut v) == 0 }
    })
}

/// Span starts of 400 spans of 8 KiB objects (64 KiB spans), every other one freed:
/// the page heap holds about 12 MiB of free runs of 64 KiB, each between two spans
/// in use, which no span of larger objects can use. Returns the objects kept and the
/// freed spans' starts.
fn fragmented_free_runs() -> (Vec<usize>, Vec<usize>) {
    use restartable_alloc::backend::pagemap;
    let l = Layout::from_size_align(8192, 8).unwrap();
    let mut objects: Vec<usize> = (0..3200)
        .map(|_| {
            // SAFETY: (test) a valid layout.
            let p = unsafe { A.alloc(l) };
            assert!(!p.is_null());
            p as usize
        })
        .collect();
    objects.sort_unstable();
    // SAFETY: (test) live objects of ours: their spans are records of the heap.
    let span = |p: usize| unsafe { (*pagemap::get(p)).start };
    let mut starts: Vec<usize> = objects.iter().map(|&p| span(p)).collect();
    starts.dedup();
    let freed: Vec<usize> = starts.iter().skip(1).step_by(2).copied().collect();
    let (gone, kept): (Vec<usize>, Vec<usize>) = objects
        .into_iter()
        .partition(|&p| freed.binary_search(&span(p)).is_ok());
    free_all(l, gone);
    restartable_alloc::release_memory();
    assert_eq!(
        still_free(&freed),
        freed.len(),
        "the freed spans are no free runs"
    );
    (kept, freed)
}

/// How many of the spans at `starts` (freed by [`fragmented_free_runs`]) are still
/// free runs of the page heap, mapped: not unmapped to make room (nor taken again by
/// a span meanwhile).
fn still_free(starts: &[usize]) -> usize {
    use restartable_alloc::backend::pagemap;
    let heap = restartable_alloc::backend::page_heap::lock();
    heap.take();
    let n = starts
        .iter()
        .filter(|&&s| {
            let r = pagemap::get(s);
            // SAFETY: (test) records in the page map are the heap's, read under its
            // lock.
            !r.is_null() && unsafe { (*r).start == s && (*r).class == 0 && (*r).linked }
        })
        .count();
    // SAFETY: (test) taken above, on this thread.
    unsafe { heap.give() };
    n
}

/// Checks that making room gave the freed runs' address space back: none of them is
/// left free in the heap, and at least one is unmapped (the others may have been
/// reused). `what` names the mapping that needed the room.
fn assert_room_made(freed: &[usize], what: &str) {
    let left = still_free(freed);
    let unmapped = freed.iter().filter(|&&p| !any_mapped(p, 64 << 10)).count();
    println!("{what}: {left} free runs left, {unmapped} unmapped");
    assert!(unmapped > 0, "{what}: no free run was unmapped");
    assert_eq!(
        left, 0,
        "{what}: the free runs were not unmapped to make room"
    );
}

/// Allocates objects of 40,000 bytes (spans of 20 pages: no free run of
/// [`fragmented_free_runs`] fits them) until `done` (at most 100,000 tries).
/// Returns them and how many tries got null.
fn spans_until(mut done: impl FnMut() -> bool) -> (Vec<usize>, usize) {
    let l = Layout::from_size_align(40_000, 8).unwrap();
    let mut held = Vec::with_capacity(100_000);
    let mut nulls = 0;
    while !done() && held.len() + nulls < held.capacity() {
        // SAFETY: (test) a valid layout.
        let p = unsafe { A.alloc(l) };
        if p.is_null() {
            nulls += 1;
        } else {
            held.push(p as usize);
        }
    }
    (held, nulls)
}

/// Out of address space when a page-map leaf is needed (a new region in a 2 GiB
/// range the map has no leaf for): the page heap's free runs give their address
/// space back and the leaf is mapped, as for every other mapping; it used to fail
/// (null) with room to spare. The leaf's mapping is refused until address space is
/// given back (`os::refuse_maps_of`); a reservation of 2 GiB puts the next region
/// out of the current leaf's range.
#[test]
fn a_page_map_leaf_gets_room_from_the_free_runs() {
    in_child(
        "a_page_map_leaf_gets_room_from_the_free_runs",
        "leaf-room",
        Spec::within(300),
        || {
            use restartable_alloc::{backend::pagemap, os};
            drop(std::hint::black_box(vec![0u8; 100]));
            let (kept, freed) = fragmented_free_runs();
            let len = (2usize << 30) + (128 << 20);
            // SAFETY: (test) a fresh reservation, never touched.
            let r = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            assert_ne!(r, libc::MAP_FAILED);
            let leaves = pagemap::mapped_bytes();
            // A leaf: 2^18 span pointers and as many info words.
            os::refuse_maps_of(4 << 20);
            let (held, nulls) = spans_until(|| pagemap::mapped_bytes() > leaves);
            os::refuse_maps_of(0);
            let s = restartable_alloc::stats();
            let (refused, n) = (os::refused_maps(), held.len());
            println!("{n} objects, {nulls} nulls, {refused} leaf mappings refused: {s:?}");
            assert_room_made(&freed, "a page-map leaf");
            assert_eq!(nulls, 0, "{nulls} nulls in {n} objects: {s:?}");
            assert!(
                pagemap::mapped_bytes() > leaves,
                "no new page-map leaf after {n} objects (a null, or the regions stayed in one leaf's range): {s:?}"
            );
            assert!(refused >= 1, "the leaf's mapping was never refused");
            free_all(Layout::from_size_align(40_000, 8).unwrap(), held);
            free_all(Layout::from_size_align(8192, 8).unwrap(), kept);
            // SAFETY: (test) the reservation above, never used.
            unsafe { libc::munmap(r, len) };
        },
    );
}

/// Out of address space when a chunk of span records is needed: the page heap's
/// free runs give their address space back and the chunk is mapped (it used to
/// fail: no span, null). The chunk's mapping (256 KiB) is refused until address
/// space is given back (`os::refuse_maps_of`).
#[test]
fn a_span_record_chunk_gets_room_from_the_free_runs() {
    in_child(
        "a_span_record_chunk_gets_room_from_the_free_runs",
        "record-room",
        Spec::within(300),
        || {
            use restartable_alloc::os;
            drop(std::hint::black_box(vec![0u8; 100]));
            let (kept, freed) = fragmented_free_runs();
            os::refuse_maps_of(256 << 10);
            let mut after = 0;
            let (held, nulls) = spans_until(|| {
                if os::refused_maps() > 0 {
                    after += 1;
                }
                after > 1000
            });
            os::refuse_maps_of(0);
            let s = restartable_alloc::stats();
            let (refused, n) = (os::refused_maps(), held.len());
            println!("{n} objects, {nulls} nulls, {refused} chunk mappings refused: {s:?}");
            assert!(refused >= 1, "no record chunk refused in {n} objects");
            assert_eq!(nulls, 0, "{nulls} nulls in {n} objects: {s:?}");
            assert_room_made(&freed, "a span-record chunk");
            free_all(Layout::from_size_align(40_000, 8).unwrap(), held);
            free_all(Layout::from_size_align(8192, 8).unwrap(), kept);
        },
    );
}

/// Out of address space when the C API's large map needs a leaf (the first large
/// object of `raw`): the page heap's free runs give their address space back and
/// the object is recorded (it used to fail: null). The leaf's mapping (2 MiB) is
/// refused until address space is given back (`os::refuse_maps_of`).
#[test]
fn a_large_map_leaf_gets_room_from_the_free_runs() {
    in_child(
        "a_large_map_leaf_gets_room_from_the_free_runs",
        "large-leaf-room",
        Spec::within(300),
        || {
            use restartable_alloc::{os, raw};
            drop(std::hint::black_box(vec![0u8; 100]));
            let (kept, freed) = fragmented_free_runs();
            let before = raw::large_map_bytes();
            os::refuse_maps_of(2 << 20);
            let p = raw::alloc(3 << 20, 8);
            os::refuse_maps_of(0);
            let refused = os::refused_maps();
            println!("{refused} leaf mappings refused");
            assert_eq!(
                before, 0,
                "a large map leaf before the first raw large object"
            );
            assert!(refused >= 1, "the leaf's mapping was never refused");
            assert!(!p.is_null(), "no large object: its leaf found no room");
            assert_room_made(&freed, "the large map's leaf");
            // SAFETY: (test) allocated above.
            unsafe { raw::free(p, raw::lookup(p)) };
            free_all(Layout::from_size_align(8192, 8).unwrap(), kept);
        },
    );
}
