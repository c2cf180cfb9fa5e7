//! The blocking client: one `std::net::TcpStream` (plain, or TLS through rustls), the same
//! codec as the server.
//!
//! [`Client::call`] sends one request and waits for its response. For pipelining,
//! [`Client::send`] queues requests (written in one batch by [`Client::flush`] or by the first
//! wait) and [`Client::wait`] collects each response by its request id, in any order: responses
//! that arrive for other requests are kept until they are asked for.
//!
//! When the server drains a connection with GOAWAY, the client finishes what the server still
//! owes on it and sends new requests on a new connection: see [`Client`].
//!
//! With [`ClientBuilder::tls`] every connection speaks TLS 1.3 (ALPN `courier/1`, see
//! [`crate::tls`]); with [`ClientBuilder::token`] every connection starts with admin AUTH,
//! which gives it the identity the token proves ([`Client::identity`]).
//!
//! # Examples
//!
//! ```no_run
//! use bytes::Bytes;
//! use courier_rpc::client::Client;
//! use courier_rpc::echo::ECHO;
//!
//! let mut client = Client::connect("127.0.0.1:7879")?;
//! let pending: Vec<_> = (0..100)
//!     .map(|i| client.send(&ECHO, &Bytes::from(format!("msg {i}"))))
//!     .collect::<Result<_, _>>()?;
//! for (i, p) in pending.into_iter().enumerate() {
//!     assert_eq!(client.wait(p)?, Bytes::from(format!("msg {i}")));
//! }
//! # Ok::<(), courier_rpc::client::ClientError>(())
//! ```
//!
//! Over TLS, with a token read from the environment (never from the command line, where
//! `ps` shows it):
//!
//! ```no_run
//! use bytes::Bytes;
//! use courier_rpc::client::Client;
//! use courier_rpc::echo::ECHO;
//! use courier_rpc::tls::ClientTlsConfig;
//!
//! let tls = ClientTlsConfig::builder().ca_file("ca.pem").server_name("kv.example").build()?;
//! let token = std::env::var("COURIER_TOKEN")?;
//! let mut client = Client::builder().tls(tls).token(token).connect("kv.example:7879")?;
//! println!("authenticated as {:?}", client.identity());
//! assert_eq!(client.call(&ECHO, &Bytes::from("hi"))?, Bytes::from("hi"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod builder;
mod error;
mod transport;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub use builder::ClientBuilder;
use error::{draining, Broken, Orphaned};
pub use error::{ClientError, ProtocolError};
use transport::Transport;

use crate::proto::{
    Code, DecodeError, Decoder, Encoder, Frame, FrameKind, Metadata, Response, Status,
};
use crate::service::{Message, Method};

/// Default time to establish a connection: 5 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time a call waits for its response when it sets no deadline: 30 s.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a write may block: 30 s.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read per `read` call: 16 KiB.
const READ_CHUNK: usize = 16 * 1024;
/// Queued request bytes above which [`Client::send`] writes them out: 64 KiB.
const AUTO_FLUSH: usize = 64 * 1024;
/// admin AUTH (`proto-spec/SERVICES.md`): the token's bytes in, the identity's name out.
const AUTH: Method<Bytes, String> = Method::new(crate::admin::SERVICE, 2, "admin.Auth");

/// Per-call options: `CallOptions::default()` (no deadline, no metadata), then
/// [`CallOptions::with_deadline`] and [`CallOptions::with_metadata`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use courier_rpc::{CallOptions, Metadata};
///
/// let metadata = Metadata::from_pairs([("trace-id", "4bf92f35")])?;
/// let options = CallOptions::default()
///     .with_deadline(Duration::from_millis(250))
///     .with_metadata(metadata);
/// assert_eq!(options.deadline, Some(Duration::from_millis(250)));
/// # Ok::<(), courier_rpc::proto::MetadataError>(())
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct CallOptions {
    /// How long the client waits; sent to the server as the frame's deadline in milliseconds
    /// (rounded up, at least 1, capped at `u32::MAX`: `proto-spec/PROTOCOL.md` Section 12),
    /// so the server does not start the request once it has passed. `Some(Duration::ZERO)`
    /// has passed already: the request is not sent, and fails with [`ClientError::Timeout`].
    /// `None`: no deadline is sent and the client waits up to its read timeout.
    pub deadline: Option<Duration>,
    /// Metadata entries sent with the request.
    pub metadata: Metadata,
}

impl CallOptions {
    /// These options with `deadline` (see [`CallOptions::deadline`]).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// These options with `metadata` sent with the request.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }
}

