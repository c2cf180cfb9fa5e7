//! The client's protocol, without IO: [`ClientCore`], one connection's state. Bytes in,
//! bytes out, the time passed in, as the server's `Connection` and rustls's own
//! `ClientConnection`: it reads no socket, keeps no clock and starts no thread. The blocking
//! [`Client`](super::Client) and the tokio [`AsyncClient`](super) are drivers around it
//! that move bytes between a socket and the core and wake callers; a user can wire it to a
//! transport of their own the same way.
//!
//! It owns what makes the protocol (`proto-spec/PROTOCOL.md`) on the client side: request
//! ids, the calls in flight and their deadlines, responses matched to requests in any order,
//! PING and PONG, GOAWAY and the requests it leaves known-not-processed, the ERROR frame,
//! AUTH and the identity it gives, and TLS (rustls) when the connection speaks it.
//!
//! # Driving it
//!
//! ```text
//!   socket ──read──▶ receive_buffer() ──handle_received(now)──▶ calls end ──▶ completed()
//!                                                                              take_response(id)
//!   socket ◀─write── transmit() / advance_transmit(n) ◀── start_request / start_ping / PONG
//!   timer (next_timeout()) ──handle_timeout(now)──▶ calls past their deadline end Timeout
//!   end of stream ──handle_eof()──▶ calls still waiting end Closed
//! ```
//!
//! A driver loops: write what [`ClientCore::transmit`] returns (then
//! [`ClientCore::advance_transmit`] by what the socket took), read into
//! [`ClientCore::receive_buffer`] and call [`ClientCore::handle_received`], call
//! [`ClientCore::handle_timeout`] once [`ClientCore::next_timeout`] has passed, and hand each
//! ended call's outcome ([`ClientCore::take_response`], [`ClientCore::take_pong`]) to its
//! caller; [`ClientCore::completed`] says which calls ended since it last asked.
//!
//! # The rules
//!
//! - Request ids start at the id given to [`ClientCore::new`] and increase by one per
//!   request, PING or AUTH, skipping 0 on wrap. A driver that replaces a connection starts
//!   the next core at the old one's [`ClientCore::next_request_id`], so that ids stay unique
//!   across connections.
//! - A RESPONSE ends the call with its request id, in whatever order responses come. A
//!   response to a call the core does not hold (abandoned, timed out, never sent) is dropped.
//!   A second response to one id is dropped. A RESPONSE whose body fails its checksum (or
//!   its metadata or UTF-8 check) ends only that call, with [`ClientError::Protocol`].
//! - A call whose deadline passes ([`ClientCore::handle_timeout`]) ends with
//!   [`ClientError::Timeout`]; its late response is dropped.
//! - GOAWAY(`last`): every request with an id above `last` ends at once with UNAVAILABLE
//!   (not processed, safe to send again); requests up to `last` wait for their responses;
//!   no new request is taken ([`ClientCore::start_request`] refuses with UNAVAILABLE, and the
//!   driver opens a new connection: [`ClientCore::is_draining`]). The end of the stream after
//!   a GOAWAY is the normal end of a drain: the calls it leaves waiting end with
//!   [`ClientError::Closed`], and [`ClientCore::may_reconnect`] holds.
//! - An ERROR frame, a header that does not decode, a REQUEST frame, a TLS error, or the end
//!   of the stream without a GOAWAY breaks the connection: every waiting call, and every
//!   later one, ends with that error.
//! - A PING from the server is answered with a PONG at once (queued for
//!   [`ClientCore::transmit`]).
//!
//! # Memory
//!
//! The core holds one entry per call not yet taken, the bytes of at most one frame being
//! decoded (bounded by the body limit), and whatever the caller queued to send. Responses
//! are kept only for calls it holds.

mod calls;
#[cfg(test)]
mod tests;
mod tls;

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use self::calls::{Calls, Kind, Outcome};
use self::tls::{Received, TlsLayer};
use super::error::{draining, Broken};
use super::{ClientError, ProtocolError};
use crate::proto::{
    Code, DecodeError, Decoder, Encoder, Frame, FrameKind, Metadata, Response, Status,
    DEFAULT_MAX_BODY_LEN,
};
use crate::service::{Message, Method};
use crate::tls::ClientTlsConfig;

