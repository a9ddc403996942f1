//! Size classes: the sizes small objects are rounded up to.
//!
//! # Invariants
//! - Classes are numbered `1..=CLASSES` (0 means "not a small object"); sizes grow
//!   strictly with the class number, every size is a multiple of [`MIN_ALIGN`] (16).
//! - Up to 128 bytes the classes are 16 bytes apart; above, every doubling
//!   `(2^e, 2^(e + 1)]` up to [`MAX_SMALL`] is split in four steps of `2^e / 4`, so
//!   rounding a request up wastes at most 25% of it (12.5% on average, as tcmalloc
//!   aims for), and from 1 KiB to 16 KiB ([`FINE_FROM`] to [`FINE_TO`]) in eight
//!   steps of `2^e / 8`: at most 12.5%, with one exception: the first class above
//!   4 KiB is [`PAGE_PLUS_HEADER`] (4,480), not 4,608, so sizes from 4,481 to 4,608
//!   round to 5,120 (at most 14.3%). Objects of a page plus a header (a database's
//!   page cache: sqlite allocates 4,368 bytes per 4 KiB page, and 4,104 for other
//!   page buffers) land in 4,480, and the same field of consecutive objects falls in
//!   14 cache-set groups of the 64 (the 4,608 class's 512-byte step modulo 4 KiB
//!   gave only 8; see [`PAGE_PLUS_HEADER`]).
//! - Every power of two from 16 to `MAX_SMALL` is a class. Spans start on a page
//!   boundary and objects sit at `span start + span_offset + i * size`
//!   ([`span_offset`]: an odd multiple of the class's [`first_offset`], by the
//!   span's address, its *colour*; 0 for powers of two and classes up to 1 KiB), so
//!   an object of a class whose size and first offset are multiples of `align`
//!   (for `align <= PAGE_SIZE`) is aligned to `align`: [`class_for`] picks the
//!   first such class at least as large as the request, and the power of two
//!   `max(size, align)` rounds to is always one.
//! - No object of a class above 1 KiB that is not a power of two starts on a 4 KiB
//!   boundary (see [`first_offset`] for why), whatever its span's colour; a span's
//!   colours ([`colours`]) take its slack after [`objects_per_span`] objects, at
//!   most half an object, so they cost no memory.
//! - [`class_for`] depends only on the layout, so `dealloc` and `realloc` (which get
//!   the layout back) find the class again without looking the address up.
//! - Per class: the span size ([`span_pages`]) holds whole objects with little waste;
//!   the batch moved between a per-CPU cache and the middle ([`batch`]) and the
//!   per-CPU cache capacity ([`capacity`]) shrink as objects grow, so the bytes a
//!   cache can hold stay bounded (see [`max_cached_bytes_per_cpu`]); what a slot's
//!   cache can grow to ([`max_capacity`]) is twice that (at most 256), and at least
//!   [`MID_MAX_CAPACITY`] objects for classes up to 64 KiB.

use core::alloc::Layout;

use crate::os::OS_PAGE;

/// Minimum alignment (and granularity) of small objects.
pub const MIN_ALIGN: usize = 16;
/// Largest small object: larger requests are mapped directly.
pub const MAX_SMALL: usize = 256 * 1024;
/// The allocator's page: spans are whole pages, aligned to a page.
pub const PAGE_SHIFT: usize = 13;
/// 8 KiB, as in tcmalloc: two OS pages.
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;
/// The first doubling `(2^e, 2^(e + 1)]` split in eighths rather than quarters.
pub const FINE_FROM: usize = 10;
/// The last doubling split in eighths: sizes from 1 KiB to 16 KiB.
pub const FINE_TO: usize = 13;
/// Log2 of [`MAX_SMALL`].
const MAX_SHIFT: usize = 18;

/// Classes in the doubling `(2^e, 2^(e + 1)]` (`7 <= e < 18`): four, eight in the
/// fine range.
const fn steps(e: usize) -> usize {
    if e >= FINE_FROM && e <= FINE_TO {
        8
    } else {
        4
    }
}

/// The class before the doubling `(2^e, 2^(e + 1)]` (`7 <= e <= 18`): its first class
/// is `FIRST[e] + 1`.
const FIRST: [usize; MAX_SHIFT + 1] = {
    let mut t = [0; MAX_SHIFT + 1];
    t[7] = 8;
    let mut e = 8;
    while e <= MAX_SHIFT {
        t[e] = t[e - 1] + steps(e - 1);
        e += 1;
    }
    t
};

/// Number of size classes.
pub const CLASSES: usize = FIRST[MAX_SHIFT];

/// The size of every class (index 0 unused).
const SIZES: [u32; CLASSES + 1] = {
    let mut t = [0u32; CLASSES + 1];
    let mut c = 1;
    while c <= 8 {
        t[c] = (c * MIN_ALIGN) as u32;
        c += 1;
    }
    let mut e = 7;
    while e < MAX_SHIFT {
        let mut i = 1;
        while i <= steps(e) {
            t[FIRST[e] + i] = ((1 << e) + i * ((1 << e) / steps(e))) as u32;
            i += 1;
        }
        e += 1;
    }
    // The first class above 4 KiB (`2^12`): see `PAGE_PLUS_HEADER`.
    t[FIRST[12] + 1] = PAGE_PLUS_HEADER as u32;
    t
};

