//! Allocation without a layout on free: what a C `malloc`/`free` (the
//! `restartable-malloc` shared library) needs and [`GlobalAlloc`](core::alloc::GlobalAlloc) does not give.
//!
//! [`alloc`] takes a size and an alignment; [`free`], [`usable_size`] and
//! [`realloc`] take only the pointer and find out what it is:
//! - a small object: the page map's info word for its page gives its span's size
//!   class and first object (one load after the leaf, no span record). The pointer
//!   must be the start of one of the span's objects (not in the span's head before
//!   its first object, nor in its tail after the last);
//! - a large object (its own mapping): a second radix tree, the *large map*, records
//!   the mapping length at the object's first OS page.
//!
//! A pointer that is neither was not handed out by this module (or was already
//! freed and its memory returned): [`lookup`] says [`Block::Foreign`] and the caller
//! decides (the C library aborts with a message).
//!
//! # Invariants
//! - Objects of this module are objects of [`PerCpuAlloc`](crate::PerCpuAlloc): small
//!   ones go through the same per-class paths as its `alloc`/`dealloc` (the
//!   front-end's caches, then the middle), so both APIs share one heap.
//!   Large ones are [`large`] mappings, freed and resized there with the layout
//!   `(mapping length, OS page)` (which `large` reads only for its length).
//! - The large map holds, for every live large object of this module, its mapping
//!   length at its first page; the entry is written after the mapping exists and
//!   cleared before it is unmapped or moved, so a recycled address never finds a
//!   stale entry. Leaves (2 MiB of address space bookkeeping each, 1 MiB on a 32-bit
//!   target, covering 1 GiB) are mapped on first use and never freed. A
//!   [`realloc`] that grows an object tries in place first; one that may move it
//!   (`mremap`) holds a leaf first (one spare kept mapped, or a fresh one), so that
//!   wherever the object lands it is recorded; without one it does not move.
//! - Nothing here calls the global allocator.
//!
//! Objects of [`PerCpuAlloc`](crate::PerCpuAlloc)'s own [`GlobalAlloc`](core::alloc::GlobalAlloc) path (large ones) are not in the
//! large map: free them with the layout, not here.

use core::alloc::Layout;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use crate::backend::{large, pagemap};
use crate::front;
use crate::os::{self, OS_PAGE};
use crate::size_class::{
    class_for, class_of_mid, max_span_offset, objects_per_span, size, span_pages, CLASSES,
    MAX_SMALL, MID_LEN, MID_SHIFT, MIN_ALIGN, PAGE_SIZE, TABLE_MAX,
};
use restartable::hooks::NoHooks;

/// What a pointer is, as far as this allocator knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// The start of an object of size class `class` (`size(class)` usable bytes).
    Small {
        /// Its size class.
        class: usize,
    },
    /// A large object of this module: its mapping, `len` bytes.
    Large {
        /// Mapping length (usable bytes).
        len: usize,
    },
    /// Not an object this module handed out (or no longer one).
    Foreign,
}

/// Per class: object size, span bytes, objects per span (tables: the lookup on every
/// `free` reads them instead of recomputing).
const SIZE: [usize; CLASSES + 1] = table!(size);
macro_rules! table {
    ($f:ident) => {{
        let mut t = [0; CLASSES + 1];
        let mut c = 1;
        while c <= CLASSES {
            t[c] = $f(c);
            c += 1;
        }
        t
    }};
}
use table;

