//! [`PerCpuBuffer`]: a bounded array of owned values per CPU; push and pop are
//! restartable sequences.

use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;
use core::mem::{align_of, offset_of, size_of, MaybeUninit};
use core::sync::atomic::{AtomicIsize, Ordering};

use std::sync::Mutex;

use super::{
    effective_index, fence_slot, on_current_cpu, Attempt, IndexBy, LazySlots, Seq, SharedList,
    Step, Then, Zeroable,
};
use crate::arch::{self, Index, Order, Relaxed, Release};
use crate::hooks::{self, Hooks, NoHooks};
use crate::FenceError;

/// One CPU's array: `items[..offset]` hold published values, each one word: the
/// value's own bytes when it fits ([`Stored::INLINE`]), else the address of its box.
/// The sequences address the offset and the items from the slot's base ([`Words`]).
#[repr(C)]
struct BufSlot<const CAP: usize> {
    offset: AtomicIsize,
    items: UnsafeCell<[MaybeUninit<usize>; CAP]>,
}

// SAFETY: zero is an empty array (MaybeUninit holds any bytes).
unsafe impl<const CAP: usize> Zeroable for BufSlot<CAP> {}

impl<const CAP: usize> BufSlot<CAP> {
    /// The slot's address, from which the sequences address its words.
    #[inline(always)]
    fn base(&self) -> *mut u8 {
        (self as *const Self).cast_mut().cast()
    }

    /// Why a word push's compare failed: the array is full (done), stopped by a thief
    /// (the fallback), or its offset moved under the attempt (again).
    fn push_failed(&self) -> Attempt<Pushed> {
        let off = self.offset.load(Ordering::Relaxed);
        if off as usize == CAP {
            Attempt::Done(Pushed::Full)
        } else if off < 0 {
            Attempt::GiveUp
        } else {
            Attempt::Again
        }
    }
}

/// Why a pop's compare failed, from the array's `offset` now: empty or stopped by a
/// thief (the shared fallback list), or the offset moved under the attempt (again).
fn pop_failed<R>(offset: &AtomicIsize) -> Attempt<R> {
    if offset.load(Ordering::Relaxed) <= 0 {
        Attempt::GiveUp
    } else {
        Attempt::Again
    }
}

/// The layout of a `BufSlot<CAP>` holding `T`s, for the slot ops.
struct Words<T, const CAP: usize>(PhantomData<fn() -> T>);

impl<T, const CAP: usize> arch::WordArray for Words<T, CAP> {
    const OFF: usize = offset_of!(BufSlot<CAP>, offset);
    const ITEMS: usize = offset_of!(BufSlot<CAP>, items);
    const CAP: usize = CAP;
    const LEN: usize = Stored::<T>::LEN;
}

/// The push of a word buffer: the value's word (its bytes, or its box's address)
/// copied past the published items and published, all inside the sequence (the
/// offset is loaded there and compared with `CAP`).
struct WordPush<T, O, const CAP: usize> {
    src: *const u8,
    _types: PhantomData<(fn() -> T, O)>,
}

impl<T, O, const CAP: usize> Clone for WordPush<T, O, CAP> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T, O, const CAP: usize> Copy for WordPush<T, O, CAP> {}

impl<T, O: Order, const CAP: usize> Seq<BufSlot<CAP>> for WordPush<T, O, CAP> {
    type Out = Pushed;

    #[inline(always)]
    unsafe fn run<I: Index, H: Hooks, K>(
        self,
        area: crate::ThreadArea,
        cpu: u32,
        slot: &BufSlot<CAP>,
        k: impl Step<Pushed, K>,
    ) -> K {
        hooks::inject_c::<H>(8);
        // SAFETY: the slot's offset and items are written only by sequences of this
        // CPU (or a thief that stopped and fenced it); `src` holds the value's word
        // (`Stored::LEN` bytes); `cpu` was read from `area` (contract).
        unsafe {
            arch::slot_word_push_k::<I, O, H, K, Words<T, CAP>>(
                area,
                cpu,
                slot.base(),
                self.src,
                Then {
                    out: || Pushed::Yes,
                    step: k,
                },
            )
        }
    }

