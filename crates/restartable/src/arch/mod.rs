//! The critical-section operations: the op contract, written once, and its
//! implementations (`x86_64.rs` in inline asm; `fallback.rs` for every other target).
//!
//! # The contract
//!
//! Every op works on data that belongs to one CPU (or one mm_cid). The caller:
//! 1. obtains this thread's [`ThreadArea`] (proof of a registered rseq area);
//! 2. reads the CPU (or mm_cid) it will work for, with [`Index::current`];
//! 3. prepares in ordinary code: computes the addresses of that CPU's data and the
//!    values it expects and wants to store;
//! 4. calls the op with the CPU it prepared for.
//!
//! The op runs as one restartable sequence: it stores its descriptor's address in the
//! area's `rseq_cs`, checks that the thread still runs on the CPU it was given and is
//! still registered (if not: [`OpResult::Aborted`]), performs its loads and compares,
//! and commits with one single store, the last instruction of the sequence. If the
//! thread is preempted, migrated or signalled before that store, the kernel moves it
//! to the abort handler, nothing has been committed, and the op returns
//! [`OpResult::Aborted`]; the caller re-reads the CPU and retries. Stores made before
//! the commit ("speculative": the `v2` store of [`load_cbne_store_store`], the copy of
//! [`load_cbne_memcpy_store`], the `load` output of
//! [`load_cbeq_store_add_load_store`]) may have happened even when the op aborts or a
//! compare fails, so they must target memory that nobody else reads until the commit
//! publishes it.
//!
//! In pseudocode (`v` and friends are that CPU's data; "commit" is the single store):
//!
//! | op | effect when committed | other results |
//! |----|----------------------|---------------|
//! | [`load_cbne_store`] | `if *v == expect { *v = newv }` | `CompareFailed` if `*v != expect` |
//! | [`load_add_store`] | `*v += count` | — |
//! | [`load_cbeq_store_add_load_store`] | `if *v != expectnot { *load = *v; *v = *(*v + voffp) }` | `CompareFailed` if `*v == expectnot` |
//! | [`load_add_load_load_add_store`] | `**(*ptr + off) += inc` | — |
//! | [`load_cbne_store_store`] | `if *v == expect { *v2 = newv2; *v = newv }` | `CompareFailed` |
//! | [`load_cbne_load_cbne_store`] | `if *v == expect && *v2 == expect2 { *v = newv }` | `CompareFailed` |
//! | [`load_cbne_memcpy_store`] | `if *v == expect { memcpy(dst, src, len); *v = newv }` | `CompareFailed` |
//! | [`load_cbne_load_cbeq_store_add_load_store`] | `if *g == gexpect && *v != expectnot { *load = *v; *v = *(*v + voffp) }` | `CompareFailed` |
//!
//! The last op is this library's addition to the reference set: a list pop guarded by
//! a second word, which lets another thread stop a CPU's list (set the guard, then
//! fence that CPU) and take it without racing the pops. The slab ops of
//! [`slab`](load_cbne_slab_pop) (an array behind a header of its count, a stop flag
//! in the count's word and its capacity: tcmalloc's per-CPU slab) are the other
//! additions; two of them ([`load_index_slab_pop`], [`load_index_slab_push`]) read
//! the index inside the sequence instead of taking a prepared `cpu` (step 2 above
//! moves into the sequence: see their docs for why that is sound).
//!
//! Memory ordering: every load and store of an op is a plain (relaxed) access to
//! memory that only this CPU's sequences write. The `Release` variants order all the
//! op's earlier stores (the speculative ones, and the caller's) before the commit
//! store; on x86_64 every store already has release semantics (TSO), so both
//! orderings compile to the same instructions, and the type parameter documents intent
//! and keeps code portable to weaker architectures.
//!
//! The caller may make system calls between reading the CPU and the op (that is
//! ordinary code: the op re-checks the CPU), but the op itself contains none.
//!
//! # After the registration ends
//! A [`ThreadArea`] is `Copy` and may be kept while the thread's registration ends
//! ([`disable_current_thread`](crate::registration::disable_current_thread), or
//! thread exit in library-owned mode). The kernel then sets `cpu_id` to -1 and
//! `mm_cid` to 0, and no longer aborts anything. The ops stay safe to call with such
//! an area: by [`ByCpu`], the CPU check fails for every CPU prepared before, and an
//! index read afterwards (-1) is refused before the sequence; by [`ByMmCid`], whose
//! field would still match slot 0, the sequence also checks that `cpu_id` is a CPU.
//! Either way the op returns [`OpResult::Aborted`], and [`ThreadArea::current`]
//! reports why the thread has no area any more.
//!
//! # Test hooks
//! Each op is generic over a [`Hooks`] type. [`NoHooks`] (what containers use by
//! default) compiles to the bare sequence; the hooked types add delay-injection loops
//! at numbered points, per-thread statistics and the compare-twice check, in the same
//! binary (see [`crate::hooks`]).

