//! The gdb extension (`rseq gdb-script`) against real gdb, in batch mode, on Rust code:
//! the example `crates/restartable/examples/counter_loop.rs`, a loop whose body is
//! `counter.inc()` (a `PerCpuCounter` increment, one restartable sequence) followed by
//! another statement (issue 7).
//!
//! The example is built by the test itself (`cargo build --example counter_loop -p
//! restartable`, with the test's own profile and target directory: a no-op when
//! `cargo test --workspace` built it already). In release builds (the workspace gives
//! them line tables) the sequence is inlined into `main`; in dev builds it sits in
//! `restartable::arch::x86_64::load_add_store`, called from `main`. The assertions hold
//! for both.
//!
//! Each test stops on the increment's line in `main` and issues one stepping command
//! repeatedly until the program stands on the next line, counting how often it stood
//! on a sequence's start (an attempt) or post-commit address (a commit). Without the
//! extension single-stepping aborts every attempt: nothing commits, and the next line
//! is reached only when `PerCpuCounter` gives up after `MAX_CONSECUTIVE_ABORTS`
//! aborts and adds on its shared fallback (the example prints `fallback 1`). With the
//! extension `stepi`, `next` and `step` reach the next line quickly and the
//! increment commits as a sequence (`fallback 0`).
//!
//! The same holds for `nexti` and `until`, and through gdb's machine interface
//! (`-exec-next`, `-exec-step`, `-exec-step-instruction`, `-exec-next-instruction`, as
//! IDE front ends send them). Without the extension `stepi` (CLI or MI) never sees
//! the sequence commit: the positive controls. (gdb's own `next` runs over the inlined
//! call of a release build without single-stepping it, so it needs no help there.)
//!
//! Without gdb, ptrace permission, line tables or rseq, the tests print a notice and
//! pass.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

#[path = "support/example.rs"]
mod example;
#[path = "support/gdb.rs"]
mod gdb;
#[path = "support/gdb_mi.rs"]
mod gdb_mi;
#[path = "support/scratch.rs"]
mod scratch;
#[path = "support/source.rs"]
mod source;

#[path = "../../restartable/tests/support/child.rs"]
mod child;

use child::OutputWithin as _;
use scratch::{scratch, Scratch};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use restartable::percpu::MAX_CONSECUTIVE_ABORTS;

const RSEQ: &str = env!("CARGO_BIN_EXE_rseq");
/// How many `stepi` the stepping tests allow to get past the sequence.
const STEPIS: usize = 3000;
/// How many `step` the `step` test allows (dev builds step through the library's
/// functions line by line).
const STEPS: usize = 300;
/// How often the example increments its counter.
const INCREMENTS: u32 = 3;
/// How long one gdb run may take.
const GDB_LIMIT: Duration = Duration::from_secs(90);

fn example_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../restartable/examples/counter_loop.rs")
}

/// The line of the example carrying `marker` (1-based).
fn line_of(marker: &str) -> usize {
    source::line_of(&example_source(), marker)
}

/// Everything a test needs, or None (with a notice) when the machine lacks a piece.
struct Setup {
    dir: Scratch,
    binary: PathBuf,
    extension: PathBuf,
}

fn setup(test: &str) -> Option<Setup> {
    if Command::new("gdb")
        .arg("--version")
        .try_output_within(child::SHORT)
        .is_err()
    {
        child::skip(format!("gdb is not installed (gdb test {test})"));
        return None;
    }
    let binary = example::counter_loop().unwrap_or_else(|err| panic!("{err}"));
    let run = Command::new(&binary).output_within(child::SHORT);
    assert!(run.status.success(), "the example runs: {run:?}");
    let stdout = String::from_utf8_lossy(&run.stdout);
    if !stdout.starts_with("rseq registered") {
        child::skip(format!(
            "this thread has no rseq ({stdout}) (gdb test {test})"
        ));
        return None;
    }
    assert!(
        stdout.contains(&format!("counter {INCREMENTS}\nfallback 0\n")),
        "the example on its own: {stdout}"
    );
    let dir = scratch(&format!("gdb-rust-{test}"));
    // The extension as users get it: printed by `rseq gdb-script`.
    let script = Command::new(RSEQ)
        .arg("gdb-script")
        .output_within(child::SHORT);
    assert!(script.status.success());
    let extension = dir.join("restartable-gdb.py");
    std::fs::write(&extension, &script.stdout).unwrap();
    Some(Setup {
        dir,
        binary,
        extension,
    })
}

