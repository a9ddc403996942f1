// `drain` takes the lists without a fence: it needs exclusive access, so no other
// thread can be pushing meanwhile.
use restartable::PerCpuStack;

fn main() {
    let mut stack: PerCpuStack<u32> = PerCpuStack::new();
    std::thread::scope(|s| {
        s.spawn(|| stack.push(1));
        let _ = stack.drain();
    });
}
