//! The reference stress test's six test types, each with its end-of-run invariant:
//!
//! | `-T` | what each repetition does | checked at the end |
//! |------|---------------------------|--------------------|
//! | `s` | lock the current CPU's [`PerCpuLock`], increment its count, unlock | counts sum to threads × reps |
//! | `i` | [`PerCpuCounter::add`] 1 | sum is threads × reps |
//! | `l` | pop an owned node ([`StackNode`], allocated once) from the current CPU's [`PerCpuStack`], push it back: no allocation | every node back exactly once, sum of values unchanged |
//! | `b` | the same with a [`PerCpuBuffer`] of nodes allocated once (their boxes held in the slots: no allocation per push or pop; `-M`: release push) | the same |
//! | `m` | the same with a [`PerCpuMemcpyBuffer`] of two-word items (`-M`: release push) | the same, and every item intact |
//! | `r` | `**(*shared + offset(cpu)) += 1` with [`load_add_load_load_add_store`] while a manager swaps `*shared` between two per-CPU lists and fences | the inactive list never changes after a fence; total is threads × reps |
//!
//! The list, buffer and memcpy tests start with 100 items per allowed CPU (fewer when
//! the buffers' fixed capacity requires it), pushed by one thread pinned to each
//! allowed CPU, all alive at once (so with `--mm-cid` they land on distinct mm_cids),
//! as the reference puts 100 items on every allowed CPU.
//!
//! [`load_add_load_load_add_store`]: restartable::arch::load_add_load_load_add_store

use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use restartable::arch::{self, ByCpu, ByMmCid, Index, OpResult, TestHooks};
use restartable::percpu::PerCpu;
use restartable::{
    FenceError, IndexBy, PerCpuBuffer, PerCpuCounter, PerCpuLock, PerCpuMemcpyBuffer, PerCpuStack,
    StackNode,
};

use super::{Context, Options, TestType};

/// Items each allowed CPU starts with in the list, buffer and memcpy tests (the
/// reference's `BUFFER_ITEM_PER_CPU`).
const ITEMS_PER_CPU: usize = 100;

/// Capacity of each CPU's array in the buffer and memcpy tests. The reference sizes
/// every CPU's array for all the items ("worst case is every item on the same CPU");
/// capacities are compile-time here, so the item count per CPU shrinks where 100 per
/// allowed CPU would not fit (more than 81 allowed CPUs).
const BUFFER_CAPACITY: usize = 8192;

/// Runs the test the options select.
pub(crate) fn run(ctx: &Context) -> Result<(), String> {
    match ctx.opts.test {
        TestType::Spinlock => spinlock(ctx),
        TestType::Increment => increment(ctx),
        TestType::List => list(ctx),
        TestType::Buffer => buffer(ctx),
        TestType::Memcpy => memcpy(ctx),
        TestType::Membarrier => membarrier(ctx),
    }
}

/// Threads × repetitions, the total every counting test must reach.
fn expected_total(o: &Options) -> u128 {
    o.threads as u128 * o.reps as u128
}

/// Runs `work(index)` on `opts.threads` worker threads, after arming the hooks; each
/// worker is prepared by [`Context::enter_worker`] and reports through
/// [`Context::leave_worker`].
///
/// The workers start together, once all of them exist (the reference starts each as
/// it is created, so with few repetitions the first ones finish before the last ones
/// start and the threads barely contend).
fn run_workers<F: Fn(usize) + Sync>(ctx: &Context, work: F) -> Result<(), String> {
    super::configure_hooks(ctx.opts);
    let n = ctx.opts.threads;
    let gate = (Mutex::new(false), Condvar::new());
    let open = || {
        *gate.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        gate.1.notify_all();
    };
    // Workers that have started (their thread set up: stack, signal stack, name).
    // Each is created once the one before has started, so that when the address
    // space runs out it is the creation that fails (an error, below), never a new
    // thread's own set-up inside std (an abort: "failed to allocate an alternative
    // stack") racing the next creation's stack.
    let started = (Mutex::new(0usize), Condvar::new());
    let result = std::thread::scope(|s| {
        // Grown as threads start: `-t` can ask for more than can ever exist.
        let mut handles = Vec::new();
        let mut error = None;
        for i in 0..n {
            let (work, gate, started) = (&work, &gate, &started);
            let spawned = std::thread::Builder::new()
                .name(format!("param-test-{i}"))
                .spawn_scoped(s, move || {
                    *started.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                    started.1.notify_all();
                    ctx.enter_worker(i);
                    let mut go = gate.0.lock().unwrap_or_else(|e| e.into_inner());
                    while !*go {
                        go = gate.1.wait(go).unwrap_or_else(|e| e.into_inner());
                    }
                    drop(go);
                    work(i);
                    ctx.leave_worker(i);
                });
            match spawned {
                Ok(h) => {
                    handles.push(h);
                    let mut k = started.0.lock().unwrap_or_else(|e| e.into_inner());
                    while *k <= i {
                        k = started.1.wait(k).unwrap_or_else(|e| e.into_inner());
                    }
                }
                Err(e) => {
                    error = Some(format!("cannot create worker thread {i} of {n}: {e}"));
                    break;
                }
            }
        }
        open();
        let mut panicked = 0;
        for h in handles {
            panicked += usize::from(h.join().is_err());
        }
        match (error, panicked) {
            (Some(e), _) => Err(e),
            (None, 0) => Ok(()),
            (None, p) => Err(format!("{p} worker thread(s) panicked")),
        }
    });
    restartable::hooks::reset();
    result
}

