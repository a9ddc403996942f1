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
//!
//! The in-sequence index ops (`load_index_slab_pop`, `load_index_slab_push`), on a
//! region with a slot per index, by both index reads (low byte, whole field): their
//! semantics, a stopped header, an unregistered area (aborts, nothing written), a
//! migration forced inside the sequence at each injection point (the commit lands in
//! the slot of the index the thread has at its commit, nothing lost or duplicated;
//! the control, the index read before the sequence, lands in the old CPU's slot and
//! is caught), and tokens conserved under threads and a fencing thief.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

#[path = "support/affinity.rs"]
mod affinity;
#[path = "support/child.rs"]
mod child;

use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use restartable::arch::{
    self, slab_count, slab_header, slab_stopped, ByCpu, ByMmCid, Hooks, Index, NoHooks, OpResult,
    Relaxed, SlabHeader, TestHooks, SLAB_HEADER_WORDS, SLAB_STOPPED,
};
use restartable::hooks;
use restartable::ThreadArea;

use affinity::pin;

/// This thread's allowed CPUs.
fn allowed() -> Vec<usize> {
    restartable::allowed_cpus().expect("sched_getaffinity")
}

/// Whether this thread may run on two CPUs; if not, says the test is skipped (a
/// failure under `RESTARTABLE_TEST_STRICT=1`): on one CPU a sequence in flight is
/// preempted (so aborted) whenever the thief runs, and no race can be shown.
fn two_cpus_or_skip() -> bool {
    let cpus = allowed();
    if cpus.len() < 2 {
        child::skip(format!(
            "needs two allowed CPUs, this process may run on {cpus:?} only"
        ));
        return false;
    }
    true
}

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
    // The in-sequence index ops' tests: in each mode, with the whole index and with
    // its low byte.
    (widths $f:ident) => {{
        let _one = HOOK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        $f::<ByCpu, NoHooks, false>();
        $f::<ByCpu, NoHooks, true>();
        $f::<ByCpu, TestHooks, false>();
        $f::<ByCpu, TestHooks, true>();
        if restartable::registration::mm_cid_available() {
            $f::<ByMmCid, NoHooks, false>();
            $f::<ByMmCid, NoHooks, true>();
            $f::<ByMmCid, TestHooks, false>();
            $f::<ByMmCid, TestHooks, true>();
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

const CAP: usize = 62;

/// One CPU's slab: its header and `CAP` items, a cache line apart from the next;
/// `1 << SLOT_SHIFT` bytes, so that the in-sequence index ops address slot `i` as
/// `base + (i << SLOT_SHIFT)`.
#[repr(C, align(128))]
struct Slot {
    hdr: SlabHeader,
    items: [AtomicIsize; CAP],
}
const SLOT_SHIFT: u32 = 9;
const _: () = assert!(std::mem::size_of::<Slot>() == 1 << SLOT_SHIFT);

/// Which ops the workers of [`conserve`] use.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Ops {
    /// `load_cbne_slab_pop`/`push`, the CPU read before the sequence.
    Prepared,
    /// `load_index_slab_pop`/`push`, the CPU read inside the sequence.
    InSequence,
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
fn conserve(threads: usize, tokens_each: usize, dur: Duration, thief: Thief, ops: Ops) -> Seen {
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
                let base = s.as_ptr() as *mut u8;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let a = area();
                    if ops == Ops::InSequence {
                        if i.is_multiple_of(2) {
                            if let Some(&x) = hand.last() {
                                // SAFETY: a slot of `1 << SLOT_SHIFT` bytes per possible
                                // CPU at `base`, the header at its start, written only
                                // by sequences for its CPU or a thief that stopped it.
                                let r = unsafe {
                                    arch::load_index_slab_push::<ByCpu, TestHooks, SLOT_SHIFT, false>(
                                        a, base, 0, x,
                                    )
                                };
                                if r == OpResult::Committed {
                                    hand.pop();
                                }
                            }
                        } else {
                            // SAFETY: as above.
                            let (r, x) = unsafe {
                                arch::load_index_slab_pop::<ByCpu, TestHooks, SLOT_SHIFT, false>(
                                    a, base, 0,
                                )
                            };
                            if r == OpResult::Committed {
                                hand.push(x);
                            }
                        }
                        continue;
                    }
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
        child::skip("no membarrier rseq fences");
        return;
    }
    // (Runs until a commit was seen to clear a stop flag: a commit on another CPU.)
    if !two_cpus_or_skip() {
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
        let seen = conserve(
            threads,
            100,
            Duration::from_secs(2),
            Thief::Stops,
            Ops::Prepared,
        );
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
        child::skip("no membarrier rseq fences");
        return;
    }
    control(Thief::NoRecheck, 200);
}

fn control(thief: Thief, loops: i32) {
    if !two_cpus_or_skip() {
        return;
    }
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
            Ops::Prepared,
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

// ------------------------------------------------------------------------------------
// The in-sequence index ops: `load_index_slab_pop` / `load_index_slab_push`.
// ------------------------------------------------------------------------------------

/// Bytes per slot of a [`Region`] (`1 << RSHIFT`) and the offset of the header in
/// each slot (what the ops' `base` adds to the region's address).
const RSHIFT: u32 = 8;
const RHDR: usize = 64;
/// Items per slab of a [`Region`].
const RCAP: usize = 3;

/// A region of slots, one per index the field can hold (at least 256, so that the
/// low-byte read of `cpu_id` -1 on an unregistered area would land in one), each
/// with a slab header at [`RHDR`] of capacity [`RCAP`].
struct Region {
    words: Vec<isize>,
    slots: usize,
}

impl Region {
    fn new() -> Region {
        let slots = restartable::possible_cpus().max(256);
        let mut r = Region {
            words: vec![0; (slots << RSHIFT) / 8],
            slots,
        };
        for i in 0..slots {
            r.words[Self::w(i)..Self::w(i) + H].copy_from_slice(&slab_header(0, RCAP as u32));
        }
        r
    }
    /// The word index of slot `i`'s header.
    fn w(i: usize) -> usize {
        ((i << RSHIFT) + RHDR) / 8
    }
    /// The ops' `base`: slot 0 (the header at [`RHDR`] in each slot is their `off`).
    fn base(&mut self) -> *mut u8 {
        self.words.as_mut_ptr().cast::<u8>()
    }
    fn hdr(&mut self, i: usize) -> *mut isize {
        let w = Self::w(i);
        // SAFETY: within the vector.
        unsafe { self.words.as_mut_ptr().add(w) }
    }
    /// Slot `i`'s header and items.
    fn slab(&self, i: usize) -> [isize; H + RCAP] {
        self.words[Self::w(i)..Self::w(i) + H + RCAP]
            .try_into()
            .unwrap()
    }
    /// The slots whose count is not 0.
    fn used(&self) -> Vec<usize> {
        (0..self.slots)
            .filter(|&i| slab_count(self.words[Self::w(i)]) != 0)
            .collect()
    }
    /// Every item of every slab (up to its count), sorted.
    fn items(&self) -> Vec<isize> {
        let mut v: Vec<isize> = (0..self.slots)
            .flat_map(|i| {
                let s = self.slab(i);
                s[H..H + slab_count(s[0]) as usize].to_vec()
            })
            .collect();
        v.sort_unstable();
        v
    }
}

/// One pop of the in-sequence op on `r`, retried until it does not abort.
fn ipop<I: Index, Hk: Hooks, const LB: bool>(r: &mut Region) -> (OpResult, isize) {
    let base = r.base();
    loop {
        // SAFETY: a slot per possible index (and per low byte) at `base`, the header
        // at the same offset in each, private to this test.
        let x = unsafe { arch::load_index_slab_pop::<I, Hk, RSHIFT, LB>(area(), base, RHDR) };
        if !matches!(x.0, OpResult::Aborted { .. }) {
            return x;
        }
    }
}

/// One push, retried until it does not abort.
fn ipush<I: Index, Hk: Hooks, const LB: bool>(r: &mut Region, x: isize) -> OpResult {
    let base = r.base();
    loop {
        // SAFETY: as in `ipop`; the items past the counts are read by nobody.
        let o = unsafe { arch::load_index_slab_push::<I, Hk, RSHIFT, LB>(area(), base, RHDR, x) };
        if !matches!(o, OpResult::Aborted { .. }) {
            return o;
        }
    }
}

/// Runs `f` pinned to this thread's current CPU, then restores the affinity.
fn pinned<T>(f: impl FnOnce() -> T) -> T {
    let all = allowed();
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() } as usize;
    pin(0, &[cpu]);
    let r = f();
    pin(0, &all);
    r
}

/// Single-threaded semantics, pinned (the index stays): empty pop fails, pushes up
/// to the capacity commit, a push on a full slab fails, pops come back last in
/// first out; everything lands in the slot of the thread's index, every other slot
/// is untouched.
fn index_single<I: Index, Hk: Hooks, const LB: bool>() {
    pinned(|| {
        let mut r = Region::new();
        let idx = I::current(area()) as usize;
        assert_eq!(
            ipop::<I, Hk, LB>(&mut r).0,
            OpResult::CompareFailed,
            "empty"
        );
        for x in [10, 20, 30] {
            assert_eq!(ipush::<I, Hk, LB>(&mut r, x), OpResult::Committed);
        }
        assert_eq!(
            ipush::<I, Hk, LB>(&mut r, 40),
            OpResult::CompareFailed,
            "full"
        );
        assert_eq!(
            I::current(area()) as usize,
            idx,
            "the index moved on a pinned thread"
        );
        assert_eq!(r.used(), [idx], "the slot of the thread's index alone");
        assert_eq!(r.slab(idx), [3, 3, 10, 20, 30]);
        assert_eq!(ipop::<I, Hk, LB>(&mut r), (OpResult::Committed, 30));
        assert_eq!(ipush::<I, Hk, LB>(&mut r, 31), OpResult::Committed);
        assert_eq!(ipop::<I, Hk, LB>(&mut r), (OpResult::Committed, 31));
        assert_eq!(ipop::<I, Hk, LB>(&mut r), (OpResult::Committed, 20));
        assert_eq!(ipop::<I, Hk, LB>(&mut r), (OpResult::Committed, 10));
        assert_eq!(ipop::<I, Hk, LB>(&mut r).0, OpResult::CompareFailed);
        assert_eq!(r.slab(idx)[..H], slab_header(0, 3));
        assert!(r.used().is_empty());
    });
}

#[test]
fn index_ops_single_thread() {
    in_every_mode!(widths index_single);
}

/// Every slot stopped, at every count: the pop and the push fail and change nothing
/// anywhere; reopened, they commit.
fn index_stopped<I: Index, Hk: Hooks, const LB: bool>() {
    for count in 0..=3u32 {
        pinned(|| {
            let mut r = Region::new();
            for x in 0..count as isize {
                assert_eq!(ipush::<I, Hk, LB>(&mut r, 100 + x), OpResult::Committed);
            }
            for i in 0..r.slots {
                set_stopped(r.hdr(i), true);
            }
            let before = r.words.clone();
            assert_eq!(
                ipop::<I, Hk, LB>(&mut r).0,
                OpResult::CompareFailed,
                "pop at {count}"
            );
            assert!(r.words == before, "pop at {count} changed the region");
            assert_eq!(
                ipush::<I, Hk, LB>(&mut r, 55),
                OpResult::CompareFailed,
                "push at {count}"
            );
            assert!(r.words == before, "push at {count} changed the region");
            for i in 0..r.slots {
                set_stopped(r.hdr(i), false);
            }
            if count > 0 {
                assert_eq!(
                    ipop::<I, Hk, LB>(&mut r),
                    (OpResult::Committed, 100 + count as isize - 1)
                );
            } else {
                assert_eq!(ipush::<I, Hk, LB>(&mut r, 55), OpResult::Committed);
            }
        });
    }
}

#[test]
fn index_ops_a_stopped_header_fails_and_changes_nothing() {
    in_every_mode!(widths index_stopped);
}

/// On a thread whose area the kernel no longer maintains (glibc's area unregistered
/// with the raw system call, or the library's disabled), the ops abort and change
/// nothing: the sequence's registration check. Without it, `mm_cid` (0) would commit
/// in slot 0, and `cpu_id` (-1) in slot 255 by its low byte.
fn index_unregistered<I: Index, Hk: Hooks, const LB: bool>() {
    std::thread::spawn(|| {
        let a = area();
        let as_ptr = a.as_ptr();
        if restartable::registration::process_owner() == Some(restartable::Owner::Libc) {
            // SAFETY: RTLD_DEFAULT is a valid pseudo-handle, the name NUL-terminated.
            let size = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr()) };
            assert!(!size.is_null(), "glibc registered: __rseq_size exported");
            // SAFETY: glibc's exported `__rseq_size`.
            let size = unsafe { (size as *const u32).read() };
            let done = [size.max(32), size.next_multiple_of(32), size]
                .iter()
                .any(|&len| {
                    // SAFETY: unregisters glibc's area of this thread (a wrong length
                    // is refused); the area stays valid (static TLS), and this
                    // thread ends right after without another sequence on it.
                    unsafe {
                        libc::syscall(
                            libc::SYS_rseq,
                            as_ptr,
                            len,
                            restartable::abi::FLAG_UNREGISTER,
                            restartable::abi::SIGNATURE,
                        ) == 0
                    }
                });
            assert!(done, "unregistering glibc's area");
        } else {
            restartable::registration::disable_current_thread().expect("disable");
        }
        assert!(a.cpu_id() >= restartable::abi::CPU_ID_REGISTRATION_FAILED);
        let mut r = Region::new();
        // Something to pop in every slot.
        for i in 0..r.slots {
            let w = Region::w(i);
            r.words[w] = 1;
            r.words[w + H] = 7;
        }
        let before = r.words.clone();
        for _ in 0..100 {
            // SAFETY: as in `ipop` (the area is this thread's, unregistered).
            let (o, _) =
                unsafe { arch::load_index_slab_pop::<I, Hk, RSHIFT, LB>(a, r.base(), RHDR) };
            assert!(matches!(o, OpResult::Aborted { .. }), "pop: {o:?}");
            // SAFETY: as above.
            let o =
                unsafe { arch::load_index_slab_push::<I, Hk, RSHIFT, LB>(a, r.base(), RHDR, 9) };
            assert!(matches!(o, OpResult::Aborted { .. }), "push: {o:?}");
        }
        assert!(r.words == before, "an unregistered area committed");
    })
    .join()
    .unwrap();
}

