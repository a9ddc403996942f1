//! The operating-system seam: every `mmap`, `munmap`, `mremap` and `madvise` of the
//! allocator is made here, and nothing here allocates.
//!
//! # Invariants
//! - Failures are values (`None` / `false`), never panics: an exhausted address
//!   space (`RLIMIT_AS`, `ENOMEM`) becomes a null pointer at the top. They leave the
//!   thread's `errno` as it was (`keeping_errno`): a failed mapping inside a call
//!   that succeeds all the same (a retry, a smaller region, the caches' set-up tried
//!   again inside a `free`) must not change it, and the C layer sets `ENOMEM` itself
//!   when it returns null.
//! - A range whose `munmap` the kernel refuses (`vm.max_map_count`) is deferred, not
//!   forgotten: released, listed through its own first bytes, counted in
//!   [`deferred_bytes`], unmapped again later ([`unmap`]). Nothing is reused from it.
//!   It stays listed until it is unmapped (a retry works under the list's lock,
//!   which the fork handlers take too). A retry after an unmap stops at the first
//!   range still refused (bounded work per unmap while the limit holds); one after
//!   a mapping failed for want of address space tries each range once.
//! - Fresh anonymous private mappings read as zero, and so do pages after
//!   `MADV_DONTNEED`: callers rely on both to hand out zeroed memory without writing.

use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use crate::sync::{RawLock, SpinLock};

/// Counts the calls that gave address space back ([`unmap`], a shrinking [`remap`];
/// not the trimming of a mapping just made, in [`map_aligned`]):
/// a thread whose mapping failed and that finds nothing of its own to unmap maps
/// again if this moved since its attempt (another thread made room meanwhile).
static UNMAPPED: AtomicUsize = AtomicUsize::new(0);

/// The number of times address space was given back so far (see `UNMAPPED`).
pub(crate) fn unmapped_generation() -> usize {
    UNMAPPED.load(Ordering::SeqCst)
}

fn gave_back_address_space() {
    UNMAPPED.fetch_add(1, Ordering::SeqCst);
}

/// The test hook run after a mapping failed (see [`set_map_failed_hook`]); null when
/// none.
static MAP_FAILED_HOOK: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());

/// Test instrument: `f` runs each time a mapping of the allocator fails for want of
/// address space, before the page heap's free runs are unmapped to make room (a test
/// holds two threads there to force both to fail before either unmaps). `None`
/// removes it.
///
/// # Safety
/// `f` runs inside the allocator, sometimes with the page heap's lock held: it must
/// not allocate or call anything that allocates, and must return.
#[doc(hidden)]
pub unsafe fn set_map_failed_hook(f: Option<fn()>) {
    MAP_FAILED_HOOK.store(
        f.map_or(ptr::null_mut(), |f| f as *mut ()),
        Ordering::SeqCst,
    );
}

/// Runs the hook of [`set_map_failed_hook`], if any.
#[cold]
pub(crate) fn map_failed() {
    let h = MAP_FAILED_HOOK.load(Ordering::SeqCst);
    if !h.is_null() {
        // SAFETY: only `set_map_failed_hook` stores here, and it stores a `fn()`.
        let f: fn() = unsafe { core::mem::transmute::<*mut (), fn()>(h) };
        f();
    }
}

/// The kernel's page size (4 KiB on x86_64).
pub const OS_PAGE: usize = 4096;

/// Runs `call` (a system call), and puts the thread's `errno` back as it was when
/// the call reports failure (`ok` false): the allocator's failures are values, and
/// a C call that succeeds (or `free`, which cannot fail) leaves `errno` alone.
#[inline]
fn keeping_errno<T>(call: impl FnOnce() -> T, ok: impl FnOnce(&T) -> bool) -> T {
    // SAFETY: `__errno_location` is the calling thread's `errno`, always valid.
    let errno = unsafe { *libc::__errno_location() };
    let r = call();
    if !ok(&r) {
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = errno };
    }
    r
}

