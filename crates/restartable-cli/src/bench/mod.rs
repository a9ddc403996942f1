//! `rseq bench`: the restartable-sequence containers against the alternatives a Rust
//! user has, measured in the same run, on 1, nproc and 4 x nproc threads.
//!
//! Method (also in BENCHMARKS.md): for each workload and thread count, `runs` rounds;
//! in each round every implementation runs once, on a fresh instance, for `duration`
//! (the implementations are interleaved so that a change in the machine's load hits
//! them alike). A run starts its threads together at a barrier; each thread runs
//! batches of 128 operations until a stop flag is raised. Per run:
//! ns/op = elapsed × threads / ops (per thread), Mops/s = ops / elapsed (aggregate).
//! Reported: the median over runs and the min–max spread; the ratio of the median
//! ns/op to the best baseline's (the fastest `baseline` row; `floor` rows are not
//! alternatives). The rseq containers are timed in their hook-free build; a separate
//! pass with `StatsHooks` builds counts the sequences' aborts.

mod cpu_readers;
mod harness;
mod machine;
mod plot;
mod targets;
mod workloads;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use restartable::hooks::Stats;
use serde_json::{json, Value};

use harness::{median, Sample};
use machine::Machine;
use workloads::{Kind, WorkloadId};

/// Arguments of `rseq bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A few seconds in all: 3 runs of 10 ms per measurement.
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// Steadier figures: 7 runs of 200 ms per measurement (about two minutes).
    #[arg(long)]
    full: bool,
    /// Runs per measurement (default 5; overrides --quick/--full).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    runs: Option<u32>,
    /// Duration of one run in milliseconds (default 30; overrides --quick/--full).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=600_000))]
    duration_ms: Option<u64>,
    /// Thread counts: a comma-separated list of counts or `START:END[:STEP]` ranges
    /// (default: 1, nproc and 4 x nproc).
    #[arg(long, value_name = "LIST", value_parser = parse_thread_list)]
    threads: Option<ThreadList>,
    /// Workloads to run, comma-separated (default: all).
    #[arg(long, value_name = "NAME", value_enum, value_delimiter = ',')]
    workload: Vec<WorkloadId>,
    /// Print one JSON object (machine, method, results, targets) instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write a plot of throughput against threads, per workload, to FILE (SVG).
    /// FILE is checked before measuring and written once the figure is complete
    /// (an interrupted run leaves it as it was).
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Skip the abort-counting pass (StatsHooks builds).
    #[arg(long)]
    no_abort_pass: bool,
}

/// A parsed `--threads` list.
#[derive(Clone, Debug)]
pub struct ThreadList(Vec<usize>);

const MAX_THREADS: usize = 1024;

/// Parses `1,2,8` or `1:8:1` (or a mix): sorted, without duplicates.
fn parse_thread_list(s: &str) -> Result<ThreadList, String> {
    let num = |v: &str| -> Result<usize, String> {
        let n: usize = v
            .trim()
            .parse()
            .map_err(|_| format!("`{v}` is not a thread count"))?;
        if (1..=MAX_THREADS).contains(&n) {
            Ok(n)
        } else {
            Err(format!("thread counts are 1..={MAX_THREADS}, not {n}"))
        }
    };
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let f: Vec<&str> = part.split(':').collect();
        match f.as_slice() {
            [n] => out.push(num(n)?),
            [a, b] | [a, b, _] => {
                let (a, b) = (num(a)?, num(b)?);
                let step = if f.len() == 3 { num(f[2])? } else { 1 };
                if a > b {
                    return Err(format!("empty range `{part}`"));
                }
                out.extend((a..=b).step_by(step));
            }
            _ => return Err(format!("`{part}` is neither N nor START:END[:STEP]")),
        }
    }
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        return Err("no thread count given".into());
    }
    Ok(ThreadList(out))
}

