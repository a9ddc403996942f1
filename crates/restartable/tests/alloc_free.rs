//! The allocation-free paths allocate nothing: a counting global allocator sees zero
//! allocator calls (alloc, realloc or free) on the measuring thread during 100,000
//! push/pop pairs of word values through `PerCpuBuffer`, of owned nodes through
//! `PerCpuStack`, and get/drop pairs of `PerCpuPool` objects, after warm-up.

#[path = "support/child.rs"]
mod child;
#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use std::ptr::NonNull;
use std::sync::Arc;

use counting_alloc::calls_during;
use restartable::{PerCpuBuffer, PerCpuPool, PerCpuStack, StackNode};

const PAIRS: usize = 100_000;

static STATIC: u64 = 3;

/// Skips (with a message) where rseq is unavailable: the shared fallback lists are
/// `Vec`s, which may allocate.
fn rseq_or_skip() -> bool {
    match restartable::ThreadArea::current() {
        Ok(_) => true,
        Err(e) => {
            child::skip(format!("rseq unavailable ({e:?})"));
            false
        }
    }
}

#[test]
fn counting_allocator_counts() {
    // The positive control: the counter sees an allocation and a free.
    let n = calls_during(|| drop(std::hint::black_box(Box::new(5u64))));
    assert_eq!(n, 2);
}

#[test]
fn buffer_of_word_values_allocates_nothing() {
    if !rseq_or_skip() {
        return;
    }
    let ints: PerCpuBuffer<u64, 16> = PerCpuBuffer::new();
    let boxes: PerCpuBuffer<Box<u64>, 16> = PerCpuBuffer::new();
    let arcs: PerCpuBuffer<Arc<u64>, 16> = PerCpuBuffer::new();
    let ptrs: PerCpuBuffer<NonNull<u64>, 16> = PerCpuBuffer::new();
    let small: PerCpuBuffer<(u8, u16), 16> = PerCpuBuffer::new();
    let statics: PerCpuBuffer<&'static u64, 16> = PerCpuBuffer::new();
    let mut b = Some(Box::new(7u64));
    let mut a = Some(Arc::new(9u64));
    let mut x = 0u64;
    let p = NonNull::from(&mut x);
    // Warm-up: the per-CPU storage is set up on first use.
    for _ in 0..2 {
        ints.push(1).unwrap();
        ints.pop().unwrap();
        boxes.push(b.take().unwrap()).unwrap();
        b = boxes.pop();
        arcs.push(a.take().unwrap()).unwrap();
        a = arcs.pop();
        ptrs.push(p).unwrap();
        ptrs.pop().unwrap();
        small.push((1, 2)).unwrap();
        small.pop().unwrap();
        statics.push(&STATIC).unwrap();
        statics.pop().unwrap();
    }
    let n = calls_during(|| {
        for i in 0..PAIRS as u64 {
            ints.push(i).unwrap();
            assert_eq!(ints.pop(), Some(i));
            boxes.push(b.take().unwrap()).unwrap();
            b = boxes.pop();
            arcs.push(a.take().unwrap()).unwrap();
            a = arcs.pop();
            ptrs.push(p).unwrap();
            assert_eq!(ptrs.pop(), Some(p));
            small.push((i as u8, i as u16)).unwrap();
            assert_eq!(small.pop(), Some((i as u8, i as u16)));
            statics.push(&STATIC).unwrap();
            assert_eq!(statics.pop(), Some(&STATIC));
        }
    });
    assert_eq!(
        n, 0,
        "allocator calls during {PAIRS} push/pop pairs of word values"
    );
    assert_eq!(b.as_deref(), Some(&7));
    assert_eq!(a.as_deref(), Some(&9));
    assert_eq!(
        Arc::strong_count(a.as_ref().unwrap()),
        1,
        "an Arc was duplicated or lost"
    );
}

#[test]
fn pool_get_and_drop_allocate_nothing() {
    if !rseq_or_skip() {
        return;
    }
    static POOL: PerCpuPool<Vec<u8>> = PerCpuPool::new(|| Vec::with_capacity(64));
    // Warm-up: storage set up, two objects made.
    drop((POOL.get(), POOL.get()));
    let n = calls_during(|| {
        for i in 0..PAIRS {
            let mut a = POOL.get();
            a.clear();
            a.push(i as u8);
            let b = POOL.get();
            assert_eq!(a.len(), 1);
            drop(a);
            drop(b);
        }
    });
    assert_eq!(n, 0, "allocator calls during {PAIRS} pool get/drop pairs");
}

#[test]
fn stack_of_owned_nodes_allocates_nothing() {
    if !rseq_or_skip() {
        return;
    }
    static FREE: PerCpuStack<[u64; 8]> = PerCpuStack::new();
    let mut held = vec![StackNode::new([1; 8]), StackNode::new([2; 8])];
    // Warm-up: storage set up.
    for n in held.drain(..) {
        FREE.push_node(n);
    }
    for _ in 0..2 {
        held.push(FREE.pop_node().unwrap());
    }
    let n = calls_during(|| {
        for i in 0..PAIRS as u64 {
            for mut node in held.drain(..) {
                node[0] = i;
                FREE.push_node(node);
            }
            for _ in 0..2 {
                let node = FREE.pop_node().expect("two nodes in the stack");
                assert_eq!(node[0], i);
                held.push(node);
            }
        }
    });
    assert_eq!(
        n, 0,
        "allocator calls during {PAIRS} x 2 push/pop pairs of owned nodes"
    );
    let mut firsts: Vec<u64> = held.iter().map(|n| n[1]).collect();
    firsts.sort_unstable();
    assert_eq!(firsts, [1, 2], "a node was lost or duplicated");
}

/// The first `possible_cpus` call of a process (which reads sysfs) allocates
/// nothing: an allocator sizes its per-CPU caches with it while setting itself up.
/// Run in a fresh child process, where no call has cached the answer yet.
#[test]
fn the_first_possible_cpus_call_allocates_nothing() {
    const ROLE: &str = "RESTARTABLE_TEST_FIRST_POSSIBLE_CPUS";
    if std::env::var_os(ROLE).is_some() {
        let mut n = 0;
        let calls = calls_during(|| n = restartable::possible_cpus());
        assert!(n >= 1);
        assert_eq!(
            calls, 0,
            "the first possible_cpus() made {calls} allocator calls"
        );
        println!("first possible_cpus: {n}, no allocator call");
        return;
    }
    use child::OutputWithin;
    let out = child::this_test(
        "the_first_possible_cpus_call_allocates_nothing",
        &[],
        &[(ROLE, "1")],
    )
    .output_within(std::time::Duration::from_secs(60));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && all.contains("no allocator call"),
        "the child failed:\n{all}"
    );
}
