//! The sequences `rseq bench` runs carry no trace of the test hooks, while the ones
//! `rseq param-test` runs do: checked in the disassembly of the `rseq` binary itself.
//!
//! `rseq inspect --json` lists every sequence with its function; `objdump` shows the
//! instructions of each. A hooked sequence reads `restartable::hooks::LOOPS` /
//! `FLAGS` (injection loops, test switches) and contains an `int3`; a bare one does
//! neither.

#[path = "../../restartable/tests/support/child.rs"]
mod child;

use child::OutputWithin as _;
use std::process::Command;

fn objdump_range(bin: &str, start: u64, end: u64) -> Option<String> {
    let out = Command::new("objdump")
        .args([
            "-d",
            "--no-show-raw-insn",
            &format!("--start-address={start:#x}"),
            &format!("--stop-address={end:#x}"),
            bin,
        ])
        .try_output_within(child::SHORT)
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn mentions_hooks(asm: &str) -> bool {
    asm.contains("hooks5LOOPS") || asm.contains("hooks5FLAGS") || asm.contains("int3")
}

#[test]
fn bench_sequences_are_hook_free_and_param_test_sequences_are_hooked() {
    let bin = env!("CARGO_BIN_EXE_rseq");
    if Command::new("objdump")
        .arg("--version")
        .try_output_within(child::SHORT)
        .is_err()
    {
        child::skip("objdump is not installed");
        return;
    }
    let out = Command::new(bin)
        .args(["inspect", "--json", bin])
        .output_within(child::SHORT);
    assert!(out.status.success(), "inspect failed: {:?}", out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let seqs = v["sequences"].as_array().unwrap();
    let (mut bench, mut param) = (0, 0);
    for s in seqs {
        let func = s["function"].as_str().unwrap_or("");
        let start = s["start_ip"].as_u64().unwrap();
        let end = s["post_commit_ip"].as_u64().unwrap();
        let asm = objdump_range(bin, start, end).expect("objdump runs");
        if func.contains("::bench") {
            bench += 1;
            assert!(
                !mentions_hooks(&asm),
                "a sequence in {func} carries test hooks:\n{asm}"
            );
        } else if func.contains("param_test") {
            param += 1;
            assert!(
                mentions_hooks(&asm),
                "a sequence in {func} has no hooks (positive control):\n{asm}"
            );
        }
    }
    assert!(bench > 0, "no sequence found in the bench code");
    assert!(param > 0, "no sequence found in the param-test code");
}
