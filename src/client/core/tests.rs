//! The client core's rules, byte by byte: frames in, frames out, the time passed in.
//!
//! The server's side is played by hand: its frames are built with [`Encoder`] (or byte by
//! byte where the encoder refuses to build them), put into the core's receive buffer and
//! processed at explicit instants; what the core queues to send is decoded with [`Decoder`]
//! and compared frame for frame.

use bytes::Bytes;

use super::*;
use crate::proto::{Request as RequestFrame, FLAG_METADATA, HEADER_LEN};

const ECHO: Method<Bytes, Bytes> = Method::new(7, 3, "test.Echo");

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4417))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A plaintext core whose first request id is `first_id`.
fn core_from(first_id: u64) -> ClientCore {
    ClientCore::new(&CoreConfig::default(), peer(), first_id).expect("a plaintext core")
}

fn core() -> ClientCore {
    core_from(1)
}

/// Queues an ECHO request with `payload` and no metadata.
fn start(
    core: &mut ClientCore,
    payload: &'static [u8],
    deadline: Option<Duration>,
    now: Instant,
) -> Result<u64, ClientError> {
    core.start_request(
        &ECHO,
        &Bytes::from_static(payload),
        deadline,
        &Metadata::new(),
        now,
    )
}

/// Queues an ECHO request that waits 10 s.
fn call(core: &mut ClientCore, now: Instant) -> u64 {
    start(core, b"ping?", Some(Duration::from_secs(10)), now).expect("request queued")
}

fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut out = BytesMut::new();
    let encoder = Encoder::new(DEFAULT_MAX_BODY_LEN);
    for frame in frames {
        encoder.encode(frame, &mut out).expect("the frame encodes");
    }
    out.to_vec()
}

fn ok(id: u64, payload: &[u8]) -> Frame {
    Frame::Response(Response {
        request_id: id,
        code: Code::OK,
        metadata: Metadata::new(),
        payload: Bytes::copy_from_slice(payload),
    })
}

fn status(id: u64, code: Code, message: &str) -> Frame {
    Frame::Response(Response {
        request_id: id,
        code,
        metadata: Metadata::new(),
        payload: Bytes::copy_from_slice(message.as_bytes()),
    })
}

fn goaway(last: u64) -> Frame {
    Frame::GoAway {
        last_request_id: last,
        code: Code::OK,
        message: "shutting down".to_owned(),
    }
}

fn error_frame(code: Code, message: &str) -> Frame {
    Frame::Error {
        request_id: 0,
        code,
        message: message.to_owned(),
    }
}

/// A frame built field by field, with both checksums computed: for frames the encoder
/// refuses to build (a non-OK message that is not UTF-8, a malformed metadata section).
fn raw_frame(kind: FrameKind, flags: u16, id: u64, word: u32, body: &[u8]) -> Vec<u8> {
    let mut head = Vec::with_capacity(HEADER_LEN);
    head.extend_from_slice(&crate::proto::MAGIC);
    head.push(crate::proto::VERSION);
    head.push(kind as u8);
    head.extend_from_slice(&flags.to_be_bytes());
    head.extend_from_slice(&id.to_be_bytes());
    head.extend_from_slice(&word.to_be_bytes());
    head.extend_from_slice(&0u32.to_be_bytes());
    head.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes());
    head.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
    let crc = crc32fast::hash(&head);
    head.extend_from_slice(&crc.to_be_bytes());
    head.extend_from_slice(body);
    head
}

/// Appends `bytes` to the receive buffer and processes them at `now`.
fn feed(core: &mut ClientCore, bytes: &[u8], now: Instant) -> Result<(), ClientError> {
    core.receive_buffer().extend_from_slice(bytes);
    core.handle_received(now)
}

fn feed_frames(core: &mut ClientCore, frames: &[Frame], now: Instant) -> Result<(), ClientError> {
    feed(core, &encode(frames), now)
}

fn decode_all(bytes: &[u8]) -> Vec<Frame> {
    let mut buf = BytesMut::from(bytes);
    let mut decoder = Decoder::new(DEFAULT_MAX_BODY_LEN);
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode(&mut buf).expect("the client's bytes decode") {
        frames.push(frame);
    }
    assert!(buf.is_empty(), "the client queued part of a frame");
    frames
}

/// Everything the core queued to send, as frames; the queue is then empty.
fn sent(core: &mut ClientCore) -> Vec<Frame> {
    let bytes = core.transmit().to_vec();
    core.advance_transmit(bytes.len());
    assert!(!core.wants_transmit());
    assert!(core.transmit().is_empty());
    decode_all(&bytes)
}

fn echo_request(id: u64, deadline_ms: u32, metadata: Metadata, payload: &[u8]) -> Frame {
    Frame::Request(RequestFrame {
        request_id: id,
        service: 7,
        method: 3,
        deadline_ms,
        metadata,
        payload: Bytes::copy_from_slice(payload),
    })
}

/// The ids `completed()` lists now, sorted.
fn done(core: &mut ClientCore) -> Vec<u64> {
    let mut ids: Vec<u64> = core.completed().collect();
    ids.sort_unstable();
    ids
}

/// The payload of call `id`'s OK response.
fn payload(core: &mut ClientCore, id: u64) -> Bytes {
    match core.take_response(id) {
        Some(Ok(response)) if response.code == Code::OK => response.payload,
        other => panic!("call {id}: expected an OK response, got {other:?}"),
    }
}

fn failed(core: &mut ClientCore, id: u64) -> ClientError {
    match core.take_response(id) {
        Some(Err(err)) => err,
        other => panic!("call {id}: expected an error, got {other:?}"),
    }
}

fn assert_timeout(err: &ClientError) {
    assert!(matches!(err, ClientError::Timeout), "{err:?}");
}

fn assert_closed(err: &ClientError) {
    assert!(matches!(err, ClientError::Closed), "{err:?}");
}

