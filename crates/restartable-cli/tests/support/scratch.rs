//! Scratch directories for the tests that write files (compiled fixtures, debugger
//! scripts and drivers), included with `#[path]`: `restartable_test_support`'s, under
//! this package's directory of `CARGO_TARGET_TMPDIR`.

#![allow(dead_code)]

use std::path::Path;

pub use restartable_test_support::Scratch;

/// A new, empty directory of this process's own for `name`:
/// `CARGO_TARGET_TMPDIR/restartable-cli/<name>-<pid>-<n>`, removed when the returned
/// [`Scratch`] is dropped (kept on a panic).
pub fn scratch(name: &str) -> Scratch {
    restartable_test_support::scratch_in(
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("restartable-cli"),
        name,
    )
}