/// The most PONGs a core keeps queued and not yet written: 10,000. A server that sends
/// PINGs faster than their PONGs leave (it does not read them) breaks the connection with
/// [`ProtocolError::PingFlood`] at the next one, instead of growing the queue without end
/// (`proto-spec/PROTOCOL.md` Section 13). The figure is Go's `net/http2` limit on queued
/// control frames (`maxQueuedControlFrames`), its answer to the HTTP/2 ping flood
/// (CVE-2019-9512); 10,000 PONGs are 360,000 bytes.
pub const MAX_QUEUED_PONGS: usize = 10_000;

/// admin AUTH (`proto-spec/SERVICES.md`): the token's bytes in, the identity's name out.
const AUTH: Method<bytes::Bytes, String> = Method::new(crate::admin::SERVICE, 2, "admin.Auth");

/// The settings of a [`ClientCore`]: `CoreConfig::default()` then the `with_` methods.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CoreConfig {
    /// Largest body sent or accepted, in bytes. Default 4 MiB
    /// ([`DEFAULT_MAX_BODY_LEN`]), as the server's.
    pub max_body_len: u32,
    /// How long a call that sets no deadline waits. Default 30 s
    /// ([`DEFAULT_READ_TIMEOUT`](super::DEFAULT_READ_TIMEOUT)).
    pub default_timeout: Duration,
    /// TLS (rustls) on this connection; default none (plaintext).
    pub tls: Option<ClientTlsConfig>,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            max_body_len: DEFAULT_MAX_BODY_LEN,
            default_timeout: super::DEFAULT_READ_TIMEOUT,
            tls: None,
        }
    }
}

impl CoreConfig {
    /// These settings with `max` as the body limit, in bytes.
    pub fn with_max_body_len(mut self, max: u32) -> Self {
        self.max_body_len = max;
        self
    }

    /// These settings with `timeout` for calls that set no deadline.
    pub fn with_default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// These settings with TLS.
    pub fn with_tls(mut self, tls: ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// One client connection's protocol state, without IO. See the [module docs](self).
///
/// `Debug` shows its state and the sizes of its buffers, never their bytes (the send buffer
/// holds AUTH's token until it is written).
pub struct ClientCore {
    peer: SocketAddr,
    tls: Option<Box<TlsLayer>>,
    /// Bytes read from the socket and not yet processed: frames, or TLS records under TLS.
    received: BytesMut,
    /// Under TLS, the plaintext rustls gave and not yet decoded.
    plaintext: BytesMut,
    /// Frames queued to send.
    outgoing: BytesMut,
    /// Under TLS, the records to write to the socket.
    records: BytesMut,
    /// Bytes [`ClientCore::advance_transmit`] was told were written, in all.
    written: u64,
    /// For each PONG queued and perhaps not yet written, the count of [`Self::written`]
    /// at which it has been: oldest first, at most [`MAX_QUEUED_PONGS`].
    pongs: VecDeque<u64>,
    decoder: Decoder,
    encoder: Encoder,
    default_timeout: Duration,
    next_id: u64,
    calls: Calls,
    /// The last request id the server will answer, after its GOAWAY.
    goaway: Option<u64>,
    broken: Option<Broken>,
    /// The stream ended (after a GOAWAY, or with `broken`).
    ended: bool,
    /// The name AUTH gave.
    identity: Option<String>,
}

impl fmt::Debug for ClientCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCore")
            .field("peer", &self.peer)
            .field("tls", &self.tls)
            .field("received", &self.received.len())
            .field("write_buffered", &self.queued_output())
            .field("next_id", &self.next_id)
            .field("calls", &self.calls.len())
            .field("waiting", &self.calls.waiting_count())
            .field("goaway", &self.goaway)
            .field("broken", &self.broken)
            .field("ended", &self.ended)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl ClientCore {
    /// The state of a new connection to `peer`, whose first request id is `first_request_id`
    /// (0 is taken as 1). With TLS, the ClientHello is already queued for
    /// [`ClientCore::transmit`], and [`ClientCore::is_handshaking`] holds until the handshake
    /// ends.
    ///
    /// # Errors
    /// [`ClientError::Tls`] when rustls refuses the configuration.
    pub fn new(
        config: &CoreConfig,
        peer: SocketAddr,
        first_request_id: u64,
    ) -> Result<Self, ClientError> {
        let tls = match &config.tls {
            Some(tls) => Some(Box::new(TlsLayer::new(tls, peer, config.max_body_len)?)),
            None => None,
        };
        let mut core = ClientCore {
            peer,
            tls,
            received: BytesMut::new(),
            plaintext: BytesMut::new(),
            outgoing: BytesMut::new(),
            records: BytesMut::new(),
            written: 0,
            pongs: VecDeque::new(),
            decoder: Decoder::new(config.max_body_len),
            encoder: Encoder::new(config.max_body_len),
            default_timeout: config.default_timeout,
            next_id: first_request_id.max(1),
            calls: Calls::default(),
            goaway: None,
            broken: None,
            ended: false,
            identity: None,
        };
        core.seal();
        Ok(core)
    }

    /// The server's address, as given to [`ClientCore::new`].
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the connection speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether the TLS handshake is still running (`false` without TLS). Requests may be
    /// queued meanwhile: rustls sends them once it ends.
    pub fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.is_handshaking())
    }

