//! `rseq bench`: the JSON output has the promised shape, `--svg` writes an SVG file,
//! and bad arguments are clap errors (exit 2), not panics. Short runs: the figures
//! themselves are not checked (a benchmark is not a test).

#[path = "../../restartable/tests/support/child.rs"]
mod child;
#[path = "support/scratch.rs"]
mod scratch;

use child::OutputWithin as _;
use std::os::unix::process::ExitStatusExt as _;
use std::process::Command;

use serde_json::Value;

const RSEQ: &str = env!("CARGO_BIN_EXE_rseq");

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(RSEQ)
        .arg("bench")
        .args(args)
        .output_within(child::SHORT)
}

#[test]
fn json_has_machine_method_results_and_targets() {
    let out = bench(&[
        "--quick",
        "--json",
        "--threads",
        "1,2",
        "--workload",
        "counter",
        "--duration-ms",
        "5",
    ]);
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    for key in [
        "cpu_model",
        "cpus_online",
        "kernel",
        "registration",
        "rustc",
    ] {
        assert!(v["machine"].get(key).is_some(), "machine.{key} missing");
    }
    assert_eq!(v["method"]["runs"], 3);
    assert_eq!(v["method"]["duration_ms"], 5);
    let results = v["results"].as_array().expect("results array");
    assert!(!results.is_empty());
    for r in results {
        for key in [
            "workload",
            "threads",
            "impl",
            "kind",
            "median_ns_per_op",
            "min_ns_per_op",
            "max_ns_per_op",
            "median_mops",
            "ratio_to_best_baseline",
            "abort_rate",
            "median_on_cpu",
        ] {
            assert!(r.get(key).is_some(), "result key {key} missing in {r}");
        }
        assert_eq!(r["workload"], "counter");
        assert!(r["error"].is_null(), "check failed: {r}");
        assert!(r["median_ns_per_op"].as_f64().unwrap() > 0.0);
    }
    let threads: Vec<u64> = results
        .iter()
        .map(|r| r["threads"].as_u64().unwrap())
        .collect();
    assert!(threads.contains(&1) && threads.contains(&2));
    let rseq = results
        .iter()
        .find(|r| r["impl"] == "PerCpuCounter::add" && r["threads"] == 1)
        .expect("the rseq counter row");
    assert_eq!(rseq["kind"], "rseq");
    assert!(rseq["ratio_to_best_baseline"].as_f64().unwrap() > 0.0);
    // The abort pass ran for the rseq container.
    assert!(rseq["abort_rate"].as_f64().is_some());
    let targets = v["targets"].as_array().expect("targets array");
    assert!(targets.iter().any(|t| t["met"].is_boolean()));
}

