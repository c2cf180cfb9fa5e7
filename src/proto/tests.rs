//! Codec unit tests: delivery shapes, every decode error, and round-trip properties.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

const MAX: u32 = 1024;

fn encode(frame: &Frame) -> BytesMut {
    let mut out = BytesMut::new();
    Encoder::new(MAX).encode(frame, &mut out).expect("encodes");
    out
}

fn request(id: u64, payload: &'static [u8]) -> Frame {
    Frame::Request(Request {
        request_id: id,
        service: 2,
        method: 1,
        deadline_ms: 250,
        metadata: Metadata::new(),
        payload: Bytes::from_static(payload),
    })
}

fn decode_all(decoder: &mut Decoder, buf: &mut BytesMut) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode(buf).expect("valid") {
        frames.push(frame);
    }
    frames
}

#[test]
fn read_single_frame_one_packet() {
    let frame = request(1, b"hello");
    let mut buf = encode(&frame);
    let mut dec = Decoder::new(MAX);
    assert_eq!(dec.decode(&mut buf), Ok(Some(frame)));
    assert!(buf.is_empty());
    assert_eq!(dec.decode(&mut buf), Ok(None));
}

#[test]
fn read_single_frame_multi_packet() {
    let frame = request(u64::MAX, b"split across many reads");
    let wire = encode(&frame);
    let mut dec = Decoder::new(MAX);
    let mut buf = BytesMut::new();
    for (i, byte) in wire.iter().enumerate() {
        buf.extend_from_slice(&[*byte]);
        let got = dec.decode(&mut buf).expect("valid");
        if i + 1 < wire.len() {
            assert_eq!(got, None, "frame completed early at byte {i}");
        } else {
            assert_eq!(got, Some(frame.clone()));
        }
    }
}

#[test]
fn read_multi_frame_one_packet() {
    let frames = vec![
        request(1, b"a"),
        Frame::Ping(9),
        request(2, b""),
        Frame::Response(Response {
            request_id: 3,
            code: Code::NOT_FOUND,
            metadata: Metadata::new(),
            payload: Bytes::from_static(b"no such key"),
        }),
    ];
    let mut buf = BytesMut::new();
    for f in &frames {
        buf.extend_from_slice(&encode(f));
    }
    let mut dec = Decoder::new(MAX);
    assert_eq!(decode_all(&mut dec, &mut buf), frames);
    assert!(buf.is_empty());
}

#[test]
fn body_is_a_slice_of_the_read_buffer() {
    let mut buf = encode(&request(1, b"zero-copy body"));
    let start = buf.as_ptr() as usize;
    let Ok(Some(Frame::Request(req))) = Decoder::new(MAX).decode(&mut buf) else {
        panic!("expected a request");
    };
    assert_eq!(req.payload.as_ptr() as usize, start + HEADER_LEN);
}

#[test]
fn bad_magic_is_reported_on_the_first_wrong_byte() {
    let mut buf = BytesMut::from(&b"G"[..]);
    assert_eq!(
        Decoder::new(MAX).decode(&mut buf),
        Err(DecodeError::BadMagic {
            offset: 0,
            found: b'G'
        })
    );
}

#[test]
fn fatal_error_poisons_the_decoder() {
    let mut buf = BytesMut::from(&b"\x16\x03\x01"[..]);
    let mut dec = Decoder::new(MAX);
    let err = dec.decode(&mut buf).expect_err("TLS is not courier");
    assert!(err.is_fatal());
    buf.clear();
    buf.extend_from_slice(&encode(&Frame::Ping(1)));
    assert_eq!(dec.decode(&mut buf), Err(err));
}

