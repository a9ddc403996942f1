//! Finding lines in the debugger tests' sources (fixtures, examples), included with
//! `#[path]`.

use std::path::Path;

/// The line of `file` carrying `marker` (1-based).
pub fn line_of(file: &Path, marker: &str) -> usize {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("read {}: {e}", file.display()))
        .lines()
        .position(|l| l.contains(marker))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("no {marker} in {}", file.display()))
}
