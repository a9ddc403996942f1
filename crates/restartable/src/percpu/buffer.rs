//! [`PerCpuBuffer`]: a bounded array of owned values per CPU; push and pop are
//! restartable sequences.

use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;
use core::mem::{align_of, size_of, ManuallyDrop, MaybeUninit};
use core::sync::atomic::{AtomicIsize, Ordering};

use super::{
    effective_index, on_current_cpu, with_index, Attempt, IndexBy, LazySlots, SharedList, Zeroable,
};
use crate::arch::{self, Index, Order, Relaxed, Release};
use crate::hooks::{self, Hooks, NoHooks};

/// One CPU's array: `items[..offset]` hold published values, each one word: the
/// value's own bytes when it fits ([`Stored::INLINE`]), else the address of its box.
struct BufSlot<const CAP: usize> {
    offset: AtomicIsize,
    items: UnsafeCell<[MaybeUninit<usize>; CAP]>,
}

// SAFETY: zero is an empty array (MaybeUninit holds any bytes).
unsafe impl<const CAP: usize> Zeroable for BufSlot<CAP> {}

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

/// A value on its way into a slot: its own bytes, or its box.
enum Outgoing<T> {
    Inline(ManuallyDrop<T>),
    Boxed(*mut T),
}

impl<T> Outgoing<T> {
    #[inline(always)]
    fn new(value: T) -> Self {
        if Stored::<T>::INLINE {
            Outgoing::Inline(ManuallyDrop::new(value))
        } else {
            Outgoing::Boxed(Box::into_raw(Box::new(value)))
        }
    }

    /// The bytes the sequence copies into the slot.
    #[inline(always)]
    fn src(&self) -> *const u8 {
        match self {
            Outgoing::Inline(v) => (&**v as *const T).cast(),
            Outgoing::Boxed(p) => (p as *const *mut T).cast(),
        }
    }

    /// The value back (it was not published).
    #[inline(always)]
    fn back(self) -> T {
        match self {
            Outgoing::Inline(v) => ManuallyDrop::into_inner(v),
            // SAFETY: the box was never published: still ours.
            Outgoing::Boxed(p) => *unsafe { Box::from_raw(p) },
        }
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
            slots: LazySlots::eager(),
            index,
            fallback: SharedList::new(),
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
        match with_index!(self.index, I => self.push_as::<I, O>(item.src())) {
            Some(true) => Ok(()),
            Some(false) => Err(item.back()),
            None => self.fallback.push::<H>(item.back(), CAP),
        }
    }

    /// `Some(true)` pushed (the slot owns the value now), `Some(false)` full, `None`
    /// use the fallback.
    #[inline(always)]
    fn push_as<I: Index, O: Order>(&self, src: *const u8) -> Option<bool> {
        on_current_cpu::<I, H, _, _>(&self.slots, |area, cpu, slot| {
            let off = slot.offset.load(Ordering::Relaxed);
            if off as usize >= CAP {
                return Attempt::Done(false);
            }
            // SAFETY: in bounds (off < CAP); address computation only.
            let dst = unsafe {
                slot.items
                    .get()
                    .cast::<MaybeUninit<usize>>()
                    .add(off as usize)
            };
            hooks::inject_c::<H>(8);
            // SAFETY: `dst` is beyond the published part, written only by sequences
            // of this CPU; the commit of `offset` publishes it. `src` holds LEN bytes.
            let r = unsafe {
                arch::load_cbne_memcpy_store::<I, O, H>(
                    area,
                    cpu,
                    slot.offset.as_ptr(),
                    off,
                    dst.cast::<u8>(),
                    src,
                    Stored::<T>::LEN,
                    off + 1,
                )
            };
            Attempt::from_op(r, || true, || Attempt::Again)
        })
    }

    /// Pops the last value of the current CPU's array, else of the shared fallback.
    #[inline(always)]
    pub fn pop(&self) -> Option<T> {
        let mut word = MaybeUninit::<usize>::uninit();
        match with_index!(self.index, I => self.pop_as::<I>(&mut word)) {
            // SAFETY: a committed pop copied a published value's word into `word` and
            // unpublished it: ours now.
            Some(true) => Some(unsafe { take_word::<T>(&word) }),
            _ => self.fallback.pop::<H>(),
        }
    }

    /// `Some(true)` popped into `out`, `Some(false)` this CPU's array is empty,
    /// `None` use the fallback.
    #[inline(always)]
    fn pop_as<I: Index>(&self, out: &mut MaybeUninit<usize>) -> Option<bool> {
        on_current_cpu::<I, H, _, _>(&self.slots, |area, cpu, slot| {
            let off = slot.offset.load(Ordering::Relaxed);
            if off <= 0 {
                return Attempt::Done(false);
            }
            // SAFETY: in bounds (0 < off <= CAP); address computation only.
            let src = unsafe {
                slot.items
                    .get()
                    .cast::<MaybeUninit<usize>>()
                    .add(off as usize - 1)
            };
            hooks::inject_c::<H>(8);
            // SAFETY: `src` is a published value (the sequence re-checks the offset
            // before copying, so the copy and the commit see the same item: no ABA);
            // `out` is private and a word long.
            let r = unsafe {
                arch::load_cbne_memcpy_store::<I, Relaxed, H>(
                    area,
                    cpu,
                    slot.offset.as_ptr(),
                    off,
                    out.as_mut_ptr().cast::<u8>(),
                    src.cast::<u8>(),
                    Stored::<T>::LEN,
                    off - 1,
                )
            };
            Attempt::from_op(r, || true, || Attempt::Again)
        })
    }

    /// Takes every value, with exclusive access.
    pub fn drain(&mut self) -> Vec<T> {
        let mut out = Vec::new();
        for slot in self.slots.get_mut().into_iter().flatten() {
            let n = (core::mem::take(slot.offset.get_mut()) as usize).min(CAP);
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
