//! The page map: from an address to the span that holds it, in two loads, and to
//! the size class and start of a small-object span, in two loads as well.
//!
//! # Invariants
//! - A radix tree over the user address space (`ADDRESS_BITS`: 47 bits on 64-bit
//!   targets, the whole 32 on 32-bit ones): the root is a static array of 2^16
//!   pointers to leaves (2 on 32-bit targets); a leaf, mapped on first use, holds
//!   2^18 span pointers and covers 2 GiB. Leaves are never freed.
//! - Beside the span pointers a leaf holds one *info* word per page, a `u64` on
//!   every target (on 32-bit ones too, so that it has room for all of what follows):
//!   for a page of a span of size class `c` (from `set_small` until `clear_small`),
//!   `front::header_offset(c) << 48 | (2^48 - first)`: the address of the span's
//!   first object (`first = start + size_class::span_offset(c, start)`, the span's start
//!   page aligned, not 0, below 2^47) negated modulo 2^48 in its low 48 bits (so
//!   that `addr + info` is `addr - first` plus a multiple of 2^48, one `lea` on
//!   64-bit targets), and
//!   the offset of the class's header in a front-end slot (a multiple of 8 below
//!   2^16, naming the class: `raw` keys its tables by it) in its top 16 bits; 0 for
//!   every other page (free runs, pages no span covers). The C `free` reads it
//!   instead of the span record: first object and the front-end's header (so the class)
//!   in one load, no record to reach ([`INFO_HEADER_SHIFT`], [`small_info`]).
//! - Entries are written under the page heap's lock, before the span they point to
//!   is handed to anyone (so a reader that got an object from a span finds it), and
//!   read without a lock.
//! - The first leaf mapped is the *hot* leaf (`HOT`, set once, never changed): [`info`]
//!   reads the info word of an address in its 2 GiB straight from it, with no root
//!   load on the way (the hot leaf's first address and info words do not depend on
//!   the address looked up, so they are read while that address is still being
//!   computed: one load after the address instead of two). Heaps of up to 2 GiB
//!   usually fit in it; other addresses take the two-level walk. Until it exists,
//!   `HOT` names an all-zero stand-in (`NO_LEAF`) for the first 2 GiB.

use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use super::Span;
use crate::size_class::PAGE_SHIFT;

/// Bits of the addresses the map covers: the lower half of x86_64's (and other
/// 64-bit targets') 48-bit address space, or the whole address on a narrower target
/// (a 32-bit process can be given any address below 4 GiB; not the last pages:
/// its user space ends at 3 GiB under a 32-bit x86 kernel, 4 GiB - 8 KiB under
/// a 64-bit one, so a mapping's end, exclusive, fits a `usize`). At most
/// [`INFO_HEADER_SHIFT`], so that an info word holds every first object's address.
pub(crate) const ADDRESS_BITS: usize = if usize::BITS >= 64 {
    47
} else {
    usize::BITS as usize
};
const LEAF_BITS: usize = 18;
const ROOT_BITS: usize = ADDRESS_BITS - PAGE_SHIFT - LEAF_BITS;
const LEAF_LEN: usize = 1 << LEAF_BITS;

/// A leaf: the span pointers, then the info words (see the module docs).
#[repr(C)]
struct Leaf {
    spans: [AtomicPtr<Span>; LEAF_LEN],
    info: [AtomicU64; LEAF_LEN],
}

const ROOT_LEN: usize = 1 << ROOT_BITS;

static ROOT: [AtomicPtr<Leaf>; ROOT_LEN] = [const { AtomicPtr::new(ptr::null_mut()) }; ROOT_LEN];

/// Bytes of the leaves mapped (written under the page heap's lock).
static LEAF_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Bytes of address space the page map's leaves take (4 MiB each, 3 MiB on a 32-bit
/// target, mapped on first use, never freed); the root is static.
pub fn mapped_bytes() -> usize {
    LEAF_BYTES.load(Ordering::Relaxed)
}

/// The hot leaf (see the module docs): set once by [`ensure`], under the page heap's
/// lock, `start` before `info`.
#[repr(C, align(64))]
struct Hot {
    /// The hot leaf's info words; [`NO_LEAF`] (all zero: no small-object page)
    /// until there is a hot leaf.
    info: AtomicPtr<AtomicU64>,
    /// The first address the hot leaf covers (`index << (PAGE_SHIFT + LEAF_BITS)`);
    /// 0 until there is one (addresses below 2 GiB then read [`NO_LEAF`]). The info
    /// word of an address `a` with `a - start < 2^31` (wrapping) is `info[(a - start)
    /// >> PAGE_SHIFT]`: one subtraction (of the word in memory), one compare, one shift.
    start: AtomicUsize,
}

