//! [`PerCpuPool`]: a per-CPU object pool. Each CPU keeps a bounded cache of free
//! objects in a [`PerCpuBuffer`] of boxes (a box is one word: it is stored in the slot
//! itself, so taking and returning an object allocates nothing); objects beyond a
//! CPU's capacity overflow to a shared list.

use core::fmt;
use core::mem::ManuallyDrop;
use core::ops::{Deref, DerefMut};

use super::{IndexBy, PerCpuBuffer, SharedList};
use crate::hooks::{Hooks, NoHooks};

/// A per-CPU object pool: [`get`](Self::get) takes a free object from the current
/// CPU's cache (one restartable sequence, no allocation), else from the shared
/// overflow list, else makes one with the constructor; dropping the [`Pooled`] handle
/// returns the object to the cache of the CPU the thread then runs on (or to the
/// overflow list when that cache holds `CAP` objects). Objects are reused as they
/// are: reset them before use if that matters.
///
/// Threads without rseq, and operations that abort too often, use the shared
/// fallback of the underlying buffer (same rules as [`PerCpuBuffer`]). Nothing is
/// freed while the pool lives except by [`drain`](Self::drain); dropping the pool
/// drops every free object.
///
/// `new` is `const`: a pool can be a `static` (its per-CPU storage is reserved on
/// first use).
///
/// # Examples
/// ```
/// use restartable::PerCpuPool;
///
/// static BUFFERS: PerCpuPool<Vec<u8>> = PerCpuPool::new(|| Vec::with_capacity(4096));
///
/// let mut buf = BUFFERS.get();
/// buf.clear();
/// buf.extend_from_slice(b"hello");
/// assert_eq!(&buf[..], b"hello");
/// drop(buf); // back to this CPU's cache
/// assert!(BUFFERS.get().capacity() >= 4096);
/// ```
pub struct PerCpuPool<T, F = fn() -> T, const CAP: usize = 64, H: Hooks = NoHooks> {
    cache: PerCpuBuffer<Box<T>, CAP, H>,
    overflow: SharedList<Box<T>>,
    make: F,
}

impl<T, F: Fn() -> T, const CAP: usize> PerCpuPool<T, F, CAP, NoHooks> {
    /// An empty pool indexed by CPU, making objects with `make`.
    pub const fn new(make: F) -> Self {
        PerCpuPool {
            cache: PerCpuBuffer::new(),
            overflow: SharedList::new(),
            make,
        }
    }
}

impl<T, F: Fn() -> T, const CAP: usize, H: Hooks> PerCpuPool<T, F, CAP, H> {
    /// An empty pool indexed as asked, whose sequences carry the hooks `H`.
    pub fn with_hooks(index: IndexBy, make: F) -> Self {
        PerCpuPool {
            cache: PerCpuBuffer::with_hooks(index),
            overflow: SharedList::new(),
            make,
        }
    }

    /// The index mode in use.
    pub fn index(&self) -> IndexBy {
        self.cache.index()
    }

    /// Capacity of each CPU's cache.
    pub const fn capacity(&self) -> usize {
        CAP
    }

