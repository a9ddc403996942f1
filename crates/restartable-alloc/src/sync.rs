//! The allocator's lock, and fork safety.
//!
//! # Invariants
//! - [`SpinLock`] never allocates and never blocks in the kernel except to yield;
//!   every lock of the allocator is one, held only for bounded work (no lock is held
//!   while calling code outside the allocator).
//! - Lock order: the front-end's set-up lock, its drain lock, a class's central
//!   list, then the page heap (which also guards the page map and span records),
//!   then the list of unmaps the kernel refused (`os`).
//!   The fork handlers take them all in that order.
//! - Fork: `pthread_atfork` handlers take every lock before `fork` and release them
//!   after it in both processes, so a child never inherits a lock held by a thread
//!   that does not exist in it.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// A test-and-test-and-set lock that yields when contended.
pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock gives one thread at a time access to `value`.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// An unlocked lock around `value`.
    pub const fn new(value: T) -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock.
    #[inline]
    pub fn lock(&self) -> SpinGuard<'_, T> {
        ensure_fork_handlers();
        if self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        SpinGuard { lock: self }
    }

    #[cold]
    fn lock_contended(&self) {
        let mut spins = 0u32;
        loop {
            if !self.locked.load(Ordering::Relaxed)
                && self
                    .locked
                    .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            spins += 1;
            if spins < 64 {
                core::hint::spin_loop();
            } else {
                // SAFETY: sched_yield has no preconditions.
                unsafe {
                    libc::sched_yield();
                }
            }
        }
    }

    /// Takes the lock and keeps it without a guard (fork handlers).
    fn raw_lock(&self) {
        core::mem::forget(self.lock());
    }

    /// Releases a lock taken by [`raw_lock`](Self::raw_lock).
    ///
    /// # Safety
    /// The lock must be held by a `raw_lock` whose guard was forgotten.
    unsafe fn raw_unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }
}

/// Access to a locked value; unlocks on drop.
pub struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> SpinGuard<'_, T> {
    /// Whether this guard is `lock`'s (so that `lock` is held, by its holder).
    pub fn holds(&self, lock: &SpinLock<T>) -> bool {
        core::ptr::eq(self.lock, lock)
    }
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

/// Runs `f` on every lock of the allocator, in lock order.
fn for_each_lock(mut f: impl FnMut(&dyn RawLock)) {
    f(crate::front::init_lock());
    f(crate::front::drain_lock());
    for c in 1..=crate::size_class::CLASSES {
        f(crate::middle::lock_of(c));
    }
    f(crate::backend::page_heap::lock());
    f(crate::os::deferred_lock());
}

/// A lock the fork handlers can take and release without a guard.
pub trait RawLock {
    /// Takes the lock.
    fn take(&self);
    /// Releases it.
    ///
    /// # Safety
    /// Taken by [`take`](Self::take) on this thread (or, after `fork`, inherited
    /// from it).
    unsafe fn give(&self);
    /// The address of the lock's word (what `take` and `give` write).
    #[cfg(test)]
    fn word(&self) -> usize;
}

impl<T> RawLock for SpinLock<T> {
    fn take(&self) {
        self.raw_lock();
    }
    unsafe fn give(&self) {
        // SAFETY: forwarded.
        unsafe { self.raw_unlock() }
    }
    #[cfg(test)]
    fn word(&self) -> usize {
        core::ptr::from_ref(&self.locked) as usize
    }
}

/// Set by [`disable_fork_handlers`]: the handlers do nothing.
static HANDLERS_OFF: AtomicBool = AtomicBool::new(false);
/// Whether the last `before_fork` took the locks (so `after_fork` gives them).
static TOOK: AtomicBool = AtomicBool::new(false);

/// Test instrument: from now on the fork handlers do nothing, so a `fork` while
/// another thread holds one of the allocator's locks leaves that lock held for ever
/// in the child. It exists to show that the handlers matter (a test forks with a
/// lock held and watches the child hang).
///
/// # Safety
/// After this call a child process created by `fork` may find the allocator's
/// locks held and its data structures half-updated: allocating in it may hang or
/// corrupt memory. Only for a test process that expects that.
#[doc(hidden)]
pub unsafe fn disable_fork_handlers() {
    HANDLERS_OFF.store(true, Ordering::SeqCst);
}

extern "C" fn before_fork() {
    if HANDLERS_OFF.load(Ordering::SeqCst) {
        TOOK.store(false, Ordering::Relaxed);
        return;
    }
    for_each_lock(|l| l.take());
    TOOK.store(true, Ordering::Relaxed);
}

extern "C" fn after_fork() {
    if TOOK.load(Ordering::Relaxed) {
        // SAFETY: `before_fork` took every lock on this thread (the only thread of
        // a child).
        for_each_lock(|l| unsafe { l.give() });
    }
}

const NOT_INSTALLED: u8 = 0;
const INSTALLING: u8 = 1;
const INSTALLED: u8 = 2;
static ATFORK: AtomicU8 = AtomicU8::new(NOT_INSTALLED);

/// Installs the fork handlers, once per process, before the caller takes any lock:
/// no lock can be held across a `fork` without them. The C library
/// (`restartable-malloc`) calls it when it is loaded, before the program registers
/// handlers of its own, so that its handlers run inside the program's (glibc runs
/// prepare handlers last-registered first): a program's handler may then allocate.
/// A Rust program gets them at its first lock; its own `pthread_atfork` handlers
/// that allocate should be registered after its first allocation.
#[inline]
pub fn ensure_fork_handlers() {
    if ATFORK.load(Ordering::Acquire) != INSTALLED {
        install_fork_handlers();
    }
}

#[cold]
fn install_fork_handlers() {
    match ATFORK.compare_exchange(
        NOT_INSTALLED,
        INSTALLING,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => {
            // SAFETY: the handlers are `extern "C"` functions without arguments that
            // only take and release the allocator's locks.
            unsafe {
                libc::pthread_atfork(Some(before_fork), Some(after_fork), Some(after_fork));
            }
            ATFORK.store(INSTALLED, Ordering::Release);
        }
        Err(_) => {
            // Another thread is installing them (a few instructions and one call).
            while ATFORK.load(Ordering::Acquire) != INSTALLED {
                // SAFETY: sched_yield has no preconditions.
                unsafe {
                    libc::sched_yield();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fork handlers write every lock before and after each `fork`, in the
    /// parent and in the child: each page holding a lock costs a copy-on-write fault
    /// in both processes at every `fork` (and a first-touch fault in a process that
    /// never used that class). With each class's lock in a page of its own (next to
    /// its transfer cache's array) that was about 70 faults per `fork` on each side
    /// (bash, pyenv's shims, make: every process that forks paid them).
    #[test]
    fn fork_handlers_write_few_pages() {
        let mut locks = 0;
        let mut pages = Vec::new();
        for_each_lock(|l| {
            locks += 1;
            pages.push(l.word() / 4096);
        });
        pages.sort_unstable();
        pages.dedup();
        // The classes' locks 128 bytes apart span at most this many pages; each
        // other lock may take one more.
        let class_pages = (crate::size_class::CLASSES + 1) * 128 / 4096 + 2;
        let bound = class_pages + (locks - crate::size_class::CLASSES);
        assert!(
            pages.len() <= bound,
            "the fork handlers write {locks} locks in {} pages (at most {bound} expected)",
            pages.len()
        );
    }
}
