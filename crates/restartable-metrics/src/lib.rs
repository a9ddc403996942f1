//! A [`metrics`] recorder whose counters are per-CPU, exported in the Prometheus text
//! format.
//!
//! `counter!("requests").increment(1)` through `metrics-exporter-prometheus` is a
//! `lock xadd` on one shared cache line, which every core fights over. Here it is one
//! restartable sequence on the current CPU's slot of a [`restartable::PerCpuCounter`]
//! (a plain `add`, no atomic instruction); a scrape sums the slots.
//!
//! - **Counters**: per-CPU; `absolute` raises the value to at least its argument,
//!   as the facade defines.
//! - **Gauges**: integral increments and decrements are per-CPU adds; `set` is exact
//!   (see [`GaugeCell`] for what it guarantees against concurrent adds).
//! - **Histograms**: samples go to the same lock-free bucket the Prometheus exporter
//!   uses and are drained at render time into a summary (quantiles over a rolling
//!   window, the default) or a bucket histogram ([`PerCpuBuilder::set_buckets`]).
//! - **Export**: [`PerCpuHandle::render`] gives the text exposition format, written
//!   like `metrics-exporter-prometheus` 0.18 writes it (same names, units, suffixes,
//!   label escaping, `# HELP`/`# TYPE` lines; series sorted for stable output);
//!   [`PerCpuHandle::serve`] answers `GET /metrics` on the address you choose.
//!
//! # Differences from `metrics-exporter-prometheus`
//!
//! Checked by running both (`tests/same_as_prometheus.rs` compares them series by
//! series, in several configurations):
//! - Series come out sorted (the exporter's order is a hash map's).
//! - [`PerCpuBuilder::set_buckets`] sorts its bounds and drops duplicate and
//!   non-finite ones (none finite is an error, as an empty list is), and
//!   [`PerCpuBuilder::set_quantiles`] drops duplicates: the exporter writes a series
//!   twice for a value given twice, an `le="inf"` bucket beside `le="+Inf"`, and with
//!   bounds out of order wrong counts (`tests/bounds.rs`).
//! - An empty metric name or label key is written `_` (the exporter writes it empty,
//!   which fails the whole scrape; `tests/empty_names.rs`).
//! - Summary quantiles cover every sample recorded since the last render. The
//!   exporter 0.18 drains samples in blocks of 64, newest first, and drops from the
//!   quantiles (not from `_count`/`_sum`) every sample older than the first one it
//!   handled, so after a burst of more than 64 samples its quantiles describe only
//!   the newest block.
//! - Gauges with fractional increments add them in another order (integral ones on
//!   per-CPU slots, fractional ones in a shared `f64`), so the last bit of such a
//!   value can differ; integral and `set` values are the same.
//! - Histogram samples are drained and descriptions published at each render (or
//!   [`PerCpuHandle::run_upkeep`]); the exporter also does it every 5 s from its
//!   listener. No idle timeouts, push gateway, protobuf or native histograms.
//! - `install` serves HTTP/1.1 on `std::net` (a thread per connection, at most 32,
//!   each with deadlines; request heads parsed by `httparse`; every response closes
//!   its connection), not hyper on tokio.
//!
//! # Examples
//!
//! Installing takes the same line as the Prometheus exporter's builder:
//!
//! ```no_run
//! // metrics_exporter_prometheus::PrometheusBuilder::new().with_http_listener(addr).install()?;
//! let addr: std::net::SocketAddr = "127.0.0.1:9000".parse()?;
//! restartable_metrics::PerCpuBuilder::new().with_http_listener(addr).install()?;
//! metrics::counter!("requests_total", "path" => "/").increment(1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Or keep a handle, render to a string, and serve when you like:
//!
//! ```
//! let recorder = restartable_metrics::PerCpuBuilder::new().build_recorder();
//! let handle = recorder.handle();
//! metrics::with_local_recorder(&recorder, || {
//!     metrics::describe_counter!("requests", "Requests served");
//!     let requests = metrics::counter!("requests", "path" => "/");
//!     requests.increment(3);
//!     metrics::gauge!("in_flight").set(2.0);
//! });
//! let text = handle.render();
//! assert!(text.contains("# HELP requests Requests served\n"));
//! assert!(text.contains("# TYPE requests counter\nrequests{path=\"/\"} 3\n"));
//! assert!(text.contains("in_flight 2\n"));
//! ```

