//! Objects of a fresh span reach the program in ascending address order, in its own
//! binary without libtest's harness (`harness = false`): one thread, in a process
//! whose heap nothing else has used, so every object comes from spans never used
//! before.
//!
//! A program that allocates nodes one after another and later walks them in that
//! order then walks memory forward, the direction the L1's next-line prefetcher
//! fetches. `middle::remove_batch` fills a batch with the span's objects highest
//! address first, and the per-CPU cache (or the thread's fallback cache) hands a
//! batch out from its end.

use restartable_alloc::middle;
use restartable_alloc::raw::{self, Block};
use restartable_alloc::size_class::{batch, class_of_size, objects_per_span, size};

fn main() {
    let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count());
    assert_eq!(threads.ok(), Some(1), "the test's thread is the only one");
    a_fresh_spans_batch_is_carved_highest_address_first();
    println!("test a_fresh_spans_batch_is_carved_highest_address_first ... ok");
    malloc_hands_out_a_fresh_span_in_ascending_order();
    println!("test malloc_hands_out_a_fresh_span_in_ascending_order ... ok");
}

/// `remove_batch` of a class nothing has used: one batch, each object one size
/// below the one before it, all of one span.
fn a_fresh_spans_batch_is_carved_highest_address_first() {
    let c = class_of_size(96);
    let b = batch(c);
    assert!(b >= 8 && b < objects_per_span(c));
    let mut out = vec![core::ptr::null_mut(); b];
    assert_eq!(middle::remove_batch(c, &mut out), b);
    for w in out.windows(2) {
        assert_eq!(
            w[0] as usize,
            w[1] as usize + size(c),
            "{:?} then {:?}",
            w[0],
            w[1]
        );
    }
    // SAFETY: objects of class `c` from `remove_batch`, in no cache, unused.
    unsafe { middle::insert_batch(c, &out) };
}

/// `raw::malloc` of a class nothing has used, on one CPU (the thread pinned, so
/// that one cache serves every call): two batches' worth, each object one size
/// above the one before it, except where the second batch starts.
fn malloc_hands_out_a_fresh_span_in_ascending_order() {
    pin_to_current_cpu();
    let c = class_of_size(176);
    let b = batch(c);
    assert!(2 * b <= objects_per_span(c));
    let ps: Vec<usize> = (0..2 * b).map(|_| raw::malloc(size(c)) as usize).collect();
    let mut breaks = 0;
    for w in ps.windows(2) {
        assert!(w[0] != 0 && w[1] != 0);
        if w[1] != w[0] + size(c) {
            breaks += 1;
        }
    }
    assert!(
        breaks <= 1,
        "{breaks} breaks in the ascending order: {:x?}",
        ps
    );
    for p in ps {
        // SAFETY: a live small object of this module, freed once.
        unsafe { raw::free(p as *mut u8, Block::Small { class: c }) };
    }
}

fn pin_to_current_cpu() {
    // SAFETY: plain system calls on this thread with a zeroed, then filled, set.
    unsafe {
        let cpu = libc::sched_getcpu();
        assert!(cpu >= 0);
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}