/// `-T s`: a per-CPU spinlock protecting a per-CPU count.
fn spinlock(ctx: &Context) -> Result<(), String> {
    let o = ctx.opts;
    let mut lock = PerCpuLock::<u64, TestHooks>::with_hooks(o.index());
    run_workers(ctx, |_| {
        for i in 1..=o.reps {
            let mut count = lock.lock();
            // A plain read-modify-write, as the reference's `count++`, which only the
            // lock makes safe.
            *count = black_box(*count) + 1;
            drop(count);
            ctx.advance(i);
        }
    })?;
    let counts: Vec<u64> = lock.iter_mut().map(|c| *c).collect();
    let sum: u128 = counts.iter().map(|&c| c as u128).sum();
    let expected = expected_total(o);
    if sum != expected {
        let (fallback, slots) = counts.split_last().unwrap_or((&0, &[]));
        return Err(format!(
            "spinlock: expected the per-CPU counts to sum to {expected} ({} threads x {} reps), \
             found {sum} (per slot {slots:?}, fallback instance {fallback})",
            o.threads, o.reps
        ));
    }
    Ok(())
}

/// `-T i`: a per-CPU counter incremented by one sequence.
fn increment(ctx: &Context) -> Result<(), String> {
    let o = ctx.opts;
    let counter = PerCpuCounter::<TestHooks>::with_hooks(o.index());
    run_workers(ctx, |_| {
        for i in 1..=o.reps {
            counter.add(1);
            ctx.advance(i);
        }
    })?;
    let sum = counter.sum() as i128;
    let expected = expected_total(o) as i128;
    if sum != expected {
        return Err(format!(
            "increment: expected the counter to sum to {expected} ({} threads x {} reps), \
             found {sum} (per slot {:?}, fallback {})",
            o.threads,
            o.reps,
            counter.per_cpu(),
            counter.fallback_value()
        ));
    }
    Ok(())
}

/// `-T l`: pop from and push back to per-CPU linked lists. The nodes are allocated
/// once and move between the lists as owned [`StackNode`]s (the reference's list is
/// intrusive too): no allocation per pop or push.
fn list(ctx: &Context) -> Result<(), String> {
    let o = ctx.opts;
    let mut stack = PerCpuStack::<isize, TestHooks>::with_hooks(o.index());
    let total = prepopulate(ctx, ITEMS_PER_CPU, |v| {
        stack.push_node(StackNode::new(v as isize))
    })?;
    run_workers(ctx, |_| {
        for i in 1..=o.reps {
            let node = stack.pop_node();
            if o.yield_now {
                std::thread::yield_now(); // encourage shuffling, as the reference
            }
            if let Some(node) = node {
                stack.push_node(node);
            }
            ctx.advance(i);
        }
    })?;
    let values: Vec<usize> = stack.drain().into_iter().map(|v| v as usize).collect();
    check_exactly_once("list", "nodes", &values, total)
}

/// A node of the buffer test, allocated once (the reference allocates one object per
/// item "to model objects that would not fit within a single word"); its box is one
/// word, which the buffer holds in the slot itself: pops and pushes allocate nothing.
#[derive(Debug)]
struct BufferNode {
    /// The node's distinct value (1..=total).
    data: isize,
}