#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::Registry;
use quanta::Instant;

mod distribution;
mod format;
mod http;
mod local;
mod storage;

pub use distribution::{
    DEFAULT_QUANTILES, DEFAULT_SUMMARY_BUCKET_COUNT, DEFAULT_SUMMARY_BUCKET_DURATION,
};
pub use http::MetricsServer;
pub use storage::{CounterCell, GaugeCell, HistogramCell, PerCpuStorage};

use distribution::{Distribution, DistributionConfig};

/// What went wrong building or installing the recorder.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// `set_quantiles` got an empty list, or `set_buckets` no finite bound.
    EmptyBucketsOrQuantiles,
    /// `set_bucket_duration` got zero.
    ZeroBucketDuration,
    /// A global recorder was already installed.
    RecorderAlreadySet,
    /// The HTTP listener could not be started.
    Listen(std::io::Error),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::EmptyBucketsOrQuantiles => {
                f.write_str("bucket bounds/quantiles cannot be empty")
            }
            BuildError::ZeroBucketDuration => f.write_str("bucket durations cannot be set to zero"),
            BuildError::RecorderAlreadySet => {
                f.write_str("a global metrics recorder is already installed")
            }
            BuildError::Listen(e) => write!(f, "cannot start the HTTP listener: {e}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Listen(e) => Some(e),
            _ => None,
        }
    }
}

/// Configures a [`PerCpuRecorder`]; the methods and their defaults mirror
/// `metrics_exporter_prometheus::PrometheusBuilder`.
#[derive(Debug, Clone)]
pub struct PerCpuBuilder {
    listen: SocketAddr,
    distributions: DistributionConfig,
    global_labels: Vec<(String, String)>,
    enable_unit_suffix: bool,
    recommended_naming: bool,
}

impl Default for PerCpuBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PerCpuBuilder {
    /// Summaries with the default quantiles, no global labels, no unit suffixes,
    /// listening (for [`install`](Self::install)) on `0.0.0.0:9000` as the
    /// Prometheus exporter does.
    pub fn new() -> Self {
        PerCpuBuilder {
            listen: SocketAddr::from(([0, 0, 0, 0], 9000)),
            distributions: DistributionConfig::default(),
            global_labels: Vec::new(),
            enable_unit_suffix: false,
            recommended_naming: false,
        }
    }

    /// The address [`install`](Self::install) serves `/metrics` on.
    pub fn with_http_listener(mut self, addr: impl Into<SocketAddr>) -> Self {
        self.listen = addr.into();
        self
    }

    /// Quantiles that summaries report (values outside 0..=1, and NaN, are clamped to
    /// 0..=1), each once: a quantile given twice (or clamped onto another) is
    /// reported once, where the exporter writes the same series twice.
    pub fn set_quantiles(mut self, quantiles: &[f64]) -> Result<Self, BuildError> {
        if quantiles.is_empty() {
            return Err(BuildError::EmptyBucketsOrQuantiles);
        }
        let mut unique: Vec<metrics_util::Quantile> = Vec::with_capacity(quantiles.len());
        for q in metrics_util::parse_quantiles(quantiles) {
            if !unique.iter().any(|u| u.value() == q.value()) {
                unique.push(q);
            }
        }
        self.distributions.quantiles = unique;
        Ok(self)
    }

