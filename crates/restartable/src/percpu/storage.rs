//! Strided per-CPU storage: [`PerCpu<T>`], one `T` per CPU (or per mm_cid), laid out
//! like the reference per-CPU memory pool (librseq's `rseq_mempool`).
//!
//! # Layout
//!
//! A pool reserves *chunks* of virtual memory. A chunk holds one range of `stride`
//! bytes ([`DEFAULT_STRIDE`], 64 KiB) per slot, all ranges contiguous, and many items
//! share it: an item is placed at the same offset in every range, so slot `i` of an
//! item lives at `base + i * stride`, where `base` is its address in range 0.
//!
//! ```text
//!  chunk: slots × stride bytes, reserved once, aligned to the stride
//!  ┌──── slot 0's range ─────┬──── slot 1's range ─────┬─ … ─┬── slot n-1 ──┐
//!  │ a │ b │ c │  …          │ a │ b │ c │  …          │  …  │ a │ b │ …    │
//!  └─────────────────────────┴─────────────────────────┴─ … ─┴──────────────┘
//!    slot_ptr(i) = base + (i << stride_shift)      (one shift and one add)
//! ```
//!
//! Two slots of one item are a whole stride apart, so they never share a cache line
//! (no false sharing between CPUs) without any padding; items that sit next to each
//! other in one range are all used by the same CPU, so they may share lines. An item of
//! `S` bytes takes `S` bytes of each range (rounded up to 8, aligned as `T` requires),
//! so thousands of small counters fit in one chunk.
//!
//! Items larger than half a stride (or aligned to more than half a stride) get a
//! mapping of their own, with a stride of their size rounded up to a power-of-two
//! number of pages.
//!
//! # Resident cost
//!
//! Chunks are reserved with `mmap(MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)`: the
//! reservation is virtual (`slots × stride` bytes per chunk, 128 KiB for 2 slots, 64 MiB
//! for 1,024) and shared by every item in the chunk. Physical memory is taken one page
//! at a time, on the first write: **one page per (slot, page of the range) that has
//! been written**. So 1,000 counters of 8 bytes (8,000 bytes: two pages of each range)
//! used from 2 CPUs take 2 × 2 pages (16 KiB) resident, whether the machine has 2
//! possible CPUs or 1,024; slots of CPUs that never run the code cost nothing.
//!
//! - Reading a slot that was never written (a sum over all slots, say) maps the
//!   kernel's shared zero page: no new memory and no RSS, but page-table entries (one
//!   4 KiB page table per 2 MiB of reserved range, that is per 32 slots of a chunk).
//!   `mincore` reports such pages as resident; `/proc/self/pagemap` shows them as
//!   present but not exclusively mapped.
//! - Chunks are marked `MADV_NOHUGEPAGE` (when the stride is smaller than a PMD huge
//!   page): a transparent huge page, or a multi-size THP folio, would span several
//!   slots' ranges or a whole range and make memory follow the CPUs possible again.
//! - [`IndexBy::MmCid`] keeps the used slots dense (`0..concurrency`), so memory
//!   follows the number of threads running at once rather than the CPU numbers they
//!   run on.
//!
//! # Zeroed slots, and reuse
//!
//! Slots start all-zero without being touched (fresh anonymous pages read as zero),
//! which is why `T` must be [`Zeroable`]. When a `PerCpu` is dropped its space goes
//! back to the pool, and it must read as zero again before it is handed out, without
//! making every slot's page resident. The pool asks the kernel which of the item's
//! pages exist in each range (the `PAGEMAP_SCAN` ioctl on `/proc/self/pagemap`, Linux
//! 6.7+, which returns only the populated regions; else the pagemap entries
//! themselves) and:
//! - skips pages that were never touched or were released (and, with
//!   `PAGEMAP_SCAN`, pages mapping the zero page): they read as zero;
//! - releases with `madvise(MADV_DONTNEED)` a page of a range that no live item uses
//!   any more (the memory goes back to the system and reads as zero afterwards);
//! - otherwise clears the item's bytes: directly in a page of its own (present, or
//!   swapped out), and in a page that may be the shared zero page (pagemap entries
//!   do not tell it from a page shared with a forked child) only when some byte is
//!   not zero, so that a slot that was only read stays unbacked. Those bytes may be
//!   a former value's padding, uninitialized, so they are never read as integers:
//!   the kernel copies them out (`process_vm_readv` on this process) and the copy is
//!   compared with zero (where the copy is refused, the bytes are just zeroed);
//! - releases a whole chunk with one `madvise(MADV_DONTNEED)` when its last item goes
//!   (or unmaps it, when the pool has other chunks).
//!
//! Freeing an 8-byte item costs about 1 µs with 2 slots and 3 µs with 1,024 (one
//! ioctl; with the entries instead, the cost grows with the slot count). `mincore` is
//! not used: it reports a swapped-out page as absent although it may hold the item's
//! old bytes. The pagemap file is reopened after a `fork` (it describes the memory of
//! the process that opened it). Where it cannot be read at all, every slot's bytes
//! are checked (reads map the zero page; see above).
//!
//! # Examples
//! ```
//! use core::sync::atomic::{AtomicU64, Ordering};
//! use restartable::percpu::storage::{IndexBy, PerCpu};
//!
//! let hits: PerCpu<AtomicU64> = PerCpu::new(IndexBy::Cpu);
//! let cpu = restartable::current_cpu() as usize;
//! hits.get(cpu).fetch_add(1, Ordering::Relaxed);
//! let total: u64 = hits.iter().map(|h| h.load(Ordering::Relaxed)).sum();
//! assert_eq!(total, 1);
//! assert_eq!(hits.slot_ptr(1) as usize - hits.slot_ptr(0) as usize, hits.stride());
//! ```
//!
//! # References
//! - librseq, `include/rseq/mempool.h` and `src/rseq-mempool.c` (the per-CPU pool,
//!   its strided layout and `RSEQ_MEMPOOL_STRIDE`).
//! - `proc(5)`, `/proc/pid/pagemap`; `madvise(2)`, `MADV_DONTNEED`.