/// The first class above 4 KiB: a page plus up to 384 bytes of header. Sized by
/// measurement (BENCHMARKS.md, "sqlite3, the rest of the gap"): sqlite keeps its page
/// cache in 4,368-byte blocks and reads a page's header, cell-pointer array and
/// `MemPage` on every B-tree step; with 4,608-byte objects (`4096 + 512`, a span's
/// objects at 8 positions modulo 4 KiB) those fields of all pages fall in 8 of the
/// L1's 64 set groups, with 4,480 (`4096 + 384`, period 32) in 14 per span (every
/// object of a 64 KiB span at its own position), and sqlite3's workload ran 2-3%
/// faster in rotating rounds. A 64 KiB span holds 14 objects of either size.
pub const PAGE_PLUS_HEADER: usize = 4480;

const _: () = assert!(size(CLASSES) == MAX_SMALL);
const _: () = assert!(size(8) == 128 && size(9) == 160);
const _: () = assert!(
    class_of_size(4096) + 1 == class_of_size(4097) && size(class_of_size(4097)) == PAGE_PLUS_HEADER
);

/// The size of objects of class `c` (`1..=CLASSES`).
#[inline]
pub const fn size(c: usize) -> usize {
    SIZES[c] as usize
}

/// The smallest class holding `n` bytes (`1..=MAX_SMALL`).
#[inline]
pub const fn class_of_size(n: usize) -> usize {
    if n <= 128 {
        if n == 0 {
            1
        } else {
            n.div_ceil(MIN_ALIGN)
        }
    } else {
        // 2^e < n <= 2^(e+1)
        let e = (usize::BITS - 1 - (n - 1).leading_zeros()) as usize;
        let step = (n - (1 << e)).div_ceil((1 << e) / steps(e));
        let c = FIRST[e] + step;
        // The step's class, or the next one where a class is smaller than its step
        // (`PAGE_PLUS_HEADER`, below 4,608).
        if (SIZES[c] as usize) < n {
            c + 1
        } else {
            c
        }
    }
}

/// Sizes up to this many bytes find their class with one table load.
pub const TABLE_MAX: usize = 1024;

/// [`class_of_size`] of every `n <= TABLE_MAX`, indexed by `(n + 15) / 16`.
const CLASS_TABLE: [u8; TABLE_MAX / MIN_ALIGN + 1] = {
    let mut t = [0u8; TABLE_MAX / MIN_ALIGN + 1];
    let mut i = 0;
    while i < t.len() {
        t[i] = class_of_size(i * MIN_ALIGN) as u8;
        i += 1;
    }
    t
};

/// The class of a layout of at most [`TABLE_MAX`] bytes aligned to at most
/// [`MIN_ALIGN`] (one table load), or `None` for any other layout.
#[inline(always)]
pub fn table_class(layout: Layout) -> Option<usize> {
    let (n, align) = (layout.size(), layout.align());
    (align <= MIN_ALIGN && n <= TABLE_MAX).then(|| CLASS_TABLE[n.div_ceil(MIN_ALIGN)] as usize)
}

/// The size of a layout of 1 to [`TABLE_MAX`] bytes aligned to at most
/// [`MIN_ALIGN`], or `None` for any other layout (size 0 included, which
/// `GlobalAlloc` is never asked for): the inlined paths' test, in one compare.
///
/// With `S = log2(TABLE_MAX / (2 * MIN_ALIGN))`: `(size - 1) >> S | align` (the
/// subtraction wrapping) is below `2 * MIN_ALIGN` (a power of two) exactly when both
/// sides are, as an OR of two numbers is below a power of two exactly when both
/// are; `(size - 1) >> S < 2 * MIN_ALIGN` is `size - 1 < TABLE_MAX`, i.e. `1 <=
/// size <= TABLE_MAX` (size 0 wraps to `usize::MAX`), and for a power of two, `align
/// < 2 * MIN_ALIGN` is `align <= MIN_ALIGN`. Nothing is shifted up, so nothing
/// wraps. Checked against the plain test by `tests::table_size_is_exact`.
#[inline(always)]
pub fn table_size(layout: Layout) -> Option<usize> {
    let (n, align) = (layout.size(), layout.align());
    if (n.wrapping_sub(1) >> TABLE_SIZE_SHIFT | align) < 2 * MIN_ALIGN {
        // SAFETY: shown above (`n - 1 < TABLE_MAX`): for the tables' bounds checks.
        unsafe { core::hint::assert_unchecked(n <= TABLE_MAX) };
        return Some(n);
    }
    None
}
const TABLE_SIZE_SHIFT: u32 = (TABLE_MAX / (2 * MIN_ALIGN)).trailing_zeros();
const _: () = assert!(
    TABLE_MAX.is_power_of_two()
        && MIN_ALIGN.is_power_of_two()
        && (2 * MIN_ALIGN) << TABLE_SIZE_SHIFT == TABLE_MAX
);