    /// The id the next request, PING or AUTH will get.
    pub fn next_request_id(&self) -> u64 {
        self.next_id
    }

    /// The name the server gave in its answer to AUTH ([`ClientCore::start_auth`]).
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// Whether the server sent GOAWAY: it takes no new request on this connection.
    pub fn is_draining(&self) -> bool {
        self.goaway.is_some()
    }

    /// The last request id the server said it will answer, after its GOAWAY.
    pub fn goaway_last_id(&self) -> Option<u64> {
        self.goaway
    }

    /// Whether a driver should open a new connection for new requests and may: the server
    /// sent GOAWAY, and the connection did not then fail with an ERROR frame, a protocol
    /// error or a TLS error (the end of the stream after a GOAWAY is the normal end of a
    /// drain).
    pub fn may_reconnect(&self) -> bool {
        self.goaway.is_some() && matches!(self.broken, None | Some(Broken::Closed))
    }

    /// Whether the stream has ended (the server closed it, or the driver saw it fail).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Why the connection can take no new call: the error of a broken connection, or
    /// [`ClientError::Closed`] after its end.
    ///
    /// # Errors
    /// As said.
    pub fn check_usable(&self) -> Result<(), ClientError> {
        match &self.broken {
            Some(broken) => Err(broken.to_error()),
            None if self.ended => Err(ClientError::Closed),
            None => Ok(()),
        }
    }

    /// How many calls wait for an answer.
    pub fn waiting(&self) -> usize {
        self.calls.waiting_count()
    }

    /// The deadline of call `id` while it waits.
    pub fn deadline(&self, id: u64) -> Option<Instant> {
        self.calls.deadline(id)
    }

    /// Whether the core holds call `id` (waiting, or ended and not yet taken).
    pub fn holds(&self, id: u64) -> bool {
        self.calls.contains(id)
    }

    /// How many calls the core holds: waiting, or ended with an outcome not yet taken. A
    /// driver whose callers take every outcome or [`abandon`](ClientCore::abandon) their
    /// call sees it return to 0 once none is outstanding.
    pub fn held(&self) -> usize {
        self.calls.len()
    }

    /// Queues a REQUEST for `method` with `request` as its message, sent with
    /// `deadline` (as whole milliseconds rounded up: `proto-spec/PROTOCOL.md` Section 12)
    /// and `metadata`. The call waits until `now + deadline`, or the default timeout when
    /// `deadline` is `None` (then no deadline is sent). Returns its request id.
    ///
    /// # Errors
    /// [`ClientError::Timeout`] for a zero deadline (already passed; nothing is queued);
    /// [`ClientError::Status`] UNAVAILABLE after a GOAWAY (not sent, safe to send on a new
    /// connection); the connection's error once it is broken or ended;
    /// [`ClientError::Encode`] over the body limit; [`ClientError::Message`] when the
    /// message does not encode (nothing is queued).
    pub fn start_request<Req: Message, Resp>(
        &mut self,
        method: &Method<Req, Resp>,
        request: &Req,
        deadline: Option<Duration>,
        metadata: &Metadata,
        now: Instant,
    ) -> Result<u64, ClientError> {
        if deadline == Some(Duration::ZERO) {
            // PROTOCOL.md Section 12: a deadline already passed is not sent.
            return Err(ClientError::Timeout);
        }
        let wait = deadline.unwrap_or(self.default_timeout);
        self.queue_request(method, request, deadline, wait, metadata, now)
    }

