//! `PerCpuAlloc` as the global allocator of this test binary: std-heavy workloads and
//! the pattern stress, with cross-thread frees.

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use restartable_alloc::PerCpuAlloc;

#[global_allocator]
static A: PerCpuAlloc = PerCpuAlloc::new();

#[test]
fn the_global_allocator_is_ours() {
    // Other tests allocate and free concurrently: only an absolute check is safe.
    let v = std::hint::black_box(vec![7u8; 10 << 20]);
    let during = restartable_alloc::stats();
    assert!(
        during.in_use_bytes >= 10 << 20 && during.large_bytes >= 10 << 20,
        "a live 10 MiB vector is not counted: {during:?}"
    );
    drop(v);
    let s = restartable::status();
    let small: Vec<Box<u64>> = (0..1000).map(Box::new).collect();
    let st = restartable_alloc::stats();
    if s.is_registered() {
        assert!(
            st.caches_by_mm_cid.is_some(),
            "rseq is registered but no caches: {s}"
        );
        // By mm_cid where the kernel has it, unless the environment asks for CPUs.
        let by_cpu = std::env::var("RESTARTABLE_ALLOC_INDEX").as_deref() == Ok("cpu");
        assert_eq!(st.caches_by_mm_cid, Some(s.mm_cid && !by_cpu));
        // The first attempt's path: unchecked under glibc's registration only.
        assert_eq!(
            restartable_alloc::front::fast_path(),
            common::expected_fast_path()
        );
    }
    drop(small);
}

#[test]
fn std_collections_and_strings() {
    let mut map: HashMap<String, Vec<u32>> = HashMap::new();
    for round in 0..20u32 {
        for i in 0..2000u32 {
            map.entry(format!("key-{}", i % 1500))
                .or_default()
                .push(i + round);
        }
        map.retain(|k, _| !k.ends_with('7'));
        let mut tree: BTreeMap<u32, String> = BTreeMap::new();
        for (k, v) in &map {
            tree.insert(v.len() as u32 ^ round, k.clone());
        }
        let joined: String = tree.values().take(100).map(|s| s.as_str()).collect();
        assert!(!joined.is_empty());
    }
    let total: usize = map.values().map(|v| v.len()).sum();
    assert!(total > 0);
    let mut s = String::new();
    for i in 0..100_000 {
        s.push_str(&i.to_string());
    }
    assert_eq!(s.len(), 488_890);
}

#[test]
fn threads_with_std_churn() {
    let handles: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut m: HashMap<u64, Box<[u8]>> = HashMap::new();
                for i in 0..50_000u64 {
                    let k = (i * 7919 + t) % 4096;
                    if i % 3 == 0 {
                        m.remove(&k);
                    } else {
                        m.insert(k, vec![k as u8; (k % 700) as usize + 1].into_boxed_slice());
                    }
                }
                for (k, v) in &m {
                    assert!(v.iter().all(|&b| b == *k as u8));
                }
                m.len()
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap() > 0);
    }
}

#[test]
fn pattern_stress_with_cross_thread_frees() {
    let threads = 6 * common::nproc();
    let n = common::stress(threads, Duration::from_secs(3), || {});
    assert!(n > 10_000, "only {n} operations");
}

#[test]
fn zero_size_huge_sizes_and_every_alignment() {
    let a = PerCpuAlloc::new();
    for shift in 0..=16 {
        let align = 1usize << shift;
        for size in [0, 1, 8, 24, 100, 4096, 10_000, 300 * 1024] {
            let l = Layout::from_size_align(size, align).unwrap();
            // SAFETY: (test) the allocator serves zero sizes too.
            let p = unsafe { a.alloc(l) };
            assert!(!p.is_null(), "{l:?}");
            assert_eq!(p as usize % align, 0, "{l:?} at {p:p}");
            // SAFETY: (test) a live object of `size` bytes.
            unsafe {
                p.write_bytes(0xAB, size);
                a.dealloc(p, l);
            }
            // SAFETY: (test) a valid layout.
            let z = unsafe { a.alloc_zeroed(l) };
            assert!(!z.is_null());
            // SAFETY: (test) a live object of `size` bytes.
            assert!(unsafe { std::slice::from_raw_parts(z, size) }
                .iter()
                .all(|&b| b == 0));
            // SAFETY: (test) allocated with `l`.
            unsafe { a.dealloc(z, l) };
        }
    }
    // Huge: the address space cannot hold it; null, not a crash. (On a 32-bit
    // target there is no such size: a layout's size is below 2 GiB, which a 32-bit
    // process's 4 GiB of address space may well have room for.)
    #[cfg(target_pointer_width = "64")]
    for size in [(1usize << 47) + 4096, isize::MAX as usize - (1 << 20)] {
        let l = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: (test) a valid layout.
        assert!(unsafe { a.alloc(l) }.is_null(), "{size}");
        let l = Layout::from_size_align(size, 1 << 16).unwrap();
        // SAFETY: (test) a valid layout.
        assert!(unsafe { a.alloc(l) }.is_null(), "{size}");
    }
}

