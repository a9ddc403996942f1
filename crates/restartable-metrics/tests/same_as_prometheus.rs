//! The same metrics through our recorder and through `metrics-exporter-prometheus`
//! give the same exposition: compared metric by metric after parsing both with
//! `prometheus-parse`, and line by line (the exporter's order is a hash map's, ours is
//! sorted, so lines are compared as sorted lists).

use std::collections::BTreeMap;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Recorder, Unit,
};
use metrics_exporter_prometheus::PrometheusBuilder;
use prometheus_parse::{Scrape, Value};
use restartable_metrics::PerCpuBuilder;

/// Every kind of metric, every description/unit case, names and labels that need
/// sanitising or escaping, values recorded from several threads; `samples` values
/// per histogram series.
fn workload(samples: u32) {
    describe_counter!(
        "requests",
        Unit::Count,
        "Requests \"served\"\nwith a \\ backslash"
    );
    describe_counter!("bytes_sent", Unit::Bytes, "Bytes written");
    // Given before the first render: the exporter keeps the last one.
    describe_counter!("bytes_sent", Unit::Seconds, "Second description wins");
    describe_gauge!("cpu_busy", Unit::Percent, "Busy share");
    describe_gauge!("queue_depth", "Items waiting");
    describe_histogram!("latency", Unit::Seconds, "Request latency");
    describe_histogram!("payload_total", Unit::Bytes, "Payload sizes");

    counter!("requests", "path" => "/a", "code" => "200").increment(5);
    counter!("requests", "path" => "/b", "code" => "500").increment(2);
    counter!("requests", "path" => "quote\"back\\slash\nnewline", "bad-key" => "x").increment(1);
    counter!("requests", "env" => "overridden").increment(3);
    counter!("1bad.name-with:colon").increment(7);
    counter!("bytes_sent").increment(1 << 40);
    let _ = counter!("unused_counter");
    let mirrored = counter!("mirrored");
    mirrored.absolute(100);
    mirrored.increment(1);
    mirrored.absolute(50);

    // Several threads on one counter and one gauge, through cached handles.
    let shared = counter!("shared", "kind" => "threads");
    let level = gauge!("level");
    std::thread::scope(|s| {
        for t in 0..4 {
            let (shared, level) = (shared.clone(), level.clone());
            s.spawn(move || {
                for i in 0..10_000u64 {
                    shared.increment(1 + (i % 3));
                    if t % 2 == 0 {
                        level.increment(1.0);
                    } else {
                        level.decrement(2.0);
                    }
                }
            });
        }
    });

    gauge!("queue_depth", "queue" => "in").set(10.0);
    gauge!("queue_depth", "queue" => "in").increment(0.25);
    gauge!("queue_depth", "queue" => "in").increment(1.0);
    gauge!("queue_depth", "queue" => "in").decrement(0.5);
    gauge!("queue_depth", "queue" => "out").decrement(3.0);
    gauge!("cpu_busy").set(0.375);
    gauge!("not_a_number").set(f64::NAN);
    gauge!("negative_zero").set(-0.0);
    gauge!("infinite").set(f64::INFINITY);
    gauge!("reset").increment(42.0);
    gauge!("reset").set(-1.5);

    for i in 1..=samples {
        histogram!("latency", "path" => "/a").record(f64::from(i) / f64::from(samples));
        histogram!("payload_total").record(f64::from(i * 37 % 1024));
    }
    histogram!("latency", "path" => "/b").record(0.5);
    let _ = histogram!("empty_histogram");
}

/// Summaries are compared with at most 64 samples per series between renders: above
/// that the exporter's quantiles cover only the newest 64-sample block (see
/// `summary_quantiles_cover_a_whole_burst`), ours cover all.
const SUMMARY_SAMPLES: u32 = 60;

fn render_both(ours: PerCpuBuilder, theirs: PrometheusBuilder, samples: u32) -> (String, String) {
    let ours = ours.build_recorder();
    let theirs = theirs.build_recorder();
    metrics::with_local_recorder(&ours, || workload(samples));
    metrics::with_local_recorder(&theirs, || workload(samples));
    (ours.handle().render(), theirs.handle().render())
}

