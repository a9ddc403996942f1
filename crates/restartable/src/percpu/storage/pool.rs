//! The process-global pool behind [`PerCpu`](super::PerCpu): chunks of `slots ×
//! stride` bytes, one family of chunks per slot count, items placed by a first-fit
//! bitmap of 8-byte units, and the reset of freed items to zero without making every
//! slot's page resident. Everything here runs under one mutex, on the cold path
//! (construction and drop); the per-CPU fast path never comes here.

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use super::DEFAULT_STRIDE;

/// Allocation granule inside a range: every item is 8-byte aligned and sized.
const UNIT: usize = 8;

/// Why a block could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Error {
    /// `slots × stride` (or the item's size) does not fit the address space.
    TooLarge,
    /// `mmap` failed with this errno.
    Os(i32),
}

/// An item's place: slot `i` at `base + (i << shift)`.
pub(super) struct Block {
    pub(super) base: NonNull<u8>,
    pub(super) shift: u32,
    /// Its own mapping (unmapped on free) rather than a place in a chunk.
    pub(super) dedicated: bool,
}

/// The page size, a power of two.
/// Async-signal-safe (as everything [`alloc_nonblocking`] calls).
pub(crate) fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let cached = PAGE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    // SAFETY: sysconf has no preconditions (the page size comes from the auxiliary
    // vector: no lock, no allocation).
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let n = if n > 0 && (n as usize).is_power_of_two() {
        n as usize
    } else {
        4096
    };
    PAGE.store(n, Ordering::Relaxed);
    n
}

/// The stride of pooled items: [`DEFAULT_STRIDE`], or the page if pages are larger.
pub(super) fn pool_stride() -> usize {
    DEFAULT_STRIDE.max(page_size())
}

/// The size of a PMD-mapped transparent huge page (2 MiB on x86_64).
/// Async-signal-safe: the file is read into a buffer on the stack.
fn huge_page_size() -> usize {
    static HUGE: AtomicUsize = AtomicUsize::new(0);
    let cached = HUGE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    let mut buf = [0u8; 64];
    let n = crate::sys::read_small_file(
        c"/sys/kernel/mm/transparent_hugepage/hpage_pmd_size",
        &mut buf,
    )
    .and_then(|s| s.trim().parse::<usize>().ok())
    .filter(|n| n.is_power_of_two())
    .unwrap_or(2 << 20);
    HUGE.store(n, Ordering::Relaxed);
    n
}

/// Units of a range, and words of a chunk's bitmap (chunks exist only when the
/// stride is [`DEFAULT_STRIDE`]; with larger pages every item is unpooled).
const RANGE_UNITS: usize = DEFAULT_STRIDE / UNIT;
const BITMAP_WORDS: usize = RANGE_UNITS / 64;
/// Families the bookkeeping holds (one per distinct slot count: a few in practice).
const MAX_FAMILIES: usize = 64;
/// Chunks per family: 1024 × 64 KiB of items per CPU before items go unpooled.
const MAX_CHUNKS: usize = 1024;

/// The pool's state, behind [`STATE`]. Its bookkeeping lives in [`MapVec`]s, never
/// in `malloc`ed memory: a container's first use may place its storage from a signal
/// handler that interrupted `malloc` on the same thread (see [`alloc_nonblocking`]).
struct State {
    families: MapVec<Family, MAX_FAMILIES>,
    /// `/proc/self/pagemap`, opened on first need, with the pid that opened it (a
    /// forked child must reopen it: the file is bound to the opener's memory map).
    pagemap: Option<(u32, Option<File>)>,
}

/// The chunks of one slot count.
struct Family {
    slots: usize,
    chunks: MapVec<Chunk, MAX_CHUNKS>,
}

/// One reservation of `slots × stride` bytes, aligned to the stride.
struct Chunk {
    base: NonNull<u8>,
    /// One bit per 8-byte unit of a range: set while a live item uses it.
    bits: [u64; BITMAP_WORDS],
    /// Units in use.
    used: usize,
    /// No unit below this one is free.
    hint: usize,
}

// SAFETY: a chunk is the pool's bookkeeping for a mapping: its pointer is only an
// address used under the pool's mutex to hand out and reset items, not shared data.
unsafe impl Send for Chunk {}

/// A growable array of at most `CAP` items in an anonymous mapping of its own,
/// reserved on the first push: growing it calls `mmap` at most once and never
/// `malloc`, and the reservation's untouched pages cost no memory. A push beyond
/// `CAP`, or whose mapping fails, hands the item back.
struct MapVec<T, const CAP: usize> {
    /// The mapping (`CAP` items), null until the first push.
    ptr: *mut T,
    /// Items `0..len` are initialized.
    len: usize,
}

// SAFETY: the array owns its items, as a `Vec` does.
unsafe impl<T: Send, const CAP: usize> Send for MapVec<T, CAP> {}

impl<T, const CAP: usize> MapVec<T, CAP> {
    const BYTES: usize = {
        assert!(CAP > 0 && size_of::<T>() > 0);
        CAP * size_of::<T>()
    };

    const fn new() -> Self {
        MapVec {
            ptr: ptr::null_mut(),
            len: 0,
        }
    }