/// `M[c]`: `ceil(2^40 / size(c))`, plus one where `size(c)` divides 2^40, so that
/// `e = size(c) * M[c] - 2^40` is in `1..=size(c)` (never 0). Offsets are from the
/// span's first object (`size_class::span_offset(c, start)` bytes past its start,
/// at most `size_class::max_span_offset(c)`). For an
/// offset `off = q * size(c) + r` (`0 <= r < size(c)`) inside a span (below 2^21),
/// `off * M[c]` is
/// `q * 2^40 + q * e + r * M[c]`, where `q * e <= off < 2^21` and `r * M[c]` is at
/// most `2^40 + e - M[c]`: as `M[c] >= 2^22`, `q * e + r * M[c]` is below 2^40, so it
/// is the low 40 bits of `off * M[c]`. They are `q * e` when `r` is 0 and at least
/// `M[c]` otherwise. The span's objects start at `r = 0, q < N` (`N =
/// objects_per_span(c)`), where they are below `N * e`; its tail, if any, starts at
/// `q = N` (`N * e`, rejected) and the rest of it is `r > 0`. So `off` starts an
/// object exactly when the low 40 bits of `off * M[c]` are below [`LIMIT`]`[c] = N *
/// e` (at most the span's bytes, below `M[c]`): no division, no multiplication back,
/// and one compare for both the object start and the span's tail. An address in the
/// span's head, `d` bytes before its first object (`1 <= d <= max_span_offset(c) <=
/// size(c) / 2`), has the offset `2^48 - d` (as `small` computes it, plus a multiple
/// of 2^48), whose low 40 bits times `M[c]` are `2^40 - d * M[c]` modulo 2^40:
/// `d * M[c] <= (size(c) / 2) * (2^40 / size(c) + 2) <= 2^39 + size(c)`, so they are
/// at least `2^39 - 2^18`, far above `N * e < M[c] <= 2^30 + 2` (sizes above 1 KiB):
/// rejected by the same compare.
const MAGIC: [u64; CLASSES + 1] = {
    let mut m = [0; CLASSES + 1];
    let mut c = 1;
    while c <= CLASSES {
        let s = size(c) as u64;
        m[c] = (1u64 << 40).div_ceil(s);
        if m[c] * s == 1 << 40 {
            m[c] += 1;
        }
        c += 1;
    }
    m
};
/// `objects_per_span(c) * e` (see [`MAGIC`]).
const LIMIT: [u64; CLASSES + 1] = {
    let mut t = [0; CLASSES + 1];
    let mut c = 1;
    while c <= CLASSES {
        let e = size(c) as u64 * MAGIC[c] - (1 << 40);
        t[c] = objects_per_span(c) as u64 * e;
        c += 1;
    }
    t
};
/// What [`lookup`] checks an offset in a span of class `c` with, keyed by the class's
/// front-end header offset `h = front::header_offset_of(c)` (what the page map's info
/// word holds in its top bits, a multiple of 8 below 2^16): `CHECK[h / 8] = [m, l]`
/// with `m = MAGIC[c] << 24` and `l = (LIMIT[c] << 24) - 2^24 + c`. Entries of no
/// class's offset (0 among them: pages of no small-object span) are `[0, 0]` and
/// accept nothing.
///
/// The test of [`MAGIC`] is on the low 40 bits of `off * MAGIC[c]`: `x = off * m`
/// (mod 2^64) is those bits shifted left by 24, so no mask or shift is left, and the
/// multiple of 2^48 that the info word leaves in `off` (its header bits and the
/// carry of the start's negation) vanishes in it (a multiple of 2^48 times 2^24).
/// `x` is a multiple of 2^24, and so is `L = LIMIT[c] << 24` (`LIMIT[c] >= 1`): for
/// `0 < c < 2^24`, `x < L - 2^24 + c` exactly when `x <= L - 2^24`, i.e. when
/// `x < L`, the object-start test. So `l` is that test's limit
/// with the class in its low bits (for [`lookup`], off the fast path), and the
/// fast path goes from the info word to the check with one shift (the header, which
/// it needs anyway) and no class byte to extract or add back.
///
/// 128 KiB (`2^13` entries, every 16-bit multiple of 8), of which the classes in use
/// touch one line each; read `%rip`-relative (see `rip_relative!`).
static CHECK: [[u64; 2]; CHECK_LEN] = {
    let mut t = [[0; 2]; CHECK_LEN];
    let mut c = 1;
    while c <= CLASSES {
        let h = front::header_offset_of(c);
        assert!(h.is_multiple_of(8) && h / 8 < CHECK_LEN && t[h / 8][0] == 0);
        t[h / 8] = [MAGIC[c] << 24, (LIMIT[c] << 24) - (1 << 24) + c as u64];
        c += 1;
    }
    t
};
const CHECK_LEN: usize = 1 << 13;

/// `CHECK`'s entry for the info word `info` (whose top 16 bits are a multiple of 8:
/// every info word is 0 or written by `pagemap::set_small`): its address is
/// `CHECK + (info >> 48) * 2` (one shift and an indexed load, no mask).
#[inline(always)]
fn check_entry(info: u64) -> &'static [u64; 2] {
    let h = (info >> pagemap::INFO_HEADER_SHIFT) as usize;
    debug_assert!(h.is_multiple_of(8));
    let t = rip_relative!(CHECK, [[u64; 2]; CHECK_LEN]) as *const [[u64; 2]; CHECK_LEN];
    // SAFETY: `h < 2^16` and a multiple of 8 (every info word's top bits), so `2 * h`
    // bytes is entry `h / 8 < CHECK_LEN` of the table.
    unsafe { &*t.cast::<u8>().add(2 * h).cast::<[u64; 2]>() }
}

/// Whether `off` is the offset of an object's start in a span of class `c`, as
/// `small` checks it (for the test against the plain check), with `high` in the
/// bits from 48 up (what the info word leaves there in `small`).
#[cfg(test)]
fn object_start(h: usize, off: u64, high: u64) -> bool {
    let [m, l] = *check_entry((h as u64) << pagemap::INFO_HEADER_SHIFT);
    off.wrapping_add(high << 48).wrapping_mul(m) < l
}

const _: () = {
    // Offsets stay below 2^21, e is in 1..=size(c) and the limit below MAGIC (see
    // `MAGIC`).
    let mut c = 1;
    while c <= CLASSES {
        assert!(span_pages(c) * PAGE_SIZE < 1 << 21);
        // The span's head (see `MAGIC`): only classes above 1 KiB, at most half
        // an object.
        assert!(max_span_offset(c) == 0 || (size(c) > 1024 && 2 * max_span_offset(c) <= size(c)));
        assert!(size(c) <= 1 << 18 && MAGIC[c] >= 1 << 22 && MAGIC[c] < 1 << 40);
        let e = size(c) as u64 * MAGIC[c] - (1 << 40);
        assert!(e >= 1 && e <= size(c) as u64);
        assert!(LIMIT[c] < MAGIC[c]);
        c += 1;
    }
};

/// What `p` is (see [`Block`]). Reads the page map without a lock: exact for every
/// live object; for other pointers the answer is best effort (a freed object's
/// address still reads as an object of its span).
#[inline(always)]
pub fn lookup(p: *const u8) -> Block {
    if let Some((class, _)) = small(p as usize) {
        return Block::Small { class };
    }
    let a = p as usize;
    if pagemap::info(a) != 0 {
        return Block::Foreign;
    }
    match large_get(a) {
        0 => Block::Foreign,
        len => Block::Large { len },
    }
}

