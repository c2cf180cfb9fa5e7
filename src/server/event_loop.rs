//! The mio event loop: accept, read, dispatch, write, time out, close.
//!
//! A server runs several loops, each on its own thread with its own `Poll`, slab, buffer pool
//! and counters; they share only the router, the worker pool and a count of open connections.
//! Loop 0 also owns the listener: it accepts and deals connections out to the loops in turn
//! (round robin), handing a connection for another loop over through that loop's
//! [`Mailbox`]. A connection stays on its loop for life.
//!
//! One turn of a loop: wait for readiness (or the next timer tick); serve every connection
//! that has an event, and when the waker's event comes, take what the mailbox holds
//! (connections handed over, finished blocking calls); serve the connections that yielded last
//! turn; and every tick check every connection's timers (a sweep over the slab, as Redis's `clientsCron` does: cheaper than a
//! timer per frame).

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::log_limit::{limited, LogLimit, INTERVAL};
use super::mailbox::{Accepted, Completed, Mailbox, Origin};
use super::transport::{self, TlsTransport, Transport};
use super::workers::WorkerPool;
use super::{Conn, ServerConfig};
use crate::connection::{BufferPool, CloseReason, Connection};
use crate::proto::{Code, Status};
use crate::service::{BlockingCall, Failure, Router};
use crate::stats::{self, CloseCause, Stats};

const LISTENER: Token = Token(usize::MAX - 1);
/// The token of each loop's waker (its [`Mailbox`]).
pub(super) const WAKER: Token = Token(usize::MAX);

/// What a connection is registered for when it only reads: readable, and on Linux urgent
/// (TCP out-of-band) data too, because a read stops short at the urgent mark though more
/// data follows, so a short read no longer proves the socket drained (see [`serve_io`]).
#[cfg(any(target_os = "linux", target_os = "android"))]
const READ_INTEREST: Interest = Interest::READABLE.add(Interest::PRIORITY);
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const READ_INTEREST: Interest = Interest::READABLE;

/// Accepted connections handed to another loop in one batch at most: 32, so that a long
/// burst of connects does not keep them waiting until the accept queue is empty.
const HANDOFF_BATCH: usize = 32;

/// Events taken from the poller per turn: 1,024.
const EVENTS_CAPACITY: usize = 1024;

/// TLS connections whose handshake a loop works on per turn, at most: 16. A handshake costs
/// a key exchange and a signature (a few hundred microseconds), so a burst of new TLS clients
/// delays the loop's established connections by a few milliseconds a turn at most; the rest
/// wait for the next turn.
const HANDSHAKES_PER_TURN: u32 = 16;

/// How long accepting pauses when no file descriptor can be had even for a refusal: 100 ms.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The slab key of a connection's token, and back: the one mapping between the two.
fn token_of(key: usize) -> Token {
    Token(key)
}

fn key_of(token: Token) -> usize {
    token.0
}

/// What every loop of one server shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) config: ServerConfig,
    /// The rustls configuration every connection starts TLS with; `None`: plain TCP.
    pub(super) tls: Option<Arc<rustls::ServerConfig>>,
    /// How connections authenticate; `None`: no identity required and AUTH not enabled.
    pub(super) authentication: Option<Arc<crate::connection::Authentication>>,
    pub(super) router: Arc<Router>,
    /// Every loop's mailbox, by loop index.
    pub(super) mailboxes: Arc<[Arc<Mailbox>]>,
    pub(super) workers: Option<WorkerPool>,
    /// Connections open on all loops (accepted and not yet closed), for `max_connections`.
    pub(super) open: AtomicUsize,
    pub(super) stop: Arc<AtomicBool>,
    /// Set by [`ServerHandle::drain`](super::ServerHandle::drain): when the drain must end.
    pub(super) drain: Arc<DrainRequest>,
}

/// A request to drain, shared by the handle and the loops.
#[derive(Debug, Default)]
pub(super) struct DrainRequest {
    /// Whether a drain was asked for (checked every turn; the deadline only once).
    pub(super) asked: AtomicBool,
    pub(super) deadline: std::sync::Mutex<Option<Instant>>,
}

