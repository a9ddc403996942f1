//! `PerCpu<T>`: zeroed slots, the strided layout, packing and reuse in the pool, and
//! the resident memory of slots that are used, only read, or never touched.
//!
//! Resident memory is measured exactly, per page, with `mincore` and
//! `/proc/self/pagemap` over the item's own pages, so other threads' allocations do
//! not disturb it; RSS from `/proc/self/statm` is checked as well, with every test of
//! this file serialized by one lock. Each test that inspects placement uses its own
//! slot count, hence its own pool family.

#[path = "support/child.rs"]
mod child;

use std::cell::UnsafeCell;
use std::collections::{BTreeSet, HashSet};
use std::mem::{align_of, size_of};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use restartable::percpu::storage::{IndexBy, PerCpu, Zeroable, DEFAULT_STRIDE};

/// Serializes the tests of this file, so that RSS measurements see only their own.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Per page of `[addr, addr + len)` (page-aligned): whether `mincore` reports it
/// resident (for anonymous memory: a page-table entry maps it, the zero page included).
fn mincore(addr: usize, len: usize) -> Vec<bool> {
    assert_eq!(addr % page(), 0);
    let mut v = vec![0u8; len.div_ceil(page())];
    // SAFETY: `v` has one byte per page of the range; mincore only writes to it.
    let r = unsafe { libc::mincore(addr as *mut libc::c_void, len, v.as_mut_ptr()) };
    assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
    v.iter().map(|b| b & 1 != 0).collect()
}

/// What `/proc/self/pagemap` says of one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pm {
    /// No page-table entry.
    None,
    /// Present and mapped only here: a page of its own (memory).
    Private,
    /// Present, not exclusively mapped: here, the shared zero page.
    Shared,
    /// Swapped out.
    Swapped,
}

/// Pagemap state of each page of `[addr, addr + len)`; `None` if pagemap is unreadable.
fn pagemap(addr: usize, len: usize) -> Option<Vec<Pm>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open("/proc/self/pagemap").ok()?;
    let n = len.div_ceil(page());
    let mut buf = vec![0u8; n * 8];
    f.read_exact_at(&mut buf, (addr / page()) as u64 * 8).ok()?;
    Some(
        buf.chunks_exact(8)
            .map(|b| {
                let e = u64::from_ne_bytes(b.try_into().unwrap());
                if e & (1 << 62) != 0 {
                    Pm::Swapped
                } else if e & (1 << 63) == 0 {
                    Pm::None
                } else if e & (1 << 56) != 0 {
                    Pm::Private
                } else {
                    Pm::Shared
                }
            })
            .collect(),
    )
}

/// Resident set size in pages, from `/proc/self/statm`.
fn rss_pages() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    s.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The chunk holding a pooled item: its ranges start at multiples of the stride.
fn chunk_of<T: Zeroable>(p: &PerCpu<T>) -> (usize, usize) {
    let start = p.base() as usize & !(p.stride() - 1);
    (start, p.slots() * p.stride())
}

/// The page holding slot `i` of `p`, for each slot.
fn slot_pages<T: Zeroable>(p: &PerCpu<T>) -> impl Iterator<Item = usize> + '_ {
    (0..p.slots()).map(move |i| p.slot_ptr(i) as usize & !(page() - 1))
}

fn count<T: PartialEq>(v: &[T], x: T) -> usize {
    v.iter().filter(|&y| *y == x).count()
}

fn all_zero<T: Zeroable>(p: &mut PerCpu<T>) -> bool {
    let n = size_of::<T>();
    p.iter_mut().all(|v| {
        // SAFETY: the slot is `n` initialized bytes (the test types have no padding).
        let bytes = unsafe { std::slice::from_raw_parts((v as *mut T).cast::<u8>(), n) };
        bytes.iter().all(|&b| b == 0)
    })
}

