//! Per-CPU storage and the safe containers built on the op contract.
//!
//! | container | per-CPU operation | sequence |
//! |-----------|-------------------|----------|
//! | [`PerCpuCounter`] | `add` | [`load_add_store`](crate::arch::load_add_store) |
//! | [`PerCpuLock`] | `lock` (2 -> 1: unlocked and created -> locked) | [`load_cbne_store`](crate::arch::load_cbne_store) |
//! | [`PerCpuStack`] | `push` / `pop` | the guarded list push and pop of [`load_cbne_load_cbne_store`](crate::arch::load_cbne_load_cbne_store) / [`load_cbne_load_cbeq_store_add_load_store`](crate::arch::load_cbne_load_cbeq_store_add_load_store), as slot ops (below) |
//! | [`PerCpuBuffer`] | `push` / `pop` | the offset compare and word copy of [`load_cbne_memcpy_store`](crate::arch::load_cbne_memcpy_store), as slot ops (a word copied through a register) |
//! | [`PerCpuMemcpyBuffer`] | `push` / `pop` | [`load_cbne_memcpy_store`](crate::arch::load_cbne_memcpy_store) |
//! | [`PerCpuPool`] | `get` / drop of the handle | the buffer's slot ops, the box's address in a register |
//!
//! The stack, buffer and pool run crate-internal *slot ops*: the same sequences,
//! addressed from the slot's base with the slot layout's constant displacements, and
//! loading the head or offset they compare inside the sequence (no value read
//! before the sequence and compared again inside it); the list pop and the pool's
//! pop return the node or box in a register. By CPU in libc mode, the fast path
//! reaches the area through the storage's own copy of glibc's `__rseq_offset`, next
//! to its slot count, with no test of the registration mode.
//!
//! # Fallback and forward progress
//! Every container has a shared fallback path (atomics or a lock) that its readers
//! include. A thread takes it when rseq is unavailable to it (no rseq at all, a
//! foreign owner, thread teardown, a thread that opted out with
//! [`disable_current_thread`](crate::registration::disable_current_thread)), and when
//! one operation aborts [`MAX_CONSECUTIVE_ABORTS`] times in a row (a debugger
//! single-stepping, a signal storm, a page fault on every attempt): the operation then
//! completes on the fallback instead of retrying forever. A thread without rseq never
//! writes the slots that sequences write.
//!
//! Each container is generic over a [`Hooks`](crate::hooks::Hooks) type, `NoHooks` by
//! default; the stress tests use `TestHooks`.

mod buffer;
mod counter;
mod identity;
mod lazy;
mod lock;
mod memcpy_buffer;
mod pool;
mod stack;
pub mod storage;

pub use buffer::PerCpuBuffer;
pub use counter::PerCpuCounter;
pub use lock::{PerCpuLock, PerCpuLockGuard};
pub use memcpy_buffer::PerCpuMemcpyBuffer;
pub use pool::{PerCpuPool, Pooled};
pub use stack::{PerCpuStack, StackNode};
pub use storage::{IndexBy, PerCpu, Zeroable};

pub(crate) use lazy::{LazySlots, Slots};

#[doc(hidden)]
pub use identity::{fake_pid_for_test, identity_wipes_on_fork, use_pid_identity_for_test};

/// Consecutive aborts after which one operation completes on its container's shared
/// fallback path.
pub const MAX_CONSECUTIVE_ABORTS: u32 = 100;

/// The index mode a container actually uses: `MmCid` only where the kernel maintains
/// mm_cid (otherwise every thread would read 0 and share one slot unprotected).
pub(crate) fn effective_index(index: IndexBy) -> IndexBy {
    match index {
        IndexBy::MmCid if crate::registration::mm_cid_available() => IndexBy::MmCid,
        _ => IndexBy::Cpu,
    }
}

/// Issues the fence that stops in-flight sequences on slot `i` of a container
/// indexed by `index`.
pub(crate) fn fence_slot(index: IndexBy, i: usize) -> Result<(), crate::FenceError> {
    match index {
        IndexBy::Cpu => crate::fence_cpu(i as u32),
        // mm_cids move between CPUs: stop every CPU.
        IndexBy::MmCid => crate::fence_all(),
    }
}

