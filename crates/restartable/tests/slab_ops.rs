//! The slab ops (`load_cbne_slab_pop`, `load_cbne_slab_push`,
//! `load_cbne_slab_memcpy_store`): single-threaded semantics in both index modes and
//! both builds, a stopped header failing every op at every count while leaving the
//! slab as it was, then per-CPU slabs under 2 x nproc threads while a thief stops
//! slots (`stop_slabs`: stop flag in the header, fence, re-check) and takes their
//! items: every token is conserved. Controls show the check can fail: a thief that
//! sets the stop flag but skips the fence, with a delay injected before the commit,
//! and one that fences but does not re-check the flag (which a commit that began
//! before the stop clears), lose or duplicate tokens. A batch in is bounded by the
//! capacity inside its sequence, a batch out is not; `stop_slabs` re-stops after a
//! cleared flag and gives up after its fences.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use restartable::arch::{
    self, slab_count, slab_header, slab_stopped, ByCpu, ByMmCid, Hooks, Index, NoHooks, OpResult,
    Relaxed, SlabHeader, TestHooks, SLAB_HEADER_WORDS, SLAB_STOPPED,
};
use restartable::hooks;
use restartable::ThreadArea;

/// Hook settings are process-global: tests that change them run one at a time.
static HOOK_LOCK: Mutex<()> = Mutex::new(());

fn area() -> ThreadArea {
    ThreadArea::current().expect("rseq must be available in the default environment")
}

