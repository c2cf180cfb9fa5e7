//! A server connection's protocol state, sans-IO: bytes in, requests dispatched, bytes out.
//!
//! [`Connection`] owns the read buffer, the decoder and the output buffer of one client. It
//! never touches a socket or the clock: the event loop hands it something to read from
//! ([`Connection::read_from`]), something to write to ([`Connection::flush_to`]) and the
//! current [`Instant`]. That is what makes it testable byte by byte and fuzzable.
//!
//! # Lifecycle
//!
//! ```text
//!            peer EOF                 output flushed
//!   Open ─────────────────▶ PeerClosed ─────────────────▶ Closed
//!     │  fatal error, GOAWAY                                 ▲
//!     ▼                       output flushed,                │ peer EOF or
//!   Closing ─────────────────▶ Lingering ────────────────────┘ linger deadline
//!   (ERROR/GOAWAY queued,      (our write side shut; input is
//!    nothing more read)         read and discarded)
//! ```
//!
//! Lingering exists so that the ERROR frame reaches the peer: closing a socket that still has
//! unread input makes the kernel send a reset, which can destroy the frame before the peer
//! reads it (the "lingering close" of HTTP servers).

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use crate::proto::{
    Code, DecodeError, Decoder, Encoder, Frame, FrameKind, Metadata, Request, Status,
    DEFAULT_MAX_BODY_LEN,
};
use crate::service::{Context, Router};

/// Bytes read from the socket per `read` call: 16 KiB (Redis reads 16 KiB per call too,
/// `PROTO_IOBUF_LEN`).
pub const READ_CHUNK: usize = 16 * 1024;

/// Default time a connection lingers after sending ERROR or GOAWAY: 2 seconds.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(2);

/// Most input discarded while lingering before the connection is closed anyway: 16 MiB.
pub const LINGER_MAX_DISCARD: usize = 16 * 1024 * 1024;

/// Settings of one connection; the server builder fills them in.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionConfig {
    /// Largest body accepted and sent, in bytes; default [`DEFAULT_MAX_BODY_LEN`] (4 MiB).
    pub max_body_len: u32,
    /// How long to linger after ERROR or GOAWAY; default [`DEFAULT_LINGER`] (2 s).
    pub linger: Duration,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            max_body_len: DEFAULT_MAX_BODY_LEN,
            linger: DEFAULT_LINGER,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    PeerClosed,
    Closing,
    Lingering { until: Instant, discarded: usize },
    Closed,
}

/// Why a connection stopped reading requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed its write side (or sent GOAWAY).
    PeerClosed,
    /// The peer's bytes broke the protocol; an ERROR frame was queued.
    Protocol(DecodeError),
    /// The peer sent a frame a server never receives (RESPONSE).
    UnexpectedFrame(FrameKind),
    /// The peer sent an ERROR frame with this status.
    PeerError(Status),
    /// The server is shutting down; a GOAWAY was queued.
    GoAway,
}

/// One server connection's protocol state. See the [module docs](self).
#[derive(Debug)]
pub struct Connection {
    config: ConnectionConfig,
    decoder: Decoder,
    encoder: Encoder,
    read_buf: BytesMut,
    write_buf: BytesMut,
    phase: Phase,
    close_reason: Option<CloseReason>,
    last_request_id: u64,
}

impl Connection {
    /// A new, open connection. Allocates nothing until the first read.
    pub fn new(config: ConnectionConfig) -> Self {
        Connection {
            config,
            decoder: Decoder::new(config.max_body_len),
            encoder: Encoder::new(config.max_body_len),
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
            phase: Phase::Open,
            close_reason: None,
            last_request_id: 0,
        }
    }

