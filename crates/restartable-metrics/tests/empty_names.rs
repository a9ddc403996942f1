//! An empty metric name or label key (the audit's finding): the exporter's rules
//! wrote them as they are, `# TYPE  counter` and a sample line ` 1`, or `{="v"}`,
//! which a Prometheus server cannot parse, so one such metric failed the scrape of
//! every other. They are written as `_`, the name every invalid character becomes.

#[test]
fn empty_names_and_label_keys_become_underscores() {
    let recorder = restartable_metrics::PerCpuBuilder::new()
        .add_global_label("", "g")
        .build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!("").increment(1);
        metrics::counter!("ok", "" => "v").increment(3);
    });
    let text = handle.render();
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines,
        [
            "# TYPE _ counter",
            "_{_=\"g\"} 1",
            "# TYPE ok counter",
            "ok{_=\"v\"} 3",
        ],
        "{text}"
    );
}