mod pool;
mod zeroable;

use core::fmt;
use core::iter::FusedIterator;
use core::marker::PhantomData;
use core::mem::{align_of, needs_drop, size_of};
use core::ptr::{self, NonNull};

#[doc(hidden)]
pub use pool::hold_lock_while as hold_pool_lock_while;
pub(crate) use pool::page_size;
pub use zeroable::Zeroable;

/// The stride of pooled items: the bytes reserved per slot in a chunk (64 KiB, the
/// reference pool's default), or the page size if pages are larger. Items larger than
/// half of it get their own mapping with a larger stride; see [`PerCpu::stride`].
pub const DEFAULT_STRIDE: usize = 1 << 16;

/// How a per-CPU structure picks its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexBy {
    /// By the CPU number the thread runs on (`cpu_id`, [`crate::current_cpu`]).
    /// Simple and the same for every process on the CPU; slots of CPUs this process
    /// never runs on are never touched, so they cost nothing resident.
    Cpu,
    /// By the memory-map concurrency id (`mm_cid`, [`crate::current_mm_cid`], Linux
    /// 6.3+): compact ids in `0..min(threads, allowed CPUs)` among this process's
    /// threads running at the same time. Only the low slots are used, so memory is
    /// proportional to the process's concurrency, not to the CPU numbers it runs on.
    MmCid,
}

/// Why per-CPU storage could not be reserved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocError {
    size: usize,
    align: usize,
    slots: usize,
    cause: Cause,
}

/// The cause inside an [`AllocError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    /// Zero slots were asked for.
    NoSlots,
    /// `slots × stride` does not fit the address space.
    TooLarge,
    /// `mmap` failed with this errno.
    Os(i32),
}

impl AllocError {
    fn new<T>(slots: usize, cause: Cause) -> AllocError {
        AllocError {
            size: size_of::<T>(),
            align: align_of::<T>(),
            slots,
            cause,
        }
    }

