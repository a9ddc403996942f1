//! The three kinds of metric cell behind the `metrics` handles: a per-CPU counter, a
//! gauge whose increments are per-CPU and whose `set` is exact, and a histogram that
//! buffers samples until a render drains them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{CounterFn, GaugeFn, HistogramFn, Key};

use crate::format;
use metrics_util::registry::Storage;
use metrics_util::storage::AtomicBucket;
use quanta::Instant;
use restartable::PerCpuCounter;

/// A `metrics` counter on a [`PerCpuCounter`]: `increment` is one restartable
/// sequence on the current CPU's slot; the value is the sum over CPUs.
///
/// Values are `u64` modulo 2^64 as in the facade (the per-CPU slots add `i64`s with
/// wrapping, which is the same arithmetic).
#[derive(Debug, Default)]
pub struct CounterCell {
    pub(crate) series: Series,
    counter: PerCpuCounter,
    /// Serialises `absolute` calls (rare: mirroring an external counter); never taken
    /// by `increment`.
    absolute: Mutex<()>,
}

impl CounterCell {
    /// A counter at 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current value: exact once writers stop; while they run, a value the
    /// counter held between the start and the end of the call.
    pub fn value(&self) -> u64 {
        self.counter.sum() as u64
    }
}

impl CounterFn for CounterCell {
    #[inline]
    fn increment(&self, value: u64) {
        self.counter.add(value as i64)
    }

    /// Raises the counter to at least `value` (the facade's contract, which the
    /// Prometheus exporter implements with `fetch_max`). Increments that run at the
    /// same time are kept on top.
    fn absolute(&self, value: u64) {
        let _serial = self.absolute.lock().unwrap_or_else(PoisonError::into_inner);
        // With only increments running, `cur` is a value the counter held during the
        // call, so it is at most the value now: the counter ends at `value` plus the
        // increments that came in meanwhile, never below `value`.
        let cur = self.value();
        if value > cur {
            self.counter.add(value.wrapping_sub(cur) as i64);
        }
    }
}

/// The part of a gauge that `set` defines.
#[derive(Debug, Default, Clone, Copy)]
struct GaugeBase {
    /// The last value set.
    base: f64,
    /// `deltas.sum()` as the last `set` read it: what had been added before.
    offset: i64,
}

/// Deltas up to this magnitude are exact in both `i64` and `f64`.
const MAX_EXACT_DELTA: f64 = (1u64 << 53) as f64;

/// A `metrics` gauge: integral increments and decrements (the common `+1`/`-1`) are
/// per-CPU adds; fractional ones go to one shared atomic `f64`; `set` takes a
/// per-gauge lock (never taken by increments) and defines the value from then on.
///
/// Value = `base + (deltas.sum() - offset) + frac`, where `set(v)` stores `base = v`,
/// `offset = deltas.sum()` (read slot by slot) and `frac = 0`.
///
/// # What `set` guarantees
/// - Every increment or decrement that returned before `set(v)` started is replaced
///   by `v`; every one that starts after `set(v)` returned is added on top of `v`.
/// - One that runs at the same time as the `set` is counted exactly once: either
///   replaced (it landed in a slot before `set` read that slot) or on top of `v`
///   (after). None is lost and none is counted twice, so once writers stop and the
///   last `set` is done, the value is `v` plus a subset of the adds that overlapped it.
/// - What is not promised: two adds that both overlap a `set` on different CPUs may
///   be split against their real-time order (a `-1` that finished before a `+1`
///   started can be the one replaced while the `+1` is kept), because `set` reads
///   the CPU slots one by one. A gauge written only by `set` is exact; one written
///   only by increments and decrements is exact once they pause (a read while they
///   run sums the slots one by one, like [`PerCpuCounter::sum`]); mixing `set` with
///   adds that race it is as meaningful as the race itself.
/// - Reads (renders) take the same lock, so a scrape never shows a new `base` with
///   an old `offset`.
#[derive(Debug, Default)]
pub struct GaugeCell {
    pub(crate) series: Series,
    deltas: PerCpuCounter,
    /// `f64` bits: the sum of non-integral deltas since the last `set`.
    frac: AtomicU64,
    state: Mutex<GaugeBase>,
}

impl GaugeCell {
    /// A gauge at 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current value (see the type's docs for what it means under concurrent
    /// writers).
    pub fn value(&self) -> f64 {
        let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let ints = self.deltas.sum().wrapping_sub(st.offset);
        let frac = self.frac.load(Ordering::Acquire);
        // Terms that are zero are left out, so that a value set stays bit for bit what
        // was set (`-0.0 + 0.0` would be `0.0`).
        let mut v = st.base;
        if ints != 0 {
            v += ints as f64;
        }
        if frac != 0 {
            v += f64::from_bits(frac);
        }
        v
    }

    #[inline]
    fn add(&self, delta: f64) {
        if delta.fract() == 0.0 && delta.abs() <= MAX_EXACT_DELTA {
            self.deltas.add(delta as i64);
        } else {
            self.add_frac(delta);
        }
    }

    #[cold]
    fn add_frac(&self, delta: f64) {
        let _ = self
            .frac
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + delta).to_bits())
            });
    }
}

impl GaugeFn for GaugeCell {
    #[inline]
    fn increment(&self, value: f64) {
        self.add(value)
    }