    /// Queues a REQUEST sent with `deadline` that waits `wait`.
    fn queue_request<Req: Message, Resp>(
        &mut self,
        method: &Method<Req, Resp>,
        request: &Req,
        deadline: Option<Duration>,
        wait: Duration,
        metadata: &Metadata,
        now: Instant,
    ) -> Result<u64, ClientError> {
        self.check_usable()?;
        if self.goaway.is_some() {
            return Err(ClientError::Status(draining()));
        }
        let id = self.next_id;
        let deadline_ms = deadline.map_or(0, deadline_ms);
        let start = self.outgoing.len();
        let mut refused = None;
        self.encoder
            .encode_request_with(
                &mut self.outgoing,
                id,
                method.service,
                method.method,
                deadline_ms,
                metadata,
                |out| refused = request.encode(out).err(),
            )
            .map_err(ClientError::Encode)?;
        if let Some(err) = refused {
            // The frame was built around a partial message: take it back, send nothing.
            self.outgoing.truncate(start);
            return Err(ClientError::Message(err));
        }
        self.take_id();
        self.calls
            .insert(id, Kind::Request, now, super::later(now, wait));
        Ok(id)
    }

    /// Queues a PING that waits for its PONG up to `timeout`; returns its id. The PONG is
    /// collected with [`ClientCore::take_pong`].
    ///
    /// # Errors
    /// The connection's error once it is broken or ended.
    pub fn start_ping(&mut self, timeout: Duration, now: Instant) -> Result<u64, ClientError> {
        self.check_usable()?;
        let id = self.take_id();
        self.encoder
            .encode_simple(&mut self.outgoing, FrameKind::Ping, id, Code::OK, "");
        self.calls
            .insert(id, Kind::Ping, now, super::later(now, timeout));
        Ok(id)
    }

    /// Queues admin AUTH with `token` (`proto-spec/SERVICES.md`), waiting up to `timeout`;
    /// returns its id, for [`ClientCore::finish_auth`]. A driver sends it first on a new
    /// connection.
    ///
    /// # Errors
    /// As [`ClientCore::start_request`].
    pub fn start_auth(
        &mut self,
        token: &[u8],
        timeout: Duration,
        now: Instant,
    ) -> Result<u64, ClientError> {
        let token = bytes::Bytes::copy_from_slice(token);
        self.queue_request(&AUTH, &token, None, timeout, &Metadata::new(), now)
    }

    /// The outcome of AUTH call `id` once it has ended: `Ok` sets
    /// [`ClientCore::identity`]. `None` while it waits.
    ///
    /// # Errors
    /// [`ClientError::Auth`] with the server's status when it refused the token; the call's
    /// error otherwise (a timeout, the connection's error).
    pub fn finish_auth(&mut self, id: u64) -> Option<Result<(), ClientError>> {
        let response = match self.take_response(id)? {
            Ok(response) => response,
            Err(err) => return Some(Err(err)),
        };
        if !response.code.is_ok() {
            let message = response.message().unwrap_or_default().to_owned();
            return Some(Err(ClientError::Auth(Status::new(response.code, message))));
        }
        Some(match String::decode(response.payload) {
            Ok(name) => {
                log::debug!("{}: authenticated as {name:?}", self.peer);
                self.identity = Some(name);
                Ok(())
            }
            Err(e) => Err(ClientError::Protocol(ProtocolError::Message(e))),
        })
    }

    /// Drops every byte queued and not yet written (after a failed AUTH, whose frame holds
    /// the token).
    pub fn discard_unsent(&mut self) {
        self.outgoing.clear();
        self.records.clear();
    }

