//! [`LazySlots`]: the per-CPU storage of a container, set up on first use so that the
//! containers have `const` constructors (and can be `static`s).
//!
//! The fast path pays nothing extra for it: the slot count is 0 until the storage is
//! set up, so the bounds check every operation already makes (`cpu < slots`) is also
//! the "set up yet?" check; a thread that fails it goes out of line, sets the storage
//! up and retries.
//!
//! # Set-up without a lock
//! The first use may happen anywhere an operation may: inside a signal handler that
//! interrupted this very thread in the middle of another set-up, or in a child forked
//! while another thread was setting up (that thread does not exist in the child). So
//! nobody ever waits for a set-up: a thread *claims* the set-up with one
//! compare-and-swap of `claim` (0 -> its process's identity, see below), reserves the
//! storage without waiting for any lock (`PerCpu::try_new_nonblocking`: the pool's
//! lock is only tried; when it is held the storage gets a mapping of its own), writes
//! it, and publishes the slot count. A thread that finds the set-up claimed by its
//! own process does not wait: its operation completes on the container's shared
//! fallback, and the next operation looks again. A claim made with another identity
//! was made before a `fork` (the claimer does not exist here): this process takes it
//! over with the same compare-and-swap (what the claimer reserved stays reserved,
//! unused, in this process's copy of memory).
//!
//! # Whose claim it is
//! The identity ([`identity`](super::identity)) is a number that no ancestor of the
//! process had, kept in a page marked `MADV_WIPEONFORK` so that every `fork` forgets
//! it: a child never mistakes a claim inherited from an ancestor for its own, even
//! with the ancestor's pid (pid reuse; pid 1 forking pid 1 of a new pid namespace).
//! Where the kernel refuses that advice (before Linux 4.14) the identity goes with
//! the process id, and a process whose pid equals that of the ancestor whose
//! identity it inherited still finds the ancestor's claims its own: those containers
//! stay on their fallback in that process (slower, still exact and sound). Threads of
//! one process always agree on its identity, so a claim of this process is never
//! taken over while its claimer may still write the storage (processes sharing memory
//! without being one process, as a `vfork` child: see [`identity`](super::identity)).
//!
//! Everything on the path is async-signal-safe (`getpid`, `mmap`, `madvise`, reading
//! `possible_cpus()` and the page sizes) and nothing calls the global allocator: the
//! pool keeps its bookkeeping in mappings of its own, so a first use inside a signal
//! handler that interrupted `malloc` on the same thread does not block either, even
//! when the pool must grow. For items that share a pool chunk the stride
//! is a constant ([`DEFAULT_STRIDE`](super::storage::DEFAULT_STRIDE) on x86_64, whose
//! pages are 4 KiB), so slot `i` is `base + (i << 16)` with no shift to load.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::AtomicU64;
use core::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

use super::storage::{AllocError, IndexBy, PerCpu, Zeroable, DEFAULT_STRIDE};

/// Why a set-up did not happen.
#[derive(Debug)]
pub(crate) enum SetupError {
    /// Another thread of this process (or this thread, interrupted by the signal
    /// handler that tried) is setting the storage up right now.
    Busy,
    /// The reservation failed.
    Alloc(AllocError),
}

/// Per-CPU storage set up on first use.
pub(crate) struct LazySlots<S: Zeroable> {
    /// The slot count once `storage` is written (release), 0 before.
    ready: AtomicUsize,
    /// `ready` when indexed by CPU, 0 when by mm_cid: what the inline first attempt
    /// compares the CPU number with (see `on_current_cpu`).
    cpu_ready: AtomicUsize,
    /// `ready` when indexed by mm_cid, 0 when by CPU.
    mm_ready: AtomicUsize,
    /// `cpu_ready` when glibc owns registrations (libc mode), 0 otherwise: the bound
    /// of the fast path that reaches the area through `fs_off`.
    libc_ready: AtomicUsize,
    /// glibc's `__rseq_offset` (written before `libc_ready`), 0 before: the fast path
    /// reads `cpu_id` at `%fs:4(fs_off)` with no test of the registration mode.
    fs_off: AtomicIsize,
    /// How the container picks its slot (set at construction).
    index: IndexBy,
    /// 0, or the identity of the process whose thread claimed the set-up (see the
    /// module docs).
    claim: AtomicU64,
    /// Written once, by the thread holding `claim`, while `ready` is 0; read only
    /// after `ready` was seen non-zero (acquire).
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
            libc_ready: AtomicUsize::new(0),
            fs_off: AtomicIsize::new(0),
            index,
            claim: AtomicU64::new(0),
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