/// The shared fallback path of a container that holds values: a locked list that
/// threads without a usable sequence push to and pop from, and that every pop and
/// drain of the container includes. Sequences never touch it.
pub(crate) struct SharedList<T>(std::sync::Mutex<Vec<T>>);

impl<T> SharedList<T> {
    pub(crate) const fn new() -> Self {
        SharedList(std::sync::Mutex::new(Vec::new()))
    }

    /// The list, locked (a panic while it was locked poisons nothing we rely on).
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Vec<T>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The list, with exclusive access.
    pub(crate) fn get_mut(&mut self) -> &mut Vec<T> {
        self.0.get_mut().unwrap_or_else(|e| e.into_inner())
    }

    /// Pushes `value` unless the list already holds `cap` values (then gives it back).
    #[cold]
    #[inline(never)]
    pub(crate) fn push<H: crate::hooks::Hooks>(&self, value: T, cap: usize) -> Result<(), T> {
        let mut list = self.lock();
        if list.len() >= cap {
            return Err(value);
        }
        list.push(value);
        crate::hooks::record_fallback::<H>();
        Ok(())
    }

    /// Pops the most recent value.
    #[cold]
    #[inline(never)]
    pub(crate) fn pop<H: crate::hooks::Hooks>(&self) -> Option<T> {
        let v = self.lock().pop();
        if v.is_some() {
            crate::hooks::record_fallback::<H>();
        }
        v
    }
}

/// What one attempt of a container operation came to, in the retry loop.
pub(crate) enum Attempt<R> {
    /// Finished: committed, or a definite answer such as "empty" or "full".
    Done(R),
    /// A compare failed because the data changed under the attempt: try again (this
    /// is not an abort, and restarts the count of consecutive aborts). Repeated
    /// `Again`s spin, yielding every 64.
    Again,
    /// Stop trying sequences: the operation goes to the container's shared fallback.
    GiveUp,
}

/// Where one run of a [`Seq`] goes on each outcome (continuation style, so that the
/// inline first attempt branches straight from the sequence's exits to its cold
/// retry path, with no result to dispatch on).
pub(crate) trait Step<O, K> {
    /// The operation finished with `o` (committed, or a definite answer).
    fn done(self, o: O) -> K;
    /// The sequence's compare failed.
    fn compare_failed(self) -> K;
    /// The sequence aborted.
    fn aborted(self) -> K;
}

/// An [`Outcome`](crate::arch::Outcome) for a `_k` op: on commit, `Step::done` of
/// what `out` computes; the other exits go to the step as they are.
pub(crate) struct Then<F, St> {
    pub(crate) out: F,
    pub(crate) step: St,
}

impl<O, K, F: FnOnce() -> O, St: Step<O, K>> crate::arch::Outcome<K> for Then<F, St> {
    #[inline(always)]
    fn committed(self) -> K {
        self.step.done((self.out)())
    }
    #[inline(always)]
    fn compare_failed(self) -> K {
        self.step.compare_failed()
    }
    #[inline(always)]
    fn aborted(self) -> K {
        self.step.aborted()
    }
}

/// One container operation: its sequence on one CPU's slot. A small `Copy` value
/// (the operation's arguments), run once inline and, if that attempt does not finish,
/// again by the cold retry loop.
pub(crate) trait Seq<S>: Copy {
    /// What the operation returns.
    type Out;
    /// One attempt on `slot`, the slot of `cpu`: ends in `k.done(..)` (committed, or a
    /// definite answer found before the sequence), `k.compare_failed()` or
    /// `k.aborted()`.
    ///
    /// # Safety
    /// `area` is this thread's, `cpu` was read from it with `I` and is below the slot
    /// count, and `slot` is the container's slot for `cpu`.
    unsafe fn run<I: crate::arch::Index, H: crate::hooks::Hooks, K>(
        self,
        area: crate::ThreadArea,
        cpu: u32,
        slot: &S,
        k: impl Step<Self::Out, K>,
    ) -> K;
    /// What a failed compare of [`run`](Self::run) on `slot` means (cold); may change
    /// `self` for the next attempt.
    fn compare_failed(&mut self, slot: &S) -> Attempt<Self::Out>;
}

