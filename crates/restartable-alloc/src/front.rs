//! Front-end: per-CPU caches of free objects, one array per size class, popped on
//! `alloc` and pushed on `dealloc` by restartable sequences.
//!
//! # Layout
//! One region, mapped at first use, holds one slot of [`STRIDE`] bytes per possible
//! CPU (indexed by mm_cid where the kernel has it, so slots follow the threads that
//! run at once, not the CPUs that exist; `RESTARTABLE_ALLOC_INDEX=cpu` in the
//! environment asks for CPU numbers instead). A slot starts with a word of bookkeeping
//! (when it last went to the middle), then per class a header word `current` and
//! [`capacity`] object pointers:
//!
//! ```text
//! slot i: | stamp | cur(1) | items(1)[0..cap(1)] | cur(2) | items(2)[..] | ... |
//! pop:  if cur > 0 { item = items[cur-1]; commit cur = cur - 1 }   (load_cbne_load_cbne_store)
//! push: if cur < cap { items[cur] = obj; commit cur = cur + 1 }    (load_cbne_store_store)
//! ```
//!
//! # Invariants
//! - `items[..cur]` of a slot are free objects of the class, owned by the slot. Only
//!   restartable sequences for that slot change `cur` or `items[..cur]`; everything
//!   else about a slot is done by a thread that first *closes* it (below).
//! - Refills and spills move a whole batch in one sequence
//!   (`load_cbne_memcpy_store`): the copy is speculative, the commit of `cur`
//!   publishes or unpublishes the batch.
//! - `cur < 0` means *closed*: sequences treat the class as both empty and full and
//!   go to the middle. Another thread drains a slot by closing every class (swap to
//!   -1), fencing the slot (`membarrier` rseq fence) until no sequence can still
//!   commit, taking `items[..previous cur]`, and reopening with `cur = 0`.
//! - A thread without a registered rseq area never touches the caches: it uses its
//!   own [`thread_cache`](crate::thread_cache) (the fallback front-end), or the middle.
//!   Re-entrant calls (registration in library-owned mode may allocate) go to the
//!   middle: a thread-local flag marks the guarded slow path, and a nested call
//!   finding it set takes no cache at all.
//! - A cache holds at most `capacity(c)` objects per class; the bytes a slot can hold
//!   are bounded by [`max_cached_bytes_per_cpu`](crate::size_class::max_cached_bytes_per_cpu).
//!   A slot whose owners have not visited the middle for [`IDLE_MS`] is drained by
//!   the next thread that does (at most one scan per [`IDLE_MS`]).

use core::cell::Cell;
use core::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Ordering};

use restartable::arch::{self, ByCpu, ByMmCid, Index, OpResult, Relaxed, Release};
use restartable::hooks::Hooks;
use restartable::ThreadArea;

use crate::middle;
use crate::os;
use crate::size_class::{batch, capacity, size, CAPACITY, CLASSES, MAX_BATCH};
use crate::sync::{RawLock, SpinLock};

/// Consecutive aborts after which one operation goes to the middle instead.
pub const MAX_ABORTS: u32 = 100;
/// A slot not seen in the middle for this long is drained.
pub const IDLE_MS: u64 = 1000;

/// Byte offset of each class's header in a slot (index 0: the stamp word).
const OFFSETS: [usize; CLASSES + 2] = {
    let mut off = [0; CLASSES + 2];
    off[1] = 64;
    let mut c = 1;
    while c <= CLASSES {
        off[c + 1] = off[c] + (1 + capacity(c)) * 8;
        c += 1;
    }
    off
};
/// Bytes per slot.
pub const STRIDE: usize = (OFFSETS[CLASSES + 1] + os::OS_PAGE - 1) & !(os::OS_PAGE - 1);

