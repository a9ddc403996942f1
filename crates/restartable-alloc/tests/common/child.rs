//! Child processes for the tests: this test binary re-executed with a role, under a
//! timeout that fails with a clear message.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const ROLE: &str = "RESTARTABLE_ALLOC_CHILD";

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
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env_remove("GLIBC_TUNABLES")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(f) = pre_exec {
        use std::os::unix::process::CommandExt;
        // SAFETY: (test) `f` makes only system calls (async-signal-safe).
        unsafe { cmd.pre_exec(f) };
    }
    let mut child = cmd.spawn().expect("spawn the child");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for the child") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let (o, e) = (t_out.join().unwrap(), t_err.join().unwrap());
            panic!("child {role} ({test}) timed out after {timeout:?} and was killed\n{o}\n{e}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (t_out.join().unwrap(), t_err.join().unwrap());
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

/// Resident memory of this process, in bytes (`/proc/self/statm`).
pub fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}