    fn compare_failed(&mut self, slot: &BufSlot<CAP>) -> Attempt<Pushed> {
        slot.push_failed()
    }
}

/// The pop of a word buffer: the last published word copied to `dst` and
/// unpublished inside the sequence. `true`: popped; `false`: empty or the fallback.
struct WordPop<T, const CAP: usize> {
    dst: *mut u8,
    _types: PhantomData<fn() -> T>,
}

impl<T, const CAP: usize> Clone for WordPop<T, CAP> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T, const CAP: usize> Copy for WordPop<T, CAP> {}

impl<T, const CAP: usize> Seq<BufSlot<CAP>> for WordPop<T, CAP> {
    type Out = bool;

    #[inline(always)]
    unsafe fn run<I: Index, H: Hooks, K>(
        self,
        area: crate::ThreadArea,
        cpu: u32,
        slot: &BufSlot<CAP>,
        k: impl Step<bool, K>,
    ) -> K {
        hooks::inject_c::<H>(8);
        // SAFETY: as in `WordPush`; `dst` is the caller's private word.
        unsafe {
            arch::slot_word_pop_k::<I, H, K, Words<T, CAP>>(
                area,
                cpu,
                slot.base(),
                self.dst,
                Then {
                    out: || true,
                    step: k,
                },
            )
        }
    }

    fn compare_failed(&mut self, slot: &BufSlot<CAP>) -> Attempt<bool> {
        pop_failed(&slot.offset)
    }
}

/// The push of a pointer word given as a value (a box's address): stored from a
/// register inside the sequence.
#[derive(Clone, Copy)]
struct PtrPush<const CAP: usize>(usize);

impl<const CAP: usize> Seq<BufSlot<CAP>> for PtrPush<CAP> {
    type Out = Pushed;

    #[inline(always)]
    unsafe fn run<I: Index, H: Hooks, K>(
        self,
        area: crate::ThreadArea,
        cpu: u32,
        slot: &BufSlot<CAP>,
        k: impl Step<Pushed, K>,
    ) -> K {
        hooks::inject_c::<H>(8);
        // SAFETY: as in `WordPush`; the word is a box's address (every byte set).
        unsafe {
            arch::slot_word_push_reg_k::<I, Relaxed, H, K, Words<usize, CAP>>(
                area,
                cpu,
                slot.base(),
                self.0,
                Then {
                    out: || Pushed::Yes,
                    step: k,
                },
            )
        }
    }

    fn compare_failed(&mut self, slot: &BufSlot<CAP>) -> Attempt<Pushed> {
        slot.push_failed()
    }
}

/// The pop of a pointer word that is never 0, 1 or 2, returned in a register: the
/// word, or 0 for "empty or stopped: the shared fallback".
#[derive(Clone, Copy)]
struct PtrPop<const CAP: usize>;

impl<const CAP: usize> Seq<BufSlot<CAP>> for PtrPop<CAP> {
    type Out = usize;

    #[inline(always)]
    unsafe fn run<I: Index, H: Hooks, K>(
        self,
        area: crate::ThreadArea,
        cpu: u32,
        slot: &BufSlot<CAP>,
        k: impl Step<usize, K>,
    ) -> K {
        let mut word = MaybeUninit::<usize>::uninit();
        let out = word.as_mut_ptr();
        let then = Then {
            // SAFETY: read only on commit, after the pop wrote it.
            out: move || unsafe { out.read() },
            step: k,
        };
        hooks::inject_c::<H>(8);
        // SAFETY: as in `WordPop`; the slot's words are box addresses above 2 (the
        // caller, `pop_box`); `out` is private to this attempt.
        unsafe {
            arch::slot_word_pop_reg_k::<I, H, K, Words<usize, CAP>>(
                area,
                cpu,
                slot.base(),
                out,
                then,
            )
        }
    }

    fn compare_failed(&mut self, slot: &BufSlot<CAP>) -> Attempt<usize> {
        pop_failed(&slot.offset)
    }
}

/// How a `T` is kept in a slot word.
struct Stored<T>(PhantomData<T>);

