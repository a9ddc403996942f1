//! The lldb module (`rseq lldb-script`) against real lldb (Debian's lldb 14 in CI), in
//! batch mode: on the C fixture `tests/inspect-fixtures/one_sequence.c` (prints
//! `counter N done N` when each of its N increments added exactly one), on
//! `dlopen_sequence.c` (the sequence in a library loaded with `dlopen`) and on the
//! Rust example `crates/restartable/examples/counter_loop.rs` (prints its counter and
//! `fallback F`, the increments that did not commit as a restartable sequence).
//!
//! Each test stops before a sequence and issues one stepping command repeatedly until
//! the program stands on the next line. With the module, ONE `step`, `next`,
//! `thread step-in` or `thread step-over` that meets the sequence runs it to its
//! commit and stops at the start of the next line (in the C fixture: over a call, an
//! inlined sequence, a commit inside a line; in the optimized Rust example: the
//! counter loop's next line), `stepi` and `thread step-inst-over` get there too, and
//! every increment commits (`fallback 0`); without the module `step` and `stepi` abort
//! the sequence until the counter gives up and adds on its fallback (the positive
//! controls).
//!
//! Without lldb (or with its Python broken), a C compiler, ptrace permission or rseq,
//! the tests print a notice and pass.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

#[path = "support/example.rs"]
mod example;
#[path = "support/lldb.rs"]
mod lldb;
#[path = "support/scratch.rs"]
mod scratch;
#[path = "support/source.rs"]
mod source;

#[path = "../../restartable/tests/support/child.rs"]
mod child;

use child::OutputWithin as _;
use scratch::{scratch, Scratch};
use source::line_of;
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

/// A test's directory with the module (as `rseq lldb-script` prints it) and the
/// driver, or None (with a notice) when lldb is not usable here.
struct Setup {
    dir: Scratch,
    module: PathBuf,
    driver: PathBuf,
}

fn setup(test: &str) -> Option<Setup> {
    if !lldb::usable(test) {
        return None;
    }
    let dir = scratch(&format!("lldb-{test}"));
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
            child::skip(format!("no C compiler ({err})"));
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
    result(output, "RESULT reached")
}

/// The last `RESULT ran_at` of a run: the first command during which the module ran a
/// sequence to its commit.
fn ran_at(output: &str) -> Option<usize> {
    result(output, "RESULT ran_at")
}

fn result(output: &str, prefix: &str) -> Option<usize> {
    let line = output
        .lines()
        .rfind(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("the driver did not run:\n{output}"));
    line[prefix.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
}

/// One C run: stops at `start`, optionally goes on with `approach` (a command issued
/// once, which must reach the line given with it without running a sequence), then
/// issues `command` up to `limit` times until one of `lines` in `function`, then lets
/// the program finish.
struct CRun<'a> {
    test: &'a str,
    cflags: &'a [&'a str],
    start: usize,
    approach: Option<(&'a str, usize)>,
    command: &'a str,
    limit: usize,
    lines: Vec<usize>,
    function: &'a str,
}

fn c_run(run: CRun<'_>) -> Option<String> {
    let setup = setup(run.test)?;
    let source = fixture("one_sequence.c");
    let binary = compile(&setup, &source, "one_sequence", run.cflags)?;
    let plain = Command::new(&binary).arg("1").output_within(child::SHORT);
    if plain.status.code() == Some(77) {
        child::skip("libc did not register rseq");
        return None;
    }
    let mut commands = vec![
        format!("breakpoint set -f one_sequence.c -l {}", run.start),
        format!("process launch -- {INCREMENTS}"),
        "breakpoint delete 1".to_string(),
        "rseq".to_string(),
    ];
    if let Some((approach, line)) = run.approach {
        commands.push(format!(
            "script lldb_driver.run(lldb.debugger, '{approach}', 1, 'one_sequence.c', {line}, 'main')"
        ));
    }
    commands.push(format!(
        "script lldb_driver.run(lldb.debugger, '{}', {}, 'one_sequence.c', {:?}, '{}')",
        run.command, run.limit, run.lines, run.function
    ));
    commands.push("process continue".to_string());
    let output = run_lldb(&setup, &binary, true, &commands)?;
    let command = run.command;
    assert!(
        output.contains("1 restartable sequence"),
        "rseq lists the sequence:\n{output}"
    );
    if run.approach.is_some() {
        let first = output
            .lines()
            .find(|l| l.starts_with("RESULT "))
            .unwrap_or_default();
        assert_eq!(
            first, "RESULT reached 1",
            "the approach did not reach its line:\n{output}"
        );
        let second = output
            .lines()
            .filter(|l| l.starts_with("RESULT "))
            .nth(1)
            .unwrap_or_default();
        assert_eq!(
            second, "RESULT ran_at None",
            "the approach ran a sequence:\n{output}"
        );
    }
    assert!(
        reached(&output).is_some(),
        "{command} should reach {:?} within {}:\n{output}",
        run.lines,
        run.limit
    );
    assert!(
        ran_at(&output).is_some(),
        "{command} did not run the sequence to its commit:\n{output}"
    );
    assert!(
        output.contains(&format!("counter {INCREMENTS} done {INCREMENTS}")),
        "every increment adds exactly one:\n{output}"
    );
    Some(output)
}