#[cfg(restartable_asm)]
mod x86_64;
#[cfg(restartable_asm)]
use x86_64 as imp;

#[cfg(not(restartable_asm))]
mod fallback;
#[cfg(not(restartable_asm))]
use fallback as imp;

mod slab;
pub use slab::{
    load_cbne_slab_memcpy_store, load_cbne_slab_pop, load_cbne_slab_push, load_index_slab_pop,
    load_index_slab_push, slab_count, slab_header, slab_stopped, stop_slabs, SlabHeader,
    SLAB_HEADER_WORDS, SLAB_STOPPED,
};

use crate::abi;
pub use crate::hooks::{Hooks, NoHooks, StatsHooks, TestHooks};
use crate::registration::ThreadArea;

/// The outcome of one op.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpResult {
    /// The commit store happened.
    Committed,
    /// A compare failed: the sequence exited without committing.
    CompareFailed,
    /// The sequence was interrupted (preemption, migration, signal) or the thread was
    /// no longer on `cpu`: nothing was committed; retry with a fresh CPU number.
    Aborted {
        /// The CPU (or mm_cid) the attempt was prepared for.
        cpu: u32,
    },
}

/// What an op does on each of its three outcomes: the continuation form of
/// [`OpResult`], used by the `_k` ops inside this crate. The asm block leaves through
/// a `label` operand straight into [`compare_failed`](Self::compare_failed) or
/// [`aborted`](Self::aborted), so a container's fast path continues in its own code
/// (usually a call to its cold retry loop) with no result value to dispatch on.
pub(crate) trait Outcome<K> {
    /// The commit store happened.
    fn committed(self) -> K;
    /// A compare failed: nothing was committed.
    fn compare_failed(self) -> K;
    /// The sequence aborted (or was refused before it started): nothing was committed.
    fn aborted(self) -> K;
}

/// The [`Outcome`] that returns an [`OpResult`] (the public ops).
struct AsResult(u32);

impl Outcome<OpResult> for AsResult {
    #[inline(always)]
    fn committed(self) -> OpResult {
        OpResult::Committed
    }
    #[inline(always)]
    fn compare_failed(self) -> OpResult {
        OpResult::CompareFailed
    }
    #[inline(always)]
    fn aborted(self) -> OpResult {
        OpResult::Aborted { cpu: self.0 }
    }
}

/// An [`Outcome`] that records the result in the hooks' statistics first (nothing for
/// [`NoHooks`]).
struct Recorded<H, C> {
    cpu: u32,
    inner: C,
    _hooks: core::marker::PhantomData<H>,
}

impl<H: Hooks, C> Recorded<H, C> {
    #[inline(always)]
    fn new(cpu: u32, inner: C) -> Self {
        Recorded {
            cpu,
            inner,
            _hooks: core::marker::PhantomData,
        }
    }
}

impl<K, H: Hooks, C: Outcome<K>> Outcome<K> for Recorded<H, C> {
    #[inline(always)]
    fn committed(self) -> K {
        let _ = crate::hooks::record::<H>(OpResult::Committed);
        self.inner.committed()
    }
    #[inline(always)]
    fn compare_failed(self) -> K {
        let _ = crate::hooks::record::<H>(OpResult::CompareFailed);
        self.inner.compare_failed()
    }
    #[inline(always)]
    fn aborted(self) -> K {
        let _ = crate::hooks::record::<H>(OpResult::Aborted { cpu: self.cpu });
        self.inner.aborted()
    }
}

