//! Front-end: per-CPU caches of free objects, one array ("slab") per size class,
//! popped on `alloc` and pushed on `dealloc` by restartable sequences.
//!
//! # Layout
//! One region, mapped at first use (tried again, a bounded number of times, when the
//! address space ran out), holds one slot of [`STRIDE`] bytes per possible
//! CPU, their count rounded up to a power of two and the region to at least
//! `CID_SLOTS` slots (slots past the possible CPUs are address space only: no
//! index reaches them) so that the fast path can read the low byte of an mm_cid
//! as its index, unbounded and uncompared. Slots are indexed by mm_cid where the kernel has
//! it, so slots follow the threads that run at once, not the CPUs that exist;
//! `RESTARTABLE_ALLOC_INDEX=cpu` in the environment asks for CPU numbers instead. A
//! slot starts with a line of
//! bookkeeping (a word unused, when it last went to the middle, the bytes of
//! capacity it was given, per class how often it missed), then per class a header
//! of two words (`restartable`'s slab header) and room for [`max_capacity`] object
//! pointers:
//!
//! ```text
//! slot i: | - | stamp | budget | misses.. | hdr(1) | items(1)[..] | hdr(2) | ... |
//! hdr = [count | stop << 32, capacity]; items are hdr[2..2 + count]
//! pop:  if !stop && count > 0        { item = hdr[2 + count - 1]; commit count - 1 }
//! push: if !stop && count < capacity { hdr[2 + count] = obj; commit count + 1 }
//! ```
//! Each is one sequence (`load_index_slab_pop` / `load_index_slab_push` of the
//! `restartable` crate): the index (mm_cid or CPU), the header and the item are
//! read inside it, so the fast path prepares nothing but the region's address plus
//! the class's header offset, and no index is compared; the stop half shares the
//! count's word, so the one load of it that the op needs anyway also sees a stop.
//!
//! # Invariants
//! - `items[..count]` of a slot are free objects of the class, owned by the slot.
//!   Only restartable sequences for that slot change a count or the items below
//!   its capacity, and every sequence checks inside itself that the header's stop
//!   half is 0.
//! - Another thread works on a slot only after *stopping* it: holding the drain
//!   lock, it sets the stop half of every class's header, then fences the slot
//!   (`membarrier` rseq fence). After the fence every sequence that began before has
//!   committed or been aborted, and later ones fail. A commit stores the header's
//!   whole first word (count and a stop half of 0), so one whose sequence read the
//!   header before the stop may have cleared it: the stopping thread checks the stop
//!   halves after the fence, and stops and fences again until they are all still set
//!   (`restartable`'s `stop_slabs`). Then the headers and items are the stopping
//!   thread's to read and rewrite, until it clears the stop halves. Nothing else ever
//!   writes a slot's counts or items while its sequences may run.
//! - Refills and spills move a whole batch in one sequence
//!   (`load_cbne_slab_memcpy_store`, its compare covering the count and the stop
//!   half): the copy is speculative, the commit of the count publishes or
//!   unpublishes the batch.
//! - Capacities: every class starts at capacity 0. A miss (the slow path of the
//!   class) grows its capacity by a [`batch`] up to [`max_capacity`], as long as the
//!   slot's capacities stay within [`max_cached_bytes_per_cpu`] (the `budget` word
//!   counts them; it and every capacity change are guarded by the drain lock). The
//!   capacity is the header's second word, which no sequence writes: a growth is a
//!   plain store under the lock (a push that read the old capacity is as right as
//!   one that reads the new: the room is there up to [`max_capacity`]). A
//!   miss that found no budget is counted; the next resize pass (every
//!   [`RESIZE_MS`], by whichever thread is in the slow path) stops such slots and
//!   shrinks their classes that did not miss since the pass before by a batch,
//!   handing the objects above the new capacity to the middle, so that the hot
//!   classes can grow. A drained slot gets capacity 0 in every class.
//! - A thread without a registered rseq area never touches the caches: it uses its
//!   own [`thread_cache`](crate::thread_cache) (the fallback front-end), or the middle.
//!   Every sequence checks the registration inside itself, after its descriptor
//!   store; the fast paths' ops also read `cpu_id` before that store and abort
//!   unless both reads are CPUs, so that where the library owns registration a
//!   thread that a signal handler registers inside a sequence it entered
//!   unregistered never commits it (see `field_for`). The library's own mode and
//!   glibc's run the same instructions.
//!   Re-entrant calls (registration in library-owned mode may allocate) go to the
//!   middle: a thread-local flag marks the guarded slow path, and a nested call
//!   finding it set takes no cache at all.
//! - A slot whose owners have not visited the middle for [`IDLE_MS`] is drained by
//!   the next thread that does (at most one scan per [`IDLE_MS`]).

use core::cell::Cell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicIsize, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use restartable::arch::{
    self, ByCpu, ByMmCid, Index, OpResult, Relaxed, Release, SlabHeader, SLAB_HEADER_WORDS,
};
use restartable::hooks::Hooks;
use restartable::registration::AreaOffset;
use restartable::ThreadArea;

use crate::middle;
use crate::os;
use crate::size_class::{
    batch, class_of_size, max_cached_bytes_per_cpu, max_capacity, size, CLASSES, MAX_BATCH,
    MIN_ALIGN, TABLE_MAX,
};
use crate::sync::{RawLock, SpinLock};

/// Consecutive aborts after which one operation goes to the middle instead.
pub const MAX_ABORTS: u32 = 100;
/// A slot not seen in the middle for this long is drained.
pub const IDLE_MS: u64 = 1000;
/// How often slots whose classes could not grow are resized.
pub const RESIZE_MS: u64 = 100;

/// Byte offsets of a slot's bookkeeping words (the first word is unused).
const STAMP: usize = 8;
const BUDGET: usize = 16;
const DENIED: usize = 24;
/// Misses of class `c` since the last resize pass: `MISSES + 8 * c`.
const MISSES: usize = 64;

/// Byte offset of each class's header in a slot (index 0 unused).
const OFFSETS: [usize; CLASSES + 2] = {
    let mut off = [0; CLASSES + 2];
    // After the bookkeeping line and the miss counters, on a cache line.
    off[1] = (MISSES + 8 * (CLASSES + 1)).next_multiple_of(64);
    let mut c = 1;
    while c <= CLASSES {
        off[c + 1] = off[c] + (SLAB_HEADER_WORDS + max_capacity(c)) * 8;
        c += 1;
    }
    off
};
const _: () = assert!(MISSES + 8 * (CLASSES + 1) <= OFFSETS[1]);
/// Bytes per slot: a power of two (a shift, not a multiplication, on the fast
/// paths' way to the slot; the pages past a slot's last header are address space
/// only).
pub const STRIDE: usize = OFFSETS[CLASSES + 1].next_power_of_two();
const _: () = assert!(STRIDE.is_multiple_of(os::OS_PAGE));

/// Where the front-end's set-up (`FRONT`, a page-aligned static) starts in its
/// page. The words every fast path loads from it, `base` and `fast_cid` (at `+ 8`
/// and `+ 24`), then share their offset in a page (address bits 11:0) with no word
/// the fast paths store at the caches' usual levels: no header's count, and no
/// item within 4 of the bottom of its array or below a capacity its class can have
/// (a multiple of its batch, or its largest), in any page of a slot. A store and a
/// later load at the same offset in different pages can alias (4 KiB aliasing): on
/// this host (AMD Zen 4), with `FRONT` where the linker happened to put it (offset
/// 0xf00, `fast_cid` on the item a full 192-byte class pushes to), about 1 bench
/// process in 15 ran churn 2.5 times slower for its whole life; none with it at 0xd00
/// or at this offset, and about as many with it on other stores of the loop
/// (BENCHMARKS.md, branch `procs`). Both words are at 8 modulo 16, so neither is the
/// first word of an object (objects start at multiples of 16), the one programs
/// write most. Other words of objects can still alias them; a fixed offset at least
/// keeps that the same in every build.
pub const FRONT_PAGE_OFFSET: usize = 0x600;

/// The front-end's set-up, read by every fast path: one line, at
/// [`FRONT_PAGE_OFFSET`] in its page.
#[repr(C, align(4096))]
struct Front {
    /// Places the fields at [`FRONT_PAGE_OFFSET`] in the page.
    _page: [u8; FRONT_PAGE_OFFSET],
    /// The region's address (0 until set up), with [`BY_CID`] set when slots are
    /// indexed by mm_cid.
    word: AtomicUsize,
    /// The region's address without the [`BY_CID`] flag (set with `word`): the slot
    /// address by mm_cid without masking the flag off.
    base: AtomicUsize,
    /// Slots in the region.
    slots: AtomicUsize,
    /// [`AreaOffset::bytes`] where slots are indexed by mm_cid, its low byte the
    /// whole index (at most [`CID_SLOTS`] possible CPUs), stored last (release) once
    /// the rest is set up; 0 otherwise. Its sign tells who owns registration (`init`
    /// stores it only where the sign says so; see [`field_for`]):
    /// - greater than 0: glibc (its `__rseq_offset`, in the thread descriptor above
    ///   the thread pointer);
    /// - less than 0: the library (its own area in static TLS, below the thread
    ///   pointer).
    ///
    /// The fast path's first test, one load and a test: both take the area unchecked
    /// ([`Unchecked`]; the op checks the registration before its sequence and inside
    /// it) and fall through (`je` not taken) into the same sequence, in Rust and in
    /// the C `malloc`/`free` ([`pop_at_offset`], [`push_at_offset`]) alike. The sign
    /// is for [`fast_path`].
    fast_cid: AtomicIsize,
    /// [`AreaOffset::bytes`] where slots are indexed by CPU (checked before the
    /// sequence, [`Checked`]): the fast path's second test.
    checked_cpu: AtomicIsize,
    /// [`AreaOffset::bytes`] where slots are indexed by mm_cid and `fast_cid` does
    /// not serve (more than [`CID_SLOTS`] possible CPUs, or an offset of the other
    /// sign than its owner's): the whole field read inside the sequence, the area
    /// checked before it ([`Checked`]). The fast path's third test.
    checked_cid: AtomicIsize,
}
const BY_CID: usize = 1;