#[test]
fn svg_plot_is_written() {
    let dir = scratch::scratch("bench-svg");
    let svg = dir.join("bench.svg");
    let out = bench(&[
        "--runs",
        "1",
        "--duration-ms",
        "3",
        "--threads",
        "1,2",
        "--workload",
        "cpu,lock",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("targets"), "{text}");
    assert!(text.contains("current_cpu()"), "{text}");
    let body = std::fs::read_to_string(&svg).expect("the SVG file");
    let start = body.trim_start();
    assert!(
        start.starts_with("<svg") || start.starts_with("<?xml"),
        "{}",
        &body[..80.min(body.len())]
    );
    assert!(body.trim_end().ends_with("</svg>"));
    assert!(body.contains("PerCpuLock"));
    // The temporary file it was written to was renamed: only the plot is left.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .expect("the scratch directory")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    assert_eq!(names, ["bench.svg"], "left in the directory: {names:?}");
}

/// The number of threads of process `pid` (`Threads:` of /proc/PID/status).
fn threads_of(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("a Threads: line")
}

/// A run interrupted while it measures leaves nothing at the `--svg` path (the
/// sixteenth session's finding: the early check created it, so an interrupted run
/// left an empty file there) and no temporary file beside it. Forced: the run
/// measures for ten minutes, and it is interrupted once its two measuring threads
/// exist (the main thread alone runs before measuring).
#[test]
fn interrupted_run_leaves_no_svg_file() {
    let dir = scratch::scratch("bench-svg-interrupted");
    let svg = dir.join("bench.svg");
    let mut cmd = Command::new(RSEQ);
    // SIGINT as a terminal would deliver it, whatever this test inherited: a shell
    // runs a background job (`cargo test ... &`, CI scripts under `nohup`) with
    // SIGINT ignored, and an ignored disposition survives `exec`, so the run below
    // would measure for its full ten minutes.
    // SAFETY: between fork and exec only async-signal-safe calls (`signal`,
    // `sigemptyset`, `sigaddset`, `pthread_sigmask`) on the child's own state.
    unsafe {
        use std::os::unix::process::CommandExt as _;
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            let mut set = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    let mut child = cmd
        .args([
            "bench",
            "--runs",
            "1",
            "--duration-ms",
            "600000",
            "--threads",
            "2",
            "--workload",
            "cpu",
            "--no-abort-pass",
            "--svg",
            svg.to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn rseq bench");
    let pid = child.id();
    let started = std::time::Instant::now();
    while threads_of(pid) < 3 {
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("rseq bench ended before measuring: {status:?}");
        }
        if started.elapsed() > child::SHORT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rseq bench: no measuring threads after {:?}", child::SHORT);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SAFETY: `pid` is our child, not yet waited for, so the id is still its own.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) }, 0);
    let status = child::wait_within(&mut child, child::SHORT, "rseq bench after SIGINT");
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .expect("the scratch directory")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    assert!(names.is_empty(), "left by the interrupted run: {names:?}");
}

/// A plot that cannot be written is an error before anything is measured (the audit's
/// finding: `--full --svg` into a missing directory measured for two minutes, printed
/// the table, then failed).
#[test]
fn unwritable_svg_path_fails_before_measuring() {
    // A fresh, empty scratch directory: its subdirectory cannot exist.
    let dir = scratch::scratch("bench-svg-missing");
    let svg = dir.join("no-such-directory").join("bench.svg");
    let out = short_bench_svg(&svg).output_within(child::SHORT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot write") && stderr.contains("bench.svg"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "measured before failing:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `rseq bench --runs 1 --duration-ms 3 --threads 1 --workload cpu --no-abort-pass
/// --svg FILE`: the shortest run that writes a plot.
fn short_bench_svg(svg: &std::path::Path) -> Command {
    let mut cmd = Command::new(RSEQ);
    cmd.args([
        "bench",
        "--runs",
        "1",
        "--duration-ms",
        "3",
        "--threads",
        "1",
        "--workload",
        "cpu",
        "--no-abort-pass",
        "--svg",
    ])
    .arg(svg);
    cmd
}

/// [`short_bench_svg`] run where file permissions bind: as `nobody` when the tests run
/// as root (root writes anything), else as ourselves.
fn unprivileged_bench_svg(svg: &std::path::Path) -> std::process::Output {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = short_bench_svg(svg);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.uid(65534).gid(65534);
    }
    cmd.output_within(child::SHORT)
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// A writable FILE in a directory that takes no new file (no temporary file can be
/// made there): written in place at the end, as before the temporary files (their
/// first version refused it before measuring).
#[test]
fn svg_file_in_a_directory_without_write_permission_is_written() {
    let dir = scratch::scratch("bench-svg-dir-read-only");
    let svg = dir.join("bench.svg");
    std::fs::write(&svg, "old").unwrap();
    set_mode(&svg, 0o666);
    set_mode(&dir, 0o555);
    let out = unprivileged_bench_svg(&svg);
    set_mode(&dir, 0o755);
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let body = std::fs::read_to_string(&svg).expect("the SVG file");
    assert!(body.trim_end().ends_with("</svg>"), "{body}");
}

/// A read-only FILE is refused before anything is measured (as `> FILE` would be),
/// although its directory would let it be replaced, and is left as it was.
#[test]
fn read_only_svg_file_is_refused_before_measuring() {
    let dir = scratch::scratch("bench-svg-read-only");
    let svg = dir.join("bench.svg");
    std::fs::write(&svg, "old").unwrap();
    set_mode(&svg, 0o444);
    set_mode(&dir, 0o777);
    let out = unprivileged_bench_svg(&svg);
    set_mode(&dir, 0o755);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot write") && stderr.contains("bench.svg"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "measured before failing:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(std::fs::read_to_string(&svg).unwrap(), "old");
}

#[test]
fn bad_arguments_are_usage_errors() {
    for args in [
        &["--threads", "0"][..],
        &["--threads", "x"],
        &["--workload", "nope"],
        &["--runs", "0"],
        &["--quick", "--full"],
    ] {
        let out = bench(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
