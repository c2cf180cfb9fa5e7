//! One connection of the driver, driven on readiness: a nonblocking `mio::net::TcpStream`,
//! plain or TLS (rustls's `ClientConnection` fed with `read_tls`/`process_new_packets`/
//! `write_tls` as the socket allows, as in rustls's `tls-client-mio` example), the crate's
//! frame codec, and the requests outstanding on it, matched to their responses by request
//! id.
//!
//! A connection goes through `Connecting` (the TCP connect), `Handshaking` (TLS only),
//! `Authenticating` (with a token: admin AUTH, answered before any measured request) to
//! `Ready`. It never blocks: every call reads and writes until the socket would block, and
//! the driver calls again on the next readiness event.

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use courier_rpc::admin::AUTH;
use courier_rpc::proto::{Code, Decoder, Encoder, Frame, FrameKind, DEFAULT_MAX_BODY_LEN, MAGIC};
use courier_rpc::tls::{ClientTlsBuilder, ClientTlsConfig, ALPN};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::pki_types::ServerName;
use rustls::ClientConnection;

use crate::workload::{self, Answer, Op, Plan, Request};

/// How every connection of a run is secured.
#[derive(Debug, Default)]
pub struct Security {
    /// TLS, if `--tls`.
    pub tls: Option<TlsSource>,
    /// The token sent with admin AUTH on every connection, if any.
    pub token: Option<Bytes>,
}

/// Where a connection's TLS configuration comes from.
#[derive(Debug)]
pub enum TlsSource {
    /// One configuration for every connection (its session cache shared: resumption).
    Shared(ClientTlsConfig),
    /// `--reconnect`: a configuration of its own for every connection, built from these
    /// settings (the files' contents, read once), so every handshake is a full one.
    Fresh(ClientTlsBuilder),
}

impl TlsSource {
    fn config(&self) -> Result<ClientTlsConfig, ConnError> {
        match self {
            TlsSource::Shared(config) => Ok(config.clone()),
            TlsSource::Fresh(builder) => builder
                .clone()
                .build()
                .map_err(|err| ConnError::new("tls", format!("TLS configuration: {err}"))),
        }
    }
}

/// Why a connection failed: `kind` is the name its requests are counted under (`closed`,
/// `io`, `timeout`, `connection`, `protocol`, `tls`, `not_tls`, `auth`, `encode`).
#[derive(Debug)]
pub struct ConnError {
    /// The error's name in the report.
    pub kind: &'static str,
    /// One line saying what happened.
    pub message: String,
}

impl ConnError {
    pub fn new(kind: &'static str, message: impl Into<String>) -> ConnError {
        ConnError {
            kind,
            message: message.into(),
        }
    }

    fn io(err: &io::Error) -> ConnError {
        ConnError::new("io", err.to_string())
    }
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connecting,
    Handshaking,
    /// Waiting for the answer to AUTH, sent with this request id.
    Authenticating(u64),
    Ready,
}

/// A request sent (or queued) and not yet answered.
#[derive(Debug)]
struct InFlight {
    op: Op,
    /// When its last byte was written (when it was queued, until then).
    sent: Instant,
}

/// One connection. See the [module docs](self).
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<Box<ClientConnection>>,
    phase: Phase,
    token: Option<Bytes>,
    decoder: Decoder,
    encoder: Encoder,
    /// Plaintext read and not yet decoded.
    read_buf: BytesMut,
    /// Frames queued and not yet written (for TLS: not yet handed to rustls).
    out: BytesMut,
    /// Bytes ever queued, and ever written, on this connection.
    queued: u64,
    written: u64,
    /// Requests not wholly written: their id and the end of their frame in `queued`.
    unsent: VecDeque<(u64, u64)>,
    in_flight: HashMap<u64, InFlight>,
    next_id: u64,
    /// The last request id the server will answer, after its GOAWAY.
    goaway: Option<u64>,
    /// No byte has been read yet: a plaintext server's ERROR to a ClientHello is told apart.
    first_read: bool,
    /// The server closed the connection cleanly (after a GOAWAY).
    ended: bool,
    interest: Option<Interest>,
    /// When the connection was opened, or last read a byte while waiting for one.
    last_progress: Instant,
}

