//! `rseq`: look at, benchmark and stress-test Linux restartable sequences.
//!
//! Subcommands: `info` (this thread's registration and CPU ids), `bench` (rseq against
//! its baselines), `param-test` (the reference stress test, flag for flag), `inspect`
//! (the critical sections listed in an ELF binary) and `gdb-script` (the gdb helper).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod info;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Info(args) => info::run(&args),
    }
}