    fn push(&mut self, v: T) -> Result<&mut T, T> {
        if self.len == CAP {
            return Err(v);
        }
        if self.ptr.is_null() {
            // SAFETY: an anonymous mapping at an address of the kernel's choosing
            // affects no existing memory; page alignment covers `T`'s.
            let p = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    Self::BYTES,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(v);
            }
            self.ptr = p.cast();
        }
        // SAFETY: `len < CAP`: inside the mapping, past the initialized items.
        let slot = unsafe { self.ptr.add(self.len) };
        // SAFETY: as above; the slot holds no item (nothing is overwritten).
        unsafe { slot.write(v) };
        self.len += 1;
        // SAFETY: just initialized; borrowed through `&mut self`.
        Ok(unsafe { &mut *slot })
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        if self.ptr.is_null() {
            return &mut [];
        }
        // SAFETY: items `0..len` of the mapping are initialized and owned by `self`.
        unsafe { core::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Removes item `i`, replacing it with the last one.
    fn swap_remove(&mut self, i: usize) -> T {
        assert!(i < self.len, "MapVec::swap_remove out of bounds");
        let last = self.len - 1;
        // SAFETY: `i` and `last` are initialized items; the last one is moved into
        // `i`'s place (after `i`'s is read out) and no longer counted.
        unsafe {
            let v = self.ptr.add(i).read();
            if i != last {
                self.ptr.add(i).write(self.ptr.add(last).read());
            }
            self.len = last;
            v
        }
    }
}

impl<T, const CAP: usize> Drop for MapVec<T, CAP> {
    fn drop(&mut self) {
        if self.ptr.is_null() {
            return;
        }
        // SAFETY: drops the initialized items once, then unmaps the reservation that
        // `push` mapped (`BYTES` bytes); nothing refers to either afterwards.
        unsafe {
            ptr::drop_in_place(self.as_mut_slice());
            libc::munmap(self.ptr.cast(), Self::BYTES);
        }
    }
}

static STATE: Mutex<State> = Mutex::new(State {
    families: MapVec::new(),
    pagemap: None,
});

fn state() -> MutexGuard<'static, State> {
    // The state is consistent between statements that can panic, so a panic elsewhere
    // while holding the lock does not make it unusable.
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reserves one item of `size` bytes aligned to `align` (a power of two) in each of
/// `slots` (at least 1) ranges, every byte zero.
pub(super) fn alloc(size: usize, align: usize, slots: usize) -> Result<Block, Error> {
    if let Some(block) = outside_chunks(size, align, slots) {
        return block;
    }
    alloc_in(&mut state(), size, align, slots)
}

/// The item's own mapping where it cannot share a chunk (before the pool's lock is
/// taken): too large or too aligned for one (a dedicated stride), or pages larger
/// than [`DEFAULT_STRIDE`] (the pool's stride, unpooled); `None` where it can.
fn outside_chunks(size: usize, align: usize, slots: usize) -> Option<Result<Block, Error>> {
    debug_assert!(slots > 0 && align.is_power_of_two());
    let stride = pool_stride();
    if size.max(1) > stride / 2 || align > stride / 2 {
        return Some(alloc_dedicated(size.max(1), align, slots));
    }
    if stride > DEFAULT_STRIDE {
        return Some(alloc_unpooled(slots, stride));
    }
    None
}

/// The pooled part of [`alloc`], with the pool locked.
fn alloc_in(state: &mut State, size: usize, align: usize, slots: usize) -> Result<Block, Error> {
    let stride = pool_stride();
    let size = size.max(1);
    let chunk_len = reservation(slots, stride)?;
    let units = size.div_ceil(UNIT);
    let align_units = align.max(UNIT) / UNIT;
    let shift = stride.trailing_zeros();

    let i = state
        .families
        .as_mut_slice()
        .iter()
        .position(|f| f.slots == slots);
    let family = match i {
        Some(i) => &mut state.families.as_mut_slice()[i],
        None => match state.families.push(Family {
            slots,
            chunks: MapVec::new(),
        }) {
            Ok(f) => f,
            Err(_) => return alloc_unpooled(slots, stride),
        },
    };
    let range_units = stride / UNIT;
    debug_assert_eq!(range_units, RANGE_UNITS);
    for chunk in family.chunks.as_mut_slice() {
        if range_units - chunk.used < units {
            continue;
        }
        if let Some(u) = find_run(&chunk.bits, chunk.hint, range_units, units, align_units) {
            return Ok(Block {
                base: chunk.take(u, units),
                shift,
                dedicated: false,
            });
        }
    }
    let base = map(chunk_len, stride, stride)?;
    let chunk = Chunk {
        base,
        bits: [0; BITMAP_WORDS],
        used: 0,
        hint: 0,
    };
    match family.chunks.push(chunk) {
        Ok(chunk) => Ok(Block {
            base: chunk.take(0, units),
            shift,
            dedicated: false,
        }),
        Err(chunk) => {
            // The bookkeeping is full: the fresh chunk becomes this item's own
            // mapping (same stride, same layout), unmapped when freed.
            debug_assert_eq!(chunk.used, 0);
            Ok(Block {
                base: chunk.base,
                shift,
                dedicated: true,
            })
        }
    }
}

/// As [`alloc`], without waiting for the pool's lock, so that a container can be set
/// up on first use inside a signal handler that interrupted this thread inside the
/// pool, or in a child forked while another thread held the pool's lock (which stays
/// locked in the child forever). When the lock is free the item is placed as by
/// [`alloc`]; when it is held, the item gets a mapping of its own with the pool's
/// stride (the same layout, and the constant stride the containers use), unmapped
/// when freed. Nothing here calls `malloc` (the bookkeeping grows in its own
/// mappings): async-signal-safe, so a first use inside a signal handler that
/// interrupted `malloc` on the same thread does not block.
pub(super) fn alloc_nonblocking(size: usize, align: usize, slots: usize) -> Result<Block, Error> {
    if let Some(block) = outside_chunks(size, align, slots) {
        return block;
    }
    match STATE.try_lock() {
        Ok(mut g) => alloc_in(&mut g, size, align, slots),
        Err(TryLockError::Poisoned(e)) => alloc_in(&mut e.into_inner(), size, align, slots),
        Err(TryLockError::WouldBlock) => alloc_unpooled(slots, pool_stride()),
    }
}

/// An item with a mapping of its own but the pool's stride (`stride`) and layout:
/// when the pool's lock is held elsewhere, its bookkeeping is full, or pages are
/// larger than [`DEFAULT_STRIDE`]. Unmapped when freed (`dedicated`).
fn alloc_unpooled(slots: usize, stride: usize) -> Result<Block, Error> {
    let len = reservation(slots, stride)?;
    let base = map(len, stride, stride)?;
    Ok(Block {
        base,
        shift: stride.trailing_zeros(),
        dedicated: true,
    })
}

/// Holds the pool's lock while `f` runs (tests: a set-up on first use must not wait
/// for it, in a signal handler of this thread or in a forked child).
#[doc(hidden)]
pub fn hold_lock_while<R>(f: impl FnOnce() -> R) -> R {
    let _g = state();
    f()
}

/// An item too large (or too aligned) to share a chunk: its own mapping, with a
/// stride of its size rounded up to a power-of-two number of pages.
fn alloc_dedicated(size: usize, align: usize, slots: usize) -> Result<Block, Error> {
    let page = page_size();
    let stride = size
        .checked_next_power_of_two()
        .ok_or(Error::TooLarge)?
        .max(page)
        .max(align);
    let len = reservation(slots, stride)?;
    let base = map(len, stride, align.max(page))?;
    Ok(Block {
        base,
        shift: stride.trailing_zeros(),
        dedicated: true,
    })
}

/// `slots × stride`, if it fits a Rust allocation.
fn reservation(slots: usize, stride: usize) -> Result<usize, Error> {
    slots
        .checked_mul(stride)
        .filter(|&n| n <= isize::MAX as usize / 2)
        .ok_or(Error::TooLarge)
}

/// Returns an item to the pool: unmaps a dedicated mapping; in a chunk, frees its
/// units and makes its bytes zero again in every range (see the module docs of
/// `storage` for how, without making untouched pages resident).
///
/// # Safety
/// `base` must come from [`alloc`] with this `size` and `slots`, with the
/// `shift` and `dedicated` of that block, and must not be used afterwards. Every value
/// stored in the item must already be dropped, and nothing may access it any more.
pub(super) unsafe fn free(
    base: NonNull<u8>,
    size: usize,
    slots: usize,
    shift: u32,
    dedicated: bool,
) {
    let stride = 1usize << shift;
    if dedicated {
        // SAFETY: the block is the whole mapping `map` returned (`slots << shift`
        // bytes at `base`), and nothing uses it any more (the caller's promise).
        unsafe { libc::munmap(base.as_ptr().cast(), slots << shift) };
        return;
    }
    let units = size.max(1).div_ceil(UNIT);
    let addr = base.as_ptr() as usize;
    let chunk_addr = addr & !(stride - 1);
    let off = addr - chunk_addr;

    let mut state = state();
    let State { families, pagemap } = &mut *state;
    let Some(family) = families
        .as_mut_slice()
        .iter_mut()
        .find(|f| f.slots == slots)
    else {
        debug_assert!(
            false,
            "per-CPU item freed to a pool that has no such family"
        );
        return;
    };
    let Some(ci) = family
        .chunks
        .as_mut_slice()
        .iter()
        .position(|c| c.base.as_ptr() as usize == chunk_addr)
    else {
        debug_assert!(false, "per-CPU item freed to a pool that has no such chunk");
        return;
    };
    let chunk_len = slots * stride;
    let others = family.chunks.len() > 1;
    let chunk = &mut family.chunks.as_mut_slice()[ci];
    chunk.give_back(off / UNIT, units);

    if chunk.used == 0 {
        if others {
            let chunk = family.chunks.swap_remove(ci);
            // SAFETY: the chunk is a whole mapping of `chunk_len` bytes from `map`
            // with no live item in it.
            unsafe { libc::munmap(chunk.base.as_ptr().cast(), chunk_len) };
            return;
        }
        // Keep the last chunk reserved, but give all its memory back: afterwards it
        // reads as zero everywhere.
        // SAFETY: the chunk is a mapping of `chunk_len` bytes with no live item, and
        // the mutex keeps anyone from placing one there meanwhile.
        let r =
            unsafe { libc::madvise(chunk.base.as_ptr().cast(), chunk_len, libc::MADV_DONTNEED) };
        if r == 0 {
            return;
        }
    }
    let pagemap = pagemap_file(pagemap);
    // SAFETY: the item (`units` units at `off` in every range of this chunk) is no
    // longer used by anyone (the caller's promise) and the mutex is held.
    unsafe { reset(chunk, slots, stride, off, units * UNIT, pagemap) };
}

/// `/proc/self/pagemap`, opened by this process (reopened after a fork); `None` when
/// it cannot be opened.
fn pagemap_file(slot: &mut Option<(u32, Option<File>)>) -> Option<&File> {
    let pid = std::process::id();
    if !matches!(slot, Some((p, _)) if *p == pid) {
        *slot = Some((pid, File::open("/proc/self/pagemap").ok()));
    }
    slot.as_ref().and_then(|(_, f)| f.as_ref())
}

/// What a page of a range may hold, from its pagemap entry or `PAGEMAP_SCAN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Page {
    /// No page table entry (never touched, or released), or the zero page (as told
    /// by `PAGEMAP_SCAN`): reads as zero.
    Absent,
    /// Backed by a page private to this process (present and exclusively mapped, or
    /// swapped out).
    Private,
    /// Present but maybe shared (pagemap entries do not tell the zero page from a
    /// page shared with a forked process), or unknown (pagemap unreadable).
    Shared,
}

