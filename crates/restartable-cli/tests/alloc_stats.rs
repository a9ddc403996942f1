//! `rseq alloc-stats`: the allocator's statistics follow what the command did, and bad
//! arguments are usage errors.

#[path = "../../restartable/tests/support/child.rs"]
mod child;

use child::OutputWithin as _;
use std::process::Command;

fn rseq(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rseq"))
        .args(args)
        .output_within(child::LONG)
}

#[test]
fn alloc_stats_follow_the_workload() {
    let out = rseq(&[
        "alloc-stats",
        "--threads",
        "2",
        "--objects",
        "20000",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let phases = v["phases"].as_array().expect("phases");
    let get = |i: usize, k: &str| phases[i]["stats"][k].as_u64().unwrap();
    assert_eq!(phases.len(), 4);
    // 2 x 20,000 objects of at least 16 bytes each are live in phase 1.
    assert!(get(1, "in_use_bytes") >= 2 * 20_000 * 16, "{}", phases[1]);
    assert!(get(1, "mapped_bytes") >= get(1, "in_use_bytes"));
    // Everything freed: nothing in use; after release_memory nothing cached either.
    assert_eq!(get(2, "in_use_bytes"), 0, "{}", phases[2]);
    assert_eq!(get(3, "in_use_bytes"), 0);
    assert_eq!(get(3, "transfer_cache_bytes"), 0);
    assert_eq!(get(3, "page_heap_free_bytes"), 0);
    if restartable::fences_supported() && restartable::status().is_registered() {
        assert_eq!(get(3, "cpu_cache_bytes"), 0, "{}", phases[3]);
    }
}

#[test]
fn alloc_stats_text_and_bad_arguments() {
    let out = rseq(&["alloc-stats", "--threads", "1", "--objects", "1000"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for phase in [
        "start:",
        "live set allocated:",
        "everything freed:",
        "after release_memory():",
    ] {
        assert!(text.contains(phase), "{text}");
    }
    assert!(text.contains("per-CPU caches") && text.contains("returned to the OS"));
    for bad in [
        &["alloc-stats", "--threads", "0"][..],
        &["alloc-stats", "--objects", "0"],
        &["alloc-stats", "--objects", "x"],
    ] {
        let o = rseq(bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {o:?}");
    }
}