/// `-T b`: pop from and push back to per-CPU arrays of pointers.
fn buffer(ctx: &Context) -> Result<(), String> {
    let o = ctx.opts;
    let mut buf =
        PerCpuBuffer::<Box<BufferNode>, BUFFER_CAPACITY, TestHooks>::with_hooks(o.index());
    let per_cpu = items_per_cpu();
    let total = prepopulate(ctx, per_cpu, |v| {
        if buf.push(Box::new(BufferNode { data: v as isize })).is_err() {
            ctx.fail(format!(
                "buffer: initial push of item {v} failed: array full"
            ));
        }
    })?;
    run_workers(ctx, |_| {
        for i in 1..=o.reps {
            let node = buf.pop();
            if o.yield_now {
                std::thread::yield_now();
            }
            if let Some(node) = node {
                let pushed = if o.release {
                    buf.push_release(node)
                } else {
                    buf.push(node)
                };
                if let Err(node) = pushed {
                    ctx.fail(format!(
                        "buffer: push of item {} failed: array full (capacity {BUFFER_CAPACITY})",
                        node.data
                    ));
                }
            }
            ctx.advance(i);
        }
    })?;
    let values: Vec<usize> = buf.drain().into_iter().map(|n| n.data as usize).collect();
    check_exactly_once("buffer", "items", &values, total)
}

/// An item of the memcpy test: the reference's two words.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct MemcpyItem {
    /// The item's distinct value (1..=total).
    data1: isize,
    /// `data1 + 1`: a torn copy shows as a mismatch.
    data2: u64,
}

/// `-T m`: pop from and push back to per-CPU arrays of items copied in and out.
fn memcpy(ctx: &Context) -> Result<(), String> {
    let o = ctx.opts;
    let mut buf =
        PerCpuMemcpyBuffer::<MemcpyItem, BUFFER_CAPACITY, TestHooks>::with_hooks(o.index());
    let item = |v: usize| MemcpyItem {
        data1: v as isize,
        data2: v as u64 + 1,
    };
    let total = prepopulate(ctx, items_per_cpu(), |v| {
        if buf.push(item(v)).is_err() {
            ctx.fail(format!(
                "memcpy: initial push of item {v} failed: array full"
            ));
        }
    })?;
    run_workers(ctx, |_| {
        for i in 1..=o.reps {
            let got = buf.pop();
            if o.yield_now {
                std::thread::yield_now();
            }
            if let Some(it) = got {
                let pushed = if o.release {
                    buf.push_release(it)
                } else {
                    buf.push(it)
                };
                if let Err(it) = pushed {
                    ctx.fail(format!(
                        "memcpy: push of item {} failed: array full (capacity {BUFFER_CAPACITY})",
                        it.data1
                    ));
                }
            }
            ctx.advance(i);
        }
    })?;
    let items = buf.drain();
    let torn: Vec<MemcpyItem> = items
        .iter()
        .filter(|it| it.data2 != (it.data1 as u64).wrapping_add(1))
        .take(5)
        .copied()
        .collect();
    if !torn.is_empty() {
        return Err(format!(
            "memcpy: expected every item intact (data2 == data1 + 1), found torn items \
             such as {torn:?}"
        ));
    }
    let values: Vec<usize> = items.iter().map(|it| it.data1 as usize).collect();
    check_exactly_once("memcpy", "items", &values, total)
}

/// Items per allowed CPU in the buffer tests.
fn items_per_cpu() -> usize {
    let cpus = allowed_cpus().len().max(1);
    ITEMS_PER_CPU.min(BUFFER_CAPACITY / cpus).max(1)
}

