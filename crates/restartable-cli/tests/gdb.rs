//! The gdb extension (`rseq gdb-script`) against real gdb, on the C fixture
//! `tests/inspect-fixtures/one_sequence.c` (one hand-written restartable sequence that
//! increments a per-CPU counter, retried until it commits) and on
//! `dlopen_sequence.c` (the same sequence in a library loaded with `dlopen`): gdb's
//! command line in batch mode, and its machine interface (`--interpreter=mi`) as IDE
//! front ends drive it. The program prints `counter N done N` when each of its N
//! increments added exactly one.
//!
//! Without gdb, a C compiler, ptrace permission or an rseq registration by libc, the
//! tests print a notice and pass.

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

const RSEQ: &str = env!("CARGO_BIN_EXE_rseq");
/// How many `stepi` the stepping tests allow to get past the sequence.
const STEPS: usize = 2000;
/// How often the program increments its counter.
const INCREMENTS: u32 = 3;
/// The fixture with its sequence inlined into `main`'s loop.
const INLINED: &[&str] = &["-g", "-O2", "-DINLINE_SEQUENCE"];

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inspect-fixtures/one_sequence.c")
}

/// The line of the fixture carrying `marker` (1-based).
fn line_of(marker: &str) -> usize {
    source::line_of(&fixture(), marker)
}

/// Everything a test needs, or None (with a notice) when the machine lacks a piece.
struct Setup {
    dir: Scratch,
    binary: PathBuf,
    extension: PathBuf,
}

