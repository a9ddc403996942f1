//! Raw system calls and libc look-ups: `rseq`, `membarrier`, `getcpu`, the auxiliary
//! vector and glibc's exported rseq symbols. Nothing else in the crate makes these calls.

use core::ffi::CStr;

use crate::abi::Rseq;

/// `errno` of the last failed call on this thread.
fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Registers (`flags == 0`) or unregisters (`flags == FLAG_UNREGISTER`) `area`.
///
/// # Safety
/// `area` must point to `len` bytes, aligned as the kernel requires, that stay valid
/// (and are not freed or reused) for as long as the registration lasts.
pub(crate) unsafe fn rseq(area: *mut Rseq, len: u32, flags: i32, sig: u32) -> Result<(), i32> {
    // SAFETY: the caller guarantees `area` stays valid while registered; the kernel
    // validates every argument and reports errors through errno.
    let ret = unsafe { libc::syscall(libc::SYS_rseq, area, len, flags, sig) };
    if ret == 0 {
        Ok(())
    } else {
        Err(last_errno())
    }
}

/// `membarrier(cmd, flags, cpu_id)`; returns the non-negative result or the errno.
pub(crate) fn membarrier(cmd: i32, flags: u32, cpu_id: i32) -> Result<i32, i32> {
    // SAFETY: membarrier takes only integers and touches no user memory.
    let ret = unsafe { libc::syscall(libc::SYS_membarrier, cmd, flags, cpu_id) };
    if ret >= 0 {
        Ok(ret as i32)
    } else {
        Err(last_errno())
    }
}

/// The CPU this thread runs on, without rseq: glibc's `sched_getcpu()` (which itself
/// reads glibc's rseq area when it has one, else uses the vDSO), then the raw syscall.
pub(crate) fn getcpu_fallback() -> u32 {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu >= 0 {
        return cpu as u32;
    }
    getcpu_syscall().unwrap_or(0)
}

/// The CPU from the raw `getcpu` system call, bypassing libc and the vDSO.
pub fn getcpu_syscall() -> Option<u32> {
    getcpu_raw().map(|(cpu, _)| cpu)
}

/// The NUMA node from the raw `getcpu` system call.
pub(crate) fn getcpu_node_syscall() -> Option<u32> {
    getcpu_raw().map(|(_, node)| node)
}

fn getcpu_raw() -> Option<(u32, u32)> {
    let mut cpu: u32 = 0;
    let mut node: u32 = 0;
    // SAFETY: both pointers are valid for writes of a u32; the third argument (tcache)
    // is unused by the kernel and may be null.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_getcpu,
            &mut cpu as *mut u32,
            &mut node as *mut u32,
            core::ptr::null_mut::<libc::c_void>(),
        )
    };
    (ret == 0).then_some((cpu, node))
}

/// `getauxval(key)`, 0 when absent.
/// Reads a small file (a sysfs or procfs value) into `buf`, as text: no allocation
/// and no lock (`open`/`read`/`close` only), so async-signal-safe. `None` when it
/// cannot be opened or read, is empty, longer than `buf`, or not UTF-8.
pub(crate) fn read_small_file<'a>(path: &CStr, buf: &'a mut [u8]) -> Option<&'a str> {
    // SAFETY: a NUL-terminated path; the descriptor is ours and closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let mut len = 0;
    let ok = loop {
        if len == buf.len() {
            break false;
        }
        // SAFETY: `buf[len..]` is writable for `buf.len() - len` bytes.
        let n = unsafe { libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len) };
        match n {
            0 => break len > 0,
            n if n > 0 => len += n as usize,
            _ if last_errno() == libc::EINTR => {}
            _ => break false,
        }
    };
    // SAFETY: our descriptor, closed once.
    unsafe { libc::close(fd) };
    if !ok {
        return None;
    }
    core::str::from_utf8(&buf[..len]).ok()
}

