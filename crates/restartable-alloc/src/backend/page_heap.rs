//! The page heap: runs of pages for spans, from large regions mapped on demand.
//!
//! # Invariants
//! - Free runs sit in lists by length (1 to [`MAX_LISTED`] pages, and one list for
//!   longer runs), of three kinds apart: backed, released, and refused (backed runs
//!   whose release the kernel refused). A free run never touches another free run of
//!   the same kind: freeing merges with such neighbours.
//! - A request takes the shortest fitting run, backed (or refused) before released,
//!   and splits off
//!   the rest; when none fits, the current region's bump pointer moves, and when the
//!   region is exhausted a new one is mapped ([`REGION`] bytes, or just the request
//!   if that fails: close to an address-space limit we still serve what fits).
//! - When a mapping fails (out of address space: `RLIMIT_AS` counts mapped bytes,
//!   resident or not), every free run and the region's rest are unmapped
//!   ([`unmap_free`]) and the mapping is tried again, in one place (`map_with_room`):
//!   also when another thread unmapped them first. Every mapping of the allocator
//!   goes through it: regions, span-record chunks and page-map leaves here (the
//!   heap's lock held), large objects, the large map's leaves and the front-end's
//!   slots (`map_room`, without it).
//! - Backed free pages are kept up to [`BACKED_FREE_LIMIT`] (they make the next span
//!   cheap); past it, the longest backed runs are released until half of it is left.
//!   A run is marked released only if `madvise` succeeded: locked pages (`mlock`)
//!   are refused and keep their contents, so they stay backed, as refused runs
//!   (counted in `refused_free`, not in what the limit compares). Those are not tried
//!   again by the heap's own releases (each refusal costs a system call, and a
//!   process under `mlockall` would pay them on every free past the limit): only
//!   once taken again, or by an explicit release ([`release_keeping`]: `trim`,
//!   `release_memory`), which first makes them backed runs again.
//! - Span records come from record chunks mapped here and are recycled through a
//!   free list of records.
//! - Everything is guarded by one lock, taken after any central list's lock.

use core::ptr;

use super::{pagemap, Span, SpanList};
use crate::os;
use crate::size_class::{PAGE_SHIFT, PAGE_SIZE};
use crate::sync::{RawLock, SpinLock};

/// Runs up to this many pages have a list of their own.
pub const MAX_LISTED: usize = 128;
/// Bytes of address space reserved per region.
pub const REGION: usize = 64 << 20;
/// Backed free bytes kept for reuse before the heap gives pages back to the OS.
pub const BACKED_FREE_LIMIT: usize = 8 << 20;
const RECORD_CHUNK: usize = 256 << 10;
/// Runs the kernel may refuse to release (locked pages) in one release pass before
/// it gives up (each refusal costs a system call; the refused runs are not tried
/// again by later passes, only by an explicit release).
const REFUSALS: usize = 8;

/// Counters of the page heap, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeapStats {
    /// Regions and span-record chunks mapped (virtual).
    pub mapped: usize,
    /// Free pages that may hold memory (refused runs included).
    pub backed_free: usize,
    /// The part of `backed_free` in refused runs (the kernel refused their release:
    /// locked pages).
    pub refused_free: usize,
    /// Releases the kernel refused so far (a count of system calls).
    pub refusals: u64,
    /// Free pages given back to the OS or never touched (not resident).
    pub released_free: usize,
    /// Pages in spans of size classes.
    pub in_spans: usize,
    /// Region bytes not yet carved into spans (not resident).
    pub uncarved: usize,
    /// Total bytes ever released with `madvise` (a count of work done).
    pub released_total: u64,
}

/// The kinds of free runs (indices of `Heap::free`).
const BACKED: usize = 0;
const RELEASED: usize = 1;
const REFUSED: usize = 2;

struct Heap {
    /// `[backed, released, refused]` lists by pages ([`BACKED`], [`RELEASED`],
    /// [`REFUSED`]); index 0 holds runs longer than MAX_LISTED.
    free: [[SpanList; MAX_LISTED + 1]; 3],
    region_next: usize,
    region_end: usize,
    records: *mut Span,
    record_next: usize,
    record_end: usize,
    stats: HeapStats,
}

// SAFETY: the raw pointers are records and regions owned by the heap, used under its
// lock only.
unsafe impl Send for Heap {}

static HEAP: SpinLock<Heap> = SpinLock::new(Heap {
    free: [const { [const { SpanList::new() }; MAX_LISTED + 1] }; 3],
    region_next: 0,
    region_end: 0,
    records: ptr::null_mut(),
    record_next: 0,
    record_end: 0,
    stats: HeapStats {
        mapped: 0,
        backed_free: 0,
        refused_free: 0,
        refusals: 0,
        released_free: 0,
        in_spans: 0,
        uncarved: 0,
        released_total: 0,
    },
});

