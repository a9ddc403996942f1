//! `rseq alloc-stats`: drives `restartable_alloc::PerCpuAlloc` through its
//! `GlobalAlloc` methods (threads allocate a live set of mixed sizes, hand half of it
//! to another thread to free, then free the rest) and prints
//! `restartable_alloc::stats()` after each phase: bytes in use, cached per CPU (per
//! slot), in the transfer caches, free in spans and in the page heap, mapped, and
//! returned to the OS.

use std::alloc::{GlobalAlloc, Layout};
use std::process::ExitCode;

use clap::Args;
use restartable_alloc::{PerCpuAlloc, Stats};
use serde_json::json;

static A: PerCpuAlloc = PerCpuAlloc::new();

/// Arguments of `rseq alloc-stats`.
#[derive(Args, Debug)]
pub struct AllocStatsArgs {
    /// Threads allocating (default: the number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// Objects each thread keeps alive at once (sizes 16 B to 64 KiB).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    objects: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn layout_of(i: u64) -> Layout {
    // Mostly small sizes, every 64th up to 64 KiB: every size class gets used.
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    let size = if i.is_multiple_of(64) {
        16 + x % 65_536
    } else {
        16 + x % 1024
    };
    Layout::from_size_align(size as usize, 8).expect("valid layout")
}

/// Allocates `n` objects; `None` if the allocator returned null (reported, not a panic).
fn allocate(seed: u64, n: u64) -> Option<Vec<(usize, Layout)>> {
    let mut v = Vec::with_capacity(n as usize);
    for i in 0..n {
        let l = layout_of(seed * 1_000_003 + i);
        // SAFETY: a valid layout of non-zero size.
        let p = unsafe { A.alloc(l) };
        if p.is_null() {
            free(v);
            return None;
        }
        // SAFETY: a live object of at least 16 bytes.
        unsafe { p.write_bytes(0xA5, 16) };
        v.push((p as usize, l));
    }
    Some(v)
}

fn free(v: Vec<(usize, Layout)>) {
    for (p, l) in v {
        // SAFETY: allocated by `allocate` with `l`, freed once.
        unsafe { A.dealloc(p as *mut u8, l) };
    }
}

fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / (1 << 20) as f64)
}

fn stats_json(s: &Stats) -> serde_json::Value {
    json!({
        "in_use_bytes": s.in_use_bytes,
        "cpu_cache_bytes": s.cpu_cache_bytes,
        "cpu_cache_bytes_per_slot": s.cpu_cache_bytes_per_slot,
        "transfer_cache_bytes": s.transfer_cache_bytes,
        "span_free_bytes": s.span_free_bytes,
        "page_heap_free_bytes": s.page_heap_free_bytes,
        "mapped_bytes": s.mapped_bytes,
        "released_bytes": s.released_bytes,
        "released_total_bytes": s.released_total_bytes,
        "large_bytes": s.large_bytes,
        "caches": match s.caches_by_mm_cid {
            Some(true) => "mm_cid",
            Some(false) => "cpu",
            None => "none",
        },
    })
}

fn print_text(phase: &str, s: &Stats) {
    outln!("{phase}:");
    outln!("  in use                {}", mib(s.in_use_bytes));
    let per: Vec<String> = s.cpu_cache_bytes_per_slot.iter().map(|&b| mib(b)).collect();
    outln!(
        "  per-CPU caches        {} [{}]",
        mib(s.cpu_cache_bytes),
        per.join(", ")
    );
    outln!("  transfer caches       {}", mib(s.transfer_cache_bytes));
    outln!("  free in spans         {}", mib(s.span_free_bytes));
    outln!("  page heap free        {}", mib(s.page_heap_free_bytes));
    outln!("  mapped                {}", mib(s.mapped_bytes));
    outln!("  returned to the OS    {}", mib(s.released_bytes));
}

/// Runs `rseq alloc-stats`.
pub fn run(args: &AllocStatsArgs) -> ExitCode {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 || threads > 4096 {
        errln!("rseq alloc-stats: --threads must be between 1 and 4096");
        return ExitCode::from(2);
    }
    let mut phases: Vec<(&str, Stats)> = vec![("start", restartable_alloc::stats())];
    let n = args.objects;
    let results: Vec<Option<Vec<(usize, Layout)>>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads as u64)
            .map(|t| s.spawn(move || allocate(t, n)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("an allocating thread panicked"))
            .collect()
    });
    if results.iter().any(|r| r.is_none()) {
        results.into_iter().flatten().for_each(free);
        errln!("rseq alloc-stats: the allocator returned null (out of memory)");
        return ExitCode::FAILURE;
    }
    let mut sets: Vec<Vec<(usize, Layout)>> = results.into_iter().flatten().collect();
    phases.push(("live set allocated", restartable_alloc::stats()));
    // Half of each set is freed by another thread (frees on another CPU).
    let halves: Vec<Vec<(usize, Layout)>> =
        sets.iter_mut().map(|v| v.split_off(v.len() / 2)).collect();
    std::thread::scope(|s| {
        for h in halves {
            s.spawn(move || free(h));
        }
    });
    sets.into_iter().for_each(free);
    phases.push(("everything freed", restartable_alloc::stats()));
    restartable_alloc::release_memory();
    phases.push(("after release_memory()", restartable_alloc::stats()));
    if args.json {
        let v: Vec<_> = phases
            .iter()
            .map(|(p, s)| json!({"phase": p, "stats": stats_json(s)}))
            .collect();
        outln!(
            "{}",
            json!({"status": restartable::status().to_string(), "threads": threads, "objects_per_thread": n, "phases": v})
        );
    } else {
        outln!(
            "{} threads x {n} live objects (16 B - 64 KiB) through PerCpuAlloc; {}",
            threads,
            restartable::status()
        );
        for (p, s) in &phases {
            print_text(p, s);
        }
    }
    ExitCode::SUCCESS
}
