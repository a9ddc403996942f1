//! A per-CPU caching memory allocator on Linux restartable sequences:
//! [`PerCpuAlloc`], a [`GlobalAlloc`].
//!
//! ```
//! #[global_allocator]
//! static A: restartable_alloc::PerCpuAlloc = restartable_alloc::PerCpuAlloc::new();
//!
//! let v: Vec<u64> = (0..1000).collect();
//! assert_eq!(v.iter().sum::<u64>(), 499_500);
//! let s = restartable_alloc::stats();
//! assert!(s.in_use_bytes >= 8000);
//! ```
//!
//! # Layers
//! Read in this order; each module opens with its invariants.
//! - [`size_class`]: the 68 sizes small objects (up to 256 KiB) are rounded to.
//! - [`front`]: per-CPU caches (one array of free objects per size class per CPU, or
//!   per mm_cid), popped and pushed by restartable sequences from the `restartable`
//!   crate's op layer (its slab ops). No lock, no atomic read-modify-write, no
//!   allocation. Frees on another CPU go to that CPU's cache. Capacities grow for the
//!   classes that miss and shrink for cold ones within a per-CPU budget; another
//!   thread drains or resizes a CPU's caches after stopping them (a stop flag in each
//!   cache's header, which the sequences' header load sees, then a membarrier fence
//!   and a re-check of the flags).
//! - [`thread_cache`]: the fallback front-end, a small cache per thread for threads
//!   without rseq (valgrind, seccomp, other targets), flushed when the thread exits.
//! - [`middle`]: per class, a transfer cache and the central free list of spans;
//!   batches move between it and the front-ends under one lock per class. It also
//!   serves re-entrant calls directly.
//! - [`backend`]: the page heap (spans carved from 64 MiB regions, merged when freed,
//!   released to the OS with `madvise` past 8 MiB of free pages), the page map from
//!   address to span, and large objects mapped directly.
//! - [`os`]: every system call that maps memory; [`sync`]: the lock and the fork
//!   handlers.
//! - [`raw`]: allocation without a layout on free (`malloc`/`free` style, for the
//!   `restartable-malloc` C library): the page map and a large-object map say what a
//!   pointer is.
//!
//! # Guarantees
//! - Never calls the global allocator (all metadata lives in memory it maps itself)
//!   and survives re-entry: registering a thread in library-owned mode may allocate,
//!   and such nested calls are served by the middle.
//! - Out of memory (or address space) is a null pointer, never a panic or an abort.
//! - Any alignment: small objects up to a page (8 KiB), larger ones by mapping.
//! - `realloc` stays in place within a size class (and resizes large objects with
//!   `mremap`); `alloc_zeroed` of a large object writes nothing (fresh mappings are
//!   zero), nor does it for a small one of at least [`ZEROED_FROM_SPANS_MIN`] bytes
//!   when its class has a span fresh from `mmap` (or released) with objects never
//!   handed out.
//! - Fork-safe: the allocator's locks are taken around `fork`, so a child can
//!   allocate even if another thread was inside the allocator (the handlers are
//!   installed at the first lock, or when the C library is loaded: see
//!   [`sync::ensure_fork_handlers`]).
//! - Memory comes back: a span whose objects are all free returns to the page heap
//!   at once, and free pages beyond 8 MiB go back to the OS. What stays cached is
//!   bounded: per CPU (or mm_cid) slot at most
//!   [`size_class::max_cached_bytes_per_cpu`] bytes, at most
//!   [`size_class::transfer_bytes`] in the middle's transfer caches, and 8 MiB of
//!   free pages (see [`Stats::cached_bound`]). That bounds the cached objects' own
//!   bytes, not the spans they sit in: a span whose only free objects are cached
//!   stays resident (many 16-byte objects cached one per span can hold whole spans),
//!   until a drain or [`trim`] returns them and the span empties.
//!
//! # Signal handlers
//! Like C's `malloc`, the allocator is not async-signal-safe. Safe Rust cannot run
//! it in a signal handler: installing a handler that runs arbitrary code takes
//! `unsafe` (`sigaction`), whose contract is that the handler calls only
//! async-signal-safe functions. A handler that allocates or frees anyway, having
//! interrupted the allocator on its own thread, meets:
//! - on an allocation or free that the per-CPU caches serve (the restartable
//!   sequence), nothing: the interrupted sequence is aborted and retried after the
//!   handler;
//! - on every other path, one of the allocator's locks: the middle's lock of the
//!   class (a cache miss or spill), the page heap's, the front-end's set-up and
//!   drain locks, or the lock of the ranges whose `munmap` the kernel refused
//!   ([`os::unmap`]), which a free of a large object takes when its own `munmap` is
//!   refused, or after it while such ranges wait. The locks are not re-entrant: if
//!   the interrupted code holds the one the handler needs, the thread spins on it for
//!   ever (a deadlock, not undefined behaviour; held by another thread, the lock is
//!   only waited for);
//! - on a thread without rseq, its [`thread_cache`], which the handler would change
//!   under the interrupted operation: one object can be handed out twice.
//!
//! A handler that must allocate can block its signal around the allocations of the
//! threads it may interrupt, or leave the work to another thread.
//!
//! All instances share one process-wide heap, as `malloc` does.

