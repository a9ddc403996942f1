//! `restartable_alloc::raw`: allocation without a layout on free. What a pointer is
//! (small object, large object, foreign), usable sizes, alignment, realloc, and the
//! two APIs sharing one heap.

use std::alloc::{GlobalAlloc, Layout};

use restartable_alloc::raw::{self, Block};
use restartable_alloc::size_class::{class_for, size, CLASSES, MAX_SMALL, PAGE_SHIFT};
use restartable_alloc::PerCpuAlloc;

const SIZES: [usize; 14] = [
    0,
    1,
    15,
    16,
    17,
    128,
    129,
    4096,
    8193,
    65536,
    MAX_SMALL,
    MAX_SMALL + 1,
    1 << 20,
    3 << 20,
];

#[test]
fn every_size_is_found_again_and_freed() {
    for &n in &SIZES {
        let p = raw::alloc(n, 16);
        assert!(!p.is_null() && (p as usize).is_multiple_of(16), "{n}");
        let b = raw::lookup(p);
        match b {
            Block::Small { class } => assert!(n <= MAX_SMALL && size(class) >= n, "{n}: {b:?}"),
            Block::Large { len } => assert!(n > MAX_SMALL && len >= n, "{n}: {b:?}"),
            Block::Foreign => panic!("{n}: own object not found"),
        }
        let usable = raw::usable_size(p).expect("usable size");
        assert!(usable >= n);
        // SAFETY: `usable` bytes of a live object.
        unsafe { p.write_bytes(0xab, usable) };
        // SAFETY: a live object of kind `b`, not used again.
        unsafe { raw::free(p, b) };
    }
}

#[test]
fn interior_stack_and_static_pointers_are_foreign() {
    let small = raw::alloc(100, 16);
    let large = raw::alloc(1 << 20, 16);
    let local = [0u8; 64];
    static DATA: [u8; 64] = [0; 64];
    assert_eq!(raw::lookup(small.wrapping_add(16)), Block::Foreign);
    assert_eq!(raw::lookup(small.wrapping_add(1)), Block::Foreign);
    assert_eq!(raw::lookup(large.wrapping_add(4096)), Block::Foreign);
    assert_eq!(raw::lookup(local.as_ptr()), Block::Foreign);
    assert_eq!(raw::lookup(DATA.as_ptr()), Block::Foreign);
    assert_eq!(raw::lookup(std::ptr::null()), Block::Foreign);
    // SAFETY: live objects of their kinds, not used again.
    unsafe {
        raw::free(large, raw::lookup(large));
        raw::free(small, raw::lookup(small));
    }
    // (That a freed large object's address is foreign again is checked in a
    // single-threaded process by restartable-malloc's `foreign` program: here another
    // test may map the same address at once.)
}

#[test]
fn alignments_up_to_large_mappings() {
    for shift in 4..=22 {
        let align = 1usize << shift;
        for n in [0, 1, align / 2, align, 3 * align + 1, 300_000] {
            let p = raw::alloc(n, align);
            assert!(
                !p.is_null() && (p as usize).is_multiple_of(align),
                "{n} / {align}"
            );
            let b = raw::lookup(p);
            assert_ne!(b, Block::Foreign, "{n} / {align}");
            assert!(raw::usable_size(p).unwrap() >= n);
            // SAFETY: as above.
            unsafe {
                p.write_bytes(1, n);
                raw::free(p, b);
            }
        }
    }
    assert!(raw::alloc(usize::MAX - 100, 16).is_null());
    // An alignment no address space has room for (a 32-bit one may have room for
    // any alignment a layout can have).
    #[cfg(target_pointer_width = "64")]
    assert!(raw::alloc(16, 1 << 62).is_null());
}

#[test]
fn realloc_keeps_contents_across_classes_and_kinds() {
    let mut p = raw::alloc(10, 16);
    let mut have = 10;
    // SAFETY: 10 bytes of a live object.
    unsafe { p.write_bytes(7, 10) };
    for n in [
        20,
        100,
        5000,
        300_000,
        2 << 20,
        3 << 20,
        400_000,
        200,
        24,
        3,
    ] {
        // SAFETY: a live object of the kind looked up; replaced by the result.
        let q = unsafe { raw::realloc(p, raw::lookup(p), n) };
        assert!(!q.is_null());
        let keep = have.min(n);
        // SAFETY: `keep` bytes of the live object `q`.
        let s = unsafe { std::slice::from_raw_parts(q, keep) };
        assert!(s.iter().all(|&b| b == 7), "{have} -> {n}");
        // SAFETY: `n` bytes of `q`.
        unsafe { q.write_bytes(7, n) };
        p = q;
        have = n;
    }
    // SAFETY: a live object.
    unsafe { raw::free(p, raw::lookup(p)) };
}