#[test]
fn realloc_stays_in_place_within_a_class_and_keeps_contents() {
    let a = PerCpuAlloc::new();
    let l = Layout::from_size_align(100, 8).unwrap();
    // SAFETY: (test) valid layouts; objects used within their sizes.
    unsafe {
        let p = a.alloc(l);
        for i in 0..100 {
            p.add(i).write(i as u8);
        }
        // 100 and 112 are both in the 112-byte class.
        let q = a.realloc(p, l, 112);
        assert_eq!(p, q, "same class must stay in place");
        let r = a.realloc(q, Layout::from_size_align(112, 8).unwrap(), 5000);
        assert_ne!(r, q);
        for i in 0..100 {
            assert_eq!(r.add(i).read(), i as u8);
        }
        // Large to large keeps the contents through mremap.
        let big = Layout::from_size_align(5000, 8).unwrap();
        let s = a.realloc(r, big, 1 << 20);
        let s = a.realloc(s, Layout::from_size_align(1 << 20, 8).unwrap(), 8 << 20);
        for i in 0..100 {
            assert_eq!(s.add(i).read(), i as u8);
        }
        let t = a.realloc(s, Layout::from_size_align(8 << 20, 8).unwrap(), 10);
        for i in 0..10 {
            assert_eq!(t.add(i).read(), i as u8);
        }
        a.dealloc(t, Layout::from_size_align(10, 8).unwrap());
    }
}

#[test]
fn alloc_zeroed_of_large_objects_is_fresh_memory() {
    let a = PerCpuAlloc::new();
    let l = Layout::from_size_align(1 << 20, 8).unwrap();
    // SAFETY: (test) valid layout; the object is written within its size.
    unsafe {
        let p = a.alloc(l);
        p.write_bytes(0xFF, 1 << 20);
        a.dealloc(p, l);
        let z = a.alloc_zeroed(l);
        assert!(std::slice::from_raw_parts(z, 1 << 20)
            .iter()
            .all(|&b| b == 0));
        a.dealloc(z, l);
    }
}

#[test]
fn draining_caches_while_threads_allocate_loses_nothing() {
    if !restartable::fences_supported() || !restartable::status().is_registered() {
        common::child::shared::skip("no rseq or no membarrier rseq fences here: drain test");
        return;
    }
    let mut moved = 0usize;
    let mut drains = 0;
    let mut shrunk = 0usize;
    let n = common::stress(4 * common::nproc(), Duration::from_secs(3), || {
        // Stop, fence, take and reopen every slot while the workers run sequences on
        // them; the pattern checks catch an object lost or handed out twice. Every
        // other round resizes instead (shrinks the classes that did not miss).
        if drains % 2 == 0 {
            moved += restartable_alloc::front::drain_all().expect("drain");
        } else {
            let (slots, _) = restartable_alloc::front::mode().expect("caches");
            for slot in 0..slots {
                shrunk += restartable_alloc::front::resize_slot(slot).expect("resize");
            }
        }
        drains += 1;
    });
    assert!(n > 10_000);
    assert!(
        drains > 10 && moved > 0,
        "{drains} drains and resizes moved {moved} bytes, shrank {shrunk}"
    );
}

