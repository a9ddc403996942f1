//! Child processes with a time limit, for every test that starts one (re-executed
//! test binaries, `rseq`, valgrind, gdb, compilers): a child that hangs fails its test
//! with a clear message instead of hanging the suite. Included with `#[path]` by the
//! test files of both packages.
//!
//! The child runs in a process group of its own, and on time-out the whole group is
//! killed, so that nothing it started (a traced program, a valgrind tool) lives on.

#![allow(dead_code)]

use std::io::Read;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The limit for short commands (a compiler, `objdump`, `rseq info`, a few seconds of
/// work): generous, because a loaded machine may be many times slower than a quiet
/// one; only a hang should reach it.
pub const SHORT: Duration = Duration::from_secs(300);

/// The limit for long children (a re-executed test binary running its workloads, a
/// program under valgrind or gdb).
pub const LONG: Duration = Duration::from_secs(900);

/// Runs a command to completion within a time limit, capturing its output.
pub trait OutputWithin: std::fmt::Debug {
    /// Runs the command with stdin closed and stdout/stderr captured, like
    /// [`Command::output`]. If it has not exited after `limit`, kills its process
    /// group and panics with the command, the limit and what it printed so far.
    /// Also panics if it cannot be started.
    fn output_within(&mut self, limit: Duration) -> Output {
        let described = format!("{self:?}");
        self.try_output_within(limit)
            .unwrap_or_else(|e| panic!("cannot start {described}: {e}"))
    }

    /// As [`OutputWithin::output_within`], but an error (instead of a panic) when the
    /// program cannot be started (to ask whether a tool is installed).
    fn try_output_within(&mut self, limit: Duration) -> std::io::Result<Output> {
        let described = format!("{self:?}");
        let (output, killed) = self.output_or_kill(limit)?;
        if killed {
            panic!(
                "{described} did not finish within {limit:?} and was killed\n\
                 --- its stdout so far:\n{}\n--- its stderr so far:\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(output)
    }

    /// Runs the command as [`OutputWithin::output_within`] does, but on time-out
    /// returns what it printed with `true` (its process group killed) instead of
    /// panicking, for callers that report the transcript themselves.
    fn output_or_kill(&mut self, limit: Duration) -> std::io::Result<(Output, bool)>;
}

impl OutputWithin for Command {
    fn output_or_kill(&mut self, limit: Duration) -> std::io::Result<(Output, bool)> {
        let described = format!("{self:?}");
        let mut child = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()?;
        let reader = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                bytes
            })
        };
        let out = reader(Box::new(child.stdout.take().expect("piped stdout")));
        let err = reader(Box::new(child.stderr.take().expect("piped stderr")));
        let started = Instant::now();
        let mut killed = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() >= limit => {
                    // SAFETY: sends SIGKILL to the child's own process group (created
                    // by `process_group(0)` above, so its id is the child's pid).
                    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
                    let _ = child.kill();
                    killed = true;
                    break child.wait()?;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("waiting for {described}: {e}"),
            }
        };
        let stdout = out.join().expect("stdout reader");
        let stderr = err.join().expect("stderr reader");
        Ok((
            Output {
                status,
                stdout,
                stderr,
            },
            killed,
        ))
    }
}

/// This test binary, to be run again for its test `test` alone (exact name, one test
/// thread, output not captured), behind `wrapper` (e.g. valgrind) if given; without
/// `GLIBC_TUNABLES`, then with `env` set. The caller adds the variable that tells the
/// child its role.
pub fn this_test(test: &str, wrapper: &[&str], env: &[(&str, &str)]) -> Command {
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
        .env_remove("GLIBC_TUNABLES");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Waits for the spawned `child` and returns its exit status. If it has not exited
/// after `limit`, kills it and panics saying `what` hung.
pub fn wait_within(
    child: &mut std::process::Child,
    limit: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if started.elapsed() >= limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?}, killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for the forked child `pid` (a `fork()` without `exec`, whose only way to
/// report is its exit status) and returns its wait status. If it has not exited after
/// `limit`, kills it and panics saying `what` hung.
pub fn wait_pid_within(pid: libc::pid_t, limit: Duration, what: &str) -> libc::c_int {
    let started = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: `pid` is a child of this process; `status` is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return status;
        }
        assert!(
            r == 0,
            "waitpid({pid}) for {what}: {}",
            std::io::Error::last_os_error()
        );
        if started.elapsed() >= limit {
            // SAFETY: `pid` is our unreaped child, so the id cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: as above; reaps the killed child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            panic!("{what}: the forked child did not exit within {limit:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The variable that makes every "this machine lacks X" skip a failure. `.ci/run` sets
/// it: the CI machine installs every tool the tests use and runs a kernel with rseq,
/// so a test that would skip there points at a broken set-up, not a missing feature.
pub const STRICT_VAR: &str = "RESTARTABLE_TEST_STRICT";

/// Says that (part of) a test cannot run on this machine, and why: a notice on
/// stderr, and the caller returns. With [`STRICT_VAR`] set to `1` it panics instead,
/// so that CI cannot pass a test that did not run.
pub fn skip(why: impl std::fmt::Display) {
    if std::env::var(STRICT_VAR).as_deref() == Ok("1") {
        panic!("this test would be skipped ({why}), but {STRICT_VAR}=1 requires it to run");
    }
    eprintln!("NOTICE: skipped: {why}");
}
