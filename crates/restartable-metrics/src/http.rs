//! `GET /metrics` over HTTP/1.1: a small server on `std::net`, one thread per
//! connection, with limits so that a misbehaving client costs only its own connection.
//!
//! - At most [`MAX_CONNECTIONS`] connections are served at once; beyond that a
//!   connection gets `503` (written without blocking) and is closed at once.
//! - The request head is parsed by `httparse` (the parser hyper uses). It must arrive
//!   within [`HEAD_DEADLINE`] and fit in [`MAX_HEAD_BYTES`] and 64 headers (else
//!   `408`/`431`); a request body is not read. `GET` and `HEAD` of `/metrics` (any
//!   query string; the target in origin form, `/metrics`, or absolute form,
//!   `http://host:port/metrics`), HTTP/1.0 or 1.1.
//! - The response must be taken by the client within [`WRITE_DEADLINE`], whatever its
//!   size; a client that stops reading is dropped then.
//! - Every response closes the connection (`Connection: close`), as HTTP/1.1 allows;
//!   Prometheus and other scrapers open a new one for the next scrape.
//!
//! The old server (tiny_http) answered every request from one thread, so a client
//! that never read its answer stalled every later scrape, and it buffered a request
//! head of any length.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::PerCpuHandle;

/// The content type of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Connections served at once; more are answered `503` and closed.
pub const MAX_CONNECTIONS: usize = 32;
/// The longest request head (request line and headers) read.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Time a client has to send its request head.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(10);
/// Time a client has to take the whole response.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(60);

/// A running `/metrics` endpoint. Dropping it leaves the server running (as the
/// Prometheus exporter's listener does); [`shutdown`](Self::shutdown) stops it.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MetricsServer {
    pub(crate) fn start(handle: PerCpuHandle, addr: impl ToSocketAddrs) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || accept_loop(&listener, &handle, &stopping))?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on (the actual port if you asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections, closes the listening socket and waits for the
    /// accepting thread to finish. Responses already being written finish on their
    /// own threads (each within 60 s).
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking `accept` with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let woken = TcpStream::connect_timeout(&wake, Duration::from_secs(5)).is_ok();
        if let Some(t) = self.thread.take() {
            // Without the wake-up connection the thread ends at the next connection.
            if woken {
                let _ = t.join();
            }
        }
    }
}

/// Counts a connection being served; the count drops with it.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(active: &Arc<AtomicUsize>) -> Option<Slot> {
        active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_CONNECTIONS).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(active.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn accept_loop(listener: &TcpListener, handle: &PerCpuHandle, stop: &AtomicBool) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else {
            // EMFILE and the like: wait a little instead of spinning.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let Some(slot) = Slot::take(&active) else {
            busy(stream);
            continue;
        };
        let handle = handle.clone();
        // If no thread can be started, the closure (and the stream) is dropped.
        let _ = std::thread::Builder::new()
            .name("metrics-http-conn".into())
            .spawn(move || {
                let _slot = slot;
                serve_connection(stream, &handle);
            });
    }
}

/// Answers `503` without ever blocking the accepting thread, and closes. (What the
/// client sent is read first if it has arrived, so that the close is not a reset;
/// a request still on its way can turn it into one, which the client sees as a
/// refused connection.)
fn busy(stream: TcpStream) {
    if stream.set_nonblocking(true).is_ok() {
        // At most 64 KiB: a client that keeps sending must not hold this thread.
        let mut sink = [0u8; 4096];
        for _ in 0..16 {
            if !matches!((&stream).read(&mut sink), Ok(n) if n > 0) {
                break;
            }
        }
        let _ = (&stream).write_all(&response_head(
            "503 Service Unavailable",
            "text/plain",
            0,
            None,
        ));
        let _ = stream.shutdown(Shutdown::Write);
    }
}

fn response_head(status: &str, content_type: &str, len: usize, allow: Option<&str>) -> Vec<u8> {
    let allow = allow.map_or(String::new(), |a| format!("Allow: {a}\r\n"));
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n\
         {allow}Connection: close\r\n\r\n"
    )
    .into_bytes()
}

/// What a request head asked for, or the error status to answer.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    /// `GET` (true) or `HEAD` (false) of `/metrics`.
    Metrics { body: bool },
    /// Another path (`GET`/`HEAD`).
    NotFound { body: bool },
    /// Another method.
    MethodNotAllowed,
    /// A request line that does not parse.
    Malformed,
    /// An HTTP version other than 1.0 and 1.1.
    VersionNotSupported,
}

/// Headers a request head may have (more: `431`). Scrapers send a handful.
const MAX_HEADERS: usize = 64;