/// Runs `$f::<I, Hk>()` by CPU and, where the kernel has it, by mm_cid, each in the
/// plain and the hooked build, holding the hook lock.
macro_rules! in_every_mode {
    ($f:ident) => {{
        let _one = HOOK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        $f::<ByCpu, NoHooks>();
        $f::<ByCpu, TestHooks>();
        if restartable::registration::mm_cid_available() {
            $f::<ByMmCid, NoHooks>();
            $f::<ByMmCid, TestHooks>();
        }
    }};
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

/// A slab of capacity 3 in a plain array: the header's two words, then the items.
const H: usize = SLAB_HEADER_WORDS;
type Slab = [isize; H + 3];

fn pop<I: Index, Hk: Hooks>(v: *mut isize) -> (OpResult, isize) {
    retry::<I, isize>(|a, c| {
        // SAFETY: the slab is private to this thread (the caller's array); its items
        // up to the capacity exist.
        unsafe { arch::load_cbne_slab_pop::<I, Hk>(a, c, v) }
    })
}

fn push<I: Index, Hk: Hooks>(v: *mut isize, x: isize) -> OpResult {
    retry::<I, ()>(|a, c| {
        // SAFETY: as in `pop`.
        let r = unsafe { arch::load_cbne_slab_push::<I, Hk>(a, c, v, x) };
        (r, ())
    })
    .0
}

/// The batch copy of `src` to the items from `at`, expecting the count `expect`.
fn copy_in<I: Index, Hk: Hooks>(v: *mut isize, expect: u32, at: usize, src: &[isize]) -> OpResult {
    retry::<I, ()>(|a, c| {
        // SAFETY: as in `pop`; the items written are the slab's (the callers' `at`
        // and `src` stay below the capacity).
        let r = unsafe {
            arch::load_cbne_slab_memcpy_store::<I, Relaxed, Hk>(
                a,
                c,
                v,
                expect,
                v.add(H + at).cast(),
                src.as_ptr().cast(),
                src.len() * 8,
                expect + src.len() as u32,
            )
        };
        (r, ())
    })
    .0
}

/// The batch copy of the top `n` items out, expecting the count `expect`.
fn copy_out<I: Index, Hk: Hooks>(v: *mut isize, expect: u32, n: usize) -> (OpResult, Vec<isize>) {
    let mut out = vec![0isize; n];
    let r = retry::<I, ()>(|a, c| {
        // SAFETY: as in `pop`; the items read are published items of the slab
        // (`n <= expect`, callers).
        let r = unsafe {
            arch::load_cbne_slab_memcpy_store::<I, Relaxed, Hk>(
                a,
                c,
                v,
                expect,
                out.as_mut_ptr().cast(),
                v.add(H + expect as usize - n).cast(),
                n * 8,
                expect - n as u32,
            )
        };
        (r, ())
    })
    .0;
    (r, out)
}

/// A batch in is checked against the capacity inside its sequence (the caller's
/// reading of it may be stale: a resize lowers it and keeps the count), a batch out
/// is not (it may empty a slab left above its capacity).
fn capacity_checked_in_not_out<I: Index, Hk: Hooks>() {
    // Room for 5 items; capacity 3 in the header, 2 items.
    let mut slab = [0isize; H + 5];
    slab[..H].copy_from_slice(&slab_header(2, 3));
    slab[H..H + 2].copy_from_slice(&[1, 2]);
    let v = slab.as_mut_ptr();
    assert_eq!(
        copy_in::<I, Hk>(v, 2, 2, &[3, 4]),
        OpResult::CompareFailed,
        "a batch in past the capacity"
    );
    assert_eq!(slab, [2, 3, 1, 2, 0, 0, 0], "nothing copied or committed");
    assert_eq!(copy_in::<I, Hk>(v, 2, 2, &[3]), OpResult::Committed);
    assert_eq!(slab[..H], slab_header(3, 3));
    // A resize (a stopped writer) lowered the capacity to 1 under the count of 3.
    slab[1] = 1;
    assert_eq!(
        copy_out::<I, Hk>(v, 3, 2),
        (OpResult::Committed, vec![2, 3])
    );
    assert_eq!(slab[..H], slab_header(1, 1));
    assert_eq!(
        copy_in::<I, Hk>(v, 1, 1, &[9]),
        OpResult::CompareFailed,
        "at capacity"
    );
    assert_eq!(
        push::<I, Hk>(v, 9),
        OpResult::CompareFailed,
        "the push agrees"
    );
    assert_eq!(slab[..H], slab_header(1, 1));
}

#[test]
fn slab_batch_in_is_bounded_by_the_capacity() {
    in_every_mode!(capacity_checked_in_not_out);
}

/// The header's stop half, set or cleared as a stopping thread does.
fn set_stopped(v: *mut isize, stopped: bool) {
    // SAFETY: the caller's slab header, accessed otherwise only by the ops.
    let h = unsafe { SlabHeader::at(v) };
    if stopped {
        h.stop();
    } else {
        h.restart();
    }
}

fn single_thread<I: Index, Hk: Hooks>() {
    let mut slab: Slab = [0; H + 3];
    slab[..H].copy_from_slice(&slab_header(0, 3));
    let v = slab.as_mut_ptr();
    assert_eq!(pop::<I, Hk>(v).0, OpResult::CompareFailed, "empty");
    for x in [10, 20, 30] {
        assert_eq!(push::<I, Hk>(v, x), OpResult::Committed);
    }
    assert_eq!(push::<I, Hk>(v, 40), OpResult::CompareFailed, "full");
    assert_eq!(slab[..H], slab_header(3, 3));
    assert_eq!(slab[H..], [10, 20, 30]);
    assert_eq!(pop::<I, Hk>(v), (OpResult::Committed, 30));
    assert_eq!(slab[..H], slab_header(2, 3));
    assert_eq!(pop::<I, Hk>(v), (OpResult::Committed, 20));
    assert_eq!(push::<I, Hk>(v, 21), OpResult::Committed);
    assert_eq!(pop::<I, Hk>(v), (OpResult::Committed, 21));
    assert_eq!(pop::<I, Hk>(v), (OpResult::Committed, 10));
    assert_eq!(pop::<I, Hk>(v).0, OpResult::CompareFailed);
    assert_eq!(slab[..H], slab_header(0, 3));

    // The batch copy: a wrong count fails and copies nothing, the right one copies
    // and commits the new count.
    assert_eq!(copy_in::<I, Hk>(v, 1, 0, &[7, 8]), OpResult::CompareFailed);
    assert_eq!(slab[..H], slab_header(0, 3));
    assert_eq!(copy_in::<I, Hk>(v, 0, 0, &[7, 8]), OpResult::Committed);
    assert_eq!(slab, [2, 3, 7, 8, 30]);
    assert_eq!(pop::<I, Hk>(v), (OpResult::Committed, 8));
}

#[test]
fn slab_ops_single_thread() {
    in_every_mode!(single_thread);
}

/// A stopped header at every count from empty to full: pop, push and the batch copy
/// (with the right count) fail with `CompareFailed`, and the header and items are as
/// they were; reopened, the same ops commit.
fn stopped<I: Index, Hk: Hooks>() {
    for count in 0..=3u32 {
        let mut slab: Slab = [0; H + 3];
        slab[..H].copy_from_slice(&slab_header(0, 3));
        let v = slab.as_mut_ptr();
        for x in 0..count as isize {
            assert_eq!(push::<I, Hk>(v, 100 + x), OpResult::Committed);
        }
        set_stopped(v, true);
        let before = slab;
        assert!(slab_stopped(before[0]), "{count}");
        assert_eq!(slab_count(before[0]), count);
        assert_eq!(before[0] as u64 >> 32, SLAB_STOPPED as u64);
        assert_eq!(pop::<I, Hk>(v).0, OpResult::CompareFailed, "pop at {count}");
        assert_eq!(slab, before, "pop at {count}");
        assert_eq!(
            push::<I, Hk>(v, 55),
            OpResult::CompareFailed,
            "push at {count}"
        );
        assert_eq!(slab, before, "push at {count}");
        if count < 3 {
            assert_eq!(
                copy_in::<I, Hk>(v, count, count as usize, &[66]),
                OpResult::CompareFailed,
                "copy at {count}"
            );
            assert_eq!(slab, before, "copy at {count}");
        }
        set_stopped(v, false);
        assert_eq!(slab[..H], slab_header(count, 3));
        if count > 0 {
            assert_eq!(
                pop::<I, Hk>(v),
                (OpResult::Committed, 100 + count as isize - 1)
            );
        } else {
            assert_eq!(push::<I, Hk>(v, 55), OpResult::Committed);
        }
    }
}

#[test]
fn a_stopped_header_fails_every_op_and_changes_nothing() {
    in_every_mode!(stopped);
}

const CAP: usize = 64;

/// One CPU's slab: its header and `CAP` items, a cache line apart from the next.
#[repr(C, align(128))]
struct Slot {
    hdr: SlabHeader,
    items: [AtomicIsize; CAP],
}

fn slots(n: usize) -> Arc<Vec<Slot>> {
    Arc::new(
        (0..n)
            .map(|_| Slot {
                hdr: SlabHeader::new(0, CAP as u32),
                items: std::array::from_fn(|_| AtomicIsize::new(0)),
            })
            .collect(),
    )
}

/// How the thief stops a slot before taking its tokens.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Thief {
    /// `stop_slabs`: stop flag, fence, re-checked (and again while a commit cleared
    /// it), with a pause between the flag and each fence in which commits that began
    /// before the stop clear it.
    Stops,
    /// The flag alone, no fence.
    NoFence,
    /// The flag, the same pause, one fence, no re-check; a pause while taking.
    NoRecheck,
}

