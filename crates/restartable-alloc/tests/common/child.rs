//! Child processes for the tests: this test binary re-executed with a role, under a
//! timeout that fails with a clear message.

use std::time::Duration;

#[path = "../../../restartable/tests/support/child.rs"]
pub mod shared;

use shared::OutputWithin as _;

#[path = "../../../restartable/tests/support/seccomp.rs"]
mod seccomp;

pub const ROLE: &str = "RESTARTABLE_ALLOC_CHILD";

/// The environment of a child where the library registers its own areas (glibc's
/// registration switched off).
pub const LIBRARY_OWNED: (&str, &str) = ("GLIBC_TUNABLES", "glibc.pthread.rseq=0");
/// The environment of a child whose caches are indexed by CPU, not mm_cid.
pub const BY_CPU: (&str, &str) = ("RESTARTABLE_ALLOC_INDEX", "cpu");

/// A child's `pre_exec`: rseq fails with `ENOSYS` (seccomp), as on a kernel without it.
pub fn enosys_filter() -> std::io::Result<()> {
    seccomp::install_filter(&seccomp::rseq_errno_filter(libc::ENOSYS))
}

/// The role this process plays, if it is a child.
pub fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// The line a child prints when its checks passed.
pub fn marker(role: &str) -> String {
    format!("alloc child {role}: ok")
}

/// What a child did.
pub struct ChildOutput {
    pub success: bool,
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

/// Runs this binary's test `test` as a child with `ROLE=role` and `env`, behind
/// `wrapper` (e.g. valgrind) if given, `pre_exec` run in the child before `exec`;
/// kills it and panics after `timeout`.
pub fn run_child_with(
    test: &str,
    role: &str,
    env: &[(&str, &str)],
    wrapper: &[&str],
    timeout: Duration,
    pre_exec: Option<fn() -> std::io::Result<()>>,
) -> ChildOutput {
    let mut cmd = shared::this_test(test, wrapper, env);
    cmd.env(ROLE, role);
    if let Some(f) = pre_exec {
        use std::os::unix::process::CommandExt;
        // SAFETY: (test) `f` makes only system calls (async-signal-safe).
        unsafe { cmd.pre_exec(f) };
    }
    // Kills the child's whole process group and panics with what it printed when it
    // runs past `timeout`.
    let out = cmd.output_within(timeout);
    let status = out.status;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("--- child {role}:\n{stdout}{stderr}---");
    ChildOutput {
        success: status.success(),
        status: status.to_string(),
        stdout,
        stderr,
    }
}

/// As [`run_child_with`]; panics unless the child succeeded and printed its marker.
pub fn run_child(
    test: &str,
    role: &str,
    env: &[(&str, &str)],
    wrapper: &[&str],
    timeout: Duration,
    pre_exec: Option<fn() -> std::io::Result<()>>,
) -> ChildOutput {
    let o = run_child_with(test, role, env, wrapper, timeout, pre_exec);
    assert!(
        o.success,
        "child {role} failed: {}\n{}\n{}",
        o.status, o.stdout, o.stderr
    );
    assert!(
        o.stdout.contains(&marker(role)),
        "child {role} did not run its checks:\n{}\n{}",
        o.stdout,
        o.stderr
    );
    o
}

/// How a test's child process runs: its extra environment, a program it runs under
/// (e.g. valgrind), a function run in it before `exec`, and its time limit.
#[derive(Clone, Copy)]
pub struct Spec {
    pub env: &'static [(&'static str, &'static str)],
    pub wrapper: &'static [&'static str],
    pub pre_exec: Option<fn() -> std::io::Result<()>>,
    pub timeout: Duration,
}

impl Spec {
    /// A child with nothing added, killed (and the test failed) after `secs` seconds.
    pub const fn within(secs: u64) -> Self {
        Self {
            env: &[],
            wrapper: &[],
            pre_exec: None,
            timeout: Duration::from_secs(secs),
        }
    }

    pub const fn env(self, env: &'static [(&'static str, &'static str)]) -> Self {
        Self { env, ..self }
    }

    pub const fn under(self, wrapper: &'static [&'static str]) -> Self {
        Self { wrapper, ..self }
    }

    pub const fn pre_exec(self, f: fn() -> std::io::Result<()>) -> Self {
        Self {
            pre_exec: Some(f),
            ..self
        }
    }
}

/// The usual shape of a test whose checks run in a child process. In the test
/// process: starts this binary's test `test` as a child with role `role` as `spec`
/// says, and fails unless the child passed and printed its marker. In that child:
/// runs `body`, then prints the marker. In any other test's child: does nothing.
pub fn in_child(test: &str, role: &str, spec: Spec, body: impl FnOnce()) {
    match self::role() {
        None => {
            run_child(
                test,
                role,
                spec.env,
                spec.wrapper,
                spec.timeout,
                spec.pre_exec,
            );
        }
        Some(r) if r == role => {
            body();
            println!("{}", marker(role));
        }
        Some(_) => {}
    }
}

/// Resident memory of this process, in bytes (`/proc/self/statm`).
pub fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}