impl Page {
    /// Classifies a `/proc/pid/pagemap` entry (see `proc(5)`).
    fn from_entry(e: u64) -> Page {
        const PRESENT: u64 = 1 << 63;
        const SWAPPED: u64 = 1 << 62;
        const EXCLUSIVE: u64 = 1 << 56;
        if e & SWAPPED != 0 || (e & PRESENT != 0 && e & EXCLUSIVE != 0) {
            Page::Private
        } else if e & PRESENT != 0 {
            Page::Shared
        } else {
            Page::Absent
        }
    }
}

/// Reads pagemap entries for increasing page numbers below `end`, a window at a time.
struct Entries<'f> {
    file: Option<&'f File>,
    buf: Vec<u64>,
    /// Page number of `buf[0]`.
    first: usize,
    /// No page at or after this one is asked for.
    end: usize,
}

impl Entries<'_> {
    const WINDOW: usize = 4096;

    fn page(&mut self, vpn: usize) -> Page {
        debug_assert!(vpn < self.end);
        let Some(file) = self.file else {
            return Page::Shared;
        };
        if vpn < self.first || vpn >= self.first + self.buf.len() {
            let n = Self::WINDOW.min(self.end - vpn);
            self.buf.clear();
            self.buf.resize(n, 0);
            // SAFETY: a `[u64]` may be viewed as its bytes, and any bytes are valid u64s.
            let bytes = unsafe {
                core::slice::from_raw_parts_mut(self.buf.as_mut_ptr().cast::<u8>(), n * 8)
            };
            match file.read_at(bytes, (vpn as u64) * 8) {
                Ok(n) if n >= 8 => {
                    self.buf.truncate(n / 8);
                    self.first = vpn;
                }
                _ => {
                    self.buf.clear();
                    return Page::Shared;
                }
            }
        }
        Page::from_entry(self.buf[vpn - self.first])
    }
}

