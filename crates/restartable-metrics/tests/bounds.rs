//! Bucket bounds and quantiles as a user may give them (the audit's finding): out of
//! order, repeated, NaN or infinite. The exposition stays valid and true: every
//! `le` bucket counts the samples at or below it, each series is written once, and
//! `+Inf` once.

use restartable_metrics::{BuildError, PerCpuBuilder};

fn render(builder: PerCpuBuilder, samples: &[f64]) -> String {
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        for &v in samples {
            metrics::histogram!("h").record(v);
        }
    });
    handle.render()
}

#[test]
fn bucket_bounds_are_sorted_unique_and_finite() {
    let samples = [0.5, 2.0, 20.0, -3.0];
    for bounds in [
        &[10.0, 1.0][..],
        &[1.0, 10.0, 1.0, 10.0],
        &[f64::NAN, 10.0, f64::INFINITY, 1.0, f64::NEG_INFINITY],
    ] {
        let text = render(PerCpuBuilder::new().set_buckets(bounds).unwrap(), &samples);
        let buckets: Vec<&str> = text.lines().filter(|l| l.starts_with("h_bucket")).collect();
        assert_eq!(
            buckets,
            [
                "h_bucket{le=\"1\"} 2",
                "h_bucket{le=\"10\"} 3",
                "h_bucket{le=\"+Inf\"} 4",
            ],
            "bounds {bounds:?}:\n{text}"
        );
    }
    for bounds in [&[][..], &[f64::NAN], &[f64::INFINITY, f64::NEG_INFINITY]] {
        assert!(
            matches!(
                PerCpuBuilder::new().set_buckets(bounds),
                Err(BuildError::EmptyBucketsOrQuantiles)
            ),
            "bounds {bounds:?}"
        );
    }
}

#[test]
fn each_quantile_is_reported_once() {
    let builder = PerCpuBuilder::new()
        .set_quantiles(&[0.5, 0.9, 0.5, -1.0, 0.0, 2.0, 1.0])
        .unwrap();
    let text = render(builder, &[1.0, 2.0, 3.0]);
    let quantiles: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("h{"))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        quantiles,
        [
            "h{quantile=\"0.5\"}",
            "h{quantile=\"0.9\"}",
            "h{quantile=\"0\"}",
            "h{quantile=\"1\"}",
        ],
        "{text}"
    );
}