/// `(metric, sorted labels)` -> value, with floats as text (NaN equals NaN).
fn parse(text: &str) -> (BTreeMap<(String, String), String>, BTreeMap<String, String>) {
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");
    let mut samples = BTreeMap::new();
    for s in scrape.samples {
        let labels: BTreeMap<_, _> = s.labels.iter().collect();
        let value = match s.value {
            Value::Counter(v) => format!("counter {v:?}"),
            Value::Gauge(v) => format!("gauge {v:?}"),
            Value::Untyped(v) => format!("untyped {v:?}"),
            Value::Histogram(mut b) => {
                b.sort_by(|a, b| a.less_than.total_cmp(&b.less_than));
                let b: Vec<_> = b
                    .iter()
                    .map(|c| format!("le {:?}: {:?}", c.less_than, c.count))
                    .collect();
                format!("histogram {b:?}")
            }
            Value::Summary(mut q) => {
                q.sort_by(|a, b| a.quantile.total_cmp(&b.quantile));
                let q: Vec<_> = q
                    .iter()
                    .map(|c| format!("q {:?}: {:?}", c.quantile, c.count))
                    .collect();
                format!("summary {q:?}")
            }
        };
        let prev = samples.insert((s.metric, format!("{labels:?}")), value);
        assert!(prev.is_none(), "a series appears twice in\n{text}");
    }
    (samples, scrape.docs.into_iter().collect())
}

fn assert_same(ours: &str, theirs: &str) {
    let (our_samples, our_docs) = parse(ours);
    let (their_samples, their_docs) = parse(theirs);
    assert!(our_samples.len() > 20, "too few samples parsed:\n{ours}");
    for (series, value) in &their_samples {
        assert_eq!(
            our_samples.get(series),
            Some(value),
            "series {series:?}\n--- ours ---\n{ours}\n--- metrics-exporter-prometheus ---\n{theirs}"
        );
    }
    assert_eq!(
        our_samples.len(),
        their_samples.len(),
        "series sets differ:\n{ours}\n---\n{theirs}"
    );
    assert_eq!(our_docs, their_docs, "HELP lines differ");

    // And the text itself, up to the order of lines within the output.
    let mut a: Vec<&str> = ours.lines().collect();
    let mut b: Vec<&str> = theirs.lines().collect();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(
        a, b,
        "lines differ\n--- ours ---\n{ours}\n--- metrics-exporter-prometheus ---\n{theirs}"
    );
}

#[test]
fn same_series_as_prometheus_exporter_with_defaults() {
    let (ours, theirs) = render_both(
        PerCpuBuilder::new(),
        PrometheusBuilder::new(),
        SUMMARY_SAMPLES,
    );
    assert!(ours.contains("# TYPE latency summary\n"));
    assert!(ours.contains("shared{kind=\"threads\"} 79996\n"), "{ours}");
    assert!(ours.contains("level -20000\n"), "{ours}");
    assert_same(&ours, &theirs);
}

#[test]
#[allow(deprecated)] // the exporter deprecated `set_enable_unit_suffix`; ours mirrors it
fn same_series_as_prometheus_exporter_with_units_global_labels_and_buckets() {
    let buckets = [0.005, 0.1, 0.5, 1.0, 100.0, 1000.0];
    let ours = PerCpuBuilder::new()
        .set_enable_unit_suffix(true)
        .add_global_label("env", "test")
        .add_global_label("region", "eu \"west\"")
        .set_buckets(&buckets)
        .unwrap();
    let theirs = PrometheusBuilder::new()
        .set_enable_unit_suffix(true)
        .add_global_label("env", "test")
        .add_global_label("region", "eu \"west\"")
        .set_buckets(&buckets)
        .unwrap();
    let (ours, theirs) = render_both(ours, theirs, 1000);
    assert!(
        ours.contains("# TYPE latency_seconds histogram\n"),
        "{ours}"
    );
    assert!(ours.contains("bytes_sent_seconds{env=\"test\""), "{ours}");
    assert!(
        ours.contains(
            "latency_seconds_count{env=\"test\",region=\"eu \\\"west\\\"\",path=\"/a\"} 1000\n"
        ),
        "{ours}"
    );
    assert_same(&ours, &theirs);
}

