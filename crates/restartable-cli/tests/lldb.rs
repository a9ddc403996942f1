//! The lldb module (`rseq lldb-script`) against real lldb (Debian's lldb 14 in CI), in
//! batch mode: on the C fixture `tests/inspect-fixtures/one_sequence.c` (prints
//! `counter N done N` when each of its N increments added exactly one), on
//! `dlopen_sequence.c` (the sequence in a library loaded with `dlopen`) and on the
//! Rust example `crates/restartable/examples/counter_loop.rs` (prints its counter and
//! `fallback F`, the increments that did not commit as a restartable sequence).
//!
//! Each test stops before a sequence and issues one stepping command repeatedly until
//! the program stands on the next line. With the module, `step`, `next`, `stepi` and
//! `thread step-inst-over` get there and every increment commits (`fallback 0`);
//! without it `step` and `stepi` abort the sequence until the counter gives up and
//! adds on its fallback (the positive controls).
//!
//! Without lldb (or with its Python broken), a C compiler, ptrace permission or rseq,
//! the tests print a notice and pass.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

#[path = "support/example.rs"]
mod example;
#[path = "support/lldb.rs"]
mod lldb;

#[path = "../../restartable/tests/support/child.rs"]
mod child;

use child::OutputWithin as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const RSEQ: &str = env!("CARGO_BIN_EXE_rseq");
/// How often the programs increment their counter.
const INCREMENTS: u32 = 3;
/// How long one lldb run may take.
const LLDB_LIMIT: Duration = Duration::from_secs(120);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/inspect-fixtures")
        .join(name)
}

/// The line of `file` carrying `marker` (1-based).
fn line_of(file: &Path, marker: &str) -> usize {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("read {}: {e}", file.display()))
        .lines()
        .position(|l| l.contains(marker))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("no {marker} in {}", file.display()))
}

/// A test's directory with the module (as `rseq lldb-script` prints it) and the
/// driver, or None (with a notice) when lldb is not usable here.
struct Setup {
    dir: PathBuf,
    module: PathBuf,
    driver: PathBuf,
}