static HOT: Hot = Hot {
    info: AtomicPtr::new(ptr::addr_of!(NO_LEAF) as *mut AtomicU64),
    start: AtomicUsize::new(0),
};

/// The info words of no leaf: what [`HOT`] reads until the hot leaf exists (2 MiB of
/// zero-initialized address space, never written: only read, and only for
/// addresses no object of this allocator can have).
static NO_LEAF: [AtomicU64; LEAF_LEN] = [const { AtomicU64::new(0) }; LEAF_LEN];

/// [`HOT`]'s `info` (acquire), then `addr - start`. On x86_64 one asm block: two
/// `%rip`-relative loads in program order (x86_64 does not reorder loads), the second
/// folded into the subtraction (no address to compute first, as a reference to `HOT`
/// from the C library's crate would need).
///
/// `start` is stored before `info` (release) and read after it, so an `info` that is
/// the hot leaf's comes with its `start`. The other way round (a new `start` with
/// `NO_LEAF`) reads 0 for the hot leaf's addresses, which only a thread that has
/// none of its objects can see (an object is handed out after `ensure` returns, and
/// reaches another thread with that ordering).
#[inline(always)]
fn hot(addr: usize) -> (*mut AtomicU64, usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let info: *mut AtomicU64;
        let d: usize;
        // SAFETY: reads the two words of a static, which is always valid.
        unsafe {
            core::arch::asm!(
                "mov {s}(%rip), {info}",
                "sub {s}+8(%rip), {d}",
                s = sym HOT,
                info = out(reg) info,
                d = inout(reg) addr => d,
                options(att_syntax, nostack, readonly)
            );
        }
        (info, d)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let info = HOT.info.load(Ordering::Acquire);
        (info, addr.wrapping_sub(HOT.start.load(Ordering::Relaxed)))
    }
}
// The asm's `{s}+8`.
#[cfg(target_arch = "x86_64")]
const _: () = assert!(core::mem::offset_of!(Hot, start) == 8);

const _: () = assert!(crate::size_class::CLASSES < 256 && PAGE_SHIFT >= 8);
const _: () = assert!(ADDRESS_BITS <= INFO_HEADER_SHIFT as usize);

/// Where the front-end's header offset sits in an info word (its top 16 bits).
pub const INFO_HEADER_SHIFT: u32 = 48;

/// [`ROOT`], addressed `%rip`-relative on x86_64 (see `rip_relative!`): the C `free`
/// is inlined into another crate.
#[inline(always)]
fn root() -> &'static [AtomicPtr<Leaf>; ROOT_LEN] {
    rip_relative!(ROOT, [AtomicPtr<Leaf>; ROOT_LEN])
}

/// Whether addresses up to `end` (exclusive) can be mapped (all of them on a
/// 32-bit target).
pub fn covers(end: usize) -> bool {
    end as u64 <= 1 << ADDRESS_BITS
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
    unsafe { (*leaf).spans[l].load(Ordering::Acquire) }
}

/// The info word of the page holding `addr` (see the module docs): [`small_info`]
/// for a page of a small-object span, 0 otherwise (also for
/// addresses beyond the map).
#[inline(always)]
pub fn info(addr: usize) -> u64 {
    let (info, d) = hot(addr);
    if d < 1 << (PAGE_SHIFT + LEAF_BITS) {
        let word = info.wrapping_add(d >> PAGE_SHIFT);
        // SAFETY: `info` is a leaf's info words (the hot leaf's, or `NO_LEAF`), of
        // `LEAF_LEN` words, and `d >> PAGE_SHIFT` is below `LEAF_LEN`: for the hot
        // leaf, `addr`'s page in it; leaves are never freed.
        return unsafe { (*word).load(Ordering::Acquire) };
    }
    core::hint::cold_path();
    info_walk(addr)
}

/// [`info`] through the root.
#[inline(always)]
fn info_walk(addr: usize) -> u64 {
    let (r, l) = split(addr);
    let Some(root) = root().get(r) else {
        return 0;
    };
    let leaf = root.load(Ordering::Acquire);
    if leaf.is_null() {
        return 0;
    }
    // SAFETY: leaves are never freed; `l` is in range.
    unsafe { (*leaf).info[l].load(Ordering::Acquire) }
}

