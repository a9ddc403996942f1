// Two `&mut` into one PerCpu at once are refused.
use restartable::percpu::storage::{IndexBy, PerCpu};

fn main() {
    let mut p: PerCpu<u64> = PerCpu::new(IndexBy::Cpu);
    let a = p.get_mut(0);
    let b = p.get_mut(0);
    *a += 1;
    *b += 1;
}
