//! Why a connection stopped reading requests, and the counter each reason is counted under;
//! and the last steps of closing: shutting the write side once the output is written,
//! lingering (reading and discarding) so that the last frame is not destroyed by a reset,
//! and closing at once.

use std::time::Instant;

use bytes::BytesMut;

use super::{Connection, Phase};
use crate::proto::{DecodeError, FrameKind, Status};
use crate::stats::CloseCause;

/// Why a connection stopped reading requests. Where an ERROR frame is named, it goes out
/// after the answers to every request received before (see the [module docs](super)).
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
    /// Too many AUTH calls failed ([`MAX_AUTH_FAILURES`](super::MAX_AUTH_FAILURES)); ERROR
    /// UNAUTHENTICATED is sent, naming the last AUTH.
    AuthFailures,
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
            CloseReason::AuthFailures => CloseCause::AuthFailures,
        }
    }
}

impl Connection {
    /// Closes at once, dropping all buffered bytes: nothing more can be sent.
    pub(super) fn close_now(&mut self, reason: CloseReason) {
        // A half-closed peer that stops reading is closed for that, not for its end of stream;
        // a protocol error stays the reason even if its ERROR frame could not be delivered.
        if matches!(
            self.close_reason.as_deref(),
            None | Some(CloseReason::PeerClosed)
        ) {
            self.close_reason = Some(Box::new(reason));
        }
        self.phase = Phase::Closed;
        self.read_buf = BytesMut::new();
        self.write_buf = BytesMut::new();
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

    /// Whether the connection is finished and its socket should be closed.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Why the connection stopped reading, once it has.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.close_reason.as_deref()
    }
}