/// Slots the region always has room for (a power of two): the first attempt by
/// mm_cid at one offset ([`Unchecked`], under glibc's registration or the
/// library's) reads the low byte of `mm_cid`
/// inside its sequence (one `movzbl`, no mask, no bound: see [`pop_indexed`]). The
/// region maps `max(slots, CID_SLOTS)` slots ([`region_slots`]). Slots from `slots`
/// up are address space only: `cpu_id` and `mm_cid` stay below the possible CPUs,
/// so no sequence reaches them, and were one reached, it reads as empty with
/// capacity 0 (fresh memory; only [`grow`], bounded by `slots`, gives capacity): a
/// miss. Where the possible CPUs exceed `CID_SLOTS`, the low byte would not be the
/// whole `mm_cid` (two threads' indexes 256 apart would share a slot): there `init`
/// takes the path that reads the whole field ([`Checked`]) instead. Cost: 16 MiB of
/// address space (`MAP_NORESERVE`, never touched past the real slots). 256, so that
/// the index is the load of `mm_cid`'s low byte.
pub(crate) const CID_SLOTS: usize = 256;
const _: () = assert!(CID_SLOTS.is_power_of_two() && CID_SLOTS <= u16::MAX as usize);

/// Slots the region maps for `slots` slots in use (see [`CID_SLOTS`]).
pub(crate) const fn region_slots(slots: usize) -> usize {
    if slots > CID_SLOTS {
        slots
    } else {
        CID_SLOTS
    }
}

static FRONT: Front = Front {
    _page: [0; FRONT_PAGE_OFFSET],
    word: AtomicUsize::new(0),
    base: AtomicUsize::new(0),
    slots: AtomicUsize::new(0),
    fast_cid: AtomicIsize::new(0),
    checked_cpu: AtomicIsize::new(0),
    checked_cid: AtomicIsize::new(0),
};
/// [`FRONT`], addressed `%rip`-relative on x86_64 (see `rip_relative!`).
#[inline(always)]
fn front() -> &'static Front {
    rip_relative!(FRONT, Front)
}

/// Defines `$name::<OFF>()`: the `$t` field of [`FRONT`] at byte offset `OFF`, read
/// with acquire. On x86_64 one `%rip`-relative load (`$load`), with no address
/// computed first (the fast paths are inlined into other crates, where a reference
/// to `FRONT` is a `lea`): an asm block that the compiler takes for a barrier, and a
/// load, which x86_64 does not reorder with later loads.
macro_rules! front_load {
    ($(#[$doc:meta])* $name:ident: $t:ty, $atomic:ty, $load:literal) => {
        $(#[$doc])*
        #[inline(always)]
        fn $name<const OFF: usize>() -> $t {
            #[cfg(target_arch = "x86_64")]
            {
                let v: $t;
                // SAFETY: reads a field of a static (`OFF` is a field's offset: the
                // callers' `offset_of!`), always valid; writes nothing.
                unsafe {
                    core::arch::asm!(
                        $load,
                        s = sym FRONT,
                        off = const OFF,
                        v = out(reg) v,
                        options(att_syntax, nostack, preserves_flags)
                    );
                }
                v
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                // SAFETY: `OFF` is the offset of a field of this atomic type.
                unsafe { &*(&FRONT as *const Front).byte_add(OFF).cast::<$atomic>() }
                    .load(Ordering::Acquire)
            }
        }
    };
}
front_load!(
    /// A word of [`FRONT`] (an `AtomicUsize` or `AtomicIsize` field).
    front_word: usize, AtomicUsize, "mov {s}+{off}(%rip), {v}"
);

/// `fast_cid`, `checked_cpu` and `checked_cid` as the fast paths read them
/// ([`front_word`]).
#[inline(always)]
fn fast_cid() -> isize {
    front_word::<{ core::mem::offset_of!(Front, fast_cid) }>() as isize
}
#[inline(always)]
fn checked_cpu() -> isize {
    front_word::<{ core::mem::offset_of!(Front, checked_cpu) }>() as isize
}
#[inline(always)]
fn checked_cid() -> isize {
    front_word::<{ core::mem::offset_of!(Front, checked_cid) }>() as isize
}

static FENCES: AtomicBool = AtomicBool::new(false);
static INIT: SpinLock<InitState> = SpinLock::new(InitState {
    done: false,
    failures: 0,
    skip: 0,
});

/// Where the set-up of the caches stands (guarded by [`INIT`]).
struct InitState {
    /// Set up, or given up for good (too many CPUs, or [`INIT_ATTEMPTS`] failed
    /// mappings).
    done: bool,
    /// Mappings of the region that failed so far (out of address space).
    failures: u32,
    /// Calls to [`init`] to let pass before the next attempt: after the `k`-th
    /// failure, `2^k` (of the slow paths that go to the middle for want of caches).
    skip: u64,
}

/// Failed mappings of the cache region after which [`init`] stops trying: a limit
/// lowered for a while (`RLIMIT_AS`) leaves the caches back once it is raised, a
/// process that never has the room pays a bounded number of attempts, ever sparser.
const INIT_ATTEMPTS: u32 = 24;
static DRAIN: SpinLock<()> = SpinLock::new(());
static NEXT_SCAN: AtomicU64 = AtomicU64::new(0);
static NEXT_RESIZE: AtomicU64 = AtomicU64::new(0);

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

/// The drain lock (also guards capacities and budgets), for the fork handlers.
pub fn drain_lock() -> &'static dyn RawLock {
    &DRAIN
}

/// The region's address, 0 until the caches are set up.
#[inline(always)]
fn base() -> usize {
    FRONT.word.load(Ordering::Acquire) & !BY_CID
}

#[inline(always)]
fn slot_addr(base: usize, slot: usize) -> usize {
    base + slot * STRIDE
}

/// A bookkeeping word of a slot.
fn word(base: usize, slot: usize, off: usize) -> &'static AtomicUsize {
    // SAFETY: a word of a slot of the region, which is never unmapped.
    unsafe { &*((slot_addr(base, slot) + off) as *const AtomicUsize) }
}

/// The byte offset of class `c`'s header in a slot (what the fast paths add to the
/// slot's address).
///
/// # Safety
/// `1 <= c <= CLASSES`.
#[inline(always)]
pub unsafe fn header_offset(c: usize) -> usize {
    // SAFETY: `c` is in range (caller).
    unsafe { *OFFSETS.get_unchecked(c) }
}

/// [`header_offset`] of the class of every size up to [`TABLE_MAX`], by
/// `size.div_ceil(MIN_ALIGN)` (the class table's index): the fast paths of a known
/// size go from the size to the header without the class (one dependent load
/// fewer); the class is looked up on their slow paths only.
pub const HEADER_BY_SIZE: [u16; TABLE_MAX / MIN_ALIGN + 1] = {
    let mut t = [0u16; TABLE_MAX / MIN_ALIGN + 1];
    let mut i = 0;
    while i < t.len() {
        t[i] = OFFSETS[class_of_size(i * MIN_ALIGN)] as u16;
        i += 1;
    }
    t
};
const _: () = assert!(OFFSETS[CLASSES] <= u16::MAX as usize);

/// [`header_offset`] of class `c` (`1..=CLASSES`), for constants (`raw` keys its
/// object check by it).
pub const fn header_offset_of(c: usize) -> usize {
    OFFSETS[c]
}

/// The header of class `c` in the slot at `slot` (its first word); its items follow
/// it.
///
/// # Safety
/// `1 <= c <= CLASSES`.
#[inline(always)]
unsafe fn header(slot: usize, c: usize) -> *mut isize {
    // SAFETY: `c` is in range (caller).
    (slot + unsafe { *OFFSETS.get_unchecked(c) }) as *mut isize
}

/// What a fast-path operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<T> {
    /// Done, with its result.
    Done(T),
    /// The cache was empty (pop) or full (push), stopped by another thread, or this
    /// thread has no rseq area or no cache slot: go to the slow path.
    Miss,
    /// The sequence was aborted (preempted, migrated, signalled): try again, out of
    /// the fast path.
    Aborted,
}

/// The front-end's set-up for a fast path (see [`set_up`]).
#[derive(Clone, Copy)]
enum SetUp {
    /// By mm_cid (low byte), the areas at this offset, glibc's if it is positive,
    /// the library's own if negative: [`Unchecked`].
    Low(AreaOffset),
    /// By CPU, the areas at this offset: [`Checked`].
    Cpu(AreaOffset),
    /// By mm_cid (the whole field), the areas at this offset: [`Checked`].
    Cid(AreaOffset),
    /// No process-wide offset (library-owned registration in a shared object
    /// without it, or the caches not set up): the set-up word, for the thread-local
    /// path ([`Tls`]).
    Tls(usize),
}

/// The front-end's set-up for a fast path: the mode and, where the areas are at one
/// offset ([`AreaOffset`]: glibc's registration, or the library's in an
/// executable), that offset (the index a constant of each mode for the compiler: the
/// region's address is read from `base`). The default mode (glibc's registration,
/// by mm_cid) costs one load and one test, whose branch it does not take; the
/// library's own registration by mm_cid takes that branch and tests the sign.
#[inline(always)]
fn set_up() -> SetUp {
    // Set up before `fast_cid`/`checked_cpu`/`checked_cid` (read with acquire).
    let off = fast_cid();
    if off != 0 {
        // SAFETY: a non-zero `fast_cid` was stored from `AreaOffset::bytes` (`init`).
        return SetUp::Low(unsafe { AreaOffset::from_bytes(off) });
    }
    // Block layout (`cold_path`): glibc's and the library's own areas straight through
    // the first branch, the other modes (kernels without mm_cid, a request for CPUs,
    // the thread-local area, not set up yet) after.
    core::hint::cold_path();
    let off = checked_cpu();
    if off != 0 {
        // SAFETY: as above.
        return SetUp::Cpu(unsafe { AreaOffset::from_bytes(off) });
    }
    let off = checked_cid();
    if off != 0 {
        // SAFETY: as above.
        return SetUp::Cid(unsafe { AreaOffset::from_bytes(off) });
    }
    SetUp::Tls(front().word.load(Ordering::Acquire))
}