impl<T> Stored<T> {
    /// `T` fits a word (size and alignment at most 8): its bytes are moved into the
    /// slot and back by the sequence itself (the op's copy reads and writes bytes, so
    /// padding or uninitialised bytes in `T` are never read as an integer); no
    /// allocation. Larger values are boxed and the box's address is stored.
    const INLINE: bool =
        size_of::<T>() <= size_of::<usize>() && align_of::<T>() <= align_of::<usize>();
    /// Bytes the sequence copies.
    const LEN: usize = if Self::INLINE {
        size_of::<T>()
    } else {
        size_of::<*mut T>()
    };
}

/// A value on its way into a slot: the slot word itself (the value's own bytes, or
/// the address of its box), kept in memory for the sequence to copy.
struct Outgoing<T> {
    word: MaybeUninit<usize>,
    _value: PhantomData<T>,
}

impl<T> Outgoing<T> {
    #[inline(always)]
    fn new(value: T) -> Self {
        let mut word = MaybeUninit::<usize>::uninit();
        if Stored::<T>::INLINE {
            // SAFETY: a `T` fits the word and its alignment (`INLINE`).
            unsafe { word.as_mut_ptr().cast::<T>().write(value) };
        } else {
            word.write(Box::into_raw(Box::new(value)) as usize);
        }
        Outgoing {
            word,
            _value: PhantomData,
        }
    }

    /// The bytes the sequence copies into the slot.
    #[inline(always)]
    fn src(&self) -> *const u8 {
        self.word.as_ptr().cast()
    }

    /// The value back (it was not published).
    #[inline(always)]
    fn back(self) -> T {
        // SAFETY: the word holds the value as `Stored` says, never published: ours.
        unsafe { take_word::<T>(&self.word) }
    }
}

/// A slot word copied out by a committed pop (or read with exclusive access).
///
/// # Safety
/// `word` must hold a published value of type `T` stored as [`Stored`] says, which
/// the caller now owns (it was unpublished).
#[inline(always)]
unsafe fn take_word<T>(word: *const MaybeUninit<usize>) -> T {
    if Stored::<T>::INLINE {
        // SAFETY: the word's first bytes are a `T` (caller); aligned (align <= 8).
        unsafe { word.cast::<T>().read() }
    } else {
        // SAFETY: the word is the address of an owned box (caller), fully initialised.
        unsafe { *Box::from_raw(word.cast::<*mut T>().read()) }
    }
}

/// A bounded per-CPU buffer (LIFO array) of owned values, `CAP` per CPU:
/// [`push`](Self::push) fails when the current CPU's array is full,
/// [`pop`](Self::pop) returns `None` when it is empty (and the shared fallback is
/// empty too). `push` commits with a plain store, [`push_release`](Self::push_release)
/// with a release store (the reference's `-M`), for consumers that read the items
/// from another CPU after a fence.
///
/// Values that fit a machine word (`Box<U>`, `Arc<U>`, `NonNull<U>`, `&'static U`,
/// integers, any `T` of at most 8 bytes and alignment) are stored in the slot itself:
/// push and pop allocate nothing, and the sequence moves the value's bytes (ownership
/// moves, it is never duplicated). Larger values are boxed (one allocation per push).
///
/// Threads without rseq use a shared fallback buffer of the same capacity.
///
/// # Examples
/// ```
/// use restartable::PerCpuBuffer;
///
/// let buf: PerCpuBuffer<String, 2> = PerCpuBuffer::new();
/// assert!(buf.push("a".to_string()).is_ok());
/// assert_eq!(buf.pop().as_deref(), Some("a"));
/// assert!(buf.pop().is_none());
/// ```
pub struct PerCpuBuffer<T, const CAP: usize = 256, H: Hooks = NoHooks> {
    slots: LazySlots<BufSlot<CAP>>,
    index: IndexBy,
    fallback: SharedList<T>,
    /// Serialises thieves ([`steal`](Self::steal)).
    steal_lock: Mutex<()>,
    _owns: PhantomData<T>,
    _hooks: PhantomData<H>,
}

