// A value pushed into the buffer moved in: it cannot be used (or pushed) again.
use restartable::PerCpuBuffer;

fn main() {
    let buf: PerCpuBuffer<Box<u64>> = PerCpuBuffer::new();
    let b = Box::new(1u64);
    let _ = buf.push(b);
    let _ = buf.push(b);
}
