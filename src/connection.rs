//! A server connection's protocol state, sans-IO: bytes in, requests dispatched, bytes out.
//!
//! [`Connection`] owns the read buffer, the decoder and the output buffer of one client. It
//! never touches a socket or the clock: the event loop hands it something to read from
//! ([`Connection::read_from`], [`Connection::read_with`]), something to write to ([`Connection::flush_to`]) and the
//! current [`Instant`]. That is what makes it testable byte by byte and fuzzable.
//!
//! # Lifecycle
//!
//! ```text
//!            peer EOF                 output flushed
//!   Open ─────────────────▶ PeerClosed ─────────────────▶ Closed
//!     │                                                    ▲
//!     │ drain (GOAWAY OK queued), client GOAWAY or ERROR,  │
//!     │ connection error, frame timeout, flood             │
//!     ▼                                                    │
//!   Finishing (nothing more read; every request decoded    │
//!   │ before is still answered: blocking calls, responses  │
//!   │ held for a commit)                                   │
//!   │ all answered: the ERROR, if any, is queued last      │
//!   ▼                          output flushed,             │ peer EOF or
//!   Closing ─────────────────▶ Lingering ──────────────────┘ linger deadline
//!   (nothing more read)        (our write side shut; input is
//!     ▲                         read and discarded)
//!     │ idle timeout (GOAWAY UNAVAILABLE), shutdown (GOAWAY UNAVAILABLE;
//!     │ what is still running is not answered)
//!   Open, PeerClosed or Finishing
//!
//!   any phase ── write timeout, output over the hard cap ──▶ Closed (at once)
//! ```
//!
//! Every request decoded before the frame that ends a connection is answered before the
//! close (`proto-spec/PROTOCOL.md` Section 9.4): a SET whose answer waits for the log's
//! commit is answered after that commit even when the same read carried the client's GOAWAY,
//! and a connection error's ERROR frame comes after those answers, as the last frame.
//!
//! Lingering exists so that the ERROR frame reaches the peer: closing a socket that still has
//! unread input makes the kernel send a reset, which can destroy the frame before the peer
//! reads it (the "lingering close" of HTTP servers).
//!
//! # Limits
//!
//! Each connection bounds the four things a hostile peer could otherwise grow without end
//! (see [`ConnectionConfig`] for the values):
//!
//! - **input**: at most one frame (`max_body_len` plus the 36-byte header) plus one
//!   [`READ_CHUNK`] is buffered ([`ConnectionConfig::max_buffered_input`]): the socket is read
//!   only while no complete frame waits in the buffer, and each read takes at most what the
//!   frame at the front still lacks plus [`READ_CHUNK`]; a frame must be complete within
//!   `frame_timeout` of its first byte, and a connection with nothing to do is closed after
//!   `idle_timeout`;
//! - **output**: above `output_high_water` queued bytes the connection is not read until the
//!   peer drains it; above `output_hard_cap` it is closed; output that makes no progress for
//!   `write_timeout` closes it too;
//! - **work per turn**: [`Connection::begin_turn`] grants `max_frames_per_turn` frames and
//!   [`MAX_READS_PER_TURN`] reads; a connection that uses them up yields to the others
//!   ([`Connection::budget_spent`]);
//! - **work in flight**: at most `max_in_flight` blocking requests run at once; the
//!   connection is not read while that many are out. More than `max_empty_frames` frames in a
//!   row that ask for nothing (PONG) are a flood and close the connection.
//!
//! # Deadlines
//!
//! A request's deadline counts from when it was received: the `now` of the first
//! [`Connection::process`] after the read that brought its last byte (`proto-spec/PROTOCOL.md`
//! Section 12). A request held back by a limit above waits in the read buffer; when it is
//! dispatched after its deadline, it is answered DEADLINE_EXCEEDED without running (counted in
//! `deadline_expired`), inline handlers included, as gRPC servers do not start work whose
//! deadline has passed.
//!
//! Every limit that trips is counted in the shared [`Stats`].

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use crate::proto::{
    Code, DecodeError, Decoder, Encoder, Frame, FrameKind, Metadata, Request, Status,
    DEFAULT_MAX_BODY_LEN, HEADER_LEN,
};
use crate::service::{BlockingCall, Context, Failure, Outcome, Router};
use crate::stats::{self, CloseCause, Stats};

/// Bytes read from the socket per `read` call: 16 KiB (Redis reads 16 KiB per call too,
/// `PROTO_IOBUF_LEN`).
pub const READ_CHUNK: usize = 16 * 1024;

/// Reads granted to one connection per loop turn: 16, that is at most 256 KiB.
pub const MAX_READS_PER_TURN: u32 = 16;

/// Longest timeout honoured: 100 years. Longer ones (`Duration::MAX` for "never") are
/// clamped to it, so that no deadline overflows an `Instant`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Default time a connection lingers after sending ERROR or GOAWAY: 2 seconds.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(2);

/// Most input discarded while lingering before the connection is closed anyway: 16 MiB.
pub const LINGER_MAX_DISCARD: usize = 16 * 1024 * 1024;

/// Default time from a frame's first byte to its last: 30 s. A peer that trickles a frame
/// (slowloris) is sent ERROR DEADLINE_EXCEEDED and closed.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// Default time a connection may sit with no frame arriving and nothing in progress: 300 s
/// (the keep-alive interval Redis recommends, `tcp-keepalive 300`). It is then sent GOAWAY
/// and closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Default time queued output may make no progress (the peer does not read): 30 s.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Default output high-water mark: 1 MiB queued stops reading the connection.
pub const DEFAULT_OUTPUT_HIGH_WATER: usize = 1024 * 1024;

/// Default output hard cap: 32 MiB queued closes the connection (the hard limit Redis sets
/// for its pub/sub clients, `client-output-buffer-limit pubsub 32mb`).
pub const DEFAULT_OUTPUT_HARD_CAP: usize = 32 * 1024 * 1024;

/// Default most blocking requests in flight per connection: 100 (the least
/// `SETTINGS_MAX_CONCURRENT_STREAMS` HTTP/2 recommends, RFC 9113 §6.5.2).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 100;

/// Default frames handled per connection per loop turn: 64.
pub const DEFAULT_MAX_FRAMES_PER_TURN: u32 = 64;

/// Default most frames in a row that ask for nothing (PONG) before the connection is closed
/// as a flood: 100.
pub const DEFAULT_MAX_EMPTY_FRAMES: u32 = 100;

/// Settings of one connection; the server builder fills them in. Every field has a
/// `DEFAULT_*` constant in this module.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionConfig {
    /// Largest body accepted and sent, in bytes; default [`DEFAULT_MAX_BODY_LEN`] (4 MiB).
    pub max_body_len: u32,
    /// How long to linger after ERROR or GOAWAY; default [`DEFAULT_LINGER`] (2 s).
    pub linger: Duration,
    /// Time from a frame's first byte to its last; default [`DEFAULT_FRAME_TIMEOUT`] (30 s).
    pub frame_timeout: Duration,
    /// Time with no frame and nothing in progress; default [`DEFAULT_IDLE_TIMEOUT`] (300 s).
    pub idle_timeout: Duration,
    /// Time queued output may make no progress; default [`DEFAULT_WRITE_TIMEOUT`] (30 s).
    pub write_timeout: Duration,
    /// Queued output above which the connection is not read, in bytes; default
    /// [`DEFAULT_OUTPUT_HIGH_WATER`] (1 MiB).
    pub output_high_water: usize,
    /// Queued output above which the connection is closed, in bytes; default
    /// [`DEFAULT_OUTPUT_HARD_CAP`] (32 MiB).
    pub output_hard_cap: usize,
    /// Most blocking requests in flight; default [`DEFAULT_MAX_IN_FLIGHT`] (100).
    pub max_in_flight: usize,
    /// Frames handled per loop turn; default [`DEFAULT_MAX_FRAMES_PER_TURN`] (64).
    pub max_frames_per_turn: u32,
    /// Frames in a row that ask for nothing before closing; default
    /// [`DEFAULT_MAX_EMPTY_FRAMES`] (100).
    pub max_empty_frames: u32,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            max_body_len: DEFAULT_MAX_BODY_LEN,
            linger: DEFAULT_LINGER,
            frame_timeout: DEFAULT_FRAME_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            output_high_water: DEFAULT_OUTPUT_HIGH_WATER,
            output_hard_cap: DEFAULT_OUTPUT_HARD_CAP,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_frames_per_turn: DEFAULT_MAX_FRAMES_PER_TURN,
            max_empty_frames: DEFAULT_MAX_EMPTY_FRAMES,
        }
    }
}

