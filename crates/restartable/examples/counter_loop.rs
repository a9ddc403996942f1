//! A per-CPU counter incremented in a loop: the program the gdb tests step through
//! (`crates/restartable-cli/tests/gdb_rust.rs`, issue 7).
//!
//! Each `counter.inc()` is one restartable sequence (inlined into `main` in optimized
//! builds). Single-stepping into it makes the kernel abort every attempt, so a plain
//! `stepi` loop never sees it commit; with `rseq gdb-script` sourced, `stepi` and
//! `next` get past it. An increment that could not commit as a sequence (after
//! `MAX_CONSECUTIVE_ABORTS` aborts in a row, or without rseq) goes to the counter's
//! shared fallback, whose share is printed on the second line.
//!
//! Prints the thread's rseq status, then `counter 3` and `fallback F` (F = 0 when every increment committed as a
//! restartable sequence).

use std::hint::black_box;

use restartable::PerCpuCounter;

/// How many times the loop increments the counter.
const INCREMENTS: u32 = 3;

fn main() {
    // Registers this thread's rseq area now, so that the first increment below takes
    // the fast path; the gdb test reads this line to skip where rseq is missing.
    println!("{}", restartable::status());
    let counter = PerCpuCounter::new(); // BEFORE_LINE
    for i in 1..=black_box(INCREMENTS) {
        counter.inc(); // INC_LINE
        checkpoint(i); // NEXT_LINE
    }
    println!("counter {}", counter.sum());
    println!("fallback {}", counter.fallback_value());
}

/// The statement after each increment: a call that is never inlined, so that its
/// line has code of its own in every build.
#[inline(never)]
fn checkpoint(i: u32) {
    black_box(i);
}