// SAFETY: values move between threads through the buffer (T: Send); slots are
// atomics written only by sequences of their CPU.
unsafe impl<T: Send, const CAP: usize, H: Hooks> Sync for PerCpuBuffer<T, CAP, H> {}
// SAFETY: moving the buffer moves the owned values.
unsafe impl<T: Send, const CAP: usize, H: Hooks> Send for PerCpuBuffer<T, CAP, H> {}

impl<T, const CAP: usize> PerCpuBuffer<T, CAP, NoHooks> {
    /// An empty buffer indexed by CPU. `const`: a buffer can be a `static`; its
    /// per-CPU storage is reserved on first use.
    pub const fn new() -> Self {
        assert!(CAP > 0 && CAP <= isize::MAX as usize / 8);
        PerCpuBuffer {
            slots: LazySlots::new(),
            index: IndexBy::Cpu,
            fallback: SharedList::new(),
            steal_lock: Mutex::new(()),
            _owns: PhantomData,
            _hooks: PhantomData,
        }
    }

    /// An empty buffer indexed as asked.
    pub fn with_index(index: IndexBy) -> Self {
        Self::with_hooks(index)
    }
}

impl<T, const CAP: usize> Default for PerCpuBuffer<T, CAP, NoHooks> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const CAP: usize, H: Hooks> PerCpuBuffer<T, CAP, H> {
    /// An empty buffer whose sequences carry the hooks `H`.
    pub fn with_hooks(index: IndexBy) -> Self {
        assert!(CAP > 0 && CAP <= isize::MAX as usize / 8);
        let index = effective_index(index);
        PerCpuBuffer {
            slots: LazySlots::eager(index),
            index,
            fallback: SharedList::new(),
            steal_lock: Mutex::new(()),
            _owns: PhantomData,
            _hooks: PhantomData,
        }
    }

    /// The index mode in use.
    pub fn index(&self) -> IndexBy {
        self.index
    }

    /// Capacity per CPU.
    pub const fn capacity(&self) -> usize {
        CAP
    }

    /// Pushes `value` on the current CPU's array; gives it back when that is full.
    #[inline(always)]
    pub fn push(&self, value: T) -> Result<(), T> {
        self.push_ordered::<Relaxed>(value)
    }

    /// As [`push`](Self::push), committing with a release store.
    #[inline(always)]
    pub fn push_release(&self, value: T) -> Result<(), T> {
        self.push_ordered::<Release>(value)
    }

    #[inline(always)]
    fn push_ordered<O: Order>(&self, value: T) -> Result<(), T> {
        let item = Outgoing::new(value);
        let push = WordPush::<T, O, CAP> {
            src: item.src(),
            _types: PhantomData,
        };
        match on_current_cpu::<H, _, _>(&self.slots, push, |_| Pushed::Fallback) {
            Pushed::Yes => Ok(()),
            Pushed::Full => Err(item.back()),
            Pushed::Fallback => self.fallback.push::<H>(item.back(), CAP),
        }
    }

    /// Pops the last value of the current CPU's array, else of the shared fallback.
    #[inline(always)]
    pub fn pop(&self) -> Option<T> {
        let mut word = MaybeUninit::<usize>::uninit();
        let pop = WordPop::<T, CAP> {
            dst: word.as_mut_ptr().cast::<u8>(),
            _types: PhantomData,
        };
        if on_current_cpu::<H, _, _>(&self.slots, pop, |_| false) {
            // SAFETY: a committed pop copied a published value's word into `word` and
            // unpublished it: ours now.
            Some(unsafe { take_word::<T>(&word) })
        } else {
            self.fallback.pop::<H>()
        }
    }