/// Sizes above [`TABLE_MAX`] find their class with one load too, by `(n - 1) >>
/// MID_SHIFT` ([`class_of_mid`]): every class size above [`TABLE_MAX`] is a multiple
/// of `1 << MID_SHIFT` (128 bytes), so all sizes of one such step round to the same
/// class (checked at compile time, and for every size by
/// `tests::the_tables_agree_with_the_computation`).
pub const MID_SHIFT: u32 = 7;

/// Entries of the tables by [`MID_SHIFT`] steps (up to [`MAX_SMALL`]).
pub const MID_LEN: usize = MAX_SMALL >> MID_SHIFT;

const _: () = {
    let mut c = 1;
    while c <= CLASSES {
        assert!(size(c) <= TABLE_MAX || size(c).is_multiple_of(1 << MID_SHIFT));
        c += 1;
    }
    assert!(TABLE_MAX.is_multiple_of(1 << MID_SHIFT) && CLASSES <= u16::MAX as usize);
};

/// [`class_of_size`] of the sizes `TABLE_MAX < n <= MAX_SMALL`, by `(n - 1) >>
/// MID_SHIFT` (entry `i` is the class of the step's largest size, `(i + 1) <<
/// MID_SHIFT`; the entries of the steps up to [`TABLE_MAX`] are not used).
///
/// `u16`, not `u8` as `CLASS_TABLE`: with two byte loads of the same shape in
/// [`class_for`]'s two branches, LLVM sank them into one load whose table, bias and
/// shift are selected per branch, which put a `mov`, a `mov`, a `jmp` and a shift by
/// `%cl` on `calloc`'s path for the table's sizes; loads of different widths stay
/// apart, and that path keeps its instructions (objdump of
/// `librestartable_malloc.so`'s `calloc`).
const MID_CLASS: [u16; MID_LEN] = {
    let mut t = [0u16; MID_LEN];
    let mut i = 0;
    while i < MID_LEN {
        t[i] = class_of_size((i + 1) << MID_SHIFT) as u16;
        i += 1;
    }
    t
};

/// The class of a size above [`TABLE_MAX`] and at most [`MAX_SMALL`] (one table
/// load): [`class_of_size`]`(n)`.
#[inline(always)]
pub fn class_of_mid(n: usize) -> usize {
    debug_assert!(n > TABLE_MAX && n <= MAX_SMALL);
    MID_CLASS[(n - 1) >> MID_SHIFT] as usize
}

/// The class table's index of a layout of at most [`TABLE_MAX`] bytes aligned to at
/// most [`MIN_ALIGN`] (`size.div_ceil(MIN_ALIGN)`, no load), or `None` for any other
/// layout: what [`class_of_index`] and the front-end's `HEADER_BY_SIZE` take.
#[inline(always)]
pub fn table_index(layout: Layout) -> Option<usize> {
    let (n, align) = (layout.size(), layout.align());
    (align <= MIN_ALIGN && n <= TABLE_MAX).then(|| n.div_ceil(MIN_ALIGN))
}

/// The class of the table index `i` (from [`table_index`]: at most
/// `TABLE_MAX / MIN_ALIGN`).
#[inline(always)]
pub fn class_of_index(i: usize) -> usize {
    CLASS_TABLE[i] as usize
}

/// The class of a layout, or 0 when it is not a small object (too large, or aligned
/// to more than a page). Depends only on the layout; never more than [`CLASSES`].
#[inline]
pub fn class_for(layout: Layout) -> usize {
    let (n, align) = (layout.size(), layout.align());
    if align <= MIN_ALIGN {
        if n <= TABLE_MAX {
            return CLASS_TABLE[n.div_ceil(MIN_ALIGN)] as usize;
        }
        if n <= MAX_SMALL {
            return class_of_mid(n);
        }
        return 0;
    }
    class_for_aligned(n, align)
}

#[cold]
fn class_for_aligned(n: usize, align: usize) -> usize {
    if align > PAGE_SIZE || n > MAX_SMALL {
        return 0;
    }
    let mut c = class_of_size(n.max(align));
    while c <= CLASSES && !(size(c).is_multiple_of(align) && first_offset(c).is_multiple_of(align))
    {
        c += 1;
    }
    if c <= CLASSES {
        c
    } else {
        0
    }
}

