//! Frames: the header constants, the frame kinds and the decoded frame types.

use bytes::Bytes;

use super::metadata::Metadata;
use super::status::Code;

/// The four magic bytes that open every frame: ASCII `"COUR"` (`0x43 0x4F 0x55 0x52`).
pub const MAGIC: [u8; 4] = *b"COUR";

/// The protocol version this crate speaks: 1.
pub const VERSION: u8 = 1;

/// Header length in bytes: 36, fixed.
pub const HEADER_LEN: usize = 36;

/// Default largest body a receiver accepts, in bytes (metadata included): 4 MiB.
///
/// gRPC's default maximum receive message size is also 4 MiB. A larger frame is answered with
/// an ERROR frame carrying RESOURCE_EXHAUSTED and the connection is closed.
pub const DEFAULT_MAX_BODY_LEN: u32 = 4 * 1024 * 1024;

/// Flag bit 0: the body starts with a metadata section. Allowed on REQUEST and RESPONSE only.
pub const FLAG_METADATA: u16 = 0x0001;

/// The kind of a frame: header byte 5.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// 1: a call from client to server.
    Request = 1,
    /// 2: the server's answer to one REQUEST, matched by request id.
    Response = 2,
    /// 3: a liveness probe; the peer answers PONG with the same id.
    Ping = 3,
    /// 4: the answer to a PING.
    Pong = 4,
    /// 5: the sender is draining; it answers requests up to the carried id, and no more.
    GoAway = 5,
    /// 6: a connection-level error, sent just before the sender closes.
    Error = 6,
}

impl FrameKind {
    /// The kind for a header byte, or `None` for 0 and 7..=255.
    #[inline]
    pub fn from_u8(byte: u8) -> Option<FrameKind> {
        Some(match byte {
            1 => FrameKind::Request,
            2 => FrameKind::Response,
            3 => FrameKind::Ping,
            4 => FrameKind::Pong,
            5 => FrameKind::GoAway,
            6 => FrameKind::Error,
            _ => return None,
        })
    }

    /// The spec's name: `"REQUEST"`, `"RESPONSE"`, `"PING"`, `"PONG"`, `"GOAWAY"` or `"ERROR"`.
    pub fn name(self) -> &'static str {
        match self {
            FrameKind::Request => "REQUEST",
            FrameKind::Response => "RESPONSE",
            FrameKind::Ping => "PING",
            FrameKind::Pong => "PONG",
            FrameKind::GoAway => "GOAWAY",
            FrameKind::Error => "ERROR",
        }
    }

    /// Whether frames of this kind may carry a metadata section.
    #[inline]
    pub fn allows_metadata(self) -> bool {
        matches!(self, FrameKind::Request | FrameKind::Response)
    }
}

/// A REQUEST frame's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Chosen by the client, echoed in the RESPONSE.
    pub request_id: u64,
    /// Service id (header bytes 16..18).
    pub service: u16,
    /// Method id within the service (header bytes 18..20).
    pub method: u16,
    /// Milliseconds the client will wait from sending; 0 means no deadline.
    pub deadline_ms: u32,
    /// Metadata entries; empty when the METADATA flag is clear.
    pub metadata: Metadata,
    /// The encoded request message: a slice of the read buffer, not a copy.
    pub payload: Bytes,
}

/// A RESPONSE frame's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The request id of the REQUEST this answers.
    pub request_id: u64,
    /// The status; [`Code::OK`] means `payload` is the response message.
    pub code: Code,
    /// Metadata entries; empty when the METADATA flag is clear.
    pub metadata: Metadata,
    /// On OK, the encoded response message; otherwise the UTF-8 status message.
    pub payload: Bytes,
}

impl Response {
    /// The status message of a non-OK response (validated UTF-8 when decoded), or `None` on OK.
    pub fn message(&self) -> Option<&str> {
        if self.code.is_ok() {
            None
        } else {
            std::str::from_utf8(&self.payload).ok()
        }
    }
}

/// One decoded frame. See `proto-spec/PROTOCOL.md` §4.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A call.
    Request(Request),
    /// An answer to a call.
    Response(Response),
    /// A PING with its opaque id (the request id field).
    Ping(u64),
    /// A PONG echoing a PING's id.
    Pong(u64),
    /// The sender is draining.
    GoAway {
        /// The last request id the sender will answer.
        last_request_id: u64,
        /// Why: OK for a graceful drain.
        code: Code,
        /// Human-readable detail; may be empty.
        message: String,
    },
    /// A connection-level error; the sender closes after it.
    Error {
        /// The id of the frame that caused it, or 0 when its header was unreadable.
        request_id: u64,
        /// The status.
        code: Code,
        /// Human-readable detail; may be empty.
        message: String,
    },
}

impl Frame {
    /// The frame's kind.
    pub fn kind(&self) -> FrameKind {
        match self {
            Frame::Request(_) => FrameKind::Request,
            Frame::Response(_) => FrameKind::Response,
            Frame::Ping(_) => FrameKind::Ping,
            Frame::Pong(_) => FrameKind::Pong,
            Frame::GoAway { .. } => FrameKind::GoAway,
            Frame::Error { .. } => FrameKind::Error,
        }
    }

    /// The spec's name of the frame's kind (`"REQUEST"` ...).
    pub fn kind_name(&self) -> &'static str {
        self.kind().name()
    }

    /// The flags this frame is encoded with: [`FLAG_METADATA`] iff it has metadata entries.
    pub fn flags(&self) -> u16 {
        match self {
            Frame::Request(Request { metadata, .. })
            | Frame::Response(Response { metadata, .. })
                if !metadata.is_empty() =>
            {
                FLAG_METADATA
            }
            _ => 0,
        }
    }

    /// The value of the header's request id field.
    pub fn request_id(&self) -> u64 {
        match self {
            Frame::Request(r) => r.request_id,
            Frame::Response(r) => r.request_id,
            Frame::Ping(id) | Frame::Pong(id) => *id,
            Frame::GoAway {
                last_request_id, ..
            } => *last_request_id,
            Frame::Error { request_id, .. } => *request_id,
        }
    }
}
