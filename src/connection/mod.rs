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
//! # Identity
//!
//! A connection may have an identity: the subject of its verified client certificate (set by
//! the transport with [`Connection::set_identity`]) or what its AUTH proved. It answers AUTH
//! and WHOAMI itself, and while its server requires an identity
//! ([`Connection::set_authentication`]) it runs nothing else before it has one and limits
//! frame bodies to [`PRE_AUTH_MAX_BODY`]; handlers see the identity in
//! [`Context::identity`]. See `auth.rs` and `proto-spec/PROTOCOL.md` Section 18.
//!
//! Every limit that trips is counted in the shared [`Stats`].
//!
//! # Files
//!
//! Each concern of a connection lives in a file of its own, as an `impl Connection` block
//! (or the types it needs):
//!
//! | File         | Holds |
//! |--------------|-------|
//! | `mod.rs`     | [`Connection`], its phases and constructor, and the core flow: reading, decoding, dispatching a request (inline, blocking or held), answering, writing, and the read/turn limits |
//! | `config.rs`  | every limit: the fixed ones, each `DEFAULT_*` with its unit and where it comes from, and [`ConnectionConfig`] with its `with_*` setters |
//! | `timers.rs`  | the frame, idle and write-stall timeouts, the output hard cap, the linger deadline, and each request's deadline |
//! | `drain.rs`   | ending while still answering: drain (GOAWAY OK), the client's GOAWAY or ERROR, connection errors, the Finishing phase; and a shutdown's GOAWAY |
//! | `held.rs`    | responses held until their commit ticket is durable, and the ERROR kept for a finishing connection's end |
//! | `close.rs`   | [`CloseReason`], shutting the write side, lingering, and closing at once |
//! | `auth.rs`    | identity, AUTH and WHOAMI, and the limits before authentication |
//! | `buffers.rs` | [`BufferPool`] and lending its buffers to a connection |
//! | `tests.rs`   | the rules above, byte by byte |

mod auth;
mod buffers;
mod close;
mod config;
mod drain;
mod held;
#[cfg(test)]
mod tests;
mod timers;

pub use auth::Authentication;
pub use buffers::BufferPool;
pub use close::CloseReason;
pub use config::{
    ConnectionConfig, DEFAULT_FRAME_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_LINGER,
    DEFAULT_MAX_EMPTY_FRAMES, DEFAULT_MAX_FRAMES_PER_TURN, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_OUTPUT_HARD_CAP, DEFAULT_OUTPUT_HIGH_WATER, DEFAULT_WRITE_TIMEOUT, LINGER_MAX_DISCARD,
    MAX_AUTH_FAILURES, MAX_READS_PER_TURN, MAX_TIMEOUT, PRE_AUTH_MAX_BODY, READ_CHUNK,
};

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};

use held::Held;

use crate::proto::{
    self, Code, DecodeError, Decoder, Encoder, Frame, FrameKind, Metadata, Request, Status,
};
use crate::service::{route_key, BlockingCall, CallId, Context, Failure, Outcome, Router};
use crate::stats::{self, Stats};

