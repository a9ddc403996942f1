//! The kernel's rseq ABI: `struct rseq`, `struct rseq_cs`, flags, signatures and
//! auxiliary-vector keys, with every offset that asm relies on checked at compile time.
//!
//! Everything here mirrors `include/uapi/linux/rseq.h`. Nothing in this module performs
//! a system call; see [`crate::sys`] for those.

use core::mem::{align_of, offset_of, size_of};

/// The per-thread area shared with the kernel (`struct rseq`).
///
/// The kernel updates `cpu_id_start`, `cpu_id`, `node_id` and `mm_cid` on every return
/// to user space of a registered thread. User space must never write those four
/// fields while the area is registered: recent kernels kill a process that does.
/// User space writes only `rseq_cs` (to enter a critical section).
#[repr(C, align(32))]
#[derive(Debug)]
pub struct Rseq {
    /// Always-valid CPU number (0 before registration).
    pub cpu_id_start: u32,
    /// Current CPU number; [`CPU_ID_UNINITIALIZED`] before registration,
    /// [`CPU_ID_REGISTRATION_FAILED`] when glibc's registration failed.
    pub cpu_id: u32,
    /// Address of the active `struct rseq_cs`, or 0 outside critical sections.
    pub rseq_cs: u64,
    /// Historical flags (must be 0).
    pub flags: u32,
    /// NUMA node of `cpu_id` (valid when the feature size is at least 24, Linux 6.3+).
    pub node_id: u32,
    /// Memory-map concurrency id (Linux 6.3+, feature size >= 28).
    pub mm_cid: u32,
    /// Padding up to the 32-byte original size; newer kernels extend the area.
    pub end: [u32; 1],
}

impl Rseq {
    /// An area ready to be registered: every CPU field reads "uninitialized".
    pub const fn new() -> Self {
        Rseq {
            cpu_id_start: 0,
            cpu_id: CPU_ID_UNINITIALIZED,
            rseq_cs: 0,
            flags: 0,
            node_id: 0,
            mm_cid: 0,
            end: [0],
        }
    }
}

impl Default for Rseq {
    fn default() -> Self {
        Self::new()
    }
}

/// A critical-section descriptor (`struct rseq_cs`), 32-byte aligned.
#[repr(C, align(32))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RseqCs {
    /// Structure version; always 0.
    pub version: u32,
    /// Flags; always 0 (the NO_RESTART flags are historical and unsupported).
    pub flags: u32,
    /// Address of the first instruction of the sequence.
    pub start_ip: u64,
    /// Length of the sequence: the post-commit address is `start_ip + post_commit_offset`.
    pub post_commit_offset: u64,
    /// Where the kernel sends the thread when it interrupts the sequence.
    pub abort_ip: u64,
}

/// `cpu_id` before the area is registered.
pub const CPU_ID_UNINITIALIZED: u32 = -1i32 as u32;
/// `cpu_id` when (glibc's) registration failed.
pub const CPU_ID_REGISTRATION_FAILED: u32 = -2i32 as u32;

/// `rseq()` flag: unregister the area.
pub const FLAG_UNREGISTER: i32 = 1;

/// The registration signature on x86 and x86_64: the kernel checks that the four
/// bytes before every abort handler hold it.
pub const SIGNATURE_X86: u32 = 0x5305_3053;

/// The signature used for this target's registrations.
#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
pub const SIGNATURE: u32 = SIGNATURE_X86;
/// The signature used for this target's registrations (librseq's value per arch).
#[cfg(target_arch = "aarch64")]
pub const SIGNATURE: u32 = 0xd428_bc00;
/// The signature used for this target's registrations (librseq's value per arch).
#[cfg(not(any(target_arch = "x86_64", target_arch = "x86", target_arch = "aarch64")))]
pub const SIGNATURE: u32 = 0x5305_3053;

/// `getauxval` key: the size of the rseq fields the kernel supports.
pub const AT_RSEQ_FEATURE_SIZE: libc::c_ulong = 27;
/// `getauxval` key: the alignment the kernel requires of the area.
pub const AT_RSEQ_ALIGN: libc::c_ulong = 28;

/// Size of the original ABI (`cpu_id_start` .. `flags`, padded): 32 bytes.
pub const ORIGINAL_SIZE: u32 = 32;
/// Feature size of the original ABI (up to and including `flags`).
pub const ORIGINAL_FEATURE_SIZE: u32 = 20;

