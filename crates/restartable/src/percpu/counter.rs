//! [`PerCpuCounter`]: a signed counter with one slot per CPU, incremented by one
//! restartable sequence (no atomic instruction).

use core::fmt;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use super::{effective_index, on_current_cpu, Attempt, IndexBy, LazySlots, Seq, Step, Then};
use crate::arch::{self, Index};
use crate::hooks::{self, Hooks, NoHooks};

/// A signed counter sharded per CPU: `add` is one restartable sequence on the current
/// CPU's slot (a plain `add` to memory, no atomic instruction, no shared cache line);
/// `sum` adds up every slot. Like the kernel's `percpu_counter` and Java's `LongAdder`.
///
/// `sum` is exact once writers stop; while they run it is a value the counter held at
/// some point between the start and the end of the call only if no `add` is negative
/// (it reads slots one by one). Threads without rseq add to a shared atomic that
/// `sum` includes.
///
/// # Examples
/// ```
/// use restartable::PerCpuCounter;
///
/// let requests = PerCpuCounter::new();
/// std::thread::scope(|s| {
///     for _ in 0..4 {
///         s.spawn(|| {
///             for _ in 0..1000 {
///                 requests.inc();
///             }
///         });
///     }
/// });
/// assert_eq!(requests.sum(), 4000);
/// ```
#[doc(alias = "percpu_counter")]
#[doc(alias = "LongAdder")]
pub struct PerCpuCounter<H: Hooks = NoHooks> {
    slots: LazySlots<AtomicI64>,
    index: IndexBy,
    /// Adds made without a sequence (no rseq, or too many aborts).
    fallback: AtomicI64,
    /// Serialises [`sum_and_reset`](Self::sum_and_reset) callers.
    resetting: Mutex<()>,
    _hooks: PhantomData<H>,
}

impl PerCpuCounter<NoHooks> {
    /// A counter at 0, indexed by CPU. `const`: a counter can be a `static`; its
    /// per-CPU storage is reserved on first use (an `add` on a thread whose CPU is
    /// beyond the slot count, which is 0 until then, goes out of line once to set it
    /// up: the fast path has no extra check).
    ///
    /// ```
    /// use restartable::PerCpuCounter;
    ///
    /// static REQUESTS: PerCpuCounter = PerCpuCounter::new();
    /// REQUESTS.inc();
    /// assert_eq!(REQUESTS.sum(), 1);
    /// ```
    pub const fn new() -> Self {
        PerCpuCounter {
            slots: LazySlots::new(),
            index: IndexBy::Cpu,
            fallback: AtomicI64::new(0),
            resetting: Mutex::new(()),
            _hooks: PhantomData,
        }
    }

    /// A counter at 0, indexed as asked (`MmCid` falls back to `Cpu` where the kernel
    /// has no mm_cid).
    pub fn with_index(index: IndexBy) -> Self {
        Self::with_hooks(index)
    }
}

impl Default for PerCpuCounter<NoHooks> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: Hooks> PerCpuCounter<H> {
    /// A counter whose sequences carry the hooks `H` (tests and benchmarks).
    pub fn with_hooks(index: IndexBy) -> Self {
        let index = effective_index(index);
        PerCpuCounter {
            slots: LazySlots::eager(index),
            index,
            fallback: AtomicI64::new(0),
            resetting: Mutex::new(()),
            _hooks: PhantomData,
        }
    }

    /// The index mode in use.
    pub fn index(&self) -> IndexBy {
        self.index
    }

    /// Adds `delta` (which may be negative) on the current CPU's slot.
    #[inline(always)]
    pub fn add(&self, delta: i64) {
        on_current_cpu::<H, _, _>(&self.slots, Add(delta), |Add(delta)| {
            self.add_fallback(delta)
        })
    }

    /// Adds 1.
    #[inline(always)]
    pub fn inc(&self) {
        self.add(1)
    }

    /// Subtracts 1.
    #[inline(always)]
    pub fn dec(&self) {
        self.add(-1)
    }