/// A source-level step that meets the sequence: ONE `command` from `start` (after
/// `approach`) runs it to its commit and stops on one of `lines`, at the start of
/// its row.
fn c_one_step(
    test: &str,
    cflags: &[&str],
    start: usize,
    approach: Option<(&str, usize)>,
    command: &str,
    lines: Vec<usize>,
    function: &str,
) {
    let Some(output) = c_run(CRun {
        test,
        cflags,
        start,
        approach,
        command,
        limit: 1,
        lines,
        function,
    }) else {
        return;
    };
    assert_eq!(reached(&output), Some(1), "{output}");
    assert_eq!(ran_at(&output), Some(1), "{output}");
    let stop = output
        .lines()
        .rfind(|l| l.starts_with("DRIVER stop 1 "))
        .unwrap_or_else(|| panic!("no stop line:\n{output}"));
    assert!(
        stop.ends_with(" True"),
        "{command} stopped inside a line, not at its start:\n{output}"
    );
}

fn source_line(marker: &str) -> usize {
    line_of(&fixture("one_sequence.c"), marker)
}

#[test]
fn next_over_an_inlined_sequence_in_c() {
    // From the loop's own line (optimized code has no row for the INC_LINE of an
    // inlined call) straight to the next line.
    c_one_step(
        "c-next",
        &["-g", "-O2", "-DINLINE_SEQUENCE"],
        source_line("INC_LINE") - 1,
        None,
        "next",
        vec![source_line("NEXT_LINE")],
        "main",
    );
}

#[test]
fn next_over_an_inlined_sequence_ending_inside_a_line_in_c() {
    // At -O1 the post-commit address is inside a row of the inlined function's asm
    // line: the step goes on to the next line of main (the loop's, where gcc puts
    // NEXT_LINE's increment).
    c_one_step(
        "c-next-o1",
        &["-g", "-O1", "-DINLINE_SEQUENCE"],
        source_line("INC_LINE") - 1,
        Some(("next", source_line("INC_LINE"))),
        "next",
        vec![source_line("INC_LINE") - 1, source_line("NEXT_LINE")],
        "main",
    );
}

#[test]
fn next_over_a_call_to_the_sequence_in_c() {
    // The sequence is in the callee: the step ends in main, not at the post-commit.
    c_one_step(
        "c-next-call",
        &["-g", "-O0"],
        source_line("INC_LINE"),
        None,
        "next",
        vec![source_line("NEXT_LINE")],
        "main",
    );
}

#[test]
fn thread_step_over_a_call_to_the_sequence_in_c() {
    c_one_step(
        "c-step-over-call",
        &["-g", "-O2"],
        source_line("INC_LINE"),
        None,
        "thread step-over",
        vec![source_line("NEXT_LINE")],
        "main",
    );
}

#[test]
fn step_through_the_sequence_in_c() {
    c_one_step(
        "c-step",
        &["-g", "-O0"],
        source_line("COUNTER_INC_SEQUENCE("),
        None,
        "step",
        vec![source_line("return 0;")],
        "percpu_inc",
    );
}

#[test]
fn thread_step_in_through_the_sequence_in_c() {
    c_one_step(
        "c-step-in",
        &["-g", "-O0"],
        source_line("COUNTER_INC_SEQUENCE("),
        None,
        "thread step-in",
        vec![source_line("return 0;")],
        "percpu_inc",
    );
}

#[test]
fn stepi_gets_past_the_sequence_in_c() {
    c_run(CRun {
        test: "c-stepi",
        cflags: &["-g", "-O2", "-DINLINE_SEQUENCE"],
        start: source_line("INC_LINE") - 1,
        approach: None,
        command: "stepi",
        limit: 200,
        lines: vec![source_line("NEXT_LINE")],
        function: "main",
    });
}

