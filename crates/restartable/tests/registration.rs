//! Registration and CPU ids in every ownership mode, through the public API.
//!
//! - libc-owned: the default here (glibc 2.35+ registers every thread);
//! - library-owned: `GLIBC_TUNABLES=glibc.pthread.rseq=0`;
//! - unavailable: rseq forced to `ENOSYS` or `EPERM` by a seccomp filter.
//!
//! Modes other than the test process's own run in child processes: the test binary
//! re-executes itself with `RESTARTABLE_TEST_ROLE` set, and a constructor in
//! `.init_array` runs that role on the child's main thread before the test harness
//! starts (so the child is single-threaded, as `fork` and the main-thread checks
//! need), prints a marker line and exits. Seccomp filters for a whole child are
//! installed between `fork` and `exec`, so glibc's own start-up registration already
//! meets the filter.
//!
//! Every CPU id is checked against an oracle outside the library: the thread is pinned
//! with `sched_setaffinity` to each allowed CPU in turn, and the library's answer must
//! equal that CPU, `sched_getcpu()` and the raw `getcpu` system call.

#![cfg(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu"))]

#[path = "support/child.rs"]
mod child;
#[path = "support/seccomp.rs"]
mod seccomp;

use std::any::Any;

use child::OutputWithin as _;
use std::os::unix::process::CommandExt;
use std::panic::{self, AssertUnwindSafe};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use restartable::abi::{self, Rseq};
use restartable::registration::{self, AreaOffset, DisableError};
use restartable::{Owner, Reason, Registration, ThreadArea};

/// Selects the child role in a re-executed test binary.
const ROLE_VAR: &str = "RESTARTABLE_TEST_ROLE";
/// Printed by a child whose role passed; the parent requires it, so a child in which
/// the role never ran (and the harness ran no test) cannot pass for a success.
const ROLE_DONE: &str = "restartable-test-role-done";
const TUNABLES: &str = "GLIBC_TUNABLES";
const RSEQ_OFF: &str = "glibc.pthread.rseq=0";
const OWN_AREA: (&str, &str) = ("RESTARTABLE_OWN_AREA", "thread-local");

// ------------------------------------------------------------------------------------
// Oracles outside the library.
// ------------------------------------------------------------------------------------

/// Whether glibc registered rseq in this process: `__rseq_size` exported and non-zero.
fn glibc_registered() -> bool {
    // SAFETY: RTLD_DEFAULT is a valid pseudo-handle and the name is NUL-terminated.
    let size = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr()) };
    let size = size as *const u32;
    // SAFETY: where glibc exports it, `__rseq_size` is a `const unsigned int` set
    // before any user code runs.
    !size.is_null() && unsafe { size.read() } != 0
}

/// The owner this process must report: libc where glibc registered, else the library.
fn expected_owner() -> Owner {
    if glibc_registered() {
        Owner::Libc
    } else {
        Owner::Library
    }
}

/// Whether the kernel maintains `mm_cid` (feature size >= 28 in the auxiliary vector).
fn kernel_has_mm_cid() -> bool {
    // SAFETY: getauxval has no preconditions.
    let feature_size = unsafe { libc::getauxval(abi::AT_RSEQ_FEATURE_SIZE) };
    feature_size >= u64::from(abi::FEATURE_SIZE_MM_CID)
}

/// `(cpu, node)` from the raw `getcpu` system call.
fn getcpu_raw() -> (u32, u32) {
    let (mut cpu, mut node) = (0u32, 0u32);
    // SAFETY: both pointers are valid for a u32 write; the cache argument may be null.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_getcpu,
            &mut cpu as *mut u32,
            &mut node as *mut u32,
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    assert_eq!(ret, 0, "getcpu: {}", std::io::Error::last_os_error());
    (cpu, node)
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `rseq(area, 32, flags, SIGNATURE)`, without the library.
///
/// # Safety
/// When registering, `area` must stay valid until it is unregistered.
unsafe fn rseq_syscall(area: *mut Rseq, flags: i32) -> Result<(), i32> {
    // SAFETY: the caller keeps `area` valid while it is registered.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_rseq,
            area,
            abi::ORIGINAL_SIZE,
            flags,
            abi::SIGNATURE,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(last_errno())
    }
}

