//! Running gdb in batch mode for the debugger tests (`tests/gdb.rs` on a C program,
//! `tests/gdb_rust.rs` on a Rust example), included with `#[path]`.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs gdb in batch mode on `binary` with the Python `driver` file, sourcing
/// `extension` first when given, and kills it after `limit`. Returns gdb's stdout
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
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gdb");
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
    let output = format!(
        "{}{}",
        out_reader.join().unwrap(),
        err_reader.join().unwrap()
    );
    if output.contains("ptrace: Operation not permitted")
        || output.contains("Couldn't get registers")
    {
        eprintln!("NOTICE: gdb may not trace processes here: skipping\n{output}");
        return None;
    }
    Some((output, timed_out))
}
