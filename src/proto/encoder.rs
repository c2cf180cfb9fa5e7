//! The frame encoder: appends frames to a reused output buffer.

use byteorder::{BigEndian, ByteOrder};
use bytes::BytesMut;

use super::crc::{crc32_with, prototype};
use super::error::EncodeError;
use super::frame::{
    Frame, FrameKind, Request, Response, FLAG_METADATA, HEADER_LEN, MAGIC, VERSION,
};
use super::metadata::Metadata;
use super::status::Code;

/// Encodes frames, refusing any whose body is above its limit.
///
/// Every method appends one whole frame to `dst` or, on error, leaves `dst` as it was. The
/// `*_with` methods let the caller write the payload straight into the output buffer (no
/// intermediate copy); the checksums are filled in afterwards.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use courier_rpc::proto::{Code, Encoder, Metadata, HEADER_LEN};
///
/// let encoder = Encoder::new(1024);
/// let mut out = BytesMut::new();
/// encoder
///     .encode_response_with(&mut out, 42, Code::OK, &Metadata::new(), |body| {
///         body.extend_from_slice(b"hello")
///     })
///     .unwrap();
/// assert_eq!(out.len(), HEADER_LEN + 5);
///
/// // Too large: refused, nothing appended.
/// let err = encoder.encode_response_with(&mut out, 43, Code::OK, &Metadata::new(), |body| {
///     body.extend_from_slice(&[0; 2000])
/// });
/// assert!(err.is_err());
/// assert_eq!(out.len(), HEADER_LEN + 5);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Encoder {
    max_body_len: u32,
}

/// Header fields before the length and checksums are known.
struct Head {
    kind: FrameKind,
    flags: u16,
    request_id: u64,
    word: u32,
    deadline_ms: u32,
}

impl Head {
    /// Whether the payload must be UTF-8: the message of a non-OK RESPONSE, a GOAWAY or an
    /// ERROR (`proto-spec/PROTOCOL.md` §4).
    #[inline]
    fn needs_utf8(&self) -> bool {
        match self.kind {
            FrameKind::Response => self.word != Code::OK.0,
            FrameKind::GoAway | FrameKind::Error => true,
            _ => false,
        }
    }

    /// The whole 36-byte header, both checksums included, for a body of `body_len` bytes whose
    /// CRC-32 is `body_crc`.
    #[inline]
    fn to_bytes(&self, body_len: u32, body_crc: u32) -> [u8; HEADER_LEN] {
        let mut header = [0; HEADER_LEN];
        header[..4].copy_from_slice(&MAGIC);
        header[4] = VERSION;
        header[5] = self.kind as u8;
        BigEndian::write_u16(&mut header[6..8], self.flags);
        BigEndian::write_u64(&mut header[8..16], self.request_id);
        BigEndian::write_u32(&mut header[16..20], self.word);
        BigEndian::write_u32(&mut header[20..24], self.deadline_ms);
        BigEndian::write_u32(&mut header[24..28], body_len);
        BigEndian::write_u32(&mut header[28..32], body_crc);
        let header_crc = crc32_with(prototype(), &header[..32]);
        BigEndian::write_u32(&mut header[32..36], header_crc);
        header
    }
}

impl Encoder {
    /// An encoder that refuses bodies over `max_body_len` bytes (metadata included).
    pub fn new(max_body_len: u32) -> Self {
        Encoder { max_body_len }
    }

    /// The body limit in bytes.
    pub fn max_body_len(&self) -> u32 {
        self.max_body_len
    }

    /// Appends `frame` to `dst`.
    ///
    /// # Errors
    /// [`EncodeError::FrameTooLarge`] for a REQUEST or RESPONSE over the limit (the message
    /// of a GOAWAY or ERROR is cut to fit instead); [`EncodeError::InvalidUtf8`] for a non-OK
    /// RESPONSE whose payload is not UTF-8. On error nothing is appended.
    pub fn encode(&self, frame: &Frame, dst: &mut BytesMut) -> Result<(), EncodeError> {
        match frame {
            Frame::Request(Request {
                request_id,
                service,
                method,
                deadline_ms,
                metadata,
                payload,
            }) => {
                let head = Head {
                    kind: FrameKind::Request,
                    flags: metadata_flag(metadata),
                    request_id: *request_id,
                    word: route_word(*service, *method),
                    deadline_ms: *deadline_ms,
                };
                self.encode_parts(dst, &head, metadata, payload)
            }
            Frame::Response(Response {
                request_id,
                code,
                metadata,
                payload,
            }) => {
                let head = Head {
                    kind: FrameKind::Response,
                    flags: metadata_flag(metadata),
                    request_id: *request_id,
                    word: code.0,
                    deadline_ms: 0,
                };
                self.encode_parts(dst, &head, metadata, payload)
            }
            Frame::Ping(id) => {
                self.encode_simple(dst, FrameKind::Ping, *id, Code::OK, "");
                Ok(())
            }
            Frame::Pong(id) => {
                self.encode_simple(dst, FrameKind::Pong, *id, Code::OK, "");
                Ok(())
            }
            Frame::GoAway {
                last_request_id,
                code,
                message,
            } => {
                self.encode_simple(dst, FrameKind::GoAway, *last_request_id, *code, message);
                Ok(())
            }
            Frame::Error {
                request_id,
                code,
                message,
            } => {
                self.encode_simple(dst, FrameKind::Error, *request_id, *code, message);
                Ok(())
            }
        }
    }