/// The class of the small object that starts at `a`, and its front-end header
/// offset; `None` when `a` is not the start of an object of a small-object span.
///
/// The page's info word (`pagemap::info`: its span's first object and header offset
/// in one word, no span record to reach) gives the header offset (so the class) and
/// the offset from the span's first object; it must be the start of one of the span's objects
/// (one multiplication and one compare, no division: see [`MAGIC`] and [`CHECK`]). A
/// page of no small-object span has the info word 0, whose check accepts nothing.
/// The offset is taken as `a + info`, which is `a - first` plus a multiple of 2^48
/// (the info word holds `2^48 - first` under the header bits: `pagemap::small_info`):
/// times `MAGIC[c] << 24` that vanishes (mod 2^64).
#[inline(always)]
fn small(a: usize) -> Option<(usize, usize)> {
    let info = pagemap::info(a);
    let off = (a as u64).wrapping_add(info);
    let [m, l] = *check_entry(info);
    (off.wrapping_mul(m) < l).then_some((
        l as u8 as usize,
        (info >> pagemap::INFO_HEADER_SHIFT) as usize,
    ))
}

/// Usable bytes of `p` (at least the size it was allocated with); `None` if `p` is
/// not an object of this module.
#[inline]
pub fn usable_size(p: *const u8) -> Option<usize> {
    match lookup(p) {
        Block::Small { class } => Some(SIZE[class]),
        Block::Large { len } => Some(len),
        Block::Foreign => None,
    }
}

/// Allocates `n` bytes aligned to `align` (a power of two); null when memory is
/// exhausted or the request cannot be met. `n == 0` gives a unique object.
#[inline]
pub fn alloc(n: usize, align: usize) -> *mut u8 {
    let Ok(layout) = Layout::from_size_align(n, align.max(1)) else {
        return ptr::null_mut();
    };
    let c = class_for(layout);
    if c != 0 {
        return crate::alloc_small::<NoHooks, false>(c);
    }
    alloc_large(layout)
}

/// `malloc(n)`: [`alloc`] with the alignment of [`MIN_ALIGN`], whose common case (up
/// to [`TABLE_MAX`] bytes: one table load for the class, then the front-end's pop)
/// is inlined into the caller with nothing else around it; every other size takes
/// [`alloc`] out of line.
#[inline(always)]
pub fn malloc(n: usize) -> *mut u8 {
    if n <= TABLE_MAX {
        // SAFETY: MIN_ALIGN is a power of two and `n` is far below
        // `isize::MAX - MIN_ALIGN`.
        let c = class_for(unsafe { Layout::from_size_align_unchecked(n, MIN_ALIGN) });
        if c != 0 {
            return crate::alloc_small::<NoHooks, false>(c);
        }
    }
    malloc_other(n)
}

/// [`malloc`] beyond the table.
#[inline(never)]
fn malloc_other(n: usize) -> *mut u8 {
    alloc(n, MIN_ALIGN)
}

/// [`malloc`]'s fast path alone: `Ok` with the object when the current CPU's cache
/// had one (sizes up to [`TABLE_MAX`]), else the rest of the work to do out of
/// line ([`MallocSlow::finish`]). For a caller with more to do on the slow path
/// (the C `malloc` sets `errno` on failure): the fast path then ends in a return
/// or a tail call, with no frame of its own.
#[inline(always)]
pub fn malloc_fast(n: usize) -> Result<*mut u8, MallocSlow> {
    if n <= TABLE_MAX {
        let hdr = || header_by_bytes(n);
        // SAFETY: the header offset of the class of `n`.
        if let front::Outcome::Done(p) = unsafe { front::pop_at_offset::<NoHooks>(hdr) } {
            return Ok(p);
        }
    }
    Err(MallocSlow(n))
}

/// [`front::HEADER_BY_SIZE`] by the size itself (`0..=TABLE_MAX`) rather than by
/// `size.div_ceil(MIN_ALIGN)`: 2 KiB instead of 130 bytes, for no arithmetic before
/// the load on `malloc`'s fast path (of which a program's common sizes touch a few
/// lines). A static, addressed `%rip`-relative (`malloc` is inlined into another
/// crate, which would reach it through the GOT).
static HEADER_BY_BYTES: [u16; TABLE_MAX + 1] = {
    let mut t = [0u16; TABLE_MAX + 1];
    let mut n = 0;
    while n <= TABLE_MAX {
        t[n] = front::HEADER_BY_SIZE[n.div_ceil(MIN_ALIGN)];
        n += 1;
    }
    t
};

/// [`HEADER_BY_BYTES`]`[n]` (`n <= TABLE_MAX`), read `%rip`-relative.
#[inline(always)]
pub(crate) fn header_by_bytes(n: usize) -> usize {
    usize::from(rip_relative!(HEADER_BY_BYTES, [u16; TABLE_MAX + 1])[n])
}

/// [`front::header_offset`] of the class of every size `TABLE_MAX < n <= MAX_SMALL`,
/// by `(n - 1) >> MID_SHIFT` (as [`class_of_mid`]; the entries up to [`TABLE_MAX`]
/// are not used): `malloc`'s slow path goes from such a size to the front-end's
/// header with one load, as its fast path does for the table's sizes. 4 KiB, of
/// which a program's common sizes touch a few lines; read `%rip`-relative.
static HEADER_BY_MID: [u16; MID_LEN] = {
    let mut t = [0u16; MID_LEN];
    let mut i = 0;
    while i < MID_LEN {
        let n = (i + 1) << MID_SHIFT;
        if n > TABLE_MAX {
            t[i] = front::header_offset_of(crate::size_class::class_of_size(n)) as u16;
        }
        i += 1;
    }
    t
};

/// [`HEADER_BY_MID`] of `n` (`TABLE_MAX < n <= MAX_SMALL`), read `%rip`-relative.
#[inline(always)]
fn header_by_mid(n: usize) -> usize {
    debug_assert!(n > TABLE_MAX && n <= MAX_SMALL);
    usize::from(rip_relative!(HEADER_BY_MID, [u16; MID_LEN])[(n - 1) >> MID_SHIFT])
}