/// Runs gdb in batch mode with the given Python driver (and the extension first if
/// `with_extension`). Returns gdb's output, or None (with a notice) when gdb cannot
/// trace the program here or the example has no line tables. Kills gdb after
/// GDB_LIMIT.
fn run_gdb(setup: &Setup, driver: &str, with_extension: bool) -> Option<String> {
    let driver_path = setup.dir.join("driver.py");
    std::fs::write(&driver_path, driver).unwrap();
    let (output, timed_out) = gdb::run_batch(
        &setup.binary,
        &driver_path,
        with_extension.then_some(setup.extension.as_path()),
        GDB_LIMIT,
    )?;
    if output.contains("No source file named counter_loop.rs") {
        child::skip(format!(
            "the example was built without line tables\n{output}"
        ));
        return None;
    }
    assert!(
        !timed_out,
        "gdb did not finish within {GDB_LIMIT:?}:\n{output}"
    );
    Some(output)
}

/// A driver that stops on the increment's line, issues `command` up to `limit` times
/// until the program stands on the next line, prints
/// `RESULT reached <n or None> attempts <a> commits <c>`, and lets the program finish.
///
/// Optimized code has no line-table row for the line of an inlined call (gdb 13 moves
/// a breakpoint there to the next line), so the driver breaks on an earlier line and
/// goes on with `next` until gdb shows the increment's line, where gdb stops at an
/// inlined call site.
fn driver(command: &str, limit: usize) -> String {
    format!(
        r#"
import re
import struct
import gdb

INC_LINE = {inc}
NEXT_LINE = {next}

def line():
    sal = gdb.selected_frame().find_sal()
    if sal.symtab is None or not sal.symtab.filename.endswith("counter_loop.rs"):
        return None
    return sal.line

def sequences():
    """The start and post-commit addresses of every sequence, from __rseq_cs."""
    text = gdb.execute("info files", to_string=True)
    post_of = {{}}
    for m in re.finditer(r"0x([0-9a-f]+) - 0x([0-9a-f]+) is (\S+)", text):
        if m.group(3) != "__rseq_cs":
            continue
        lo, hi = int(m.group(1), 16), int(m.group(2), 16)
        data = bytes(gdb.selected_inferior().read_memory(lo, hi - lo))
        for off in range(0, len(data) - 31, 32):
            _v, _f, start, length, _abort = struct.unpack_from("<IIQQQ", data, off)
            if start and length:
                post_of[start] = start + length
    return post_of

gdb.execute("break counter_loop.rs:{before}")
gdb.execute("run")
gdb.execute("delete")
for _ in range(10):
    if line() == INC_LINE:
        break
    gdb.execute("next")
if line() != INC_LINE:
    print("RESULT not on the increment's line but on %s" % line())
    gdb.execute("kill")
else:
    post_of = sequences()
    print("RESULT %d sequences" % len(post_of))
    attempts = commits = 0
    # A commit is the post-commit address of the sequence last entered (another
    # sequence's post-commit address can be ordinary code on the path taken), or any
    # post-commit address when no sequence was seen entered (the extension runs the
    # thread through the sequence to its post-commit address).
    posts = set(post_of.values())
    current = None
    reached = None
    for i in range({limit}):
        gdb.execute("{command}", to_string=True)
        pc = int(gdb.selected_frame().pc())
        if pc in post_of:
            attempts += 1
            current = post_of[pc]
        elif pc == current or (current is None and pc in posts):
            commits += 1
            current = None
        if line() == NEXT_LINE:
            reached = i + 1
            break
    print("RESULT reached %s attempts %d commits %d pc 0x%x" % (reached, attempts, commits, pc))
    gdb.execute("continue")
"#,
        inc = line_of("// INC_LINE"),
        next = line_of("// NEXT_LINE"),
        before = line_of("// BEFORE_LINE"),
    )
}

