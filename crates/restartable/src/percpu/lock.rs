//! [`PerCpuLock`]: one mutex-protected value per CPU; locking the current CPU's
//! instance is one restartable sequence (compare with 2, "unlocked and created";
//! store 1, "locked"), unlocking a release store.

use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicIsize, Ordering};

use super::{
    effective_index, on_current_cpu, Attempt, IndexBy, LazySlots, Seq, Step, Then, Zeroable,
};
use crate::arch::{self, Index};
use crate::hooks::{self, Hooks, NoHooks};

/// The lock word of an instance whose value was never created (all-zero storage).
const UNCREATED: isize = 0;
/// The lock word of a locked instance (its value exists, except while the locker
/// creates it).
const LOCKED: isize = 1;
/// The lock word of an unlocked instance whose value exists.
const READY: isize = 2;

/// One lock word and one lazily created value. The word says both whether the
/// instance is locked and whether its value exists, so that the fast path's one
/// compare (`READY`) checks both.
struct LockSlot<T> {
    /// [`UNCREATED`], [`LOCKED`] or [`READY`]. Per-CPU slots: set to `LOCKED` only by
    /// sequences of their CPU, back by the holder. The fallback slot: atomics only.
    word: AtomicIsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: all-zero is `UNCREATED` (unlocked, no value); MaybeUninit holds any bytes.
unsafe impl<T> Zeroable for LockSlot<T> {}
// SAFETY: the value is only reached through the lock (a guard), which gives one
// thread at a time access; T: Send is enough for that, as for std's Mutex.
unsafe impl<T: Send> Sync for LockSlot<T> {}

impl<T> Drop for LockSlot<T> {
    fn drop(&mut self) {
        // `LOCKED` here is a guard that was leaked (a guard exists only once the value
        // does).
        if *self.word.get_mut() != UNCREATED {
            // SAFETY: created (word), dropped once, with exclusive access.
            unsafe { self.value.get_mut().assume_init_drop() }
        }
    }
}

impl<T> LockSlot<T> {
    const fn new() -> Self {
        LockSlot {
            word: AtomicIsize::new(UNCREATED),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }
}

impl<T: Default> LockSlot<T> {
    /// Creates the value of an instance this thread has just locked from `UNCREATED`.
    /// If `T::default()` panics, the instance goes back to `UNCREATED` (unlocked) as
    /// the panic unwinds.
    #[cold]
    #[inline(never)]
    fn create(&self) {
        struct Uncreated<'a>(&'a AtomicIsize);
        impl Drop for Uncreated<'_> {
            fn drop(&mut self) {
                self.0.store(UNCREATED, Ordering::Release);
            }
        }
        let unwinding = Uncreated(&self.word);
        let value = T::default();
        core::mem::forget(unwinding);
        // SAFETY: we hold the lock: exclusive access to the value, which does not
        // exist yet (the word was `UNCREATED`), so nothing is overwritten.
        unsafe { (*self.value.get()).write(value) };
    }
}

/// The lock's sequence: `READY -> LOCKED` on the current CPU's instance, or, once a
/// compare failed, whatever the instance of the attempt's CPU needs: `UNCREATED ->
/// LOCKED` and create it when it reads uncreated.
///
/// What to expect is decided per attempt from the slot that attempt runs on, never
/// carried over from the slot of a failed attempt: a retry may run on another CPU,
/// and an expectation carried over (uncreated from CPU 1, tried on CPU 0's ready
/// instance, then ready tried on CPU 1's uncreated one, ...) can fail forever when
/// migrations fall between attempts.
struct Lock<T> {
    /// Set once a compare failed: attempts then read their slot's word first.
    retrying: bool,
    _value: PhantomData<fn() -> T>,
}

impl<T> Clone for Lock<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Lock<T> {}

impl<T: Default> Seq<LockSlot<T>> for Lock<T> {
    /// The locked instance and its CPU.
    type Out = (*const LockSlot<T>, u32);