    /// Takes every value of slot `cpu`'s array (oldest first), while its owners may
    /// keep pushing and popping: the slot's offset is swapped for a "stopped" mark
    /// (its operations, which compare the offset inside their sequence, fail over to
    /// the shared fallback), a membarrier fence restarts the sequences in flight on
    /// it, the published values are taken, and the slot reopens empty. A sequence
    /// that had passed its compare before the swap and committed after it overwrites
    /// the mark: the thief sees that after the fence and starts again. Nothing is
    /// lost or duplicated; the owners' fast path pays nothing for it (the stopped mark
    /// fails the checks it already makes).
    ///
    /// Fails where membarrier rseq fences are unavailable, or when the fence fails:
    /// then the slot is left as it was, nothing taken.
    ///
    /// # Panics
    /// If `cpu` is not below the slot count, or the storage cannot be set up.
    pub fn steal(&self, cpu: usize) -> Result<Vec<T>, FenceError> {
        let storage = self.slots.force();
        assert!(cpu < storage.slots(), "slot {cpu} out of range");
        let _thief = self.steal_lock.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: `cpu` is below the slot count of set-up storage.
        let slot = unsafe { &*self.slots.slot_ptr(cpu) };
        let mut out = Vec::new();
        // The room the values need, allocated before the slot stops (nothing may fail
        // while it is stopped): what it holds now, or more if it grew since.
        let mut need = 0;
        loop {
            need = need.max((slot.offset.load(Ordering::Relaxed).max(0) as usize).min(CAP));
            out.reserve(need);
            // Thieves are serialised and reopen what they stop: `was` is a count.
            let was = slot.offset.swap(STOPPED, Ordering::SeqCst);
            if let Err(e) = fence_slot(self.index, cpu) {
                // Put the count back unless a sequence that had compared before the
                // swap committed since (its offset is the slot's state then).
                let _ =
                    slot.offset
                        .compare_exchange(STOPPED, was, Ordering::SeqCst, Ordering::SeqCst);
                return Err(e);
            }
            if slot.offset.load(Ordering::SeqCst) != STOPPED {
                // Such a commit happened between the swap and the fence: again.
                continue;
            }
            // No sequence on this slot can commit now (in flight: restarted by the
            // fence; new: its compare sees the mark): the first `was` items are ours.
            let n = (was.max(0) as usize).min(CAP);
            if n > out.capacity() {
                // Pushed between the estimate and the stop: reopen the slot as it was
                // (nothing in flight can commit after the fence) and make room first.
                slot.offset.store(was, Ordering::Release);
                need = n;
                continue;
            }
            for i in 0..n {
                // SAFETY: items below the offset are published values, taken once
                // (the slot reopens empty below).
                out.push(unsafe { take_word::<T>(slot.item(i).cast::<MaybeUninit<usize>>()) });
            }
            slot.offset.store(0, Ordering::Release);
            return Ok(out);
        }
    }

    /// Takes every value of every slot and of the shared fallback (see
    /// [`steal`](Self::steal)). If a steal fails, the values taken before it go to the
    /// shared fallback and the error is returned: nothing is lost.
    pub fn steal_all(&self) -> Result<Vec<T>, FenceError> {
        let mut out = Vec::new();
        for cpu in 0..self.slots.force().slots() {
            match self.steal(cpu) {
                Ok(values) => out.extend(values),
                Err(e) => {
                    self.fallback.lock().append(&mut out);
                    return Err(e);
                }
            }
        }
        out.append(&mut self.fallback.lock());
        Ok(out)
    }

    /// Takes every value, with exclusive access.
    pub fn drain(&mut self) -> Vec<T> {
        let mut out = Vec::new();
        for slot in self.slots.get_mut().into_iter().flatten() {
            // (A negative offset is a steal's mark, never left behind; read as 0.)
            let n = (core::mem::take(slot.offset.get_mut()).max(0) as usize).min(CAP);
            for word in &slot.items.get_mut()[..n] {
                // SAFETY: the first `offset` words are published values; the offset
                // is reset above, so each is taken once; exclusive access.
                out.push(unsafe { take_word::<T>(word) });
            }
        }
        out.append(self.fallback.get_mut());
        out
    }
}

/// Boxes move in and out as their addresses in a register (the pool's cache): a box
/// is a pointer, every byte of it initialised, so the word needs no copy through
/// memory.
impl<U, const CAP: usize, H: Hooks> PerCpuBuffer<Box<U>, CAP, H> {
    /// Whether no box of `U` has the address 0, 1 or 2 (the register pop's
    /// sentinels): only a box of a zero-sized type aligned to 1 or 2 does (its
    /// dangling address is its alignment).
    const ABOVE_2: bool = size_of::<U>() != 0 || align_of::<U>() > 2;

