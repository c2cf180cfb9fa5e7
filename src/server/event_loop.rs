//! The mio event loop: accept, read, dispatch, write, close.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::{Conn, ServerConfig, ServerHandle};
use crate::connection::{CloseReason, Connection};
use crate::proto::{Code, Encoder, FrameKind};
use crate::service::Router;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX);

/// Events taken from the poller per turn: 1,024.
const EVENTS_CAPACITY: usize = 1024;

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
    conns: Slab<Conn>,
    /// Connections lingering, in deadline order (every linger has the same length).
    lingering: VecDeque<(Instant, usize)>,
}

impl EventLoop {
    pub(super) fn new(config: ServerConfig, router: Arc<Router>) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.addr)?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let handle = ServerHandle {
            stop: Arc::new(AtomicBool::new(false)),
            waker,
        };
        Ok(EventLoop {
            poll,
            listener,
            local_addr,
            handle,
            config,
            router,
            conns: Slab::new(),
            lingering: VecDeque::new(),
        })
    }

    pub(super) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub(super) fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    pub(super) fn run(mut self) -> io::Result<()> {
        log::info!("listening on {}", self.local_addr);
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            let timeout = self
                .lingering
                .front()
                .map(|(until, _)| until.saturating_duration_since(Instant::now()));
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    token => self.on_connection_event(key_of(token), now),
                }
            }
            self.expire_lingering(now);
            if self.handle.is_stopping() {
                self.shut_down();
                return Ok(());
            }
        }
    }

    /// Accepts until the listener would block (mio's listener is edge-triggered).
    fn accept(&mut self) {
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    // EMFILE and the like: the pending connection stays queued; the next
                    // readiness event retries.
                    log::error!("accept failed: {err}");
                    return;
                }
            };
            if self.conns.len() >= self.config.max_connections {
                log::warn!(
                    "rejecting {peer}: {} connections open, the limit",
                    self.conns.len()
                );
                reject(&mut stream, self.config.max_connections);
                continue;
            }
            if let Err(err) = stream.set_nodelay(true) {
                log::debug!("{peer}: cannot set TCP_NODELAY: {err}");
            }
            let entry = self.conns.vacant_entry();
            let token = token_of(entry.key());
            if let Err(err) = self
                .poll
                .registry()
                .register(&mut stream, token, Interest::READABLE)
            {
                log::error!("cannot register {peer}: {err}");
                continue;
            }
            log::debug!("accepted {peer} as {}", entry.key());
            entry.insert(Conn {
                stream,
                peer,
                state: Connection::new(self.config.connection),
                interest: Interest::READABLE,
            });
        }
    }

    /// Reads until the socket would block, answering as it goes; then writes; then closes or
    /// updates the interest. Every event is treated as a hint (mio "Spurious events").
    fn on_connection_event(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let had_timer = conn.state.timeout().is_some();
        let had_reason = conn.state.close_reason().is_some();
        let served = serve(conn, &self.router, now);
        if !had_reason {
            log_close_reason(conn);
        }
        if let Err(err) = served {
            log::debug!("{}: {err}", conn.peer);
            self.close(key);
            return;
        }
        if let (false, Some(until)) = (had_timer, conn.state.timeout()) {
            self.lingering.push_back((until, key));
        }
        if conn.state.is_closed() {
            self.close(key);
            return;
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
                    self.close(key);
                }
            }
        }
    }

    fn expire_lingering(&mut self, now: Instant) {
        while let Some(&(until, key)) = self.lingering.front() {
            if until > now {
                break;
            }
            self.lingering.pop_front();
            // The key may have been closed and reused since; only a connection that is still
            // lingering with this very deadline is closed.
            if let Some(conn) = self.conns.get_mut(key) {
                if conn.state.timeout() == Some(until) {
                    conn.state.handle_timeout(now);
                    if conn.state.is_closed() {
                        self.close(key);
                    }
                }
            }
        }
    }

    /// The one close path: deregister, remove from the slab, drop (which closes the socket).
    fn close(&mut self, key: usize) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        if let Err(err) = self.poll.registry().deregister(&mut conn.stream) {
            log::debug!("deregister {}: {err}", conn.peer);
        }
        log::debug!("closed {} ({:?})", conn.peer, conn.state.close_reason());
    }

    fn shut_down(&mut self) {
        log::info!(
            "shutting down; sending GOAWAY to {} connections",
            self.conns.len()
        );
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.state
                    .go_away(Code::UNAVAILABLE, "server shutting down");
                let _ = conn.state.flush_to(&mut conn.stream);
                let _ = conn.stream.shutdown(Shutdown::Write);
            }
            self.close(key);
        }
    }
}

/// Tells the operator why a connection stopped reading, with the peer's address: a broken
/// protocol is a warning, an orderly end is debug.
fn log_close_reason(conn: &Conn) {
    match conn.state.close_reason() {
        Some(CloseReason::Protocol(err)) => log::warn!("{}: closing: {err}", conn.peer),
        Some(CloseReason::UnexpectedFrame(kind)) => {
            log::warn!("{}: closing: unexpected {} frame", conn.peer, kind.name())
        }
        Some(CloseReason::PeerError(status)) => {
            log::info!("{}: peer sent ERROR {status}", conn.peer)
        }
        Some(reason) => log::debug!("{}: {reason:?}", conn.peer),
        None => {}
    }
}

/// Moves bytes for one connection until its socket would block.
fn serve(conn: &mut Conn, router: &Router, now: Instant) -> io::Result<()> {
    loop {
        while conn.state.wants_read() {
            match conn.state.read_from(&mut conn.stream) {
                Ok(0) => break,
                Ok(_) => {
                    conn.state.process(now, router);
                    // Write as we go, so a pipelining client's responses do not pile up.
                    conn.state.flush_to(&mut conn.stream)?;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        // End of stream: answer what is buffered before closing.
        conn.state.process(now, router);
        conn.state.flush_to(&mut conn.stream)?;
        if conn.state.wants_write_shutdown() {
            conn.stream.shutdown(Shutdown::Write)?;
            conn.state.write_closed(now);
            // Input that arrived while we were not reading raised no new edge: read it now.
            continue;
        }
        return Ok(());
    }
}

/// Tells a connection over the limit why, in one non-blocking write, and drops it.
fn reject(stream: &mut mio::net::TcpStream, limit: usize) {
    let mut frame = BytesMut::new();
    let message = format!("server has reached its limit of {limit} connections");
    Encoder::new(1024).encode_simple(
        &mut frame,
        FrameKind::Error,
        0,
        Code::RESOURCE_EXHAUSTED,
        &message,
    );
    let _ = stream.write(&frame);
    let _ = stream.shutdown(Shutdown::Write);
}