#[test]
fn thread_step_inst_over_gets_past_the_sequence_in_c() {
    c_run(CRun {
        test: "c-nexti",
        cflags: &["-g", "-O0"],
        start: source_line("INC_LINE") - 1,
        approach: None,
        command: "thread step-inst-over",
        limit: 200,
        lines: vec![source_line("NEXT_LINE")],
        function: "main",
    });
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
        child::skip("libc did not register rseq");
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

/// What a Rust run saw.
struct RustRun {
    /// After how many commands the next line was reached.
    reached: Option<usize>,
    /// The first command during which the module ran the sequence to its commit.
    ran_at: Option<usize>,
    /// Whether the stop after that command was at the start of a line-table row.
    ran_stop_at_row_start: bool,
    /// The increments that did not commit as a restartable sequence.
    fallback: u32,
}

/// Rust: stops on the example's line before the loop, goes on with `next` to the
/// increment's line, then issues `command` (up to `limit` times) until the next line.
fn rust_run(test: &str, command: &str, limit: usize, with_module: bool) -> Option<RustRun> {
    let setup = setup(test)?;
    let binary = example::counter_loop().unwrap_or_else(|err| panic!("{err}"));
    let run = Command::new(&binary).output_within(child::SHORT);
    let stdout = String::from_utf8_lossy(&run.stdout);
    if !stdout.starts_with("rseq registered") {
        child::skip(format!("this thread has no rseq ({stdout})"));
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
    let results: Vec<&str> = output
        .lines()
        .filter(|l| l.starts_with("RESULT "))
        .collect();
    assert_eq!(results.len(), 4, "{output}");
    assert!(
        !results[0].contains("None"),
        "next did not get to the increment's line:\n{output}"
    );
    assert_eq!(
        results[1], "RESULT ran_at None",
        "next to the increment's line ran a sequence:\n{output}"
    );
    let reached = reached(&output);
    let ran_at = ran_at(&output);
    // The stop lines of the second driver run (after the first run's results).
    let second = &output[output.find(results[1]).unwrap()..];
    let ran_stop_at_row_start = ran_at.is_some_and(|n| {
        second
            .lines()
            .find(|l| l.starts_with(&format!("DRIVER stop {n} ")))
            .is_some_and(|l| l.ends_with(" True"))
    });
    eprintln!("{command}: reached {reached:?} ran at {ran_at:?} fallback {fallback}");
    Some(RustRun {
        reached,
        ran_at,
        ran_stop_at_row_start,
        fallback,
    })
}

/// A source-level step with the module: the command that runs the sequence to its
/// commit stops at the start of a line; in an optimized build (the sequence inlined
/// into main) that is the next line, reached by that ONE command.
fn rust_one_step(test: &str, command: &str, limit: usize) {
    let Some(run) = rust_run(test, command, limit, true) else {
        return;
    };
    assert!(
        run.reached.is_some(),
        "{command} did not reach the next line"
    );
    assert!(run.ran_at.is_some(), "{command} did not run the sequence");
    assert!(
        run.ran_stop_at_row_start,
        "{command} stopped inside a line after the commit"
    );
    if !cfg!(debug_assertions) {
        assert_eq!(
            run.reached, run.ran_at,
            "ONE {command} runs the sequence and reaches the next line"
        );
    }
    assert_eq!(run.fallback, 0, "every increment commits as a sequence");
}

#[test]
fn step_with_the_module_commits_every_increment() {
    rust_one_step("rust-step", "step", 300);
}

#[test]
fn thread_step_in_with_the_module_commits_every_increment() {
    rust_one_step("rust-step-in", "thread step-in", 300);
}

#[test]
fn next_with_the_module_commits_every_increment() {
    rust_one_step("rust-next", "next", 1);
}

#[test]
fn thread_step_over_with_the_module_commits_every_increment() {
    rust_one_step("rust-step-over", "thread step-over", 1);
}

#[test]
fn stepi_with_the_module_commits_every_increment() {
    if let Some(run) = rust_run("rust-stepi", "stepi", 3000, true) {
        assert!(run.reached.is_some());
        assert_eq!(run.fallback, 0, "every increment commits as a sequence");
    }
}

#[test]
fn nexti_with_the_module_commits_every_increment() {
    if let Some(run) = rust_run("rust-nexti", "nexti", 3000, true) {
        assert!(run.reached.is_some());
        assert_eq!(run.fallback, 0, "every increment commits as a sequence");
    }
}

#[test]
fn stepi_without_the_module_never_commits_the_sequence() {
    // The positive control: every attempt aborts; an optimized build reaches the next
    // line only through the fallback, a dev build not within the limit.
    if let Some(run) = rust_run("rust-stepi-plain", "stepi", 3000, false) {
        match run.reached {
            Some(_) => assert_eq!(run.fallback, 1, "reached only through the fallback"),
            None => assert_eq!(run.fallback, 0),
        }
    }
}

#[test]
fn step_without_the_module_never_commits_the_sequence() {
    if let Some(run) = rust_run("rust-step-plain", "step", 3000, false) {
        match run.reached {
            Some(_) => assert_eq!(run.fallback, 1, "reached only through the fallback"),
            None => assert_eq!(run.fallback, 0),
        }
    }
}