/// Mappings of this length fail ([`refuse_maps_of`]; 0: none).
static REFUSE_MAP_LEN: AtomicUsize = AtomicUsize::new(0);
/// [`unmapped_generation`] when [`refuse_maps_of`] was called.
static REFUSE_MAP_GENERATION: AtomicUsize = AtomicUsize::new(0);
/// Mappings refused by [`refuse_maps_of`] so far.
static REFUSED_MAPS: AtomicUsize = AtomicUsize::new(0);

/// Test instrument: from now on, mappings of exactly `len` bytes fail as at an
/// address-space limit until address space is given back (an unmap, or a
/// shrinking remap: [`unmapped_generation`] moves); other mappings go through (a
/// test picks the length of the one mapping it fails: a leaf of a map, a chunk
/// of span records). 0 stops it.
#[doc(hidden)]
pub fn refuse_maps_of(len: usize) {
    REFUSE_MAP_GENERATION.store(unmapped_generation(), Ordering::SeqCst);
    REFUSE_MAP_LEN.store(len, Ordering::SeqCst);
}

/// Test instrument: how many mappings [`refuse_maps_of`] refused so far.
#[doc(hidden)]
pub fn refused_maps() -> usize {
    REFUSED_MAPS.load(Ordering::SeqCst)
}

/// Whether [`refuse_maps_of`] refuses a mapping of `len` bytes now.
#[inline]
fn map_refused(len: usize) -> bool {
    let refused = REFUSE_MAP_LEN.load(Ordering::Relaxed);
    if refused == 0
        || refused != len
        || unmapped_generation() != REFUSE_MAP_GENERATION.load(Ordering::SeqCst)
    {
        return false;
    }
    REFUSED_MAPS.fetch_add(1, Ordering::SeqCst);
    true
}

/// Maps `len` bytes (a multiple of [`OS_PAGE`]) of fresh, zeroed, read-write memory.
/// `None` (and `errno` unchanged) when the kernel refuses.
pub fn map(len: usize) -> Option<*mut u8> {
    if map_refused(len) {
        return None;
    }
    let p = keeping_errno(
        || {
            // SAFETY: an anonymous private mapping at an address of the kernel's
            // choosing touches no existing memory.
            unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            }
        },
        |&p| p != libc::MAP_FAILED,
    );
    if p == libc::MAP_FAILED {
        None
    } else {
        Some(p.cast())
    }
}

/// Maps `len` bytes aligned to `align` (a power of two, at least [`OS_PAGE`]): maps
/// `len + align` and unmaps the excess on both sides.
pub fn map_aligned(len: usize, align: usize) -> Option<*mut u8> {
    if align <= OS_PAGE {
        return map(len);
    }
    let total = len.checked_add(align)?;
    let p = map(total)? as usize;
    let start = (p + align - 1) & !(align - 1);
    let head = start - p;
    let tail = total - head - len;
    // SAFETY: both ranges are parts of the mapping just made, outside [start, start+len).
    unsafe {
        if head > 0 {
            unmap_as(p as *mut u8, head, false);
        }
        if tail > 0 {
            unmap_as((start + len) as *mut u8, tail, false);
        }
    }
    Some(start as *mut u8)
}

/// Unmaps `len` bytes at `p`.
///
/// `munmap` can fail: splitting a mapping needs a new one, and the kernel refuses
/// (`ENOMEM`) when the process has `vm.max_map_count` of them. The range is then
/// *deferred*, not lost and never reused: its pages are released (`MADV_DONTNEED`,
/// which splits nothing) and it waits, linked through its first bytes, in a list of
/// ranges to unmap, counted in [`deferred_bytes`] (so in the mapped bytes of the
/// statistics), until an unmap succeeds or a mapping fails for want of address
/// space (`retry_deferred`). The caller forgets the range either way.
///
/// # Safety
/// `[p, p + len)` must be a mapped, writable range this allocator owns and nobody
/// uses, `p` page aligned and `len` a non-zero multiple of [`OS_PAGE`].
pub unsafe fn unmap(p: *mut u8, len: usize) {
    // SAFETY: forwarded.
    unsafe { unmap_as(p, len, true) }
}