#[test]
fn index_ops_abort_on_an_unregistered_area() {
    in_every_mode!(widths index_unregistered);
}

/// Delay loop at the injection point of a forced migration: tens of milliseconds,
/// while the migrating thread waits [`MIGRATE_AFTER`].
const LONG_LOOPS: i32 = 150_000_000;
const MIGRATE_AFTER: Duration = Duration::from_millis(5);

/// One round of a forced migration: this thread pinned to CPU `a`, a second thread
/// moves it to CPU `b` [`MIGRATE_AFTER`] after the op was called, while the hooked
/// build spins at injection `point` (1: before the descriptor store, 2: before the
/// index read, 3: after it, 4: after the header's compare). A push (of a token) or a
/// pop (every slot holding one item, its own) on the region; then: the commit landed
/// in the slot of the index the thread has afterwards (pinned to `b`), nothing lost
/// or duplicated. `Ok(forced)`: whether the migration fell inside the op (the thread
/// was on `a` when it called it, and for points 2-4 the sequence aborted: the
/// migration came while it ran); `Err`: where it landed instead. The plain build has
/// no delay: it runs the op once the thread has moved.
fn migrate_round<I: Index, Hk: Hooks, const LB: bool>(
    a: usize,
    b: usize,
    point: usize,
    push: bool,
) -> Result<bool, String> {
    let all = allowed();
    pin(0, &[a]);
    let mut r = Region::new();
    if !push {
        for i in 0..r.slots {
            let w = Region::w(i);
            r.words[w] = 1;
            r.words[w + H] = 1000 + i as isize;
        }
    }
    let before = r.items();
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let go = Arc::new(AtomicBool::new(false));
    let migrator = {
        let go = go.clone();
        std::thread::spawn(move || {
            while !go.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            std::thread::sleep(MIGRATE_AFTER);
            pin(tid, &[b]);
            // The migration is done: the retries after its abort run without the
            // delay. With it, every retry on a CPU shared with another runnable task
            // (another test process, a build) is preempted inside its sequence, and
            // aborts, for ever.
            hooks::set_loops(point, 0);
        })
    };
    if Hk::INJECT {
        hooks::set_loops(point, LONG_LOOPS);
    }
    hooks::reset_thread_stats();
    // SAFETY: sched_getcpu has no preconditions.
    let cpu_before = unsafe { libc::sched_getcpu() } as usize;
    go.store(true, Ordering::Release);
    let mut migrator = Some(migrator);
    if !Hk::INJECT {
        // No delay to migrate in: the op runs once the thread has moved.
        migrator.take().unwrap().join().unwrap();
    }
    let popped = if push {
        assert_eq!(ipush::<I, Hk, LB>(&mut r, 77), OpResult::Committed);
        None
    } else {
        let (o, x) = ipop::<I, Hk, LB>(&mut r);
        assert_eq!(o, OpResult::Committed);
        Some(x)
    };
    let stats = hooks::thread_stats();
    hooks::set_loops(point, 0);
    if let Some(m) = migrator {
        m.join().unwrap();
    }
    let idx = I::current(area()) as usize;
    // SAFETY: as above.
    let cpu_after = unsafe { libc::sched_getcpu() } as usize;
    pin(0, &all);
    assert_eq!(cpu_after, b, "pinned to {b}");
    // Conservation: the token in, or the popped item out, and nothing else changed.
    let mut expect = before.clone();
    match popped {
        None => expect.push(77),
        Some(x) => match expect.iter().position(|&y| y == x) {
            Some(p) => {
                expect.remove(p);
            }
            None => return Err(format!("popped {x}, which no slab held")),
        },
    }
    expect.sort_unstable();
    if r.items() != expect {
        return Err(format!("items not conserved: {:?}", r.used()));
    }
    let landed = match popped {
        None => r.used().first().copied(),
        Some(x) => Some((x - 1000) as usize),
    };
    if landed != Some(idx) {
        return Err(format!(
            "committed in slot {landed:?}, the index after the op is {idx} (cpu {a} -> {b})"
        ));
    }
    Ok(Hk::INJECT && cpu_before == a && (point == 1 || stats.aborts > 0))
}