/// How per-CPU data is indexed: by `cpu_id` or by `mm_cid`.
///
/// Implemented by [`ByCpu`] and [`ByMmCid`]; the op re-checks the same field of the
/// area that [`Index::current`] read.
pub trait Index: sealed::Sealed + 'static {
    /// Offset of the checked field in `struct rseq`.
    const OFFSET: usize;
    /// Whether the op must also check, inside the sequence, that `cpu_id` is a CPU:
    /// true where the checked field keeps a valid-looking value after the thread's
    /// registration ends (the kernel resets `mm_cid` to 0 but `cpu_id` to -1).
    const CHECK_CPU_ID: bool;
    /// The current index of this thread, read from its area.
    fn current(area: ThreadArea) -> u32;
    /// This thread's registered area and current index, with as few loads as the
    /// index allows (one for `cpu_id`): how every per-CPU operation starts.
    #[inline(always)]
    fn enter() -> Result<(ThreadArea, u32), crate::Reason> {
        let area = ThreadArea::current()?;
        Ok((area, Self::current(area)))
    }
    /// As [`enter`](Self::enter), for a container whose slot count is `bound`: the
    /// area and index when the index is below `bound`, `None` otherwise (not
    /// registered yet, no rseq, or an index without a slot: the caller's slow path
    /// calls `enter`). For `cpu_id` this is the bounds check alone (one compare).
    ///
    /// # Safety
    /// `bound` must be at most [`abi::CPU_ID_REGISTRATION_FAILED`].
    #[doc(hidden)]
    #[inline(always)]
    unsafe fn enter_below(bound: usize) -> Option<(ThreadArea, u32)> {
        Self::enter().ok().filter(|&(_, i)| (i as usize) < bound)
    }
}

/// Index per-CPU data by `cpu_id`.
#[derive(Debug, Clone, Copy)]
pub struct ByCpu;
/// Index per-CPU data by `mm_cid` (Linux 6.3+; check [`crate::Status::mm_cid`]).
#[derive(Debug, Clone, Copy)]
pub struct ByMmCid;

impl Index for ByCpu {
    const OFFSET: usize = abi::OFFSET_CPU_ID;
    // The CPU check itself fails once `cpu_id` is -1 (and -1 is refused as an index).
    const CHECK_CPU_ID: bool = false;
    #[inline(always)]
    fn current(area: ThreadArea) -> u32 {
        area.cpu_id()
    }
    #[inline(always)]
    fn enter() -> Result<(ThreadArea, u32), crate::Reason> {
        ThreadArea::current_with_cpu()
    }
    #[inline(always)]
    unsafe fn enter_below(bound: usize) -> Option<(ThreadArea, u32)> {
        // SAFETY: forwarded contract.
        unsafe { crate::registration::area_with_cpu_below(bound) }
    }
}

impl Index for ByMmCid {
    const OFFSET: usize = abi::OFFSET_MM_CID;
    // An unregistered area reads `mm_cid == 0`: slot 0 would pass its check.
    const CHECK_CPU_ID: bool = true;
    #[inline(always)]
    fn current(area: ThreadArea) -> u32 {
        area.mm_cid()
    }
}

/// Memory ordering of an op's commit store relative to its earlier stores.
pub trait Order: sealed::Sealed + 'static {
    /// Whether the commit has release semantics.
    const RELEASE: bool;
}
/// The commit is a plain store.
#[derive(Debug, Clone, Copy)]
pub struct Relaxed;
/// The commit is a release store: earlier stores are visible before it.
#[derive(Debug, Clone, Copy)]
pub struct Release;
impl Order for Relaxed {
    const RELEASE: bool = false;
}
impl Order for Release {
    const RELEASE: bool = true;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::ByCpu {}
    impl Sealed for super::ByMmCid {}
    impl Sealed for super::Relaxed {}
    impl Sealed for super::Release {}
}

/// Whether `cpu` may be given to a sequence by `I`: `cpu_id` reads -1 (-2) once the
/// thread is no longer registered (or glibc's registration failed), and a `ByCpu`
/// sequence prepared for that value would pass its CPU check with no registration
/// behind it. (A `ByMmCid` sequence checks `cpu_id` itself.) Free where the index
/// comes from [`Index::enter`]: the compiler knows it is a CPU.
#[inline(always)]
fn valid_index<I: Index>(cpu: u32) -> bool {
    I::CHECK_CPU_ID || cpu < abi::CPU_ID_REGISTRATION_FAILED
}

/// Whether the ops are real restartable sequences on this target (x86_64 Linux), as
/// opposed to the fallback, where no [`ThreadArea`] can exist and containers use their
/// shared fallback paths.
pub const ASM_AVAILABLE: bool = cfg!(restartable_asm);