impl DrainRequest {
    /// The drain's deadline, once one was asked for.
    fn deadline(&self) -> Option<Instant> {
        if !self.asked.load(Ordering::SeqCst) {
            return None;
        }
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug)]
pub(super) struct EventLoop {
    index: usize,
    poll: Poll,
    /// Loop 0's: the listening socket.
    listener: Option<TcpListener>,
    shared: Arc<Shared>,
    mailbox: Arc<Mailbox>,
    stats: Arc<Stats>,
    conns: Slab<Conn>,
    next_id: u64,
    turn: u64,
    buffers: BufferPool,
    /// The loop the next accepted connection goes to.
    next_loop: usize,
    /// Connections accepted this turn for each other loop, handed over at the end of it.
    handoff: Vec<Vec<Accepted>>,
    /// Connections to serve next turn though their sockets may report nothing (they used up
    /// their budget).
    ready: Vec<usize>,
    /// A descriptor held in reserve, closed to accept-and-refuse when the process has none.
    spare_fd: Option<File>,
    accept_paused_until: Option<Instant>,
    tick: Duration,
    next_sweep: Instant,
    calls: Vec<BlockingCall>,
    /// Connections holding responses for this turn's commit.
    held: Vec<usize>,
    /// Set once this loop has begun draining: when it stops waiting.
    draining_until: Option<Instant>,
    completed: Vec<Completed>,
    accepted: Vec<Accepted>,
    scratch_keys: Vec<usize>,
    /// Handshakes this turn may still work on ([`HANDSHAKES_PER_TURN`]).
    handshake_budget: u32,
    /// When the timers were last swept.
    last_sweep: Instant,
}

impl EventLoop {
    /// Loop `index` of `shared.mailboxes.len()`, polling with `poll` (with which its mailbox's
    /// waker was made); `listener` is given to loop 0 only.
    pub(super) fn new(
        index: usize,
        poll: Poll,
        mut listener: Option<TcpListener>,
        shared: Arc<Shared>,
    ) -> io::Result<Self> {
        if let Some(listener) = &mut listener {
            poll.registry()
                .register(listener, LISTENER, Interest::READABLE)?;
        }
        let mailbox = Arc::clone(&shared.mailboxes[index]);
        let stats = Arc::clone(&mailbox.stats);
        let loops = shared.mailboxes.len();
        let c = &shared.config.connection;
        let shortest = [c.frame_timeout, c.idle_timeout, c.write_timeout, c.linger]
            .into_iter()
            .min()
            .unwrap_or(Duration::from_secs(1));
        let tick = (shortest / 8).clamp(Duration::from_millis(10), Duration::from_secs(1));
        // Reserved up front (this loop's share, up to 65,536 entries), so the slab seldom
        // doubles and copies; the pages of a reservation are only touched, and counted in
        // RSS, as connections fill it.
        let share = shared.config.max_connections.div_ceil(loops.max(1));
        let spare_fd = if listener.is_some() {
            File::open("/dev/null").ok()
        } else {
            None
        };
        Ok(EventLoop {
            index,
            poll,
            listener,
            conns: Slab::with_capacity(share.min(1 << 16)),
            shared,
            mailbox,
            stats,
            next_id: 0,
            turn: 0,
            buffers: BufferPool::new(),
            next_loop: 0,
            handoff: (0..loops).map(|_| Vec::new()).collect(),
            ready: Vec::new(),
            spare_fd,
            accept_paused_until: None,
            tick,
            next_sweep: Instant::now() + tick,
            calls: Vec::new(),
            held: Vec::new(),
            draining_until: None,
            completed: Vec::new(),
            accepted: Vec::new(),
            scratch_keys: Vec::new(),
            handshake_budget: HANDSHAKES_PER_TURN,
            last_sweep: Instant::now(),
        })
    }

