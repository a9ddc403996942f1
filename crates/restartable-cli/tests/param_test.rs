//! `rseq param-test`: the reference stress matrix at CI size, its usage errors, `-c`,
//! `-d` / `-D`, and proof that it catches a deliberately broken sequence.
//!
//! The matrix is the reference driver's (`run_param_test.tap`): every test type (s, l,
//! b, b -M, m, m -M, i, r) with the defaults, with each injection point 1-9 at
//! [`LOOPS`] loops, and with points 7-9 at -1 combined with yield, signal and a 1 ms
//! sleep every 4th, 2nd and 1st time: 37 configurations x 8 types = 296 runs, each in
//! the plain, `--compare-twice` and `--mm-cid` variants, all with 6 x nproc threads,
//! and again under `GLIBC_TUNABLES=glibc.pthread.rseq=0` with `-D 3` (library-owned
//! registration, every third thread without rseq): 1,776 runs. Repetitions are
//! [`CI_REPS`] instead of the reference's 1000 (override with `PARAM_TEST_REPS`);
//! `scripts/param-test-matrix.sh` runs the full size.
//!
//! Each `#[test]` runs one slice (one variant) on a small pool of concurrent
//! processes and lists every failed combination with its stderr.

#![cfg(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu"))]

#[path = "../../restartable/tests/support/child.rs"]
mod child;

use child::OutputWithin as _;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

const RSEQ: &str = env!("CARGO_BIN_EXE_rseq");
const TUNABLES: &str = "GLIBC_TUNABLES";
const RSEQ_OFF: &str = "glibc.pthread.rseq=0";

/// Repetitions per thread in the CI matrix (the reference uses 1000).
const CI_REPS: u32 = 200;
/// Loop count of the injection-point configurations (the reference's 10000).
const LOOPS: &str = "10000";
/// Concurrent `rseq param-test` processes per slice.
const POOL: usize = 2;

/// The reference's test types, as `-T` arguments.
const TYPES: [&[&str]; 8] = [
    &["-T", "s"],
    &["-T", "l"],
    &["-T", "b"],
    &["-T", "b", "-M"],
    &["-T", "m"],
    &["-T", "m", "-M"],
    &["-T", "i"],
    &["-T", "r"],
];

/// The reference's 37 configurations: defaults, each injection point at [`LOOPS`],
/// and points 7-9 at -1 with yield / signal / 1 ms sleep every 4th, 2nd, 1st time.
fn configurations() -> Vec<Vec<String>> {
    let mut c: Vec<Vec<String>> = vec![vec![]];
    for point in 1..=9 {
        c.push(vec![format!("-{point}"), LOOPS.to_string()]);
    }
    for event in [&["-y"][..], &["-k"][..], &["-s", "1"][..]] {
        for modulo in ["4", "2", "1"] {
            for point in 7..=9 {
                let mut args = vec![format!("-{point}"), "-1".into(), "-m".into(), modulo.into()];
                args.extend(event.iter().map(|s| s.to_string()));
                c.push(args);
            }
        }
    }
    assert_eq!(c.len(), 37);
    c
}