#[test]
fn slots_start_zeroed() {
    let _g = serial();
    let counters: PerCpu<AtomicU64> = PerCpu::new(IndexBy::Cpu);
    assert_eq!(counters.slots(), restartable::possible_cpus());
    assert!(counters.iter().all(|c| c.load(Ordering::Relaxed) == 0));

    let mut wide: PerCpu<[u64; 5]> = PerCpu::with_slots(IndexBy::MmCid, 1024);
    assert!(all_zero(&mut wide));
    let mut ptrs: PerCpu<Option<NonNull<u8>>> = PerCpu::new(IndexBy::Cpu);
    assert!(ptrs.iter_mut().all(|p| p.is_none()));
    let mut cells: PerCpu<UnsafeCell<u128>> = PerCpu::with_slots(IndexBy::Cpu, 3);
    assert!(cells.iter_mut().all(|c| *c.get_mut() == 0));
    let units: PerCpu<()> = PerCpu::with_slots(IndexBy::Cpu, 4);
    assert_eq!(units.iter().count(), 4);
}

/// A small type aligned beyond 8 bytes.
#[repr(C, align(128))]
struct Line([u64; 2]);
// SAFETY: an array of integers.
unsafe impl Zeroable for Line {}

/// A small type aligned to a page.
#[repr(C, align(4096))]
struct PageAligned(u64);
// SAFETY: an integer.
unsafe impl Zeroable for PageAligned {}

/// A small type aligned to the whole default stride: needs its own mapping.
#[repr(C, align(65536))]
struct StrideAligned(u64);
// SAFETY: an integer.
unsafe impl Zeroable for StrideAligned {}

fn check_layout<T: Zeroable>(slots: usize) -> PerCpu<T> {
    let p: PerCpu<T> = PerCpu::with_slots(IndexBy::Cpu, slots);
    let stride = p.stride();
    assert!(
        stride.is_power_of_two() && stride >= page(),
        "stride {stride}"
    );
    assert_eq!(stride, 1 << p.stride_shift());
    assert!(stride >= size_of::<T>());
    assert!(stride >= DEFAULT_STRIDE.min(size_of::<T>().next_power_of_two()));
    let mut seen = HashSet::new();
    for i in 0..slots {
        let a = p.slot_ptr(i) as usize;
        assert_eq!(a, p.base() as usize + i * stride, "slot {i}");
        assert_eq!(a % align_of::<T>().max(8), 0, "slot {i} misaligned");
        assert!(seen.insert(a));
    }
    p
}

#[test]
fn slot_addresses_are_distinct_stride_apart_and_aligned() {
    let _g = serial();
    assert_eq!(check_layout::<AtomicU64>(2).stride(), DEFAULT_STRIDE);
    assert_eq!(check_layout::<u8>(1024).stride(), DEFAULT_STRIDE);
    assert_eq!(check_layout::<u128>(7).stride(), DEFAULT_STRIDE);
    assert_eq!(check_layout::<Line>(9).stride(), DEFAULT_STRIDE);
    assert_eq!(check_layout::<PageAligned>(3).stride(), DEFAULT_STRIDE);
    assert_eq!(
        check_layout::<[u8; DEFAULT_STRIDE / 2]>(2).stride(),
        DEFAULT_STRIDE
    );
    // Larger than half a stride: a mapping of its own, stride = size rounded up to a
    // power-of-two number of pages.
    assert_eq!(
        check_layout::<[u8; DEFAULT_STRIDE / 2 + 1]>(2).stride(),
        DEFAULT_STRIDE
    );
    assert_eq!(check_layout::<[u64; 8192]>(3).stride(), DEFAULT_STRIDE);
    assert_eq!(
        check_layout::<[u8; 100_000]>(2).stride(),
        2 * DEFAULT_STRIDE
    );
    assert_eq!(
        check_layout::<[u8; 300_000]>(1).stride(),
        8 * DEFAULT_STRIDE
    );
    assert_eq!(check_layout::<StrideAligned>(2).stride(), DEFAULT_STRIDE);
    // Two over-aligned items share a chunk at distinct, aligned offsets.
    let a = check_layout::<Line>(9);
    let b = check_layout::<Line>(9);
    assert_ne!(a.base(), b.base());
    assert_eq!(chunk_of(&a), chunk_of(&b));
}