/// [`migrate_round`] at every point, push and pop, until each was forced (the hooked
/// build; a few rounds for the plain one, which has no delay to migrate in), up to
/// 60 s for each.
fn index_migrated<I: Index, Hk: Hooks, const LB: bool>() {
    let cpus = allowed();
    if cpus.len() < 2 {
        child::skip(format!("one allowed CPU ({cpus:?}): no migration to force"));
        return;
    }
    let (a, b) = (cpus[0], cpus[1]);
    for point in 1..=4 {
        for push in [true, false] {
            let start = Instant::now();
            let mut rounds = 0;
            loop {
                rounds += 1;
                let forced = migrate_round::<I, Hk, LB>(a, b, point, push)
                    .unwrap_or_else(|e| panic!("point {point}, push {push}: {e}"));
                if forced || (!Hk::INJECT && rounds == 3) {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "point {point}, push {push}: in 60 s no migration fell inside the op"
                );
            }
        }
    }
}

/// A migration forced inside the sequence (hooked build: a long delay at each point,
/// another thread moves this one meanwhile): the op aborts (points 2-4) or reads the
/// new index (point 1), and commits in the slot of the index the thread has at the
/// commit; tokens are conserved.
#[test]
fn index_ops_commit_in_the_slot_of_the_index_after_a_forced_migration() {
    in_every_mode!(widths index_migrated);
}

