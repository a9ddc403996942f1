//! The current CPU, mm_cid and NUMA node, for the cost of one load where rseq is
//! registered, with fallbacks where it is not.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::registration::{self, ThreadArea};
use crate::sys;

/// The CPU this thread is running on.
///
/// One thread-local load from the rseq area on the fast path; `sched_getcpu()` (then
/// the raw `getcpu` system call) where rseq is unavailable. Never fails. Like every
/// CPU number, it may be stale as soon as it is read: the thread can migrate.
///
/// # Examples
/// ```
/// let cpu = restartable::current_cpu();
/// assert!((cpu as usize) < restartable::possible_cpus());
/// ```
#[doc(alias = "sched_getcpu")]
#[doc(alias = "rseq_current_cpu")]
#[inline]
pub fn current_cpu() -> u32 {
    registration::current_cpu()
}

/// The memory-map concurrency id of this thread (Linux 6.3+): a compact id in
/// `[0, min(threads, allowed CPUs))`, unique among the threads of this process running
/// at the same time. `None` where rseq or mm_cid is unavailable.
///
/// # Examples
/// ```
/// if let Some(cid) = restartable::current_mm_cid() {
///     assert!((cid as usize) < restartable::possible_cpus());
/// }
/// ```
#[doc(alias = "rseq_current_mm_cid")]
#[inline]
pub fn current_mm_cid() -> Option<u32> {
    let area = ThreadArea::current().ok()?;
    if !registration::mm_cid_available() {
        return None;
    }
    Some(area.mm_cid())
}

/// The NUMA node of the CPU this thread runs on. From the rseq area where the kernel
/// provides it (Linux 6.3+), otherwise from the `getcpu` system call; `None` only when
/// neither answers.
///
/// # Examples
/// ```
/// let node = restartable::current_numa_node();
/// assert!(node.is_some());
/// ```
#[doc(alias = "rseq_current_node_id")]
#[inline]
pub fn current_numa_node() -> Option<u32> {
    if let Ok(area) = ThreadArea::current() {
        if registration::node_id_available() {
            return Some(area.node_id());
        }
    }
    sys::getcpu_node_syscall()
}

/// The number of possible CPUs: one more than the highest CPU number in
/// `/sys/devices/system/cpu/possible`, else (no `/sys`) the larger of the configured
/// processor count and the bits of the kernel's CPU mask, at least 1. Every CPU number
/// this process can observe is below it, so it sizes per-CPU arrays.
///
/// # Examples
/// ```
/// assert!(restartable::possible_cpus() >= 1);
/// ```
///
/// Async-signal-safe (first use included: no lock and no allocation; the file is read
/// into a buffer on the stack), so that containers can be set up on first use inside
/// a signal handler or a forked child.
pub fn possible_cpus() -> usize {
    static POSSIBLE: AtomicUsize = AtomicUsize::new(0);
    let n = POSSIBLE.load(Ordering::Relaxed);
    if n != 0 {
        return n;
    }
    let mut buf = [0u8; 512];
    let n = crate::sys::read_small_file(c"/sys/devices/system/cpu/possible", &mut buf)
        .and_then(parse_cpu_list_max)
        .map(|max| max + 1)
        .unwrap_or_else(|| {
            // SAFETY: sysconf has no preconditions.
            let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
            // Without the file, glibc counts CPUs (`/sys`'s directories, `/proc/stat`'s
            // online CPUs, or with neither mounted the affinity mask): a count, which
            // can be below the highest CPU number. The kernel's mask size bounds it.
            (n.max(1) as usize).max(cpumask_bits())
        })
        .max(1);
    // Every thread computes the same value: a race only repeats the work.
    POSSIBLE.store(n, Ordering::Relaxed);
    n
}

/// The bits of the kernel's CPU mask, above every CPU number (its `nr_cpu_ids`,
/// rounded up to a word, or the kernel's `NR_CPUS`), with neither `/sys` nor `/proc`:
/// the `sched_getaffinity` system call (not glibc's wrapper, which returns 0) returns
/// the bytes of the mask it copied. 0 if it fails (a mask larger than the buffer: more
/// than 8192 CPUs, above any `NR_CPUS` Linux builds for x86_64). On the stack, no
/// allocation: async-signal-safe.
fn cpumask_bits() -> usize {
    let mut mask = [0u64; 128];
    // SAFETY: the buffer is valid for writes of its size in bytes; pid 0 is this thread.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_getaffinity,
            0,
            core::mem::size_of_val(&mask),
            mask.as_mut_ptr(),
        )
    };
    if r > 0 {
        r as usize * 8
    } else {
        0
    }
}

/// The highest CPU number of a kernel CPU list such as `0-3,8,10-11`.
fn parse_cpu_list_max(list: &str) -> Option<usize> {
    let mut max = None;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let last = part.rsplit('-').next()?;
        let n: usize = last.trim().parse().ok()?;
        max = Some(max.map_or(n, |m: usize| m.max(n)));
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list_max("0-1\n"), Some(1));
        assert_eq!(parse_cpu_list_max("0"), Some(0));
        assert_eq!(parse_cpu_list_max("0-3,8,10-11"), Some(11));
        assert_eq!(parse_cpu_list_max(""), None);
        assert_eq!(parse_cpu_list_max("x"), None);
    }

    #[test]
    fn cpu_in_range() {
        for _ in 0..1000 {
            assert!((current_cpu() as usize) < possible_cpus());
        }
    }
}