/// `alloc` of class `c`: the cache's pop, else the abort retries or the slow path.
/// Where the areas are at one offset ([`AreaOffset`]), the whole path is inlined and
/// touches no thread-local; where the library owns registration, or the caches are
/// indexed by CPU, its first attempt checks the registration before the sequence
/// (see `init`). Otherwise (library-owned registration in a shared object without
/// the offset) the thread-local path is inlined too when `INLINE_TLS`, or one
/// out-of-line call:
/// - `INLINE_TLS` for Rust code (`PerCpuAlloc`): inlined into the user's crate. An
///   out-of-line copy is compiled in this library's position-independent code, where
///   the thread-local access is a `__tls_get_addr` call that the linker relaxes into
///   a load in an executable but whose register saves stay (5 pushes and pops, 6
///   moves): 9.6 ns per churn pair against 7.2 inlined, when executables took this
///   path (BENCHMARKS.md).
/// - not `INLINE_TLS` for the shared object (`raw`, `librestartable_malloc.so`):
///   there the call is real, and inlined it would make `malloc` save registers on
///   the libc-mode path too.
///
/// # Safety
/// `1 <= c <= CLASSES`.
#[inline(always)]
pub unsafe fn alloc<H: Hooks, const INLINE_TLS: bool>(c: usize) -> *mut u8 {
    // SAFETY: forwarded contract.
    unsafe { alloc_at::<H, INLINE_TLS>(|| header_offset(c), || c) }
}

/// [`alloc`] of the class whose header is at `hdr()` in a slot (called on the
/// inlined paths only), the class itself computed by `class` on the other paths
/// only. `INLINE_TLS`: see [`alloc`].
///
/// # Safety
/// `class()` is a class `c` (`1 <= c <= CLASSES`) and `hdr()` is `header_offset(c)`.
#[inline(always)]
pub unsafe fn alloc_at<H: Hooks, const INLINE_TLS: bool>(
    hdr: impl FnOnce() -> usize,
    class: impl FnOnce() -> usize,
) -> *mut u8 {
    match set_up() {
        // SAFETY: forwarded contract.
        SetUp::Low(off) => unsafe { alloc_in::<H>(BY_CID, Unchecked(off), hdr, class) },
        // SAFETY: forwarded contract.
        SetUp::Cpu(off) => unsafe { alloc_in::<H>(0, Checked(off), hdr, class) },
        // SAFETY: forwarded contract.
        SetUp::Cid(off) => unsafe { alloc_in::<H>(BY_CID, Checked(off), hdr, class) },
        // SAFETY: forwarded contract.
        SetUp::Tls(w) if INLINE_TLS => unsafe { alloc_in::<H>(w, Tls, hdr, class) },
        // SAFETY: forwarded contract.
        SetUp::Tls(w) => unsafe { alloc_tls::<H>(w, class()) },
    }
}

/// [`alloc`] with the thread-local area (see [`pop_tls`]).
///
/// # Safety
/// As for [`alloc`].
#[inline(never)]
unsafe fn alloc_tls<H: Hooks>(w: usize, c: usize) -> *mut u8 {
    // SAFETY: forwarded contract.
    unsafe { alloc_in::<H>(w, Tls, || header_offset(c), || c) }
}

/// # Safety
/// As for [`alloc_at`].
#[inline(always)]
unsafe fn alloc_in<H: Hooks>(
    w: usize,
    f: impl FindArea,
    hdr: impl FnOnce() -> usize,
    class: impl FnOnce() -> usize,
) -> *mut u8 {
    // SAFETY: forwarded contract.
    match unsafe { pop_in::<H, _>(w, f, hdr) } {
        Outcome::Done(p) => {
            // SAFETY: the caches hold objects only (pushed by `dealloc`, which is
            // never given null, or moved from spans): never null. (Folds the
            // caller's null test away, as `malloc`'s for errno.)
            unsafe { core::hint::assert_unchecked(!p.is_null()) };
            p
        }
        Outcome::Miss => alloc_slow::<H>(class()),
        Outcome::Aborted => alloc_after_abort::<H>(class()),
    }
}

/// `dealloc` of `obj`, of class `c`: the cache's push, else the abort retries or
/// the slow path (see [`alloc`], also for `INLINE_TLS`).
///
/// # Safety
/// `1 <= c <= CLASSES`; `obj` a free object of class `c` (its last use is over).
#[inline(always)]
pub unsafe fn dealloc<H: Hooks, const INLINE_TLS: bool>(c: usize, obj: *mut u8) {
    // SAFETY: forwarded contract.
    unsafe { dealloc_at::<H, INLINE_TLS>(|| header_offset(c), || c, obj) }
}

/// [`dealloc`] of `obj`, of the class whose header is at `hdr()` in a slot, the
/// class itself computed by `class` on the other paths only (see [`alloc_at`]).
///
/// # Safety
/// As for [`alloc_at`]; `obj` a free object of that class (its last use is over).
#[inline(always)]
pub unsafe fn dealloc_at<H: Hooks, const INLINE_TLS: bool>(
    hdr: impl FnOnce() -> usize,
    class: impl FnOnce() -> usize,
    obj: *mut u8,
) {
    match set_up() {
        // SAFETY: forwarded contract.
        SetUp::Low(off) => unsafe { dealloc_in::<H>(BY_CID, Unchecked(off), hdr, class, obj) },
        // SAFETY: forwarded contract.
        SetUp::Cpu(off) => unsafe { dealloc_in::<H>(0, Checked(off), hdr, class, obj) },
        // SAFETY: forwarded contract.
        SetUp::Cid(off) => unsafe { dealloc_in::<H>(BY_CID, Checked(off), hdr, class, obj) },
        // SAFETY: forwarded contract.
        SetUp::Tls(w) if INLINE_TLS => unsafe { dealloc_in::<H>(w, Tls, hdr, class, obj) },
        // SAFETY: forwarded contract.
        SetUp::Tls(w) => unsafe { dealloc_tls::<H>(w, class(), obj) },
    }
}

/// [`dealloc`] with the thread-local area (see [`pop_tls`]).
///
/// # Safety
/// As for [`dealloc`].
#[inline(never)]
unsafe fn dealloc_tls<H: Hooks>(w: usize, c: usize, obj: *mut u8) {
    // SAFETY: forwarded contract.
    unsafe { dealloc_in::<H>(w, Tls, || header_offset(c), || c, obj) }
}

/// # Safety
/// As for [`dealloc_at`].
#[inline(always)]
unsafe fn dealloc_in<H: Hooks>(
    w: usize,
    f: impl FindArea,
    hdr: impl FnOnce() -> usize,
    class: impl FnOnce() -> usize,
    obj: *mut u8,
) {
    // SAFETY: forwarded contract.
    unsafe {
        match push_in::<H, _>(w, f, hdr, obj) {
            Outcome::Done(()) => {}
            Outcome::Miss => dealloc_slow::<H>(class(), obj),
            Outcome::Aborted => dealloc_after_abort::<H>(class(), obj),
        }
    }
}

/// Pops a free object of class `c` from the current CPU's cache, in one attempt.
///
/// # Safety
/// `1 <= c <= CLASSES`.
#[inline(always)]
pub unsafe fn pop<H: Hooks>(c: usize) -> Outcome<*mut u8> {
    // SAFETY: `c` is a class (caller).
    let hdr = || unsafe { header_offset(c) };
    match set_up() {
        // SAFETY: forwarded contract.
        SetUp::Low(off) => unsafe { pop_in::<H, _>(BY_CID, CheckedLow(off), hdr) },
        // SAFETY: forwarded contract.
        SetUp::Cpu(off) => unsafe { pop_in::<H, _>(0, Checked(off), hdr) },
        // SAFETY: forwarded contract.
        SetUp::Cid(off) => unsafe { pop_in::<H, _>(BY_CID, Checked(off), hdr) },
        // SAFETY: forwarded contract.
        SetUp::Tls(w) => unsafe { pop_tls::<H>(w, c) },
    }
}

/// [`pop`] where the caches are by mm_cid's low byte and the areas at one offset
/// (a non-zero `fast_cid`: glibc's or the library's own, taken unchecked as in
/// `Unchecked`), for the inlined fast path of a caller that finishes out of line
/// anyway: a miss otherwise, without the out-of-line thread-local attempt, so that
/// the caller's fast path keeps no register across a call.
///
/// `hdr()` is called on that path only.
///
/// # Safety
/// `hdr()` is [`header_offset`] of a class.
#[inline(always)]
pub unsafe fn pop_at_offset<H: Hooks>(hdr: impl FnOnce() -> usize) -> Outcome<*mut u8> {
    // As `set_up`'s first test alone: the checked modes (by CPU, by the whole
    // mm_cid) are left to the caller's slow path ([`pop_checked`]). Inlined here,
    // their sequences' tails were merged with the first one's, which then ended in a
    // taken jump to a shared `ret` (`malloc`; BENCHMARKS.md, "in-sequence index";
    // and again with the library's own areas checked before the sequence, branch
    // `libown`).
    let off = fast_cid();
    if off != 0 {
        // SAFETY: as in `set_up`; forwarded contract.
        return unsafe { pop_in::<H, _>(BY_CID, Unchecked(AreaOffset::from_bytes(off)), hdr) };
    }
    Outcome::Miss
}