/// What is left of a [`malloc_fast`] that did not get an object at once.
#[derive(Debug)]
#[repr(transparent)]
pub struct MallocSlow(usize);

impl MallocSlow {
    /// The first attempt of the checked modes (caches by CPU or by the whole mm_cid:
    /// the area at one offset, checked before the sequence), which [`malloc_fast`]
    /// leaves out (see [`front::pop_checked`]), and for the sizes above the table up
    /// to [`MAX_SMALL`], which it leaves out too, the first attempt of every mode at
    /// one offset (the header from `HEADER_BY_MID`, one load): for the start of
    /// `malloc`'s slow path, with no frame, before [`finish`](Self::finish) out of
    /// line.
    #[inline(always)]
    pub fn checked(self) -> Result<*mut u8, MallocSlow> {
        let n = self.0;
        if n <= TABLE_MAX {
            // SAFETY: the header offset of the class of `n`.
            let r = unsafe { front::pop_checked::<NoHooks>(header_by_bytes(n)) };
            if let front::Outcome::Done(p) = r {
                return Ok(p);
            }
        } else if n <= MAX_SMALL {
            let hdr = header_by_mid(n);
            // SAFETY: the header offset of the class of `n`.
            if let front::Outcome::Done(p) = unsafe { front::pop_at_offset::<NoHooks>(|| hdr) } {
                return Ok(p);
            }
            // SAFETY: as above.
            if let front::Outcome::Done(p) = unsafe { front::pop_checked::<NoHooks>(hdr) } {
                return Ok(p);
            }
        }
        Err(self)
    }

    /// The object of [`malloc`]`(n)` (null when memory is exhausted), the slow way:
    /// the front-end's whole path for table sizes (the thread-local attempt where
    /// glibc does not own registration; another pop, then the abort retries or the
    /// middle, where it does), [`alloc`] for the others.
    #[inline]
    pub fn finish(self) -> *mut u8 {
        let n = self.0;
        if n <= TABLE_MAX {
            // SAFETY: as in `malloc_fast`.
            let c = class_for(unsafe { Layout::from_size_align_unchecked(n, MIN_ALIGN) });
            // The thread-local path inlined here (`INLINE_TLS`): this is already out
            // of line, and where glibc does not own registration it is every call's
            // path.
            return crate::alloc_small::<NoHooks, true>(c);
        }
        if n <= MAX_SMALL {
            // As above, the class with one load.
            return crate::alloc_small::<NoHooks, true>(class_of_mid(n));
        }
        malloc_other(n)
    }
}

/// As [`alloc`], zeroed (large objects are fresh mappings: nothing is written).
#[inline]
pub fn alloc_zeroed(n: usize, align: usize) -> *mut u8 {
    let Ok(layout) = Layout::from_size_align(n, align.max(1)) else {
        return ptr::null_mut();
    };
    let c = class_for(layout);
    if c != 0 {
        let p = crate::alloc_small::<NoHooks, false>(c);
        if !p.is_null() {
            // SAFETY: a fresh object of `size(c) >= n` bytes.
            unsafe { p.write_bytes(0, n) };
        }
        return p;
    }
    alloc_large(layout)
}

/// The layout of a large object's mapping of `len` bytes, as [`large`] frees and
/// resizes it (not for `PerCpuAlloc`: with a small length it names a size class).
#[inline(always)]
fn large_layout(len: usize) -> Layout {
    // SAFETY: `len` is a mapping length: a multiple of the page, below isize::MAX.
    unsafe { Layout::from_size_align_unchecked(len, OS_PAGE) }
}

#[cold]
fn alloc_large(layout: Layout) -> *mut u8 {
    let Some(len) = large::mapping_len(layout.size()) else {
        return ptr::null_mut();
    };
    if len > isize::MAX as usize - OS_PAGE {
        return ptr::null_mut();
    }
    let p = large::alloc(layout);
    if p.is_null() {
        return p;
    }
    if !large_set(p as usize, len, &mut None) {
        // SAFETY: just mapped with this length; never handed out.
        unsafe { large::dealloc(p, large_layout(len)) };
        return ptr::null_mut();
    }
    p
}

/// Frees `p`, an object of this module of kind `b` (from [`lookup`]).
///
/// # Safety
/// `p` is a live object of this module, `b` is `lookup(p)` (not `Foreign`), and `p`
/// is not used again.
/// The small-object case (the front-end's push) is inlined into the caller; a large
/// object is freed out of line.
#[inline(always)]
pub unsafe fn free(p: *mut u8, b: Block) {
    match b {
        // SAFETY: the caller's contract: an object of class `class`.
        Block::Small { class } => unsafe { crate::dealloc_small::<NoHooks, false>(class, p) },
        // SAFETY: the caller's contract: a live large object of this mapping length.
        Block::Large { len } => unsafe { free_large(p, len) },
        Block::Foreign => {}
    }
}

/// [`free`]'s fast path alone, for a pointer that may be anything (the C `free`):
/// `Ok` when `p` was a small object and went into the current CPU's cache (where
/// glibc owns registration, by mm_cid); otherwise the rest to do out of line
/// ([`FreeSlow`]: a large object, a foreign pointer, a full cache, an
/// aborted sequence, the checked modes ([`FreeSlow::checked`]), the thread-local
/// path). For the same reason as
/// [`malloc_fast`]: the caller's fast path then ends in a return or a tail call.
///
/// # Safety
/// If `p` is an object of this module (of either kind), it is live and not used
/// again; any other pointer (null included: no small-object span covers the first
/// page) is left alone here.
#[inline(always)]
pub unsafe fn free_fast(p: *mut u8) -> Result<(), FreeSlow> {
    let find = || small(p as usize).map(|(_, hdr)| hdr);
    // SAFETY: `p` is an object of the class whose header offset `find` gives
    // (`small`), given up by the caller.
    if let front::Outcome::Done(()) = unsafe { front::push_at_offset::<NoHooks>(find, p) } {
        return Ok(());
    }
    Err(FreeSlow(p))
}