    #[inline(always)]
    unsafe fn run<I: Index, H: Hooks, K>(
        self,
        area: crate::ThreadArea,
        cpu: u32,
        slot: &LockSlot<T>,
        k: impl Step<Self::Out, K>,
    ) -> K {
        let word = slot.word.as_ptr();
        hooks::inject_c::<H>(8);
        // The first attempt expects `READY` (a constant: the inline fast path has no
        // load here); retries look at their own slot.
        let expect = if self.retrying && slot.word.load(Ordering::Relaxed) == UNCREATED {
            UNCREATED
        } else {
            READY
        };
        let locked = move || {
            core::sync::atomic::fence(Ordering::Acquire);
            if expect == UNCREATED {
                slot.create();
            }
            (slot as *const LockSlot<T>, cpu)
        };
        // SAFETY: `word` is the lock word of `cpu`'s slot, which only sequences for
        // `cpu` set to `LOCKED` (the holder sets it back with an atomic store).
        unsafe {
            arch::load_cbne_store_k::<I, H, K>(
                area,
                cpu,
                word,
                expect,
                LOCKED,
                Then {
                    out: locked,
                    step: k,
                },
            )
        }
    }

    fn compare_failed(&mut self, _: &LockSlot<T>) -> Attempt<Self::Out> {
        // Held by another thread (possibly one that migrated away: the retry loop
        // spins), or never created (the next attempt sees it on its own slot).
        self.retrying = true;
        Attempt::Again
    }
}

/// The guard's CPU for the shared fallback instance.
const FALLBACK_CPU: u32 = u32::MAX;

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
            slots: LazySlots::eager(index),
            index,
            fallback: LockSlot::new(),
            _hooks: PhantomData,
        }
    }

    /// Locks the current CPU's instance (spinning while its holder, possibly a thread
    /// that migrated away, keeps it).
    #[inline(always)]
    pub fn lock(&self) -> PerCpuLockGuard<'_, T, H> {
        let seq = Lock {
            retrying: false,
            _value: PhantomData,
        };
        let (slot, cpu) = on_current_cpu::<H, _, _>(&self.slots, seq, |_| {
            (self.lock_fallback() as *const LockSlot<T>, FALLBACK_CPU)
        });
        PerCpuLockGuard {
            // SAFETY: a slot of this lock's storage or its fallback, which live as
            // long as `self`.
            slot: unsafe { &*slot },
            cpu,
            _lock: PhantomData,
            _not_send: PhantomData,
        }
    }

    #[cold]
    #[inline(never)]
    fn lock_fallback(&self) -> &LockSlot<T> {
        let mut spins = 0u32;
        loop {
            let word = &self.fallback.word;
            match word.compare_exchange_weak(READY, LOCKED, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => break,
                Err(UNCREATED) => {
                    if word
                        .compare_exchange(UNCREATED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        self.fallback.create();
                        break;
                    }
                }
                Err(_) => {}
            }
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
                if *s.word.get_mut() == UNCREATED {
                    s.value.get_mut().write(T::default());
                    *s.word.get_mut() = READY;
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
    /// Its CPU (or mm_cid); [`FALLBACK_CPU`] for the shared fallback instance.
    cpu: u32,
    _lock: PhantomData<&'a PerCpuLock<T, H>>,
    _not_send: PhantomData<*mut T>,
}

// SAFETY: sharing a guard only gives `&T`.
unsafe impl<T: Default + Sync, H: Hooks> Sync for PerCpuLockGuard<'_, T, H> {}

impl<'a, T: Default, H: Hooks> PerCpuLockGuard<'a, T, H> {
    /// The CPU (or mm_cid) whose instance is held; `None` for the shared fallback
    /// instance.
    pub fn cpu(&self) -> Option<u32> {
        (self.cpu != FALLBACK_CPU).then_some(self.cpu)
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
        self.slot.word.store(READY, Ordering::Release);
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