/// [`pop_at_offset`]'s missing words: by CPU, and by the whole mm_cid, the area at
/// one offset and checked before the sequence. For `malloc`'s slow path, where those
/// modes then start (see [`pop_at_offset`]).
///
/// # Safety
/// `hdr` is [`header_offset`] of a class.
#[inline(always)]
pub unsafe fn pop_checked<H: Hooks>(hdr: usize) -> Outcome<*mut u8> {
    let off = checked_cpu();
    if off != 0 {
        // SAFETY: as in `set_up`; forwarded contract.
        return unsafe { pop_in::<H, _>(0, Checked(AreaOffset::from_bytes(off)), || hdr) };
    }
    let off = checked_cid();
    if off != 0 {
        // SAFETY: as in `set_up`; forwarded contract.
        return unsafe { pop_in::<H, _>(BY_CID, Checked(AreaOffset::from_bytes(off)), || hdr) };
    }
    Outcome::Miss
}

/// [`pop`] where glibc's area is not at a process-wide offset: out of line, so
/// that the thread-local access (a `__tls_get_addr` call in a shared object) keeps
/// no registers of the libc-mode fast path.
///
/// # Safety
/// As for [`pop`].
#[inline(never)]
unsafe fn pop_tls<H: Hooks>(w: usize, c: usize) -> Outcome<*mut u8> {
    // SAFETY: forwarded contract.
    unsafe { pop_in::<H, _>(w, Tls, || header_offset(c)) }
}

/// [`pop`] with the area found by `f`, of the class whose header is at `hdr()`
/// (called once the area is found: on the thread-local path, where finding it may
/// call out, the offset is then not kept across that call).
///
/// # Safety
/// `hdr` is [`header_offset`] of a class.
#[inline(always)]
unsafe fn pop_in<H: Hooks, F: FindArea>(
    w: usize,
    f: F,
    hdr: impl FnOnce() -> usize,
) -> Outcome<*mut u8> {
    let Some(area) = area_for(w, f) else {
        return Outcome::Miss;
    };
    let (base, hdr) = (region(), hdr());
    // SAFETY: forwarded contract; `area_for` gave the area for the mode `w` and `f`
    // select (see `pop_indexed`).
    let (r, item) = unsafe {
        if w & BY_CID == 0 {
            pop_indexed::<ByCpu, H, false>(area, base, hdr)
        } else if F::LOW_BYTE_CID {
            pop_indexed::<ByMmCid, H, true>(area, base, hdr)
        } else {
            pop_indexed::<ByMmCid, H, false>(area, base, hdr)
        }
    };
    match r {
        OpResult::Committed => Outcome::Done(item as *mut u8),
        OpResult::CompareFailed => Outcome::Miss,
        OpResult::Aborted { .. } => Outcome::Aborted,
    }
}

/// This thread's area for a fast path of the mode `w` selects, found by `f`: when the
/// caches are set up (for the thread-local finder: `w`, the set-up word, is not 0; a
/// [`Checked`] or [`Unchecked`] finder exists only once they are) and, but for
/// [`Unchecked`] (whose sequence checks it, see there), the thread is registered.
#[inline(always)]
fn area_for<F: FindArea>(w: usize, f: F) -> Option<ThreadArea> {
    if !F::SET_UP && w == 0 {
        return None;
    }
    f.area()
}

/// `log2(STRIDE)`: the in-sequence ops' shift from an index to its slot.
const STRIDE_SHIFT: u32 = STRIDE.trailing_zeros();
const _: () = assert!(1 << STRIDE_SHIFT == STRIDE);

/// The region's address ([`Front::base`]): what the in-sequence ops add an index's
/// slot (`index << STRIDE_SHIFT`, inside the sequence) and a class's header offset
/// to. One `%rip`-relative load ([`front_word`]).
#[inline(always)]
fn region() -> *mut u8 {
    front_word::<{ core::mem::offset_of!(Front, base) }>() as *mut u8
}

/// The fast path's pop: `restartable`'s in-sequence index op, on the slot of the
/// index `I` the thread has inside the sequence (its low byte if `LOW_BYTE`).
///
/// # Safety
/// `base` is the region ([`region`], set up) and `hdr` [`header_offset`] of a class;
/// `area` is this thread's. Every index the field can hold has a slot in the region:
/// `cpu_id` and `mm_cid` stay below `possible_cpus()` (the kernel's `nr_cpu_ids`),
/// and the region maps at least that many slots (`init`); with `LOW_BYTE` (by mm_cid
/// at one offset, [`Unchecked`] or [`CheckedLow`]), `possible_cpus()` is at most
/// [`CID_SLOTS`] (256: `init` publishes `fast_cid` only then, see [`field_for`]), so
/// the low byte is the whole index. Each slot's headers are written only by
/// sequences for its index (or by a thread that stopped and fenced it); the slots
/// past the possible CPUs, never reached, are zero (count and capacity 0: every op
/// misses).
#[inline(always)]
unsafe fn pop_indexed<I: Index, H: Hooks, const LOW_BYTE: bool>(
    area: ThreadArea,
    base: *mut u8,
    hdr: usize,
) -> (OpResult, isize) {
    // SAFETY: forwarded contract (the op's, in the terms of the region).
    unsafe { arch::load_index_slab_pop::<I, H, STRIDE_SHIFT, LOW_BYTE>(area, base, hdr) }
}

/// The fast path's push (see [`pop_indexed`]).
///
/// # Safety
/// As for [`pop_indexed`]; `obj` a free object of the class.
#[inline(always)]
unsafe fn push_indexed<I: Index, H: Hooks, const LOW_BYTE: bool>(
    area: ThreadArea,
    base: *mut u8,
    hdr: usize,
    obj: *mut u8,
) -> OpResult {
    // SAFETY: forwarded contract; the items from the count up to the capacity (at
    // most `max_capacity`, the room the slot has) are unpublished.
    unsafe {
        arch::load_index_slab_push::<I, H, STRIDE_SHIFT, LOW_BYTE>(area, base, hdr, obj as isize)
    }
}

/// How the fast path finds this thread's area: from glibc's process-wide offset
/// ([`AreaOffset`]: no thread-local) or the library's thread-local ([`Tls`]).
trait FindArea: Copy {
    /// Whether the caches are known to be set up when this finder exists.
    const SET_UP: bool;
    /// Whether the sequence by mm_cid reads the low byte of `mm_cid` ([`Unchecked`],
    /// [`CheckedLow`]: at most [`CID_SLOTS`] possible CPUs) rather than the whole
    /// field.
    const LOW_BYTE_CID: bool = false;
    /// The area, if this thread is registered (for [`Unchecked`]: the area, which
    /// may be unregistered; only for the mm_cid index).
    fn area(self) -> Option<ThreadArea>;
}

/// The process-wide offset ([`AreaOffset`]), as [`set_up`] finds it (only once the
/// caches are set up), with the registration checked before each sequence.
#[derive(Clone, Copy)]
struct Checked(AreaOffset);

impl FindArea for Checked {
    const SET_UP: bool = true;
    #[inline(always)]
    fn area(self) -> Option<ThreadArea> {
        self.0.current_if_registered()
    }
}

/// [`Checked`] for the first attempt of an inlined fast path: by mm_cid's low byte
/// (a non-zero `fast_cid`, glibc's areas or the library's own), the area without a
/// registration check of its own (`AreaOffset::current_unchecked`): the op reads
/// `cpu_id` before its descriptor store and again inside the sequence, and aborts
/// unless both are CPUs (`load_index_slab_pop`/`push`). So a thread that was not
/// registered before the sequence never runs it, even where the library owns
/// registration and a signal handler registers the thread inside the sequence
/// (which would clear `rseq_cs` under it; see [`field_for`]). The retries after an
/// abort ([`alloc_after_abort`], [`dealloc_after_abort`]) go through [`pop`] and
/// [`push`], which check it before the sequence ([`CheckedLow`]) and so send such a
/// thread to the slow path. One copy of the sequence for both owners, with no
/// branch between them: each runs straight through to its `ret` (the library's own
/// check before the sequence, laid out of line, cost two taken jumps per call:
/// BENCHMARKS.md, branch `lo`).
#[derive(Clone, Copy)]
struct Unchecked(AreaOffset);

impl FindArea for Unchecked {
    const SET_UP: bool = true;
    const LOW_BYTE_CID: bool = true;
    #[inline(always)]
    fn area(self) -> Option<ThreadArea> {
        // SAFETY: used by `pop_in`/`push_in` for the mm_cid index only, with the
        // in-sequence index ops (which check the registration before the sequence and
        // inside it), and the abort paths check it with `CheckedLow` before trying
        // again.
        Some(unsafe { self.0.current_unchecked() })
    }
}
// The low byte of `mm_cid` is the whole index (`Unchecked`, `CheckedLow`).
const _: () = assert!(CID_SLOTS == 256);

/// [`Checked`] by mm_cid's low byte: the same op as [`Unchecked`]'s, after a
/// registration check of its own, which sends a thread that is not registered to
/// the slow path without entering the sequence: the retries' finder in both modes
/// ([`pop`], [`push`]).
#[derive(Clone, Copy)]
struct CheckedLow(AreaOffset);

impl FindArea for CheckedLow {
    const SET_UP: bool = true;
    const LOW_BYTE_CID: bool = true;
    #[inline(always)]
    fn area(self) -> Option<ThreadArea> {
        self.0.current_if_registered()
    }
}

/// See [`FindArea`].
#[derive(Clone, Copy)]
struct Tls;

impl FindArea for Tls {
    const SET_UP: bool = false;
    #[inline(always)]
    fn area(self) -> Option<ThreadArea> {
        ThreadArea::current_if_registered()
    }
}

/// `alloc` of class `c` after the fast path's sequence aborted: more attempts
/// (up to [`MAX_ABORTS`] in all), then the slow path.
#[cold]
#[inline(never)]
pub fn alloc_after_abort<H: Hooks>(c: usize) -> *mut u8 {
    if (1..=CLASSES).contains(&c) {
        for _ in 1..MAX_ABORTS {
            // SAFETY: `c` checked.
            match unsafe { pop::<H>(c) } {
                Outcome::Done(p) => return p,
                Outcome::Miss => break,
                Outcome::Aborted => {}
            }
        }
    }
    alloc_slow::<H>(c)
}

