//! The op engine: every op, single-threaded (commits, compare failures, values), then
//! under 6 x nproc threads on per-CPU slots in both index modes, with and without the
//! test hooks, and under a signal storm.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use restartable::arch::{self, ByCpu, ByMmCid, Index, OpResult, Relaxed, Release};
use restartable::hooks::{self, Hooks, NoHooks, StatsHooks, TestHooks};
use restartable::ThreadArea;

/// Hook settings are process-global: tests that change them run one at a time.
static HOOK_LOCK: Mutex<()> = Mutex::new(());

fn area() -> ThreadArea {
    ThreadArea::current().expect("rseq must be available in the default environment")
}

/// Runs `f(area, cpu)` until it does not abort; returns the result and the attempts.
fn retry<I: Index>(mut f: impl FnMut(ThreadArea, u32) -> OpResult) -> (OpResult, u64) {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let a = area();
        let cpu = I::current(a);
        match f(a, cpu) {
            OpResult::Aborted { cpu: c } => assert_eq!(c, cpu),
            r => return (r, attempts),
        }
    }
}

fn single_thread_ops<I: Index, H: Hooks>() {
    // load_cbne_store
    let mut v: isize = 5;
    let p = &mut v as *mut isize;
    // SAFETY: `v` is private to this thread.
    let (r, _) = retry::<I>(|a, c| unsafe { arch::load_cbne_store::<I, H>(a, c, p, 5, 7) });
    assert_eq!(r, OpResult::Committed);
    assert_eq!(v, 7);
    // SAFETY: as above.
    let (r, _) = retry::<I>(|a, c| unsafe { arch::load_cbne_store::<I, H>(a, c, p, 5, 9) });
    assert_eq!(r, OpResult::CompareFailed);
    assert_eq!(v, 7);

    // load_add_store
    let mut n: isize = 40;
    let p = &mut n as *mut isize;
    // SAFETY: as above.
    let (r, _) = retry::<I>(|a, c| unsafe { arch::load_add_store::<I, H>(a, c, p, 2) });
    assert_eq!(r, OpResult::Committed);
    assert_eq!(n, 42);
    // SAFETY: as above.
    let _ = retry::<I>(|a, c| unsafe { arch::load_add_store::<I, H>(a, c, p, -50) });
    assert_eq!(n, -8);

    // load_cbeq_store_add_load_store: pop from a two-node list.
    #[repr(C)]
    struct Node {
        data: isize,
        next: isize,
    }
    let mut second = Node { data: 2, next: 0 };
    let mut first = Node { data: 1, next: &mut second as *mut Node as isize };
    let mut head: isize = &mut first as *mut Node as isize;
    let hp = &mut head as *mut isize;
    let voff = core::mem::offset_of!(Node, next) as isize;
    let mut popped: isize = 0;
    let lp = &mut popped as *mut isize;
    for expected in [&mut first as *mut Node as isize, &mut second as *mut Node as isize] {
        // SAFETY: the list nodes outlive the calls; `popped` is private.
        let (r, _) = retry::<I>(|a, c| unsafe {
            arch::load_cbeq_store_add_load_store::<I, H>(a, c, hp, 0, voff, lp)
        });
        assert_eq!(r, OpResult::Committed);
        assert_eq!(popped, expected);
    }
    assert_eq!(head, 0);
    // SAFETY: as above; the list is empty now.
    let (r, _) = retry::<I>(|a, c| unsafe {
        arch::load_cbeq_store_add_load_store::<I, H>(a, c, hp, 0, voff, lp)
    });
    assert_eq!(r, OpResult::CompareFailed);
    assert_eq!(first.data + second.data, 3);

    // load_add_load_load_add_store: **(*ptr + off) += inc.
    let mut target: isize = 10;
    let mut entries: [isize; 4] = [0; 4];
    entries[2] = &mut target as *mut isize as isize;
    let mut list_ptr: isize = entries.as_mut_ptr() as isize;
    let pp = &mut list_ptr as *mut isize;
    // SAFETY: every pointer followed is valid and private to this thread.
    let (r, _) = retry::<I>(|a, c| unsafe {
        arch::load_add_load_load_add_store::<I, H>(a, c, pp, 2 * 8, 5)
    });
    assert_eq!(r, OpResult::Committed);
    assert_eq!(target, 15);

    // load_cbne_store_store, both orderings.
    let mut v: isize = 1;
    let mut v2: isize = 0;
    let (p, p2) = (&mut v as *mut isize, &mut v2 as *mut isize);
    // SAFETY: private data.
    let (r, _) = retry::<I>(|a, c| unsafe {
        arch::load_cbne_store_store::<I, Relaxed, H>(a, c, p, 1, p2, 22, 2)
    });
    assert_eq!((r, v, v2), (OpResult::Committed, 2, 22));
    // SAFETY: private data.
    let (r, _) = retry::<I>(|a, c| unsafe {
        arch::load_cbne_store_store::<I, Release, H>(a, c, p, 2, p2, 33, 3)
    });
    assert_eq!((r, v, v2), (OpResult::Committed, 3, 33));
    // SAFETY: private data.
    let (r, _) = retry::<I>(|a, c| unsafe {
        arch::load_cbne_store_store::<I, Release, H>(a, c, p, 2, p2, 44, 4)
    });
    assert_eq!((r, v, v2), (OpResult::CompareFailed, 3, 33));

    // load_cbne_load_cbne_store
    let mut v: isize = 1;
    let v2: isize = 8;
    let p = &mut v as *mut isize;
    // SAFETY: private data.
    let (r, _) = retry::<I>(|a, c| unsafe {
        arch::load_cbne_load_cbne_store::<I, H>(a, c, p, 1, &v2, 9, 5)
    });
    assert_eq!((r, v), (OpResult::CompareFailed, 1));
    // SAFETY: private data.
    let (r, _) = retry::<I>(|a, c| unsafe {
        arch::load_cbne_load_cbne_store::<I, H>(a, c, p, 0, &v2, 8, 5)
    });
    assert_eq!((r, v), (OpResult::CompareFailed, 1));
    // SAFETY: private data.
    let (r, _) = retry::<I>(|a, c| unsafe {
        arch::load_cbne_load_cbne_store::<I, H>(a, c, p, 1, &v2, 8, 5)
    });
    assert_eq!((r, v), (OpResult::Committed, 5));

    // load_cbne_memcpy_store, both orderings.
    let src: Vec<u8> = (0..200u8).collect();
    let mut dst = vec![0u8; 200];
    let mut v: isize = 0;
    let p = &mut v as *mut isize;
    // SAFETY: private buffers of the right length.
    let (r, _) = retry::<I>(|a, c| unsafe {
        arch::load_cbne_memcpy_store::<I, Relaxed, H>(
            a, c, p, 0, dst.as_mut_ptr(), src.as_ptr(), 200, 1,
        )
    });
    assert_eq!((r, v), (OpResult::Committed, 1));
    assert_eq!(dst, src);
    let mut dst2 = vec![0u8; 200];
    // SAFETY: private buffers of the right length.
    let (r, _) = retry::<I>(|a, c| unsafe {
        arch::load_cbne_memcpy_store::<I, Release, H>(
            a, c, p, 0, dst2.as_mut_ptr(), src.as_ptr(), 200, 2,
        )
    });
    assert_eq!((r, v), (OpResult::CompareFailed, 1));
    assert!(dst2.iter().all(|&b| b == 0), "no copy on compare failure");
}