    #[inline]
    fn decrement(&self, value: f64) {
        self.add(-value)
    }

    fn set(&self, value: f64) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.offset = self.deltas.sum();
        self.frac.store(0f64.to_bits(), Ordering::Release);
        st.base = value;
    }
}

/// A `metrics` histogram: samples (with the time they were recorded, for the
/// summaries' rolling window) wait in a lock-free bucket, the same store the
/// Prometheus exporter uses, until a render drains them into the distribution.
#[derive(Debug, Default)]
pub struct HistogramCell {
    pub(crate) series: Series,
    samples: AtomicBucket<(f64, Instant)>,
}

impl HistogramCell {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hands every sample recorded so far to `f` (in blocks) and removes them.
    pub fn drain_with(&self, mut f: impl FnMut(&[(f64, Instant)])) {
        self.samples.clear_with(|block| f(block));
    }
}

impl HistogramFn for HistogramCell {
    #[inline]
    fn record(&self, value: f64) {
        self.samples.push((value, Instant::now()));
    }
}

/// A cell that renders as one sample: its series and its current value.
pub(crate) trait Sampled {
    /// The series the cell is written under.
    fn series(&self) -> &Series;
    /// The value to write, read once per render.
    fn sample(&self) -> impl std::fmt::Display;
}

impl Sampled for CounterCell {
    fn series(&self) -> &Series {
        &self.series
    }
    fn sample(&self) -> impl std::fmt::Display {
        self.value()
    }
}

impl Sampled for GaugeCell {
    fn series(&self) -> &Series {
        &self.series
    }
    fn sample(&self) -> impl std::fmt::Display {
        self.value()
    }
}

/// A series' name and labels as they are written out, computed once when the key is
/// first registered (renders then only format values).
#[derive(Debug, Default, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Series {
    /// The sanitised metric name (before unit and suffixes).
    pub name: String,
    /// `k="v",...`: global labels merged with the key's, sanitised and escaped.
    pub labels: String,
}

/// [`Storage`] for `metrics_util`'s registry: one shared cell per key, which knows
/// its rendered series.
#[derive(Debug, Default, Clone)]
pub struct PerCpuStorage {
    global_labels: Arc<Vec<(String, String)>>,
}

impl PerCpuStorage {
    /// Storage whose series carry `global_labels` (an ordered map: unique keys).
    pub fn new(global_labels: Vec<(String, String)>) -> Self {
        PerCpuStorage {
            global_labels: Arc::new(global_labels),
        }
    }

    fn series(&self, key: &Key) -> Series {
        Series {
            name: format::sanitize_metric_name(key.name()),
            labels: format::render_labels(
                &self.global_labels,
                key.labels().map(|l| (l.key(), l.value())),
            ),
        }
    }
}

impl Storage<Key> for PerCpuStorage {
    type Counter = Arc<CounterCell>;
    type Gauge = Arc<GaugeCell>;
    type Histogram = Arc<HistogramCell>;

    fn counter(&self, key: &Key) -> Self::Counter {
        Arc::new(CounterCell {
            series: self.series(key),
            ..CounterCell::default()
        })
    }

    fn gauge(&self, key: &Key) -> Self::Gauge {
        Arc::new(GaugeCell {
            series: self.series(key),
            ..GaugeCell::default()
        })
    }

    fn histogram(&self, key: &Key) -> Self::Histogram {
        Arc::new(HistogramCell {
            series: self.series(key),
            ..HistogramCell::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_increment_and_absolute() {
        let c = CounterCell::new();
        c.increment(5);
        assert_eq!(c.value(), 5);
        c.absolute(3);
        assert_eq!(c.value(), 5, "absolute below the value leaves it");
        c.absolute(40);
        assert_eq!(c.value(), 40);
        c.increment(2);
        assert_eq!(c.value(), 42);
    }

    #[test]
    fn counter_wraps_like_u64() {
        let c = CounterCell::new();
        c.increment(u64::MAX);
        assert_eq!(c.value(), u64::MAX);
        c.increment(2);
        assert_eq!(c.value(), 1);
    }

    #[test]
    fn gauge_set_then_adds() {
        let g = GaugeCell::new();
        g.increment(5.0);
        g.decrement(2.0);
        assert_eq!(g.value(), 3.0);
        g.set(10.0);
        assert_eq!(g.value(), 10.0);
        g.increment(3.0);
        g.decrement(1.0);
        assert_eq!(g.value(), 12.0);
        g.increment(0.5);
        assert_eq!(g.value(), 12.5);
        g.set(-1.25);
        assert_eq!(g.value(), -1.25);
        g.increment(1e300);
        assert_eq!(g.value(), 1e300 - 1.25);
        g.set(f64::NAN);
        assert!(g.value().is_nan());
        g.set(0.0);
        assert_eq!(g.value(), 0.0);
    }

    #[test]
    fn histogram_drains_everything_once() {
        let h = HistogramCell::new();
        for i in 0..1000 {
            h.record(i as f64);
        }
        let mut seen = Vec::new();
        h.drain_with(|b| seen.extend(b.iter().map(|s| s.0)));
        seen.sort_by(f64::total_cmp);
        assert_eq!(seen, (0..1000).map(|i| i as f64).collect::<Vec<_>>());
        let mut again = 0;
        h.drain_with(|b| again += b.len());
        assert_eq!(again, 0);
    }
}
