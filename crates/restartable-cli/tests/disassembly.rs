//! Properties of the `rseq` binary's own sequences, checked in its disassembly.
//!
//! `rseq inspect --json` lists every sequence (`start_ip` to `post_commit_ip`) with
//! its function; `objdump` shows the instructions of each.
//! - The sequences `rseq bench` runs carry no trace of the test hooks, while the ones
//!   `rseq param-test` runs do. A hooked sequence reads `restartable::hooks::LOOPS` /
//!   `FLAGS` (injection loops, test switches) and contains an `int3`; a bare one does
//!   neither.
//! - Every sequence reads the thread's index (`cpu_id` at offset 4 of the area,
//!   `mm_cid` at 0x18) inside itself: the ops that take a prepared index compare it
//!   there, the in-sequence index ops (`load_index_slab_pop` / `push`, which the
//!   allocator inside `rseq alloc-stats` uses) load it there, and those also check the
//!   registration there, with `cpu_id` read once more just before the sequence's
//!   descriptor store. The plain build of the in-sequence ops has no runtime test
//!   that could see an index read moved before the sequence's start (no injection
//!   points); this one does.

#[path = "../../restartable/tests/support/child.rs"]
mod child;

use child::OutputWithin as _;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_rseq");

/// The binary's defined symbols, by address (`nm -n`).
fn symbol_starts() -> Vec<u64> {
    let out = Command::new("nm")
        .args(["-n", "--defined-only", BIN])
        .output_within(child::SHORT);
    assert!(out.status.success(), "nm failed: {:?}", out);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let addr = u64::from_str_radix(f.next()?, 16).ok()?;
            let kind = f.next()?;
            matches!(kind, "t" | "T").then_some(addr)
        })
        .collect()
}

