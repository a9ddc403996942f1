//! Running gdb in batch mode for the debugger tests (`tests/gdb.rs` on a C program,
//! `tests/gdb_rust.rs` on a Rust example), included with `#[path]`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::child::OutputWithin as _;

/// Runs gdb in batch mode on `binary` with the Python `driver` file, sourcing
/// `extension` first when given, and kills it (and what it started) after `limit`. Returns gdb's stdout
/// then stderr, and whether it was killed; `None` (with a notice) when gdb cannot
/// trace processes here.
pub fn run_batch(
    binary: &Path,
    driver: &Path,
    extension: Option<&Path>,
    limit: Duration,
) -> Option<(String, bool)> {
    let mut command = Command::new("gdb");
    command.args(["-nx", "-batch", "-iex", "set debuginfod enabled off"]);
    command.args(["-ex", "set pagination off"]);
    if let Some(extension) = extension {
        command.arg("-x").arg(extension);
    }
    command.arg("-x").arg(driver).arg(binary);
    let (out, timed_out) = command.output_or_kill(limit).expect("start gdb");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if output.contains("ptrace: Operation not permitted")
        || output.contains("Couldn't get registers")
    {
        crate::child::skip(format!("gdb may not trace processes here\n{output}"));
        return None;
    }
    Some((output, timed_out))
}
