//! How a connection ends while still answering what it received: a drain's GOAWAY OK
//! ([`Connection::drain`], `proto-spec/PROTOCOL.md` Section 14), the client's GOAWAY or
//! ERROR, and connection errors ([`Connection::end`], Sections 9.1 and 9.4), which stop
//! reading, answer every request decoded before, and only then send the ERROR, if any, and
//! start closing; and a shutdown's GOAWAY ([`Connection::go_away`]), which does not wait.
//! The Finishing phase in the [module docs](super) is this file's.

use std::time::Instant;

use bytes::BytesMut;

use super::{CloseReason, Connection, Phase};
use crate::proto::{Code, FrameKind};
use crate::stats;

impl Connection {
    /// Starts a graceful drain (`proto-spec/PROTOCOL.md` Section 14): queues a GOAWAY with
    /// status OK naming the last request id decoded, stops reading (input not yet decoded is
    /// dropped: those requests are above the GOAWAY's id, and the client may retry them), and
    /// keeps answering the requests decoded before it: blocking calls still running and
    /// responses held for a commit. Once none is left and the output is written, the
    /// connection closes as after [`Connection::go_away`]. No-op unless open or half-closed.
    pub fn drain(&mut self, message: &str, now: Instant) {
        if matches!(self.phase, Phase::Open | Phase::PeerClosed) {
            self.queue_simple(FrameKind::GoAway, self.last_request_id, Code::OK, message);
            self.end(CloseReason::GoAway, None, now);
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

    /// Ends an open or half-closed connection for `reason`: nothing more is read (input not
    /// yet decoded is dropped), every request decoded before is still answered, and then
    /// `error` (request id, status, message), if given, goes out as the last frame before the
    /// close (`proto-spec/PROTOCOL.md` Sections 9.1 and 9.4).
    pub(super) fn end(
        &mut self,
        reason: CloseReason,
        error: Option<(u64, Code, &str)>,
        now: Instant,
    ) {
        if !matches!(self.phase, Phase::Open | Phase::PeerClosed) {
            return;
        }
        self.stop_reading(reason);
        if !self.nothing_pending() {
            self.phase = Phase::Finishing;
        }
        if let Some((request_id, code, message)) = error {
            if self.phase == Phase::Finishing {
                // Counted in `frames_out` when it goes out (`queue_last`).
                let held = self.held.get_or_insert_with(Box::default);
                self.encoder.encode_simple(
                    &mut held.last,
                    FrameKind::Error,
                    request_id,
                    code,
                    message,
                );
            } else {
                self.queue_simple(FrameKind::Error, request_id, code, message);
            }
        }
        self.check_output(now);
    }

    /// Stops reading an open or half-closed connection for `reason` and starts closing at
    /// once, without waiting for anything still pending.
    pub(super) fn stop_reading(&mut self, reason: CloseReason) {
        if matches!(self.phase, Phase::Open | Phase::PeerClosed) {
            self.phase = Phase::Closing;
            self.close_reason = Some(Box::new(reason));
            self.read_buf = BytesMut::new();
            self.frame_started = None;
        }
    }

    /// A finishing connection with nothing left to answer queues its last frame, if any, and
    /// starts closing.
    pub(super) fn check_finished(&mut self) {
        if self.phase == Phase::Finishing && self.nothing_pending() {
            self.queue_last();
            self.phase = Phase::Closing;
        }
    }

    /// Moves the ERROR kept for the end of a finishing connection to the output.
    pub(super) fn queue_last(&mut self) {
        if let Some(held) = self.held.as_mut() {
            if !held.last.is_empty() {
                stats::bump(&self.stats.frames_out, 1);
                self.write_buf.extend_from_slice(&held.last);
                held.last = BytesMut::new();
            }
        }
    }

    /// Whether requests decoded so far are still answered: open, half-closed or finishing
    /// (not after a shutdown's GOAWAY, nor once the ERROR went out).
    pub(super) fn answering(&self) -> bool {
        matches!(
            self.phase,
            Phase::Open | Phase::PeerClosed | Phase::Finishing
        )
    }

    /// No request is running, waiting for a worker or holding its response for a commit.
    pub(super) fn nothing_pending(&self) -> bool {
        self.in_flight == 0 && self.blocking.is_empty() && self.held_ticket().is_none()
    }
}