fn setup(test: &str) -> Option<Setup> {
    if !lldb::usable(test) {
        return None;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("lldb-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let script = Command::new(RSEQ)
        .arg("lldb-script")
        .output_within(child::SHORT);
    assert!(script.status.success(), "rseq lldb-script: {script:?}");
    let module = dir.join("restartable_lldb.py");
    std::fs::write(&module, &script.stdout).unwrap();
    let driver = dir.join("lldb_driver.py");
    std::fs::write(&driver, lldb::DRIVER).unwrap();
    Some(Setup {
        dir,
        module,
        driver,
    })
}

/// Compiles `source` with `cflags` into the test's directory; None (with a notice)
/// without a C compiler.
fn compile(setup: &Setup, source: &Path, out: &str, cflags: &[&str]) -> Option<PathBuf> {
    let binary = setup.dir.join(out);
    let cc = Command::new("cc")
        .args(cflags)
        .arg("-o")
        .arg(&binary)
        .arg(source)
        .try_output_within(child::SHORT);
    match cc {
        Ok(o) if o.status.success() => Some(binary),
        Ok(o) => panic!("cc failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(err) => {
            eprintln!("NOTICE: no C compiler ({err}): skipping");
            None
        }
    }
}

/// Runs lldb on `binary` with `commands`, after importing the module (when
/// `with_module`) and the driver.
fn run_lldb(
    setup: &Setup,
    binary: &Path,
    with_module: bool,
    commands: &[String],
) -> Option<String> {
    let mut all = Vec::new();
    if with_module {
        all.push(format!("command script import {}", setup.module.display()));
    }
    all.push(format!("command script import {}", setup.driver.display()));
    all.extend(commands.iter().cloned());
    let (output, timed_out) = lldb::run_batch(binary, &all, LLDB_LIMIT)?;
    assert!(
        !timed_out,
        "lldb did not finish within {LLDB_LIMIT:?}:\n{output}"
    );
    Some(output)
}

/// The last `RESULT reached` of a run: after how many commands the line was reached.
fn reached(output: &str) -> Option<usize> {
    let line = output
        .lines()
        .rfind(|l| l.starts_with("RESULT reached"))
        .unwrap_or_else(|| panic!("the driver did not run:\n{output}"));
    line.split_whitespace().nth(2).and_then(|n| n.parse().ok())
}

/// C: stops on the loop line before the sequence, issues `command` until the next
/// line in `main`, then lets the program finish.
fn c_run(test: &str, cflags: &[&str], command: &str, limit: usize) -> Option<String> {
    let setup = setup(test)?;
    let source = fixture("one_sequence.c");
    let binary = compile(&setup, &source, "one_sequence", cflags)?;
    let run = Command::new(&binary).arg("1").output_within(child::SHORT);
    if run.status.code() == Some(77) {
        eprintln!("NOTICE: libc did not register rseq: skipping");
        return None;
    }
    // The loop's own line (before INC_LINE): optimized code has no row for the
    // INC_LINE of an inlined call.
    let before = line_of(&source, "INC_LINE") - 1;
    let next = line_of(&source, "NEXT_LINE");
    let output = run_lldb(
        &setup,
        &binary,
        true,
        &[
            format!("breakpoint set -f one_sequence.c -l {before}"),
            format!("process launch -- {INCREMENTS}"),
            "breakpoint delete 1".to_string(),
            "rseq".to_string(),
            format!(
                "script lldb_driver.run(lldb.debugger, '{command}', {limit}, 'one_sequence.c', {next}, 'main')"
            ),
            "process continue".to_string(),
        ],
    )?;
    assert!(
        output.contains("1 restartable sequence"),
        "rseq lists the sequence:\n{output}"
    );
    assert!(
        reached(&output).is_some(),
        "{command} should reach the next line within {limit}:\n{output}"
    );
    assert!(
        output.contains(&format!("counter {INCREMENTS} done {INCREMENTS}")),
        "every increment adds exactly one:\n{output}"
    );
    Some(output)
}

#[test]
fn next_over_an_inlined_sequence_in_c() {
    // lldb may first stop at the inlined sequence's own line (its entry), then the
    // next `next` runs it to its commit.
    c_run("c-next", &["-g", "-O2", "-DINLINE_SEQUENCE"], "next", 3);
}

#[test]
fn step_through_the_sequence_in_c() {
    c_run("c-step", &["-g", "-O0"], "step", 20);
}

#[test]
fn stepi_gets_past_the_sequence_in_c() {
    c_run("c-stepi", &["-g", "-O2", "-DINLINE_SEQUENCE"], "stepi", 200);
}

#[test]
fn thread_step_inst_over_gets_past_the_sequence_in_c() {
    c_run("c-nexti", &["-g", "-O0"], "thread step-inst-over", 200);
}

#[test]
fn step_over_a_sequence_in_a_dlopened_library() {
    let Some(setup) = setup("dlopen") else {
        return;
    };
    let source = fixture("dlopen_sequence.c");
    let Some(library) = compile(
        &setup,
        &source,
        "libsequence.so",
        &["-g", "-O0", "-shared", "-fPIC", "-DLIBRARY"],
    ) else {
        return;
    };
    let Some(binary) = compile(&setup, &source, "dlopen_sequence", &["-g", "-O0", "-ldl"]) else {
        return;
    };
    let inc = line_of(&source, "INC_LINE");
    let next = line_of(&source, "NEXT_LINE");
    let Some(output) = run_lldb(
        &setup,
        &binary,
        true,
        &[
            // Stop before the dlopen, then go on with `next` over it.
            "breakpoint set -n main".to_string(),
            format!("process launch -- {INCREMENTS} {}", library.display()),
            "breakpoint delete 1".to_string(),
            format!(
                "script lldb_driver.run(lldb.debugger, 'next', 20, 'dlopen_sequence.c', {inc}, 'main')"
            ),
            format!(
                "script lldb_driver.run(lldb.debugger, 'step', 20, 'dlopen_sequence.c', {next}, 'main')"
            ),
            "rseq".to_string(),
            "process continue".to_string(),
        ],
    ) else {
        return;
    };
    if output.contains("rseq not registered") {
        eprintln!("NOTICE: libc did not register rseq: skipping");
        return;
    }
    assert!(
        output.contains("libsequence.so]"),
        "rseq lists the library's sequence:\n{output}"
    );
    assert!(reached(&output).is_some(), "{output}");
    assert!(
        output.contains(&format!("counter {INCREMENTS} done {INCREMENTS}")),
        "{output}"
    );
}

/// Rust: stops on the example's line before the loop, goes on with `next` to the
/// increment's line, then issues `command` (up to `limit` times) until the next line.
/// Returns after how many commands it got there and the example's fallback count.
fn rust_run(
    test: &str,
    command: &str,
    limit: usize,
    with_module: bool,
) -> Option<(Option<usize>, u32)> {
    let setup = setup(test)?;
    let binary = example::counter_loop().unwrap_or_else(|err| panic!("{err}"));
    let run = Command::new(&binary).output_within(child::SHORT);
    let stdout = String::from_utf8_lossy(&run.stdout);
    if !stdout.starts_with("rseq registered") {
        eprintln!("NOTICE: this thread has no rseq ({stdout}): skipping");
        return None;
    }
    let source =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../restartable/examples/counter_loop.rs");
    let before = line_of(&source, "// BEFORE_LINE");
    let inc = line_of(&source, "// INC_LINE");
    let next = line_of(&source, "// NEXT_LINE");
    let output = run_lldb(
        &setup,
        &binary,
        with_module,
        &[
            format!("breakpoint set -f counter_loop.rs -l {before}"),
            "process launch".to_string(),
            "breakpoint delete 1".to_string(),
            format!("script lldb_driver.run(lldb.debugger, 'next', 10, 'counter_loop.rs', {inc})"),
            format!(
                "script lldb_driver.run(lldb.debugger, '{command}', {limit}, 'counter_loop.rs', {next})"
            ),
            "process continue".to_string(),
        ],
    )?;
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
    let first = output
        .lines()
        .find(|l| l.starts_with("RESULT reached"))
        .unwrap_or_default();
    assert!(
        !first.contains("None"),
        "next did not get to the increment's line:\n{output}"
    );
    let got = reached(&output);
    eprintln!("{command}: reached {got:?} fallback {fallback}");
    Some((got, fallback))
}

#[test]
fn step_with_the_module_commits_every_increment() {
    if let Some((got, fallback)) = rust_run("rust-step", "step", 300, true) {
        assert!(got.is_some());
        assert_eq!(fallback, 0, "every increment commits as a sequence");
    }
}

#[test]
fn next_with_the_module_commits_every_increment() {
    if let Some((got, fallback)) = rust_run("rust-next", "next", 3, true) {
        // One `next`, or two where the first ends at the sequence's post-commit
        // instead of the next line (a known gap of the lldb module: see its header).
        assert!(matches!(got, Some(1 | 2)), "{got:?}");
        assert_eq!(fallback, 0, "every increment commits as a sequence");
    }
}

#[test]
fn stepi_with_the_module_commits_every_increment() {
    if let Some((got, fallback)) = rust_run("rust-stepi", "stepi", 3000, true) {
        assert!(got.is_some());
        assert_eq!(fallback, 0, "every increment commits as a sequence");
    }
}

#[test]
fn nexti_with_the_module_commits_every_increment() {
    if let Some((got, fallback)) = rust_run("rust-nexti", "nexti", 3000, true) {
        assert!(got.is_some());
        assert_eq!(fallback, 0, "every increment commits as a sequence");
    }
}

#[test]
fn stepi_without_the_module_never_commits_the_sequence() {
    // The positive control: every attempt aborts; an optimized build reaches the next
    // line only through the fallback, a dev build not within the limit.
    if let Some((got, fallback)) = rust_run("rust-stepi-plain", "stepi", 3000, false) {
        match got {
            Some(_) => assert_eq!(fallback, 1, "reached only through the fallback"),
            None => assert_eq!(fallback, 0),
        }
    }
}

#[test]
fn step_without_the_module_never_commits_the_sequence() {
    if let Some((got, fallback)) = rust_run("rust-step-plain", "step", 3000, false) {
        match got {
            Some(_) => assert_eq!(fallback, 1, "reached only through the fallback"),
            None => assert_eq!(fallback, 0),
        }
    }
}