/// A response that was sent for and not yet collected: pass it to [`Client::wait`].
#[must_use = "a sent request's response is only read by Client::wait"]
#[derive(Debug)]
pub struct Pending<Resp> {
    request_id: u64,
    deadline: Instant,
    types: PhantomData<fn() -> Resp>,
}

impl<Resp> Pending<Resp> {
    /// The request id the request was sent with.
    pub fn request_id(&self) -> u64 {
        self.request_id
    }
}

/// A blocking client connection. See the [module docs](self).
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
    transport: Transport,
    peer: SocketAddr,
    /// What `ClientBuilder::connect` resolved: where a reconnection after GOAWAY goes.
    addrs: Vec<SocketAddr>,
    /// The options the client was built with, for a reconnection.
    config: ClientBuilder,
    decoder: Decoder,
    encoder: Encoder,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// The read timeout the socket has now (`None`: unknown or to be set).
    socket_timeout: Option<Duration>,
    /// Increases across connections, so an id is never reused while it is outstanding.
    next_id: u64,
    /// Requests sent on this connection whose response has not been collected or abandoned,
    /// with the time their wait gives up.
    outstanding: HashMap<u64, Instant>,
    /// Responses (or frame errors) that arrived before they were asked for.
    arrived: HashMap<u64, Result<Response, DecodeError>>,
    /// Requests sent on a connection replaced after its GOAWAY, which will get no response.
    orphaned: HashMap<u64, Orphaned>,
    /// PONG ids received and not yet collected.
    pongs: HashSet<u64>,
    /// The last request id the server will answer, after a GOAWAY.
    goaway: Option<u64>,
    broken: Option<Broken>,
    /// The name AUTH gave on the current connection.
    identity: Option<String>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The buffers' bytes are left out: the write buffer holds AUTH's token until it is
        // written, and both hold whatever the application sends and receives.
        f.debug_struct("Client")
            .field("peer", &self.peer)
            .field("transport", &self.transport)
            .field("addrs", &self.addrs)
            .field("config", &self.config)
            .field("read_buffered", &self.read_buf.len())
            .field("write_buffered", &self.write_buf.len())
            .field("next_id", &self.next_id)
            .field("outstanding", &self.outstanding.len())
            .field("arrived", &self.arrived.len())
            .field("orphaned", &self.orphaned.len())
            .field("goaway", &self.goaway)
            .field("broken", &self.broken)
            .field("identity", &self.identity)
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

    fn from_transport(
        transport: Transport,
        peer: SocketAddr,
        addrs: Vec<SocketAddr>,
        config: ClientBuilder,
    ) -> Client {
        Client {
            transport,
            peer,
            addrs,
            decoder: Decoder::new(config.max_body_len),
            encoder: Encoder::new(config.max_body_len),
            config,
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
            socket_timeout: None,
            next_id: 1,
            outstanding: HashMap::new(),
            arrived: HashMap::new(),
            orphaned: HashMap::new(),
            pongs: HashSet::new(),
            goaway: None,
            broken: None,
            identity: None,
        }
    }

    /// The address of the server on the current connection.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The identity's name the server gave in its answer to AUTH on the current connection
    /// ([`ClientBuilder::token`]); `None` without a token. A certificate's identity (mutual
    /// TLS) is the server's to tell: admin WHOAMI.
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// Whether the server sent GOAWAY on the current connection (it is draining): requests
    /// it did not process were answered UNAVAILABLE, safe to send again, and the next request
    /// goes out on a new connection (see [`Client`]).
    pub fn is_draining(&self) -> bool {
        self.goaway.is_some()
    }

    /// Whether the connection speaks TLS ([`ClientBuilder::tls`]).
    pub fn is_tls(&self) -> bool {
        matches!(self.transport, Transport::Tls(_))
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
        if self.goaway.is_some() {
            self.reconnect()?;
        }
        self.check_usable()?;
        let request_id = self.take_id();
        let deadline_ms = options.deadline.map_or(0, deadline_ms);
        let start = self.write_buf.len();
        let mut refused = None;
        self.encoder
            .encode_request_with(
                &mut self.write_buf,
                request_id,
                method.service,
                method.method,
                deadline_ms,
                &options.metadata,
                |out| refused = request.encode(out).err(),
            )
            .map_err(ClientError::Encode)?;
        if let Some(err) = refused {
            // The frame was built around a partial message: take it back, send nothing.
            self.write_buf.truncate(start);
            return Err(ClientError::Message(err));
        }
        let deadline = Instant::now() + options.deadline.unwrap_or(self.config.read_timeout);
        self.outstanding.insert(request_id, deadline);
        if self.write_buf.len() > AUTO_FLUSH {
            self.flush()?;
        }
        Ok(Pending {
            request_id,
            deadline,
            types: PhantomData,
        })
    }

    /// Writes every queued request.
    ///
    /// # Errors
    /// [`ClientError::Io`] (or `Timeout` past the write timeout); the connection is then
    /// unusable.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        while !self.write_buf.is_empty() {
            match self.transport.write(&self.write_buf) {
                Ok(0) => return Err(self.fail(Broken::Closed)),
                Ok(n) => self.write_buf.advance(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.write_failed(e)),
            }
        }
        if let Transport::Tls(_) = self.transport {
            if let Err(e) = self.transport.flush() {
                return Err(self.write_failed(e));
            }
        }
        Ok(())
    }

    /// A failed write breaks the connection: as closed, or with the TLS error inside.
    fn write_failed(&mut self, e: io::Error) -> ClientError {
        match transport::tls_error(&e) {
            Some(tls) => self.fail(Broken::Tls(tls)),
            None => {
                self.broken = Some(Broken::Closed);
                e.into()
            }
        }
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
        let result = self.wait_response(id, pending.deadline);
        self.outstanding.remove(&id);
        let response = result?.map_err(|e| ClientError::Protocol(ProtocolError::Decode(e)))?;
        if response.code.is_ok() {
            Resp::decode(response.payload)
                .map_err(|e| ClientError::Protocol(ProtocolError::Message(e)))
        } else {
            let message = response.message().unwrap_or_default().to_owned();
            Err(ClientError::Status(Status::new(response.code, message)))
        }
    }

    fn wait_response(
        &mut self,
        id: u64,
        deadline: Instant,
    ) -> Result<Result<Response, DecodeError>, ClientError> {
        self.flush()?;
        loop {
            if let Some(arrived) = self.arrived.remove(&id) {
                return Ok(arrived);
            }
            if !self.orphaned.is_empty() {
                if let Some(orphaned) = self.orphaned.remove(&id) {
                    return Err(orphaned.to_error());
                }
            }
            if self.goaway.is_some_and(|last| id > last) {
                return Err(ClientError::Status(draining()));
            }
            self.check_usable()?;
            self.read_some(deadline)?;
        }
    }

    /// Sends a PING and waits for its PONG; returns the round-trip time. After a GOAWAY it
    /// goes out on a new connection, as [`Client::send`].
    ///
    /// # Errors
    /// [`ClientError::Timeout`] past the read timeout, or the connection's error; after a
    /// GOAWAY, the connect error when the new connection cannot be made.
    pub fn ping(&mut self) -> Result<Duration, ClientError> {
        if self.goaway.is_some() {
            self.reconnect()?;
        }
        self.check_usable()?;
        let id = self.take_id();
        self.encoder
            .encode_simple(&mut self.write_buf, FrameKind::Ping, id, Code::OK, "");
        let start = Instant::now();
        let deadline = start + self.config.read_timeout;
        self.flush()?;
        while !self.pongs.remove(&id) {
            self.check_usable()?;
            self.read_some(deadline)?;
        }
        Ok(start.elapsed())
    }

    /// Closes the connection: over TLS sends a close_notify alert first, then shuts down both
    /// directions of the socket.
    pub fn close(mut self) {
        self.transport.close();
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    fn check_usable(&self) -> Result<(), ClientError> {
        match &self.broken {
            None => Ok(()),
            Some(broken) => Err(broken.to_error()),
        }
    }

    fn fail(&mut self, broken: Broken) -> ClientError {
        let err = broken.to_error();
        self.broken = Some(broken);
        err
    }

    /// After a GOAWAY: collects what the old connection still owes, closes it and opens a new
    /// one (PROTOCOL.md Section 14: no new request on the old connection). An ERROR frame, a
    /// protocol error or a TLS error is not the end of a drain: the connection stays broken.
    fn reconnect(&mut self) -> Result<(), ClientError> {
        let Some(last) = self.goaway else {
            return Ok(());
        };
        if !self.outstanding.is_empty() {
            self.collect_owed(last);
        }
        if let Some(broken @ (Broken::Connection(_) | Broken::Protocol(_) | Broken::Tls(_))) =
            &self.broken
        {
            return Err(broken.to_error());
        }
        self.transport.close();
        // On failure the old connection, shut down, stays in place with nothing outstanding,
        // and the next request tries again.
        let (transport, peer) = self.config.open(&self.addrs)?;
        log::debug!("{}: reconnected after GOAWAY, now {peer}", self.peer);
        self.transport = transport;
        self.peer = peer;
        self.decoder = Decoder::new(self.config.max_body_len);
        self.read_buf.clear();
        self.write_buf.clear();
        self.socket_timeout = None;
        self.pongs.clear();
        self.goaway = None;
        self.broken = None;
        self.identity = None;
        if let Err(err) = self.authenticate() {
            // As a failed connect: the next request connects again.
            self.transport.close();
            self.goaway = Some(last);
            self.broken = Some(Broken::Closed);
            return Err(err);
        }
        Ok(())
    }

    /// With a token: sends AUTH on the new connection and waits for its answer, within the
    /// connect timeout (`proto-spec/SERVICES.md`, admin.Auth). Sets [`Client::identity`].
    /// On failure, the write buffer is emptied: what is left of the AUTH frame holds the
    /// token.
    fn authenticate(&mut self) -> Result<(), ClientError> {
        let result = self.try_authenticate();
        if result.is_err() {
            self.write_buf.clear();
        }
        result
    }

    fn try_authenticate(&mut self) -> Result<(), ClientError> {
        let Some(token) = self.config.token.clone() else {
            return Ok(());
        };
        let id = self.take_id();
        self.encoder
            .encode_request_with(
                &mut self.write_buf,
                id,
                AUTH.service,
                AUTH.method,
                0,
                &Metadata::new(),
                |out| out.put_slice(&token.0),
            )
            .map_err(ClientError::Encode)?;
        let deadline = Instant::now() + self.config.connect_timeout;
        self.outstanding.insert(id, deadline);
        let result = self.wait_response(id, deadline);
        self.outstanding.remove(&id);
        let response = result?.map_err(|e| ClientError::Protocol(ProtocolError::Decode(e)))?;
        if !response.code.is_ok() {
            let message = response.message().unwrap_or_default().to_owned();
            return Err(ClientError::Auth(Status::new(response.code, message)));
        }
        let name = String::decode(response.payload)
            .map_err(|e| ClientError::Protocol(ProtocolError::Message(e)))?;
        log::debug!("{}: authenticated as {name:?}", self.peer);
        self.identity = Some(name);
        Ok(())
    }

    /// Reads the responses the server owes after GOAWAY(`last`) into `arrived` (until they are
    /// all in, the connection ends or breaks, or the latest of their deadlines passes), then
    /// moves every request still waiting to `orphaned`.
    fn collect_owed(&mut self, last: u64) {
        let mut unanswered = Orphaned::Lost(Broken::Closed);
        if let Some(deadline) = self.owed(last).map(|(_, deadline)| *deadline).max() {
            while self.owed(last).next().is_some() {
                let read = self.check_usable().and_then(|()| self.read_some(deadline));
                match read {
                    Ok(()) => {}
                    Err(ClientError::Timeout) => {
                        unanswered = Orphaned::TimedOut;
                        break;
                    }
                    Err(_) => {
                        if let Some(broken) = &self.broken {
                            unanswered = Orphaned::Lost(broken.clone());
                        }
                        break;
                    }
                }
            }
        }
        for (id, _) in self.outstanding.drain() {
            if !self.arrived.contains_key(&id) {
                let why = if id > last {
                    Orphaned::Refused
                } else {
                    unanswered.clone()
                };
                self.orphaned.insert(id, why);
            }
        }
    }

    /// One read (waiting until `deadline` at most), then every frame it completes.
    fn read_some(&mut self, deadline: Instant) -> Result<(), ClientError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(ClientError::Timeout);
        }
        // Setting the socket's timeout is a syscall, so it is changed only when the current one
        // would let this read wait more than 1/64 past the deadline. A shorter one just ends a
        // read early (below), and the caller reads again.
        if self
            .socket_timeout
            .is_none_or(|t| t > remaining + remaining / 64)
        {
            self.transport.socket().set_read_timeout(Some(remaining))?;
            self.socket_timeout = Some(remaining);
        }
        // At least READ_CHUNK of room, more while a large frame arrives (the decoder reserves
        // ahead); the read fills as much of it as the socket holds, without zero-filling.
        self.read_buf.reserve(READ_CHUNK);
        let result = self.transport.read(&mut self.read_buf);
        match result {
            Ok(0) => return Err(self.fail(Broken::Closed)),
            Ok(_) => {}
            // A signal, or a TLS read that gave no plaintext yet: the caller checks the
            // deadline and reads again.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if Instant::now() >= deadline {
                    return Err(ClientError::Timeout);
                }
                // The socket's timeout was shorter than this deadline: set it afresh next read.
                self.socket_timeout = None;
                return Ok(());
            }
            Err(e) => {
                return Err(match transport::tls_error(&e) {
                    Some(tls) => self.fail(Broken::Tls(tls)),
                    None => e.into(),
                })
            }
        }
        loop {
            let frame = match self.decoder.decode(&mut self.read_buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(err) if !err.is_fatal() && err.frame_kind() == Some(FrameKind::Response) => {
                    self.stash(err.request_id(), Err(err));
                    continue;
                }
                Err(err) => return Err(self.fail(Broken::Protocol(ProtocolError::Decode(err)))),
            };
            match frame {
                Frame::Response(response) => self.stash(response.request_id, Ok(response)),
                Frame::Pong(id) => {
                    self.pongs.insert(id);
                }
                Frame::Ping(id) => {
                    self.encoder.encode_simple(
                        &mut self.write_buf,
                        FrameKind::Pong,
                        id,
                        Code::OK,
                        "",
                    );
                    self.flush()?;
                }
                Frame::GoAway {
                    last_request_id,
                    code,
                    message,
                } => {
                    log::debug!(
                        "{}: GOAWAY {code} after {last_request_id}: {message}",
                        self.peer
                    );
                    self.goaway = Some(last_request_id);
                }
                Frame::Error { code, message, .. } => {
                    return Err(self.fail(Broken::Connection(Status::new(code, message))));
                }
                Frame::Request(_) => {
                    let err = ProtocolError::UnexpectedFrame(FrameKind::Request);
                    return Err(self.fail(Broken::Protocol(err)));
                }
            }
        }
    }

    /// The requests up to GOAWAY(`last`) whose response has not arrived, with their deadlines.
    fn owed(&self, last: u64) -> impl Iterator<Item = (&u64, &Instant)> + '_ {
        self.outstanding
            .iter()
            .filter(move |&(id, _)| *id <= last && !self.arrived.contains_key(id))
    }

    fn stash(&mut self, id: u64, response: Result<Response, DecodeError>) {
        // A response nobody waits for any more (its wait timed out) is dropped.
        if self.outstanding.contains_key(&id) {
            self.arrived.insert(id, response);
        }
    }
}