/// The fewest bytes a span of class `c` has before its first object (each span's
/// head, [`span_offset`], is an odd multiple of it): for a class above 1 KiB
/// whose size is not a power of two, half the largest power of two that divides the
/// size (at most half a 4 KiB page), so that objects start at `g / 2` modulo `g`
/// (`g` that power of two, capped at 4 KiB) and none on a 4 KiB boundary; 0 for the
/// others. Objects of such a class are aligned to the offset (64 bytes at least:
/// sizes above 1 KiB are multiples of 128), not to the whole power of two.
///
/// Why: with objects at `i * size` from a page-aligned span, a class whose size is a
/// multiple of 512 (5,632, 5,120, ...) puts every eighth object (every fourth, every
/// one for larger classes) on a 4 KiB boundary. Programs that keep a small header
/// before a page-sized buffer (sqlite's allocator prepends its 8-byte size to
/// every block, so its page cache's pages sit 8 bytes into 4,368-byte objects) then
/// have those buffers start a few bytes past a page boundary, and a copy from a
/// page-aligned source into them (the kernel's `pread` from the page cache) is
/// three to four times slower there than at any other offset: each store is to
/// an address that a load just ahead of it matches in its low 12 bits, which the
/// CPU takes for a dependency (4 KiB aliasing). `pread` of 4 KiB from a cached file
/// on this machine (AMD EPYC): 1.7-2.2 us into `page + 4`, `+ 8` or `+ 12`, 0.5-0.8
/// us at other offsets (`benches/c/pread_offset.c` of `restartable-malloc`;
/// BENCHMARKS.md, the sqlite3 section). glibc's chunks follow
/// each other at arbitrary 16-byte offsets and rarely start a page. Powers of two
/// keep offset 0: they are what aligned requests round to, and a 4 KiB request is
/// best page aligned (the same copy is fastest at offset 0).
pub const fn first_offset(c: usize) -> usize {
    let s = size(c);
    if s <= 1024 || s.is_power_of_two() {
        return 0;
    }
    let g = 1 << s.trailing_zeros();
    (if g > OS_PAGE { OS_PAGE } else { g }) / 2
}

/// How many first offsets (colours) the spans of class `c` take: 1 for the classes
/// with no [`first_offset`]; for the others, every odd multiple `u, 3u, 5u, ...` of
/// `u = first_offset(c)` up to half an object and up to what the span's slack after
/// [`objects_per_span`] objects leaves (each at least `u`, so never fewer objects),
/// and while the objects cover no more OS pages than with the first (so a full
/// span holds no more resident pages whatever its colour).
///
/// Why (slab colouring, Bonwick's): with one first offset, the same field of every
/// object of a class (a page cache's page headers, say) falls at the same few
/// positions modulo the L2 cache's set period (128 KiB on a 1 MiB 8-way cache), a
/// few hundred of its 2,048 sets for all spans of the class together; spreading
/// the first object over the span's slack spreads them over all the sets the
/// objects' alignment allows. Odd multiples of `u` keep what [`first_offset`]
/// gives: objects aligned to `u` and none on a 4 KiB boundary (the size is a
/// multiple of `2u`, so every object starts `u` past a multiple of `2u`, and `2u <=
/// 4 KiB`); at most half an object keeps the page map's check of a span's head exact
/// (`raw::MAGIC`).
pub const fn colours(c: usize) -> usize {
    let u = first_offset(c);
    if u == 0 {
        return 1;
    }
    let objects = objects_per_span_of(c) * size(c);
    let slack = span_pages_of(c) * PAGE_SIZE - objects;
    let half = size(c) / 2;
    let max = if slack < half { slack } else { half };
    // Each colour's objects cover no more OS pages than the first colour's (a span
    // full of objects holds no more resident pages).
    let mut n = 1;
    while u * (2 * n + 1) <= max && os_pages(u * (2 * n + 1), objects) <= os_pages(u, objects) {
        n += 1;
    }
    n
}

/// The OS pages that `bytes` bytes starting `head` bytes into a span cover.
const fn os_pages(head: usize, bytes: usize) -> usize {
    (head + bytes - 1) / OS_PAGE - head / OS_PAGE + 1
}

/// [`colours`] of every class (index 0 unused).
const COLOURS: [u16; CLASSES + 1] = {
    let mut t = [1u16; CLASSES + 1];
    let mut c = 1;
    while c <= CLASSES {
        t[c] = colours(c) as u16;
        c += 1;
    }
    t
};

/// The largest first offset a span of class `c` can have ([`span_offset`]).
pub const fn max_span_offset(c: usize) -> usize {
    first_offset(c) * (2 * colours(c) - 1)
}

