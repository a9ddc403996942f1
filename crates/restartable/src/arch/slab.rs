//! Slab ops: a per-CPU array of words behind a two-word header (count and a stop
//! flag, then the capacity), popped and pushed in one sequence each; another thread
//! stops a CPU's slabs by setting the stop flag in their headers (then fence),
//! without writing the arrays or their counts while sequences may run. This is the
//! shape of tcmalloc's per-CPU slabs, stopped through their headers as tcmalloc's
//! are; a memory allocator's front-end is its user (`restartable-alloc`).
//!
//! # The header
//! Two words, then the items: the first word holds the count in its low 32 bits and
//! the *stop half* in its high 32 bits ([`SLAB_STOPPED`] when stopped, 0 otherwise);
//! the second word is the capacity. The items are the words
//! `v[SLAB_HEADER_WORDS..SLAB_HEADER_WORDS + count]` (the last one is the top).
//! [`SlabHeader`] is the same two words seen from Rust (the first word one 64-bit atomic).
//! Only sequences for the header's CPU change the count (or a thread that stopped the
//! slab and fenced the CPU). Their commits store the whole first word: the new count
//! and the stop half of 0 that the sequence read (on x86_64 a 32-bit store of the
//! count half would stall the next op's 64-bit load of the word: a load is forwarded
//! only from a store that covers it). Only the stopping thread sets the stop half (a
//! commit may clear it: see [Stopping](#stopping)).
//!
//! | op | effect when committed | other results |
//! |----|----------------------|---------------|
//! | [`load_cbne_slab_pop`] | `if !stopped && count > 0 { item = v[2 + count - 1]; count -= 1 }` | `CompareFailed` if stopped or empty |
//! | [`load_cbne_slab_push`] | `if !stopped && count < capacity { v[2 + count] = item; count += 1 }` | `CompareFailed` if stopped or full |
//! | [`load_cbne_slab_memcpy_store`] | `if v[0] == expect (so not stopped) && (newcount <= capacity \|\| newcount <= expect) { memcpy(dst, src, len); v[0] = newcount }` | `CompareFailed` |
//!
//! The last one moves a batch into or out of a slab (the copy speculative, the count
//! commit publishing or unpublishing it).
//!
//! [`load_index_slab_pop`] and [`load_index_slab_push`] are the pop and the push on
//! a region with one slab per index: they read the index (`cpu_id` or `mm_cid`, or
//! its low byte) inside the sequence and address the slab as `base + (index <<
//! SHIFT) + off`, so the caller prepares no index and the sequence compares none
//! (its registration check stays). Per op: `movzbl` (or `movl`), `shl`, `add`,
//! `lea` inside the sequence against, for the prepared ops, the index read, its
//! copy, shift and two adds outside and `cmp`/`jne` inside; and the header offset
//! (`off`, a load from the pointer in a `free`) reaches the count's load with no
//! add in between (the prepared ops' callers add it to the slot's address).
//!
//! The stop flag costs these sequences nothing: it makes the header's first word,
//! which they load anyway, negative as a 64-bit value (a pop's `count - 1` is then
//! negative, or overflows, and fails the same signed test as an empty slab's), or
//! huge as an unsigned one (a push's compare with the capacity fails as a full
//! slab's); the batch copy compares the whole word. The count and the item are read
//! (pop) or written (push) inside the sequence: no value prepared beforehand can be
//! stale, so there is nothing to compare but the header and the CPU. The push's item
//! store is speculative (an abort may leave it written past the count, where nobody
//! reads). The pop hands its item out in a register, and says which exit it took in
//! another: on x86_64 the count register, which the committed path leaves holding the
//! new count (never negative) and every other exit sets to a negative code out of line
//! (Rust's `asm!` takes no output operand together with a `label` one, so the pop is
//! not an asm goto as the other ops are): once inlined, the caller's `match` on the
//! result is one sign test, and the item never goes through memory. A compare-twice
//! check (hooked builds) re-reads the count half but not the stop half, which another
//! thread may set at any time: its fence is what aborts the sequence.
//!
//! # Stopping
//! [`stop_slabs`] stops a CPU's slabs from another thread: it stores [`SLAB_STOPPED`] to
//! the stop half of each header ([`SlabHeader::stop`], a read-modify-write of the
//! word), then fences the CPU ([`fence_cpu`](crate::fence_cpu), or [`fence_all`](crate::fence_all) for
//! mm_cid indexes): every sequence that began before has then either committed or
//! been aborted. A sequence that read the word before the stop and committed before
//! the fence wrote the stop half back to 0 with its count, so it then checks every
//! stop half again, and stops and fences again if one is 0. Once every stop half is
//! still set after a fence, no sequence can commit: one that read a stop half of 0
//! read it before the stop store (nothing wrote 0 since, or the check would have seen
//! it), so it was running at the fence and was aborted, or had committed before it;
//! every later one fails its compare. The arrays and headers are then the stopping
//! thread's to read and rewrite (the count half and the capacity, the stop half left
//! set), until it clears the stop halves ([`SlabHeader::restart`]).
//!
//! API change (from the first slab ops): the header was one word (count, capacity)
//! behind a separate guard word `g` that every op took and read; the ops lost `g`,
//! the header grew to two words, and `load_cbne_load_cbne_memcpy_store` (guard and
//! header compared) became [`load_cbne_slab_memcpy_store`]. `slab_capacity` is gone
//! (the capacity is the header's second word, [`SlabHeader::capacity`]).

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::{imp, valid_index, AsResult, Index, OpResult, Order, Outcome, Recorded};
use crate::hooks::Hooks;
use crate::registration::ThreadArea;

