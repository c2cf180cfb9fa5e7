//! Why a connection stopped reading requests, and the counter each reason is counted under.

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