/// [`unmap`]; `room` false for the excess of a mapping just made ([`map_aligned`]),
/// which gives back no address space the process had before: it does not move
/// [`unmapped_generation`] (a thread whose mapping failed maps again only for room
/// that was not there at its attempt).
///
/// # Safety
/// As for [`unmap`].
unsafe fn unmap_as(p: *mut u8, len: usize, room: bool) {
    // SAFETY: the caller owns the range.
    if unsafe { munmap_or_refuse(p, len) } {
        if room {
            gave_back_address_space();
        }
        if DEFERRED_BYTES.load(Ordering::Relaxed) != 0 {
            retry_deferred(false);
        }
        return;
    }
    // SAFETY: the caller owns the range, which is still mapped (and writable).
    unsafe {
        release(p, len);
        defer(p.cast(), len);
    }
}

/// `munmap`, or a refusal injected by [`refuse_unmaps`]; `errno` unchanged either
/// way (C's `free` leaves it alone).
///
/// # Safety
/// As for [`unmap`].
unsafe fn munmap_or_refuse(p: *mut u8, len: usize) -> bool {
    if REFUSE_UNMAPS.load(Ordering::Relaxed) > 0
        && REFUSE_UNMAPS
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        return false;
    }
    keeping_errno(
        // SAFETY: the caller owns the range.
        || unsafe { libc::munmap(p.cast(), len) } == 0,
        |&done| done,
    )
}

/// A range whose unmapping the kernel refused, written at its own start.
#[repr(C)]
struct Deferred {
    next: *mut Deferred,
    len: usize,
}

/// The deferred ranges (see [`unmap`]), oldest first: a queue through their first
/// bytes.
struct DeferredList {
    head: *mut Deferred,
    tail: *mut Deferred,
}

// SAFETY: the ranges are the list's alone, used under its lock only.
unsafe impl Send for DeferredList {}

impl DeferredList {
    /// Links `d` (a range written with its `len`) last.
    ///
    /// # Safety
    /// `d` is a deferred range of nobody else, in no list.
    unsafe fn push(&mut self, d: *mut Deferred) {
        // SAFETY: `d` and the tail are mapped ranges of the list's.
        unsafe {
            (*d).next = ptr::null_mut();
            if self.tail.is_null() {
                self.head = d;
            } else {
                (*self.tail).next = d;
            }
        }
        self.tail = d;
    }

    /// Unlinks the first range (null when there is none).
    fn pop(&mut self) -> *mut Deferred {
        let d = self.head;
        if !d.is_null() {
            // SAFETY: a listed range: mapped, the list's.
            self.head = unsafe { (*d).next };
            if self.head.is_null() {
                self.tail = ptr::null_mut();
            }
        }
        d
    }
}

/// The deferred ranges. A range stays in the list (under this lock) until it is
/// unmapped: a retry holds the lock from taking a range to listing it again, and
/// the fork handlers take it too (last: [`unmap`] runs under the page heap's lock),
/// so a child never inherits a range taken out of the list by a thread it does not
/// have (mapped for ever in the child).
static DEFERRED: SpinLock<DeferredList> = SpinLock::new(DeferredList {
    head: ptr::null_mut(),
    tail: ptr::null_mut(),
});
/// Bytes of the deferred ranges (written under [`DEFERRED`]'s lock).
static DEFERRED_BYTES: AtomicUsize = AtomicUsize::new(0);
/// Unmaps of deferred ranges tried so far (see [`deferred_retries`]).
static RETRIES: AtomicUsize = AtomicUsize::new(0);
/// Unmaps that [`munmap_or_refuse`] still refuses (a test's fault injection).
static REFUSE_UNMAPS: AtomicUsize = AtomicUsize::new(0);
/// Retries of deferred ranges of this length are refused (a test's fault
/// injection; 0: none, `usize::MAX`: every one).
static REFUSE_RETRIES: AtomicUsize = AtomicUsize::new(0);
/// The test hook run before each retried unmap (see [`set_retry_hook`]); null when
/// none.
static RETRY_HOOK: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());

/// Times the fork handlers went to take the deferred ranges' lock (see
/// [`fork_takes_of_deferred`]).
static FORK_TAKES: AtomicUsize = AtomicUsize::new(0);

/// The deferred ranges' lock as the fork handlers take it: counted first (a test
/// holds a retry until a `fork` waits for its lock).
struct ForkLock;