impl ConnectionConfig {
    /// Most bytes the read buffer holds: one whole frame (the 36-byte header and
    /// `max_body_len`) plus one [`READ_CHUNK`]. The connection keeps this bound: it reads only
    /// while no complete frame waits, and at most what the incomplete one lacks plus
    /// [`READ_CHUNK`] per read. The `input_peak` counter shows the most any connection held.
    pub fn max_buffered_input(&self) -> usize {
        HEADER_LEN + self.max_body_len as usize + READ_CHUNK
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    PeerClosed,
    /// The connection is ending (a drain's GOAWAY was queued, the client sent GOAWAY or
    /// ERROR, or a connection error or limit ended it): nothing more is read, but the
    /// requests decoded before are still answered; then the ERROR that ends it, if any
    /// (kept in [`Held::last`] meanwhile), and Closing.
    Finishing,
    Closing,
    Lingering {
        until: Instant,
        discarded: usize,
    },
    Closed,
}

/// Why a connection stopped reading requests. Where an ERROR frame is named, it goes out
/// after the answers to every request received before (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed its write side (or sent GOAWAY).
    PeerClosed,
    /// The peer's bytes broke the protocol; an ERROR frame is sent.
    Protocol(DecodeError),
    /// The peer sent a frame a server never receives (RESPONSE); an ERROR frame is sent.
    UnexpectedFrame(FrameKind),
    /// The peer sent an ERROR frame with this status.
    PeerError(Status),
    /// The server is shutting down or draining; a GOAWAY was queued.
    GoAway,
    /// A frame was not complete within the frame timeout; ERROR DEADLINE_EXCEEDED is sent.
    FrameTimeout,
    /// Nothing happened within the idle timeout; GOAWAY was queued.
    IdleTimeout,
    /// Queued output made no progress within the write timeout; closed at once.
    WriteTimeout,
    /// Queued output passed the hard cap; closed at once.
    OutputCap,
    /// Too many frames in a row asked for nothing; ERROR RESOURCE_EXHAUSTED is sent, naming
    /// the PONG that passed the limit.
    Flood,
}

impl CloseReason {
    /// The counter this reason is counted under.
    pub fn cause(&self) -> CloseCause {
        match self {
            CloseReason::PeerClosed => CloseCause::Peer,
            CloseReason::Protocol(_) | CloseReason::UnexpectedFrame(_) => CloseCause::Protocol,
            CloseReason::PeerError(_) => CloseCause::PeerError,
            CloseReason::GoAway => CloseCause::Shutdown,
            CloseReason::FrameTimeout => CloseCause::FrameTimeout,
            CloseReason::IdleTimeout => CloseCause::IdleTimeout,
            CloseReason::WriteTimeout => CloseCause::WriteTimeout,
            CloseReason::OutputCap => CloseCause::OutputCap,
            CloseReason::Flood => CloseCause::Flood,
        }
    }
}

/// A free list of empty buffers that an event loop shares among its connections, so that an
/// idle connection holds no buffer and a busy one allocates none in steady state.
///
/// Holds at most [`BufferPool::MAX_BUFFERS`] buffers of at most [`BufferPool::MAX_CAPACITY`]
/// bytes each; larger ones are freed instead.
#[derive(Debug, Default)]
pub struct BufferPool {
    free: Vec<BytesMut>,
}

impl BufferPool {
    /// Most buffers kept: 64.
    pub const MAX_BUFFERS: usize = 64;
    /// Largest buffer kept, in bytes: 64 KiB.
    pub const MAX_CAPACITY: usize = 64 * 1024;

    /// An empty pool.
    pub fn new() -> Self {
        BufferPool::default()
    }

    /// An empty buffer: a kept one, or a new one that has allocated nothing yet.
    pub fn take(&mut self) -> BytesMut {
        self.free.pop().unwrap_or_default()
    }

    /// Gives back an empty buffer.
    pub fn give(&mut self, mut buf: BytesMut) {
        if buf.capacity() > 0
            && buf.capacity() <= Self::MAX_CAPACITY
            && self.free.len() < Self::MAX_BUFFERS
        {
            buf.clear();
            self.free.push(buf);
        }
    }

    /// Buffers kept.
    pub fn len(&self) -> usize {
        self.free.len()
    }

    /// Whether no buffer is kept.
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }
}

/// One server connection's protocol state. See the [module docs](self).
#[derive(Debug)]
pub struct Connection {
    config: ConnectionConfig,
    stats: Arc<Stats>,
    decoder: Decoder,
    encoder: Encoder,
    read_buf: BytesMut,
    write_buf: BytesMut,
    phase: Phase,
    close_reason: Option<CloseReason>,
    last_request_id: u64,
    /// Blocking requests handed out and not yet completed.
    in_flight: usize,
    /// Blocking calls decoded and not yet taken by the loop.
    blocking: Vec<BlockingCall>,
    /// Frames and reads left this turn.
    frame_budget: u32,
    read_budget: u32,
    /// Frames in a row that asked for nothing.
    empty_frames: u32,
    /// When the first byte of the frame being received arrived, while one is incomplete.
    frame_started: Option<Instant>,
    /// When the last frame arrived or blocking call finished (or the connection opened).
    last_active: Instant,
    /// When the input now in the read buffer was received: the `now` of the first
    /// [`Connection::process`] after the read that brought it. Every complete frame in the
    /// buffer came with that read, since the socket is read only while none waits there.
    input_at: Instant,
    /// Whether bytes arrived since the last [`Connection::process`], which then stamps them.
    fresh_input: bool,
    /// Whether the decoder needs more bytes than the read buffer holds.
    awaiting_bytes: bool,
    /// When queued output last made progress (or became non-empty).
    write_progress_at: Instant,
    /// Whether the write timer runs (output queued since it was last empty).
    write_timer_armed: bool,
    /// Whether reading is paused for output above the high-water mark, or for in-flight work.
    output_paused: bool,
    in_flight_paused: bool,
    /// Responses waiting for a commit ([`Context::hold_until_committed`]); allocated at the
    /// first, kept for the connection's life.
    held: Option<Box<Held>>,
}

/// Encoded responses that wait for a commit, and what to answer instead if it fails; and the
/// ERROR frame that ends a connection once everything before it is answered.
#[derive(Debug, Default)]
struct Held {
    /// The response frames, in the order they were encoded.
    frames: BytesMut,
    /// The request id of each frame in `frames`, and the status it answers with.
    request_ids: Vec<(u64, Code)>,
    /// The largest ticket they wait for.
    ticket: u64,
    /// While [`Phase::Finishing`]: the ERROR frame to send after the last answer.
    last: BytesMut,
}

/// Held responses above this many bytes give their buffer back once sent: 64 KiB.
const HELD_KEEP_CAPACITY: usize = 64 * 1024;

impl Connection {
    /// A new, open connection at `now`, counting into `stats`. Allocates no buffer until it
    /// has something to read or write.
    pub fn new(mut config: ConnectionConfig, stats: Arc<Stats>, now: Instant) -> Self {
        // "Never" is spelled as a very long time; clamp it so that no deadline overflows.
        for timeout in [
            &mut config.linger,
            &mut config.frame_timeout,
            &mut config.idle_timeout,
            &mut config.write_timeout,
        ] {
            *timeout = (*timeout).min(MAX_TIMEOUT);
        }
        Connection {
            config,
            stats,
            decoder: Decoder::new(config.max_body_len),
            encoder: Encoder::new(config.max_body_len),
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
            phase: Phase::Open,
            close_reason: None,
            last_request_id: 0,
            in_flight: 0,
            blocking: Vec::new(),
            frame_budget: config.max_frames_per_turn,
            read_budget: MAX_READS_PER_TURN,
            empty_frames: 0,
            frame_started: None,
            last_active: now,
            input_at: now,
            fresh_input: false,
            awaiting_bytes: false,
            write_progress_at: now,
            write_timer_armed: false,
            output_paused: false,
            in_flight_paused: false,
            held: None,
        }
    }

    /// Grants this loop turn's budget: `max_frames_per_turn` frames and
    /// [`MAX_READS_PER_TURN`] reads. Call once per turn before serving the connection.
    pub fn begin_turn(&mut self) {
        self.frame_budget = self.config.max_frames_per_turn.max(1);
        self.read_budget = MAX_READS_PER_TURN;
    }

    /// Lends the connection empty buffers from `pool` if it holds none. Optional: without it
    /// the connection allocates its own.
    pub fn lend_buffers(&mut self, pool: &mut BufferPool) {
        if self.read_buf.capacity() == 0 && self.wants_read() {
            self.read_buf = pool.take();
        }
        if self.write_buf.capacity() == 0 {
            self.write_buf = pool.take();
        }
    }

    /// Gives the connection's empty buffers back to `pool`, so that an idle connection holds
    /// none.
    pub fn return_buffers(&mut self, pool: &mut BufferPool) {
        for buf in [&mut self.read_buf, &mut self.write_buf] {
            if buf.is_empty() {
                // A buffer whose bytes were all written or split off reports only the room
                // after them; take the whole allocation back (unless a split-off frame still
                // holds part of it), so that the pool keeps it instead of dropping it. When
                // that fails the room left is still worth keeping, so the result is not needed.
                let _ = buf.try_reclaim(1);
                if buf.capacity() > 0 {
                    pool.give(std::mem::take(buf));
                }
            }
        }
    }