/// How a sequence of the inline first attempt exited, for the retry loop.
#[derive(Clone, Copy)]
enum Exit {
    CompareFailed,
    Aborted,
}

/// The [`Step`] of the inline first attempt: finished is the result; a failed compare
/// or an abort calls the cold retry loop, which ends on the fallback if it must.
struct First<'a, SL, S, Q, F, H> {
    slots: &'a SL,
    slot: &'a S,
    seq: Q,
    fallback: F,
    _hooks: core::marker::PhantomData<H>,
}

impl<SL, S, Q, F, H> Step<Q::Out, Q::Out> for First<'_, SL, S, Q, F, H>
where
    SL: Slots<S>,
    S: Zeroable,
    Q: Seq<S>,
    F: FnOnce(Q) -> Q::Out,
    H: crate::hooks::Hooks,
{
    #[inline(always)]
    fn done(self, o: Q::Out) -> Q::Out {
        o
    }
    #[inline(always)]
    fn compare_failed(self) -> Q::Out {
        retry_after_compare::<H, S, SL, Q, F>(self.slots, self.seq, self.slot, self.fallback)
    }
    #[inline(always)]
    fn aborted(self) -> Q::Out {
        retry_after_abort::<H, S, SL, Q, F>(self.slots, self.seq, self.slot, self.fallback)
    }
}

/// [`retry`] after the inline attempt's compare failed. One cold entry per exit, so
/// that the two exits' calls stay apart: merged, they would take the exit as an
/// argument, set on the fast path.
#[cold]
#[inline(never)]
fn retry_after_compare<H, S, SL, Q, F>(slots: &SL, seq: Q, slot: &S, fallback: F) -> Q::Out
where
    H: crate::hooks::Hooks,
    S: Zeroable,
    SL: Slots<S>,
    Q: Seq<S>,
    F: FnOnce(Q) -> Q::Out,
{
    retry::<H, S, SL, Q, F>(slots, seq, Some((slot, Exit::CompareFailed)), fallback)
}

/// [`retry`] after the inline attempt aborted (see [`retry_after_compare`]).
#[cold]
#[inline(never)]
fn retry_after_abort<H, S, SL, Q, F>(slots: &SL, seq: Q, slot: &S, fallback: F) -> Q::Out
where
    H: crate::hooks::Hooks,
    S: Zeroable,
    SL: Slots<S>,
    Q: Seq<S>,
    F: FnOnce(Q) -> Q::Out,
{
    retry::<H, S, SL, Q, F>(slots, seq, Some((slot, Exit::Aborted)), fallback)
}

/// How one attempt of the retry loop ended.
enum Ran<R> {
    Done(R),
    CompareFailed,
    Aborted,
}

/// The [`Step`] of the retry loop: the outcome as a value.
struct InLoop;

impl<O> Step<O, Ran<O>> for InLoop {
    #[inline(always)]
    fn done(self, o: O) -> Ran<O> {
        Ran::Done(o)
    }
    #[inline(always)]
    fn compare_failed(self) -> Ran<O> {
        Ran::CompareFailed
    }
    #[inline(always)]
    fn aborted(self) -> Ran<O> {
        Ran::Aborted
    }
}