/// The measured rows of one implementation at one thread count.
pub struct Row {
    pub workload: WorkloadId,
    pub threads: usize,
    pub name: &'static str,
    pub kind: Kind,
    pub samples: Vec<Sample>,
    /// A failed check of the final state (a lost update, lost items).
    pub error: Option<String>,
    /// Outcomes counted by the StatsHooks pass (rseq rows).
    pub stats: Option<Stats>,
}

impl Row {
    fn ns(&self) -> Vec<f64> {
        self.samples.iter().map(Sample::ns_per_op).collect()
    }
    pub fn median_ns(&self) -> f64 {
        median(&self.ns())
    }
    pub fn min_ns(&self) -> f64 {
        self.ns().into_iter().fold(f64::INFINITY, f64::min)
    }
    pub fn max_ns(&self) -> f64 {
        self.ns().into_iter().fold(0.0, f64::max)
    }
    pub fn median_mops(&self) -> f64 {
        median(&self.samples.iter().map(Sample::mops).collect::<Vec<_>>())
    }
    /// Median share of the wall time the threads were on a CPU.
    pub fn median_on_cpu(&self) -> f64 {
        median(&self.samples.iter().map(Sample::on_cpu).collect::<Vec<_>>())
    }
    /// Median CPU time per operation (CPU time / ops): the cost while running.
    pub fn median_cpu_ns(&self) -> f64 {
        median(
            &self
                .samples
                .iter()
                .map(|s| s.cpu_time.as_nanos() as f64 / s.ops.max(1) as f64)
                .collect::<Vec<_>>(),
        )
    }
    /// Aborted sequences over all attempts, from the StatsHooks pass.
    pub fn abort_rate(&self) -> Option<f64> {
        let s = self.stats?;
        let attempts = s.commits + s.compare_failures + s.aborts;
        Some(if attempts == 0 {
            0.0
        } else {
            s.aborts as f64 / attempts as f64
        })
    }
}

/// Every row of a benchmark.
pub struct Results {
    pub rows: Vec<Row>,
}

impl Results {
    pub fn get(&self, w: WorkloadId, threads: usize, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| {
            r.workload == w && r.threads == threads && r.name == name && !r.samples.is_empty()
        })
    }

    /// The fastest baseline (median ns/op) of a workload at a thread count.
    pub fn best_baseline(&self, w: WorkloadId, threads: usize) -> Option<&Row> {
        self.rows
            .iter()
            .filter(|r| r.workload == w && r.threads == threads && r.kind == Kind::Baseline)
            .filter(|r| !r.samples.is_empty())
            .min_by(|a, b| a.median_ns().total_cmp(&b.median_ns()))
    }
}

/// Runs, presets resolved.
struct Plan {
    runs: u32,
    duration: Duration,
    threads: Vec<usize>,
    workloads: Vec<WorkloadId>,
}

impl Plan {
    fn from_args(args: &BenchArgs, nproc: usize) -> Plan {
        let (runs, ms) = if args.quick {
            (3, 10)
        } else if args.full {
            (7, 200)
        } else {
            (5, 30)
        };
        let threads = match &args.threads {
            Some(t) => t.0.clone(),
            None => {
                let mut t = vec![1, nproc, 4 * nproc];
                t.dedup();
                t
            }
        };
        let mut workloads = if args.workload.is_empty() {
            WorkloadId::ALL.to_vec()
        } else {
            args.workload.clone()
        };
        workloads.sort();
        workloads.dedup();
        Plan {
            runs: args.runs.unwrap_or(runs),
            duration: Duration::from_millis(args.duration_ms.unwrap_or(ms)),
            threads,
            workloads,
        }
    }
}