fn objdump_range(start: u64, end: u64) -> Option<String> {
    let out = Command::new("objdump")
        .args([
            "-d",
            "--no-show-raw-insn",
            &format!("--start-address={start:#x}"),
            &format!("--stop-address={end:#x}"),
            BIN,
        ])
        .try_output_within(child::SHORT)
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every sequence of the binary: its function and its instructions, from `start_ip`
/// up to (not including) `post_commit_ip`. `None` (after the skip notice) without
/// `objdump`.
fn sequences() -> Option<Vec<(String, String)>> {
    Some(
        sequences_and_before()?
            .into_iter()
            .map(|(f, _, asm)| (f, asm))
            .collect(),
    )
}

/// [`sequences`], each also with its function's instructions before `start_ip` (from
/// the function's symbol on).
fn sequences_and_before() -> Option<Vec<(String, String, String)>> {
    if Command::new("objdump")
        .arg("--version")
        .try_output_within(child::SHORT)
        .is_err()
    {
        child::skip("objdump is not installed");
        return None;
    }
    let out = Command::new(BIN)
        .args(["inspect", "--json", BIN])
        .output_within(child::SHORT);
    assert!(out.status.success(), "inspect failed: {:?}", out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let seqs = v["sequences"].as_array().unwrap();
    assert!(!seqs.is_empty(), "no sequence in {BIN}");
    let syms = symbol_starts();
    Some(
        seqs.iter()
            .map(|s| {
                let func = s["function"].as_str().unwrap_or("").to_owned();
                let start = s["start_ip"].as_u64().unwrap();
                let end = s["post_commit_ip"].as_u64().unwrap();
                let sym = syms.iter().copied().filter(|&a| a <= start).max();
                let before = sym
                    .filter(|&a| a < start)
                    .map(|a| objdump_range(a, start).expect("objdump runs"))
                    .unwrap_or_default();
                (
                    func,
                    before,
                    objdump_range(start, end).expect("objdump runs"),
                )
            })
            .collect(),
    )
}

fn mentions_hooks(asm: &str) -> bool {
    asm.contains("hooks5LOOPS") || asm.contains("hooks5FLAGS") || asm.contains("int3")
}

#[test]
fn bench_sequences_are_hook_free_and_param_test_sequences_are_hooked() {
    let Some(seqs) = sequences() else { return };
    let (mut bench, mut param) = (0, 0);
    for (func, asm) in &seqs {
        if func.contains("::bench") {
            bench += 1;
            assert!(
                !mentions_hooks(asm),
                "a sequence in {func} carries test hooks:\n{asm}"
            );
        } else if func.contains("param_test") {
            param += 1;
            assert!(
                mentions_hooks(asm),
                "a sequence in {func} has no hooks (positive control):\n{asm}"
            );
        }
    }
    assert!(bench > 0, "no sequence found in the bench code");
    assert!(param > 0, "no sequence found in the param-test code");
}

/// How one instruction of a sequence touches an index field of the area
/// (`%fs:0x4(%reg)` / `%fs:0x18(%reg)`, or the same without `%fs` where the area is
/// a pointer), if it does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum IndexAccess {
    /// `cmp` with a register: the prepared index compared.
    Compare,
    /// `cmpl $0xfffffffe`, or an `or` into a register (`cpu_id` or-ed with the value
    /// read before the sequence, its sign tested): the registration check.
    RegistrationCheck,
    /// `mov`/`movzbl` into a register: the in-sequence index read.
    Load,
}

/// The index-field access of one `objdump` line, if any.
fn index_access(line: &str) -> Option<IndexAccess> {
    // "  4a1b2c:\tmovzbl %fs:0x18(%rcx),%r9d"
    let (_, insn) = line.split_once(":\t")?;
    let (op, args) = insn.split_once(char::is_whitespace)?;
    let args = args.trim();
    let field = ["0x4(%r", "0x18(%r"].iter().any(|f| {
        args.contains(&format!("%fs:{f}")) || args.starts_with(f) || args.contains(&format!(",{f}"))
    });
    if !field {
        return None;
    }
    if op.starts_with("cmp") {
        Some(if args.starts_with("$0xfffffffe,") {
            IndexAccess::RegistrationCheck
        } else {
            IndexAccess::Compare
        })
    } else if op.starts_with("or") && args.contains("%fs:0x4(%r") {
        Some(IndexAccess::RegistrationCheck)
    } else if op.starts_with("mov")
        && args
            .split(',')
            .next_back()
            .is_some_and(|d| d.starts_with('%'))
    {
        Some(IndexAccess::Load)
    } else {
        None
    }
}

#[test]
fn every_sequence_reads_its_index_inside() {
    let Some(seqs) = sequences_and_before() else {
        return;
    };
    let mut loads = 0;
    for (func, before, asm) in &seqs {
        let acc: Vec<IndexAccess> = asm.lines().filter_map(index_access).collect();
        let read = acc.contains(&IndexAccess::Compare) || acc.contains(&IndexAccess::Load);
        assert!(
            read,
            "a sequence in {func} neither compares nor loads cpu_id/mm_cid between its \
             start and its commit:\n{asm}"
        );
        if acc.contains(&IndexAccess::Load) {
            loads += 1;
            assert!(
                acc.contains(&IndexAccess::RegistrationCheck),
                "an in-sequence index op in {func} does not check the registration \
                 inside the sequence:\n{asm}"
            );
            // `cpu_id` read before the descriptor store, among the instructions just
            // before the start (the read, the hooked build's injection loop, the
            // descriptor's address, the store).
            let lines: Vec<&str> = before.lines().filter(|l| l.contains(":\t")).collect();
            let last = &lines[lines.len().saturating_sub(8)..];
            let pre = last
                .iter()
                .rev()
                .find(|l| l.contains("%fs:0x4(%r") && index_access(l) == Some(IndexAccess::Load));
            let Some(pre) = pre else {
                panic!(
                    "an in-sequence index op in {func} does not read cpu_id just before \
                     its sequence:\n{}\n--- the sequence:\n{asm}",
                    last.join("\n")
                );
            };
            // And the check inside uses that read: `cpu_id` or-ed into its register.
            let reg = pre.rsplit(',').next().unwrap_or("").trim();
            assert!(
                asm.lines().any(|l| {
                    let insn = l.split_once(":\t").map_or("", |(_, i)| i);
                    insn.starts_with("or")
                        && insn.contains("%fs:0x4(%r")
                        && insn.trim_end().ends_with(&format!(",{reg}"))
                }),
                "an in-sequence index op in {func} does not check inside its sequence \
                 the cpu_id it read before it (into {reg}):\n{pre}\n--- the \
                 sequence:\n{asm}"
            );
        }
    }
    // The allocator's fast paths (glibc's mm_cid low byte, whole mm_cid, cpu_id) in
    // `rseq alloc-stats`: the property above is about them.
    assert!(
        loads >= 3,
        "only {loads} sequences load their index inside: the in-sequence index ops \
         are missing from {BIN}"
    );
}
