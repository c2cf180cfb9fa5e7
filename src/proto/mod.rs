//! The wire protocol, version 1: frames and their codec. Pure data: no IO, no clock, no threads.
//!
//! The normative description is `proto-spec/PROTOCOL.md`; this module implements it and every
//! check names the check of §8 ("Receiving frames: ordered checks") it enforces.
//!
//! # Frame layout
//!
//! A frame is a fixed 36-byte header followed by `body length` bytes of body. All integers are
//! big-endian. Both checksums are CRC-32 with the IEEE 802.3 polynomial (what `crc32fast`
//! computes): the header CRC covers header bytes 0..32, the body CRC covers exactly the body.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +---------------------------------------------------------------+
//! |                  magic = "COUR" (0x434F5552)                  |  0
//! +---------------+---------------+-------------------------------+
//! |  version = 1  |     kind      |             flags             |  4
//! +---------------+---------------+-------------------------------+
//! |                                                               |  8
//! +                      request id (u64)                         +
//! |                                                               | 12
//! +-------------------------------+-------------------------------+
//! |     service id (REQUEST)      |      method id (REQUEST)      | 16
//! |           or status (RESPONSE, GOAWAY, ERROR; u32)            |
//! +---------------------------------------------------------------+
//! |          deadline in ms (REQUEST; 0 = none), else 0           | 20
//! +---------------------------------------------------------------+
//! |                      body length (u32)                        | 24
//! +---------------------------------------------------------------+
//! |                 body CRC-32 (over the body)                   | 28
//! +---------------------------------------------------------------+
//! |              header CRC-32 (over bytes 0..32)                 | 32
//! +---------------------------------------------------------------+
//! |  body: [metadata section if flags & 0x0001] payload ...       | 36
//! +---------------------------------------------------------------+
//! ```
//!
//! Kinds: 1 REQUEST, 2 RESPONSE, 3 PING, 4 PONG, 5 GOAWAY, 6 ERROR. The metadata section is
//! drawn in [`metadata`]. Status codes are gRPC's canonical codes ([`Code`]).
//!
//! # Use
//!
//! [`Decoder::decode`] turns bytes into [`Frame`]s; [`Encoder`] appends frames to a buffer.
//! The server's connection state and the clients all use these two types. With feature
//! `tokio`, `FrameCodec` is the two as tokio-util's `Decoder` and `Encoder`, for
//! `tokio_util::codec::Framed`.

mod crc;
mod decoder;
mod encoder;
mod error;
mod frame;
pub mod metadata;
mod status;
#[cfg(feature = "tokio")]
mod tokio_codec;

pub use decoder::{peek_requests, Decoder, RESERVE_STEP};
pub use encoder::Encoder;
pub use error::{DecodeError, EncodeError};
pub use frame::{
    Frame, FrameKind, Request, Response, DEFAULT_MAX_BODY_LEN, FLAG_METADATA, HEADER_LEN, MAGIC,
    VERSION,
};
pub use metadata::{Metadata, MetadataError};
pub use status::{Code, Status};
#[cfg(feature = "tokio")]
pub use tokio_codec::{CodecError, FrameCodec};

#[cfg(test)]
mod tests;
