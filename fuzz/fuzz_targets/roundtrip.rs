//! Encode/decode round trips, in both directions.
//!
//! The first input byte picks a branch (even: raw, odd: structured).
//!
//! **Structured** (odd first byte): the rest of the input is read by `arbitrary` as a
//! [`Case`]: a body limit and an [`ArbFrame`] of any kind (REQUEST, RESPONSE, PING, PONG,
//! GOAWAY, ERROR) with any ids, route, deadline, status, metadata entries and payload or
//! message. Properties:
//!
//! - `Metadata::from_pairs` accepts the entries exactly when the documented limits allow,
//!   and otherwise names the first limit broken (checked against an independent model).
//! - `Encoder::encode` succeeds exactly when the model says so. When it fails, the error is
//!   the documented one for this input: `FrameTooLarge { len, max }` with `len` the body's
//!   real length (metadata section plus payload) when that is above the limit, else
//!   `InvalidUtf8` for a non-OK RESPONSE whose payload is not UTF-8; and nothing is appended
//!   to the output buffer.
//! - When it succeeds, it appends exactly one frame of `36 + body` bytes, and
//!   `Decoder::decode` with the same limit returns exactly `Ok(Some(frame))` and leaves the
//!   buffer empty. `frame` is the input frame except for the one normalization the encoder
//!   documents: the message of a GOAWAY or ERROR is cut to the longest prefix that fits the
//!   limit and ends on a character boundary (a REQUEST or RESPONSE over the limit is refused
//!   instead, and PING/PONG have no body).
//! - Encoding the decoded frame again gives the same bytes.
//! - A decoder whose limit is one byte below the body length refuses the same bytes with
//!   `FrameTooLarge` (a body exactly at the limit is accepted, one byte over is not).
//!
//! **Raw** (even first byte): the rest of the input is fed to a decoder as one buffer.
//! Every frame it accepts re-encodes to exactly the bytes it consumed (the canonical form of
//! `proto-spec/PROTOCOL.md` §3.4); frame errors are skipped, a fatal error ends the input.
#![no_main]

use bytes::{Bytes, BytesMut};
use courier_rpc::proto::metadata::{MAX_METADATA_ENTRIES, MAX_METADATA_LEN};
use courier_rpc::proto::{
    Code, DecodeError, Decoder, EncodeError, Encoder, Frame, Metadata, MetadataError, Request,
    Response, FLAG_METADATA, HEADER_LEN, MAGIC, VERSION,
};
// The derive refers to `arbitrary::...`: bring the re-exported crate into scope by that name.
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

/// Body limit of the raw branch: room for the largest metadata section (16 KiB) and more.
const RAW_MAX: u32 = 32 * 1024;

/// Largest generated fill (a value or payload of one repeated byte): past the 65,535-byte
/// value limit, without needing a large input.
const MAX_FILL: u32 = 70_000;

/// One structured case: the limit both encoder and decoder use, and the frame.
#[derive(Debug, Arbitrary)]
struct Case {
    /// The body limit; small values make "too large" and message cutting easy to reach.
    max_body_len: u16,
    frame: ArbFrame,
}

/// Mirrors [`Frame`], with metadata as plain entries and codes chosen to hit OK often.
#[derive(Debug, Arbitrary)]
enum ArbFrame {
    Request {
        request_id: u64,
        service: u16,
        method: u16,
        deadline_ms: u32,
        metadata: Vec<ArbEntry>,
        payload: ArbBytes,
    },
    Response {
        request_id: u64,
        code: ArbCode,
        metadata: Vec<ArbEntry>,
        payload: ArbBytes,
    },
    Ping(u64),
    Pong(u64),
    GoAway {
        last_request_id: u64,
        code: ArbCode,
        message: String,
    },
    Error {
        request_id: u64,
        code: ArbCode,
        message: String,
    },
}

#[derive(Debug, Arbitrary)]
enum ArbCode {
    Ok,
    /// One of the 17 canonical codes.
    Named(u8),
    /// Any u32, canonical or not.
    Any(u32),
}

impl ArbCode {
    fn code(&self) -> Code {
        match *self {
            ArbCode::Ok => Code::OK,
            ArbCode::Named(n) => Code(u32::from(n) % 17),
            ArbCode::Any(n) => Code(n),
        }
    }
}

/// A byte string: arbitrary bytes, UTF-8 text (status messages), or one byte repeated.
#[derive(Debug, Arbitrary)]
enum ArbBytes {
    Raw(Vec<u8>),
    Text(String),
    Fill { byte: u8, len: u32 },
}

impl ArbBytes {
    fn bytes(&self) -> Vec<u8> {
        match self {
            ArbBytes::Raw(b) => b.clone(),
            ArbBytes::Text(s) => s.as_bytes().to_vec(),
            ArbBytes::Fill { byte, len } => vec![*byte; (len % (MAX_FILL + 1)) as usize],
        }
    }
}

#[derive(Debug, Arbitrary)]
struct ArbEntry {
    key: ArbKey,
    value: ArbBytes,
}

