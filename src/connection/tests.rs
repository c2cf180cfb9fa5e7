//! The connection's rules, byte by byte: pipelining, errors, limits, timers, held responses,
//! drains, deadlines and the ends of a connection.

use std::time::Duration;

use super::*;
use crate::proto::{Metadata, Request as RequestFrame, DEFAULT_MAX_BODY_LEN};
use crate::service::Method;
use bytes::Bytes;

const ECHO: Method<Bytes, Bytes> = Method::new(1, 1, "echo.Echo");

fn router() -> Router {
    let mut r = Router::new();
    r.register(ECHO, |_, body: Bytes| Ok(body));
    r
}

fn new_conn(config: ConnectionConfig) -> Connection {
    Connection::new(config, Arc::new(Stats::new()), Instant::now())
}

fn encode(frame: &Frame) -> BytesMut {
    let mut b = BytesMut::new();
    Encoder::new(DEFAULT_MAX_BODY_LEN)
        .encode(frame, &mut b)
        .expect("encodes");
    b
}

fn request(id: u64, service: u16, body: &'static [u8]) -> Frame {
    Frame::Request(RequestFrame {
        request_id: id,
        service,
        method: 1,
        deadline_ms: 0,
        metadata: Metadata::new(),
        payload: Bytes::from_static(body),
    })
}

fn output(conn: &mut Connection) -> Vec<Frame> {
    let mut out = Vec::new();
    conn.flush_to(&mut out, Instant::now())
        .expect("vec never fails");
    let mut buf = BytesMut::from(&out[..]);
    let mut dec = Decoder::new(DEFAULT_MAX_BODY_LEN);
    let mut frames = Vec::new();
    while let Some(f) = dec.decode(&mut buf).expect("server output decodes") {
        frames.push(f);
    }
    assert!(buf.is_empty());
    frames
}

#[test]
fn pipelined_requests_in_one_read_are_answered_in_order() {
    let mut conn = new_conn(ConnectionConfig::default());
    let mut input = encode(&request(1, 1, b"a"));
    input.extend_from_slice(&encode(&Frame::Ping(77)));
    input.extend_from_slice(&encode(&request(2, 9, b"b")));
    conn.read_from(&mut &input[..]).expect("reads");
    assert_eq!(conn.process(Instant::now(), &router()), 3);
    let frames = output(&mut conn);
    assert_eq!(frames.len(), 3);
    assert!(
        matches!(&frames[0], Frame::Response(r) if r.request_id == 1 && &r.payload[..] == b"a")
    );
    assert_eq!(frames[1], Frame::Pong(77));
    assert!(matches!(&frames[2], Frame::Response(r) if r.code == Code::UNIMPLEMENTED));
    assert!(conn.wants_read());
}

#[test]
fn fatal_error_queues_error_then_lingers_then_closes() {
    let mut conn = new_conn(ConnectionConfig::default());
    conn.receive(b"GET / HTTP/1.1\r\n\r\n");
    conn.process(Instant::now(), &router());
    assert!(!conn.wants_read());
    let frames = output(&mut conn);
    assert!(matches!(
        &frames[..],
        [Frame::Error {
            code: Code::INVALID_ARGUMENT,
            ..
        }]
    ));
    assert!(conn.wants_write_shutdown());
    let t0 = Instant::now();
    conn.write_closed(t0);
    assert!(conn.wants_read() && !conn.is_closed());
    conn.handle_timeout(t0 + DEFAULT_LINGER);
    assert!(conn.is_closed());
    assert!(matches!(
        conn.close_reason(),
        Some(CloseReason::Protocol(_))
    ));
}

#[test]
fn eof_after_requests_answers_them_then_closes() {
    let mut conn = new_conn(ConnectionConfig::default());
    let input = encode(&request(5, 1, b"last words"));
    conn.read_from(&mut &input[..]).expect("reads");
    assert_eq!(conn.read_from(&mut &b""[..]).expect("eof"), 0);
    conn.process(Instant::now(), &router());
    assert!(!conn.is_closed());
    assert_eq!(output(&mut conn).len(), 1);
    assert!(conn.is_closed());
}

fn limited() -> ConnectionConfig {
    ConnectionConfig {
        output_high_water: 100,
        output_hard_cap: 10_000,
        max_frames_per_turn: 4,
        max_empty_frames: 2,
        frame_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(10),
        write_timeout: Duration::from_secs(3),
        ..ConnectionConfig::default()
    }
}

#[test]
fn an_idle_connection_gives_its_buffers_back() {
    let mut pool = BufferPool::new();
    let mut conn = new_conn(ConnectionConfig::default());
    conn.lend_buffers(&mut pool);
    let input = encode(&request(1, 1, b"hello"));
    conn.read_from(&mut &input[..]).expect("reads");
    conn.process(Instant::now(), &router());
    assert!(conn.buffer_capacity() >= READ_CHUNK);
    assert_eq!(output(&mut conn).len(), 1);
    conn.return_buffers(&mut pool);
    assert_eq!(conn.buffer_capacity(), 0, "idle: no buffer held");
    assert_eq!(pool.len(), 2, "both buffers kept for the next connection");
    // A partial frame keeps its read buffer.
    conn.lend_buffers(&mut pool);
    conn.read_from(&mut &input[..10]).expect("reads");
    conn.process(Instant::now(), &router());
    conn.return_buffers(&mut pool);
    assert_eq!(conn.buffered_input(), 10);
    assert!(conn.buffer_capacity() > 0);
}

