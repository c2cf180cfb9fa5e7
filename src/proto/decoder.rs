//! The streaming frame decoder.

use byteorder::{BigEndian, ByteOrder};
use bytes::{Buf, Bytes, BytesMut};
use crc32fast::Hasher;

use super::crc::{crc32_with, prototype};
use super::error::DecodeError;
use super::frame::{
    Frame, FrameKind, Request, Response, DEFAULT_MAX_BODY_LEN, FLAG_METADATA, HEADER_LEN, MAGIC,
    VERSION,
};
use super::metadata::Metadata;
use super::status::Code;

/// Most bytes the decoder asks a buffer to reserve at once while a body is arriving: 64 KiB.
///
/// A body's length is what the peer claims in the header, not what it has sent. The decoder
/// never reserves that length up front, which would let a peer that sends one header and
/// nothing more make the receiver allocate up to the body limit; it grows the buffer by at
/// most this step beyond the bytes that have arrived, so memory follows bytes received.
pub const RESERVE_STEP: usize = 64 * 1024;

/// A validated header: all header checks (`proto-spec/PROTOCOL.md` §8, checks 1–7) have passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    kind: FrameKind,
    flags: u16,
    request_id: u64,
    word: u32,
    deadline_ms: u32,
    body_len: u32,
    body_crc: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for (the rest of) a header.
    Head,
    /// The header was valid; waiting for its body.
    Body(Header),
    /// A fatal error was returned; every later call returns it again.
    Poisoned(DecodeError),
}

/// Decodes frames from a byte stream, one at a time, without IO.
///
/// The contract is tokio-util's `Decoder`: [`Decoder::decode`] returns `Ok(Some(frame))` and
/// removes the frame's bytes from the buffer, `Ok(None)` when more bytes are needed (never an
/// error, nothing removed), or a [`DecodeError`]. Call it in a loop until `Ok(None)`: one read
/// can hold many frames. A two-state machine (header, then body) means a body that arrives in
/// pieces is not parsed again.
///
/// After a fatal error ([`DecodeError::is_fatal`]) the decoder is poisoned and returns the same
/// error forever; after a frame error it has consumed that frame and goes on with the next.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use courier_rpc::proto::{Decoder, Encoder, Frame, DEFAULT_MAX_BODY_LEN};
///
/// let mut wire = BytesMut::new();
/// Encoder::new(DEFAULT_MAX_BODY_LEN).encode(&Frame::Ping(7), &mut wire).unwrap();
///
/// let mut decoder = Decoder::new(DEFAULT_MAX_BODY_LEN);
/// let mut rx = BytesMut::new();
/// rx.extend_from_slice(&wire[..10]);
/// assert_eq!(decoder.decode(&mut rx), Ok(None)); // half a header: need more bytes
/// rx.extend_from_slice(&wire[10..]);
/// assert_eq!(decoder.decode(&mut rx), Ok(Some(Frame::Ping(7))));
/// assert!(rx.is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct Decoder {
    max_body_len: u32,
    state: State,
    /// Computes both checksums: a clone of `crc::prototype`, whose CRC kernel was chosen once
    /// for the process.
    crc: Hasher,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_BODY_LEN)
    }
}

impl Decoder {
    /// A decoder that accepts bodies up to `max_body_len` bytes (metadata included).
    pub fn new(max_body_len: u32) -> Self {
        Decoder {
            max_body_len,
            state: State::Head,
            crc: prototype().clone(),
        }
    }

    /// The body limit in bytes.
    #[inline]
    pub fn max_body_len(&self) -> u32 {
        self.max_body_len
    }

    /// Changes the largest body accepted, from the next frame header on (a frame whose header
    /// was already checked keeps the limit it was checked against). A server lowers it while
    /// a connection has not authenticated (`proto-spec/PROTOCOL.md`, identity section).
    pub fn set_max_body_len(&mut self, max_body_len: u32) {
        self.max_body_len = max_body_len;
    }