impl Conn {
    /// Starts a nonblocking connect to `addr`.
    ///
    /// # Errors
    /// The socket's (`io`), or a TLS configuration that cannot be built (`tls`).
    pub fn open(addr: SocketAddr, security: &Security) -> Result<Conn, ConnError> {
        let tls = match &security.tls {
            Some(source) => {
                let config = source.config()?;
                let name = match config.server_name() {
                    Some(name) => ServerName::try_from(name.to_string())
                        .map_err(|err| ConnError::new("tls", format!("server name: {err}")))?,
                    None => ServerName::IpAddress(addr.ip().into()),
                };
                let conn = ClientConnection::new(config.rustls().clone(), name)
                    .map_err(|err| ConnError::new("tls", format!("TLS error: {err}")))?;
                Some(Box::new(conn))
            }
            None => None,
        };
        let stream = TcpStream::connect(addr).map_err(|err| ConnError::io(&err))?;
        Ok(Conn {
            stream,
            peer: addr,
            tls,
            phase: Phase::Connecting,
            token: security.token.clone(),
            decoder: Decoder::new(DEFAULT_MAX_BODY_LEN),
            encoder: Encoder::new(DEFAULT_MAX_BODY_LEN),
            read_buf: BytesMut::new(),
            out: BytesMut::new(),
            queued: 0,
            written: 0,
            unsent: VecDeque::new(),
            in_flight: HashMap::new(),
            next_id: 1,
            goaway: None,
            first_read: true,
            ended: false,
            interest: None,
            last_progress: Instant::now(),
        })
    }