/// The heap's lock, for the fork handlers.
pub fn lock() -> &'static dyn RawLock {
    &HEAP
}

/// The heap's counters.
pub fn stats() -> HeapStats {
    HEAP.lock().stats
}

/// A span of `pages` pages for size class `class`, its pages recorded in the page
/// map; `None` when memory (or address space) is exhausted.
pub(crate) fn alloc_span(class: usize, pages: usize) -> Option<*mut Span> {
    let mut h = HEAP.lock();
    let s = h.take_run(pages)?;
    // SAFETY: `s` is a record the heap just took out of its lists: ours.
    unsafe {
        (*s).class = class;
        // A released run (or one never touched) reads as zero.
        (*s).fresh = (*s).released;
        (*s).released = false;
        (*s).refused = false;
        (*s).freelist = ptr::null_mut();
        (*s).carved = 0;
        (*s).allocated = 0;
        pagemap::set_small(&*s, s, class);
    }
    h.stats.in_spans += pages * PAGE_SIZE;
    Some(s)
}

/// Gives a span of a size class back: its pages become a free run.
///
/// # Safety
/// `s` came from [`alloc_span`], is in no list, and no object of it is in use or
/// cached anywhere.
pub(crate) unsafe fn free_span(s: *mut Span) {
    let mut h = HEAP.lock();
    // SAFETY: the caller gives the span up; the heap owns it now.
    unsafe {
        h.stats.in_spans -= (*s).bytes();
        pagemap::clear_small(&*s);
        (*s).class = 0;
        (*s).released = false;
        (*s).refused = false;
        h.insert_free(s);
    }
    if h.stats.backed_free - h.stats.refused_free > BACKED_FREE_LIMIT {
        h.release_down_to(BACKED_FREE_LIMIT / 2);
    }
}

/// Releases backed free pages to the OS (the longest runs first) until at most `keep`
/// backed free bytes remain (0: every one). Runs refused before are tried again.
pub fn release_keeping(keep: usize) {
    let mut h = HEAP.lock();
    h.retry_refused();
    h.release_down_to(keep);
}

/// Unmaps every free run (backed or released) and the current region's rest not
/// carved yet: their address space goes back to the OS. For a caller whose mapping
/// of `need` bytes failed: `RLIMIT_AS` counts mapped bytes, resident or not, so free
/// pages released with `madvise` still take up the limit, and a large object (its
/// own mapping) could never use them. Nothing when they are fewer than `need` bytes
/// (they could not make room for it: a request beyond any address space keeps the
/// heap's free pages). Returns the bytes unmapped.
pub fn unmap_free(need: usize) -> usize {
    HEAP.lock().unmap_free(need)
}

/// How many times one request maps again because another thread gave address space
/// back meanwhile (each time its own attempt failed and it had nothing to unmap).
const ROOM_RETRIES: usize = 8;

/// `map()` (a mapping of about `need` bytes), made room for: when it fails (out of
/// address space), the page heap's free runs are unmapped (`unmap_free`, which is
/// [`Heap::unmap_free`] with the heap's lock taken or already held) and it is tried
/// again. The one place where the allocator retries a mapping, for large objects and
/// regions alike.
///
/// Two threads may fail at once: the first unmaps the free runs and maps into the
/// room, the second finds nothing left to unmap. It maps again all the same when
/// address space was given back (by anyone: [`os::unmapped_generation`] moved) since
/// its own attempt began, at most [`ROOM_RETRIES`] times: a request fails only when
/// nothing was released since its last attempt (or other threads keep unmapping and
/// taking the room every time), never spins.
fn map_with_room<T>(
    need: usize,
    mut map: impl FnMut() -> Option<T>,
    mut unmap_free: impl FnMut(usize) -> usize,
) -> Option<T> {
    for _ in 0..ROOM_RETRIES {
        let generation = os::unmapped_generation();
        if let Some(r) = map() {
            return Some(r);
        }
        os::map_failed();
        // Ranges the kernel refused to unmap before (see `os::unmap`) go first:
        // each of them is tried (one still refused says nothing of the others).
        let deferred = os::retry_deferred(true);
        if unmap_free(need) == 0 && !deferred && os::unmapped_generation() == generation {
            return None;
        }
    }
    map()
}

/// [`map_with_room`] for a caller that does not hold the heap's lock (large objects,
/// the large map's leaves, the front-end's slots); under the lock, `Heap::map_room`.
pub(crate) fn map_room<T>(need: usize, map: impl FnMut() -> Option<T>) -> Option<T> {
    map_with_room(need, map, unmap_free)
}