#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

/// `&$s` (a static of type `$t`) with its address computed `%rip`-relative on
/// x86_64. Inlined into another crate (the fast paths and the C `free` are), a plain
/// reference to a static goes through the GOT on this toolchain: one more dependent
/// load on every `alloc`, `dealloc` and `free`. An asm `sym` operand makes the linker
/// resolve the address directly.
macro_rules! rip_relative {
    ($s:path, $t:ty) => {{
        #[cfg(target_arch = "x86_64")]
        {
            let p: *const $t;
            // SAFETY: only computes the static's address (no memory access).
            unsafe {
                core::arch::asm!(
                    "lea {s}(%rip), {p}",
                    s = sym $s,
                    p = out(reg) p,
                    options(att_syntax, pure, nomem, nostack, preserves_flags)
                );
            }
            // SAFETY: the address of a static, valid for the program's lifetime.
            unsafe { &*p }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            &$s
        }
    }};
}

/// The page map and the page heap's spans are written inside the crate only: a safe
/// function that took any address and span record would let safe code make `free`
/// follow a dangling record, or write through a leaf that is not mapped. So these
/// are not public:
///
/// ```compile_fail,E0603
/// restartable_alloc::backend::pagemap::set_range(0x1000, 0x1000, core::ptr::null_mut());
/// ```
/// ```compile_fail,E0603
/// use restartable_alloc::backend::{pagemap, Span};
/// pagemap::set_small(&Span::EMPTY, core::ptr::null_mut(), 1000);
/// ```
/// ```compile_fail,E0603
/// use restartable_alloc::backend::{pagemap, Span};
/// pagemap::set_ends(&Span::EMPTY, core::ptr::null_mut());
/// ```
/// ```compile_fail,E0603
/// use restartable_alloc::backend::{pagemap, Span};
/// pagemap::clear_small(&Span::EMPTY);
/// ```
/// ```compile_fail,E0603
/// let _ = restartable_alloc::backend::page_heap::alloc_span(1000, 1);
/// ```
/// Nor is mapping the page map's leaves, which the page heap does under its lock (a
/// second thread storing its own fresh leaf for the same range would drop the
/// entries of the spans just recorded in the first):
///
/// ```compile_fail,E0603
/// let _ = restartable_alloc::backend::pagemap::ensure(1 << 40, (1 << 40) + 4096);
/// ```
pub mod backend;
pub mod front;
pub mod middle;
pub mod os;
pub mod raw;
pub mod size_class;
pub mod sync;
pub mod thread_cache;

use core::alloc::{GlobalAlloc, Layout};
use core::marker::PhantomData;

use restartable::hooks::{Hooks, NoHooks};

use backend::{large, page_heap};
use size_class::{class_for, size, CLASSES};

/// The per-CPU caching allocator. Use it as the global allocator:
///
/// ```
/// #[global_allocator]
/// static A: restartable_alloc::PerCpuAlloc = restartable_alloc::PerCpuAlloc::new();
/// # fn main() {}
/// ```
///
/// or call its [`GlobalAlloc`] methods directly. `H` selects the instrumentation of
/// its restartable sequences ([`NoHooks`] by default; tests use
/// [`TestHooks`](restartable::hooks::TestHooks) to inject delays and check them).
pub struct PerCpuAlloc<H: Hooks = NoHooks> {
    _hooks: PhantomData<H>,
}

