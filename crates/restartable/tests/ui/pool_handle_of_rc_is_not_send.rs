// A handle to a pooled `Rc` cannot move to another thread (the `Rc`'s count is not
// atomic, and the pool it returns to cannot be shared).
use std::rc::Rc;

use restartable::PerCpuPool;

fn main() {
    static_pool();
}

fn static_pool() {
    let pool: PerCpuPool<Rc<u8>> = PerCpuPool::new(|| Rc::new(1));
    std::thread::scope(|s| {
        let obj = pool.get();
        s.spawn(move || drop(obj));
    });
}
