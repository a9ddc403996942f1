//! Middle: per size class, a transfer cache of free objects and the central free
//! list of spans, behind one lock per class.
//!
//! # Invariants
//! - Objects move between the per-CPU caches and the middle in batches
//!   ([`remove_batch`], [`insert_batch`]), each one lock acquisition.
//! - The transfer cache holds at most
//!   [`transfer_capacity`] free objects of its
//!   class: batches pass through it without touching spans. What does not fit goes
//!   back to its span, found through the page map.
//! - A span is in its class's non-empty list exactly when it has an object to give
//!   (a freed one on its free list, or a fresh one not carved yet). Its `allocated`
//!   count is the number of its objects outside it; when that drops to zero the span
//!   goes back to the page heap at once.
//! - `out` counts the class's objects outside spans (in use, in a per-CPU cache or
//!   in the transfer cache); statistics derive bytes in use from it.
//! - Nothing here calls the global allocator: threads without rseq and re-entrant
//!   calls are served here directly.
//! - The classes' locks (with the few words each guards) sit together, 128 bytes
//!   apart, in a few pages; the transfer caches' arrays apart from them. The fork
//!   handlers write every lock before and after each `fork` in both processes: with
//!   each lock in a page of its own (next to its class's array) that was one
//!   copy-on-write fault per class in the parent and in the child at every `fork`.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ptr;

use crate::backend::{page_heap, pagemap, Span, SpanList};
use crate::size_class::{
    objects_per_span, size, span_offset, span_pages, transfer_capacity, CLASSES, TRANSFER_MAX,
};
use crate::sync::{RawLock, SpinGuard, SpinLock};

const _: () = {
    let mut c = 1;
    while c <= CLASSES {
        assert!(transfer_capacity(c) <= TRANSFER_MAX);
        c += 1;
    }
};

/// A class's state under its lock; its transfer cache's objects are in
/// [`TRANSFER`]`[c]`, `transfer_len` of them.
struct Central {
    transfer_len: usize,
    nonempty: SpanList,
    spans: usize,
    out: usize,
}

// SAFETY: the pointers are objects and span records owned by the allocator, used
// under the class's lock.
unsafe impl Send for Central {}

/// A class's lock and state, 128 bytes apart (two cache lines: no other class's
/// lock in the line the hardware prefetches along with it).
#[repr(align(128))]
struct Class(SpinLock<Central>);

static CENTRAL: [Class; CLASSES + 1] = [const {
    Class(SpinLock::new(Central {
        transfer_len: 0,
        nonempty: SpanList::new(),
        spans: 0,
        out: 0,
    }))
}; CLASSES + 1];

/// A class's transfer cache: free objects, the first `transfer_len` valid.
struct Transfer(UnsafeCell<[*mut u8; TRANSFER_MAX]>);

// SAFETY: `TRANSFER[c]` is read and written only under `CENTRAL[c]`'s lock.
unsafe impl Sync for Transfer {}

static TRANSFER: [Transfer; CLASSES + 1] =
    [const { Transfer(UnsafeCell::new([ptr::null_mut(); TRANSFER_MAX])) }; CLASSES + 1];

/// Class `c`'s transfer cache, through `held`, the guard of its lock (borrowed for as
/// long as the array, so that no second reference to it can be made meanwhile).
///
/// # Panics
/// If `held` is another lock's guard (a bug: checked, so that a wrong class cannot
/// give two threads the same array).
fn transfer<'g>(c: usize, held: &'g mut SpinGuard<'_, Central>) -> &'g mut [*mut u8; TRANSFER_MAX] {
    assert!(
        held.holds(&CENTRAL[c].0),
        "a transfer cache reached with another class's lock"
    );
    // SAFETY: `held` is the guard of `CENTRAL[c]`'s lock (checked above), held
    // while it lives, and the lock guards `TRANSFER[c]`; the array is borrowed for
    // as long as the guard is, mutably, so no second reference is made meanwhile.
    unsafe { &mut *TRANSFER[c].0.get() }
}

/// The lock of class `c`, for the fork handlers.
pub fn lock_of(c: usize) -> &'static dyn RawLock {
    &CENTRAL[c].0
}

/// Counters of one class.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClassStats {
    /// Objects outside spans.
    pub out: usize,
    /// Objects in the transfer cache.
    pub transfer: usize,
    /// Spans of the class.
    pub spans: usize,
}

/// Counters of class `c`.
pub fn class_stats(c: usize) -> ClassStats {
    let g = CENTRAL[c].0.lock();
    ClassStats {
        out: g.out,
        transfer: g.transfer_len,
        spans: g.spans,
    }
}