impl PerCpuAlloc {
    /// The allocator (all instances share one heap).
    pub const fn new() -> Self {
        PerCpuAlloc {
            _hooks: PhantomData,
        }
    }
}

impl Default for PerCpuAlloc {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: Hooks> PerCpuAlloc<H> {
    /// The allocator with sequences instrumented by `H`.
    pub const fn with_hooks() -> Self {
        PerCpuAlloc {
            _hooks: PhantomData,
        }
    }
}

impl<H: Hooks> core::fmt::Debug for PerCpuAlloc<H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PerCpuAlloc").finish_non_exhaustive()
    }
}

/// An object of class `c`, which is `class_for` of a layout (never above `CLASSES`).
/// `alloc_zeroed` of objects this large first asks the middle for an object of a
/// fresh span (zero without a write, one lock) instead of a cached one and a
/// `memset`; smaller ones are cheaper to clear than the lock.
pub const ZEROED_FROM_SPANS_MIN: usize = 4096;

/// `INLINE_TLS`: see [`front::alloc`] (`PerCpuAlloc`: true; `raw`: false).
#[inline(always)]
fn alloc_small<H: Hooks, const INLINE_TLS: bool>(c: usize) -> *mut u8 {
    debug_assert!((1..=CLASSES).contains(&c));
    // SAFETY: `c` comes from `class_for`, which returns at most CLASSES.
    unsafe { front::alloc::<H, INLINE_TLS>(c) }
}

/// # Safety
/// `p` is a free object of class `c` (its last use is over), `c` non-zero and from
/// `class_for`.
#[inline(always)]
unsafe fn dealloc_small<H: Hooks, const INLINE_TLS: bool>(c: usize, p: *mut u8) {
    // SAFETY: `c` is a class (caller); the slow paths get the caller's object.
    unsafe { front::dealloc::<H, INLINE_TLS>(c, p) }
}

/// [`alloc_small`] of an object of `n` bytes ([`size_class::table_size`]): from the
/// size straight to the front-end's header (`raw::HEADER_BY_BYTES`, by the size
/// itself: no rounding before the load), the class looked up on the slow paths only.
#[inline(always)]
fn alloc_by_size<H: Hooks>(n: usize) -> *mut u8 {
    // SAFETY: the header offset of the class of size `n`, and that class.
    unsafe {
        front::alloc_at::<H, true>(
            || raw::header_by_bytes(n),
            || size_class::class_of_index(n.div_ceil(size_class::MIN_ALIGN)),
        )
    }
}

/// [`dealloc_small`] of an object of `n` bytes (see [`alloc_by_size`]).
///
/// # Safety
/// `p` is a free object of the class of size `n` (`1..=TABLE_MAX`).
#[inline(always)]
unsafe fn dealloc_by_size<H: Hooks>(n: usize, p: *mut u8) {
    // SAFETY: the header offset of the class of size `n`, and that class; `p` an
    // object of it (caller).
    unsafe {
        front::dealloc_at::<H, true>(
            || raw::header_by_bytes(n),
            || size_class::class_of_index(n.div_ceil(size_class::MIN_ALIGN)),
            p,
        )
    }
}

/// `alloc` of any layout.
#[inline(never)]
fn alloc_any<H: Hooks>(layout: Layout) -> *mut u8 {
    let c = class_for(layout);
    if c != 0 {
        return alloc_small::<H, true>(c);
    }
    large::alloc(layout)
}

/// `dealloc` of any layout.
///
/// # Safety
/// As for [`GlobalAlloc::dealloc`].
#[inline(never)]
unsafe fn dealloc_any<H: Hooks>(ptr: *mut u8, layout: Layout) {
    let c = class_for(layout);
    if c != 0 {
        // SAFETY: the caller frees an object allocated with this layout, so of class
        // `c`.
        return unsafe { dealloc_small::<H, true>(c, ptr) };
    }
    // SAFETY: a large object of this layout.
    unsafe { large::dealloc(ptr, layout) }
}

