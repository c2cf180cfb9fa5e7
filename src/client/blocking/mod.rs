//! [`Client`]: the blocking client, a driver of [`ClientCore`] on one socket at a time.

mod conn;

use std::collections::HashMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use self::conn::Conn;
use super::{typed_response, CallOptions, ClientBuilder, ClientCore, ClientError, Pending};
use crate::proto::Response;
use crate::service::{Message, Method};

/// Queued request bytes above which [`Client::send`] writes them out: 64 KiB.
const AUTO_FLUSH: usize = 64 * 1024;

/// A blocking client connection. See the [module docs](super).
///
/// # GOAWAY and reconnecting
///
/// A server that drains a connection sends GOAWAY with the last request id it will answer
/// (`proto-spec/PROTOCOL.md` Section 14), answers the requests up to that id, and closes. The
/// client follows HTTP/2's GOAWAY (RFC 9113 Section 6.8):
///
/// - A request sent with a larger id was not processed: its [`Client::wait`] returns
///   [`ClientError::Status`] UNAVAILABLE, and it is safe to send again.
/// - A request up to that id is still answered on the old connection and collected by its
///   [`Client::wait`] as usual.
/// - The next new request ([`Client::send`], [`Client::call`], [`Client::ping`] and their
///   `_with` forms) is not sent on the old connection. The client first reads the responses
///   the old connection still owes (until they are all in, the connection ends, or the latest
///   of their deadlines passes), closes it, then connects again to the addresses given to
///   [`ClientBuilder::connect`], with the same options (its TLS handshake and AUTH
///   included), and sends the request there. The server closing the old connection after its
///   GOAWAY is the normal end of a drain, not an error. Request ids keep increasing across
///   connections. If the new connection cannot be made, that request returns the connect
///   error ([`ClientError::Io`] or [`ClientError::Timeout`]; with TLS or a token also
///   [`ClientError::Tls`], [`ClientError::NotTls`], [`ClientError::Auth`]) and the next one
///   tries again.
///
/// A connection that ends without a GOAWAY, or with an ERROR frame, a protocol error or a
/// TLS error, is broken: every later call returns its error ([`ClientError::Closed`],
/// [`ClientError::Connection`], [`ClientError::Protocol`], [`ClientError::Tls`]), and a new
/// [`Client`] is needed.
///
/// `Debug` shows the connection's state and the sizes of its buffers, never their bytes (nor
/// the token: see [`ClientBuilder`]).
pub struct Client {
    conn: Conn,
    /// What `ClientBuilder::connect` resolved: where a reconnection after GOAWAY goes.
    addrs: Vec<SocketAddr>,
    /// The options the client was built with, for a reconnection.
    config: ClientBuilder,
    /// The outcomes of calls made on connections replaced after their GOAWAY, kept for
    /// their [`Client::wait`]: responses that came in, UNAVAILABLE for requests the server
    /// did not process, or why the server's answer never came.
    retired: HashMap<u64, Result<Response, ClientError>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The core shows the sizes of its buffers, never their bytes: the send buffer holds
        // AUTH's token until it is written, and both hold what the application sends and
        // receives.
        f.debug_struct("Client")
            .field("socket", &self.conn.socket)
            .field("core", &self.conn.core)
            .field("addrs", &self.addrs)
            .field("config", &self.config)
            .field("retired", &self.retired.len())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A builder with every default.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Connects with every default.
    ///
    /// # Errors
    /// As [`ClientBuilder::connect`].
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Client, ClientError> {
        ClientBuilder::default().connect(addr)
    }

    pub(super) fn open(
        addrs: Vec<SocketAddr>,
        config: ClientBuilder,
    ) -> Result<Client, ClientError> {
        let conn = Conn::open(&config, &addrs, 1)?;
        Ok(Client {
            conn,
            addrs,
            config,
            retired: HashMap::new(),
        })
    }

    /// The address of the server on the current connection.
    pub fn peer_addr(&self) -> SocketAddr {
        self.conn.core.peer_addr()
    }

    /// The identity's name the server gave in its answer to AUTH on the current connection
    /// ([`ClientBuilder::token`]); `None` without a token. A certificate's identity (mutual
    /// TLS) is the server's to tell: admin WHOAMI.
    pub fn identity(&self) -> Option<&str> {
        self.conn.core.identity()
    }

    /// Whether the server sent GOAWAY on the current connection (it is draining): requests
    /// it did not process were answered UNAVAILABLE, safe to send again, and the next request
    /// goes out on a new connection (see [`Client`]).
    pub fn is_draining(&self) -> bool {
        self.conn.core.is_draining()
    }

