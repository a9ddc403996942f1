// The switch bytes the hooked sequences read are not reachable from outside the
// crate: safe code cannot set "skip the CPU check" by writing them directly.
use std::sync::atomic::Ordering;

use restartable::hooks;

fn main() {
    hooks::FLAGS[hooks::FLAG_SKIP_CPU_CHECK].store(1, Ordering::Relaxed);
    hooks::LOOPS[4].store(1, Ordering::Relaxed);
}