    /// The `errno` of the failed `mmap`, when that was the cause.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self.cause {
            Cause::Os(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot reserve per-CPU storage for {} slots of {} bytes (align {}): ",
            self.slots, self.size, self.align
        )?;
        match self.cause {
            Cause::NoSlots => f.write_str("zero slots requested"),
            Cause::TooLarge => f.write_str("the reservation would overflow the address space"),
            Cause::Os(e) => write!(f, "mmap failed: {}", std::io::Error::from_raw_os_error(e)),
        }
    }
}

impl std::error::Error for AllocError {}

/// One `T` per CPU (or per mm_cid) in the strided layout described in the
/// [module docs](self): slot `i` at `base() + i * stride()`, every slot starting zeroed.
///
/// The storage itself only hands out addresses and references; what may be written
/// where, and by whom, is the business of the containers built on it (restartable
/// sequences write the current CPU's slot with plain stores, which behave like relaxed
/// atomic stores, so the slot types used with sequences are atomics or `UnsafeCell`s).
///
/// `PerCpu<T>` is `Send` when `T` is, and `Sync` when `T` is. Dropping it drops every
/// slot's value once (when `T` needs dropping: this reads every slot, mapping the zero
/// page for slots never written) and returns the space to the pool.
///
/// # Examples
/// ```
/// use core::sync::atomic::{AtomicI64, Ordering};
/// use restartable::percpu::storage::{IndexBy, PerCpu};
///
/// // 1,024 slots on any machine: only the slots used become resident.
/// let mut counts: PerCpu<AtomicI64> = PerCpu::with_slots(IndexBy::Cpu, 1024);
/// counts.get(3).store(5, Ordering::Relaxed);
/// *counts.get_mut(7).get_mut() -= 2;
/// let sum: i64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
/// assert_eq!(sum, 3);
/// ```
#[doc(alias = "rseq_mempool")]
#[doc(alias = "rseq_percpu_malloc")]
#[doc(alias = "rseq_percpu_ptr")]
pub struct PerCpu<T: Zeroable> {
    /// Slot 0 (the item's address in the first range).
    base: NonNull<T>,
    slots: usize,
    /// `stride == 1 << shift`.
    shift: u32,
    index: IndexBy,
    /// A mapping of its own (large items) rather than a place in a shared chunk.
    dedicated: bool,
    /// Owns `slots` values of `T`.
    _owns: PhantomData<T>,
}

// SAFETY: a `PerCpu<T>` owns its `T`s (like `Vec<T>`): moving it to another thread
// moves them, which is sound when `T: Send`. The pool it returns space to is global
// and locked.
unsafe impl<T: Zeroable + Send> Send for PerCpu<T> {}
// SAFETY: `&PerCpu<T>` gives only `&T` (and raw pointers whose use is `unsafe`), which
// may be shared between threads when `T: Sync`.
unsafe impl<T: Zeroable + Sync> Sync for PerCpu<T> {}

impl<T: Zeroable> PerCpu<T> {
    /// Storage with one zeroed slot per possible CPU ([`crate::possible_cpus`]), which
    /// bounds both CPU numbers and mm_cids.
    ///
    /// # Panics
    /// If the address space is exhausted (`mmap` fails); see [`try_new`](Self::try_new).
    pub fn new(index: IndexBy) -> PerCpu<T> {
        Self::with_slots(index, crate::possible_cpus())
    }

    /// Storage with `slots` zeroed slots. The containers built on it index it by CPU
    /// number or mm_cid, so `slots` must exceed every such index they can see;
    /// [`new`](Self::new) does that. Larger counts cost only address space (a test can
    /// ask for 1,024 slots on a 2-CPU machine).
    ///
    /// # Panics
    /// If `slots` is 0 or the reservation fails; see [`try_with_slots`](Self::try_with_slots).
    pub fn with_slots(index: IndexBy, slots: usize) -> PerCpu<T> {
        match Self::try_with_slots(index, slots) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`new`](Self::new), returning an error instead of panicking.
    ///
    /// # Errors
    /// When `mmap` fails (address space or map count exhausted).
    pub fn try_new(index: IndexBy) -> Result<PerCpu<T>, AllocError> {
        Self::try_with_slots(index, crate::possible_cpus())
    }

