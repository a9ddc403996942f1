//! [`PerCpuBuffer`]: a bounded array of owned values per CPU; push and pop are
//! restartable sequences.

use core::fmt;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicIsize, Ordering};

use super::{
    effective_index, on_current_cpu, with_index, Attempt, IndexBy, PerCpu, SharedList, Zeroable,
};
use crate::arch::{self, Index, Order, Relaxed, Release};
use crate::hooks::{self, Hooks, NoHooks};

/// One CPU's array: `items[..offset]` hold boxed values.
struct BufSlot<const CAP: usize> {
    offset: AtomicIsize,
    items: [AtomicIsize; CAP],
}

// SAFETY: zero is an empty array.
unsafe impl<const CAP: usize> Zeroable for BufSlot<CAP> {}

/// A bounded per-CPU buffer (LIFO array) of owned values, `CAP` per CPU:
/// [`push`](Self::push) fails when the current CPU's array is full,
/// [`pop`](Self::pop) returns `None` when it is empty (and the shared fallback is
/// empty too). `push` commits with a plain store, [`push_release`](Self::push_release)
/// with a release store (the reference's `-M`), for consumers that read the items
/// from another CPU after a fence.
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
    slots: PerCpu<BufSlot<CAP>>,
    index: IndexBy,
    fallback: SharedList<T>,
    _owns: PhantomData<Box<T>>,
    _hooks: PhantomData<H>,
}

// SAFETY: values move between threads through the buffer (T: Send); slots are
// atomics written only by sequences of their CPU.
unsafe impl<T: Send, const CAP: usize, H: Hooks> Sync for PerCpuBuffer<T, CAP, H> {}
// SAFETY: moving the buffer moves the owned values.
unsafe impl<T: Send, const CAP: usize, H: Hooks> Send for PerCpuBuffer<T, CAP, H> {}

impl<T, const CAP: usize> PerCpuBuffer<T, CAP, NoHooks> {
    /// An empty buffer indexed by CPU.
    pub fn new() -> Self {
        Self::with_index(IndexBy::Cpu)
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
            slots: PerCpu::new(index),
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
    #[inline]
    pub fn push(&self, value: T) -> Result<(), T> {
        self.push_ordered::<Relaxed>(value)
    }

    /// As [`push`](Self::push), committing with a release store.
    #[inline]
    pub fn push_release(&self, value: T) -> Result<(), T> {
        self.push_ordered::<Release>(value)
    }

    #[inline(always)]
    fn push_ordered<O: Order>(&self, value: T) -> Result<(), T> {
        let item = Box::into_raw(Box::new(value));
        let r = with_index!(self.index, I => self.push_as::<I, O>(item));
        match r {
            Some(true) => Ok(()),
            // SAFETY: not published; ours.
            Some(false) => Err(*unsafe { Box::from_raw(item) }),
            // SAFETY: not published; ours.
            None => self
                .fallback
                .push::<H>(*unsafe { Box::from_raw(item) }, CAP),
        }
    }

    /// `Some(true)` pushed, `Some(false)` full, `None` use the fallback.
    #[inline(always)]
    fn push_as<I: Index, O: Order>(&self, item: *mut T) -> Option<bool> {
        on_current_cpu::<I, H, _, _>(&self.slots, |area, cpu, slot| {
            let off = slot.offset.load(Ordering::Relaxed);
            if off as usize >= CAP {
                return Attempt::Done(false);
            }
            hooks::inject_c::<H>(8);
            // SAFETY: `items[off]` is beyond the published part, written only by
            // sequences of this CPU; the commit of `offset` publishes it.
            let r = unsafe {
                arch::load_cbne_store_store::<I, O, H>(
                    area,
                    cpu,
                    slot.offset.as_ptr(),
                    off,
                    slot.items[off as usize].as_ptr(),
                    item as isize,
                    off + 1,
                )
            };
            Attempt::from_op(r, || true, || Attempt::Again)
        })
    }

    /// Pops the last value of the current CPU's array, else of the shared fallback.
    #[inline]
    pub fn pop(&self) -> Option<T> {
        match with_index!(self.index, I => self.pop_as::<I>()) {
            // SAFETY: a committed pop unpublished `item`: ours now.
            Some(Some(item)) => Some(*unsafe { Box::from_raw(item) }),
            _ => self.fallback.pop::<H>(),
        }
    }

    /// `Some(Some)` popped, `Some(None)` this CPU's array is empty, `None` use
    /// the fallback.
    #[inline(always)]
    fn pop_as<I: Index>(&self) -> Option<Option<*mut T>> {
        on_current_cpu::<I, H, _, _>(&self.slots, |area, cpu, slot| {
            let off = slot.offset.load(Ordering::Relaxed);
            if off <= 0 {
                return Attempt::Done(None);
            }
            let cell = &slot.items[(off - 1) as usize];
            let item = cell.load(Ordering::Relaxed);
            hooks::inject_c::<H>(8);
            // SAFETY: the slot's words are written only by sequences of this CPU; the
            // sequence re-checks both the offset and the item before committing.
            let r = unsafe {
                arch::load_cbne_load_cbne_store::<I, H>(
                    area,
                    cpu,
                    slot.offset.as_ptr(),
                    off,
                    cell.as_ptr(),
                    item,
                    off - 1,
                )
            };
            Attempt::from_op(r, || Some(item as *mut T), || Attempt::Again)
        })
    }

    /// Takes every value, with exclusive access.
    pub fn drain(&mut self) -> Vec<T> {
        let mut out = Vec::new();
        for slot in self.slots.iter_mut() {
            let n = core::mem::take(slot.offset.get_mut()) as usize;
            for cell in &mut slot.items[..n.min(CAP)] {
                let p = core::mem::take(cell.get_mut());
                // SAFETY: published items are owned boxes; exclusive access.
                out.push(*unsafe { Box::from_raw(p as *mut T) });
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