/// What a driver run printed.
#[derive(Debug)]
struct Stepped {
    /// After how many commands the next line was reached (None: never).
    reached: Option<usize>,
    attempts: usize,
    commits: usize,
    /// The example's `fallback` line: increments that did not commit as a sequence.
    fallback: u32,
}

fn parse(output: &str) -> Stepped {
    let result = output
        .lines()
        .find(|l| l.starts_with("RESULT reached"))
        .unwrap_or_else(|| panic!("the driver did not get to the increment:\n{output}"));
    eprintln!("{result}");
    let words: Vec<&str> = result.split_whitespace().collect();
    let number = |key: &str| {
        let i = words.iter().position(|w| *w == key).unwrap();
        words[i + 1]
    };
    assert!(
        output.contains(&format!("\ncounter {INCREMENTS}\n")),
        "the counter is wrong or the program did not finish:\n{output}"
    );
    let fallback = output
        .lines()
        .find_map(|l| l.strip_prefix("fallback "))
        .unwrap_or_else(|| panic!("no fallback line:\n{output}"))
        .trim()
        .parse()
        .unwrap();
    Stepped {
        reached: number("reached").parse().ok(),
        attempts: number("attempts").parse().unwrap(),
        commits: number("commits").parse().unwrap(),
        fallback,
    }
}

#[test]
fn stepi_without_the_extension_never_commits_the_sequence() {
    let Some(setup) = setup("stepi-plain") else {
        return;
    };
    let Some(output) = run_gdb(&setup, &driver("stepi", STEPIS), false) else {
        return;
    };
    let s = parse(&output);
    // Every attempt is aborted. The next line is reached at all only because the
    // counter gives up after MAX_CONSECUTIVE_ABORTS aborts and adds on its fallback
    // (an optimized build takes about 20 stepi per attempt; a dev build takes more
    // than STEPIS for all of them).
    assert_eq!(s.commits, 0, "{s:?}\n{output}");
    assert!(s.attempts >= 2, "{s:?}\n{output}");
    match s.reached {
        Some(_) => {
            assert_eq!(
                s.attempts, MAX_CONSECUTIVE_ABORTS as usize,
                "{s:?}\n{output}"
            );
            assert_eq!(s.fallback, 1, "{s:?}\n{output}");
        }
        None => assert_eq!(s.fallback, 0, "{s:?}\n{output}"),
    }
}

/// Runs `driver(command, limit)` under gdb with the extension and checks that the next
/// line was reached (after exactly `exactly` commands if given) with every increment
/// committed as a sequence (no fallback). Returns what was parsed.
fn assert_cli_reaches(
    test: &str,
    command: &str,
    limit: usize,
    exactly: Option<usize>,
) -> Option<Stepped> {
    let setup = setup(test)?;
    let output = run_gdb(&setup, &driver(command, limit), true)?;
    let s = parse(&output);
    match exactly {
        Some(n) => assert_eq!(s.reached, Some(n), "{n} {command}: {s:?}\n{output}"),
        None => assert!(s.reached.is_some(), "{command}: {s:?}\n{output}"),
    }
    assert_eq!(
        s.fallback, 0,
        "every increment commits as a sequence: {output}"
    );
    Some(s)
}

#[test]
fn stepi_with_the_extension_reaches_the_next_line() {
    if let Some(s) = assert_cli_reaches("stepi-ext", "stepi", STEPIS, None) {
        assert!(s.commits >= 1, "{s:?}");
    }
}

#[test]
fn next_with_the_extension_reaches_the_next_line() {
    assert_cli_reaches("next-ext", "next", 3, Some(1));
}

#[test]
fn step_with_the_extension_reaches_the_next_line() {
    assert_cli_reaches("step-ext", "step", STEPS, None);
}

#[test]
fn nexti_with_the_extension_reaches_the_next_line() {
    assert_cli_reaches("nexti-ext", "nexti", STEPIS, None);
}

#[test]
fn until_with_the_extension_reaches_the_next_line() {
    assert_cli_reaches("until-ext", "until", 3, Some(1));
}