#[test]
fn each_op_single_thread_by_cpu() {
    single_thread_ops::<ByCpu, NoHooks>();
    single_thread_ops::<ByCpu, StatsHooks>();
    let _g = HOOK_LOCK.lock().unwrap();
    single_thread_ops::<ByCpu, TestHooks>();
}

#[test]
fn each_op_single_thread_by_mm_cid() {
    if !restartable::status().mm_cid {
        eprintln!("skipped: mm_cid unavailable");
        return;
    }
    single_thread_ops::<ByMmCid, NoHooks>();
    let _g = HOOK_LOCK.lock().unwrap();
    single_thread_ops::<ByMmCid, TestHooks>();
}

#[test]
fn stats_count_commits_and_compare_failures() {
    std::thread::spawn(|| {
        hooks::reset_thread_stats();
        let mut v: isize = 0;
        let p = &mut v as *mut isize;
        for i in 0..100 {
            // SAFETY: private data.
            let _ = retry::<ByCpu>(|a, c| unsafe {
                arch::load_cbne_store::<ByCpu, StatsHooks>(a, c, p, i, i + 1)
            });
        }
        // SAFETY: private data.
        let _ = retry::<ByCpu>(|a, c| unsafe {
            arch::load_cbne_store::<ByCpu, StatsHooks>(a, c, p, -1, 0)
        });
        let s = hooks::thread_stats();
        assert_eq!(s.commits, 100);
        assert_eq!(s.compare_failures, 1);
        assert_eq!(v, 100);
    })
    .join()
    .unwrap();
}
