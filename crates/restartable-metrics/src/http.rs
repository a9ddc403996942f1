//! `GET /metrics` over HTTP/1.1 (tiny_http, one background thread).

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;

use tiny_http::{Header, Method, Response, Server};

use crate::PerCpuHandle;

/// The content type of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A running `/metrics` endpoint. Dropping it leaves the server running (as the
/// Prometheus exporter's listener does); [`shutdown`](Self::shutdown) stops it.
pub struct MetricsServer {
    server: Arc<Server>,
    addr: SocketAddr,
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
        let server = Server::http(addr).map_err(io::Error::other)?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| io::Error::other("listener has no IP address"))?;
        let server = Arc::new(server);
        let serving = server.clone();
        let thread = std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || serve(&serving, &handle))?;
        Ok(MetricsServer {
            server,
            addr,
            thread: Some(thread),
        })
    }

    /// The address it listens on (the actual port if you asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving requests and waits for the server thread to finish; the listening
    /// socket is closed by tiny_http's accept thread shortly after.
    pub fn shutdown(mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(server: &Server, handle: &PerCpuHandle) {
    let mut body = String::new();
    // `incoming_requests` ends when the server is unblocked.
    for request in server.incoming_requests() {
        let path = request.url().split('?').next().unwrap_or("");
        let method = request.method().clone();
        let result = match (&method, path) {
            (Method::Get | Method::Head, "/metrics") => {
                body.clear();
                handle.render_into(&mut body);
                let header =
                    Header::from_bytes("Content-Type", CONTENT_TYPE).expect("valid header");
                request.respond(Response::from_data(body.as_bytes()).with_header(header))
            }
            (Method::Get | Method::Head, _) => {
                request.respond(Response::from_string("not found\n").with_status_code(404))
            }
            _ => {
                request.respond(Response::from_string("method not allowed\n").with_status_code(405))
            }
        };
        // A client that hung up is its own problem; keep serving the others.
        let _ = result;
    }
}
