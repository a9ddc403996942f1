//! Criterion benchmarks of the single-thread micro-operations, for regression
//! tracking (`cargo bench -p restartable-cli`). The multi-thread comparison with
//! baselines is `rseq bench`; see BENCHMARKS.md.

use std::hint::black_box;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use restartable::{PerCpuBuffer, PerCpuCounter, PerCpuLock, PerCpuStack};

fn cpu_id(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu_id");
    g.bench_function("current_cpu", |b| {
        b.iter(|| black_box(restartable::current_cpu()))
    });
    g.bench_function("sched_getcpu", |b| {
        // SAFETY: sched_getcpu has no preconditions.
        b.iter(|| black_box(unsafe { libc::sched_getcpu() }))
    });
    g.finish();
}

fn counter(c: &mut Criterion) {
    let mut g = c.benchmark_group("counter");
    let counter = PerCpuCounter::new();
    g.bench_function("per_cpu_counter_add", |b| {
        b.iter(|| counter.add(black_box(1)))
    });
    let atomic = AtomicI64::new(0);
    g.bench_function("atomic_fetch_add", |b| {
        b.iter(|| atomic.fetch_add(black_box(1), Ordering::Relaxed))
    });
    g.finish();
    black_box(counter.sum());
}

fn lock(c: &mut Criterion) {
    let mut g = c.benchmark_group("lock");
    let lock: PerCpuLock<u64> = PerCpuLock::new();
    g.bench_function("per_cpu_lock_add_unlock", |b| b.iter(|| *lock.lock() += 1));
    let mutex = Mutex::new(0u64);
    g.bench_function("std_mutex_add_unlock", |b| {
        b.iter(|| *mutex.lock().unwrap_or_else(|e| e.into_inner()) += 1)
    });
    g.finish();
}

fn stack_and_buffer(c: &mut Criterion) {
    let mut g = c.benchmark_group("push_pop");
    let stack: PerCpuStack<u64> = PerCpuStack::new();
    g.bench_function("per_cpu_stack", |b| {
        b.iter(|| {
            stack.push(black_box(1));
            black_box(stack.pop())
        })
    });
    let buffer: PerCpuBuffer<u64, 256> = PerCpuBuffer::new();
    g.bench_function("per_cpu_buffer", |b| {
        b.iter(|| {
            let _ = black_box(buffer.push(black_box(1)));
            black_box(buffer.pop())
        })
    });
    let vec = Mutex::new(Vec::<u64>::with_capacity(16));
    g.bench_function("mutex_vec", |b| {
        b.iter(|| {
            vec.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(black_box(1));
            black_box(vec.lock().unwrap_or_else(|e| e.into_inner()).pop())
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = cpu_id, counter, lock, stack_and_buffer
}
criterion_main!(benches);
