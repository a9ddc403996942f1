//! The containers where rseq is off or partly off, and their resident memory, each in
//! a child process (this test binary re-executed with a role in
//! `RESTARTABLE_CONTAINERS_CHILD`), so that process-wide state (a seccomp filter, glibc
//! tunables, valgrind, the pool's pages) stays out of the other tests:
//!
//! - seccomp makes `rseq` fail with `ENOSYS` in library-owned mode: every thread falls
//!   back (in libc-owned mode glibc 2.36 treats a failed registration of a new thread
//!   as fatal, so a filter there must come before the process starts);
//! - under valgrind, which does not know the system call;
//! - mixed mode: library-owned, every third thread unregistered;
//! - 1,000 counters used from two CPUs stay within a few pages per CPU, and a
//!   `PerCpu` of 1,024 slots written from one slot stays within that slot's pages.
//!
//! Each child runs the conservation checks of every container (see `common`) in both
//! index modes and prints a marker line that the parent looks for.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

#[path = "support/child.rs"]
mod child;
mod common;
#[path = "support/seccomp.rs"]
mod seccomp;

use std::process::Command;

use child::OutputWithin as _;

use common::*;
use restartable::hooks::{Stats, StatsHooks};
use restartable::percpu::storage::PerCpu;
use restartable::registration::{self, Owner, Reason, Registration};
use restartable::{IndexBy, PerCpuCounter};

const ROLE: &str = "RESTARTABLE_CONTAINERS_CHILD";
const LIBRARY_OWNED: (&str, &str) = ("GLIBC_TUNABLES", "glibc.pthread.rseq=0");
/// The library's own areas found through its thread-local, not at one offset.
const OWN_AREA_TLS: (&str, &str) = ("RESTARTABLE_OWN_AREA", "thread-local");

/// The role this process plays, if it is a child.
fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// Runs this test binary's test `test` in a child process with `ROLE=role` and `env`,
/// behind `wrapper` (e.g. valgrind) if given; panics with its output unless it
/// succeeds and prints the marker of `role`.
fn run_child(test: &str, role: &str, env: &[(&str, &str)], wrapper: &[&str]) {
    let mut cmd = child::this_test(test, wrapper, env);
    cmd.env(ROLE, role);
    let out = cmd.output_within(child::LONG);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- child {role}:\n{stdout}{stderr}---");
    assert!(
        out.status.success(),
        "child {role} failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(&marker(role)) || stderr.contains(&marker(role)),
        "child {role} did not run its checks:\n{stdout}\n{stderr}"
    );
}

fn marker(role: &str) -> String {
    format!("containers child {role}: ok")
}

/// Every container in both index modes, `H = StatsHooks`; `check(name, per_thread)`
/// is called on each run's counts.
fn conserve_everything(w: &Work<'_>, check: impl Fn(&str, IndexBy, &[Stats])) {
    for index in MODES {
        let runs = every_container::<StatsHooks>(index, w);
        print_runs(&format!("{index:?}"), &runs);
        for r in &runs {
            check(r.name, index, &r.stats);
        }
    }
}

// ---------------------------------------------------------------------------------
// seccomp: rseq answers ENOSYS.

/// Installs on the calling thread (and the threads it creates afterwards) a seccomp
/// filter under which `rseq` fails with `ENOSYS`, everything else being allowed.
fn block_rseq_with_enosys() {
    seccomp::install_filter(&seccomp::rseq_errno_filter(libc::ENOSYS))
        .unwrap_or_else(|e| panic!("installing the seccomp filter: {e}"));
    // SAFETY: a null area is never registered; the call only reports the errno.
    let r = unsafe { libc::syscall(libc::SYS_rseq, core::ptr::null_mut::<u8>(), 0, 0, 0) };
    let errno = std::io::Error::last_os_error().raw_os_error();
    assert!(
        r == -1 && errno == Some(libc::ENOSYS),
        "the filter should answer rseq with ENOSYS"
    );
}

/// The status of a new thread.
fn worker_registration() -> Registration {
    std::thread::spawn(|| restartable::status().registration)
        .join()
        .unwrap()
}