/// Stores `v` as the info word of the pages `[first, last]` (addresses of pages).
fn set_info(first: usize, last: usize, v: u64) {
    let mut a = first;
    while a <= last {
        let (r, l) = split(a);
        let leaf = ROOT[r].load(Ordering::Acquire);
        debug_assert!(!leaf.is_null());
        // SAFETY: `ensure` mapped the leaf; leaves are never freed.
        unsafe { (*leaf).info[l].store(v, Ordering::Release) };
        a += 1 << PAGE_SHIFT;
    }
}

/// The info word of a page of a small-object span whose first object is at `first`
/// (the span's start, page aligned, not 0, below 2^47, plus its
/// `size_class::span_offset`), whose class's front-end header is at `hdr` (see the module
/// docs).
pub const fn small_info(hdr: usize, first: usize) -> u64 {
    (hdr as u64) << INFO_HEADER_SHIFT
        | ((first as u64).wrapping_neg() & ((1 << INFO_HEADER_SHIFT) - 1))
}

/// Records the span `span` (of size class `class`, `1..=CLASSES`) for all its pages,
/// with its info words. The leaves must exist ([`ensure`]), `span.start` is below
/// 2^47 ([`covers`]).
pub(crate) fn set_small(span: &Span, p: *mut Span, class: usize) {
    debug_assert!((1..256).contains(&class) && span.start & ((1 << PAGE_SHIFT) - 1) == 0);
    let last = span.end() - (1 << PAGE_SHIFT);
    set_range(span.start, last, p);
    // SAFETY: `class` is a class (caller).
    let hdr = unsafe { crate::front::header_offset(class) };
    debug_assert!(hdr.is_multiple_of(8) && hdr < 1 << 16);
    let first = span.start + crate::size_class::span_offset(class, span.start);
    set_info(span.start, last, small_info(hdr, first));
}

/// Clears the info words of `span`'s pages (the span stops being a small-object
/// span).
pub(crate) fn clear_small(span: &Span) {
    set_info(span.start, span.end() - (1 << PAGE_SHIFT), 0);
}

/// Makes sure the leaves for `[start, end)` exist, mapping each missing one with
/// `map` (its length in bytes; the page heap makes room for it when out of address
/// space); `false` if one could not be mapped. Called under the page heap's lock.
pub(crate) fn ensure(
    start: usize,
    end: usize,
    mut map: impl FnMut(usize) -> Option<*mut u8>,
) -> bool {
    if !covers(end) {
        return false;
    }
    let (first, _) = split(start);
    let (last, _) = split(end - 1);
    for (index, root) in ROOT.iter().enumerate().take(last + 1).skip(first) {
        if root.load(Ordering::Acquire).is_null() {
            let Some(p) = map(core::mem::size_of::<Leaf>()) else {
                return false;
            };
            // Zeroed memory is a leaf of null pointers.
            root.store(p.cast(), Ordering::Release);
            LEAF_BYTES.fetch_add(core::mem::size_of::<Leaf>(), Ordering::Relaxed);
            if ptr::eq(
                HOT.info.load(Ordering::Relaxed),
                ptr::addr_of!(NO_LEAF).cast(),
            ) {
                let leaf: *mut Leaf = p.cast();
                // SAFETY: `leaf` is the fresh mapping, a whole `Leaf`.
                let info = unsafe { ptr::addr_of_mut!((*leaf).info) }.cast::<AtomicU64>();
                HOT.start
                    .store(index << (PAGE_SHIFT + LEAF_BITS), Ordering::Release);
                HOT.info.store(info, Ordering::Release);
            }
        }
    }
    true
}

/// Records `span` for the pages `[first, last]` (addresses of pages). The leaves
/// must exist ([`ensure`]).
pub(crate) fn set_range(first: usize, last: usize, span: *mut Span) {
    let mut a = first;
    while a <= last {
        let (r, l) = split(a);
        let leaf = ROOT[r].load(Ordering::Acquire);
        debug_assert!(!leaf.is_null());
        // SAFETY: `ensure` mapped the leaf; leaves are never freed.
        unsafe { (*leaf).spans[l].store(span, Ordering::Release) };
        a += 1 << PAGE_SHIFT;
    }
}