pub fn run(args: &BenchArgs) -> ExitCode {
    // The plot's file is checked before minutes of measuring, not after; it is
    // written only once the figure is complete (nothing at FILE until then).
    let svg_destination = match &args.svg {
        Some(path) => match plot::Destination::check(path) {
            Ok(d) => Some(d),
            Err(e) => {
                errln!("rseq bench: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let mut machine = Machine::gather();
    let nproc = machine.cpus_online;
    let plan = Plan::from_args(args, nproc);
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut unavailable = Vec::new();
    let mut failed = false;
    for &id in &plan.workloads {
        let w = workloads::build(id);
        for (name, why) in &w.unavailable {
            unavailable.push((id, *name, why.clone()));
        }
        for &threads in &plan.threads {
            progress(&format!("{} on {threads} thread(s)", id.code()));
            let first = rows.len();
            for i in &w.impls {
                rows.push(Row {
                    workload: id,
                    threads,
                    name: i.name,
                    kind: i.kind,
                    samples: Vec::new(),
                    error: None,
                    stats: None,
                });
            }
            // Interleaved rounds: every implementation once per round.
            for _ in 0..plan.runs {
                for (k, i) in w.impls.iter().enumerate() {
                    let row = &mut rows[first + k];
                    if row.error.is_some() {
                        continue;
                    }
                    match (i.run)(threads, plan.duration) {
                        Ok(s) => row.samples.push(s),
                        Err(e) => {
                            failed = true;
                            row.error = Some(e);
                        }
                    }
                }
            }
            if !args.no_abort_pass {
                for (k, i) in w.impls.iter().enumerate() {
                    if let Some(stats_run) = &i.stats_run {
                        match stats_run(threads, plan.duration) {
                            Ok(s) => rows[first + k].stats = Some(s.stats),
                            Err(e) => {
                                failed = true;
                                rows[first + k].error = Some(format!("abort pass: {e}"));
                            }
                        }
                    }
                }
            }
        }
    }
    progress_done();
    machine.load_end = machine::load_average();
    let results = Results { rows };
    let targets = targets::evaluate(&results, &machine, nproc);
    let elapsed = started.elapsed();

    if args.json {
        let v = to_json(&results, &machine, &plan, &unavailable, &targets, elapsed);
        outln!("{v}");
    } else {
        print_text(&results, &machine, &plan, &unavailable, &targets, elapsed);
    }
    if let (Some(path), Some(destination)) = (&args.svg, &svg_destination) {
        let panels = plan
            .workloads
            .iter()
            .map(|&w| plot::Panel {
                title: format!("{} ({})", w.title(), w.code()),
                series: series_of(&results, w, &plan.threads),
            })
            .filter(|p| !p.series.is_empty())
            .collect::<Vec<_>>();
        let caption = format!(
            "rseq bench: aggregate throughput, median of {} runs x {} ms; {}, {} CPUs, Linux {}",
            plan.runs,
            plan.duration.as_millis(),
            machine.cpu_model,
            machine.cpus_online,
            machine.kernel
        );
        let written = plot::render_svg(&caption, &plan.threads, &panels)
            .and_then(|svg| destination.write(&svg).map_err(|e| e.to_string()));
        match written {
            Ok(()) => {
                if !args.json {
                    outln!("\nplot written to {}", path.display());
                }
            }
            Err(e) => {
                errln!("rseq bench: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if failed {
        errln!("rseq bench: a check of the final state failed (see the errors above)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn series_of(results: &Results, w: WorkloadId, threads: &[usize]) -> Vec<plot::Series> {
    let mut names: Vec<(&'static str, Kind)> = Vec::new();
    for r in results.rows.iter().filter(|r| r.workload == w) {
        if !names.iter().any(|(n, _)| *n == r.name) {
            names.push((r.name, r.kind));
        }
    }
    names
        .into_iter()
        .map(|(name, kind)| plot::Series {
            name: name.to_string(),
            kind,
            points: threads
                .iter()
                .filter_map(|&t| results.get(w, t, name).map(|r| (t, r.median_mops())))
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

fn progress(what: &str) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    err!("\rmeasuring {what:<40}");
}

fn progress_done() {
    if !std::io::stderr().is_terminal() {
        return;
    }
    err!("\r{:<60}\r", "");
}

fn ratio_text(results: &Results, r: &Row) -> String {
    match results.best_baseline(r.workload, r.threads) {
        Some(b) if b.name == r.name => "1.00x (best)".to_string(),
        Some(b) => format!("{:.2}x {}", r.median_ns() / b.median_ns(), b.name),
        None => "-".to_string(),
    }
}

fn abort_text(r: &Row) -> String {
    match (r.abort_rate(), r.stats) {
        (Some(rate), Some(s)) => {
            let mut t = format!("{:.4}%", rate * 100.0);
            if s.fallbacks > 0 {
                t.push_str(&format!(" ({} fallback)", s.fallbacks));
            }
            t
        }
        _ => "-".to_string(),
    }
}

fn fmt_ns(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn fmt_mops(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

fn print_text(
    results: &Results,
    machine: &Machine,
    plan: &Plan,
    unavailable: &[(WorkloadId, &'static str, String)],
    targets: &[targets::Target],
    elapsed: Duration,
) {
    outln!("rseq bench");
    for l in machine.describe() {
        outln!("{l}");
    }
    outln!(
        "method      {} runs x {} ms per row, implementations interleaved, threads started \
         together;\n            ns/op = elapsed x threads / ops (median, min-max over runs); \
         Mops/s aggregate (median);\n            on-cpu = thread CPU time / (elapsed x threads); \
         ratio = median ns/op / best baseline's;\n            aborts from a separate StatsHooks pass",
        plan.runs,
        plan.duration.as_millis()
    );
    if machine.busy() {
        outln!(
            "warning     the machine was busy (load average {:.2} on {} CPUs): multi-thread \
             figures are pessimistic",
            machine.load_start.map_or(0.0, |l| l[0]),
            machine.cpus_online
        );
    }
    outln!();
    let header = [
        "workload",
        "threads",
        "implementation",
        "kind",
        "ns/op",
        "min-max",
        "Mops/s",
        "on-cpu",
        "vs best baseline",
        "aborts",
    ];
    let mut table: Vec<[String; 10]> = Vec::new();
    let mut last: Option<(WorkloadId, usize)> = None;
    for r in &results.rows {
        let key = (r.workload, r.threads);
        let (wcol, tcol) = if last == Some(key) {
            (String::new(), String::new())
        } else if last.map(|l| l.0) == Some(r.workload) {
            (String::new(), r.threads.to_string())
        } else {
            (r.workload.code().to_string(), r.threads.to_string())
        };
        last = Some(key);
        if let Some(e) = &r.error {
            table.push([
                wcol,
                tcol,
                r.name.to_string(),
                r.kind.code().to_string(),
                "FAILED".into(),
                e.clone(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
            continue;
        }
        table.push([
            wcol,
            tcol,
            r.name.to_string(),
            r.kind.code().to_string(),
            fmt_ns(r.median_ns()),
            format!("{}-{}", fmt_ns(r.min_ns()), fmt_ns(r.max_ns())),
            fmt_mops(r.median_mops()),
            format!("{:.0}%", 100.0 * r.median_on_cpu()),
            ratio_text(results, r),
            abort_text(r),
        ]);
    }
    let mut width = header.map(str::len);
    for row in &table {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            // Numbers right-aligned, text left-aligned.
            if (4..=7).contains(&i) {
                s.push_str(&format!("{c:>w$}  "));
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string()
    };
    outln!("{}", line(&header.map(String::from)));
    let mut prev_w = None;
    for row in &table {
        if !row[0].is_empty() && prev_w.is_some() {
            outln!();
        }
        prev_w = Some(());
        outln!("{}", line(row));
    }
    for (w, name, why) in unavailable {
        outln!("({} {name}: not measured: {why})", w.code());
    }
    outln!();
    outln!("targets (ratios from this run; see BENCHMARKS.md)");
    for t in targets {
        outln!("  {}", t.line());
        if let Some(n) = &t.note {
            outln!("      {n}");
        }
    }
    outln!();
    outln!("implementations");
    let mut seen = Vec::new();
    for r in &results.rows {
        if !seen.contains(&r.name) {
            seen.push(r.name);
            outln!("  {:<22} {}", r.name, workloads::describe(r.name));
        }
    }
    outln!("\ntotal time {:.1} s", elapsed.as_secs_f64());
}

fn to_json(
    results: &Results,
    machine: &Machine,
    plan: &Plan,
    unavailable: &[(WorkloadId, &'static str, String)],
    targets: &[targets::Target],
    elapsed: Duration,
) -> Value {
    let rows: Vec<Value> = results
        .rows
        .iter()
        .map(|r| {
            let best = results.best_baseline(r.workload, r.threads);
            let ok = r.error.is_none() && !r.samples.is_empty();
            json!({
                "workload": r.workload.code(),
                "threads": r.threads,
                "impl": r.name,
                "kind": r.kind.code(),
                "description": workloads::describe(r.name),
                "median_ns_per_op": ok.then(|| r.median_ns()),
                "min_ns_per_op": ok.then(|| r.min_ns()),
                "max_ns_per_op": ok.then(|| r.max_ns()),
                "median_mops": ok.then(|| r.median_mops()),
                "runs_ns_per_op": r.samples.iter().map(Sample::ns_per_op).collect::<Vec<_>>(),
                "runs_mops": r.samples.iter().map(Sample::mops).collect::<Vec<_>>(),
                "median_on_cpu": ok.then(|| r.median_on_cpu()),
                "median_cpu_ns_per_op": ok.then(|| r.median_cpu_ns()),
                "ops": r.samples.iter().map(|s| s.ops).sum::<u64>(),
                "best_baseline": best.map(|b| b.name),
                "ratio_to_best_baseline": match (ok, best) {
                    (true, Some(b)) => Some(r.median_ns() / b.median_ns()),
                    _ => None,
                },
                "abort_rate": r.abort_rate(),
                "aborts": r.stats.map(|s| s.aborts),
                "commits": r.stats.map(|s| s.commits),
                "fallbacks": r.stats.map(|s| s.fallbacks),
                "error": r.error,
            })
        })
        .collect();
    json!({
        "machine": machine.to_json(),
        "method": {
            "runs": plan.runs,
            "duration_ms": plan.duration.as_millis() as u64,
            "threads": plan.threads,
            "workloads": plan.workloads.iter().map(|w| w.code()).collect::<Vec<_>>(),
            "batch": harness::BATCH,
            "ns_per_op": "elapsed x threads / ops, per run; median and min-max over runs",
            "mops": "ops / elapsed / 1e6, aggregate over threads",
            "on_cpu": "thread CPU time / (elapsed x threads): below 1 when threads waited for a CPU or slept",
            "ratio": "median ns/op / the best baseline's median ns/op",
            "abort_rate": "aborts / (commits + compare failures + aborts) in a StatsHooks pass",
        },
        "results": rows,
        "unavailable": unavailable.iter().map(|(w, n, why)| json!({
            "workload": w.code(), "impl": n, "reason": why,
        })).collect::<Vec<_>>(),
        "targets": targets.iter().map(targets::Target::to_json).collect::<Vec<_>>(),
        "total_seconds": elapsed.as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_lists() {
        assert_eq!(parse_thread_list("1,2,8").unwrap().0, [1, 2, 8]);
        assert_eq!(parse_thread_list("8,1,1").unwrap().0, [1, 8]);
        assert_eq!(parse_thread_list("1:4").unwrap().0, [1, 2, 3, 4]);
        assert_eq!(parse_thread_list("2:8:2,1").unwrap().0, [1, 2, 4, 6, 8]);
        for bad in ["", "0", "x", "4:1", "1:2:3:4", "99999"] {
            assert!(parse_thread_list(bad).is_err(), "{bad}");
        }
    }
}