static BASE: AtomicUsize = AtomicUsize::new(0);
static SLOTS: AtomicUsize = AtomicUsize::new(0);
static BY_CID: AtomicBool = AtomicBool::new(false);
static FENCES: AtomicBool = AtomicBool::new(false);
static INIT: SpinLock<bool> = SpinLock::new(false);
static DRAIN: SpinLock<()> = SpinLock::new(());
static NEXT_SCAN: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set while this thread runs the guarded slow path (registration, set-up).
    static BUSY: Cell<bool> = const { Cell::new(false) };
    /// Set once rseq turned out unavailable to this thread.
    static NO_RSEQ: Cell<bool> = const { Cell::new(false) };
}

/// The set-up lock, for the fork handlers.
pub fn init_lock() -> &'static dyn RawLock {
    &INIT
}

/// The drain lock, for the fork handlers.
pub fn drain_lock() -> &'static dyn RawLock {
    &DRAIN
}

/// The header word of class `c` in slot `slot`; its items follow it.
#[inline(always)]
fn header(base: usize, slot: usize, c: usize) -> *const AtomicIsize {
    (base + slot * STRIDE + OFFSETS[c]) as *const AtomicIsize
}

/// Pops a free object of class `c` from the current CPU's cache: `None` when it is
/// empty, closed, or this thread has no rseq area (the caller goes to the slow path).
#[inline(always)]
pub fn pop<H: Hooks>(c: usize) -> Option<*mut u8> {
    let base = BASE.load(Ordering::Relaxed);
    if base == 0 {
        return None;
    }
    let area = ThreadArea::current_if_registered()?;
    if BY_CID.load(Ordering::Relaxed) {
        pop_as::<ByMmCid, H>(area, base, c)
    } else {
        pop_as::<ByCpu, H>(area, base, c)
    }
}

#[inline(always)]
fn pop_as<I: Index, H: Hooks>(area: ThreadArea, base: usize, c: usize) -> Option<*mut u8> {
    let mut aborts = 0;
    loop {
        let cpu = I::current(area);
        if cpu as usize >= SLOTS.load(Ordering::Relaxed) {
            return None;
        }
        let hdr = header(base, cpu as usize, c);
        // SAFETY: the region holds SLOTS slots; the header and its items are words
        // of the slot, read as atomics.
        let (cur, cell) = unsafe {
            let cur = (*hdr).load(Ordering::Relaxed);
            if cur <= 0 {
                return None;
            }
            (cur, hdr.add(cur as usize))
        };
        // SAFETY: `cell` is items[cur - 1] of the slot.
        let item = unsafe { (*cell).load(Ordering::Relaxed) };
        // SAFETY: the area is this thread's, `cpu` was read from it with `I`, and the
        // two words are written only by sequences for slot `cpu` (or by a drainer
        // after closing and fencing the slot).
        let r = unsafe {
            arch::load_cbne_load_cbne_store::<I, H>(
                area,
                cpu,
                (*hdr).as_ptr(),
                cur,
                (*cell).as_ptr(),
                item,
                cur - 1,
            )
        };
        match r {
            OpResult::Committed => return Some(item as *mut u8),
            OpResult::CompareFailed => {}
            OpResult::Aborted { .. } => {
                aborts += 1;
                if aborts >= MAX_ABORTS {
                    return None;
                }
            }
        }
    }
}

/// Pushes a free object of class `c` on the current CPU's cache: `false` when it is
/// full, closed, or this thread has no rseq area.
#[inline(always)]
pub fn push<H: Hooks>(c: usize, obj: *mut u8) -> bool {
    let base = BASE.load(Ordering::Relaxed);
    if base == 0 {
        return false;
    }
    let Some(area) = ThreadArea::current_if_registered() else {
        return false;
    };
    if BY_CID.load(Ordering::Relaxed) {
        push_as::<ByMmCid, H>(area, base, c, obj)
    } else {
        push_as::<ByCpu, H>(area, base, c, obj)
    }
}