impl RawLock for ForkLock {
    fn take(&self) {
        FORK_TAKES.fetch_add(1, Ordering::SeqCst);
        DEFERRED.take();
    }
    unsafe fn give(&self) {
        // SAFETY: forwarded.
        unsafe { DEFERRED.give() }
    }
    #[cfg(test)]
    fn word(&self) -> usize {
        DEFERRED.word()
    }
}

/// The deferred ranges' lock, for the fork handlers.
pub(crate) fn deferred_lock() -> &'static dyn RawLock {
    &ForkLock
}

/// Test instrument: how many times the fork handlers went to take the deferred
/// ranges' lock (counted before they wait for it).
#[doc(hidden)]
pub fn fork_takes_of_deferred() -> usize {
    FORK_TAKES.load(Ordering::SeqCst)
}

/// Bytes whose unmapping the kernel refused and that wait to be unmapped again:
/// still mapped (address space), their pages released.
pub fn deferred_bytes() -> usize {
    DEFERRED_BYTES.load(Ordering::Relaxed)
}

/// Test instrument: how many unmaps of deferred ranges were tried so far (a count
/// of system calls, refused or not).
#[doc(hidden)]
pub fn deferred_retries() -> usize {
    RETRIES.load(Ordering::SeqCst)
}

/// Test instrument: the next `n` unmaps of the allocator fail as `munmap` does at
/// the `vm.max_map_count` limit (the range stays mapped), without calling it. (Lowering
/// the limit itself takes root and changes the whole machine.)
#[doc(hidden)]
pub fn refuse_unmaps(n: usize) {
    REFUSE_UNMAPS.store(n, Ordering::SeqCst);
}

/// Test instrument: while `on`, every retried unmap of a deferred range fails (as
/// the kernel refuses, while the process is at `vm.max_map_count`, the unmaps that
/// would split a mapping) and other unmaps go through.
#[doc(hidden)]
pub fn refuse_deferred_retries(on: bool) {
    REFUSE_RETRIES.store(if on { usize::MAX } else { 0 }, Ordering::SeqCst);
}

/// Test instrument: [`refuse_deferred_retries`] for the deferred ranges of exactly
/// `len` bytes only (those that would still split a mapping); 0 stops it.
#[doc(hidden)]
pub fn refuse_deferred_retries_of(len: usize) {
    REFUSE_RETRIES.store(len, Ordering::SeqCst);
}

/// Whether a retried unmap of a deferred range of `len` bytes is refused (the
/// test instruments above).
fn retry_refused(len: usize) -> bool {
    let refused = REFUSE_RETRIES.load(Ordering::SeqCst);
    refused == usize::MAX || refused == len
}

/// Test instrument: `f` runs before each retried unmap of a deferred range, with
/// the deferred ranges' lock held (a test holds a thread there and forks). `None`
/// removes it.
///
/// # Safety
/// `f` runs inside the allocator with a lock held: it must not allocate or call
/// anything that allocates or unmaps, and must return.
#[doc(hidden)]
pub unsafe fn set_retry_hook(f: Option<fn()>) {
    RETRY_HOOK.store(
        f.map_or(ptr::null_mut(), |f| f as *mut ()),
        Ordering::SeqCst,
    );
}

/// Links `[p, p + len)` into the deferred ranges.
///
/// # Safety
/// As for [`unmap`]: the range is the caller's to give up, mapped and writable.
unsafe fn defer(p: *mut Deferred, len: usize) {
    let mut list = DEFERRED.lock();
    // SAFETY: the range is mapped, writable, page aligned and nobody else's.
    unsafe {
        p.write(Deferred {
            next: ptr::null_mut(),
            len,
        });
        list.push(p);
    }
    DEFERRED_BYTES.fetch_add(len, Ordering::Relaxed);
}