fn assert_draining(err: &ClientError) {
    match err {
        ClientError::Status(status) => {
            assert_eq!(status.code, Code::UNAVAILABLE);
            assert_eq!(*status, draining(), "the status says why");
        }
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
}

fn assert_connection(err: &ClientError, expected: &Status) {
    match err {
        ClientError::Connection(status) => assert_eq!(status, expected),
        other => panic!("expected Connection({expected:?}), got {other:?}"),
    }
}

fn protocol_error(err: &ClientError) -> &ProtocolError {
    match err {
        ClientError::Protocol(e) => e,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[test]
fn deadlines_round_up_to_whole_milliseconds_and_never_to_zero() {
    assert_eq!(deadline_ms(Duration::from_millis(1500)), 1500);
    assert_eq!(deadline_ms(Duration::from_micros(1500)), 2);
    assert_eq!(
        deadline_ms(Duration::from_micros(300)),
        1,
        "not 0, which means none"
    );
    assert_eq!(
        deadline_ms(Duration::ZERO),
        1,
        "already passed: 1, not none"
    );
    assert_eq!(deadline_ms(Duration::from_secs(u64::MAX)), u32::MAX);
}

// Ids.

#[test]
fn ids_start_at_the_first_id_and_increase_by_one_across_requests_pings_and_auth() {
    let t0 = Instant::now();
    let mut core = core_from(40);
    assert_eq!(core.next_request_id(), 40);
    assert_eq!(call(&mut core, t0), 40);
    assert_eq!(core.start_ping(ms(100), t0).expect("ping"), 41);
    assert_eq!(core.start_auth(b"token", ms(100), t0).expect("auth"), 42);
    assert_eq!(call(&mut core, t0), 43);
    assert_eq!(core.next_request_id(), 44);
    let ids: Vec<(FrameKind, u64)> = sent(&mut core)
        .iter()
        .map(|f| (f.kind(), f.request_id()))
        .collect();
    assert_eq!(
        ids,
        [
            (FrameKind::Request, 40),
            (FrameKind::Ping, 41),
            (FrameKind::Request, 42),
            (FrameKind::Request, 43),
        ]
    );
}

#[test]
fn a_first_id_of_zero_is_taken_as_one() {
    let mut core = core_from(0);
    assert_eq!(core.next_request_id(), 1);
    assert_eq!(call(&mut core, Instant::now()), 1);
}

#[test]
fn ids_skip_zero_when_they_wrap() {
    let t0 = Instant::now();
    let mut core = core_from(u64::MAX);
    assert_eq!(call(&mut core, t0), u64::MAX);
    assert_eq!(core.next_request_id(), 1, "0 is no request's id");
    assert_eq!(core.start_ping(ms(100), t0).expect("ping"), 1);
    assert_eq!(call(&mut core, t0), 2);
    let ids: Vec<u64> = sent(&mut core).iter().map(Frame::request_id).collect();
    assert_eq!(ids, [u64::MAX, 1, 2]);
    // Both ends of the wrap are matched to their calls.
    feed_frames(&mut core, &[ok(2, b"two"), ok(u64::MAX, b"max")], t0).expect("responses");
    assert_eq!(done(&mut core), [2, u64::MAX]);
    assert_eq!(&payload(&mut core, u64::MAX)[..], b"max");
    assert_eq!(&payload(&mut core, 2)[..], b"two");
}

#[test]
fn a_refused_request_takes_no_id_and_queues_nothing() {
    let t0 = Instant::now();
    let config = CoreConfig::default().with_max_body_len(16);
    let mut core = ClientCore::new(&config, peer(), 9).expect("core");
    let err = core
        .start_request(
            &ECHO,
            &Bytes::from(vec![0u8; 17]),
            None,
            &Metadata::new(),
            t0,
        )
        .expect_err("over the body limit");
    assert!(
        matches!(
            err,
            ClientError::Encode(crate::proto::EncodeError::FrameTooLarge { len: 17, max: 16 })
        ),
        "{err:?}"
    );
    assert_timeout(&start(&mut core, b"x", Some(Duration::ZERO), t0).expect_err("zero deadline"));
    assert!(!core.wants_transmit());
    assert_eq!(core.next_request_id(), 9);
    assert_eq!(core.waiting(), 0);
    // A body of exactly the limit goes.
    let id = core
        .start_request(
            &ECHO,
            &Bytes::from(vec![5u8; 16]),
            None,
            &Metadata::new(),
            t0,
        )
        .expect("at the limit");
    assert_eq!(id, 9);
    assert_eq!(
        sent(&mut core),
        [echo_request(9, 0, Metadata::new(), &[5; 16])]
    );
}

// Requests on the wire and responses matched to them.

#[test]
fn a_request_is_sent_with_its_route_deadline_metadata_and_payload() {
    let t0 = Instant::now();
    let mut core = core();
    let metadata = Metadata::from_pairs([("trace", "abc"), ("tenant", "7")]).expect("metadata");
    let a = core
        .start_request(
            &ECHO,
            &Bytes::from_static(b"hello"),
            Some(ms(250)),
            &metadata,
            t0,
        )
        .expect("request");
    let b = start(&mut core, b"sub-ms", Some(Duration::from_micros(1500)), t0).expect("request");
    let c = start(&mut core, b"", None, t0).expect("request");
    assert_eq!(
        sent(&mut core),
        [
            echo_request(a, 250, metadata, b"hello"),
            echo_request(b, 2, Metadata::new(), b"sub-ms"),
            echo_request(c, 0, Metadata::new(), b""),
        ]
    );
    assert_eq!(core.waiting(), 3);
}

#[test]
fn responses_out_of_order_end_the_calls_they_name() {
    let t0 = Instant::now();
    let mut core = core();
    let ids: Vec<u64> = (0..3).map(|_| call(&mut core, t0)).collect();
    assert_eq!(ids, [1, 2, 3]);
    sent(&mut core);
    feed_frames(&mut core, &[ok(3, b"three")], t0).expect("response");
    assert_eq!(done(&mut core), [3]);
    assert_eq!(core.waiting(), 2);
    assert!(core.take_response(1).is_none(), "1 still waits");
    feed_frames(
        &mut core,
        &[status(1, Code::NOT_FOUND, "no such key"), ok(2, b"two")],
        t0,
    )
    .expect("responses");
    assert_eq!(done(&mut core), [1, 2]);
    assert_eq!(&payload(&mut core, 3)[..], b"three");
    assert_eq!(&payload(&mut core, 2)[..], b"two");
    // A non-OK RESPONSE is the call's answer too: the server's status.
    let response = core.take_response(1).expect("ended").expect("a response");
    assert_eq!(response.code, Code::NOT_FOUND);
    assert_eq!(response.message(), Some("no such key"));
    assert_eq!(core.waiting(), 0);
    assert!(!(1..=3).any(|id| core.holds(id)));
}

#[test]
fn a_response_with_metadata_split_into_single_bytes_is_reassembled() {
    let t0 = Instant::now();
    let mut core = core();
    let id = call(&mut core, t0);
    let metadata = Metadata::from_pairs([("server-timing", "3ms")]).expect("metadata");
    let bytes = encode(&[Frame::Response(Response {
        request_id: id,
        code: Code::OK,
        metadata: metadata.clone(),
        payload: Bytes::from_static(b"pieces"),
    })]);
    let (last, rest) = bytes.split_last().expect("bytes");
    for &byte in rest {
        feed(&mut core, &[byte], t0).expect("a byte");
        assert_eq!(done(&mut core), Vec::<u64>::new());
        assert!(core.take_response(id).is_none());
    }
    feed(&mut core, &[*last], t0).expect("the last byte");
    assert_eq!(done(&mut core), [id]);
    let response = core.take_response(id).expect("ended").expect("a response");
    assert_eq!(response.metadata, metadata);
    assert_eq!(&response.payload[..], b"pieces");
    assert!(core.receive_buffer().is_empty());
}

#[test]
fn many_frames_in_one_buffer_end_every_call() {
    let t0 = Instant::now();
    let mut core = core();
    let ids: Vec<u64> = (0..50).map(|_| call(&mut core, t0)).collect();
    assert_eq!(sent(&mut core).len(), 50);
    // Answered last to first, with a server PING in the middle, and half a frame at the end.
    let mut frames: Vec<Frame> = ids
        .iter()
        .rev()
        .map(|&id| ok(id, id.to_string().as_bytes()))
        .collect();
    frames.insert(25, Frame::Ping(0xABCD));
    let mut bytes = encode(&frames);
    let next = encode(&[ok(1000, b"not yet")]);
    bytes.extend_from_slice(&next[..HEADER_LEN + 2]);
    feed(&mut core, &bytes, t0).expect("responses");
    assert_eq!(done(&mut core), ids);
    for id in ids {
        assert_eq!(payload(&mut core, id), id.to_string().as_bytes());
    }
    assert_eq!(sent(&mut core), [Frame::Pong(0xABCD)]);
    assert_eq!(
        core.receive_buffer().len(),
        HEADER_LEN + 2,
        "the cut frame waits"
    );
}

#[test]
fn a_response_for_an_id_no_call_holds_is_dropped() {
    let t0 = Instant::now();
    let mut core = core();
    let id = call(&mut core, t0);
    feed_frames(&mut core, &[ok(id + 1, b"stranger"), ok(0, b"zero")], t0).expect("dropped");
    assert_eq!(done(&mut core), Vec::<u64>::new());
    assert!(!core.holds(id + 1) && !core.holds(0));
    assert_eq!(core.waiting(), 1);
    // The connection goes on.
    feed_frames(&mut core, &[ok(id, b"mine")], t0).expect("response");
    assert_eq!(&payload(&mut core, id)[..], b"mine");
}

#[test]
fn a_second_response_to_one_id_is_dropped() {
    let t0 = Instant::now();
    let mut core = core();
    let id = call(&mut core, t0);
    // Before the first is taken: the first stays.
    feed_frames(&mut core, &[ok(id, b"first"), ok(id, b"second")], t0).expect("responses");
    assert_eq!(done(&mut core), [id]);
    assert_eq!(&payload(&mut core, id)[..], b"first");
    // After it is taken: nothing comes back.
    feed_frames(&mut core, &[ok(id, b"third")], t0).expect("dropped");
    assert_eq!(done(&mut core), Vec::<u64>::new());
    assert!(!core.holds(id));
    assert!(core.take_response(id).is_none());
}

#[test]
fn an_abandoned_call_is_forgotten_and_its_response_dropped() {
    let t0 = Instant::now();
    let mut core = core();
    let a = call(&mut core, t0);
    let b = call(&mut core, t0);
    core.abandon(a);
    assert!(!core.holds(a) && core.holds(b));
    assert_eq!(core.waiting(), 1);
    feed_frames(&mut core, &[ok(a, b"late"), ok(b, b"kept")], t0).expect("responses");
    assert_eq!(done(&mut core), [b], "only the held call ended");
    assert!(core.take_response(a).is_none());
    assert_eq!(&payload(&mut core, b)[..], b"kept");
    // An ended call abandoned before it is taken is gone too.
    let c = call(&mut core, t0);
    feed_frames(&mut core, &[ok(c, b"unwanted")], t0).expect("response");
    core.abandon(c);
    assert!(!core.holds(c));
    assert!(core.take_response(c).is_none());
    assert_eq!(format!("{core:?}").matches("calls: 0").count(), 1);
}

#[test]
fn completed_lists_each_ended_call_once() {
    let t0 = Instant::now();
    let mut core = core();
    let answered = call(&mut core, t0);
    let timed_out = start(&mut core, b"x", Some(ms(5)), t0).expect("request");
    let ping = core.start_ping(ms(100), t0).expect("ping");
    let waiting = call(&mut core, t0);
    feed_frames(&mut core, &[ok(answered, b""), Frame::Pong(ping)], t0).expect("answers");
    core.handle_timeout(t0 + ms(5));
    assert_eq!(done(&mut core), [answered, timed_out, ping]);
    assert_eq!(done(&mut core), Vec::<u64>::new(), "told once");
    core.handle_timeout(t0 + ms(6));
    assert_eq!(done(&mut core), Vec::<u64>::new());
    assert!(core.take_response(waiting).is_none());
}

// Frame errors and connection errors.

#[test]
fn a_response_whose_body_fails_its_checksum_ends_only_its_call() {
    let t0 = Instant::now();
    let mut core = core();
    let a = call(&mut core, t0);
    let b = call(&mut core, t0);
    let mut bytes = encode(&[ok(a, b"damaged")]);
    bytes[HEADER_LEN + 2] ^= 0x01;
    bytes.extend_from_slice(&encode(&[ok(b, b"intact")]));
    feed(&mut core, &bytes, t0).expect("a frame error does not break the connection");
    assert_eq!(done(&mut core), [a, b]);
    let err = failed(&mut core, a);
    assert!(
        matches!(
            protocol_error(&err),
            ProtocolError::Decode(DecodeError::BodyChecksum {
                request_id,
                kind: FrameKind::Response,
                ..
            }) if *request_id == a
        ),
        "{err:?}"
    );
    assert_eq!(&payload(&mut core, b)[..], b"intact");
    // The connection goes on.
    assert!(core.check_usable().is_ok());
    let c = call(&mut core, t0);
    feed_frames(&mut core, &[ok(c, b"after")], t0).expect("response");
    assert_eq!(&payload(&mut core, c)[..], b"after");
}

#[test]
fn a_response_with_bad_metadata_or_a_message_not_utf8_ends_only_its_call() {
    let t0 = Instant::now();
    let mut core = core();
    let a = call(&mut core, t0);
    let b = call(&mut core, t0);
    let c = call(&mut core, t0);
    let mut bytes = raw_frame(FrameKind::Response, FLAG_METADATA, a, 0, b"\xff\xff");
    bytes.extend_from_slice(&raw_frame(
        FrameKind::Response,
        0,
        b,
        Code::INTERNAL.0,
        b"\xc3\x28 bad",
    ));
    bytes.extend_from_slice(&encode(&[ok(c, b"fine")]));
    feed(&mut core, &bytes, t0).expect("frame errors only");
    assert_eq!(done(&mut core), [a, b, c]);
    let err = failed(&mut core, a);
    assert!(
        matches!(
            protocol_error(&err),
            ProtocolError::Decode(DecodeError::InvalidMetadata { request_id, .. }) if *request_id == a
        ),
        "{err:?}"
    );
    let err = failed(&mut core, b);
    assert!(
        matches!(
            protocol_error(&err),
            ProtocolError::Decode(DecodeError::InvalidUtf8 { request_id, .. }) if *request_id == b
        ),
        "{err:?}"
    );
    assert_eq!(&payload(&mut core, c)[..], b"fine");
    assert!(core.check_usable().is_ok());
}

#[test]
fn a_damaged_response_for_no_call_is_dropped() {
    let t0 = Instant::now();
    let mut core = core();
    let id = call(&mut core, t0);
    let mut bytes = encode(&[ok(id + 5, b"damaged")]);
    bytes[HEADER_LEN] ^= 0x80;
    feed(&mut core, &bytes, t0).expect("dropped");
    assert_eq!(done(&mut core), Vec::<u64>::new());
    assert_eq!(core.waiting(), 1);
    assert!(!core.holds(id + 5));
}

#[test]
fn a_response_longer_than_the_limit_breaks_the_connection_at_its_header() {
    let t0 = Instant::now();
    let mut core = ClientCore::new(&CoreConfig::default().with_max_body_len(16), peer(), 1)
        .expect("a plaintext core");
    let a = call(&mut core, t0);
    let b = call(&mut core, t0);
    sent(&mut core);
    // The header of a 17-byte body, and only the first byte of that body: the length is
    // refused before any body byte is awaited or kept.
    let frame = raw_frame(FrameKind::Response, 0, a, 0, &[7; 17]);
    let err = feed(&mut core, &frame[..HEADER_LEN + 1], t0).expect_err("over the limit");
    let cause = protocol_error(&err).clone();
    assert!(
        matches!(
            cause,
            ProtocolError::Decode(DecodeError::FrameTooLarge { request_id, len: 17, max: 16 })
                if request_id == a
        ),
        "{cause:?}"
    );
    assert!(core.receive_buffer().is_empty(), "nothing of it is kept");
    assert_eq!(done(&mut core), [a, b]);
    for id in [a, b] {
        assert_eq!(*protocol_error(&failed(&mut core, id)), cause);
    }
    // One of exactly the limit would have been read: a fresh core takes it.
    let mut core = ClientCore::new(&CoreConfig::default().with_max_body_len(16), peer(), 1)
        .expect("a plaintext core");
    let a = call(&mut core, t0);
    sent(&mut core);
    feed(
        &mut core,
        &raw_frame(FrameKind::Response, 0, a, 0, &[7; 16]),
        t0,
    )
    .expect("at the limit");
    assert_eq!(&payload(&mut core, a)[..], &[7; 16]);
}

#[test]
fn a_header_that_fails_its_checksum_breaks_the_connection_for_every_call() {
    let t0 = Instant::now();
    let mut core = core();
    let a = call(&mut core, t0);
    let b = call(&mut core, t0);
    let ping = core.start_ping(ms(100), t0).expect("ping");
    sent(&mut core);
    let mut bytes = encode(&[ok(a, b"damaged")]);
    bytes[15] ^= 0x01; // the request id's last byte
    bytes.extend_from_slice(&encode(&[ok(b, b"never read")]));
    let err = feed(&mut core, &bytes, t0).expect_err("a header error is fatal");
    let cause = protocol_error(&err).clone();
    assert!(
        matches!(
            cause,
            ProtocolError::Decode(DecodeError::HeaderChecksum { .. })
        ),
        "{cause:?}"
    );
    assert!(
        core.receive_buffer().is_empty(),
        "nothing of a broken stream is kept"
    );
    assert_eq!(done(&mut core), [a, b, ping]);
    for id in [a, b] {
        assert_eq!(*protocol_error(&failed(&mut core, id)), cause);
    }
    match core.take_pong(ping) {
        Some(Err(ClientError::Protocol(e))) => assert_eq!(e, cause),
        other => panic!("{other:?}"),
    }
    // Every later call fails the same way, and nothing more is queued or read.
    assert_eq!(
        *protocol_error(&start(&mut core, b"x", None, t0).expect_err("broken")),
        cause
    );
    assert_eq!(
        *protocol_error(&core.start_ping(ms(1), t0).expect_err("broken")),
        cause
    );
    assert_eq!(
        *protocol_error(&core.start_auth(b"t", ms(1), t0).expect_err("broken")),
        cause
    );
    assert_eq!(
        *protocol_error(&core.check_usable().expect_err("broken")),
        cause
    );
    assert!(!core.wants_transmit());
    assert!(!core.may_reconnect());
    feed_frames(&mut core, &[ok(a, b"too late")], t0).expect("ignored");
    assert!(core.receive_buffer().is_empty());
    assert_eq!(done(&mut core), Vec::<u64>::new());
}

#[test]
fn an_error_frame_ends_every_call_with_its_status() {
    let t0 = Instant::now();
    let mut core = core();
    let a = call(&mut core, t0);
    let b = call(&mut core, t0);
    let ping = core.start_ping(ms(100), t0).expect("ping");
    let expected = Status::new(Code::RESOURCE_EXHAUSTED, "too many requests in flight");
    // The response before the ERROR frame counts; what follows it is not read.
    let bytes = encode(&[
        ok(a, b"in time"),
        error_frame(expected.code, &expected.message),
        ok(b, b"after the error"),
    ]);
    let err = feed(&mut core, &bytes, t0).expect_err("ERROR breaks the connection");
    assert_connection(&err, &expected);
    assert!(core.receive_buffer().is_empty());
    assert_eq!(done(&mut core), [a, b, ping]);
    assert_eq!(&payload(&mut core, a)[..], b"in time");
    assert_connection(&failed(&mut core, b), &expected);
    match core.take_pong(ping) {
        Some(Err(err)) => assert_connection(&err, &expected),
        other => panic!("{other:?}"),
    }
    assert_connection(&call_err(&mut core, t0), &expected);
    assert_connection(&core.start_ping(ms(1), t0).expect_err("broken"), &expected);
    assert!(!core.may_reconnect());
    // The end of the stream after it changes nothing.
    core.handle_eof().expect("eof");
    assert_connection(&call_err(&mut core, t0), &expected);
}

fn call_err(core: &mut ClientCore, now: Instant) -> ClientError {
    start(core, b"x", None, now).expect_err("refused")
}

#[test]
fn a_request_frame_from_the_server_breaks_the_connection() {
    let t0 = Instant::now();
    let mut core = core();
    let id = call(&mut core, t0);
    let err = feed_frames(&mut core, &[echo_request(1, 0, Metadata::new(), b"?")], t0)
        .expect_err("a client never receives a REQUEST");
    let expected = ProtocolError::UnexpectedFrame(FrameKind::Request);
    assert_eq!(*protocol_error(&err), expected);
    assert_eq!(*protocol_error(&failed(&mut core, id)), expected);
    assert_eq!(*protocol_error(&call_err(&mut core, t0)), expected);
}

#[test]
fn the_end_of_the_stream_without_goaway_closes_every_call() {
    let t0 = Instant::now();
    let mut core = core();
    let a = call(&mut core, t0);
    let ping = core.start_ping(ms(100), t0).expect("ping");
    // Half a response is pending when the stream ends.
    let bytes = encode(&[ok(a, b"cut short")]);
    feed(&mut core, &bytes[..bytes.len() - 1], t0).expect("part of a frame");
    core.handle_eof().expect("plaintext: no error of its own");
    assert!(core.is_ended());
    assert_eq!(done(&mut core), [a, ping]);
    assert_closed(&failed(&mut core, a));
    assert!(matches!(
        core.take_pong(ping),
        Some(Err(ClientError::Closed))
    ));
    assert_closed(&call_err(&mut core, t0));
    assert_closed(&core.start_ping(ms(1), t0).expect_err("ended"));
    assert_closed(&core.check_usable().expect_err("ended"));
    assert!(!core.may_reconnect(), "no GOAWAY: the connection failed");
    assert!(!core.is_draining());
    // A second end changes nothing; bytes after it are ignored.
    core.handle_eof().expect("again");
    feed(&mut core, &bytes[bytes.len() - 1..], t0).expect("ignored");
    assert_eq!(done(&mut core), Vec::<u64>::new());
}

// Deadlines.

#[test]
fn a_zero_deadline_is_refused_without_queueing() {
    let t0 = Instant::now();
    let mut core = core();
    let err = start(&mut core, b"too late", Some(Duration::ZERO), t0).expect_err("refused");
    assert_timeout(&err);
    assert!(!core.wants_transmit());
    assert_eq!(core.waiting(), 0);
    assert_eq!(core.next_request_id(), 1);
    assert_eq!(core.next_timeout(), None);
    assert_eq!(format!("{core:?}").matches("calls: 0").count(), 1);
}

#[test]
fn handle_timeout_ends_exactly_the_calls_at_or_before_now() {
    let t0 = Instant::now();
    let mut core = core();
    // Started out of deadline order.
    let c = start(&mut core, b"c", Some(ms(300)), t0).expect("c");
    let a = start(&mut core, b"a", Some(ms(100)), t0).expect("a");
    let b = start(&mut core, b"b", Some(ms(200)), t0 + ms(1)).expect("b");
    assert_eq!(core.deadline(a), Some(t0 + ms(100)));
    assert_eq!(core.deadline(b), Some(t0 + ms(201)));
    assert_eq!(core.next_timeout(), Some(t0 + ms(100)));
    core.handle_timeout(t0 + ms(100) - Duration::from_nanos(1));
    assert_eq!(done(&mut core), Vec::<u64>::new(), "nothing is due yet");
    assert_eq!(core.waiting(), 3);
    core.handle_timeout(t0 + ms(201));
    assert_eq!(
        done(&mut core),
        [a, b],
        "a deadline equal to now has passed"
    );
    assert_eq!(core.deadline(a), None);
    assert_eq!(core.next_timeout(), Some(t0 + ms(300)));
    assert_eq!(core.waiting(), 1);
    // A late response neither replaces the timeout nor comes back after it is taken.
    feed_frames(&mut core, &[ok(a, b"late")], t0 + ms(250)).expect("dropped");
    assert_timeout(&failed(&mut core, a));
    assert_timeout(&failed(&mut core, b));
    feed_frames(&mut core, &[ok(b, b"later")], t0 + ms(260)).expect("dropped");
    assert!(!core.holds(a) && !core.holds(b));
    assert_eq!(done(&mut core), Vec::<u64>::new());
    // The connection is unaffected.
    assert!(core.check_usable().is_ok());
    feed_frames(&mut core, &[ok(c, b"c")], t0 + ms(299)).expect("in time");
    assert_eq!(&payload(&mut core, c)[..], b"c");
    assert_eq!(core.next_timeout(), None);
}

#[test]
fn next_timeout_is_the_earliest_waiting_call() {
    let t0 = Instant::now();
    let mut core = core();
    assert_eq!(core.next_timeout(), None);
    let late = start(&mut core, b"", Some(ms(300)), t0).expect("request");
    let early = start(&mut core, b"", Some(ms(100)), t0).expect("request");
    let middle = start(&mut core, b"", Some(ms(200)), t0).expect("request");
    let ping = core.start_ping(ms(150), t0).expect("ping");
    assert_eq!(core.next_timeout(), Some(t0 + ms(100)));
    feed_frames(&mut core, &[ok(early, b"")], t0).expect("answered");
    assert_eq!(
        core.next_timeout(),
        Some(t0 + ms(150)),
        "an answered call has none"
    );
    feed_frames(&mut core, &[Frame::Pong(ping)], t0).expect("pong");
    assert_eq!(core.next_timeout(), Some(t0 + ms(200)));
    core.abandon(middle);
    assert_eq!(
        core.next_timeout(),
        Some(t0 + ms(300)),
        "nor an abandoned one"
    );
    core.abandon(late);
    assert_eq!(core.next_timeout(), None);
}

#[test]
fn without_a_deadline_the_default_timeout_applies_and_none_is_sent() {
    let t0 = Instant::now();
    let config = CoreConfig::default().with_default_timeout(ms(1500));
    let mut core = ClientCore::new(&config, peer(), 1).expect("core");
    let id = start(&mut core, b"q", None, t0).expect("request");
    assert_eq!(
        sent(&mut core),
        [echo_request(id, 0, Metadata::new(), b"q")]
    );
    assert_eq!(core.deadline(id), Some(t0 + ms(1500)));
    assert_eq!(core.next_timeout(), Some(t0 + ms(1500)));
    core.handle_timeout(t0 + ms(1499));
    assert!(core.take_response(id).is_none());
    core.handle_timeout(t0 + ms(1500));
    assert_timeout(&failed(&mut core, id));
    // The default is 30 s.
    let mut core = self::core();
    let id = start(&mut core, b"q", None, t0).expect("request");
    assert_eq!(
        core.deadline(id),
        Some(t0 + super::super::DEFAULT_READ_TIMEOUT)
    );
}

#[test]
fn a_deadline_or_timeout_past_the_longest_wait_is_taken_as_it() {
    let t0 = Instant::now();
    let longest = super::super::MAX_WAIT;
    let config = CoreConfig::default().with_default_timeout(Duration::MAX);
    let mut core = ClientCore::new(&config, peer(), 1).expect("core");
    let with = start(&mut core, b"q", Some(Duration::MAX), t0).expect("request");
    let without = start(&mut core, b"q", None, t0).expect("request");
    let ping = core.start_ping(Duration::MAX, t0).expect("ping");
    assert_eq!(
        sent(&mut core),
        [
            echo_request(with, u32::MAX, Metadata::new(), b"q"),
            echo_request(without, 0, Metadata::new(), b"q"),
            Frame::Ping(ping),
        ]
    );
    for id in [with, without, ping] {
        assert_eq!(core.deadline(id), Some(t0 + longest));
    }
    // Not failed at once: they wait, up to the longest wait.
    core.handle_timeout(t0 + Duration::from_secs(86_400));
    assert_eq!(core.waiting(), 3);
    core.handle_timeout(t0 + longest);
    assert_eq!(done(&mut core), [with, without, ping]);
}

// GOAWAY.

#[test]
fn goaway_ends_the_requests_above_its_last_id_and_keeps_the_rest() {
    let t0 = Instant::now();
    let mut core = core();
    let ids: Vec<u64> = (0..4).map(|_| call(&mut core, t0)).collect();
    sent(&mut core);
    assert!(!core.is_draining() && !core.may_reconnect());
    assert_eq!(core.goaway_last_id(), None);
    feed_frames(&mut core, &[goaway(2)], t0).expect("GOAWAY");
    assert!(core.is_draining());
    assert_eq!(core.goaway_last_id(), Some(2));
    assert!(core.may_reconnect());
    assert_eq!(done(&mut core), [3, 4], "at once, not at their deadline");
    assert_draining(&failed(&mut core, 3));
    assert_draining(&failed(&mut core, 4));
    assert_eq!(core.waiting(), 2);
    // No new request is taken, and nothing is queued for it.
    assert_draining(&call_err(&mut core, t0));
    assert_draining(&core.start_auth(b"t", ms(1), t0).expect_err("draining"));
    assert!(!core.wants_transmit());
    assert_eq!(core.next_request_id(), 5);
    // A PING is no request: it still goes.
    let ping = core.start_ping(ms(100), t0).expect("ping while draining");
    assert_eq!(sent(&mut core), [Frame::Ping(ping)]);
    // The requests up to the last id are answered.
    feed_frames(
        &mut core,
        &[ok(2, b"two"), ok(1, b"one"), Frame::Pong(ping)],
        t0,
    )
    .expect("answers");
    assert_eq!(done(&mut core), [1, 2, ping]);
    assert_eq!(&payload(&mut core, ids[0])[..], b"one");
    assert_eq!(&payload(&mut core, ids[1])[..], b"two");
    assert_eq!(core.take_pong(ping).expect("ended").expect("pong"), ms(0));
}

#[test]
fn goaway_with_last_id_zero_ends_every_request_but_not_pings() {
    let t0 = Instant::now();
    let mut core = core();
    let a = call(&mut core, t0);
    let ping = core.start_ping(ms(100), t0).expect("ping");
    let b = call(&mut core, t0);
    feed_frames(&mut core, &[goaway(0)], t0).expect("GOAWAY");
    assert_eq!(done(&mut core), [a, b]);
    assert_eq!(core.waiting(), 1, "the PING waits for its PONG");
    feed_frames(&mut core, &[Frame::Pong(ping)], t0 + ms(3)).expect("pong");
    assert_eq!(core.take_pong(ping).expect("ended").expect("pong"), ms(3));
}

#[test]
fn a_second_goaway_only_lowers_the_last_id() {
    let t0 = Instant::now();
    let mut core = core();
    for _ in 0..5 {
        call(&mut core, t0);
    }
    feed_frames(&mut core, &[goaway(4)], t0).expect("GOAWAY");
    assert_eq!(done(&mut core), [5]);
    feed_frames(&mut core, &[goaway(2)], t0).expect("lower");
    assert_eq!(core.goaway_last_id(), Some(2));
    assert_eq!(done(&mut core), [3, 4]);
    assert_draining(&failed(&mut core, 3));
    feed_frames(&mut core, &[goaway(9)], t0).expect("higher: ignored");
    assert_eq!(core.goaway_last_id(), Some(2));
    assert_eq!(done(&mut core), Vec::<u64>::new());
    assert_eq!(core.waiting(), 2);
}

#[test]
fn the_end_of_the_stream_after_goaway_is_the_end_of_a_drain() {
    let t0 = Instant::now();
    let mut core = core();
    let a = call(&mut core, t0);
    let b = call(&mut core, t0);
    let c = call(&mut core, t0);
    feed_frames(&mut core, &[goaway(b), ok(a, b"done")], t0).expect("GOAWAY");
    assert_eq!(done(&mut core), [a, c]);
    core.handle_eof().expect("a normal end");
    assert!(core.is_ended());
    assert_eq!(done(&mut core), [b]);
    assert_eq!(&payload(&mut core, a)[..], b"done");
    assert_closed(&failed(&mut core, b));
    assert_draining(&failed(&mut core, c));
    assert!(core.may_reconnect());
    assert_closed(&core.check_usable().expect_err("ended"));
    assert_closed(&core.start_ping(ms(1), t0).expect_err("ended"));
}

#[test]
fn an_error_frame_after_goaway_is_no_normal_end() {
    let t0 = Instant::now();
    let mut core = core();
    let a = call(&mut core, t0);
    let b = call(&mut core, t0);
    feed_frames(&mut core, &[goaway(a)], t0).expect("GOAWAY");
    assert!(core.may_reconnect());
    let expected = Status::new(Code::INTERNAL, "drain failed");
    let err = feed_frames(
        &mut core,
        &[error_frame(expected.code, &expected.message)],
        t0,
    )
    .expect_err("ERROR");
    assert_connection(&err, &expected);
    assert!(!core.may_reconnect());
    assert!(core.is_draining());
    assert_eq!(done(&mut core), [a, b]);
    assert_connection(&failed(&mut core, a), &expected);
    assert_draining(&failed(&mut core, b));
    assert_connection(&call_err(&mut core, t0), &expected);
    core.handle_eof().expect("eof");
    assert!(!core.may_reconnect());
}

// PING and PONG.

#[test]
fn a_ping_from_the_server_is_answered_with_a_pong_at_once() {
    let t0 = Instant::now();
    let mut core = core();
    let id = call(&mut core, t0);
    feed_frames(&mut core, &[Frame::Ping(u64::MAX), Frame::Ping(0)], t0).expect("pings");
    assert_eq!(
        sent(&mut core),
        [
            echo_request(id, 10_000, Metadata::new(), b"ping?"),
            Frame::Pong(u64::MAX),
            Frame::Pong(0),
        ]
    );
    assert_eq!(done(&mut core), Vec::<u64>::new());
    assert_eq!(core.waiting(), 1);
    assert_eq!(core.next_request_id(), 2, "a PONG takes no id");
}

#[test]
fn pongs_the_server_does_not_read_are_held_to_their_limit() {
    let t0 = Instant::now();
    let mut core = core();
    let id = call(&mut core, t0);
    sent(&mut core);
    let pings = |from: u64, n: u64| -> Vec<Frame> { (from..from + n).map(Frame::Ping).collect() };
    let cap = MAX_QUEUED_PONGS as u64;
    // Written as they come: any number of PINGs is answered.
    for round in 0..3 {
        feed_frames(&mut core, &pings(round * cap, cap), t0).expect("answered");
        assert_eq!(sent(&mut core).len(), MAX_QUEUED_PONGS);
    }
    // Not written: the limit holds, and a written part of the queue makes room for as many
    // PONGs as it held, no more.
    feed_frames(&mut core, &pings(0, cap), t0).expect("up to the limit");
    let queued = core.transmit().len();
    assert_eq!(queued, MAX_QUEUED_PONGS * HEADER_LEN);
    core.advance_transmit(10 * HEADER_LEN + 5); // ten PONGs and part of the eleventh
    feed_frames(&mut core, &pings(cap, 10), t0).expect("ten more fit");
    let err = feed_frames(&mut core, &pings(cap + 10, 1), t0).expect_err("one too many");
    let cause = ProtocolError::PingFlood {
        queued: MAX_QUEUED_PONGS,
    };
    assert_eq!(*protocol_error(&err), cause);
    assert!(err.to_string().contains("PING flood"), "{err}");
    assert_eq!(done(&mut core), [id]);
    assert_eq!(*protocol_error(&failed(&mut core, id)), cause);
    assert_eq!(
        *protocol_error(&start(&mut core, b"x", None, t0).expect_err("broken")),
        cause
    );
    // The PONG that did not fit was not queued.
    assert_eq!(
        core.transmit().len(),
        queued - 10 * HEADER_LEN - 5 + 10 * HEADER_LEN
    );
}

#[test]
fn a_pong_ends_its_ping_with_the_round_trip_time() {
    let t0 = Instant::now();
    let mut core = core();
    let ping = core.start_ping(ms(500), t0 + ms(10)).expect("ping");
    assert_eq!(sent(&mut core), [Frame::Ping(ping)]);
    assert_eq!(core.deadline(ping), Some(t0 + ms(510)));
    assert!(core.take_pong(ping).is_none());
    feed_frames(&mut core, &[Frame::Pong(ping)], t0 + ms(17)).expect("pong");
    assert_eq!(done(&mut core), [ping]);
    assert_eq!(core.take_pong(ping).expect("ended").expect("pong"), ms(7));
    assert!(!core.holds(ping));
}

#[test]
fn pongs_and_responses_for_the_wrong_call_are_dropped() {
    let t0 = Instant::now();
    let mut core = core();
    let request = call(&mut core, t0);
    let ping = core.start_ping(ms(500), t0).expect("ping");
    // A PONG for no PING, a PONG naming a request, a RESPONSE naming a PING.
    feed_frames(
        &mut core,
        &[
            Frame::Pong(99),
            Frame::Pong(request),
            ok(ping, b"not a pong"),
        ],
        t0,
    )
    .expect("dropped");
    assert_eq!(done(&mut core), Vec::<u64>::new());
    assert_eq!(core.waiting(), 2);
    assert!(!core.holds(99));
    // A second PONG after the first is dropped too.
    feed_frames(
        &mut core,
        &[Frame::Pong(ping), Frame::Pong(ping)],
        t0 + ms(1),
    )
    .expect("pong");
    assert_eq!(done(&mut core), [ping]);
    assert_eq!(core.take_pong(ping).expect("ended").expect("pong"), ms(1));
    assert!(core.check_usable().is_ok());
}

#[test]
fn a_ping_without_its_pong_times_out() {
    let t0 = Instant::now();
    let mut core = core();
    let ping = core.start_ping(ms(50), t0).expect("ping");
    assert_eq!(core.next_timeout(), Some(t0 + ms(50)));
    core.handle_timeout(t0 + ms(49));
    assert!(core.take_pong(ping).is_none());
    core.handle_timeout(t0 + ms(50));
    assert_eq!(done(&mut core), [ping]);
    assert!(matches!(
        core.take_pong(ping),
        Some(Err(ClientError::Timeout))
    ));
    feed_frames(&mut core, &[Frame::Pong(ping)], t0 + ms(60)).expect("late: dropped");
    assert_eq!(done(&mut core), Vec::<u64>::new());
    assert!(!core.holds(ping));
}

// AUTH.

#[test]
fn auth_sends_the_token_to_admin_auth_and_keeps_the_identity() {
    let t0 = Instant::now();
    let mut core = core_from(7);
    let id = core.start_auth(b"s3cret", ms(2000), t0).expect("auth");
    assert_eq!(
        sent(&mut core),
        [Frame::Request(RequestFrame {
            request_id: id,
            service: 0,
            method: 2,
            deadline_ms: 0,
            metadata: Metadata::new(),
            payload: Bytes::from_static(b"s3cret"),
        })]
    );
    assert_eq!(core.deadline(id), Some(t0 + ms(2000)));
    assert!(core.finish_auth(id).is_none(), "still waiting");
    assert_eq!(core.identity(), None);
    feed_frames(&mut core, &[ok(id, b"alice")], t0).expect("answer");
    assert_eq!(done(&mut core), [id]);
    assert!(matches!(core.finish_auth(id), Some(Ok(()))));
    assert_eq!(core.identity(), Some("alice"));
    assert!(!core.holds(id));
    assert!(format!("{core:?}").contains("identity: Some(\"alice\")"));
}

#[test]
fn a_refused_token_is_an_auth_error_and_its_frame_can_be_discarded() {
    let t0 = Instant::now();
    let mut core = core();
    let id = core.start_auth(b"wrong-token", ms(2000), t0).expect("auth");
    assert!(core.wants_transmit());
    // The frame holding the token is dropped before it is written.
    core.discard_unsent();
    assert!(!core.wants_transmit());
    assert!(core.transmit().is_empty());
    assert!(!format!("{core:?}").contains("wrong-token"));
    feed_frames(
        &mut core,
        &[status(id, Code::UNAUTHENTICATED, "unknown token")],
        t0,
    )
    .expect("answer");
    match core.finish_auth(id) {
        Some(Err(ClientError::Auth(status))) => {
            assert_eq!(status, Status::new(Code::UNAUTHENTICATED, "unknown token"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(core.identity(), None);
    // An AUTH that is never answered times out.
    let id = core.start_auth(b"t", ms(10), t0).expect("auth");
    core.handle_timeout(t0 + ms(10));
    assert!(matches!(
        core.finish_auth(id),
        Some(Err(ClientError::Timeout))
    ));
    // An identity that is not UTF-8 is the server's protocol error.
    let id = core.start_auth(b"t", ms(10), t0).expect("auth");
    feed_frames(&mut core, &[ok(id, b"\xff\xfe")], t0).expect("answer");
    match core.finish_auth(id) {
        Some(Err(ClientError::Protocol(ProtocolError::Message(_)))) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(core.identity(), None);
}

// Memory.

#[test]
fn calls_answered_and_taken_leave_nothing_behind() {
    let t0 = Instant::now();
    let mut core = core();
    let mut now = t0;
    for round in 0..1000u64 {
        now += ms(1);
        let a = start(&mut core, b"a", Some(ms(100 + round % 7)), now).expect("a");
        let b = start(&mut core, b"b", Some(ms(1)), now).expect("b");
        let ping = core.start_ping(ms(100), now).expect("ping");
        sent(&mut core);
        feed_frames(&mut core, &[ok(a, b"A"), Frame::Pong(ping)], now).expect("answers");
        core.handle_timeout(now + ms(1));
        assert_eq!(done(&mut core), [a, b, ping]);
        assert_eq!(&payload(&mut core, a)[..], b"A");
        assert_timeout(&failed(&mut core, b));
        core.take_pong(ping).expect("ended").expect("pong");
        assert!(
            core.calls.deadline_entries() <= 2 * core.waiting() + 65,
            "round {round}: the deadline heap keeps {} entries",
            core.calls.deadline_entries()
        );
    }
    assert_eq!(core.waiting(), 0);
    let state = format!("{core:?}");
    for field in ["calls: 0", "waiting: 0", "received: 0", "write_buffered: 0"] {
        assert!(state.contains(field), "{field} in {state}");
    }
    assert_eq!(core.next_timeout(), None);
    assert_eq!(
        core.calls.deadline_entries(),
        0,
        "next_timeout sheds the rest"
    );
}

// TLS.

mod tls {
    use std::io::{Read, Write};

    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    use rustls::ServerConnection;

    use super::*;
    use crate::tls::{ServerTlsConfig, ALPN};

    /// A client core trusting a fresh CA, and a rustls server with a certificate for
    /// 127.0.0.1 signed by it.
    fn pair() -> (ClientCore, ServerConnection) {
        pair_with(CoreConfig::default())
    }

    /// [`pair`], the core with `config` and TLS.
    fn pair_with(config: CoreConfig) -> (ClientCore, ServerConnection) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "core test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, "server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca).expect("sign");
        let server =
            ServerTlsConfig::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes(), None)
                .expect("server config");
        let client = ClientTlsConfig::builder()
            .ca_pem(ca.pem().as_bytes())
            .build()
            .expect("client config");
        let core = ClientCore::new(&config.with_tls(client), peer(), 1).expect("TLS core");
        let server = ServerConnection::new(server.rustls().clone()).expect("server");
        (core, server)
    }

    /// Moves the client's records to the server.
    fn to_server(core: &mut ClientCore, server: &mut ServerConnection) -> usize {
        let records = core.transmit().to_vec();
        core.advance_transmit(records.len());
        let mut rest = &records[..];
        while !rest.is_empty() {
            server.read_tls(&mut rest).expect("read_tls from a slice");
            server
                .process_new_packets()
                .expect("the server accepts the client's records");
        }
        records.len()
    }

    /// The server's records, as it would write them to the socket.
    fn from_server(server: &mut ServerConnection) -> Vec<u8> {
        let mut records = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut records).expect("write_tls to a Vec");
        }
        records
    }

    /// Moves records both ways until neither side has any to send; the server's reach the
    /// core `chunk` bytes at a time.
    fn pump(
        core: &mut ClientCore,
        server: &mut ServerConnection,
        chunk: usize,
        now: Instant,
    ) -> Result<(), ClientError> {
        for _ in 0..16 {
            let sent = to_server(core, server);
            let records = from_server(server);
            for piece in records.chunks(chunk) {
                feed(core, piece, now)?;
            }
            if sent == 0 && records.is_empty() {
                return Ok(());
            }
        }
        panic!("the two sides never went quiet");
    }

    /// Every plaintext byte the server has received.
    fn server_plaintext(server: &mut ServerConnection) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match server.reader().read(&mut buf) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return out,
                Err(e) => panic!("server read: {e}"),
            }
        }
    }

    #[test]
    fn a_request_queued_in_the_handshake_goes_through_tls_and_is_answered() {
        let t0 = Instant::now();
        let (mut core, mut server) = pair();
        assert!(core.is_tls() && core.is_handshaking());
        assert!(core.wants_transmit(), "the ClientHello waits");
        // Queued before the handshake ends: sent once it does.
        let metadata = Metadata::from_pairs([("k", "v")]).expect("metadata");
        let id = core
            .start_request(
                &ECHO,
                &Bytes::from_static(b"over tls"),
                Some(ms(900)),
                &metadata,
                t0,
            )
            .expect("request");
        pump(&mut core, &mut server, usize::MAX, t0).expect("handshake");
        assert!(!core.is_handshaking() && !server.is_handshaking());
        assert_eq!(server.alpn_protocol(), Some(ALPN));
        assert_eq!(
            decode_all(&server_plaintext(&mut server)),
            [echo_request(id, 900, metadata, b"over tls")]
        );
        // The answer, with a PING, reaches the core one byte at a time.
        server
            .writer()
            .write_all(&encode(&[Frame::Ping(5), ok(id, b"back")]))
            .expect("server write");
        pump(&mut core, &mut server, 1, t0 + ms(3)).expect("answer");
        assert_eq!(done(&mut core), [id]);
        assert_eq!(&payload(&mut core, id)[..], b"back");
        assert_eq!(
            decode_all(&server_plaintext(&mut server)),
            [Frame::Pong(5)],
            "the PONG went back through TLS"
        );
        // The server's close_notify ends the stream.
        let waiting = call(&mut core, t0);
        pump(&mut core, &mut server, usize::MAX, t0).expect("request");
        server.send_close_notify();
        pump(&mut core, &mut server, usize::MAX, t0).expect("a clean close");
        assert!(core.is_ended());
        assert_closed(&failed(&mut core, waiting));
        assert!(!core.may_reconnect());
    }

    #[test]
    fn the_end_of_the_stream_after_the_handshake_is_no_tls_error() {
        let t0 = Instant::now();
        let (mut core, mut server) = pair();
        pump(&mut core, &mut server, usize::MAX, t0).expect("handshake");
        let id = call(&mut core, t0);
        pump(&mut core, &mut server, usize::MAX, t0).expect("request");
        core.handle_eof().expect("no error of its own");
        assert_closed(&failed(&mut core, id));
    }

    fn assert_not_tls(result: Result<(), ClientError>, expected: Option<&Status>) {
        match result {
            Err(ClientError::NotTls { addr, status }) => {
                assert_eq!(addr, peer());
                assert_eq!(status.as_ref(), expected);
            }
            other => panic!("expected NotTls, got {other:?}"),
        }
    }

    #[test]
    fn a_plaintext_server_answering_the_client_hello_is_not_tls() {
        let t0 = Instant::now();
        let expected = Status::new(
            Code::INVALID_ARGUMENT,
            "this port speaks plaintext courier, not TLS",
        );
        let answer = encode(&[error_frame(expected.code, &expected.message)]);
        for one_byte_at_a_time in [false, true] {
            let (mut core, _server) = pair();
            let id = call(&mut core, t0);
            assert!(!core.transmit().is_empty(), "the ClientHello");
            let result = if one_byte_at_a_time {
                let (last, rest) = answer.split_last().expect("bytes");
                for &byte in rest {
                    feed(&mut core, &[byte], t0).expect("not enough to tell yet");
                    assert!(core.take_response(id).is_none());
                }
                feed(&mut core, &[*last], t0)
            } else {
                feed(&mut core, &answer, t0)
            };
            assert_not_tls(result, Some(&expected));
            assert_closed(&failed(&mut core, id));
            assert!(core.check_usable().is_err());
            assert!(!core.may_reconnect());
        }
    }

    #[test]
    fn a_plaintext_answer_is_held_to_the_body_limit() {
        let t0 = Instant::now();
        let config = CoreConfig::default().with_max_body_len(64);
        let (mut core, _server) = pair_with(config.clone());
        // A courier header that announces a 1,000-byte ERROR: not waited for.
        let frame = raw_frame(FrameKind::Error, 0, 0, Code::INTERNAL.0, &[b'x'; 1000]);
        assert_not_tls(feed(&mut core, &frame[..HEADER_LEN], t0), None);
        assert!(core.receive_buffer().is_empty());
        // One within the limit is read for its status.
        let (mut core, _server) = pair_with(config);
        let expected = Status::new(Code::INVALID_ARGUMENT, "x".repeat(64));
        let answer = encode(&[error_frame(expected.code, &expected.message)]);
        assert_not_tls(feed(&mut core, &answer, t0), Some(&expected));
    }

    #[test]
    fn the_end_of_the_stream_in_the_handshake_is_an_unexpected_eof() {
        let t0 = Instant::now();
        // Before any byte came back, and after part of the server's first flight.
        for received in [0, 10] {
            let (mut core, mut server) = pair();
            let id = call(&mut core, t0);
            to_server(&mut core, &mut server);
            let flight = from_server(&mut server);
            feed(&mut core, &flight[..received], t0).expect("part of a flight");
            assert!(core.is_handshaking());
            match core.handle_eof() {
                Err(ClientError::Io(e)) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
                }
                other => panic!("expected UnexpectedEof, got {other:?}"),
            }
            assert_closed(&failed(&mut core, id));
        }
        // Part of the magic, then the end: too little to tell, the handshake was cut short.
        let (mut core, _server) = pair();
        feed(&mut core, b"COU", t0).expect("could be either");
        match core.handle_eof() {
            Err(ClientError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof),
            other => panic!("expected UnexpectedEof, got {other:?}"),
        }
        // The whole magic, then the end: a plaintext courier server that closed.
        let (mut core, _server) = pair();
        feed(&mut core, b"COUR", t0).expect("the start of a frame");
        assert_not_tls(core.handle_eof(), None);
    }

    #[test]
    fn bytes_that_are_not_tls_records_break_the_connection_with_an_alert() {
        let t0 = Instant::now();
        let (mut core, _server) = pair();
        let id = call(&mut core, t0);
        let hello = core.transmit().len();
        core.advance_transmit(hello);
        let err = feed(&mut core, b"HTTP/1.1 400 Bad Request\r\n\r\n", t0).expect_err("not TLS");
        assert!(matches!(err, ClientError::Tls(_)), "{err:?}");
        assert!(matches!(failed(&mut core, id), ClientError::Tls(_)));
        assert!(matches!(call_err(&mut core, t0), ClientError::Tls(_)));
        assert_eq!(
            core.transmit().first(),
            Some(&0x15),
            "an alert record says why"
        );
        assert!(!core.may_reconnect());
    }
}
