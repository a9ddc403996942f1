//! [`PerCpuMemcpyBuffer`]: a bounded array of fixed-size items per CPU, copied in and
//! out inside the restartable sequence (the reference's memcpy op).

use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;
use core::mem::{size_of, MaybeUninit};
use core::sync::atomic::AtomicIsize;

use super::buffer::{ArrayPop, ArrayPush, ArraySlot, Pushed};
use super::{effective_index, on_current_cpu, IndexBy, LazySlots, SharedList, Zeroable};
use crate::arch::{Order, Relaxed, Release};
use crate::hooks::{Hooks, NoHooks};

struct CopySlot<T, const CAP: usize> {
    offset: AtomicIsize,
    items: UnsafeCell<[MaybeUninit<T>; CAP]>,
}

// SAFETY: zero offset is empty; MaybeUninit holds any bytes.
unsafe impl<T, const CAP: usize> Zeroable for CopySlot<T, CAP> {}
impl<T, const CAP: usize> ArraySlot for CopySlot<T, CAP> {
    const CAP: usize = CAP;
    #[inline(always)]
    fn offset(&self) -> &AtomicIsize {
        &self.offset
    }
    #[inline(always)]
    fn item(&self, i: usize) -> *mut u8 {
        self.items
            .get()
            .cast::<MaybeUninit<T>>()
            .wrapping_add(i)
            .cast()
    }
}

// SAFETY: items are written and read only inside sequences of their CPU (or with
// exclusive access); T: Copy + Send values cross threads by copy.
unsafe impl<T: Send, const CAP: usize> Sync for CopySlot<T, CAP> {}

/// A bounded per-CPU buffer of `Copy` items, `CAP` per CPU, copied into and out of the
/// array inside the sequence: no allocation per item. [`push`](Self::push) fails when
/// the current CPU's array is full; [`pop`](Self::pop) returns `None` when it and the
/// shared fallback are empty.
///
/// # Examples
/// ```
/// use restartable::PerCpuMemcpyBuffer;
///
/// #[derive(Clone, Copy, PartialEq, Debug)]
/// struct Event { id: u64, payload: [u8; 24] }
///
/// let buf: PerCpuMemcpyBuffer<Event, 64> = PerCpuMemcpyBuffer::new();
/// buf.push(Event { id: 1, payload: [7; 24] }).unwrap();
/// assert_eq!(buf.pop(), Some(Event { id: 1, payload: [7; 24] }));
/// ```
pub struct PerCpuMemcpyBuffer<T: Copy, const CAP: usize = 256, H: Hooks = NoHooks> {
    slots: LazySlots<CopySlot<T, CAP>>,
    index: IndexBy,
    fallback: SharedList<T>,
    _hooks: PhantomData<H>,
}

impl<T: Copy + Send, const CAP: usize> PerCpuMemcpyBuffer<T, CAP, NoHooks> {
    /// An empty buffer indexed by CPU. `const`: a buffer can be a `static`; its
    /// per-CPU storage is reserved on first use.
    pub const fn new() -> Self {
        assert!(CAP > 0 && CAP <= isize::MAX as usize / 8);
        PerCpuMemcpyBuffer {
            slots: LazySlots::new(),
            index: IndexBy::Cpu,
            fallback: SharedList::new(),
            _hooks: PhantomData,
        }
    }

    /// An empty buffer indexed as asked.
    pub fn with_index(index: IndexBy) -> Self {
        Self::with_hooks(index)
    }
}

impl<T: Copy + Send, const CAP: usize> Default for PerCpuMemcpyBuffer<T, CAP, NoHooks> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + Send, const CAP: usize, H: Hooks> PerCpuMemcpyBuffer<T, CAP, H> {
    /// An empty buffer whose sequences carry the hooks `H`.
    pub fn with_hooks(index: IndexBy) -> Self {
        assert!(CAP > 0 && CAP <= isize::MAX as usize / 8);
        let index = effective_index(index);
        PerCpuMemcpyBuffer {
            slots: LazySlots::eager(index),
            index,
            fallback: SharedList::new(),
            _hooks: PhantomData,
        }
    }

    /// The index mode in use.
    pub fn index(&self) -> IndexBy {
        self.index
    }

    /// Copies `item` into the current CPU's array; gives it back when that is full.
    #[inline(always)]
    pub fn push(&self, item: T) -> Result<(), T> {
        self.push_ordered::<Relaxed>(item)
    }

    /// As [`push`](Self::push), committing with a release store.
    #[inline(always)]
    pub fn push_release(&self, item: T) -> Result<(), T> {
        self.push_ordered::<Release>(item)
    }

    #[inline(always)]
    fn push_ordered<O: Order>(&self, item: T) -> Result<(), T> {
        let push = ArrayPush::<O>::new((&item as *const T).cast::<u8>(), size_of::<T>());
        match on_current_cpu::<H, _, _>(&self.slots, push, |_| Pushed::Fallback) {
            Pushed::Yes => Ok(()),
            Pushed::Full => Err(item),
            Pushed::Fallback => self.fallback.push::<H>(item, CAP),
        }
    }

    /// Copies out and removes the last item of the current CPU's array, else of the
    /// shared fallback.
    #[inline(always)]
    pub fn pop(&self) -> Option<T> {
        let mut out = MaybeUninit::<T>::uninit();
        let pop = ArrayPop::new(out.as_mut_ptr().cast::<u8>(), size_of::<T>());
        if on_current_cpu::<H, _, _>(&self.slots, pop, |_| false) {
            // SAFETY: a committed pop copied a whole published item into `out`.
            Some(unsafe { out.assume_init() })
        } else {
            self.fallback.pop::<H>()
        }
    }

    /// Takes every item, with exclusive access.
    pub fn drain(&mut self) -> Vec<T> {
        let mut out = Vec::new();
        for slot in self.slots.get_mut().into_iter().flatten() {
            let n = (core::mem::take(slot.offset.get_mut()) as usize).min(CAP);
            let items = slot.items.get_mut();
            for it in &items[..n] {
                // SAFETY: the first `offset` items were written by committed pushes.
                out.push(unsafe { it.assume_init() });
            }
        }
        out.append(self.fallback.get_mut());
        out
    }
}

impl<T: Copy, const CAP: usize, H: Hooks> fmt::Debug for PerCpuMemcpyBuffer<T, CAP, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerCpuMemcpyBuffer")
            .field("slots", &self.slots.slots())
            .field("capacity", &CAP)
            .field("index", &self.index)
            .finish()
    }
}
