//! Back-end: spans of pages carved from large `mmap`ed regions, the page map from
//! address to span, and large allocations mapped directly.
//!
//! # Invariants
//! - Every page of a region belongs to exactly one span: in use by a size class
//!   (all its pages are in the page map), or free in the page heap (its first and
//!   last pages are in the page map, so neighbours can merge), or not yet carved
//!   (beyond the region's bump pointer).
//! - A free span is either *backed* (its pages may hold memory) or *released*
//!   (given back with `MADV_DONTNEED`, or never touched): released pages read as
//!   zero and cost no memory. Backed free pages stay below [`page_heap::BACKED_FREE_LIMIT`]
//!   plus one span: beyond it, the largest backed runs are released.
//! - Span records live in memory the back-end maps for them; nothing here calls the
//!   global allocator. All of it is guarded by the page heap's lock.
//! - Large objects (above [`MAX_SMALL`](crate::size_class::MAX_SMALL), or aligned to
//!   more than a page) are their own mappings: freed with `munmap`, resized with
//!   `mremap`, fresh (so zeroed) when allocated. They are not in the page map: the
//!   layout that `dealloc` gets says where an object came from.

pub mod large;
pub mod page_heap;
pub mod pagemap;

/// A run of pages: a span in use by a size class, or a free run in the page heap.
/// Fields after `next`/`prev` are the middle's and are guarded by its class's lock.
#[derive(Debug)]
pub struct Span {
    /// First byte (page-aligned).
    pub start: usize,
    /// Number of pages.
    pub pages: usize,
    /// Size class (`0` for a free run).
    pub class: usize,
    /// Free run whose pages were released (read as zero, not resident).
    pub released: bool,
    /// Free backed run whose release the kernel refused (locked pages): not tried
    /// again on the page heap's own releases until it changes (taken, or an explicit
    /// release).
    pub refused: bool,
    /// Linked in a list (page heap free list, or the class's non-empty list).
    pub linked: bool,
    /// List links.
    pub next: *mut Span,
    /// List links.
    pub prev: *mut Span,
    /// Freed objects of this span, linked through their first word.
    pub freelist: *mut u8,
    /// Objects handed out from the span's fresh end so far.
    pub carved: usize,
    /// Objects of this span currently outside it (in caches or in use).
    pub allocated: usize,
    /// The span's pages read as zero when it was handed to its class (fresh from
    /// `mmap`, or released with `MADV_DONTNEED` since): its objects not carved yet
    /// are zero, so `alloc_zeroed` can hand them out without writing them.
    pub fresh: bool,
}

impl Span {
    /// A record covering nothing, in no list, with no objects.
    pub const EMPTY: Span = Span {
        start: 0,
        pages: 0,
        class: 0,
        released: false,
        refused: false,
        linked: false,
        next: core::ptr::null_mut(),
        prev: core::ptr::null_mut(),
        freelist: core::ptr::null_mut(),
        carved: 0,
        allocated: 0,
        fresh: false,
    };

    /// Bytes covered.
    pub fn bytes(&self) -> usize {
        self.pages << crate::size_class::PAGE_SHIFT
    }

    /// First address past the span.
    pub fn end(&self) -> usize {
        self.start + self.bytes()
    }
}

/// A doubly linked list of spans through `next`/`prev`.
#[derive(Debug)]
pub struct SpanList {
    /// First span, or null.
    pub head: *mut Span,
    /// Number of spans.
    pub len: usize,
}

impl Default for SpanList {
    fn default() -> Self {
        Self::new()
    }
}

impl SpanList {
    /// An empty list.
    pub const fn new() -> Self {
        SpanList {
            head: core::ptr::null_mut(),
            len: 0,
        }
    }

    /// Links `s` first.
    ///
    /// # Safety
    /// `s` is a valid span record, not in any list, and the caller holds the lock
    /// that guards both.
    pub unsafe fn push(&mut self, s: *mut Span) {
        // SAFETY: the caller's contract.
        unsafe {
            (*s).prev = core::ptr::null_mut();
            (*s).next = self.head;
            if !self.head.is_null() {
                (*self.head).prev = s;
            }
            (*s).linked = true;
        }
        self.head = s;
        self.len += 1;
    }

    /// Unlinks `s`.
    ///
    /// # Safety
    /// `s` is in this list, and the caller holds its lock.
    pub unsafe fn remove(&mut self, s: *mut Span) {
        // SAFETY: the caller's contract: `s` and its neighbours are valid records.
        unsafe {
            let (p, n) = ((*s).prev, (*s).next);
            if p.is_null() {
                self.head = n;
            } else {
                (*p).next = n;
            }
            if !n.is_null() {
                (*n).prev = p;
            }
            (*s).next = core::ptr::null_mut();
            (*s).prev = core::ptr::null_mut();
            (*s).linked = false;
        }
        self.len -= 1;
    }
}
