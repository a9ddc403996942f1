//! [`PerCpuLock`]: one mutex-protected value per CPU; locking the current CPU's
//! instance is one restartable sequence (compare 0, store 1), unlocking a release
//! store.

use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

use super::{effective_index, on_current_cpu, with_index, Attempt, IndexBy, LazySlots, Zeroable};
use crate::arch::{self, Index};
use crate::hooks::{self, Hooks, NoHooks};

/// One lock word and one lazily created value.
struct LockSlot<T> {
    /// 0 unlocked, 1 locked. Per-CPU slots: set only by sequences of their CPU,
    /// cleared by the holder. The fallback slot: atomics only.
    word: AtomicIsize,
    init: AtomicBool,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: all-zero is "unlocked, not initialized"; MaybeUninit holds any bytes.
unsafe impl<T> Zeroable for LockSlot<T> {}
// SAFETY: the value is only reached through the lock (a guard), which gives one
// thread at a time access; T: Send is enough for that, as for std's Mutex.
unsafe impl<T: Send> Sync for LockSlot<T> {}

impl<T> Drop for LockSlot<T> {
    fn drop(&mut self) {
        if *self.init.get_mut() {
            // SAFETY: initialized (flag), dropped once, with exclusive access.
            unsafe { self.value.get_mut().assume_init_drop() }
        }
    }
}

impl<T> LockSlot<T> {
    const fn new() -> Self {
        LockSlot {
            word: AtomicIsize::new(0),
            init: AtomicBool::new(false),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }
}

/// A per-CPU mutex: one `T` per CPU (created with `T::default()` on first lock),
/// each behind its own lock. [`lock`](Self::lock) locks the instance of the CPU the
/// thread runs on, with one restartable sequence (no atomic instruction); the guard
/// remembers which instance it holds and may be kept across preemption and migration;
/// dropping it unlocks with a release store. If `T::default()` panics, the instance
/// is unlocked again as the panic unwinds, and stays uncreated until the next lock.
///
/// Threads without rseq, and lock attempts that abort too often, use a shared
/// fallback instance protected by an atomic lock; [`iter_mut`](Self::iter_mut)
/// includes it.
///
/// Like `std::sync::Mutex`, it is not re-entrant: locking again while this thread
/// holds a guard for the same CPU's instance spins forever. A waiter spins, then
/// yields every 64 tries, while the holder (possibly preempted, or migrated away)
/// keeps the lock.
///
/// # Examples
/// ```
/// use restartable::PerCpuLock;
///
/// let hist: PerCpuLock<[u64; 4]> = PerCpuLock::new();
/// hist.lock()[2] += 1;
/// let mut hist = hist;
/// let total: u64 = hist.iter_mut().map(|h| h[2]).sum();
/// assert_eq!(total, 1);
/// ```
pub struct PerCpuLock<T, H: Hooks = NoHooks> {
    slots: LazySlots<LockSlot<T>>,
    index: IndexBy,
    fallback: LockSlot<T>,
    _hooks: PhantomData<H>,
}

// SAFETY: as std's Mutex: the values are reached one thread at a time.
unsafe impl<T: Send, H: Hooks> Sync for PerCpuLock<T, H> {}
// SAFETY: moving the container moves the values.
unsafe impl<T: Send, H: Hooks> Send for PerCpuLock<T, H> {}

impl<T: Default> PerCpuLock<T, NoHooks> {
    /// Per-CPU instances indexed by CPU. `const`: a lock can be a `static`; its
    /// per-CPU storage is reserved on first use.
    pub const fn new() -> Self {
        PerCpuLock {
            slots: LazySlots::new(),
            index: IndexBy::Cpu,
            fallback: LockSlot::new(),
            _hooks: PhantomData,
        }
    }

    /// Per-CPU instances indexed as asked.
    pub fn with_index(index: IndexBy) -> Self {
        Self::with_hooks(index)
    }
}

impl<T: Default> Default for PerCpuLock<T, NoHooks> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Default, H: Hooks> PerCpuLock<T, H> {
    /// Per-CPU instances whose sequences carry the hooks `H`.
    pub fn with_hooks(index: IndexBy) -> Self {
        let index = effective_index(index);
        PerCpuLock {
            slots: LazySlots::eager(),
            index,
            fallback: LockSlot::new(),
            _hooks: PhantomData,
        }
    }

    /// Locks the current CPU's instance (spinning while its holder, possibly a thread
    /// that migrated away, keeps it).
    #[inline(always)]
    pub fn lock(&self) -> PerCpuLockGuard<'_, T, H> {
        let (slot, cpu) = match with_index!(self.index, I => self.lock_as::<I>()) {
            // SAFETY: a slot of this lock's storage, which lives as long as `self`.
            Some((slot, cpu)) => (unsafe { slot.as_ref() }, Some(cpu)),
            None => (self.lock_fallback(), None),
        };
        PerCpuLockGuard::new(slot, cpu)
    }