    /// Like [`with_slots`](Self::with_slots), returning an error instead of panicking.
    ///
    /// # Errors
    /// When `slots` is 0, when `slots × stride` overflows, or when `mmap` fails.
    pub fn try_with_slots(index: IndexBy, slots: usize) -> Result<PerCpu<T>, AllocError> {
        if slots == 0 {
            return Err(AllocError::new::<T>(slots, Cause::NoSlots));
        }
        let block = pool::alloc(size_of::<T>(), align_of::<T>(), slots).map_err(|e| match e {
            pool::Error::TooLarge => AllocError::new::<T>(slots, Cause::TooLarge),
            pool::Error::Os(errno) => AllocError::new::<T>(slots, Cause::Os(errno)),
        })?;
        Ok(PerCpu {
            base: block.base.cast(),
            slots,
            shift: block.shift,
            index,
            dedicated: block.dedicated,
            _owns: PhantomData,
        })
    }

    /// As [`try_new`](Self::try_new), without waiting for the pool's lock (the
    /// set-up of containers on first use): see `pool::alloc_nonblocking`.
    pub(crate) fn try_new_nonblocking(index: IndexBy) -> Result<PerCpu<T>, AllocError> {
        let slots = crate::possible_cpus();
        let block = pool::alloc_nonblocking(size_of::<T>(), align_of::<T>(), slots).map_err(
            |e| match e {
                pool::Error::TooLarge => AllocError::new::<T>(slots, Cause::TooLarge),
                pool::Error::Os(errno) => AllocError::new::<T>(slots, Cause::Os(errno)),
            },
        )?;
        Ok(PerCpu {
            base: block.base.cast(),
            slots,
            shift: block.shift,
            index,
            dedicated: block.dedicated,
            _owns: PhantomData,
        })
    }

    /// The number of slots.
    #[inline]
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// How the containers built on this storage pick a slot.
    #[inline]
    pub fn index(&self) -> IndexBy {
        self.index
    }

    /// The address of slot 0. Slot `i` is at `base() + (i << stride_shift())`.
    ///
    /// For pooled items the ranges start at multiples of the stride, so
    /// `base() % stride()` is the item's offset inside each slot's range.
    #[inline]
    pub fn base(&self) -> *mut u8 {
        self.base.as_ptr().cast()
    }

    /// The distance in bytes between two consecutive slots: a power of two, at least a
    /// page ([`DEFAULT_STRIDE`] for pooled items).
    #[inline]
    pub fn stride(&self) -> usize {
        1 << self.shift
    }

    /// `log2(stride())`: slot `i` is at `base() + (i << stride_shift())`.
    #[inline]
    pub fn stride_shift(&self) -> u32 {
        self.shift
    }

    /// The address of slot `i`: `base() + (i << stride_shift())`, one shift and one add.
    ///
    /// Computing it is always safe; `i` must be below [`slots`](Self::slots) for the
    /// pointer to be usable (checked in debug builds). Writing through it is the
    /// caller's business: it must not race other accesses to that slot, and must leave
    /// a valid `T`.
    #[inline]
    pub fn slot_ptr(&self, i: usize) -> *mut T {
        debug_assert!(
            i < self.slots,
            "slot {i} out of range ({} slots)",
            self.slots
        );
        self.base
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(i << self.shift)
            .cast::<T>()
    }

    /// Exclusive access to slot `i`.
    ///
    /// # Panics
    /// If `i >= self.slots()`.
    #[inline]
    pub fn get_mut(&mut self, i: usize) -> &mut T {
        self.check(i);
        // SAFETY: `i` is in range, so the slot is mapped, aligned and holds a valid
        // `T` (zeroed or written since); `&mut self` excludes every other access.
        unsafe { &mut *self.slot_ptr(i) }
    }

    /// Exclusive access to every slot, in slot order.
    pub fn iter_mut(&mut self) -> IterMut<'_, T> {
        IterMut {
            base: self.base.as_ptr().cast(),
            shift: self.shift,
            front: 0,
            back: self.slots,
            _slots: PhantomData,
        }
    }

    #[inline]
    #[track_caller]
    fn check(&self, i: usize) {
        assert!(
            i < self.slots,
            "slot {i} out of range ({} slots)",
            self.slots
        );
    }
}