/// Makes the `len` bytes at `off` of every range of `chunk` zero, touching only pages
/// that are already there.
///
/// # Safety
/// Those bytes must belong to no live item (nobody accesses them), and the caller
/// must hold the pool's mutex (so no item is placed in a page released here).
unsafe fn reset(
    chunk: &Chunk,
    slots: usize,
    stride: usize,
    off: usize,
    len: usize,
    pagemap: Option<&File>,
) {
    let page = page_size();
    let first_page = off / page;
    let last_page = (off + len - 1) / page;
    // Pages of the range that no live item uses any more can be released whole.
    let unused: Vec<bool> = (first_page..=last_page)
        .map(|p| {
            let (lo, hi) = (p * page / UNIT, (p + 1) * page / UNIT);
            next_one(&chunk.bits, lo, hi) == hi
        })
        .collect();
    let base = chunk.base.as_ptr();
    let mut visit = |s: usize, p: usize, state: Page| {
        if state == Page::Absent {
            return;
        }
        let page_off = s * stride + p * page;
        if unused[p - first_page] {
            // SAFETY: this page of this range holds no live item (and the mutex keeps
            // new ones out), so dropping its contents loses nothing; it reads as zero
            // afterwards.
            let r = unsafe { libc::madvise(base.add(page_off).cast(), page, libc::MADV_DONTNEED) };
            if r == 0 {
                return;
            }
        }
        let lo = off.max(p * page);
        let hi = (off + len).min((p + 1) * page);
        // SAFETY: `lo..hi` lies in range `s` of the chunk's mapping, 8-byte aligned and
        // sized, and belongs to no live item (the caller's promise).
        unsafe { clear(base.add(s * stride + lo), hi - lo, state) };
    };
    let window = Window {
        chunk: base as usize,
        stride,
        page,
        first_page,
        last_page,
        slots,
    };
    #[cfg(test)]
    let pagemap_scan = !tests::READ_ENTRIES.with(|r| r.get());
    #[cfg(not(test))]
    let pagemap_scan = true;
    if let (Some(file), true) = (pagemap, pagemap_scan) {
        if scan(file, &window, &mut visit) {
            return;
        }
    }
    let mut entries = Entries {
        file: pagemap,
        buf: Vec::new(),
        first: 0,
        end: window.end() / page,
    };
    for s in 0..slots {
        for p in first_page..=last_page {
            let vpn = (window.chunk + s * stride + p * page) / page;
            visit(s, p, entries.page(vpn));
        }
    }
}

/// The pages `first_page..=last_page` of each of the `slots` ranges of a chunk.
struct Window {
    chunk: usize,
    stride: usize,
    page: usize,
    first_page: usize,
    last_page: usize,
    slots: usize,
}

impl Window {
    /// The first page's address.
    fn start(&self) -> usize {
        self.chunk + self.first_page * self.page
    }

    /// The end of the last range's last page.
    fn end(&self) -> usize {
        self.chunk + (self.slots - 1) * self.stride + (self.last_page + 1) * self.page
    }

    /// Calls `f(slot, page, state)` for each page of the window in `start..end`.
    fn each(&self, start: usize, end: usize, state: Page, f: &mut impl FnMut(usize, usize, Page)) {
        let mut a = start;
        while a < end {
            let rel = a - self.chunk;
            let (s, p) = (rel / self.stride, rel % self.stride / self.page);
            if p < self.first_page {
                a = self.chunk + s * self.stride + self.first_page * self.page;
            } else if p > self.last_page {
                a = self.chunk + (s + 1) * self.stride + self.first_page * self.page;
            } else {
                f(s, p, state);
                a += self.page;
            }
        }
    }
}