/// Library-owned mode with `rseq` blocked for the whole process (the filter is in
/// place before the library's first registration): `status()` says unavailable
/// (`ENOSYS`) on every thread, and every container conserves everything on its
/// fallback path without a single sequence.
#[test]
fn seccomp_enosys_library_owned_every_container_conserves_on_fallbacks() {
    const TEST: &str = "seccomp_enosys_library_owned_every_container_conserves_on_fallbacks";
    const ME: &str = "seccomp-library";
    if role().as_deref() != Some(ME) {
        return run_child(TEST, ME, &[LIBRARY_OWNED], &[]);
    }
    block_rseq_with_enosys();
    let s = restartable::status();
    eprintln!("status: {s}");
    assert_eq!(s.reason(), Some(Reason::NoSyscall), "{s}");
    assert_eq!(registration::process_owner(), None);
    assert_eq!(
        worker_registration(),
        Registration::Unavailable(Reason::NoSyscall)
    );
    conserve_everything(&Work::new(threads(), 1000), |name, index, stats| {
        let t = total(stats);
        assert_eq!(
            t.commits + t.aborts + t.compare_failures,
            0,
            "{name} {index:?}: {t:?}"
        );
        assert!(t.fallbacks > 0, "{name} {index:?}: no fallback counted");
    });
    println!("{}", marker(ME));
}

// ---------------------------------------------------------------------------------
// valgrind.

fn valgrind_available() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .try_output_within(child::SHORT)
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Under valgrind (which answers `rseq` with `ENOSYS`): rseq is unavailable, every
/// container conserves everything on its fallbacks, and memcheck finds no error
/// (`--error-exitcode`). Small sizes: valgrind runs one thread at a time, slowly.
#[test]
fn under_valgrind_every_container_conserves_on_fallbacks() {
    const TEST: &str = "under_valgrind_every_container_conserves_on_fallbacks";
    const ME: &str = "valgrind";
    if role().as_deref() != Some(ME) {
        if !valgrind_available() {
            child::skip("valgrind is not installed");
            return;
        }
        return run_child(TEST, ME, &[], &["valgrind", "-q", "--error-exitcode=99"]);
    }
    let s = restartable::status();
    eprintln!("status under valgrind: {s}");
    assert!(!s.is_registered(), "rseq registered under valgrind: {s}");
    conserve_everything(&Work::new(threads(), 10), |name, index, stats| {
        let t = total(stats);
        assert_eq!(t.commits, 0, "{name} {index:?}: {t:?}");
        assert!(t.fallbacks > 0, "{name} {index:?}: no fallback counted");
    });
    println!("{}", marker(ME));
}

// ---------------------------------------------------------------------------------
// Mixed mode.

/// Library-owned mode, every third thread unregistered with
/// `disable_current_thread()`: sequences on the registered threads and fallbacks on
/// the others, in the same containers at the same time, lose nothing; the disabled
/// threads really took the fallbacks (no commit, fallbacks counted) and the others
/// really ran sequences.
#[test]
fn mixed_mode_every_third_thread_unregistered_every_container_conserves() {
    const TEST: &str = "mixed_mode_every_third_thread_unregistered_every_container_conserves";
    const ME: &str = "mixed";
    if role().as_deref() != Some(ME) {
        // The areas found at one offset (an executable), then through the library's
        // thread-local (as in a shared object loaded with `dlopen`).
        run_child(TEST, ME, &[LIBRARY_OWNED], &[]);
        return run_child(TEST, ME, &[LIBRARY_OWNED, OWN_AREA_TLS], &[]);
    }
    let s = restartable::status();
    eprintln!("status: {s}");
    assert_eq!(
        s.registration,
        Registration::Registered(Owner::Library),
        "library-owned mode expected: {s}"
    );
    let through_tls = std::env::var(OWN_AREA_TLS.0).as_deref() == Ok(OWN_AREA_TLS.1);
    assert_eq!(
        registration::AreaOffset::get().is_none(),
        through_tls,
        "the areas' offset"
    );
    let setup = |t: usize| {
        if t.is_multiple_of(3) {
            registration::disable_current_thread().expect("disable_current_thread");
            assert_eq!(restartable::status().reason(), Some(Reason::Disabled));
        } else {
            assert!(restartable::status().is_registered());
        }
    };
    let w = Work {
        setup: &setup,
        ..Work::new(threads(), 1000)
    };
    conserve_everything(&w, |name, index, stats| {
        for (t, s) in stats.iter().enumerate() {
            if t.is_multiple_of(3) {
                assert_eq!(s.commits, 0, "{name} {index:?}: disabled thread {t}: {s:?}");
                assert!(
                    s.fallbacks > 0,
                    "{name} {index:?}: disabled thread {t}: {s:?}"
                );
            } else {
                assert!(
                    s.commits > 0,
                    "{name} {index:?}: registered thread {t}: {s:?}"
                );
            }
        }
    });
    println!("{}", marker(ME));
}