/// What is left of a [`free_fast`] that did not put the object away: the pointer
/// (alone, so that the fast path passes one register to its slow path; the slow path
/// looks it up again).
#[derive(Debug)]
#[repr(transparent)]
pub struct FreeSlow(*mut u8);

impl FreeSlow {
    /// The first attempt of the checked modes (see [`MallocSlow::checked`]), which
    /// [`free_fast`] leaves out: for the start of `free`'s slow path, with no frame.
    ///
    /// # Safety
    /// As for [`free_fast`].
    #[inline(always)]
    pub unsafe fn checked(self) -> Result<(), FreeSlow> {
        let p = self.0;
        let find = || small(p as usize).map(|(_, hdr)| hdr);
        // SAFETY: as in `free_fast`.
        if let front::Outcome::Done(()) = unsafe { front::push_checked::<NoHooks>(find, p) } {
            return Ok(());
        }
        Err(self)
    }

    /// The pointer given to [`free_fast`].
    pub fn ptr(&self) -> *mut u8 {
        self.0
    }

    /// What the pointer is ([`lookup`]). The caller frees it with [`free`] unless it
    /// is [`Block::Foreign`].
    #[inline]
    pub fn lookup(&self) -> Block {
        lookup(self.0)
    }

    /// [`free`] of the pointer, of kind `b` (from [`lookup`](Self::lookup)), with the
    /// thread-local path inlined (see [`MallocSlow::finish`]).
    ///
    /// # Safety
    /// As for [`free`].
    #[inline]
    pub unsafe fn finish(self, b: Block) {
        match b {
            // SAFETY: the caller's contract: an object of class `class`.
            Block::Small { class } => unsafe {
                crate::dealloc_small::<NoHooks, true>(class, self.0)
            },
            // SAFETY: forwarded contract.
            _ => unsafe { free(self.0, b) },
        }
    }
}

/// [`free`] of a large object.
///
/// # Safety
/// `p` is a live large object of this module, of mapping length `len`, not used
/// again.
#[inline(never)]
unsafe fn free_large(p: *mut u8, len: usize) {
    large_clear(p as usize);
    // SAFETY: a live large object of this mapping length (caller).
    unsafe { large::dealloc(p, large_layout(len)) }
}

/// Resizes `p` (of kind `b`, from [`lookup`]) to `n` bytes, keeping the first
/// `min(old, n)` bytes; in place when the size class stays the same, with `mremap`
/// for large objects. Null (and `p` untouched) when memory is exhausted. The new
/// object is aligned to 16 bytes (the alignment `p` had is not kept).
///
/// # Safety
/// As for [`free`]; on success `p` is not used again.
pub unsafe fn realloc(p: *mut u8, b: Block, n: usize) -> *mut u8 {
    match b {
        Block::Small { class } => {
            if n <= size(class) && (n > size(class) / 2 || class == 1) {
                return p;
            }
            let q = malloc(n);
            if !q.is_null() {
                // SAFETY: both are live and distinct; `p` holds size(class) bytes, `q`
                // at least n.
                unsafe {
                    ptr::copy_nonoverlapping(p, q, size(class).min(n));
                    crate::dealloc_small::<NoHooks, false>(class, p);
                }
            }
            q
        }
        Block::Large { len } => {
            let new = Layout::from_size_align(n, MIN_ALIGN);
            match new {
                Ok(l) if class_for(l) == 0 => {
                    let Some(new_len) = large::mapping_len(n) else {
                        return ptr::null_mut();
                    };
                    if new_len == len {
                        return p;
                    }
                    // Cleared before the mapping can move: the address may be reused
                    // by another thread as soon as `mremap` returns.
                    large_clear(p as usize);
                    // Growing where it is first: no leaf needed (its own exists), and
                    // nothing else takes address space (near a limit, a leaf mapped
                    // first could take the room the growth needed). Else a leaf in
                    // hand before the object may move (to a part of the address space
                    // whose leaf is not mapped yet, which mapping after the move
                    // could fail to do: the object could then be neither recorded nor
                    // moved back). Without one (out of address space), no move: the
                    // copy below, which fails cleanly. A shrink stays in place (and
                    // needs no memory).
                    let grows = new_len > len;
                    // SAFETY: a live large object of mapping length `len`; it does
                    // not move.
                    if grows && unsafe { large::grow_in_place(p, large_layout(len), new_len) } {
                        let _ = large_set(p as usize, new_len, &mut None);
                        return p;
                    }
                    let mut spare = if grows { take_spare() } else { None };
                    let moved = if !grows || spare.is_some() {
                        // SAFETY: a live large object of mapping length `len`; the
                        // new length keeps it large.
                        unsafe { large::realloc(p, large_layout(len), new_len) }
                    } else {
                        None
                    };
                    match moved {
                        Some(q) => {
                            let recorded = large_set(q as usize, new_len, &mut spare);
                            if let Some(leaf) = spare {
                                put_spare(leaf);
                            }
                            if recorded {
                                return q;
                            }
                            // Only for an address beyond the map (the kernel gives
                            // none without a hint): the object could be neither
                            // freed nor resized later.
                            fatal(b"restartable-alloc: a large object moved beyond the large-object map\n")
                        }
                        None => {
                            if let Some(leaf) = spare {
                                put_spare(leaf);
                            }
                            // Its leaf exists: it was recorded there.
                            let _ = large_set(p as usize, len, &mut None);
                            let q = alloc(n, MIN_ALIGN);
                            if !q.is_null() {
                                // SAFETY: both live and distinct.
                                unsafe {
                                    ptr::copy_nonoverlapping(p, q, len.min(n));
                                    free(p, b);
                                }
                            }
                            q
                        }
                    }
                }
                Ok(_) => {
                    // Becomes small.
                    let q = alloc(n, MIN_ALIGN);
                    if !q.is_null() {
                        // SAFETY: both live and distinct; n < len.
                        unsafe {
                            ptr::copy_nonoverlapping(p, q, n.min(len));
                            free(p, b);
                        }
                    }
                    q
                }
                Err(_) => ptr::null_mut(),
            }
        }
        Block::Foreign => ptr::null_mut(),
    }
}

