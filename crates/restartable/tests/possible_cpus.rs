//! `possible_cpus()` is above every CPU number the process can observe (its docs),
//! also where `/sys/devices/system/cpu/possible` cannot be read: a sandbox without
//! `/sys` and `/proc` (a minimal chroot or build sandbox), the process pinned to a CPU
//! other than 0. The allocator's fast paths rely on it since their slab ops read the
//! index inside the sequence (`load_index_slab_pop`/`push`): they address one slot
//! per index and bound none, so an index at or above the count that sized the region
//! is an access past it (where the region's 256-slot minimum does not cover it).

#![cfg(target_os = "linux")]

#[path = "support/child.rs"]
mod child;

use std::process::Command;

use child::OutputWithin as _;

const ROLE: &str = "RESTARTABLE_TEST_POSSIBLE_CPUS_CHILD";
const NAME: &str = "possible_cpus_bounds_every_cpu_without_sys_and_proc";
const MARKER: &str = "possible-cpus-child-checked";

/// The child: in the sandbox, pinned to CPU `cpu` (not 0), `possible_cpus()` must
/// still be above it.
fn child_side(cpu: usize) {
    assert!(
        std::fs::read("/sys/devices/system/cpu/possible").is_err(),
        "the sandbox should hide /sys"
    );
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (an allowed CPU, checked by the parent).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size given.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    assert_eq!(r, 0, "sched_setaffinity");
    let n = restartable::possible_cpus();
    // SAFETY: sched_getcpu has no preconditions.
    let on = unsafe { libc::sched_getcpu() };
    assert_eq!(on, cpu as i32, "pinned to CPU {cpu}");
    assert!(
        cpu < n,
        "the thread runs on CPU {cpu}, but possible_cpus() is {n}: \
         a per-CPU array it sized has no slot for this CPU"
    );
    println!("{MARKER}: cpu {cpu} < possible_cpus() {n}");
}

#[test]
fn possible_cpus_bounds_every_cpu_without_sys_and_proc() {
    if let Ok(cpu) = std::env::var(ROLE) {
        child_side(cpu.parse().expect("a CPU number"));
        return;
    }
    let allowed = restartable::allowed_cpus().expect("sched_getaffinity");
    let Some(&high) = allowed.iter().max() else {
        panic!("no allowed CPU");
    };
    if high == 0 {
        eprintln!("notice: only CPU 0 allowed: every count bounds it; skipped");
        return;
    }
    let exe = std::env::current_exe().expect("the test binary");
    // A user and mount namespace with empty /sys and /proc, then this test again.
    let o = Command::new("unshare")
        .args([
            "-rm",
            "sh",
            "-c",
            "mount -t tmpfs none /sys && mount -t tmpfs none /proc && exec \"$@\"",
            "sh",
        ])
        .arg(&exe)
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env(ROLE, high.to_string())
        .try_output_within(child::SHORT);
    let o = match o {
        Ok(o) => o,
        Err(e) => {
            child::skip(format!("cannot run unshare ({e})"));
            return;
        }
    };
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    if !out.contains("running 1 test") {
        // The namespace or the mounts were refused: no sandbox to test in.
        child::skip(format!("no user and mount namespace here\n{out}\n{err}"));
        return;
    }
    assert!(
        o.status.success() && out.contains(MARKER),
        "possible_cpus() in a sandbox without /sys and /proc:\n{out}\n{err}"
    );
}