impl Heap {
    /// The kind of a free run (which lists it sits in).
    ///
    /// # Safety
    /// `s` is a record of the heap.
    unsafe fn kind(s: *const Span) -> usize {
        // SAFETY: as documented.
        unsafe {
            if (*s).released {
                RELEASED
            } else if (*s).refused {
                REFUSED
            } else {
                BACKED
            }
        }
    }

    fn list_index(pages: usize) -> usize {
        if pages <= MAX_LISTED {
            pages
        } else {
            0
        }
    }

    /// A fresh record, or `None` if its chunk cannot be mapped.
    fn new_record(&mut self) -> Option<*mut Span> {
        let s = if !self.records.is_null() {
            let s = self.records;
            // SAFETY: recycled records are linked through `next`.
            self.records = unsafe { (*s).next };
            s
        } else {
            if self.record_next + core::mem::size_of::<Span>() > self.record_end {
                // Out of address space: the free runs' and the region's rest go back
                // first (a caller that holds a run out of the lists keeps it).
                let p = self.map_room(RECORD_CHUNK, || os::map(RECORD_CHUNK))? as usize;
                self.stats.mapped += RECORD_CHUNK;
                self.record_next = p;
                self.record_end = p + RECORD_CHUNK;
            }
            let s = self.record_next as *mut Span;
            self.record_next += core::mem::size_of::<Span>();
            s
        };
        // SAFETY: `s` is an unused, aligned record slot (chunks are page aligned and
        // records are carved at multiples of their size).
        unsafe { s.write(Span::EMPTY) };
        Some(s)
    }

    fn drop_record(&mut self, s: *mut Span) {
        // SAFETY: the record is no longer referenced by any list or live span (the
        // page map may still point to it from pages that another record now covers
        // at their ends; those entries are never read for interior pages).
        unsafe { (*s).next = self.records };
        self.records = s;
    }

    fn account_free(&mut self, s: &Span, sign: isize) {
        let b = s.bytes() as isize * sign;
        if s.released {
            self.stats.released_free = (self.stats.released_free as isize + b) as usize;
        } else {
            self.stats.backed_free = (self.stats.backed_free as isize + b) as usize;
            if s.refused {
                self.stats.refused_free = (self.stats.refused_free as isize + b) as usize;
            }
        }
    }

    /// Links a free run, merging it with free neighbours of the same kind.
    ///
    /// # Safety
    /// `s` is a free record owned by the heap, in no list.
    unsafe fn insert_free(&mut self, s: *mut Span) {
        // SAFETY: `s` and the neighbours found in the page map are heap records.
        unsafe {
            let before = if (*s).start >= PAGE_SIZE {
                pagemap::get((*s).start - PAGE_SIZE)
            } else {
                ptr::null_mut()
            };
            if self.mergeable(before, s) && (*before).end() == (*s).start {
                self.unlink_free(before);
                (*s).start = (*before).start;
                (*s).pages += (*before).pages;
                self.drop_record(before);
            }
            let after = pagemap::get((*s).end());
            if self.mergeable(after, s) && (*after).start == (*s).end() {
                self.unlink_free(after);
                (*s).pages += (*after).pages;
                self.drop_record(after);
            }
            pagemap::set_ends(&*s, s);
            self.account_free(&*s, 1);
            self.free[Self::kind(s)][Self::list_index((*s).pages)].push(s);
        }
    }

    /// Whether `n` is a free run (in a list) of the same kind as `s`.
    ///
    /// # Safety
    /// `n` is null or a record of the heap.
    unsafe fn mergeable(&self, n: *mut Span, s: *mut Span) -> bool {
        // SAFETY: as documented.
        unsafe {
            !n.is_null()
                && n != s
                && (*n).class == 0
                && (*n).linked
                && Self::kind(n) == Self::kind(s)
        }
    }

    /// Unlinks a free run from its list.
    ///
    /// # Safety
    /// `s` is a free run in a list.
    unsafe fn unlink_free(&mut self, s: *mut Span) {
        // SAFETY: as documented.
        unsafe {
            self.account_free(&*s, -1);
            self.free[Self::kind(s)][Self::list_index((*s).pages)].remove(s);
        }
    }