/// Checks that `values` holds each of `1..=total` exactly once.
fn check_exactly_once(
    test: &str,
    what: &str,
    values: &[usize],
    total: usize,
) -> Result<(), String> {
    let mut seen = vec![0u32; total + 1];
    let mut out_of_range = Vec::new();
    for &v in values {
        match seen.get_mut(v) {
            Some(c) if v != 0 => *c += 1,
            _ => out_of_range.push(v),
        }
    }
    let missing: Vec<usize> = (1..=total).filter(|&v| seen[v] == 0).collect();
    let duplicated: Vec<usize> = (1..=total).filter(|&v| seen[v] > 1).collect();
    let sum: u128 = values.iter().map(|&v| v as u128).sum();
    let expected_sum = total as u128 * (total as u128 + 1) / 2;
    if missing.is_empty() && duplicated.is_empty() && out_of_range.is_empty() {
        debug_assert_eq!(sum, expected_sum);
        return Ok(());
    }
    let first = |v: &[usize]| {
        let shown: Vec<_> = v.iter().take(8).collect();
        if v.len() > 8 {
            format!("{shown:?} and {} more", v.len() - 8)
        } else {
            format!("{shown:?}")
        }
    };
    Err(format!(
        "{test}: expected all {total} {what} back exactly once (values 1..={total}, sum \
         {expected_sum}); found {} {what} with sum {sum}: {} missing {}, {} duplicated {}, \
         {} unknown {}",
        values.len(),
        missing.len(),
        first(&missing),
        duplicated.len(),
        first(&duplicated),
        out_of_range.len(),
        first(&out_of_range),
    ))
}

/// The CPUs this thread may run on (every possible CPU if the mask cannot be read).
fn allowed_cpus() -> Vec<usize> {
    restartable::allowed_cpus().unwrap_or_else(|_| (0..restartable::possible_cpus()).collect())
}

/// Pins the calling thread to `cpu` (best effort), any CPU number (`libc::CPU_SET`
/// panicked past 1024).
fn pin_to(cpu: usize) {
    let _ = crate::affinity::pin_to(cpu);
}

/// Puts `per_cpu` items on every allowed CPU: one thread pinned to each, all alive at
/// once, each calling `push(value)` for its share of the distinct values
/// `1..=total`. The hooks are not armed yet (no injection while filling). With `-d`
/// these threads have no rseq either. Returns `total`.
fn prepopulate<F: Fn(usize) + Sync>(
    ctx: &Context,
    per_cpu: usize,
    push: F,
) -> Result<usize, String> {
    restartable::hooks::reset();
    let cpus = allowed_cpus();
    let n = cpus.len();
    let arrived = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let abandon = AtomicBool::new(false);
    let wait = |counter: &AtomicUsize| {
        counter.fetch_add(1, Ordering::AcqRel);
        while counter.load(Ordering::Acquire) < n && !abandon.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
    };
    std::thread::scope(|s| {
        let mut handles = Vec::with_capacity(n);
        for (k, &cpu) in cpus.iter().enumerate() {
            let (push, wait, arrived, done) = (&push, &wait, &arrived, &done);
            let spawned = std::thread::Builder::new()
                .name(format!("param-test-fill-{cpu}"))
                .spawn_scoped(s, move || {
                    pin_to(cpu);
                    if ctx.opts.disable_rseq {
                        let _ = restartable::registration::disable_current_thread();
                    }
                    wait(arrived);
                    for j in 1..=per_cpu {
                        push(k * per_cpu + j);
                    }
                    wait(done);
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    abandon.store(true, Ordering::Release);
                    for h in handles {
                        let _ = h.join();
                    }
                    return Err(format!("cannot create a filling thread: {e}"));
                }
            }
        }
        for h in handles {
            if h.join().is_err() {
                return Err("a filling thread panicked".to_string());
            }
        }
        Ok(n * per_cpu)
    })
}

/// One CPU's list in the membarrier test: a head pointing at one node whose `data`
/// the workers increment (the reference's `struct percpu_list_node`).
#[repr(C)]
struct Node {
    /// The count the workers increment.
    data: AtomicIsize,
    /// Unused (null), as in the reference's test.
    next: AtomicPtr<Node>,
}

/// A per-CPU list array: slot `i` (strided per-CPU storage, as the reference's
/// per-CPU pool) holds the head pointer of CPU `i`'s list.
struct ListArray {
    /// Slot `i`: the head of CPU `i`'s list (points into `nodes`).
    heads: PerCpu<AtomicPtr<Node>>,
    /// One node per slot.
    nodes: Vec<Node>,
}

impl ListArray {
    /// One list per slot, each with one node at 0.
    fn new(index: IndexBy) -> ListArray {
        let heads = PerCpu::<AtomicPtr<Node>>::new(index);
        let nodes: Vec<Node> = (0..heads.slots())
            .map(|_| Node {
                data: AtomicIsize::new(0),
                next: AtomicPtr::new(std::ptr::null_mut()),
            })
            .collect();
        for (i, node) in nodes.iter().enumerate() {
            heads
                .get(i)
                .store(node as *const Node as *mut Node, Ordering::Relaxed);
        }
        ListArray { heads, nodes }
    }