/// A key: any bytes, or bytes folded into the allowed visible-ASCII range `0x21..=0x7E`.
#[derive(Debug, Arbitrary)]
enum ArbKey {
    Visible(Vec<u8>),
    Raw(Vec<u8>),
}

impl ArbKey {
    fn bytes(&self) -> Vec<u8> {
        match self {
            ArbKey::Visible(b) => b.iter().map(|&c| 0x21 + c % 94).collect(),
            ArbKey::Raw(b) => b.clone(),
        }
    }
}

/// The model of `Metadata::from_pairs`: the first limit of `proto-spec/PROTOCOL.md` §5.3 an
/// entry breaks, checked per entry in the documented order, or the section's body length
/// (0 when empty, else 2 + the entries).
fn model_metadata(pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<usize, MetadataError> {
    let mut section = 0;
    for (i, (key, value)) in pairs.iter().enumerate() {
        if key.is_empty() {
            return Err(MetadataError::EmptyKey);
        }
        if key.len() > 255 {
            return Err(MetadataError::KeyTooLong);
        }
        if key.iter().any(|b| !(0x21..=0x7E).contains(b)) {
            return Err(MetadataError::InvalidKeyByte);
        }
        if value.len() > 65_535 {
            return Err(MetadataError::ValueTooLong);
        }
        if i + 1 > MAX_METADATA_ENTRIES {
            return Err(MetadataError::TooManyEntries);
        }
        section += 1 + key.len() + 2 + value.len();
        if section > MAX_METADATA_LEN {
            return Err(MetadataError::SectionLength);
        }
    }
    Ok(if pairs.is_empty() { 0 } else { 2 + section })
}

/// Builds the metadata and checks the builder against the model. On a refusal the frame is
/// built without metadata, so the rest of the case is still exercised.
fn metadata(entries: &[ArbEntry]) -> (Metadata, usize) {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = entries
        .iter()
        .map(|e| (e.key.bytes(), e.value.bytes()))
        .collect();
    let model = model_metadata(&pairs);
    match (
        Metadata::from_pairs(pairs.iter().map(|(k, v)| (k, v))),
        model,
    ) {
        (Ok(md), Ok(len)) => {
            assert_eq!(md.len(), pairs.len(), "entry count");
            assert_eq!(md.is_empty(), pairs.is_empty());
            assert_eq!(md.encoded_len(), len, "section length");
            let back: Vec<(&[u8], &[u8])> = md.iter().collect();
            let want: Vec<(&[u8], &[u8])> = pairs.iter().map(|(k, v)| (&k[..], &v[..])).collect();
            assert_eq!(back, want, "entries in order");
            (md, len)
        }
        (Err(err), Err(want)) => {
            assert_eq!(err, want, "from_pairs refused for another reason");
            (Metadata::new(), 0)
        }
        (got, want) => panic!("from_pairs gave {got:?}, the limits say {want:?}"),
    }
}

/// The frame to encode, and the metadata section length it carries.
fn build(frame: &ArbFrame) -> (Frame, usize) {
    match frame {
        ArbFrame::Request {
            request_id,
            service,
            method,
            deadline_ms,
            metadata: entries,
            payload,
        } => {
            let (metadata, md_len) = metadata(entries);
            let frame = Frame::Request(Request {
                request_id: *request_id,
                service: *service,
                method: *method,
                deadline_ms: *deadline_ms,
                metadata,
                payload: Bytes::from(payload.bytes()),
            });
            (frame, md_len)
        }
        ArbFrame::Response {
            request_id,
            code,
            metadata: entries,
            payload,
        } => {
            let (metadata, md_len) = metadata(entries);
            let frame = Frame::Response(Response {
                request_id: *request_id,
                code: code.code(),
                metadata,
                payload: Bytes::from(payload.bytes()),
            });
            (frame, md_len)
        }
        ArbFrame::Ping(id) => (Frame::Ping(*id), 0),
        ArbFrame::Pong(id) => (Frame::Pong(*id), 0),
        ArbFrame::GoAway {
            last_request_id,
            code,
            message,
        } => (
            Frame::GoAway {
                last_request_id: *last_request_id,
                code: code.code(),
                message: message.clone(),
            },
            0,
        ),
        ArbFrame::Error {
            request_id,
            code,
            message,
        } => (
            Frame::Error {
                request_id: *request_id,
                code: code.code(),
                message: message.clone(),
            },
            0,
        ),
    }
}

/// The longest prefix of `s` of at most `max` bytes made of whole characters.
fn cut(s: &str, max: usize) -> String {
    let mut end = 0;
    for (i, c) in s.char_indices() {
        if i + c.len_utf8() > max {
            break;
        }
        end = i + c.len_utf8();
    }
    s[..end].to_owned()
}

/// The model of `Encoder::encode`: the frame the encoder writes (normalized) and its body
/// length, or the error it must refuse with.
fn model_encode(frame: &Frame, md_len: usize, max: u32) -> Result<(Frame, usize), EncodeError> {
    let max_len = max as usize;
    match frame {
        Frame::Request(Request { payload, .. }) => {
            let len = md_len + payload.len();
            if len > max_len {
                return Err(EncodeError::FrameTooLarge { len, max });
            }
            Ok((frame.clone(), len))
        }
        Frame::Response(Response { code, payload, .. }) => {
            let len = md_len + payload.len();
            if len > max_len {
                return Err(EncodeError::FrameTooLarge { len, max });
            }
            if !code.is_ok() && std::str::from_utf8(payload).is_err() {
                return Err(EncodeError::InvalidUtf8);
            }
            Ok((frame.clone(), len))
        }
        Frame::Ping(_) | Frame::Pong(_) => Ok((frame.clone(), 0)),
        Frame::GoAway {
            last_request_id,
            code,
            message,
        } => {
            let message = cut(message, max_len);
            let len = message.len();
            let frame = Frame::GoAway {
                last_request_id: *last_request_id,
                code: *code,
                message,
            };
            Ok((frame, len))
        }
        Frame::Error {
            request_id,
            code,
            message,
        } => {
            let message = cut(message, max_len);
            let len = message.len();
            let frame = Frame::Error {
                request_id: *request_id,
                code: *code,
                message,
            };
            Ok((frame, len))
        }
    }
}

fn structured(data: &[u8]) {
    let Ok(case) = Case::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let max = u32::from(case.max_body_len);
    let (frame, md_len) = build(&case.frame);
    let expected = model_encode(&frame, md_len, max);

    // Encode after some bytes already in the buffer: the encoder appends, or leaves it as is.
    const BEFORE: &[u8] = b"earlier frames";
    let mut buf = BytesMut::from(BEFORE);
    let result = Encoder::new(max).encode(&frame, &mut buf);
    let (normalized, body_len) = match (result, expected) {
        (Ok(()), Ok(expected)) => expected,
        (Err(err), Err(want)) => {
            assert_eq!(err, want, "refused for another reason");
            assert_eq!(&buf[..], BEFORE, "a refused frame appended bytes");
            return;
        }
        (got, want) => panic!("encode gave {got:?}, expected {want:?} for {frame:?}"),
    };
    assert_eq!(&buf[..BEFORE.len()], BEFORE, "earlier bytes changed");
    let _ = buf.split_to(BEFORE.len());
    let wire = buf.clone().freeze();
    assert_eq!(wire.len(), HEADER_LEN + body_len, "frame length");
    assert_eq!(wire[..4], MAGIC);
    assert_eq!(wire[4], VERSION);
    assert_eq!(wire[5], normalized.kind() as u8, "kind byte");
    let flags = u16::from_be_bytes([wire[6], wire[7]]);
    assert_eq!(flags, if md_len > 0 { FLAG_METADATA } else { 0 }, "flags");
    assert_eq!(flags, normalized.flags());
    let claimed = u32::from_be_bytes([wire[24], wire[25], wire[26], wire[27]]);
    assert_eq!(claimed as usize, body_len, "body length field");

    // Decode with the same limit: exactly the (normalized) frame, and nothing left over.
    let mut decoder = Decoder::new(max);
    assert_eq!(decoder.decode(&mut buf), Ok(Some(normalized.clone())));
    assert!(buf.is_empty(), "{} bytes left after the frame", buf.len());
    assert!(decoder.is_idle());
    assert_eq!(decoder.decode(&mut buf), Ok(None));

    // Re-encoding the decoded frame gives the same bytes.
    let mut again = BytesMut::new();
    Encoder::new(max)
        .encode(&normalized, &mut again)
        .expect("a decoded frame re-encodes");
    assert_eq!(&again[..], &wire[..], "re-encoding differs");

    // One byte under the body length: the header alone is refused as too large.
    if body_len > 0 {
        let below = body_len as u32 - 1;
        let mut short = BytesMut::from(&wire[..]);
        assert_eq!(
            Decoder::new(below).decode(&mut short),
            Err(DecodeError::FrameTooLarge {
                request_id: normalized.request_id(),
                len: claimed,
                max: below,
            })
        );
    }
}

fn raw(data: &[u8]) {
    let mut decoder = Decoder::new(RAW_MAX);
    let encoder = Encoder::new(RAW_MAX);
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.clone();
        match decoder.decode(&mut buf) {
            Ok(Some(frame)) => {
                let used = before.len() - buf.len();
                let mut again = BytesMut::new();
                encoder
                    .encode(&frame, &mut again)
                    .expect("a decoded frame re-encodes");
                assert_eq!(&again[..], &before[..used], "re-encoding differs");
            }
            Ok(None) => {
                assert_eq!(buf, before, "Ok(None) consumed bytes");
                break;
            }
            Err(err) if err.is_fatal() => break,
            Err(_) => assert!(buf.len() < before.len(), "a frame error consumed nothing"),
        }
    }
}

fuzz_target!(|input: &[u8]| {
    if let Some((&branch, rest)) = input.split_first() {
        if branch % 2 == 0 {
            raw(rest);
        } else {
            structured(rest);
        }
    }
});