    /// Reads once from `src` (at most [`READ_CHUNK`] bytes) into the read buffer; while
    /// lingering, reads and discards. `Ok(0)` is the peer's end of stream and is recorded.
    /// Call [`Connection::process`] after each successful read.
    ///
    /// # Errors
    /// Whatever `src.read` returns, including `WouldBlock`; nothing is recorded then.
    pub fn read_from<R: Read>(&mut self, src: &mut R) -> io::Result<usize> {
        let len = self.read_buf.len();
        self.read_buf.resize(len + READ_CHUNK, 0);
        let result = src.read(&mut self.read_buf[len..]);
        let n = *result.as_ref().unwrap_or(&0);
        self.read_buf.truncate(len + n);
        let n = result?;
        if n == 0 {
            self.receive_eof();
        } else if let Phase::Lingering { discarded, .. } = &mut self.phase {
            *discarded += n;
            self.read_buf.clear();
            if *discarded > LINGER_MAX_DISCARD {
                self.phase = Phase::Closed;
            }
        }
        Ok(n)
    }

    /// Appends received bytes (for callers that read elsewhere, and for tests). Ignored unless
    /// the connection is open.
    pub fn receive(&mut self, bytes: &[u8]) {
        if self.phase == Phase::Open {
            self.read_buf.extend_from_slice(bytes);
        }
    }

    /// Records the peer's end of stream.
    pub fn receive_eof(&mut self) {
        match self.phase {
            Phase::Open => {
                self.phase = Phase::PeerClosed;
                self.close_reason.get_or_insert(CloseReason::PeerClosed);
            }
            Phase::Lingering { .. } => self.phase = Phase::Closed,
            _ => {}
        }
    }

    /// Decodes every complete frame in the read buffer and answers it: REQUESTs through
    /// `router`, PING with PONG, errors as the protocol says (`proto-spec/PROTOCOL.md` §9).
    /// handling"). Returns the number of frames decoded.
    pub fn process(&mut self, now: Instant, router: &Router) -> usize {
        let mut frames = 0;
        while matches!(self.phase, Phase::Open | Phase::PeerClosed) {
            let frame = match self.decoder.decode(&mut self.read_buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(err) => {
                    frames += 1;
                    self.on_decode_error(err);
                    continue;
                }
            };
            frames += 1;
            match frame {
                Frame::Request(request) => self.on_request(request, now, router),
                Frame::Ping(id) => self.encoder.encode_simple(
                    &mut self.write_buf,
                    FrameKind::Pong,
                    id,
                    Code::OK,
                    "",
                ),
                Frame::Pong(_) => {}
                Frame::GoAway { .. } => self.stop_reading(CloseReason::PeerClosed),
                Frame::Error { code, message, .. } => {
                    self.stop_reading(CloseReason::PeerError(Status::new(code, message)));
                }
                Frame::Response(r) => {
                    self.send_error(r.request_id, Code::INVALID_ARGUMENT, "unexpected RESPONSE");
                    self.stop_reading(CloseReason::UnexpectedFrame(FrameKind::Response));
                }
            }
        }
        if self.phase == Phase::PeerClosed && !self.read_buf.is_empty() {
            log::debug!(
                "peer closed mid-frame, {} bytes discarded",
                self.read_buf.len()
            );
            self.read_buf = BytesMut::new();
        }
        frames
    }

    fn on_request(&mut self, request: Request, now: Instant, router: &Router) {
        let Request {
            request_id,
            service,
            method,
            deadline_ms,
            metadata,
            payload,
        } = request;
        self.last_request_id = request_id;
        let ctx = Context {
            request_id,
            received_at: now,
            deadline: (deadline_ms != 0)
                .then(|| now + Duration::from_millis(u64::from(deadline_ms))),
            metadata,
        };
        let start = self.write_buf.len();
        let mut outcome = Ok(());
        let encoded = self.encoder.encode_response_with(
            &mut self.write_buf,
            request_id,
            Code::OK,
            &Metadata::new(),
            |out| outcome = router.dispatch(&ctx, service, method, payload, out),
        );
        let status = match (outcome, encoded) {
            (Ok(()), Ok(())) => return,
            (Err(status), _) => status,
            (Ok(()), Err(err)) => {
                crate::proto::Status::resource_exhausted(format!("response not sent: {err}"))
            }
        };
        self.write_buf.truncate(start);
        self.encoder.encode_status(
            &mut self.write_buf,
            request_id,
            status.code,
            &status.message,
        );
    }