/// `struct pm_scan_arg` of `<linux/fs.h>` (Linux 6.7+).
#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `struct page_region` of `<linux/fs.h>`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: u64 =
    3 << 30 | (core::mem::size_of::<PmScanArg>() as u64) << 16 | (b'f' as u64) << 8 | 16;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;
const PAGE_IS_PFNZERO: u64 = 1 << 5;
const _: () = assert!(core::mem::size_of::<PmScanArg>() == 96 && PAGEMAP_SCAN == 0xC060_6610);

/// Visits the window's pages that are present or swapped, with the `PAGEMAP_SCAN`
/// ioctl: one call returns only the populated regions, so the cost follows the pages
/// resident, not the slots. Pages mapping the zero page count as absent. Returns
/// false if the ioctl is not supported (before Linux 6.7), having visited nothing.
fn scan(file: &File, w: &Window, f: &mut impl FnMut(usize, usize, Page)) -> bool {
    use core::sync::atomic::{AtomicBool, Ordering};
    use std::os::fd::AsRawFd;
    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return false;
    }
    let mut regions = [PageRegion::default(); 64];
    let (mut start, end) = (w.start(), w.end());
    let mut first = true;
    while start < end {
        let mut arg = PmScanArg {
            size: core::mem::size_of::<PmScanArg>() as u64,
            flags: 0,
            start: start as u64,
            end: end as u64,
            walk_end: 0,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            max_pages: 0,
            category_inverted: 0,
            category_mask: 0,
            category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            return_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_PFNZERO,
        };
        // SAFETY: `arg` is a valid `pm_scan_arg` whose `vec` points to `vec_len`
        // writable regions; the kernel only reads our page tables and writes those.
        let n = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                PAGEMAP_SCAN as _,
                &mut arg as *mut PmScanArg,
            )
        };
        if n < 0 {
            if first {
                UNSUPPORTED.store(true, Ordering::Relaxed);
            }
            // The caller reads the entries instead; visiting a page again is harmless
            // (releasing or clearing it twice has the effect of once).
            return false;
        }
        first = false;
        for r in &regions[..n as usize] {
            let state = if r.categories & PAGE_IS_SWAPPED != 0 {
                Page::Private
            } else if r.categories & PAGE_IS_PFNZERO != 0 {
                Page::Absent
            } else {
                Page::Private
            };
            w.each(r.start as usize, r.end as usize, state, f);
        }
        let walked = arg.walk_end as usize;
        if walked <= start {
            // No progress: let the caller read the entries instead.
            return false;
        }
        start = walked;
    }
    true
}

/// Zeroes `len` bytes at `p`: directly in a private page; in a page that may be the
/// shared zero page, only if some byte is not zero (a write would give the page its
/// own memory) or if that cannot be told.
///
/// # Safety
/// `p..p + len` must be mapped, writable, 8-byte aligned and sized, and accessed by
/// nobody else.
unsafe fn clear(p: *mut u8, len: usize, state: Page) {
    if state == Page::Shared && any_nonzero(p, len) == Some(false) {
        return;
    }
    // SAFETY: mapped, writable and unused (the caller's promise).
    unsafe { ptr::write_bytes(p, 0, len) };
}

/// Whether any of the `len` bytes at `p` is not zero, without reading them as values
/// of this program: they belong to no value any more and may be the padding of a
/// former one, which is uninitialized, and reading uninitialized bytes as integers is
/// undefined behaviour (volatile reads included). The kernel copies them into a
/// buffer of ours instead (`process_vm_readv` on this process: a read, so a page that
/// maps the shared zero page keeps mapping it), and the buffer's bytes, written by
/// the kernel, are initialized. `None` when the kernel refuses the copy (a seccomp
/// filter, say): then the caller cannot tell and writes the zeros.
fn any_nonzero(p: *const u8, len: usize) -> Option<bool> {
    let mut buf = [0u8; 4096];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len());
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: n,
        };
        let remote = libc::iovec {
            iov_base: p.wrapping_add(done).cast_mut().cast(),
            iov_len: n,
        };
        // SAFETY: `local` describes `n` writable bytes of `buf`; the kernel reads the
        // remote range of this process itself (mapped: the caller's promise of
        // `clear`) and writes only `local`.
        let r = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
        if r != n as isize {
            return None;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Some(true);
        }
        done += n;
    }
    Some(false)
}

/// Maps `len` bytes (read-write, private, anonymous, not reserved in swap) aligned to
/// `align`, marked not to use huge pages when `stride` is smaller than one.
fn map(len: usize, stride: usize, align: usize) -> Result<NonNull<u8>, Error> {
    let page = page_size();
    let extra = align.saturating_sub(page);
    let total = len.checked_add(extra).ok_or(Error::TooLarge)?;
    // SAFETY: an anonymous mapping at an address of the kernel's choosing affects no
    // existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            total,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Error::Os(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::ENOMEM),
        ));
    }
    let p = p.cast::<u8>();
    let addr = p as usize;
    let head = addr.next_multiple_of(align) - addr;
    let tail = total - head - len;
    // SAFETY: the head and tail are the parts of the fresh mapping outside the aligned
    // `len` bytes we keep; nothing else knows them.
    unsafe {
        if head > 0 {
            libc::munmap(p.cast(), head);
        }
        if tail > 0 {
            libc::munmap(p.add(head + len).cast(), tail);
        }
    }
    // SAFETY: `head < total`, inside the mapping.
    let base = unsafe { p.add(head) };
    if stride < huge_page_size() {
        // A huge page (or a multi-size THP folio) would span several slots' ranges or
        // make a whole range resident at once. Failure (no THP support) is harmless.
        // SAFETY: advice on our own fresh mapping.
        unsafe { libc::madvise(base.cast(), len, libc::MADV_NOHUGEPAGE) };
    }
    NonNull::new(base).ok_or(Error::Os(libc::ENOMEM))
}