    /// The value the shared pointer holds while this array is active.
    fn base(&self) -> isize {
        self.heads.base() as isize
    }

    /// CPU `i`'s count, read through its head as the reference does.
    fn data(&self, i: usize) -> isize {
        let head = self.heads.get(i).load(Ordering::Relaxed);
        // SAFETY: every head points into `self.nodes`, which lives as long as `self`.
        unsafe { (*head).data.load(Ordering::Relaxed) }
    }

    /// The sum of every CPU's count (after the workers stopped).
    fn total(&self) -> i128 {
        debug_assert!(self
            .nodes
            .iter()
            .all(|n| n.next.load(Ordering::Relaxed).is_null()));
        self.nodes
            .iter()
            .map(|n| n.data.load(Ordering::Relaxed) as i128)
            .sum()
    }
}

/// `-T r`: workers increment their CPU's count in the active list array, reached
/// through a shared pointer, while a manager swaps the pointer between two arrays and
/// fences; a sequence that started before a fence must not commit after it, so the
/// inactive array must not change once its CPU was fenced.
fn membarrier(ctx: &Context) -> Result<(), String> {
    let o = ctx.opts;
    if !restartable::fences_supported() {
        errln!("Membarrier private expedited rseq not available. Skipping membarrier test.");
        return Ok(());
    }
    let a = ListArray::new(o.index());
    let b = ListArray::new(o.index());
    let shared = AtomicIsize::new(a.base());
    let stop = AtomicBool::new(false);
    let slots = a.heads.slots();
    let shift = a.heads.stride_shift();
    debug_assert_eq!(shift, b.heads.stride_shift());
    let swaps = std::thread::scope(|s| {
        let manager = std::thread::Builder::new()
            .name("param-test-manager".to_string())
            .spawn_scoped(s, || membarrier_manager(ctx, &shared, &a, &b, &stop))
            .map_err(|e| format!("cannot create the manager thread: {e}"))?;
        let workers = run_workers(ctx, |_| match o.index() {
            IndexBy::Cpu => membarrier_worker::<ByCpu>(ctx, &shared, slots, shift),
            IndexBy::MmCid => membarrier_worker::<ByMmCid>(ctx, &shared, slots, shift),
        });
        stop.store(true, Ordering::Release);
        let swaps = manager
            .join()
            .map_err(|_| "the manager thread panicked".to_string())?;
        workers.map(|()| swaps)
    })?;
    if o.verbose {
        outln!("membarrier: {swaps} swaps of the active list array, each followed by a fence");
    }
    let total = a.total() + b.total();
    let expected = expected_total(o) as i128;
    if total != expected {
        return Err(format!(
            "membarrier: expected the counts of both list arrays to sum to {expected} ({} \
             threads x {} reps), found {total} ({} + {})",
            o.threads,
            o.reps,
            a.total(),
            b.total()
        ));
    }
    Ok(())
}

/// A membarrier worker: `reps` increments of its CPU's count in the active array,
/// each retried until it commits. Kept out of line so that its (hooked) sequences
/// are listed under its name: `tests/disassembly.rs` uses them as its positive control.
#[inline(never)]
fn membarrier_worker<I: Index>(ctx: &Context, shared: &AtomicIsize, slots: usize, shift: u32) {
    let o = ctx.opts;
    for i in 1..=o.reps {
        loop {
            let (area, cpu) = match I::enter() {
                Ok(x) => x,
                Err(reason) => {
                    ctx.fail(format!("membarrier: a worker has no rseq: {reason}"));
                    return;
                }
            };
            inject(o, 7, (o.index() == IndexBy::Cpu).then_some(cpu));
            if cpu as usize >= slots {
                ctx.fail(format!(
                    "membarrier: index {cpu} beyond the {slots} per-CPU slots"
                ));
                return;
            }
            let off = (cpu as isize) << shift;
            inject(o, 8, None);
            // SAFETY: `area` and `cpu` come from `I::enter` on this thread. `*shared`
            // is always the base of one of the two list arrays, which outlive the
            // workers; `base + off` is slot `cpu` of that array, whose head points to
            // a node whose `data` only sequences for `cpu` write (the manager reads).
            let r = unsafe {
                arch::load_add_load_load_add_store::<I, TestHooks>(
                    area,
                    cpu,
                    shared.as_ptr(),
                    off,
                    1,
                )
            };
            if r == OpResult::Committed {
                break;
            }
        }
        ctx.advance(i);
    }
}

