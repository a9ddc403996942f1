//! Pinning a thread to one CPU, for any CPU number: `libc::CPU_SET` on a
//! `cpu_set_t` holds `CPU_SETSIZE` (1024) CPUs and panics (index out of bounds) past
//! it, while `restartable::allowed_cpus()` lists every CPU of larger machines.

/// The affinity mask with only `cpu` set, in the kernel's layout (`unsigned long`
/// words), just long enough: any CPU number.
pub fn only_cpu(cpu: usize) -> Vec<libc::c_ulong> {
    let bits = libc::c_ulong::BITS as usize;
    let mut set = vec![0; cpu / bits + 1];
    set[cpu / bits] = 1 << (cpu % bits);
    set
}

/// Pins the calling thread to `cpu`; whether the kernel took it (it refuses a CPU
/// that is not online or not in the thread's cpuset).
pub fn pin_to(cpu: usize) -> bool {
    let set = only_cpu(cpu);
    // SAFETY: pins the calling thread (pid 0); the size is the buffer's, in bytes
    // (the kernel takes a mask shorter than its own as zeros past its end).
    unsafe {
        libc::sched_setaffinity(
            0,
            core::mem::size_of_val(set.as_slice()),
            set.as_ptr().cast(),
        ) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One bit at CPU `cpu`, also past `CPU_SETSIZE` (where `libc::CPU_SET` indexed
    /// out of its 1024 bits and panicked), in a mask the kernel reads as such.
    #[test]
    fn a_one_cpu_mask_holds_any_cpu() {
        let bits = libc::c_ulong::BITS as usize;
        for cpu in [0, 1, bits - 1, bits, 1023, 1024, 5000] {
            let set = only_cpu(cpu);
            assert_eq!(set.len(), cpu / bits + 1, "cpu {cpu}");
            let ones: Vec<usize> = (0..set.len() * bits)
                .filter(|&c| set[c / bits] & (1 << (c % bits)) != 0)
                .collect();
            assert_eq!(ones, [cpu]);
        }
        // The kernel takes it: this thread pinned to a CPU it may run on, then back.
        let own = restartable::allowed_cpus().expect("this thread's mask");
        let mut all = vec![0 as libc::c_ulong; restartable::possible_cpus() / bits + 16];
        for &c in &own {
            all[c / bits] |= 1 << (c % bits);
        }
        std::thread::spawn(move || {
            assert!(pin_to(own[0]), "the kernel refused CPU {}", own[0]);
            assert_eq!(restartable::allowed_cpus().expect("the mask"), [own[0]]);
            // SAFETY: this thread (pid 0); the size is the buffer's, in bytes.
            let r = unsafe {
                libc::sched_setaffinity(
                    0,
                    core::mem::size_of_val(all.as_slice()),
                    all.as_ptr().cast(),
                )
            };
            assert_eq!(r, 0);
        })
        .join()
        .expect("the pinned thread");
    }

    /// A CPU past `CPU_SETSIZE` that this machine does not have: refused by the
    /// kernel (the thread keeps its mask), not a panic as with `libc::CPU_SET` (what
    /// `rseq param-test`'s per-CPU fill did on a machine with more than 1024 CPUs).
    #[test]
    fn pinning_past_cpu_setsize_is_refused_not_a_panic() {
        let cpu = (restartable::possible_cpus() + 1).max(5000);
        std::thread::spawn(move || {
            let before = restartable::allowed_cpus().expect("the mask");
            assert!(!pin_to(cpu), "the kernel took CPU {cpu}");
            assert_eq!(restartable::allowed_cpus().expect("the mask"), before);
        })
        .join()
        .expect("pin_to panicked");
    }
}