/// Byte offset of `cpu_id_start` in [`Rseq`].
pub const OFFSET_CPU_ID_START: usize = 0;
/// Byte offset of `cpu_id` in [`Rseq`].
pub const OFFSET_CPU_ID: usize = 4;
/// Byte offset of `rseq_cs` in [`Rseq`].
pub const OFFSET_RSEQ_CS: usize = 8;
/// Byte offset of `flags` in [`Rseq`].
pub const OFFSET_FLAGS: usize = 16;
/// Byte offset of `node_id` in [`Rseq`].
pub const OFFSET_NODE_ID: usize = 20;
/// Byte offset of `mm_cid` in [`Rseq`].
pub const OFFSET_MM_CID: usize = 24;

/// Feature size needed for `node_id` to be valid.
pub const FEATURE_SIZE_NODE_ID: u32 = (OFFSET_NODE_ID + 4) as u32;
/// Feature size needed for `mm_cid` to be valid.
pub const FEATURE_SIZE_MM_CID: u32 = (OFFSET_MM_CID + 4) as u32;

/// `membarrier` command: which commands this kernel supports (a bit mask).
pub const MEMBARRIER_CMD_QUERY: i32 = 0;
/// `membarrier` command: restart the rseq critical sections in flight on the target
/// CPUs running threads of this process.
pub const MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ: i32 = 1 << 7;
/// `membarrier` command: register this process for [`MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ`].
pub const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ: i32 = 1 << 8;
/// `membarrier` flag: target only the CPU given in the third argument.
pub const MEMBARRIER_CMD_FLAG_CPU: u32 = 1 << 0;

// Layout checks: the asm uses these offsets as literal numbers.
const _: () = assert!(offset_of!(Rseq, cpu_id_start) == OFFSET_CPU_ID_START);
const _: () = assert!(offset_of!(Rseq, cpu_id) == OFFSET_CPU_ID);
const _: () = assert!(offset_of!(Rseq, rseq_cs) == OFFSET_RSEQ_CS);
const _: () = assert!(offset_of!(Rseq, flags) == OFFSET_FLAGS);
const _: () = assert!(offset_of!(Rseq, node_id) == OFFSET_NODE_ID);
const _: () = assert!(offset_of!(Rseq, mm_cid) == OFFSET_MM_CID);
const _: () = assert!(size_of::<Rseq>() == ORIGINAL_SIZE as usize);
const _: () = assert!(align_of::<Rseq>() == 32);
const _: () = assert!(offset_of!(RseqCs, version) == 0);
const _: () = assert!(offset_of!(RseqCs, flags) == 4);
const _: () = assert!(offset_of!(RseqCs, start_ip) == 8);
const _: () = assert!(offset_of!(RseqCs, post_commit_offset) == 16);
const _: () = assert!(offset_of!(RseqCs, abort_ip) == 24);
const _: () = assert!(size_of::<RseqCs>() == 32);
const _: () = assert!(align_of::<RseqCs>() == 32);

/// Effective feature size given what glibc exports in `__rseq_size` and what the
/// kernel reports in the auxiliary vector (`0` from an old kernel counts as 20).
///
/// glibc versions export 32 or 20 for the original ABI even when the kernel supports
/// more; in those two cases the usable size is `min(32, auxv feature size)`.
pub const fn effective_feature_size(libc_rseq_size: u32, auxv_feature_size: u32) -> u32 {
    let auxv = if auxv_feature_size == 0 {
        ORIGINAL_FEATURE_SIZE
    } else {
        auxv_feature_size
    };
    if libc_rseq_size == 20 || libc_rseq_size == 32 {
        if auxv < ORIGINAL_SIZE {
            auxv
        } else {
            ORIGINAL_SIZE
        }
    } else {
        libc_rseq_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_size_rules() {
        assert_eq!(effective_feature_size(32, 28), 28);
        assert_eq!(effective_feature_size(20, 28), 28);
        assert_eq!(effective_feature_size(32, 0), 20);
        assert_eq!(effective_feature_size(32, 40), 32);
        assert_eq!(effective_feature_size(36, 40), 36);
    }

    #[test]
    fn new_area_reads_uninitialized() {
        let a = Rseq::new();
        assert_eq!(a.cpu_id, CPU_ID_UNINITIALIZED);
        assert_eq!(a.rseq_cs, 0);
    }
}
