// A PerCpuLockGuard is released by the thread that took it: it cannot be sent away.
use restartable::PerCpuLock;

fn main() {
    let lock: PerCpuLock<u64> = PerCpuLock::new();
    std::thread::scope(|s| {
        let guard = lock.lock();
        s.spawn(move || drop(guard));
    });
}