#[test]
fn the_turn_budget_stops_decoding_and_the_next_turn_resumes() {
    let mut conn = new_conn(ConnectionConfig {
        output_high_water: 1000,
        ..limited()
    });
    let mut input = BytesMut::new();
    for id in 1..=10 {
        input.extend_from_slice(&encode(&request(id, 1, b"x")));
    }
    conn.receive(&input);
    let now = Instant::now();
    assert_eq!(conn.process(now, &router()), 4);
    assert!(conn.budget_spent() && !conn.wants_read());
    assert_eq!(output(&mut conn).len(), 4);
    conn.begin_turn();
    assert_eq!(conn.process(now, &router()), 4);
    conn.begin_turn();
    assert_eq!(conn.process(now, &router()), 2);
    assert_eq!(output(&mut conn).len(), 6);
    assert!(!conn.budget_spent());
}

#[test]
fn output_above_the_high_water_mark_pauses_until_drained() {
    let mut conn = new_conn(ConnectionConfig {
        max_frames_per_turn: 64,
        ..limited()
    });
    let mut input = BytesMut::new();
    for id in 1..=10 {
        input.extend_from_slice(&encode(&request(id, 1, &[7; 40])));
    }
    conn.receive(&input);
    let now = Instant::now();
    // Each response is 36 + 40 bytes: the second one passes the 100-byte mark.
    assert_eq!(conn.process(now, &router()), 2);
    assert!(!conn.wants_read(), "paused");
    assert_eq!(
        conn.stats
            .output_paused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(output(&mut conn).len(), 2);
    // Drained: decoding resumes; the socket is read again once no complete frame waits.
    assert!(conn.has_decodable_input() && !conn.wants_read());
    assert_eq!(conn.process(now, &router()), 2);
    assert_eq!(output(&mut conn).len(), 2);
    assert_eq!(conn.process(now, &router()), 2);
    assert_eq!(output(&mut conn).len(), 2);
    assert_eq!(conn.process(now, &router()), 2);
    assert_eq!(output(&mut conn).len(), 2);
    assert_eq!(conn.process(now, &router()), 2);
    assert_eq!(output(&mut conn).len(), 2);
    assert!(conn.wants_read(), "every frame decoded: reading resumes");
}

#[test]
fn a_run_of_pongs_is_a_flood_but_pings_and_requests_reset_it() {
    let mut conn = new_conn(limited());
    let pong = encode(&Frame::Pong(1));
    let mut input = BytesMut::new();
    for frame in [&pong, &pong, &encode(&Frame::Ping(2)), &pong, &pong] {
        input.extend_from_slice(frame);
    }
    conn.receive(&input);
    conn.process(Instant::now(), &router());
    assert!(conn.close_reason().is_none(), "never more than 2 in a row");
    conn.begin_turn();
    conn.receive(&pong);
    conn.process(Instant::now(), &router());
    assert_eq!(conn.close_reason(), Some(&CloseReason::Flood));
    let frames = output(&mut conn);
    // The PONG that tripped the limit had a valid header: the ERROR carries its id.
    assert!(matches!(
        frames.last(),
        Some(Frame::Error {
            code: Code::RESOURCE_EXHAUSTED,
            request_id: 1,
            ..
        })
    ));
}

#[test]
fn a_trickled_frame_times_out_from_its_first_byte() {
    let mut conn = new_conn(limited());
    let t0 = Instant::now();
    let input = encode(&request(1, 1, b"slow"));
    conn.receive(&input[..5]);
    conn.process(t0, &router());
    assert_eq!(conn.timeout(), Some(t0 + Duration::from_secs(1)));
    // More bytes do not restart the clock.
    conn.receive(&input[5..20]);
    conn.process(t0 + Duration::from_millis(900), &router());
    conn.handle_timeout(t0 + Duration::from_millis(999));
    assert!(conn.close_reason().is_none());
    conn.handle_timeout(t0 + Duration::from_secs(1));
    assert_eq!(conn.close_reason(), Some(&CloseReason::FrameTimeout));
    assert!(matches!(
        &output(&mut conn)[..],
        [Frame::Error {
            code: Code::DEADLINE_EXCEEDED,
            ..
        }]
    ));
}

#[test]
fn an_idle_connection_is_sent_goaway_after_the_idle_timeout() {
    let t0 = Instant::now();
    let mut conn = Connection::new(limited(), Arc::new(Stats::new()), t0);
    assert_eq!(conn.timeout(), Some(t0 + Duration::from_secs(10)));
    conn.handle_timeout(t0 + Duration::from_secs(10));
    assert_eq!(conn.close_reason(), Some(&CloseReason::IdleTimeout));
    assert!(matches!(
        &output(&mut conn)[..],
        [Frame::GoAway {
            code: Code::UNAVAILABLE,
            ..
        }]
    ));
}

#[test]
fn output_that_makes_no_progress_closes_at_the_write_timeout() {
    let t0 = Instant::now();
    let mut conn = Connection::new(limited(), Arc::new(Stats::new()), t0);
    conn.receive(&encode(&request(1, 1, b"never read")));
    conn.receive_eof();
    conn.process(t0, &router());
    assert!(conn.wants_write());
    assert_eq!(conn.timeout(), Some(t0 + Duration::from_secs(3)));
    conn.handle_timeout(t0 + Duration::from_secs(3));
    assert!(conn.is_closed());
    assert_eq!(conn.close_reason(), Some(&CloseReason::WriteTimeout));
    assert_eq!(conn.queued_output(), 0, "its output is dropped");
}

#[test]
fn output_over_the_hard_cap_closes_at_once() {
    let mut conn = new_conn(ConnectionConfig {
        output_high_water: 10,
        output_hard_cap: 50,
        ..limited()
    });
    conn.receive(&encode(&request(1, 1, &[1; 60])));
    conn.process(Instant::now(), &router());
    assert!(conn.is_closed());
    assert_eq!(conn.close_reason(), Some(&CloseReason::OutputCap));
}

#[test]
fn a_timeout_of_duration_max_means_never_and_does_not_overflow() {
    let t0 = Instant::now();
    let config = ConnectionConfig {
        idle_timeout: Duration::MAX,
        frame_timeout: Duration::MAX,
        write_timeout: Duration::MAX,
        linger: Duration::MAX,
        ..ConnectionConfig::default()
    };
    let mut conn = Connection::new(config, Arc::new(Stats::new()), t0);
    assert!(conn
        .timeout()
        .is_some_and(|t| t > t0 + Duration::from_secs(1 << 30)));
    conn.handle_timeout(t0 + Duration::from_secs(1 << 30));
    assert!(conn.close_reason().is_none());
    conn.receive(b"GET / HTTP/1.1\r\n\r\n");
    conn.process(t0, &router());
    output(&mut conn);
    conn.write_closed(t0);
    assert!(conn.timeout().is_some(), "lingers, for a very long time");
}

#[test]
fn a_long_blocking_call_restarts_the_idle_clock_when_it_finishes() {
    const SLOW: Method<Bytes, Bytes> = Method::new(1, 2, "echo.Slow");
    let mut router = router();
    router.register_blocking(SLOW, |_, body: Bytes| Ok(body));
    let t0 = Instant::now();
    let mut conn = Connection::new(limited(), Arc::new(Stats::new()), t0);
    let input = encode(&Frame::Request(RequestFrame {
        request_id: 1,
        service: SLOW.service,
        method: SLOW.method,
        deadline_ms: 0,
        metadata: Metadata::new(),
        payload: Bytes::new(),
    }));
    conn.receive(&input);
    conn.process(t0, &router);
    let mut calls = Vec::new();
    conn.take_blocking(&mut calls);
    assert_eq!((calls.len(), conn.in_flight()), (1, 1));
    assert_eq!(conn.timeout(), None, "not idle while a call runs");
    let done = t0 + Duration::from_secs(20);
    conn.complete(calls[0].id(), Ok(BytesMut::new()), done);
    assert_eq!(output(&mut conn).len(), 1);
    assert_eq!(conn.timeout(), Some(done + Duration::from_secs(10)));
}

/// A router whose method 1/3 holds its response for commit ticket = its request id.
fn holding_router(commit: Arc<dyn crate::service::Commit>) -> Router {
    const HOLD: Method<Bytes, Bytes> = Method::new(1, 3, "test.Hold");
    let mut router = router();
    router.register(HOLD, |ctx, body: Bytes| {
        ctx.hold_until_committed(ctx.request_id);
        Ok(body)
    });
    router.set_commit(commit);
    router
}

struct NoCommit;
impl crate::service::Commit for NoCommit {
    fn commit(&self, _ticket: u64) -> Result<(), Status> {
        Ok(())
    }
}

fn hold(id: u64) -> Frame {
    hold_with(id, b"held")
}

/// A request to the holding method 1/3 that answers with `payload`.
fn hold_with(id: u64, payload: &'static [u8]) -> Frame {
    Frame::Request(RequestFrame {
        request_id: id,
        service: 1,
        method: 3,
        deadline_ms: 0,
        metadata: Metadata::new(),
        payload: Bytes::from_static(payload),
    })
}

#[test]
fn held_responses_wait_for_their_commit_and_others_do_not() {
    let router = holding_router(Arc::new(NoCommit));
    let mut conn = new_conn(ConnectionConfig::default());
    let mut input = encode(&hold(1));
    input.extend_from_slice(&encode(&request(2, 1, b"echo")));
    input.extend_from_slice(&encode(&hold(3)));
    conn.receive(&input);
    conn.process(Instant::now(), &router);
    let now_out = output(&mut conn);
    assert_eq!(now_out.len(), 1, "only the echo goes out before the commit");
    assert!(matches!(&now_out[0], Frame::Response(r) if r.request_id == 2));
    assert_eq!(conn.held_ticket(), Some(3), "the largest ticket");
    conn.committed(Ok(()), Instant::now());
    assert_eq!(conn.held_ticket(), None);
    let ids: Vec<u64> = output(&mut conn)
        .iter()
        .map(|f| match f {
            Frame::Response(r) if r.code == Code::OK && &r.payload[..] == b"held" => r.request_id,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(ids, [1, 3]);
}

#[test]
fn a_failed_commit_answers_each_held_request_with_its_status() {
    let router = holding_router(Arc::new(NoCommit));
    let mut conn = new_conn(ConnectionConfig::default());
    let mut input = encode(&hold(7));
    input.extend_from_slice(&encode(&hold(8)));
    conn.receive(&input);
    conn.process(Instant::now(), &router);
    assert!(output(&mut conn).is_empty());
    let status = Status::unavailable("disk full");
    conn.committed(Err(&status), Instant::now());
    let answers = output(&mut conn);
    assert_eq!(answers.len(), 2);
    for (frame, id) in answers.iter().zip([7, 8]) {
        match frame {
            Frame::Response(r) => {
                assert_eq!((r.request_id, r.code), (id, Code::UNAVAILABLE));
                assert_eq!(r.message(), Some("disk full"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn without_a_commit_set_a_held_response_goes_out_at_once() {
    const HOLD: Method<Bytes, Bytes> = Method::new(1, 3, "test.Hold");
    let mut router = router();
    router.register(HOLD, |ctx, body: Bytes| {
        ctx.hold_until_committed(5);
        Ok(body)
    });
    let mut conn = new_conn(ConnectionConfig::default());
    conn.receive(&encode(&hold(1)));
    conn.process(Instant::now(), &router);
    assert_eq!(conn.held_ticket(), None);
    assert_eq!(output(&mut conn).len(), 1);
}

#[test]
fn a_drain_sends_goaway_answers_what_was_decoded_then_closes() {
    const SLOW: Method<Bytes, Bytes> = Method::new(1, 2, "echo.Slow");
    let mut router = holding_router(Arc::new(NoCommit));
    router.register_blocking(SLOW, |_, body: Bytes| Ok(body));
    let t0 = Instant::now();
    let mut conn = Connection::new(limited(), Arc::new(Stats::new()), t0);
    let mut input = encode(&Frame::Request(RequestFrame {
        request_id: 4,
        service: SLOW.service,
        method: SLOW.method,
        deadline_ms: 0,
        metadata: Metadata::new(),
        payload: Bytes::from_static(b"slow"),
    }));
    input.extend_from_slice(&encode(&hold(5)));
    conn.receive(&input);
    conn.process(t0, &router);
    let mut calls = Vec::new();
    conn.take_blocking(&mut calls);
    assert_eq!(calls.len(), 1);
    conn.drain("draining", t0);
    // A request that arrives after the GOAWAY is not read.
    assert!(!conn.wants_read());
    conn.receive(&encode(&request(6, 1, b"late")));
    assert_eq!(conn.process(t0, &router), 0);
    let goaway = output(&mut conn);
    match &goaway[..] {
        [Frame::GoAway {
            last_request_id,
            code,
            ..
        }] => assert_eq!((*last_request_id, *code), (5, Code::OK)),
        other => panic!("expected one GOAWAY, got {other:?}"),
    }
    assert!(!conn.wants_write_shutdown(), "two answers still owed");
    conn.complete(calls[0].id(), Ok(BytesMut::from(&b"slow"[..])), t0);
    assert!(!conn.wants_write_shutdown(), "the held one is still owed");
    conn.committed(Ok(()), t0);
    let ids: Vec<u64> = output(&mut conn)
        .iter()
        .map(|f| match f {
            Frame::Response(r) => r.request_id,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(ids, [4, 5]);
    assert!(conn.wants_write_shutdown(), "everything answered: closing");
    assert_eq!(conn.close_reason(), Some(&CloseReason::GoAway));
}

/// Held requests 1 and 2 (SET-like), an echo 3, then `ending` in the same input: every
/// request is answered, the held ones after their commit, before the close; returns the
/// frames sent.
fn answers_before(ending: &Frame) -> (Connection, Vec<Frame>) {
    let router = holding_router(Arc::new(NoCommit));
    let mut conn = new_conn(ConnectionConfig::default());
    let mut input = encode(&hold(1));
    input.extend_from_slice(&encode(&hold(2)));
    input.extend_from_slice(&encode(&request(3, 1, b"echo")));
    input.extend_from_slice(&encode(ending));
    // A request after the ending frame is not read.
    input.extend_from_slice(&encode(&request(4, 1, b"after")));
    conn.receive(&input);
    let now = Instant::now();
    conn.process(now, &router);
    assert!(!conn.wants_read(), "nothing more is read");
    let mut frames = output(&mut conn);
    assert!(!conn.wants_write_shutdown(), "two answers are still owed");
    assert_eq!(conn.held_ticket(), Some(2));
    conn.committed(Ok(()), now);
    frames.extend(output(&mut conn));
    assert!(conn.wants_write_shutdown(), "all answered: closing");
    (conn, frames)
}

fn response_ids(frames: &[Frame]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Response(r) if r.code == Code::OK => Some(r.request_id),
            _ => None,
        })
        .collect()
}

#[test]
fn a_client_goaway_in_the_same_read_as_held_writes_still_gets_them_answered() {
    let goaway = Frame::GoAway {
        last_request_id: 0,
        code: Code::OK,
        message: String::new(),
    };
    let (conn, frames) = answers_before(&goaway);
    assert_eq!(response_ids(&frames), [3, 1, 2]);
    assert_eq!(frames.len(), 3, "no frame of our own: {frames:?}");
    assert_eq!(conn.close_reason(), Some(&CloseReason::PeerClosed));
}

#[test]
fn a_client_error_in_the_same_read_as_held_writes_still_gets_them_answered() {
    let error = Frame::Error {
        request_id: 0,
        code: Code::CANCELLED,
        message: "bye".into(),
    };
    let (conn, frames) = answers_before(&error);
    assert_eq!(response_ids(&frames), [3, 1, 2]);
    assert_eq!(frames.len(), 3, "no frame of our own: {frames:?}");
    assert!(matches!(
        conn.close_reason(),
        Some(CloseReason::PeerError(_))
    ));
}

#[test]
fn a_connection_error_after_held_writes_sends_their_answers_then_the_error_last() {
    // A RESPONSE from a client is a connection error (Section 9.4).
    let response = Frame::Response(crate::proto::Response {
        request_id: 9,
        code: Code::OK,
        metadata: Metadata::new(),
        payload: Bytes::new(),
    });
    let (conn, frames) = answers_before(&response);
    assert_eq!(response_ids(&frames), [3, 1, 2]);
    assert!(
        matches!(
            frames.last(),
            Some(Frame::Error {
                request_id: 9,
                code: Code::INVALID_ARGUMENT,
                ..
            })
        ),
        "{frames:?}"
    );
    assert_eq!(frames.len(), 4);
    assert!(matches!(
        conn.close_reason(),
        Some(CloseReason::UnexpectedFrame(_))
    ));
}

#[test]
fn a_bad_header_after_held_writes_sends_their_answers_then_the_error_last() {
    let router = holding_router(Arc::new(NoCommit));
    let mut conn = new_conn(ConnectionConfig::default());
    let mut input = encode(&hold(1));
    input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    conn.receive(&input);
    let now = Instant::now();
    conn.process(now, &router);
    assert!(
        output(&mut conn).is_empty(),
        "the ERROR waits for the answer"
    );
    conn.committed(Ok(()), now);
    let frames = output(&mut conn);
    assert_eq!(response_ids(&frames), [1]);
    assert!(matches!(
        frames.last(),
        Some(Frame::Error {
            code: Code::INVALID_ARGUMENT,
            request_id: 0,
            ..
        })
    ));
    assert!(conn.wants_write_shutdown());
}

#[test]
fn a_client_goaway_waits_for_blocking_calls_in_flight() {
    const SLOW: Method<Bytes, Bytes> = Method::new(1, 2, "echo.Slow");
    let mut router = router();
    router.register_blocking(SLOW, |_, body: Bytes| Ok(body));
    let now = Instant::now();
    let mut conn = new_conn(ConnectionConfig::default());
    let mut input = encode(&Frame::Request(RequestFrame {
        request_id: 1,
        service: SLOW.service,
        method: SLOW.method,
        deadline_ms: 0,
        metadata: Metadata::new(),
        payload: Bytes::from_static(b"slow"),
    }));
    input.extend_from_slice(&encode(&Frame::GoAway {
        last_request_id: 0,
        code: Code::OK,
        message: String::new(),
    }));
    conn.receive(&input);
    conn.process(now, &router);
    let mut calls = Vec::new();
    conn.take_blocking(&mut calls);
    assert_eq!(calls.len(), 1);
    assert!(!conn.wants_write_shutdown(), "the call is still owed");
    conn.complete(calls[0].id(), Ok(BytesMut::from(&b"slow"[..])), now);
    assert_eq!(response_ids(&output(&mut conn)), [1]);
    assert!(conn.wants_write_shutdown());
}

#[test]
fn a_shutdown_goaway_does_not_wait_but_sends_a_waiting_error() {
    let router = holding_router(Arc::new(NoCommit));
    let mut conn = new_conn(ConnectionConfig::default());
    let mut input = encode(&hold(1));
    input.extend_from_slice(b"junk");
    conn.receive(&input);
    conn.process(Instant::now(), &router);
    conn.go_away(Code::UNAVAILABLE, "shutting down");
    let frames = output(&mut conn);
    assert!(
        matches!(&frames[..], [Frame::Error { .. }]),
        "the ERROR, nothing else: {frames:?}"
    );
    assert!(conn.wants_write_shutdown());
}

/// A request with `deadline_ms` for method `method` of the echo service.
fn with_deadline(id: u64, method: u16, deadline_ms: u32) -> Frame {
    Frame::Request(RequestFrame {
        request_id: id,
        service: 1,
        method,
        deadline_ms,
        metadata: Metadata::new(),
        payload: Bytes::from_static(b"x"),
    })
}

#[test]
fn a_request_held_back_past_its_deadline_is_answered_deadline_exceeded_without_running() {
    use std::sync::atomic::{AtomicU32, Ordering};
    const SLOW: Method<Bytes, Bytes> = Method::new(1, 2, "echo.Slow");
    const COUNTED: Method<Bytes, Bytes> = Method::new(1, 5, "test.Counted");
    let runs = Arc::new(AtomicU32::new(0));
    let mut router = router();
    router.register_blocking(SLOW, |_, body: Bytes| Ok(body));
    let counted = Arc::clone(&runs);
    router.register(COUNTED, move |_, body: Bytes| {
        counted.fetch_add(1, Ordering::SeqCst);
        Ok(body)
    });
    let t0 = Instant::now();
    let mut conn = new_conn(ConnectionConfig {
        max_in_flight: 1,
        ..ConnectionConfig::default()
    });
    // A blocking call fills the in-flight limit; two requests with a 100 ms deadline and
    // one with none wait behind it in the read buffer.
    let mut input = encode(&with_deadline(1, 2, 0));
    for (id, deadline_ms) in [(2, 100), (3, 0), (4, 100)] {
        input.extend_from_slice(&encode(&with_deadline(id, 5, deadline_ms)));
    }
    conn.receive(&input);
    assert_eq!(conn.process(t0, &router), 1);
    let mut calls = Vec::new();
    conn.take_blocking(&mut calls);
    // The call finishes 150 ms later: the waiting requests are dispatched then.
    let later = t0 + Duration::from_millis(150);
    conn.complete(calls[0].id(), Ok(BytesMut::from(&b"x"[..])), later);
    conn.begin_turn();
    assert_eq!(conn.process(later, &router), 3);
    let frames = output(&mut conn);
    let codes: Vec<(u64, Code)> = frames
        .iter()
        .map(|f| match f {
            Frame::Response(r) => (r.request_id, r.code),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        codes,
        [
            (1, Code::OK),
            (2, Code::DEADLINE_EXCEEDED),
            (3, Code::OK),
            (4, Code::DEADLINE_EXCEEDED)
        ]
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "only the one without a deadline ran"
    );
    assert_eq!(conn.stats.deadline_expired.load(Ordering::Relaxed), 2);
    // A deadline counts from the receipt, not the dispatch: one received 50 ms ago with
    // 100 ms runs.
    conn.receive(&encode(&with_deadline(5, 5, 100)));
    let received = later + Duration::from_millis(10);
    conn.process(received, &router);
    assert_eq!(response_ids(&output(&mut conn)), [5]);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[test]
fn the_deadline_of_a_request_held_back_counts_from_the_read_that_brought_it() {
    let router = router();
    let t0 = Instant::now();
    let mut conn = new_conn(ConnectionConfig {
        max_frames_per_turn: 1,
        ..ConnectionConfig::default()
    });
    let mut input = encode(&with_deadline(1, 1, 50));
    input.extend_from_slice(&encode(&with_deadline(2, 1, 50)));
    conn.receive(&input);
    assert_eq!(
        conn.process(t0, &router),
        1,
        "the turn budget holds the second back"
    );
    conn.begin_turn();
    // The next turn comes 60 ms after the read: its deadline has passed.
    assert_eq!(conn.process(t0 + Duration::from_millis(60), &router), 1);
    let frames = output(&mut conn);
    assert!(
        matches!(&frames[1], Frame::Response(r) if r.request_id == 2 && r.code == Code::DEADLINE_EXCEEDED)
    );
    assert!(matches!(&frames[0], Frame::Response(r) if r.request_id == 1 && r.code == Code::OK));
}

#[test]
fn request_id_zero_is_refused_unprocessed_and_a_goaway_then_names_zero() {
    let mut conn = new_conn(ConnectionConfig::default());
    conn.receive(&encode(&request(0, 1, b"zero")));
    conn.process(Instant::now(), &router());
    conn.drain("draining", Instant::now());
    let frames = output(&mut conn);
    match &frames[..] {
        [Frame::Response(r), Frame::GoAway {
            last_request_id: 0, ..
        }] => {
            assert_eq!((r.request_id, r.code), (0, Code::INVALID_ARGUMENT));
            assert!(r.message().is_some_and(|m| m.contains("reserved")));
        }
        other => panic!("expected the refusal and GOAWAY(0), got {other:?}"),
    }
}

#[test]
fn input_never_exceeds_one_frame_plus_one_read_chunk() {
    // A 1 MiB limit, and a peer that sends 1 MiB frames back to back and faster than they
    // are decoded: each read takes at most what the frame at the front lacks plus a
    // chunk, and none happens while a complete frame waits.
    let config = ConnectionConfig {
        max_body_len: 1024 * 1024,
        max_frames_per_turn: 1,
        ..ConnectionConfig::default()
    };
    let mut conn = new_conn(config);
    let mut wire = Vec::new();
    for id in 1..=6 {
        let frame = Frame::Request(RequestFrame {
            request_id: id,
            service: 9,
            method: 1,
            deadline_ms: 0,
            metadata: Metadata::new(),
            payload: Bytes::from(vec![id as u8; 1024 * 1024]),
        });
        let mut b = BytesMut::new();
        Encoder::new(u32::MAX)
            .encode(&frame, &mut b)
            .expect("encodes");
        wire.extend_from_slice(&b);
    }
    let mut src = &wire[..];
    let mut most = 0;
    let mut answered = 0;
    for _ in 0..10_000 {
        conn.begin_turn();
        while conn.wants_read() {
            // A reader that fills all the room it is given, up to the limit.
            let n = conn
                .read_with(|buf, limit| {
                    let take = limit.min(src.len()).min(256 * 1024);
                    buf.extend_from_slice(&src[..take]);
                    src = &src[take..];
                    Ok(take)
                })
                .expect("reads");
            most = most.max(conn.buffered_input());
            conn.process(Instant::now(), &router());
            if n == 0 {
                break;
            }
        }
        conn.process(Instant::now(), &router());
        answered += output(&mut conn).len();
        if answered == 6 {
            break;
        }
    }
    assert_eq!(answered, 6);
    assert!(
        most <= config.max_buffered_input(),
        "{most} bytes buffered, over the bound of {}",
        config.max_buffered_input()
    );
    assert!(most > 1024 * 1024, "a whole frame was buffered: {most}");
}

#[test]
fn responses_held_for_a_commit_count_toward_the_high_water_mark() {
    let router = holding_router(Arc::new(NoCommit));
    let mut conn = new_conn(ConnectionConfig {
        output_high_water: 100,
        ..ConnectionConfig::default()
    });
    let mut input = BytesMut::new();
    for id in 1..=6 {
        input.extend_from_slice(&encode(&hold_with(id, &[9; 60])));
    }
    conn.receive(&input);
    let now = Instant::now();
    // Each held answer is 36 + 60 bytes: the second passes the 100-byte mark.
    assert_eq!(conn.process(now, &router), 2);
    assert!(conn.paused_for_output() && !conn.wants_read());
    assert_eq!(
        conn.queued_output(),
        2 * 96,
        "held answers are queued output"
    );
    assert!(
        output(&mut conn).is_empty(),
        "nothing goes out before the commit"
    );
    conn.committed(Ok(()), now);
    assert_eq!(response_ids(&output(&mut conn)), [1, 2]);
    assert!(conn.has_decodable_input());
    assert_eq!(
        conn.process(now, &router),
        2,
        "decoding resumes after the commit"
    );
    assert_eq!(conn.held_ticket(), Some(4));
}

/// A connection that requires an identity, with one token ("t0ken" proves "alice").
fn guarded_conn() -> Connection {
    let mut tokens = crate::auth::TokenTable::new();
    tokens.insert_token("alice", b"t0ken");
    let mut conn = new_conn(ConnectionConfig::default());
    conn.set_authentication(Arc::new(Authentication {
        authenticator: Some(Arc::new(tokens)),
        required: true,
    }));
    conn
}

fn auth_request(id: u64, token: &'static [u8]) -> Frame {
    Frame::Request(RequestFrame {
        request_id: id,
        service: crate::admin::SERVICE,
        method: crate::admin::AUTH.method,
        deadline_ms: 0,
        metadata: Metadata::new(),
        payload: Bytes::from_static(token),
    })
}

fn codes(frames: &[Frame]) -> Vec<(u64, Code)> {
    frames
        .iter()
        .map(|f| match f {
            Frame::Response(r) => (r.request_id, r.code),
            Frame::Error {
                request_id, code, ..
            } => (*request_id, *code),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[test]
fn requests_around_an_auth_in_one_read_see_the_identity_in_order() {
    let mut conn = guarded_conn();
    let mut input = encode(&request(1, 1, b"before"));
    input.extend_from_slice(&encode(&auth_request(2, b"t0ken")));
    input.extend_from_slice(&encode(&request(3, 1, b"after")));
    conn.receive(&input);
    assert_eq!(conn.process(Instant::now(), &router()), 3);
    let frames = output(&mut conn);
    assert_eq!(
        codes(&frames),
        [(1, Code::UNAUTHENTICATED), (2, Code::OK), (3, Code::OK)]
    );
    assert_eq!(conn.identity().map(|id| id.name()), Some("alice"));
}

#[test]
fn the_pre_auth_body_limit_applies_until_auth_and_from_the_next_header_on() {
    let big: &'static [u8] =
        Box::leak(vec![1u8; PRE_AUTH_MAX_BODY as usize + 1].into_boxed_slice());
    // After AUTH in the same read, the large frame is within the server's own limit.
    let mut conn = guarded_conn();
    let mut input = encode(&auth_request(1, b"t0ken"));
    input.extend_from_slice(&encode(&request(2, 1, big)));
    conn.receive(&input);
    conn.process(Instant::now(), &router());
    assert_eq!(codes(&output(&mut conn)), [(1, Code::OK), (2, Code::OK)]);
    // Without it, the same frame is a connection error.
    let mut conn = guarded_conn();
    conn.receive(&encode(&request(2, 1, big)));
    conn.process(Instant::now(), &router());
    assert_eq!(codes(&output(&mut conn)), [(2, Code::RESOURCE_EXHAUSTED)]);
    assert!(!conn.wants_read());
}

#[test]
fn the_last_allowed_failure_is_an_error_that_ends_the_connection() {
    let mut conn = guarded_conn();
    let mut input = BytesMut::new();
    for id in 1..=u64::from(MAX_AUTH_FAILURES) + 1 {
        input.extend_from_slice(&encode(&auth_request(id, b"wrong")));
    }
    conn.receive(&input);
    conn.process(Instant::now(), &router());
    let frames = output(&mut conn);
    let last = u64::from(MAX_AUTH_FAILURES);
    let mut expected: Vec<(u64, Code)> = (1..last).map(|id| (id, Code::UNAUTHENTICATED)).collect();
    expected.push((last, Code::UNAUTHENTICATED));
    assert_eq!(codes(&frames), expected, "nothing after the ERROR");
    assert!(matches!(frames.last(), Some(Frame::Error { .. })));
    assert_eq!(conn.close_reason(), Some(&CloseReason::AuthFailures));
    assert_eq!(
        conn.stats
            .auth_failed
            .load(std::sync::atomic::Ordering::Relaxed),
        last
    );
}

/// Every way a request is answered counts it once, under its method and the status it was
/// answered with, and puts it in that method's latency histogram: inline OK and error, an
/// unknown method, request id 0, held answers after a failed commit, and a blocking call
/// completed, with the latency each path measures.
#[test]
fn every_answer_is_counted_once_under_its_method_and_status() {
    const SLOW: Method<Bytes, Bytes> = Method::new(1, 2, "echo.Slow");
    let mut router = holding_router(Arc::new(NoCommit));
    router.register_blocking(SLOW, |_, body: Bytes| Ok(body));
    // The methods in the router's order: echo.Echo 1/1, echo.Slow 1/2, test.Hold 1/3.
    let names = router.method_names();
    assert_eq!(&names[..], ["echo.Echo", "echo.Slow", "test.Hold"]);
    let stats = Arc::new(Stats::with_methods(names));
    let t0 = Instant::now();
    let mut conn = Connection::new(ConnectionConfig::default(), Arc::clone(&stats), t0);
    let frame = |id: u64, method: u16, deadline_ms: u32, body: &'static [u8]| {
        Frame::Request(RequestFrame {
            request_id: id,
            service: 1,
            method,
            deadline_ms,
            metadata: Metadata::new(),
            payload: Bytes::from_static(body),
        })
    };
    let mut input = encode(&frame(1, 1, 0, b"ok"));
    input.extend_from_slice(&encode(&frame(0, 1, 0, b"id zero")));
    input.extend_from_slice(&encode(&frame(2, 9, 0, b"no such method")));
    input.extend_from_slice(&encode(&frame(3, 2, 0, b"blocking")));
    input.extend_from_slice(&encode(&frame(4, 3, 0, b"held")));
    input.extend_from_slice(&encode(&frame(5, 3, 0, b"held")));
    conn.receive(&input);
    conn.process(t0, &router);
    let mut calls = Vec::new();
    conn.take_blocking(&mut calls);
    assert_eq!(calls.len(), 1);
    // The held answers' commit fails 30 ms later; the blocking call ends 70 ms later.
    let status = Status::unavailable("disk full");
    conn.committed(Err(&status), t0 + Duration::from_millis(30));
    let call = calls[0].id();
    conn.complete(
        call,
        Ok(BytesMut::from(&b"done"[..])),
        t0 + Duration::from_millis(70),
    );
    // Another turn: a deadline counts from the request's receipt, so 1 ms is enough.
    conn.receive(&encode(&frame(6, 1, 1, b"later")));
    conn.process(t0 + Duration::from_secs(1), &router);
    assert_eq!(output(&mut conn).len(), 7);

    let snap = stats.methods();
    let names: Vec<&str> = snap.iter().map(|m| m.name).collect();
    assert_eq!(names, ["echo.Echo", "echo.Slow", "test.Hold", "unknown"]);
    let (echo, slow, hold, unknown) = (&snap[0], &snap[1], &snap[2], &snap[3]);
    // echo.Echo: id 0 refused INVALID_ARGUMENT, and two OK.
    assert_eq!(echo.codes[Code::OK.0 as usize], 2);
    assert_eq!(echo.codes[Code::INVALID_ARGUMENT.0 as usize], 1);
    assert_eq!((echo.count(), echo.observed()), (3, 3));
    // The blocking call: 70 ms, in the 100 ms bucket (index 12).
    assert_eq!(
        (slow.codes[0], slow.observed(), slow.buckets[12]),
        (1, 1, 1)
    );
    assert_eq!(slow.sum_ns, 70_000_000);
    // Both held answers: UNAVAILABLE after the failed commit, 30 ms each (the 50 ms bucket).
    assert_eq!(hold.codes[Code::UNAVAILABLE.0 as usize], 2);
    assert_eq!((hold.count(), hold.buckets[11]), (2, 2));
    assert_eq!(unknown.codes[Code::UNIMPLEMENTED.0 as usize], 1);
    assert_eq!(unknown.count(), 1);
    // The STATS totals are the sums.
    let total = |name: &str| {
        let snapshot = stats.snapshot();
        snapshot
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .expect("counted")
    };
    assert_eq!(total("requests_OK"), 3);
    assert_eq!(total("requests_UNAVAILABLE"), 2);
}

#[test]
fn prefetch_hints_see_each_batch_of_pipelined_requests_before_it_is_served() {
    use std::sync::Mutex;
    // What the hint was given, and how many requests the handler had served by then.
    type Batches = Vec<(Vec<Vec<u8>>, usize)>;
    let seen: Arc<Mutex<Batches>> = Arc::default();
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut r = Router::new();
    let counter = Arc::clone(&served);
    r.register(ECHO, move |_, body: Bytes| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(body)
    });
    let (log, counter) = (Arc::clone(&seen), Arc::clone(&served));
    r.register_prefetch(ECHO, move |payloads| {
        let batch = payloads.map(<[u8]>::to_vec).collect();
        let done = counter.load(std::sync::atomic::Ordering::SeqCst);
        log.lock().expect("lock").push((batch, done));
    });
    let mut conn = new_conn(ConnectionConfig::default());
    // Three echoes, a PING and a request for another service in one read.
    let mut input = encode(&request(1, 1, b"a"));
    input.extend_from_slice(&encode(&Frame::Ping(5)));
    input.extend_from_slice(&encode(&request(2, 1, b"bb")));
    input.extend_from_slice(&encode(&request(3, 9, b"other")));
    input.extend_from_slice(&encode(&request(4, 1, b"ccc")));
    conn.read_from(&mut &input[..]).expect("reads");
    assert_eq!(conn.process(Instant::now(), &r), 5);
    let want = vec![b"a".to_vec(), b"bb".to_vec(), b"ccc".to_vec()];
    assert_eq!(*seen.lock().expect("lock"), vec![(want, 0)]);
    assert_eq!(output(&mut conn).len(), 5);
    // A request alone is served at once: no hint.
    conn.read_from(&mut &encode(&request(6, 1, b"d"))[..])
        .expect("reads");
    assert_eq!(conn.process(Instant::now(), &r), 1);
    assert_eq!(seen.lock().expect("lock").len(), 1);
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 4);
}

#[test]
fn a_prefetch_hint_sees_at_most_the_turns_budget_and_the_rest_later() {
    use std::sync::Mutex;
    let sizes: Arc<Mutex<Vec<usize>>> = Arc::default();
    let mut r = router();
    let log = Arc::clone(&sizes);
    r.register_prefetch(ECHO, move |payloads| {
        log.lock().expect("lock").push(payloads.count());
    });
    let mut conn = new_conn(ConnectionConfig::default().with_max_frames_per_turn(40));
    let mut input = BytesMut::new();
    for id in 1..=50 {
        input.extend_from_slice(&encode(&request(id, 1, b"k")));
    }
    conn.read_from(&mut &input[..]).expect("reads");
    // The budget of 40: a batch of 32, then the 8 left of the budget.
    assert_eq!(conn.process(Instant::now(), &r), 40);
    assert_eq!(*sizes.lock().expect("lock"), vec![32, 8]);
    conn.begin_turn();
    assert_eq!(conn.process(Instant::now(), &r), 10);
    assert_eq!(*sizes.lock().expect("lock"), vec![32, 8, 10]);
    assert_eq!(output(&mut conn).len(), 50);
}
