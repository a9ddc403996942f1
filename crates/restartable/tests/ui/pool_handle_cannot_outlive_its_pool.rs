// A pool handle borrows its pool: it cannot outlive it.
use restartable::PerCpuPool;

fn main() {
    let obj;
    {
        let pool: PerCpuPool<Vec<u8>> = PerCpuPool::new(Vec::new);
        obj = pool.get();
    }
    println!("{}", obj.len());
}
