//! The targets, as ratios measured in this run: reported as met or missed
//! (never asserted), each with the figures behind it and, when missed, what the
//! run's own measurements say about why.

use serde_json::{json, Value};

use super::machine::Machine;
use super::workloads::{self as w, WorkloadId};
use super::{Results, Row};

/// Whether the value must be at most or at least the bound.
#[derive(Clone, Copy, Debug)]
pub enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

impl Goal {
    fn met(self, v: f64) -> bool {
        match self {
            Goal::AtMost(b) => v <= b,
            Goal::AtLeast(b) => v >= b,
        }
    }
}

/// One target and its outcome in this run.
pub struct Target {
    /// What is compared, e.g. "counter, 1 thread: PerCpuCounter::add / AtomicI64::fetch_add time".
    pub label: String,
    pub value: Option<f64>,
    pub goal: Goal,
    /// How the value is printed (`x`, `%`).
    pub percent: bool,
    /// The figures the value comes from.
    pub detail: String,
    /// Why it was missed (from this run's measurements), or why it was not measured.
    pub note: Option<String>,
}

impl Target {
    pub fn met(&self) -> Option<bool> {
        self.value.map(|v| self.goal.met(v))
    }

    fn fmt(&self, v: f64) -> String {
        if self.percent {
            format!("{:.3}%", v * 100.0)
        } else {
            format!("{v:.2}x")
        }
    }

    /// `label: value (target <= bound): MET | MISSED | NOT MEASURED [figures]`.
    pub fn line(&self) -> String {
        let goal = match self.goal {
            Goal::AtMost(b) => format!("target <= {}", self.fmt(b)),
            Goal::AtLeast(b) => format!("target >= {}", self.fmt(b)),
        };
        match (self.value, self.met()) {
            (Some(v), Some(met)) => format!(
                "{}: {} ({goal}): {} [{}]",
                self.label,
                self.fmt(v),
                if met { "MET" } else { "MISSED" },
                self.detail
            ),
            _ => format!("{} ({goal}): NOT MEASURED", self.label),
        }
    }

    pub fn to_json(&self) -> Value {
        let (op, bound) = match self.goal {
            Goal::AtMost(b) => ("<=", b),
            Goal::AtLeast(b) => (">=", b),
        };
        json!({
            "target": self.label,
            "value": self.value,
            "op": op,
            "bound": bound,
            "met": self.met(),
            "detail": self.detail,
            "note": self.note,
        })
    }
}

fn ns(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ns")
    } else {
        format!("{v:.1} ns")
    }
}

/// A note about other processes taking CPU time from a comparison: measured (the
/// rows' threads were on a CPU less than they could have been: `min(1, nproc /
/// threads)`), else from the load average at the start.
fn load_note(m: &Machine, rows: &[&Row]) -> Option<String> {
    let n = m.cpus_online.max(1) as f64;
    let short = rows.iter().find_map(|row| {
        let expected = (n / row.threads as f64).min(1.0);
        let got = row.median_on_cpu();
        (got < 0.85 * expected).then_some((row, got, expected))
    });
    if let Some((row, got, expected)) = short {
        return Some(format!(
            "other processes held the CPUs: the {} threads of {} ran {:.0}% of the time \
             ({:.0}% possible)",
            row.threads,
            row.name,
            got * 100.0,
            expected * 100.0
        ));
    }
    m.busy().then(|| {
        format!(
            "the machine was busy: load average {:.2} on {} CPUs at the start, so the \
             threads shared the CPUs with other processes",
            m.load_start.map_or(0.0, |l| l[0]),
            m.cpus_online
        )
    })
}

