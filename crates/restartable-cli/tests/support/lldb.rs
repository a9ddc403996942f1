//! Running lldb in batch mode for the debugger tests (`tests/lldb.rs`), included with
//! `#[path]`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::child::OutputWithin as _;

/// Whether lldb and its embedded Python work here; prints a notice when not. (Debian's
/// lldb 14 needs the path fix-up that `.ci/run` makes: see the README.)
pub fn usable(test: &str) -> bool {
    if Command::new("lldb")
        .arg("--version")
        .try_output_within(crate::child::SHORT)
        .is_err()
    {
        crate::child::skip(format!("lldb is not installed (lldb test {test})"));
        return false;
    }
    let commands = ["script print(6 * 7)".to_string()];
    let (text, timed_out) = run(None, &commands, Duration::from_secs(60));
    assert!(!timed_out, "lldb did not answer within 60 s:\n{text}");
    if !text.lines().any(|l| l.trim() == "42") {
        crate::child::skip(format!(
            "lldb's Python does not work (see .ci/run for Debian's lldb 14 fix-up): \
             lldb test {test}\n{text}"
        ));
        return false;
    }
    true
}

/// Runs lldb in batch mode on `binary`, executing `commands` (`-o` each), and kills it
/// after `limit`. Returns lldb's stdout then stderr, and whether it was killed; None
/// (with a notice) when lldb cannot launch processes here.
pub fn run_batch(binary: &Path, commands: &[String], limit: Duration) -> Option<(String, bool)> {
    let (output, timed_out) = run(Some(binary), commands, limit);
    if output.contains("Operation not permitted") && output.contains("launch") {
        crate::child::skip(format!("lldb may not trace processes here\n{output}"));
        return None;
    }
    Some((output, timed_out))
}

/// Runs `lldb --no-lldbinit -b` with `commands`, on `binary` if given; kills it after
/// `limit`. Returns its stdout then stderr, and whether it was killed.
fn run(binary: Option<&Path>, commands: &[String], limit: Duration) -> (String, bool) {
    let mut command = Command::new("lldb");
    command.args(["--no-lldbinit", "-b"]);
    for c in commands {
        command.arg("-o").arg(c);
    }
    if let Some(binary) = binary {
        command.arg(binary);
    }
    let (out, timed_out) = command.output_or_kill(limit).expect("start lldb");
    // The program's output comes through a terminal: \r\n line ends.
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .replace("\r\n", "\n");
    (output, timed_out)
}

/// The Python driver the tests import: `run(debugger, command, limit, file, line,
/// function=None)` issues `command` until the selected frame is on `file`:`line` (or
/// one of the lines, given a list) and prints `RESULT reached N` or `RESULT reached
/// None`, then `RESULT ran_at M`: the first command during which the module ran a
/// sequence to its commit (None without one, or without the module). After each
/// command it prints `DRIVER stop N file:line function row_start`, where row_start
/// says whether the pc is the first address of a line-table row.
pub const DRIVER: &str = r#"
import sys

import lldb


def _where(debugger):
    target = debugger.GetSelectedTarget()
    frame = target.GetProcess().GetSelectedThread().GetFrameAtIndex(0)
    entry = frame.GetLineEntry()
    row_start = entry.IsValid() and entry.GetStartAddress().GetLoadAddress(target) == frame.GetPC()
    return entry.GetFileSpec().GetFilename(), entry.GetLine(), frame.GetFunctionName(), row_start


def _commits():
    module = sys.modules.get("restartable_lldb")
    return module._state.commits if module is not None else 0


def run(debugger, command, limit, filename, line, function=None):
    lines = line if isinstance(line, list) else [line]
    interp = debugger.GetCommandInterpreter()
    ran_at = None
    for i in range(limit):
        before = _commits()
        result = lldb.SBCommandReturnObject()
        interp.HandleCommand(command, result)
        if not result.Succeeded():
            print("DRIVER %s failed: %s" % (command, result.GetError()))
            break
        if ran_at is None and _commits() > before:
            ran_at = i + 1
        where = _where(debugger)
        print("DRIVER stop %d %s:%s %s %s" % (i + 1, where[0], where[1], where[2], where[3]))
        if where[0] == filename and where[1] in lines and (
            function is None or (where[2] or "").endswith(function)
        ):
            print("RESULT reached %d" % (i + 1))
            print("RESULT ran_at %s" % ran_at)
            return
    print("RESULT reached None (at %s)" % (_where(debugger),))
    print("RESULT ran_at %s" % ran_at)
"#;