/// What the request head received so far asks for, parsed by `httparse` (the parser
/// hyper uses); `None` while it is incomplete.
fn parse_head(head: &[u8]) -> Option<Result<Asked, &'static str>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        // Empty lines before the request line are skipped (as RFC 9112 asks); a head
        // of nothing else, ended by its blank line, has no request line.
        Ok(httparse::Status::Partial) => {
            let blank = head.iter().all(|&b| b == b'\r' || b == b'\n')
                && head.iter().filter(|&&b| b == b'\n').count() >= 2;
            return blank.then_some(Ok(Asked::Malformed));
        }
        Err(httparse::Error::Version) => return Some(Ok(Asked::VersionNotSupported)),
        Err(httparse::Error::TooManyHeaders) => {
            return Some(Err("431 Request Header Fields Too Large"))
        }
        Err(_) => return Some(Ok(Asked::Malformed)),
    }
    let body = match request.method {
        Some("GET") => true,
        Some("HEAD") => false,
        _ => return Some(Ok(Asked::MethodNotAllowed)),
    };
    let path = target_path(request.path.unwrap_or(""));
    Some(Ok(if path == "/metrics" {
        Asked::Metrics { body }
    } else {
        Asked::NotFound { body }
    }))
}

/// The path of a request target: origin form (`/metrics?query`) or absolute form
/// (`http://host:port/metrics?query`, which RFC 9112 section 3.2.2 says a server
/// must accept; its scheme and authority are not checked: this server answers on
/// whatever address it was reached), without the query. An absolute form with an
/// empty path (`http://host`) is `/`.
fn target_path(target: &str) -> &str {
    let target = match target.split_once("://") {
        // A scheme: a letter, then letters, digits, `+`, `-`, `.` (RFC 3986 3.1).
        Some((scheme, rest))
            if scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            match rest.find(['/', '?', '#']) {
                Some(i) if rest[i..].starts_with('/') => &rest[i..],
                _ => "/",
            }
        }
        _ => target,
    };
    target.split_once('?').map_or(target, |(path, _query)| path)
}

/// Reads the request head until it parses. `Err(status)` for a head that is too long
/// (or has too many headers) or too slow, `Err(None)` for a client that hung up.
fn read_request(stream: &mut TcpStream) -> Result<Asked, Option<&'static str>> {
    let deadline = Instant::now() + HEAD_DEADLINE;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(Some("408 Request Timeout"))?;
        stream.set_read_timeout(Some(left)).map_err(|_| None)?;
        let n = match stream.read(&mut buf) {
            Ok(0) => return Err(None),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Some("408 Request Timeout"))
            }
            Err(_) => return Err(None),
        };
        head.extend_from_slice(&buf[..n]);
        if let Some(asked) = parse_head(&head[..head.len().min(MAX_HEAD_BYTES)]) {
            return asked.map_err(Some);
        }
        if head.len() > MAX_HEAD_BYTES {
            return Err(Some("431 Request Header Fields Too Large"));
        }
    }
}

/// Writes all of `bytes` before `deadline`.
fn write_before(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))?;
        stream.set_write_timeout(Some(left))?;
        match stream.write(&bytes[..bytes.len().min(256 * 1024)]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

fn serve_connection(mut stream: TcpStream, handle: &PerCpuHandle) {
    let _ = stream.set_nodelay(true);
    let deadline = Instant::now() + WRITE_DEADLINE;
    let request = match read_request(&mut stream) {
        Ok(asked) => asked,
        Err(Some(status)) => {
            if write_before(
                &mut stream,
                &response_head(status, "text/plain", 0, None),
                deadline,
            )
            .is_ok()
            {
                linger_and_close(stream);
            }
            return;
        }
        Err(None) => return,
    };
    let text = |status: &str, body: &'static str, send: bool, allow: Option<&str>| {
        let mut out = response_head(status, "text/plain", body.len(), allow);
        if send {
            out.extend_from_slice(body.as_bytes());
        }
        out
    };
    let result = match request {
        Asked::Metrics { body: send } => {
            let mut body = String::new();
            handle.render_into(&mut body);
            write_before(
                &mut stream,
                &response_head("200 OK", CONTENT_TYPE, body.len(), None),
                deadline,
            )
            .and_then(|()| {
                if send {
                    write_before(&mut stream, body.as_bytes(), deadline)
                } else {
                    Ok(())
                }
            })
        }
        Asked::NotFound { body: send } => write_before(
            &mut stream,
            &text("404 Not Found", "not found\n", send, None),
            deadline,
        ),
        Asked::MethodNotAllowed => write_before(
            &mut stream,
            &text(
                "405 Method Not Allowed",
                "method not allowed\n",
                true,
                Some("GET, HEAD"),
            ),
            deadline,
        ),
        Asked::Malformed => write_before(
            &mut stream,
            &text("400 Bad Request", "bad request\n", true, None),
            deadline,
        ),
        Asked::VersionNotSupported => write_before(
            &mut stream,
            &text(
                "505 HTTP Version Not Supported",
                "HTTP/1.0 and HTTP/1.1 only\n",
                true,
                None,
            ),
            deadline,
        ),
    };
    // A client that hung up or was too slow is its own problem.
    if result.is_ok() {
        linger_and_close(stream);
    }
}