    /// Takes the outcome of request `id` once it has ended: the server's RESPONSE (any
    /// status), or why there is none. `None` while it waits, and for an id the core does not
    /// hold.
    ///
    /// # Errors
    /// [`ClientError::Timeout`] past its deadline; UNAVAILABLE ([`ClientError::Status`]) for
    /// an id above a GOAWAY's last id; [`ClientError::Protocol`] for a response whose body
    /// did not check; the connection's error when it broke or ended first.
    pub fn take_response(&mut self, id: u64) -> Option<Result<Response, ClientError>> {
        match self.calls.take(id)? {
            Outcome::Response(response) => Some(Ok(response)),
            Outcome::Failed(err) => Some(Err(err)),
            Outcome::Pong(_) => Some(Err(ClientError::Protocol(ProtocolError::UnexpectedFrame(
                FrameKind::Pong,
            )))),
        }
    }

    /// Takes the outcome of PING `id` once it has ended: the round-trip time from
    /// [`ClientCore::start_ping`]'s `now` to the [`ClientCore::handle_received`] that saw the
    /// PONG. `None` while it waits.
    ///
    /// # Errors
    /// [`ClientError::Timeout`], or the connection's error.
    pub fn take_pong(&mut self, id: u64) -> Option<Result<Duration, ClientError>> {
        match self.calls.take(id)? {
            Outcome::Pong(rtt) => Some(Ok(rtt)),
            Outcome::Failed(err) => Some(Err(err)),
            Outcome::Response(_) => Some(Err(ClientError::Protocol(
                ProtocolError::UnexpectedFrame(FrameKind::Response),
            ))),
        }
    }

    /// Forgets call `id`: its caller no longer wants the answer (a dropped future, a wait
    /// given up). A response that arrives for it later is dropped.
    pub fn abandon(&mut self, id: u64) {
        self.calls.remove(id);
    }