/// Evaluates every target that this run's workloads and thread counts allow.
pub fn evaluate(r: &Results, m: &Machine, nproc: usize) -> Vec<Target> {
    let mut out = Vec::new();
    let n = nproc.max(1);
    let over = 4 * n;
    let not_measured = |what: &str| Some(format!("not measured: needs {what}"));

    // Counter, 1 thread: at most 0.16x an uncontended atomic (issue 12).
    {
        let rseq = r.get(WorkloadId::Counter, 1, w::COUNTER_RSEQ);
        let atomic = r.get(WorkloadId::Counter, 1, w::COUNTER_ATOMIC);
        let floor = r.get(WorkloadId::Counter, 1, w::COUNTER_TLS);
        let mut t = Target {
            label: format!(
                "counter, 1 thread: {} time / {} time",
                w::COUNTER_RSEQ,
                w::COUNTER_ATOMIC
            ),
            value: None,
            goal: Goal::AtMost(0.16),
            percent: false,
            detail: String::new(),
            note: not_measured("--workload counter --threads 1"),
        };
        if let (Some(a), Some(b)) = (rseq, atomic) {
            t.value = Some(a.median_ns() / b.median_ns());
            t.detail = format!("{} vs {}", ns(a.median_ns()), ns(b.median_ns()));
            t.note = None;
            if t.met() == Some(false) {
                let raw = r.get(WorkloadId::Counter, 1, w::COUNTER_RAW);
                let hoisted = r.get(WorkloadId::Counter, 1, w::COUNTER_HOISTED);
                t.note = Some(match (floor, raw, hoisted) {
                    (Some(f), Some(raw), Some(h)) => format!(
                        "same run: plain thread-local add {}, raw op {}, raw op with the area \
                         hoisted {}; differences: container - raw op {}, raw op - hoisted {}, \
                         hoisted - plain add {} (the sequence's descriptor store and CPU \
                         re-check). BENCHMARKS.md has the disassembly of the loop and \
                         what would close the gap",
                        ns(f.median_ns()),
                        ns(raw.median_ns()),
                        ns(h.median_ns()),
                        ns(a.median_ns() - raw.median_ns()),
                        ns(raw.median_ns() - h.median_ns()),
                        ns(h.median_ns() - f.median_ns()),
                    ),
                    (Some(f), _, _) => format!(
                        "a plain thread-local add takes {} here: the sequence costs {} over it",
                        ns(f.median_ns()),
                        ns(a.median_ns() - f.median_ns())
                    ),
                    _ => "see BENCHMARKS.md for the loop's disassembly".into(),
                });
            }
        }
        out.push(t);
    }

    // Counter, nproc threads: at least 30x the throughput of one shared atomic.
    {
        let mut t = Target {
            label: format!(
                "counter, {n} threads: {} throughput / shared {}",
                w::COUNTER_RSEQ,
                w::COUNTER_ATOMIC
            ),
            value: None,
            goal: Goal::AtLeast(30.0),
            percent: false,
            detail: String::new(),
            note: not_measured(&format!("--workload counter --threads {n}")),
        };
        if let (Some(a), Some(b)) = (
            r.get(WorkloadId::Counter, n, w::COUNTER_RSEQ),
            r.get(WorkloadId::Counter, n, w::COUNTER_ATOMIC),
        ) {
            t.value = Some(a.median_mops() / b.median_mops());
            t.detail = format!("{:.0} vs {:.1} Mops/s", a.median_mops(), b.median_mops());
            t.note = None;
            if t.met() == Some(false) {
                t.note = Some(format!(
                    "the shared atomic costs {} per op per thread here (the reference measured \
                     35 ns with 2 threads); 30x needs the per-CPU add at {} per thread, it \
                     takes {}: the same per-add cost as the 1-thread target{}",
                    ns(b.median_ns()),
                    ns(b.median_ns() / 30.0),
                    ns(a.median_ns()),
                    load_note(m, &[a, b])
                        .map(|l| format!("; {l}"))
                        .unwrap_or_default()
                ));
            }
        }
        out.push(t);
    }

    // Counter: nproc threads at least 0.9 x nproc times one thread's throughput.
    if n >= 2 {
        let mut t = Target {
            label: format!(
                "counter, {n} threads / 1 thread: {} throughput",
                w::COUNTER_RSEQ
            ),
            value: None,
            goal: Goal::AtLeast(0.9 * n as f64),
            percent: false,
            detail: String::new(),
            note: not_measured(&format!("--workload counter --threads 1,{n}")),
        };
        if let (Some(a), Some(b)) = (
            r.get(WorkloadId::Counter, n, w::COUNTER_RSEQ),
            r.get(WorkloadId::Counter, 1, w::COUNTER_RSEQ),
        ) {
            t.value = Some(a.median_mops() / b.median_mops());
            t.detail = format!("{:.0} vs {:.0} Mops/s", a.median_mops(), b.median_mops());
            t.note = None;
            if t.met() == Some(false) {
                t.note = Some(load_note(m, &[a, b]).unwrap_or_else(|| {
                    format!(
                        "per-thread cost went from {} to {} with {n} threads: the CPUs are \
                         not independent (hyperthreads or a shared host)",
                        ns(b.median_ns()),
                        ns(a.median_ns())
                    )
                }));
            }
        }
        out.push(t);
    }

    // Counter, oversubscribed: 95% of the nproc figure, aborts under 1%.
    {
        let mut t = Target {
            label: format!(
                "counter, {over} threads / {n} threads: {} throughput",
                w::COUNTER_RSEQ
            ),
            value: None,
            goal: Goal::AtLeast(0.95),
            percent: false,
            detail: String::new(),
            note: not_measured(&format!("--workload counter --threads {n},{over}")),
        };
        let a = r.get(WorkloadId::Counter, over, w::COUNTER_RSEQ);
        if let (Some(a), Some(b)) = (a, r.get(WorkloadId::Counter, n, w::COUNTER_RSEQ)) {
            t.value = Some(a.median_mops() / b.median_mops());
            t.detail = format!("{:.0} vs {:.0} Mops/s", a.median_mops(), b.median_mops());
            t.note = None;
            if t.met() == Some(false) {
                t.note = Some(load_note(m, &[a, b]).unwrap_or_else(|| {
                    "context switches between the runnable threads take CPU time from \
                     the counting"
                        .into()
                }));
            }
        }
        out.push(t);
        let mut t = Target {
            label: format!("counter, {over} threads: abort rate"),
            value: None,
            goal: Goal::AtMost(0.01),
            percent: true,
            detail: String::new(),
            note: not_measured(&format!(
                "--workload counter --threads {over} without --no-abort-pass"
            )),
        };
        if let Some((rate, s)) = a.and_then(|a| Some((a.abort_rate()?, a.stats?))) {
            t.value = Some(rate);
            t.detail = format!(
                "{} aborts in {} sequences, {} on the fallback",
                s.aborts,
                s.commits + s.aborts + s.compare_failures,
                s.fallbacks
            );
            t.note = None;
        }
        out.push(t);
    }

    // current_cpu(): 1.8x faster than sched_getcpu(), 5x the vDSO.
    for (base, bound) in [(w::CPU_GLIBC, 1.8), (w::CPU_VDSO, 5.0)] {
        let mut t = Target {
            label: format!("cpu id, 1 thread: {base} time / {} time", w::CPU_RSEQ),
            value: None,
            goal: Goal::AtLeast(bound),
            percent: false,
            detail: String::new(),
            note: not_measured("--workload cpu --threads 1 (and a reachable vDSO)"),
        };
        if let (Some(a), Some(b)) = (
            r.get(WorkloadId::Cpu, 1, w::CPU_RSEQ),
            r.get(WorkloadId::Cpu, 1, base),
        ) {
            t.value = Some(b.median_ns() / a.median_ns());
            t.detail = format!("{} vs {}", ns(b.median_ns()), ns(a.median_ns()));
            t.note = None;
            if t.met() == Some(false) {
                t.note = Some(format!(
                    "current_cpu() is {} here (reference: 0.55 ns): {} is {} (reference: {})",
                    ns(a.median_ns()),
                    base,
                    ns(b.median_ns()),
                    if base == w::CPU_GLIBC {
                        "1.1 ns"
                    } else {
                        "3.1 ns"
                    }
                ));
            }
        }
        out.push(t);
    }

    // Per-CPU lock, nproc threads: 10x std Mutex.
    out.push(throughput_target(
        r,
        m,
        WorkloadId::Lock,
        n,
        w::LOCK_RSEQ,
        w::LOCK_MUTEX,
        10.0,
        None,
    ));
    // Stack push+pop, nproc threads: 20x Mutex<Vec>.
    let alloc_note = r
        .get(WorkloadId::Stack, n, w::ALLOC)
        .zip(r.get(WorkloadId::Stack, n, w::STACK_RSEQ))
        .map(|(f, s)| {
            format!(
            "every push allocates a node and every pop frees one: Box alloc+free alone takes {} \
             per pair here, {:.0}% of PerCpuStack's {}",
            ns(f.median_ns()),
            100.0 * f.median_ns() / s.median_ns(),
            ns(s.median_ns())
        )
        });
    out.push(throughput_target(
        r,
        m,
        WorkloadId::Stack,
        n,
        w::STACK_RSEQ,
        w::MUTEX_VEC,
        20.0,
        alloc_note,
    ));
    // Issue 12: each container's 1-thread time as a ratio of the uncontended atomic
    // measured in the same run, and its nproc-thread scaling.
    for (wl, name, bound) in [
        (WorkloadId::Counter, w::COUNTER_STATIC, 0.16),
        (WorkloadId::Lock, w::LOCK_RSEQ, 0.27),
        (WorkloadId::Stack, w::STACK_NODES, 0.45),
        (WorkloadId::Buffer, w::BUFFER_RSEQ, 0.55),
        (WorkloadId::Pool, w::POOL_RSEQ, 0.5),
    ] {
        out.push(atomic_ratio_target(r, wl, name, bound));
    }
    if n >= 2 {
        for (wl, name) in [
            (WorkloadId::Lock, w::LOCK_RSEQ),
            (WorkloadId::Stack, w::STACK_NODES),
            (WorkloadId::Buffer, w::BUFFER_RSEQ),
            (WorkloadId::Pool, w::POOL_RSEQ),
        ] {
            out.push(scaling_target(r, m, wl, name, n));
        }
    }
    out
}