    fn on_decode_error(&mut self, err: DecodeError) {
        if !err.is_fatal() && err.frame_kind() == Some(FrameKind::Request) {
            log::debug!("request {}: {err}", err.request_id());
            self.encoder.encode_status(
                &mut self.write_buf,
                err.request_id(),
                err.status(),
                &err.to_string(),
            );
            return;
        }
        self.send_error(err.request_id(), err.status(), &err.to_string());
        self.stop_reading(CloseReason::Protocol(err));
    }

    fn send_error(&mut self, request_id: u64, code: Code, message: &str) {
        self.encoder.encode_simple(
            &mut self.write_buf,
            FrameKind::Error,
            request_id,
            code,
            message,
        );
    }

    fn stop_reading(&mut self, reason: CloseReason) {
        if matches!(self.phase, Phase::Open | Phase::PeerClosed) {
            self.phase = Phase::Closing;
            self.close_reason = Some(reason);
            self.read_buf = BytesMut::new();
        }
    }

    /// Queues a GOAWAY naming the last request id answered, and stops reading. Every request
    /// read so far has been answered, since handlers run inline in [`Connection::process`].
    pub fn go_away(&mut self, code: Code, message: &str) {
        if matches!(self.phase, Phase::Open | Phase::PeerClosed) {
            self.encoder.encode_simple(
                &mut self.write_buf,
                FrameKind::GoAway,
                self.last_request_id,
                code,
                message,
            );
            self.stop_reading(CloseReason::GoAway);
        }
    }

    /// Writes queued output to `dst` until it is all written or `dst` would block.
    ///
    /// # Errors
    /// Any error of `dst.write` but `WouldBlock` and `Interrupted`; a write of 0 bytes is
    /// `WriteZero`. The connection should then be closed.
    pub fn flush_to<W: Write>(&mut self, dst: &mut W) -> io::Result<()> {
        while !self.write_buf.is_empty() {
            match dst.write(&self.write_buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.write_buf.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.phase == Phase::PeerClosed {
            self.phase = Phase::Closed;
        }
        Ok(())
    }

    /// `true` when the caller should shut down the socket's write side now (everything queued
    /// after an ERROR or GOAWAY was written), then call [`Connection::write_closed`].
    pub fn wants_write_shutdown(&self) -> bool {
        self.phase == Phase::Closing && self.write_buf.is_empty()
    }

    /// Records that our write side was shut down at `now`; the connection lingers.
    pub fn write_closed(&mut self, now: Instant) {
        if self.phase == Phase::Closing {
            self.phase = Phase::Lingering {
                until: now + self.config.linger,
                discarded: 0,
            };
        }
    }

    /// When [`Connection::handle_timeout`] should next be called, if ever.
    pub fn timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Lingering { until, .. } => Some(until),
            _ => None,
        }
    }

