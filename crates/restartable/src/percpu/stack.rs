//! [`PerCpuStack`]: a linked-list stack per CPU; push and pop are restartable
//! sequences, and another thread can take a CPU's whole list with a fence.

use core::fmt;
use core::marker::PhantomData;
use core::mem::offset_of;
use core::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Mutex;

use super::{
    effective_index, fence_slot, on_current_cpu, Attempt, IndexBy, LazySlots, Seq, SharedList,
    Step, Then, Zeroable,
};
use crate::arch::{self, Index};
use crate::hooks::{self, Hooks, NoHooks};
use crate::FenceError;

#[repr(C)]
struct Node<T> {
    next: isize,
    value: T,
}

/// An owned node of a [`PerCpuStack`]: a value in the box that links it into a
/// per-CPU list. Allocated once ([`new`](Self::new)), it moves in and out of stacks
/// with [`PerCpuStack::push_node`] and [`PerCpuStack::pop_node`] without any
/// allocator call, for free lists and object caches. Derefs to the value.
///
/// ```
/// use restartable::{PerCpuStack, StackNode};
///
/// let free: PerCpuStack<[u8; 64]> = PerCpuStack::new();
/// free.push_node(StackNode::new([0; 64])); // the one allocation
/// for _ in 0..1000 {
///     let mut buf = free.pop_node().unwrap(); // no allocation...
///     buf[0] = buf[0].wrapping_add(1);
///     free.push_node(buf); // ...and none here
/// }
/// assert_eq!(free.pop_node().unwrap()[0], 232); // 1000 mod 256
/// ```
pub struct StackNode<T> {
    node: Box<Node<T>>,
}

impl<T> StackNode<T> {
    /// A node holding `value` (allocates the node).
    pub fn new(value: T) -> Self {
        StackNode {
            node: Box::new(Node { next: 0, value }),
        }
    }

    /// The value, freeing the node.
    pub fn into_inner(self) -> T {
        self.node.value
    }

    /// The node's address, ownership passed to the caller.
    #[inline(always)]
    fn into_raw(self) -> *mut Node<T> {
        Box::into_raw(self.node)
    }

    /// # Safety
    /// `p` must come from [`into_raw`](Self::into_raw) and be owned by the caller.
    #[inline(always)]
    unsafe fn from_raw(p: *mut Node<T>) -> Self {
        StackNode {
            // SAFETY: an owned node from `into_raw` (caller).
            node: unsafe { Box::from_raw(p) },
        }
    }
}

impl<T> core::ops::Deref for StackNode<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.node.value
    }
}

impl<T> core::ops::DerefMut for StackNode<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.node.value
    }
}

impl<T: fmt::Debug> fmt::Debug for StackNode<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StackNode").field(&self.node.value).finish()
    }
}

/// A failed push compare: the slot was stopped by a thief (give up: fallback), or
/// the head changed (again).
fn stopped_or_again<R>(slot: &StackSlot) -> Attempt<R> {
    if slot.stopped.load(Ordering::Relaxed) != 0 {
        Attempt::GiveUp
    } else {
        Attempt::Again
    }
}

/// The push sequence: link the node to the head, then publish it, unless the head
/// changed or the slot is stopped.
struct Push<T>(*mut Node<T>);

impl<T> Clone for Push<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Push<T> {}

impl<T> Seq<StackSlot> for Push<T> {
    type Out = ();

    #[inline(always)]
    unsafe fn run<I: Index, H: Hooks, K>(
        self,
        area: crate::ThreadArea,
        cpu: u32,
        slot: &StackSlot,
        k: impl Step<(), K>,
    ) -> K {
        hooks::inject_c::<H>(8);
        // SAFETY: head and stopped are this CPU's slot words, written only by its
        // sequences (or a thief after stopping and fencing); the node is ours until
        // the commit publishes it (its `next` is written inside the sequence); `cpu`
        // was read from `area` (contract).
        unsafe {
            arch::slot_list_push_k::<I, H, K, GUARD, HEAD, NEXT>(
                area,
                cpu,
                slot.base(),
                self.0.cast(),
                Then {
                    out: || (),
                    step: k,
                },
            )
        }
    }

    fn compare_failed(&mut self, slot: &StackSlot) -> Attempt<()> {
        stopped_or_again(slot)
    }
}

