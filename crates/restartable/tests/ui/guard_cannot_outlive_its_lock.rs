// A guard borrows its lock: it cannot outlive it.
use restartable::PerCpuLock;

fn main() {
    let guard;
    {
        let lock: PerCpuLock<u64> = PerCpuLock::new();
        guard = lock.lock();
    }
    println!("{}", *guard);
}
