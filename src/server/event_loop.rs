//! The mio event loop: accept, read, dispatch, write, time out, close.
//!
//! One turn of the loop: wait for readiness (or the next timer tick), serve every connection
//! that has an event, serve the connections that yielded last turn, give finished blocking
//! calls back to their connections, and every tick check every connection's timers (a sweep
//! over the slab, as Redis's `clientsCron` does: cheaper than a timer per frame).

use std::fs::File;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::workers::{Completed, Origin, WorkerPool};
use super::{Conn, ServerConfig, ServerHandle};
use crate::connection::{BufferPool, CloseReason, Connection};
use crate::proto::{Code, Encoder, FrameKind, Status};
use crate::service::{BlockingCall, Failure, Router};
use crate::stats::{self, CloseCause, Stats};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX);

/// Events taken from the poller per turn: 1,024.
const EVENTS_CAPACITY: usize = 1024;

/// How long accepting pauses when no file descriptor can be had even for a refusal: 100 ms.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The slab key of a connection's token, and back: the one mapping between the two.
fn token_of(key: usize) -> Token {
    Token(key)
}

fn key_of(token: Token) -> usize {
    token.0
}

#[derive(Debug)]
pub(super) struct EventLoop {
    poll: Poll,
    listener: TcpListener,
    local_addr: SocketAddr,
    handle: ServerHandle,
    config: ServerConfig,
    router: Arc<Router>,
    stats: Arc<Stats>,
    conns: Slab<Conn>,
    next_id: u64,
    turn: u64,
    buffers: BufferPool,
    workers: Option<WorkerPool>,
    /// Connections to serve next turn though their sockets may report nothing (they used up
    /// their budget).
    ready: Vec<usize>,
    /// A descriptor held in reserve, closed to accept-and-refuse when the process has none.
    spare_fd: Option<File>,
    accept_paused_until: Option<Instant>,
    tick: Duration,
    next_sweep: Instant,
    calls: Vec<BlockingCall>,
    completed: Vec<Completed>,
    scratch_keys: Vec<usize>,
}