    /// `true` when no frame is partly decoded (no header has been accepted whose body is
    /// still awaited). Bytes of an incomplete header may still sit in the caller's buffer.
    #[inline]
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Head)
    }

    /// Bytes still missing from the frame at the front of a buffer that holds `buffered`
    /// bytes, as far as the decoder knows: the rest of the 36-byte header while no header has
    /// been accepted, the rest of the whole frame (header and body) once one has, and 0 when
    /// poisoned. A reader that reads at most this plus a fixed chunk per read never buffers
    /// more than one frame plus that chunk.
    pub fn bytes_missing(&self, buffered: usize) -> usize {
        match &self.state {
            State::Head => HEADER_LEN.saturating_sub(buffered),
            State::Body(header) => HEADER_LEN
                .saturating_add(header.body_len as usize)
                .saturating_sub(buffered),
            State::Poisoned(_) => 0,
        }
    }

    /// Decodes the next frame from the front of `src`.
    ///
    /// On `Ok(Some(_))` and on a frame error, exactly the frame's `36 + body length` bytes have
    /// been removed from the front of `src`; a decoded body is a slice of `src`'s memory, not a
    /// copy. On `Ok(None)` and on a fatal error nothing has been removed; while a body is
    /// awaited, `src` may have been asked to reserve up to [`RESERVE_STEP`] more bytes.
    ///
    /// # Errors
    /// A [`DecodeError`]; see its docs for which are fatal.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let header = match &self.state {
            State::Head => match check_header(src, self.max_body_len, &self.crc) {
                Ok(Some(header)) => header,
                Ok(None) => return Ok(None),
                Err(err) => {
                    self.state = State::Poisoned(err.clone());
                    return Err(err);
                }
            },
            State::Body(header) => *header,
            State::Poisoned(err) => return Err(err.clone()),
        };
        // `body_len <= max_body_len <= u32::MAX`: no overflow on 64-bit targets; saturating
        // keeps a 32-bit target from wrapping.
        let frame_len = HEADER_LEN.saturating_add(header.body_len as usize);
        if src.len() < frame_len {
            self.state = State::Body(header);
            // Grow by what is missing, but never more than one bounded step ahead.
            src.reserve((frame_len - src.len()).min(RESERVE_STEP));
            return Ok(None);
        }
        self.state = State::Head;
        let mut body = src.split_to(frame_len).freeze();
        body.advance(HEADER_LEN);
        decode_body(&header, body, &self.crc)
    }
}

/// Calls `f` with the service, method and payload (as a range of `src`) of each REQUEST frame
/// among the first `max_frames` complete frames at the start of `src`, without checking them:
/// for a server that wants to know what a batch of pipelined requests will touch before it
/// decodes and serves them one by one (a prefetch). Returns the complete frames walked.
///
/// Nothing it gives is to be believed. It reads only what it needs to find the next frame
/// (the kind at byte 5, the flags at 6..8, the body length at 24..28; the service and method
/// at 16..20) and checks no magic, version, limit or CRC: [`Decoder::decode`] does, and the
/// frames' fate is its verdict alone. Each range is within `src`. It stops at the first frame
/// that is not all in `src` (whatever length its header claims: nothing is reserved or read
/// past `src`), and skips REQUESTs with a metadata section (their payload is not at the body's
/// start) and every other kind.
pub fn peek_requests(
    src: &[u8],
    max_frames: usize,
    mut f: impl FnMut(u16, u16, std::ops::Range<usize>),
) -> usize {
    let mut at = 0;
    let mut frames = 0;
    while frames < max_frames {
        let Some(head) = src
            .get(at..)
            .and_then(|rest| rest.get(..HEADER_LEN))
            .and_then(|head| <&[u8; HEADER_LEN]>::try_from(head).ok())
        else {
            break;
        };
        let body_len = BigEndian::read_u32(&head[24..28]) as usize;
        let body = at + HEADER_LEN;
        let Some(end) = body.checked_add(body_len).filter(|&end| end <= src.len()) else {
            break;
        };
        let flags = BigEndian::read_u16(&head[6..8]);
        if head[5] == FrameKind::Request as u8 && flags & FLAG_METADATA == 0 {
            let word = BigEndian::read_u32(&head[16..20]);
            f((word >> 16) as u16, (word & 0xFFFF) as u16, body..end);
        }
        frames += 1;
        at = end;
    }
    frames
}

