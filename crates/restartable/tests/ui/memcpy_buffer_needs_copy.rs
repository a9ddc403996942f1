// The memcpy buffer copies items' bytes in and out: only `Copy` items.
use restartable::PerCpuMemcpyBuffer;

fn keep(_: PerCpuMemcpyBuffer<String, 4>) {}

fn main() {
    let _ = keep;
}
