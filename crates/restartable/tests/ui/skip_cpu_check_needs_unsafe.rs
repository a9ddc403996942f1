// Switching off the CPU check breaks every `TestHooks` sequence (two threads can pop
// the same node of a `PerCpuStack`): safe code cannot do it.
use restartable::hooks::{self, TestHooks};
use restartable::{IndexBy, PerCpuStack};

fn main() {
    hooks::set_skip_cpu_check(true);
    let stack = PerCpuStack::<Box<u64>, TestHooks>::with_hooks(IndexBy::Cpu);
    stack.push(Box::new(1));
    drop(stack.pop());
}