fn setup(test: &str, cflags: &[&str]) -> Option<Setup> {
    if Command::new("gdb")
        .arg("--version")
        .try_output_within(child::SHORT)
        .is_err()
    {
        child::skip(format!("gdb is not installed (gdb test {test})"));
        return None;
    }
    let dir = scratch(&format!("gdb-{test}"));
    let binary = dir.join("one_sequence");
    let cc = Command::new("cc")
        .args(cflags)
        .arg("-o")
        .arg(&binary)
        .arg(fixture())
        .try_output_within(child::SHORT);
    match cc {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("cc failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(err) => {
            child::skip(format!("no C compiler ({err}) (gdb test {test})"));
            return None;
        }
    }
    let run = Command::new(&binary).arg("1").output_within(child::SHORT);
    if run.status.code() == Some(77) {
        child::skip(format!("libc did not register rseq (gdb test {test})"));
        return None;
    }
    assert!(run.status.success(), "the fixture runs");
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
/// trace the program here. Kills gdb after `limit`.
fn run_gdb(setup: &Setup, driver: &str, with_extension: bool, limit: Duration) -> Option<String> {
    let driver_path = setup.dir.join(if with_extension {
        "driver-ext.py"
    } else {
        "driver-plain.py"
    });
    std::fs::write(&driver_path, driver).unwrap();
    let (output, timed_out) = gdb::run_batch(
        &setup.binary,
        &driver_path,
        with_extension.then_some(setup.extension.as_path()),
        limit,
    )?;
    assert!(!timed_out, "gdb did not finish within {limit:?}:\n{output}");
    Some(output)
}

/// A driver that stops at the loop body and single-steps (`stepi`) up to STEPS times
/// until the next source line; then lets the program finish.
fn stepi_driver() -> String {
    format!(
        r#"
import gdb
gdb.execute("break one_sequence.c:{inc}")
gdb.execute("run {increments}")
gdb.execute("delete")
reached = None
for i in range({steps}):
    gdb.execute("stepi", to_string=True)
    if gdb.selected_frame().find_sal().line == {next}:
        reached = i + 1
        break
if reached is not None:
    print("RESULT reached the next line after %d stepi" % reached)
    gdb.execute("continue")
else:
    print("RESULT stuck after {steps} stepi at 0x%x" % int(gdb.selected_frame().pc()))
    gdb.execute("kill")
"#,
        inc = line_of("INC_LINE"),
        next = line_of("NEXT_LINE"),
        steps = STEPS,
        increments = INCREMENTS,
    )
}

fn expected_counter() -> String {
    format!("counter {INCREMENTS} done {INCREMENTS}")
}

#[test]
fn stepi_without_the_extension_never_gets_past_the_sequence() {
    let Some(setup) = setup("stepi-plain", &["-g", "-O0"]) else {
        return;
    };
    let Some(output) = run_gdb(&setup, &stepi_driver(), false, Duration::from_secs(120)) else {
        return;
    };
    assert!(
        output.contains(&format!("RESULT stuck after {STEPS} stepi")),
        "without the extension, single-stepping should keep aborting the sequence:\n{output}"
    );
}

#[test]
fn stepi_with_the_extension_reaches_the_next_line() {
    let Some(setup) = setup("stepi-ext", &["-g", "-O0"]) else {
        return;
    };
    let Some(output) = run_gdb(&setup, &stepi_driver(), true, Duration::from_secs(60)) else {
        return;
    };
    assert!(
        output.contains("RESULT reached the next line"),
        "with the extension, stepi should get past the sequence:\n{output}"
    );
    assert!(
        output.contains(&expected_counter()),
        "the counter:\n{output}"
    );
}

/// A driver that stops at the loop body and issues `command` until the next source
/// line in `main` (at most `limit` commands), then lets the program finish.
fn command_driver(command: &str, limit: usize) -> String {
    format!(
        r#"
import gdb
gdb.execute("break one_sequence.c:{inc}")
gdb.execute("run {increments}")
gdb.execute("info rseq")
reached = None
for i in range({limit}):
    gdb.execute("{command}")
    frame = gdb.selected_frame()
    if frame.find_sal().line == {next} and frame.name() == "main":
        reached = i + 1
        break
if reached is not None:
    print("RESULT reached the next line after %d {command}" % reached)
else:
    print("RESULT not there after {limit} {command}")
gdb.execute("delete")
gdb.execute("continue")
"#,
        inc = line_of("INC_LINE"),
        next = line_of("NEXT_LINE"),
        increments = INCREMENTS,
    )
}

/// Runs `command_driver(command, limit)` under gdb with the extension on the fixture
/// built with `cflags`, and checks that the next line was reached (after exactly
/// `exactly` commands if given) and that every increment added exactly one.
/// Returns gdb's output for further checks.
fn assert_cli_reaches(
    test: &str,
    cflags: &[&str],
    command: &str,
    limit: usize,
    exactly: Option<usize>,
) -> Option<String> {
    let setup = setup(test, cflags)?;
    let output = run_gdb(
        &setup,
        &command_driver(command, limit),
        true,
        Duration::from_secs(60),
    )?;
    let expected = match exactly {
        Some(n) => format!("RESULT reached the next line after {n} {command}"),
        None => "RESULT reached the next line".to_string(),
    };
    // With a count the line must match exactly ("after 1 next", not "after 10 next").
    let reached = |l: &str| match exactly {
        Some(_) => l.trim_end() == expected,
        None => l.starts_with(&expected),
    };
    assert!(
        output.lines().any(reached),
        "{command} should get past the sequence ({expected}):\n{output}"
    );
    assert!(
        output.contains(&expected_counter()),
        "every increment adds exactly one:\n{output}"
    );
    Some(output)
}

#[test]
fn step_through_the_sequence_with_the_extension() {
    // `step` enters percpu_inc and steps over the asm statement holding the sequence,
    // which gdb single-steps internally (the extension's guard breakpoints).
    let Some(output) = assert_cli_reaches("step-ext", &["-g", "-O0"], "step", 20, None) else {
        return;
    };
    assert!(
        output.contains("1 restartable sequence"),
        "info rseq:\n{output}"
    );
    assert!(output.contains("percpu_inc"), "info rseq:\n{output}");
}

#[test]
fn next_over_an_inlined_sequence_with_the_extension() {
    // At -O2 the sequence is inlined into main's loop, and the breakpoint on the loop
    // line sits on the retry path that the abort handler jumps back to.
    assert_cli_reaches("next-inlined-ext", INLINED, "next", 10, Some(1));
}

/// MI: stops on the loop body, then sends `command` (up to `limit` times) until
/// `-stack-info-frame` shows the next line in `main`; lets the program finish.
/// Returns after how many commands the line was reached, and the transcript.
fn mi_steps(setup: &Setup, command: &str, limit: usize) -> Option<(Option<usize>, String)> {
    let mut mi = gdb_mi::Mi::start(
        &setup.binary,
        &INCREMENTS.to_string(),
        Some(&setup.extension),
        Duration::from_secs(60),
    )?;
    mi.run_to(&format!("one_sequence.c:{}", line_of("INC_LINE")))?;
    let next = line_of("NEXT_LINE");
    let mut reached = None;
    for i in 0..limit {
        mi.run(command);
        let frame = mi.frame();
        if frame.func == "main" && frame.line == Some(next) {
            reached = Some(i + 1);
            break;
        }
    }
    Some((reached, mi.finish()))
}

fn assert_mi_reaches(test: &str, cflags: &[&str], command: &str, limit: usize) {
    let Some(setup) = setup(test, cflags) else {
        return;
    };
    let Some((reached, transcript)) = mi_steps(&setup, command, limit) else {
        return;
    };
    assert!(
        reached.is_some(),
        "{command} should reach the next line within {limit}:\n{transcript}"
    );
    assert!(
        transcript.contains(&expected_counter()),
        "every increment adds exactly one:\n{transcript}"
    );
}

#[test]
fn mi_exec_next_over_an_inlined_sequence() {
    assert_mi_reaches("mi-next", INLINED, "-exec-next", 1);
}

#[test]
fn mi_exec_step_through_the_sequence() {
    assert_mi_reaches("mi-step", &["-g", "-O0"], "-exec-step", 20);
}

#[test]
fn mi_exec_step_instruction_gets_past_the_sequence() {
    assert_mi_reaches("mi-stepi", INLINED, "-exec-step-instruction", 200);
}

#[test]
fn mi_exec_next_instruction_gets_past_the_sequence() {
    assert_mi_reaches("mi-nexti", &["-g", "-O0"], "-exec-next-instruction", 200);
}

#[test]
fn until_over_an_inlined_sequence_with_the_extension() {
    assert_cli_reaches("until-ext", INLINED, "until", 10, Some(1));
}

#[test]
fn nexti_with_the_extension_reaches_the_next_line() {
    assert_cli_reaches("nexti-ext", INLINED, "nexti", 200, None);
}

/// A driver with a breakpoint on the sequence's first instruction (inside it): at
/// each of the INCREMENTS stops it prints where the thread stands, then continues.
fn breakpoint_inside_driver() -> String {
    format!(
        r#"
import gdb
gdb.execute("break *&fixture_start")
gdb.execute("run {increments}")
post = int(gdb.parse_and_eval("(long) &fixture_post_commit"))
start = int(gdb.parse_and_eval("(long) &fixture_start"))
for i in range({increments}):
    pc = int(gdb.selected_frame().pc())
    print("RESULT stop %d at %s" % (i, "post-commit" if pc == post else "start" if pc == start else hex(pc)))
    if i + 1 < {increments}:
        gdb.execute("continue")
gdb.execute("delete")
gdb.execute("continue")
"#,
        increments = INCREMENTS,
    )
}

#[test]
fn a_breakpoint_inside_the_sequence_stops_at_its_commit() {
    let Some(setup) = setup("break-inside", &["-g", "-O0"]) else {
        return;
    };
    let Some(output) = run_gdb(
        &setup,
        &breakpoint_inside_driver(),
        true,
        Duration::from_secs(60),
    ) else {
        return;
    };
    for i in 0..INCREMENTS {
        assert!(
            output.contains(&format!("RESULT stop {i} at post-commit")),
            "each stop is reported at the post-commit address:\n{output}"
        );
    }
    assert!(output.contains(&expected_counter()), "{output}");
}

#[test]
fn a_breakpoint_inside_the_sequence_without_the_extension_stops_every_retry() {
    // The positive control: each `continue` aborts the attempt and the retry stops at
    // the same breakpoint again, so the INCREMENTS stops are all the first increment.
    let Some(setup) = setup("break-inside-plain", &["-g", "-O0"]) else {
        return;
    };
    let driver = breakpoint_inside_driver().replace(
        "gdb.execute(\"delete\")\ngdb.execute(\"continue\")",
        "gdb.execute(\"kill\")",
    );
    let Some(output) = run_gdb(&setup, &driver, false, Duration::from_secs(60)) else {
        return;
    };
    for i in 0..INCREMENTS {
        assert!(
            output.contains(&format!("RESULT stop {i} at start")),
            "without the extension every retry stops inside:\n{output}"
        );
    }
}

#[test]
fn finish_out_of_the_sequence_function_commits_it() {
    // `finish` runs freely: the guard on the sequence's entry must let it through
    // (the first attempt commits: percpu_inc returns 0, not 1 for an abort).
    let Some(setup) = setup("finish-ext", &["-g", "-O0"]) else {
        return;
    };
    let driver = format!(
        r#"
import gdb
gdb.execute("break percpu_inc")
gdb.execute("run {increments}")
gdb.execute("delete")
gdb.execute("finish")
print("RESULT returned %d in %s" % (int(gdb.parse_and_eval("$")), gdb.selected_frame().name()))
gdb.execute("continue")
"#,
        increments = INCREMENTS
    );
    let Some(output) = run_gdb(&setup, &driver, true, Duration::from_secs(60)) else {
        return;
    };
    assert!(output.contains("RESULT returned 0 in main"), "{output}");
    assert!(output.contains(&expected_counter()), "{output}");
}

#[test]
fn user_hooks_on_stepping_commands_are_kept() {
    let Some(setup) = setup("hooks", INLINED) else {
        return;
    };
    // The hooks are defined first, then the extension is loaded.
    let driver = format!(
        "import gdb\n\
         gdb.execute('define hook-next\\necho USER-PRE-HOOK\\\\n\\nend')\n\
         gdb.execute('define hookpost-next\\necho USER-POST-HOOK\\\\n\\nend')\n\
         gdb.execute('source {}')\n{}",
        setup.extension.display(),
        command_driver("next", 10)
            .trim_start()
            .trim_start_matches("import gdb\n")
    );
    let Some(output) = run_gdb(&setup, &driver, false, Duration::from_secs(60)) else {
        return;
    };
    assert!(
        output.contains("USER-PRE-HOOK") && output.contains("USER-POST-HOOK"),
        "the user's hooks still run:\n{output}"
    );
    assert!(
        output.contains("RESULT reached the next line after 1 next"),
        "{output}"
    );
    assert!(output.contains(&expected_counter()), "{output}");
}

#[test]
fn step_over_a_sequence_in_a_dlopened_library() {
    let Some(mut setup) = setup("dlopen", &["-g", "-O0"]) else {
        return;
    };
    let source =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inspect-fixtures/dlopen_sequence.c");
    let library = setup.dir.join("libsequence.so");
    let program = setup.dir.join("dlopen_sequence");
    for (out, extra) in [
        (&library, &["-shared", "-fPIC", "-DLIBRARY"][..]),
        (&program, &["-ldl"][..]),
    ] {
        let cc = Command::new("cc")
            .args(["-g", "-O0", "-o"])
            .arg(out)
            .arg(&source)
            .args(extra)
            .output_within(child::SHORT);
        assert!(
            cc.status.success(),
            "cc: {}",
            String::from_utf8_lossy(&cc.stderr)
        );
    }
    setup.binary = program;
    let marker = |m: &str| {
        std::fs::read_to_string(&source)
            .unwrap()
            .lines()
            .position(|l| l.contains(m))
            .unwrap()
            + 1
    };
    let driver = format!(
        r#"
import gdb
# Stop before the dlopen, then go on with `next` over it to the loop body.
gdb.execute("break main")
gdb.execute("run {increments} {library}")
gdb.execute("delete")
for i in range(20):
    if gdb.selected_frame().find_sal().line == {inc}:
        break
    gdb.execute("next")
reached = None
for i in range(20):
    gdb.execute("step")
    frame = gdb.selected_frame()
    if frame.name() == "main" and frame.find_sal().line == {next}:
        reached = i + 1
        break
print("RESULT reached %s" % reached)
gdb.execute("info rseq")
gdb.execute("continue")
"#,
        inc = marker("INC_LINE"),
        next = marker("NEXT_LINE"),
        increments = INCREMENTS,
        library = library.display(),
    );
    let Some(output) = run_gdb(&setup, &driver, true, Duration::from_secs(60)) else {
        return;
    };
    assert!(
        output.contains("libsequence.so]"),
        "info rseq lists the library's sequence:\n{output}"
    );
    assert!(
        output.contains("RESULT reached") && !output.contains("RESULT reached None"),
        "step gets through the library's sequence:\n{output}"
    );
    assert!(output.contains(&expected_counter()), "{output}");
}

/// A driver that counts the sequence's aborts (a breakpoint on the abort handler,
/// outside the sequence, that never stops: its hit count) while `command` steps from
/// the loop body to the next line.
fn abort_counting_driver(command: &str, limit: usize) -> String {
    format!(
        r#"
import gdb
gdb.execute("break one_sequence.c:{inc}")
gdb.execute("run {increments}")
gdb.execute("delete")
aborts = gdb.Breakpoint("*&fixture_abort")
aborts.ignore_count = 1000000
reached = None
for i in range({limit}):
    gdb.execute("{command}", to_string=True)
    frame = gdb.selected_frame()
    if frame.name() == "main" and frame.find_sal().line == {next}:
        reached = i + 1
        break
print("RESULT reached %s aborts %d" % (reached, aborts.hit_count))
gdb.execute("delete")
gdb.execute("continue")
"#,
        inc = line_of("INC_LINE"),
        next = line_of("NEXT_LINE"),
        increments = INCREMENTS,
    )
}

#[test]
fn step_and_next_run_the_sequence_without_an_abort() {
    // A step that meets the guard on the sequence's entry runs the sequence from
    // outside: it commits at its first attempt. A `stepi` that stops inside costs
    // that attempt (one abort); the retry commits.
    let Some(setup) = setup("aborts", &["-g", "-O0"]) else {
        return;
    };
    for (command, limit, expected) in [("step", 20, 0), ("next", 3, 0), ("stepi", 300, 1)] {
        let Some(output) = run_gdb(
            &setup,
            &abort_counting_driver(command, limit),
            true,
            Duration::from_secs(60),
        ) else {
            return;
        };
        let result = output
            .lines()
            .find(|l| l.starts_with("RESULT reached"))
            .unwrap_or_else(|| panic!("no result:\n{output}"));
        assert!(
            !result.contains("reached None"),
            "{command} should reach the next line:\n{output}"
        );
        assert!(
            result.ends_with(&format!("aborts {expected}")),
            "{command}: {result}\n{output}"
        );
        assert!(output.contains(&expected_counter()), "{output}");
    }
}