/// The common entry of every `_k` op form: records the attempt (`Recorded`), refuses
/// an index that is not one the kernel writes (aborted, before any sequence), runs
/// injection point 9, then calls `$f` with its arguments and the recorded `k`.
/// Expanded in place (a macro, not a closure: a shared closure-taking prologue
/// changed the lock's code).
macro_rules! enter_k {
    ($I:ty, $H:ty, $cpu:expr, $k:expr => $f:path, ($($arg:expr),* $(,)?)) => {{
        let k = Recorded::<$H, _>::new($cpu, $k);
        if !valid_index::<$I>($cpu) {
            return k.aborted();
        }
        crate::hooks::inject_c::<$H>(9);
        // SAFETY: forwarded contract (the `_k` form's own).
        unsafe { $f($($arg,)* k) }
    }};
}

/// Defines each public op (`name`, returning an [`OpResult`]) together with its
/// continuation form (`name_k`, see [`Outcome`]) from one declaration: the op's
/// documentation and attributes, its type parameters, and its operands after `area`
/// and `cpu`. The continuation form records the outcome for the hooks, refuses an
/// index that is not a CPU where the sequence would not check it ([`valid_index`]),
/// runs injection point 9, and calls the architecture's op of the same name.
macro_rules! ops {
    ($(
        $(#[$attr:meta])*
        pub unsafe fn $name:ident / $k:ident<$($g:ident: $bound:ident),+>($($arg:ident: $ty:ty,)*);
    )*) => {$(
        $(#[$attr])*
        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        pub unsafe fn $name<$($g: $bound),+>(area: ThreadArea, cpu: u32, $($arg: $ty),*) -> OpResult {
            // SAFETY: forwarded contract.
            unsafe { $k::<$($g,)+ OpResult>(area, cpu, $($arg,)* AsResult(cpu)) }
        }

        #[doc = concat!("[`", stringify!($name), "`] in continuation form (see [`Outcome`]).")]
        ///
        /// # Safety
        #[doc = concat!("As for [`", stringify!($name), "`].")]
        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        pub(crate) unsafe fn $k<$($g: $bound,)+ K>(
            area: ThreadArea,
            cpu: u32,
            $($arg: $ty,)*
            k: impl Outcome<K>,
        ) -> K {
            enter_k!(I, H, cpu, k => imp::$name::<$($g,)+ K>, (area, cpu, $($arg),*))
        }
    )*};
}

ops! {
    /// `if *v == expect { *v = newv }` on `cpu`'s data.
    ///
    /// # Safety
    /// - `area` must be this thread's (guaranteed by the type) and `cpu` the index the
    ///   caller read from it with `I::current`.
    /// - `v` must be valid for reads and writes, aligned, and written only by sequences
    ///   that run for `cpu` (or by code that excludes them, e.g. after a fence).
    #[doc(alias = "rseq_load_cbne_store__ptr")]
    pub unsafe fn load_cbne_store / load_cbne_store_k<I: Index, H: Hooks>(
        v: *mut isize,
        expect: isize,
        newv: isize,
    );

    /// `*v += count` on `cpu`'s data (a per-CPU counter increment).
    ///
    /// # Safety
    /// As for [`load_cbne_store`].
    #[doc(alias = "rseq_load_add_store__ptr")]
    pub unsafe fn load_add_store / load_add_store_k<I: Index, H: Hooks>(
        v: *mut isize,
        count: isize,
    );

    /// `if *v != expectnot { *load = *v; *v = *(*v + voffp) }`: pop the head of a
    /// linked list (`voffp` is the offset of the `next` field in a node).
    ///
    /// # Safety
    /// As for [`load_cbne_store`]; in addition every value `*v` can hold other than
    /// `expectnot` must be the address of a node readable at `voffp` for as long as the
    /// list is in use (nodes are not freed while a sequence might read them), and `load`
    /// must be valid for writes and private to the caller (it is written before the
    /// commit).
    #[doc(alias = "rseq_load_cbeq_store_add_load_store__ptr")]
    pub unsafe fn load_cbeq_store_add_load_store / load_cbeq_store_add_load_store_k<I: Index, H: Hooks>(
        v: *mut isize,
        expectnot: isize,
        voffp: isize,
        load: *mut isize,
    );

    /// `**(*ptr + off) += inc`: follow a shared pointer to an array of per-CPU entries,
    /// then the entry's pointer, and add to what it points at (the reference membarrier
    /// test's op: `ptr` can be swapped by another thread, which then fences).
    ///
    /// # Safety
    /// As for [`load_cbne_store`]; `*ptr + off` must be readable and hold the address of
    /// an `isize` that only sequences for `cpu` write, for every value `*ptr` can hold
    /// while sequences may run.
    #[doc(alias = "rseq_load_add_load_load_add_store__ptr")]
    pub unsafe fn load_add_load_load_add_store / load_add_load_load_add_store_k<I: Index, H: Hooks>(
        ptr: *mut isize,
        off: isize,
        inc: isize,
    );

    /// `if *v == expect { *v2 = newv2; *v = newv }`: a speculative store, then the commit.
    ///
    /// # Safety
    /// As for [`load_cbne_store`]; `v2` must be valid for writes and not read by anyone
    /// until the commit of `v` publishes it.
    #[doc(alias = "rseq_load_cbne_store_store__ptr")]
    pub unsafe fn load_cbne_store_store / load_cbne_store_store_k<I: Index, O: Order, H: Hooks>(
        v: *mut isize,
        expect: isize,
        v2: *mut isize,
        newv2: isize,
        newv: isize,
    );

    /// `if *v == expect && *v2 == expect2 { *v = newv }`: two compares, one commit.
    ///
    /// # Safety
    /// As for [`load_cbne_store`]; `v2` must be valid for reads.
    #[doc(alias = "rseq_load_cbne_load_cbne_store__ptr")]
    pub unsafe fn load_cbne_load_cbne_store / load_cbne_load_cbne_store_k<I: Index, H: Hooks>(
        v: *mut isize,
        expect: isize,
        v2: *const isize,
        expect2: isize,
        newv: isize,
    );

    /// `if *v == expect { memcpy(dst, src, len); *v = newv }`: a speculative copy, then
    /// the commit.
    ///
    /// # Safety
    /// As for [`load_cbne_store`]; `src` valid for `len` bytes of reads, `dst` for `len`
    /// bytes of writes, not overlapping, and `dst` not read by anyone until the commit
    /// publishes it.
    #[doc(alias = "rseq_load_cbne_memcpy_store__ptr")]
    pub unsafe fn load_cbne_memcpy_store / load_cbne_memcpy_store_k<I: Index, O: Order, H: Hooks>(
        v: *mut isize,
        expect: isize,
        dst: *mut u8,
        src: *const u8,
        len: usize,
        newv: isize,
    );

    /// `if *g == gexpect && *v != expectnot { *load = *v; *v = *(*v + voffp) }`: a list
    /// pop guarded by a second word (this library's addition to the reference set).
    ///
    /// # Safety
    /// As for [`load_cbeq_store_add_load_store`]; `g` must be valid for reads.
    pub unsafe fn load_cbne_load_cbeq_store_add_load_store / load_cbne_load_cbeq_store_add_load_store_k<I: Index, H: Hooks>(
        g: *const isize,
        gexpect: isize,
        v: *mut isize,
        expectnot: isize,
        voffp: isize,
        load: *mut isize,
    );
}

/// The layout of a slot that holds an array of words behind an offset (the slot ops
/// [`slot_word_push_k`] and [`slot_word_pop_k`]): the offset word at `OFF`, item `i`
/// at `ITEMS + 8 * i` for `i < CAP`, each item's first `LEN` bytes (1, 2, 4 or 8)
/// copied in and out.
pub(crate) trait WordArray {
    /// Displacement of the offset (the number of published items).
    const OFF: usize;
    /// Displacement of item 0.
    const ITEMS: usize;
    /// Items per slot.
    const CAP: usize;
    /// Bytes copied per item.
    const LEN: usize;
}

/// The containers' slot ops: each works on one slot of per-CPU storage, addressed as
/// the slot's base plus constant displacements (the slot layout's), so the caller
/// computes one address per operation and the sequence loads what it compares (no
/// value read before the sequence and compared again inside it). Crate-internal: the
/// const parameters are the containers' layouts.
///
/// `if *(s+GUARD) == 0 && *(s+HEAD) != 0 { *out = *(s+HEAD); *(s+HEAD) =
/// *(*(s+HEAD) + NEXT) }`: the guarded list pop of [`load_cbne_load_cbeq_store_add_load_store`]
/// with its head loaded once, inside the sequence.
///
/// # Safety
/// As for [`load_cbne_load_cbeq_store_add_load_store`], with `g = s+GUARD`,
/// `v = s+HEAD`, `voffp = NEXT` and `load = out`.
#[inline(always)]
pub(crate) unsafe fn slot_list_pop_k<
    I: Index,
    H: Hooks,
    K,
    const GUARD: usize,
    const HEAD: usize,
    const NEXT: usize,
>(
    area: ThreadArea,
    cpu: u32,
    s: *mut u8,
    out: *mut isize,
    k: impl Outcome<K>,
) -> K {
    enter_k!(I, H, cpu, k => imp::slot_list_pop::<I, H, K, GUARD, HEAD, NEXT>, (area, cpu, s, out))
}

/// `if *(s+GUARD) == 0 { *(node+NEXT) = *(s+HEAD); *(s+HEAD) = node }`: the guarded
/// list push, the head loaded inside the sequence (the `next` store is speculative).
///
/// # Safety
/// As for [`load_cbne_load_cbne_store`] on `s+HEAD` and `s+GUARD`; `node` must be
/// writable at `NEXT` and read by nobody until the commit publishes it.
#[inline(always)]
pub(crate) unsafe fn slot_list_push_k<
    I: Index,
    H: Hooks,
    K,
    const GUARD: usize,
    const HEAD: usize,
    const NEXT: usize,
>(
    area: ThreadArea,
    cpu: u32,
    s: *mut u8,
    node: *mut u8,
    k: impl Outcome<K>,
) -> K {
    enter_k!(I, H, cpu, k => imp::slot_list_push::<I, H, K, GUARD, HEAD, NEXT>, (area, cpu, s, node))
}

/// `n = *(s+OFF); if n < CAP (unsigned) { memcpy(s+ITEMS+8n, src, LEN); *(s+OFF) =
/// n + 1 }` for the layout `W`: the push of an array of words (LEN is 1, 2, 4 or 8); an offset of CAP
/// (full) or below 0 (a thief's mark) fails the compare.
///
/// # Safety
/// As for [`load_cbne_memcpy_store`] on `v = s+OFF`; the items `s+ITEMS+8i` for
/// `i < CAP` are the slot's, written only by sequences for `cpu` (or code that
/// excludes them), and `src` is readable for LEN bytes.
#[inline(always)]
pub(crate) unsafe fn slot_word_push_k<I: Index, O: Order, H: Hooks, K, W: WordArray>(
    area: ThreadArea,
    cpu: u32,
    s: *mut u8,
    src: *const u8,
    k: impl Outcome<K>,
) -> K {
    enter_k!(I, H, cpu, k => imp::slot_word_push::<I, O, H, K, W>, (area, cpu, s, src))
}

/// `n = *(s+OFF) - 1; if n >= 0 { memcpy(dst, s+ITEMS+8n, LEN); *(s+OFF) = n }`: the
/// pop of an array of words; an empty array or a thief's negative mark fails the
/// compare.
///
/// # Safety
/// As for [`slot_word_push_k`]; `dst` must be writable for LEN bytes and private to
/// the caller (it is written before the commit).
#[inline(always)]
pub(crate) unsafe fn slot_word_pop_k<I: Index, H: Hooks, K, W: WordArray>(
    area: ThreadArea,
    cpu: u32,
    s: *mut u8,
    dst: *mut u8,
    k: impl Outcome<K>,
) -> K {
    enter_k!(I, H, cpu, k => imp::slot_word_pop::<I, H, K, W>, (area, cpu, s, dst))
}

/// [`slot_word_push_k`] of a word given as a value (a pointer, every byte of it
/// initialised), stored from a register: no copy through memory.
///
/// # Safety
/// As for [`slot_word_push_k`] (without `src`).
#[inline(always)]
pub(crate) unsafe fn slot_word_push_reg_k<I: Index, O: Order, H: Hooks, K, W: WordArray>(
    area: ThreadArea,
    cpu: u32,
    s: *mut u8,
    word: usize,
    k: impl Outcome<K>,
) -> K {
    enter_k!(I, H, cpu, k => imp::slot_word_push_reg::<I, O, H, K, W>, (area, cpu, s, word))
}

/// [`slot_word_pop_k`] of words that are never 0, 1 or 2 (pointers to heap objects or
/// to aligned dangling places: boxes of types that are not zero-sized or are aligned
/// to 4 or more), returned in a register: `*out` is written on commit, with no copy
/// through memory inside the sequence.
///
/// # Safety
/// As for [`slot_word_pop_k`] with `LEN` 8; every published word of the slot is
/// above 2.
#[inline(always)]
pub(crate) unsafe fn slot_word_pop_reg_k<I: Index, H: Hooks, K, W: WordArray>(
    area: ThreadArea,
    cpu: u32,
    s: *mut u8,
    out: *mut usize,
    k: impl Outcome<K>,
) -> K {
    enter_k!(I, H, cpu, k => imp::slot_word_pop_reg::<I, H, K, W>, (area, cpu, s, out))
}