#[inline(always)]
fn push_as<I: Index, H: Hooks>(area: ThreadArea, base: usize, c: usize, obj: *mut u8) -> bool {
    let cap = CAPACITY[c];
    let mut aborts = 0;
    loop {
        let cpu = I::current(area);
        if cpu as usize >= SLOTS.load(Ordering::Relaxed) {
            return false;
        }
        let hdr = header(base, cpu as usize, c);
        // SAFETY: as in `pop_as`.
        let cur = unsafe { (*hdr).load(Ordering::Relaxed) };
        if cur as usize >= cap {
            // Full, or closed (negative).
            return false;
        }
        // SAFETY: items[cur] is past the published part of this slot's array,
        // written only by sequences for `cpu`; the commit of `cur` publishes it.
        let r = unsafe {
            let cell = hdr.add(cur as usize + 1);
            arch::load_cbne_store_store::<I, Release, H>(
                area,
                cpu,
                (*hdr).as_ptr(),
                cur,
                (*cell).as_ptr(),
                obj as isize,
                cur + 1,
            )
        };
        match r {
            OpResult::Committed => return true,
            OpResult::CompareFailed => {}
            OpResult::Aborted { .. } => {
                aborts += 1;
                if aborts >= MAX_ABORTS {
                    return false;
                }
            }
        }
    }
}

/// Moves up to `items.len()` objects into the current CPU's cache in one sequence;
/// returns how many (a prefix of `items`).
fn push_many<I: Index, H: Hooks>(
    area: ThreadArea,
    base: usize,
    c: usize,
    items: &[*mut u8],
) -> usize {
    let cap = CAPACITY[c] as isize;
    let mut aborts = 0;
    while aborts < MAX_ABORTS {
        let cpu = I::current(area);
        if cpu as usize >= SLOTS.load(Ordering::Relaxed) {
            return 0;
        }
        let hdr = header(base, cpu as usize, c);
        // SAFETY: as in `pop_as`.
        let cur = unsafe { (*hdr).load(Ordering::Relaxed) };
        if cur < 0 || cur >= cap {
            return 0;
        }
        let k = items.len().min((cap - cur) as usize);
        if k == 0 {
            return 0;
        }
        // SAFETY: items[cur..cur + k] are past the published part of the slot's
        // array (unread until the commit publishes them); `items` is ours.
        let r = unsafe {
            arch::load_cbne_memcpy_store::<I, Release, H>(
                area,
                cpu,
                (*hdr).as_ptr(),
                cur,
                hdr.add(cur as usize + 1) as *mut u8,
                items.as_ptr().cast(),
                k * 8,
                cur + k as isize,
            )
        };
        match r {
            OpResult::Committed => return k,
            OpResult::CompareFailed => {}
            OpResult::Aborted { .. } => aborts += 1,
        }
    }
    0
}

/// Takes up to `out.len()` objects off the current CPU's cache in one sequence;
/// returns how many.
fn pop_many<I: Index, H: Hooks>(
    area: ThreadArea,
    base: usize,
    c: usize,
    out: &mut [*mut u8],
) -> usize {
    let mut aborts = 0;
    while aborts < MAX_ABORTS {
        let cpu = I::current(area);
        if cpu as usize >= SLOTS.load(Ordering::Relaxed) {
            return 0;
        }
        let hdr = header(base, cpu as usize, c);
        // SAFETY: as in `pop_as`.
        let cur = unsafe { (*hdr).load(Ordering::Relaxed) };
        if cur <= 0 {
            return 0;
        }
        let k = out.len().min(cur as usize);
        // SAFETY: items[cur - k..cur] are published items of the slot, copied into
        // our buffer before the commit unpublishes them.
        let r = unsafe {
            arch::load_cbne_memcpy_store::<I, Relaxed, H>(
                area,
                cpu,
                (*hdr).as_ptr(),
                cur,
                out.as_mut_ptr().cast(),
                hdr.add(cur as usize + 1 - k) as *const u8,
                k * 8,
                cur - k as isize,
            )
        };
        match r {
            OpResult::Committed => return k,
            OpResult::CompareFailed => {}
            OpResult::Aborted { .. } => aborts += 1,
        }
    }
    0
}