    /// The locked slot and its CPU, or `None`: use the fallback.
    #[inline(always)]
    fn lock_as<I: Index>(&self) -> Option<(core::ptr::NonNull<LockSlot<T>>, u32)> {
        let mut spins = 0u32;
        on_current_cpu::<I, H, _, _>(&self.slots, |area, cpu, slot| {
            let word = slot.word.as_ptr();
            hooks::inject_c::<H>(8);
            // SAFETY: `word` is the lock word of `cpu`'s slot, which only sequences
            // for `cpu` set (the holder clears it with an atomic store).
            let r = unsafe { arch::load_cbne_store::<I, H>(area, cpu, word, 0, 1) };
            Attempt::from_op(
                r,
                || {
                    core::sync::atomic::fence(Ordering::Acquire);
                    (core::ptr::NonNull::from(slot), cpu)
                },
                || {
                    // Held by another thread (possibly one that migrated away): spin.
                    spins += 1;
                    if spins.is_multiple_of(64) {
                        std::thread::yield_now();
                    } else {
                        core::hint::spin_loop();
                    }
                    Attempt::Again
                },
            )
        })
    }

    #[cold]
    #[inline(never)]
    fn lock_fallback(&self) -> &LockSlot<T> {
        let mut spins = 0u32;
        while self
            .fallback
            .word
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins.is_multiple_of(64) {
                std::thread::yield_now();
            } else {
                core::hint::spin_loop();
            }
        }
        hooks::record_fallback::<H>();
        &self.fallback
    }

    /// Every instance (each CPU's, then the fallback's) with exclusive access, for
    /// aggregates. Instances never locked are created with `T::default()`.
    ///
    /// # Panics
    /// If the per-CPU storage was never set up and cannot be reserved now.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.force();
        self.slots
            .get_mut()
            .into_iter()
            .flatten()
            .chain(core::iter::once(&mut self.fallback))
            .map(|s| {
                if !*s.init.get_mut() {
                    s.value.get_mut().write(T::default());
                    *s.init.get_mut() = true;
                }
                // SAFETY: initialized just above or before.
                unsafe { s.value.get_mut().assume_init_mut() }
            })
    }

    /// The index mode in use.
    pub fn index(&self) -> IndexBy {
        self.index
    }
}

/// Exclusive access to one CPU's instance of a [`PerCpuLock`]; unlocks on drop.
///
/// Not `Send`: it is released by the thread that took it (it may have migrated to
/// another CPU meanwhile; that is fine).
pub struct PerCpuLockGuard<'a, T: Default, H: Hooks = NoHooks> {
    /// The locked instance (found once, when locking).
    slot: &'a LockSlot<T>,
    /// Its CPU (or mm_cid); `None` for the shared fallback instance.
    cpu: Option<u32>,
    _lock: PhantomData<&'a PerCpuLock<T, H>>,
    _not_send: PhantomData<*mut T>,
}

// SAFETY: sharing a guard only gives `&T`.
unsafe impl<T: Default + Sync, H: Hooks> Sync for PerCpuLockGuard<'_, T, H> {}

impl<'a, T: Default, H: Hooks> PerCpuLockGuard<'a, T, H> {
    /// The guard of `slot`, which this thread has just locked; creates the value with
    /// `T::default()` on the instance's first use. The guard exists before
    /// `T::default()` runs, so that if it panics, unwinding drops the guard and
    /// unlocks (the value stays uncreated; the next lock tries again).
    #[inline(always)]
    fn new(slot: &'a LockSlot<T>, cpu: Option<u32>) -> Self {
        let guard = PerCpuLockGuard {
            slot,
            cpu,
            _lock: PhantomData,
            _not_send: PhantomData,
        };
        if !slot.init.load(Ordering::Relaxed) {
            guard.create();
        }
        guard
    }

    #[cold]
    #[inline(never)]
    fn create(&self) {
        let value = T::default();
        // SAFETY: we hold the lock: exclusive access to the value, which is not
        // initialized (flag), so nothing is overwritten without being dropped.
        unsafe { (*self.slot.value.get()).write(value) };
        self.slot.init.store(true, Ordering::Relaxed);
    }

    /// The CPU (or mm_cid) whose instance is held; `None` for the shared fallback
    /// instance.
    pub fn cpu(&self) -> Option<u32> {
        self.cpu
    }
}

impl<T: Default, H: Hooks> Deref for PerCpuLockGuard<'_, T, H> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: held lock, initialized value.
        unsafe { (*self.slot.value.get()).assume_init_ref() }
    }
}

impl<T: Default, H: Hooks> DerefMut for PerCpuLockGuard<'_, T, H> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: held lock (exclusive), initialized value.
        unsafe { (*self.slot.value.get()).assume_init_mut() }
    }
}

impl<T: Default, H: Hooks> Drop for PerCpuLockGuard<'_, T, H> {
    #[inline(always)]
    fn drop(&mut self) {
        // The release store that unlocks: no sequence can commit on this word while
        // it is 1, so this plain store races nothing.
        self.slot.word.store(0, Ordering::Release);
    }
}

impl<T: Default + fmt::Debug, H: Hooks> fmt::Debug for PerCpuLockGuard<'_, T, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerCpuLockGuard")
            .field("cpu", &self.cpu())
            .field("value", &**self)
            .finish()
    }
}

impl<T, H: Hooks> fmt::Debug for PerCpuLock<T, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerCpuLock")
            .field("slots", &self.slots.slots())
            .field("index", &self.index)
            .finish()
    }
}
