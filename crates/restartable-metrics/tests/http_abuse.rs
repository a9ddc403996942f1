//! The `/metrics` server against misbehaving clients: one that never reads its
//! response, one that sends an endless request head. Each must cost only its own
//! connection, never the other scrapes, and never unbounded memory.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant};

/// A server whose `/metrics` body is about `mib` MiB (label values of 1 MiB each).
fn big_server(mib: usize) -> (restartable_metrics::PerCpuRecorder, SocketAddr) {
    let recorder = restartable_metrics::PerCpuBuilder::new().build_recorder();
    let big = "x".repeat(1 << 20);
    metrics::with_local_recorder(&recorder, || {
        for i in 0..mib {
            metrics::counter!("big_total", "i" => i.to_string(), "v" => big.clone()).increment(1);
        }
    });
    let addr = recorder
        .handle()
        .serve("127.0.0.1:0")
        .expect("binds")
        .local_addr();
    (recorder, addr)
}

/// A plain `GET /metrics` over a fresh connection: the status line and body length.
fn scrape(addr: SocketAddr, limit: Duration) -> std::io::Result<(String, usize)> {
    let mut stream = TcpStream::connect_timeout(&addr, limit)?;
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let status = text.lines().next().unwrap_or("").to_owned();
    Ok((status, response.len()))
}

/// A client that asks for `/metrics` and never reads the answer used to block the
/// server's only thread in `write`, so every later scrape hung with it.
#[test]
fn a_client_that_never_reads_does_not_block_other_scrapes() {
    let (_recorder, addr) = big_server(12);
    let stalled = TcpStream::connect(addr).expect("connects");
    // A 4 KiB receive buffer (no autotuning): the 12 MiB answer cannot fit in flight.
    let size: libc::c_int = 4096;
    // SAFETY: a valid socket and a c_int option value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            stalled.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const size).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_RCVBUF)");
    (&stalled)
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("sends its request");
    // The server is on the stalled answer once its first bytes are here (it renders
    // the 12 MiB first, then writes until the buffers fill and the write blocks):
    // waited for, within a bound, so that the scrape below always comes behind it.
    stalled
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("a read timeout");
    let mut first = [0u8; 1];
    let n = stalled
        .peek(&mut first)
        .unwrap_or_else(|err| panic!("the stalled answer did not start within 60 s: {err}"));
    assert_eq!(n, 1, "the server closed the stalled connection");

    let started = Instant::now();
    let (status, len) = scrape(addr, Duration::from_secs(20))
        .unwrap_or_else(|err| panic!("a scrape behind a stalled client failed: {err}"));
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(len > 12 << 20, "the whole body came ({len} bytes)");
    eprintln!(
        "scrape behind a stalled client took {:?}",
        started.elapsed()
    );
    drop(stalled);
}

/// A request head that never ends (no CRLF) used to be buffered without limit; it is
/// refused with 431 once it passes the limit, and the connection is closed.
#[test]
fn an_endless_request_head_is_refused() {
    let (_recorder, addr) = big_server(0);
    let mut stream = TcpStream::connect(addr).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(b"GET /").unwrap();
    let chunk = vec![b'a'; 64 << 10];
    let mut sent = 0usize;
    // The server stops reading after its limit; our writes then fail or fill the
    // buffers. Up to 64 MiB, far past any sane head.
    while sent < 64 << 20 {
        match stream.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    assert!(
        text.starts_with("HTTP/1.1 431"),
        "after {sent} bytes of request head, the answer was {:?}",
        text.chars().take(200).collect::<String>()
    );
}

/// Malformed request lines get 400, unknown versions 505, and the server still
/// answers a good request afterwards.
#[test]
fn malformed_requests_get_errors_not_hangs() {
    let (_recorder, addr) = big_server(0);
    let ask = |request: &[u8]| {
        let mut stream = TcpStream::connect(addr).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.write_all(request).unwrap();
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .expect("an answer, then EOF");
        String::from_utf8_lossy(&response)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned()
    };
    assert!(ask(b"\r\n\r\n").starts_with("HTTP/1.1 400"));
    assert!(ask(b"GET\r\n\r\n").starts_with("HTTP/1.1 400"));
    assert!(ask(b"GET /metrics\r\n\r\n").starts_with("HTTP/1.1 400"));
    assert!(ask(b"GET /metrics HTTP/9.9\r\n\r\n").starts_with("HTTP/1.1 505"));
    assert!(ask(b"\xff\xfe /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 400"));
    assert!(ask(b"GET /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 200"));
    assert!(ask(b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 200"));
    // Absolute form (RFC 9112 3.2.2: a server must accept it): the path counts.
    let absolute = format!("GET http://{addr}/metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    assert!(ask(absolute.as_bytes()).starts_with("HTTP/1.1 200"));
    let other = format!("GET http://{addr}/other HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    assert!(ask(other.as_bytes()).starts_with("HTTP/1.1 404"));
    let (status, _) = scrape(addr, Duration::from_secs(20)).expect("a scrape");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
}

/// Connections beyond the limit (32) are answered `503` at once instead of each
/// costing a thread and a buffer; the slots come back when those connections end.
#[test]
fn connections_beyond_the_limit_get_503() {
    let (_recorder, addr) = big_server(0);
    let idle: Vec<TcpStream> = (0..32)
        .map(|_| TcpStream::connect(addr).expect("connects"))
        .collect();
    // 503, or a reset if our request crossed the server's close; never served, and
    // never left waiting.
    match scrape(addr, Duration::from_secs(20)) {
        Ok((status, _)) => assert!(status.starts_with("HTTP/1.1 503"), "{status}"),
        Err(err) => assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "the 33rd connection: {err}"
        ),
    }
    drop(idle);
    // The idle connections' threads see EOF and free their slots: poll (bounded).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _) = scrape(addr, Duration::from_secs(20)).expect("an answer");
        if status.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "still {status} 60 s later");
        std::thread::sleep(Duration::from_millis(20));
    }
}