#[test]
fn same_series_as_prometheus_exporter_with_recommended_naming_and_quantiles() {
    let q = [0.25, 0.5, 0.75];
    let ours = PerCpuBuilder::new()
        .with_recommended_naming(true)
        .set_quantiles(&q)
        .unwrap();
    let theirs = PrometheusBuilder::new()
        .with_recommended_naming(true)
        .set_quantiles(&q)
        .unwrap();
    let (ours, theirs) = render_both(ours, theirs, SUMMARY_SAMPLES);
    assert!(ours.contains("# TYPE requests_total counter\n"), "{ours}");
    assert_same(&ours, &theirs);
}

/// A positive control for the comparison: one value off must be caught.
#[test]
fn comparison_catches_a_changed_value() {
    let (ours, theirs) = render_both(
        PerCpuBuilder::new(),
        PrometheusBuilder::new(),
        SUMMARY_SAMPLES,
    );
    let tampered = ours.replace(
        "shared{kind=\"threads\"} 79996",
        "shared{kind=\"threads\"} 79999",
    );
    assert_ne!(tampered, ours);
    let caught = std::panic::catch_unwind(|| assert_same(&tampered, &theirs));
    assert!(caught.is_err(), "a changed counter value went unnoticed");
}

/// The recorder is a plain `metrics::Recorder`: registering the same key twice gives
/// the same per-CPU cell.
#[test]
fn same_key_same_cell() {
    let rec = PerCpuBuilder::new().build_recorder();
    let key = metrics::Key::from_name("x");
    let meta = metrics::Metadata::new("t", metrics::Level::INFO, None);
    rec.register_counter(&key, &meta).increment(2);
    rec.register_counter(&key, &meta).increment(3);
    assert!(rec.handle().render().contains("\nx 5\n"));
}

/// A burst of 1000 samples between renders: every one is in the quantiles (the
/// exporter 0.18 keeps only its newest 64-sample block in them; count and sum agree).
#[test]
fn summary_quantiles_cover_a_whole_burst() {
    let (ours, theirs) = render_both(PerCpuBuilder::new(), PrometheusBuilder::new(), 1000);
    assert!(
        ours.contains("latency{path=\"/a\",quantile=\"0\"} 0.001\n"),
        "{ours}"
    );
    assert!(
        ours.contains("latency{path=\"/a\",quantile=\"1\"} 1\n"),
        "{ours}"
    );
    let median = ours
        .lines()
        .find_map(|l| l.strip_prefix("latency{path=\"/a\",quantile=\"0.5\"} "))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("a median line");
    assert!((0.49..=0.51).contains(&median), "median {median}");
    for line in [
        "latency_count{path=\"/a\"} 1000",
        "payload_total_count 1000",
    ] {
        assert!(ours.contains(line) && theirs.contains(line), "{line}");
    }
    let sum = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("latency_sum{path=\"/a\"} "))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("a sum line")
    };
    assert_eq!(sum(&ours), sum(&theirs));
}

/// The exporter (run, not read) keeps the last description given before a name's
/// first render and ignores later ones; so do we.
#[test]
fn descriptions_after_a_render_are_ignored_like_the_exporter() {
    let ours = PerCpuBuilder::new().build_recorder();
    let theirs = PrometheusBuilder::new().build_recorder();
    let step = |text: &'static str| {
        metrics::with_local_recorder(&ours, || describe_counter!("jobs", text));
        metrics::with_local_recorder(&theirs, || describe_counter!("jobs", text));
    };
    metrics::with_local_recorder(&ours, || counter!("jobs").increment(1));
    metrics::with_local_recorder(&theirs, || counter!("jobs").increment(1));
    step("first");
    step("second");
    let (a, b) = (ours.handle().render(), theirs.handle().render());
    assert!(a.contains("# HELP jobs second\n"), "{a}");
    assert_same_text(&a, &b);
    step("third");
    let (a, b) = (ours.handle().render(), theirs.handle().render());
    assert!(a.contains("# HELP jobs second\n"), "{a}");
    assert_same_text(&a, &b);
}

fn assert_same_text(a: &str, b: &str) {
    let mut x: Vec<&str> = a.lines().collect();
    let mut y: Vec<&str> = b.lines().collect();
    x.sort_unstable();
    y.sort_unstable();
    assert_eq!(x, y);
}