/// This thread's area for the slow path: registers the thread (and sets up the
/// caches) on first use, guarded against re-entry. `None`: use the middle.
#[inline]
fn slow_area() -> Option<(ThreadArea, usize)> {
    let base = BASE.load(Ordering::Acquire);
    if base != 0 {
        if let Some(a) = ThreadArea::current_if_registered() {
            return Some((a, base));
        }
    }
    register_guarded()
}

/// Sets the re-entrancy flag; `false` if it was already set (a nested call).
pub(crate) fn enter_guarded() -> bool {
    !BUSY.with(|b| b.replace(true))
}

/// Clears the re-entrancy flag.
pub(crate) fn leave_guarded() {
    BUSY.with(|b| b.set(false));
}

#[cold]
#[inline(never)]
fn register_guarded() -> Option<(ThreadArea, usize)> {
    if NO_RSEQ.with(|n| n.get()) {
        return None;
    }
    if !enter_guarded() {
        // Re-entered from registration or set-up: the middle serves it.
        return None;
    }
    let area = ThreadArea::current();
    match area {
        // The first thread with rseq sets up the caches.
        Ok(_) => init(),
        // This thread uses its thread cache from now on. (A registration that
        // becomes possible later is not retried: both paths are correct.)
        Err(_) => NO_RSEQ.with(|n| n.set(true)),
    }
    leave_guarded();
    let base = BASE.load(Ordering::Acquire);
    match area {
        Ok(a) if base != 0 => Some((a, base)),
        _ => None,
    }
}

/// Maps the caches, once. Runs with `BUSY` set: what it allocates comes from the
/// middle.
fn init() {
    let mut done = INIT.lock();
    if *done {
        return;
    }
    *done = true;
    let slots = restartable::possible_cpus();
    let Some(len) = slots.checked_mul(STRIDE) else {
        return;
    };
    let Some(p) = os::map(len) else {
        return;
    };
    BY_CID.store(
        restartable::registration::mm_cid_available() && !index_by_cpu_requested(),
        Ordering::Relaxed,
    );
    FENCES.store(restartable::fences_supported(), Ordering::Relaxed);
    SLOTS.store(slots, Ordering::Relaxed);
    BASE.store(p as usize, Ordering::Release);
}

/// Whether `RESTARTABLE_ALLOC_INDEX=cpu` asks for caches indexed by CPU even where
/// the kernel has mm_cid (read once, at set-up, without allocating).
fn index_by_cpu_requested() -> bool {
    // SAFETY: the name is NUL-terminated; the returned string (if any) is read at
    // once, before anything could change the environment.
    unsafe {
        let v = libc::getenv(c"RESTARTABLE_ALLOC_INDEX".as_ptr());
        !v.is_null() && core::ffi::CStr::from_ptr(v).to_bytes() == b"cpu"
    }
}

/// Whether the caches exist, and whether they are indexed by mm_cid.
pub fn mode() -> Option<(usize, bool)> {
    (BASE.load(Ordering::Acquire) != 0).then(|| {
        (
            SLOTS.load(Ordering::Relaxed),
            BY_CID.load(Ordering::Relaxed),
        )
    })
}

macro_rules! dispatch {
    ($f:ident::<$H:ident>($($a:expr),*)) => {
        if BY_CID.load(Ordering::Relaxed) {
            $f::<ByMmCid, $H>($($a),*)
        } else {
            $f::<ByCpu, $H>($($a),*)
        }
    };
}

/// `alloc` of class `c` when the cache had nothing: a batch from the middle, one
/// object for the caller and the rest into the cache. Null when memory is exhausted.
#[cold]
#[inline(never)]
pub fn alloc_slow<H: Hooks>(c: usize) -> *mut u8 {
    if NO_RSEQ.with(|n| n.get()) {
        // A thread without rseq: its thread cache first, without asking again.
        if let Some(p) = crate::thread_cache::alloc(c) {
            return p;
        }
    }
    let Some((area, base)) = slow_area() else {
        if let Some(p) = crate::thread_cache::alloc(c) {
            return p;
        }
        let mut one = [core::ptr::null_mut(); 1];
        return match middle::remove_batch(c, &mut one) {
            1 => one[0],
            _ => core::ptr::null_mut(),
        };
    };
    let mut buf = [core::ptr::null_mut(); MAX_BATCH];
    let got = middle::remove_batch(c, &mut buf[..batch(c)]);
    if got == 0 {
        return core::ptr::null_mut();
    }
    let obj = buf[got - 1];
    let rest = &buf[..got - 1];
    let pushed = if rest.is_empty() {
        0
    } else {
        dispatch!(push_many::<H>(area, base, c, rest))
    };
    if pushed < rest.len() {
        // SAFETY: free objects of class `c` that no cache holds.
        unsafe { middle::insert_batch(c, &rest[pushed..]) };
    }
    visited_middle(area);
    obj
}