/// Words of a slab header: the items start at `v[SLAB_HEADER_WORDS]`.
pub const SLAB_HEADER_WORDS: usize = 2;

/// The stop half of a stopped slab's header (its high bit: the header's first word,
/// as 64 bits, is then negative).
pub const SLAB_STOPPED: u32 = 0x8000_0000;

/// The header words of an open slab with `count` items and room for `capacity`.
pub const fn slab_header(count: u32, capacity: u32) -> [isize; SLAB_HEADER_WORDS] {
    [count as isize, capacity as isize]
}

/// The count in a header's first word.
pub const fn slab_count(first: isize) -> u32 {
    first as u64 as u32
}

/// Whether a header's first word says the slab is stopped.
pub const fn slab_stopped(first: isize) -> bool {
    (first as u64 >> 32) as u32 != 0
}

/// A slab header as Rust code accesses it: the first word (count and stop half) as
/// one 64-bit atomic, the size of every access the ops make to it (Rust's memory
/// model has no mixed-size atomic races: the halves are reached through the methods,
/// which all load, store or update the whole word), and the capacity. Laid out as the
/// ops read it, at the address they take as `v` (see [`SlabHeader::at`]).
#[repr(C, align(8))]
pub struct SlabHeader {
    /// The count (low half) and the stop half (high half): the count written by the
    /// owner's sequences (or by a thread that stopped the slab and fenced its CPU); the
    /// stop half set only by the thread that stops the slab, cleared when it restarts
    /// it, or by a commit whose sequence read the header before the stop (see
    /// [`stop_slabs`]).
    first: AtomicU64,
    /// The capacity in items (at most `u32::MAX`): read by the push and by a batch
    /// in; written only by whoever its user lets change it (an increase may race the
    /// push: any value up to the room the items have is fine).
    pub capacity: AtomicUsize,
}

const _: () = assert!(core::mem::size_of::<SlabHeader>() == SLAB_HEADER_WORDS * 8);

/// The stop half in place in the first word.
const STOP_BITS: u64 = (SLAB_STOPPED as u64) << 32;

impl SlabHeader {
    /// An open slab's header.
    pub const fn new(count: u32, capacity: u32) -> SlabHeader {
        SlabHeader {
            first: AtomicU64::new(count as u64),
            capacity: AtomicUsize::new(capacity as usize),
        }
    }

    /// The header at `v` (the address the ops take).
    ///
    /// # Safety
    /// `v` is valid for reads and writes of [`SLAB_HEADER_WORDS`] words for `'a`, aligned
    /// to 8, and accessed otherwise only by the slab ops and through `SlabHeader`.
    pub unsafe fn at<'a>(v: *mut isize) -> &'a SlabHeader {
        // SAFETY: forwarded contract; the header is two words of atomics.
        unsafe { &*v.cast::<SlabHeader>() }
    }

