//! `rseq`: look at, benchmark and stress-test Linux restartable sequences.
//!
//! Subcommands: `info` (this thread's registration and CPU ids), `bench` (rseq against
//! its baselines), `param-test` (the reference stress test, flag for flag), `inspect`
//! (the critical sections listed in an ELF binary), `gdb-script` and `lldb-script` (the
//! debugger helpers) and `alloc-stats` (the per-CPU allocator's statistics).

// Messages go through `errln!`/`err!` and listings through `outln!`/`out!`, which
// do not panic when the stream fails (see `out`); the test harness's captured
// `errln!` stays allowed in unit tests.
#![cfg_attr(not(test), deny(clippy::print_stderr, clippy::print_stdout))]

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `println!` to standard output that exits with status 1 and a message, instead of
/// panicking, when the write fails (see [`out`]).
macro_rules! outln {
    () => {
        $crate::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` to standard output, as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write(format_args!($($arg)*))
    };
}

/// `errln!` to standard error that ignores a failed write instead of panicking
/// (see [`out`]): the command keeps the exit status it would have had.
macro_rules! errln {
    () => {
        $crate::out::write_err(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::write_err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `err!` to standard error, as [`errln!`].
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::out::write_err(format_args!($($arg)*))
    };
}

mod out;

mod affinity;
mod alloc_stats;
mod bench;
mod gdb_script;
mod info;
mod inspect;
mod lldb_script;
mod param_test;

/// Tools for Linux restartable sequences, built on the `restartable` library.
#[derive(Parser, Debug)]
#[command(name = "rseq", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print this thread's rseq registration, CPU ids, kernel and libc.
    Info(info::InfoArgs),
    /// Measure rseq against its baselines (per-CPU counter, CPU id, lock, stack, buffer).
    Bench(bench::BenchArgs),
    /// List the restartable sequences in an ELF binary.
    Inspect(inspect::InspectArgs),
    /// Print the gdb extension that steps over restartable sequences.
    GdbScript(gdb_script::GdbScriptArgs),
    /// Print the lldb module that steps over restartable sequences.
    LldbScript(lldb_script::LldbScriptArgs),
    /// Drive the per-CPU allocator (restartable-alloc) and print its statistics.
    #[command(name = "alloc-stats")]
    AllocStats(alloc_stats::AllocStatsArgs),
    /// Run the reference rseq stress test (flag-compatible with the kernel selftests' param_test).
    #[command(
        name = "param-test",
        disable_help_flag = true,
        allow_negative_numbers = true
    )]
    ParamTest(param_test::ParamTestArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `--help` and `--version`: clap ignores a failed write (`rseq --help
        // >/dev/full` exited 0); written as every listing is, they fail with status 1.
        // On a terminal clap writes them itself, in colour.
        Err(err) if !err.use_stderr() && !std::io::stdout().is_terminal() => {
            out!("{}", err.render());
            return ExitCode::SUCCESS;
        }
        Err(err) => err.exit(),
    };
    match cli.command {
        Command::Info(args) => info::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Inspect(args) => inspect::run(&args),
        Command::GdbScript(args) => gdb_script::run(&args),
        Command::LldbScript(args) => lldb_script::run(&args),
        Command::ParamTest(args) => param_test::run(&args),
        Command::AllocStats(args) => alloc_stats::run(&args),
    }
}
