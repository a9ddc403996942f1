//! `GET /metrics` over HTTP/1.1: a small server on `std::net`, one thread per
//! connection, with limits so that a misbehaving client costs only its own connection.
//!
//! - At most [`MAX_CONNECTIONS`] connections are served at once; beyond that a
//!   connection gets `503` (written without blocking) and is closed at once.
//! - The request head must arrive within [`HEAD_DEADLINE`] and fit in
//!   [`MAX_HEAD_BYTES`] (else `408`/`431`); a request body is not read.
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

/// Parses the request line of `head` (the bytes before the blank line).
fn parse_head(head: &[u8]) -> Asked {
    let line = head.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return Asked::Malformed;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Asked::Malformed;
    };
    if method.is_empty() || target.is_empty() || !version.starts_with("HTTP/") {
        return Asked::Malformed;
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Asked::VersionNotSupported;
    }
    let body = match method {
        "GET" => true,
        "HEAD" => false,
        _ => return Asked::MethodNotAllowed,
    };
    let path = target.split('?').next().unwrap_or("");
    if path == "/metrics" {
        Asked::Metrics { body }
    } else {
        Asked::NotFound { body }
    }
}

/// Reads the request head: up to and without the first blank line. `Err(status)` for
/// a head that is too long or too slow, or a client that hung up.
fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, Option<&'static str>> {
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
        // Look for the blank line from just before the new bytes.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(from + end);
            return Ok(head);
        }
        if let Some(end) = head[head.len().saturating_sub(n + 1)..]
            .windows(2)
            .position(|w| w == b"\n\n")
        {
            // Bare LF line ends (tolerated, as most servers do).
            let at = head.len().saturating_sub(n + 1) + end;
            head.truncate(at);
            return Ok(head);
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
    let request = match read_head(&mut stream) {
        Ok(head) => parse_head(&head),
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
    use super::{parse_head, Asked};

    #[test]
    fn request_lines() {
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x"),
            Asked::Metrics { body: true }
        );
        assert_eq!(
            parse_head(b"HEAD /metrics?a=b HTTP/1.0"),
            Asked::Metrics { body: false }
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.1"),
            Asked::NotFound { body: true }
        );
        assert_eq!(
            parse_head(b"POST /metrics HTTP/1.1"),
            Asked::MethodNotAllowed
        );
        assert_eq!(parse_head(b""), Asked::Malformed);
        assert_eq!(parse_head(b"GET /metrics"), Asked::Malformed);
        assert_eq!(parse_head(b"GET  /metrics HTTP/1.1"), Asked::Malformed);
        assert_eq!(parse_head(b"GET /metrics FTP/1.1"), Asked::Malformed);
        assert_eq!(
            parse_head(b"GET /metrics HTTP/2.0"),
            Asked::VersionNotSupported
        );
    }
}
