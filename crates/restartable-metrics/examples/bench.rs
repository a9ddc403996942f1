//! restartable-metrics against metrics-exporter-prometheus, measured in the same run.
//!
//! ```sh
//! cargo run --release -p restartable-metrics --example bench            # about 20 s
//! cargo run --release -p restartable-metrics --example bench -- --floors # about 30 s: adds a bare atomic / PerCpuCounter
//! cargo run --release -p restartable-metrics --example bench -- --quick  # about 5 s
//! cargo run --release -p restartable-metrics --example bench -- --json --threads 1,2 --runs 9
//! ```
//!
//! Workloads:
//! - `cached`: `counter.increment(1)` on a `metrics::Counter` registered once and
//!   cloned into each thread (the handle a hot path keeps);
//! - `macro`: `counter!("bench_requests").increment(1)`, so every call also looks the
//!   key up in the recorder (the facade's macro with a thread-local recorder);
//!
//!   both on ONE counter shared by 1, 2 and 8 threads;
//! - `render`: rendering 10,000 counter series (100 names × 100 label values, every
//!   name described) to the text format.
//!
//! Each run builds a fresh recorder of each kind; the two kinds alternate within a
//! run (which goes first alternates too). Figures are medians over the runs, with
//! the min and max; the ratio is ours over theirs for throughput and theirs over ours
//! for render time (so > 1 means we are faster). After every counting run both
//! exports are checked to hold exactly the increments made (a mismatch exits 1).

use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use metrics::{counter, Key, Level, Metadata, Recorder};
use metrics_exporter_prometheus::PrometheusBuilder;
use restartable_metrics::PerCpuBuilder;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "restartable-metrics vs metrics-exporter-prometheus, in one run")]
struct Args {
    /// Thread counts for the counting workloads.
    #[arg(long, value_delimiter = ',', default_value = "1,2,8")]
    threads: Vec<usize>,
    /// Runs per row (medians are taken over them).
    #[arg(long)]
    runs: Option<usize>,
    /// Length of one counting run, in milliseconds.
    #[arg(long)]
    duration_ms: Option<u64>,
    /// Series in the render workload.
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// Which workloads.
    #[arg(long, value_delimiter = ',', default_values_t = vec![Workload::Cached, Workload::Macro, Workload::Render])]
    workload: Vec<Workload>,
    /// 3 runs × 50 ms.
    #[arg(long)]
    quick: bool,
    /// Also measure, for the cached workload, a bare shared `AtomicU64::fetch_add` and a
    /// bare `PerCpuCounter::add` (what each recorder's increment costs at the least).
    #[arg(long)]
    floors: bool,
    /// One JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    Cached,
    Macro,
    Render,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Workload::Cached => "cached",
            Workload::Macro => "macro",
            Workload::Render => "render",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ours,
    Prometheus,
}

/// This thread's CPU time (getrusage(RUSAGE_THREAD)).
fn thread_cpu_time() -> Duration {
    // SAFETY: getrusage writes one `rusage` into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a `rusage`; RUSAGE_THREAD is a valid `who`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Ours => "restartable-metrics",
            Kind::Prometheus => "metrics-exporter-prometheus",
        }
    }
}

/// A recorder and its render function.
struct Subject {
    recorder: Box<dyn Recorder + Send + Sync>,
    render: Box<dyn Fn() -> String + Send + Sync>,
}

fn subject(kind: Kind) -> Subject {
    match kind {
        Kind::Ours => {
            let r = PerCpuBuilder::new().build_recorder();
            let h = r.handle();
            Subject {
                recorder: Box::new(r),
                render: Box::new(move || h.render()),
            }
        }
        Kind::Prometheus => {
            let r = PrometheusBuilder::new().build_recorder();
            let h = r.handle();
            Subject {
                recorder: Box::new(r),
                render: Box::new(move || h.render()),
            }
        }
    }
}

static META: Metadata<'static> = Metadata::new("bench", Level::INFO, Some("bench"));
const BATCH: u64 = 256;

/// What one counting run measured.
struct Run {
    /// Aggregate increments per second.
    rate: f64,
    /// Increments made.
    ops: u64,
    /// The threads' CPU time over their wall time, over `min(threads, nproc)`: how
    /// much of the time they really ran side by side (the machine is shared).
    on_cpu: f64,
    /// Thread CPU time per increment, in ns (what an increment costs while running).
    cpu_ns: f64,
}

