//! `rseq lldb-script`: print the lldb module that steps over restartable sequences.
//!
//! The module (`lldb/restartable_lldb.py` in the repository, built into the binary)
//! guards every sequence's entry and adds a stop hook, so that lldb's `step`, `next`,
//! `stepi`, `nexti` (and the `thread step-*` commands and SB API calls behind them)
//! get past code that runs restartable sequences without aborting them; it adds the
//! command `rseq` (list the sequences; `rseq on|off`). Keep the file name: lldb names
//! the module after it.
//!
//! ```text
//! rseq lldb-script > /tmp/restartable_lldb.py
//! lldb -o 'command script import /tmp/restartable_lldb.py' ./program
//! ```

use std::process::ExitCode;

use clap::Args;

/// The lldb module's Python source.
pub const SCRIPT: &str = include_str!("../../../lldb/restartable_lldb.py");

/// Arguments of `rseq lldb-script` (none).
#[derive(Args, Debug)]
pub struct LldbScriptArgs {}

/// Runs `rseq lldb-script`: writes [`SCRIPT`] to standard output.
pub fn run(_args: &LldbScriptArgs) -> ExitCode {
    out!("{SCRIPT}");
    ExitCode::SUCCESS
}
