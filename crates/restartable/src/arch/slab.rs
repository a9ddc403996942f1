//! Slab ops: a per-CPU array of words with its count and capacity in one header word,
//! popped and pushed in one sequence each, behind a guard word another thread can
//! set to stop the CPU's sequences (then fence) without writing the array or its
//! header while they may run. This is the shape of tcmalloc's per-CPU slabs; a
//! memory allocator's front-end is its user (`restartable-alloc`).
//!
//! # The header
//! `*v` holds the count in its low 32 bits and the capacity in its high 32 bits; the
//! items are the words `v[1..=count]` (`v[count]` is the top). Only sequences for
//! the header's CPU change it (or a thread that set the guard and fenced the CPU).
//!
//! | op | effect when committed | other results |
//! |----|----------------------|---------------|
//! | [`load_cbne_slab_pop`] | `if *g == 0 && count > 0 { item = v[count]; *v -= 1 }` | `CompareFailed` if the guard is set or the array is empty |
//! | [`load_cbne_slab_push`] | `if *g == 0 && count < capacity { v[count + 1] = item; *v += 1 }` | `CompareFailed` if the guard is set or the array is full |
//!
//! | [`load_cbne_load_cbne_memcpy_store`] | `if *g == gexpect && *v == expect { memcpy(dst, src, len); *v = newv }` | `CompareFailed` |
//!
//! The last one moves a batch into or out of a slab (the copy speculative, the header
//! commit publishing or unpublishing it), under the same guard.
//!
//! The guard and the count are read inside the sequence and the item is read (pop)
//! or written (push) inside it too: no value prepared beforehand can be stale, so
//! there is nothing to compare but the guard and the CPU. The push's item store is
//! speculative (an abort may leave it written past the count, where nobody reads).
//! The pop hands its item out in a register, and says which exit it took in another:
//! on x86_64 the count register, which the committed path leaves holding the new
//! count (never negative) and every other exit sets to a negative code out of line
//! (Rust's `asm!` takes no output operand together with a `label` one, so the pop is
//! not an asm goto as the other ops are): once inlined, the caller's `match` on the
//! result is one sign test, and the item never goes through memory. On x86_64 the pop
//! and the push read and write the count half of the header alone (32-bit accesses).
//! A compare-twice check (hooked builds) re-reads the header but not the guard, which
//! another thread may set at any time: its fence is what aborts the sequence.
//!
//! Stopping a CPU's slabs from another thread: set `*g` to non-zero, then
//! [`fence_cpu`](crate::fence_cpu) (or [`fence_all`](crate::fence_all) for mm_cid
//! indexes): every sequence that read the guard as zero has then either committed
//! or been aborted, and every later one fails its compare. The arrays and headers
//! are then the stopping thread's to read and rewrite, until it clears the guard.

use super::{imp, valid_index, AsResult, Index, OpResult, Order, Outcome, Recorded};
use crate::hooks::Hooks;
use crate::registration::ThreadArea;

/// The header word of an empty slab with `capacity` items.
pub const fn slab_header(count: u32, capacity: u32) -> isize {
    ((capacity as u64) << 32 | count as u64) as isize
}

/// The count of a slab header.
pub const fn slab_count(header: isize) -> u32 {
    header as u64 as u32
}

/// The capacity of a slab header.
pub const fn slab_capacity(header: isize) -> u32 {
    (header as u64 >> 32) as u32
}

/// `if *g == 0 && count > 0 { item = v[count]; *v -= 1 }`: pops the top item of the
/// slab at `v`; the item is returned with [`OpResult::Committed`] (otherwise the
/// second value means nothing).
///
/// # Safety
/// - `area` must be this thread's and `cpu` the index the caller read from it with
///   `I::current`.
/// - `g` must be valid for reads.
/// - `v` must be valid for reads and writes, aligned, a slab header (see the module
///   docs) written only by sequences that run for `cpu` (or by a thread that set `*g`
///   and fenced `cpu`), and its items `v[1..=count]` valid for reads.
#[inline(always)]
pub unsafe fn load_cbne_slab_pop<I: Index, H: Hooks>(
    area: ThreadArea,
    cpu: u32,
    g: *const isize,
    v: *mut isize,
) -> (OpResult, isize) {
    let mut item = core::mem::MaybeUninit::<isize>::uninit();
    let k = Recorded::<H, _>::new(
        cpu,
        PopResult {
            cpu,
            item: item.as_ptr(),
        },
    );
    if !valid_index::<I>(cpu) {
        return k.aborted();
    }
    crate::hooks::inject_c::<H>(9);
    // SAFETY: forwarded contract; `item` is this frame's local, written by `imp` when
    // the sequence committed and read (by `PopResult::committed`) only after that.
    unsafe { imp::load_cbne_slab_pop::<I, H, _>(area, cpu, g, v, item.as_mut_ptr(), k) }
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

/// `if *g == 0 && count < capacity { v[count + 1] = item; *v += 1 }`: pushes `item`
/// onto the slab at `v`.
///
/// # Safety
/// As for [`load_cbne_slab_pop`]; the items `v[1..=capacity]` must be valid for
/// writes, and those past the count read by nobody until a commit publishes them.
#[inline(always)]
pub unsafe fn load_cbne_slab_push<I: Index, H: Hooks>(
    area: ThreadArea,
    cpu: u32,
    g: *const isize,
    v: *mut isize,
    item: isize,
) -> OpResult {
    let k = Recorded::<H, _>::new(cpu, AsResult(cpu));
    if !valid_index::<I>(cpu) {
        return k.aborted();
    }
    crate::hooks::inject_c::<H>(9);
    // SAFETY: forwarded contract.
    unsafe { imp::load_cbne_slab_push::<I, H, _>(area, cpu, g, v, item, k) }
}

/// `if *g == gexpect && *v == expect { memcpy(dst, src, len); *v = newv }`: a batch
/// copied into or out of a slab under its guard, then the header commit.
///
/// # Safety
/// As for [`load_cbne_memcpy_store`](super::load_cbne_memcpy_store); `g` must be
/// valid for reads.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub unsafe fn load_cbne_load_cbne_memcpy_store<I: Index, O: Order, H: Hooks>(
    area: ThreadArea,
    cpu: u32,
    g: *const isize,
    gexpect: isize,
    v: *mut isize,
    expect: isize,
    dst: *mut u8,
    src: *const u8,
    len: usize,
    newv: isize,
) -> OpResult {
    let k = Recorded::<H, _>::new(cpu, AsResult(cpu));
    if !valid_index::<I>(cpu) {
        return k.aborted();
    }
    crate::hooks::inject_c::<H>(9);
    // SAFETY: forwarded contract.
    unsafe {
        imp::load_cbne_load_cbne_memcpy_store::<I, O, H, _>(
            area, cpu, g, gexpect, v, expect, dst, src, len, newv, k,
        )
    }
}
