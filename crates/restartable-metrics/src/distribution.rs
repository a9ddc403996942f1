//! What a histogram's drained samples accumulate into between renders: a summary
//! (quantiles over a rolling window, the Prometheus exporter's default) or, when
//! buckets are configured, a cumulative bucket histogram.

use std::num::NonZeroU32;
use std::time::Duration;

use metrics_util::storage::{Histogram, Summary};
use metrics_util::Quantile;
use quanta::Instant;

/// The exporter's default window: 3 buckets of 20 s.
pub const DEFAULT_SUMMARY_BUCKET_COUNT: NonZeroU32 = match NonZeroU32::new(3) {
    Some(n) => n,
    None => unreachable!(),
};
/// See [`DEFAULT_SUMMARY_BUCKET_COUNT`].
pub const DEFAULT_SUMMARY_BUCKET_DURATION: Duration = Duration::from_secs(20);

/// The exporter's default quantiles.
pub const DEFAULT_QUANTILES: [f64; 7] = [0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0];

/// Accumulated samples of one series.
#[derive(Debug, Clone)]
pub enum Distribution {
    /// Quantiles over the rolling window; `sum` and the summary's count are over all
    /// time.
    Summary {
        /// The windowed sketches.
        rolling: RollingSummary,
        /// Sum of every sample.
        sum: f64,
    },
    /// Cumulative buckets (`le`), sum and count over all time.
    Histogram(Histogram),
}

impl Distribution {
    /// Adds drained samples.
    pub fn record(&mut self, samples: &[(f64, Instant)]) {
        match self {
            Distribution::Summary { rolling, sum } => {
                for &(v, at) in samples {
                    rolling.add(v, at);
                    *sum += v;
                }
            }
            Distribution::Histogram(h) => h.record_many(samples.iter().map(|(v, _)| v)),
        }
    }
}

/// How new distributions are made.
#[derive(Debug, Clone)]
pub struct DistributionConfig {
    /// Quantiles a summary reports.
    pub quantiles: Vec<Quantile>,
    /// Bucket bounds; `None` means summaries.
    pub buckets: Option<Vec<f64>>,
    /// Rolling window: bucket length.
    pub bucket_duration: Duration,
    /// Rolling window: number of buckets.
    pub bucket_count: NonZeroU32,
}

impl Default for DistributionConfig {
    fn default() -> Self {
        DistributionConfig {
            quantiles: metrics_util::parse_quantiles(&DEFAULT_QUANTILES),
            buckets: None,
            bucket_duration: DEFAULT_SUMMARY_BUCKET_DURATION,
            bucket_count: DEFAULT_SUMMARY_BUCKET_COUNT,
        }
    }
}

impl DistributionConfig {
    /// A new empty distribution.
    pub fn make(&self) -> Distribution {
        match &self.buckets {
            Some(b) => Distribution::Histogram(
                Histogram::new(b).expect("bounds checked non-empty by the builder"),
            ),
            None => Distribution::Summary {
                rolling: RollingSummary::new(self.bucket_count, self.bucket_duration),
                sum: 0.0,
            },
        }
    }

    /// The `# TYPE` of what [`make`](Self::make) makes.
    pub fn kind(&self) -> &'static str {
        if self.buckets.is_some() {
            "histogram"
        } else {
            "summary"
        }
    }
}

/// Sketches of the samples of the last `count × duration`, one per time bucket.
/// Buckets are aligned on the first sample's time (as the exporter's
/// `RollingSummary` aligns them), so samples handed over in time order give the same
/// quantiles as the exporter.
///
/// Unlike the exporter's 0.18 `RollingSummary`, a sample older than the newest bucket
/// goes into the bucket of its own time instead of being dropped from the quantiles.
/// That matters: samples are drained in blocks of 64, newest block first, so the
/// exporter's quantiles after a burst of more than 64 samples between two renders
/// cover only the newest block (its count and sum still cover all).
#[derive(Debug, Clone)]
pub struct RollingSummary {
    /// `(bucket index since origin, sketch)`, newest first.
    buckets: Vec<(u64, Summary)>,
    origin: Option<Instant>,
    max_buckets: u64,
    bucket_duration: Duration,
    count: usize,
}

impl RollingSummary {
    /// An empty summary over `buckets × bucket_duration`.
    pub fn new(buckets: NonZeroU32, bucket_duration: Duration) -> Self {
        RollingSummary {
            buckets: Vec::with_capacity(buckets.get() as usize),
            origin: None,
            max_buckets: u64::from(buckets.get()),
            bucket_duration,
            count: 0,
        }
    }