/// Pushes a free object of class `c` on the current CPU's cache, in one attempt.
///
/// # Safety
/// `1 <= c <= CLASSES`.
#[inline(always)]
pub unsafe fn push<H: Hooks>(c: usize, obj: *mut u8) -> Outcome<()> {
    // SAFETY: `c` is a class (caller).
    let hdr = || unsafe { header_offset(c) };
    match set_up() {
        // SAFETY: forwarded contract.
        SetUp::Low(off) => unsafe { push_in::<H, _>(BY_CID, CheckedLow(off), hdr, obj) },
        // SAFETY: forwarded contract.
        SetUp::Cpu(off) => unsafe { push_in::<H, _>(0, Checked(off), hdr, obj) },
        // SAFETY: forwarded contract.
        SetUp::Cid(off) => unsafe { push_in::<H, _>(BY_CID, Checked(off), hdr, obj) },
        // SAFETY: forwarded contract.
        SetUp::Tls(w) => unsafe { push_tls::<H>(w, c, obj) },
    }
}

/// [`push`] where the caches are by mm_cid's low byte and the areas at one offset
/// (see [`pop_at_offset`]), of an object whose class `find()` tells, called on that
/// path only: the header offset of its class, or `None` for a miss (not an object of
/// the caches). The C `free` looks the pointer up there, so that in the other modes
/// its slow path is the only one to ([`push_checked`] first).
///
/// # Safety
/// `find()` is `None` or [`header_offset`] of a class, and then `obj` is a free
/// object of that class.
#[inline(always)]
pub unsafe fn push_at_offset<H: Hooks>(
    find: impl FnOnce() -> Option<usize>,
    obj: *mut u8,
) -> Outcome<()> {
    let off = fast_cid();
    if off != 0 {
        let Some(hdr) = find() else {
            return Outcome::Miss;
        };
        // SAFETY: as in `set_up`; forwarded contract.
        return unsafe {
            push_in::<H, _>(BY_CID, Unchecked(AreaOffset::from_bytes(off)), || hdr, obj)
        };
    }
    Outcome::Miss
}

/// [`push_at_offset`]'s missing words (by CPU, by the whole mm_cid: the area at one
/// offset, checked before the sequence), for `free`'s slow path, where those modes
/// then start (see [`pop_checked`]).
///
/// # Safety
/// As for [`push_at_offset`].
#[inline(always)]
pub unsafe fn push_checked<H: Hooks>(
    find: impl FnOnce() -> Option<usize>,
    obj: *mut u8,
) -> Outcome<()> {
    // As `set_up`, with `find` in each mode's branch: a shared lookup would make
    // the compiler test the mode again after it.
    let off = checked_cpu();
    if off != 0 {
        let Some(hdr) = find() else {
            return Outcome::Miss;
        };
        // SAFETY: as in `set_up`; forwarded contract.
        return unsafe { push_in::<H, _>(0, Checked(AreaOffset::from_bytes(off)), || hdr, obj) };
    }
    let off = checked_cid();
    if off != 0 {
        let Some(hdr) = find() else {
            return Outcome::Miss;
        };
        // SAFETY: as in `set_up`; forwarded contract.
        return unsafe {
            push_in::<H, _>(BY_CID, Checked(AreaOffset::from_bytes(off)), || hdr, obj)
        };
    }
    Outcome::Miss
}

/// [`push`] where glibc's area is not at a process-wide offset (see [`pop_tls`]).
///
/// # Safety
/// As for [`push`].
#[inline(never)]
unsafe fn push_tls<H: Hooks>(w: usize, c: usize, obj: *mut u8) -> Outcome<()> {
    // SAFETY: forwarded contract.
    unsafe { push_in::<H, _>(w, Tls, || header_offset(c), obj) }
}

/// [`push`] with the area found by `f`, of the class whose header is at `hdr()` (see
/// [`pop_in`]).
///
/// # Safety
/// As for [`push_at_offset`].
#[inline(always)]
unsafe fn push_in<H: Hooks, F: FindArea>(
    w: usize,
    f: F,
    hdr: impl FnOnce() -> usize,
    obj: *mut u8,
) -> Outcome<()> {
    let Some(area) = area_for(w, f) else {
        return Outcome::Miss;
    };
    let (base, hdr) = (region(), hdr());
    // SAFETY: as in `pop_in`; forwarded contract.
    let r = unsafe {
        if w & BY_CID == 0 {
            push_indexed::<ByCpu, H, false>(area, base, hdr, obj)
        } else if F::LOW_BYTE_CID {
            push_indexed::<ByMmCid, H, true>(area, base, hdr, obj)
        } else {
            push_indexed::<ByMmCid, H, false>(area, base, hdr, obj)
        }
    };
    match r {
        OpResult::Committed => Outcome::Done(()),
        OpResult::CompareFailed => Outcome::Miss,
        OpResult::Aborted { .. } => Outcome::Aborted,
    }
}

/// Pushes `obj` with up to [`MAX_ABORTS`] attempts: whether it is in the cache.
///
/// # Safety
/// `1 <= c <= CLASSES`.
unsafe fn push_retrying<H: Hooks>(c: usize, obj: *mut u8) -> bool {
    for _ in 0..MAX_ABORTS {
        // SAFETY: forwarded contract.
        match unsafe { push::<H>(c, obj) } {
            Outcome::Done(()) => return true,
            Outcome::Miss => return false,
            Outcome::Aborted => {}
        }
    }
    false
}

/// `dealloc` of class `c` after the fast path's sequence aborted: more attempts,
/// then the slow path.
///
/// # Safety
/// As for [`dealloc_slow`].
#[cold]
#[inline(never)]
pub unsafe fn dealloc_after_abort<H: Hooks>(c: usize, obj: *mut u8) {
    // SAFETY: `c` checked; forwarded contract.
    if (1..=CLASSES).contains(&c) && unsafe { push_retrying::<H>(c, obj) } {
        return;
    }
    // SAFETY: forwarded contract.
    unsafe { dealloc_slow::<H>(c, obj) }
}

/// Moves up to `items.len()` objects into the current CPU's cache in one sequence;
/// returns how many (a prefix of `items`).
fn push_many<I: Index, H: Hooks>(
    area: ThreadArea,
    base: usize,
    c: usize,
    items: &[*mut u8],
) -> usize {
    let mut aborts = 0;
    while aborts < MAX_ABORTS {
        let cpu = I::current(area);
        if cpu as usize >= FRONT.slots.load(Ordering::Relaxed) {
            return 0;
        }
        let slot = slot_addr(base, cpu as usize);
        // SAFETY: `c` is a class (callers), the header is words of the slot.
        let hdr = unsafe { header(slot, c) };
        // SAFETY: as in `pop_indexed`.
        let h = unsafe { SlabHeader::at(hdr) };
        let cur = h.count();
        let cap = h.capacity.load(Ordering::Relaxed);
        let k = items.len().min(cap.saturating_sub(cur as usize));
        if k == 0 {
            return 0;
        }
        // SAFETY: items[cur..cur + k] are past the published part of the slot's
        // array and below its capacity (unread until the commit publishes them; the
        // sequence re-checks the count and the stop half); `items` is ours.
        let r = unsafe {
            arch::load_cbne_slab_memcpy_store::<I, Release, H>(
                area,
                cpu,
                hdr,
                cur,
                hdr.add(SLAB_HEADER_WORDS + cur as usize) as *mut u8,
                items.as_ptr().cast(),
                k * 8,
                cur + k as u32,
            )
        };
        match r {
            OpResult::Committed => return k,
            OpResult::CompareFailed => {
                if h.is_stopped() {
                    return 0;
                }
            }
            OpResult::Aborted { .. } => aborts += 1,
        }
    }
    0
}

/// Takes up to `out.len()` objects off the current CPU's cache in one sequence;
/// returns how many, `k`, having written `out[..k]` (what else of `out` it wrote, by
/// a sequence that did not commit, is not to be read).
fn pop_many<I: Index, H: Hooks>(
    area: ThreadArea,
    base: usize,
    c: usize,
    out: &mut [MaybeUninit<*mut u8>],
) -> usize {
    let mut aborts = 0;
    while aborts < MAX_ABORTS {
        let cpu = I::current(area);
        if cpu as usize >= FRONT.slots.load(Ordering::Relaxed) {
            return 0;
        }
        let slot = slot_addr(base, cpu as usize);
        // SAFETY: `c` is a class (callers), the header is words of the slot.
        let hdr = unsafe { header(slot, c) };
        // SAFETY: as in `pop_indexed`.
        let h = unsafe { SlabHeader::at(hdr) };
        let cur = h.count();
        let k = out.len().min(cur as usize);
        if k == 0 {
            return 0;
        }
        // SAFETY: items[cur - k..cur] are published items of the slot, copied into
        // our buffer before the commit unpublishes them (the sequence re-checks the
        // count and the stop half).
        let r = unsafe {
            arch::load_cbne_slab_memcpy_store::<I, Relaxed, H>(
                area,
                cpu,
                hdr,
                cur,
                out.as_mut_ptr().cast(),
                hdr.add(SLAB_HEADER_WORDS + cur as usize - k) as *const u8,
                k * 8,
                cur - k as u32,
            )
        };
        match r {
            OpResult::Committed => return k,
            OpResult::CompareFailed => {
                if h.is_stopped() {
                    return 0;
                }
            }
            OpResult::Aborted { .. } => aborts += 1,
        }
    }
    0
}