#[test]
fn zeroed_objects_are_zero_even_when_reused() {
    for &n in &SIZES[..11] {
        let d = raw::alloc(n, 16);
        // SAFETY: a live object of at least `n` bytes, then freed.
        unsafe {
            d.write_bytes(0xa5, n);
            raw::free(d, raw::lookup(d));
        }
        let p = raw::alloc_zeroed(n, 16);
        // SAFETY: `n` bytes of a live object.
        let s = unsafe { std::slice::from_raw_parts(p, n) };
        assert!(s.iter().all(|&b| b == 0), "{n}");
        // SAFETY: a live object.
        unsafe { raw::free(p, raw::lookup(p)) };
    }
}

#[test]
fn small_objects_are_shared_with_the_global_alloc_path() {
    // An object of PerCpuAlloc's GlobalAlloc path is a small object here, and the
    // other way round: one heap.
    let a = PerCpuAlloc::new();
    let l = Layout::from_size_align(100, 8).unwrap();
    // SAFETY: a valid layout.
    let p = unsafe { a.alloc(l) };
    let b = raw::lookup(p);
    assert!(matches!(b, Block::Small { class } if size(class) >= 100));
    // SAFETY: a live small object, freed once (through raw).
    unsafe { raw::free(p, b) };
    let q = raw::alloc(100, 16);
    // SAFETY: a live small object of the class of (100, 16), freed through
    // GlobalAlloc with that layout.
    unsafe { a.dealloc(q, Layout::from_size_align(100, 16).unwrap()) };
}

#[test]
fn threads_free_each_others_objects() {
    let (tx, rx) = std::sync::mpsc::channel::<usize>();
    let producer = std::thread::spawn(move || {
        for i in 0..20_000usize {
            let n = (i * 37) % 3000 + if i.is_multiple_of(500) { 400_000 } else { 0 };
            let p = raw::alloc(n, 16);
            // SAFETY: `n` bytes of a live object.
            unsafe { p.write_bytes((i % 251) as u8, n) };
            tx.send(p as usize).unwrap();
        }
    });
    let mut i = 0usize;
    for a in rx {
        let p = a as *mut u8;
        let n = (i * 37) % 3000 + if i.is_multiple_of(500) { 400_000 } else { 0 };
        // SAFETY: the producer's object, handed over, `n` bytes.
        let s = unsafe { std::slice::from_raw_parts(p, n) };
        assert!(s.iter().all(|&b| b == (i % 251) as u8), "object {i}");
        let b = raw::lookup(p);
        assert_ne!(b, Block::Foreign);
        // SAFETY: a live object, not used again.
        unsafe { raw::free(p, b) };
        i += 1;
    }
    producer.join().unwrap();
    assert_eq!(i, 20_000);
}

#[test]
fn every_class_round_trips_its_sizes_and_alignments() {
    // Every class, at its smallest and largest size, at every alignment up to the
    // allocator's page: the object is aligned, of the class the layout names (so the
    // sized free finds it), as large as asked, writable, stays in place when
    // reallocated within its class, and is found again by the page map.
    let a = PerCpuAlloc::new();
    for c in 1..=CLASSES {
        let lo = if c == 1 { 1 } else { size(c - 1) + 1 };
        for n in [lo, size(c)] {
            for shift in 0..=PAGE_SHIFT {
                let align = 1usize << shift;
                let l = Layout::from_size_align(n, align).unwrap();
                let k = class_for(l);
                assert!(
                    k >= c && size(k).is_multiple_of(align),
                    "{l:?} -> class {k}"
                );
                if align <= 16 {
                    // Every class is some size's class.
                    assert_eq!(k, c, "{l:?}");
                }
                // SAFETY: (test) a valid layout of non-zero size.
                let p = unsafe { a.alloc(l) };
                assert!(!p.is_null() && (p as usize).is_multiple_of(align), "{l:?}");
                assert_eq!(raw::lookup(p), Block::Small { class: k }, "{l:?}");
                assert!(raw::usable_size(p).unwrap() >= n);
                // SAFETY: (test) `n` bytes of a live object; realloc within the class
                // (to its full size) keeps it in place; freed with its layout.
                unsafe {
                    p.write_bytes((c % 251) as u8, n);
                    let q = a.realloc(p, l, size(k));
                    assert_eq!(q, p, "{l:?}: realloc to {} moved", size(k));
                    assert_eq!(q.add(n - 1).read(), (c % 251) as u8);
                    a.dealloc(q, Layout::from_size_align(size(k), align).unwrap());
                }
                let r = raw::alloc(n, align);
                assert!(
                    !r.is_null() && (r as usize).is_multiple_of(align),
                    "raw {l:?}"
                );
                assert!(raw::usable_size(r).unwrap() >= n);
                // SAFETY: (test) a live object of `n` bytes, freed once.
                unsafe {
                    r.write_bytes(0x5a, n);
                    raw::free(r, raw::lookup(r));
                }
            }
        }
    }
}
