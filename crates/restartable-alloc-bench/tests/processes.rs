//! `--processes N`: N child processes per mode really ran, and every one of their
//! rounds is in the table.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

/// Three processes of two rounds each: three `process` lines with three different
/// pids (none the parent's), each process's two rounds of each allocator among the
/// `raw` lines, and the table's row counting all six rounds.
#[test]
fn processes_run_and_all_their_rounds_count() {
    let child = Command::new(env!("CARGO_BIN_EXE_alloc-bench"))
        .args(["--processes", "3", "--runs", "2", "--duration-ms", "5"])
        .args(["--workload", "churn64", "--threads", "1"])
        .args(["--only", "PerCpuAlloc,System", "--raw", "--cpu-time"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run alloc-bench");
    let parent = child.id().to_string();
    let out = child.wait_with_output().expect("alloc-bench's output");
    assert!(out.status.success(), "alloc-bench failed: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut pids = BTreeSet::new();
    for k in 0..3 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("process default {k} pid ")))
            .unwrap_or_else(|| panic!("no process {k} in:\n{text}"));
        pids.insert(line.rsplit(' ').next().unwrap().to_string());
    }
    assert_eq!(pids.len(), 3, "three different pids:\n{text}");
    assert!(
        !pids.contains(&parent),
        "a child's pid is the parent's:\n{text}"
    );
    assert!(!text.contains("process default 3 "), "{text}");
    for k in 0..3 {
        for a in ["PerCpuAlloc", "System"] {
            let rounds = text
                .lines()
                .filter(|l| l.starts_with(&format!("raw churn64 1 {a} ")))
                .filter(|l| l.ends_with(&format!(" default {k}")))
                .count();
            assert_eq!(rounds, 2, "process {k}, {a}:\n{text}");
        }
    }
    let row = text
        .lines()
        .find(|l| l.starts_with("| churn64 | 1 | 6 |"))
        .unwrap_or_else(|| panic!("no row of six rounds in:\n{text}"));
    assert!(row.contains(" of 6 |"), "{row}");
    assert!(
        text.contains("| churn64 | 1 | 3 |"),
        "the per-process table:\n{text}"
    );
}