/// Header checks, in the order of `proto-spec/PROTOCOL.md` §8, on whatever prefix has arrived.
#[inline]
fn check_header(
    src: &[u8],
    max_body_len: u32,
    crc: &Hasher,
) -> Result<Option<Header>, DecodeError> {
    // PROTOCOL.md §8 check 1: each magic byte as soon as it arrives.
    for (offset, (&found, &want)) in src.iter().zip(MAGIC.iter()).enumerate() {
        if found != want {
            return Err(DecodeError::BadMagic { offset, found });
        }
    }
    // PROTOCOL.md §8 check 2: version, as soon as byte 4 arrives.
    if let Some(&version) = src.get(4) {
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion { version });
        }
    }
    // PROTOCOL.md §8 check 3: kind, as soon as byte 5 arrives.
    let kind = match src.get(5) {
        Some(&byte) => FrameKind::from_u8(byte).ok_or(DecodeError::UnknownKind { kind: byte })?,
        None => return Ok(None),
    };
    // A fixed-size array: the field reads below need no bounds checks.
    let Some(head) = src
        .get(..HEADER_LEN)
        .and_then(|head| <&[u8; HEADER_LEN]>::try_from(head).ok())
    else {
        return Ok(None);
    };
    // PROTOCOL.md §8 check 4: the header checksum, before any other field is believed.
    let expected = BigEndian::read_u32(&head[32..36]);
    let actual = crc32_with(crc, &head[..32]);
    if expected != actual {
        return Err(DecodeError::HeaderChecksum { expected, actual });
    }
    let header = Header {
        kind,
        flags: BigEndian::read_u16(&head[6..8]),
        request_id: BigEndian::read_u64(&head[8..16]),
        word: BigEndian::read_u32(&head[16..20]),
        deadline_ms: BigEndian::read_u32(&head[20..24]),
        body_len: BigEndian::read_u32(&head[24..28]),
        body_crc: BigEndian::read_u32(&head[28..32]),
    };
    let request_id = header.request_id;
    // PROTOCOL.md §8 check 5: the length limit, before any body byte is awaited or reserved.
    if header.body_len > max_body_len {
        return Err(DecodeError::FrameTooLarge {
            request_id,
            len: header.body_len,
            max: max_body_len,
        });
    }
    // PROTOCOL.md §8 check 6: flags.
    let allowed = if kind.allows_metadata() {
        FLAG_METADATA
    } else {
        0
    };
    if header.flags & !allowed != 0 {
        return Err(DecodeError::InvalidFlags {
            request_id,
            kind,
            flags: header.flags,
        });
    }
    // PROTOCOL.md §8 check 7: fields that must be zero for this kind.
    let reserved = |field| DecodeError::ReservedNotZero {
        request_id,
        kind,
        field,
    };
    let is_ping = matches!(kind, FrameKind::Ping | FrameKind::Pong);
    if is_ping && header.word != 0 {
        return Err(reserved("status word"));
    }
    if kind != FrameKind::Request && header.deadline_ms != 0 {
        return Err(reserved("deadline"));
    }
    if is_ping && header.body_len != 0 {
        return Err(reserved("body length"));
    }
    Ok(Some(header))
}

/// Body checks (`proto-spec/PROTOCOL.md` §8, checks 8–10) and the typed frame: always `Some`,
/// in [`Decoder::decode`]'s return type so that the result is built where it is returned.
#[inline]
fn decode_body(header: &Header, body: Bytes, crc: &Hasher) -> Result<Option<Frame>, DecodeError> {
    let (request_id, kind) = (header.request_id, header.kind);
    // PROTOCOL.md §8 check 8: the body checksum.
    let actual = crc32_with(crc, &body);
    if actual != header.body_crc {
        return Err(DecodeError::BodyChecksum {
            request_id,
            kind,
            expected: header.body_crc,
            actual,
        });
    }
    // PROTOCOL.md §8 check 9: the metadata section.
    let (metadata, payload) = if header.flags & FLAG_METADATA != 0 {
        Metadata::parse(&body).map_err(|reason| DecodeError::InvalidMetadata {
            request_id,
            kind,
            reason,
        })?
    } else {
        (Metadata::new(), body)
    };
    // PROTOCOL.md §8 check 10: messages are UTF-8.
    let message = || match std::str::from_utf8(&payload) {
        Ok(message) => Ok(message.to_owned()),
        Err(_) => Err(DecodeError::InvalidUtf8 { request_id, kind }),
    };
    Ok(Some(match kind {
        FrameKind::Request => Frame::Request(Request {
            request_id,
            service: (header.word >> 16) as u16,
            method: (header.word & 0xFFFF) as u16,
            deadline_ms: header.deadline_ms,
            metadata,
            payload,
        }),
        FrameKind::Response => {
            let code = Code(header.word);
            if !code.is_ok() && std::str::from_utf8(&payload).is_err() {
                return Err(DecodeError::InvalidUtf8 { request_id, kind });
            }
            Frame::Response(Response {
                request_id,
                code,
                metadata,
                payload,
            })
        }
        FrameKind::Ping => Frame::Ping(request_id),
        FrameKind::Pong => Frame::Pong(request_id),
        FrameKind::GoAway => Frame::GoAway {
            last_request_id: request_id,
            code: Code(header.word),
            message: message()?,
        },
        FrameKind::Error => Frame::Error {
            request_id,
            code: Code(header.word),
            message: message()?,
        },
    }))
}
