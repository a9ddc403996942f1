//! Large objects: one mapping each.
//!
//! # Invariants
//! - An object is large when its layout has no size class
//!   ([`class_for`](crate::size_class::class_for) is 0): above
//!   [`MAX_SMALL`](crate::size_class::MAX_SMALL) bytes or aligned to more than a page.
//!   Its mapping is exactly `mapping_len(layout)` bytes at the object's address,
//!   which is aligned as asked; nothing else is recorded about it.
//! - A new mapping is fresh memory: it reads as zero, so `alloc_zeroed` writes
//!   nothing.

use core::alloc::Layout;
use core::sync::atomic::{AtomicUsize, Ordering};

use super::page_heap;
use crate::os::{self, OS_PAGE};

static IN_USE: AtomicUsize = AtomicUsize::new(0);

/// Bytes of large objects' mappings.
pub fn in_use() -> usize {
    IN_USE.load(Ordering::Relaxed)
}

/// The length of a large object's mapping; `None` if it overflows.
#[inline]
pub fn mapping_len(size: usize) -> Option<usize> {
    os::round_up(size.max(1), OS_PAGE)
}

/// Maps a large object; null when the system refuses.
pub fn alloc(layout: Layout) -> *mut u8 {
    let Some(len) = mapping_len(layout.size()) else {
        return core::ptr::null_mut();
    };
    let align = layout.align().max(OS_PAGE);
    // Out of address space: the page heap's free runs give theirs back first (if
    // they could make room for the mapping, which is `len + align` when aligned).
    let need = if align > OS_PAGE {
        len.saturating_add(align)
    } else {
        len
    };
    let mapped = page_heap::map_room(need, || os::map_aligned(len, align));
    match mapped {
        Some(p) => {
            IN_USE.fetch_add(len, Ordering::Relaxed);
            p
        }
        None => core::ptr::null_mut(),
    }
}

/// Unmaps a large object.
///
/// # Safety
/// `p` came from [`alloc`] or [`realloc`] with this layout and is not used again.
pub unsafe fn dealloc(p: *mut u8, layout: Layout) {
    let len = mapping_len(layout.size()).unwrap_or(0);
    // SAFETY: the object's whole mapping (invariant above).
    unsafe { os::unmap(p, len) };
    IN_USE.fetch_sub(len, Ordering::Relaxed);
}

/// Resizes a large object that stays large, with `mremap` (which keeps page
/// alignment only: objects aligned to more than a page are not resized here).
/// `None` when it cannot: the caller copies instead. The old object stays valid on
/// `None`.
///
/// # Safety
/// As for [`dealloc`]; `new_size` keeps the object large.
pub unsafe fn realloc(p: *mut u8, layout: Layout, new_size: usize) -> Option<*mut u8> {
    if layout.align() > OS_PAGE {
        return None;
    }
    let old = mapping_len(layout.size())?;
    let new = mapping_len(new_size)?;
    if old == new {
        return Some(p);
    }
    // SAFETY: the object's whole mapping.
    let q = unsafe { os::remap(p, old, new)? };
    if new > old {
        IN_USE.fetch_add(new - old, Ordering::Relaxed);
    } else {
        IN_USE.fetch_sub(old - new, Ordering::Relaxed);
    }
    Some(q)
}

/// Grows a large object where it is (`mremap` without moving it): `false` when the
/// address space after it is taken, or objects aligned to more than a page. The
/// object stays valid either way.
///
/// # Safety
/// As for [`realloc`]; `new_size` is more than the object's mapping length.
pub(crate) unsafe fn grow_in_place(p: *mut u8, layout: Layout, new_size: usize) -> bool {
    if layout.align() > OS_PAGE {
        return false;
    }
    let (Some(old), Some(new)) = (mapping_len(layout.size()), mapping_len(new_size)) else {
        return false;
    };
    // SAFETY: the object's whole mapping.
    if !unsafe { os::remap_in_place(p, old, new) } {
        return false;
    }
    IN_USE.fetch_add(new - old, Ordering::Relaxed);
    true
}