    /// Render histograms as Prometheus histograms with these bucket bounds instead of
    /// summaries. The bounds are used sorted, each once, and only finite ones (the
    /// `+Inf` bucket is always written): the exporter takes them as given, and with
    /// bounds out of order counts samples in the wrong buckets.
    ///
    /// # Errors
    /// [`BuildError::EmptyBucketsOrQuantiles`] if `bounds` has no finite value.
    pub fn set_buckets(mut self, bounds: &[f64]) -> Result<Self, BuildError> {
        let mut finite: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
        finite.sort_by(f64::total_cmp);
        // -0.0 and 0.0 are one bound.
        finite.dedup_by(|a, b| a == b);
        if finite.is_empty() {
            return Err(BuildError::EmptyBucketsOrQuantiles);
        }
        self.distributions.buckets = Some(finite);
        Ok(self)
    }

    /// Length of one bucket of the summaries' rolling window.
    pub fn set_bucket_duration(mut self, d: Duration) -> Result<Self, BuildError> {
        if d.is_zero() {
            return Err(BuildError::ZeroBucketDuration);
        }
        self.distributions.bucket_duration = d;
        Ok(self)
    }

    /// Number of buckets in the summaries' rolling window.
    pub fn set_bucket_count(mut self, n: NonZeroU32) -> Self {
        self.distributions.bucket_count = n;
        self
    }

    /// Append the described unit to names (`latency` in seconds: `latency_seconds`).
    pub fn set_enable_unit_suffix(mut self, enabled: bool) -> Self {
        self.enable_unit_suffix = enabled;
        self
    }

    /// Unit suffixes and a `_total` suffix on counters.
    pub fn with_recommended_naming(mut self, enabled: bool) -> Self {
        self.recommended_naming = enabled;
        self
    }

    /// A label added to every series (a series' own label of the same name wins).
    pub fn add_global_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let (key, value) = (key.into(), value.into());
        match self.global_labels.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.global_labels.push((key, value)),
        }
        self
    }

    /// The recorder, not installed.
    pub fn build_recorder(self) -> PerCpuRecorder {
        PerCpuRecorder {
            inner: Arc::new(Inner {
                id: NEXT_RECORDER_ID.fetch_add(1, Ordering::Relaxed),
                registry: Registry::new(PerCpuStorage::new(self.global_labels)),
                descriptions: RwLock::new(HashMap::new()),
                distributions: Mutex::new(HashMap::new()),
                config: self.distributions,
                enable_unit_suffix: self.enable_unit_suffix || self.recommended_naming,
                counter_suffix: self.recommended_naming.then_some("total"),
            }),
        }
    }

    /// Installs the recorder as the global one and returns a handle to render it.
    pub fn install_recorder(self) -> Result<PerCpuHandle, BuildError> {
        let recorder = self.build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).map_err(|_| BuildError::RecorderAlreadySet)?;
        Ok(handle)
    }

    /// Installs the recorder as the global one and serves `/metrics` on the listener
    /// address (a background thread, running until [`MetricsServer::shutdown`]).
    pub fn install(self) -> Result<MetricsServer, BuildError> {
        let addr = self.listen;
        let recorder = self.build_recorder();
        let server = recorder.handle().serve(addr).map_err(BuildError::Listen)?;
        if metrics::set_global_recorder(recorder).is_err() {
            server.shutdown();
            return Err(BuildError::RecorderAlreadySet);
        }
        Ok(server)
    }
}

/// A description, its unit, and whether a render has used it yet.
type Descriptions = HashMap<String, (SharedString, Option<Unit>, bool)>;

/// Recorder ids for the thread-local handle caches (unlike addresses, never reused).
static NEXT_RECORDER_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Debug)]
struct Inner {
    id: u64,
    registry: Registry<Key, PerCpuStorage>,
    /// By sanitised name. As in the exporter (run, not read: its description table
    /// publishes at render time), the last description given before the name's
    /// first render wins; later ones are ignored.
    descriptions: RwLock<Descriptions>,
    /// Accumulated histogram samples: name -> labels -> distribution.
    distributions: Mutex<HashMap<String, HashMap<String, Distribution>>>,
    config: DistributionConfig,
    enable_unit_suffix: bool,
    counter_suffix: Option<&'static str>,
}