    /// Whether the connection speaks TLS ([`ClientBuilder::tls`]).
    pub fn is_tls(&self) -> bool {
        self.conn.core.is_tls()
    }

    /// The protocol state of the current connection (read only): its calls in flight, its
    /// GOAWAY, its identity.
    pub fn core(&self) -> &ClientCore {
        &self.conn.core
    }
    /// Sends one request and waits for its response: [`Client::send`] then [`Client::wait`].
    /// After the server sent GOAWAY, the request goes out on a new connection (see
    /// [`Client`]).
    ///
    /// # Errors
    /// Any [`ClientError`]: the server's status, a timeout, a protocol or IO error, or the
    /// connect error of a reconnection after GOAWAY.
    pub fn call<Req: Message, Resp: Message>(
        &mut self,
        method: &Method<Req, Resp>,
        request: &Req,
    ) -> Result<Resp, ClientError> {
        self.call_with(method, request, &CallOptions::default())
    }

    /// [`Client::call`] with a deadline and metadata.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn call_with<Req: Message, Resp: Message>(
        &mut self,
        method: &Method<Req, Resp>,
        request: &Req,
        options: &CallOptions,
    ) -> Result<Resp, ClientError> {
        let pending = self.send_with(method, request, options)?;
        self.wait(pending)
    }

    /// Queues a request without waiting; returns the handle to collect its response with.
    /// Queued requests are written by [`Client::flush`], by the next wait, or when more than
    /// 64 KiB are queued.
    ///
    /// After the server sent GOAWAY (`proto-spec/PROTOCOL.md` Section 14), this first collects
    /// the responses the old connection still owes, then connects again and queues the request
    /// on the new connection (see [`Client`]); it may then block up to the connect timeout, and
    /// up to the deadlines of the requests the old connection owes.
    ///
    /// # Errors
    /// [`ClientError::Encode`] when the request is over the size limit; the connection's
    /// error when it is broken (closed without GOAWAY, ERROR frame, protocol error); after a
    /// GOAWAY, the connect error ([`ClientError::Io`] or [`ClientError::Timeout`]) when the
    /// new connection cannot be made.
    pub fn send<Req: Message, Resp: Message>(
        &mut self,
        method: &Method<Req, Resp>,
        request: &Req,
    ) -> Result<Pending<Resp>, ClientError> {
        self.send_with(method, request, &CallOptions::default())
    }

    /// [`Client::send`] with a deadline and metadata.
    ///
    /// # Errors
    /// As [`Client::send`].
    pub fn send_with<Req: Message, Resp: Message>(
        &mut self,
        method: &Method<Req, Resp>,
        request: &Req,
        options: &CallOptions,
    ) -> Result<Pending<Resp>, ClientError> {
        if options.deadline == Some(Duration::ZERO) {
            // PROTOCOL.md Section 12: a deadline already passed is not sent.
            return Err(ClientError::Timeout);
        }
        if self.conn.core.is_draining() {
            self.reconnect()?;
        }
        let request_id = self.conn.core.start_request(
            method,
            request,
            options.deadline,
            &options.metadata,
            Instant::now(),
        )?;
        if self.conn.core.transmit().len() > AUTO_FLUSH {
            self.flush()?;
        }
        Ok(Pending::new(request_id))
    }

    /// Writes every queued request.
    ///
    /// # Errors
    /// [`ClientError::Io`] (or `Timeout` past the write timeout); the connection is then
    /// unusable.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.conn.flush()
    }

    /// Waits for the response to `pending`.
    ///
    /// After a GOAWAY (`proto-spec/PROTOCOL.md` Section 14), a request up to its last request
    /// id is still answered, even once the client has moved to a new connection; a request
    /// after it fails at once with UNAVAILABLE (see [`Client`]).
    ///
    /// # Errors
    /// The server's status ([`ClientError::Status`]; UNAVAILABLE for a request after a
    /// GOAWAY's last request id, not processed and safe to send again),
    /// [`ClientError::Timeout`] past the request's deadline, or the connection's error (for a
    /// request the server owed after its GOAWAY, the error that ended the old connection
    /// before its response arrived).
    pub fn wait<Resp: Message>(&mut self, pending: Pending<Resp>) -> Result<Resp, ClientError> {
        let id = pending.request_id;
        let result = self.wait_response(id);
        // Gone already when it ended; when the wait itself failed (a socket error), its late
        // response is dropped.
        self.conn.core.abandon(id);
        typed_response(result)
    }

    /// Gives up on a sent request without waiting for it: its answer, when it comes, is
    /// dropped, and one already read is dropped now. The request itself may still be
    /// processed by the server. A [`Pending`] dropped without [`Client::wait`] or this keeps
    /// its answer (up to the body limit) until the client is dropped.
    pub fn abandon<Resp>(&mut self, pending: Pending<Resp>) {
        let id = pending.request_id;
        self.retired.remove(&id);
        self.conn.core.abandon(id);
    }

    fn wait_response(&mut self, id: u64) -> Result<Response, ClientError> {
        if let Some(outcome) = self.retired.remove(&id) {
            return outcome;
        }
        self.flush()?;
        loop {
            if let Some(outcome) = self.conn.core.take_response(id) {
                return outcome;
            }
            let Some(deadline) = self.conn.core.deadline(id) else {
                // Not a call of this client's (its outcome was taken already).
                return Err(ClientError::Closed);
            };
            if let Err(err) = self.conn.read_some(deadline) {
                // The answer may have come in the read whose PONG then failed to go out.
                return self.conn.core.take_response(id).unwrap_or(Err(err));
            }
        }
    }

    /// Sends a PING and waits for its PONG; returns the round-trip time. After a GOAWAY it
    /// goes out on a new connection, as [`Client::send`].
    ///
    /// # Errors
    /// [`ClientError::Timeout`] past the read timeout, or the connection's error; after a
    /// GOAWAY, the connect error when the new connection cannot be made.
    pub fn ping(&mut self) -> Result<Duration, ClientError> {
        if self.conn.core.is_draining() {
            self.reconnect()?;
        }
        let id = self
            .conn
            .core
            .start_ping(self.config.read_timeout, Instant::now())?;
        let result = self.wait_pong(id);
        self.conn.core.abandon(id);
        result
    }

    fn wait_pong(&mut self, id: u64) -> Result<Duration, ClientError> {
        self.flush()?;
        loop {
            if let Some(outcome) = self.conn.core.take_pong(id) {
                return outcome;
            }
            let Some(deadline) = self.conn.core.deadline(id) else {
                return Err(ClientError::Closed);
            };
            if let Err(err) = self.conn.read_some(deadline) {
                return self.conn.core.take_pong(id).unwrap_or(Err(err));
            }
        }
    }

    /// Reads what the server has sent, without waiting: answers its PINGs, notes a GOAWAY
    /// ([`Client::is_draining`]) and the end of the connection. One `recv(2)` when nothing
    /// came. For a pool that keeps idle connections: a connection whose server went away,
    /// drained or restarted while it sat idle shows it here, before a request is sent on it.
    /// Responses that came in are kept for their [`Client::wait`].
    ///
    /// # Errors
    /// The connection's error when it is broken or has ended ([`ClientError::Closed`] for a
    /// server that closed it, or the error that broke it); a request sent on it would fail.
    /// A connection that ended after a GOAWAY gives [`ClientError::Closed`] too, though the
    /// next request would reconnect.
    pub fn check_alive(&mut self) -> Result<(), ClientError> {
        self.conn.read_nowait()
    }

    /// Closes the connection: over TLS sends a close_notify alert first, then shuts down both
    /// directions of the socket.
    pub fn close(mut self) {
        self.conn.close();
    }

    /// After a GOAWAY: collects what the old connection still owes (until every call on it
    /// has its answer, its deadline passes, or the connection ends), keeps the outcomes for
    /// their waits, closes it and opens a new one (PROTOCOL.md Section 14: no new request on
    /// the old connection). An ERROR frame, a protocol error or a TLS error is not the end of
    /// a drain: the connection stays broken.
    fn reconnect(&mut self) -> Result<(), ClientError> {
        while self.conn.core.waiting() > 0 {
            let Some(deadline) = self.conn.core.next_timeout() else {
                break;
            };
            if self.conn.read_some(deadline).is_err() {
                // A socket error ends the calls the old connection owed (Closed).
                self.conn.core.handle_io_error();
            }
        }
        if !self.conn.core.may_reconnect() {
            return self.conn.core.check_usable();
        }
        self.retired.extend(self.conn.core.take_all_done());
        self.conn.close();
        // On failure the old connection, shut down, stays in place with nothing waiting, and
        // the next request tries again.
        let first_id = self.conn.core.next_request_id();
        let conn = Conn::open(&self.config, &self.addrs, first_id)?;
        log::debug!(
            "{}: reconnected after GOAWAY, now {}",
            self.conn.core.peer_addr(),
            conn.core.peer_addr()
        );
        self.conn = conn;
        Ok(())
    }
}