/// Records `span` for its first and last pages (a free run).
pub(crate) fn set_ends(span: &Span, p: *mut Span) {
    set_range(span.start, span.start, p);
    let last = span.end() - (1 << PAGE_SHIFT);
    set_range(last, last, p);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size_class::PAGE_SIZE;

    /// Pages of small-object spans in several leaves (the hot one and others) read
    /// the same info word through the hot leaf and through the root, and addresses
    /// of no span (in a leaf or not, beyond the map) read 0 either way.
    #[test]
    fn info_is_the_same_through_the_hot_leaf_and_the_root() {
        let _heap = crate::test_heap_shared();
        // A real object (of a class no other test here counts): the page heap's leaf
        // exists (and is the hot one unless this test's leaves came first).
        let obj = crate::raw::alloc(4000, 16);
        assert!(!obj.is_null());
        // 5 GiB of address space, never touched: leaves 2 GiB apart inside it (on a
        // 32-bit target, whose root has 2 leaves, 96 MiB with spans 32 MiB apart).
        let wide = usize::BITS >= 64;
        let gap = if wide { 2usize << 30 } else { 32 << 20 };
        let len = 2 * gap + if wide { 1 << 30 } else { 32 << 20 };
        // SAFETY: a fresh reservation at an address of the kernel's choosing.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let start = (p as usize).next_multiple_of(PAGE_SIZE);
        let firsts = [start, start + gap, start + 2 * gap];
        let mut spans = firsts.map(|s| Span {
            start: s,
            pages: 2,
            class: 3,
            ..Span::EMPTY
        });
        let heap = crate::backend::page_heap::lock();
        heap.take();
        assert!(ensure(
            start,
            start + 2 * gap + 2 * PAGE_SIZE,
            crate::os::map
        ));
        // Every leaf is counted (leaves are mapped under the heap's lock, held).
        let leaves = ROOT
            .iter()
            .filter(|r| !r.load(Ordering::Acquire).is_null())
            .count();
        assert_eq!(mapped_bytes(), leaves * core::mem::size_of::<Leaf>());
        for s in &mut spans {
            let sp: *mut Span = s;
            set_small(s, sp, 3);
        }
        // SAFETY: taken above, on this thread.
        unsafe { heap.give() };
        assert!(!ptr::eq(
            HOT.info.load(Ordering::Acquire),
            ptr::addr_of!(NO_LEAF).cast()
        ));
        let hot = HOT.start.load(Ordering::Acquire) >> (PAGE_SHIFT + LEAF_BITS);
        let mut in_hot = 0;
        let mut addrs = vec![
            obj as usize,
            0,
            8,
            usize::MAX,
            // The first address beyond the map (on a 32-bit target there is none).
            (1u64 << ADDRESS_BITS).min(usize::MAX as u64) as usize,
            &hot as *const _ as usize,
        ];
        // The hot range's ends, and addresses just outside it (wrapping: on a 32-bit
        // target the hot leaf may be the last, which ends at 2^32).
        let first = hot << (PAGE_SHIFT + LEAF_BITS);
        let end = first.wrapping_add(1 << (PAGE_SHIFT + LEAF_BITS));
        addrs.extend([first, first.wrapping_sub(1), end.wrapping_sub(1), end]);
        for s in &spans {
            // SAFETY: `s.start` is a class-3 span's (set above).
            let want = small_info(
                unsafe { crate::front::header_offset(3) },
                s.start + crate::size_class::span_offset(3, s.start),
            );
            for a in [s.start, s.start + 100, s.start + PAGE_SIZE, s.end() - 1] {
                assert_eq!(info(a), want, "{a:#x}");
                addrs.push(a);
            }
            addrs.extend([s.start - 1, s.end()]);
        }
        for &a in &addrs {
            assert_eq!(info(a), info_walk(a), "{a:#x}");
            in_hot += usize::from(a >> (PAGE_SHIFT + LEAF_BITS) == hot);
        }
        assert!(in_hot > 0, "no address in the hot leaf");
        heap.take();
        for s in &spans {
            clear_small(s);
            set_range(s.start, s.end() - PAGE_SIZE, ptr::null_mut());
        }
        // SAFETY: taken above, on this thread.
        unsafe { heap.give() };
        for s in &spans {
            assert_eq!(info(s.start), 0);
        }
        // SAFETY: the reservation above, no longer in the page map.
        unsafe { libc::munmap(p, len) };
        // SAFETY: allocated above with this size and alignment.
        unsafe { crate::raw::free(obj, crate::raw::lookup(obj)) };
    }
}