impl<T: Zeroable + Sync> PerCpu<T> {
    /// Shared access to slot `i`.
    ///
    /// # Panics
    /// If `i >= self.slots()`.
    #[inline]
    pub fn get(&self, i: usize) -> &T {
        self.check(i);
        // SAFETY: `i` is in range, so the slot is mapped, aligned and holds a valid
        // `T`. Writers other than `get_mut` (excluded by this borrow) go through raw
        // pointers and only write slot types made for shared mutation.
        unsafe { &*self.slot_ptr(i) }
    }

    /// Shared access to every slot, in slot order (for aggregates such as a sum).
    ///
    /// Reading a slot that was never written maps the shared zero page: no new memory,
    /// but a page-table entry (see the [module docs](self)).
    pub fn iter(&self) -> Iter<'_, T> {
        Iter {
            storage: self,
            front: 0,
            back: self.slots,
        }
    }
}

impl<T: Zeroable> Drop for PerCpu<T> {
    fn drop(&mut self) {
        /// Drops the slots not dropped yet, then returns the space. If a destructor
        /// panics, unwinding drops the guard, which drops the remaining slots (a second
        /// panic aborts, as for `Vec`) and still returns the space.
        struct Finish<'a, T: Zeroable> {
            storage: &'a mut PerCpu<T>,
            next: usize,
        }
        impl<T: Zeroable> Finish<'_, T> {
            fn drop_slots(&mut self) {
                if !needs_drop::<T>() {
                    return;
                }
                while self.next < self.storage.slots {
                    let slot = self.storage.slot_ptr(self.next);
                    self.next += 1;
                    // SAFETY: the slot holds a valid `T` that nothing else can reach
                    // (the storage is being dropped), and `next` moved past it first,
                    // so it is dropped exactly once.
                    unsafe { ptr::drop_in_place(slot) };
                }
            }
        }
        impl<T: Zeroable> Drop for Finish<'_, T> {
            fn drop(&mut self) {
                self.drop_slots();
                let s = &*self.storage;
                // SAFETY: the block came from `pool::alloc` with this size and slot
                // count, and is returned once: every value in it is dropped
                // and nothing can reach it any more.
                unsafe { pool::free(s.base.cast(), size_of::<T>(), s.slots, s.shift, s.dedicated) };
            }
        }
        let mut finish = Finish {
            storage: self,
            next: 0,
        };
        finish.drop_slots();
    }
}

impl<T: Zeroable> fmt::Debug for PerCpu<T> {
    /// The layout (index mode, slot count, stride, base); not the values, since reading
    /// every slot would map every slot's page.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerCpu")
            .field("index", &self.index)
            .field("slots", &self.slots)
            .field("stride", &self.stride())
            .field("base", &self.base)
            .finish()
    }
}

impl<'a, T: Zeroable + Sync> IntoIterator for &'a PerCpu<T> {
    type Item = &'a T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<'a, T: Zeroable> IntoIterator for &'a mut PerCpu<T> {
    type Item = &'a mut T;
    type IntoIter = IterMut<'a, T>;
    fn into_iter(self) -> IterMut<'a, T> {
        self.iter_mut()
    }
}

/// Shared references to every slot of a [`PerCpu`], from [`PerCpu::iter`].
#[derive(Debug)]
pub struct Iter<'a, T: Zeroable + Sync> {
    storage: &'a PerCpu<T>,
    front: usize,
    back: usize,
}

impl<T: Zeroable + Sync> Clone for Iter<'_, T> {
    fn clone(&self) -> Self {
        Iter { ..*self }
    }
}

impl<'a, T: Zeroable + Sync> Iterator for Iter<'a, T> {
    type Item = &'a T;

    #[inline]
    fn next(&mut self) -> Option<&'a T> {
        if self.front == self.back {
            return None;
        }
        let i = self.front;
        self.front += 1;
        // SAFETY: `i < back <= slots`: the slot is mapped, aligned and valid, and is
        // shared like in `PerCpu::get` for as long as the storage is borrowed.
        Some(unsafe { &*self.storage.slot_ptr(i) })
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.back - self.front;
        (n, Some(n))
    }
}