/// A deadline as the frame carries it (`proto-spec/PROTOCOL.md` Section 12): whole
/// milliseconds rounded up, so that a remainder under a millisecond is never sent as 0
/// ("none"); a deadline already passed (zero) is sent as 1; capped at `u32::MAX`.
fn deadline_ms(deadline: Duration) -> u32 {
    let ms = deadline.as_millis() + u128::from(!deadline.subsec_nanos().is_multiple_of(1_000_000));
    u32::try_from(ms.max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_auth_leaves_no_token_in_the_write_buffer_or_in_debug() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = std::net::TcpStream::connect(addr).unwrap();
        let _server = listener.accept().unwrap();
        // Every write fails at once (EPIPE): the AUTH frame stays unsent.
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let token = "secret-token-8d1f";
        let config = Client::builder().token(token);
        assert!(!format!("{config:?}").contains(token), "{config:?}");
        let mut client = Client::from_transport(Transport::Plain(stream), addr, vec![addr], config);

        let err = client.authenticate().unwrap_err();
        assert!(matches!(err, ClientError::Io(_)), "{err:?}");
        assert!(client.write_buf.is_empty(), "{:?}", client.write_buf);
        let debug = format!("{client:?}");
        assert!(!debug.contains(token), "{debug}");
        assert!(debug.contains("write_buffered: 0"), "{debug}");

        // Debug shows the buffers' sizes, never their bytes.
        client.write_buf.extend_from_slice(token.as_bytes());
        client.read_buf.extend_from_slice(token.as_bytes());
        for debug in [format!("{client:?}"), format!("{client:#?}")] {
            assert!(!debug.contains(token), "{debug}");
        }
        assert!(format!("{client:?}").contains("write_buffered: 17"));
    }

    #[test]
    fn deadlines_round_up_to_whole_milliseconds_and_never_to_zero() {
        assert_eq!(deadline_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(deadline_ms(Duration::from_micros(1500)), 2);
        assert_eq!(
            deadline_ms(Duration::from_micros(300)),
            1,
            "not 0, which means none"
        );
        assert_eq!(
            deadline_ms(Duration::ZERO),
            1,
            "already passed: 1, not none"
        );
        assert_eq!(deadline_ms(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}