// SAFETY: objects handed out are distinct until freed (each sits in exactly one
// place: a span, a cache, the transfer cache, or the caller's hands), aligned as the
// layout asks (size_class and backend::large invariants), and null is returned on
// failure; no method unwinds.
unsafe impl<H: Hooks> GlobalAlloc for PerCpuAlloc<H> {
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // Small, ordinarily aligned objects inline; everything else in a call (in tail
        // position, so the inlined path saves no registers for it).
        match size_class::table_size(layout) {
            Some(n) => alloc_by_size::<H>(n),
            None => alloc_any::<H>(layout),
        }
    }

    #[inline(always)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match size_class::table_size(layout) {
            // SAFETY: the caller frees an object allocated with this layout, so of
            // the class of size `n`.
            Some(n) => unsafe { dealloc_by_size::<H>(n, ptr) },
            // SAFETY: forwarded contract.
            None => unsafe { dealloc_any::<H>(ptr, layout) },
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let c = class_for(layout);
        if c != 0 {
            if size(c) >= ZEROED_FROM_SPANS_MIN {
                if let Some(p) = middle::remove_fresh(c) {
                    return p;
                }
            }
            let p = alloc_small::<H, true>(c);
            if !p.is_null() {
                // SAFETY: a fresh object of at least `layout.size()` bytes.
                unsafe { p.write_bytes(0, layout.size()) };
            }
            return p;
        }
        // A fresh mapping reads as zero.
        large::alloc(layout)
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        let (old_c, new_c) = (class_for(layout), class_for(new_layout));
        if old_c != 0 && old_c == new_c {
            return ptr;
        }
        if old_c == 0 && new_c == 0 {
            // SAFETY: a large object of `layout`, staying large.
            if let Some(q) = unsafe { large::realloc(ptr, layout, new_size) } {
                return q;
            }
        }
        // SAFETY: `new_layout` is valid (checked above).
        let q = unsafe { self.alloc(new_layout) };
        if !q.is_null() {
            // SAFETY: both objects are live, distinct, and hold at least the copied
            // length; the old one is freed after.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        q
    }
}

/// What the allocator holds, in bytes. Counters are read without stopping other
/// threads: each is exact when nothing allocates concurrently.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Handed out to the program and not freed (small objects counted at their size
    /// class, large ones at their mapping length). Objects in the fallback
    /// front-end's per-thread caches (threads without rseq) count as in use: another
    /// thread cannot see them.
    pub in_use_bytes: u64,
    /// Free objects in per-CPU caches, all slots together.
    pub cpu_cache_bytes: u64,
    /// Free objects per cache slot (per CPU, or per mm_cid when indexed by it);
    /// empty when no cache is set up (rseq unavailable, nothing allocated yet, or
    /// the cache region could not be mapped yet: out of address space, tried again
    /// later), and from [`stats_summary`].
    pub cpu_cache_bytes_per_slot: Vec<u64>,
    /// Free objects in the middle's transfer caches.
    pub transfer_cache_bytes: u64,
    /// Free space inside spans in use (freed objects, never-used tails, and the
    /// heads before the first objects of the classes with a
    /// [`span_offset`](size_class::span_offset)).
    pub span_free_bytes: u64,
    /// Free pages of the page heap that may still hold memory.
    pub page_heap_free_bytes: u64,
    /// Address space the allocator has mapped: the page heap's regions and span
    /// records, large objects, the per-CPU cache region, the page map's leaves
    /// ([`backend::pagemap`], 4 MiB each, 3 MiB on a 32-bit target) and the
    /// large-object map's ([`raw`], 2 MiB each, 1 MiB on a 32-bit target, its spare
    /// included), and ranges the kernel refused to unmap (see
    /// [`os::unmap`]), which wait to be unmapped again. Its statics (the maps'
    /// roots) are not counted. The C `mallinfo` reports it without the large
    /// objects as `arena`.
    pub mapped_bytes: u64,
    /// Free pages given back to the OS (or never touched): mapped, not resident.
    pub released_bytes: u64,
    /// Total bytes ever given back with `madvise`.
    pub released_total_bytes: u64,
    /// Bytes of large objects (their own mappings), included in `in_use_bytes`.
    pub large_bytes: u64,
    /// Whether per-CPU caches are in use, and indexed by mm_cid (`Some(true)`) or by
    /// CPU (`Some(false)`); `None` when they are not set up (see
    /// `cpu_cache_bytes_per_slot`).
    pub caches_by_mm_cid: Option<bool>,
    /// Small objects `alloc_zeroed` handed out from fresh spans, without writing
    /// zeros (see [`ZEROED_FROM_SPANS_MIN`]).
    pub zeroed_without_memset: u64,
}