    /// The storage, set up if it was not (waiting, by yielding, while another thread
    /// of this process sets it up: for ordinary code, not signal handlers).
    ///
    /// # Panics
    /// If the reservation fails (as `PerCpu::new`).
    pub(crate) fn force(&self) -> &PerCpu<S> {
        loop {
            match self.set_up_with(true) {
                Ok(s) => return s,
                Err(SetupError::Busy) => std::thread::yield_now(),
                Err(SetupError::Alloc(e)) => panic!("{e}"),
            }
        }
    }

    /// The storage, set up now if it was not: the lock-free protocol of the module
    /// docs. Never waits (see `PerCpu::try_new_nonblocking` for the reservation).
    pub(crate) fn set_up_now(&self) -> Result<&PerCpu<S>, SetupError> {
        self.set_up_with(false)
    }

    /// [`set_up_now`](Self::set_up_now); with `blocking`, the reservation may wait
    /// for the pool's lock (ordinary code: always placed in the pool).
    #[cold]
    #[inline(never)]
    fn set_up_with(&self, blocking: bool) -> Result<&PerCpu<S>, SetupError> {
        if let Some(s) = self.get() {
            return Ok(s);
        }
        let me = super::identity::current();
        let mut seen = self.claim.load(Ordering::Acquire);
        loop {
            if let Some(s) = self.get() {
                return Ok(s);
            }
            if seen == me {
                return Err(SetupError::Busy);
            }
            // 0: unclaimed; another identity: claimed before a fork by a thread that
            // does not exist in this process.
            match self
                .claim
                .compare_exchange(seen, me, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => seen = now,
            }
        }
        // The storage may have been published between our last look and the claim
        // (by the claimer we just replaced, had it been of this process: it was not,
        // but re-checking is free).
        if let Some(s) = self.get() {
            return Ok(s);
        }
        // If anything below panics, give the claim back as the panic unwinds (the
        // storage was not published): later uses try again instead of finding the
        // set-up claimed by this process forever.
        struct Unclaim<'a>(&'a AtomicU64);
        impl Drop for Unclaim<'_> {
            fn drop(&mut self) {
                self.0.store(0, Ordering::Release);
            }
        }
        let unclaim = Unclaim(&self.claim);
        let storage = if blocking {
            PerCpu::<S>::try_new(self.index)
        } else {
            PerCpu::<S>::try_new_nonblocking(self.index)
        };
        let storage = match storage {
            Ok(s) => s,
            // The claim goes back (`unclaim`): the next use tries again.
            Err(e) => return Err(SetupError::Alloc(e)),
        };
        if let Some(shift) = Self::CONST_SHIFT {
            // Pages larger than the pool stride would make it larger: not on x86_64.
            assert_eq!(storage.stride_shift(), shift, "pool stride");
        }
        let n = storage.slots();
        // The fast path's contract (`Slots::count`): indexes below the count are CPU
        // numbers or mm_cids, never the kernel's -1/-2.
        assert!(
            n <= crate::abi::CPU_ID_REGISTRATION_FAILED as usize,
            "slot count"
        );
        // SAFETY: `ready` is 0 and we hold the claim: nobody else writes the storage
        // (claims are exclusive within a process), and nobody reads it before `ready`
        // publishes it.
        unsafe { (*self.storage.get()).write(storage) };
        // Published below: the claim stays (nobody looks at it once `ready` is set).
        core::mem::forget(unclaim);
        match self.index {
            IndexBy::Cpu => {
                self.cpu_ready.store(n, Ordering::Release);
                if let Some(off) = crate::registration::area_offset() {
                    self.fs_off.store(off, Ordering::Relaxed);
                    self.libc_ready.store(n, Ordering::Release);
                }
            }
            IndexBy::MmCid => self.mm_ready.store(n, Ordering::Release),
        }
        self.ready.store(n, Ordering::Release);
        Ok(self.get().expect("just set up"))
    }

    /// Takes the set-up claim without setting anything up, as a thread stopped in
    /// the middle of a set-up would hold it (tests: operations must complete on the
    /// fallback meanwhile, and a forked child must take the claim over).
    pub(crate) fn claim_for_test(&self) -> bool {
        let me = super::identity::current();
        self.get().is_none()
            && self
                .claim
                .compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
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
    /// [`cpu_count`](Self::cpu_count) in libc mode (0 otherwise), and glibc's
    /// offset (0 while the count is 0): the fast path's bound and area, for
    /// `cached_area_with_cpu_below`.
    fn libc_cpu(&self) -> (usize, isize);
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
    fn libc_cpu(&self) -> (usize, isize) {
        // The count first (acquire): a non-zero count was published after the offset.
        let n = self.libc_ready.load(Ordering::Acquire);
        (n, self.fs_off.load(Ordering::Relaxed))
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
        self.set_up_now().is_ok()
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
