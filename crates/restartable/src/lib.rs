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
//! - [`current_cpu`], [`current_mm_cid`], [`current_numa_node`]: read from the
//!   thread's rseq area, found at a fixed offset from the thread pointer where it is
//!   at one (glibc's `__rseq_offset`; see [`registration::AreaOffset`]), with no
//!   system call.
//! - [`possible_cpus`] sizes per-CPU arrays; [`allowed_cpus`] lists the CPUs this thread
//!   may run on (past glibc's 1,024-CPU `cpu_set_t`).
//! - [`fence_cpu`] / [`fence_all`]: membarrier rseq fences for cross-CPU work.
//! - [`arch`]: the reference op set (`load_cbne_store`, `load_add_store`, ...), each
//!   one restartable sequence in inline asm with its debugger tables; `unsafe`, with
//!   the contract its callers keep written there.
//! - [`percpu`]: safe containers on that contract: [`PerCpuCounter`], [`PerCpuLock`],
//!   [`PerCpuStack`] (with allocation-free [`StackNode`]s), [`PerCpuBuffer`] (word-sized
//!   values held in the slot), [`PerCpuMemcpyBuffer`], [`PerCpuPool`], and the strided
//!   [`PerCpu`] storage under them; all have `const` constructors.
//!
//! Where rseq is missing (old kernels, valgrind, emulators, seccomp filters) everything
//! keeps working on fallbacks; [`status`] says which path this thread is on.
//!
//! # Targets
//! The critical-section asm exists for x86_64 Linux. Every other target builds and
//! runs on the fallback paths (registration reports [`Reason::UnsupportedTarget`]).
//!
//! # Cargo features
//! - `initial-exec-tls` (off by default): where the library registers rseq itself
//!   (glibc before 2.35, or `GLIBC_TUNABLES=glibc.pthread.rseq=0`), its per-thread
//!   area becomes an initial-exec thread-local, at one offset from every thread's
//!   thread pointer ([`registration::AreaOffset`]) in a shared object too, so the
//!   fast paths find it with no thread-local access. For shared objects loaded at
//!   program start (`LD_PRELOAD`, a dependency: `librestartable_malloc.so` uses it);
//!   one loaded with `dlopen` needs 256 bytes of glibc's small reserve of static TLS.
//!   Executables get the offset without it.
//!
//! # Soundness
//! **What safe code can rely on.** No use of the safe API reaches undefined
//! behaviour, under preemption, migration, signals (handlers included), `fork`,
//! thread exit, and any mix of threads with rseq, without it, or opted out:
//! - the containers never give two threads access to one slot's data at once: a
//!   sequence commits only on the CPU (or mm_cid) it was prepared for, while its
//!   thread is registered, and an operation that cannot run one (no rseq, an
//!   opted-out or exiting thread, too many aborts) completes on the container's
//!   shared fallback, which every reader includes;
//! - a [`ThreadArea`] cannot leave its thread, and one kept while the thread's
//!   registration ends only ever makes ops abort, by CPU and by mm_cid alike;
//! - a panic in the user's code (a [`PerCpuLock`]'s `T::default()`) leaves the
//!   container usable, and a failing fence makes a steal fail without losing a value;
//! - memory given back by a dropped [`PerCpu`] is reset without reading its old bytes
//!   (possibly uninitialized padding) as values;
//! - every test hook of [`hooks`] is safe except [`hooks::set_skip_cpu_check`], which
//!   breaks sequences on purpose and is an `unsafe fn`; so are the hidden test
//!   switches of the containers' set-up on first use (a faked process id, the
//!   identity by process id forced), which could make a process take over its own
//!   set-up.
//!
//! **What callers of the `unsafe` op layer guarantee.** The ops of [`arch`] are one
//! restartable sequence each; the caller (see the contract there) passes the index it
//! read from the same [`ThreadArea`] (a stale area or index only makes the op abort),
//! pointers that are valid and aligned, to data that only sequences for that index
//! write (or code that excluded them: stopped the slot, then [`fence_cpu`]), stores
//! made before the commit only to memory nobody reads until the commit publishes it,
//! and, for list pops, nodes that stay readable as long as a sequence may read them.
//!
//! **Unloading a shared object that ran sequences.** When a sequence ends, the
//! thread's `rseq_cs` still holds the address of its descriptor, in the `__rseq_cs`
//! section of the object whose code ran it. The kernel reads that descriptor at the
//! thread's next preemption, migration or signal (and then clears `rseq_cs`, the
//! thread being outside the sequence); the next sequence overwrites it. If the object
//! is unloaded (`dlclose`) in between, the kernel reads unmapped memory and kills the
//! thread with `SIGSEGV`, or reads whatever got mapped there since. So a shared object
//! with sequences may be unloaded only after every thread that ran them has exited or
//! has cleared its `rseq_cs` with [`registration::prepare_unload`] (librseq's
//! `rseq_prepare_unload`), called on that thread after its last sequence, from code
//! that stays loaded. (In library-owned mode the area itself lives in the object's
//! thread-local storage; each registered thread then has the object's thread-local
//! destructor pending, which unregisters it, and glibc does not unload an object
//! while such destructors are pending.)
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

pub use cpu::{allowed_cpus, current_cpu, current_mm_cid, current_numa_node, possible_cpus};
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