/// `name`'s 1-thread time over the uncontended `AtomicI64::fetch_add` of the counter
/// workload in the same run.
fn atomic_ratio_target(r: &Results, wl: WorkloadId, name: &str, bound: f64) -> Target {
    let mut t = Target {
        label: format!(
            "{}, 1 thread: {name} time / {} time",
            wl.code(),
            w::COUNTER_ATOMIC
        ),
        value: None,
        goal: Goal::AtMost(bound),
        percent: false,
        detail: String::new(),
        note: Some(format!(
            "not measured: needs --workload counter,{} --threads 1",
            wl.code()
        )),
    };
    if let (Some(a), Some(b)) = (
        r.get(wl, 1, name),
        r.get(WorkloadId::Counter, 1, w::COUNTER_ATOMIC),
    ) {
        t.value = Some(a.median_ns() / b.median_ns());
        t.detail = format!("{} vs {}", ns(a.median_ns()), ns(b.median_ns()));
        t.note = (t.met() == Some(false))
            .then(|| "BENCHMARKS.md has the loop's disassembly and what it costs".into());
    }
    t
}

/// `name`'s throughput at `n` threads over its throughput at 1 (at least 0.9 x n).
fn scaling_target(r: &Results, m: &Machine, wl: WorkloadId, name: &str, n: usize) -> Target {
    let mut t = Target {
        label: format!("{}, {n} threads / 1 thread: {name} throughput", wl.code()),
        value: None,
        goal: Goal::AtLeast(0.9 * n as f64),
        percent: false,
        detail: String::new(),
        note: Some(format!(
            "not measured: needs --workload {} --threads 1,{n}",
            wl.code()
        )),
    };
    if let (Some(a), Some(b)) = (r.get(wl, n, name), r.get(wl, 1, name)) {
        t.value = Some(a.median_mops() / b.median_mops());
        t.detail = format!("{:.1} vs {:.1} Mops/s", a.median_mops(), b.median_mops());
        t.note = None;
        if t.met() == Some(false) {
            t.note = Some(load_note(m, &[a, b]).unwrap_or_else(|| {
                format!(
                    "per-thread cost went from {} to {} with {n} threads",
                    ns(b.median_ns()),
                    ns(a.median_ns())
                )
            }));
        }
    }
    t
}