    /// A free object (made with the constructor when none is free).
    #[inline(always)]
    pub fn get(&self) -> Pooled<'_, T, F, CAP, H> {
        let obj = self.cache.pop_box_or(|| self.get_slow());
        Pooled {
            obj: ManuallyDrop::new(obj),
            pool: self,
        }
    }

    /// `get` when this CPU's cache had nothing (or rseq is unavailable): the shared
    /// fallback, the overflow list, else a new object.
    #[cold]
    #[inline(never)]
    fn get_slow(&self) -> Box<T> {
        match self.cache.pop_fallback() {
            Some(b) => b,
            None => match self.take_overflow() {
                Some(b) => b,
                None => self.make_one(),
            },
        }
    }

    #[cold]
    #[inline(never)]
    fn make_one(&self) -> Box<T> {
        Box::new((self.make)())
    }

    /// A free object, or `None` when none is free (the constructor is not called).
    #[inline(always)]
    pub fn try_get(&self) -> Option<Pooled<'_, T, F, CAP, H>> {
        self.try_take().map(|b| Pooled {
            obj: ManuallyDrop::new(b),
            pool: self,
        })
    }

    #[inline(always)]
    fn try_take(&self) -> Option<Box<T>> {
        match self.cache.pop_box() {
            Some(b) => Some(b),
            None => self.take_overflow(),
        }
    }

    #[cold]
    #[inline(never)]
    fn take_overflow(&self) -> Option<Box<T>> {
        self.overflow.lock().pop()
    }

    /// Adds `obj` to the free objects (the current CPU's cache, else the overflow
    /// list): how an object detached with [`Pooled::into_box`], or made elsewhere,
    /// joins the pool.
    #[inline(always)]
    pub fn put(&self, obj: Box<T>) {
        if let Err(obj) = self.cache.push_box(obj) {
            self.put_overflow(obj);
        }
    }

    #[cold]
    #[inline(never)]
    fn put_overflow(&self, obj: Box<T>) {
        self.overflow.lock().push(obj);
    }

    /// Makes `n` objects with the constructor and adds them to the free objects
    /// (the current CPU's cache first).
    pub fn prefill(&self, n: usize) {
        for _ in 0..n {
            self.put(self.make_one());
        }
    }

    /// Takes every free object, with exclusive access.
    pub fn drain(&mut self) -> Vec<T> {
        let mut out: Vec<T> = self.cache.drain().into_iter().map(|b| *b).collect();
        out.extend(self.overflow.get_mut().drain(..).map(|b| *b));
        out
    }

    /// Takes the free objects cached on slot `cpu`, while threads keep getting and
    /// returning objects: through a membarrier fence, like
    /// [`PerCpuBuffer::steal`] (the slot's operations use the shared paths
    /// meanwhile). Nothing is lost or duplicated; on error nothing is taken.
    ///
    /// # Errors
    /// Where membarrier rseq fences are unavailable, or when the fence fails.
    ///
    /// # Panics
    /// If `cpu` is not below the slot count.
    pub fn steal(&self, cpu: usize) -> Result<Vec<T>, crate::FenceError> {
        Ok(self.cache.steal(cpu)?.into_iter().map(|b| *b).collect())
    }

    /// Takes every free object (every CPU's cache, the shared lists), while threads
    /// keep using the pool (see [`steal`](Self::steal)). On error the objects taken
    /// before it go to the overflow list: nothing is lost.
    ///
    /// # Errors
    /// As [`steal`](Self::steal).
    pub fn steal_all(&self) -> Result<Vec<T>, crate::FenceError> {
        let mut out: Vec<T> = self.cache.steal_all()?.into_iter().map(|b| *b).collect();
        out.extend(self.overflow.lock().drain(..).map(|b| *b));
        Ok(out)
    }

    /// How many free objects the overflow list holds.
    pub fn overflow_len(&self) -> usize {
        self.overflow.lock().len()
    }
}

impl<T, F, const CAP: usize, H: Hooks> fmt::Debug for PerCpuPool<T, F, CAP, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerCpuPool")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

/// An object taken from a [`PerCpuPool`]: derefs to it; dropping the handle returns
/// it to the pool (to the cache of the CPU the thread runs on then).
pub struct Pooled<'a, T, F: Fn() -> T = fn() -> T, const CAP: usize = 64, H: Hooks = NoHooks> {
    obj: ManuallyDrop<Box<T>>,
    pool: &'a PerCpuPool<T, F, CAP, H>,
}

impl<T, F: Fn() -> T, const CAP: usize, H: Hooks> Pooled<'_, T, F, CAP, H> {
    /// Takes the object out of the pool for good (it is not returned on drop).
    pub fn into_box(self) -> Box<T> {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so the object is taken out exactly once.
        unsafe { ManuallyDrop::take(&mut this.obj) }
    }
}

impl<T, F: Fn() -> T, const CAP: usize, H: Hooks> Deref for Pooled<'_, T, F, CAP, H> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        &self.obj
    }
}

impl<T, F: Fn() -> T, const CAP: usize, H: Hooks> DerefMut for Pooled<'_, T, F, CAP, H> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.obj
    }
}

impl<T, F: Fn() -> T, const CAP: usize, H: Hooks> Drop for Pooled<'_, T, F, CAP, H> {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: the handle is being dropped: the object is taken out exactly once.
        let obj = unsafe { ManuallyDrop::take(&mut self.obj) };
        self.pool.put(obj);
    }
}

impl<T: fmt::Debug, F: Fn() -> T, const CAP: usize, H: Hooks> fmt::Debug
    for Pooled<'_, T, F, CAP, H>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pooled").field(&**self.obj).finish()
    }
}