/// Runs `body(stop)` on `threads` threads started together, for `dur`; `body` returns
/// the operations it made.
fn timed<F>(threads: usize, dur: Duration, body: F) -> Run
where
    F: Fn(&AtomicBool) -> u64 + Sync,
{
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    let per_thread: Vec<(u64, Duration, Duration)> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (stop, barrier, body) = (&stop, &barrier, &body);
                sc.spawn(move || {
                    barrier.wait();
                    let (t0, c0) = (Instant::now(), thread_cpu_time());
                    let ops = body(stop);
                    (ops, t0.elapsed(), thread_cpu_time() - c0)
                })
            })
            .collect();
        barrier.wait();
        std::thread::sleep(dur);
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect()
    });
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let wall: f64 = per_thread.iter().map(|p| p.1.as_secs_f64()).sum();
    let cpu: f64 = per_thread.iter().map(|p| p.2.as_secs_f64()).sum();
    Run {
        rate: per_thread
            .iter()
            .map(|(ops, t, _)| *ops as f64 / t.as_secs_f64())
            .sum(),
        ops: per_thread.iter().map(|p| p.0).sum(),
        on_cpu: (cpu / wall) * threads as f64 / threads.min(nproc) as f64,
        cpu_ns: cpu * 1e9 / per_thread.iter().map(|p| p.0).sum::<u64>().max(1) as f64,
    }
}

/// The floors: what one shared `AtomicU64::fetch_add` and one direct
/// `PerCpuCounter::add` (no facade, no dynamic call) do under the same threads.
fn floor_run(which: usize, threads: usize, dur: Duration) -> Run {
    let atomic = AtomicU64::new(0);
    let percpu = restartable::PerCpuCounter::new();
    timed(threads, dur, |stop| {
        let mut ops = 0;
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..BATCH {
                if which == 0 {
                    atomic.fetch_add(1, Ordering::Relaxed);
                } else {
                    percpu.add(1);
                }
            }
            ops += BATCH;
        }
        ops
    })
}

/// Aggregate increments per second of `threads` threads on one counter, and the
/// number of increments made.
fn count_run(s: &Subject, workload: Workload, threads: usize, dur: Duration) -> Run {
    let rec: &(dyn Recorder + Send + Sync) = &*s.recorder;
    match workload {
        Workload::Cached => {
            let c = rec.register_counter(&Key::from_static_name("bench_requests"), &META);
            timed(threads, dur, |stop| {
                let c = c.clone();
                let mut ops = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..BATCH {
                        c.increment(1);
                    }
                    ops += BATCH;
                }
                ops
            })
        }
        Workload::Macro => timed(threads, dur, |stop| {
            metrics::with_local_recorder(rec, || {
                let mut ops = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..BATCH {
                        counter!("bench_requests").increment(1);
                    }
                    ops += BATCH;
                }
                ops
            })
        }),
        Workload::Render => unreachable!(),
    }
}

/// The value of the unlabelled series `name` in a rendering.
fn value_of(text: &str, name: &str) -> Option<u64> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).ok()?;
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && s.labels.is_empty())
        .and_then(|s| match s.value {
            prometheus_parse::Value::Counter(v) => Some(v as u64),
            _ => None,
        })
}

/// A recorder holding `series` counter series; returns it with the time of one render
/// per run.
fn render_subject(kind: Kind, series: usize) -> Subject {
    let s = subject(kind);
    let names = series.div_ceil(100);
    for n in 0..names {
        let name = format!("bench_family_{n}");
        s.recorder.describe_counter(
            name.clone().into(),
            Some(metrics::Unit::Count),
            "A benchmark counter family".into(),
        );
        for i in 0..100.min(series - n * 100) {
            let key = Key::from_parts(name.clone(), vec![metrics::Label::new("id", i.to_string())]);
            s.recorder
                .register_counter(&key, &META)
                .increment((n * 100 + i) as u64);
        }
    }
    s
}

/// One counting row of the table.
struct Row {
    workload: Workload,
    threads: usize,
    ours: Stats,
    theirs: Stats,
    on_cpu: Stats,
    /// CPU ns per increment: ours, theirs.
    cpu_ns: [Stats; 2],
    /// `AtomicU64::fetch_add` and direct `PerCpuCounter::add`, when measured.
    floors: Option<[Stats; 2]>,
}

#[derive(Debug, Clone)]
struct Stats {
    median: f64,
    min: f64,
    max: f64,
    all: Vec<f64>,
}