pub(crate) fn getauxval(key: libc::c_ulong) -> u64 {
    // SAFETY: getauxval has no preconditions; it returns 0 for unknown keys.
    unsafe { libc::getauxval(key) as u64 }
}

/// Whether the environment variable `name` is set to `value` (read with `getenv`:
/// no allocation, usable before `main` and inside an allocator).
pub(crate) fn env_is(name: &CStr, value: &[u8]) -> bool {
    // SAFETY: `name` is NUL-terminated; the returned string, if any, is read at once.
    unsafe {
        let v = libc::getenv(name.as_ptr());
        !v.is_null() && CStr::from_ptr(v).to_bytes() == value
    }
}

/// Looks up a data symbol exported by an already loaded object (glibc's `__rseq_*`),
/// at run time so the binary still loads with libcs that lack it.
fn lookup(name: &CStr) -> *const libc::c_void {
    // SAFETY: RTLD_DEFAULT is a valid pseudo-handle and `name` is NUL-terminated.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as *const libc::c_void }
}

/// What glibc exports about its own rseq registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LibcRseq {
    /// `__rseq_offset`: offset of the area from the thread pointer.
    pub offset: isize,
    /// `__rseq_size`: 0 when glibc did not register.
    pub size: u32,
    /// `__rseq_flags`.
    pub flags: u32,
}

/// glibc's `__rseq_offset` / `__rseq_size` / `__rseq_flags`, if this libc exports them.
pub(crate) fn libc_rseq() -> Option<LibcRseq> {
    let offset = lookup(c"__rseq_offset") as *const isize;
    let size = lookup(c"__rseq_size") as *const u32;
    let flags = lookup(c"__rseq_flags") as *const u32;
    if offset.is_null() || size.is_null() {
        return None;
    }
    // SAFETY: glibc defines these as `const ptrdiff_t __rseq_offset` and
    // `const unsigned int __rseq_size / __rseq_flags`, initialized before any user code
    // runs and never changed afterwards.
    unsafe {
        Some(LibcRseq {
            offset: offset.read(),
            size: size.read(),
            flags: if flags.is_null() { 0 } else { flags.read() },
        })
    }
}

/// The calling thread's instance of the main program's thread-local block, as its
/// address and length (`PT_TLS`'s `p_memsz`), if the main program has one.
///
/// The main program's block is in the static TLS of every thread, at one offset from
/// the thread pointer that the linker fixes (which is what lets an executable's code
/// address its thread-locals as `%fs:constant`). So an object inside this range is at
/// the same offset from every thread's thread pointer, and is that thread's own
/// instance there.
#[cfg(all(restartable_asm, not(feature = "initial-exec-tls")))]
pub(crate) fn main_program_tls() -> Option<(usize, usize)> {
    /// The first object `dl_iterate_phdr` visits is the main program.
    unsafe extern "C" fn first(
        info: *mut libc::dl_phdr_info,
        size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // `dlpi_tls_data` is the last field of the structure glibc passes (since 2.12);
        // `size` says how much of it this libc filled.
        let end = core::mem::offset_of!(libc::dl_phdr_info, dlpi_tls_data)
            + core::mem::size_of::<*mut libc::c_void>();
        if size >= end {
            // SAFETY: `info` is valid for the duration of the callback, with at least
            // `size` bytes; `data` is the `Option` `main_program_tls` passed.
            unsafe {
                let info = &*info;
                let out = &mut *data.cast::<Option<(usize, usize)>>();
                let phdrs: &[libc::Elf64_Phdr] = if info.dlpi_phdr.is_null() {
                    &[]
                } else {
                    core::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum))
                };
                let tls = phdrs.iter().find(|p| p.p_type == libc::PT_TLS);
                if let (Some(tls), false) = (tls, info.dlpi_tls_data.is_null()) {
                    *out = Some((info.dlpi_tls_data as usize, tls.p_memsz as usize));
                }
            }
        }
        // Stop after the first object.
        1
    }
    let mut out: Option<(usize, usize)> = None;
    // SAFETY: `first` matches the callback type and only writes `out`, which outlives
    // the call; `dl_iterate_phdr` calls it synchronously.
    unsafe {
        libc::dl_iterate_phdr(
            Some(first),
            (&mut out as *mut Option<(usize, usize)>).cast(),
        )
    };
    out
}