    /// Appends a REQUEST whose payload `write` puts into the buffer.
    ///
    /// # Errors
    /// [`EncodeError::FrameTooLarge`] when metadata plus payload exceed the limit.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_request_with(
        &self,
        dst: &mut BytesMut,
        request_id: u64,
        service: u16,
        method: u16,
        deadline_ms: u32,
        metadata: &Metadata,
        write: impl FnOnce(&mut BytesMut),
    ) -> Result<(), EncodeError> {
        let head = Head {
            kind: FrameKind::Request,
            flags: metadata_flag(metadata),
            request_id,
            word: route_word(service, method),
            deadline_ms,
        };
        self.encode_with(dst, &head, metadata, write)
    }

    /// Appends a RESPONSE whose payload `write` puts into the buffer. For a non-OK `code` the
    /// payload is the UTF-8 status message.
    ///
    /// # Errors
    /// [`EncodeError::FrameTooLarge`] over the limit; [`EncodeError::InvalidUtf8`] for a
    /// non-OK payload that is not UTF-8.
    pub fn encode_response_with(
        &self,
        dst: &mut BytesMut,
        request_id: u64,
        code: Code,
        metadata: &Metadata,
        write: impl FnOnce(&mut BytesMut),
    ) -> Result<(), EncodeError> {
        let head = Head {
            kind: FrameKind::Response,
            flags: metadata_flag(metadata),
            request_id,
            word: code.0,
            deadline_ms: 0,
        };
        self.encode_with(dst, &head, metadata, write)
    }

    /// Appends a RESPONSE that carries only a status: `message` for a non-OK `code`, an empty
    /// payload for OK. A message that would exceed the limit is cut at a character boundary.
    pub fn encode_status(&self, dst: &mut BytesMut, request_id: u64, code: Code, message: &str) {
        self.encode_simple(dst, FrameKind::Response, request_id, code, message);
    }

    /// Appends a frame with no metadata and at most a status message: PING, PONG, GOAWAY,
    /// ERROR, or a status-only RESPONSE. PING and PONG carry neither code nor message, nor does
    /// an OK RESPONSE carry a message; a message that would exceed the limit is cut at a
    /// character boundary. Cannot fail. (A REQUEST is built with
    /// [`Encoder::encode_request_with`]; given here it gets route 0/0 and an empty payload.)
    pub fn encode_simple(
        &self,
        dst: &mut BytesMut,
        kind: FrameKind,
        request_id: u64,
        code: Code,
        message: &str,
    ) {
        let (word, message) = match kind {
            FrameKind::Request | FrameKind::Ping | FrameKind::Pong => (0, ""),
            FrameKind::Response if code.is_ok() => (0, ""),
            _ => (code.0, truncate_utf8(message, self.max_body_len as usize)),
        };
        let head = Head {
            kind,
            flags: 0,
            request_id,
            word,
            deadline_ms: 0,
        };
        // Cannot fail: the message fits the limit and is UTF-8.
        let _ = self.encode_parts(dst, &head, &Metadata::new(), message.as_bytes());
    }

    /// Appends a frame whose payload is already in memory. The limit and UTF-8 checks come
    /// first, so a refused frame costs no copy.
    #[inline]
    fn encode_parts(
        &self,
        dst: &mut BytesMut,
        head: &Head,
        metadata: &Metadata,
        payload: &[u8],
    ) -> Result<(), EncodeError> {
        let body_len = metadata.encoded_len().saturating_add(payload.len());
        if body_len > self.max_body_len as usize {
            return Err(EncodeError::FrameTooLarge {
                len: body_len,
                max: self.max_body_len,
            });
        }
        if head.needs_utf8() && std::str::from_utf8(payload).is_err() {
            return Err(EncodeError::InvalidUtf8);
        }
        let mut crc = prototype().clone();
        metadata.update_crc(&mut crc);
        crc.update(payload);
        // `body_len <= max_body_len`, a u32.
        let header = head.to_bytes(body_len as u32, crc.finalize());
        dst.reserve(HEADER_LEN + body_len);
        dst.extend_from_slice(&header);
        metadata.encode(dst);
        dst.extend_from_slice(payload);
        Ok(())
    }

    /// Appends a frame whose payload `write` puts into the buffer; the length and checksums
    /// are filled in afterwards. On error `dst` is truncated back to where it was.
    fn encode_with(
        &self,
        dst: &mut BytesMut,
        head: &Head,
        metadata: &Metadata,
        write: impl FnOnce(&mut BytesMut),
    ) -> Result<(), EncodeError> {
        let start = dst.len();
        let body_start = start + HEADER_LEN;
        dst.reserve(HEADER_LEN + metadata.encoded_len());
        // The header is written once the body is known.
        dst.extend_from_slice(&[0; HEADER_LEN]);
        metadata.encode(dst);
        let payload_start = dst.len();
        write(dst);
        let body_len = dst.len() - body_start;
        if body_len > self.max_body_len as usize {
            dst.truncate(start);
            return Err(EncodeError::FrameTooLarge {
                len: body_len,
                max: self.max_body_len,
            });
        }
        if head.needs_utf8() && std::str::from_utf8(&dst[payload_start..]).is_err() {
            dst.truncate(start);
            return Err(EncodeError::InvalidUtf8);
        }
        let body_crc = crc32_with(prototype(), &dst[body_start..]);
        // `body_len <= max_body_len`, a u32.
        let header = head.to_bytes(body_len as u32, body_crc);
        dst[start..body_start].copy_from_slice(&header);
        Ok(())
    }
}

/// The REQUEST route word: service id in the high 16 bits, method id in the low 16.
#[inline]
fn route_word(service: u16, method: u16) -> u32 {
    (u32::from(service) << 16) | u32::from(method)
}

#[inline]
fn metadata_flag(metadata: &Metadata) -> u16 {
    if metadata.is_empty() {
        0
    } else {
        FLAG_METADATA
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