impl Stats {
    /// The most free memory the allocator keeps resident outside spans with `slots`
    /// cache slots: the per-CPU caches (each slot at most
    /// [`size_class::max_cached_bytes_per_cpu`]), the transfer caches (at most
    /// [`size_class::transfer_bytes`] together) and the page heap's backed free pages
    /// (at most twice [`page_heap::BACKED_FREE_LIMIT`] in the worst case, as one
    /// freed span can exceed the limit before it is enforced), beyond pages the kernel
    /// refused to release (locked with `mlock`). Spans are not counted:
    /// neither partly used ones (they hold live objects) nor those whose remaining
    /// objects all sit in the caches (they stay resident until [`trim`] or a drain
    /// empties them).
    pub const fn cached_bound(slots: usize) -> usize {
        slots * size_class::max_cached_bytes_per_cpu()
            + size_class::transfer_bytes()
            + 2 * page_heap::BACKED_FREE_LIMIT
    }
}

/// The allocator's statistics (see [`Stats`]).
pub fn stats() -> Stats {
    let mode = front::mode();
    // Allocate before reading, so that the reading sees this vector in use.
    let slots = mode.map_or(0, |(n, _)| n);
    let mut per_slot = Vec::with_capacity(slots);
    per_slot.extend((0..slots).map(|s| front::cached_bytes(s) as u64));
    let mut s = totals(per_slot.iter().sum(), mode);
    s.cpu_cache_bytes_per_slot = per_slot;
    s
}

/// [`stats`] without the per-slot figures ([`Stats::cpu_cache_bytes_per_slot`] is
/// empty): allocates nothing, so it answers when memory is exhausted too (the C
/// library's `mallinfo2` and `malloc_stats`, which must not fail).
pub fn stats_summary() -> Stats {
    let mode = front::mode();
    let slots = mode.map_or(0, |(n, _)| n);
    let cached = (0..slots).map(|s| front::cached_bytes(s) as u64).sum();
    totals(cached, mode)
}

/// The statistics but the per-slot figures, with `cpu_cache_bytes` read already
/// (`mode`: [`front::mode`]).
fn totals(cpu_cache_bytes: u64, mode: Option<(usize, bool)>) -> Stats {
    let slots = mode.map_or(0, |(n, _)| n);
    let mut s = Stats {
        cpu_cache_bytes,
        caches_by_mm_cid: mode.map(|(_, cid)| cid),
        ..Stats::default()
    };
    let mut small_in_use: i64 = 0;
    for c in 1..=CLASSES {
        let m = middle::class_stats(c);
        let cached = front::cached_objects(c);
        let sz = size(c) as i64;
        small_in_use += (m.out as i64 - m.transfer as i64 - cached as i64) * sz;
        s.transfer_cache_bytes += (m.transfer * size(c)) as u64;
        s.span_free_bytes +=
            (m.spans * size_class::span_pages(c) * size_class::PAGE_SIZE - m.out * size(c)) as u64;
    }
    let h = page_heap::stats();
    s.large_bytes = large::in_use() as u64;
    s.in_use_bytes = small_in_use.max(0) as u64 + s.large_bytes;
    s.page_heap_free_bytes = h.backed_free as u64;
    s.released_bytes = (h.released_free + h.uncarved) as u64;
    s.released_total_bytes = h.released_total;
    let region = if slots == 0 {
        0
    } else {
        front::region_slots(slots) * front::STRIDE
    };
    s.mapped_bytes = (h.mapped
        + large::in_use()
        + region
        + backend::pagemap::mapped_bytes()
        + raw::large_map_bytes()
        + os::deferred_bytes()) as u64;
    s.zeroed_without_memset = middle::fresh_objects();
    s
}