/// `dealloc` of class `c` when the cache was full: a batch of the cache and `obj`
/// go to the middle.
///
/// # Safety
/// `obj` is a free object of class `c`, not in use and in no cache.
#[cold]
#[inline(never)]
pub unsafe fn dealloc_slow<H: Hooks>(c: usize, obj: *mut u8) {
    // SAFETY: forwarded contract.
    if NO_RSEQ.with(|n| n.get()) && unsafe { crate::thread_cache::dealloc(c, obj) } {
        return;
    }
    let Some((area, base)) = slow_area() else {
        // SAFETY: forwarded contract.
        if !unsafe { crate::thread_cache::dealloc(c, obj) } {
            // SAFETY: forwarded contract.
            unsafe { middle::insert_batch(c, &[obj]) };
        }
        return;
    };
    let mut buf = [core::ptr::null_mut(); MAX_BATCH + 1];
    let k = dispatch!(pop_many::<H>(area, base, c, &mut buf[..batch(c)]));
    let n = if k > 0 && dispatch!(push_as::<H>(area, base, c, obj)) {
        k
    } else {
        buf[k] = obj;
        k + 1
    };
    // SAFETY: objects taken off the cache, and `obj`: free, in no cache.
    unsafe { middle::insert_batch(c, &buf[..n]) };
    visited_middle(area);
}

fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Stamps the current slot, and drains idle slots if a scan is due.
fn visited_middle(area: ThreadArea) {
    let Some((slots, by_cid)) = mode() else {
        return;
    };
    let slot = if by_cid { area.mm_cid() } else { area.cpu_id() } as usize;
    let now = now_ms();
    if slot < slots {
        stamp(slot).store(now, Ordering::Relaxed);
    }
    let next = NEXT_SCAN.load(Ordering::Relaxed);
    if now >= next
        && FENCES.load(Ordering::Relaxed)
        && NEXT_SCAN
            .compare_exchange(next, now + IDLE_MS, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        drain_idle(now);
    }
}

fn stamp(slot: usize) -> &'static AtomicU64 {
    // SAFETY: word 0 of a slot of the region, which is never unmapped.
    unsafe { &*((BASE.load(Ordering::Relaxed) + slot * STRIDE) as *const AtomicU64) }
}

#[cold]
fn drain_idle(now: u64) {
    let Some((slots, _)) = mode() else { return };
    for slot in 0..slots {
        let last = stamp(slot).load(Ordering::Relaxed);
        if last + IDLE_MS < now && cached_bytes(slot) > 0 {
            let _ = drain_slot(slot);
        }
    }
}

/// Bytes of free objects in slot `slot`'s caches (racy: for statistics).
pub fn cached_bytes(slot: usize) -> usize {
    let base = BASE.load(Ordering::Acquire);
    if base == 0 || slot >= SLOTS.load(Ordering::Relaxed) {
        return 0;
    }
    (1..=CLASSES)
        .map(|c| {
            // SAFETY: a header word of a slot of the region.
            let cur = unsafe { (*header(base, slot, c)).load(Ordering::Relaxed) };
            cur.max(0) as usize * size(c)
        })
        .sum()
}

