//! The frame encoder: appends frames to a reused output buffer.

use byteorder::{BigEndian, ByteOrder};
use bytes::{BufMut, BytesMut};

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
/// use courier::proto::{Code, Encoder, Metadata, HEADER_LEN};
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
    /// RESPONSE whose payload is not UTF-8.
    pub fn encode(&self, frame: &Frame, dst: &mut BytesMut) -> Result<(), EncodeError> {
        match frame {
            Frame::Request(Request {
                request_id,
                service,
                method,
                deadline_ms,
                metadata,
                payload,
            }) => self.encode_request_with(
                dst,
                *request_id,
                *service,
                *method,
                *deadline_ms,
                metadata,
                |b| b.extend_from_slice(payload),
            ),
            Frame::Response(Response {
                request_id,
                code,
                metadata,
                payload,
            }) => self.encode_response_with(dst, *request_id, *code, metadata, |b| {
                b.extend_from_slice(payload)
            }),
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
            word: (u32::from(service) << 16) | u32::from(method),
            deadline_ms,
        };
        self.encode_with(dst, head, metadata, write)
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
        self.encode_with(dst, head, metadata, write)
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
        let _ = self.encode_with(dst, head, &Metadata::new(), |b| {
            b.extend_from_slice(message.as_bytes())
        });
    }

    fn encode_with(
        &self,
        dst: &mut BytesMut,
        head: Head,
        metadata: &Metadata,
        write: impl FnOnce(&mut BytesMut),
    ) -> Result<(), EncodeError> {
        let start = dst.len();
        dst.reserve(HEADER_LEN + metadata.encoded_len());
        dst.put_slice(&MAGIC);
        dst.put_u8(VERSION);
        dst.put_u8(head.kind as u8);
        dst.put_u16(head.flags);
        dst.put_u64(head.request_id);
        dst.put_u32(head.word);
        dst.put_u32(head.deadline_ms);
        // Body length, body CRC and header CRC are filled in once the body is written.
        dst.put_bytes(0, 12);
        metadata.encode(dst);
        let payload_start = dst.len();
        write(dst);
        let body_len = dst.len() - start - HEADER_LEN;
        if body_len > self.max_body_len as usize {
            dst.truncate(start);
            return Err(EncodeError::FrameTooLarge {
                len: body_len,
                max: self.max_body_len,
            });
        }
        let needs_utf8 = match head.kind {
            FrameKind::Response => head.word != Code::OK.0,
            FrameKind::GoAway | FrameKind::Error => true,
            _ => false,
        };
        if needs_utf8 && std::str::from_utf8(&dst[payload_start..]).is_err() {
            dst.truncate(start);
            return Err(EncodeError::InvalidUtf8);
        }
        let body_crc = crc32fast::hash(&dst[start + HEADER_LEN..]);
        let header = &mut dst[start..start + HEADER_LEN];
        // `body_len <= max_body_len`, a u32.
        BigEndian::write_u32(&mut header[24..28], body_len as u32);
        BigEndian::write_u32(&mut header[28..32], body_crc);
        let header_crc = crc32fast::hash(&header[..32]);
        BigEndian::write_u32(&mut header[32..36], header_crc);
        Ok(())
    }
}

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