#[test]
fn writes_stay_in_their_slot() {
    let _g = serial();
    let mut items: Vec<PerCpu<AtomicU64>> = (0..64)
        .map(|_| PerCpu::with_slots(IndexBy::Cpu, 11))
        .collect();
    for (k, p) in items.iter_mut().enumerate() {
        for (i, v) in p.iter_mut().enumerate() {
            *v.get_mut() = (k as u64) << 32 | i as u64 | 1 << 63;
        }
    }
    for (k, p) in items.iter().enumerate() {
        for i in 0..p.slots() {
            assert_eq!(
                p.get(i).load(Ordering::Relaxed),
                (k as u64) << 32 | i as u64 | 1 << 63
            );
        }
    }
    // One slot changed, the others and the other items untouched.
    items[5].get(3).store(7, Ordering::Relaxed);
    let sum: u64 = items[5]
        .iter()
        .map(|v| v.load(Ordering::Relaxed) & 0xff)
        .sum();
    assert_eq!(sum, (0..11).filter(|&i| i != 3).sum::<u64>() + 7);
    assert_eq!(
        items[4].get(3).load(Ordering::Relaxed),
        4 << 32 | 3 | 1 << 63
    );
    assert_eq!(
        items[6].get(3).load(Ordering::Relaxed),
        6 << 32 | 3 | 1 << 63
    );
}

