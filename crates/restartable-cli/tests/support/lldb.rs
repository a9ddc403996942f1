//! Running lldb in batch mode for the debugger tests (`tests/lldb.rs`), included with
//! `#[path]`.

use crate::child::OutputWithin as _;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Whether lldb and its embedded Python work here; prints a notice when not. (Debian's
/// lldb 14 needs the path fix-up that `.ci/run` makes: see the README.)
pub fn usable(test: &str) -> bool {
    if Command::new("lldb")
        .arg("--version")
        .try_output_within(crate::child::SHORT)
        .is_err()
    {
        eprintln!("NOTICE: lldb is not installed: skipping the lldb test {test}");
        return false;
    }
    let commands = ["script print(6 * 7)".to_string()];
    let (text, timed_out) = run(None, &commands, Duration::from_secs(60));
    assert!(!timed_out, "lldb did not answer within 60 s:\n{text}");
    if !text.lines().any(|l| l.trim() == "42") {
        eprintln!(
            "NOTICE: lldb's Python does not work (see .ci/run for Debian's lldb 14 fix-up): \
             skipping the lldb test {test}\n{text}"
        );
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
        eprintln!("NOTICE: lldb may not trace processes here: skipping\n{output}");
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
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lldb");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let mut timed_out = false;
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            timed_out = true;
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The program's output comes through a terminal: \r\n line ends.
    let output = format!(
        "{}{}",
        out_reader.join().unwrap(),
        err_reader.join().unwrap()
    )
    .replace("\r\n", "\n");
    (output, timed_out)
}

/// The Python driver the tests import: `run(debugger, command, limit, file, line)`
/// issues `command` until the selected frame is on `file`:`line` and prints
/// `RESULT reached N` or `RESULT reached None`.
pub const DRIVER: &str = r#"
import lldb


def _where(debugger):
    frame = debugger.GetSelectedTarget().GetProcess().GetSelectedThread().GetFrameAtIndex(0)
    entry = frame.GetLineEntry()
    return entry.GetFileSpec().GetFilename(), entry.GetLine(), frame.GetFunctionName()


def run(debugger, command, limit, filename, line, function=None):
    interp = debugger.GetCommandInterpreter()
    for i in range(limit):
        result = lldb.SBCommandReturnObject()
        interp.HandleCommand(command, result)
        if not result.Succeeded():
            print("DRIVER %s failed: %s" % (command, result.GetError()))
            break
        where = _where(debugger)
        if where[0] == filename and where[1] == line and (
            function is None or (where[2] or "").endswith(function)
        ):
            print("RESULT reached %d" % (i + 1))
            return
    print("RESULT reached None (at %s)" % (_where(debugger),))
"#;