/// Half-closes, then reads (and drops) what the client still sends for up to a
/// second before the socket goes: closing with unread bytes sends a reset, which can
/// destroy the response still in flight.
fn linger_and_close(mut stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let until = Instant::now() + Duration::from_secs(1);
    let mut sink = [0u8; 16 * 1024];
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_head, Asked, MAX_HEADERS};

    fn asked(head: &[u8]) -> Option<Result<Asked, &'static str>> {
        parse_head(head)
    }

    #[test]
    fn request_heads() {
        let ok = |head: &[u8]| asked(head).and_then(Result::ok);
        assert_eq!(
            ok(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Asked::Metrics { body: true })
        );
        assert_eq!(
            ok(b"HEAD /metrics?a=b HTTP/1.0\r\n\r\n"),
            Some(Asked::Metrics { body: false })
        );
        // Bare LF line ends, and empty lines before the request line.
        assert_eq!(
            ok(b"\r\nGET /metrics HTTP/1.1\nHost: x\n\n"),
            Some(Asked::Metrics { body: true })
        );
        assert_eq!(
            ok(b"GET / HTTP/1.1\r\n\r\n"),
            Some(Asked::NotFound { body: true })
        );
        assert_eq!(
            ok(b"HEAD /metricsx HTTP/1.1\r\n\r\n"),
            Some(Asked::NotFound { body: false })
        );
        assert_eq!(
            ok(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Some(Asked::MethodNotAllowed)
        );
        // Absolute form (RFC 9112 3.2.2): the path counts, not scheme or authority.
        for head in [
            &b"GET http://127.0.0.1:9000/metrics HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET HTTP://example.com/metrics?a=b HTTP/1.1\r\n\r\n",
            b"GET https://user@[::1]:1/metrics HTTP/1.0\r\n\r\n",
        ] {
            assert_eq!(ok(head), Some(Asked::Metrics { body: true }));
        }
        for head in [
            &b"GET http://host HTTP/1.1\r\n\r\n"[..],
            b"GET http://host?/metrics HTTP/1.1\r\n\r\n",
            b"GET http://host/metricsx HTTP/1.1\r\n\r\n",
            b"GET http://host/x/metrics HTTP/1.1\r\n\r\n",
            b"GET 1http://host/metrics HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(ok(head), Some(Asked::NotFound { body: true }));
        }
        assert_eq!(ok(b"\r\n\r\n"), Some(Asked::Malformed));
        assert_eq!(ok(b"\n\n"), Some(Asked::Malformed));
        assert_eq!(ok(b"GET /metrics\r\n\r\n"), Some(Asked::Malformed));
        assert_eq!(
            ok(b"GET  /metrics HTTP/1.1\r\n\r\n"),
            Some(Asked::Malformed)
        );
        assert_eq!(
            ok(b"\xff\xfe /metrics HTTP/1.1\r\n\r\n"),
            Some(Asked::Malformed)
        );
        assert_eq!(
            ok(b"GET /metrics HTTP/1.1\r\nNo colon\r\n\r\n"),
            Some(Asked::Malformed)
        );
        assert_eq!(
            ok(b"GET /metrics HTTP/2.0\r\n\r\n"),
            Some(Asked::VersionNotSupported)
        );
        assert_eq!(
            ok(b"GET /metrics FTP/1.1\r\n\r\n"),
            Some(Asked::VersionNotSupported)
        );
    }

    /// Incomplete heads ask for more bytes; too many headers is `431`.
    #[test]
    fn incomplete_and_oversized_heads() {
        for head in [
            &b""[..],
            b"\r\n",
            b"GET",
            b"GET /metrics HTTP/1.1",
            b"GET /metrics HTTP/1.1\r\nHost: x",
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n",
        ] {
            assert_eq!(asked(head), None, "{:?}", String::from_utf8_lossy(head));
        }
        let mut many = b"GET /metrics HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            asked(&many),
            Some(Err("431 Request Header Fields Too Large"))
        );
    }
}
