//! A Prometheus `/metrics` endpoint for a server's counters (feature `metrics`).
//!
//! [`MetricsServer::start`] serves `GET /metrics` over HTTP/1.1 on a thread of its own, apart
//! from the event loops, answering with [`render_prometheus`] of the server's
//! [`ServerStats`]: every STATS counter, requests by method and status, and a latency
//! histogram per method. The HTTP server is the `tiny_http` crate's.
//!
//! The endpoint has no TLS and no access control: serve it on loopback, or on an address
//! only the monitoring network reaches (the bundled servers refuse an address beyond loopback
//! without `--metrics-open-access`).
//!
//! # Examples
//!
//! ```
//! use courier_rpc::metrics::MetricsServer;
//! use courier_rpc::{Router, Server};
//! use std::io::{Read, Write};
//!
//! let server = Server::builder()
//!     .addr("127.0.0.1:0".parse().unwrap())
//!     .bind(Router::new())
//!     .unwrap();
//! let metrics = MetricsServer::start("127.0.0.1:0".parse().unwrap(), server.stats()).unwrap();
//! let running = server.spawn().unwrap();
//!
//! let mut http = std::net::TcpStream::connect(metrics.local_addr()).unwrap();
//! http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
//! let mut answer = String::new();
//! http.read_to_string(&mut answer).unwrap();
//! assert!(answer.starts_with("HTTP/1.1 200"));
//! assert!(answer.contains("courier_connections_open"));
//! metrics.shutdown();
//! running.shutdown().unwrap();
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use tiny_http::{Header, Method, Response, Server as HttpServer};

use crate::stats::{render_prometheus, ServerStats};

/// The path served.
pub const PATH: &str = "/metrics";

/// The content type of the text exposition format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A running `/metrics` endpoint. Stops when [`MetricsServer::shutdown`] is called or it is
/// dropped.
pub struct MetricsServer {
    http: Arc<HttpServer>,
    local_addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `addr` (port 0 picks a free port: see [`MetricsServer::local_addr`]) and
    /// serves `stats` at [`PATH`] from a thread named `courier-metrics`:
    ///
    /// - `GET` or `HEAD /metrics`: 200 with [`CONTENT_TYPE`];
    /// - another path: 404; another method: 405 with `Allow: GET, HEAD`.
    ///
    /// # Errors
    /// The error of binding `addr` (`AddrInUse` when taken) or of starting the thread.
    pub fn start(addr: SocketAddr, stats: ServerStats) -> io::Result<MetricsServer> {
        let http = HttpServer::http(addr).map_err(io::Error::other)?;
        let local_addr = http
            .server_addr()
            .to_ip()
            .ok_or_else(|| io::Error::other("the metrics server has no IP address"))?;
        let http = Arc::new(http);
        let serving = Arc::clone(&http);
        let thread = thread::Builder::new()
            .name("courier-metrics".into())
            .spawn(move || serve(&serving, &stats))?;
        Ok(MetricsServer {
            http,
            local_addr,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving and waits for the thread to end.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.http.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

fn header(name: &str, value: &str) -> Header {
    // Both are constant ASCII strings below, which always make a valid header.
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .unwrap_or_else(|()| unreachable!("constant header {name}"))
}

/// Answers requests until the server is unblocked.
fn serve(http: &HttpServer, stats: &ServerStats) {
    let mut text = String::new();
    for request in http.incoming_requests() {
        let path = request.url().split('?').next().unwrap_or("");
        let method = request.method().clone();
        let answered = if path != PATH {
            request.respond(
                Response::from_string("not found: metrics are at /metrics\n").with_status_code(404),
            )
        } else if method != Method::Get && method != Method::Head {
            request.respond(
                Response::from_string("method not allowed\n")
                    .with_status_code(405)
                    .with_header(header("Allow", "GET, HEAD")),
            )
        } else {
            text.clear();
            render_prometheus(stats, &mut text);
            request.respond(
                Response::from_string(text.as_str())
                    .with_header(header("Content-Type", CONTENT_TYPE)),
            )
        };
        if let Err(err) = answered {
            log::debug!("metrics: answer not sent: {err}");
        }
    }
}