/// The thread pointer (`%fs:0` on x86_64), from which glibc's area is at
/// `__rseq_offset`.
#[cfg(restartable_asm)]
#[inline(always)]
pub(crate) fn thread_pointer() -> *mut u8 {
    let tp: *mut u8;
    // SAFETY: on x86_64 Linux, %fs:0 holds the thread control block's self pointer;
    // reading it has no side effects.
    unsafe {
        core::arch::asm!(
            "mov %fs:0, {tp}",
            tp = out(reg) tp,
            options(att_syntax, nostack, preserves_flags, readonly, pure)
        );
    }
    tp
}

/// The 32-bit word at `%fs:D(off)` (thread pointer + `off` + `D`), zero-extended, read once: a field of this
/// thread's rseq area addressed as the reference library does, with no pointer to the
/// area computed or loaded.
///
/// # Safety
/// `thread_pointer() + off + D` must be a readable, 4-byte aligned word (a field of an
/// rseq area of this thread, or of [`crate::abi::Rseq`] memory that stays mapped).
#[cfg(restartable_asm)]
#[inline(always)]
pub(crate) unsafe fn read_fs_u32<const D: usize>(off: isize) -> u64 {
    let v: u64;
    // SAFETY: the caller guarantees the word is readable; not `pure`: the kernel
    // updates the area between two reads, so each call is a load.
    unsafe {
        core::arch::asm!(
            "movl %fs:{d}({off}), {v:e}",
            d = const D,
            off = in(reg) off,
            v = out(reg) v,
            options(att_syntax, nostack, preserves_flags, readonly)
        );
    }
    // SAFETY: `movl` zero-extends into the whole register. (Returned as the 64-bit
    // value it is, with the compiler told so, a caller's `as usize` of the 32-bit
    // field costs no `mov %e.., %e..`.)
    unsafe { core::hint::assert_unchecked(v <= u64::from(u32::MAX)) };
    v
}

/// As [`read_fs_u32`], as a 32-bit value the compiler knows nothing more about: a
/// compare with a constant near `u32::MAX` (the registration check) stays one 32-bit
/// `cmp` (with the 64-bit knowledge, it becomes `shr` and a 64-bit compare).
///
/// # Safety
/// As for [`read_fs_u32`].
#[cfg(restartable_asm)]
#[inline(always)]
pub(crate) unsafe fn read_fs_u32_narrow<const D: usize>(off: isize) -> u32 {
    let v: u32;
    // SAFETY: as in `read_fs_u32`.
    unsafe {
        core::arch::asm!(
            "movl %fs:{d}({off}), {v:e}",
            d = const D,
            off = in(reg) off,
            v = out(reg) v,
            options(att_syntax, nostack, preserves_flags, readonly)
        );
    }
    v
}

/// `uname -r`, for reports.
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain old data; zeroed is a valid value.
    let mut uts: libc::utsname = unsafe { core::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return String::from("unknown");
    }
    // SAFETY: uname NUL-terminates the release field.
    let release = unsafe { CStr::from_ptr(uts.release.as_ptr()) };
    release.to_string_lossy().into_owned()
}

/// The C library's name and version, e.g. `glibc 2.36`, for reports.
pub fn libc_version() -> String {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn gnu_get_libc_version() -> *const libc::c_char;
        }
        // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
        let v = unsafe { CStr::from_ptr(gnu_get_libc_version()) };
        format!("glibc {}", v.to_string_lossy())
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        String::from(if cfg!(target_env = "musl") {
            "musl"
        } else {
            "unknown"
        })
    }
}