#[test]
fn every_header_error() {
    let good = encode(&request(5, b"body"));
    let fix_crc = |b: &mut BytesMut| {
        let crc = crc32fast::hash(&b[..32]);
        b[32..36].copy_from_slice(&crc.to_be_bytes());
    };
    let decode = |b: BytesMut| Decoder::new(MAX).decode(&mut b.clone());

    let mut b = good.clone();
    b[4] = 2;
    assert_eq!(
        decode(b),
        Err(DecodeError::UnsupportedVersion { version: 2 })
    );

    let mut b = good.clone();
    b[5] = 7;
    assert_eq!(decode(b), Err(DecodeError::UnknownKind { kind: 7 }));

    let mut b = good.clone();
    b[9] ^= 1;
    assert!(matches!(decode(b), Err(DecodeError::HeaderChecksum { .. })));

    let mut b = good.clone();
    b[24..28].copy_from_slice(&(MAX + 1).to_be_bytes());
    fix_crc(&mut b);
    assert_eq!(
        decode(b),
        Err(DecodeError::FrameTooLarge {
            request_id: 5,
            len: MAX + 1,
            max: MAX
        })
    );

    let mut b = good.clone();
    b[7] = 0x02;
    fix_crc(&mut b);
    assert!(matches!(
        decode(b),
        Err(DecodeError::InvalidFlags { flags: 2, .. })
    ));

    let mut b = encode(&Frame::Ping(1));
    b[7] = 0x01;
    fix_crc(&mut b);
    assert!(matches!(decode(b), Err(DecodeError::InvalidFlags { .. })));

    let mut b = encode(&Frame::Pong(1));
    b[19] = 1;
    fix_crc(&mut b);
    assert!(matches!(
        decode(b),
        Err(DecodeError::ReservedNotZero {
            field: "status word",
            ..
        })
    ));
}

#[test]
fn body_errors_consume_the_frame_and_decoding_goes_on() {
    let mut bad = encode(&request(5, b"body"));
    bad[36] ^= 0xFF; // corrupt the body; the header (and its body CRC field) is intact
    let next = encode(&Frame::Ping(6));
    let mut buf = bad.clone();
    buf.extend_from_slice(&next);
    let mut dec = Decoder::new(MAX);
    let err = dec.decode(&mut buf).expect_err("corrupt body");
    assert!(matches!(
        err,
        DecodeError::BodyChecksum { request_id: 5, .. }
    ));
    assert!(!err.is_fatal());
    assert_eq!(err.status(), Code::DATA_LOSS);
    assert_eq!(buf.len(), next.len());
    assert_eq!(dec.decode(&mut buf), Ok(Some(Frame::Ping(6))));
}

#[test]
fn invalid_utf8_message_is_a_frame_error() {
    let mut out = BytesMut::new();
    let enc = Encoder::new(MAX);
    enc.encode_simple(&mut out, FrameKind::Error, 1, Code::INTERNAL, "ok");
    // Swap the message for invalid UTF-8 and recompute both checksums.
    out[36] = 0xFF;
    let crc = crc32fast::hash(&out[36..]);
    out[28..32].copy_from_slice(&crc.to_be_bytes());
    let crc = crc32fast::hash(&out[..32]);
    out[32..36].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        Decoder::new(MAX).decode(&mut out),
        Err(DecodeError::InvalidUtf8 {
            request_id: 1,
            kind: FrameKind::Error
        })
    ));
}

#[test]
fn encoder_refuses_frames_over_the_limit_and_appends_nothing() {
    let mut out = BytesMut::from(&b"prefix"[..]);
    let big = Frame::Request(Request {
        request_id: 1,
        service: 1,
        method: 1,
        deadline_ms: 0,
        metadata: Metadata::new(),
        payload: Bytes::from(vec![0u8; MAX as usize + 1]),
    });
    assert_eq!(
        Encoder::new(MAX).encode(&big, &mut out),
        Err(EncodeError::FrameTooLarge {
            len: MAX as usize + 1,
            max: MAX
        })
    );
    assert_eq!(&out[..], b"prefix");
}

#[test]
fn encoder_refuses_a_non_utf8_status_message_and_appends_nothing() {
    let enc = Encoder::new(MAX);
    let mut out = BytesMut::from(&b"prefix"[..]);
    let bad = Frame::Response(Response {
        request_id: 1,
        code: Code::INTERNAL,
        metadata: Metadata::new(),
        payload: Bytes::from_static(b"\xFF"),
    });
    assert_eq!(enc.encode(&bad, &mut out), Err(EncodeError::InvalidUtf8));
    assert_eq!(
        enc.encode_response_with(&mut out, 1, Code::INTERNAL, &Metadata::new(), |b| {
            b.extend_from_slice(b"\xFF")
        }),
        Err(EncodeError::InvalidUtf8)
    );
    assert_eq!(&out[..], b"prefix");
}

