//! The slab ops (`load_cbne_slab_pop`, `load_cbne_slab_push`,
//! `load_cbne_load_cbne_memcpy_store`): single-threaded semantics in both index
//! modes and both builds, then per-CPU slabs under 2 x nproc threads while a thief
//! stops slots (guard, fence) and takes their items: every token is conserved. A
//! control shows the check can fail: a thief that sets the guard but skips the
//! fence, with a delay injected before the commit, loses or duplicates tokens.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use restartable::arch::{
    self, slab_capacity, slab_count, slab_header, ByCpu, ByMmCid, Hooks, Index, NoHooks, OpResult,
    Relaxed, TestHooks,
};
use restartable::hooks;
use restartable::ThreadArea;

/// Hook settings are process-global: tests that change them run one at a time.
static HOOK_LOCK: Mutex<()> = Mutex::new(());

fn area() -> ThreadArea {
    ThreadArea::current().expect("rseq must be available in the default environment")
}

/// Runs `f(area, index)` until it does not abort.
fn retry<I: Index, T>(mut f: impl FnMut(ThreadArea, u32) -> (OpResult, T)) -> (OpResult, T) {
    loop {
        let a = area();
        let r = f(a, I::current(a));
        if !matches!(r.0, OpResult::Aborted { .. }) {
            return r;
        }
    }
}

fn single_thread<I: Index, H: Hooks>() {
    let mut guard: isize = 0;
    let g = &mut guard as *mut isize;
    let mut slab = [0isize; 5];
    slab[0] = slab_header(0, 3);
    let v = slab.as_mut_ptr();
    let pop = || {
        retry::<I, isize>(|a, c| {
            // SAFETY: `guard` and `slab` are private to this thread; the slab's items
            // 1..=3 exist.
            unsafe { arch::load_cbne_slab_pop::<I, H>(a, c, g, v) }
        })
    };
    let push = |x: isize| {
        retry::<I, ()>(|a, c| {
            // SAFETY: as above.
            let r = unsafe { arch::load_cbne_slab_push::<I, H>(a, c, g, v, x) };
            (r, ())
        })
        .0
    };
    assert_eq!(pop().0, OpResult::CompareFailed, "empty");
    for x in [10, 20, 30] {
        assert_eq!(push(x), OpResult::Committed);
    }
    assert_eq!(push(40), OpResult::CompareFailed, "full");
    assert_eq!(slab, [slab_header(3, 3), 10, 20, 30, 0]);
    assert_eq!(pop(), (OpResult::Committed, 30));
    // SAFETY: as above.
    unsafe { g.write(1) };
    assert_eq!(pop().0, OpResult::CompareFailed, "guarded pop");
    assert_eq!(push(50), OpResult::CompareFailed, "guarded push");
    assert_eq!(slab[0], slab_header(2, 3));
    // SAFETY: as above.
    unsafe { g.write(0) };
    assert_eq!(pop(), (OpResult::Committed, 20));
    assert_eq!(pop(), (OpResult::Committed, 10));
    assert_eq!(pop().0, OpResult::CompareFailed);
    assert_eq!((slab_count(slab[0]), slab_capacity(slab[0])), (0, 3));

    // The guarded batch copy: a wrong guard or header fails, the right ones copy.
    let src = [7isize, 8];
    let h = slab[0];
    for (gexpect, expect, committed) in [(1, h, false), (0, h + 1, false), (0, h, true)] {
        let (r, ()) = retry::<I, ()>(|a, c| {
            // SAFETY: as above; items 1..=2 are past the count.
            let r = unsafe {
                arch::load_cbne_load_cbne_memcpy_store::<I, Relaxed, H>(
                    a,
                    c,
                    g,
                    gexpect,
                    v,
                    expect,
                    v.add(1).cast(),
                    src.as_ptr().cast(),
                    16,
                    h + 2,
                )
            };
            (r, ())
        });
        assert_eq!(r == OpResult::Committed, committed, "{gexpect} {expect}");
    }
    assert_eq!(&slab[..3], &[slab_header(2, 3), 7, 8]);
}

#[test]
fn slab_ops_single_thread() {
    let _one = HOOK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    single_thread::<ByCpu, NoHooks>();
    single_thread::<ByCpu, TestHooks>();
    if restartable::registration::mm_cid_available() {
        single_thread::<ByMmCid, NoHooks>();
        single_thread::<ByMmCid, TestHooks>();
    }
}

const CAP: usize = 64;

/// One CPU's slab: a guard, then the header and `CAP` items (a cache line apart).
#[repr(C, align(128))]
struct Slot {
    guard: AtomicIsize,
    _pad: [isize; 15],
    slab: [AtomicIsize; CAP + 1],
}