    /// Advances timers: a lingering connection whose deadline passed is closed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Phase::Lingering { until, .. } = self.phase {
            if now >= until {
                self.phase = Phase::Closed;
            }
        }
    }

    /// Whether the caller should read from the socket.
    pub fn wants_read(&self) -> bool {
        matches!(self.phase, Phase::Open | Phase::Lingering { .. })
    }

    /// Whether output is queued.
    pub fn wants_write(&self) -> bool {
        !self.write_buf.is_empty()
    }

    /// Whether the connection is finished and its socket should be closed.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Why the connection stopped reading, once it has.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.close_reason.as_ref()
    }

    /// The id of the last REQUEST decoded (0 before any).
    pub fn last_request_id(&self) -> u64 {
        self.last_request_id
    }

    /// Bytes queued for the peer.
    pub fn queued_output(&self) -> usize {
        self.write_buf.len()
    }

    /// Bytes received and not yet decoded.
    pub fn buffered_input(&self) -> usize {
        self.read_buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Metadata, Request as RequestFrame};
    use crate::service::Method;
    use bytes::Bytes;

    const ECHO: Method<Bytes, Bytes> = Method::new(1, 1, "echo.Echo");

    fn router() -> Router {
        let mut r = Router::new();
        r.register(ECHO, |_, body: Bytes| Ok(body));
        r
    }

    fn encode(frame: &Frame) -> BytesMut {
        let mut b = BytesMut::new();
        Encoder::new(DEFAULT_MAX_BODY_LEN)
            .encode(frame, &mut b)
            .expect("encodes");
        b
    }

    fn request(id: u64, service: u16, body: &'static [u8]) -> Frame {
        Frame::Request(RequestFrame {
            request_id: id,
            service,
            method: 1,
            deadline_ms: 0,
            metadata: Metadata::new(),
            payload: Bytes::from_static(body),
        })
    }

    fn output(conn: &mut Connection) -> Vec<Frame> {
        let mut out = Vec::new();
        conn.flush_to(&mut out).expect("vec never fails");
        let mut buf = BytesMut::from(&out[..]);
        let mut dec = Decoder::new(DEFAULT_MAX_BODY_LEN);
        let mut frames = Vec::new();
        while let Some(f) = dec.decode(&mut buf).expect("server output decodes") {
            frames.push(f);
        }
        assert!(buf.is_empty());
        frames
    }

    #[test]
    fn pipelined_requests_in_one_read_are_answered_in_order() {
        let mut conn = Connection::new(ConnectionConfig::default());
        let mut input = encode(&request(1, 1, b"a"));
        input.extend_from_slice(&encode(&Frame::Ping(77)));
        input.extend_from_slice(&encode(&request(2, 9, b"b")));
        conn.read_from(&mut &input[..]).expect("reads");
        assert_eq!(conn.process(Instant::now(), &router()), 3);
        let frames = output(&mut conn);
        assert_eq!(frames.len(), 3);
        assert!(
            matches!(&frames[0], Frame::Response(r) if r.request_id == 1 && &r.payload[..] == b"a")
        );
        assert_eq!(frames[1], Frame::Pong(77));
        assert!(matches!(&frames[2], Frame::Response(r) if r.code == Code::UNIMPLEMENTED));
        assert!(conn.wants_read());
    }

    #[test]
    fn fatal_error_queues_error_then_lingers_then_closes() {
        let mut conn = Connection::new(ConnectionConfig::default());
        conn.receive(b"GET / HTTP/1.1\r\n\r\n");
        conn.process(Instant::now(), &router());
        assert!(!conn.wants_read());
        let frames = output(&mut conn);
        assert!(matches!(
            &frames[..],
            [Frame::Error {
                code: Code::INVALID_ARGUMENT,
                ..
            }]
        ));
        assert!(conn.wants_write_shutdown());
        let t0 = Instant::now();
        conn.write_closed(t0);
        assert!(conn.wants_read() && !conn.is_closed());
        conn.handle_timeout(t0 + DEFAULT_LINGER);
        assert!(conn.is_closed());
        assert!(matches!(
            conn.close_reason(),
            Some(CloseReason::Protocol(_))
        ));
    }

    #[test]
    fn eof_after_requests_answers_them_then_closes() {
        let mut conn = Connection::new(ConnectionConfig::default());
        let input = encode(&request(5, 1, b"last words"));
        conn.read_from(&mut &input[..]).expect("reads");
        assert_eq!(conn.read_from(&mut &b""[..]).expect("eof"), 0);
        conn.process(Instant::now(), &router());
        assert!(!conn.is_closed());
        assert_eq!(output(&mut conn).len(), 1);
        assert!(conn.is_closed());
    }
}