    /// Whether the connection is up (connected, TLS done, AUTH answered).
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// Requests queued or sent and not yet answered.
    pub fn outstanding(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether the connection has nothing left to do: ready, nothing outstanding, and
    /// either drained by the server (GOAWAY) or cleanly ended.
    pub fn drained(&self) -> bool {
        self.in_flight.is_empty() && (self.goaway.is_some() || self.ended)
    }

    /// Since when the connection has been waiting for the server, if it is: connecting,
    /// or requests outstanding. `None` when it waits for nothing.
    pub fn waiting_since(&self) -> Option<Instant> {
        (!self.is_ready() || !self.in_flight.is_empty()).then_some(self.last_progress)
    }

    /// Whether the connection takes new requests: ready, and not drained by a GOAWAY or
    /// ended.
    pub fn accepts(&self) -> bool {
        self.is_ready() && self.goaway.is_none() && !self.ended
    }

    /// Queues `request` of `plan` (written by [`Conn::flush`]).
    ///
    /// # Errors
    /// `encode`: the frame is over the body limit.
    pub fn queue(&mut self, plan: &Plan, request: &Request, now: Instant) -> Result<(), ConnError> {
        let id = self.take_id();
        let before = self.out.len();
        let op = plan
            .encode(request, &self.encoder, &mut self.out, id)
            .map_err(|err| ConnError::new("encode", err.to_string()))?;
        if self.in_flight.is_empty() {
            // The wait for an answer starts now.
            self.last_progress = now;
        }
        self.queued += (self.out.len() - before) as u64;
        self.unsent.push_back((id, self.queued));
        self.in_flight.insert(id, InFlight { op, sent: now });
        Ok(())
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Registers the socket with `registry` under `token`, with the interest its state needs.
    ///
    /// # Errors
    /// The registry's.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.interest = None;
        self.update_interest(registry, token)
    }

    /// Removes the socket from `registry`.
    pub fn deregister(&mut self, registry: &Registry) {
        if self.interest.take().is_some() {
            let _ = registry.deregister(&mut self.stream);
        }
    }

    /// Readable always; writable too while connecting or while output waits. Reregisters
    /// only when that changes.
    ///
    /// # Errors
    /// The registry's.
    pub fn update_interest(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let wants_write = self.phase == Phase::Connecting
            || !self.out.is_empty()
            || self.tls.as_ref().is_some_and(|tls| tls.wants_write());
        let interest = if wants_write {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        match self.interest {
            Some(current) if current == interest => Ok(()),
            Some(_) => {
                self.interest = Some(interest);
                registry.reregister(&mut self.stream, token, interest)
            }
            None => {
                self.interest = Some(interest);
                registry.register(&mut self.stream, token, interest)
            }
        }
    }

    /// Handles a readiness event (or a spurious wakeup): completes the connect, reads (to the
    /// end of the stream when `read_closed`, the event's word that the peer closed) and
    /// decodes every response that has arrived (each one given to `answered` with its
    /// latency, from the write of its request's last byte to the decode of its response;
    /// none for a request the server will not answer), and writes what is queued.
    ///
    /// # Errors
    /// The connection is unusable; its outstanding requests are the caller's to count.
    pub fn on_ready(
        &mut self,
        now: Instant,
        read_closed: bool,
        scratch: &mut [u8],
        answered: &mut impl FnMut(Answer, Option<Duration>),
    ) -> Result<(), ConnError> {
        if self.phase == Phase::Connecting && !self.check_connected()? {
            return Ok(());
        }
        self.read(now, read_closed, scratch, answered)?;
        self.flush(now)
    }

    /// Whether the nonblocking connect has completed; moves on to the next phase if so.
    fn check_connected(&mut self) -> Result<bool, ConnError> {
        if let Some(err) = self.stream.take_error().map_err(|e| ConnError::io(&e))? {
            return Err(ConnError::io(&err));
        }
        match self.stream.peer_addr() {
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotConnected => return Ok(false),
            Err(err) => return Err(ConnError::io(&err)),
        }
        let _ = self.stream.set_nodelay(true);
        if self.tls.is_some() {
            self.phase = Phase::Handshaking;
        } else {
            self.after_handshake()?;
        }
        Ok(true)
    }

    /// TLS is done (or not used): AUTH with the token, or ready.
    fn after_handshake(&mut self) -> Result<(), ConnError> {
        let Some(token) = self.token.clone() else {
            self.phase = Phase::Ready;
            return Ok(());
        };
        let id = self.take_id();
        let before = self.out.len();
        workload::encode(&self.encoder, &mut self.out, id, &AUTH, &token)
            .map_err(|err| ConnError::new("encode", err.to_string()))?;
        self.queued += (self.out.len() - before) as u64;
        self.phase = Phase::Authenticating(id);
        Ok(())
    }

    /// Reads until the socket would block, then decodes every whole frame.
    fn read(
        &mut self,
        now: Instant,
        read_closed: bool,
        scratch: &mut [u8],
        answered: &mut impl FnMut(Answer, Option<Duration>),
    ) -> Result<(), ConnError> {
        let mut eof = false;
        let mut progress = false;
        loop {
            let n = match self.stream.read(scratch) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(ConnError::io(&err)),
            };
            progress = true;
            // A short read emptied the socket: the next byte brings a new readiness event
            // (unless the peer has closed, whose end of stream is read now).
            let drained = n < scratch.len() && !read_closed;
            let bytes = &scratch[..n];
            if self.first_read && self.tls.is_some() && bytes.starts_with(&MAGIC) {
                return Err(ConnError::new(
                    "not_tls",
                    format!(
                        "the server at {} answered in plaintext: it does not speak TLS on this port",
                        self.peer
                    ),
                ));
            }
            self.first_read = false;
            match self.tls.as_deref_mut() {
                None => self.read_buf.extend_from_slice(bytes),
                Some(tls) => eof |= tls_receive(tls, bytes, &mut self.read_buf, &mut self.stream)?,
            }
            if drained {
                break;
            }
        }
        if progress {
            self.last_progress = now;
        }
        let handshake_done = self.tls.as_deref().is_some_and(|tls| !tls.is_handshaking());
        if self.phase == Phase::Handshaking && handshake_done {
            let alpn = self.tls.as_deref().and_then(|tls| tls.alpn_protocol());
            if alpn.is_some_and(|p| p != ALPN) {
                return Err(ConnError::new(
                    "tls",
                    "the server chose another protocol (ALPN)",
                ));
            }
            self.after_handshake()?;
        }
        self.decode(now, answered)?;
        if eof {
            if self.goaway.is_some() && self.in_flight.is_empty() {
                self.ended = true;
                return Ok(());
            }
            return Err(ConnError::new(
                "closed",
                format!("the server at {} closed the connection", self.peer),
            ));
        }
        Ok(())
    }

    /// Decodes and handles every whole frame in the read buffer.
    fn decode(
        &mut self,
        now: Instant,
        answered: &mut impl FnMut(Answer, Option<Duration>),
    ) -> Result<(), ConnError> {
        loop {
            let frame = match self.decoder.decode(&mut self.read_buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(err) => return Err(ConnError::new("protocol", err.to_string())),
            };
            match frame {
                Frame::Response(response) => {
                    if self.phase == Phase::Authenticating(response.request_id) {
                        if !response.code.is_ok() {
                            return Err(ConnError::new(
                                "auth",
                                format!(
                                    "authentication refused: {}: {}",
                                    response.code,
                                    response.message().unwrap_or("")
                                ),
                            ));
                        }
                        self.phase = Phase::Ready;
                        continue;
                    }
                    let Some(request) = self.in_flight.remove(&response.request_id) else {
                        return Err(ConnError::new(
                            "protocol",
                            format!(
                                "a response to request id {}, which is not outstanding",
                                response.request_id
                            ),
                        ));
                    };
                    let latency = now.saturating_duration_since(request.sent);
                    answered(
                        request.op.answer(response.code, response.payload),
                        Some(latency),
                    );
                }
                Frame::GoAway {
                    last_request_id, ..
                } => {
                    // PROTOCOL.md Section 14: requests above the id will not be processed.
                    self.goaway = Some(last_request_id);
                    let refused: Vec<u64> = self
                        .in_flight
                        .keys()
                        .copied()
                        .filter(|id| *id > last_request_id)
                        .collect();
                    for id in refused {
                        self.in_flight.remove(&id);
                        answered(Answer::Failed(Code::UNAVAILABLE), None);
                    }
                }
                Frame::Error { code, message, .. } => {
                    return Err(ConnError::new(
                        "connection",
                        format!("the server closed the connection: {code}: {message}"),
                    ))
                }
                Frame::Ping(id) => {
                    let before = self.out.len();
                    self.encoder
                        .encode_simple(&mut self.out, FrameKind::Pong, id, Code::OK, "");
                    self.queued += (self.out.len() - before) as u64;
                }
                Frame::Pong(_) => {}
                Frame::Request(_) => {
                    return Err(ConnError::new("protocol", "the server sent a REQUEST"))
                }
            }
        }
    }

    /// Writes what is queued until the socket would block; stamps each request whose last
    /// byte went out with `now`.
    ///
    /// # Errors
    /// The socket's or rustls's.
    pub fn flush(&mut self, now: Instant) -> Result<(), ConnError> {
        if self.phase == Phase::Connecting {
            return Ok(());
        }
        match self.tls.as_deref_mut() {
            None => {
                while !self.out.is_empty() {
                    match self.stream.write(&self.out) {
                        Ok(0) => return Err(ConnError::new("closed", "the socket took no bytes")),
                        Ok(n) => {
                            self.out.advance(n);
                            self.written += n as u64;
                        }
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                        Err(err) => return Err(ConnError::io(&err)),
                    }
                }
            }
            Some(tls) => {
                // rustls holds the plaintext until the handshake is done; nothing is queued
                // before then but AUTH, which is queued after it.
                if !tls.is_handshaking() {
                    while !self.out.is_empty() {
                        let n = tls
                            .writer()
                            .write(&self.out)
                            .map_err(|e| ConnError::io(&e))?;
                        if n == 0 {
                            // rustls's buffer is full: write_tls below makes room.
                            break;
                        }
                        self.out.advance(n);
                        self.written += n as u64;
                    }
                }
                while tls.wants_write() {
                    match tls.write_tls(&mut self.stream) {
                        Ok(_) => {}
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                        Err(err) => return Err(ConnError::io(&err)),
                    }
                }
            }
        }
        while let Some(&(id, end)) = self.unsent.front() {
            if end > self.written {
                break;
            }
            self.unsent.pop_front();
            if let Some(request) = self.in_flight.get_mut(&id) {
                request.sent = now;
            }
        }
        Ok(())
    }

    /// Ends the connection: a TLS close_notify (best effort), then both directions shut
    /// down. Deregister it first.
    pub fn close(mut self) {
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.send_close_notify();
            let _ = tls.write_tls(&mut self.stream);
        }
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Feeds `bytes` read from the socket to rustls and moves the plaintext they give to
/// `plaintext`; answers rustls queues (an alert) go out with the next flush. Returns whether
/// the peer ended the TLS stream (close_notify).
///
/// # Errors
/// `tls` for a record that breaks TLS, after trying to send the alert that says why.
fn tls_receive(
    tls: &mut ClientConnection,
    mut bytes: &[u8],
    plaintext: &mut BytesMut,
    stream: &mut TcpStream,
) -> Result<bool, ConnError> {
    let mut ended = false;
    while !bytes.is_empty() {
        tls.read_tls(&mut bytes).map_err(|e| ConnError::io(&e))?;
        if let Err(err) = tls.process_new_packets() {
            let _ = tls.write_tls(stream);
            return Err(ConnError::new("tls", format!("TLS error: {err}")));
        }
        // Drained after every pass, so rustls's plaintext buffer never fills.
        loop {
            let mut reader = tls.reader();
            match reader.fill_buf() {
                Ok([]) => {
                    ended = true;
                    break;
                }
                Ok(chunk) => {
                    let n = chunk.len();
                    plaintext.extend_from_slice(chunk);
                    reader.consume(n);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                    ended = true;
                    break;
                }
                Err(err) => return Err(ConnError::io(&err)),
            }
        }
    }
    Ok(ended)
}