#[test]
fn decoder_reserves_at_most_one_step_for_a_claimed_length() {
    let big = 64 * 1024 * 1024;
    let frame = Frame::Request(Request {
        request_id: 1,
        service: 1,
        method: 1,
        deadline_ms: 0,
        metadata: Metadata::new(),
        payload: Bytes::from(vec![7u8; 10]),
    });
    let mut wire = BytesMut::new();
    Encoder::new(big)
        .encode(&frame, &mut wire)
        .expect("encodes");
    // Claim a 64 MiB body; only the header arrives.
    wire[24..28].copy_from_slice(&big.to_be_bytes());
    let crc = crc32fast::hash(&wire[..32]);
    wire[32..36].copy_from_slice(&crc.to_be_bytes());
    let mut buf = BytesMut::from(&wire[..HEADER_LEN]);
    assert_eq!(Decoder::new(big).decode(&mut buf), Ok(None));
    assert!(buf.capacity() <= HEADER_LEN + RESERVE_STEP + 64);
}

fn arb_metadata() -> impl Strategy<Value = Metadata> {
    let key = proptest::collection::vec(0x21u8..=0x7E, 1..12);
    let value = proptest::collection::vec(any::<u8>(), 0..20);
    proptest::collection::vec((key, value), 0..4)
        .prop_map(|pairs| Metadata::from_pairs(pairs).expect("within limits"))
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    let payload = proptest::collection::vec(any::<u8>(), 0..200).prop_map(Bytes::from);
    prop_oneof![
        (
            any::<u64>(),
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            arb_metadata(),
            payload.clone()
        )
            .prop_map(
                |(request_id, service, method, deadline_ms, metadata, payload)| {
                    Frame::Request(Request {
                        request_id,
                        service,
                        method,
                        deadline_ms,
                        metadata,
                        payload,
                    })
                }
            ),
        (any::<u64>(), arb_metadata(), payload).prop_map(|(request_id, metadata, payload)| {
            Frame::Response(Response {
                request_id,
                code: Code::OK,
                metadata,
                payload,
            })
        }),
        (any::<u64>(), 1u32..200, arb_metadata(), ".{0,40}").prop_map(
            |(request_id, code, metadata, msg)| Frame::Response(Response {
                request_id,
                code: Code(code),
                metadata,
                payload: Bytes::from(msg),
            })
        ),
        any::<u64>().prop_map(Frame::Ping),
        any::<u64>().prop_map(Frame::Pong),
        (any::<u64>(), any::<u32>(), ".{0,40}").prop_map(|(id, code, message)| Frame::GoAway {
            last_request_id: id,
            code: Code(code),
            message
        }),
        (any::<u64>(), any::<u32>(), ".{0,40}").prop_map(|(id, code, message)| Frame::Error {
            request_id: id,
            code: Code(code),
            message
        }),
    ]
}

proptest! {
    #[test]
    fn decode_of_encode_is_identity(frames in proptest::collection::vec(arb_frame(), 1..6)) {
        let mut buf = BytesMut::new();
        for f in &frames {
            Encoder::new(MAX).encode(f, &mut buf).expect("encodes");
        }
        let wire = buf.clone();
        let mut dec = Decoder::new(MAX);
        prop_assert_eq!(&decode_all(&mut dec, &mut buf), &frames);
        prop_assert!(buf.is_empty());
        // Re-encoding the decoded frames gives back the same bytes.
        let mut again = BytesMut::new();
        for f in &frames {
            Encoder::new(MAX).encode(f, &mut again).expect("encodes");
        }
        prop_assert_eq!(again, wire);
    }

    #[test]
    fn encode_and_the_with_methods_write_the_same_bytes(frame in arb_frame()) {
        let enc = Encoder::new(MAX);
        let mut whole = BytesMut::new();
        enc.encode(&frame, &mut whole).expect("encodes");
        let mut with = BytesMut::new();
        match &frame {
            Frame::Request(r) => enc.encode_request_with(
                &mut with,
                r.request_id,
                r.service,
                r.method,
                r.deadline_ms,
                &r.metadata,
                |b| b.extend_from_slice(&r.payload),
            ),
            Frame::Response(r) => enc.encode_response_with(
                &mut with,
                r.request_id,
                r.code,
                &r.metadata,
                |b| b.extend_from_slice(&r.payload),
            ),
            other => enc.encode(other, &mut with),
        }
        .expect("encodes");
        prop_assert_eq!(with, whole);
    }

    #[test]
    fn any_chunking_decodes_the_same_frames(
        frames in proptest::collection::vec(arb_frame(), 1..6),
        cuts in proptest::collection::vec(1usize..64, 0..40),
    ) {
        let mut wire = BytesMut::new();
        for f in &frames {
            Encoder::new(MAX).encode(f, &mut wire).expect("encodes");
        }
        let mut dec = Decoder::new(MAX);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut pos = 0;
        for cut in cuts.iter().copied().chain(std::iter::repeat(64)) {
            if pos >= wire.len() {
                break;
            }
            let end = (pos + cut).min(wire.len());
            buf.extend_from_slice(&wire[pos..end]);
            pos = end;
            got.extend(decode_all(&mut dec, &mut buf));
        }
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut buf = BytesMut::from(&bytes[..]);
        let mut dec = Decoder::new(MAX);
        while let Ok(Some(_)) = dec.decode(&mut buf) {}
    }
}