/// Grows class `c`'s capacity in the current slot by a batch, if the slot's budget
/// allows; counts the miss either way. Returns whether it grew.
fn grow<I: Index>(area: ThreadArea, base: usize, c: usize) -> bool {
    let cpu = I::current(area) as usize;
    let slots = FRONT.slots.load(Ordering::Relaxed);
    if cpu >= slots {
        return false;
    }
    word(base, cpu, MISSES + 8 * c).fetch_add(1, Ordering::Relaxed);
    let sz = size(c);
    let step = batch(c);
    // Unlocked first look: a full class or a spent budget takes no lock.
    // SAFETY: `c` is a class (callers); the header is words of the slot.
    let h = unsafe { SlabHeader::at(header(slot_addr(base, cpu), c)) };
    if h.capacity.load(Ordering::Relaxed) >= max_capacity(c) {
        return false;
    }
    if word(base, cpu, BUDGET).load(Ordering::Relaxed) + step.min(max_capacity(c)) * sz
        > max_cached_bytes_per_cpu()
    {
        word(base, cpu, DENIED).fetch_add(1, Ordering::Relaxed);
        return false;
    }
    let _budgets = DRAIN.lock();
    // The slot of the CPU this thread is on now (the one it missed in, unless it
    // moved since: then the other grows, its budget counted as well).
    let cpu = I::current(area) as usize;
    if cpu >= slots {
        return false;
    }
    // SAFETY: `c` is a class; the header is words of the slot.
    let h = unsafe { SlabHeader::at(header(slot_addr(base, cpu), c)) };
    // A slot left stopped (its fence failed) keeps its capacities.
    if h.is_stopped() {
        return false;
    }
    let cap = h.capacity.load(Ordering::Relaxed);
    let add = step.min(max_capacity(c).saturating_sub(cap));
    let budget = word(base, cpu, BUDGET);
    if add == 0 {
        return false;
    }
    if budget.load(Ordering::Relaxed) + add * sz > max_cached_bytes_per_cpu() {
        word(base, cpu, DENIED).fetch_add(1, Ordering::Relaxed);
        return false;
    }
    // No sequence writes the capacity, and every other change of it holds the drain
    // lock (held): a plain store. A push running now for the slot reads the old
    // capacity or the new one, both within the room the slot has.
    h.capacity.store(cap + add, Ordering::Relaxed);
    budget.fetch_add(add * sz, Ordering::Relaxed);
    true
}

/// This thread's area for the slow path: registers the thread (and sets up the
/// caches) on first use, guarded against re-entry. `None`: use the middle.
#[inline]
fn slow_area() -> Option<(ThreadArea, usize)> {
    let base = base();
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
    let base = base();
    match area {
        Ok(a) if base != 0 => Some((a, base)),
        _ => None,
    }
}

/// Maps the caches, once. Runs with `BUSY` set: what it allocates comes from the
/// middle. When the mapping fails (out of address space: the page heap's free runs
/// are unmapped to make room first), later calls try again, at most
/// [`INIT_ATTEMPTS`] times, each after twice as many calls as the one before.
fn init() {
    let mut st = INIT.lock();
    if st.done {
        return;
    }
    if st.skip > 0 {
        st.skip -= 1;
        return;
    }
    // A power of two, at most 2^16; the region has room for `CID_SLOTS` at least.
    // The fast paths' sequences read the index inside and do not bound it
    // (`pop_indexed`): the region needs a slot for every possible CPU, so beyond
    // 2^16 of them (far past what Linux builds for), no caches.
    let possible = restartable::possible_cpus();
    let slots = possible.max(1).next_power_of_two();
    let len = region_slots(slots).checked_mul(STRIDE);
    let Some(len) = len.filter(|_| possible <= 1 << 16) else {
        st.done = true;
        return;
    };
    let Some(p) = crate::backend::page_heap::map_room(len, || os::map(len)) else {
        st.failures += 1;
        st.done = st.failures >= INIT_ATTEMPTS;
        st.skip = 1 << st.failures.min(INIT_ATTEMPTS);
        return;
    };
    st.done = true;
    let by_cid = restartable::registration::mm_cid_available() && !index_by_cpu_requested();
    FENCES.store(restartable::fences_supported(), Ordering::Relaxed);
    FRONT.slots.store(slots, Ordering::Relaxed);
    FRONT.base.store(p as usize, Ordering::Relaxed);
    let w = p as usize | if by_cid { BY_CID } else { 0 };
    FRONT.word.store(w, Ordering::Release);
    if let Some(off) = AreaOffset::get() {
        let owner = restartable::registration::process_owner();
        let mode = match field_for(by_cid, owner, slots, off.bytes()) {
            Field::FastCid => &FRONT.fast_cid,
            Field::CheckedCid => &FRONT.checked_cid,
            Field::CheckedCpu => &FRONT.checked_cpu,
        };
        mode.store(off.bytes(), Ordering::Release);
    }
}

/// The field of [`Front`] that `init` stores the areas' offset in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    FastCid,
    CheckedCpu,
    CheckedCid,
}

/// Which field `init` publishes the areas' offset `off` in ([`AreaOffset::bytes`]),
/// for caches by mm_cid (`by_cid`) or by CPU, `slots` of them, registrations owned
/// by `owner`.
///
/// `fast_cid`'s sign tells who owns registrations: positive for glibc, where a
/// thread that is not registered never becomes so, negative for the library, which
/// registers at first use, also from a signal handler. There a thread could be
/// registered by a handler that interrupted a sequence it entered unregistered: the
/// registration clears `rseq_cs` (the thread being outside the sequence then), and
/// the sequence would go on without the kernel's protection, its checks inside
/// passing. The Rust fast paths ([`Unchecked`], both signs) take the area unchecked
/// because their ops read `cpu_id` before the descriptor store as well and abort
/// unless it was a CPU then: a thread registered at that read stays so until the
/// sequence ends (a signal inside it aborting it), or is unregistered for good by a
/// handler (`disable_current_thread`), which the read inside catches. The C
/// `malloc`/`free` take the same path for both signs ([`pop_at_offset`],
/// [`push_at_offset`]). Each owner's
/// offset has its own sign on x86_64 (glibc's area is in its thread descriptor,
/// above the thread pointer; the library's in static TLS, below it); an offset of
/// the other sign takes the checked path that reads the whole field
/// (`checked_cid`), as do more than [`CID_SLOTS`] possible CPUs (the low byte would
/// not be the whole `mm_cid`, see there).
fn field_for(by_cid: bool, owner: Option<restartable::Owner>, slots: usize, off: isize) -> Field {
    use restartable::Owner;
    match (by_cid, owner) {
        (true, Some(Owner::Libc)) if slots <= CID_SLOTS && off > 0 => Field::FastCid,
        (true, Some(Owner::Library)) if slots <= CID_SLOTS && off < 0 => Field::FastCid,
        (true, _) => Field::CheckedCid,
        (false, _) => Field::CheckedCpu,
    }
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

/// The first attempt the inlined fast paths take, as `init` set it up (see
/// [`fast_path`]; for tests).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastPath {
    /// No caches (not set up yet, their region not mapped yet for want of address
    /// space, or rseq unavailable).
    NoCaches,
    /// glibc's areas at one offset, by mm_cid's low byte, the area taken unchecked
    /// (a positive `fast_cid`; the finder `Unchecked`): the op itself reads `cpu_id`
    /// before its sequence and inside it, and aborts unless both are CPUs.
    LibcUnchecked,
    /// The library's own areas at one offset, by mm_cid's low byte (a negative
    /// `fast_cid`): the same path as [`LibcUnchecked`](Self::LibcUnchecked), the
    /// area taken unchecked too (before branch `lo` the library's own areas were
    /// checked before the sequence; the op's reads of `cpu_id` now do for both).
    OwnUnchecked,
    /// The areas at one offset, by CPU, checked before the sequence.
    ByCpu,
    /// The areas at one offset, by the whole mm_cid, checked before the sequence.
    ByWholeCid,
    /// The library's thread-local area (no process-wide offset).
    ThreadLocal,
}

/// Which first attempt the fast paths take (for tests: each registration mode's
/// path, checked from outside).
#[doc(hidden)]
pub fn fast_path() -> FastPath {
    match set_up() {
        SetUp::Low(off) if off.bytes() > 0 => FastPath::LibcUnchecked,
        SetUp::Low(_) => FastPath::OwnUnchecked,
        SetUp::Cpu(_) => FastPath::ByCpu,
        SetUp::Cid(_) => FastPath::ByWholeCid,
        SetUp::Tls(0) => FastPath::NoCaches,
        SetUp::Tls(_) => FastPath::ThreadLocal,
    }
}

/// Whether the caches exist (their slot count), and whether they are indexed by
/// mm_cid.
pub fn mode() -> Option<(usize, bool)> {
    let w = front().word.load(Ordering::Acquire);
    (w != 0).then(|| (FRONT.slots.load(Ordering::Relaxed), w & BY_CID != 0))
}

macro_rules! dispatch {
    ($f:ident::<$H:ident>($($a:expr),*)) => {
        if FRONT.word.load(Ordering::Relaxed) & BY_CID != 0 {
            $f::<ByMmCid, $H>($($a),*)
        } else {
            $f::<ByCpu, $H>($($a),*)
        }
    };
    ($f:ident($($a:expr),*)) => {
        if FRONT.word.load(Ordering::Relaxed) & BY_CID != 0 {
            $f::<ByMmCid>($($a),*)
        } else {
            $f::<ByCpu>($($a),*)
        }
    };
}

/// `alloc` of class `c` when the cache had nothing: a batch from the middle, one
/// object for the caller and the rest into the cache (whose capacity grows by a
/// batch if the budget allows). Null when memory is exhausted.
#[cold]
#[inline(never)]
pub fn alloc_slow<H: Hooks>(c: usize) -> *mut u8 {
    if c == 0 || c > CLASSES {
        // A safe function: a number that is no class gets nothing (it would index
        // the slot's miss counters and headers out of bounds).
        return core::ptr::null_mut();
    }
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
        let mut one = [MaybeUninit::uninit(); 1];
        return match middle::remove_batch(c, &mut one) {
            // SAFETY: `remove_batch` wrote the one object it counts.
            1 => unsafe { one[0].assume_init() },
            _ => core::ptr::null_mut(),
        };
    };
    dispatch!(grow(area, base, c));
    // Not cleared (a batch is up to 1 KiB, and this runs on every refill): only the
    // prefix `remove_batch` wrote is read.
    let mut buf = [MaybeUninit::uninit(); MAX_BATCH];
    let got = middle::remove_batch(c, &mut buf[..batch(c)]);
    // SAFETY: `remove_batch` wrote `buf[..got]` (its contract: the prefix it counts).
    let got = unsafe { buf[..got].assume_init_ref() };
    // None: memory is exhausted.
    let Some((&obj, rest)) = got.split_last() else {
        return core::ptr::null_mut();
    };
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

