//! Every subcommand whose standard output cannot be written (a full disk: `/dev/full`;
//! a reader that went away: `rseq inspect BIG | head`) exits with status 1 and says
//! why on standard error, never panicking ("failed printing to stdout", status 101:
//! the audit's finding for `info`, `inspect`, `alloc-stats`, `bench` and
//! `param-test`; `--help` and `--version` exited 0). `gdb-script` and `lldb-script`
//! did so already.

#![cfg(target_os = "linux")]

#[path = "../../restartable/tests/support/child.rs"]
mod child;

use std::io::Read as _;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

const RSEQ: &str = env!("CARGO_BIN_EXE_rseq");
const LIMIT: Duration = Duration::from_secs(120);

/// Waits for `child` within [`LIMIT`] (killed and a panic after), then reads its
/// standard error.
fn finish(mut child: Child, what: &str) -> (ExitStatus, String) {
    let mut err_pipe = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let status = child::wait_within(&mut child, LIMIT, what);
    (status, reader.join().expect("stderr reader"))
}

fn assert_clean_failure(what: &str, status: ExitStatus, err: &str, reason: &str) {
    assert!(
        !err.contains("panicked"),
        "{what}: panicked (status {status:?}):\n{err}"
    );
    assert_eq!(status.code(), Some(1), "{what}: status {status:?}:\n{err}");
    let line = format!("rseq: cannot write to standard output: {reason}");
    assert!(err.contains(&line), "{what}: {line:?} missing:\n{err}");
}

#[test]
fn a_full_standard_output_is_an_error_not_a_panic() {
    let cases: &[&[&str]] = &[
        &["info"],
        &["info", "--json"],
        &["inspect", RSEQ],
        &["inspect", "--json", RSEQ],
        &["alloc-stats", "--threads", "1", "--objects", "100"],
        &[
            "alloc-stats",
            "--json",
            "--threads",
            "1",
            "--objects",
            "100",
        ],
        &["param-test", "-h"],
        &["param-test", "-T", "i", "-t", "2", "-r", "10", "-v"],
        &[
            "bench",
            "--quick",
            "--workload",
            "cpu",
            "--threads",
            "1",
            "--no-abort-pass",
        ],
        &["gdb-script"],
        &["--help"],
        &["info", "--help"],
        &["--version"],
    ];
    for args in cases {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let child = Command::new(RSEQ)
            .args(*args)
            .stdin(Stdio::null())
            .stdout(full)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rseq");
        let what = format!("rseq {} >/dev/full", args.join(" "));
        let (status, err) = finish(child, &what);
        if args[0] == "gdb-script" {
            // Its own message, as before.
            assert_eq!(status.code(), Some(1), "{what}: {err}");
            assert!(!err.contains("panicked"), "{what}: {err}");
            continue;
        }
        assert_clean_failure(&what, status, &err, "No space left on device");
    }
}

/// The reader of the pipe is gone before `rseq` writes: the listing (138 KiB of JSON
/// for `rseq` itself, more than a pipe holds) meets `EPIPE` whatever the timing.
#[test]
fn a_closed_pipe_is_an_error_not_a_panic() {
    let mut child = Command::new(RSEQ)
        .args(["inspect", "--json", RSEQ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rseq");
    drop(child.stdout.take());
    let (status, err) = finish(child, "rseq inspect --json rseq | (closed)");
    assert_clean_failure(
        "rseq inspect --json | (closed)",
        status,
        &err,
        "Broken pipe",
    );
}

/// Standard error cannot be written (`2>/dev/full`): the messages are lost, but each
/// command still ends with its own status, never 101 ("failed printing to stderr",
/// the sixteenth session's finding: `eprintln!` panicked). Clap's usage errors and
/// `--help` keep theirs too.
#[test]
fn a_full_standard_error_keeps_the_exit_status() {
    let cases: &[(&[&str], i32)] = &[
        // Clap's usage errors (exit 2) and help (exit 0, on standard output).
        (&["--no-such-flag"], 2),
        (&["bench", "--threads", "0"], 2),
        (&["--help"], 0),
        (&["inspect", "--help"], 0),
        // Our own messages.
        (&["inspect", "/nonexistent/rseq-no-such-file"], 1),
        (&["inspect", "--json", "/nonexistent/rseq-no-such-file"], 1),
        (&["param-test", "-Z"], 1),
        (&["param-test", "-T", "x"], 1),
        (&["alloc-stats", "--threads", "0"], 2),
    ];
    for (args, code) in cases {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let mut child = Command::new(RSEQ)
            .args(*args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(full)
            .spawn()
            .expect("spawn rseq");
        let what = format!("rseq {} 2>/dev/full", args.join(" "));
        let status = child::wait_within(&mut child, LIMIT, &what);
        assert_eq!(status.code(), Some(*code), "{what}: status {status:?}");
    }
}