impl<T: Zeroable + Sync> DoubleEndedIterator for Iter<'_, T> {
    #[inline]
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.front == self.back {
            return None;
        }
        self.back -= 1;
        // SAFETY: as in `next`: `back < slots` after the decrement.
        Some(unsafe { &*self.storage.slot_ptr(self.back) })
    }
}

impl<T: Zeroable + Sync> ExactSizeIterator for Iter<'_, T> {}
impl<T: Zeroable + Sync> FusedIterator for Iter<'_, T> {}

/// Exclusive references to every slot of a [`PerCpu`], from [`PerCpu::iter_mut`].
#[derive(Debug)]
pub struct IterMut<'a, T: Zeroable> {
    base: *mut u8,
    shift: u32,
    front: usize,
    back: usize,
    _slots: PhantomData<&'a mut T>,
}

// SAFETY: an `IterMut` is a `&mut` to the storage split into `&mut T`s: sending it
// sends those, which is sound when `T: Send`.
unsafe impl<T: Zeroable + Send> Send for IterMut<'_, T> {}
// SAFETY: `&IterMut` gives access to nothing but its counters.
unsafe impl<T: Zeroable + Sync> Sync for IterMut<'_, T> {}

impl<'a, T: Zeroable> Iterator for IterMut<'a, T> {
    type Item = &'a mut T;

    #[inline]
    fn next(&mut self) -> Option<&'a mut T> {
        if self.front == self.back {
            return None;
        }
        let i = self.front;
        self.front += 1;
        // SAFETY: `i < slots`, so the slot is mapped, aligned and valid; each index is
        // yielded once, and the storage stays mutably borrowed for `'a`, so the
        // references are exclusive.
        Some(unsafe { &mut *self.base.wrapping_add(i << self.shift).cast::<T>() })
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.back - self.front;
        (n, Some(n))
    }
}

impl<T: Zeroable> DoubleEndedIterator for IterMut<'_, T> {
    #[inline]
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.front == self.back {
            return None;
        }
        self.back -= 1;
        // SAFETY: as in `next`.
        Some(unsafe { &mut *self.base.wrapping_add(self.back << self.shift).cast::<T>() })
    }
}

impl<T: Zeroable> ExactSizeIterator for IterMut<'_, T> {}
impl<T: Zeroable> FusedIterator for IterMut<'_, T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn zeroed_and_strided() {
        let p: PerCpu<AtomicU64> = PerCpu::new(IndexBy::Cpu);
        assert_eq!(p.slots(), crate::possible_cpus());
        assert_eq!(p.stride(), 1 << p.stride_shift());
        assert!(p.stride() >= DEFAULT_STRIDE);
        for i in 0..p.slots() {
            assert_eq!(p.get(i).load(Ordering::Relaxed), 0);
            assert_eq!(p.slot_ptr(i) as usize, p.base() as usize + i * p.stride());
        }
    }

    #[test]
    fn errors() {
        let e = PerCpu::<u64>::try_with_slots(IndexBy::Cpu, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), None);
        assert!(e.to_string().contains("zero slots"), "{e}");
        let e = PerCpu::<u64>::try_with_slots(IndexBy::Cpu, usize::MAX / 2).unwrap_err();
        assert!(e.to_string().contains("overflow"), "{e}");
    }

    #[test]
    fn iterators_are_exact_and_double_ended() {
        let mut p: PerCpu<u32> = PerCpu::with_slots(IndexBy::MmCid, 5);
        for (i, v) in p.iter_mut().enumerate() {
            *v = i as u32;
        }
        assert_eq!(p.iter().len(), 5);
        assert_eq!(p.iter().rev().copied().collect::<Vec<_>>(), [4, 3, 2, 1, 0]);
        let mut it = p.iter_mut();
        assert_eq!(it.next_back().map(|v| *v), Some(4));
        assert_eq!(it.len(), 4);
        assert_eq!(p.index(), IndexBy::MmCid);
    }
}