/// Fills `out` with free objects of class `c` and returns how many it got, `n`:
/// fewer than asked (possibly none) only when memory is exhausted. It writes
/// `out[..n]` (each an object) and nothing else, so that callers can pass a buffer
/// they did not clear and read that prefix only.
pub fn remove_batch(c: usize, out: &mut [MaybeUninit<*mut u8>]) -> usize {
    let mut g = CENTRAL[c].0.lock();
    let want = out.len();
    let k = want.min(g.transfer_len);
    let from = g.transfer_len - k;
    out[..k].write_copy_of_slice(&transfer(c, &mut g)[from..from + k]);
    g.transfer_len = from;
    let mut got = k;
    let osz = size(c);
    let per_span = objects_per_span(c);
    while got < want {
        let mut s = g.nonempty.head;
        if s.is_null() {
            match page_heap::alloc_span(c, span_pages(c)) {
                Some(n) => {
                    s = n;
                    g.spans += 1;
                    // SAFETY: a fresh span, in no list.
                    unsafe { g.nonempty.push(s) };
                }
                None => break,
            }
        }
        // SAFETY: `s` is in the class's non-empty list, guarded by the lock we hold.
        unsafe {
            let first = span_offset(c, (*s).start);
            while got < want {
                let obj = if !(*s).freelist.is_null() {
                    let o = (*s).freelist;
                    (*s).freelist = o.cast::<*mut u8>().read();
                    o
                } else if (*s).carved < per_span {
                    let o = ((*s).start + first + (*s).carved * osz) as *mut u8;
                    (*s).carved += 1;
                    o
                } else {
                    break;
                };
                (*s).allocated += 1;
                out[got].write(obj);
                got += 1;
            }
            if (*s).freelist.is_null() && (*s).carved == per_span {
                g.nonempty.remove(s);
            }
        }
    }
    g.out += got - k;
    got
}

/// [`remove_batch`] into a slice of pointers that holds values already (the fallback
/// front-end's cache, whose items past its count are old pointers or null).
pub fn remove_batch_into(c: usize, out: &mut [*mut u8]) -> usize {
    // SAFETY: `MaybeUninit<T>` has `T`'s layout, and `remove_batch` writes only
    // pointers into the slice (never an uninitialised value), so every element
    // stays a valid `*mut u8`.
    let out = unsafe { &mut *(ptr::from_mut(out) as *mut [MaybeUninit<*mut u8>]) };
    remove_batch(c, out)
}

/// Objects handed out by [`remove_fresh`] (zero without a write).
static FRESH_OBJECTS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// Spans [`remove_fresh`] looks at before giving up.
const FRESH_LOOK: usize = 4;

/// An object of class `c` that reads as zero without being written: one not carved
/// yet from a span that was fresh (see [`Span::fresh`]), from the first
/// four spans with free objects, or from a new span when the class has
/// no free object in its spans at all. `None` when there is none (the caller
/// writes the zeros) or memory is exhausted.
pub fn remove_fresh(c: usize) -> Option<*mut u8> {
    let mut g = CENTRAL[c].0.lock();
    let per_span = objects_per_span(c);
    let mut s = g.nonempty.head;
    let mut looked = 0;
    // SAFETY: spans in the class's list, guarded by the lock we hold.
    unsafe {
        let has_fresh = |s: *mut Span| (*s).fresh && (*s).carved < per_span;
        while !s.is_null() && !has_fresh(s) {
            looked += 1;
            if looked == FRESH_LOOK {
                return None;
            }
            s = (*s).next;
        }
    }
    if s.is_null() {
        if !g.nonempty.head.is_null() {
            return None;
        }
        let n = page_heap::alloc_span(c, span_pages(c))?;
        g.spans += 1;
        // SAFETY: a fresh span, in no list.
        unsafe {
            if !(*n).fresh {
                // Its pages were used before: give objects the ordinary way.
                g.nonempty.push(n);
                return None;
            }
            g.nonempty.push(n);
        }
        s = n;
    }
    // SAFETY: `s` is in the class's list with an object never carved, guarded by
    // the lock; objects at `start + span_offset + i * size` for `i >= carved` were
    // never handed out, and the span's pages read as zero.
    let obj = unsafe {
        let o = ((*s).start + span_offset(c, (*s).start) + (*s).carved * size(c)) as *mut u8;
        (*s).carved += 1;
        (*s).allocated += 1;
        if (*s).freelist.is_null() && (*s).carved == per_span {
            g.nonempty.remove(s);
        }
        o
    };
    g.out += 1;
    FRESH_OBJECTS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    Some(obj)
}

/// Objects [`remove_fresh`] handed out so far.
pub fn fresh_objects() -> u64 {
    FRESH_OBJECTS.load(core::sync::atomic::Ordering::Relaxed)
}

/// Takes back free objects of class `c`.
///
/// # Safety
/// Every pointer is an object of class `c` from [`remove_batch`], not in use and
/// not in any cache.
pub unsafe fn insert_batch(c: usize, objs: &[*mut u8]) {
    let mut g = CENTRAL[c].0.lock();
    let room = transfer_capacity(c) - g.transfer_len;
    let k = room.min(objs.len());
    let at = g.transfer_len;
    let t = transfer(c, &mut g);
    t[at..at + k].copy_from_slice(&objs[..k]);
    g.transfer_len += k;
    for &o in &objs[k..] {
        // SAFETY: forwarded contract: `o` is a free object of a span of class `c`.
        unsafe { g.return_to_span(c, o) };
    }
}

