//! `rseq gdb-script`: print the gdb extension that steps over restartable sequences.
//!
//! The extension (`gdb/restartable-gdb.py` in the repository, built into the binary)
//! makes gdb's stepping finish over code that runs restartable sequences, from the
//! command line (`step`, `next`, `stepi`, `nexti`, `until`...) and from front ends
//! that use the machine interface (`-exec-next`...), and adds `info rseq`. Use it with
//!
//! ```text
//! rseq gdb-script > /tmp/restartable-gdb.py
//! gdb -ex 'source /tmp/restartable-gdb.py' ./program
//! ```

use std::process::ExitCode;

use clap::Args;

/// The gdb extension's Python source.
pub const SCRIPT: &str = include_str!("../../../gdb/restartable-gdb.py");

/// Arguments of `rseq gdb-script` (none).
#[derive(Args, Debug)]
pub struct GdbScriptArgs {}

/// Runs `rseq gdb-script`: writes [`SCRIPT`] to standard output.
pub fn run(_args: &GdbScriptArgs) -> ExitCode {
    out!("{SCRIPT}");
    ExitCode::SUCCESS
}
