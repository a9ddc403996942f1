//! Standard output for every subcommand: [`outln!`] and [`out!`] instead of `println!`
//! and `print!`, which panic when the write fails (`rseq inspect BIG | head` closes
//! the pipe: "failed printing to stdout: Broken pipe"; a full disk: "No space left
//! on device"). A failed write here ends the process with a message and status 1.
//!
//! Standard error: [`errln!`] and [`err!`] instead of `eprintln!` and `eprint!`, which
//! panic (status 101) when standard error cannot be written (`2>/dev/full`, a closed
//! fd 2). A message that cannot be written cannot be reported either: the failure is
//! ignored and the command ends with the status it would have had. Every message of
//! this crate goes through them (`clippy::print_stderr` is denied in `main.rs`).

use std::io::Write as _;

/// Writes `args` to standard output; on failure prints why on standard error and
/// exits with status 1 (a listing cut short is not a success).
pub fn write(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(err) = out.write_fmt(args).and_then(|()| out.flush()) {
        failed(&err);
    }
}

/// Writes `args` to standard error, ignoring a failure (see the module docs).
pub fn write_err(args: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.flush());
}

/// Standard output can no longer be written to: say so and exit with status 1.
#[cold]
pub fn failed(err: &std::io::Error) -> ! {
    write_err(format_args!(
        "rseq: cannot write to standard output: {err}\n"
    ));
    std::process::exit(1)
}