/// MI: stops on the increment's line, sends `command` (up to `limit` times) until the
/// next line of the example, lets the program finish. Returns after how many commands
/// the line was reached and the example's fallback count.
fn mi_steps(
    test: &str,
    command: &str,
    limit: usize,
    extension: bool,
) -> Option<(Option<usize>, u32)> {
    let setup = setup(test)?;
    let mut mi = gdb_mi::Mi::start(
        &setup.binary,
        "",
        extension.then_some(setup.extension.as_path()),
        GDB_LIMIT,
    )?;
    mi.run_to(&format!("counter_loop.rs:{}", line_of("// BEFORE_LINE")))?;
    let in_example = |f: &gdb_mi::Frame, line: usize| {
        f.file.ends_with("counter_loop.rs") && f.line == Some(line)
    };
    let inc = line_of("// INC_LINE");
    let next = line_of("// NEXT_LINE");
    for _ in 0..10 {
        if in_example(&mi.frame(), inc) {
            break;
        }
        mi.run("-exec-next");
    }
    let frame = mi.frame();
    if !in_example(&frame, inc) {
        let transcript = mi.finish();
        if transcript.contains("No source file named counter_loop.rs") {
            child::skip("the example has no line tables");
            return None;
        }
        panic!("not on the increment's line but at {frame:?}:\n{transcript}");
    }
    let mut reached = None;
    for i in 0..limit {
        mi.run(command);
        if in_example(&mi.frame(), next) {
            reached = Some(i + 1);
            break;
        }
    }
    let transcript = mi.finish();
    assert!(
        transcript.contains(&format!("\ncounter {INCREMENTS}\n")),
        "the counter is wrong or the program did not finish:\n{transcript}"
    );
    let fallback = transcript
        .lines()
        .find_map(|l| l.strip_prefix("fallback "))
        .unwrap_or_else(|| panic!("no fallback line:\n{transcript}"))
        .trim()
        .parse()
        .unwrap();
    eprintln!("{command}: reached {reached:?} fallback {fallback}");
    Some((reached, fallback))
}

#[test]
fn mi_exec_next_with_the_extension_reaches_the_next_line() {
    let Some((reached, fallback)) = mi_steps("mi-next-ext", "-exec-next", 3, true) else {
        return;
    };
    assert_eq!(reached, Some(1));
    assert_eq!(fallback, 0, "every increment commits as a sequence");
}

#[test]
fn mi_exec_step_instruction_without_the_extension_never_commits_the_sequence() {
    // The positive control of the MI stepping tests: as with the CLI's `stepi`, every
    // attempt aborts; an optimized build reaches the next line only through the
    // fallback, a dev build not within STEPIS instructions.
    let Some((reached, fallback)) =
        mi_steps("mi-stepi-plain", "-exec-step-instruction", STEPIS, false)
    else {
        return;
    };
    match reached {
        Some(_) => assert_eq!(fallback, 1, "reached only through the fallback"),
        None => assert_eq!(fallback, 0),
    }
}

#[test]
fn mi_exec_step_with_the_extension_reaches_the_next_line() {
    let Some((reached, fallback)) = mi_steps("mi-step-ext", "-exec-step", STEPS, true) else {
        return;
    };
    assert!(reached.is_some());
    assert_eq!(fallback, 0, "every increment commits as a sequence");
}

#[test]
fn mi_exec_step_instruction_with_the_extension_reaches_the_next_line() {
    let Some((reached, fallback)) =
        mi_steps("mi-stepi-ext", "-exec-step-instruction", STEPIS, true)
    else {
        return;
    };
    assert!(reached.is_some());
    assert_eq!(fallback, 0, "every increment commits as a sequence");
}

#[test]
fn mi_exec_next_instruction_with_the_extension_reaches_the_next_line() {
    let Some((reached, fallback)) =
        mi_steps("mi-nexti-ext", "-exec-next-instruction", STEPIS, true)
    else {
        return;
    };
    assert!(reached.is_some());
    assert_eq!(fallback, 0, "every increment commits as a sequence");
}
