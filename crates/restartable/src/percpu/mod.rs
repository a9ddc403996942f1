//! Per-CPU storage and the safe containers built on the op contract.
//!
//! | container | per-CPU operation | sequence |
//! |-----------|-------------------|----------|
//! | [`PerCpuCounter`] | `add` | [`load_add_store`](crate::arch::load_add_store) |
//! | [`PerCpuLock`] | `lock` (0 -> 1) | [`load_cbne_store`](crate::arch::load_cbne_store) |
//! | [`PerCpuStack`] | `push` / `pop` | [`load_cbne_load_cbne_store`](crate::arch::load_cbne_load_cbne_store) / [`load_cbne_load_cbeq_store_add_load_store`](crate::arch::load_cbne_load_cbeq_store_add_load_store) |
//! | [`PerCpuBuffer`] | `push` / `pop` | [`load_cbne_store_store`](crate::arch::load_cbne_store_store) / [`load_cbne_load_cbne_store`](crate::arch::load_cbne_load_cbne_store) |
//! | [`PerCpuMemcpyBuffer`] | `push` / `pop` | [`load_cbne_memcpy_store`](crate::arch::load_cbne_memcpy_store) |
//!
//! # Fallback and forward progress
//! Every container has a shared fallback path (atomics or a lock) that its readers
//! include. A thread takes it when rseq is unavailable to it (no rseq at all, a
//! foreign owner, thread teardown, a thread that opted out with
//! [`disable_current_thread`](crate::registration::disable_current_thread)), and when
//! one operation aborts [`MAX_CONSECUTIVE_ABORTS`] times in a row (a debugger
//! single-stepping, a signal storm, a page fault on every attempt): the operation then
//! completes on the fallback instead of retrying forever. A thread without rseq never
//! writes the slots that sequences write.
//!
//! Each container is generic over a [`Hooks`](crate::hooks::Hooks) type, `NoHooks` by
//! default; the stress tests use `TestHooks`.

mod buffer;
mod counter;
mod lock;
mod memcpy_buffer;
mod stack;
pub mod storage;

pub use buffer::PerCpuBuffer;
pub use counter::PerCpuCounter;
pub use lock::{PerCpuLock, PerCpuLockGuard};
pub use memcpy_buffer::PerCpuMemcpyBuffer;
pub use stack::PerCpuStack;
pub use storage::{IndexBy, PerCpu, Zeroable};

/// Consecutive aborts after which one operation completes on its container's shared
/// fallback path.
pub const MAX_CONSECUTIVE_ABORTS: u32 = 100;

/// The index mode a container actually uses: `MmCid` only where the kernel maintains
/// mm_cid (otherwise every thread would read 0 and share one slot unprotected).
pub(crate) fn effective_index(index: IndexBy) -> IndexBy {
    match index {
        IndexBy::MmCid if crate::registration::mm_cid_available() => IndexBy::MmCid,
        _ => IndexBy::Cpu,
    }
}

/// Issues the fence that stops in-flight sequences on slot `i` of a container
/// indexed by `index`.
pub(crate) fn fence_slot(index: IndexBy, i: usize) -> Result<(), crate::FenceError> {
    match index {
        IndexBy::Cpu => crate::fence_cpu(i as u32),
        // mm_cids move between CPUs: stop every CPU.
        IndexBy::MmCid => crate::fence_all(),
    }
}

/// Expands `$body` with `$I` bound to the op index type matching `$index`.
macro_rules! with_index {
    ($index:expr, $I:ident => $body:expr) => {
        match $index {
            $crate::percpu::IndexBy::Cpu => {
                type $I = $crate::arch::ByCpu;
                $body
            }
            $crate::percpu::IndexBy::MmCid => {
                type $I = $crate::arch::ByMmCid;
                $body
            }
        }
    };
}
pub(crate) use with_index;