    /// The header's address as the ops take it.
    pub fn as_ptr(&self) -> *mut isize {
        self as *const SlabHeader as *mut isize
    }

    /// The count (relaxed): exact for a stopped slab, a snapshot otherwise.
    pub fn count(&self) -> u32 {
        self.first.load(Ordering::Relaxed) as u32
    }

    /// Sets the count of a slab this thread has stopped (the stop half stays set).
    /// On a slab that is not stopped this would race the owner's commits: the
    /// caller's contract, as for writing its items.
    pub fn set_count_stopped(&self, count: u32) {
        self.first
            .store(count as u64 | STOP_BITS, Ordering::Relaxed);
    }

    /// Sets the stop half: the ops for the slab fail from now on, unless a sequence
    /// that read the header before commits and so clears it: see [`stop_slabs`], which
    /// fences and checks. A relaxed read-modify-write of the whole word (the fence that
    /// must follow orders it): a commit racing it lands wholly before or after.
    pub fn stop(&self) {
        self.first.fetch_or(STOP_BITS, Ordering::Relaxed);
    }

    /// Reopens a stopped slab: clears the stop half with a release read-modify-write,
    /// so that what the stopping thread wrote to the header and items is seen by the
    /// sequences that find it open, and so that a commit racing it (a slab whose stop
    /// did not hold, see [`stop_slabs`]) keeps its count.
    pub fn restart(&self) {
        self.first.fetch_and(!STOP_BITS, Ordering::Release);
    }

    /// Whether the stop half is set.
    pub fn is_stopped(&self) -> bool {
        self.first.load(Ordering::Relaxed) & STOP_BITS != 0
    }
}