    /// Reads once from `src` (at most [`READ_CHUNK`] bytes) into the read buffer; while
    /// lingering, reads and discards. `Ok(0)` is the peer's end of stream and is recorded.
    /// Call [`Connection::process`] after each successful read, and read only while
    /// [`Connection::wants_read`]. This zero-fills the [`READ_CHUNK`] it reads into first
    /// (safe `Read` gives no other way); an event loop with the socket's descriptor uses
    /// [`Connection::read_with`] to read into the buffer's spare capacity instead.
    ///
    /// # Errors
    /// Whatever `src.read` returns, including `WouldBlock`; nothing is recorded then.
    pub fn read_from<R: Read>(&mut self, src: &mut R) -> io::Result<usize> {
        self.read_with(|buf, limit| {
            let len = buf.len();
            buf.resize(len + READ_CHUNK.min(limit), 0);
            let result = src.read(&mut buf[len..]);
            let n = *result.as_ref().unwrap_or(&0);
            buf.truncate(len + n);
            result
        })
    }

    /// Reads once through `read`, which is given the buffer and a limit and must append at
    /// most `limit` bytes to it (the buffer has at least `min(limit, READ_CHUNK)` bytes of
    /// spare capacity reserved) and return their number; while lingering, they are then
    /// discarded. The limit is what the frame at the front of the buffer still lacks plus
    /// [`READ_CHUNK`], so the buffer never holds more than
    /// [`ConnectionConfig::max_buffered_input`]. The bytes appended are what counts, whatever
    /// `read` returns. `Ok(0)` is the peer's end of stream and is recorded. Call
    /// [`Connection::process`] after each successful read, and read only while
    /// [`Connection::wants_read`].
    ///
    /// # Errors
    /// Whatever `read` returns, including `WouldBlock`; nothing is recorded then (bytes it
    /// appended before failing are kept).
    pub fn read_with<F>(&mut self, read: F) -> io::Result<usize>
    where
        F: FnOnce(&mut BytesMut, usize) -> io::Result<usize>,
    {
        self.read_budget = self.read_budget.saturating_sub(1);
        let limit = READ_CHUNK.saturating_add(self.decoder.bytes_missing(self.read_buf.len()));
        self.read_buf.reserve(READ_CHUNK);
        let len = self.read_buf.len();
        let result = read(&mut self.read_buf, limit);
        let n = self.read_buf.len().saturating_sub(len);
        if n > 0 {
            stats::add(&self.stats.bytes_in, n as u64);
            self.stats.input_buffered(self.read_buf.len());
            self.awaiting_bytes = false;
            self.fresh_input = true;
        }
        result?;
        self.awaiting_bytes = false;
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
        if self.phase == Phase::Open && !bytes.is_empty() {
            stats::add(&self.stats.bytes_in, bytes.len() as u64);
            self.read_buf.extend_from_slice(bytes);
            self.stats.input_buffered(self.read_buf.len());
            self.awaiting_bytes = false;
            self.fresh_input = true;
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

    /// Whether decoding may go on now: open, budget left, output under the high-water mark,
    /// and fewer than `max_in_flight` blocking requests out. Counts the pauses it starts.
    fn may_decode(&mut self) -> bool {
        if !matches!(self.phase, Phase::Open | Phase::PeerClosed) || self.frame_budget == 0 {
            return false;
        }
        let over = self.write_buf.len() > self.config.output_high_water;
        if over && !self.output_paused {
            stats::inc(&self.stats.output_paused);
        }
        self.output_paused = over;
        let full = self.in_flight >= self.config.max_in_flight;
        if full && !self.in_flight_paused {
            stats::inc(&self.stats.in_flight_paused);
        }
        self.in_flight_paused = full;
        !over && !full
    }

    /// Decodes the complete frames in the read buffer, as far as this turn's budget and the
    /// limits allow, and answers them: inline REQUESTs through `router`, PING with PONG,
    /// errors as `proto-spec/PROTOCOL.md` §9 says. Blocking REQUESTs are queued for
    /// [`Connection::take_blocking`]. Returns the number of frames decoded.
    pub fn process(&mut self, now: Instant, router: &Router) -> usize {
        if self.fresh_input {
            self.fresh_input = false;
            self.input_at = now;
        }
        let mut frames = 0;
        while !self.awaiting_bytes && self.may_decode() {
            let decoded = self.decoder.decode(&mut self.read_buf);
            if matches!(decoded, Ok(None)) {
                self.awaiting_bytes = true;
                break;
            }
            frames += 1;
            self.frame_budget -= 1;
            self.frame_started = None;
            self.last_active = now;
            stats::inc(&self.stats.frames_in);
            match decoded {
                Ok(Some(frame)) => self.on_frame(frame, now, router),
                Ok(None) => {}
                Err(err) => self.on_decode_error(err, now),
            }
        }
        // Counted once per turn: in the call that spent the last of the budget.
        if frames > 0
            && self.frame_budget == 0
            && !self.read_buf.is_empty()
            && self.phase == Phase::Open
        {
            stats::inc(&self.stats.turn_yields);
        }
        // The frame clock runs from the first byte of an incomplete frame; a pause for a limit
        // neither starts nor stops it.
        let waiting_for_bytes = self.awaiting_bytes && !self.read_buf.is_empty();
        if waiting_for_bytes {
            self.frame_started.get_or_insert(now);
        } else if self.read_buf.is_empty() {
            self.frame_started = None;
        }
        if self.phase == Phase::PeerClosed && waiting_for_bytes {
            log::debug!(
                "peer closed mid-frame, {} bytes discarded",
                self.read_buf.len()
            );
            self.read_buf = BytesMut::new();
        }
        self.check_output(now);
        frames
    }

    fn on_frame(&mut self, frame: Frame, now: Instant, router: &Router) {
        if !matches!(frame, Frame::Pong(_)) {
            self.empty_frames = 0;
        }
        match frame {
            Frame::Request(request) => self.on_request(request, now, router),
            Frame::Ping(id) => self.queue_simple(FrameKind::Pong, id, Code::OK, ""),
            Frame::Pong(id) => {
                self.empty_frames += 1;
                if self.empty_frames > self.config.max_empty_frames {
                    let message = format!(
                        "more than {} frames in a row asked for nothing",
                        self.config.max_empty_frames
                    );
                    // The PONG's header was valid, so the ERROR carries its id (Section 4.6).
                    let error = (id, Code::RESOURCE_EXHAUSTED, message.as_str());
                    self.end(CloseReason::Flood, Some(error), now);
                }
            }
            // Section 9.4: stop reading, answer what was received before, then close.
            Frame::GoAway { .. } => self.end(CloseReason::PeerClosed, None, now),
            Frame::Error { code, message, .. } => {
                let reason = CloseReason::PeerError(Status::new(code, message));
                self.end(reason, None, now);
            }
            Frame::Response(r) => {
                let error = (r.request_id, Code::INVALID_ARGUMENT, "unexpected RESPONSE");
                let reason = CloseReason::UnexpectedFrame(FrameKind::Response);
                self.end(reason, Some(error), now);
            }
        }
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
        if request_id == 0 {
            // Section 11: id 0 is reserved, so that a GOAWAY naming 0 means "none processed".
            let status = Status::invalid_argument(
                "request id 0 is reserved (PROTOCOL.md Section 11): not processed",
            );
            self.answer_failure(0, &Failure::status(status));
            return;
        }
        self.last_request_id = request_id;
        let received_at = self.input_at;
        let deadline =
            (deadline_ms != 0).then(|| received_at + Duration::from_millis(u64::from(deadline_ms)));
        if deadline.is_some_and(|deadline| deadline <= now) {
            stats::inc(&self.stats.deadline_expired);
            let status = Status::deadline_exceeded(format!(
                "deadline of {deadline_ms} ms passed before the request was dispatched; not \
                 processed"
            ));
            self.answer_failure(request_id, &Failure::status(status));
            return;
        }
        let ctx = Context::new(request_id, received_at, deadline, metadata);
        let start = self.write_buf.len();
        let mut outcome = None;
        let encoded = self.encoder.encode_response_with(
            &mut self.write_buf,
            request_id,
            Code::OK,
            &Metadata::new(),
            |out| outcome = Some(router.route(ctx, service, method, payload, out)),
        );
        let failure = match (outcome, encoded) {
            (Some(Outcome::Ready(Ok(()))), Ok(())) => {
                self.stats.request(Code::OK);
                stats::inc(&self.stats.frames_out);
                return;
            }
            (Some(Outcome::Held(ticket, Ok(()))), Ok(())) => {
                let held = self.held.get_or_insert_with(Box::default);
                held.frames.extend_from_slice(&self.write_buf[start..]);
                held.request_ids.push((request_id, Code::OK));
                held.ticket = held.ticket.max(ticket);
                self.write_buf.truncate(start);
                return;
            }
            (Some(Outcome::Held(ticket, Err(failure))), _) => {
                // An error that shows state (NOT_FOUND after a DELETE) waits like an answer.
                self.write_buf.truncate(start);
                if failure.panicked {
                    stats::inc(&self.stats.handler_panics);
                }
                let held = self.held.get_or_insert_with(Box::default);
                self.encoder.encode_status(
                    &mut held.frames,
                    request_id,
                    failure.status.code,
                    &failure.status.message,
                );
                held.request_ids.push((request_id, failure.status.code));
                held.ticket = held.ticket.max(ticket);
                return;
            }
            (Some(Outcome::Blocking(call)), _) => {
                self.write_buf.truncate(start);
                self.in_flight += 1;
                self.blocking.push(call);
                return;
            }
            (Some(Outcome::Ready(Err(failure))), _) => failure,
            (Some(Outcome::Ready(Ok(())) | Outcome::Held(_, Ok(()))), Err(err))
            | (None, Err(err)) => Failure::status(Status::resource_exhausted(format!(
                "response not sent: {err}"
            ))),
            (None, Ok(())) => Failure::status(Status::internal("handler not called")),
        };
        self.write_buf.truncate(start);
        self.answer_failure(request_id, &failure);
    }

    fn answer_failure(&mut self, request_id: u64, failure: &Failure) {
        if failure.panicked {
            stats::inc(&self.stats.handler_panics);
        }
        self.stats.request(failure.status.code);
        stats::inc(&self.stats.frames_out);
        self.encoder.encode_status(
            &mut self.write_buf,
            request_id,
            failure.status.code,
            &failure.status.message,
        );
    }

    /// Moves the blocking calls decoded so far into `calls`, for the worker pool. Each must
    /// later be finished with [`Connection::complete`] (also when the pool refuses it).
    pub fn take_blocking(&mut self, calls: &mut Vec<BlockingCall>) {
        calls.append(&mut self.blocking);
    }

    /// Blocking requests handed out and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Answers a blocking request with its response message (`Ok`) or a status; called when
    /// the worker pool returns it. Ignored, but for the in-flight count, once the connection
    /// has stopped answering (after a shutdown's GOAWAY of [`Connection::go_away`], or once
    /// its ERROR went out); a connection that is finishing (draining, or ended by the client's
    /// GOAWAY or ERROR or by a connection error) still answers.
    pub fn complete(&mut self, request_id: u64, result: Result<BytesMut, Status>, now: Instant) {
        self.complete_call(request_id, result.map_err(Failure::status), now);
    }

    pub(crate) fn complete_call(
        &mut self,
        request_id: u64,
        result: Result<BytesMut, Failure>,
        now: Instant,
    ) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.last_active = now;
        if !self.answering() {
            return;
        }
        let failure = match result {
            Ok(message) => {
                let start = self.write_buf.len();
                let encoded = self.encoder.encode_response_with(
                    &mut self.write_buf,
                    request_id,
                    Code::OK,
                    &Metadata::new(),
                    |out| out.extend_from_slice(&message),
                );
                match encoded {
                    Ok(()) => {
                        self.stats.request(Code::OK);
                        stats::inc(&self.stats.frames_out);
                        self.check_finished();
                        self.check_output(now);
                        return;
                    }
                    Err(err) => {
                        self.write_buf.truncate(start);
                        Failure::status(Status::resource_exhausted(format!(
                            "response not sent: {err}"
                        )))
                    }
                }
            }
            Err(failure) => failure,
        };
        self.answer_failure(request_id, &failure);
        self.check_finished();
        self.check_output(now);
    }

    /// The largest commit ticket a held response waits for, if any response is held
    /// ([`Context::hold_until_committed`]). The caller runs the commit, then calls
    /// [`Connection::committed`].
    pub fn held_ticket(&self) -> Option<u64> {
        self.held
            .as_ref()
            .filter(|held| !held.request_ids.is_empty())
            .map(|held| held.ticket)
    }

    /// Releases the held responses after their commit: queued as encoded on `Ok`, each
    /// replaced by a RESPONSE carrying the status on `Err` (so no write whose commit failed is
    /// acknowledged). The caller must have committed at least [`Connection::held_ticket`].
    pub fn committed(&mut self, result: Result<(), &Status>, now: Instant) {
        let answering = self.answering();
        let Some(held) = self.held.as_mut() else {
            return;
        };
        if held.request_ids.is_empty() {
            return;
        }
        match result {
            Ok(()) if answering => {
                self.write_buf.extend_from_slice(&held.frames);
                for &(_, code) in &held.request_ids {
                    self.stats.request(code);
                    stats::inc(&self.stats.frames_out);
                }
            }
            Err(status) if answering => {
                for &(request_id, _) in &held.request_ids {
                    self.stats.request(status.code);
                    stats::inc(&self.stats.frames_out);
                    self.encoder.encode_status(
                        &mut self.write_buf,
                        request_id,
                        status.code,
                        &status.message,
                    );
                }
            }
            _ => {}
        }
        held.request_ids.clear();
        held.ticket = 0;
        if held.frames.capacity() > HELD_KEEP_CAPACITY {
            held.frames = BytesMut::new();
        } else {
            held.frames.clear();
        }
        self.last_active = now;
        self.check_finished();
        self.check_output(now);
    }

    /// Whether requests decoded so far are still answered: open, half-closed or finishing
    /// (not after a shutdown's GOAWAY, nor once the ERROR went out).
    fn answering(&self) -> bool {
        matches!(
            self.phase,
            Phase::Open | Phase::PeerClosed | Phase::Finishing
        )
    }

    /// A finishing connection with nothing left to answer queues its last frame, if any, and
    /// starts closing.
    fn check_finished(&mut self) {
        if self.phase == Phase::Finishing && self.nothing_pending() {
            self.queue_last();
            self.phase = Phase::Closing;
        }
    }

    /// Moves the ERROR kept for the end of a finishing connection to the output.
    fn queue_last(&mut self) {
        if let Some(held) = self.held.as_mut() {
            if !held.last.is_empty() {
                self.write_buf.extend_from_slice(&held.last);
                held.last = BytesMut::new();
            }
        }
    }

    /// No request is running, waiting for a worker or holding its response for a commit.
    fn nothing_pending(&self) -> bool {
        self.in_flight == 0 && self.blocking.is_empty() && self.held_ticket().is_none()
    }

    /// Starts the write timer when output appears, and closes a connection over the hard cap.
    fn check_output(&mut self, now: Instant) {
        let queued = self.write_buf.len();
        if queued == 0 {
            return;
        }
        self.stats.output_queued(queued);
        if queued > self.config.output_hard_cap && self.phase != Phase::Closed {
            log::debug!("{queued} bytes of output queued, over the hard cap");
            self.close_now(CloseReason::OutputCap);
        }
        if !self.write_timer_armed && !self.write_buf.is_empty() {
            // Output that appeared since the buffer was last empty: its timer starts now.
            self.write_timer_armed = true;
            self.write_progress_at = now;
        }
    }

    /// Closes at once, dropping all buffered bytes: nothing more can be sent.
    fn close_now(&mut self, reason: CloseReason) {
        // A half-closed peer that stops reading is closed for that, not for its end of stream;
        // a protocol error stays the reason even if its ERROR frame could not be delivered.
        if matches!(self.close_reason, None | Some(CloseReason::PeerClosed)) {
            self.close_reason = Some(reason);
        }
        self.phase = Phase::Closed;
        self.read_buf = BytesMut::new();
        self.write_buf = BytesMut::new();
    }

    fn on_decode_error(&mut self, err: DecodeError, now: Instant) {
        self.stats.decode_error(&err);
        if !err.is_fatal() && err.frame_kind() == Some(FrameKind::Request) {
            log::debug!("request {}: {err}", err.request_id());
            let failure = Failure::status(Status::new(err.status(), err.to_string()));
            self.answer_failure(err.request_id(), &failure);
            return;
        }
        let message = err.to_string();
        let error = (err.request_id(), err.status(), message.as_str());
        self.end(CloseReason::Protocol(err), Some(error), now);
    }

    fn queue_simple(&mut self, kind: FrameKind, request_id: u64, code: Code, message: &str) {
        stats::inc(&self.stats.frames_out);
        self.encoder
            .encode_simple(&mut self.write_buf, kind, request_id, code, message);
    }

    /// Ends an open or half-closed connection for `reason`: nothing more is read (input not
    /// yet decoded is dropped), every request decoded before is still answered, and then
    /// `error` (request id, status, message), if given, goes out as the last frame before the
    /// close (`proto-spec/PROTOCOL.md` Sections 9.1 and 9.4).
    fn end(&mut self, reason: CloseReason, error: Option<(u64, Code, &str)>, now: Instant) {
        if !matches!(self.phase, Phase::Open | Phase::PeerClosed) {
            return;
        }
        self.close_reason = Some(reason);
        self.read_buf = BytesMut::new();
        self.frame_started = None;
        if self.nothing_pending() {
            if let Some((request_id, code, message)) = error {
                self.queue_simple(FrameKind::Error, request_id, code, message);
            }
            self.phase = Phase::Closing;
        } else {
            if let Some((request_id, code, message)) = error {
                stats::inc(&self.stats.frames_out);
                let held = self.held.get_or_insert_with(Box::default);
                self.encoder.encode_simple(
                    &mut held.last,
                    FrameKind::Error,
                    request_id,
                    code,
                    message,
                );
            }
            self.phase = Phase::Finishing;
        }
        self.check_output(now);
    }

    /// Stops reading an open or half-closed connection for `reason` and starts closing at
    /// once, without waiting for anything still pending.
    fn stop_reading(&mut self, reason: CloseReason) {
        if matches!(self.phase, Phase::Open | Phase::PeerClosed) {
            self.phase = Phase::Closing;
            self.close_reason = Some(reason);
            self.read_buf = BytesMut::new();
            self.frame_started = None;
        }
    }

    /// Queues a GOAWAY naming the last request id decoded, and stops reading, for a shutdown
    /// that does not wait: requests still running on the worker pool or waiting for a commit
    /// are not answered after it. A connection already finishing gets its last frame (the
    /// ERROR, if one waits) instead of a GOAWAY.
    pub fn go_away(&mut self, code: Code, message: &str) {
        if matches!(self.phase, Phase::Open | Phase::PeerClosed) {
            self.queue_simple(FrameKind::GoAway, self.last_request_id, code, message);
            self.stop_reading(CloseReason::GoAway);
        } else if self.phase == Phase::Finishing {
            // Stop waiting for what is left.
            self.queue_last();
            self.phase = Phase::Closing;
        }
    }

    /// Starts a graceful drain (`proto-spec/PROTOCOL.md` Section 14): queues a GOAWAY with
    /// status OK naming the last request id decoded, stops reading (input not yet decoded is
    /// dropped: those requests are above the GOAWAY's id, and the client may retry them), and
    /// keeps answering the requests decoded before it: blocking calls still running and
    /// responses held for a commit. Once none is left and the output is written, the
    /// connection closes as after [`Connection::go_away`]. No-op unless open or half-closed.
    pub fn drain(&mut self, message: &str, now: Instant) {
        if matches!(self.phase, Phase::Open | Phase::PeerClosed) {
            self.queue_simple(FrameKind::GoAway, self.last_request_id, Code::OK, message);
            self.phase = Phase::Finishing;
            self.close_reason = Some(CloseReason::GoAway);
            self.read_buf = BytesMut::new();
            self.frame_started = None;
            self.check_finished();
            self.check_output(now);
        }
    }

    /// Writes queued output to `dst` until it is all written or `dst` would block; `now`
    /// restarts the write timer when bytes move.
    ///
    /// # Errors
    /// Any error of `dst.write` but `WouldBlock` and `Interrupted`; a write of 0 bytes is
    /// `WriteZero`. The connection should then be closed.
    pub fn flush_to<W: Write>(&mut self, dst: &mut W, now: Instant) -> io::Result<()> {
        while !self.write_buf.is_empty() {
            match dst.write(&self.write_buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.write_buf.advance(n);
                    self.write_progress_at = now;
                    stats::add(&self.stats.bytes_out, n as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.write_timer_armed = false;
        // Half-closed: done once every request it sent has been answered, including frames
        // still waiting in the read buffer for a limit to lift.
        if self.phase == Phase::PeerClosed && self.nothing_pending() && self.read_buf.is_empty() {
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

    /// When [`Connection::handle_timeout`] should next be called, if ever: the earliest of the
    /// linger deadline, the write timeout (output queued), the frame timeout (a frame
    /// incomplete) and the idle timeout (nothing in progress).
    pub fn timeout(&self) -> Option<Instant> {
        let linger = match self.phase {
            Phase::Lingering { until, .. } => Some(until),
            Phase::Closed => return None,
            _ => None,
        };
        let write = (!self.write_buf.is_empty())
            .then(|| self.write_progress_at + self.config.write_timeout);
        let frame = self
            .frame_started
            .filter(|_| self.phase == Phase::Open)
            .map(|t| t + self.config.frame_timeout);
        let idle = self
            .is_idle()
            .then(|| self.last_active + self.config.idle_timeout);
        [linger, write, frame, idle].into_iter().flatten().min()
    }

    fn is_idle(&self) -> bool {
        self.phase == Phase::Open
            && self.read_buf.is_empty()
            && self.write_buf.is_empty()
            && self.nothing_pending()
    }

    /// Advances timers to `now`: closes a lingering connection past its deadline or one whose
    /// output stalled past the write timeout; sends ERROR DEADLINE_EXCEEDED to one whose frame
    /// is late, and GOAWAY to one idle too long.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Phase::Lingering { until, .. } = self.phase {
            if now >= until {
                self.phase = Phase::Closed;
            }
        }
        if self.phase == Phase::Closed {
            return;
        }
        if !self.write_buf.is_empty() && now >= self.write_progress_at + self.config.write_timeout {
            log::debug!(
                "{} bytes of output made no progress in {:?}",
                self.write_buf.len(),
                self.config.write_timeout
            );
            self.close_now(CloseReason::WriteTimeout);
            return;
        }
        if self.phase != Phase::Open {
            return;
        }
        if let Some(started) = self.frame_started {
            if now >= started + self.config.frame_timeout {
                let message = format!(
                    "frame not complete within {} ms of its first byte",
                    self.config.frame_timeout.as_millis()
                );
                // Request id 0: the late frame never arrived whole (Section 7.1).
                let error = (0, Code::DEADLINE_EXCEEDED, message.as_str());
                self.end(CloseReason::FrameTimeout, Some(error), now);
                return;
            }
        }
        if self.is_idle() && now >= self.last_active + self.config.idle_timeout {
            let message = format!(
                "idle for {} s",
                self.config.idle_timeout.as_secs_f64().round()
            );
            self.queue_simple(
                FrameKind::GoAway,
                self.last_request_id,
                Code::UNAVAILABLE,
                &message,
            );
            // Idle: nothing is pending, so nothing is left to answer.
            self.stop_reading(CloseReason::IdleTimeout);
            self.check_output(now);
        }
    }

    /// Whether the caller should read from the socket: open (or lingering), under every
    /// limit, with reads left this turn, and no complete frame waiting in the read buffer
    /// (the decoder has asked for more bytes, or the buffer is empty). The last rule keeps
    /// the read buffer within [`ConnectionConfig::max_buffered_input`] and lets every frame
    /// in it be stamped with the time of the read that brought it (its deadline's start).
    pub fn wants_read(&self) -> bool {
        match self.phase {
            Phase::Lingering { .. } => self.read_budget > 0,
            Phase::Open => {
                self.read_budget > 0
                    && self.frame_budget > 0
                    && (self.awaiting_bytes || self.read_buf.is_empty())
                    && self.write_buf.len() <= self.config.output_high_water
                    && self.in_flight < self.config.max_in_flight
                    && self.read_buf.len() < self.config.max_buffered_input()
            }
            _ => false,
        }
    }

    /// Whether this turn's budget ran out while the connection may still have work (input
    /// buffered or the socket still readable): the caller should serve it again next turn
    /// even if its socket reports nothing.
    pub fn budget_spent(&self) -> bool {
        (self.frame_budget == 0 || self.read_budget == 0)
            && matches!(
                self.phase,
                Phase::Open | Phase::PeerClosed | Phase::Lingering { .. }
            )
    }

    /// Whether the read buffer holds input the decoder has not looked at since its last
    /// `Ok(None)`: complete frames held back by a limit (the turn budget, the output
    /// high-water mark, `max_in_flight`).
    pub fn has_decodable_input(&self) -> bool {
        matches!(self.phase, Phase::Open | Phase::PeerClosed)
            && !self.read_buf.is_empty()
            && !self.awaiting_bytes
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

    /// Bytes of buffer memory held (capacity of the read and write buffers).
    pub fn buffer_capacity(&self) -> usize {
        self.read_buf.capacity() + self.write_buf.capacity()
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

    fn new_conn(config: ConnectionConfig) -> Connection {
        Connection::new(config, Arc::new(Stats::new()), Instant::now())
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
        conn.flush_to(&mut out, Instant::now())
            .expect("vec never fails");
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
        let mut conn = new_conn(ConnectionConfig::default());
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
        let mut conn = new_conn(ConnectionConfig::default());
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
        let mut conn = new_conn(ConnectionConfig::default());
        let input = encode(&request(5, 1, b"last words"));
        conn.read_from(&mut &input[..]).expect("reads");
        assert_eq!(conn.read_from(&mut &b""[..]).expect("eof"), 0);
        conn.process(Instant::now(), &router());
        assert!(!conn.is_closed());
        assert_eq!(output(&mut conn).len(), 1);
        assert!(conn.is_closed());
    }

    fn limited() -> ConnectionConfig {
        ConnectionConfig {
            output_high_water: 100,
            output_hard_cap: 10_000,
            max_frames_per_turn: 4,
            max_empty_frames: 2,
            frame_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(3),
            ..ConnectionConfig::default()
        }
    }

    #[test]
    fn an_idle_connection_gives_its_buffers_back() {
        let mut pool = BufferPool::new();
        let mut conn = new_conn(ConnectionConfig::default());
        conn.lend_buffers(&mut pool);
        let input = encode(&request(1, 1, b"hello"));
        conn.read_from(&mut &input[..]).expect("reads");
        conn.process(Instant::now(), &router());
        assert!(conn.buffer_capacity() >= READ_CHUNK);
        assert_eq!(output(&mut conn).len(), 1);
        conn.return_buffers(&mut pool);
        assert_eq!(conn.buffer_capacity(), 0, "idle: no buffer held");
        assert_eq!(pool.len(), 2, "both buffers kept for the next connection");
        // A partial frame keeps its read buffer.
        conn.lend_buffers(&mut pool);
        conn.read_from(&mut &input[..10]).expect("reads");
        conn.process(Instant::now(), &router());
        conn.return_buffers(&mut pool);
        assert_eq!(conn.buffered_input(), 10);
        assert!(conn.buffer_capacity() > 0);
    }

    #[test]
    fn the_turn_budget_stops_decoding_and_the_next_turn_resumes() {
        let mut conn = new_conn(ConnectionConfig {
            output_high_water: 1000,
            ..limited()
        });
        let mut input = BytesMut::new();
        for id in 1..=10 {
            input.extend_from_slice(&encode(&request(id, 1, b"x")));
        }
        conn.receive(&input);
        let now = Instant::now();
        assert_eq!(conn.process(now, &router()), 4);
        assert!(conn.budget_spent() && !conn.wants_read());
        assert_eq!(output(&mut conn).len(), 4);
        conn.begin_turn();
        assert_eq!(conn.process(now, &router()), 4);
        conn.begin_turn();
        assert_eq!(conn.process(now, &router()), 2);
        assert_eq!(output(&mut conn).len(), 6);
        assert!(!conn.budget_spent());
    }

    #[test]
    fn output_above_the_high_water_mark_pauses_until_drained() {
        let mut conn = new_conn(ConnectionConfig {
            max_frames_per_turn: 64,
            ..limited()
        });
        let mut input = BytesMut::new();
        for id in 1..=10 {
            input.extend_from_slice(&encode(&request(id, 1, &[7; 40])));
        }
        conn.receive(&input);
        let now = Instant::now();
        // Each response is 36 + 40 bytes: the second one passes the 100-byte mark.
        assert_eq!(conn.process(now, &router()), 2);
        assert!(!conn.wants_read(), "paused");
        assert_eq!(
            conn.stats
                .output_paused
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(output(&mut conn).len(), 2);
        // Drained: decoding resumes; the socket is read again once no complete frame waits.
        assert!(conn.has_decodable_input() && !conn.wants_read());
        assert_eq!(conn.process(now, &router()), 2);
        assert_eq!(output(&mut conn).len(), 2);
        assert_eq!(conn.process(now, &router()), 2);
        assert_eq!(output(&mut conn).len(), 2);
        assert_eq!(conn.process(now, &router()), 2);
        assert_eq!(output(&mut conn).len(), 2);
        assert_eq!(conn.process(now, &router()), 2);
        assert_eq!(output(&mut conn).len(), 2);
        assert!(conn.wants_read(), "every frame decoded: reading resumes");
    }

    #[test]
    fn a_run_of_pongs_is_a_flood_but_pings_and_requests_reset_it() {
        let mut conn = new_conn(limited());
        let pong = encode(&Frame::Pong(1));
        let mut input = BytesMut::new();
        for frame in [&pong, &pong, &encode(&Frame::Ping(2)), &pong, &pong] {
            input.extend_from_slice(frame);
        }
        conn.receive(&input);
        conn.process(Instant::now(), &router());
        assert!(conn.close_reason().is_none(), "never more than 2 in a row");
        conn.begin_turn();
        conn.receive(&pong);
        conn.process(Instant::now(), &router());
        assert_eq!(conn.close_reason(), Some(&CloseReason::Flood));
        let frames = output(&mut conn);
        // The PONG that tripped the limit had a valid header: the ERROR carries its id.
        assert!(matches!(
            frames.last(),
            Some(Frame::Error {
                code: Code::RESOURCE_EXHAUSTED,
                request_id: 1,
                ..
            })
        ));
    }

    #[test]
    fn a_trickled_frame_times_out_from_its_first_byte() {
        let mut conn = new_conn(limited());
        let t0 = Instant::now();
        let input = encode(&request(1, 1, b"slow"));
        conn.receive(&input[..5]);
        conn.process(t0, &router());
        assert_eq!(conn.timeout(), Some(t0 + Duration::from_secs(1)));
        // More bytes do not restart the clock.
        conn.receive(&input[5..20]);
        conn.process(t0 + Duration::from_millis(900), &router());
        conn.handle_timeout(t0 + Duration::from_millis(999));
        assert!(conn.close_reason().is_none());
        conn.handle_timeout(t0 + Duration::from_secs(1));
        assert_eq!(conn.close_reason(), Some(&CloseReason::FrameTimeout));
        assert!(matches!(
            &output(&mut conn)[..],
            [Frame::Error {
                code: Code::DEADLINE_EXCEEDED,
                ..
            }]
        ));
    }

    #[test]
    fn an_idle_connection_is_sent_goaway_after_the_idle_timeout() {
        let t0 = Instant::now();
        let mut conn = Connection::new(limited(), Arc::new(Stats::new()), t0);
        assert_eq!(conn.timeout(), Some(t0 + Duration::from_secs(10)));
        conn.handle_timeout(t0 + Duration::from_secs(10));
        assert_eq!(conn.close_reason(), Some(&CloseReason::IdleTimeout));
        assert!(matches!(
            &output(&mut conn)[..],
            [Frame::GoAway {
                code: Code::UNAVAILABLE,
                ..
            }]
        ));
    }

    #[test]
    fn output_that_makes_no_progress_closes_at_the_write_timeout() {
        let t0 = Instant::now();
        let mut conn = Connection::new(limited(), Arc::new(Stats::new()), t0);
        conn.receive(&encode(&request(1, 1, b"never read")));
        conn.receive_eof();
        conn.process(t0, &router());
        assert!(conn.wants_write());
        assert_eq!(conn.timeout(), Some(t0 + Duration::from_secs(3)));
        conn.handle_timeout(t0 + Duration::from_secs(3));
        assert!(conn.is_closed());
        assert_eq!(conn.close_reason(), Some(&CloseReason::WriteTimeout));
        assert_eq!(conn.queued_output(), 0, "its output is dropped");
    }

    #[test]
    fn output_over_the_hard_cap_closes_at_once() {
        let mut conn = new_conn(ConnectionConfig {
            output_high_water: 10,
            output_hard_cap: 50,
            ..limited()
        });
        conn.receive(&encode(&request(1, 1, &[1; 60])));
        conn.process(Instant::now(), &router());
        assert!(conn.is_closed());
        assert_eq!(conn.close_reason(), Some(&CloseReason::OutputCap));
    }

    #[test]
    fn a_timeout_of_duration_max_means_never_and_does_not_overflow() {
        let t0 = Instant::now();
        let config = ConnectionConfig {
            idle_timeout: Duration::MAX,
            frame_timeout: Duration::MAX,
            write_timeout: Duration::MAX,
            linger: Duration::MAX,
            ..ConnectionConfig::default()
        };
        let mut conn = Connection::new(config, Arc::new(Stats::new()), t0);
        assert!(conn
            .timeout()
            .is_some_and(|t| t > t0 + Duration::from_secs(1 << 30)));
        conn.handle_timeout(t0 + Duration::from_secs(1 << 30));
        assert!(conn.close_reason().is_none());
        conn.receive(b"GET / HTTP/1.1\r\n\r\n");
        conn.process(t0, &router());
        output(&mut conn);
        conn.write_closed(t0);
        assert!(conn.timeout().is_some(), "lingers, for a very long time");
    }

    #[test]
    fn a_long_blocking_call_restarts_the_idle_clock_when_it_finishes() {
        const SLOW: Method<Bytes, Bytes> = Method::new(1, 2, "echo.Slow");
        let mut router = router();
        router.register_blocking(SLOW, |_, body: Bytes| Ok(body));
        let t0 = Instant::now();
        let mut conn = Connection::new(limited(), Arc::new(Stats::new()), t0);
        let input = encode(&Frame::Request(RequestFrame {
            request_id: 1,
            service: SLOW.service,
            method: SLOW.method,
            deadline_ms: 0,
            metadata: Metadata::new(),
            payload: Bytes::new(),
        }));
        conn.receive(&input);
        conn.process(t0, &router);
        let mut calls = Vec::new();
        conn.take_blocking(&mut calls);
        assert_eq!((calls.len(), conn.in_flight()), (1, 1));
        assert_eq!(conn.timeout(), None, "not idle while a call runs");
        let done = t0 + Duration::from_secs(20);
        conn.complete(1, Ok(BytesMut::new()), done);
        assert_eq!(output(&mut conn).len(), 1);
        assert_eq!(conn.timeout(), Some(done + Duration::from_secs(10)));
    }

    /// A router whose method 1/3 holds its response for commit ticket = its request id.
    fn holding_router(commit: Arc<dyn crate::service::Commit>) -> Router {
        const HOLD: Method<Bytes, Bytes> = Method::new(1, 3, "test.Hold");
        let mut router = router();
        router.register(HOLD, |ctx, body: Bytes| {
            ctx.hold_until_committed(ctx.request_id);
            Ok(body)
        });
        router.set_commit(commit);
        router
    }

    struct NoCommit;
    impl crate::service::Commit for NoCommit {
        fn commit(&self, _ticket: u64) -> Result<(), Status> {
            Ok(())
        }
    }

    fn hold(id: u64) -> Frame {
        Frame::Request(RequestFrame {
            request_id: id,
            service: 1,
            method: 3,
            deadline_ms: 0,
            metadata: Metadata::new(),
            payload: Bytes::from_static(b"held"),
        })
    }

    #[test]
    fn held_responses_wait_for_their_commit_and_others_do_not() {
        let router = holding_router(Arc::new(NoCommit));
        let mut conn = new_conn(ConnectionConfig::default());
        let mut input = encode(&hold(1));
        input.extend_from_slice(&encode(&request(2, 1, b"echo")));
        input.extend_from_slice(&encode(&hold(3)));
        conn.receive(&input);
        conn.process(Instant::now(), &router);
        let now_out = output(&mut conn);
        assert_eq!(now_out.len(), 1, "only the echo goes out before the commit");
        assert!(matches!(&now_out[0], Frame::Response(r) if r.request_id == 2));
        assert_eq!(conn.held_ticket(), Some(3), "the largest ticket");
        conn.committed(Ok(()), Instant::now());
        assert_eq!(conn.held_ticket(), None);
        let ids: Vec<u64> = output(&mut conn)
            .iter()
            .map(|f| match f {
                Frame::Response(r) if r.code == Code::OK && &r.payload[..] == b"held" => {
                    r.request_id
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(ids, [1, 3]);
    }

    #[test]
    fn a_failed_commit_answers_each_held_request_with_its_status() {
        let router = holding_router(Arc::new(NoCommit));
        let mut conn = new_conn(ConnectionConfig::default());
        let mut input = encode(&hold(7));
        input.extend_from_slice(&encode(&hold(8)));
        conn.receive(&input);
        conn.process(Instant::now(), &router);
        assert!(output(&mut conn).is_empty());
        let status = Status::unavailable("disk full");
        conn.committed(Err(&status), Instant::now());
        let answers = output(&mut conn);
        assert_eq!(answers.len(), 2);
        for (frame, id) in answers.iter().zip([7, 8]) {
            match frame {
                Frame::Response(r) => {
                    assert_eq!((r.request_id, r.code), (id, Code::UNAVAILABLE));
                    assert_eq!(r.message(), Some("disk full"));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn without_a_commit_set_a_held_response_goes_out_at_once() {
        const HOLD: Method<Bytes, Bytes> = Method::new(1, 3, "test.Hold");
        let mut router = router();
        router.register(HOLD, |ctx, body: Bytes| {
            ctx.hold_until_committed(5);
            Ok(body)
        });
        let mut conn = new_conn(ConnectionConfig::default());
        conn.receive(&encode(&hold(1)));
        conn.process(Instant::now(), &router);
        assert_eq!(conn.held_ticket(), None);
        assert_eq!(output(&mut conn).len(), 1);
    }

    #[test]
    fn a_drain_sends_goaway_answers_what_was_decoded_then_closes() {
        const SLOW: Method<Bytes, Bytes> = Method::new(1, 2, "echo.Slow");
        let mut router = holding_router(Arc::new(NoCommit));
        router.register_blocking(SLOW, |_, body: Bytes| Ok(body));
        let t0 = Instant::now();
        let mut conn = Connection::new(limited(), Arc::new(Stats::new()), t0);
        let mut input = encode(&Frame::Request(RequestFrame {
            request_id: 4,
            service: SLOW.service,
            method: SLOW.method,
            deadline_ms: 0,
            metadata: Metadata::new(),
            payload: Bytes::from_static(b"slow"),
        }));
        input.extend_from_slice(&encode(&hold(5)));
        conn.receive(&input);
        conn.process(t0, &router);
        let mut calls = Vec::new();
        conn.take_blocking(&mut calls);
        assert_eq!(calls.len(), 1);
        conn.drain("draining", t0);
        // A request that arrives after the GOAWAY is not read.
        assert!(!conn.wants_read());
        conn.receive(&encode(&request(6, 1, b"late")));
        assert_eq!(conn.process(t0, &router), 0);
        let goaway = output(&mut conn);
        match &goaway[..] {
            [Frame::GoAway {
                last_request_id,
                code,
                ..
            }] => assert_eq!((*last_request_id, *code), (5, Code::OK)),
            other => panic!("expected one GOAWAY, got {other:?}"),
        }
        assert!(!conn.wants_write_shutdown(), "two answers still owed");
        conn.complete(4, Ok(BytesMut::from(&b"slow"[..])), t0);
        assert!(!conn.wants_write_shutdown(), "the held one is still owed");
        conn.committed(Ok(()), t0);
        let ids: Vec<u64> = output(&mut conn)
            .iter()
            .map(|f| match f {
                Frame::Response(r) => r.request_id,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(ids, [4, 5]);
        assert!(conn.wants_write_shutdown(), "everything answered: closing");
        assert_eq!(conn.close_reason(), Some(&CloseReason::GoAway));
    }

    /// Held requests 1 and 2 (SET-like), an echo 3, then `ending` in the same input: every
    /// request is answered, the held ones after their commit, before the close; returns the
    /// frames sent.
    fn answers_before(ending: &Frame) -> (Connection, Vec<Frame>) {
        let router = holding_router(Arc::new(NoCommit));
        let mut conn = new_conn(ConnectionConfig::default());
        let mut input = encode(&hold(1));
        input.extend_from_slice(&encode(&hold(2)));
        input.extend_from_slice(&encode(&request(3, 1, b"echo")));
        input.extend_from_slice(&encode(ending));
        // A request after the ending frame is not read.
        input.extend_from_slice(&encode(&request(4, 1, b"after")));
        conn.receive(&input);
        let now = Instant::now();
        conn.process(now, &router);
        assert!(!conn.wants_read(), "nothing more is read");
        let mut frames = output(&mut conn);
        assert!(!conn.wants_write_shutdown(), "two answers are still owed");
        assert_eq!(conn.held_ticket(), Some(2));
        conn.committed(Ok(()), now);
        frames.extend(output(&mut conn));
        assert!(conn.wants_write_shutdown(), "all answered: closing");
        (conn, frames)
    }

    fn response_ids(frames: &[Frame]) -> Vec<u64> {
        frames
            .iter()
            .filter_map(|f| match f {
                Frame::Response(r) if r.code == Code::OK => Some(r.request_id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_client_goaway_in_the_same_read_as_held_writes_still_gets_them_answered() {
        let goaway = Frame::GoAway {
            last_request_id: 0,
            code: Code::OK,
            message: String::new(),
        };
        let (conn, frames) = answers_before(&goaway);
        assert_eq!(response_ids(&frames), [3, 1, 2]);
        assert_eq!(frames.len(), 3, "no frame of our own: {frames:?}");
        assert_eq!(conn.close_reason(), Some(&CloseReason::PeerClosed));
    }

    #[test]
    fn a_client_error_in_the_same_read_as_held_writes_still_gets_them_answered() {
        let error = Frame::Error {
            request_id: 0,
            code: Code::CANCELLED,
            message: "bye".into(),
        };
        let (conn, frames) = answers_before(&error);
        assert_eq!(response_ids(&frames), [3, 1, 2]);
        assert_eq!(frames.len(), 3, "no frame of our own: {frames:?}");
        assert!(matches!(
            conn.close_reason(),
            Some(CloseReason::PeerError(_))
        ));
    }

    #[test]
    fn a_connection_error_after_held_writes_sends_their_answers_then_the_error_last() {
        // A RESPONSE from a client is a connection error (Section 9.4).
        let response = Frame::Response(crate::proto::Response {
            request_id: 9,
            code: Code::OK,
            metadata: Metadata::new(),
            payload: Bytes::new(),
        });
        let (conn, frames) = answers_before(&response);
        assert_eq!(response_ids(&frames), [3, 1, 2]);
        assert!(
            matches!(
                frames.last(),
                Some(Frame::Error {
                    request_id: 9,
                    code: Code::INVALID_ARGUMENT,
                    ..
                })
            ),
            "{frames:?}"
        );
        assert_eq!(frames.len(), 4);
        assert!(matches!(
            conn.close_reason(),
            Some(CloseReason::UnexpectedFrame(_))
        ));
    }

    #[test]
    fn a_bad_header_after_held_writes_sends_their_answers_then_the_error_last() {
        let router = holding_router(Arc::new(NoCommit));
        let mut conn = new_conn(ConnectionConfig::default());
        let mut input = encode(&hold(1));
        input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        conn.receive(&input);
        let now = Instant::now();
        conn.process(now, &router);
        assert!(
            output(&mut conn).is_empty(),
            "the ERROR waits for the answer"
        );
        conn.committed(Ok(()), now);
        let frames = output(&mut conn);
        assert_eq!(response_ids(&frames), [1]);
        assert!(matches!(
            frames.last(),
            Some(Frame::Error {
                code: Code::INVALID_ARGUMENT,
                request_id: 0,
                ..
            })
        ));
        assert!(conn.wants_write_shutdown());
    }

    #[test]
    fn a_client_goaway_waits_for_blocking_calls_in_flight() {
        const SLOW: Method<Bytes, Bytes> = Method::new(1, 2, "echo.Slow");
        let mut router = router();
        router.register_blocking(SLOW, |_, body: Bytes| Ok(body));
        let now = Instant::now();
        let mut conn = new_conn(ConnectionConfig::default());
        let mut input = encode(&Frame::Request(RequestFrame {
            request_id: 1,
            service: SLOW.service,
            method: SLOW.method,
            deadline_ms: 0,
            metadata: Metadata::new(),
            payload: Bytes::from_static(b"slow"),
        }));
        input.extend_from_slice(&encode(&Frame::GoAway {
            last_request_id: 0,
            code: Code::OK,
            message: String::new(),
        }));
        conn.receive(&input);
        conn.process(now, &router);
        let mut calls = Vec::new();
        conn.take_blocking(&mut calls);
        assert_eq!(calls.len(), 1);
        assert!(!conn.wants_write_shutdown(), "the call is still owed");
        conn.complete(1, Ok(BytesMut::from(&b"slow"[..])), now);
        assert_eq!(response_ids(&output(&mut conn)), [1]);
        assert!(conn.wants_write_shutdown());
    }

    #[test]
    fn a_shutdown_goaway_does_not_wait_but_sends_a_waiting_error() {
        let router = holding_router(Arc::new(NoCommit));
        let mut conn = new_conn(ConnectionConfig::default());
        let mut input = encode(&hold(1));
        input.extend_from_slice(b"junk");
        conn.receive(&input);
        conn.process(Instant::now(), &router);
        conn.go_away(Code::UNAVAILABLE, "shutting down");
        let frames = output(&mut conn);
        assert!(
            matches!(&frames[..], [Frame::Error { .. }]),
            "the ERROR, nothing else: {frames:?}"
        );
        assert!(conn.wants_write_shutdown());
    }

    /// A request with `deadline_ms` for method `method` of the echo service.
    fn with_deadline(id: u64, method: u16, deadline_ms: u32) -> Frame {
        Frame::Request(RequestFrame {
            request_id: id,
            service: 1,
            method,
            deadline_ms,
            metadata: Metadata::new(),
            payload: Bytes::from_static(b"x"),
        })
    }

    #[test]
    fn a_request_held_back_past_its_deadline_is_answered_deadline_exceeded_without_running() {
        use std::sync::atomic::{AtomicU32, Ordering};
        const SLOW: Method<Bytes, Bytes> = Method::new(1, 2, "echo.Slow");
        const COUNTED: Method<Bytes, Bytes> = Method::new(1, 5, "test.Counted");
        let runs = Arc::new(AtomicU32::new(0));
        let mut router = router();
        router.register_blocking(SLOW, |_, body: Bytes| Ok(body));
        let counted = Arc::clone(&runs);
        router.register(COUNTED, move |_, body: Bytes| {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(body)
        });
        let t0 = Instant::now();
        let mut conn = new_conn(ConnectionConfig {
            max_in_flight: 1,
            ..ConnectionConfig::default()
        });
        // A blocking call fills the in-flight limit; two requests with a 100 ms deadline and
        // one with none wait behind it in the read buffer.
        let mut input = encode(&with_deadline(1, 2, 0));
        for (id, deadline_ms) in [(2, 100), (3, 0), (4, 100)] {
            input.extend_from_slice(&encode(&with_deadline(id, 5, deadline_ms)));
        }
        conn.receive(&input);
        assert_eq!(conn.process(t0, &router), 1);
        let mut calls = Vec::new();
        conn.take_blocking(&mut calls);
        // The call finishes 150 ms later: the waiting requests are dispatched then.
        let later = t0 + Duration::from_millis(150);
        conn.complete(1, Ok(BytesMut::from(&b"x"[..])), later);
        conn.begin_turn();
        assert_eq!(conn.process(later, &router), 3);
        let frames = output(&mut conn);
        let codes: Vec<(u64, Code)> = frames
            .iter()
            .map(|f| match f {
                Frame::Response(r) => (r.request_id, r.code),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            codes,
            [
                (1, Code::OK),
                (2, Code::DEADLINE_EXCEEDED),
                (3, Code::OK),
                (4, Code::DEADLINE_EXCEEDED)
            ]
        );
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "only the one without a deadline ran"
        );
        assert_eq!(conn.stats.deadline_expired.load(Ordering::Relaxed), 2);
        // A deadline counts from the receipt, not the dispatch: one received 50 ms ago with
        // 100 ms runs.
        conn.receive(&encode(&with_deadline(5, 5, 100)));
        let received = later + Duration::from_millis(10);
        conn.process(received, &router);
        assert_eq!(response_ids(&output(&mut conn)), [5]);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_deadline_of_a_request_held_back_counts_from_the_read_that_brought_it() {
        let router = router();
        let t0 = Instant::now();
        let mut conn = new_conn(ConnectionConfig {
            max_frames_per_turn: 1,
            ..ConnectionConfig::default()
        });
        let mut input = encode(&with_deadline(1, 1, 50));
        input.extend_from_slice(&encode(&with_deadline(2, 1, 50)));
        conn.receive(&input);
        assert_eq!(
            conn.process(t0, &router),
            1,
            "the turn budget holds the second back"
        );
        conn.begin_turn();
        // The next turn comes 60 ms after the read: its deadline has passed.
        assert_eq!(conn.process(t0 + Duration::from_millis(60), &router), 1);
        let frames = output(&mut conn);
        assert!(
            matches!(&frames[1], Frame::Response(r) if r.request_id == 2 && r.code == Code::DEADLINE_EXCEEDED)
        );
        assert!(
            matches!(&frames[0], Frame::Response(r) if r.request_id == 1 && r.code == Code::OK)
        );
    }

    #[test]
    fn request_id_zero_is_refused_unprocessed_and_a_goaway_then_names_zero() {
        let mut conn = new_conn(ConnectionConfig::default());
        conn.receive(&encode(&request(0, 1, b"zero")));
        conn.process(Instant::now(), &router());
        conn.drain("draining", Instant::now());
        let frames = output(&mut conn);
        match &frames[..] {
            [Frame::Response(r), Frame::GoAway {
                last_request_id: 0, ..
            }] => {
                assert_eq!((r.request_id, r.code), (0, Code::INVALID_ARGUMENT));
                assert!(r.message().is_some_and(|m| m.contains("reserved")));
            }
            other => panic!("expected the refusal and GOAWAY(0), got {other:?}"),
        }
    }

    #[test]
    fn input_never_exceeds_one_frame_plus_one_read_chunk() {
        // A 1 MiB limit, and a peer that sends 1 MiB frames back to back and faster than they
        // are decoded: each read takes at most what the frame at the front lacks plus a
        // chunk, and none happens while a complete frame waits.
        let config = ConnectionConfig {
            max_body_len: 1024 * 1024,
            max_frames_per_turn: 1,
            ..ConnectionConfig::default()
        };
        let mut conn = new_conn(config);
        let mut wire = Vec::new();
        for id in 1..=6 {
            let frame = Frame::Request(RequestFrame {
                request_id: id,
                service: 9,
                method: 1,
                deadline_ms: 0,
                metadata: Metadata::new(),
                payload: Bytes::from(vec![id as u8; 1024 * 1024]),
            });
            let mut b = BytesMut::new();
            Encoder::new(u32::MAX)
                .encode(&frame, &mut b)
                .expect("encodes");
            wire.extend_from_slice(&b);
        }
        let mut src = &wire[..];
        let mut most = 0;
        let mut answered = 0;
        for _ in 0..10_000 {
            conn.begin_turn();
            while conn.wants_read() {
                // A reader that fills all the room it is given, up to the limit.
                let n = conn
                    .read_with(|buf, limit| {
                        let take = limit.min(src.len()).min(256 * 1024);
                        buf.extend_from_slice(&src[..take]);
                        src = &src[take..];
                        Ok(take)
                    })
                    .expect("reads");
                most = most.max(conn.buffered_input());
                conn.process(Instant::now(), &router());
                if n == 0 {
                    break;
                }
            }
            conn.process(Instant::now(), &router());
            answered += output(&mut conn).len();
            if answered == 6 {
                break;
            }
        }
        assert_eq!(answered, 6);
        assert!(
            most <= config.max_buffered_input(),
            "{most} bytes buffered, over the bound of {}",
            config.max_buffered_input()
        );
        assert!(most > 1024 * 1024, "a whole frame was buffered: {most}");
    }
}
