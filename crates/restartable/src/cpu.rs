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

/// The CPUs this thread may run on (its affinity mask), in increasing order.
///
/// Reads the mask with the `sched_getaffinity` system call itself, into a buffer
/// sized from [`possible_cpus`] and grown while the kernel asks for a larger one, so
/// the list is exact past the 1,024 CPUs of glibc's `cpu_set_t`. The list is never
/// empty: a thread always has a CPU it may run on.
///
/// # Errors
/// The system call's error: for example `EPERM` or `ENOSYS` under a seccomp filter.
///
/// # Examples
/// ```
/// let cpus = restartable::allowed_cpus().unwrap();
/// assert!(!cpus.is_empty());
/// assert!(cpus.iter().all(|&cpu| cpu < restartable::possible_cpus()));
/// ```
#[doc(alias = "sched_getaffinity")]
pub fn allowed_cpus() -> std::io::Result<Vec<usize>> {
    // At least 1,024 bits, as `cpu_set_t`; the kernel refuses a buffer below its
    // `nr_cpu_ids` bits with EINVAL, and no x86_64 kernel has more than 8,192.
    let mut words = possible_cpus().div_ceil(64).max(16);
    loop {
        let mut mask = vec![0u64; words];
        // SAFETY: the buffer is valid for writes of the size passed, in bytes (a
        // multiple of the word size, as the kernel requires); pid 0 is this thread.
        let r =
            unsafe { libc::syscall(libc::SYS_sched_getaffinity, 0, words * 8, mask.as_mut_ptr()) };
        if r >= 0 {
            // The kernel copied `r` bytes (its mask size) and left the rest zero.
            let mut cpus = Vec::new();
            for (i, &word) in mask.iter().enumerate() {
                let mut bits = word;
                while bits != 0 {
                    cpus.push(i * 64 + bits.trailing_zeros() as usize);
                    bits &= bits - 1;
                }
            }
            return Ok(cpus);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) || words >= 1 << 16 {
            return Err(e);
        }
        words *= 2;
    }
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
    fn allowed_cpus_match_glibcs_set() {
        let cpus = allowed_cpus().expect("sched_getaffinity");
        // SAFETY: an all-zero cpu_set_t is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
        // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 is this thread.
        let r = unsafe { libc::sched_getaffinity(0, core::mem::size_of_val(&set), &mut set) };
        assert_eq!(r, 0, "sched_getaffinity");
        let expected: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `i` is below CPU_SETSIZE.
            .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
            .collect();
        assert_eq!(cpus, expected);
        // The thread runs on an allowed CPU, wherever it migrates.
        assert!(cpus.contains(&(current_cpu() as usize)));
    }

    #[test]
    fn cpu_in_range() {
        for _ in 0..1000 {
            assert!((current_cpu() as usize) < possible_cpus());
        }
    }
}