#[allow(clippy::too_many_arguments)]
fn throughput_target(
    r: &Results,
    m: &Machine,
    wl: WorkloadId,
    n: usize,
    rseq: &str,
    base: &str,
    bound: f64,
    why: Option<String>,
) -> Target {
    let mut t = Target {
        label: format!("{}, {n} threads: {rseq} throughput / {base}", wl.code()),
        value: None,
        goal: Goal::AtLeast(bound),
        percent: false,
        detail: String::new(),
        note: Some(format!(
            "not measured: needs --workload {} --threads {n}",
            wl.code()
        )),
    };
    if let (Some(a), Some(b)) = (r.get(wl, n, rseq), r.get(wl, n, base)) {
        t.value = Some(a.median_mops() / b.median_mops());
        t.detail = format!(
            "{:.1} vs {:.1} Mops/s; {} vs {} per op per thread",
            a.median_mops(),
            b.median_mops(),
            ns(a.median_ns()),
            ns(b.median_ns())
        );
        t.note = None;
        if t.met() == Some(false) {
            let notes: Vec<String> = [load_note(m, &[a, b]), why].into_iter().flatten().collect();
            t.note = Some(if notes.is_empty() {
                format!("{base} is cheap when only {n} threads contend on this machine")
            } else {
                notes.join("; ")
            });
        }
    }
    t
}
