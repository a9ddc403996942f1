//! Linux restartable sequences (rseq) for Rust: per-CPU data without atomic
//! instructions or locks on the fast path.
//!
//! A restartable sequence reads the current CPU from a per-thread area that the kernel
//! keeps up to date, prepares an update of that CPU's data in ordinary code, and
//! commits it with one single store. If the thread is preempted, migrated or signalled
//! before the commit, the kernel moves it to an abort handler and the sequence is
//! retried. Nothing else can run on that CPU in between, so no atomic instruction and
//! no lock is needed.
//!
//! # Layers
//! - [`abi`]: the kernel's `struct rseq` / `struct rseq_cs` and constants.
//! - [`registration`]: each thread's area, reused from glibc (2.35+) where glibc
//!   registered one, registered by the library otherwise, or unavailable with a reason.
//! - [`current_cpu`], [`current_mm_cid`], [`current_numa_node`]: one load each.
//! - [`fence_cpu`] / [`fence_all`]: membarrier rseq fences for cross-CPU work.
//!
//! Where rseq is missing (old kernels, valgrind, emulators, seccomp filters) everything
//! keeps working on fallbacks; [`status`] says which path this thread is on.
//!
//! # Targets
//! The critical-section asm exists for x86_64 Linux. Every other target builds and
//! runs on the fallback paths (registration reports [`Reason::UnsupportedTarget`]).
//!
//! # Examples
//! ```
//! let status = restartable::status();
//! println!("{status}");
//! let cpu = restartable::current_cpu();
//! assert!((cpu as usize) < restartable::possible_cpus());
//! ```

#![deny(missing_docs)]
// Without the asm backend, the registration state machine is compiled but unused.
#![cfg_attr(not(restartable_asm), allow(dead_code))]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod abi;
pub mod arch;
mod cpu;
mod fence;
pub mod hooks;
pub mod percpu;
pub mod registration;
pub mod sys;

use core::fmt;

pub use cpu::{current_cpu, current_mm_cid, current_numa_node, possible_cpus};
pub use fence::{fence_all, fence_cpu, fences_supported, FenceError};
pub use percpu::{
    IndexBy, PerCpu, PerCpuBuffer, PerCpuCounter, PerCpuLock, PerCpuLockGuard, PerCpuMemcpyBuffer,
    PerCpuPool, PerCpuStack, Pooled, StackNode,
};
pub use registration::{Owner, Reason, Registration, ThreadArea};

/// What this thread can use: who owns its registration, the kernel's feature size,
/// and which optional features are there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// Libc-owned, library-owned, or unavailable with the reason.
    pub registration: Registration,
    /// The usable size of the rseq area's fields (20 original, 28 with mm_cid).
    pub feature_size: u32,
    /// Whether [`current_mm_cid`] returns the kernel's concurrency id.
    pub mm_cid: bool,
    /// Whether the area's `node_id` is maintained.
    pub node_id: bool,
    /// Whether membarrier rseq fences ([`fence_cpu`], [`fence_all`]) are supported.
    pub membarrier_rseq: bool,
}

impl Status {
    /// Whether this thread runs restartable sequences (as opposed to fallbacks).
    pub fn is_registered(&self) -> bool {
        matches!(self.registration, Registration::Registered(_))
    }

    /// The reason rseq is unavailable to this thread, if it is.
    pub fn reason(&self) -> Option<Reason> {
        match self.registration {
            Registration::Unavailable(r) => Some(r),
            Registration::Registered(_) => None,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.registration {
            Registration::Registered(Owner::Libc) => f.write_str("rseq registered by libc")?,
            Registration::Registered(Owner::Library) => {
                f.write_str("rseq registered by the library")?
            }
            Registration::Unavailable(r) => write!(f, "rseq unavailable: {r}")?,
        }
        write!(
            f,
            "; feature size {}; mm_cid {}; node_id {}; membarrier rseq fences {}",
            self.feature_size,
            if self.mm_cid { "yes" } else { "no" },
            if self.node_id { "yes" } else { "no" },
            if self.membarrier_rseq { "yes" } else { "no" },
        )
    }
}

/// This thread's rseq status, registering the thread on first use.
///
/// # Examples
/// ```
/// let s = restartable::status();
/// if let Some(reason) = s.reason() {
///     println!("falling back: {reason}");
/// }
/// ```
pub fn status() -> Status {
    let registration = registration::current_registration();
    let registered = matches!(registration, Registration::Registered(_));
    Status {
        registration,
        feature_size: registration::feature_size(),
        mm_cid: registered && registration::mm_cid_available(),
        node_id: registered && registration::node_id_available(),
        membarrier_rseq: registered && fences_supported(),
    }
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