/// Bytes before the first object of the span of class `c` that starts at `start`:
/// one of the class's [`colours`], `first_offset(c) * (2k + 1)`, `k` from a hash of
/// the span's page number (spans of one class follow each other in memory, and
/// their colours should not). Computed where a span is carved and where its pages'
/// info words are written (`pagemap::set_small`), never on the hit paths.
#[inline]
pub const fn span_offset(c: usize, start: usize) -> usize {
    let (n, u) = (COLOURS[c] as usize, first_offset(c));
    if n <= 1 {
        return u;
    }
    // Two rounds of multiply and fold (one alone leaves the colour tied to the
    // page number's low bits, so to the span's own position modulo 128 KiB), then
    // the top 32 bits scaled to `0..n`.
    let mut h = ((start >> PAGE_SHIFT) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 32;
    h = h.wrapping_mul(0xd6e8_feb8_6659_fd93);
    u * (2 * (((h >> 32) * n as u64) >> 32) as usize + 1)
}

/// Pages per span of class `c`: 64 KiB for objects up to 8 KiB (at least 8 objects,
/// at most 12.5% left over), else the fewest pages that hold four objects after the
/// class's [`first_offset`] with at most 12.5% left over (the offset included).
#[inline]
pub const fn span_pages(c: usize) -> usize {
    TABLES.span_pages[c] as usize
}

/// [`span_pages`], computed (for [`TABLES`]).
const fn span_pages_of(c: usize) -> usize {
    let s = size(c);
    if s <= 8 * 1024 {
        return 64 * 1024 / PAGE_SIZE;
    }
    let first = first_offset(c);
    let mut pages = (4 * s + first).div_ceil(PAGE_SIZE);
    while ((pages * PAGE_SIZE - first) % s + first) * 8 > pages * PAGE_SIZE {
        pages += 1;
    }
    pages
}

/// Objects in a span of class `c`.
#[inline]
pub const fn objects_per_span(c: usize) -> usize {
    TABLES.objects_per_span[c] as usize
}

/// [`objects_per_span`], computed (for [`TABLES`]).
const fn objects_per_span_of(c: usize) -> usize {
    (span_pages_of(c) * PAGE_SIZE - first_offset(c)) / size(c)
}

/// Objects moved at once between a per-CPU cache and the middle: 32 KiB worth, at
/// most [`MAX_BATCH`] (objects of 256 bytes and less move 128 at a time, so that a
/// producer and a consumer on two CPUs take the class's lock once per 128 objects
/// each).
#[inline]
pub const fn batch(c: usize) -> usize {
    TABLES.batch[c] as usize
}

/// [`batch`], computed (for [`TABLES`]).
const fn batch_of(c: usize) -> usize {
    clamp(32 * 1024 / size(c), 1, MAX_BATCH)
}

/// Largest batch of any class (sizes on-stack buffers).
pub const MAX_BATCH: usize = 128;

/// Per-CPU cache capacity of class `c`, in objects: about 64 KiB worth, between 1
/// and 128 objects, and at least two batches for objects up to 32 KiB.
pub const fn capacity(c: usize) -> usize {
    let by_bytes = clamp(64 * 1024 / size(c), 1, 128);
    let two = 2 * batch_of(c);
    if by_bytes < two && size(c) <= 32 * 1024 {
        two
    } else {
        by_bytes
    }
}

/// [`capacity`] of every class, as a table (index 0 unused): the fast path looks
/// the capacity up instead of dividing.
pub const CAPACITY: [usize; CLASSES + 1] = {
    let mut t = [0; CLASSES + 1];
    let mut c = 1;
    while c <= CLASSES {
        t[c] = capacity(c);
        c += 1;
    }
    t
};

/// Capacity of the middle's transfer cache of class `c`, in objects: 128 KiB worth
/// (four to eight batches up to 512-byte objects, at most [`TRANSFER_MAX`]), and at
/// least the
/// per-CPU [`capacity`] (two batches). A producer on one CPU and a consumer on
/// another hand batches to each other through it; when it has room for several
/// batches, the ups and downs of their pace do not overflow it into the spans
/// (where every object costs a page-map lookup and a write to the object, a miss
/// on memory the other CPU touched last).
#[inline]
pub const fn transfer_capacity(c: usize) -> usize {
    TABLES.transfer_capacity[c] as usize
}

/// [`transfer_capacity`], computed (for [`TABLES`]).
const fn transfer_capacity_of(c: usize) -> usize {
    let by_bytes = clamp(128 * 1024 / size(c), 1, TRANSFER_MAX);
    if by_bytes < capacity(c) {
        capacity(c)
    } else {
        by_bytes
    }
}

/// The most bytes the middle's transfer caches hold together.
pub const fn transfer_bytes() -> usize {
    let mut c = 1;
    let mut total = 0;
    while c <= CLASSES {
        total += transfer_capacity(c) * size(c);
        c += 1;
    }
    total
}

/// The largest transfer cache, in objects (eight batches of the smallest objects).
pub const TRANSFER_MAX: usize = 8 * MAX_BATCH;

/// The most objects a per-CPU cache of class `c` can grow to hold (the room its array
/// has in a slot): twice [`capacity`], at most 256, and at least
/// [`MID_MAX_CAPACITY`] for classes up to 64 KiB. What it holds at a time is its
/// current capacity, which starts at 0, grows by [`batch`] when the class misses,
/// and shrinks when the class is cold, within [`max_cached_bytes_per_cpu`].
#[inline]
pub const fn max_capacity(c: usize) -> usize {
    TABLES.max_capacity[c] as usize
}

/// [`max_capacity`], computed (for [`TABLES`]).
const fn max_capacity_of(c: usize) -> usize {
    let two = 2 * capacity(c);
    if size(c) <= 64 * 1024 && two < MID_MAX_CAPACITY {
        return MID_MAX_CAPACITY;
    }
    if two > 256 {
        256
    } else {
        two
    }
}

/// The least [`max_capacity`] of the classes up to 64 KiB (twice [`capacity`] gives
/// only 2 from 40 KiB up): four objects, so that a class's cache can hold what one
/// zlib stream frees and the next one allocates again (`deflateInit` takes four
/// 64 KiB buffers: window, `prev`, `head`, pending), and a class that a program
/// replaces objects of at random misses about one replacement in five instead of
/// one in three. The classes from 16 to 64 KiB at their most then hold 1,416 KiB
/// (1,000 before), within the slot's budget ([`max_cached_bytes_per_cpu`], 1.5 MiB),
/// which still bounds all classes together; capacities start at 0 and grow only as
/// the classes miss. Measured:
/// `mid_sizes big` (16-64 KiB) about half the time per call (BENCHMARKS.md, branch
/// `midsize`).
pub const MID_MAX_CAPACITY: usize = 4;

/// The bytes [`capacity`] objects of every class take: the bound of one thread's
/// fallback cache.
pub const fn capacity_bytes() -> usize {
    let mut c = 1;
    let mut total = 0;
    while c <= CLASSES {
        total += capacity(c) * size(c);
        c += 1;
    }
    total
}

/// The most bytes one CPU's (or mm_cid's) caches can hold, over all classes: the
/// budget their capacities share (1.5 MiB, tcmalloc's default).
pub const fn max_cached_bytes_per_cpu() -> usize {
    3 * 512 * 1024
}

/// The per-class numbers the slow paths read on every miss ([`batch`],
/// [`max_capacity`], [`transfer_capacity`], [`objects_per_span`], [`span_pages`]),
/// computed once at compile time: computed at run time they cost a `div` each (a
/// 64 KiB class's miss ran five, a tenth of `front::grow`'s samples; BENCHMARKS.md,
/// branch `midsize`).
struct Tables {
    batch: [u16; CLASSES + 1],
    max_capacity: [u16; CLASSES + 1],
    transfer_capacity: [u16; CLASSES + 1],
    objects_per_span: [u16; CLASSES + 1],
    span_pages: [u16; CLASSES + 1],
}

const TABLES: Tables = {
    let mut t = Tables {
        batch: [0; CLASSES + 1],
        max_capacity: [0; CLASSES + 1],
        transfer_capacity: [0; CLASSES + 1],
        objects_per_span: [0; CLASSES + 1],
        span_pages: [0; CLASSES + 1],
    };
    let mut c = 1;
    while c <= CLASSES {
        let v = [
            batch_of(c),
            max_capacity_of(c),
            transfer_capacity_of(c),
            objects_per_span_of(c),
            span_pages_of(c),
        ];
        let mut i = 0;
        while i < v.len() {
            assert!(v[i] <= u16::MAX as usize);
            i += 1;
        }
        t.batch[c] = v[0] as u16;
        t.max_capacity[c] = v[1] as u16;
        t.transfer_capacity[c] = v[2] as u16;
        t.objects_per_span[c] = v[3] as u16;
        t.span_pages[c] = v[4] as u16;
        c += 1;
    }
    t
};

const fn clamp(v: usize, lo: usize, hi: usize) -> usize {
    if v < lo {
        lo
    } else if v > hi {
        hi
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `table_size` against the plain test, for every alignment a layout can have
    /// and sizes around every power of two, the table's end and the largest ones.
    #[test]
    fn table_size_is_exact() {
        let mut sizes: Vec<usize> = (0..=TABLE_MAX + 64).collect();
        for b in 0..usize::BITS {
            let p = 1usize << b;
            sizes.extend([p - 1, p, p + 1, p.wrapping_mul(3) / 2]);
        }
        sizes.extend([isize::MAX as usize - 1, isize::MAX as usize, usize::MAX]);
        let mut checked = 0;
        for b in 0..usize::BITS {
            let align = 1usize << b;
            for &n in &sizes {
                let Ok(layout) = Layout::from_size_align(n, align) else {
                    continue;
                };
                let plain = (1..=TABLE_MAX).contains(&n) && align <= MIN_ALIGN;
                assert_eq!(
                    table_size(layout),
                    plain.then_some(n),
                    "size {n} align {align}"
                );
                checked += 1;
            }
        }
        // Most of them: every size up to the table's end for each alignment but the
        // largest few.
        assert!(
            checked > usize::BITS as usize * (TABLE_MAX + 64),
            "{checked}"
        );
    }

    #[test]
    fn sizes_grow_and_round_trip() {
        let mut prev = 0;
        for c in 1..=CLASSES {
            let s = size(c);
            assert!(s > prev && s.is_multiple_of(MIN_ALIGN), "class {c}: {s}");
            assert_eq!(class_of_size(s), c, "size {s}");
            assert_eq!(class_of_size(prev + 1), c, "size {}", prev + 1);
            prev = s;
        }
    }

    /// The tables (by 16 bytes up to `TABLE_MAX`, by `MID_SHIFT` steps above) against
    /// the computation, for every size a small object can have, and 0 past them.
    #[test]
    fn the_tables_agree_with_the_computation() {
        for n in 0..=MAX_SMALL {
            for align in [1, 8, MIN_ALIGN] {
                let l = Layout::from_size_align(n, align).unwrap();
                assert_eq!(class_for(l), class_of_size(n), "size {n} align {align}");
            }
            if n > TABLE_MAX {
                assert_eq!(class_of_mid(n), class_of_size(n), "size {n}");
            }
        }
        for n in [MAX_SMALL + 1, MAX_SMALL + 128, 2 * MAX_SMALL] {
            assert_eq!(class_for(Layout::from_size_align(n, 8).unwrap()), 0);
        }
    }

    #[test]
    fn every_size_fits_with_bounded_waste() {
        for n in 1..=MAX_SMALL {
            let c = class_of_size(n);
            let s = size(c);
            assert!(s >= n);
            if n > 128 {
                assert!((s - n) * 4 <= n, "{n} -> {s}");
            }
        }
    }

    #[test]
    fn aligned_classes_are_multiples_of_the_alignment() {
        for shift in 0..=PAGE_SHIFT {
            let align = 1 << shift;
            for n in [1, 7, 16, 17, 100, 1000, 4095, 4096, 5000, 70_000, MAX_SMALL] {
                let l = Layout::from_size_align(n, align).unwrap();
                let c = class_for(l);
                assert!(c != 0, "{n} / {align}");
                assert!(size(c) >= n && size(c).is_multiple_of(align.max(MIN_ALIGN)));
                assert!(first_offset(c).is_multiple_of(align), "{n} / {align}");
            }
        }
        let l = Layout::from_size_align(8, 2 * PAGE_SIZE).unwrap();
        assert_eq!(class_for(l), 0);
        let l = Layout::from_size_align(MAX_SMALL + 1, 8).unwrap();
        assert_eq!(class_for(l), 0);
    }

    /// In a page-aligned span, whatever its colour, no object of a class above 1 KiB
    /// that is not a power of two starts on a 4 KiB boundary; every object starts on
    /// a multiple of 64 bytes (of `MIN_ALIGN` below 1 KiB) and of the class's
    /// `first_offset`, and ends inside the span; the head is at most half an
    /// object.
    #[test]
    fn first_offsets_keep_objects_off_page_boundaries() {
        let mut coloured = 0;
        for c in 1..=CLASSES {
            let (s, first) = (size(c), first_offset(c));
            let bytes = span_pages(c) * PAGE_SIZE;
            assert_eq!(first == 0, s <= 1024 || s.is_power_of_two(), "class {c}");
            assert_eq!(max_span_offset(c), first * (2 * colours(c) - 1));
            assert!(first == 0 || 2 * max_span_offset(c) <= s, "class {c}");
            coloured += usize::from(colours(c) > 1);
            for k in 0..colours(c) {
                let head = first * (2 * k + 1);
                for i in 0..objects_per_span(c) {
                    let at = head + i * s;
                    assert!(at + s <= bytes, "class {c} colour {k}");
                    assert!(at.is_multiple_of(if s > 1024 { 64 } else { MIN_ALIGN }));
                    if first != 0 {
                        assert!(at.is_multiple_of(first), "class {c} colour {k}");
                        assert!(!at.is_multiple_of(OS_PAGE), "class {c} ({s}) object {i}");
                    }
                }
            }
        }
        assert!(coloured > 20, "{coloured} classes with colours");
        assert_eq!(first_offset(class_of_size(4368)), 64);
        assert_eq!(first_offset(class_of_size(4096)), 0);
    }

    /// A page plus a header of up to 384 bytes (sqlite's 4,104- and 4,368-byte page
    /// buffers) rounds to [`PAGE_PLUS_HEADER`], the next byte to 5,120; every object
    /// of that class's span starts at its own position modulo 4 KiB (4,608-byte
    /// objects would share 8), and at most 14.3% of a request above 4 KiB is waste.
    #[test]
    fn a_page_plus_a_header_rounds_to_its_own_class() {
        for n in [4097, 4104, 4368, 4480] {
            assert_eq!(size(class_of_size(n)), PAGE_PLUS_HEADER, "{n}");
        }
        assert_eq!(size(class_of_size(4481)), 5120);
        assert_eq!(size(class_of_size(4608)), 5120);
        let c = class_of_size(4368);
        let n = objects_per_span(c);
        let mut at: Vec<usize> = (0..n)
            .map(|i| (first_offset(c) + i * size(c)) % OS_PAGE)
            .collect();
        at.sort_unstable();
        at.dedup();
        assert_eq!((n, at.len()), (14, 14), "positions modulo 4 KiB: {at:?}");
        for n in 4097..=16 * 1024 {
            let s = size(class_of_size(n));
            assert!((s - n) * 7 <= n, "{n} -> {s}");
        }
    }

    /// `span_offset` gives every span one of its class's colours, and spans that
    /// follow each other take them all. The objects of 1,024 spans of the 4,480-byte
    /// class (sqlite's page cache), a page apart (so their starts take all 16
    /// positions modulo 128 KiB that a page-aligned start can), start in at least
    /// 1,000 of the 1,024 cache lines modulo 128 KiB (the L2's set period) that their
    /// alignment leaves them: a single first offset reaches 224 (16 starts times 14
    /// objects).
    #[test]
    fn span_offsets_colour_the_spans() {
        // Where the spans start: 4 GiB, or 256 MiB on a 32-bit target.
        const BASE: usize = 1 << if usize::BITS >= 64 { 32 } else { 28 };
        for c in 1..=CLASSES {
            let mut seen = vec![false; colours(c)];
            let bytes = span_pages(c) * PAGE_SIZE;
            for i in 0..64 * colours(c) {
                let start = BASE + i * bytes;
                let off = span_offset(c, start);
                let k = off.checked_div(first_offset(c)).unwrap_or(1);
                assert!(k % 2 == 1 && k / 2 < colours(c), "class {c}: offset {off}");
                assert_eq!(off, span_offset(c, start), "class {c}: the same again");
                seen[k / 2] = true;
            }
            assert!(seen.iter().all(|&s| s), "class {c}: colours {seen:?}");
        }
        let c = class_of_size(4368);
        assert_eq!(colours(c), 18);
        let bytes = span_pages(c) * PAGE_SIZE;
        let mut sets = vec![false; 2048];
        for i in 0..1024 {
            let start = BASE + i * (bytes + PAGE_SIZE);
            for j in 0..objects_per_span(c) {
                sets[((start + span_offset(c, start) + j * size(c)) >> 6) % 2048] = true;
            }
        }
        let reached = sets.iter().filter(|&&s| s).count();
        assert!(reached >= 1000, "{reached} of 2,048 sets");
    }

    /// Colours cost no resident memory: in every class, the OS pages that a span's
    /// objects cover (from the page of its first object's start to the page of its
    /// last object's last byte, all of them resident once every object was used)
    /// are, for every colour, no more than for the first colour. (Review of the
    /// colour branch: colours up to the span's slack put the last objects of the
    /// 6,656- and 10,240-byte classes on one more page than the first colour.)
    #[test]
    fn colours_touch_no_more_pages_than_the_first() {
        for c in (1..=CLASSES).filter(|&c| first_offset(c) != 0) {
            let (u, objects) = (first_offset(c), objects_per_span(c) * size(c));
            let pages = |head: usize| (head + objects - 1) / OS_PAGE - head / OS_PAGE + 1;
            for k in 0..colours(c) {
                let head = u * (2 * k + 1);
                assert!(
                    pages(head) <= pages(u),
                    "class {c} ({}): colour {k} covers {} pages, the first {}",
                    size(c),
                    pages(head),
                    pages(u)
                );
            }
        }
    }

    #[test]
    fn spans_hold_objects_with_little_waste() {
        for c in 1..=CLASSES {
            let bytes = span_pages(c) * PAGE_SIZE;
            let n = objects_per_span(c);
            assert!(n >= 1);
            assert!((bytes - n * size(c)) * 8 <= bytes, "class {c}");
            assert!(batch(c) <= MAX_BATCH && batch(c) <= capacity(c));
        }
        // Every class can grow to its static capacity within the budget.
        for c in 1..=CLASSES {
            assert!(capacity(c) <= max_capacity(c));
            assert!(max_capacity(c) * size(c) <= max_cached_bytes_per_cpu());
        }
    }

    /// Every class up to 64 KiB can cache [`MID_MAX_CAPACITY`] objects per slot, and
    /// the larger ones keep twice their [`capacity`].
    #[test]
    fn classes_up_to_64_kib_can_cache_four_objects() {
        for c in 1..=CLASSES {
            if size(c) <= 64 * 1024 {
                assert!(
                    max_capacity(c) >= MID_MAX_CAPACITY,
                    "class {c} ({} bytes)",
                    size(c)
                );
            } else {
                assert_eq!(max_capacity(c), 2 * capacity(c), "class {c}");
            }
        }
        assert_eq!(max_capacity(class_of_size(64 * 1024)), MID_MAX_CAPACITY);
        // What `MID_MAX_CAPACITY`'s docs say: the classes from 16 to 64 KiB at their
        // most hold 1,416 KiB, within the slot's budget.
        let mid: usize = (1..=CLASSES)
            .filter(|&c| (16 * 1024..=64 * 1024).contains(&size(c)))
            .map(|c| max_capacity(c) * size(c))
            .sum();
        assert_eq!(mid, 1416 * 1024);
        assert!(mid <= max_cached_bytes_per_cpu());
    }

    /// The tables the slow paths read hold what the computations give, for every
    /// class.
    #[test]
    fn the_class_tables_hold_the_computations() {
        for c in 1..=CLASSES {
            assert_eq!(batch(c), batch_of(c), "batch, class {c}");
            assert_eq!(
                max_capacity(c),
                max_capacity_of(c),
                "max_capacity, class {c}"
            );
            assert_eq!(
                transfer_capacity(c),
                transfer_capacity_of(c),
                "transfer_capacity, class {c}"
            );
            assert_eq!(
                objects_per_span(c),
                objects_per_span_of(c),
                "objects_per_span, class {c}"
            );
            assert_eq!(span_pages(c), span_pages_of(c), "span_pages, class {c}");
        }
    }
}