/// Stops the slabs whose headers `headers()` yields (see the module docs): sets their
/// stop halves, calls `fence` (the rseq fence of the CPU, or CPUs, whose sequences use
/// them), then checks that every stop half is still set; stops and fences again while
/// one is not, up to `tries` fences in all. `Ok(true)`: stopped, no sequence for them
/// can commit until they are restarted. `Ok(false)`: after `tries` fences a commit had
/// still cleared a stop half: the slabs are not stopped (the stop halves are set, but
/// a sequence may clear one and commit); the caller must leave the slabs alone. `Err`:
/// a fence failed (the stop halves are set, the slabs not stopped either).
///
/// `headers` must yield the same headers every time; nobody else may stop or restart
/// them meanwhile (the callers' lock).
pub fn stop_slabs<'a, It, E>(
    headers: impl Fn() -> It,
    mut fence: impl FnMut() -> Result<(), E>,
    tries: u32,
) -> Result<bool, E>
where
    It: Iterator<Item = &'a SlabHeader>,
{
    for _ in 0..tries {
        for h in headers() {
            h.stop();
        }
        // The stop halves before the rseq fence (which is a full barrier itself).
        core::sync::atomic::fence(Ordering::SeqCst);
        fence()?;
        core::sync::atomic::fence(Ordering::SeqCst);
        if headers().all(SlabHeader::is_stopped) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `if !stopped && count > 0 { item = v[2 + count - 1]; count -= 1 }`: pops the top
/// item of the slab at `v`; the item is returned with [`OpResult::Committed`]
/// (otherwise the second value means nothing).
///
/// # Safety
/// - `area` must be this thread's and `cpu` the index the caller read from it with
///   `I::current`.
/// - `v` must be valid for reads and writes, aligned to 8, a slab header (see the
///   module docs) whose count half is written only by sequences that run for `cpu` (or
///   by a thread that stopped it and fenced `cpu`), and its items up to the count
///   valid for reads.
#[inline(always)]
pub unsafe fn load_cbne_slab_pop<I: Index, H: Hooks>(
    area: ThreadArea,
    cpu: u32,
    v: *mut isize,
) -> (OpResult, isize) {
    let mut item = core::mem::MaybeUninit::<isize>::uninit();
    // One pointer for the write and the read (as in `load_index_slab_pop`).
    let p = item.as_mut_ptr();
    let k = Recorded::<H, _>::new(cpu, PopResult { cpu, item: p });
    if !valid_index::<I>(cpu) {
        return k.aborted();
    }
    crate::hooks::inject_c::<H>(9);
    // SAFETY: forwarded contract; `item` is this frame's local, written through `p` by
    // `imp` when the sequence committed and read through it (by `PopResult::committed`)
    // only after that.
    unsafe { imp::load_cbne_slab_pop::<I, H, _>(area, cpu, v, p, k) }
}

/// The continuation of [`load_cbne_slab_pop`]: the result, with the item `imp`
/// wrote to the caller's local when the sequence committed (a local that inlining
/// turns back into the register the block returned it in).
struct PopResult {
    cpu: u32,
    item: *const isize,
}

impl Outcome<(OpResult, isize)> for PopResult {
    #[inline(always)]
    fn committed(self) -> (OpResult, isize) {
        // SAFETY: a committed pop wrote the item to the local.
        (OpResult::Committed, unsafe { self.item.read() })
    }
    #[inline(always)]
    fn compare_failed(self) -> (OpResult, isize) {
        (OpResult::CompareFailed, 0)
    }
    #[inline(always)]
    fn aborted(self) -> (OpResult, isize) {
        (OpResult::Aborted { cpu: self.cpu }, 0)
    }
}

/// `if !stopped && count < capacity { v[2 + count] = item; count += 1 }`: pushes
/// `item` onto the slab at `v`.
///
/// # Safety
/// As for [`load_cbne_slab_pop`]; the items below the capacity must be valid for
/// writes, and those past the count read by nobody until a commit publishes them.
#[inline(always)]
pub unsafe fn load_cbne_slab_push<I: Index, H: Hooks>(
    area: ThreadArea,
    cpu: u32,
    v: *mut isize,
    item: isize,
) -> OpResult {
    let k = Recorded::<H, _>::new(cpu, AsResult(cpu));
    if !valid_index::<I>(cpu) {
        return k.aborted();
    }
    crate::hooks::inject_c::<H>(9);
    // SAFETY: forwarded contract.
    unsafe { imp::load_cbne_slab_push::<I, H, _>(area, cpu, v, item, k) }
}

/// `if v[0] == expect && (newcount <= capacity || newcount <= expect) { memcpy(dst,
/// src, len); v[0] = newcount }`: a batch copied into or out of a slab, then the count
/// commit. `expect` is the count the caller read, compared with the header's whole
/// first word: a stopped slab (its stop half set) fails as a changed count does. A
/// batch in is checked against the capacity inside the sequence (the caller's
/// reading of it may be stale: a resize lowers it and keeps the count), a batch out
/// is not (it may empty a slab that a resize left above its capacity). The commit
/// stores the whole first word (the new count, a stop half of 0).
///
/// # Safety
/// As for [`load_cbne_memcpy_store`](super::load_cbne_memcpy_store), with `v` a slab
/// header as for [`load_cbne_slab_pop`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub unsafe fn load_cbne_slab_memcpy_store<I: Index, O: Order, H: Hooks>(
    area: ThreadArea,
    cpu: u32,
    v: *mut isize,
    expect: u32,
    dst: *mut u8,
    src: *const u8,
    len: usize,
    newcount: u32,
) -> OpResult {
    let k = Recorded::<H, _>::new(cpu, AsResult(cpu));
    if !valid_index::<I>(cpu) {
        return k.aborted();
    }
    crate::hooks::inject_c::<H>(9);
    // SAFETY: forwarded contract.
    unsafe {
        imp::load_cbne_slab_memcpy_store::<I, O, H, _>(
            area, cpu, v, expect, dst, src, len, newcount, k,
        )
    }
}

/// The in-sequence index ops' outcome: as [`AsResult`] and [`PopResult`], recorded
/// for the hooks, with the `cpu` of [`OpResult::Aborted`] read from the area when
/// the abort is reported (the sequence's own index lives in a register only).
struct IndexResult<I, H, T> {
    area: ThreadArea,
    item: T,
    _p: core::marker::PhantomData<(I, H)>,
}

impl<I: Index, H: Hooks, T> IndexResult<I, H, T> {
    #[inline(always)]
    fn new(area: ThreadArea, item: T) -> Self {
        IndexResult {
            area,
            item,
            _p: core::marker::PhantomData,
        }
    }
}

/// The item slot of a pop (`*const isize`) or nothing (a push).
trait IndexItem {
    type Out;
    /// The result of a committed sequence.
    fn committed(self) -> Self::Out;
    /// The result `r` of one that did not commit.
    fn other(r: OpResult) -> Self::Out;
}

/// A pop's item, written by `imp` to the caller's local when the sequence committed.
struct PopItem(*const isize);

impl IndexItem for PopItem {
    type Out = (OpResult, isize);
    #[inline(always)]
    fn committed(self) -> (OpResult, isize) {
        // SAFETY: a committed pop wrote the item to the local.
        (OpResult::Committed, unsafe { self.0.read() })
    }
    #[inline(always)]
    fn other(r: OpResult) -> (OpResult, isize) {
        (r, 0)
    }
}

impl IndexItem for () {
    type Out = OpResult;
    #[inline(always)]
    fn committed(self) -> OpResult {
        OpResult::Committed
    }
    #[inline(always)]
    fn other(r: OpResult) -> OpResult {
        r
    }
}

impl<I: Index, H: Hooks, T: IndexItem> Outcome<T::Out> for IndexResult<I, H, T> {
    #[inline(always)]
    fn committed(self) -> T::Out {
        let _ = crate::hooks::record::<H>(OpResult::Committed);
        self.item.committed()
    }
    #[inline(always)]
    fn compare_failed(self) -> T::Out {
        T::other(crate::hooks::record::<H>(OpResult::CompareFailed))
    }
    #[inline(always)]
    fn aborted(self) -> T::Out {
        let r = OpResult::Aborted {
            cpu: I::current(self.area),
        };
        T::other(crate::hooks::record::<H>(r))
    }
}

/// The hooked build's index read before the sequence, for the "skip the CPU check"
/// switch (the deliberately broken order: the sequence then uses it instead of
/// reading the index itself): read before injection point 9, as the prepared ops'
/// callers read theirs, so that a migration there makes it stale. Read whether the
/// switch is on or not (the sequence reads the switch itself), 0 in the plain build.
#[inline(always)]
fn early_index<I: Index, H: Hooks, const LOW_BYTE: bool>(area: ThreadArea) -> u64 {
    if !H::INJECT {
        return 0;
    }
    let i = I::current(area);
    u64::from(if LOW_BYTE { i & 0xff } else { i })
}

/// Whether `SHIFT` is one the in-sequence ops take (a 32-bit index shifted by it
/// stays far below the address space's end).
const fn index_shift_ok(shift: u32) -> bool {
    shift < 32
}

/// `i = index; v = base + (i << SHIFT) + off; if !stopped && count > 0 { item =
/// v[2 + count - 1]; count -= 1 }`: [`load_cbne_slab_pop`] on the slab of the index the
/// thread has *inside* the sequence: the op reads `I`'s field of the area (its low
/// byte if `LOW_BYTE`, else the whole 32 bits) after the sequence has started (after
/// the store of its descriptor), computes the header's address from it, and compares
/// no index prepared by the caller. The item is returned with
/// [`OpResult::Committed`] (otherwise the second value means nothing);
/// [`OpResult::Aborted`]'s `cpu` is the index the area holds when the abort is
/// reported (read afterwards: the sequence's own is not kept).
///
/// Why reading the index inside is sound: once the descriptor is stored, a
/// preemption, a migration or a signal before the commit makes the kernel abort the
/// sequence, and the kernel changes the area's `cpu_id` and `mm_cid` only on such an
/// event (on the thread's return to user space, after the abort fix-up). So the index
/// read inside the sequence is the thread's index from the read up to the commit, as
/// a prepared index that passed the in-sequence compare of the other ops is: the op
/// commits only on the slab of the index the thread has at its commit. The sequence
/// still checks that the area is registered (`cpu_id` a CPU, below
/// `RSEQ_CPU_ID_REGISTRATION_FAILED`, before any access through the computed
/// address): an area whose registration ended is not protected by the kernel, and
/// its fields read as valid indexes (`mm_cid` 0) or as -1 (`cpu_id`); it then aborts.
/// It checks `cpu_id` as read twice: once before the sequence (before the store of
/// its descriptor) and once inside it. A thread that was not registered before the
/// sequence began so never runs it, even if a signal handler registers it inside
/// the sequence (where the library registers at first use): that registration's
/// return to user space clears `rseq_cs`, the thread being in the handler then, and
/// the sequence would go on after the handler unprotected with its read inside
/// passing. So the area may be taken without a registration check of the caller's
/// ([`AreaOffset::current_unchecked`](crate::registration::AreaOffset::current_unchecked))
/// whoever owns registrations.
///
/// # Safety
/// - `area` must be this thread's (guaranteed by the type).
/// - For every index `i` the field can hold while the thread is registered (by
///   [`ByCpu`](super::ByCpu) the CPU numbers below [`possible_cpus`](crate::possible_cpus);
///   by [`ByMmCid`](super::ByMmCid) the concurrency ids, also below it), `base + (i
///   << SHIFT) + off` must be a slab header as for [`load_cbne_slab_pop`] (valid, aligned
///   to 8, its count half written only by sequences that run for `i`, or by a thread
///   that stopped it and fenced `i`; items up to the count readable): the caller's
///   region (at `base`) has a slot of `1 << SHIFT` bytes for every such index, with
///   the header at the same offset `off` in each. The sequence does not bound the
///   index.
/// - With `LOW_BYTE`, every such index must be below 256 (the read keeps the low
///   byte only: two indexes 256 apart would share a slab), so the region needs 256
///   slots at most, and `possible_cpus()` must be at most 256.
/// - `SHIFT` below 32 (checked at compile time).
#[inline(always)]
pub unsafe fn load_index_slab_pop<I: Index, H: Hooks, const SHIFT: u32, const LOW_BYTE: bool>(
    area: ThreadArea,
    base: *mut u8,
    off: usize,
) -> (OpResult, isize) {
    const { assert!(index_shift_ok(SHIFT)) };
    let mut item = core::mem::MaybeUninit::<isize>::uninit();
    // One pointer for the write and the read: a second borrow of `item` (`as_ptr`
    // then `as_mut_ptr`) would invalidate the first one's pointer before its read.
    let p = item.as_mut_ptr();
    let k = IndexResult::<I, H, _>::new(area, PopItem(p));
    let early = early_index::<I, H, LOW_BYTE>(area);
    crate::hooks::inject_c::<H>(9);
    // SAFETY: forwarded contract; `item` is this frame's local, written through `p` by
    // `imp` when the sequence committed and read through it (by `PopItem::committed`)
    // only after that.
    unsafe { imp::load_index_slab_pop::<I, H, _, SHIFT, LOW_BYTE>(area, base, off, early, p, k) }
}

/// `i = index; v = base + (i << SHIFT) + off; if !stopped && count < capacity {
/// v[2 + count] = item; count += 1 }`: [`load_cbne_slab_push`] on the slab of the index
/// read inside the sequence (see [`load_index_slab_pop`], also for why that is sound
/// and for the `cpu` of an abort).
///
/// # Safety
/// As for [`load_index_slab_pop`]; in every slab it may address, the items below the
/// capacity must be valid for writes, and those past the count read by nobody until
/// a commit publishes them.
#[inline(always)]
pub unsafe fn load_index_slab_push<I: Index, H: Hooks, const SHIFT: u32, const LOW_BYTE: bool>(
    area: ThreadArea,
    base: *mut u8,
    off: usize,
    item: isize,
) -> OpResult {
    const { assert!(index_shift_ok(SHIFT)) };
    let k = IndexResult::<I, H, ()>::new(area, ());
    let early = early_index::<I, H, LOW_BYTE>(area);
    crate::hooks::inject_c::<H>(9);
    // SAFETY: forwarded contract.
    unsafe {
        imp::load_index_slab_push::<I, H, _, SHIFT, LOW_BYTE>(area, base, off, early, item, k)
    }
}
