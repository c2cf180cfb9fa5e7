//! The server: mio event loops that accept connections and serve them through a [`Router`].
//!
//! This module and [`client`](crate::client) are the only places that touch sockets. Each
//! connection's protocol state is a sans-IO [`Connection`]; its loop moves bytes between it
//! and the socket and keeps the socket's interest in step with it.
//!
//! A server runs [`ServerBuilder::loops`] event loops (default: one per available core), each
//! on its own thread with its own poller, slab of connections, buffer pool and counters. The
//! first loop accepts and deals connections out to the loops in turn; a connection is served
//! by one loop for life, and its inline handlers run on that loop's thread. The loops share
//! the [`Router`] (read-only), the worker pool for blocking handlers, and one count of open
//! connections.
//!
//! # Examples
//!
//! ```
//! use bytes::Bytes;
//! use courier_rpc::client::Client;
//! use courier_rpc::server::Server;
//! use courier_rpc::service::{Method, Router};
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
mod log_limit;
mod mailbox;
mod security;
#[cfg(feature = "signal")]
mod signals;
mod transport;
mod workers;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Poll, Waker};

/// The per-connection limits ([`ServerBuilder::connection`] takes them all at once) and their
/// defaults, from the sans-IO connection they bound.
pub use crate::connection::{
    ConnectionConfig, DEFAULT_FRAME_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_LINGER,
    DEFAULT_MAX_EMPTY_FRAMES, DEFAULT_MAX_FRAMES_PER_TURN, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_OUTPUT_HARD_CAP, DEFAULT_OUTPUT_HIGH_WATER, DEFAULT_WRITE_TIMEOUT,
};
pub use crate::sys::raise_open_file_limit;
pub use config::{
    default_loops, ServerConfig, DEFAULT_ADDR, DEFAULT_BACKLOG, DEFAULT_MAX_CONNECTIONS,
};
#[cfg(feature = "signal")]
pub use signals::{drain_on_signals, SignalGuard};
pub use workers::{DEFAULT_WORKERS, DEFAULT_WORKER_QUEUE};

