// A thread from std::thread::spawn may outlive the function: it cannot borrow a local
// counter (use a scoped thread, or an Arc).
use restartable::PerCpuCounter;

fn main() {
    let counter = PerCpuCounter::new();
    std::thread::spawn(|| counter.inc()).join().unwrap();
    println!("{}", counter.sum());
}