/// The pop sequence: unlink the head, unless the list is empty or the slot stopped
/// (both go to the shared fallback list).
struct Pop<T>(PhantomData<fn() -> T>);

impl<T> Clone for Pop<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Pop<T> {}

impl<T> Seq<StackSlot> for Pop<T> {
    type Out = Option<StackNode<T>>;

    #[inline(always)]
    unsafe fn run<I: Index, H: Hooks, K>(
        self,
        area: crate::ThreadArea,
        cpu: u32,
        slot: &StackSlot,
        k: impl Step<Self::Out, K>,
    ) -> K {
        let mut popped = core::mem::MaybeUninit::<isize>::uninit();
        let out = popped.as_mut_ptr();
        let then = Then {
            // SAFETY: a committed pop wrote the unlinked node's address into `popped`
            // and unlinked it: we own it now.
            out: move || Some(unsafe { StackNode::from_raw(out.read() as *mut Node<T>) }),
            step: k,
        };
        hooks::inject_c::<H>(8);
        // SAFETY: head is this CPU's list: every non-zero value is a live node (nodes
        // leave the list only through committed pops on this CPU or a thief that
        // stopped the slot, which the guard compare sees); `popped` is private.
        unsafe {
            arch::slot_list_pop_k::<I, H, K, GUARD, HEAD, NEXT>(area, cpu, slot.base(), out, then)
        }
    }

    fn compare_failed(&mut self, _: &StackSlot) -> Attempt<Self::Out> {
        // Empty, or stopped by a thief: either way the shared fallback list next.
        Attempt::GiveUp
    }
}

/// One CPU's list. The sequences address both words from the slot's base
/// ([`HEAD`], [`GUARD`]).
#[derive(Default)]
#[repr(C)]
struct StackSlot {
    /// Address of the first node, 0 when empty. Written only by sequences of this
    /// slot's CPU, or by a thief that stopped the slot and fenced.
    head: AtomicIsize,
    /// Non-zero while a thief owns the list: every sequence on the slot then fails
    /// its compare and the operation goes to the shared fallback.
    stopped: AtomicIsize,
}

// SAFETY: zero is an empty, running slot.
unsafe impl Zeroable for StackSlot {}

impl StackSlot {
    /// The slot's address, from which the sequences address its words.
    #[inline(always)]
    fn base(&self) -> *mut u8 {
        (self as *const StackSlot).cast_mut().cast()
    }
}

/// Displacement of the head in a slot.
const HEAD: usize = offset_of!(StackSlot, head);
/// Displacement of the stopped word in a slot.
const GUARD: usize = offset_of!(StackSlot, stopped);

/// A per-CPU stack (LIFO) of owned values: [`push`](Self::push) and
/// [`pop`](Self::pop) work on the current CPU's list with one restartable sequence
/// each; [`steal`](Self::steal) takes another CPU's whole list safely (membarrier
/// fence). Nodes are owned by the stack and freed with it.
///
/// [`push`](Self::push) allocates a node and [`pop`](Self::pop) frees it; with owned
/// nodes ([`StackNode`], [`push_node`](Self::push_node), [`pop_node`](Self::pop_node))
/// the same sequences run with no allocator call (an intrusive list, as the
/// reference's). `new` is `const`: a stack can be a `static` (its per-CPU storage is
/// reserved on first use).
///
/// Threads without rseq push to and pop from a shared fallback list, which `pop`
/// also drains when the current CPU's list is empty.
///
/// # Examples
/// ```
/// use restartable::PerCpuStack;
///
/// let free_list = PerCpuStack::new();
/// free_list.push(7u32);
/// free_list.push(8u32);
/// let mut got = vec![free_list.pop().unwrap(), free_list.pop().unwrap()];
/// got.sort();
/// assert_eq!(got, [7, 8]);
/// ```
pub struct PerCpuStack<T, H: Hooks = NoHooks> {
    slots: LazySlots<StackSlot>,
    index: IndexBy,
    fallback: SharedList<T>,
    /// Serializes thieves of one container.
    steal_lock: Mutex<()>,
    _owns: PhantomData<Box<Node<T>>>,
    _hooks: PhantomData<H>,
}

// SAFETY: values move between threads through the stack (T: Send); the slots are
// atomics written by sequences of their CPU or by a thief that stopped them.
unsafe impl<T: Send, H: Hooks> Sync for PerCpuStack<T, H> {}
// SAFETY: moving the stack moves the owned values.
unsafe impl<T: Send, H: Hooks> Send for PerCpuStack<T, H> {}

