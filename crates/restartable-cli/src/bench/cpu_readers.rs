//! The other ways to read the current CPU, for the CPU-id workload: the `rdpid` and
//! `rdtscp` instructions (Linux keeps the CPU number in `IA32_TSC_AUX`), the vDSO's
//! `__vdso_getcpu`, and the raw `getcpu` system call.

use std::sync::OnceLock;

/// `/proc/cpuinfo` flags of the first CPU: the kernel lists only what it supports
/// (for `rdpid`/`rdtscp`, that it keeps the CPU number in `IA32_TSC_AUX`).
pub fn cpu_flags() -> Vec<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Whether `/proc/cpuinfo` lists `flag`.
pub fn has_flag(flag: &str) -> bool {
    static FLAGS: OnceLock<Vec<String>> = OnceLock::new();
    FLAGS.get_or_init(cpu_flags).iter().any(|f| f == flag)
}

/// `rdpid`: the CPU number from `IA32_TSC_AUX` (Linux stores `node << 12 | cpu`).
/// Only call where [`has_flag`]`("rdpid")`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn rdpid() -> u32 {
    let aux: u64;
    // SAFETY: `rdpid` reads IA32_TSC_AUX into a register and touches nothing else; the
    // caller checked that the CPU and the kernel support it (`rdpid` in cpuinfo).
    unsafe {
        core::arch::asm!("rdpid {}", out(reg) aux, options(nomem, nostack, preserves_flags));
    }
    (aux & 0xfff) as u32
}

/// `rdtscp`: reads the time-stamp counter and `IA32_TSC_AUX` (waits for earlier
/// instructions to finish, which is what makes it slower than `rdpid`). Only call
/// where [`has_flag`]`("rdtscp")`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn rdtscp() -> u32 {
    let aux: u32;
    // SAFETY: `rdtscp` writes edx:eax (the TSC) and ecx (TSC_AUX), all declared as
    // outputs, and touches no memory; the caller checked support (`rdtscp` in cpuinfo).
    unsafe {
        core::arch::asm!(
            "rdtscp",
            out("eax") _,
            out("edx") _,
            out("ecx") aux,
            options(nomem, nostack, preserves_flags)
        );
    }
    aux & 0xfff
}

/// The raw `getcpu` system call.
#[inline(always)]
pub fn getcpu_syscall() -> u32 {
    let mut cpu: u32 = 0;
    // SAFETY: getcpu writes one u32 to `cpu`; the node and cache pointers may be null.
    unsafe {
        libc::syscall(
            libc::SYS_getcpu,
            &mut cpu as *mut u32,
            core::ptr::null_mut::<u32>(),
            core::ptr::null_mut::<libc::c_void>(),
        );
    }
    cpu
}

/// glibc's `sched_getcpu()` (since 2.35 it reads the rseq area when glibc registered
/// one, else it calls the vDSO).
#[inline(always)]
pub fn sched_getcpu() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::sched_getcpu() as u32 }
}

/// The vDSO's `getcpu(cpu, node, cache)`.
pub type VdsoGetcpu = unsafe extern "C" fn(*mut u32, *mut u32, *mut libc::c_void) -> libc::c_long;

/// `__vdso_getcpu`, found through the dynamic loader: glibc lists the vDSO among the
/// loaded objects as `linux-vdso.so.1`, so `dlopen(RTLD_NOLOAD)` + `dlvsym` reach it
/// without parsing the image at `getauxval(AT_SYSINFO_EHDR)`. `Err` says why not.
pub fn vdso_getcpu() -> Result<VdsoGetcpu, String> {
    static F: OnceLock<Result<VdsoGetcpu, String>> = OnceLock::new();
    F.get_or_init(|| {
        // SAFETY: dlopen with RTLD_NOLOAD only looks up an already loaded object.
        let h = unsafe {
            libc::dlopen(
                c"linux-vdso.so.1".as_ptr(),
                libc::RTLD_LAZY | libc::RTLD_NOLOAD,
            )
        };
        if h.is_null() {
            return Err("the dynamic loader does not list linux-vdso.so.1".into());
        }
        // SAFETY: `h` is a valid handle; the names are NUL-terminated.
        let mut sym = unsafe { libc::dlvsym(h, c"__vdso_getcpu".as_ptr(), c"LINUX_2.6".as_ptr()) };
        if sym.is_null() {
            // SAFETY: as above.
            sym = unsafe { libc::dlsym(h, c"__vdso_getcpu".as_ptr()) };
        }
        if sym.is_null() {
            return Err("the vDSO has no __vdso_getcpu".into());
        }
        // SAFETY: the vDSO's getcpu has this C signature (vdso(7)).
        let f = unsafe { core::mem::transmute::<*mut libc::c_void, VdsoGetcpu>(sym) };
        Ok(f)
    })
    .clone()
}

/// Calls the vDSO's getcpu.
#[inline(always)]
pub fn call_vdso(f: VdsoGetcpu) -> u32 {
    let mut cpu: u32 = 0;
    // SAFETY: `f` is `__vdso_getcpu` (see `vdso_getcpu`); it writes one u32, and the
    // node and cache pointers may be null.
    unsafe {
        f(&mut cpu, core::ptr::null_mut(), core::ptr::null_mut());
    }
    cpu
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reader names a CPU this process may run on.
    #[test]
    fn readers_agree_on_range() {
        let n = restartable::possible_cpus() as u32;
        assert!(getcpu_syscall() < n);
        assert!(sched_getcpu() < n);
        if let Ok(f) = vdso_getcpu() {
            assert!(call_vdso(f) < n);
        }
        #[cfg(target_arch = "x86_64")]
        {
            if has_flag("rdpid") {
                assert!(rdpid() < n);
            }
            if has_flag("rdtscp") {
                assert!(rdtscp() < n);
            }
        }
    }
}
