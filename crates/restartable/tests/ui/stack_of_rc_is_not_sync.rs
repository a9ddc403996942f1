// Values move between threads through a PerCpuStack: a stack of `Rc` cannot be shared.
use std::rc::Rc;

use restartable::PerCpuStack;

fn main() {
    let stack: PerCpuStack<Rc<u8>> = PerCpuStack::new();
    std::thread::scope(|s| {
        s.spawn(|| stack.pop());
    });
}