fn slots(n: usize) -> Arc<Vec<Slot>> {
    Arc::new(
        (0..n)
            .map(|_| Slot {
                guard: AtomicIsize::new(0),
                _pad: [0; 15],
                slab: std::array::from_fn(|i| {
                    AtomicIsize::new(if i == 0 {
                        slab_header(0, CAP as u32)
                    } else {
                        0
                    })
                }),
            })
            .collect(),
    )
}

/// Threads move tokens between their hands and their CPU's slab; a thief stops
/// slots and takes their tokens (fenced unless `skip_fence`). Returns whether every
/// token was seen exactly once at the end.
fn conserve(threads: usize, tokens_each: usize, dur: Duration, skip_fence: bool) -> bool {
    let cpus = restartable::possible_cpus();
    let s = slots(cpus);
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (s, stop) = (s.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut hand: Vec<isize> = (0..tokens_each)
                    .map(|i| (t * tokens_each + i + 1) as isize)
                    .collect();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let a = area();
                    let cpu = ByCpu::current(a);
                    let slot = &s[cpu as usize];
                    let g = slot.guard.as_ptr() as *const isize;
                    let v = slot.slab[0].as_ptr();
                    if i.is_multiple_of(2) {
                        if let Some(&x) = hand.last() {
                            // SAFETY: the slot is this CPU's; items 1..=CAP exist.
                            let r = unsafe {
                                arch::load_cbne_slab_push::<ByCpu, TestHooks>(a, cpu, g, v, x)
                            };
                            if r == OpResult::Committed {
                                hand.pop();
                            }
                        }
                    } else {
                        // SAFETY: as above.
                        let (r, x) =
                            unsafe { arch::load_cbne_slab_pop::<ByCpu, TestHooks>(a, cpu, g, v) };
                        if r == OpResult::Committed {
                            hand.push(x);
                        }
                    }
                }
                hand
            })
        })
        .collect();
    let mut taken = Vec::new();
    let start = Instant::now();
    let mut k = 0;
    while start.elapsed() < dur {
        let slot = &s[k % cpus];
        k += 1;
        slot.guard.store(1, Ordering::SeqCst);
        if !skip_fence {
            restartable::fence_cpu((k - 1) as u32 % cpus as u32).expect("fence");
        }
        let h = slot.slab[0].load(Ordering::SeqCst);
        let n = slab_count(h) as usize;
        for i in 1..=n {
            taken.push(slot.slab[i].load(Ordering::Relaxed));
        }
        slot.slab[0].store(slab_header(0, CAP as u32), Ordering::SeqCst);
        slot.guard.store(0, Ordering::SeqCst);
        std::thread::sleep(Duration::from_micros(200));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        taken.extend(w.join().unwrap());
    }
    for slot in s.iter() {
        let n = slab_count(slot.slab[0].load(Ordering::SeqCst)) as usize;
        taken.extend((1..=n).map(|i| slot.slab[i].load(Ordering::Relaxed)));
    }
    taken.sort_unstable();
    let expected: Vec<isize> = (1..=(threads * tokens_each) as isize).collect();
    if taken != expected {
        eprintln!(
            "{} tokens at the end instead of {}",
            taken.len(),
            expected.len()
        );
    }
    taken == expected
}

#[test]
fn stopped_slabs_conserve_tokens_under_threads_and_a_thief() {
    if !restartable::fences_supported() {
        eprintln!("notice: no membarrier rseq fences; skipped");
        return;
    }
    let _one = HOOK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // A delay between the guard check and the commit widens the window a thief
    // must close with its fence.
    hooks::set_loops(4, 200);
    let threads = 2 * restartable::possible_cpus().min(8);
    let ok = conserve(threads, 100, Duration::from_secs(2), false);
    hooks::set_loops(4, 0);
    assert!(ok, "tokens lost or duplicated with a fenced thief");
}

/// The control: without the fence, a sequence that read the guard as 0 before the
/// thief set it commits after the thief took the items: tokens are duplicated or
/// lost. Forced with a long delay before the commit; retried up to 60 s.
#[test]
fn a_thief_without_the_fence_is_caught() {
    if restartable::possible_cpus() < 1 {
        return;
    }
    let _one = HOOK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    hooks::set_loops(4, 20_000);
    let start = Instant::now();
    let mut caught = false;
    while !caught && start.elapsed() < Duration::from_secs(60) {
        caught = !conserve(
            2 * restartable::possible_cpus().min(8),
            100,
            Duration::from_millis(500),
            true,
        );
    }
    hooks::set_loops(4, 0);
    assert!(
        caught,
        "60 s of an unfenced thief never lost or duplicated a token"
    );
}