    #[cold]
    #[inline(never)]
    fn add_fallback(&self, delta: i64) {
        self.fallback.fetch_add(delta, Ordering::Relaxed);
        hooks::record_fallback::<H>();
    }

    /// The total over every slot and the fallback.
    pub fn sum(&self) -> i64 {
        let slots: i64 = self
            .slots
            .get()
            .into_iter()
            .flatten()
            .map(|s| s.load(Ordering::Relaxed))
            .fold(0i64, |a, b| a.wrapping_add(b));
        slots.wrapping_add(self.fallback.load(Ordering::Relaxed))
    }

    /// Each slot's value (index = CPU or mm_cid), without the fallback's share
    /// (zeros before the first `add`).
    pub fn per_cpu(&self) -> Vec<i64> {
        let Some(slots) = self.slots.get() else {
            return vec![0; crate::possible_cpus()];
        };
        slots.iter().map(|s| s.load(Ordering::Relaxed)).collect()
    }

    /// Claims the set-up of this counter's per-CPU storage without setting it up, as
    /// a thread stopped in the middle of the set-up would (tests of the lock-free
    /// set-up: operations complete on the fallback meanwhile, and a child forked now
    /// takes the claim over). `false` if the storage is set up or already claimed.
    /// Harmless otherwise: the counter stays exact, on its fallback, until a forked
    /// child takes the claim over.
    #[doc(hidden)]
    pub fn claim_set_up_for_test(&self) -> bool {
        self.slots.claim_for_test()
    }

    /// The part added on the shared fallback path.
    pub fn fallback_value(&self) -> i64 {
        self.fallback.load(Ordering::Relaxed)
    }

    /// Returns the sum and resets the counter to 0, losing nothing: an `add` that
    /// runs concurrently is either in the returned sum or still in the counter.
    /// Concurrent callers take turns, so each `add` is returned by one of them only.
    ///
    /// The slots are never written from here (that would race their sequences): the
    /// returned amount is subtracted from the shared fallback instead.
    pub fn sum_and_reset(&self) -> i64 {
        // Two callers reading the same slots would both return their sum and leave
        // the counter at minus it.
        let _turn = self.resetting.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = 0i64;
        for s in self.slots.get().into_iter().flatten() {
            total = total.wrapping_add(s.load(Ordering::Relaxed));
        }
        // Read and subtract the fallback's share atomically with the rest.
        let fb = self.fallback.load(Ordering::Relaxed);
        total = total.wrapping_add(fb);
        // Tests widen the window between the reads and the subtraction here.
        hooks::inject_c::<H>(8);
        self.fallback.fetch_sub(total, Ordering::Relaxed);
        total
    }

    /// Resets to 0 (see [`sum_and_reset`](Self::sum_and_reset)).
    pub fn reset(&self) {
        let _ = self.sum_and_reset();
    }
}

/// The counter's sequence: `*slot += delta` (the shared retry loop runs it: a
/// straight-line first attempt, bounded retries out of line, else the fallback).
#[derive(Clone, Copy)]
struct Add(i64);

impl Seq<AtomicI64> for Add {
    type Out = ();

    #[inline(always)]
    unsafe fn run<I: Index, H: Hooks, K>(
        self,
        area: crate::ThreadArea,
        cpu: u32,
        slot: &AtomicI64,
        k: impl Step<(), K>,
    ) -> K {
        hooks::inject_c::<H>(8);
        // SAFETY: `slot` is this counter's slot for `cpu`, an aligned AtomicI64 that
        // only sequences for `cpu` write; `cpu` was read from `area` (contract).
        unsafe {
            arch::load_add_store_k::<I, H, K>(
                area,
                cpu,
                slot.as_ptr() as *mut isize,
                self.0 as isize,
                Then {
                    out: || (),
                    step: k,
                },
            )
        }
    }

    fn compare_failed(&mut self, _: &AtomicI64) -> Attempt<()> {
        // `load_add_store` has no compare.
        Attempt::Done(())
    }
}

impl<H: Hooks> fmt::Debug for PerCpuCounter<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerCpuCounter")
            .field("sum", &self.sum())
            .field("index", &self.index)
            .finish()
    }
}