/// Writes `msg` to standard error and aborts, without allocating.
#[cold]
pub fn fatal(msg: &[u8]) -> ! {
    // SAFETY: writes a valid buffer to fd 2; abort has no preconditions.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::abort()
    }
}

// The large map: OS page number -> mapping length, in two levels, over the page map's
// addresses (on a 32-bit target a root of 4 leaves of 1 GiB).
use pagemap::ADDRESS_BITS;
const LEAF_BITS: usize = 18;
const PAGE_BITS: usize = 12;
const ROOT_BITS: usize = ADDRESS_BITS - PAGE_BITS - LEAF_BITS;
const LEAF_LEN: usize = 1 << LEAF_BITS;
type Leaf = [AtomicUsize; LEAF_LEN];
static LARGE_ROOT: [AtomicPtr<Leaf>; 1 << ROOT_BITS] =
    [const { AtomicPtr::new(ptr::null_mut()) }; 1 << ROOT_BITS];

#[inline]
fn large_split(a: usize) -> Option<(usize, usize)> {
    if a as u64 >= 1 << ADDRESS_BITS || a & (OS_PAGE - 1) != 0 {
        return None;
    }
    let page = a >> PAGE_BITS;
    Some((page >> LEAF_BITS, page & (LEAF_LEN - 1)))
}

#[inline]
fn large_get(a: usize) -> usize {
    let Some((r, l)) = large_split(a) else {
        return 0;
    };
    let leaf = LARGE_ROOT[r].load(Ordering::Acquire);
    if leaf.is_null() {
        return 0;
    }
    // SAFETY: leaves are never freed; `l` is in range.
    unsafe { (*leaf)[l].load(Ordering::Acquire) }
}