    /// As [`push`](Self::push).
    #[inline(always)]
    pub(crate) fn push_box(&self, b: Box<U>) -> Result<(), Box<U>> {
        let p = Box::into_raw(b);
        let back = || {
            // SAFETY: the box was not published: still ours.
            unsafe { Box::from_raw(p) }
        };
        match on_current_cpu::<H, _, _>(&self.slots, PtrPush::<CAP>(p as usize), |_| {
            Pushed::Fallback
        }) {
            Pushed::Yes => Ok(()),
            Pushed::Full => Err(back()),
            Pushed::Fallback => self.fallback.push::<H>(back(), CAP),
        }
    }

    /// As [`pop`](Self::pop), else `or()` (cold: the shared fallback is not looked
    /// at, `or` does what it must), with no test of an `Option` on the way: both
    /// paths give a box (the pool's `get`).
    #[inline(always)]
    pub(crate) fn pop_box_or(&self, or: impl FnOnce() -> Box<U>) -> Box<U> {
        if !Self::ABOVE_2 {
            return match self.pop() {
                Some(b) => b,
                None => or(),
            };
        }
        let word =
            on_current_cpu::<H, _, _>(&self.slots, PtrPop::<CAP>, |_| Box::into_raw(or()) as usize);
        // SAFETY: a committed pop returned a published box's address and unpublished
        // it, or `or` gave one: ours now.
        unsafe { Box::from_raw(word as *mut U) }
    }

    /// The shared fallback's most recent box (see [`pop_box_or`](Self::pop_box_or)).
    pub(crate) fn pop_fallback(&self) -> Option<Box<U>> {
        self.fallback.pop::<H>()
    }

    /// As [`pop`](Self::pop).
    #[inline(always)]
    pub(crate) fn pop_box(&self) -> Option<Box<U>> {
        if !Self::ABOVE_2 {
            return self.pop();
        }
        match on_current_cpu::<H, _, _>(&self.slots, PtrPop::<CAP>, |_| 0) {
            0 => self.fallback.pop::<H>(),
            // SAFETY: a committed pop returned a published box's address (never 0)
            // and unpublished it: ours now.
            word => Some(unsafe { Box::from_raw(word as *mut U) }),
        }
    }
}

impl<const CAP: usize> ArraySlot for BufSlot<CAP> {
    const CAP: usize = CAP;
    #[inline(always)]
    fn offset(&self) -> &AtomicIsize {
        &self.offset
    }
    #[inline(always)]
    fn item(&self, i: usize) -> *mut u8 {
        self.items
            .get()
            .cast::<MaybeUninit<usize>>()
            .wrapping_add(i)
            .cast()
    }
}

/// A per-CPU array of items behind an offset (the buffers' slots).
pub(super) trait ArraySlot: Zeroable {
    /// Items per slot.
    const CAP: usize;
    /// The number of published items (written only by sequences of the slot's CPU).
    fn offset(&self) -> &AtomicIsize;
    /// The address of item `i` (`i < CAP`; address computation only).
    fn item(&self, i: usize) -> *mut u8;
}

/// The offset of a slot stopped by a thief ([`PerCpuBuffer::steal`]): below 0, so a
/// pop finds the slot "empty" and a push finds it "full", and both then go to the
/// shared fallback instead (`compare_failed`), with no extra check on the fast path;
/// and no sequence's compare can match it.
pub(super) const STOPPED: isize = -1;

/// How a push ended.
pub(super) enum Pushed {
    Yes,
    /// This CPU's array is full.
    Full,
    /// Go to the shared fallback.
    Fallback,
}

/// The push sequence of an array: copy `len` bytes from `src` past the published
/// part, then publish them (offset + 1).
pub(super) struct ArrayPush<O> {
    src: *const u8,
    len: usize,
    _order: PhantomData<O>,
}

impl<O> ArrayPush<O> {
    #[inline(always)]
    pub(super) fn new(src: *const u8, len: usize) -> Self {
        ArrayPush {
            src,
            len,
            _order: PhantomData,
        }
    }
}

