//! Standard output for every subcommand: [`outln!`] and [`out!`] instead of `println!`
//! and `print!`, which panic when the write fails (`rseq inspect BIG | head` closes
//! the pipe: "failed printing to stdout: Broken pipe"; a full disk: "No space left
//! on device"). A failed write here ends the process with a message and status 1.

use std::io::Write as _;

/// Writes `args` to standard output; on failure prints why on standard error and
/// exits with status 1 (a listing cut short is not a success).
pub fn write(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(err) = out.write_fmt(args).and_then(|()| out.flush()) {
        failed(&err);
    }
}

/// Standard output can no longer be written to: say so and exit with status 1.
#[cold]
pub fn failed(err: &std::io::Error) -> ! {
    // `eprintln!` panics in turn if standard error fails too: not checked further.
    let _ = writeln!(
        std::io::stderr(),
        "rseq: cannot write to standard output: {err}"
    );
    std::process::exit(1)
}
