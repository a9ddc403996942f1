//! Pinning threads to CPUs in tests. Included with `#[path]` by the tests that pin
//! (`ops.rs`, `slab_ops.rs`, the container tests' `common`, and `restartable-alloc`'s
//! test `common`).

#![allow(dead_code)]

/// Pins thread `tid` (0: the calling thread) to the CPUs in `cpus`, each below
/// `CPU_SETSIZE`; panics with the OS error if the kernel refuses.
pub fn pin(tid: libc::pid_t, cpus: &[usize]) {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        assert!(cpu < libc::CPU_SETSIZE as usize, "CPU {cpu} out of range");
        // SAFETY: `cpu` is below CPU_SETSIZE (checked above).
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let r = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
    assert_eq!(
        r,
        0,
        "sched_setaffinity({tid}, {cpus:?}): {}",
        std::io::Error::last_os_error()
    );
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) {
    pin(0, &[cpu]);
}