fn threads() -> usize {
    6 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn reps() -> u32 {
    std::env::var("PARAM_TEST_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(CI_REPS)
}

/// One run: the arguments after `param-test`, and whether glibc's registration is
/// turned off.
#[derive(Clone, Debug)]
struct Run {
    args: Vec<String>,
    tunable_off: bool,
}

impl Run {
    fn new(args: &[&str]) -> Run {
        Run {
            args: args.iter().map(|s| s.to_string()).collect(),
            tunable_off: false,
        }
    }

    fn tunable_off(mut self) -> Run {
        self.tunable_off = true;
        self
    }

    fn output(&self) -> Output {
        let mut cmd = Command::new(RSEQ);
        cmd.arg("param-test").args(&self.args);
        if self.tunable_off {
            cmd.env(TUNABLES, RSEQ_OFF);
        } else {
            cmd.env_remove(TUNABLES);
        }
        cmd.output_within(child::LONG)
    }

    fn describe(&self) -> String {
        let env = if self.tunable_off {
            format!("{TUNABLES}={RSEQ_OFF} ")
        } else {
            String::new()
        };
        format!("{env}rseq param-test {}", self.args.join(" "))
    }
}

fn code(o: &Output) -> String {
    match o.status.code() {
        Some(c) => format!("exit {c}"),
        None => format!("killed ({:?})", o.status),
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Exit status of `rseq param-test -c` (plus `extra`), under the tunable or not.
fn check(extra: &[&str], tunable_off: bool) -> Option<i32> {
    let mut args = vec!["-c"];
    args.extend_from_slice(extra);
    let mut run = Run::new(&args);
    run.tunable_off = tunable_off;
    run.output().status.code()
}

/// Runs one variant's slice of the matrix and fails listing every failed
/// combination. `variant` is added to every run's arguments.
fn matrix_slice(variant: &[&str], tunable_off: bool) {
    let name = format!(
        "{}{}",
        if tunable_off { "tunable-off -D 3 " } else { "" },
        if variant.is_empty() {
            "plain".to_string()
        } else {
            variant.join(" ")
        }
    );
    // As the reference driver: no rseq at all means skip everything.
    match check(&[], tunable_off) {
        Some(0) => {}
        Some(2) => {
            child::skip(format!("rseq unavailable: the {name} matrix"));
            return;
        }
        other => panic!("rseq param-test -c: unexpected status {other:?}"),
    }
    let mm_cid = variant.contains(&"--mm-cid");
    // The mm_cid build skips (exit 2) where mm_cid is unavailable.
    let skip_ok = mm_cid && check(&["--mm-cid"], tunable_off) == Some(2);

    let (threads, reps) = (threads().to_string(), reps().to_string());
    let mut runs = Vec::new();
    for config in configurations() {
        for ty in TYPES {
            let mut args: Vec<String> = ty.iter().map(|s| s.to_string()).collect();
            args.extend(config.iter().cloned());
            args.extend(variant.iter().map(|s| s.to_string()));
            if tunable_off {
                args.extend(["-D".to_string(), "3".to_string()]);
            }
            args.extend([
                "-r".to_string(),
                reps.clone(),
                "-t".to_string(),
                threads.clone(),
            ]);
            runs.push(Run { args, tunable_off });
        }
    }

    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let skipped = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..POOL {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(run) = runs.get(i) else { break };
                let t = Instant::now();
                let out = run.output();
                match out.status.code() {
                    Some(0) => {}
                    Some(2) if skip_ok => {
                        skipped.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => failures.lock().unwrap().push(format!(
                        "{} -> {} after {:.2} s\n{}",
                        run.describe(),
                        code(&out),
                        t.elapsed().as_secs_f64(),
                        stderr(&out).trim_end()
                    )),
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    eprintln!(
        "param-test matrix, {name}: {} runs ({} threads x {} reps), {} failed, {} skipped, \
         {:.1} s",
        runs.len(),
        threads,
        reps,
        failures.len(),
        skipped.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {} runs of the {name} matrix failed:\n\n{}",
        failures.len(),
        runs.len(),
        failures.join("\n\n")
    );
}

#[test]
fn matrix_plain() {
    matrix_slice(&[], false);
}

#[test]
fn matrix_compare_twice() {
    matrix_slice(&["--compare-twice"], false);
}

#[test]
fn matrix_mm_cid() {
    matrix_slice(&["--mm-cid"], false);
}

#[test]
fn matrix_tunable_off_disable_every_third_plain() {
    matrix_slice(&[], true);
}

#[test]
fn matrix_tunable_off_disable_every_third_compare_twice() {
    matrix_slice(&["--compare-twice"], true);
}

#[test]
fn matrix_tunable_off_disable_every_third_mm_cid() {
    matrix_slice(&["--mm-cid"], true);
}

/// Bad usage: usage text on stderr and exit 1 (never clap's 2, never a panic's 101).
#[test]
fn bad_usage_exits_1_with_usage() {
    for args in [
        &["-T", "x"][..],
        &["-t", "-1"],
        &["-r", "-5"],
        &["-m", "-1"],
        &["-t"],
        &["-T"],
        &["-7"],
        &["-x"],
        &["--no-such-flag"],
        &["-t", "many"],
        &["stray"],
        &["--migrate"],
        &["--migrate", "-m", "2"],
        &["--migrate", "-7", "-1"],
        &["--migrate", "-m", "0", "-7", "-1"],
        &["--migrate", "-m", "2", "-7", "5"],
        &["--migrate=yes", "-m", "2", "-7", "-1"],
    ] {
        let out = Run::new(args).output();
        assert_eq!(
            out.status.code(),
            Some(1),
            "rseq param-test {args:?}: expected exit 1, got {}; stderr:\n{}",
            code(&out),
            stderr(&out)
        );
        let err = stderr(&out);
        assert!(
            err.contains("Usage : rseq param-test") && err.contains("[-T test]"),
            "rseq param-test {args:?}: no usage on stderr:\n{err}"
        );
        assert!(
            !err.contains("panicked"),
            "rseq param-test {args:?} panicked:\n{err}"
        );
    }
}

/// More threads than the machine can create is a failed run with a message (exit 1),
/// not an abort: `-t 99999999999` used to reserve the join handles of every thread
/// up front, a 2.4 TB allocation that aborted the process. Run under a 4 GiB
/// address-space limit, so that thread creation fails after a few hundred threads
/// instead of filling the machine.
#[test]
fn too_many_threads_fails_cleanly() {
    let out = Command::new("sh")
        .args([
            "-c",
            "ulimit -v 4194304 && exec \"$@\"",
            "sh",
            RSEQ,
            "param-test",
            "-T",
            "i",
            "-r",
            "1",
            "-t",
            "99999999999",
        ])
        .output_within(child::SHORT);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1, got {}; stderr:\n{err}",
        code(&out)
    );
    assert!(
        err.contains("cannot create worker thread"),
        "no reason on stderr:\n{err}"
    );
}

#[test]
fn help_prints_usage_and_exits_0() {
    let out = Run::new(&["-h"]).output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for flag in [
        "[-1 loops]",
        "[-9 loops]",
        "[-T test]",
        "[-D M]",
        "--mm-cid",
        "--compare-twice",
        "--migrate",
    ] {
        assert!(text.contains(flag), "usage lacks {flag}:\n{text}");
    }
    assert!(
        !text.contains("break-cpu-check"),
        "the hidden switch is listed"
    );
}

/// The reference's option forms: negative loop counts, repeated options (the last one
/// wins, so a driver can append `-r`/`-t`), `-T` with a separate value.
#[test]
fn reference_option_forms_are_accepted() {
    let out = Run::new(&[
        "-7", "-1", "-m", "2", "-k", "-T", "i", "-t", "100", "-r", "3", "-t", "3", "-v",
    ])
    .output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("counter increment"), "{text}");
    assert!(
        text.contains("total: 3 threads"),
        "the last -t should win:\n{text}"
    );
    assert!(text.contains("signals delivered"), "{text}");
}

/// `-c`: 0 where rseq is available to the main thread, 2 where not; with
/// `--mm-cid`, 0 only where mm_cid is available too (the mm_cid build would run).
#[test]
fn check_flag_reports_availability() {
    let status = restartable::status();
    let expect = |ok: bool| Some(if ok { 0 } else { 2 });
    assert_eq!(check(&[], false), expect(status.is_registered()));
    assert_eq!(
        check(&["--mm-cid"], false),
        expect(status.is_registered() && status.mm_cid)
    );
    // Under the tunable the library registers its own areas: still available.
    assert_eq!(check(&[], true), expect(status.is_registered()));
    // Verbose says so, on stdout, as the reference.
    let out = Run::new(&["-c", "-v"]).output();
    if status.is_registered() {
        assert!(stdout(&out).contains("The rseq syscall is available."));
    }
}

/// Under valgrind (no rseq system call) `-c` says 2 and a run skips with 2, as the
/// reference; with `-d` the run needs no rseq and passes.
#[test]
fn without_rseq_check_and_runs_exit_2_and_d_still_runs() {
    let found = Command::new("valgrind")
        .arg("--version")
        .try_output_within(child::SHORT)
        .is_ok_and(|o| o.status.success());
    if !found {
        child::skip("valgrind is not on PATH");
        return;
    }
    let grind = |args: &[&str]| {
        Command::new("valgrind")
            .args(["-q", "--error-exitcode=99", RSEQ, "param-test"])
            .args(args)
            .env_remove(TUNABLES)
            .output_within(child::LONG)
    };
    let out = grind(&["-c"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = grind(&["-T", "i", "-t", "2", "-r", "10"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = grind(&["-d", "-T", "l", "-t", "2", "-r", "10"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// Parses the `(N without rseq)` count of the `-v` totals line.
fn threads_without_rseq(out: &Output) -> usize {
    let text = stdout(out);
    let line = text
        .lines()
        .find(|l| l.starts_with("total:"))
        .unwrap_or_else(|| panic!("no totals line:\n{text}"));
    let n = line
        .split('(')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok());
    n.unwrap_or_else(|| panic!("cannot parse: {line}"))
}

/// `-d` runs every worker without rseq, even where glibc owns registration (the
/// command re-executes itself with the tunable); the items are still conserved.
#[test]
fn d_runs_every_thread_without_rseq() {
    for ty in ["s", "l", "b", "m", "i"] {
        let out = Run::new(&["-d", "-T", ty, "-t", "6", "-r", "200", "-v"]).output();
        assert_eq!(out.status.code(), Some(0), "-T {ty}: {}", stderr(&out));
        assert_eq!(threads_without_rseq(&out), 6, "-T {ty}:\n{}", stdout(&out));
    }
}

/// `-D 3`: threads 0, 3, 6, 9 of 12 without rseq where the library owns registration;
/// where glibc owns it, no effect (as the reference) and a note with `-v`.
#[test]
fn disable_every_third_thread() {
    let out = Run::new(&["-D", "3", "-T", "m", "-t", "12", "-r", "200", "-v"])
        .tunable_off()
        .output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(threads_without_rseq(&out), 4, "{}", stdout(&out));

    if restartable::registration::process_owner() == Some(restartable::Owner::Libc) {
        let out = Run::new(&["-D", "3", "-T", "i", "-t", "12", "-r", "200", "-v"]).output();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(threads_without_rseq(&out), 0, "{}", stdout(&out));
        assert!(
            stderr(&out).contains("-D 3 has no effect"),
            "{}",
            stderr(&out)
        );
    }
}

/// A number of the `-v` totals line: the one after `name ` (`aborts`, `migrations`).
fn total_of(out: &Output, name: &str) -> u64 {
    let text = stdout(out);
    let line = text
        .lines()
        .find(|l| l.starts_with("total:"))
        .unwrap_or_else(|| panic!("no totals line:\n{text}"));
    let key = format!(" {name} ");
    let n = line
        .split_once(&key)
        .and_then(|(_, rest)| rest.split([',', ';']).next())
        .and_then(|s| s.trim().parse().ok());
    n.unwrap_or_else(|| panic!("no {name} in: {line}"))
}

/// Runs of the broken build before [`broken_cpu_check_is_caught`] gives up (a run is
/// caught on its own: a bound for safety, not a wait for luck).
const BROKEN_ATTEMPTS: u32 = 10;

/// The deliberately broken sequence (`--break-cpu-check`: no CPU check before the
/// commit) must make the stress test fail, and the test forces what makes the check
/// matter. `--migrate` at point 7 with `-m 2`: every second time, a thread that has
/// read CPU A is moved to CPU B (pinned there until its sequence ends), so its
/// sequence certainly runs on B on A's array; the threads that were not moved this
/// time work on A's array from A meanwhile, with a delay inside the sequence (point 4)
/// widening the overlap. (`-m 1` would move every operation: every sequence on A's
/// array would run on B, one at a time, and none would overlap; 5 broken runs of 5
/// passed so.)
///
/// The control, the same run with the check in place, passes and shows that every
/// forced move was caught: nothing lost (the memcpy test's own check), at least one
/// move per two repetitions of each thread, and at least as many aborts as moves
/// (each moved sequence aborts on its CPU check). A broken run is caught on its own
/// (the memcpy test finds items lost or duplicated): 70 of 70 measured runs were,
/// quiet and loaded; up to [`BROKEN_ATTEMPTS`] of them run.
#[test]
fn broken_cpu_check_is_caught() {
    let cpus = restartable::allowed_cpus().map_or(1, |c| c.len());
    if cpus < 2 {
        child::skip("one allowed CPU: no migration to force, the broken check cannot matter");
        return;
    }
    if check(&[], false) != Some(0) {
        child::skip("rseq unavailable");
        return;
    }
    let threads = threads();
    let reps: u64 = 200;
    let (t, r) = (threads.to_string(), reps.to_string());
    let args = [
        "-T",
        "m",
        "-7",
        "-1",
        "-m",
        "2",
        "--migrate",
        "-4",
        "10000",
        "-r",
        &r,
        "-t",
        &t,
        "-v",
    ];
    let out = Run::new(&args).output();
    assert_eq!(
        out.status.code(),
        Some(0),
        "control run failed: {}",
        stderr(&out)
    );
    let (aborts, moves) = (total_of(&out, "aborts"), total_of(&out, "migrations"));
    assert!(
        moves >= threads as u64 * (reps / 2),
        "{moves} forced migrations, expected at least one per two repetitions:\n{}",
        stdout(&out)
    );
    assert!(
        aborts >= moves,
        "{moves} forced migrations but {aborts} aborts: a moved sequence committed:\n{}",
        stdout(&out)
    );

    eprintln!("control run: {moves} forced migrations, {aborts} aborts, nothing lost");
    let mut broken = vec!["--break-cpu-check"];
    broken.extend_from_slice(&args);
    for attempt in 1..=BROKEN_ATTEMPTS {
        let out = Run::new(&broken).output();
        match out.status.code() {
            Some(0) => continue,
            Some(1) => {
                let err = stderr(&out);
                assert!(
                    err.contains("FAILED: memcpy: expected"),
                    "exit 1 without a conservation error:\n{err}"
                );
                eprintln!(
                    "broken CPU check caught on attempt {attempt}: {}",
                    err.trim_end()
                );
                return;
            }
            _ => panic!(
                "the broken run ended with {} instead of a conservation error:\n{}",
                code(&out),
                stderr(&out)
            ),
        }
    }
    panic!(
        "{BROKEN_ATTEMPTS} runs with --break-cpu-check and forced migrations all passed: \
         the stress test does not catch a missing CPU check"
    );
}