/// A thread whose glibc registration ended (unregistered here with the `rseq`
/// system call, as glibc does late in a thread's exit): its `mm_cid` then reads 0
/// and the inlined fast path, which by mm_cid takes the area without checking the
/// registration (`AreaOffset::current_unchecked`), enters the sequence, whose own
/// check aborts it; the retry finds the thread unregistered and the slow path
/// serves it. Objects allocated and freed there keep their contents, and the
/// thread's objects freed by another thread (and the other way round) are fine.
#[test]
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn a_thread_whose_glibc_registration_ended_allocates_through_the_slow_path() {
    if restartable::registration::process_owner() != Some(restartable::Owner::Libc) {
        common::child::shared::skip("glibc does not own rseq registration in this process");
        return;
    }
    // Warm up: the caches exist and this process's fast path is the libc one.
    let warm: Vec<Box<[u8; 40]>> = (0..1000).map(|i| Box::new([i as u8; 40])).collect();
    drop(warm);
    let from_main: Vec<Box<[u64; 5]>> = (0..2000).map(|i| Box::new([i; 5])).collect();
    let back = std::thread::spawn(move || {
        extern "C" {
            static __rseq_offset: isize;
            static __rseq_size: u32;
        }
        let tp: usize;
        // SAFETY: reads the thread pointer (the TCB's self pointer at %fs:0).
        unsafe {
            std::arch::asm!("mov %fs:0, {}", out(reg) tp, options(att_syntax, nostack, readonly))
        };
        // SAFETY: glibc's exported rseq offset and size, constant after start-up.
        let (off, size) = unsafe { (__rseq_offset, __rseq_size) };
        assert!(size >= 20, "glibc did not register rseq (size {size})");
        let area = tp.wrapping_add_signed(off);
        // glibc 2.35+ registers the area with its own length (32), reporting the
        // feature size (20): the kernel wants the length it was registered with.
        let unregistered = [32u32, size].iter().any(|&len| {
            // SAFETY: unregisters this thread's area with glibc's signature; glibc
            // ignores the failure of its own unregistration at exit.
            unsafe { libc::syscall(libc::SYS_rseq, area, len, 1, 0x5305_3053u32) == 0 }
        });
        assert!(
            unregistered,
            "rseq unregistration failed: {}",
            std::io::Error::last_os_error()
        );
        assert!(
            restartable::ThreadArea::current_if_registered().is_none(),
            "the thread still reads as registered"
        );
        // SAFETY: `cpu_id` of this thread's glibc area, mapped for its lifetime.
        let cpu_id = unsafe { ((area + 4) as *const u32).read_volatile() };
        assert!(
            cpu_id >= 0xffff_fffe,
            "cpu_id {cpu_id:#x} after unregistration"
        );
        for (i, b) in from_main.iter().enumerate() {
            assert_eq!(**b, [i as u64; 5]);
        }
        drop(from_main);
        let mut keep = Vec::new();
        for round in 0..20u32 {
            let v: Vec<Vec<u32>> = (0..500u32)
                .map(|i| vec![i ^ round; (i % 300) as usize + 1])
                .collect();
            for (i, x) in v.iter().enumerate() {
                assert!(x.iter().all(|&e| e == i as u32 ^ round));
            }
            keep.push(v.into_iter().step_by(7).collect::<Vec<_>>());
        }
        keep
    })
    .join()
    .unwrap();
    for (round, v) in back.iter().enumerate() {
        for (j, x) in v.iter().enumerate() {
            let i = (j * 7) as u32;
            assert!(x.iter().all(|&e| e == i ^ round as u32));
        }
    }
}

/// `front::class_count` and `front::class_capacity` take any numbers: a slot past the
/// caches' or a class that is not one (0, past `CLASSES`) answers 0 without reading
/// anything (their one range check, `front::slot_header`).
#[test]
fn class_lookups_answer_zero_out_of_range() {
    use restartable_alloc::front;
    use restartable_alloc::size_class::{class_of_size, CLASSES};
    let l = Layout::from_size_align(64, 8).unwrap();
    // SAFETY: (test) a valid layout; every object freed with its layout.
    unsafe {
        let v: Vec<*mut u8> = (0..64).map(|_| A.alloc(l)).collect();
        for p in v {
            A.dealloc(p, l);
        }
    }
    let Some((slots, _)) = front::mode() else {
        common::child::shared::skip("no per-CPU caches here: class lookups");
        return;
    };
    // (In range they answer the slot's header, checked in tests/env.rs: the other
    // tests here drain the caches at any time.)
    let c = class_of_size(64);
    // A slot whose address would be `2^63` past the caches': not a canonical address
    // on x86_64, so a read there faults (slots past the last are reserved address
    // space, which reads as 0 and would hide a missing check).
    let wild = 1usize
        .checked_shl(63 - front::STRIDE.trailing_zeros())
        .unwrap_or(usize::MAX);
    for (slot, class) in [
        (slots, c),
        (wild, c),
        (usize::MAX, c),
        (0, 0),
        (0, CLASSES + 1),
        (0, usize::MAX),
    ] {
        assert_eq!(
            front::class_count(slot, class),
            0,
            "slot {slot}, class {class}"
        );
        assert_eq!(
            front::class_capacity(slot, class),
            0,
            "slot {slot}, class {class}"
        );
    }
}