impl<O> Clone for ArrayPush<O> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<O> Copy for ArrayPush<O> {}

impl<A: ArraySlot, O: Order> Seq<A> for ArrayPush<O> {
    type Out = Pushed;

    #[inline(always)]
    unsafe fn run<I: Index, H: Hooks, K>(
        self,
        area: crate::ThreadArea,
        cpu: u32,
        slot: &A,
        k: impl Step<Pushed, K>,
    ) -> K {
        let off = slot.offset().load(Ordering::Relaxed);
        if off as usize >= A::CAP {
            if off as usize == A::CAP {
                return k.done(Pushed::Full);
            }
            // Stopped by a thief: `compare_failed` sends the push to the fallback.
            return k.compare_failed();
        }
        let dst = slot.item(off as usize);
        hooks::inject_c::<H>(8);
        // SAFETY: `dst` (in bounds: off < CAP) is beyond the published part, written
        // only by sequences of this CPU; the commit of the offset publishes it. `src`
        // holds `len` bytes, an item's size (the container's contract).
        unsafe {
            arch::load_cbne_memcpy_store_k::<I, O, H, K>(
                area,
                cpu,
                slot.offset().as_ptr(),
                off,
                dst,
                self.src,
                self.len,
                off + 1,
                Then {
                    out: || Pushed::Yes,
                    step: k,
                },
            )
        }
    }

    fn compare_failed(&mut self, slot: &A) -> Attempt<Pushed> {
        // Stopped by a thief: the fallback. Otherwise the offset moved under the
        // attempt (a full array is found before the sequence, on the next attempt).
        if slot.offset().load(Ordering::Relaxed) < 0 {
            Attempt::GiveUp
        } else {
            Attempt::Again
        }
    }
}

/// The pop sequence of an array: copy the last published item's `len` bytes to
/// `dst` inside the sequence (so the copy and the commit see the same item: no ABA),
/// then unpublish it (offset - 1). `true`: popped; `false`: empty or the fallback.
pub(super) struct ArrayPop {
    dst: *mut u8,
    len: usize,
}

impl ArrayPop {
    #[inline(always)]
    pub(super) fn new(dst: *mut u8, len: usize) -> Self {
        ArrayPop { dst, len }
    }
}

impl Clone for ArrayPop {
    fn clone(&self) -> Self {
        *self
    }
}
impl Copy for ArrayPop {}

impl<A: ArraySlot> Seq<A> for ArrayPop {
    type Out = bool;

    #[inline(always)]
    unsafe fn run<I: Index, H: Hooks, K>(
        self,
        area: crate::ThreadArea,
        cpu: u32,
        slot: &A,
        k: impl Step<bool, K>,
    ) -> K {
        let off = slot.offset().load(Ordering::Relaxed);
        if off <= 0 {
            // Empty, or stopped by a thief: `compare_failed` sends the pop to the
            // shared fallback list.
            return k.compare_failed();
        }
        let src = slot.item(off as usize - 1);
        hooks::inject_c::<H>(8);
        // SAFETY: `src` (in bounds: 0 < off <= CAP) is a published item (the sequence
        // re-checks the offset before copying); `dst` is the caller's private space
        // of `len` bytes.
        unsafe {
            arch::load_cbne_memcpy_store_k::<I, Relaxed, H, K>(
                area,
                cpu,
                slot.offset().as_ptr(),
                off,
                self.dst,
                src,
                self.len,
                off - 1,
                Then {
                    out: || true,
                    step: k,
                },
            )
        }
    }

    fn compare_failed(&mut self, slot: &A) -> Attempt<bool> {
        pop_failed(slot.offset())
    }
}

impl<T, const CAP: usize, H: Hooks> Drop for PerCpuBuffer<T, CAP, H> {
    fn drop(&mut self) {
        drop(self.drain());
    }
}

impl<T, const CAP: usize, H: Hooks> fmt::Debug for PerCpuBuffer<T, CAP, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerCpuBuffer")
            .field("slots", &self.slots.slots())
            .field("capacity", &CAP)
            .field("index", &self.index)
            .finish()
    }
}