use crate::connection::Connection;
use crate::service::Router;
use crate::stats::{ServerStats, Stats};
use event_loop::{DrainRequest, EventLoop, Shared};
use mailbox::Mailbox;
use workers::WorkerPool;

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
    /// is sent an ERROR frame with RESOURCE_EXHAUSTED and closed at once (counted as
    /// `connections_rejected`). Each open connection costs one file descriptor and a few
    /// hundred bytes of state; buffers are lent from a shared pool only while it has bytes to
    /// read or write, so an idle connection holds none. When the process runs out of file
    /// descriptors, the pending connection is accepted on a spare descriptor kept for the
    /// purpose, sent RESOURCE_EXHAUSTED and closed (`connections_rejected_fd`), so the accept
    /// queue keeps moving and the loop does not spin.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.config.max_connections = max;
        self
    }

    /// Connections the kernel may complete and queue before the loop accepts them. Default
    /// [`DEFAULT_BACKLOG`] (511, Redis's and nginx's); the kernel caps it at
    /// `net.core.somaxconn`. Too small a backlog makes a burst of connects wait for SYN
    /// retransmits (a second or more each).
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.config.backlog = backlog;
        self
    }

    /// Event loops, each on its own thread with its own poller and slab; connections are
    /// dealt out to them in turn. Default [`default_loops`]: the number of cores the process
    /// may use (`std::thread::available_parallelism`), or 1 if that is unknown. At least 1.
    /// One loop is the right choice when the server shares a small machine with its load.
    pub fn loops(mut self, loops: usize) -> Self {
        self.config.loops = loops.max(1);
        self
    }

    /// Worker threads that run blocking handlers
    /// ([`Router::register_blocking`]), default [`DEFAULT_WORKERS`] (16); started only if
    /// the router has a blocking handler. At least 1.
    pub fn workers(mut self, workers: usize) -> Self {
        self.config.workers = workers.max(1);
        self
    }

    /// Blocking calls that may wait for a free worker, default [`DEFAULT_WORKER_QUEUE`]
    /// (1,024). One more is answered UNAVAILABLE at once without running
    /// (`blocking_rejected`); it is safe to retry.
    pub fn worker_queue(mut self, calls: usize) -> Self {
        self.config.worker_queue = calls;
        self
    }

    /// The settings so far.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Binds the listening socket and prepares the loops; nothing is served until
    /// [`Server::run`] or [`Server::spawn`]. Registers the built-in admin service (service 0,
    /// [`crate::admin`]) on `router`, and starts the worker pool if `router` has blocking
    /// handlers.
    ///
    /// # Errors
    /// `InvalidInput` when the router fails [`Router::check`] (two handlers for one method, a
    /// method name that is malformed or taken, or a method in service 0; the error wraps the
    /// [`RouteError`](crate::service::RouteError) naming them) or the output hard cap is below the high-water mark;
    /// `PermissionDenied` for an address beyond loopback with no access control (protected
    /// mode: see [`ServerBuilder::insecure_open_access`]); otherwise the IO error of creating
    /// the pollers, binding the address (`AddrInUse` when taken) or starting the worker
    /// threads.
    pub fn bind(self, mut router: Router) -> io::Result<Server> {
        router
            .check()
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        let config = self.config;
        if let Some(authorizer) = &config.authorizer {
            router.set_authorizer(Arc::clone(authorizer));
        }
        config.check_protected(config.addr, router.has_authorizer())?;
        let authentication = config.authentication(router.has_authorizer());
        let limits = &config.connection;
        if limits.output_hard_cap < limits.output_high_water {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "output hard cap ({} bytes) is below the high-water mark ({} bytes)",
                    limits.output_hard_cap, limits.output_high_water
                ),
            ));
        }
        // The admin service first, so that the per-method counters cover its methods too;
        // STATS reads the counters made below.
        let counters = Arc::new(OnceLock::<ServerStats>::new());
        let read = Arc::clone(&counters);
        crate::admin::register_reporting(&mut router, move || {
            read.get().map(ServerStats::snapshot).unwrap_or_default()
        });
        let methods = router.method_names();
        let loops = config.loops.max(1);
        let mut polls = Vec::with_capacity(loops);
        let mut mailboxes = Vec::with_capacity(loops);
        for _ in 0..loops {
            let poll = Poll::new()?;
            let waker = Waker::new(poll.registry(), event_loop::WAKER)?;
            let stats = Arc::new(Stats::with_methods(Arc::clone(&methods)));
            mailboxes.push(Arc::new(Mailbox::new(waker, stats)));
            polls.push(poll);
        }
        let mailboxes: Arc<[Arc<Mailbox>]> = mailboxes.into();
        let stats = ServerStats::new(mailboxes.iter().map(|m| Arc::clone(&m.stats)).collect());
        let _ = counters.set(stats.clone());
        let listener = TcpListener::bind(config.addr)?;
        crate::sys::listen(&listener, config.backlog)?;
        let local_addr = listener.local_addr()?;
        let workers = if router.has_blocking() {
            Some(WorkerPool::start(
                config.workers,
                config.worker_queue,
                Arc::clone(&mailboxes),
            )?)
        } else {
            None
        };
        let stop = Arc::new(AtomicBool::new(false));
        let drain = Arc::new(DrainRequest::default());
        let handle = ServerHandle {
            stop: Arc::clone(&stop),
            drain: Arc::clone(&drain),
            mailboxes: Arc::clone(&mailboxes),
        };
        let shared = Arc::new(Shared {
            tls: config.tls.as_ref().map(|tls| Arc::clone(tls.rustls())),
            authentication,
            config,
            router: Arc::new(router),
            mailboxes,
            workers,
            open: AtomicUsize::new(0),
            stop,
            drain,
        });
        let mut listener = Some(listener);
        let event_loops = polls
            .into_iter()
            .enumerate()
            .map(|(index, poll)| EventLoop::new(index, poll, listener.take(), Arc::clone(&shared)))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Server {
            loops: event_loops,
            local_addr,
            handle,
            stats,
        })
    }
}

/// A bound server, ready to run. See the [module docs](self).
#[derive(Debug)]
pub struct Server {
    loops: Vec<EventLoop>,
    local_addr: SocketAddr,
    handle: ServerHandle,
    stats: ServerStats,
}

impl Server {
    /// A builder with every default.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that stops the server from another thread.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The server's counters, summed over its loops; readable while it runs.
    pub fn stats(&self) -> ServerStats {
        self.stats.clone()
    }