/// Runs `seq` on the current CPU's slot until it finishes; `fallback` completes it
/// on the container's shared fallback when rseq is unavailable to this thread, this
/// CPU has no slot, the storage cannot be set up, the attempt gave up, or
/// [`MAX_CONSECUTIVE_ABORTS`] aborts came in a row.
///
/// The first attempt is inline and straight-line, for the default index mode (by
/// CPU): the storage's by-CPU slot count is 0 until it is set up and for a container
/// indexed by mm_cid, so the one bounds check `cpu < count` is also the set-up check
/// and the index-mode check. A container indexed by mm_cid takes its own inline
/// attempt after that check fails; retries and first use are out of line
/// ([`retry`]).
///
/// With [`TestHooks`](crate::hooks::TestHooks), a thread that a
/// [`set_migrate`](crate::hooks::set_migrate) move left pinned (its operation ended
/// before a sequence: a push onto a full array, a CPU without a slot) gets its mask
/// back when the operation returns; other hooks compile nothing for it.
#[inline(always)]
pub(crate) fn on_current_cpu<H, S, Q>(
    slots: &impl Slots<S>,
    seq: Q,
    fallback: impl FnOnce(Q) -> Q::Out,
) -> Q::Out
where
    H: crate::hooks::Hooks,
    S: Zeroable,
    Q: Seq<S>,
{
    let out = on_current_cpu_unhooked::<H, S, Q>(slots, seq, fallback);
    crate::hooks::end_operation::<H>();
    out
}

/// [`on_current_cpu`] but for the restored mask.
#[inline(always)]
fn on_current_cpu_unhooked<H, S, Q>(
    slots: &impl Slots<S>,
    seq: Q,
    fallback: impl FnOnce(Q) -> Q::Out,
) -> Q::Out
where
    H: crate::hooks::Hooks,
    S: Zeroable,
    Q: Seq<S>,
{
    use crate::arch::{ByCpu, ByMmCid, Index};
    // Libc mode: the storage's copy of glibc's offset, next to its count (0 in
    // library mode and before set-up: one test of the container's own line, where
    // the static's would be a load through the GOT from other crates).
    let (libc_count, fs_off) = slots.libc_cpu();
    let by_cpu = if libc_count != 0 {
        // SAFETY: the offset is glibc's (`Slots::libc_cpu`); slot counts are below
        // `CPU_ID_REGISTRATION_FAILED` (`Slots`).
        unsafe { crate::registration::cached_area_with_cpu_below(fs_off, libc_count) }
    } else {
        None
    };
    let by_cpu = match by_cpu {
        Some(x) => Some(x),
        // Library mode, or not set up. The thread-local area serves both modes
        // (libc mode caches glibc's area there too, once validated), so the mode is
        // not tested again.
        None => {
            // Layout only: libc mode (the default) stays the fall-through path.
            core::hint::cold_path();
            // SAFETY: as above.
            unsafe { crate::registration::tls_area_with_cpu_below(slots.cpu_count()) }
        }
    };
    if let Some((area, cpu)) = by_cpu {
        return first_attempt::<ByCpu, H, S, Q>(slots, area, cpu, seq, fallback);
    }
    // By CPU, or not set up yet: the count is 0 and no index is read.
    let mm_cid_count = slots.mm_cid_count();
    let by_mm_cid = if mm_cid_count == 0 {
        None
    } else {
        // SAFETY: as above.
        unsafe { ByMmCid::enter_below(mm_cid_count) }
    };
    if let Some((area, cid)) = by_mm_cid {
        // Layout only: the default index mode (cpu_id) stays the fall-through path.
        core::hint::cold_path();
        return first_attempt::<ByMmCid, H, S, Q>(slots, area, cid, seq, fallback);
    }
    retry::<H, S, _, Q, _>(slots, seq, None, fallback)
}

/// The inline first attempt of [`on_current_cpu`] on slot `cpu`.
#[inline(always)]
fn first_attempt<I, H, S, Q>(
    slots: &impl Slots<S>,
    area: crate::ThreadArea,
    cpu: u32,
    seq: Q,
    fallback: impl FnOnce(Q) -> Q::Out,
) -> Q::Out
where
    I: crate::arch::Index,
    H: crate::hooks::Hooks,
    S: Zeroable,
    Q: Seq<S>,
{
    crate::hooks::inject_after_read::<I, H>(cpu);
    // SAFETY: `cpu` is below a slot count the storage returned (`enter_below`), and
    // a slot of live storage is a valid `S` for as long as the storage is borrowed;
    // containers only share slots whose fields are atomics or guarded by the slot's
    // own protocol.
    let slot = unsafe { &*slots.slot(cpu as usize) };
    let first = First {
        slots,
        slot,
        seq,
        fallback,
        _hooks: core::marker::PhantomData::<H>,
    };
    // SAFETY: `area` is this thread's and `cpu` was read from it with `I`, below the
    // slot count; `slot` is that CPU's.
    unsafe { seq.run::<I, H, _>(area, cpu, slot, first) }
}