/// The pause between a stop flag and its fence (see [`Thief`]).
const PAUSE: Duration = Duration::from_micros(20);

/// What a `conserve` run saw.
struct Seen {
    /// Every token exactly once at the end.
    conserved: bool,
    /// Stops that took more than one fence (a commit cleared the flag).
    restops: usize,
}

/// Threads move tokens between their hands and their CPU's slab; a thief stops
/// slots and takes their tokens (see [`Thief`]).
fn conserve(threads: usize, tokens_each: usize, dur: Duration, thief: Thief) -> Seen {
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
                    let v = slot.hdr.as_ptr();
                    if i.is_multiple_of(2) {
                        if let Some(&x) = hand.last() {
                            // SAFETY: the slot is this CPU's; its CAP items follow the header.
                            let r = unsafe {
                                arch::load_cbne_slab_push::<ByCpu, TestHooks>(a, cpu, v, x)
                            };
                            if r == OpResult::Committed {
                                hand.pop();
                            }
                        }
                    } else {
                        // SAFETY: as above.
                        let (r, x) =
                            unsafe { arch::load_cbne_slab_pop::<ByCpu, TestHooks>(a, cpu, v) };
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
    let mut restops = 0;
    while start.elapsed() < dur {
        let cpu = k % cpus;
        let slot = &s[cpu];
        k += 1;
        let fence = || {
            std::thread::sleep(PAUSE);
            restartable::fence_cpu(cpu as u32)
        };
        match thief {
            Thief::Stops => {
                let mut fences = 0;
                let stopped = arch::stop_slabs(
                    || std::iter::once(&slot.hdr),
                    || {
                        fences += 1;
                        fence()
                    },
                    64,
                )
                .expect("fence");
                if fences > 1 {
                    restops += 1;
                }
                if !stopped {
                    slot.hdr.restart();
                    continue;
                }
            }
            Thief::NoFence => {
                slot.hdr.stop();
                std::sync::atomic::fence(Ordering::SeqCst);
            }
            Thief::NoRecheck => {
                slot.hdr.stop();
                std::sync::atomic::fence(Ordering::SeqCst);
                fence().expect("fence");
            }
        }
        let n = slot.hdr.count() as usize;
        for i in 0..n {
            taken.push(slot.items[i].load(Ordering::Relaxed));
        }
        if thief == Thief::NoRecheck {
            std::thread::sleep(PAUSE);
        }
        slot.hdr.set_count_stopped(0);
        slot.hdr.restart();
        std::thread::sleep(Duration::from_micros(200));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        taken.extend(w.join().unwrap());
    }
    for slot in s.iter() {
        let n = slot.hdr.count() as usize;
        taken.extend((0..n).map(|i| slot.items[i].load(Ordering::Relaxed)));
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
    Seen {
        conserved: taken == expected,
        restops,
    }
}

#[test]
fn stopped_slabs_conserve_tokens_under_threads_and_a_thief() {
    if !restartable::fences_supported() {
        eprintln!("notice: no membarrier rseq fences; skipped");
        return;
    }
    let _one = HOOK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // A delay between the header check and the commit widens the window a thief
    // must close with its fence (and, with the pause before each fence, the one in
    // which a commit clears the stop flag: runs go on until `stop_slabs` was seen to
    // stop a slot again at least once, up to 60 s).
    hooks::set_loops(4, 200);
    let threads = 2 * restartable::possible_cpus().min(8);
    let start = Instant::now();
    let mut restops = 0;
    let mut runs = 0;
    while runs == 0 || (restops == 0 && start.elapsed() < Duration::from_secs(60)) {
        let seen = conserve(threads, 100, Duration::from_secs(2), Thief::Stops);
        runs += 1;
        if !seen.conserved {
            hooks::set_loops(4, 0);
            panic!("tokens lost or duplicated with a fenced, re-checking thief");
        }
        restops += seen.restops;
    }
    hooks::set_loops(4, 0);
    eprintln!("{runs} run(s); {restops} stops fenced again after a commit cleared the flag");
    assert!(
        restops > 0,
        "60 s of stops never saw a commit clear a stop flag: the re-check went untested"
    );
}

/// The control: without the fence, a sequence that read the header open before the
/// thief set the flag commits after the thief took the items: tokens are duplicated
/// or lost. Forced with a long delay before the commit; retried up to 60 s.
#[test]
fn a_thief_without_the_fence_is_caught() {
    control(Thief::NoFence, 20_000);
}

/// The control of the re-check: a commit that began before the stop clears the flag
/// (in the pause before the fence), the fence does not set it again, and the
/// sequences that follow commit while the thief takes: tokens are duplicated or lost.
/// Retried up to 60 s.
#[test]
fn a_thief_without_the_recheck_is_caught() {
    if !restartable::fences_supported() {
        eprintln!("notice: no membarrier rseq fences; skipped");
        return;
    }
    control(Thief::NoRecheck, 200);
}

fn control(thief: Thief, loops: i32) {
    let _one = HOOK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    hooks::set_loops(4, loops);
    let start = Instant::now();
    let mut caught = false;
    while !caught && start.elapsed() < Duration::from_secs(60) {
        caught = !conserve(
            2 * restartable::possible_cpus().min(8),
            100,
            Duration::from_millis(500),
            thief,
        )
        .conserved;
    }
    hooks::set_loops(4, 0);
    assert!(
        caught,
        "60 s of a thief ({thief:?}) never lost or duplicated a token"
    );
}

/// `stop_slabs`'s outcomes without threads: a "commit" that clears a stop half before
/// every fence (as one whose sequence read the header before the stop does) makes it
/// give up after `tries` fences (`Ok(false)`, the caller's `Busy`); one such commit
/// costs one more fence; a failed fence is passed on.
#[test]
fn stop_slabs_rechecks_and_gives_up_after_its_fences() {
    let hs = [SlabHeader::new(1, 3), SlabHeader::new(0, 3)];
    let mut fences = 0;
    let r = arch::stop_slabs(
        || hs.iter(),
        || {
            fences += 1;
            // A commit of the count read before the stop: the whole first word.
            hs[1].restart();
            Ok::<(), ()>(())
        },
        4,
    );
    assert_eq!(r, Ok(false), "a stop half cleared before every fence");
    assert_eq!(fences, 4, "every try fenced");
    for h in &hs {
        h.restart();
    }

    let mut fences = 0;
    let r = arch::stop_slabs(
        || hs.iter(),
        || {
            fences += 1;
            if fences == 1 {
                hs[0].restart();
            }
            Ok::<(), ()>(())
        },
        4,
    );
    assert_eq!(r, Ok(true));
    assert_eq!(fences, 2, "stopped again and fenced again once");
    assert!(hs.iter().all(SlabHeader::is_stopped));
    assert_eq!(hs.iter().map(SlabHeader::count).collect::<Vec<_>>(), [1, 0]);
    for h in &hs {
        h.restart();
    }

    let r = arch::stop_slabs(|| hs.iter(), || Err("no fences"), 4);
    assert_eq!(r, Err("no fences"));
}