impl EventLoop {
    pub(super) fn new(
        config: ServerConfig,
        router: Arc<Router>,
        stats: Arc<Stats>,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.addr)?;
        set_backlog(&listener, config.backlog)?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let workers = if router.has_blocking() {
            Some(WorkerPool::start(
                config.workers,
                config.worker_queue,
                Arc::clone(&waker),
                Arc::clone(&stats),
            )?)
        } else {
            None
        };
        let handle = ServerHandle {
            stop: Arc::new(AtomicBool::new(false)),
            waker,
        };
        let c = &config.connection;
        let max_connections = config.max_connections;
        let shortest = [c.frame_timeout, c.idle_timeout, c.write_timeout, c.linger]
            .into_iter()
            .min()
            .unwrap_or(Duration::from_secs(1));
        let tick = (shortest / 8).clamp(Duration::from_millis(10), Duration::from_secs(1));
        Ok(EventLoop {
            poll,
            listener,
            local_addr,
            handle,
            config,
            router,
            stats,
            // Reserved up front (up to 65,536 entries), so the slab never doubles and copies;
            // the pages of a reservation are only touched, and counted in RSS, as connections
            // fill it.
            conns: Slab::with_capacity(max_connections.min(1 << 16)),
            next_id: 0,
            turn: 0,
            buffers: BufferPool::new(),
            workers,
            ready: Vec::new(),
            spare_fd: File::open("/dev/null").ok(),
            accept_paused_until: None,
            tick,
            next_sweep: Instant::now() + tick,
            calls: Vec::new(),
            completed: Vec::new(),
            scratch_keys: Vec::new(),
        })
    }

    pub(super) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub(super) fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    pub(super) fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// How long the next poll may wait: not at all if connections are ready, else until the
    /// next timer sweep (if any connection is open) or the end of an accept pause.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        let sweep = (!self.conns.is_empty()).then_some(self.next_sweep);
        [sweep, self.accept_paused_until]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    pub(super) fn run(mut self) -> io::Result<()> {
        log::info!("listening on {}", self.local_addr);
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            self.turn += 1;
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now),
                    WAKER => self.take_completed(now),
                    token => self.serve(key_of(token), now),
                }
            }
            let ready = std::mem::take(&mut self.ready);
            for &key in &ready {
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.queued = false;
                }
            }
            for &key in &ready {
                self.serve(key, now);
            }
            if self.accept_paused_until.is_some_and(|until| now >= until) {
                self.accept_paused_until = None;
                self.accept(now);
            }
            if now >= self.next_sweep {
                self.sweep(now);
                self.next_sweep = now + self.tick;
            }
            if self.handle.is_stopping() {
                self.shut_down();
                return Ok(());
            }
        }
    }

    /// Accepts until the listener would block (mio's listener is edge-triggered).
    fn accept(&mut self, now: Instant) {
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) if is_out_of_fds(&err) => match self.refuse_without_fd() {
                    // Refused one: there may be more waiting.
                    FdRefusal::Refused => continue,
                    // Linux reports EMFILE at the limit even with nobody waiting; the next
                    // connection raises a new event.
                    FdRefusal::NothingWaiting => return,
                    FdRefusal::NoSpare => {
                        log::error!(
                            "accept: {err}; pausing accepts for {} ms",
                            ACCEPT_BACKOFF.as_millis()
                        );
                        self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                        return;
                    }
                },
                Err(err) => {
                    stats::inc(&self.stats.accept_errors);
                    log::error!("accept failed: {err}");
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            };
            if self.conns.len() >= self.config.max_connections {
                stats::inc(&self.stats.connections_rejected);
                log::warn!(
                    "rejecting {peer}: {} connections open, the limit",
                    self.conns.len()
                );
                let message = format!(
                    "server has reached its limit of {} connections",
                    self.config.max_connections
                );
                reject(&mut stream, &message);
                continue;
            }
            if let Err(err) = stream.set_nodelay(true) {
                log::debug!("{peer}: cannot set TCP_NODELAY: {err}");
            }
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if let Err(err) =
                self.poll
                    .registry()
                    .register(&mut stream, token_of(key), Interest::READABLE)
            {
                log::error!("cannot register {peer}: {err}");
                continue;
            }
            log::debug!("accepted {peer} as {key}");
            self.next_id += 1;
            entry.insert(Conn {
                stream,
                peer,
                id: self.next_id,
                state: Connection::new(self.config.connection, Arc::clone(&self.stats), now),
                interest: Interest::READABLE,
                accounted: 0,
                queued: false,
                turn: 0,
            });
            stats::inc(&self.stats.connections_accepted);
            stats::shift(&self.stats.connections_open, 1);
        }
    }

    /// Out of descriptors: frees the spare, accepts the waiting connection on it, refuses it
    /// with RESOURCE_EXHAUSTED, and takes the spare back.
    fn refuse_without_fd(&mut self) -> FdRefusal {
        let Some(spare) = self.spare_fd.take() else {
            self.spare_fd = File::open("/dev/null").ok();
            return FdRefusal::NoSpare;
        };
        drop(spare);
        let outcome = match self.listener.accept() {
            Ok((mut stream, peer)) => {
                stats::inc(&self.stats.connections_rejected_fd);
                log::warn!("rejecting {peer}: out of file descriptors");
                reject(&mut stream, "server is out of file descriptors");
                FdRefusal::Refused
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => FdRefusal::NothingWaiting,
            Err(_) => FdRefusal::NoSpare,
        };
        self.spare_fd = File::open("/dev/null").ok();
        match (outcome, self.spare_fd.is_some()) {
            (FdRefusal::Refused, false) => FdRefusal::NoSpare,
            (outcome, _) => outcome,
        }
    }

    /// Serves one connection: reads, answers and writes as far as its budget and limits
    /// allow, hands its blocking calls to the workers, then closes it or updates its
    /// interest. Every event is treated as a hint (mio "Spurious events").
    fn serve(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.turn != self.turn {
            conn.turn = self.turn;
            conn.state.begin_turn();
        }
        let had_reason = conn.state.close_reason().is_some();
        conn.state.lend_buffers(&mut self.buffers);
        let origin = Origin { key, id: conn.id };
        let served = loop {
            let served = serve_io(conn, &self.router, now);
            conn.state.take_blocking(&mut self.calls);
            let mut refused_any = false;
            for call in self.calls.drain(..) {
                let refused = match &self.workers {
                    Some(workers) => workers.submit(origin, call),
                    None => Err(call),
                };
                if let Err(call) = refused {
                    refused_any = true;
                    let status =
                        Status::unavailable("server busy: worker queue full; safe to retry");
                    let failure = Failure {
                        status,
                        panicked: false,
                    };
                    conn.state
                        .complete_call(call.request_id(), Err(failure), now);
                }
            }
            // A refusal frees an in-flight slot and queues an answer: serve again, which
            // flushes it and decodes what the in-flight limit held back. Each round that
            // refuses has decoded a call, so the turn budget bounds this.
            if !refused_any || served.is_err() {
                break served;
            }
        };
        conn.state.return_buffers(&mut self.buffers);
        if !had_reason {
            log_close_reason(conn);
        }
        account(conn, &self.stats);
        if let Err(err) = served {
            log::debug!("{}: {err}", conn.peer);
            self.close(key, true);
            return;
        }
        if conn.state.is_closed() {
            self.close(key, false);
            return;
        }
        if conn.state.budget_spent() && !conn.queued {
            conn.queued = true;
            self.ready.push(key);
        }
        let wanted = if conn.state.wants_write() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if wanted != conn.interest {
            match self
                .poll
                .registry()
                .reregister(&mut conn.stream, token_of(key), wanted)
            {
                Ok(()) => conn.interest = wanted,
                Err(err) => {
                    log::error!("cannot reregister {}: {err}", conn.peer);
                    self.close(key, true);
                }
            }
        }
    }

    /// Gives finished blocking calls to their connections (if still open) and serves each
    /// of those once.
    fn take_completed(&mut self, now: Instant) {
        let Some(workers) = &self.workers else {
            return;
        };
        workers.take_completed(&mut self.completed);
        let mut keys = std::mem::take(&mut self.scratch_keys);
        for done in self.completed.drain(..) {
            if let Some(conn) = self.conns.get_mut(done.origin.key) {
                if conn.id == done.origin.id {
                    conn.state.complete_call(done.request_id, done.result, now);
                    // Write each answer as it comes, so that a batch of large ones does not
                    // pile up past the hard cap before the first is sent; an error is seen
                    // again, and handled, when the connection is served below.
                    let _ = conn.state.flush_to(&mut conn.stream, now);
                    keys.push(done.origin.key);
                }
            }
        }
        keys.sort_unstable();
        keys.dedup();
        for &key in &keys {
            self.serve(key, now);
        }
        keys.clear();
        self.scratch_keys = keys;
    }

    /// Checks every connection's timers; serves those that fired (to flush what they queued,
    /// or to close them).
    fn sweep(&mut self, now: Instant) {
        let mut keys = std::mem::take(&mut self.scratch_keys);
        keys.extend(
            self.conns
                .iter()
                .filter(|(_, conn)| conn.state.timeout().is_some_and(|t| t <= now))
                .map(|(key, _)| key),
        );
        for &key in &keys {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.state.handle_timeout(now);
                self.serve(key, now);
            }
        }
        keys.clear();
        self.scratch_keys = keys;
    }

    /// The one close path: deregister, count, remove from the slab, drop (which closes the
    /// socket). `io_error` says the socket failed.
    fn close(&mut self, key: usize, io_error: bool) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        if let Err(err) = self.poll.registry().deregister(&mut conn.stream) {
            log::debug!("deregister {}: {err}", conn.peer);
        }
        let reason = conn.state.close_reason();
        let cause = match (reason, io_error) {
            (None | Some(CloseReason::PeerClosed), true) => CloseCause::Io,
            (Some(reason), _) => reason.cause(),
            (None, false) => CloseCause::Peer,
        };
        self.stats.closed(cause);
        stats::shift(&self.stats.connections_open, -1);
        stats::shift(&self.stats.buffered_bytes, -(conn.accounted as i64));
        log::debug!("closed {} ({:?})", conn.peer, reason);
    }

    fn shut_down(&mut self) {
        log::info!(
            "shutting down; sending GOAWAY to {} connections",
            self.conns.len()
        );
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        let now = Instant::now();
        for key in keys {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.state
                    .go_away(Code::UNAVAILABLE, "server shutting down");
                let _ = conn.state.flush_to(&mut conn.stream, now);
                let _ = conn.stream.shutdown(Shutdown::Write);
            }
            self.close(key, false);
        }
    }
}