/// The control: with the index read before the sequence (the hooked build's "skip
/// the CPU check" switch, which moves the read before the descriptor store, where
/// the prepared ops read theirs, but compares nothing), a migration in the delay at
/// point 1 makes the push commit in the old CPU's slot. Up to 60 s.
#[test]
fn index_ops_control_an_index_read_before_the_sequence_is_caught() {
    let cpus = allowed();
    if cpus.len() < 2 {
        child::skip(format!(
            "one allowed CPU ({cpus:?}): no index read can go stale"
        ));
        return;
    }
    let _one = HOOK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the broken sequences of this test run on a region private to this
    // thread (nobody else's sequences race them); switched off before the lock is
    // released.
    unsafe { hooks::set_skip_cpu_check(true) };
    let start = Instant::now();
    let mut caught = None;
    while caught.is_none() && start.elapsed() < Duration::from_secs(60) {
        caught = migrate_round::<ByCpu, TestHooks, false>(cpus[0], cpus[1], 1, true).err();
    }
    // SAFETY: switching it off is always sound.
    unsafe { hooks::set_skip_cpu_check(false) };
    let e = caught.expect("60 s of an index read before the sequence never went to the old slot");
    eprintln!("caught: {e}");
}

/// Tokens conserved with the in-sequence ops under 2 x nproc threads (which
/// migrate), a delay before the commit, compare-twice, and a fenced, re-checking
/// thief (`stop_slabs`).
#[test]
fn index_ops_conserve_tokens_under_threads_and_a_thief() {
    if !restartable::fences_supported() {
        child::skip("no membarrier rseq fences");
        return;
    }
    let _one = HOOK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    hooks::set_loops(4, 200);
    hooks::set_compare_twice(true);
    let threads = 2 * restartable::possible_cpus().min(8);
    let mut ok = true;
    for _ in 0..2 {
        ok &= conserve(
            threads,
            100,
            Duration::from_secs(2),
            Thief::Stops,
            Ops::InSequence,
        )
        .conserved;
    }
    hooks::set_compare_twice(false);
    hooks::set_loops(4, 0);
    assert!(ok, "tokens lost or duplicated with the in-sequence ops");
}