impl Chunk {
    /// Marks `n` units at `u` used; returns their address in range 0.
    fn take(&mut self, u: usize, n: usize) -> NonNull<u8> {
        set_bits(&mut self.bits, u, u + n, true);
        self.used += n;
        if u <= self.hint {
            self.hint = next_zero(&self.bits, u + n, self.bits.len() * 64);
        }
        // SAFETY: `u * UNIT` is inside range 0 (the run was found in the bitmap of one
        // range), so adding it to the non-null base cannot wrap around to null.
        unsafe { NonNull::new_unchecked(self.base.as_ptr().wrapping_add(u * UNIT)) }
    }

    /// Marks `n` units at `u` free.
    fn give_back(&mut self, u: usize, n: usize) {
        debug_assert_eq!(next_zero(&self.bits, u, u + n), u + n, "double free");
        set_bits(&mut self.bits, u, u + n, false);
        self.used -= n;
        self.hint = self.hint.min(u);
    }
}

/// The first run of `n` clear bits starting at a multiple of `align`, at or after
/// `from`, ending at or before `limit`.
fn find_run(bits: &[u64], from: usize, limit: usize, n: usize, align: usize) -> Option<usize> {
    let mut i = from;
    loop {
        i = next_zero(bits, i, limit).next_multiple_of(align);
        if i.checked_add(n)? > limit {
            return None;
        }
        let j = next_one(bits, i, i + n);
        if j == i + n {
            return Some(i);
        }
        i = j;
    }
}

/// The first clear bit in `from..limit`, or `limit`.
fn next_zero(bits: &[u64], from: usize, limit: usize) -> usize {
    next_where(bits, from, limit, true)
}

/// The first set bit in `from..limit`, or `limit`.
fn next_one(bits: &[u64], from: usize, limit: usize) -> usize {
    next_where(bits, from, limit, false)
}

fn next_where(bits: &[u64], from: usize, limit: usize, invert: bool) -> usize {
    let mut i = from;
    while i < limit {
        let (w, b) = (i / 64, i % 64);
        let word = if invert { !bits[w] } else { bits[w] } >> b;
        if word != 0 {
            return (i + word.trailing_zeros() as usize).min(limit);
        }
        i = (w + 1) * 64;
    }
    limit
}