/// The manager: swaps the active array, fences the CPU whose entry it then watches in
/// the now inactive array, and checks that entry does not change. Returns the number
/// of swaps.
fn membarrier_manager(
    ctx: &Context,
    shared: &AtomicIsize,
    a: &ListArray,
    b: &ListArray,
    stop: &AtomicBool,
) -> u64 {
    let o = ctx.opts;
    let slots = a.heads.slots();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64 ^ std::process::id() as u64;
    let mut random = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % slots as u64) as usize
    };
    let fence = |cpu: usize| -> Result<(), FenceError> {
        let r = match o.index() {
            IndexBy::Cpu => restartable::fence_cpu(cpu as u32),
            // Membarrier cannot target an mm_cid: fence every CPU (as the reference).
            IndexBy::MmCid => restartable::fence_all(),
        };
        match r {
            Err(e) if e.errno() == libc::ENXIO => Ok(()), // CPU not online
            r => r,
        }
    };
    let (mut cpu_b, mut expect_b) = (0usize, 0isize);
    let mut swaps = 0u64;
    let changed = |which: &str, cpu: usize, expect: isize, found: isize| {
        ctx.fail(format!(
            "membarrier: list array {which} is inactive and CPU {cpu} was fenced, so its \
             entry must not change: expected {expect}, found {found}"
        ));
    };
    while !stop.load(Ordering::Acquire) && !ctx.failed() {
        // `a` is active; `b` must not have changed since its CPU was fenced.
        let cpu_a = random();
        let found = b.data(cpu_b);
        if found != expect_b {
            changed("b", cpu_b, expect_b, found);
            break;
        }
        shared.store(b.base(), Ordering::SeqCst);
        if let Err(e) = fence(cpu_a) {
            ctx.fail(format!("membarrier: fence of CPU {cpu_a}: {e}"));
            break;
        }
        // CPU A now only modifies `b`: `a`'s entry for it must stay put.
        let expect_a = a.data(cpu_a);
        cpu_b = random();
        let found = a.data(cpu_a);
        if found != expect_a {
            changed("a", cpu_a, expect_a, found);
            break;
        }
        shared.store(a.base(), Ordering::SeqCst);
        if let Err(e) = fence(cpu_b) {
            ctx.fail(format!("membarrier: fence of CPU {cpu_b}: {e}"));
            break;
        }
        expect_b = b.data(cpu_b);
        swaps += 2;
    }
    swaps
}

thread_local! {
    /// Event counter of [`inject`] (the reference's `yield_mod_cnt`).
    static MOD_COUNT: Cell<i64> = const { Cell::new(0) };
}

/// Injection points 7 and 8 in the membarrier worker, which calls the op directly
/// rather than through a container (the containers inject 7 and 8 themselves, the op
/// injects 9): the same delay loop or `-m` events as the library's hook; the
/// `--migrate` move avoids `read_cpu` (the CPU the worker read, at point 7 by CPU).
fn inject(o: &Options, n: usize, read_cpu: Option<u32>) {
    let loops = o.loops[n];
    for _ in 0..loops.max(0) {
        black_box(());
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    }
    if loops != -1 || o.modulo <= 0 {
        return;
    }
    let fire = MOD_COUNT
        .try_with(|c| {
            if c.get() >= o.modulo - 1 {
                c.set(0);
                true
            } else {
                c.set(c.get() + 1);
                false
            }
        })
        .unwrap_or(false);
    if !fire {
        return;
    }
    if o.sleep_ms > 0 {
        std::thread::sleep(std::time::Duration::from_millis(o.sleep_ms as u64));
    }
    if o.yield_now {
        std::thread::yield_now();
    }
    if o.signal {
        // SAFETY: signals the calling thread; `run` installed the SIGUSR1 handler.
        unsafe {
            libc::pthread_kill(libc::pthread_self(), libc::SIGUSR1);
        }
    }
    if o.migrate {
        restartable::hooks::migrate_now(read_cpu);
    }
}