    /// The index of the bucket that `at` falls in (0 before the origin).
    fn index(&self, origin: Instant, at: Instant) -> u64 {
        let since = at.saturating_duration_since(origin);
        (since.as_nanos() / self.bucket_duration.as_nanos().max(1)) as u64
    }

    /// Adds a sample recorded at `at` (in any order relative to earlier samples).
    pub fn add(&mut self, value: f64, at: Instant) {
        self.count += 1;
        let origin = *self.origin.get_or_insert(at);
        let idx = self.index(origin, at);
        let newest = self.buckets.first().map_or(idx, |b| b.0.max(idx));
        if idx + self.max_buckets <= newest {
            return; // Already outside the window.
        }
        match self.buckets.iter().position(|b| b.0 <= idx) {
            Some(i) if self.buckets[i].0 == idx => self.buckets[i].1.add(value),
            pos => {
                let mut summary = Summary::with_defaults();
                summary.add(value);
                self.buckets
                    .insert(pos.unwrap_or(self.buckets.len()), (idx, summary));
                self.buckets.retain(|b| b.0 + self.max_buckets > newest);
            }
        }
    }

    /// The merged sketch of the buckets still in the window at `now` (a bucket is in
    /// it while its start is later than `now - count × duration`).
    pub fn snapshot(&self, now: Instant) -> Summary {
        let mut acc = Summary::with_defaults();
        let Some(origin) = self.origin else {
            return acc;
        };
        let window = self.bucket_duration * self.max_buckets as u32;
        let cutoff = now.checked_sub(window);
        for (idx, summary) in &self.buckets {
            let begin = origin + self.bucket_duration * (*idx as u32);
            if cutoff.is_none_or(|c| begin > c) {
                acc.merge(summary).expect("same sketch parameters");
            }
        }
        acc
    }

    /// Samples seen since creation (not only in the window).
    pub fn count(&self) -> usize {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_quantiles_and_expiry() {
        let mut r = RollingSummary::new(NonZeroU32::new(2).unwrap(), Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 1..=100 {
            r.add(i as f64, t0);
        }
        let s = r.snapshot(t0);
        assert_eq!(s.quantile(0.0), Some(1.0));
        assert_eq!(s.quantile(1.0), Some(100.0));
        let median = s.quantile(0.5).unwrap();
        assert!((49.0..=51.0).contains(&median), "{median}");
        // 25 s later both buckets of the 20 s window have expired; the count stays.
        let later = t0 + Duration::from_secs(25);
        assert!(r.snapshot(later).is_empty());
        assert_eq!(r.count(), 100);
    }

    #[test]
    fn summary_keeps_samples_handed_over_out_of_order() {
        let mut r = RollingSummary::new(NonZeroU32::new(3).unwrap(), Duration::from_secs(20));
        let t0 = Instant::now();
        // Newest first, as drained blocks come.
        for i in (1..=1000).rev() {
            r.add(i as f64, t0 + Duration::from_micros(i));
        }
        let s = r.snapshot(t0);
        assert_eq!(s.count(), 1000);
        assert_eq!(s.quantile(0.0), Some(1.0));
        assert_eq!(s.quantile(1.0), Some(1000.0));
    }

    #[test]
    fn summary_buckets_roll() {
        let d = Duration::from_secs(10);
        let mut r = RollingSummary::new(NonZeroU32::new(2).unwrap(), d);
        let t0 = Instant::now();
        r.add(1.0, t0);
        r.add(2.0, t0 + d);
        r.add(3.0, t0 + d * 2); // pushes the first bucket out
        r.add(0.5, t0); // too old: counted, not in the quantiles
        let s = r.snapshot(t0 + d * 2);
        assert_eq!(s.count(), 2);
        assert_eq!(s.quantile(0.0), Some(2.0));
        assert_eq!(r.count(), 4);
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let cfg = DistributionConfig {
            buckets: Some(vec![1.0, 5.0]),
            ..Default::default()
        };
        let mut d = cfg.make();
        let now = Instant::now();
        d.record(&[(0.5, now), (2.0, now), (9.0, now)]);
        match d {
            Distribution::Histogram(h) => {
                assert_eq!(h.buckets(), vec![(1.0, 1), (5.0, 2)]);
                assert_eq!(h.count(), 3);
                assert_eq!(h.sum(), 11.5);
            }
            _ => panic!("expected a histogram"),
        }
    }
}