/// The cold part of [`on_current_cpu`]: after the inline attempt's sequence exited on
/// `first` (or, with `None`, when no inline attempt could run: the storage is not set
/// up yet (set it up), the thread is not registered yet (`enter` registers it) or
/// cannot be, or this CPU has no slot (the fallback)).
#[cold]
#[inline(never)]
fn retry<H, S, SL, Q, F>(slots: &SL, mut seq: Q, first: Option<(&S, Exit)>, fallback: F) -> Q::Out
where
    H: crate::hooks::Hooks,
    S: Zeroable,
    SL: Slots<S>,
    Q: Seq<S>,
    F: FnOnce(Q) -> Q::Out,
{
    let mut wait = Wait::default();
    let aborts = match first {
        None => {
            if slots.count() == 0 && !slots.set_up() {
                return fallback(seq);
            }
            0
        }
        Some((_, Exit::Aborted)) => 1,
        Some((slot, Exit::CompareFailed)) => match seq.compare_failed(slot) {
            Attempt::Done(r) => return r,
            Attempt::GiveUp => return fallback(seq),
            Attempt::Again => {
                wait.spin();
                0
            }
        },
    };
    let out = match slots.index() {
        IndexBy::Cpu => retry_as::<crate::arch::ByCpu, H, S, SL, Q>(slots, &mut seq, aborts, wait),
        IndexBy::MmCid => {
            retry_as::<crate::arch::ByMmCid, H, S, SL, Q>(slots, &mut seq, aborts, wait)
        }
    };
    match out {
        Some(r) => r,
        None => fallback(seq),
    }
}

/// The loop of [`retry`] for the index `I`, `prior_aborts` aborts already counted;
/// `None`: the fallback.
#[inline(always)]
fn retry_as<I, H, S, SL, Q>(
    slots: &SL,
    seq: &mut Q,
    prior_aborts: u32,
    mut wait: Wait,
) -> Option<Q::Out>
where
    I: crate::arch::Index,
    H: crate::hooks::Hooks,
    S: Zeroable,
    SL: Slots<S>,
    Q: Seq<S>,
{
    let mut aborts = prior_aborts;
    while aborts < MAX_CONSECUTIVE_ABORTS {
        let (area, cpu) = I::enter().ok()?;
        crate::hooks::inject_after_read::<I, H>(cpu);
        if cpu as usize >= slots.count() {
            return None;
        }
        // SAFETY: as in `first_attempt`.
        let slot = unsafe { &*slots.slot(cpu as usize) };
        // SAFETY: `area` is this thread's, `cpu` read from it with `I` and below the
        // slot count, `slot` that CPU's.
        match unsafe { seq.run::<I, H, _>(area, cpu, slot, InLoop) } {
            Ran::Done(r) => return Some(r),
            Ran::Aborted => aborts += 1,
            Ran::CompareFailed => match seq.compare_failed(slot) {
                Attempt::Done(r) => return Some(r),
                Attempt::Again => {
                    aborts = 0;
                    wait.spin();
                }
                Attempt::GiveUp => return None,
            },
        }
    }
    None
}

/// Waiting between attempts whose compare failed (a lock held by another thread, a
/// list being changed): spin, and yield every 64 tries.
#[derive(Default)]
struct Wait(u32);

impl Wait {
    fn spin(&mut self) {
        self.0 = self.0.wrapping_add(1);
        if self.0.is_multiple_of(64) {
            std::thread::yield_now();
        } else {
            core::hint::spin_loop();
        }
    }
}