/// Bytes of the large map's leaves mapped, the spare included.
static LEAF_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Bytes of address space the large map takes: its leaves (2 MiB each, 1 MiB on a
/// 32-bit target, mapped on first use and never freed) and the spare leaf kept for
/// moves; the root is static.
pub fn large_map_bytes() -> usize {
    LEAF_BYTES.load(Ordering::Relaxed)
}

/// A fresh zeroed leaf, counted in [`large_map_bytes`]; `None` when it cannot be
/// mapped, even after the page heap's free runs gave their address space back.
fn map_leaf() -> Option<*mut Leaf> {
    let len = core::mem::size_of::<Leaf>();
    let p = crate::backend::page_heap::map_room(len, || os::map(len))?;
    LEAF_BYTES.fetch_add(core::mem::size_of::<Leaf>(), Ordering::Relaxed);
    Some(p.cast())
}

/// Unmaps a leaf of [`map_leaf`] that was never published.
///
/// # Safety
/// `leaf` came from [`map_leaf`], is in no root entry and is nobody else's.
unsafe fn unmap_leaf(leaf: *mut Leaf) {
    LEAF_BYTES.fetch_sub(core::mem::size_of::<Leaf>(), Ordering::Relaxed);
    // SAFETY: the caller's.
    unsafe { os::unmap(leaf.cast(), core::mem::size_of::<Leaf>()) };
}

/// A zeroed leaf kept mapped for [`realloc`]'s moves (taken with [`take_spare`]);
/// null when none is.
static SPARE: AtomicPtr<Leaf> = AtomicPtr::new(ptr::null_mut());

/// A zeroed leaf of the caller's own: the spare, or a fresh mapping; `None` when
/// none can be mapped.
fn take_spare() -> Option<*mut Leaf> {
    let s = SPARE.swap(ptr::null_mut(), Ordering::AcqRel);
    if !s.is_null() {
        return Some(s);
    }
    map_leaf()
}

/// Gives back a leaf from [`take_spare`] that was not used (still zero).
fn put_spare(leaf: *mut Leaf) {
    if SPARE
        .compare_exchange(ptr::null_mut(), leaf, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // SAFETY: our unpublished leaf; another spare is kept.
        unsafe { unmap_leaf(leaf) };
    }
}

/// Records `len` for the large object at `a`; `false` if its leaf cannot be mapped.
/// `spare` (a zeroed leaf of the caller's, from [`take_spare`]) is used, and taken
/// out, when a leaf is needed and mapping one fails.
fn large_set(a: usize, len: usize, spare: &mut Option<*mut Leaf>) -> bool {
    let Some((r, l)) = large_split(a) else {
        return false;
    };
    let mut leaf = LARGE_ROOT[r].load(Ordering::Acquire);
    if leaf.is_null() {
        let fresh: *mut Leaf = match map_leaf() {
            Some(p) => p,
            None => match spare.take() {
                Some(s) => s,
                None => return false,
            },
        };
        match LARGE_ROOT[r].compare_exchange(
            ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => leaf = fresh,
            Err(other) => {
                // SAFETY: our unpublished leaf (fresh, or the caller's spare).
                unsafe { unmap_leaf(fresh) };
                leaf = other;
            }
        }
    }
    // SAFETY: a published leaf, never freed.
    unsafe { (*leaf)[l].store(len, Ordering::Release) };
    true
}

fn large_clear(a: usize) {
    if let Some((r, l)) = large_split(a) {
        let leaf = LARGE_ROOT[r].load(Ordering::Acquire);
        if !leaf.is_null() {
            // SAFETY: a published leaf, never freed.
            unsafe { (*leaf)[l].store(0, Ordering::Release) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size_class::{first_offset, span_offset};

    /// The division-free object-start check against the plain one, for every class:
    /// all offsets of the first 64 KiB, every object start and its neighbours, and
    /// the span's tail.
    #[test]
    fn object_start_check_is_exact() {
        let fast = |c: usize, off: u64| {
            let h = front::header_offset_of(c);
            let r = object_start(h, off, 0);
            // The header bits `small` leaves in change nothing.
            assert_eq!(r, object_start(h, off, 0xffff), "class {c} offset {off}");
            assert_eq!(r, object_start(h, off, 0x1234), "class {c} offset {off}");
            assert_eq!(r, object_start(h, off, h as u64), "class {c} offset {off}");
            r
        };
        let plain = |c: usize, off: u64| {
            off < (objects_per_span(c) * size(c)) as u64 && off.is_multiple_of(size(c) as u64)
        };
        for c in 1..=CLASSES {
            let span = (span_pages(c) * PAGE_SIZE) as u64;
            for off in 0..span.min(1 << 16) {
                assert_eq!(fast(c, off), plain(c, off), "class {c} offset {off}");
            }
            let sz = size(c) as u64;
            let mut start = 0;
            while start <= span {
                for off in [start.wrapping_sub(1), start, start + 1, start + sz / 2] {
                    if off < span + sz {
                        assert_eq!(fast(c, off), plain(c, off), "class {c} offset {off}");
                    }
                }
                start += sz;
            }
            for off in span.saturating_sub(4096)..span + 4096 {
                assert_eq!(fast(c, off), plain(c, off), "class {c} offset {off}");
            }
            // The span's head, before its first object (whatever its colour):
            // negative offsets.
            for d in 1..=max_span_offset(c) as u64 {
                assert!(!fast(c, d.wrapping_neg()), "class {c} offset -{d}");
                assert!(!fast(c, (1 << 48) - d), "class {c} offset -{d}");
            }
        }
        // Header offsets of no class (0: a page of no small-object span) accept
        // nothing.
        let classes: Vec<usize> = (1..=CLASSES).map(front::header_offset_of).collect();
        for h in (0..1 << 16).step_by(8).filter(|h| !classes.contains(h)) {
            for off in (0..1 << 21).step_by(16).chain([1, 8, u64::MAX, 1 << 47]) {
                assert!(!object_start(h, off, 0), "header {h} offset {off}");
            }
        }
    }

    /// Objects of the classes above 1 KiB that are not powers of two never start on
    /// a 4 KiB boundary (`size_class::first_offset`), are aligned to their class's
    /// first offset, and are found by `small`: two spans' worth of each such class,
    /// allocated together.
    #[test]
    fn offset_classes_keep_objects_off_page_boundaries() {
        let _heap = crate::test_heap_shared();
        let mut checked = 0;
        for c in (1..=CLASSES).filter(|&c| first_offset(c) != 0) {
            let n = 2 * objects_per_span(c);
            let ps: Vec<usize> = (0..n).map(|_| alloc(size(c), MIN_ALIGN) as usize).collect();
            for &p in &ps {
                assert!(p != 0);
                assert!(p % OS_PAGE != 0, "class {c} ({}): {p:#x}", size(c));
                assert_eq!(p % first_offset(c), 0, "class {c}: {p:#x}");
                assert_eq!(small(p), Some((c, front::header_offset_of(c))));
                checked += 1;
            }
            for p in ps {
                // SAFETY: a small object of this module, freed once.
                unsafe { free(p as *mut u8, Block::Small { class: c }) };
            }
        }
        assert!(checked > 100);
    }

    /// Real spans of the 4,480-byte class (sqlite's page cache) are coloured: every
    /// object of 40 spans' worth sits at `start + span_offset(c, start) + i *
    /// size` of its span (`i < objects_per_span`), is found by `small`, and the
    /// spans' first offsets take at least four different colours.
    #[test]
    fn spans_of_a_class_take_their_colours() {
        let _heap = crate::test_heap_shared();
        let c = class_for(Layout::from_size_align(4368, 8).unwrap());
        let n = 40 * objects_per_span(c);
        let ps: Vec<usize> = (0..n).map(|_| alloc(size(c), MIN_ALIGN) as usize).collect();
        let mut offsets = Vec::new();
        for &p in &ps {
            assert!(p != 0);
            let s = pagemap::get(p);
            assert!(!s.is_null());
            // SAFETY: the span of a live object, never freed while `p` is held.
            let start = unsafe { (*s).start };
            let head = span_offset(c, start);
            let i = (p - start - head) / size(c);
            assert_eq!(p, start + head + i * size(c), "span {start:#x} head {head}");
            assert!(i < objects_per_span(c), "span {start:#x}: object {i}");
            assert_eq!(small(p), Some((c, front::header_offset_of(c))));
            offsets.push(head);
        }
        offsets.sort_unstable();
        offsets.dedup();
        assert!(offsets.len() >= 4, "first offsets {offsets:?}");
        for p in ps {
            // SAFETY: a small object of this module, freed once.
            unsafe { free(p as *mut u8, Block::Small { class: c }) };
        }
    }

    /// `small` and `lookup` on every byte of a real span of every class, through the
    /// real page map: an address is accepted exactly when it is `start +
    /// span_offset + i * size` with `i < objects_per_span`, and then names its class
    /// and header; every other address (the span's start and head before its first
    /// object, object interiors, the tail after its last object, and the byte before
    /// the span, which no object starts on as objects are 16-aligned) is `None`, and
    /// inside the span `Foreign`. (The byte after the span may start the next span's
    /// object.)
    #[test]
    fn every_address_of_a_span_is_checked_exactly() {
        let _heap = crate::test_heap_shared();
        let mut accepted = 0;
        for c in 1..=CLASSES {
            let p = alloc(size(c), MIN_ALIGN);
            assert!(!p.is_null());
            let s = pagemap::get(p as usize);
            assert!(!s.is_null());
            // SAFETY: the span of a live object, never freed while `p` is held; its
            // start and pages are not changed while it is in use.
            let (start, end) = unsafe { ((*s).start, (*s).end()) };
            assert_eq!(end - start, span_pages(c) * PAGE_SIZE, "class {c}");
            let (head, sz, n) = (span_offset(c, start), size(c), objects_per_span(c));
            let first = start + head;
            assert!(
                first + n * sz <= end,
                "class {c}: objects past the span's end"
            );
            let h = front::header_offset_of(c);
            for a in start - 1..end {
                let want = a >= first && a < first + n * sz && (a - first).is_multiple_of(sz);
                let got = small(a);
                assert_eq!(
                    got,
                    want.then_some((c, h)),
                    "class {c} ({sz}): span {start:#x}, address {a:#x} (first object at +{head})"
                );
                if want {
                    assert_eq!(lookup(a as *const u8), Block::Small { class: c });
                    accepted += 1;
                } else if a >= start {
                    assert_eq!(lookup(a as *const u8), Block::Foreign, "class {c} {a:#x}");
                    assert_eq!(usable_size(a as *const u8), None, "class {c} {a:#x}");
                }
            }
            // SAFETY: a small object of this module, freed once.
            unsafe { free(p, Block::Small { class: c }) };
        }
        let all: usize = (1..=CLASSES).map(objects_per_span).sum();
        assert_eq!(accepted, all);
    }

    /// `malloc`'s slow path for the sizes above the table up to `MAX_SMALL`: its
    /// first attempt (`MallocSlow::checked`) takes the header from `HEADER_BY_MID`,
    /// which is every such size's class's header, and pops an object of that class
    /// (one of the size freed just before, into this CPU's cache: tried until one
    /// comes back, wherever the caches are at one offset); `finish` gives an object
    /// of the class too. Alone, and the caches drained first: other tests' objects
    /// could fill the slot's budget (a free then goes to the middle, not the cache).
    #[test]
    fn sizes_above_the_table_pop_their_class_on_mallocs_slow_path() {
        use crate::size_class::class_of_size;
        for n in TABLE_MAX + 1..=MAX_SMALL {
            let c = class_of_size(n);
            assert_eq!(header_by_mid(n), front::header_offset_of(c), "size {n}");
        }
        let _heap = crate::test_heap_alone();
        let _ = front::drain_all();
        let sizes = [
            1025, 1152, 1153, 2048, 4097, 4480, 4481, 7000, 16385, 32768, 65536,
        ];
        for n in sizes.into_iter().chain([100_000, MAX_SMALL]) {
            let c = class_of_size(n);
            let q = MallocSlow(n).finish();
            assert_eq!(lookup(q), Block::Small { class: c }, "size {n}");
            // SAFETY: a small object of this module, freed once.
            unsafe { free(q, Block::Small { class: c }) };
            let one_offset = matches!(
                front::fast_path(),
                front::FastPath::LibcUnchecked
                    | front::FastPath::OwnUnchecked
                    | front::FastPath::ByCpu
                    | front::FastPath::ByWholeCid
            );
            let mut popped = false;
            for _ in 0..1000 {
                let p = malloc(n);
                assert!(!p.is_null());
                // SAFETY: as above.
                unsafe { free(p, Block::Small { class: c }) };
                match MallocSlow(n).checked() {
                    Ok(q) => {
                        assert_eq!(lookup(q), Block::Small { class: c }, "size {n}");
                        // SAFETY: as above.
                        unsafe { free(q, Block::Small { class: c }) };
                        popped = true;
                        break;
                    }
                    Err(slow) => assert_eq!(slow.0, n),
                }
            }
            assert!(popped || !one_offset, "size {n}: never popped");
        }
    }

    /// `small` (the fast path's check) on real objects and their neighbours: the
    /// class and header offset of every object start, `None` one byte off, for a
    /// few objects of every class.
    #[test]
    fn small_finds_class_and_header_of_real_objects() {
        let _heap = crate::test_heap_shared();
        for c in 1..=CLASSES {
            let layout = Layout::from_size_align(size(c), MIN_ALIGN).unwrap();
            assert_eq!(class_for(layout), c);
            let p = alloc(size(c), MIN_ALIGN) as usize;
            assert!(p != 0);
            let h = front::header_offset_of(c);
            assert_eq!(small(p), Some((c, h)), "class {c} object {p:#x}");
            assert_eq!(lookup(p as *const u8), Block::Small { class: c });
            for q in [p + 1, p + 8, p + size(c) / 2, p + size(c) - 1] {
                assert_eq!(small(q), None, "class {c} interior {q:#x} of {p:#x}");
                assert_eq!(lookup(q as *const u8), Block::Foreign);
            }
            // SAFETY: a small object of this module, freed once.
            unsafe { free(p as *mut u8, Block::Small { class: c }) };
        }
    }
}
