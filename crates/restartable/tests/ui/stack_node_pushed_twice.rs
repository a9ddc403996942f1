// An owned node moves into the stack: it cannot be pushed twice.
use restartable::{PerCpuStack, StackNode};

fn main() {
    let stack: PerCpuStack<u64> = PerCpuStack::new();
    let node = StackNode::new(1);
    stack.push_node(node);
    stack.push_node(node);
}