/// Returns every object of the transfer caches to its span (and empty spans to the
/// page heap).
pub fn flush_transfer_caches() {
    for (c, central) in CENTRAL.iter().enumerate().skip(1) {
        let mut g = central.0.lock();
        while g.transfer_len > 0 {
            g.transfer_len -= 1;
            let at = g.transfer_len;
            let o = transfer(c, &mut g)[at];
            // SAFETY: objects in the transfer cache are free objects of class `c`.
            unsafe { g.return_to_span(c, o) };
        }
    }
}

impl Central {
    /// Puts `o` back on its span's free list.
    ///
    /// # Safety
    /// `o` is a free object of class `c` that came out of a span.
    unsafe fn return_to_span(&mut self, c: usize, o: *mut u8) {
        let s: *mut Span = pagemap::get(o as usize);
        // SAFETY: the page map records every page of a span in use; the span's
        // fields are guarded by this class's lock, which we hold.
        unsafe {
            debug_assert!(
                !s.is_null() && (*s).class == c,
                "object {o:p} not of class {c}"
            );
            o.cast::<*mut u8>().write((*s).freelist);
            (*s).freelist = o;
            (*s).allocated -= 1;
            self.out -= 1;
            if (*s).allocated == 0 {
                if (*s).linked {
                    self.nonempty.remove(s);
                }
                self.spans -= 1;
                page_heap::free_span(s);
            } else if !(*s).linked {
                self.nonempty.push(s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size_class::{batch, class_of_size};

    /// Two threads in the slow paths of two classes write only their own classes'
    /// lock and counts: no 128-byte block (a cache line and the one the hardware
    /// prefetches with it) holds two classes' states. (The transfer arrays are not
    /// aligned: a 128-byte `TRANSFER` measured 6% slower on alloc-bench's `remote`;
    /// only a class's last slots, used when its cache is nearly full, can share a
    /// line with the next class's first ones.)
    #[test]
    fn no_two_classes_states_share_a_cache_line() {
        // The addresses below are this binary's; another link (the C library's)
        // places `CENTRAL` anywhere its alignment allows: that must be 128.
        assert!(
            align_of::<Class>() >= 128,
            "a class's state may share a line with another class's"
        );
        let mut owner = std::collections::HashMap::new();
        for (c, class) in CENTRAL.iter().enumerate() {
            let at = ptr::from_ref(&class.0) as usize;
            let len = size_of::<SpinLock<Central>>();
            for block in at / 128..=(at + len - 1) / 128 {
                let o = *owner.entry(block).or_insert(c);
                assert_eq!(
                    o,
                    c,
                    "classes {o} and {c} share the block at {:#x}",
                    block * 128
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "another class's lock")]
    fn a_transfer_cache_is_reached_only_with_its_own_class_lock() {
        // The largest class's lock, held while the panic unwinds (a test that takes it
        // meanwhile waits; the panic's own allocations are the harness's allocator's).
        let mut g = CENTRAL[CLASSES].0.lock();
        let _ = transfer(CLASSES - 1, &mut g);
    }

    #[test]
    fn the_transfer_cache_holds_several_batches_before_spilling_to_spans() {
        // Alone: another test's allocation or free of a 64-byte object (through the
        // caches, which refill and spill here) or a trim (which flushes the transfer
        // caches) would change the counts compared below.
        let _heap = crate::test_heap_alone();
        // A consumer that frees batch after batch while the producer is behind: the
        // transfer cache takes them all up to its capacity (several batches), and
        // only what goes beyond returns to the spans; the producer then gets them
        // back from the transfer cache first.
        let c = class_of_size(64);
        let b = batch(c);
        let cap = transfer_capacity(c);
        assert!(cap >= 8 * b, "{cap} objects: fewer than 8 batches of {b}");
        let n = cap + 2 * b;
        let mut objs = vec![ptr::null_mut(); n];
        for chunk in objs.chunks_mut(b) {
            assert_eq!(remove_batch_into(c, chunk), chunk.len());
        }
        let before = class_stats(c);
        for chunk in objs.chunks(b) {
            // SAFETY: objects of class `c` from `remove_batch`, in no cache.
            unsafe { insert_batch(c, chunk) };
        }
        let after = class_stats(c);
        assert_eq!(after.transfer, before.transfer + cap);
        assert_eq!(
            after.out,
            before.out + cap - n,
            "the rest went to the spans"
        );
        let mut again = vec![ptr::null_mut(); cap];
        for chunk in again.chunks_mut(b) {
            assert_eq!(remove_batch_into(c, chunk), chunk.len());
        }
        assert_eq!(class_stats(c).transfer, before.transfer);
        assert_eq!(
            class_stats(c).out,
            after.out,
            "taken from the transfer cache"
        );
        for chunk in again.chunks(b) {
            // SAFETY: as above.
            unsafe { insert_batch(c, chunk) };
        }
        flush_transfer_caches();
    }
}