#[test]
fn shared_slots_from_many_threads() {
    let _g = serial();
    let hits: PerCpu<AtomicI64> = PerCpu::with_slots(IndexBy::Cpu, 8);
    std::thread::scope(|s| {
        for t in 0..8 {
            let hits = &hits;
            s.spawn(move || {
                for _ in 0..10_000 {
                    hits.get(t).fetch_add(1, Ordering::Relaxed);
                    hits.get((t + 1) % 8).fetch_sub(1, Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(
        hits.iter().map(|h| h.load(Ordering::Relaxed)).sum::<i64>(),
        0
    );
    assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 0));
}

#[test]
fn small_items_pack_into_few_chunks() {
    let _g = serial();
    const N: usize = 10_000;
    let items: Vec<PerCpu<AtomicU64>> = (0..N)
        .map(|_| PerCpu::with_slots(IndexBy::Cpu, 5))
        .collect();
    let mut chunks: BTreeSet<usize> = BTreeSet::new();
    let mut places = HashSet::new();
    for p in &items {
        assert_eq!(p.stride(), DEFAULT_STRIDE);
        let (chunk, len) = chunk_of(p);
        assert_eq!(len, 5 * DEFAULT_STRIDE);
        chunks.insert(chunk);
        // Distinct offsets inside a chunk: 8 bytes each, no padding.
        assert!(places.insert((chunk, p.base() as usize - chunk)));
    }
    let needed = (N * 8).div_ceil(DEFAULT_STRIDE);
    eprintln!(
        "{N} x 8-byte items in {} chunk(s) of 5 x 64 KiB",
        chunks.len()
    );
    assert_eq!(
        chunks.len(),
        needed,
        "10,000 counters should fill {needed} chunks"
    );
    // First fit: the first chunk is full, item after item.
    let first = chunk_of(&items[0]).0;
    let offsets: BTreeSet<usize> = places
        .iter()
        .filter(|(c, _)| *c == first)
        .map(|(_, o)| *o)
        .collect();
    assert_eq!(offsets.len(), DEFAULT_STRIDE / 8);
    assert_eq!(*offsets.iter().next_back().unwrap(), DEFAULT_STRIDE - 8);
}

#[test]
fn freed_space_is_reused_and_zeroed() {
    let _g = serial();
    const N: usize = 10_000;
    let mut items: Vec<Option<PerCpu<AtomicU64>>> = (0..N)
        .map(|_| Some(PerCpu::with_slots(IndexBy::Cpu, 6)))
        .collect();
    for p in items.iter_mut().flatten() {
        for v in p.iter_mut() {
            *v.get_mut() = u64::MAX;
        }
    }
    let chunks: BTreeSet<usize> = items.iter().flatten().map(|p| chunk_of(p).0).collect();
    // Free every other item, then allocate as many: they land exactly in the holes,
    // and read as zero in every slot although every slot was written.
    let mut freed = HashSet::new();
    for p in items.iter_mut().step_by(2) {
        freed.insert(p.take().unwrap().base() as usize);
    }
    let mut again: Vec<PerCpu<AtomicU64>> = (0..N / 2)
        .map(|_| PerCpu::with_slots(IndexBy::Cpu, 6))
        .collect();
    let reused: HashSet<usize> = again.iter().map(|p| p.base() as usize).collect();
    assert_eq!(reused, freed);
    for p in &mut again {
        assert!(all_zero(p), "a reused item is not zero");
    }
    // The neighbours kept their values.
    for p in items.iter().flatten() {
        assert!(p.iter().all(|v| v.load(Ordering::Relaxed) == u64::MAX));
    }
    // No new chunk was needed.
    let after: BTreeSet<usize> = again.iter().map(|p| chunk_of(p).0).collect();
    assert!(after.is_subset(&chunks));
    // Mixed sizes reuse the holes too.
    drop(again);
    let mut pairs: Vec<PerCpu<[u64; 2]>> = (0..N / 4)
        .map(|_| PerCpu::with_slots(IndexBy::Cpu, 6))
        .collect();
    for p in &mut pairs {
        assert!(all_zero(p));
    }
}

#[test]
fn released_pages_give_memory_back() {
    let _g = serial();
    let per_page = page() / 8;
    // Two pages of each of 7 ranges, all written.
    let mut items: Vec<Option<PerCpu<AtomicU64>>> = (0..2 * per_page)
        .map(|_| Some(PerCpu::with_slots(IndexBy::Cpu, 7)))
        .collect();
    let (chunk, len) = chunk_of(items[0].as_ref().unwrap());
    assert_eq!(
        items[0].as_ref().unwrap().base() as usize,
        chunk,
        "a fresh family"
    );
    for p in items.iter_mut().flatten() {
        for v in p.iter_mut() {
            *v.get_mut() = 1;
        }
    }
    assert_eq!(count(&mincore(chunk, len), true), 14);
    // Free the items of the first page: that page of every range is released.
    for p in &mut items[..per_page] {
        *p = None;
    }
    let resident = mincore(chunk, len);
    assert_eq!(count(&resident, true), 7);
    for s in 0..7 {
        let first = s * DEFAULT_STRIDE / page();
        assert!(!resident[first] && resident[first + 1], "range {s}");
    }
    // Free all but one of the second page's: still resident, but zeroed for reuse.
    for p in &mut items[per_page + 1..] {
        *p = None;
    }
    assert_eq!(count(&mincore(chunk, len), true), 7);
    // The last one: the chunk is empty and gives everything back.
    items.clear();
    assert_eq!(count(&mincore(chunk, len), true), 0);
    let mut again: PerCpu<AtomicU64> = PerCpu::with_slots(IndexBy::Cpu, 7);
    assert_eq!(chunk_of(&again).0, chunk);
    assert!(all_zero(&mut again));
}

#[test]
fn resident_memory_follows_used_slots() {
    let _g = serial();
    let rss0 = rss_pages();
    let unused: PerCpu<AtomicU64> = PerCpu::with_slots(IndexBy::Cpu, 1024);
    let used: PerCpu<AtomicU64> = PerCpu::with_slots(IndexBy::Cpu, 1024);
    let (chunk, len) = chunk_of(&used);
    assert_eq!(chunk_of(&unused).0, chunk);
    assert_eq!(
        count(&mincore(chunk, len), true),
        0,
        "reserving touches nothing"
    );

    used.get(0).fetch_add(1, Ordering::Relaxed);
    used.get(0).fetch_add(1, Ordering::Relaxed);
    let resident = count(&mincore(chunk, len), true);
    eprintln!(
        "1,024 slots x 64 KiB ({} MiB reserved), slot 0 written: {resident} page(s) resident",
        len >> 20
    );
    assert_eq!(resident, 1);
    if let Some(pm) = pagemap(chunk, len) {
        assert_eq!(count(&pm, Pm::Private), 1);
    }
    // Dropping an item does not touch the other slots' pages either.
    drop(unused);
    assert_eq!(count(&mincore(chunk, len), true), 1);

    // 1,000 more counters used from two slots: 2 pages in each of the 2 ranges.
    let many: Vec<PerCpu<AtomicU64>> = (0..1000)
        .map(|_| PerCpu::with_slots(IndexBy::Cpu, 1024))
        .collect();
    for c in &many {
        c.get(0).fetch_add(1, Ordering::Relaxed);
        c.get(1).fetch_add(1, Ordering::Relaxed);
    }
    let resident = count(&mincore(chunk, len), true);
    eprintln!("1,001 counters x 1,024 slots, 2 slots written: {resident} page(s) resident");
    assert_eq!(resident, 4);
    let grown = rss_pages().saturating_sub(rss0);
    eprintln!("RSS growth: {grown} page(s) (every slot touched would be >= 2,048)");
    assert!(grown < 64, "RSS grew by {grown} pages");
    assert_eq!(used.get(0).load(Ordering::Relaxed), 2);
}

#[test]
fn reading_every_slot_maps_only_the_zero_page() {
    let _g = serial();
    let rss0 = rss_pages();
    let p: PerCpu<AtomicU64> = PerCpu::with_slots(IndexBy::Cpu, 1000);
    let (chunk, len) = chunk_of(&p);
    p.get(0).store(42, Ordering::Relaxed);
    let sum: u64 = p.iter().map(|v| v.load(Ordering::Relaxed)).sum();
    assert_eq!(sum, 42);
    let mapped = count(&mincore(chunk, len), true);
    let rss = rss_pages().saturating_sub(rss0);
    eprintln!("sum over 1,000 slots: mincore {mapped} page(s) mapped, RSS growth {rss} page(s)");
    // Reads fault in page-table entries for the shared zero page: `mincore` reports
    // them, but they take no memory of their own.
    assert_eq!(mapped, 1000);
    assert!(rss < 64, "RSS grew by {rss} pages");
    if let Some(pm) = pagemap(chunk, len) {
        let (private, shared) = (count(&pm, Pm::Private), count(&pm, Pm::Shared));
        eprintln!("pagemap: {private} private page(s), {shared} zero-page mapping(s)");
        assert_eq!(private, 1);
        assert_eq!(shared, 999);
        let pages: Vec<usize> = slot_pages(&p).collect();
        assert_eq!(pm[(pages[0] - chunk) / page()], Pm::Private);
    }
    // A second item in those pages reads as zero everywhere; freeing the first one
    // does not turn the zero-page mappings into memory.
    let q: PerCpu<AtomicU64> = PerCpu::with_slots(IndexBy::Cpu, 1000);
    assert_eq!(q.iter().map(|v| v.load(Ordering::Relaxed)).sum::<u64>(), 0);
    drop(p);
    if let Some(pm) = pagemap(chunk, len) {
        assert_eq!(count(&pm, Pm::Private), 1);
    }
    assert!(rss_pages().saturating_sub(rss0) < 64);
}

static DROPPED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// Records its value when dropped.
struct Noisy(u64);
// SAFETY: an integer.
unsafe impl Zeroable for Noisy {}
impl Drop for Noisy {
    fn drop(&mut self) {
        DROPPED.lock().unwrap().push(self.0);
        assert_ne!(self.0, 1000, "told to panic");
    }
}

#[test]
fn drop_runs_each_slot_destructor_once() {
    let _g = serial();
    DROPPED.lock().unwrap().clear();
    let mut p: PerCpu<Noisy> = PerCpu::with_slots(IndexBy::Cpu, 37);
    for (i, v) in p.iter_mut().enumerate().skip(2) {
        v.0 = i as u64;
    }
    drop(p);
    let mut seen = std::mem::take(&mut *DROPPED.lock().unwrap());
    seen.sort_unstable();
    // Slots 0 and 1 were never written: their zero values are dropped too.
    let expected: Vec<u64> = [0, 0].into_iter().chain(2..37).collect();
    assert_eq!(seen, expected);

    // A panicking destructor: the other slots are still dropped, once.
    let mut p: PerCpu<Noisy> = PerCpu::with_slots(IndexBy::Cpu, 5);
    for (i, v) in p.iter_mut().enumerate() {
        v.0 = if i == 1 { 1000 } else { 10 + i as u64 };
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(p)));
    assert!(r.is_err());
    let mut seen = std::mem::take(&mut *DROPPED.lock().unwrap());
    seen.sort_unstable();
    assert_eq!(seen, [10, 12, 13, 14, 1000]);

    // Boxes in slots are freed with the storage.
    static BOXES: AtomicUsize = AtomicUsize::new(0);
    struct Counted;
    impl Drop for Counted {
        fn drop(&mut self) {
            BOXES.fetch_add(1, Ordering::Relaxed);
        }
    }
    let mut b: PerCpu<Option<Box<Counted>>> = PerCpu::with_slots(IndexBy::Cpu, 4);
    *b.get_mut(1) = Some(Box::new(Counted));
    *b.get_mut(3) = Some(Box::new(Counted));
    drop(b);
    assert_eq!(BOXES.load(Ordering::Relaxed), 2);
}

#[test]
fn large_items_have_their_own_mapping() {
    let _g = serial();
    let mut big: PerCpu<[u8; 100_000]> = PerCpu::with_slots(IndexBy::Cpu, 4);
    assert_eq!(big.stride(), 128 << 10);
    assert_eq!(big.base() as usize % page(), 0);
    assert!(all_zero(&mut big));
    for (i, v) in big.iter_mut().enumerate() {
        v[0] = i as u8 + 1;
        v[99_999] = i as u8 + 1;
    }
    for i in 0..4 {
        assert_eq!(big.get(i)[99_999], i as u8 + 1);
        assert_eq!(big.get(i)[50_000], 0);
    }
    // The zero check read every page (zero-page mappings); the writes made the first
    // and last page of each slot private memory.
    if let Some(pm) = pagemap(big.base() as usize, 4 * big.stride()) {
        assert_eq!(
            count(&pm, Pm::Private),
            8,
            "first and last page of each slot"
        );
    }
    drop(big);
    let mut again: PerCpu<[u8; 100_000]> = PerCpu::with_slots(IndexBy::Cpu, 4);
    assert!(all_zero(&mut again));
}

#[test]
fn errors_are_reported() {
    let _g = serial();
    let e = PerCpu::<u64>::try_with_slots(IndexBy::Cpu, 0).unwrap_err();
    assert!(e.to_string().contains("zero slots"), "{e}");
    // More than the address space.
    let e = PerCpu::<u64>::try_with_slots(IndexBy::Cpu, usize::MAX / 1024).unwrap_err();
    eprintln!("{e}");
    assert!(e.to_string().contains("cannot reserve"), "{e}");
    assert!(PerCpu::<u64>::try_new(IndexBy::MmCid).is_ok());
    let r = std::panic::catch_unwind(|| PerCpu::<u64>::with_slots(IndexBy::Cpu, 0));
    assert!(r.is_err());
}

#[test]
fn storage_is_send_and_sync_like_its_slots() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<PerCpu<AtomicU64>>();
    send_sync::<PerCpu<u64>>();
    send::<PerCpu<std::cell::Cell<u64>>>();
    send::<restartable::percpu::storage::IterMut<'static, u64>>();
    let _g = serial();
    let p: PerCpu<AtomicU64> = PerCpu::new(IndexBy::Cpu);
    let p = std::thread::spawn(move || {
        p.get(0).store(9, Ordering::Relaxed);
        p
    })
    .join()
    .unwrap();
    assert_eq!(p.get(0).load(Ordering::Relaxed), 9);
    let text = format!("{p:?}");
    assert!(
        text.contains("PerCpu") && text.contains("stride: 65536"),
        "{text}"
    );
}

#[test]
fn forked_child_resets_its_own_pages() {
    let _g = serial();
    // The parent's pool has a chunk for 13 slots and has already opened its view of
    // the page tables (by freeing an item).
    let keep: PerCpu<AtomicU64> = PerCpu::with_slots(IndexBy::Cpu, 13);
    drop(PerCpu::<AtomicU64>::with_slots(IndexBy::Cpu, 13));
    // SAFETY: the child only runs the pool (whose lock no other thread holds: every
    // test of this file is serialized) and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // A page written only in the child must be seen (and cleared) on free: a view
        // of the parent's page tables would say it was never touched.
        let a: PerCpu<AtomicU64> = PerCpu::with_slots(IndexBy::Cpu, 13);
        a.get(3).store(u64::MAX, Ordering::Relaxed);
        let place = a.base();
        drop(a);
        let b: PerCpu<AtomicU64> = PerCpu::with_slots(IndexBy::Cpu, 13);
        let ok = b.base() == place && b.iter().all(|v| v.load(Ordering::Relaxed) == 0);
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let status = child::wait_pid_within(pid, child::SHORT, "forked_child_resets_its_own_pages");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: {status:#x}"
    );
    assert_eq!(keep.get(3).load(Ordering::Relaxed), 0);
}