/// Frames looked at per call of the router's prefetch hints ([`Router::register_prefetch`]):
/// 32, two batches of the usual pipeline depth of 16 (redis-benchmark's `-P 16`, memtier's
/// `--pipeline`); far more and the first frames' memory would be evicted again before they
/// are served.
const PREFETCH_FRAMES: usize = 32;

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
    /// Boxed: set once per connection, and 8 bytes instead of 40 in every idle connection.
    close_reason: Option<Box<CloseReason>>,
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
    /// Its identity, and how it may get one.
    session: Option<Box<auth::Session>>,
}

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
            session: None,
        }
    }

    /// Grants this loop turn's budget: `max_frames_per_turn` frames and
    /// [`MAX_READS_PER_TURN`] reads. Call once per turn before serving the connection.
    pub fn begin_turn(&mut self) {
        self.frame_budget = self.config.max_frames_per_turn.max(1);
        self.read_budget = MAX_READS_PER_TURN;
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
            stats::bump(&self.stats.bytes_in, n as u64);
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
            stats::bump(&self.stats.bytes_in, bytes.len() as u64);
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
                self.close_reason
                    .get_or_insert_with(|| Box::new(CloseReason::PeerClosed));
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
        // Responses held for a commit count: they go out at the end of the turn.
        let over = self.queued_output() > self.config.output_high_water;
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
    ///
    /// The one clock it reads itself: the end of the batch, for the latency of the requests
    /// it answered (from `now`, when their bytes were read, to when their answers were
    /// queued; see [`crate::stats`]); every timer runs on the `now` given.
    pub fn process(&mut self, now: Instant, router: &Router) -> usize {
        if self.fresh_input {
            self.fresh_input = false;
            self.input_at = now;
        }
        let mut frames = 0;
        // Frames decoded when the next batch is looked at for the router's prefetch hints.
        let mut peek_at = if router.prefetches() { 0 } else { usize::MAX };
        while !self.awaiting_bytes && self.may_decode() {
            if frames == peek_at {
                peek_at = frames.saturating_add(self.prefetch(router));
            }
            let decoded = self.decoder.decode(&mut self.read_buf);
            if matches!(decoded, Ok(None)) {
                self.awaiting_bytes = true;
                break;
            }
            frames += 1;
            self.frame_budget -= 1;
            self.frame_started = None;
            self.last_active = now;
            match decoded {
                Ok(Some(frame)) => self.on_frame(frame, now, router),
                Ok(None) => {}
                Err(err) => self.on_decode_error(err, now),
            }
        }
        stats::bump(&self.stats.frames_in, frames as u64);
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
        // One clock read for the batch: its answers are written together once it is served.
        if self.stats.has_unclocked() {
            self.stats.clock_answers(self.input_at, Instant::now());
        }
        self.check_output(now);
        frames
    }

    /// Gives the router's prefetch hints the requests among the next complete frames in the
    /// read buffer (at most [`PREFETCH_FRAMES`], and no more than this turn's budget), when
    /// there are two or more: one alone is served at once, with nothing to overlap. Returns
    /// the frames looked at, at least 1.
    fn prefetch(&self, router: &Router) -> usize {
        let max = self.frame_budget.min(PREFETCH_FRAMES as u32) as usize;
        let mut batch = [(0u32, 0usize, 0usize); PREFETCH_FRAMES];
        let mut requests = 0;
        let walked = proto::peek_requests(&self.read_buf, max, |service, method, payload| {
            batch[requests] = (route_key(service, method), payload.start, payload.end);
            requests += 1;
        });
        if walked >= 2 && requests > 0 {
            router.prefetch(&batch[..requests], &self.read_buf);
        }
        walked.max(1)
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
        let slot = router.slot(service, method);
        if request_id == 0 {
            // Section 11: id 0 is reserved, so that a GOAWAY naming 0 means "none processed".
            let status = Status::invalid_argument(
                "request id 0 is reserved (PROTOCOL.md Section 11): not processed",
            );
            self.answer_failure(0, &Failure::status(status), slot);
            return;
        }
        self.last_request_id = request_id;
        if self.answer_before_routing(request_id, service, method, &payload, (slot, now)) {
            return;
        }
        let received_at = self.input_at;
        let deadline = self.request_deadline(deadline_ms);
        if self.refuse_expired((request_id, slot), deadline_ms, deadline, now) {
            return;
        }
        let mut ctx = Context::new(request_id, received_at, deadline, metadata);
        ctx.identity = self.context_identity();
        let start = self.write_buf.len();
        let mut outcome = None;
        let encoded = self.encoder.encode_response_with(
            &mut self.write_buf,
            request_id,
            Code::OK,
            &Metadata::new(),
            |out| outcome = Some(router.route(ctx, (slot, service, method), payload, out)),
        );
        let failure = match (outcome, encoded) {
            (Some(Outcome::Ready(Ok(()))), Ok(())) => {
                self.stats.answered(slot, Code::OK);
                stats::bump(&self.stats.frames_out, 1);
                return;
            }
            (Some(Outcome::Held(ticket, Ok(()))), Ok(())) => {
                let held = self.held.get_or_insert_with(Box::default);
                held.frames.extend_from_slice(&self.write_buf[start..]);
                held.push(request_id, Code::OK, ticket, (slot, received_at));
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
                held.push(request_id, failure.status.code, ticket, (slot, received_at));
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
        self.answer_failure(request_id, &failure, slot);
    }

    /// Answers `request_id` with the failure's status, counted under method `slot` (its
    /// latency measured by the caller's next [`Stats::clock_answers`]).
    fn answer_failure(&mut self, request_id: u64, failure: &Failure, slot: usize) {
        if failure.panicked {
            stats::inc(&self.stats.handler_panics);
        }
        self.stats.answered(slot, failure.status.code);
        stats::bump(&self.stats.frames_out, 1);
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

    /// Answers the blocking request `call` ([`BlockingCall::id`]) with its response message
    /// (`Ok`) or a status; called when the worker pool returns it, `now` being when its answer
    /// reached the loop (the end of the request's latency). Ignored, but for the in-flight
    /// count, once the connection has stopped answering (after a shutdown's GOAWAY of
    /// [`Connection::go_away`], or once its ERROR went out); a connection that is finishing
    /// (draining, or ended by the client's GOAWAY or ERROR or by a connection error) still
    /// answers.
    pub fn complete(&mut self, call: CallId, result: Result<BytesMut, Status>, now: Instant) {
        self.complete_call(call, result.map_err(Failure::status), now);
    }

    pub(crate) fn complete_call(
        &mut self,
        call: CallId,
        result: Result<BytesMut, Failure>,
        now: Instant,
    ) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.last_active = now;
        if !self.answering() {
            return;
        }
        self.answer_call(call, result);
        self.stats.clock_answers(call.received_at, now);
        self.check_finished();
        self.check_output(now);
    }

    fn answer_call(&mut self, call: CallId, result: Result<BytesMut, Failure>) {
        let (request_id, slot) = (call.request_id, call.slot);
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
                        self.stats.answered(slot, Code::OK);
                        stats::bump(&self.stats.frames_out, 1);
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
        self.answer_failure(request_id, &failure, slot);
    }

    fn on_decode_error(&mut self, err: DecodeError, now: Instant) {
        self.stats.decode_error(&err);
        if err.is_tls_hello() {
            stats::inc(&self.stats.tls_on_plain_port);
        }
        if !err.is_fatal() && err.frame_kind() == Some(FrameKind::Request) {
            log::debug!("request {}: {err}", err.request_id());
            let failure = Failure::status(Status::new(err.status(), err.to_string()));
            // Counted under the unknown method: the error does not carry the frame's ids.
            self.answer_failure(err.request_id(), &failure, usize::MAX);
            return;
        }
        let message = err.to_string();
        let error = (err.request_id(), err.status(), message.as_str());
        self.end(CloseReason::Protocol(err), Some(error), now);
    }

    fn queue_simple(&mut self, kind: FrameKind, request_id: u64, code: Code, message: &str) {
        stats::bump(&self.stats.frames_out, 1);
        self.encoder
            .encode_simple(&mut self.write_buf, kind, request_id, code, message);
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
                    && self.queued_output() <= self.config.output_high_water
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

    /// The id of the last REQUEST decoded (0 before any).
    pub fn last_request_id(&self) -> u64 {
        self.last_request_id
    }

    /// Bytes queued for the peer, responses held for a commit included (what the output
    /// high-water mark is compared with).
    pub fn queued_output(&self) -> usize {
        self.write_buf.len() + self.held.as_ref().map_or(0, |held| held.frames.len())
    }

    /// Whether decoding stopped, the last time it was tried, because the queued output
    /// (responses held for a commit included) was above the high-water mark. The caller
    /// serves the connection again once that output has gone out: the socket was not read
    /// dry, and no new readiness event may come.
    pub fn paused_for_output(&self) -> bool {
        self.output_paused
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
