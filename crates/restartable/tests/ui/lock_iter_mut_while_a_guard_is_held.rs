// `iter_mut` gives `&mut` to every instance: not while a guard gives access to one.
use restartable::PerCpuLock;

fn main() {
    let mut lock: PerCpuLock<u64> = PerCpuLock::new();
    let mut guard = lock.lock();
    for v in lock.iter_mut() {
        *v += 1;
    }
    *guard += 1;
}
