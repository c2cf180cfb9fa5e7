//! The server: a mio event loop that accepts connections and serves them through a [`Router`].
//!
//! This module and [`client`](crate::client) are the only places that touch sockets. Each
//! connection's protocol state is a sans-IO [`Connection`]; the loop moves bytes between it
//! and the socket and keeps the socket's interest in step with it.
//!
//! # Examples
//!
//! ```
//! use bytes::Bytes;
//! use courier::client::Client;
//! use courier::server::Server;
//! use courier::service::{Method, Router};
//!
//! const REVERSE: Method<Bytes, Bytes> = Method::new(10, 1, "demo.Reverse");
//!
//! let mut router = Router::new();
//! router.register(REVERSE, |_ctx, body: Bytes| {
//!     Ok(body.iter().rev().copied().collect::<Vec<u8>>().into())
//! });
//! let server = Server::builder()
//!     .addr("127.0.0.1:0".parse().unwrap())
//!     .bind(router)
//!     .unwrap();
//! let addr = server.local_addr();
//! let running = server.spawn().unwrap();
//!
//! let mut client = Client::connect(addr).unwrap();
//! let reply = client.call(&REVERSE, &Bytes::from_static(b"abc")).unwrap();
//! assert_eq!(&reply[..], b"cba");
//! running.shutdown().unwrap();
//! ```

mod config;
mod event_loop;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use mio::Waker;

pub use config::{ServerConfig, DEFAULT_ADDR, DEFAULT_MAX_CONNECTIONS};

use crate::connection::Connection;
use crate::service::Router;
use event_loop::EventLoop;

/// Builds a [`Server`]: `Server::builder().addr(..).max_body_len(..).bind(router)`.
#[derive(Clone, Debug, Default)]
pub struct ServerBuilder {
    config: ServerConfig,
}

impl ServerBuilder {
    /// Address to listen on. Default [`DEFAULT_ADDR`] (`127.0.0.1:7878`); port 0 picks a free
    /// port, which [`Server::local_addr`] reports.
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.config.addr = addr;
        self
    }

    /// Most connections open at once. Default [`DEFAULT_MAX_CONNECTIONS`] (10,000). One more
    /// is sent an ERROR frame with RESOURCE_EXHAUSTED and closed. Each open connection costs
    /// one file descriptor, a few hundred bytes of state, and its buffers: none before its
    /// first read, then a read buffer of at least 16 KiB and whatever output is queued.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.config.max_connections = max;
        self
    }

    /// Largest frame body accepted and sent, in bytes, metadata included. Default
    /// [`DEFAULT_MAX_BODY_LEN`](crate::proto::DEFAULT_MAX_BODY_LEN) (4 MiB, gRPC's default).
    /// A larger incoming frame is answered with an ERROR frame carrying RESOURCE_EXHAUSTED and
    /// its connection is closed; a larger response is replaced by a RESOURCE_EXHAUSTED
    /// response. A connection's read buffer can grow to about this size plus 16 KiB.
    pub fn max_body_len(mut self, max: u32) -> Self {
        self.config.connection.max_body_len = max;
        self
    }

    /// How long a connection that was sent ERROR or GOAWAY keeps reading (and discarding)
    /// before it is closed, so that the frame is not destroyed by a reset. Default 2 s.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.config.connection.linger = linger;
        self
    }

    /// The settings so far.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Binds the listening socket and prepares the loop; nothing is served until
    /// [`Server::run`] or [`Server::spawn`].
    ///
    /// # Errors
    /// The IO error of creating the poller or binding the address (`AddrInUse` when taken).
    pub fn bind(self, router: Router) -> io::Result<Server> {
        let event_loop = EventLoop::new(self.config, Arc::new(router))?;
        Ok(Server { event_loop })
    }
}

/// A bound server, ready to run. See the [module docs](self).
#[derive(Debug)]
pub struct Server {
    event_loop: EventLoop,
}

impl Server {
    /// A builder with every default.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.event_loop.local_addr()
    }

    /// A handle that stops the server from another thread.
    pub fn handle(&self) -> ServerHandle {
        self.event_loop.handle()
    }

    /// Serves on this thread until [`ServerHandle::shutdown`] is called.
    ///
    /// # Errors
    /// An IO error of the poller itself; errors of single connections only close them.
    pub fn run(self) -> io::Result<()> {
        self.event_loop.run()
    }

    /// Serves on a new thread named `courier-server`.
    ///
    /// # Errors
    /// The error of spawning the thread.
    pub fn spawn(self) -> io::Result<RunningServer> {
        let handle = self.handle();
        let addr = self.local_addr();
        let thread = thread::Builder::new()
            .name("courier-server".into())
            .spawn(move || self.run())?;
        Ok(RunningServer {
            handle,
            addr,
            thread: Some(thread),
        })
    }
}

/// Stops a running server from any thread. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ServerHandle {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ServerHandle {
    /// Asks the loop to stop: every connection is sent GOAWAY with the last request id it was
    /// answered, given one attempt to flush, and closed; then [`Server::run`] returns.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Err(err) = self.waker.wake() {
            log::error!("cannot wake the server loop: {err}");
        }
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// A server running on its own thread, from [`Server::spawn`]. Dropping it stops the server
/// and waits for the thread.
#[derive(Debug)]
pub struct RunningServer {
    handle: ServerHandle,
    addr: SocketAddr,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl RunningServer {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that stops the server.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Stops the server and waits for its thread.
    ///
    /// # Errors
    /// The loop's IO error; a panic of the loop thread is reported as `io::ErrorKind::Other`.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> io::Result<()> {
        self.handle.shutdown();
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("server thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Err(err) = self.stop_and_join() {
            log::error!("server stopped with an error: {err}");
        }
    }
}

/// A connection's socket and protocol state, as kept in the loop's slab.
#[derive(Debug)]
struct Conn {
    stream: mio::net::TcpStream,
    peer: SocketAddr,
    state: Connection,
    interest: mio::Interest,
}
