//! The gdb extension (`rseq gdb-script`) against real gdb, in batch mode, on the C
//! fixture `tests/inspect-fixtures/one_sequence.c` (one hand-written restartable
//! sequence that increments a per-CPU counter, retried until it commits).
//!
//! Without gdb, a C compiler, ptrace permission or an rseq registration by libc, the
//! tests print a notice and pass.

#[path = "support/gdb.rs"]
mod gdb;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const RSEQ: &str = env!("CARGO_BIN_EXE_rseq");
/// How many `stepi` the stepping tests allow to get past the sequence.
const STEPS: usize = 2000;
/// How often the program increments its counter.
const INCREMENTS: u32 = 3;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inspect-fixtures/one_sequence.c")
}

/// The line of the fixture carrying `marker` (1-based).
fn line_of(marker: &str) -> usize {
    let source = std::fs::read_to_string(fixture()).expect("read the fixture");
    source
        .lines()
        .position(|l| l.contains(marker))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("no {marker} in the fixture"))
}

/// Everything a test needs, or None (with a notice) when the machine lacks a piece.
struct Setup {
    dir: PathBuf,
    binary: PathBuf,
    extension: PathBuf,
}

fn setup(test: &str, cflags: &[&str]) -> Option<Setup> {
    if Command::new("gdb").arg("--version").output().is_err() {
        eprintln!("NOTICE: gdb is not installed: skipping the gdb test {test}");
        return None;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gdb-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let binary = dir.join("one_sequence");
    let cc = Command::new("cc")
        .args(cflags)
        .arg("-o")
        .arg(&binary)
        .arg(fixture())
        .output();
    match cc {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("cc failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(err) => {
            eprintln!("NOTICE: no C compiler ({err}): skipping the gdb test {test}");
            return None;
        }
    }
    let run = Command::new(&binary).arg("1").output().unwrap();
    if run.status.code() == Some(77) {
        eprintln!("NOTICE: libc did not register rseq: skipping the gdb test {test}");
        return None;
    }
    assert!(run.status.success(), "the fixture runs");
    // The extension as users get it: printed by `rseq gdb-script`.
    let script = Command::new(RSEQ).arg("gdb-script").output().unwrap();
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

#[test]
fn step_through_the_sequence_with_the_extension() {
    // `step` enters percpu_inc and steps over the asm statement holding the sequence,
    // which gdb single-steps internally (the extension's guard breakpoints).
    let Some(setup) = setup("step-ext", &["-g", "-O0"]) else {
        return;
    };
    let Some(output) = run_gdb(
        &setup,
        &command_driver("step", 20),
        true,
        Duration::from_secs(60),
    ) else {
        return;
    };
    assert!(
        output.contains("1 restartable sequence"),
        "info rseq:\n{output}"
    );
    assert!(output.contains("percpu_inc"), "info rseq:\n{output}");
    assert!(
        output.contains("RESULT reached the next line"),
        "step should get through percpu_inc:\n{output}"
    );
    assert!(output.contains(&expected_counter()), "{output}");
}

#[test]
fn next_over_an_inlined_sequence_with_the_extension() {
    // At -O2 the sequence is inlined into main's loop, and the breakpoint on the loop
    // line sits on the retry path that the abort handler jumps back to.
    let Some(setup) = setup("next-inlined-ext", &["-g", "-O2", "-DINLINE_SEQUENCE"]) else {
        return;
    };
    let Some(output) = run_gdb(
        &setup,
        &command_driver("next", 10),
        true,
        Duration::from_secs(60),
    ) else {
        return;
    };
    assert!(
        output.contains("RESULT reached the next line after 1 next"),
        "next should step over the inlined sequence:\n{output}"
    );
    assert!(output.contains(&expected_counter()), "{output}");
}