// ---------------------------------------------------------------------------------
// Resident memory.

fn rss_pages() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("statm resident field")
}

/// 1,000 counters used from one CPU, then from a second: each CPU adds the pages of
/// its 1,000 slots (8,000 bytes: 2 or 3 pages), reading every sum adds nothing, and
/// creating them costs their handles, not per-CPU pages. A `PerCpu` of 1,024 slots
/// of 4 KiB written in slot 0 only stays within that slot's pages. Measured with
/// `/proc/self/statm` in a child that does nothing else.
#[test]
fn resident_memory_follows_the_cpus_used() {
    const TEST: &str = "resident_memory_follows_the_cpus_used";
    const ME: &str = "resident";
    if role().as_deref() != Some(ME) {
        return run_child(TEST, ME, &[], &[]);
    }
    let cpus = allowed_cpus();
    let used = &cpus[..cpus.len().min(2)];
    pin_current_thread(used[0]);
    let _ = restartable::status();
    // The storage pool's bookkeeping (a page for its families, one for a family's
    // chunks, in mappings of their own) is a one-time cost per process: pay it before
    // measuring what the counters themselves take.
    let warm = PerCpuCounter::new();
    warm.inc();
    let mut counters: Vec<PerCpuCounter> = Vec::with_capacity(1000);
    let handles = 1000 * core::mem::size_of::<PerCpuCounter>() / 4096 + 1;
    let r0 = rss_pages();
    counters.extend((0..1000).map(|_| PerCpuCounter::new()));
    let r1 = rss_pages();
    let mut per_cpu = Vec::new();
    for &cpu in used {
        pin_current_thread(cpu);
        let before = rss_pages();
        for c in &counters {
            c.inc();
        }
        per_cpu.push(rss_pages() - before);
    }
    let r2 = rss_pages();
    for c in &counters {
        assert_eq!(c.sum(), used.len() as i64);
    }
    let r3 = rss_pages();
    eprintln!(
        "1,000 counters: creation +{} pages (handles {handles}), use per CPU {per_cpu:?}, \
         sums +{}",
        r1 - r0,
        r3 - r2
    );
    assert!(
        r1 - r0 <= handles + 4,
        "creating 1,000 counters took {} pages",
        r1 - r0
    );
    for (cpu, pages) in used.iter().zip(&per_cpu) {
        assert!(
            *pages <= 3,
            "using 1,000 counters on CPU {cpu} took {pages} pages (expected 2-3)"
        );
    }
    assert!(r3 - r2 <= 1, "reading the sums took {} pages", r3 - r2);

    let r4 = rss_pages();
    let mut big: PerCpu<[u64; 512]> = PerCpu::with_slots(IndexBy::Cpu, 1024);
    for (i, w) in big.get_mut(0).iter_mut().enumerate() {
        *w = i as u64 + 1;
    }
    let r5 = rss_pages();
    eprintln!(
        "PerCpu<[u64; 512]> x 1,024 slots, slot 0 written: +{} pages",
        r5 - r4
    );
    assert!(
        r5 - r4 <= 3,
        "1,024 slots of 4 KiB written in one slot took {} pages",
        r5 - r4
    );
    assert_eq!(big.get_mut(0)[511], 512);
    println!("{}", marker(ME));
}
