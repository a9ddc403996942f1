//! A server that counts requests from several threads through the `metrics` facade
//! and serves them at `/metrics` with restartable-metrics' per-CPU recorder.
//!
//! ```sh
//! cargo run --release -p restartable-metrics --example server -- --listen 127.0.0.1:9000 --threads 4
//! curl -s http://127.0.0.1:9000/metrics
//! ```
//!
//! Each worker thread "serves" requests in a loop: it bumps `requests_total` (a per-CPU
//! counter, cached handle), `in_flight` up and down (a gauge), and records one latency
//! sample in 1024. It stops after `--seconds` (or never, with 0) and prints what it
//! counted itself, which the scrape must agree with.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Parser;
use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use restartable_metrics::{MetricsServer, PerCpuBuilder};

/// One latency sample is recorded every this many requests.
pub const SAMPLE_EVERY: u64 = 1024;

#[derive(Parser, Debug)]
#[command(about = "Count requests on several threads and serve them at /metrics")]
struct Args {
    /// Address to serve /metrics on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Worker threads.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Stop the workers after this many seconds (0: run until killed).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
}

/// The running demo: the HTTP server and the workers.
pub struct Demo {
    /// The `/metrics` endpoint.
    pub server: MetricsServer,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<u64>>,
}

impl Demo {
    /// Installs the recorder globally, serves `/metrics` on `listen` and starts
    /// `threads` workers.
    pub fn start(listen: SocketAddr, threads: usize) -> Result<Demo, Box<dyn std::error::Error>> {
        // The one line that replaces `PrometheusBuilder::new().with_http_listener(..).install()`.
        let server = PerCpuBuilder::new().with_http_listener(listen).install()?;

        describe_counter!("requests_total", Unit::Count, "Requests served, by worker");
        describe_gauge!("in_flight", "Requests being served");
        describe_histogram!(
            "latency",
            Unit::Seconds,
            "Time to serve one request (sampled)"
        );

        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..threads)
            .map(|w| {
                let stop = stop.clone();
                std::thread::spawn(move || worker(w, &stop))
            })
            .collect();
        Ok(Demo {
            server,
            stop,
            workers,
        })
    }

    /// Stops the workers and returns how many requests each counted itself.
    pub fn stop_workers(self) -> (MetricsServer, Vec<u64>) {
        self.stop.store(true, Ordering::Relaxed);
        let counts = self
            .workers
            .into_iter()
            .map(|w| w.join().expect("worker panicked"))
            .collect();
        (self.server, counts)
    }
}

fn worker(w: usize, stop: &AtomicBool) -> u64 {
    let requests = counter!("requests_total", "worker" => w.to_string());
    let in_flight = gauge!("in_flight");
    let latency = histogram!("latency");
    let mut served = 0u64;
    while !stop.load(Ordering::Relaxed) {
        in_flight.increment(1.0);
        let start = (served.is_multiple_of(SAMPLE_EVERY)).then(Instant::now);
        // The "work": a little arithmetic the optimiser cannot drop.
        std::hint::black_box(served.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        requests.increment(1);
        if let Some(start) = start {
            latency.record(start.elapsed().as_secs_f64());
        }
        in_flight.decrement(1.0);
        served += 1;
    }
    served
}

#[allow(dead_code)] // the scrape test includes this file and drives `Demo` itself
fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let demo = match Demo::start(args.listen, args.threads) {
        Ok(demo) => demo,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!(
        "serving http://{}/metrics with {} workers",
        demo.server.local_addr(),
        args.threads
    );
    if args.seconds == 0 {
        loop {
            std::thread::park();
        }
    }
    std::thread::sleep(Duration::from_secs(args.seconds));
    let (server, counts) = demo.stop_workers();
    println!(
        "workers counted {:?} requests, {} in all",
        counts,
        counts.iter().sum::<u64>()
    );
    server.shutdown();
    std::process::ExitCode::SUCCESS
}
