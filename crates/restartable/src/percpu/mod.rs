//! Per-CPU storage and the safe containers built on the op contract.
//!
//! | container | per-CPU operation | sequence |
//! |-----------|-------------------|----------|
//! | [`PerCpuCounter`] | `add` | [`load_add_store`](crate::arch::load_add_store) |
//! | [`PerCpuLock`] | `lock` (0 -> 1) | [`load_cbne_store`](crate::arch::load_cbne_store) |
//! | [`PerCpuStack`] | `push` / `pop` | [`load_cbne_load_cbne_store`](crate::arch::load_cbne_load_cbne_store) / [`load_cbne_load_cbeq_store_add_load_store`](crate::arch::load_cbne_load_cbeq_store_add_load_store) |
//! | [`PerCpuBuffer`] | `push` / `pop` | [`load_cbne_memcpy_store`](crate::arch::load_cbne_memcpy_store) (a word copied through a register) |
//! | [`PerCpuMemcpyBuffer`] | `push` / `pop` | [`load_cbne_memcpy_store`](crate::arch::load_cbne_memcpy_store) |
//! | [`PerCpuPool`] | `get` / drop of the handle | the buffer's, on boxes stored in the slot |
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

/// What one attempt of a container operation came to.
pub(crate) enum Attempt<R> {
    /// Finished: committed, or a definite answer such as "empty" or "full".
    Done(R),
    /// A compare failed because the data changed under the attempt: try again (this
    /// is not an abort, and restarts the count of consecutive aborts).
    Again,
    /// The sequence aborted.
    Aborted,
    /// Stop trying sequences: the operation goes to the container's shared fallback.
    GiveUp,
}

impl<R> Attempt<R> {
    /// An op's result as an attempt: `Committed` is `Done(done())`, an abort is
    /// `Aborted`, a failed compare is `compare_failed()`.
    #[inline(always)]
    pub(crate) fn from_op(
        r: crate::arch::OpResult,
        done: impl FnOnce() -> R,
        compare_failed: impl FnOnce() -> Attempt<R>,
    ) -> Attempt<R> {
        match r {
            crate::arch::OpResult::Committed => Attempt::Done(done()),
            crate::arch::OpResult::CompareFailed => compare_failed(),
            crate::arch::OpResult::Aborted { .. } => Attempt::Aborted,
        }
    }
}

/// The retry loop every container shares: runs `attempt` on the current CPU's slot
/// (with the thread's area and the CPU it read) until it is done. `None` sends the
/// operation to the container's shared fallback: rseq is unavailable to this thread,
/// this CPU has no slot, the storage cannot be set up, the attempt gave up, or
/// [`MAX_CONSECUTIVE_ABORTS`] aborts came in a row.
///
/// The first attempt is inline and straight-line; retries, and the first use of
/// storage set up lazily (its slot count reads 0 until then, so the bounds check is
/// also the set-up check), are out of line ([`retry_on_current_cpu`]), so the common
/// case runs with no taken branch.
#[inline(always)]
pub(crate) fn on_current_cpu<I, H, S, R>(
    slots: &impl Slots<S>,
    mut attempt: impl FnMut(crate::ThreadArea, u32, &S) -> Attempt<R>,
) -> Option<R>
where
    I: crate::arch::Index,
    H: crate::hooks::Hooks,
    S: Zeroable,
{
    // SAFETY: slot counts are below `CPU_ID_REGISTRATION_FAILED` (`Slots::count`).
    let Some((area, cpu)) = (unsafe { I::enter_below(slots.count()) }) else {
        return first_use::<I, H, S, R>(slots, attempt);
    };
    crate::hooks::inject_c::<H>(7);
    // SAFETY: as in `retry_on_current_cpu`.
    let slot = unsafe { &*slots.slot(cpu as usize) };
    match attempt(area, cpu, slot) {
        Attempt::Done(r) => Some(r),
        Attempt::GiveUp => None,
        Attempt::Again => retry_on_current_cpu::<I, H, S, R>(slots, 0, attempt),
        Attempt::Aborted => retry_on_current_cpu::<I, H, S, R>(slots, 1, attempt),
    }
}

/// The first attempt found no usable index below the slot count: the storage was not
/// set up yet (set it up), the thread is not registered yet (the retry loop's
/// `enter` registers it) or cannot be, or this CPU has no slot (the retry loop
/// returns `None`: the fallback).
#[cold]
#[inline(never)]
fn first_use<I, H, S, R>(
    slots: &impl Slots<S>,
    attempt: impl FnMut(crate::ThreadArea, u32, &S) -> Attempt<R>,
) -> Option<R>
where
    I: crate::arch::Index,
    H: crate::hooks::Hooks,
    S: Zeroable,
{
    if slots.count() == 0 && !slots.set_up() {
        return None;
    }
    retry_on_current_cpu::<I, H, S, R>(slots, 0, attempt)
}

/// The loop of [`on_current_cpu`] after its first attempt, `prior_aborts` aborts
/// already counted.
#[cold]
#[inline(never)]
fn retry_on_current_cpu<I, H, S, R>(
    slots: &impl Slots<S>,
    prior_aborts: u32,
    mut attempt: impl FnMut(crate::ThreadArea, u32, &S) -> Attempt<R>,
) -> Option<R>
where
    I: crate::arch::Index,
    H: crate::hooks::Hooks,
    S: Zeroable,
{
    let mut aborts = prior_aborts;
    while aborts < MAX_CONSECUTIVE_ABORTS {
        let (area, cpu) = I::enter().ok()?;
        crate::hooks::inject_c::<H>(7);
        let n = slots.count();
        if cpu as usize >= n {
            return None;
        }
        // SAFETY: `cpu` is below a slot count the storage returned, and a slot of
        // live storage is a valid `S` for as long as the storage is borrowed;
        // containers only share slots whose fields are atomics or guarded by the
        // slot's own protocol.
        let slot = unsafe { &*slots.slot(cpu as usize) };
        match attempt(area, cpu, slot) {
            Attempt::Done(r) => return Some(r),
            Attempt::Again => aborts = 0,
            Attempt::Aborted => aborts += 1,
            Attempt::GiveUp => return None,
        }
    }
    None
}

/// Expands `$body` with `$I` bound to the op index type matching `$index`; the
/// `Cpu` arm is laid out as the fall-through path.
macro_rules! with_index {
    ($index:expr, $I:ident => $body:expr) => {
        match $index {
            $crate::percpu::IndexBy::Cpu => {
                type $I = $crate::arch::ByCpu;
                $body
            }
            $crate::percpu::IndexBy::MmCid => {
                // Layout only: the default index mode (cpu_id) stays the fall-through
                // path, with no taken branch.
                std::hint::cold_path();
                type $I = $crate::arch::ByMmCid;
                $body
            }
        }
    };
}
pub(crate) use with_index;