impl<T> PerCpuStack<T, NoHooks> {
    /// An empty stack indexed by CPU.
    pub const fn new() -> Self {
        PerCpuStack {
            slots: LazySlots::new(),
            index: IndexBy::Cpu,
            fallback: SharedList::new(),
            steal_lock: Mutex::new(()),
            _owns: PhantomData,
            _hooks: PhantomData,
        }
    }

    /// An empty stack indexed as asked.
    pub fn with_index(index: IndexBy) -> Self {
        Self::with_hooks(index)
    }
}

impl<T> Default for PerCpuStack<T, NoHooks> {
    fn default() -> Self {
        Self::new()
    }
}

/// Displacement of `next` in a node: the first field of a `repr(C)` struct, 0 for
/// every `T`.
const NEXT: usize = offset_of!(Node<()>, next);
const _: () = assert!(NEXT == 0);

impl<T, H: Hooks> PerCpuStack<T, H> {
    /// An empty stack whose sequences carry the hooks `H`.
    pub fn with_hooks(index: IndexBy) -> Self {
        let index = effective_index(index);
        PerCpuStack {
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

    /// Pushes `value` on the current CPU's list (allocating its node; see
    /// [`push_node`](Self::push_node)).
    #[inline(always)]
    pub fn push(&self, value: T) {
        self.push_node(StackNode::new(value))
    }

    /// Pushes an owned node on the current CPU's list: no allocation.
    #[inline(always)]
    pub fn push_node(&self, node: StackNode<T>) {
        let push = Push(node.into_raw());
        on_current_cpu::<H, _, _>(&self.slots, push, |Push(node)| {
            // SAFETY: the node was never published; we own it.
            self.push_fallback(unsafe { StackNode::from_raw(node) })
        })
    }

    /// The shared fallback holds values: the node is freed (cold path only).
    #[cold]
    #[inline(never)]
    fn push_fallback(&self, node: StackNode<T>) {
        let _ = self.fallback.push::<H>(node.into_inner(), usize::MAX);
    }

    /// Pops the most recent value of the current CPU's list, else of the shared
    /// fallback list; `None` when both are empty (frees the node; see
    /// [`pop_node`](Self::pop_node)).
    #[inline(always)]
    pub fn pop(&self) -> Option<T> {
        self.pop_node().map(StackNode::into_inner)
    }

    /// Pops the most recent node of the current CPU's list (no allocation), else a
    /// value of the shared fallback list in a new node; `None` when both are empty.
    #[inline(always)]
    pub fn pop_node(&self) -> Option<StackNode<T>> {
        on_current_cpu::<H, _, _>(&self.slots, Pop(PhantomData), |_| self.pop_fallback())
    }

    #[cold]
    #[inline(never)]
    fn pop_fallback(&self) -> Option<StackNode<T>> {
        self.fallback.pop::<H>().map(StackNode::new)
    }

    /// Takes every value of slot `cpu`'s list (most recent first), while its owners
    /// may keep pushing and popping: the slot is stopped (its sequences fail over to
    /// the shared fallback), a membarrier fence restarts the sequences in flight on
    /// it, the list is detached, a second fence restarts the sequences that may have
    /// read the old head meanwhile, and the slot reopens. Nothing is lost or
    /// duplicated.
    ///
    /// Fails where membarrier rseq fences are unavailable, or when a fence fails:
    /// then nothing is lost either. If the first fence fails, the slot is left as it
    /// was (its list in place); if the second fails, the list's values go to the
    /// shared fallback (where [`pop`](Self::pop), [`steal_all`](Self::steal_all) and
    /// [`drain`](Self::drain) find them) and the slot stays stopped, its operations on
    /// the fallback, until a later steal of it succeeds.
    ///
    /// # Panics
    /// If `cpu` is not below the slot count ([`possible_cpus`](crate::possible_cpus)),
    /// or the storage cannot be set up (address space exhausted).
    pub fn steal(&self, cpu: usize) -> Result<Vec<T>, FenceError> {
        assert!(cpu < self.slots.force().slots(), "slot {cpu} out of range");
        let _thief = self.steal_lock.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: a slot of this container (shared access to atomics).
        let slot = unsafe { &*self.slots.slot_ptr(cpu) };
        // Thieves are serialized: `was` is the slot's state, which only thieves set.
        let was = slot.stopped.swap(1, Ordering::SeqCst);
        if let Err(e) = fence_slot(self.index, cpu) {
            // Leave the slot as it was: a slot that an earlier steal left stopped
            // (its second fence failed) must stay stopped, since pushes that read
            // its old head may still be in flight; no fence has run since.
            slot.stopped.store(was, Ordering::SeqCst);
            return Err(e);
        }
        // After the fence no sequence on this slot can commit: the list is ours.
        let head = slot.head.load(Ordering::Acquire);
        slot.head.store(0, Ordering::Relaxed);
        // A second fence before reopening: every sequence still in flight on the
        // slot is restarted, so none that read the old head can commit after the
        // reopening. (The push and pop read the head inside their sequence, after
        // the stopped check, so none can hold the old head across the first fence
        // either; the fence keeps the protocol independent of how they read it, as
        // when the push read the head before its sequence.)
        if let Err(e) = fence_slot(self.index, cpu) {
            // Keep the slot stopped (its operations use the fallback, until a later
            // steal reopens it) and the values in the fallback: nothing is lost.
            let values = Self::take_list(head);
            self.fallback.lock().extend(values);
            return Err(e);
        }
        slot.stopped.store(0, Ordering::Release);
        Ok(Self::take_list(head))
    }

    /// The values of a detached list, most recent first, freeing its nodes.
    fn take_list(mut head: isize) -> Vec<T> {
        let mut out = Vec::new();
        while head != 0 {
            // SAFETY: detached nodes are exclusively ours.
            let node = unsafe { Box::from_raw(head as *mut Node<T>) };
            head = node.next;
            out.push(node.value);
        }
        out
    }

    /// Takes every value of every list and of the fallback (see [`steal`](Self::steal)).
    ///
    /// If a steal fails, the values taken from the slots before it are put in the
    /// shared fallback and the error is returned: nothing is lost, every value is
    /// still in the stack.
    pub fn steal_all(&self) -> Result<Vec<T>, FenceError> {
        let mut out = Vec::new();
        for cpu in 0..self.slots.slots() {
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

    /// Takes every value, with exclusive access (no fence needed).
    pub fn drain(&mut self) -> Vec<T> {
        let mut out = Vec::new();
        for slot in self.slots.get_mut().into_iter().flatten() {
            let mut head = core::mem::take(slot.head.get_mut());
            while head != 0 {
                // SAFETY: exclusive access: the nodes are ours.
                let node = unsafe { Box::from_raw(head as *mut Node<T>) };
                head = node.next;
                out.push(node.value);
            }
        }
        out.append(self.fallback.get_mut());
        out
    }
}

impl<T, H: Hooks> Drop for PerCpuStack<T, H> {
    fn drop(&mut self) {
        drop(self.drain());
    }
}

impl<T, H: Hooks> fmt::Debug for PerCpuStack<T, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerCpuStack")
            .field("slots", &self.slots.slots())
            .field("index", &self.index)
            .finish()
    }
}

#[cfg(all(test, restartable_asm))]
mod tests {
    use super::*;
    use crate::fence::injected;

    /// The CPUs this thread may run on.
    fn allowed_cpus() -> Vec<usize> {
        crate::allowed_cpus().expect("sched_getaffinity")
    }

    /// Pins this thread to `cpu`.
    fn pin(cpu: usize) {
        // SAFETY: an all-zero cpu_set_t is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
        // SAFETY: `cpu` is below CPU_SETSIZE (an allowed CPU).
        unsafe { libc::CPU_SET(cpu, &mut set) };
        // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 is this thread.
        let r = unsafe { libc::sched_setaffinity(0, core::mem::size_of_val(&set), &set) };
        assert_eq!(r, 0, "sched_setaffinity({cpu})");
    }

    /// Whether this thread runs sequences and the kernel has rseq fences.
    fn usable() -> bool {
        let ok = crate::status().is_registered() && crate::fences_supported();
        if !ok {
            eprintln!("notice: rseq or membarrier rseq fences unavailable; skipped");
        }
        ok
    }

    /// A stack with `per_cpu` values pushed on each of `cpus` (pinned to each in
    /// turn, so that they sit on that CPU's list), and the values pushed.
    fn filled(index: IndexBy, cpus: &[usize], per_cpu: u64) -> (PerCpuStack<u64>, Vec<u64>) {
        let stack = PerCpuStack::with_index(index);
        let mut pushed = Vec::new();
        for (n, &cpu) in cpus.iter().enumerate() {
            pin(cpu);
            for i in 0..per_cpu {
                let v = n as u64 * 1_000_000 + i;
                stack.push(v);
                pushed.push(v);
            }
        }
        (stack, pushed)
    }

    fn sorted(mut v: Vec<u64>) -> Vec<u64> {
        v.sort_unstable();
        v
    }

    /// Runs `f` on a new thread (pinning it leaves the test runner's threads alone),
    /// propagating its panic.
    fn on_new_thread(f: impl FnOnce() + Send + 'static) {
        if let Err(e) = std::thread::spawn(f).join() {
            std::panic::resume_unwind(e);
        }
    }

    /// `steal_all` with the k-th fence failing, for every k up to one past the fences
    /// a whole `steal_all` issues: the values returned plus the values left in the
    /// stack are the values pushed, exactly.
    #[test]
    fn steal_all_loses_nothing_when_the_kth_fence_fails() {
        on_new_thread(|| {
            if !usable() {
                return;
            }
            let cpus = allowed_cpus();
            for index in [IndexBy::Cpu, IndexBy::MmCid] {
                let slots = PerCpuStack::<u64>::with_index(index).slots.slots() as u32;
                // Two fences per slot when every steal succeeds.
                let fences = 2 * slots;
                for k in 1..=fences + 1 {
                    let (mut stack, pushed) = filled(index, &cpus, 50);
                    injected::fail_nth(k);
                    let returned = match stack.steal_all() {
                        Ok(v) => {
                            assert_eq!(k, fences + 1, "{index:?}: fence {k} failed silently");
                            v
                        }
                        Err(e) => {
                            assert!(k <= fences, "{index:?}: k = {k}: {e}");
                            assert_eq!(e.errno(), injected::ERRNO);
                            Vec::new()
                        }
                    };
                    injected::fail_nth(0);
                    let (n_returned, left) = (returned.len(), stack.drain());
                    let n_left = left.len();
                    let mut all = returned;
                    all.extend(left);
                    assert_eq!(
                        sorted(all),
                        sorted(pushed.clone()),
                        "{index:?}, fence {k} of {fences} failing: {n_returned} values \
                         returned + {n_left} left, {} pushed",
                        pushed.len()
                    );
                }
            }
        });
    }

    /// A steal whose second fence fails leaves its slot stopped (pushes that read the
    /// old head may still be in flight); a later steal whose first fence fails must
    /// leave it stopped, not reopen it; a running slot stays running; and a later
    /// successful steal reopens it. Nothing is lost on the way.
    #[test]
    fn a_failed_first_fence_leaves_the_slot_as_it_was() {
        on_new_thread(|| {
            if !usable() {
                return;
            }
            let cpus = allowed_cpus();
            let cpu = cpus[0];
            let (mut stack, pushed) = filled(IndexBy::Cpu, &cpus, 20);
            // SAFETY: a slot of this stack; only its atomics are read.
            let stopped = |s: &PerCpuStack<u64>, i: usize| unsafe {
                (*s.slots.slot_ptr(i)).stopped.load(Ordering::SeqCst)
            };
            let mut taken = Vec::new();

            injected::fail_nth(2);
            assert!(stack.steal(cpu).is_err());
            assert_eq!(
                stopped(&stack, cpu),
                1,
                "the half-failed steal keeps it stopped"
            );

            injected::fail_nth(1);
            assert!(stack.steal(cpu).is_err());
            assert_eq!(
                stopped(&stack, cpu),
                1,
                "a steal whose first fence failed reopened a slot left stopped"
            );
            if let Some(&other) = cpus.get(1) {
                injected::fail_nth(1);
                assert!(stack.steal(other).is_err());
                assert_eq!(stopped(&stack, other), 0, "a running slot stays running");
                taken.extend(stack.steal(other).expect("steal"));
            }

            injected::fail_nth(0);
            taken.extend(stack.steal(cpu).expect("steal"));
            assert_eq!(
                stopped(&stack, cpu),
                0,
                "a successful steal reopens the slot"
            );
            taken.extend(stack.drain());
            assert_eq!(sorted(taken), sorted(pushed));
        });
    }
}