/// `dealloc` of class `c` when the cache was full: the cache's capacity grows by a
/// batch if the budget allows, else a batch of the cache and `obj` go to the middle.
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
    // SAFETY: `c` is a class (forwarded contract).
    if dispatch!(grow(area, base, c)) && unsafe { push_retrying::<H>(c, obj) } {
        return;
    }
    // Not cleared (see `alloc_slow`): only the prefix written below is read.
    let mut buf = [MaybeUninit::uninit(); MAX_BATCH + 1];
    let k = dispatch!(pop_many::<H>(area, base, c, &mut buf[..batch(c)]));
    // SAFETY: `c` is a class.
    let n = if k > 0 && unsafe { push_retrying::<H>(c, obj) } {
        k
    } else {
        buf[k].write(obj);
        k + 1
    };
    // SAFETY: `pop_many` wrote `buf[..k]` (its contract: the prefix it counts), and
    // `buf[k]` is written just above whenever `n` is `k + 1`.
    let objs = unsafe { buf[..n].assume_init_ref() };
    // SAFETY: objects taken off the cache, and `obj`: free, in no cache.
    unsafe { middle::insert_batch(c, objs) };
    visited_middle(area);
}

/// The clock the idle drain and the resize passes run on (`CLOCK_MONOTONIC_COARSE`
/// in whole milliseconds): [`IDLE_MS`] and [`RESIZE_MS`] are measured on it. Public
/// for tests that count rounds on the same clock (a reading taken after the
/// allocator stamped an event is at least that stamp), not an API.
#[doc(hidden)]
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Stamps the current slot; drains idle slots and resizes starved ones if a pass is
/// due.
fn visited_middle(area: ThreadArea) {
    let Some((slots, by_cid)) = mode() else {
        return;
    };
    let slot = if by_cid { area.mm_cid() } else { area.cpu_id() } as usize;
    let now = now_ms();
    let base = base();
    if slot < slots {
        word(base, slot, STAMP).store(now as usize, Ordering::Relaxed);
    }
    if !FENCES.load(Ordering::Relaxed) {
        return;
    }
    let next = NEXT_SCAN.load(Ordering::Relaxed);
    if now >= next
        && NEXT_SCAN
            .compare_exchange(next, now + IDLE_MS, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        drain_idle(now);
    }
    let next = NEXT_RESIZE.load(Ordering::Relaxed);
    if now >= next
        && NEXT_RESIZE
            .compare_exchange(next, now + RESIZE_MS, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        resize_starved();
    }
}

#[cold]
fn drain_idle(now: u64) {
    let Some((slots, _)) = mode() else { return };
    let base = base();
    for slot in 0..slots {
        let last = word(base, slot, STAMP).load(Ordering::Relaxed) as u64;
        if last + IDLE_MS < now && cached_bytes(slot) > 0 {
            let _ = drain_slot(slot);
        }
    }
}

/// Resizes every slot whose classes were denied growth since the last pass.
#[cold]
fn resize_starved() {
    let Some((slots, _)) = mode() else { return };
    let base = base();
    for slot in 0..slots {
        if word(base, slot, DENIED).load(Ordering::Relaxed) != 0 {
            let _ = resize_slot(slot);
        } else {
            for c in 1..=CLASSES {
                word(base, slot, MISSES + 8 * c).store(0, Ordering::Relaxed);
            }
        }
    }
}

/// Bytes of free objects in slot `slot`'s caches (racy: for statistics).
pub fn cached_bytes(slot: usize) -> usize {
    let base = base();
    if base == 0 || slot >= FRONT.slots.load(Ordering::Relaxed) {
        return 0;
    }
    (1..=CLASSES)
        .map(|c| {
            // SAFETY: a header of a slot of the region (`c` a class).
            let h = unsafe { SlabHeader::at(header(slot_addr(base, slot), c)) };
            h.count() as usize * size(c)
        })
        .sum()
}

/// Bytes of capacity slot `slot`'s classes have now (racy: for statistics).
pub fn capacity_bytes(slot: usize) -> usize {
    let base = base();
    if base == 0 || slot >= FRONT.slots.load(Ordering::Relaxed) {
        return 0;
    }
    word(base, slot, BUDGET).load(Ordering::Relaxed)
}

/// Objects of class `c` cached in slot `slot` (racy: for tests).
#[doc(hidden)]
pub fn class_count(slot: usize, c: usize) -> usize {
    slot_header(slot, c).map_or(0, |h| h.count() as usize)
}

/// Capacity of class `c` in slot `slot`, in objects (racy: for statistics and tests).
pub fn class_capacity(slot: usize, c: usize) -> usize {
    slot_header(slot, c).map_or(0, |h| h.capacity.load(Ordering::Relaxed))
}

/// The header of class `c` in slot `slot`: `None` before the caches are set up, for
/// a slot past the region's or a class that is not one (`0`, past [`CLASSES`]).
/// For [`class_count`] and [`class_capacity`], the lookups that take any numbers.
fn slot_header(slot: usize, c: usize) -> Option<&'static SlabHeader> {
    let base = base();
    if base == 0 || slot >= FRONT.slots.load(Ordering::Relaxed) || c == 0 || c > CLASSES {
        return None;
    }
    // SAFETY: a header of a slot of the region (`slot` and `c` checked); the region
    // is never unmapped once set up, so the reference stays valid.
    Some(unsafe { SlabHeader::at(header(slot_addr(base, slot), c)) })
}

/// Objects of class `c` in every slot (racy: for statistics).
pub fn cached_objects(c: usize) -> usize {
    let base = base();
    if base == 0 || c == 0 || c > CLASSES {
        return 0;
    }
    (0..FRONT.slots.load(Ordering::Relaxed))
        .map(|slot| {
            // SAFETY: a header of a slot of the region (`c` checked).
            let h = unsafe { SlabHeader::at(header(slot_addr(base, slot), c)) };
            h.count() as usize
        })
        .sum()
}

/// Why a slot could not be drained or resized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainError {
    /// The caches are not set up (no thread used them yet, their region could not
    /// be mapped yet for want of address space, or rseq is unavailable).
    NoCaches,
    /// The kernel has no membarrier rseq fences: another thread cannot stop a
    /// slot's sequences.
    NoFences,
    /// The slot's sequences kept clearing its stop flags (commits that began before
    /// each stop) through [`MAX_STOP_FENCES`] fences: it was reopened, untouched.
    Busy,
}

/// Fences one stop of a slot may take (see [`DrainError::Busy`]): a commit clears a
/// stop flag only if its sequence read the header before the stop and committed before
/// the fence reached its CPU, so a second fence almost always finds every flag set.
pub const MAX_STOP_FENCES: u32 = 16;

/// Fences left for which [`race_stops`] asked a cleared stop half.
static STOP_RACES: AtomicU32 = AtomicU32::new(0);

/// For tests: each of the next `fences` fences that stop a slot (in [`drain_slot`],
/// [`resize_slot`], [`drain_all`] and the idle and resize passes) is followed by a
/// clear of the stop half of that slot's first class, its count kept, as a commit
/// whose sequence read the header before the stop and committed before the fence
/// leaves it. That is the one race the stopping thread cannot prevent, and it
/// reaches the paths that handle it: the re-stop and, after [`MAX_STOP_FENCES`] of
/// them in one stop, the reopened slot and [`DrainError::Busy`].
///
/// Safe: the clear is an atomic `fetch_and` of the header's first word, and it comes
/// after the fence and before the stopping thread's own check of the stop halves,
/// which takes the slot only when it finds them all set after a fence: as for a real
/// commit, a cleared half costs another fence, never a slot taken while a sequence can
/// still commit to it.
#[doc(hidden)]
pub fn race_stops(fences: u32) {
    STOP_RACES.store(fences, Ordering::Relaxed);
}

/// [`race_stops`]'s clear, after a fence of `slot`, if one is asked for.
fn stop_race(base: usize, slot: usize) {
    let took = STOP_RACES.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    if took.is_ok() {
        // SAFETY: class 1's header in a slot of the region (never unmapped).
        unsafe { SlabHeader::at(header(slot_addr(base, slot), 1)) }.restart();
    }
}

/// Classes of slot `slot` whose header has its stop half set (racy: for tests; 0
/// whenever no thread is stopping the slot).
#[doc(hidden)]
pub fn stopped_classes(slot: usize) -> usize {
    let base = base();
    if base == 0 || slot >= FRONT.slots.load(Ordering::Relaxed) {
        return 0;
    }
    (1..=CLASSES)
        .filter(|&c| {
            // SAFETY: a header of a slot of the region (`c` a class).
            unsafe { SlabHeader::at(header(slot_addr(base, slot), c)) }.is_stopped()
        })
        .count()
}

fn fence(slot: usize) -> Result<(), DrainError> {
    let r = if FRONT.word.load(Ordering::Relaxed) & BY_CID != 0 {
        // mm_cids move between CPUs: stop every CPU.
        restartable::fence_all()
    } else {
        restartable::fence_cpu(slot as u32)
    };
    r.map_err(|_| DrainError::NoFences)
}

/// A slot stopped by this thread: the stop half of every class's header set and the
/// slot fenced (and checked), so no sequence for it can commit until they are
/// cleared (on drop). Holds the drain lock.
struct Stopped {
    base: usize,
    slot: usize,
    _one: crate::sync::SpinGuard<'static, ()>,
}

