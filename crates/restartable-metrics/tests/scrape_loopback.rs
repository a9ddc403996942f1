//! Runs the example server (examples/server.rs) in this process on 127.0.0.1, scrapes
//! `/metrics` over loopback while its worker threads count, then stops them and
//! checks that the scrape's totals are exactly what the workers counted.

#[path = "../examples/server.rs"]
#[allow(dead_code)]
mod server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use prometheus_parse::{Scrape, Value};

const THREADS: usize = 4;

fn scrape(addr: SocketAddr) -> (String, Scrape) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut resp = agent
        .get(format!("http://{addr}/metrics"))
        .call()
        .unwrap_or_else(|e| panic!("scraping {addr} failed: {e}"));
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        ctype.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let body = resp.body_mut().read_to_string().expect("a UTF-8 body");
    let parsed = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("parses");
    (body, parsed)
}

/// `requests_total` by worker, `in_flight`, and the latency summary's count.
fn values(s: &Scrape) -> (HashMap<String, u64>, Option<f64>, Option<u64>) {
    let mut requests = HashMap::new();
    let (mut in_flight, mut latency_count) = (None, None);
    for sample in &s.samples {
        match (sample.metric.as_str(), &sample.value) {
            ("requests_total", Value::Counter(v)) => {
                let w = sample
                    .labels
                    .get("worker")
                    .expect("a worker label")
                    .to_string();
                requests.insert(w, *v as u64);
            }
            ("in_flight", Value::Gauge(v)) => in_flight = Some(*v),
            ("latency_count", Value::Untyped(v)) => latency_count = Some(*v as u64),
            _ => {}
        }
    }
    (requests, in_flight, latency_count)
}

#[test]
fn scrape_while_counting_then_nothing_lost() {
    let demo =
        server::Demo::start(SocketAddr::from(([127, 0, 0, 1], 0)), THREADS).expect("demo starts");
    let addr = demo.server.local_addr();
    assert!(addr.ip().is_loopback());

    // Scrape while the workers run until we have seen every worker's counter move
    // between two scrapes (at least 3 scrapes; bounded in time, slow under load is fine).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut scrapes = 0;
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut moved: HashMap<String, bool> = HashMap::new();
    loop {
        let (body, parsed) = scrape(addr);
        scrapes += 1;
        assert!(
            body.contains("# HELP requests_total Requests served, by worker\n"),
            "{body}"
        );
        let (requests, _, _) = values(&parsed);
        for (w, v) in &requests {
            if let Some(prev) = last.get(w) {
                assert!(
                    v >= prev,
                    "worker {w}'s counter went back from {prev} to {v}"
                );
                if v > prev {
                    moved.insert(w.clone(), true);
                }
            }
        }
        last = requests;
        if scrapes >= 3 && moved.len() == THREADS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {scrapes} scrapes in 60 s, only {} of {THREADS} workers were seen counting",
            moved.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let (server, counts) = demo.stop_workers();
    let (body, parsed) = scrape(addr);
    let (requests, in_flight, latency_count) = values(&parsed);
    let expected: HashMap<String, u64> = counts
        .iter()
        .enumerate()
        .map(|(w, c)| (w.to_string(), *c))
        .collect();
    assert_eq!(
        requests, expected,
        "scraped totals differ from what the workers counted\n{body}"
    );
    assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    assert_eq!(
        in_flight,
        Some(0.0),
        "every increment of in_flight was matched by a decrement\n{body}"
    );
    let samples: u64 = counts
        .iter()
        .map(|c| c.div_ceil(server::SAMPLE_EVERY))
        .sum();
    assert_eq!(latency_count, Some(samples), "latency samples\n{body}");
    server.shutdown();
    // The listening socket is closed when `shutdown` returns (polled all the same).
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the server still accepts connections 30 s after shutdown"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Only `GET`/`HEAD /metrics` is served; other paths are 404, other methods 405; a
/// busy address is an error, not a panic.
#[test]
fn other_paths_and_methods_and_busy_address() {
    let recorder = restartable_metrics::PerCpuBuilder::new().build_recorder();
    let handle = recorder.handle();
    let server = handle.serve("127.0.0.1:0").expect("binds");
    let addr = server.local_addr();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    let status = |r: Result<ureq::http::Response<ureq::Body>, ureq::Error>| {
        r.expect("a response").status().as_u16()
    };
    assert_eq!(
        status(agent.get(format!("http://{addr}/metrics")).call()),
        200
    );
    assert_eq!(
        status(agent.head(format!("http://{addr}/metrics")).call()),
        200
    );
    assert_eq!(status(agent.get(format!("http://{addr}/")).call()), 404);
    assert_eq!(
        status(agent.post(format!("http://{addr}/metrics")).send("")),
        405
    );

    let busy = handle.serve(addr).expect_err("the address is taken");
    assert!(!busy.to_string().is_empty());
    let err = restartable_metrics::PerCpuBuilder::new()
        .with_http_listener(addr)
        .install()
        .expect_err("the address is taken");
    assert!(
        err.to_string().contains("cannot start the HTTP listener"),
        "{err}"
    );
    server.shutdown();
}