/// What the kernel says about the calling thread's registration: it tries to register
/// a fresh area and, if accepted, unregisters it again at once.
///
/// `Ok(())`: the thread had no registration. `Err(EINVAL)`: another area is registered
/// for this thread. `Err(ENOSYS | EPERM)`: the call is blocked. Never panics (it also
/// runs in thread-local destructors); `Err(-1)` if undoing the probe failed, in which
/// case the probe area is leaked rather than freed while registered.
fn probe_fresh_registration() -> Result<(), i32> {
    let area = Box::into_raw(Box::new(Rseq::new()));
    // SAFETY: `area` is 32-byte aligned (Rseq's alignment) and 32 bytes long; if the
    // kernel accepts it, it is unregistered below before it is freed.
    let result = unsafe { rseq_syscall(area, 0) };
    if result.is_ok() {
        // SAFETY: unregisters the area just registered, with the same arguments.
        if unsafe { rseq_syscall(area, abi::FLAG_UNREGISTER) }.is_err() {
            return Err(-1);
        }
    }
    // SAFETY: from Box::into_raw above, and no longer registered.
    drop(unsafe { Box::from_raw(area) });
    result
}

// ------------------------------------------------------------------------------------
// CPU affinity.
// ------------------------------------------------------------------------------------

fn affinity() -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let ret = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    assert_eq!(
        ret,
        0,
        "sched_getaffinity: {}",
        std::io::Error::last_os_error()
    );
    set
}

fn set_affinity(set: &libc::cpu_set_t) {
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let ret = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(set), set) };
    assert_eq!(
        ret,
        0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
}

fn cpus_in(set: &libc::cpu_set_t) -> Vec<usize> {
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, set) })
        .collect()
}

