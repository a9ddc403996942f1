//! `Stats::mapped_bytes` counts every mapping the allocator makes: in a child
//! process with nothing else mapping meanwhile, it moves exactly as the process's
//! address space does (`/proc/self/statm`), through the first large object of
//! `raw` (its mapping and a leaf of the large-object map) and through regions of
//! small objects (regions, span records, page-map leaves).

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use common::child::{in_child, Spec};
use restartable_alloc::{raw, PerCpuAlloc};

#[global_allocator]
static A: PerCpuAlloc = PerCpuAlloc::new();

const MIB: usize = 1 << 20;

/// Bytes of address space of this process.
fn address_space() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    s.split_whitespace().next().unwrap().parse::<u64>().unwrap() * 4096
}

/// `(address space, mapped_bytes)` now. The file is read into a buffer allocated
/// before (so reading it maps nothing of the allocator's).
fn both() -> (u64, u64) {
    (
        address_space(),
        restartable_alloc::stats_summary().mapped_bytes,
    )
}

#[test]
fn mapped_bytes_moves_with_the_address_space() {
    in_child(
        "mapped_bytes_moves_with_the_address_space",
        "mapped",
        Spec::within(300),
        || {
            // Everything the measurement itself needs, set up first.
            let mut held: Vec<usize> = Vec::with_capacity(1 << 18);
            let _ = both();
            let _ = both();
            // The first large object of `raw`: its mapping and the leaf of the
            // large-object map that records it (2 MiB).
            let (v0, m0) = both();
            let p = raw::alloc(3 * MIB, 16);
            let (v1, m1) = both();
            assert!(!p.is_null());
            assert_eq!(
                m1 - m0,
                v1 - v0,
                "first large object: mapped_bytes grew by {} bytes, the address space by {}",
                m1 - m0,
                v1 - v0
            );
            // Small objects across regions: 256 MiB of 1,000-byte objects, in regions
            // below a 4 GiB reservation (the kernel maps top-down: they land in 2 GiB
            // of the page map that no leaf covers yet, so a leaf is mapped too).
            // SAFETY: (test) a fresh reservation, never touched.
            let r = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4 << 30,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            assert_ne!(r, libc::MAP_FAILED);
            let (v0, m0) = both();
            for _ in 0..held.capacity() {
                let o = raw::alloc(1000, 16);
                assert!(!o.is_null());
                held.push(o as usize);
            }
            let (v1, m1) = both();
            let below = held.iter().filter(|&&o| o < r as usize).count();
            println!("{below} of {} objects below the reservation", held.len());
            assert_eq!(
                m1 - m0,
                v1 - v0,
                "small objects: mapped_bytes grew by {} bytes, the address space by {}",
                m1 - m0,
                v1 - v0
            );
            for &o in &held {
                // SAFETY: (test) live objects of `raw`, freed once.
                unsafe { raw::free(o as *mut u8, raw::lookup(o as *const u8)) };
            }
            // SAFETY: (test) as above.
            unsafe { raw::free(p, raw::lookup(p)) };
        },
    );
}