/// Sets (or clears) bits `lo..hi`.
fn set_bits(bits: &mut [u64], lo: usize, hi: usize, set: bool) {
    let mut i = lo;
    while i < hi {
        let (w, b) = (i / 64, i % 64);
        let n = (64 - b).min(hi - i);
        let mask = if n == 64 { !0 } else { ((1u64 << n) - 1) << b };
        if set {
            bits[w] |= mask;
        } else {
            bits[w] &= !mask;
        }
        i += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Makes `reset` on this thread read pagemap entries instead of `PAGEMAP_SCAN`.
        pub(super) static READ_ENTRIES: Cell<bool> = const { Cell::new(false) };
    }

    fn resident(addr: *mut u8) -> bool {
        let mut v = 0u8;
        // SAFETY: one page at a page-aligned address of our mapping; `v` receives one byte.
        let r = unsafe { libc::mincore(addr.cast(), page_size(), &mut v) };
        assert_eq!(r, 0);
        v & 1 != 0
    }

    /// A slot count for a test's own family (`k` tells the tests apart): above the
    /// possible CPUs' count, which every `PerCpu::new` of the library and of the other
    /// tests (run meanwhile on other threads) uses, and above the small counts they
    /// pick. (Sharing a family, `keep` below was not a fresh family's first item,
    /// and another test's item could take the run `b` must reuse.)
    fn own_slots(k: usize) -> usize {
        crate::possible_cpus() + 100 + k
    }

    /// Freed items read as zero when reused, pages that no item uses any more are
    /// released, and slots that were only read stay unbacked.
    fn free_resets(slots: usize, read_entries: bool) {
        READ_ENTRIES.with(|r| r.set(read_entries));
        let stride = pool_stride();
        let page = page_size();
        let slot = |b: &Block, i: usize| b.base.as_ptr().wrapping_add(i * stride);
        let keep = alloc(8, 8, slots).unwrap();
        let a = alloc(24, 8, slots).unwrap();
        let big = alloc(page, page, slots).unwrap();
        assert_eq!(keep.base.as_ptr() as usize % stride, 0, "a fresh family");
        assert_eq!(big.base.as_ptr() as usize % stride, page);
        // SAFETY: every access below stays inside the blocks, which nobody else uses.
        unsafe {
            for i in [0, 2] {
                ptr::write_bytes(slot(&a, i), 0xab, 24);
                ptr::write_bytes(slot(&big, i), 0xcd, page);
            }
            assert_eq!(ptr::read_volatile(slot(&a, 1)), 0);
            assert!(resident(slot(&big, 0)) && resident(slot(&big, 2)));
            free(a.base, 24, slots, a.shift, false);
            free(big.base, page, slots, big.shift, false);
            // Page 1 of each range held only `big`: released.
            assert!(!resident(slot(&big, 0)) && !resident(slot(&big, 2)));
            let b = alloc(24, 8, slots).unwrap();
            assert_eq!(b.base, a.base);
            for i in 0..slots {
                assert!((0..24).all(|k| *slot(&b, i).add(k) == 0), "slot {i}");
            }
            free(b.base, 24, slots, b.shift, false);
            free(keep.base, 8, slots, keep.shift, false);
        }
        READ_ENTRIES.with(|r| r.set(false));
    }

    #[test]
    fn free_resets_with_pagemap_scan() {
        free_resets(own_slots(3), false);
    }

    #[test]
    fn free_resets_reading_pagemap_entries() {
        free_resets(own_slots(4), true);
    }

    /// Set in the child process that runs
    /// [`freed_bytes_that_may_be_padding_are_not_read_as_integers`] under valgrind.
    #[cfg(target_arch = "x86_64")]
    const VALGRIND_CHILD: &str = "RESTARTABLE_POOL_VALGRIND_CHILD";
    #[cfg(target_arch = "x86_64")]
    const VALGRIND_MARKER: &str = "pool valgrind child: ok";

    /// `VALGRIND_MAKE_MEM_UNDEFINED(p, len)` of `<valgrind/memcheck.h>`: memcheck then
    /// treats those bytes as uninitialized, as a former value's padding is. Natively a
    /// no-op: the client-request sequence rotates `rdi` by 128 bits in all and swaps
    /// `rbx` with itself.
    #[cfg(target_arch = "x86_64")]
    fn make_mem_undefined(p: *const u8, len: usize) {
        memcheck_request(1, p, len);
    }

    /// `VALGRIND_MAKE_MEM_DEFINED(p, len)`: the inverse.
    #[cfg(target_arch = "x86_64")]
    fn make_mem_defined(p: *const u8, len: usize) {
        memcheck_request(2, p, len);
    }

    /// Memcheck's client request `VG_USERREQ_TOOL_BASE('M', 'C') + n` on `p..p + len`.
    #[cfg(target_arch = "x86_64")]
    fn memcheck_request(n: u64, p: *const u8, len: usize) {
        let request = (b'M' as u64) << 24 | (b'C' as u64) << 16 | n;
        let args: [u64; 6] = [request, p as u64, len as u64, 0, 0, 0];
        // SAFETY: valgrind's amd64 client-request sequence: natively every register
        // ends as it was (flags aside) and no memory is touched; under valgrind the
        // tool reads `args` (valid for the call) and answers in `rdx`.
        unsafe {
            core::arch::asm!(
                "rol rdi, 3",
                "rol rdi, 13",
                "rol rdi, 61",
                "rol rdi, 51",
                "xchg rbx, rbx",
                in("rax") args.as_ptr(),
                inout("rdx") 0u64 => _,
                options(nostack),
            );
        }
    }

    /// This page's `/proc/self/pagemap` entry, if the file can be read.
    #[cfg(target_arch = "x86_64")]
    fn pagemap_entry(addr: *const u8) -> Option<u64> {
        let mut e = [0u8; 8];
        let f = File::open("/proc/self/pagemap").ok()?;
        let at = (addr as usize / page_size() * 8) as u64;
        (f.read_at(&mut e, at).ok()? == 8).then(|| u64::from_ne_bytes(e))
    }

    /// A freed item's bytes in a page that maps the zero page (the slot was only
    /// read; pagemap entries show such a page as `Shared`) may be a former value's
    /// padding: `reset` must look at them without reading them as integers, and
    /// leave the page unbacked if they are zero. Natively: the page still maps the
    /// zero page after the free. Under valgrind's memcheck (a child process, with the
    /// bytes marked uninitialized as padding is): no error, which a read of those
    /// bytes as `u64`s compared with zero would be ("conditional jump depends on
    /// uninitialised value").
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn freed_bytes_that_may_be_padding_are_not_read_as_integers() {
        const NAME: &str =
            "percpu::storage::pool::tests::freed_bytes_that_may_be_padding_are_not_read_as_integers";
        let child = std::env::var_os(VALGRIND_CHILD).is_some();
        READ_ENTRIES.with(|r| r.set(true));
        // A family of its own.
        let slots = own_slots(7);
        let stride = pool_stride();
        let keep = alloc(8, 8, slots).unwrap();
        let a = alloc(64, 8, slots).unwrap();
        let only_read = a.base.as_ptr().wrapping_add(stride);
        // SAFETY: inside the block (slot 1 of `a`), which nobody else uses; fresh
        // anonymous memory reads as zero. The other slots are written.
        unsafe {
            assert_eq!(ptr::read_volatile(only_read.cast::<u64>()), 0);
            for i in [0, 2] {
                ptr::write_bytes(a.base.as_ptr().add(i * stride), 0xab, 64);
            }
        }
        let before = pagemap_entry(only_read).map(Page::from_entry);
        make_mem_undefined(only_read, 64);
        // SAFETY: `a` came from `alloc` with these arguments and is not used again.
        unsafe { free(a.base, 64, slots, a.shift, false) };
        let after = pagemap_entry(only_read).map(Page::from_entry);
        eprintln!("the only-read slot's page: {before:?} before the free, {after:?} after");
        if before == Some(Page::Shared) {
            assert_eq!(after, Some(Page::Shared), "the free wrote the zero page");
        }
        // The page is the zero page: its bytes are zero, as the checks below read.
        make_mem_defined(only_read, 64);
        // SAFETY: as above.
        unsafe {
            let b = alloc(64, 8, slots).unwrap();
            assert_eq!(b.base, a.base);
            for i in 0..slots {
                let s = b.base.as_ptr().add(i * stride);
                assert!((0..64).all(|k| *s.add(k) == 0), "slot {i} not reset");
            }
            free(b.base, 64, slots, b.shift, false);
            free(keep.base, 8, slots, keep.shift, false);
        }
        READ_ENTRIES.with(|r| r.set(false));
        if child {
            println!("{VALGRIND_MARKER}");
            return;
        }
        let valgrind = std::process::Command::new("valgrind")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !valgrind {
            eprintln!("notice: valgrind is not installed; the memcheck half is skipped");
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let mut c = std::process::Command::new("valgrind")
            .args(["-q", "--error-exitcode=99"])
            .arg(&exe)
            .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
            .env(VALGRIND_CHILD, "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn valgrind");
        // Drained while the child runs: memcheck's reports can fill a pipe.
        let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut v);
                }
                String::from_utf8_lossy(&v).into_owned()
            })
        };
        use std::io::Read;
        let stdout = drain(c.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
        let stderr = drain(c.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
        let limit = std::time::Duration::from_secs(300);
        let deadline = std::time::Instant::now() + limit;
        let status = loop {
            if let Some(status) = c.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() >= deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "the valgrind child still ran after {limit:?}: killed\n{}",
                    stderr.join().unwrap()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
        eprintln!("--- valgrind child: {status}\n{stdout}{stderr}---");
        assert!(
            status.success() && stdout.contains(VALGRIND_MARKER),
            "under valgrind: {status}\n--- stdout\n{stdout}--- stderr\n{stderr}"
        );
    }

    #[test]
    fn bit_scans() {
        let mut bits = vec![0u64; 4];
        assert_eq!(next_zero(&bits, 0, 256), 0);
        assert_eq!(next_one(&bits, 0, 256), 256);
        set_bits(&mut bits, 3, 130, true);
        assert_eq!(bits[0], !0b111);
        assert_eq!(bits[1], !0);
        assert_eq!(bits[2], 0b11);
        assert_eq!(next_zero(&bits, 3, 256), 130);
        assert_eq!(next_one(&bits, 0, 256), 3);
        assert_eq!(next_one(&bits, 130, 256), 256);
        assert_eq!(next_one(&bits, 0, 2), 2);
        set_bits(&mut bits, 64, 128, false);
        assert_eq!(bits[1], 0);
        assert_eq!(next_zero(&bits, 3, 256), 64);
    }

    #[test]
    fn runs_respect_alignment_and_limits() {
        let mut bits = vec![0u64; 2];
        assert_eq!(find_run(&bits, 0, 128, 1, 1), Some(0));
        set_bits(&mut bits, 0, 3, true);
        assert_eq!(find_run(&bits, 0, 128, 1, 1), Some(3));
        assert_eq!(find_run(&bits, 0, 128, 2, 4), Some(4));
        set_bits(&mut bits, 5, 6, true);
        assert_eq!(find_run(&bits, 0, 128, 2, 1), Some(3));
        assert_eq!(find_run(&bits, 0, 128, 3, 1), Some(6));
        assert_eq!(find_run(&bits, 0, 128, 4, 4), Some(8));
        assert_eq!(find_run(&bits, 0, 128, 128, 1), None);
        set_bits(&mut bits, 0, 128, true);
        assert_eq!(find_run(&bits, 0, 128, 1, 1), None);
        set_bits(&mut bits, 127, 128, false);
        assert_eq!(find_run(&bits, 0, 128, 1, 1), Some(127));
        assert_eq!(find_run(&bits, 0, 128, 2, 1), None);
    }

    #[test]
    fn chunk_hint_tracks_first_free() {
        let stride = pool_stride();
        let mut c = Chunk {
            base: NonNull::dangling(),
            bits: [0; BITMAP_WORDS],
            used: 0,
            hint: 0,
        };
        let limit = stride / UNIT;
        for i in 0..100 {
            let u = find_run(&c.bits, c.hint, limit, 1, 1).unwrap();
            assert_eq!(u, i);
            let _ = c.take(u, 1);
        }
        assert_eq!(c.hint, 100);
        c.give_back(42, 1);
        assert_eq!(c.hint, 42);
        assert_eq!(find_run(&c.bits, c.hint, limit, 1, 1), Some(42));
        assert_eq!(find_run(&c.bits, c.hint, limit, 2, 1), Some(100));
        assert_eq!(c.used, 99);
    }

    #[test]
    fn pagemap_entries() {
        assert_eq!(Page::from_entry(0), Page::Absent);
        assert_eq!(Page::from_entry(1 << 63), Page::Shared);
        assert_eq!(Page::from_entry(1 << 63 | 1 << 56), Page::Private);
        assert_eq!(Page::from_entry(1 << 62), Page::Private);
    }

    #[test]
    fn dedicated_strides() {
        let page = page_size();
        let b = alloc(pool_stride(), 8, 3).unwrap();
        assert!(b.dedicated);
        assert_eq!(1usize << b.shift, pool_stride());
        // SAFETY: fresh block, unused.
        unsafe { free(b.base, pool_stride(), 3, b.shift, true) };
        let b = alloc(pool_stride() + 1, 8, 2).unwrap();
        assert_eq!(1usize << b.shift, 2 * pool_stride());
        // SAFETY: fresh block, unused.
        unsafe { free(b.base, pool_stride() + 1, 2, b.shift, true) };
        let b = alloc(16, pool_stride(), 2).unwrap();
        assert!(b.dedicated);
        assert_eq!(b.base.as_ptr() as usize % pool_stride(), 0);
        assert!(1usize << b.shift >= pool_stride().max(page));
        // SAFETY: fresh block, unused.
        unsafe { free(b.base, 16, 2, b.shift, true) };
    }
}