    /// The ids of the calls that ended since the last time this was asked (their outcomes
    /// wait in [`ClientCore::take_response`] or [`ClientCore::take_pong`]). A driver that
    /// looks calls up by id instead drains it all the same, or it grows.
    pub fn completed(&mut self) -> std::vec::Drain<'_, u64> {
        self.calls.completed()
    }

    /// Every ended call's id and outcome, taken out of the core (the driver that replaces a
    /// drained connection keeps them for their callers).
    pub fn take_all_done(&mut self) -> Vec<(u64, Result<Response, ClientError>)> {
        self.calls
            .drain_done()
            .into_iter()
            .map(|(id, outcome)| {
                let result = match outcome {
                    Outcome::Response(response) => Ok(response),
                    Outcome::Failed(err) => Err(err),
                    Outcome::Pong(_) => Err(ClientError::Protocol(ProtocolError::UnexpectedFrame(
                        FrameKind::Pong,
                    ))),
                };
                (id, result)
            })
            .collect()
    }

    /// The earliest deadline among the waiting calls: when [`ClientCore::handle_timeout`]
    /// has something to do.
    pub fn next_timeout(&mut self) -> Option<Instant> {
        self.calls.next_deadline()
    }

    /// Ends every call whose deadline is at or before `now` with [`ClientError::Timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.calls.expire(now);
    }

    /// Where the driver appends the bytes it reads from the socket (reserve, then read into
    /// the spare capacity), before [`ClientCore::handle_received`].
    pub fn receive_buffer(&mut self) -> &mut BytesMut {
        &mut self.received
    }

    /// Processes the bytes in [`ClientCore::receive_buffer`]: TLS records through rustls,
    /// then every whole frame; ends the calls they answer. What is left of a frame stays for
    /// the next read.
    ///
    /// # Errors
    /// The error that broke the connection, if these bytes broke it: a frame that does not
    /// decode or a REQUEST ([`ClientError::Protocol`]), an ERROR frame
    /// ([`ClientError::Connection`]), TLS ([`ClientError::Tls`], [`ClientError::NotTls`]).
    /// Every waiting call has then ended with it too.
    pub fn handle_received(&mut self, now: Instant) -> Result<(), ClientError> {
        if self.broken.is_some() || self.ended {
            self.received.clear();
            return Ok(());
        }
        let mut closed = false;
        if let Some(tls) = &mut self.tls {
            match tls.receive(&mut self.received, &mut self.plaintext) {
                Ok(Received::Open) => {}
                Ok(Received::Closed) => closed = true,
                Err(err) => {
                    self.seal();
                    return Err(self.break_with(err));
                }
            }
        }
        let result = self.decode_frames(now);
        self.seal();
        result?;
        if closed {
            self.handle_eof()?;
        }
        Ok(())
    }

    fn decode_frames(&mut self, now: Instant) -> Result<(), ClientError> {
        loop {
            let src = if self.tls.is_some() {
                &mut self.plaintext
            } else {
                &mut self.received
            };
            let frame = match self.decoder.decode(src) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(err) if !err.is_fatal() && err.frame_kind() == Some(FrameKind::Response) => {
                    let id = err.request_id();
                    self.complete_request(id, Err(err));
                    continue;
                }
                Err(err) => {
                    let err = ClientError::Protocol(ProtocolError::Decode(err));
                    return Err(self.break_with(err));
                }
            };
            match frame {
                Frame::Response(response) => {
                    self.complete_request(response.request_id, Ok(response));
                }
                Frame::Pong(id) => match self.calls.waiting(id) {
                    Some((Kind::Ping, sent)) => {
                        self.calls
                            .complete(id, Outcome::Pong(now.saturating_duration_since(sent)));
                    }
                    _ => log::debug!("{}: PONG {id} for no PING waiting: dropped", self.peer),
                },
                Frame::Ping(id) => self.queue_pong(id)?,
                Frame::GoAway {
                    last_request_id,
                    code,
                    message,
                } => {
                    log::debug!(
                        "{}: GOAWAY {code} after {last_request_id}: {message}",
                        self.peer
                    );
                    // A second GOAWAY may only lower the last id (RFC 9113 Section 6.8).
                    let last = self
                        .goaway
                        .map_or(last_request_id, |l| l.min(last_request_id));
                    self.goaway = Some(last);
                    self.calls.complete_all(
                        |id, kind| kind == Kind::Request && id > last,
                        || ClientError::Status(draining()),
                    );
                }
                Frame::Error { code, message, .. } => {
                    let err = ClientError::Connection(Status::new(code, message));
                    return Err(self.break_with(err));
                }
                Frame::Request(_) => {
                    let err =
                        ClientError::Protocol(ProtocolError::UnexpectedFrame(FrameKind::Request));
                    return Err(self.break_with(err));
                }
            }
        }
    }

    fn complete_request(&mut self, id: u64, response: Result<Response, DecodeError>) {
        let outcome = match response {
            Ok(response) => Outcome::Response(response),
            Err(err) => Outcome::Failed(ClientError::Protocol(ProtocolError::Decode(err))),
        };
        match self.calls.waiting(id) {
            Some((Kind::Request, _)) => {
                self.calls.complete(id, outcome);
            }
            _ => log::debug!(
                "{}: response to {id}, which no call waits for: dropped",
                self.peer
            ),
        }
    }

    /// The stream ended (the socket read 0 bytes). After a GOAWAY that is the end of the
    /// drain; without one the connection is broken. Either way the calls still waiting end
    /// with [`ClientError::Closed`].
    ///
    /// # Errors
    /// Under TLS, when the stream ended in the handshake: [`ClientError::NotTls`] for a
    /// plaintext courier server, else [`ClientError::Io`] (`UnexpectedEof`).
    pub fn handle_eof(&mut self) -> Result<(), ClientError> {
        if self.ended {
            return Ok(());
        }
        self.ended = true;
        let handshake_error = self.tls.as_ref().and_then(|tls| tls.eof_error());
        if self.broken.is_none() && self.goaway.is_none() {
            self.broken = Some(Broken::Closed);
        }
        self.calls.complete_all(|_, _| true, || ClientError::Closed);
        match handshake_error {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// The socket failed (a write or read error): the connection ends as if closed, and
    /// every waiting call ends with [`ClientError::Closed`].
    pub fn handle_io_error(&mut self) {
        if self.broken.is_none() {
            self.broken = Some(Broken::Closed);
        }
        self.ended = true;
        self.calls.complete_all(|_, _| true, || ClientError::Closed);
    }

    /// The bytes queued to write and not yet written, in bytes: frames, and under TLS the
    /// records already sealed. A driver that lets callers queue requests without waiting for
    /// the socket (the async client) holds new ones back above a high-water mark of this.
    pub fn queued_output(&self) -> usize {
        self.outgoing.len() + self.records.len()
    }

    /// Whether there are bytes to write ([`ClientCore::transmit`]).
    pub fn wants_transmit(&self) -> bool {
        self.queued_output() > 0
    }

    /// The bytes to write to the socket now (frames, or TLS records under TLS); after a
    /// write, [`ClientCore::advance_transmit`] by the bytes the socket took.
    pub fn transmit(&mut self) -> &[u8] {
        self.seal();
        match &self.tls {
            Some(_) => &self.records,
            None => &self.outgoing,
        }
    }

    /// `n` bytes of [`ClientCore::transmit`] were written.
    pub fn advance_transmit(&mut self, n: usize) {
        match &self.tls {
            Some(_) => self.records.advance(n),
            None => self.outgoing.advance(n),
        }
        self.written = self.written.saturating_add(n as u64);
    }

    /// Queues the PONG that answers PING `id`, unless [`MAX_QUEUED_PONGS`] are queued and
    /// not yet written: then the connection breaks with [`ProtocolError::PingFlood`].
    fn queue_pong(&mut self, id: u64) -> Result<(), ClientError> {
        while self.pongs.front().is_some_and(|&end| end <= self.written) {
            self.pongs.pop_front();
        }
        if self.pongs.len() >= MAX_QUEUED_PONGS {
            let err = ClientError::Protocol(ProtocolError::PingFlood {
                queued: self.pongs.len(),
            });
            return Err(self.break_with(err));
        }
        self.encoder
            .encode_simple(&mut self.outgoing, FrameKind::Pong, id, Code::OK, "");
        // Written once every byte queued now is (under TLS the records of the frames still
        // to seal are a little longer than the frames: a bound within that margin).
        let queued = self.queued_output() as u64;
        self.pongs.push_back(self.written.saturating_add(queued));
        Ok(())
    }

    /// Moves queued frames through TLS into the records to write (no-op without TLS).
    fn seal(&mut self) {
        if let Some(tls) = &mut self.tls {
            tls.transmit(&mut self.outgoing, &mut self.records);
        }
    }

    /// Ends the connection from this side: under TLS a close_notify alert is queued for
    /// [`ClientCore::transmit`]; every waiting call ends with [`ClientError::Closed`].
    pub fn close(&mut self) {
        if let Some(tls) = &mut self.tls {
            tls.close();
        }
        self.seal();
        self.ended = true;
        if self.broken.is_none() && self.goaway.is_none() {
            self.broken = Some(Broken::Closed);
        }
        self.calls.complete_all(|_, _| true, || ClientError::Closed);
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Breaks the connection with `err`: every waiting call ends with it, and so does every
    /// later one. The bytes received and not yet decoded are dropped: nothing after the
    /// break is read. Returns `err`.
    fn break_with(&mut self, err: ClientError) -> ClientError {
        self.received.clear();
        self.plaintext.clear();
        self.pongs = VecDeque::new();
        let broken = match &err {
            ClientError::Connection(status) => Broken::Connection(status.clone()),
            ClientError::Protocol(e) => Broken::Protocol(e.clone()),
            ClientError::Tls(e) => Broken::Tls(e.clone()),
            _ => Broken::Closed,
        };
        self.calls.complete_all(|_, _| true, || broken.to_error());
        self.broken = Some(broken);
        err
    }
}

/// A deadline as the frame carries it (`proto-spec/PROTOCOL.md` Section 12): whole
/// milliseconds rounded up, so that a remainder under a millisecond is never sent as 0
/// ("none"); a deadline already passed (zero) is sent as 1; capped at `u32::MAX`.
pub(super) fn deadline_ms(deadline: Duration) -> u32 {
    let ms = deadline.as_millis() + u128::from(!deadline.subsec_nanos().is_multiple_of(1_000_000));
    u32::try_from(ms.max(1)).unwrap_or(u32::MAX)
}
