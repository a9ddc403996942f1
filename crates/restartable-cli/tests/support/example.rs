//! Building the example `crates/restartable/examples/counter_loop.rs` for the
//! debugger tests (`tests/gdb_rust.rs`, `tests/lldb.rs`), included with `#[path]`.

use crate::child::OutputWithin as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Builds the example with this test's profile into this test's target directory
/// (found from the test executable: `<target>[/<triple>]/<profile>/deps/<test>-…`),
/// once per test process. Returns the binary, or why it could not be built.
pub fn counter_loop() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT.get_or_init(build_example).clone()
}

fn build_example() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("the test executable is not in <profile>/deps")?;
    let dir_name = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("no profile directory name")?;
    // The `dev` profile (and `test`, which inherits it) writes to `debug`.
    let profile = if dir_name == "debug" { "dev" } else { dir_name };
    let above = profile_dir.parent().ok_or("no target directory")?;
    let cargo = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO")));
    let mut command = Command::new(cargo);
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "--example", "counter_loop", "-p"])
        .args(["restartable", "--profile", profile, "--target-dir"]);
    // Cargo keeps `.rustc_info.json` in the root of a target directory (and marks a
    // root it created with CACHEDIR.TAG); anything else between that root and the
    // profile directory is a `--target` triple.
    if above.join(".rustc_info.json").exists() || above.join("CACHEDIR.TAG").exists() {
        command.arg(above);
    } else {
        let root = above.parent().ok_or("no target directory")?;
        let triple = above.file_name().ok_or("no target triple")?;
        command.arg(root).arg("--target").arg(triple);
    }
    let output = command
        .try_output_within(crate::child::LONG)
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo build --example counter_loop failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let binary = profile_dir.join("examples/counter_loop");
    if binary.exists() {
        Ok(binary)
    } else {
        Err(format!("{} was not built", binary.display()))
    }
}