    /// The shortest fitting free run (backed first, then refused, then released), or
    /// null.
    fn find_free(&self, pages: usize) -> *mut Span {
        for kind in [BACKED, REFUSED, RELEASED] {
            for n in pages..=MAX_LISTED {
                let h = self.free[kind][n].head;
                if !h.is_null() {
                    return h;
                }
            }
            // Longer runs: best fit.
            let mut best: *mut Span = ptr::null_mut();
            let mut s = self.free[kind][0].head;
            while !s.is_null() {
                // SAFETY: records in the list are valid under the lock.
                unsafe {
                    if (*s).pages >= pages && (best.is_null() || (*s).pages < (*best).pages) {
                        best = s;
                    }
                    s = (*s).next;
                }
            }
            if !best.is_null() {
                return best;
            }
        }
        ptr::null_mut()
    }

    /// A run of exactly `pages` pages, out of every list (its page-map entries are
    /// the caller's to set).
    fn take_run(&mut self, pages: usize) -> Option<*mut Span> {
        let mut s = self.find_free(pages);
        if s.is_null() {
            s = self.grow(pages)?;
        } else {
            // SAFETY: a free run in a list.
            unsafe { self.unlink_free(s) };
        }
        // SAFETY: `s` is ours (out of the lists).
        unsafe {
            if (*s).pages > pages {
                let Some(rest) = self.new_record() else {
                    // Cannot split: give it back and fail.
                    self.insert_free(s);
                    return None;
                };
                (*rest).start = (*s).start + pages * PAGE_SIZE;
                (*rest).pages = (*s).pages - pages;
                (*rest).released = (*s).released;
                (*rest).refused = (*s).refused;
                (*s).pages = pages;
                self.insert_free(rest);
            }
        }
        Some(s)
    }

    /// [`map_with_room`] with the heap's lock held: a failed mapping (of about
    /// `need` bytes) unmaps the free runs and the current region's rest, and is tried
    /// again. Whatever the caller holds out of the lists is left alone, but the
    /// region's rest may be gone afterwards (`region_next == region_end`).
    fn map_room<T>(&mut self, need: usize, map: impl FnMut() -> Option<T>) -> Option<T> {
        map_with_room(need, map, |n| self.unmap_free(n))
    }

    /// A fresh run of `pages` from the current region or a new one.
    fn grow(&mut self, pages: usize) -> Option<*mut Span> {
        let bytes = pages.checked_mul(PAGE_SIZE)?;
        // The record first: mapping a chunk of records may unmap the region's rest.
        let s = self.new_record()?;
        if self.region_end - self.region_next < bytes && !self.new_region(bytes) {
            self.drop_record(s);
            return None;
        }
        // SAFETY: a fresh record.
        unsafe {
            (*s).start = self.region_next;
            (*s).pages = pages;
            // Never touched since the region was mapped: reads as zero.
            (*s).released = true;
        }
        self.region_next += bytes;
        self.stats.uncarved -= bytes;
        Some(s)
    }

    /// Maps a new current region for at least `bytes` bytes, its page-map leaves
    /// with it; the old region's rest becomes a released free run. `false` when out
    /// of address space (even after the free runs gave theirs back).
    fn new_region(&mut self, bytes: usize) -> bool {
        let want = bytes.max(REGION);
        // The old rest's record first (mapping a chunk may unmap that rest).
        let r = self.new_record();
        // Out of address space: the free runs' goes back first (none of them fits the
        // request, or `find_free` would have found it).
        let Some((p, len)) = self.map_room(bytes, || Self::map_region(want, bytes)) else {
            if let Some(r) = r {
                self.drop_record(r);
            }
            return false;
        };
        let p = p as usize;
        let leaves = pagemap::ensure(p, p + len, |n| self.map_room(n, || os::map(n)));
        if !leaves {
            // SAFETY: just mapped, unused.
            unsafe { os::unmap(p as *mut u8, len) };
            if let Some(r) = r {
                self.drop_record(r);
            }
            return false;
        }
        self.stats.mapped += len;
        // The rest of the old region (what making room left of it) becomes a
        // released free run; without a record for it, it is unmapped (not lost).
        let tail = self.region_end - self.region_next;
        match r {
            Some(r) if tail >= PAGE_SIZE => {
                // SAFETY: a fresh record for untouched pages of our region.
                unsafe {
                    (*r).start = self.region_next;
                    (*r).pages = tail / PAGE_SIZE;
                    (*r).released = true;
                    self.stats.uncarved -= tail;
                    self.insert_free(r);
                }
            }
            r => {
                if let Some(r) = r {
                    self.drop_record(r);
                }
                if tail > 0 {
                    // SAFETY: the old region's pages not carved yet: never handed out.
                    unsafe { os::unmap(self.region_next as *mut u8, tail) };
                    self.stats.mapped -= tail;
                    self.stats.uncarved -= tail;
                }
            }
        }
        self.region_next = p;
        self.region_end = p + len;
        self.stats.uncarved += len;
        true
    }

