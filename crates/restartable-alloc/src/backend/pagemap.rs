//! The page map: from an address to the span that holds it, in two loads.
//!
//! # Invariants
//! - A radix tree over the user address space (47 bits): the root is a static array
//!   of 2^16 pointers to leaves; a leaf, mapped on first use, holds 2^18 span
//!   pointers and covers 2 GiB. Leaves are never freed.
//! - Entries are written under the page heap's lock, before the span they point to
//!   is handed to anyone (so a reader that got an object from a span finds it), and
//!   read without a lock.

use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use super::Span;
use crate::os;
use crate::size_class::PAGE_SHIFT;

const ADDRESS_BITS: usize = 47;
const LEAF_BITS: usize = 18;
const ROOT_BITS: usize = ADDRESS_BITS - PAGE_SHIFT - LEAF_BITS;
const LEAF_LEN: usize = 1 << LEAF_BITS;

type Leaf = [AtomicPtr<Span>; LEAF_LEN];

static ROOT: [AtomicPtr<Leaf>; 1 << ROOT_BITS] =
    [const { AtomicPtr::new(ptr::null_mut()) }; 1 << ROOT_BITS];

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
    unsafe { (*leaf)[l].load(Ordering::Acquire) }
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
        unsafe { (*leaf)[l].store(span, Ordering::Release) };
        a += 1 << PAGE_SHIFT;
    }
}

/// Records `span` for its first and last pages (a free run).
pub fn set_ends(span: &Span, p: *mut Span) {
    set_range(span.start, span.start, p);
    let last = span.end() - (1 << PAGE_SHIFT);
    set_range(last, last, p);
}
