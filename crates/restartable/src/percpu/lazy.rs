//! [`LazySlots`]: the per-CPU storage of a container, set up on first use so that the
//! containers have `const` constructors (and can be `static`s).
//!
//! The fast path pays nothing extra for it: the slot count is 0 until the storage is
//! set up, so the bounds check every operation already makes (`cpu < slots`) is also
//! the "set up yet?" check; a thread that fails it goes out of line, sets the storage
//! up (once, under a lock) and retries. For items that share a pool chunk the stride
//! is a constant ([`DEFAULT_STRIDE`](super::storage::DEFAULT_STRIDE) on x86_64, whose
//! pages are 4 KiB), so slot `i` is `base + (i << 16)` with no shift to load.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::storage::{IndexBy, PerCpu, Zeroable, DEFAULT_STRIDE};

/// Serialises the set-up of every container's storage (cold: once per container).
static SETUP: Mutex<()> = Mutex::new(());

/// Per-CPU storage set up on first use.
pub(crate) struct LazySlots<S: Zeroable> {
    /// The slot count once `storage` is written (release), 0 before.
    ready: AtomicUsize,
    /// `ready` when indexed by CPU, 0 when by mm_cid: what the inline first attempt
    /// compares the CPU number with (see `on_current_cpu`).
    cpu_ready: AtomicUsize,
    /// `ready` when indexed by mm_cid, 0 when by CPU.
    mm_ready: AtomicUsize,
    /// How the container picks its slot (set at construction).
    index: IndexBy,
    /// Written once, under [`SETUP`], while `ready` is 0; read only after `ready`
    /// was seen non-zero (acquire).
    storage: UnsafeCell<MaybeUninit<PerCpu<S>>>,
}

// SAFETY: the storage is written once, before `ready` publishes it, and only shared
// (`&PerCpu<S>`) afterwards, which is sound to share when `PerCpu<S>: Sync`.
unsafe impl<S: Zeroable + Sync + Send> Sync for LazySlots<S> {}
// SAFETY: moving the container moves the storage (and the values in it).
unsafe impl<S: Zeroable + Send> Send for LazySlots<S> {}

impl<S: Zeroable> LazySlots<S> {
    /// Whether the stride is the constant pool stride (an item that shares a chunk).
    const CONST_SHIFT: Option<u32> = if cfg!(target_arch = "x86_64")
        && core::mem::size_of::<S>() <= DEFAULT_STRIDE / 2
        && core::mem::align_of::<S>() <= DEFAULT_STRIDE / 2
    {
        Some(DEFAULT_STRIDE.trailing_zeros())
    } else {
        None
    };

    /// Not set up yet, indexed by CPU.
    pub(crate) const fn new() -> Self {
        Self::with_index(IndexBy::Cpu)
    }