/// Tries again to unmap deferred ranges (see [`unmap`]), oldest first. `every`
/// false (after an unmap that went through): stops at the first one still
/// refused, which goes last (the next call starts with another): while the limit
/// holds, a call costs one refused system call, not one per deferred range (every
/// unmap retries, so trying them all each time would be quadratic). `every` true
/// (a mapping failed for want of address space, rare): tries each of them once,
/// since a later range may go where the first is still refused (it no longer
/// splits a mapping: its neighbours went meanwhile), and its room is what the
/// mapping needs. Returns whether any was unmapped.
pub(crate) fn retry_deferred(every: bool) -> bool {
    let mut list = DEFERRED.lock();
    let mut any = false;
    // The first range refused by this call, listed again last: met again, every
    // range was tried once.
    let mut first_refused: *mut Deferred = ptr::null_mut();
    loop {
        if !first_refused.is_null() && list.head == first_refused {
            return any;
        }
        let d = list.pop();
        if d.is_null() {
            return any;
        }
        // SAFETY: a listed range, mapped: its record is readable.
        let len = unsafe { (*d).len };
        retry_hook();
        RETRIES.fetch_add(1, Ordering::SeqCst);
        // SAFETY: a deferred range, out of the list under its lock: ours alone.
        if !retry_refused(len) && unsafe { munmap_or_refuse(d.cast(), len) } {
            DEFERRED_BYTES.fetch_sub(len, Ordering::Relaxed);
            gave_back_address_space();
            any = true;
        } else {
            // SAFETY: still mapped, ours: listed again.
            unsafe { list.push(d) };
            if !every {
                return any;
            }
            if first_refused.is_null() {
                first_refused = d;
            }
        }
    }
}

/// Runs the hook of [`set_retry_hook`], if any.
fn retry_hook() {
    let h = RETRY_HOOK.load(Ordering::SeqCst);
    if !h.is_null() {
        // SAFETY: only `set_retry_hook` stores here, and it stores a `fn()`.
        let f: fn() = unsafe { core::mem::transmute::<*mut (), fn()>(h) };
        f();
    }
}

/// Grows or shrinks the mapping at `p` (page-rounded lengths), moving it if needed.
///
/// # Safety
/// `[p, p + old)` must be a whole mapping this allocator owns.
pub unsafe fn remap(p: *mut u8, old: usize, new: usize) -> Option<*mut u8> {
    let q = keeping_errno(
        // SAFETY: the caller owns the mapping; the kernel validates the rest.
        || unsafe { libc::mremap(p.cast(), old, new, libc::MREMAP_MAYMOVE) },
        |&q| q != libc::MAP_FAILED,
    );
    if q == libc::MAP_FAILED {
        None
    } else {
        if new < old {
            gave_back_address_space();
        }
        Some(q.cast())
    }
}

/// Grows or shrinks the mapping at `p` (page-rounded lengths) where it is, never
/// moving it; `false` when it cannot (the address space after it is taken, or a
/// limit).
///
/// # Safety
/// `[p, p + old)` must be a whole mapping this allocator owns.
pub(crate) unsafe fn remap_in_place(p: *mut u8, old: usize, new: usize) -> bool {
    // A refusal is no failure of the caller's (which goes on to move or copy): the
    // thread's `errno` stays as it was (C's `realloc` leaves it alone on success).
    keeping_errno(
        // SAFETY: the caller owns the mapping; without `MREMAP_MAYMOVE` it stays at
        // `p`.
        || unsafe { libc::mremap(p.cast(), old, new, 0) != libc::MAP_FAILED },
        |&done| done,
    )
}

/// Gives the pages of `[p, p + len)` back to the kernel; they read as zero afterwards
/// and take no memory until written again. `false` (and `errno` unchanged: this runs
/// inside `free`) when the kernel refuses (locked pages).
///
/// # Safety
/// `[p, p + len)` must be mapped, owned by this allocator and unused.
pub unsafe fn release(p: *mut u8, len: usize) -> bool {
    keeping_errno(
        // SAFETY: the caller owns the range; DONTNEED on private anonymous memory
        // only drops its pages.
        || unsafe { libc::madvise(p.cast(), len, libc::MADV_DONTNEED) == 0 },
        |&done| done,
    )
}

/// Rounds `n` up to a multiple of `to` (a power of two); `None` on overflow.
#[inline]
pub fn round_up(n: usize, to: usize) -> Option<usize> {
    Some(n.checked_add(to - 1)? & !(to - 1))
}