    /// How long the next poll may wait: not at all if connections are ready, else until the
    /// next timer sweep (if any connection is open) or the end of an accept pause.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() || !self.held.is_empty() {
            return Some(Duration::ZERO);
        }
        // The sweep also reports suppressed log lines, so it runs while any wait (looked at
        // only when no connection keeps it running anyway).
        let sweep = (!self.conns.is_empty() || LOG_LIMITS.iter().any(|limit| limit.has_pending()))
            .then_some(self.next_sweep);
        [sweep, self.accept_paused_until, self.draining_until]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    fn is_stopping(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst)
    }

    pub(super) fn run(mut self) -> io::Result<()> {
        if let Some(listener) = &self.listener {
            let loops = self.shared.mailboxes.len();
            log::info!(
                "listening on {} with {loops} event loop{}",
                listener.local_addr()?,
                if loops == 1 { "" } else { "s" }
            );
        }
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
            self.handshake_budget = HANDSHAKES_PER_TURN;
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now),
                    WAKER => self.take_mail(now),
                    token => {
                        let key = key_of(token);
                        if event.is_read_closed() || event.is_error() || event.is_priority() {
                            // Sticky: the end of stream (or error) is reported once, and a
                            // short read does not consume it; urgent data makes reads stop
                            // short of what has arrived.
                            if let Some(conn) = self.conns.get_mut(key) {
                                conn.read_until_blocked = true;
                            }
                        }
                        self.serve(key, now);
                    }
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
            self.commit_held();
            if self.accept_paused_until.is_some_and(|until| now >= until) {
                self.accept_paused_until = None;
                self.accept(now);
            }
            if now >= self.next_sweep {
                self.sweep(now);
                self.next_sweep = now + self.tick;
            }
            if self.draining_until.is_none() {
                if let Some(deadline) = self.shared.drain.deadline() {
                    self.begin_drain(deadline, now);
                }
            }
            let drained = self.draining_until.is_some_and(|until| {
                let done = self.conns.is_empty() && self.handoff.iter().all(Vec::is_empty);
                done || now >= until
            });
            if self.is_stopping() || drained {
                self.shut_down();
                return Ok(());
            }
        }
    }

    /// Runs one commit for every response held this turn, then releases them: sent on
    /// success, each answered with the commit's status on failure. One commit covers the
    /// whole turn (group commit).
    fn commit_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let mut keys = std::mem::take(&mut self.held);
        let ticket = keys
            .iter()
            .filter_map(|&key| self.conns.get(key))
            .filter_map(|conn| conn.state.held_ticket())
            .max();
        let result = match ticket {
            Some(ticket) => self.shared.router.commit(ticket),
            None => Ok(()),
        };
        if let Err(status) = &result {
            log::debug!("commit failed: {status}");
        }
        let now = Instant::now();
        for &key in &keys {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.held_queued = false;
            // Only written out: the socket was read this turn, and input that came during the
            // commit raises a new event. A connection with more to do (output left, closing)
            // is served in full.
            conn.state.lend_buffers(&mut self.buffers);
            conn.state.committed(result.as_ref().map(|_| ()), now);
            let flushed = flush(conn, now);
            conn.state.return_buffers(&mut self.buffers);
            account(conn, &self.stats);
            // Decoding that stopped for output over the high-water mark (held responses
            // count) resumes now that they went out: no readiness event would bring it back.
            let settled = flushed.is_ok()
                && !conn.state.wants_write()
                && !conn.state.wants_write_shutdown()
                && !conn.state.is_closed()
                && !conn.state.paused_for_output()
                && !conn.state.has_decodable_input();
            if !settled {
                self.serve(key, now);
            }
        }
        keys.clear();
        if self.held.is_empty() {
            self.held = keys;
        }
    }

    /// Begins a graceful drain: stops accepting, and sends every connection GOAWAY naming the
    /// last request it will answer; the loop then goes on serving until every connection has
    /// closed or `deadline` passes.
    fn begin_drain(&mut self, deadline: Instant, now: Instant) {
        self.draining_until = Some(deadline);
        // Connections the kernel completed but the loop has not accepted yet would be reset
        // with the listener: take them in, to be sent GOAWAY like the rest.
        self.accept_waiting(now);
        if let Some(mut listener) = self.listener.take() {
            if let Err(err) = self.poll.registry().deregister(&mut listener) {
                log::debug!("deregister listener: {err}");
            }
            // Dropped: new connections are refused from here on.
            for (index, batch) in self.handoff.iter_mut().enumerate() {
                self.shared.mailboxes[index].push_accepted(batch, &self.shared.open);
            }
        }
        log::info!(
            "draining {} connection{}",
            self.conns.len(),
            if self.conns.len() == 1 { "" } else { "s" }
        );
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.state.drain("server is draining", now);
            }
            self.serve(key, now);
        }
    }

    /// Accepts what is waiting, then hands each other loop its share in one batch.
    fn accept(&mut self, now: Instant) {
        self.accept_waiting(now);
        for (index, batch) in self.handoff.iter_mut().enumerate() {
            self.shared.mailboxes[index].push_accepted(batch, &self.shared.open);
        }
    }

    /// Takes what other threads left in the mailbox: connections to serve, finished calls.
    fn take_mail(&mut self, now: Instant) {
        let mut accepted = std::mem::take(&mut self.accepted);
        self.mailbox.take_accepted(&mut accepted);
        for Accepted { stream, peer } in accepted.drain(..) {
            self.insert(stream, peer, now);
        }
        self.accepted = accepted;
        self.take_completed(now);
    }

    /// Makes `stream` one of this loop's connections.
    fn insert(&mut self, stream: TcpStream, peer: SocketAddr, now: Instant) {
        let mut transport = match &self.shared.tls {
            None => Transport::Plain(stream),
            Some(tls) => match TlsTransport::new(
                stream,
                Arc::clone(tls),
                Arc::clone(&self.stats),
                (
                    self.shared.config.connection.frame_timeout,
                    self.shared.config.connection.write_timeout,
                ),
                now,
            ) {
                Ok(tls) => Transport::Tls(Box::new(tls)),
                Err(err) => {
                    limited!(REGISTER_FAILED, now, "cannot start TLS for {peer}: {err}");
                    self.shared.open.fetch_sub(1, Ordering::Relaxed);
                    return;
                }
            },
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(err) =
            self.poll
                .registry()
                .register(transport.socket(), token_of(key), READ_INTEREST)
        {
            limited!(REGISTER_FAILED, now, "cannot register {peer}: {err}");
            self.shared.open.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        log::debug!("accepted {peer} as {}/{key}", self.index);
        self.next_id += 1;
        let mut state =
            Connection::new(self.shared.config.connection, Arc::clone(&self.stats), now);
        if let Some(authentication) = &self.shared.authentication {
            state.set_authentication(Arc::clone(authentication));
        }
        entry.insert(Conn {
            transport,
            peer,
            id: self.next_id,
            state,
            interest: READ_INTEREST,
            read_until_blocked: false,
            accounted: 0,
            queued: false,
            held_queued: false,
            turn: 0,
        });
        stats::shift(&self.stats.connections_open, 1);
        if self.draining_until.is_some() {
            // Accepted (or handed over) after the drain began: GOAWAY at once.
            if let Some(conn) = self.conns.get_mut(key) {
                conn.state.drain("server is draining", now);
            }
            self.serve(key, now);
        }
    }

    /// Accepts until the listener would block (mio's listener is edge-triggered), dealing the
    /// connections out to the loops in turn.
    fn accept_waiting(&mut self, now: Instant) {
        let max_connections = self.shared.config.max_connections;
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            if self.is_stopping() {
                // Left in the backlog, they are reset when the listener closes.
                return;
            }
            let (mut stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) if crate::sys::is_out_of_fds(&err) => match self.refuse_without_fd() {
                    // Refused one: there may be more waiting.
                    FdRefusal::Refused => continue,
                    // Linux reports EMFILE at the limit even with nobody waiting; the next
                    // connection raises a new event.
                    FdRefusal::NothingWaiting => return,
                    FdRefusal::NoSpare => {
                        limited!(
                            ACCEPTS_PAUSED,
                            now,
                            "accept: {err}; pausing accepts for {} ms",
                            ACCEPT_BACKOFF.as_millis()
                        );
                        self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                        return;
                    }
                },
                Err(err) => {
                    stats::inc(&self.stats.accept_errors);
                    limited!(ACCEPT_FAILED, now, "accept failed: {err}");
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            };
            let open = self.shared.open.load(Ordering::Relaxed);
            if open >= max_connections {
                stats::inc(&self.stats.connections_rejected);
                limited!(
                    REJECTED_AT_LIMIT,
                    now,
                    "rejecting {peer}: {open} connections open, the limit"
                );
                let message =
                    format!("server has reached its limit of {max_connections} connections");
                transport::refuse(&mut stream, Code::RESOURCE_EXHAUSTED, &message);
                continue;
            }
            if let Err(err) = stream.set_nodelay(true) {
                log::debug!("{peer}: cannot set TCP_NODELAY: {err}");
            }
            self.shared.open.fetch_add(1, Ordering::Relaxed);
            stats::inc(&self.stats.connections_accepted);
            // While draining, other loops may already have finished: keep it here.
            let target = if self.draining_until.is_some() {
                self.index
            } else {
                self.next_loop
            };
            self.next_loop = (target + 1) % self.handoff.len();
            if target == self.index {
                self.insert(stream, peer, now);
            } else {
                self.handoff[target].push(Accepted { stream, peer });
                if self.handoff[target].len() >= HANDOFF_BATCH {
                    self.shared.mailboxes[target]
                        .push_accepted(&mut self.handoff[target], &self.shared.open);
                }
            }
        }
    }

    /// Out of descriptors: frees the spare, accepts the waiting connection on it, refuses it
    /// with RESOURCE_EXHAUSTED, and takes the spare back.
    fn refuse_without_fd(&mut self) -> FdRefusal {
        let Some(listener) = &self.listener else {
            return FdRefusal::NothingWaiting;
        };
        let Some(spare) = self.spare_fd.take() else {
            self.spare_fd = File::open("/dev/null").ok();
            return FdRefusal::NoSpare;
        };
        drop(spare);
        let outcome = match listener.accept() {
            Ok((mut stream, peer)) => {
                stats::inc(&self.stats.connections_rejected_fd);
                limited!(
                    REJECTED_WITHOUT_FD,
                    Instant::now(),
                    "rejecting {peer}: out of file descriptors"
                );
                transport::refuse(
                    &mut stream,
                    Code::RESOURCE_EXHAUSTED,
                    "server is out of file descriptors",
                );
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
        if conn.transport.is_handshaking() {
            // Bounded per turn; the rest wait for the next one.
            if self.handshake_budget == 0 {
                if !conn.queued {
                    conn.queued = true;
                    self.ready.push(key);
                }
                return;
            }
            self.handshake_budget -= 1;
        }
        if conn.turn != self.turn {
            conn.turn = self.turn;
            conn.state.begin_turn();
        }
        let had_reason = conn.state.close_reason().is_some();
        conn.state.lend_buffers(&mut self.buffers);
        let origin = Origin {
            event_loop: self.index,
            key,
            id: conn.id,
        };
        let served = loop {
            let served = serve_io(conn, &self.shared.router, now);
            conn.state.take_blocking(&mut self.calls);
            let mut refused_any = false;
            for call in self.calls.drain(..) {
                let refused = match &self.shared.workers {
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
                    conn.state.complete_call(call.id(), Err(failure), now);
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
            log_close_reason(conn, now);
        }
        account(conn, &self.stats);
        if let Err(err) = served {
            log_transport_error(conn, &err, now);
            self.close(key, true);
            return;
        }
        if conn.state.is_closed() {
            // What TLS still holds (the last records, close_notify) goes out first.
            let linger = self.shared.config.connection.linger;
            match conn.transport.finish(now + linger) {
                Ok(false) => {}
                Ok(true) => {
                    self.close(key, false);
                    return;
                }
                Err(err) => {
                    log::debug!("{}: {err}", conn.peer);
                    self.close(key, true);
                    return;
                }
            }
        }
        if conn.state.budget_spent() && !conn.queued {
            conn.queued = true;
            self.ready.push(key);
        }
        if conn.state.held_ticket().is_some() && !conn.held_queued {
            conn.held_queued = true;
            self.held.push(key);
        }
        let wanted = if conn.state.wants_write() || conn.transport.has_pending() {
            READ_INTEREST | Interest::WRITABLE
        } else {
            READ_INTEREST
        };
        if wanted != conn.interest {
            match self
                .poll
                .registry()
                .reregister(conn.transport.socket(), token_of(key), wanted)
            {
                Ok(()) => conn.interest = wanted,
                Err(err) => {
                    limited!(
                        REREGISTER_FAILED,
                        now,
                        "cannot reregister {}: {err}",
                        conn.peer
                    );
                    self.close(key, true);
                }
            }
        }
    }

    /// Gives finished blocking calls to their connections (if still open) and serves each
    /// of those once.
    fn take_completed(&mut self, now: Instant) {
        self.mailbox.take_completed(&mut self.completed);
        let mut keys = std::mem::take(&mut self.scratch_keys);
        for done in self.completed.drain(..) {
            if let Some(conn) = self.conns.get_mut(done.origin.key) {
                if conn.id == done.origin.id {
                    conn.state.complete_call(done.call, done.result, now);
                    // Write each answer as it comes, so that a batch of large ones does not
                    // pile up past the hard cap before the first is sent; an error is seen
                    // again, and handled, when the connection is served below.
                    let _ = flush(conn, now);
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
    /// or to close them). Then writes the counts of log lines suppressed by rate limits, once
    /// a limit's interval has passed, so that a burst followed by silence still reports them.
    fn sweep(&mut self, now: Instant) {
        let mut keys = std::mem::take(&mut self.scratch_keys);
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        let last_sweep = self.last_sweep;
        self.last_sweep = now;
        for (key, conn) in self.conns.iter_mut() {
            conn.transport
                .hold_clocks(conn.state.wants_read(), now, last_sweep);
            if due(conn.state.timeout()) || due(conn.transport.deadline()) {
                keys.push(key);
            }
        }
        for &key in &keys {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if due(conn.transport.deadline()) {
                // A TLS handshake or record that stalled, or last records never taken.
                let cause = conn.transport.time_out(now);
                limited!(
                    CLOSED_TLS_TIMEOUT,
                    now,
                    "{}: closing: TLS {}",
                    conn.peer,
                    cause.name().replace('_', " ")
                );
                self.close(key, false);
                continue;
            }
            conn.state.handle_timeout(now);
            self.serve(key, now);
        }
        keys.clear();
        self.scratch_keys = keys;
        for limit in LOG_LIMITS.iter() {
            limit.flush(now);
        }
    }

    /// The one close path: deregister, count, remove from the slab, drop (which closes the
    /// socket). `io_error` says the socket failed.
    fn close(&mut self, key: usize, io_error: bool) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        if let Err(err) = self.poll.registry().deregister(conn.transport.socket()) {
            log::debug!("deregister {}: {err}", conn.peer);
        }
        let reason = conn.state.close_reason();
        let cause = match (conn.transport.failure(), reason, io_error) {
            (Some(cause), _, _) => cause,
            (None, None | Some(CloseReason::PeerClosed), true) => CloseCause::Io,
            (None, Some(reason), _) => reason.cause(),
            (None, None, false) => CloseCause::Peer,
        };
        self.stats.closed(cause);
        self.shared.open.fetch_sub(1, Ordering::Relaxed);
        stats::shift(&self.stats.connections_open, -1);
        stats::shift(&self.stats.buffered_bytes, -(conn.accounted as i64));
        log::debug!("closed {} ({:?})", conn.peer, reason);
    }

    fn shut_down(&mut self) {
        // Responses held for a commit are committed and answered first.
        self.commit_held();
        if !self.conns.is_empty() {
            log::info!(
                "shutting down; sending GOAWAY to {} connections",
                self.conns.len()
            );
        }
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        let now = Instant::now();
        // Connections handed over but not yet served are closed unanswered, and so is any
        // handed over from now on.
        self.mailbox.close(&mut self.accepted);
        let unserved = self.accepted.len();
        self.accepted.clear();
        self.shared.open.fetch_sub(unserved, Ordering::Relaxed);
        for key in keys {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.state
                    .go_away(Code::UNAVAILABLE, "server shutting down");
                let _ = flush(conn, now);
                let _ = conn.transport.shutdown_write();
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

/// Declares one `static` [`LogLimit`] (one line per [`INTERVAL`]) per kind of this module's
/// lines, and `LOG_LIMITS`, every one of them, from one list, so that no limit can be left out
/// of the sweep that reports what it suppressed.
macro_rules! log_limits {
    ($($name:ident: $level:ident, $what:literal;)*) => {
        $(static $name: LogLimit =
            LogLimit::new(log::Level::$level, module_path!(), $what, INTERVAL);)*

        /// Every limit, for the sweep to flush.
        static LOG_LIMITS: &[&LogLimit] = &[$(&$name),*];
    };
}

// One limit per kind of line that a peer can trigger once per connection or per frame, so
// that a flood of them writes about one line a second of each (with the count of the rest).
log_limits! {
    REJECTED_AT_LIMIT: Warn, "rejecting connections at the connection limit";
    REJECTED_WITHOUT_FD: Warn, "rejecting connections: out of file descriptors";
    ACCEPT_FAILED: Error, "accept failed";
    ACCEPTS_PAUSED: Error, "accept: out of file descriptors; pausing accepts";
    REGISTER_FAILED: Error, "cannot register connections";
    REREGISTER_FAILED: Error, "cannot reregister connections";
    CLOSED_PROTOCOL: Warn, "closing connections on protocol errors";
    CLOSED_UNEXPECTED: Warn, "closing connections on unexpected frames";
    PEER_ERROR: Info, "peers sent ERROR";
    CLOSED_FRAME_TIMEOUT: Warn, "closing connections: FrameTimeout";
    CLOSED_WRITE_TIMEOUT: Warn, "closing connections: WriteTimeout";
    CLOSED_OUTPUT_CAP: Warn, "closing connections: OutputCap";
    CLOSED_FLOOD: Warn, "closing connections: Flood";
    CLOSED_TLS: Warn, "closing connections on TLS errors";
    CLOSED_NOT_TLS: Warn, "closing plaintext connections to the TLS port";
    CLOSED_TLS_TIMEOUT: Warn, "closing connections: TLS timeouts";
    CLOSED_AUTH: Warn, "closing connections after failed AUTH attempts";
}

/// Says why a connection's transport failed: TLS failures and plaintext clients on the TLS
/// port are warnings (rate-limited), a socket error is debug.
fn log_transport_error(conn: &Conn, err: &io::Error, now: Instant) {
    let peer = conn.peer;
    match conn.transport.failure() {
        Some(CloseCause::Tls) => limited!(CLOSED_TLS, now, "{peer}: closing: TLS: {err}"),
        Some(CloseCause::NotTls) => limited!(
            CLOSED_NOT_TLS,
            now,
            "{peer}: closing: a plaintext courier client on the TLS port"
        ),
        _ => log::debug!("{peer}: {err}"),
    }
}

/// Writes what the connection has queued through its transport, after what the transport
/// itself still holds.
///
/// # Errors
/// The socket's error (not `WouldBlock`).
fn flush(conn: &mut Conn, now: Instant) -> io::Result<()> {
    match conn.transport.flush_pending() {
        Err(err) if err.kind() != io::ErrorKind::WouldBlock => return Err(err),
        _ => {}
    }
    conn.state.flush_to(&mut conn.transport, now)
}

/// Tells the operator why a connection stopped reading, with the peer's address: a broken
/// protocol or a tripped limit is a warning, an orderly end is debug. The lines a peer can
/// repeat are rate-limited, one limit per kind.
fn log_close_reason(conn: &Conn, now: Instant) {
    let peer = conn.peer;
    match conn.state.close_reason() {
        Some(CloseReason::Protocol(err)) => {
            limited!(CLOSED_PROTOCOL, now, "{peer}: closing: {err}")
        }
        Some(CloseReason::UnexpectedFrame(kind)) => limited!(
            CLOSED_UNEXPECTED,
            now,
            "{peer}: closing: unexpected {} frame",
            kind.name()
        ),
        Some(CloseReason::PeerError(status)) => {
            limited!(PEER_ERROR, now, "{peer}: peer sent ERROR {status}")
        }
        Some(
            reason @ (CloseReason::FrameTimeout
            | CloseReason::WriteTimeout
            | CloseReason::OutputCap
            | CloseReason::Flood),
        ) => {
            let limit: &LogLimit = match reason {
                CloseReason::FrameTimeout => &CLOSED_FRAME_TIMEOUT,
                CloseReason::WriteTimeout => &CLOSED_WRITE_TIMEOUT,
                CloseReason::OutputCap => &CLOSED_OUTPUT_CAP,
                _ => &CLOSED_FLOOD,
            };
            limited!(limit, now, "{peer}: closing: {reason:?}")
        }
        Some(CloseReason::AuthFailures) => limited!(
            CLOSED_AUTH,
            now,
            "{peer}: closing: {} failed AUTH attempts",
            crate::connection::MAX_AUTH_FAILURES
        ),
        Some(reason) => log::debug!("{peer}: {reason:?}"),
        None => {}
    }
}

/// Moves bytes for one connection until its socket is drained or a limit stops it.
///
/// mio's readiness is edge-triggered: a socket that was not read dry, or input left in the
/// read buffer, raises no new event. A read that fills less than the room it was given has
/// read the socket dry (the kernel hands over everything it holds), and any byte that
/// arrives after it raises a new edge; so the loop stops reading there instead of paying for
/// one more `read` that would only say `WouldBlock` (tokio's rule too). The exceptions: the
/// end of stream was reported once, and only a read that returns 0 consumes it; and Linux
/// stops a read short at TCP urgent data though more follows. Once the poller has reported
/// either (`read_until_blocked`), the loop reads that connection until `WouldBlock` or end of stream.
/// Otherwise this goes
/// round again whenever a round made progress and work may remain (a pause lifted because
/// output drained, frames held back by a limit); the turn budget bounds the rounds.
fn serve_io(conn: &mut Conn, router: &Router, now: Instant) -> io::Result<()> {
    let mut drained = false;
    let short_read_drains = !conn.read_until_blocked;
    loop {
        let queued = conn.state.queued_output();
        let mut frames = 0;
        // Flush first: output drained below the high-water mark lets decoding resume.
        flush(conn, now)?;
        // Then the frames already buffered (held back by a limit or last turn's budget): the
        // socket is read only once none is left, and only then does the decoder say it
        // needs more bytes. Reading first would find `wants_read` false and, the socket not
        // being drained, wait for an edge that never comes.
        frames += conn.state.process(now, router);
        flush(conn, now)?;
        while !drained && conn.state.wants_read() {
            let transport = &mut conn.transport;
            let read = conn.state.read_with(|buf, limit| {
                transport.read(buf, limit, short_read_drains, &mut drained, now)
            });
            if let Some(established) = conn.transport.take_established() {
                conn.state.set_identity(established.identity);
            }
            match read {
                Ok(0) => break,
                Ok(_) => {
                    frames += conn.state.process(now, router);
                    // Write as we go, so a pipelining client's responses do not pile up; all
                    // the answers to one read go out in one write.
                    flush(conn, now)?;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                // A signal, or transport work (a TLS handshake message) that gave no bytes
                // yet: read again, within the turn's read budget.
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        // Input already buffered (end of stream, or a budget renewed this turn).
        frames += conn.state.process(now, router);
        flush(conn, now)?;
        if conn.state.wants_write_shutdown() {
            if !conn.transport.shutdown_write()? {
                // TLS records still wait for room on the socket: writable comes back here.
                return Ok(());
            }
            conn.state.write_closed(now);
            // Input that arrived while we were not reading raised no new edge: read it now.
            continue;
        }
        let progress = frames > 0 || conn.state.queued_output() < queued;
        let more_to_read = conn.state.wants_read() && !drained;
        if progress && (more_to_read || conn.state.has_decodable_input()) {
            continue;
        }
        return Ok(());
    }
}