    /// Not set up yet, indexed by `index` (already made effective:
    /// [`effective_index`](super::effective_index)).
    pub(crate) const fn with_index(index: IndexBy) -> Self {
        LazySlots {
            ready: AtomicUsize::new(0),
            cpu_ready: AtomicUsize::new(0),
            mm_ready: AtomicUsize::new(0),
            index,
            storage: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Storage set up now (what the non-`const` constructors use, so that they
    /// reserve at construction as before).
    pub(crate) fn eager(index: IndexBy) -> Self {
        let s = Self::with_index(index);
        s.force();
        s
    }

    /// The storage, if set up.
    #[inline]
    pub(crate) fn get(&self) -> Option<&PerCpu<S>> {
        if self.ready.load(Ordering::Acquire) == 0 {
            return None;
        }
        // SAFETY: `ready` is non-zero: the storage was written before it was
        // published (release/acquire) and is never written again while shared.
        Some(unsafe { (*self.storage.get()).assume_init_ref() })
    }

    /// The storage, set up if it was not.
    ///
    /// # Panics
    /// If the reservation fails (as `PerCpu::new`).
    pub(crate) fn force(&self) -> &PerCpu<S> {
        match self.try_force() {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    /// The storage, set up if it was not; the error when the reservation fails.
    pub(crate) fn try_force(&self) -> Result<&PerCpu<S>, super::storage::AllocError> {
        if let Some(s) = self.get() {
            return Ok(s);
        }
        self.setup()
    }

    #[cold]
    #[inline(never)]
    fn setup(&self) -> Result<&PerCpu<S>, super::storage::AllocError> {
        let g = SETUP.lock().unwrap_or_else(|e| e.into_inner());
        if self.ready.load(Ordering::Acquire) == 0 {
            let storage = PerCpu::<S>::try_new(self.index)?;
            if let Some(shift) = Self::CONST_SHIFT {
                // Pages larger than the pool stride would make it larger: not on x86_64.
                assert_eq!(storage.stride_shift(), shift, "pool stride");
            }
            let n = storage.slots();
            // The fast path's contract (`Slots::count`): indexes below the count are
            // CPU numbers or mm_cids, never the kernel's -1/-2.
            assert!(
                n <= crate::abi::CPU_ID_REGISTRATION_FAILED as usize,
                "slot count"
            );
            // SAFETY: `ready` is 0 and we hold SETUP: nobody reads or writes the
            // storage now (readers wait for `ready`).
            unsafe { (*self.storage.get()).write(storage) };
            match self.index {
                IndexBy::Cpu => self.cpu_ready.store(n, Ordering::Release),
                IndexBy::MmCid => self.mm_ready.store(n, Ordering::Release),
            }
            self.ready.store(n, Ordering::Release);
        }
        drop(g);
        Ok(self.get().expect("just set up"))
    }

    /// The storage with exclusive access, if set up.
    pub(crate) fn get_mut(&mut self) -> Option<&mut PerCpu<S>> {
        if *self.ready.get_mut() == 0 {
            return None;
        }
        // SAFETY: set up (above); exclusive access.
        Some(unsafe { self.storage.get_mut().assume_init_mut() })
    }

    /// The slot count once set up, 0 before: `cpu < slots()` is both the bounds
    /// check and the set-up check of the fast path.
    #[inline(always)]
    pub(crate) fn slots(&self) -> usize {
        self.ready.load(Ordering::Acquire)
    }

    /// The address of slot `i`.
    ///
    /// # Safety
    /// `i < n` where `n` is a non-zero value [`slots`](Self::slots) returned.
    #[inline(always)]
    pub(crate) unsafe fn slot_ptr(&self, i: usize) -> *mut S {
        // SAFETY: `slots()` returned non-zero (caller): set up and published.
        let storage = unsafe { (*self.storage.get()).assume_init_ref() };
        match Self::CONST_SHIFT {
            Some(shift) => storage.base().wrapping_add(i << shift).cast(),
            None => storage.slot_ptr(i),
        }
    }
}

/// What the shared retry loop needs of a container's storage ([`LazySlots`]).
pub(crate) trait Slots<S: Zeroable> {
    /// The slot count (0 while not set up), at most
    /// [`CPU_ID_REGISTRATION_FAILED`](crate::abi::CPU_ID_REGISTRATION_FAILED).
    fn count(&self) -> usize;
    /// [`count`](Self::count) when indexed by CPU, 0 otherwise.
    fn cpu_count(&self) -> usize;
    /// [`count`](Self::count) when indexed by mm_cid, 0 otherwise.
    fn mm_cid_count(&self) -> usize;
    /// How the container picks its slot.
    fn index(&self) -> IndexBy;
    /// The address of slot `i`.
    ///
    /// # Safety
    /// `i < n` for a value `n` that [`count`](Self::count) returned.
    unsafe fn slot(&self, i: usize) -> *mut S;
    /// Sets the storage up if it was not; whether it is set up now.
    fn set_up(&self) -> bool;
}

impl<S: Zeroable> Slots<S> for LazySlots<S> {
    #[inline(always)]
    fn count(&self) -> usize {
        self.slots()
    }
    #[inline(always)]
    fn cpu_count(&self) -> usize {
        self.cpu_ready.load(Ordering::Acquire)
    }
    #[inline(always)]
    fn mm_cid_count(&self) -> usize {
        self.mm_ready.load(Ordering::Acquire)
    }
    #[inline(always)]
    fn index(&self) -> IndexBy {
        self.index
    }
    #[inline(always)]
    unsafe fn slot(&self, i: usize) -> *mut S {
        // SAFETY: forwarded contract.
        unsafe { self.slot_ptr(i) }
    }
    fn set_up(&self) -> bool {
        self.try_force().is_ok()
    }
}

impl<S: Zeroable> Drop for LazySlots<S> {
    fn drop(&mut self) {
        if *self.ready.get_mut() != 0 {
            // SAFETY: set up; dropped once (exclusive access, in drop).
            unsafe { self.storage.get_mut().assume_init_drop() }
        }
    }
}