/// The `metrics` recorder: per-CPU counters, gauges with per-CPU increments,
/// histograms; render through a [`PerCpuHandle`].
#[derive(Debug)]
pub struct PerCpuRecorder {
    inner: Arc<Inner>,
}

impl PerCpuRecorder {
    /// A handle that renders this recorder's metrics (cheap to clone, `Send`).
    pub fn handle(&self) -> PerCpuHandle {
        PerCpuHandle {
            inner: self.inner.clone(),
        }
    }

    fn describe(&self, name: KeyName, unit: Option<Unit>, description: SharedString) {
        let name = format::sanitize_metric_name(name.as_str());
        let mut d = self
            .inner
            .descriptions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match d.get_mut(&name) {
            Some(entry) if entry.2 => {}
            Some(entry) => *entry = (description, unit, false),
            None => {
                d.insert(name, (description, unit, false));
            }
        }
    }
}

impl Recorder for PerCpuRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description)
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description)
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description)
    }

    /// The thread's handle for `key` (see the `local` module): after a thread's first
    /// lookup of a key, `counter!` takes no lock and writes no shared cache line.
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        local::counter(&self.inner, key, || {
            let cell = self
                .inner
                .registry
                .get_or_create_counter(key, |c| c.clone());
            Counter::from_arc(Arc::new(local::Local(cell)))
        })
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        local::gauge(&self.inner, key, || {
            let cell = self.inner.registry.get_or_create_gauge(key, |g| g.clone());
            Gauge::from_arc(Arc::new(local::Local(cell)))
        })
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        local::histogram(&self.inner, key, || {
            let cell = self
                .inner
                .registry
                .get_or_create_histogram(key, |h| h.clone());
            Histogram::from_arc(Arc::new(local::Local(cell)))
        })
    }
}

/// Renders a [`PerCpuRecorder`]'s metrics; serves them over HTTP.
#[derive(Debug, Clone)]
pub struct PerCpuHandle {
    inner: Arc<Inner>,
}

impl PerCpuHandle {
    /// The Prometheus text exposition format (0.0.4) of every metric: counters, then
    /// gauges, then histograms, each family sorted by name and its series by labels.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_into(&mut out);
        out
    }

    /// [`render`](Self::render), appending to `out`.
    pub fn render_into(&self, out: &mut String) {
        self.inner.render(out)
    }

    /// Serves `GET /metrics` on `addr` from a background thread (bind to port 0 and
    /// ask [`MetricsServer::local_addr`] for the port).
    pub fn serve(&self, addr: impl ToSocketAddrs) -> std::io::Result<MetricsServer> {
        http::MetricsServer::start(self.clone(), addr)
    }

    /// Drains histogram samples into their distributions now (a render does it too);
    /// call it now and then if scrapes are rare and histograms busy.
    pub fn run_upkeep(&self) {
        self.inner.drain_histograms();
    }
}

impl Inner {
    fn drain_histograms(&self) {
        let mut dists = self
            .distributions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.registry.visit_histograms(|_, h| {
            let by_labels = match dists.get_mut(&h.series.name) {
                Some(m) => m,
                None => dists.entry(h.series.name.clone()).or_default(),
            };
            let dist = match by_labels.get_mut(&h.series.labels) {
                Some(d) => d,
                None => by_labels
                    .entry(h.series.labels.clone())
                    .or_insert_with(|| self.config.make()),
            };
            h.drain_with(|samples| dist.record(samples));
        });
    }