fn stats(mut v: Vec<f64>) -> Stats {
    let all = v.clone();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Stats {
        median,
        min: v[0],
        max: v[n - 1],
        all,
    }
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    json!({
        "cpu": cpu,
        "nproc": nproc,
        "kernel": kernel,
        "rseq": restartable::status().to_string(),
    })
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let load_start = loadavg();
    let runs = args.runs.unwrap_or(if args.quick { 3 } else { 7 }).max(1);
    let dur = Duration::from_millis(
        args.duration_ms
            .unwrap_or(if args.quick { 50 } else { 200 }),
    );
    if args.threads.contains(&0) || args.series == 0 {
        eprintln!("error: thread counts and --series must be at least 1");
        return ExitCode::from(2);
    }
    let kinds = [Kind::Ours, Kind::Prometheus];
    let mut rows = Vec::new();
    let mut lost = Vec::new();

    for &workload in args.workload.iter().filter(|w| **w != Workload::Render) {
        for &threads in &args.threads {
            let mut rates = [Vec::new(), Vec::new()];
            let mut cpu_ns = [Vec::new(), Vec::new()];
            let mut on_cpu = Vec::new();
            let mut floors = [Vec::new(), Vec::new()];
            for run in 0..runs {
                let order: Vec<usize> = if run % 2 == 0 { vec![0, 1] } else { vec![1, 0] };
                for k in order {
                    let s = subject(kinds[k]);
                    let r = count_run(&s, workload, threads, dur);
                    let seen = value_of(&(s.render)(), "bench_requests");
                    if seen != Some(r.ops) {
                        lost.push(format!(
                            "{} {workload} {threads} threads: made {}, exported {seen:?}",
                            kinds[k].name(),
                            r.ops
                        ));
                    }
                    rates[k].push(r.rate / 1e6);
                    cpu_ns[k].push(r.cpu_ns);
                    on_cpu.push(r.on_cpu);
                }
                if workload == Workload::Cached && args.floors {
                    for (f, v) in floors.iter_mut().enumerate() {
                        v.push(floor_run(f, threads, dur).rate / 1e6);
                    }
                }
            }
            let [ours, theirs] = rates.map(stats);
            let floors = (!floors[0].is_empty()).then(|| floors.map(stats));
            rows.push(Row {
                workload,
                threads,
                ours,
                theirs,
                on_cpu: stats(on_cpu),
                cpu_ns: cpu_ns.map(stats),
                floors,
            });
        }
    }

    let mut render_row = None;
    if args.workload.contains(&Workload::Render) {
        let subjects = kinds.map(|k| render_subject(k, args.series));
        let texts = subjects.each_ref().map(|s| (s.render)());
        let mut sorted = texts.each_ref().map(|t| {
            let mut l: Vec<&str> = t.lines().collect();
            l.sort_unstable();
            l
        });
        if sorted[0] != sorted[1] {
            lost.push("render: the two exports of the same series differ".into());
        }
        let series_lines = sorted[0]
            .iter()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count();
        sorted[0].clear();
        let render_runs = (runs * 3).max(5);
        let mut times = [Vec::new(), Vec::new()];
        for run in 0..render_runs {
            let order: Vec<usize> = if run % 2 == 0 { vec![0, 1] } else { vec![1, 0] };
            for k in order {
                let t0 = Instant::now();
                let text = (subjects[k].render)();
                times[k].push(t0.elapsed().as_secs_f64() * 1e3);
                std::hint::black_box(text);
            }
        }
        let [ours, theirs] = times.map(stats);
        render_row = Some((series_lines, ours, theirs));
    }

    let targets = {
        let find = |w: Workload, t: usize| {
            rows.iter()
                .find(|r| r.workload == w && r.threads == t)
                .map(|r| r.ours.median / r.theirs.median)
        };
        let mut v = Vec::new();
        if let Some(r) = find(Workload::Cached, 2) {
            v.push(("cached, 2 threads: >= 10x", r, r >= 10.0));
        }
        if let Some(r) = find(Workload::Cached, 1) {
            v.push(("cached, 1 thread: >= 1x", r, r >= 1.0));
        }
        if let Some(r) = find(Workload::Macro, 1) {
            v.push(("macro, 1 thread: >= 1x", r, r >= 1.0));
        }
        if let Some((_, o, t)) = &render_row {
            let r = t.median / o.median;
            v.push(("render: >= 1x (their time / ours)", r, r >= 1.0));
        }
        v
    };

    let method = format!(
        "{runs} runs x {} ms per row, one counter shared by all threads, increments in batches of {BATCH}; \
         a fresh recorder of each kind per run, the two alternating (order alternates per run); \
         throughput = sum over threads of increments / own elapsed time; on-CPU = thread CPU time / \
         (elapsed x min(threads, nproc)); CPU ns/op = thread CPU time / increments; medians (min-max); \
         render: {} renders of each, alternating",
        dur.as_millis(),
        (runs * 3).max(5)
    );

    if args.json {
        let j = |s: &Stats| json!({"median": s.median, "min": s.min, "max": s.max, "runs": s.all});
        let results: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "workload": r.workload.to_string(), "threads": r.threads,
                    "ours_mops": j(&r.ours),
                    "prometheus_mops": j(&r.theirs),
                    "ratio": r.ours.median / r.theirs.median,
                    "on_cpu": j(&r.on_cpu),
                    "ours_cpu_ns_per_op": j(&r.cpu_ns[0]),
                    "prometheus_cpu_ns_per_op": j(&r.cpu_ns[1]),
                    "floor_atomic_mops": r.floors.as_ref().map(|f| j(&f[0])),
                    "floor_percpu_counter_mops": r.floors.as_ref().map(|f| j(&f[1])),
                })
            })
            .collect();
        let render = render_row.as_ref().map(|(n, o, p)| {
            json!({
                "series": n,
                "ours_ms": {"median": o.median, "min": o.min, "max": o.max, "runs": o.all},
                "prometheus_ms": {"median": p.median, "min": p.min, "max": p.max, "runs": p.all},
                "ratio": p.median / o.median,
            })
        });
        let targets: Vec<_> = targets
            .iter()
            .map(|(n, r, ok)| json!({"target": n, "ratio": r, "met": ok}))
            .collect();
        let out = json!({"machine": machine(), "load_avg_start": load_start, "load_avg_end": loadavg(), "method": method, "results": results, "render": render, "targets": targets, "errors": lost});
        println!("{}", serde_json::to_string_pretty(&out).expect("json"));
    } else {
        let m = machine();
        println!(
            "machine: {} ({} CPUs), Linux {}, {}",
            m["cpu"].as_str().unwrap_or(""),
            m["nproc"],
            m["kernel"].as_str().unwrap_or(""),
            m["rseq"].as_str().unwrap_or("")
        );
        println!(
            "load avg: {load_start} at the start, {} at the end (1, 5, 15 min)",
            loadavg()
        );
        println!("method: {method}\n");
        println!(
            "{:<8} {:>7}  {:>28}  {:>28}  {:>7}  {:>6}",
            "workload",
            "threads",
            "restartable-metrics Mops/s",
            "prometheus exporter Mops/s",
            "ratio",
            "on-CPU"
        );
        for r in &rows {
            let (o, p) = (&r.ours, &r.theirs);
            println!(
                "{:<8} {:>7}  {:>10.1} ({:>6.1}-{:>6.1})  {:>10.1} ({:>6.1}-{:>6.1})  {:>6.1}x  {:>5.0}%  {:>7.2} | {:>6.2}",
                r.workload.to_string(), r.threads, o.median, o.min, o.max, p.median, p.min, p.max,
                o.median / p.median, r.on_cpu.median * 100.0, r.cpu_ns[0].median, r.cpu_ns[1].median
            );
            if let Some([a, c]) = &r.floors {
                println!(
                    "{:<8} {:>7}  {:>10.1} ({:>6.1}-{:>6.1})  {:>10.1} ({:>6.1}-{:>6.1})  (floors: bare PerCpuCounter::add | bare AtomicU64::fetch_add)",
                    "", "", c.median, c.min, c.max, a.median, a.min, a.max
                );
            }
        }
        if let Some((n, o, p)) = &render_row {
            println!(
                "\nrender {n} series: restartable-metrics {:.2} ms ({:.2}-{:.2}), prometheus exporter {:.2} ms ({:.2}-{:.2}), {:.1}x",
                o.median, o.min, o.max, p.median, p.min, p.max, p.median / o.median
            );
        }
        println!("\ntargets:");
        for (n, r, ok) in &targets {
            println!("  {n}: {r:.1}x {}", if *ok { "met" } else { "NOT met" });
        }
        for l in &lost {
            eprintln!("error: {l}");
        }
    }
    if lost.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