    /// Serves until [`ServerHandle::shutdown`] is called: the first loop on this thread, each
    /// other on a thread of its own named `courier-loop-N`. Returns when every loop has
    /// stopped; a loop that fails stops the others.
    ///
    /// # Errors
    /// The first IO error of a poller itself (errors of single connections only close them),
    /// or of spawning a loop's thread; a panic of a loop thread is reported as
    /// `io::ErrorKind::Other`.
    pub fn run(self) -> io::Result<()> {
        let Server { loops, handle, .. } = self;
        let mut loops = loops.into_iter();
        let Some(first) = loops.next() else {
            return Ok(());
        };
        let mut threads = Vec::new();
        let mut result = Ok(());
        for (n, event_loop) in loops.enumerate() {
            let loop_handle = handle.clone();
            let spawned = thread::Builder::new()
                .name(format!("courier-loop-{}", n + 1))
                .spawn(move || run_loop(event_loop, &loop_handle));
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(err) => {
                    handle.shutdown();
                    result = Err(err);
                    break;
                }
            }
        }
        let first_result = if result.is_ok() {
            run_loop(first, &handle)
        } else {
            Ok(())
        };
        result = result.and(first_result);
        for thread in threads {
            let joined = thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("server loop thread panicked")));
            result = result.and(joined);
        }
        result
    }

    /// Serves on a new thread named `courier-server` (which runs the first loop).
    ///
    /// # Errors
    /// The error of spawning the thread.
    pub fn spawn(self) -> io::Result<RunningServer> {
        let handle = self.handle();
        let addr = self.local_addr();
        let stats = self.stats();
        let thread = thread::Builder::new()
            .name("courier-server".into())
            .spawn(move || self.run())?;
        Ok(RunningServer {
            handle,
            addr,
            stats,
            thread: Some(thread),
        })
    }
}

/// Runs one loop; if it fails or panics, stops the others.
fn run_loop(event_loop: EventLoop, handle: &ServerHandle) -> io::Result<()> {
    /// Stops the server when dropped during a panic (a loop that died would otherwise be
    /// dealt connections it never serves).
    struct StopOnPanic<'a>(&'a ServerHandle);
    impl Drop for StopOnPanic<'_> {
        fn drop(&mut self) {
            if thread::panicking() {
                log::error!("a server loop panicked; stopping the server");
                self.0.shutdown();
            }
        }
    }
    let _guard = StopOnPanic(handle);
    let result = event_loop.run();
    if let Err(err) = &result {
        log::error!("server loop failed: {err}; stopping the server");
        handle.shutdown();
    }
    result
}

/// Stops a running server from any thread. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ServerHandle {
    stop: Arc<AtomicBool>,
    drain: Arc<DrainRequest>,
    mailboxes: Arc<[Arc<Mailbox>]>,
}

impl ServerHandle {
    /// Asks the server to drain gracefully (`proto-spec/PROTOCOL.md` Section 14), as on
    /// SIGTERM: it stops accepting (the listener closes, so new connects are refused), sends
    /// every connection GOAWAY with status OK and the id of the last request it read, answers
    /// every request up to that id (blocking calls still running, responses held for a
    /// commit), and closes each connection once its answers are written. [`Server::run`]
    /// returns when every connection has closed, or at `timeout` from now (then the rest are
    /// closed as by [`ServerHandle::shutdown`]). Calling it again does not move the deadline.
    pub fn drain(&self, timeout: Duration) {
        {
            let mut deadline = self
                .drain
                .deadline
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if deadline.is_none() {
                *deadline = Some(std::time::Instant::now() + timeout);
            }
        }
        self.drain.asked.store(true, Ordering::SeqCst);
        for mailbox in self.mailboxes.iter() {
            mailbox.wake();
        }
    }

    /// Asks every loop to stop: every connection is sent GOAWAY with the last request id it
    /// was answered, given one attempt to flush, and closed; then [`Server::run`] returns.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for mailbox in self.mailboxes.iter() {
            mailbox.wake();
        }
    }
}

/// A server running on its own threads, from [`Server::spawn`]. Dropping it stops the server
/// and waits for the threads.
#[derive(Debug)]
pub struct RunningServer {
    handle: ServerHandle,
    addr: SocketAddr,
    stats: ServerStats,
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

    /// The server's counters, summed over its loops.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Stops the server and waits for its threads.
    ///
    /// # Errors
    /// A loop's IO error; a panic of a loop thread is reported as `io::ErrorKind::Other`.
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
    transport: transport::Transport,
    peer: SocketAddr,
    /// Unique for its loop's life (slab keys are reused); with the loop's index, ties worker
    /// results to it.
    id: u64,
    state: Connection,
    interest: mio::Interest,
    /// Whether the poller has reported the peer's end of stream, an error or urgent data:
    /// from then on the socket is read until `WouldBlock` or end of stream, not only until a
    /// short read (which no longer proves it drained).
    read_until_blocked: bool,
    /// Bytes this connection has added to the `buffered_bytes` gauge.
    accounted: usize,
    /// Whether it is already on the loop's list to serve next turn.
    queued: bool,
    /// Whether it is already on the loop's list of responses held for the turn's commit.
    held_queued: bool,
    /// The loop turn it was last granted a budget in.
    turn: u64,
}