fn only_cpu(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` came from an allowed set, so it is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set
}

/// Pins the calling thread to each allowed CPU in turn and checks that
/// `current_cpu()` equals that CPU, `sched_getcpu()` and the raw `getcpu` call, that
/// the registered area (if any) says the same, and that the NUMA node matches
/// `getcpu`'s. Restores the thread's affinity afterwards, also on failure.
fn check_cpu_ids_under_pinning(context: &str) {
    let saved = affinity();
    let cpus = cpus_in(&saved);
    assert!(!cpus.is_empty(), "{context}: no allowed CPU");
    let result = panic::catch_unwind(|| {
        for &cpu in &cpus {
            set_affinity(&only_cpu(cpu));
            for _ in 0..50 {
                let ours = restartable::current_cpu();
                // SAFETY: sched_getcpu has no preconditions.
                let libc_cpu = unsafe { libc::sched_getcpu() };
                let (raw_cpu, raw_node) = getcpu_raw();
                assert_eq!(ours as usize, cpu, "{context}: current_cpu() while pinned");
                assert_eq!(
                    libc_cpu, cpu as i32,
                    "{context}: sched_getcpu() while pinned"
                );
                assert_eq!(raw_cpu as usize, cpu, "{context}: getcpu while pinned");
                if let Ok(area) = ThreadArea::current() {
                    assert_eq!(area.cpu_id() as usize, cpu, "{context}: area cpu_id");
                }
                assert_eq!(
                    restartable::current_numa_node(),
                    Some(raw_node),
                    "{context}: current_numa_node() on CPU {cpu}"
                );
                thread::yield_now();
            }
        }
    });
    set_affinity(&saved);
    if let Err(e) = result {
        panic::resume_unwind(e);
    }
}

// ------------------------------------------------------------------------------------
// Expected states.
// ------------------------------------------------------------------------------------

/// The calling thread is registered, owned by `owner`, and the kernel agrees: it
/// refuses a second area for the thread with `EINVAL`.
fn assert_registered(owner: Owner, context: &str) {
    assert_registered_probe(owner, Err(libc::EINVAL), context);
}

/// As [`assert_registered`], where the kernel answers `probe` to a fresh registration
/// (a seccomp filter answers before the kernel looks).
fn assert_registered_probe(owner: Owner, probe: Result<(), i32>, context: &str) {
    let s = restartable::status();
    assert_eq!(
        s.registration,
        Registration::Registered(owner),
        "{context}: status {s}"
    );
    assert!(s.is_registered() && s.reason().is_none(), "{context}: {s}");
    assert!(
        s.feature_size >= abi::ORIGINAL_FEATURE_SIZE,
        "{context}: {s}"
    );
    assert_eq!(s.mm_cid, kernel_has_mm_cid(), "{context}: mm_cid flag: {s}");
    let area = ThreadArea::current().unwrap_or_else(|r| panic!("{context}: area: {r}"));
    assert_eq!(
        area.as_ptr() as usize % 32,
        0,
        "{context}: area must be 32-byte aligned"
    );
    let possible = restartable::possible_cpus();
    assert!(
        (area.cpu_id() as usize) < possible,
        "{context}: area cpu_id"
    );
    assert!(
        (restartable::current_cpu() as usize) < possible,
        "{context}"
    );
    match restartable::current_mm_cid() {
        Some(cid) => assert!((cid as usize) < possible, "{context}: mm_cid {cid}"),
        None => assert!(!kernel_has_mm_cid(), "{context}: mm_cid missing"),
    }
    assert!(restartable::current_numa_node().is_some(), "{context}");
    assert_eq!(
        probe_fresh_registration(),
        probe,
        "{context}: the kernel must hold a registration for this thread"
    );
}

/// The calling thread is unavailable for `reason`; `probe` is what the kernel then
/// says to a fresh registration (see [`probe_fresh_registration`]).
fn assert_unavailable(reason: Reason, probe: Result<(), i32>, context: &str) {
    let s = restartable::status();
    assert_eq!(
        s.registration,
        Registration::Unavailable(reason),
        "{context}: status {s}"
    );
    assert_eq!(s.reason(), Some(reason), "{context}");
    assert!(!s.is_registered() && !s.mm_cid && !s.node_id && !s.membarrier_rseq);
    assert_eq!(ThreadArea::current().err(), Some(reason), "{context}: area");
    assert_eq!(restartable::current_mm_cid(), None, "{context}: mm_cid");
    assert!(
        restartable::current_numa_node().is_some(),
        "{context}: node"
    );
    assert!((restartable::current_cpu() as usize) < restartable::possible_cpus());
    assert!(!s.to_string().is_empty());
    assert_eq!(probe_fresh_registration(), probe, "{context}: kernel probe");
}

fn reason_for(errno: i32) -> Reason {
    match errno {
        libc::ENOSYS => Reason::NoSyscall,
        libc::EPERM => Reason::NotPermitted,
        _ => panic!("no filter test for errno {errno}"),
    }
}

/// Runs `f` on a new thread and propagates its panic.
fn on_new_thread(name: &str, f: impl FnOnce() + Send + 'static) {
    let handle = thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .expect("spawn");
    if let Err(e) = handle.join() {
        panic::resume_unwind(e);
    }
}

/// Whether the library was built with its rseq backend (not forced to the fallback
/// with `RESTARTABLE_FORCE_FALLBACK`); the registration tests need it.
fn rseq_backend_built() -> bool {
    let built = restartable::status().reason() != Some(Reason::UnsupportedTarget);
    if !built {
        eprintln!("notice: the library was built without its rseq backend; skipping");
    }
    built
}

// ------------------------------------------------------------------------------------
// Seccomp.
// ------------------------------------------------------------------------------------

/// The filter is in force: even an invalid `rseq` call gets its errno (without a
/// filter the kernel answers `EINVAL`).
fn assert_filter_in_force(errno: i32) {
    // SAFETY: a null area is never registered: the call fails either way.
    let r = unsafe { rseq_syscall(std::ptr::null_mut(), 0) };
    assert_eq!(r, Err(errno), "the seccomp filter should answer rseq");
}

// ------------------------------------------------------------------------------------
// Child processes.
// ------------------------------------------------------------------------------------

/// The environment of a child.
#[derive(Clone, Copy, Debug)]
enum Env {
    /// No `GLIBC_TUNABLES`: glibc registers rseq where the kernel lets it.
    GlibcDefault,
    /// `GLIBC_TUNABLES=glibc.pthread.rseq=0`: glibc leaves rseq to the library.
    RseqTunableOff,
    /// As `RseqTunableOff`, with `RESTARTABLE_OWN_AREA=thread-local`: the library's
    /// areas found through its thread-local, as in a shared object loaded with
    /// `dlopen`.
    RseqTunableOffThreadLocal,
}

/// Re-executes this test binary with `role`, in `env`, under a seccomp filter making
/// `rseq` fail with `seccomp_errno` if given; panics with the child's output unless
/// the role ran and passed.
fn run_child_role(role: &str, env: Env, seccomp_errno: Option<i32>) {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    // Should the role not run, the harness would run no test rather than all of them.
    cmd.env(ROLE_VAR, role)
        .args(["--exact", "no-such-test-child-role-guard"]);
    match env {
        Env::GlibcDefault => cmd.env_remove(TUNABLES),
        Env::RseqTunableOff => cmd.env(TUNABLES, RSEQ_OFF),
        Env::RseqTunableOffThreadLocal => cmd.env(TUNABLES, RSEQ_OFF).env(OWN_AREA.0, OWN_AREA.1),
    };
    if let Some(errno) = seccomp_errno {
        let filter = seccomp::rseq_errno_filter(errno);
        // SAFETY: the closure only makes system calls (prctl, seccomp) and reads
        // `filter`, allocated before the fork: async-signal-safe.
        unsafe {
            cmd.pre_exec(move || seccomp::install_filter(&filter));
        }
    }
    let out = cmd.output_within(child::LONG);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let done = format!("{ROLE_DONE} {role}");
    assert!(
        out.status.success() && stdout.lines().any(|l| l == done),
        "child role {role:?} ({env:?}, seccomp errno {seccomp_errno:?}) failed: {}\n\
         --- stdout\n{stdout}--- stderr\n{stderr}",
        out.status
    );
}

// Runs the child role, if this process is one, before the test harness starts.
// SAFETY: a plain function pointer in `.init_array`, called once by the dynamic loader
// with the usual constructor arguments, which it ignores.
#[used]
#[unsafe(link_section = ".init_array")]
static CHILD_ROLE_HOOK: extern "C" fn() = child_role_hook;

extern "C" fn child_role_hook() {
    let Some(role) = std::env::var_os(ROLE_VAR) else {
        return;
    };
    let role = role.to_string_lossy().into_owned();
    let code = match panic::catch_unwind(|| child_role(&role)) {
        Ok(()) => {
            println!("{ROLE_DONE} {role}");
            0
        }
        Err(_) => 101,
    };
    std::process::exit(code);
}

fn child_role(role: &str) {
    let (name, arg) = role.split_once(':').unwrap_or((role, ""));
    let errno = || arg.parse::<i32>().expect("errno argument");
    // No library call before the role's own: some roles check first use.
    match name {
        "library" => role_library(),
        "unavailable" => role_unavailable(errno()),
        "filter-after-start" => role_filter_after_start(errno()),
        "fork" => role_fork(arg),
        "churn" => role_churn(arg),
        "libc-area-unregistered" => role_libc_area_unregistered(),
        "disable-library" => role_disable_library(),
        _ => panic!("unknown child role {role:?}"),
    }
}

// ------------------------------------------------------------------------------------
// Default environment (this process).
// ------------------------------------------------------------------------------------

#[test]
fn default_registration_is_libc_owned_when_glibc_registers() {
    if !rseq_backend_built() {
        return;
    }
    let owner = expected_owner();
    eprintln!("glibc registered rseq: {}", glibc_registered());
    assert_eq!(registration::process_owner(), Some(owner));
    assert_registered(owner, "test thread");
    let status = restartable::status();
    assert_eq!(status.node_id, status.feature_size >= 24);
    on_new_thread("spawned", move || {
        assert_registered(owner, "spawned thread")
    });
}

#[test]
fn default_current_cpu_matches_sched_getcpu_on_every_allowed_cpu() {
    check_cpu_ids_under_pinning("default environment, test thread");
    on_new_thread("pinning", || {
        check_cpu_ids_under_pinning("default environment, fresh thread");
    });
}

#[test]
fn disable_current_thread_is_refused_when_libc_owns_registration() {
    if !rseq_backend_built() || expected_owner() != Owner::Libc {
        return;
    }
    on_new_thread("disable", || {
        assert_eq!(
            registration::disable_current_thread(),
            Err(DisableError::LibcOwned)
        );
        assert_registered(Owner::Libc, "after a refused disable");
    });
}

// ------------------------------------------------------------------------------------
// Library-owned (tunable).
// ------------------------------------------------------------------------------------

#[test]
fn rseq_tunable_off_makes_main_and_spawned_threads_library_owned() {
    if rseq_backend_built() {
        run_child_role("library", Env::RseqTunableOff, None);
    }
}

/// The same through the library's thread-local (what a shared object loaded with
/// `dlopen` does): no offset, the same areas.
#[test]
fn library_owned_areas_through_the_thread_local() {
    if rseq_backend_built() {
        run_child_role("library", Env::RseqTunableOffThreadLocal, None);
        run_child_role("disable-library", Env::RseqTunableOffThreadLocal, None);
    }
}

/// Whether this child was asked to find the library's areas through its thread-local
/// (then there is no [`AreaOffset`]).
fn own_area_through_thread_local() -> bool {
    std::env::var(OWN_AREA.0).as_deref() == Ok(OWN_AREA.1)
}

fn role_library() {
    assert!(
        !glibc_registered(),
        "the tunable should keep glibc from registering"
    );
    assert_eq!(registration::process_owner(), Some(Owner::Library));
    assert_registered(Owner::Library, "main thread");
    assert_offset_finds_own_area("library-owned, main thread");
    // A thread that has not registered yet: its area at the offset exists and reads
    // unregistered, until the thread registers.
    on_new_thread("offset-before-registration", || {
        let Some(off) = AreaOffset::get() else {
            assert!(
                own_area_through_thread_local(),
                "no offset in an executable"
            );
            assert_offset_finds_own_area("library-owned, fresh thread");
            return;
        };
        assert!(off.current_if_registered().is_none(), "a fresh thread");
        assert!(
            ThreadArea::current_if_registered().is_none(),
            "a fresh thread"
        );
        assert_offset_finds_own_area("library-owned, fresh thread");
    });
    check_cpu_ids_under_pinning("library-owned, main thread");
    // Threads alive at the same time have distinct areas.
    const THREADS: usize = 4;
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                assert_registered(Owner::Library, &format!("spawned thread {i}"));
                assert_offset_finds_own_area(&format!("library-owned, spawned thread {i}"));
                check_cpu_ids_under_pinning(&format!("library-owned, spawned thread {i}"));
                let area = ThreadArea::current().expect("registered").as_ptr() as usize;
                barrier.wait();
                area
            })
        })
        .collect();
    let mut areas: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    areas.sort_unstable();
    areas.dedup();
    assert_eq!(areas.len(), THREADS, "live threads must not share an area");
    assert_registered(Owner::Library, "main thread after the others exited");
}

/// In library mode, in an executable (this test binary), the library's own areas are
/// at one offset from every thread's thread pointer (its thread-local in the
/// executable's static TLS block), which [`AreaOffset`] publishes as it publishes
/// glibc's: registers this thread and checks the offset finds its area.
fn assert_offset_finds_own_area(context: &str) {
    let area = ThreadArea::current().expect("registered").as_ptr();
    if own_area_through_thread_local() {
        assert_eq!(AreaOffset::get(), None, "{context}: an offset");
        return;
    }
    let off = AreaOffset::get().unwrap_or_else(|| panic!("{context}: no offset"));
    let tp: usize;
    // SAFETY: reads the thread pointer (the TCB's self pointer at %fs:0).
    unsafe { core::arch::asm!("mov %fs:0, {}", out(reg) tp, options(att_syntax, nostack)) };
    assert_eq!(
        tp.wrapping_add_signed(off.bytes()),
        area as usize,
        "{context}: the offset points elsewhere"
    );
    let found = off.current_if_registered().map(|a| a.as_ptr());
    assert_eq!(found, Some(area), "{context}: the offset path");
    // SAFETY: a bound far below the kernel's -2.
    let below = unsafe { off.current_with_cpu_below(1 << 16) }.map(|(a, _)| a.as_ptr());
    assert_eq!(below, Some(area), "{context}: the bounded offset path");
}

// ------------------------------------------------------------------------------------
// Unavailable (seccomp).
// ------------------------------------------------------------------------------------

#[test]
fn seccomp_enosys_makes_rseq_unavailable_with_no_syscall() {
    if rseq_backend_built() {
        let role = format!("unavailable:{}", libc::ENOSYS);
        run_child_role(&role, Env::GlibcDefault, Some(libc::ENOSYS));
        run_child_role(&role, Env::RseqTunableOff, Some(libc::ENOSYS));
    }
}

#[test]
fn seccomp_eperm_makes_rseq_unavailable_with_not_permitted() {
    if rseq_backend_built() {
        let role = format!("unavailable:{}", libc::EPERM);
        run_child_role(&role, Env::GlibcDefault, Some(libc::EPERM));
        run_child_role(&role, Env::RseqTunableOff, Some(libc::EPERM));
    }
}

/// The filter was there from `exec`: glibc's start-up registration failed, so the
/// library tried its own and got the filter's errno.
fn role_unavailable(errno: i32) {
    let reason = reason_for(errno);
    assert_filter_in_force(errno);
    assert!(
        !glibc_registered(),
        "glibc cannot have registered under the filter"
    );
    assert_unavailable(reason, Err(errno), "main thread");
    // The whole process lacks the call: no owner, and no thread tries again.
    assert_eq!(registration::process_owner(), None);
    check_cpu_ids_under_pinning("rseq blocked, main thread");
    for i in 0..3 {
        on_new_thread("blocked", move || {
            assert_unavailable(reason, Err(errno), &format!("spawned thread {i}"));
            check_cpu_ids_under_pinning(&format!("rseq blocked, spawned thread {i}"));
        });
    }
    assert_eq!(
        registration::disable_current_thread(),
        Ok(()),
        "disabling an unavailable thread is harmless"
    );
}

#[test]
fn seccomp_after_glibc_start_keeps_main_thread_libc_owned_and_never_misreports() {
    if !rseq_backend_built() || !glibc_registered() {
        return;
    }
    for errno in [libc::ENOSYS, libc::EPERM] {
        run_child_role(
            &format!("filter-after-start:{errno}"),
            Env::GlibcDefault,
            None,
        );
    }
}

/// glibc registered the main thread at start-up; the filter comes afterwards. The
/// main thread keeps glibc's registration. glibc's registration of every later thread
/// fails: glibc 2.35-2.36 then abort the process ("Fatal glibc error: rseq
/// registration failed") in the new thread, before any user code runs in it; a glibc
/// that let the thread run would leave its `cpu_id` at -2, and the library must report
/// `LibcNotRegistered` there and keep answering CPU ids through the fallback. The
/// thread is started in a forked child so either outcome can be observed.
fn role_filter_after_start(errno: i32) {
    assert!(glibc_registered());
    assert_registered(Owner::Libc, "main thread before the filter");
    seccomp::install_filter(&seccomp::rseq_errno_filter(errno)).expect("install seccomp filter");
    assert_filter_in_force(errno);
    assert_registered_probe(Owner::Libc, Err(errno), "main thread after the filter");
    check_cpu_ids_under_pinning("main thread under a late filter");
    let wstatus = fork_and_wait(|| {
        // glibc may abort this child: no core file.
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `no_core` is a valid rlimit.
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
        on_new_thread("late-filter", move || {
            assert_unavailable(
                Reason::LibcNotRegistered,
                Err(errno),
                "thread started under a late filter",
            );
            check_cpu_ids_under_pinning("thread started under a late filter");
        });
    });
    let glibc_aborted = libc::WIFSIGNALED(wstatus) && libc::WTERMSIG(wstatus) == libc::SIGABRT;
    let thread_passed = libc::WIFEXITED(wstatus) && libc::WEXITSTATUS(wstatus) == 0;
    assert!(
        glibc_aborted || thread_passed,
        "thread under a late filter: wait status {wstatus:#x}"
    );
    eprintln!(
        "thread started under a late filter: {}",
        if glibc_aborted {
            "glibc aborted the process (its registration failed)"
        } else {
            "ran, unavailable with LibcNotRegistered"
        }
    );
    // The main thread is unaffected.
    assert_registered_probe(Owner::Libc, Err(errno), "main thread at the end");
}

#[test]
fn libc_area_unregistered_behind_the_library_reports_libc_not_registered() {
    if rseq_backend_built() && glibc_registered() {
        run_child_role("libc-area-unregistered", Env::GlibcDefault, None);
    }
}

/// Something else unregisters glibc's area of a thread (the kernel then resets its
/// `cpu_id` to -1): the library must not register another area behind glibc's back,
/// must report `LibcNotRegistered` and must keep answering CPU ids. This is the state
/// a thread glibc failed to register would be in, had glibc let it run.
fn role_libc_area_unregistered() {
    // SAFETY: RTLD_DEFAULT is a valid pseudo-handle and the name is NUL-terminated.
    let size = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr()) };
    // SAFETY: glibc registered (checked by the parent), so `__rseq_size` is exported.
    let size = unsafe { (size as *const u32).read() };
    on_new_thread("unregistered-libc-area", move || {
        assert_registered(Owner::Libc, "before");
        let area = ThreadArea::current().expect("registered").as_ptr();
        // glibc registers at least the original 32 bytes, whatever `__rseq_size` says
        // (20 here), and the kernel unregisters only with the registered length.
        let lengths = [
            size.max(abi::ORIGINAL_SIZE),
            size.next_multiple_of(32),
            size,
        ];
        let unregistered = lengths.iter().any(|&len| {
            // SAFETY: unregisters glibc's area of this thread with glibc's arguments (a
            // wrong length is refused with EINVAL); the area stays valid (it is in the
            // thread's static TLS) and glibc never touches the registration again.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_rseq,
                    area,
                    len,
                    abi::FLAG_UNREGISTER,
                    abi::SIGNATURE,
                )
            };
            ret == 0
        });
        assert!(
            unregistered,
            "unregister glibc's area: errno {}",
            last_errno()
        );
        assert_unavailable(Reason::LibcNotRegistered, Ok(()), "after");
        check_cpu_ids_under_pinning("glibc's area unregistered");
    });
    assert_registered(Owner::Libc, "other threads keep glibc's registration");
}

// ------------------------------------------------------------------------------------
// Thread churn.
// ------------------------------------------------------------------------------------

const CHURN_THREADS: usize = 10_000;
const CHURN_BATCH: usize = 16;

/// Threads whose exit probe found no registration left in the kernel.
static EXIT_UNREGISTERED: AtomicUsize = AtomicUsize::new(0);
/// Threads whose exit probe found a registration still in the kernel.
static EXIT_STILL_REGISTERED: AtomicUsize = AtomicUsize::new(0);
/// Of those, the ones where the library already reported `ThreadExiting`.
static EXIT_STALE_AFTER_TEARDOWN: AtomicUsize = AtomicUsize::new(0);

/// Checks, at thread exit, that the library's registration is gone from the kernel.
///
/// Thread-local destructors run in the reverse order of their registration, and this
/// one is armed before the thread first uses the library, so it runs after the
/// library's: the kernel must then accept a fresh registration for the thread. A
/// registration left behind makes that fail with `EINVAL`, and would let the kernel
/// keep writing into TLS that glibc's stack cache hands to the next thread.
struct ExitProbe;

impl Drop for ExitProbe {
    fn drop(&mut self) {
        let torn_down =
            restartable::status().registration == Registration::Unavailable(Reason::ThreadExiting);
        if probe_fresh_registration().is_ok() {
            EXIT_UNREGISTERED.fetch_add(1, Ordering::Relaxed);
        } else {
            EXIT_STILL_REGISTERED.fetch_add(1, Ordering::Relaxed);
            if torn_down {
                EXIT_STALE_AFTER_TEARDOWN.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

thread_local! {
    static EXIT_PROBE: ExitProbe = const { ExitProbe };
}

/// The process's resident set size in KiB, from `/proc/self/status`.
fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Spawns `CHURN_THREADS` short-lived threads, `CHURN_BATCH` at a time; each checks
/// its registration and CPU. With `probe_exit`, each also checks at exit that its
/// registration was undone. Returns the growth of resident memory after a warm-up, in
/// KiB (meaningful only where nothing else runs in the process).
fn churn(owner: Owner, probe_exit: bool) -> u64 {
    let possible = restartable::possible_cpus();
    let one_thread = move || -> Result<(), String> {
        if probe_exit {
            EXIT_PROBE.with(|_| ());
        }
        let s = restartable::status();
        if s.registration != Registration::Registered(owner) {
            return Err(format!("status {s}"));
        }
        let cpu = restartable::current_cpu() as usize;
        if cpu >= possible {
            return Err(format!("cpu {cpu} >= possible {possible}"));
        }
        match restartable::current_mm_cid() {
            Some(cid) if cid as usize >= possible => Err(format!("mm_cid {cid}")),
            None if s.mm_cid => Err(String::from("mm_cid missing")),
            _ => Ok(()),
        }
    };
    let mut rss_after_warmup = 0;
    let mut failures = Vec::new();
    for batch in 0..CHURN_THREADS / CHURN_BATCH {
        let handles: Vec<_> = (0..CHURN_BATCH)
            .map(|_| {
                thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(one_thread)
                    .expect("spawn")
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(e),
                Err(e) => failures.push(panic_message(&*e)),
            }
        }
        if batch == 10 {
            rss_after_warmup = vm_rss_kib();
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {CHURN_THREADS} threads failed, first: {}",
        failures.len(),
        failures[0]
    );
    vm_rss_kib().saturating_sub(rss_after_warmup)
}

fn panic_message(e: &(dyn Any + Send)) -> String {
    e.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| e.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| String::from("panic"))
}

#[test]
fn thread_churn_default_mode_every_thread_registered_and_in_range() {
    if !rseq_backend_built() {
        return;
    }
    // In the harness, alongside the other tests (so no memory check here).
    churn(expected_owner(), false);
    if glibc_registered() {
        run_child_role("churn:libc", Env::GlibcDefault, None);
    }
}

#[test]
fn thread_churn_library_mode_every_registration_undone_at_exit() {
    if rseq_backend_built() {
        run_child_role("churn:library", Env::RseqTunableOff, None);
    }
}

fn role_churn(mode: &str) {
    let owner = match mode {
        "libc" => Owner::Libc,
        "library" => Owner::Library,
        _ => panic!("churn mode {mode:?}"),
    };
    assert_eq!(expected_owner(), owner);
    let library = owner == Owner::Library;
    let growth = churn(owner, library);
    // A few hundred KiB at most in practice; leaked stacks or TLS blocks would be
    // tens of MiB.
    assert!(
        growth < 16 * 1024,
        "resident memory grew by {growth} KiB over {CHURN_THREADS} short-lived threads"
    );
    if library {
        let unregistered = EXIT_UNREGISTERED.load(Ordering::Relaxed);
        let still = EXIT_STILL_REGISTERED.load(Ordering::Relaxed);
        let stale = EXIT_STALE_AFTER_TEARDOWN.load(Ordering::Relaxed);
        assert_eq!(
            (unregistered, still),
            (CHURN_THREADS, 0),
            "exit probes: {unregistered} threads unregistered, {still} still registered \
             ({stale} of them after the library reported ThreadExiting)"
        );
    }
}

// ------------------------------------------------------------------------------------
// fork.
// ------------------------------------------------------------------------------------

#[test]
fn fork_keeps_cpu_ids_correct_when_libc_owned() {
    if rseq_backend_built() && glibc_registered() {
        run_child_role("fork:libc", Env::GlibcDefault, None);
    }
}

#[test]
fn fork_keeps_cpu_ids_correct_when_library_owned() {
    if rseq_backend_built() {
        run_child_role("fork:library", Env::RseqTunableOff, None);
    }
}

/// Forks; the child runs `check` and exits 0 if it passed, 1 if it panicked; returns
/// the child's wait status.
fn fork_and_wait(check: impl FnOnce()) -> i32 {
    // SAFETY: this process is single-threaded (a child role runs before the harness
    // starts any thread), so the child may do anything the parent could.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = match panic::catch_unwind(AssertUnwindSafe(check)) {
            Ok(()) => 0,
            Err(_) => 1,
        };
        // SAFETY: ends the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
    child::wait_pid_within(pid, child::LONG, "fork_and_wait")
}

/// Forks; the child runs `check`; asserts that it passed.
fn in_forked_child(context: &str, check: impl FnOnce()) {
    let wstatus = fork_and_wait(check);
    assert!(
        libc::WIFEXITED(wstatus) && libc::WEXITSTATUS(wstatus) == 0,
        "{context}: forked child failed (wait status {wstatus:#x})"
    );
}

fn forked_child_checks(owner: Owner, context: &'static str) {
    assert_registered(owner, context);
    check_cpu_ids_under_pinning(context);
    on_new_thread("forked-child-thread", move || {
        assert_registered(owner, context);
        check_cpu_ids_under_pinning(context);
    });
    assert_registered(owner, context);
}

fn role_fork(mode: &str) {
    let owner = match mode {
        "libc" => Owner::Libc,
        "library" => Owner::Library,
        _ => panic!("fork mode {mode:?}"),
    };
    assert_eq!(expected_owner(), owner);
    // The library not used yet in the parent: the child registers on its own.
    in_forked_child("fork before first use", || {
        forked_child_checks(owner, "forked before first use")
    });
    assert_registered(owner, "parent");
    check_cpu_ids_under_pinning("parent before fork");
    // The child inherits the parent's registration (same address, copied memory).
    in_forked_child("fork after registration", || {
        forked_child_checks(owner, "forked after registration")
    });
    assert_registered(owner, "parent after fork");
    check_cpu_ids_under_pinning("parent after fork");
}

// ------------------------------------------------------------------------------------
// disable_current_thread.
// ------------------------------------------------------------------------------------

#[test]
fn disable_current_thread_in_library_mode_reports_disabled() {
    if rseq_backend_built() {
        run_child_role("disable-library", Env::RseqTunableOff, None);
    }
}

fn role_disable_library() {
    assert_eq!(expected_owner(), Owner::Library);
    assert_registered(Owner::Library, "main thread");
    registration::disable_current_thread().expect("disable a registered thread");
    // Ok(()) from the probe: the kernel no longer holds the library's area.
    assert_unavailable(Reason::Disabled, Ok(()), "main thread after disable");
    // The area at the process-wide offset reads unregistered again (the kernel reset
    // its `cpu_id`), so the fast paths that take it from there stop using it too.
    match AreaOffset::get() {
        Some(off) => assert!(
            off.current_if_registered().is_none(),
            "offset path after disable"
        ),
        None => assert!(own_area_through_thread_local(), "no offset"),
    }
    check_cpu_ids_under_pinning("disabled main thread");
    assert_eq!(registration::disable_current_thread(), Ok(()), "twice");
    assert_unavailable(
        Reason::Disabled,
        Ok(()),
        "main thread after a second disable",
    );
    on_new_thread("disabled-early", || {
        registration::disable_current_thread().expect("disable before first use");
        assert_unavailable(Reason::Disabled, Ok(()), "disabled before first use");
        check_cpu_ids_under_pinning("thread disabled before first use");
    });
    on_new_thread("not-disabled", || {
        assert_registered(Owner::Library, "other threads stay registered");
    });
    assert_eq!(registration::process_owner(), Some(Owner::Library));
}