    /// A new region of `want` bytes, or of `bytes` if that fails: its address and
    /// length.
    fn map_region(want: usize, bytes: usize) -> Option<(*mut u8, usize)> {
        match os::map_aligned(want, PAGE_SIZE) {
            Some(p) => Some((p, want)),
            None if want > bytes => Some((os::map_aligned(bytes, PAGE_SIZE)?, bytes)),
            None => None,
        }
    }

    /// See [`unmap_free`].
    fn unmap_free(&mut self, need: usize) -> usize {
        let st = &self.stats;
        if st.backed_free + st.released_free + (self.region_end - self.region_next) < need {
            return 0;
        }
        let mut total = 0;
        for kind in [BACKED, RELEASED, REFUSED] {
            self.take_listed(kind, |heap, s| {
                // SAFETY: a free run just unlinked: unused pages of ours, which no
                // span or object covers. Its page-map ends (what merging reads) are
                // cleared before its record is recycled.
                unsafe {
                    pagemap::set_ends(&*s, ptr::null_mut());
                    let bytes = (*s).bytes();
                    os::unmap((*s).start as *mut u8, bytes);
                    heap.stats.mapped -= bytes;
                    total += bytes;
                }
                heap.drop_record(s);
            });
        }
        let tail = self.region_end - self.region_next;
        if tail > 0 {
            // SAFETY: the current region's pages not carved yet: never handed out.
            unsafe { os::unmap(self.region_next as *mut u8, tail) };
            self.stats.mapped -= tail;
            self.stats.uncarved -= tail;
            self.region_end = self.region_next;
            total += tail;
        }
        total
    }

    /// Makes every refused run a backed one again (merged with its backed
    /// neighbours), for a release that tries them again.
    fn retry_refused(&mut self) {
        self.take_listed(REFUSED, |heap, s| {
            // SAFETY: a refused free run just unlinked: ours.
            unsafe {
                (*s).refused = false;
                heap.insert_free(s);
            }
        });
    }

    /// Unlinks every free run of `kind`'s lists, shortest list first, and hands each
    /// to `f` (which must not list runs of `kind` again).
    fn take_listed(&mut self, kind: usize, mut f: impl FnMut(&mut Self, *mut Span)) {
        for n in 0..=MAX_LISTED {
            loop {
                let s = self.free[kind][n].head;
                if s.is_null() {
                    break;
                }
                // SAFETY: the head of one of `kind`'s lists: a free run in a list.
                unsafe { self.unlink_free(s) };
                f(self, s);
            }
        }
    }

    /// The longest backed free run, or null.
    fn longest_backed(&self) -> *mut Span {
        // Runs longer than MAX_LISTED pages share a list: the longest of them.
        let mut best: *mut Span = ptr::null_mut();
        let mut s = self.free[BACKED][0].head;
        while !s.is_null() {
            // SAFETY: records in the list are valid under the lock.
            unsafe {
                if best.is_null() || (*s).pages > (*best).pages {
                    best = s;
                }
                s = (*s).next;
            }
        }
        if !best.is_null() {
            return best;
        }
        (1..=MAX_LISTED)
            .rev()
            .map(|n| self.free[BACKED][n].head)
            .find(|h| !h.is_null())
            .unwrap_or(ptr::null_mut())
    }

    /// Releases the longest backed runs until at most `keep` bytes of backed runs
    /// that may be released remain (refused runs are not counted). A run the kernel
    /// refuses to release (locked pages) becomes a refused run, left alone from then
    /// on; at most [`REFUSALS`] per call.
    fn release_down_to(&mut self, keep: usize) {
        let mut refusals = 0;
        while self.stats.backed_free - self.stats.refused_free > keep && refusals < REFUSALS {
            let s = self.longest_backed();
            if s.is_null() {
                break;
            }
            // SAFETY: a backed free run: unused memory of ours.
            unsafe {
                self.unlink_free(s);
                if os::release((*s).start as *mut u8, (*s).bytes()) {
                    self.stats.released_total += (*s).bytes() as u64;
                    (*s).released = true;
                } else {
                    // The kernel kept the pages (locked memory, `mlock`, refuses
                    // `MADV_DONTNEED`): they hold what was written, so the run stays
                    // backed (a released one is taken to read as zero), and is not
                    // asked again until it changes.
                    (*s).refused = true;
                    self.stats.refusals += 1;
                    refusals += 1;
                }
                self.insert_free(s);
            }
        }
    }
}

const _: () = assert!(PAGE_SIZE == 1 << PAGE_SHIFT);
