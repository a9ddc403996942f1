//! The fallback front-end: a small cache of free objects per thread, for threads that
//! cannot run restartable sequences (valgrind, seccomp, old kernels, other targets, a
//! thread whose registration failed), so that they do not take a lock per operation.
//!
//! # Invariants
//! - `items[c][..len[c]]` are free objects of class `c` owned by this thread's cache;
//!   at most [`CAP`] (and at most the class's per-CPU capacity) per class, so a
//!   thread holds at most [`capacity_bytes`](crate::size_class::capacity_bytes).
//! - Only its own thread touches a cache: plain loads and stores, no lock.
//! - The cache is a thread-local with a destructor that gives everything back to the
//!   middle when the thread exits. Its first use registers that destructor, which
//!   may allocate: that happens with the front-end's re-entrancy flag set, so nested
//!   calls go to the middle. Once the thread-local is gone (late in thread exit),
//!   calls go to the middle too.
//! - Objects are interchangeable between paths: an object freed into a thread cache
//!   may have come from a per-CPU cache and vice versa.

use core::cell::{Cell, UnsafeCell};

use crate::middle;
use crate::size_class::{batch, CAPACITY, CLASSES};

/// Most objects per class in one thread's cache.
pub const CAP: usize = 32;

struct Cache {
    len: [u8; CLASSES + 1],
    items: [[*mut u8; CAP]; CLASSES + 1],
}

/// Owner of the cache, flushed on thread exit.
struct ThreadCache(UnsafeCell<Cache>);

impl Cache {
    /// Gives every object back to the middle; the cache stays usable.
    fn flush(&mut self) {
        for c in 1..=CLASSES {
            let n = core::mem::take(&mut self.len[c]) as usize;
            if n > 0 {
                // SAFETY: free objects of class `c` owned by this cache, leaving it.
                unsafe { middle::insert_batch(c, &self.items[c][..n]) };
            }
        }
    }
}

impl Drop for ThreadCache {
    fn drop(&mut self) {
        self.0.get_mut().flush();
    }
}

thread_local! {
    static CACHE: ThreadCache = const {
        ThreadCache(UnsafeCell::new(Cache {
            len: [0; CLASSES + 1],
            items: [[core::ptr::null_mut(); CAP]; CLASSES + 1],
        }))
    };
    /// Whether `CACHE` has been touched (its destructor registered) on this thread.
    static READY: Cell<bool> = const { Cell::new(false) };
}

fn cap(c: usize) -> usize {
    CAPACITY[c].min(CAP)
}

/// Runs `f` on this thread's cache; `None` when the cache cannot be used (first use
/// re-entered, or the thread-local is gone).
#[inline]
fn with_cache<R>(f: impl FnOnce(&mut Cache) -> R) -> Option<R> {
    if !READY.with(|r| r.get()) && !first_use() {
        return None;
    }
    // SAFETY: only this thread reaches its cache, and `f` does not re-enter it (the
    // middle it calls never allocates through the global allocator).
    CACHE.try_with(|tc| f(unsafe { &mut *tc.0.get() })).ok()
}

/// Registers the cache's destructor with the re-entrancy flag set.
#[cold]
fn first_use() -> bool {
    if crate::front::enter_guarded() {
        let ok = CACHE.try_with(|_| ()).is_ok();
        crate::front::leave_guarded();
        READY.with(|r| r.set(ok));
        ok
    } else {
        false
    }
}

/// An object of class `c` from this thread's cache (refilled from the middle);
/// `None` when the cache is unusable: the caller goes to the middle directly.
#[inline]
pub fn alloc(c: usize) -> Option<*mut u8> {
    with_cache(|tc| {
        let n = tc.len[c] as usize;
        if n > 0 {
            tc.len[c] -= 1;
            return tc.items[c][n - 1];
        }
        let want = batch(c).min(cap(c));
        let got = middle::remove_batch_into(c, &mut tc.items[c][..want]);
        if got == 0 {
            return core::ptr::null_mut();
        }
        tc.len[c] = (got - 1) as u8;
        tc.items[c][got - 1]
    })
}

/// Frees `obj` of class `c` into this thread's cache (spilling a batch to the middle
/// when full); `false` when the cache is unusable.
///
/// # Safety
/// `obj` is a free object of class `c`, in no cache.
#[inline]
pub unsafe fn dealloc(c: usize, obj: *mut u8) -> bool {
    with_cache(|tc| {
        let n = tc.len[c] as usize;
        if n >= cap(c) {
            let k = batch(c).min(n);
            // SAFETY: the top `k` objects of the cache, leaving it.
            unsafe { middle::insert_batch(c, &tc.items[c][n - k..n]) };
            tc.len[c] = (n - k) as u8;
        }
        let n = tc.len[c] as usize;
        tc.items[c][n] = obj;
        tc.len[c] += 1;
    })
    .is_some()
}

/// Objects of class `c` in this thread's cache (for statistics of this thread).
pub fn cached_objects_here(c: usize) -> usize {
    READY
        .with(|r| r.get())
        .then(|| {
            CACHE.try_with(|tc| {
                // SAFETY: a read of this thread's cache, not re-entered.
                unsafe { (*tc.0.get()).len[c] as usize }
            })
        })
        .and_then(|r| r.ok())
        .unwrap_or(0)
}

/// Gives every object of this thread's cache back to the middle (as the thread's exit
/// does); the cache stays usable. Nothing when the cache was never used or is gone.
pub fn flush_here() {
    if !READY.with(|r| r.get()) {
        return;
    }
    // SAFETY: only this thread reaches its cache, and the middle called here never
    // allocates through the global allocator (no re-entry).
    let _ = CACHE.try_with(|tc| unsafe { &mut *tc.0.get() }.flush());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size_class::class_of_size;

    #[test]
    fn flush_here_gives_this_threads_cache_back_and_leaves_it_usable() {
        let _heap = crate::test_heap_shared();
        std::thread::spawn(|| {
            let c = class_of_size(64);
            let p = alloc(c).expect("the cache is usable on a plain thread");
            assert!(!p.is_null());
            // SAFETY: (test) a free object of class `c` from this cache, in no cache.
            assert!(unsafe { dealloc(c, p) });
            assert!(cached_objects_here(c) > 0, "the refill batch is cached");
            flush_here();
            assert_eq!(cached_objects_here(c), 0);
            let q = alloc(c).expect("usable after a flush");
            assert!(!q.is_null());
            // SAFETY: (test) as above.
            assert!(unsafe { dealloc(c, q) });
            flush_here();
        })
        .join()
        .expect("test thread");
    }
}
