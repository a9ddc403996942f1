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
        assert_eq!(st.caches_by_mm_cid, Some(s.mm_cid));
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
    assert!(n > 10_000, "only {n} objects");
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
    // Huge: the address space cannot hold it; null, not a crash.
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
        eprintln!("notice: no rseq or no membarrier rseq fences here; drain test skipped");
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