/// Gives every free page back to the OS: drains the per-CPU caches (from this
/// thread, with membarrier fences; skipped where the kernel has none), empties the
/// transfer caches into their spans, and releases the page heap's free pages.
pub fn release_memory() {
    give_back(0);
}

/// The per-CPU caches drained, the transfer caches emptied into their spans, and the
/// page heap's free pages released until at most `keep` bytes of them stay resident.
fn give_back(keep: usize) {
    let _ = front::drain_all();
    middle::flush_transfer_caches();
    page_heap::release_keeping(keep);
}

/// Gives back what the allocator can, as C's `malloc_trim(keep)`: this thread's
/// fallback cache (threads without rseq) and every per-CPU cache (drained with
/// membarrier fences; skipped where the kernel has none) go to the middle, the
/// transfer caches go back to their spans (empty spans to the page heap), and the
/// page heap's free pages are released to the OS with `madvise` until at most `keep`
/// bytes of them stay resident. Returns the bytes released while it ran: what its
/// own release gave back and what the page heap's limit (8 MiB of free pages) gave
/// back as the drained caches emptied spans, and also what other threads' frees
/// released meanwhile (0: nothing was released). Spans that still hold a live
/// object stay as they are, and other threads' fallback caches are not reached.
pub fn trim(keep: usize) -> usize {
    let before = page_heap::stats().released_total;
    thread_cache::flush_here();
    give_back(keep);
    let after = page_heap::stats().released_total;
    usize::try_from(after.saturating_sub(before)).unwrap_or(usize::MAX)
}

/// The heap shared by this crate's unit tests, which libtest runs on parallel
/// threads: a test whose checks count a shared list or cache exactly (a delta of a
/// class's transfer cache) takes it for writing, so that no other test allocates,
/// frees or trims meanwhile; every other test that allocates, frees or trims takes it
/// for reading (they run together).
#[cfg(test)]
pub(crate) static TEST_HEAP: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// [`TEST_HEAP`] for a test that allocates, frees or trims (shared with the others).
#[cfg(test)]
pub(crate) fn test_heap_shared() -> std::sync::RwLockReadGuard<'static, ()> {
    TEST_HEAP.read().unwrap_or_else(|e| e.into_inner())
}

/// [`TEST_HEAP`] for a test that counts shared state exactly (alone).
#[cfg(test)]
pub(crate) fn test_heap_alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    TEST_HEAP.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_releases_the_free_pages_beyond_what_it_keeps() {
        let _heap = test_heap_shared();
        // 32 MiB of 1,000-byte objects, written (resident), then freed: what the
        // caches and the page heap kept resident goes back to the OS.
        let n = (32 << 20) / 1000;
        let objs: Vec<*mut u8> = (0..n)
            .map(|i| {
                let p = raw::alloc(1000, 16);
                assert!(!p.is_null(), "object {i}");
                // SAFETY: (test) a fresh object of 1,000 bytes.
                unsafe { p.write_bytes(0x5a, 1000) };
                p
            })
            .collect();
        for &p in &objs {
            // SAFETY: (test) live small objects from `raw::alloc`, freed once.
            unsafe { raw::free(p, raw::lookup(p)) };
        }
        drop(objs);
        // Keeping everything: only the page heap's own limit releases (the caches'
        // objects emptying spans); what it leaves is released below.
        let _ = trim(usize::MAX);
        let before = stats().released_total_bytes;
        let released = trim(0);
        assert!(released > 0, "trim(0) released nothing: {:?}", stats());
        assert!(
            stats().released_total_bytes >= before + released as u64,
            "released {released} bytes but the total did not grow by it"
        );
        // Nothing freed since: nothing left to release (other tests of this binary
        // may free meanwhile, so only what this call did is checked loosely).
        let again = trim(0);
        assert!(
            again < released,
            "a second trim(0) released {again} bytes, the first {released}"
        );
        // The allocator works after a trim.
        let p = raw::alloc(1000, 16);
        assert!(!p.is_null());
        // SAFETY: (test) a live object, freed once.
        unsafe { raw::free(p, raw::lookup(p)) };
    }
}