    /// The description's unit, if unit suffixes are on; writes `# HELP` if described.
    fn help(
        &self,
        out: &mut String,
        d: &Descriptions,
        name: &str,
        suffix: Option<&str>,
    ) -> Option<Unit> {
        let (desc, unit, _) = d.get(name)?;
        let unit = unit.filter(|_| self.enable_unit_suffix);
        format::write_help(out, name, unit, suffix, desc);
        unit
    }

    /// Writes `cells` (sorted by series) as one family per metric name: its help and
    /// type lines, then one sample per series. Of two cells with the same series (keys
    /// that sanitise alike), the last is written.
    fn write_families<C: storage::Sampled>(
        &self,
        out: &mut String,
        d: &Descriptions,
        cells: &[Arc<C>],
        suffix: Option<&str>,
        kind: &str,
    ) {
        for family in cells.chunk_by(|a, b| a.series().name == b.series().name) {
            let name = &family[0].series().name;
            let unit = self.help(out, d, name, suffix);
            format::write_type(out, name, unit, suffix, kind);
            for (i, c) in family.iter().enumerate() {
                if family.get(i + 1).is_some_and(|n| n.series() == c.series()) {
                    continue;
                }
                let labels = &c.series().labels;
                format::write_sample(out, name, unit, suffix, labels, None, c.sample());
            }
            out.push('\n');
        }
    }

    fn render(&self, out: &mut String) {
        // Gather the cells (a clone of each Arc) outside the registry's locks, then sort
        // by series. Of two keys that sanitise to the same series, the last one in the
        // sort order is written (the exporter keeps one of them too).
        let mut counters = Vec::new();
        self.registry
            .visit_counters(|_, c| counters.push(c.clone()));
        let mut gauges = Vec::new();
        self.registry.visit_gauges(|_, g| gauges.push(g.clone()));
        counters.sort_unstable_by(|a, b| a.series.cmp(&b.series));
        gauges.sort_unstable_by(|a, b| a.series.cmp(&b.series));
        self.drain_histograms();

        let mut descriptions = self
            .descriptions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        descriptions.values_mut().for_each(|e| e.2 = true);
        let d = &*descriptions;
        out.reserve(64 * (counters.len() + gauges.len()));

        let suffix = self.counter_suffix;
        self.write_families(out, d, &counters, suffix, "counter");
        self.write_families(out, d, &gauges, None, "gauge");

        let dists = self
            .distributions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<&String> = dists.keys().collect();
        names.sort_unstable();
        let now = Instant::now();
        for name in names {
            let by_labels = &dists[name];
            let unit = self.help(out, d, name, None);
            format::write_type(out, name, unit, None, self.config.kind());
            let mut series: Vec<(&String, &Distribution)> = by_labels.iter().collect();
            series.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (labels, dist) in series {
                let (sum, count) = match dist {
                    Distribution::Summary { rolling, sum } => {
                        let snap = rolling.snapshot(now);
                        for q in &self.config.quantiles {
                            let v = snap.quantile(q.value()).unwrap_or(0.0);
                            format::write_sample(
                                out,
                                name,
                                unit,
                                None,
                                labels,
                                Some(("quantile", &q.value())),
                                v,
                            );
                        }
                        (*sum, rolling.count() as u64)
                    }
                    Distribution::Histogram(h) => {
                        for (le, n) in h.buckets() {
                            format::write_sample(
                                out,
                                name,
                                unit,
                                Some("bucket"),
                                labels,
                                Some(("le", &le)),
                                n,
                            );
                        }
                        format::write_sample(
                            out,
                            name,
                            unit,
                            Some("bucket"),
                            labels,
                            Some(("le", &"+Inf")),
                            h.count(),
                        );
                        (h.sum(), h.count())
                    }
                };
                format::write_sample(out, name, unit, Some("sum"), labels, None, sum);
                format::write_sample(out, name, unit, Some("count"), labels, None, count);
            }
            out.push('\n');
        }
    }
}
