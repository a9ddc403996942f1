//! The page map: from an address to the span that holds it, in two loads, and to
//! the size class and start of a small-object span, in two loads as well.
//!
//! # Invariants
//! - A radix tree over the user address space (47 bits): the root is a static array
//!   of 2^16 pointers to leaves; a leaf, mapped on first use, holds 2^18 span
//!   pointers and covers 2 GiB. Leaves are never freed.
//! - Beside the span pointers a leaf holds one *info* word per page: for a page of a
//!   span of size class `c` (from [`set_small`] until [`clear_small`]),
//!   `front::header_offset(c) << 48 | start | c`: the span's start address (page
//!   aligned, below 2^47) with `c` in its low bits (classes are below 256) and the
//!   offset of the class's header in a front-end slot (below 2^16) in its top 16
//!   bits; 0 for every other page (free runs, pages no span covers). The C `free`
//!   reads it instead of the span record: class, start and the front-end's header
//!   in one load, no record to reach ([`INFO_HEADER_SHIFT`]).
//! - Entries are written under the page heap's lock, before the span they point to
//!   is handed to anyone (so a reader that got an object from a span finds it), and
//!   read without a lock.

use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use super::Span;
use crate::os;
use crate::size_class::PAGE_SHIFT;

const ADDRESS_BITS: usize = 47;
const LEAF_BITS: usize = 18;
const ROOT_BITS: usize = ADDRESS_BITS - PAGE_SHIFT - LEAF_BITS;
const LEAF_LEN: usize = 1 << LEAF_BITS;

/// A leaf: the span pointers, then the info words (see the module docs).
#[repr(C)]
struct Leaf {
    spans: [AtomicPtr<Span>; LEAF_LEN],
    info: [AtomicUsize; LEAF_LEN],
}

const ROOT_LEN: usize = 1 << ROOT_BITS;

static ROOT: [AtomicPtr<Leaf>; ROOT_LEN] = [const { AtomicPtr::new(ptr::null_mut()) }; ROOT_LEN];

const _: () = assert!(crate::size_class::CLASSES < 256 && PAGE_SHIFT >= 8);
const _: () = assert!(ADDRESS_BITS <= INFO_HEADER_SHIFT as usize);

/// Where the front-end's header offset sits in an info word (its top 16 bits).
pub const INFO_HEADER_SHIFT: u32 = 48;

/// [`ROOT`], addressed `%rip`-relative on x86_64 (see `rip_relative!`): the C `free`
/// is inlined into another crate.
#[inline(always)]
fn root() -> &'static [AtomicPtr<Leaf>; ROOT_LEN] {
    rip_relative!(ROOT, [AtomicPtr<Leaf>; ROOT_LEN])
}

/// Whether addresses up to `end` (exclusive) can be mapped.
pub fn covers(end: usize) -> bool {
    end <= 1 << ADDRESS_BITS
}

#[inline]
fn split(addr: usize) -> (usize, usize) {
    let page = addr >> PAGE_SHIFT;
    (page >> LEAF_BITS, page & (LEAF_LEN - 1))
}

/// The span holding `addr`, or null if no span was ever recorded there.
#[inline]
pub fn get(addr: usize) -> *mut Span {
    let (r, l) = split(addr);
    let leaf = ROOT[r].load(Ordering::Acquire);
    if leaf.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: leaves are never freed; `l` is in range.
    unsafe { (*leaf).spans[l].load(Ordering::Acquire) }
}

/// The info word of the page holding `addr` (see the module docs): `header << 48 |
/// start | class` for a page of a small-object span, 0 otherwise (also for
/// addresses beyond the map).
#[inline(always)]
pub fn info(addr: usize) -> usize {
    let (r, l) = split(addr);
    let Some(root) = root().get(r) else {
        return 0;
    };
    let leaf = root.load(Ordering::Acquire);
    if leaf.is_null() {
        return 0;
    }
    // SAFETY: leaves are never freed; `l` is in range.
    unsafe { (*leaf).info[l].load(Ordering::Acquire) }
}

/// Stores `v` as the info word of the pages `[first, last]` (addresses of pages).
fn set_info(first: usize, last: usize, v: usize) {
    let mut a = first;
    while a <= last {
        let (r, l) = split(a);
        let leaf = ROOT[r].load(Ordering::Acquire);
        debug_assert!(!leaf.is_null());
        // SAFETY: `ensure` mapped the leaf; leaves are never freed.
        unsafe { (*leaf).info[l].store(v, Ordering::Release) };
        a += 1 << PAGE_SHIFT;
    }
}

/// Records the span `span` (of size class `class`, `1..=CLASSES`) for all its pages,
/// with its info words. The leaves must exist ([`ensure`]), `span.start` is below
/// 2^47 ([`covers`]).
pub fn set_small(span: &Span, p: *mut Span, class: usize) {
    debug_assert!((1..256).contains(&class) && span.start & ((1 << PAGE_SHIFT) - 1) == 0);
    let last = span.end() - (1 << PAGE_SHIFT);
    set_range(span.start, last, p);
    // SAFETY: `class` is a class (caller).
    let hdr = unsafe { crate::front::header_offset(class) };
    set_info(
        span.start,
        last,
        hdr << INFO_HEADER_SHIFT | span.start | class,
    );
}

/// Clears the info words of `span`'s pages (the span stops being a small-object
/// span).
pub fn clear_small(span: &Span) {
    set_info(span.start, span.end() - (1 << PAGE_SHIFT), 0);
}

/// Makes sure the leaves for `[start, end)` exist; `false` if one could not be
/// mapped. Called under the page heap's lock.
pub fn ensure(start: usize, end: usize) -> bool {
    if !covers(end) {
        return false;
    }
    let (first, _) = split(start);
    let (last, _) = split(end - 1);
    for root in &ROOT[first..=last] {
        if root.load(Ordering::Acquire).is_null() {
            let Some(p) = os::map(core::mem::size_of::<Leaf>()) else {
                return false;
            };
            // Zeroed memory is a leaf of null pointers.
            root.store(p.cast(), Ordering::Release);
        }
    }
    true
}

/// Records `span` for the pages `[first, last]` (addresses of pages). The leaves
/// must exist ([`ensure`]).
pub fn set_range(first: usize, last: usize, span: *mut Span) {
    let mut a = first;
    while a <= last {
        let (r, l) = split(a);
        let leaf = ROOT[r].load(Ordering::Acquire);
        debug_assert!(!leaf.is_null());
        // SAFETY: `ensure` mapped the leaf; leaves are never freed.
        unsafe { (*leaf).spans[l].store(span, Ordering::Release) };
        a += 1 << PAGE_SHIFT;
    }
}

/// Records `span` for its first and last pages (a free run).
pub fn set_ends(span: &Span, p: *mut Span) {
    set_range(span.start, span.start, p);
    let last = span.end() - (1 << PAGE_SHIFT);
    set_range(last, last, p);
}
