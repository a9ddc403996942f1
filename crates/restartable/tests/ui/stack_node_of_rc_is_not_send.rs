// A node holding an `Rc` cannot move to another thread.
use std::rc::Rc;

use restartable::StackNode;

fn main() {
    let node = StackNode::new(Rc::new(1));
    std::thread::spawn(move || drop(node));
}