#[test]
fn long_error_message_is_cut_at_a_character_boundary_to_fit() {
    let enc = Encoder::new(8);
    let mut out = BytesMut::new();
    // "ééééé" is 10 bytes; 8 fit, and 8 is a boundary (4 characters).
    enc.encode_simple(&mut out, FrameKind::Error, 3, Code::INTERNAL, "ééééé");
    let mut dec = Decoder::new(8);
    assert_eq!(
        dec.decode(&mut out),
        Ok(Some(Frame::Error {
            request_id: 3,
            code: Code::INTERNAL,
            message: "éééé".to_owned()
        }))
    );
    // 7 bytes: the cut backs off to 6, the last whole character.
    let mut out = BytesMut::new();
    Encoder::new(7).encode_simple(&mut out, FrameKind::GoAway, 0, Code::OK, "ééééé");
    assert!(matches!(
        Decoder::new(7).decode(&mut out),
        Ok(Some(Frame::GoAway { message, .. })) if message == "ééé"
    ));
}

#[test]
fn peek_finds_each_complete_request_payload_and_stops_at_an_incomplete_frame() {
    let mut buf = encode(&request(1, b"key:1"));
    buf.extend_from_slice(&encode(&Frame::Ping(7)));
    let with_metadata = Frame::Request(Request {
        metadata: Metadata::from_pairs([("k", &b"v"[..])]).expect("valid metadata"),
        ..match request(2, b"key:2") {
            Frame::Request(r) => r,
            _ => unreachable!(),
        }
    });
    buf.extend_from_slice(&encode(&with_metadata));
    let mut other = match request(3, b"") {
        Frame::Request(r) => r,
        _ => unreachable!(),
    };
    other.service = 9;
    other.method = 0xfffe;
    buf.extend_from_slice(&encode(&Frame::Request(other)));
    let complete = buf.len();
    // A fifth frame cut short: only its header and two of its five payload bytes.
    buf.extend_from_slice(&encode(&request(4, b"key:4"))[..HEADER_LEN + 2]);
    let mut seen = Vec::new();
    let walked = peek_requests(&buf, 64, |service, method, payload| {
        seen.push((service, method, buf[payload].to_vec()))
    });
    assert_eq!(walked, 4, "the cut frame is not walked");
    assert_eq!(
        seen,
        vec![(2, 1, b"key:1".to_vec()), (9, 0xfffe, Vec::new())],
        "the PING and the request with metadata are skipped"
    );
    // At most max_frames frames.
    let mut count = 0;
    assert_eq!(peek_requests(&buf, 1, |_, _, _| count += 1), 1);
    assert_eq!(count, 1);
    assert_eq!(peek_requests(&buf[..complete - 1], 64, |_, _, _| {}), 3);
    assert_eq!(peek_requests(&[], 64, |_, _, _| {}), 0);
}

#[test]
fn peek_trusts_no_claimed_length() {
    // A header claiming a body of u32::MAX bytes: nothing past the buffer is read or given,
    // and the decoder still refuses the frame as too large.
    let mut buf = encode(&request(1, b"x"));
    buf[24..28].copy_from_slice(&u32::MAX.to_be_bytes());
    let mut calls = 0;
    assert_eq!(peek_requests(&buf, 64, |_, _, _| calls += 1), 0);
    assert_eq!(calls, 0);
    assert!(matches!(
        Decoder::new(MAX).decode(&mut buf),
        Err(DecodeError::HeaderChecksum { .. })
    ));
}

proptest! {
    /// Whatever the bytes, every range peek gives lies within them, in order, without overlap.
    #[test]
    fn peek_ranges_stay_within_any_input(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut last_end = 0;
        peek_requests(&bytes, 64, |_, _, payload| {
            assert!(payload.start >= last_end + HEADER_LEN && payload.end <= bytes.len());
            assert!(payload.start <= payload.end);
            last_end = payload.end;
        });
    }
}