impl Stopped {
    /// Stops `slot` (`restartable`'s `stop_slabs` on its headers: stop halves set,
    /// fence, checked). If the fence fails the stop halves stay set, but a commit whose
    /// sequence read a header before its stop may clear one and reopen that class;
    /// either way the contents are not taken (the slot is not known stopped) and
    /// fences are not tried again, so nothing is lost: the classes left stopped send
    /// their threads to the middle. If commits that began before a stop still cleared
    /// a stop half after [`MAX_STOP_FENCES`] fences, the slot is reopened untouched
    /// ([`DrainError::Busy`]).
    fn new(slot: usize) -> Result<Stopped, DrainError> {
        let base = base();
        if base == 0 || slot >= FRONT.slots.load(Ordering::Relaxed) {
            return Err(DrainError::NoCaches);
        }
        if !FENCES.load(Ordering::Relaxed) {
            return Err(DrainError::NoFences);
        }
        let one = DRAIN.lock();
        // The slot's headers: their stop halves are set and cleared only here and on
        // drop, both under the drain lock (held).
        let headers = || {
            (1..=CLASSES).map(move |c| {
                // SAFETY: `c` is a class; the header is words of the slot (the region
                // is never unmapped).
                unsafe { SlabHeader::at(header(slot_addr(base, slot), c)) }
            })
        };
        let fenced = || {
            fence(slot)?;
            stop_race(base, slot);
            Ok(())
        };
        match arch::stop_slabs(headers, fenced, MAX_STOP_FENCES) {
            Ok(true) => Ok(Stopped {
                base,
                slot,
                _one: one,
            }),
            Ok(false) => {
                headers().for_each(SlabHeader::restart);
                Err(DrainError::Busy)
            }
            Err(e) => {
                FENCES.store(false, Ordering::Relaxed);
                // The stop halves stay set, except where a commit that began before
                // clears one (that class reopens); the slot is not taken. The lock is
                // released.
                drop(one);
                Err(e)
            }
        }
    }

    /// The header of class `c` (its count, capacity and items ours to read and write
    /// while stopped).
    fn header(&self, c: usize) -> &'static SlabHeader {
        // SAFETY: the header is words of the slot (the region is never unmapped).
        unsafe { SlabHeader::at(self.header_ptr(c)) }
    }

    /// The address of class `c`'s header, with the whole slot's provenance (its
    /// items are reached from it, not from a `&SlabHeader`).
    fn header_ptr(&self, c: usize) -> *mut isize {
        debug_assert!((1..=CLASSES).contains(&c));
        // SAFETY: `c` is a class.
        unsafe { header(slot_addr(self.base, self.slot), c) }
    }

    /// Moves the objects of class `c` above `keep` to the middle and sets the class's
    /// capacity to `cap` (at least `keep`); returns the bytes moved.
    fn trim(&self, c: usize, keep: usize, cap: usize) -> usize {
        let h = self.header(c);
        let items = self.header_ptr(c).wrapping_add(SLAB_HEADER_WORDS);
        // The stopped slot's count: no sequence can write it now.
        let n = h.count() as usize;
        let mut i = keep.min(n);
        let moved = (n - i) * size(c);
        while i < n {
            let k = (n - i).min(MAX_BATCH);
            let mut buf = [MaybeUninit::uninit(); MAX_BATCH];
            for (j, b) in buf[..k].iter_mut().enumerate() {
                // SAFETY: items[i + j] of the stopped slot, published before the fence.
                b.write(unsafe { items.add(i + j).read() } as *mut u8);
            }
            // SAFETY: the loop above wrote every element of `buf[..k]`.
            let objs = unsafe { buf[..k].assume_init_ref() };
            // SAFETY: free objects of class `c` that the stopped cache no longer holds
            // (the header written below drops them).
            unsafe { middle::insert_batch(c, objs) };
            i += k;
        }
        let keep = keep.min(n);
        let cap = cap.max(keep);
        let budget = word(self.base, self.slot, BUDGET);
        let old_cap = h.capacity.load(Ordering::Relaxed);
        budget.fetch_sub(old_cap * size(c), Ordering::Relaxed);
        budget.fetch_add(cap * size(c), Ordering::Relaxed);
        // The count half and the capacity (the stop half stays set until drop).
        h.set_count_stopped(keep as u32);
        h.capacity.store(cap, Ordering::Relaxed);
        moved
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        for c in 1..=CLASSES {
            // Release: what `trim` wrote before the sequences that find it open.
            self.header(c).restart();
        }
    }
}

/// Moves every object of slot `slot`'s caches to the middle and gives its classes
/// capacity 0, from any thread: stops the slot (stop halves and fence), takes the objects
/// and reopens it. Returns the bytes moved.
pub fn drain_slot(slot: usize) -> Result<usize, DrainError> {
    let s = Stopped::new(slot)?;
    let mut moved = 0;
    for c in 1..=CLASSES {
        moved += s.trim(c, 0, 0);
    }
    word(s.base, slot, DENIED).store(0, Ordering::Relaxed);
    Ok(moved)
}

/// Shrinks the classes of slot `slot` that did not miss since the last pass by a
/// batch each (moving objects above the new capacity to the middle), so that the
/// classes that could not grow find budget; from any thread, with the slot stopped.
/// Returns the bytes of capacity given up.
pub fn resize_slot(slot: usize) -> Result<usize, DrainError> {
    let s = Stopped::new(slot)?;
    let mut freed = 0;
    for c in 1..=CLASSES {
        let misses = word(s.base, slot, MISSES + 8 * c).swap(0, Ordering::Relaxed);
        let cap = s.header(c).capacity.load(Ordering::Relaxed);
        if misses == 0 && cap > 0 {
            let new_cap = cap - cap.min(batch(c));
            s.trim(c, new_cap, new_cap);
            freed += (cap - new_cap) * size(c);
        }
    }
    word(s.base, slot, DENIED).store(0, Ordering::Relaxed);
    Ok(freed)
}

/// Drains every slot; returns the bytes moved. A slot that stays [`DrainError::Busy`]
/// is left as it was and the others are still drained; the error is then `Busy`
/// (the bytes moved from the others are in the middle all the same). No fences:
/// `NoFences` at the first slot, nothing moved.
pub fn drain_all() -> Result<usize, DrainError> {
    let Some((slots, _)) = mode() else {
        return Err(DrainError::NoCaches);
    };
    let mut total = 0;
    let mut busy = false;
    for slot in 0..slots {
        match drain_slot(slot) {
            Ok(moved) => total += moved,
            Err(DrainError::Busy) => busy = true,
            Err(e) => return Err(e),
        }
    }
    if busy {
        return Err(DrainError::Busy);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use restartable::Owner;

    /// [`FRONT`]'s fast-path words are where [`FRONT_PAGE_OFFSET`] says: at 8
    /// modulo 16, and at an offset in their page that no word the fast paths store
    /// at the caches' usual levels has in any page of a slot (no header's count; no
    /// item within 4 of the bottom of its array or below a capacity the class can
    /// have, a multiple of its batch or its largest). On x86_64, where the fast paths
    /// are and the words and items 8 bytes.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn front_words_alias_no_usual_store_of_a_slot() {
        let page = |off: usize| off % 4096;
        let at = |field: usize| (&raw const FRONT as usize + field) % 4096;
        let (base, cid) = (
            core::mem::offset_of!(Front, base),
            core::mem::offset_of!(Front, fast_cid),
        );
        assert_eq!(at(core::mem::offset_of!(Front, word)), FRONT_PAGE_OFFSET);
        for field in [base, cid] {
            assert_eq!(at(field) % 16, 8, "field at {field}");
            let p = at(field);
            for (c, &hdr) in OFFSETS.iter().enumerate().take(CLASSES + 1).skip(1) {
                assert_ne!(page(hdr), p, "class {c}'s count");
                let levels: Vec<usize> = (1..=max_capacity(c) / batch(c))
                    .map(|k| k * batch(c))
                    .chain([max_capacity(c)])
                    .collect();
                for i in 0..max_capacity(c) {
                    let item = hdr + (SLAB_HEADER_WORDS + i) * 8;
                    let usual = i < 4 || levels.iter().any(|&l| l - 4 <= i && i < l);
                    assert!(
                        !(usual && page(item) == p),
                        "class {c}'s item {i} (levels {levels:?}) at {p:#x} in its page"
                    );
                }
            }
        }
    }

    /// A positive `fast_cid` only where glibc owns registrations; the library's own
    /// areas take it negative (both taken unchecked, the sign only says whose they
    /// are); every offset of the other sign, or more than `CID_SLOTS` slots,
    /// the whole field, checked.
    #[test]
    fn fast_cid_is_positive_only_for_glibc_and_negative_only_for_the_library() {
        let libc = Some(Owner::Libc);
        let own = Some(Owner::Library);
        assert_eq!(field_for(true, libc, 2, 2336), Field::FastCid);
        assert_eq!(field_for(true, own, 2, -4096), Field::FastCid);
        // An offset of the other sign than its owner's would read as the other's.
        assert_eq!(field_for(true, libc, 2, -2336), Field::CheckedCid);
        assert_eq!(field_for(true, own, 2, 4096), Field::CheckedCid);
        assert_eq!(field_for(true, None, 2, 2336), Field::CheckedCid);
        assert_eq!(field_for(true, None, 2, -2336), Field::CheckedCid);
        // The low byte is the whole mm_cid up to `CID_SLOTS` slots only.
        assert_eq!(field_for(true, libc, CID_SLOTS, 2336), Field::FastCid);
        assert_eq!(field_for(true, own, CID_SLOTS, -4096), Field::FastCid);
        assert_eq!(
            field_for(true, libc, 2 * CID_SLOTS, 2336),
            Field::CheckedCid
        );
        assert_eq!(
            field_for(true, own, 2 * CID_SLOTS, -4096),
            Field::CheckedCid
        );
        for owner in [libc, own, None] {
            for off in [2336, -4096] {
                assert_eq!(field_for(false, owner, 2, off), Field::CheckedCpu);
            }
        }
    }
}