/// What refusing a connection without a file descriptor of our own came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FdRefusal {
    /// One waiting connection was accepted on the spare descriptor and refused.
    Refused,
    /// No connection was waiting.
    NothingWaiting,
    /// No spare descriptor could be had: accepting must pause.
    NoSpare,
}

/// Brings the `buffered_bytes` gauge up to date with one connection.
fn account(conn: &mut Conn, stats: &Stats) {
    let held = conn.state.buffered_input() + conn.state.queued_output();
    stats::shift(&stats.buffered_bytes, held as i64 - conn.accounted as i64);
    conn.accounted = held;
}

/// Sets the listen backlog: the connections the kernel completes and queues before the loop
/// accepts them (mio binds with 128). Linux and the BSDs let `listen` be called again on a
/// listening socket to change it; the kernel caps it at `net.core.somaxconn`.
fn set_backlog(listener: &TcpListener, backlog: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let backlog = libc::c_int::try_from(backlog).unwrap_or(libc::c_int::MAX);
    // SAFETY: `listen` takes a descriptor and an integer and touches no memory of ours; the
    // descriptor is the listener's own, open for as long as `listener` is borrowed.
    if unsafe { libc::listen(listener.as_raw_fd(), backlog) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn is_out_of_fds(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Tells the operator why a connection stopped reading, with the peer's address: a broken
/// protocol or a tripped limit is a warning, an orderly end is debug.
fn log_close_reason(conn: &Conn) {
    match conn.state.close_reason() {
        Some(CloseReason::Protocol(err)) => log::warn!("{}: closing: {err}", conn.peer),
        Some(CloseReason::UnexpectedFrame(kind)) => {
            log::warn!("{}: closing: unexpected {} frame", conn.peer, kind.name())
        }
        Some(CloseReason::PeerError(status)) => {
            log::info!("{}: peer sent ERROR {status}", conn.peer)
        }
        Some(
            reason @ (CloseReason::FrameTimeout
            | CloseReason::WriteTimeout
            | CloseReason::OutputCap
            | CloseReason::Flood),
        ) => log::warn!("{}: closing: {reason:?}", conn.peer),
        Some(reason) => log::debug!("{}: {reason:?}", conn.peer),
        None => {}
    }
}

/// Moves bytes for one connection until its socket would block or a limit stops it.
///
/// mio's readiness is edge-triggered: a socket that was not read to `WouldBlock`, or input
/// left in the read buffer, raises no new event. So this goes round again whenever a round
/// made progress and work may remain (a pause lifted because output drained, frames held
/// back by a limit); the turn budget bounds the rounds.
fn serve_io(conn: &mut Conn, router: &Router, now: Instant) -> io::Result<()> {
    loop {
        let queued = conn.state.queued_output();
        let mut frames = 0;
        // Flush first: output drained below the high-water mark lets reading resume.
        conn.state.flush_to(&mut conn.stream, now)?;
        while conn.state.wants_read() {
            match conn.state.read_from(&mut conn.stream) {
                Ok(0) => break,
                Ok(_) => {
                    frames += conn.state.process(now, router);
                    // Write as we go, so a pipelining client's responses do not pile up.
                    conn.state.flush_to(&mut conn.stream, now)?;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        // Input already buffered (end of stream, or a budget renewed this turn).
        frames += conn.state.process(now, router);
        conn.state.flush_to(&mut conn.stream, now)?;
        if conn.state.wants_write_shutdown() {
            conn.stream.shutdown(Shutdown::Write)?;
            conn.state.write_closed(now);
            // Input that arrived while we were not reading raised no new edge: read it now.
            continue;
        }
        let progress = frames > 0 || conn.state.queued_output() < queued;
        if progress && (conn.state.wants_read() || conn.state.has_decodable_input()) {
            continue;
        }
        return Ok(());
    }
}

/// Tells a refused connection why, in one non-blocking write, and drops it.
fn reject(stream: &mut TcpStream, message: &str) {
    let mut frame = BytesMut::new();
    Encoder::new(1024).encode_simple(
        &mut frame,
        FrameKind::Error,
        0,
        Code::RESOURCE_EXHAUSTED,
        message,
    );
    let _ = stream.write(&frame);
    let _ = stream.shutdown(Shutdown::Write);
}