/// Objects of class `c` in every slot (racy: for statistics).
pub fn cached_objects(c: usize) -> usize {
    let base = BASE.load(Ordering::Acquire);
    if base == 0 {
        return 0;
    }
    (0..SLOTS.load(Ordering::Relaxed))
        .map(|slot| {
            // SAFETY: a header word of a slot of the region.
            let cur = unsafe { (*header(base, slot, c)).load(Ordering::Relaxed) };
            cur.max(0) as usize
        })
        .sum()
}

/// Why a slot could not be drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainError {
    /// The caches are not set up (no thread used them yet, or rseq is unavailable).
    NoCaches,
    /// The kernel has no membarrier rseq fences: another thread cannot stop a
    /// slot's sequences.
    NoFences,
}

fn fence(slot: usize) -> Result<(), DrainError> {
    let r = if BY_CID.load(Ordering::Relaxed) {
        // mm_cids move between CPUs: stop every CPU.
        restartable::fence_all()
    } else {
        restartable::fence_cpu(slot as u32)
    };
    r.map_err(|_| DrainError::NoFences)
}

/// Moves every object of slot `slot`'s caches to the middle, from any thread:
/// closes each class, fences the slot until no sequence can commit, takes the
/// objects and reopens. Returns the bytes moved.
pub fn drain_slot(slot: usize) -> Result<usize, DrainError> {
    let base = BASE.load(Ordering::Acquire);
    if base == 0 || slot >= SLOTS.load(Ordering::Relaxed) {
        return Err(DrainError::NoCaches);
    }
    if !FENCES.load(Ordering::Relaxed) {
        return Err(DrainError::NoFences);
    }
    let _one_drainer = DRAIN.lock();
    let mut held = [0isize; CLASSES + 1];
    for (c, h) in held.iter_mut().enumerate().skip(1) {
        // SAFETY: a header word of the slot.
        *h = unsafe { (*header(base, slot, c)).swap(-1, Ordering::SeqCst) };
    }
    loop {
        if let Err(e) = fence(slot) {
            // Without a fence we cannot know whether a sequence still commits: leave
            // the slot closed (its threads use the middle; a late commit reopens it
            // with consistent contents) and stop draining.
            FENCES.store(false, Ordering::Relaxed);
            return Err(e);
        }
        // A sequence that compared before our swap may have committed before the
        // fence: take the value it left and fence again.
        let mut again = false;
        for (c, h) in held.iter_mut().enumerate().skip(1) {
            // SAFETY: as above.
            let hdr = unsafe { &*header(base, slot, c) };
            if hdr.load(Ordering::SeqCst) != -1 {
                *h = hdr.swap(-1, Ordering::SeqCst);
                again = true;
            }
        }
        if !again {
            break;
        }
    }
    // Closed and fenced: no sequence for this slot can commit; the items are ours.
    let mut moved = 0;
    for (c, &n) in held.iter().enumerate().skip(1) {
        let n = n.max(0) as usize;
        let hdr = header(base, slot, c);
        let mut i = 0;
        while i < n {
            let k = (n - i).min(MAX_BATCH);
            let mut buf = [core::ptr::null_mut(); MAX_BATCH];
            for (j, b) in buf[..k].iter_mut().enumerate() {
                // SAFETY: items[i + j] of the closed slot, published before the fence.
                *b = unsafe { (*hdr.add(1 + i + j)).load(Ordering::Relaxed) } as *mut u8;
            }
            // SAFETY: free objects of class `c` that the closed cache no longer holds.
            unsafe { middle::insert_batch(c, &buf[..k]) };
            i += k;
        }
        moved += n * size(c);
    }
    for c in 1..=CLASSES {
        // SAFETY: a header word of the slot, closed by us: reopen it empty.
        unsafe { (*header(base, slot, c)).store(0, Ordering::Release) };
    }
    Ok(moved)
}

/// Drains every slot; returns the bytes moved.
pub fn drain_all() -> Result<usize, DrainError> {
    let Some((slots, _)) = mode() else {
        return Err(DrainError::NoCaches);
    };
    let mut total = 0;
    for slot in 0..slots {
        total += drain_slot(slot)?;
    }
    Ok(total)
}
