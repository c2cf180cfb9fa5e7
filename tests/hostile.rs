//! A hostile-client suite over real sockets on 127.0.0.1: truncated frames, body lengths at
//! and over the limit, stray and corrupt bytes, slowloris, clients that never read, floods,
//! connections over the limit, half-closed sockets and idle connections.
//!
//! Every test starts its own server with the limits it exercises, bounds every loop, and
//! asserts on the server's STATS counters (polled with a generous limit), never on how long
//! something took.

mod support;

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use courier_rpc::admin::StatsReport;
use courier_rpc::client::Client;
use courier_rpc::echo::ECHO;
use courier_rpc::kv::{self, SetRequest};
use courier_rpc::proto::{Code, DecodeError, Frame, Metadata, Request, HEADER_LEN};
use courier_rpc::server::Server;

use support::{
    assert_serving, bundled_router, echo_request, encode, expect_single_error, fix_header_crc,
    header_claiming, hostile_stats, hostile_stats_client, hostile_wait_for_stats, raise_fd_limit,
    raw_connect, read_frames, read_until_close, request, send_raw, start, stats, tls_client_hello,
    wait_for_stats,
};

/// How long a test polls the counters before it gives up: generous, never hit on success.
const STATS_LIMIT: Duration = Duration::from_secs(15);

/// The increase of counter `name` from `before` to `after`.
fn delta(before: &StatsReport, after: &StatsReport, name: &str) -> u64 {
    after.value(name) - before.value(name)
}

/// Every `decode_errors_*` counter added up.
fn decode_errors_total(report: &StatsReport) -> u64 {
    DecodeError::CODE_NAMES
        .iter()
        .map(|name| report.value(&format!("decode_errors_{name}")))
        .sum()
}

/// Asserts that `frames` is exactly one OK RESPONSE for `request_id` carrying `payload`.
fn expect_single_echo(frames: &[Frame], request_id: u64, payload: &[u8]) {
    match frames {
        [Frame::Response(response)] => {
            assert_eq!(response.request_id, request_id, "{response:?}");
            assert_eq!(response.code, Code::OK, "{response:?}");
            assert_eq!(
                &response.payload[..],
                payload,
                "echo of request {request_id}"
            );
        }
        other => panic!("expected one RESPONSE to request {request_id}, got {other:?}"),
    }
}

fn echo_call(client: &mut Client, text: &str) {
    let reply = client
        .call(&ECHO, &Bytes::copy_from_slice(text.as_bytes()))
        .unwrap_or_else(|e| panic!("echo {text:?} on the normal client: {e}"));
    assert_eq!(&reply[..], text.as_bytes());
}

/// Sends `bytes` on a new raw connection (our side stays open) and returns every frame the
/// server sent before it closed.
fn send_and_read_until_close(addr: SocketAddr, bytes: &[u8]) -> Vec<Frame> {
    let mut stream = raw_connect(addr);
    send_raw(&mut stream, bytes);
    read_until_close(&mut stream)
}

/// Truncation: for several valid frames (a REQUEST with metadata and a deadline, a PING, an
/// echo REQUEST with a 100-byte payload), a client sends every proper prefix (1 to len-1
/// bytes) on its own connection and shuts down its write side. The server must send nothing
/// for the incomplete frame and close; every such close counts as `closed_peer`, no decode
/// error is counted, and the server keeps serving.
#[test]
fn truncated_frames_at_every_offset_get_no_answer_and_a_close() {
    let server = start(Server::builder(), bundled_router());
    let addr = server.local_addr();
    let mut stats_client = hostile_stats_client(addr);
    let before = hostile_stats(&mut stats_client);

    let metadata =
        Metadata::from_pairs([("trace", "a1"), ("tenant", "hostile")]).expect("valid metadata");
    let with_metadata = encode(&Frame::Request(Request {
        request_id: 5,
        service: ECHO.service,
        method: ECHO.method,
        deadline_ms: 1500,
        metadata,
        payload: Bytes::from_static(b"user1"),
    }));
    let samples = [
        ("REQUEST with metadata", with_metadata),
        ("PING", encode(&Frame::Ping(9))),
        ("echo REQUEST with 100 bytes", echo_request(7, &[0xA5; 100])),
    ];

    let mut connections = 0u64;
    for (name, wire) in &samples {
        for len in 1..wire.len() {
            let mut stream = raw_connect(addr);
            send_raw(&mut stream, &wire[..len]);
            stream
                .shutdown(Shutdown::Write)
                .expect("shut down our write side");
            let got = read_until_close(&mut stream);
            assert!(
                got.is_empty(),
                "{name} cut to {len} of {} bytes: the server answered {got:?}",
                wire.len()
            );
            connections += 1;
        }
    }

    let after = hostile_wait_for_stats(&mut stats_client, STATS_LIMIT, |r| {
        r.value("closed_peer") >= before.value("closed_peer") + connections
    });
    assert_eq!(
        delta(&before, &after, "closed_peer"),
        connections,
        "every truncated connection is closed as an orderly peer close"
    );
    assert_eq!(
        decode_errors_total(&after),
        0,
        "a truncated frame is not a decode error"
    );
    assert_eq!(
        after.value("connections_open"),
        before.value("connections_open")
    );
    assert_serving(addr);
}

/// Body lengths 0, 1 and exactly the limit are answered; limit+1, 2^31 and 2^32-1 (headers
/// built by hand, no body sent) each get ERROR RESOURCE_EXHAUSTED with the header's request
/// id and a close, without the server waiting for the body.
#[test]
fn body_lengths_up_to_the_limit_are_served_and_over_it_get_resource_exhausted() {
    // 4 KiB rather than 1 KiB: the limit applies to responses too, and the STATS report the
    // test reads is about 1.2 KiB.
    const LIMIT: u32 = 4096;
    let server = start(Server::builder().max_body_len(LIMIT), bundled_router());
    let addr = server.local_addr();
    let mut stats_client = hostile_stats_client(addr);
    let before = hostile_stats(&mut stats_client);

    let mut stream = raw_connect(addr);
    for (request_id, len) in [(1u64, 0u32), (2, 1), (3, LIMIT)] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let wire = echo_request(request_id, &payload);
        assert_eq!(wire.len(), HEADER_LEN + len as usize);
        send_raw(&mut stream, &wire);
        expect_single_echo(&read_frames(&mut stream, 1), request_id, &payload);
    }
    drop(stream);

    let oversized = [(11u64, LIMIT + 1), (12, 1 << 31), (13, u32::MAX)];
    for (request_id, len) in oversized {
        let frames = send_and_read_until_close(addr, &header_claiming(request_id, len));
        expect_single_error(&frames, request_id, Code::RESOURCE_EXHAUSTED);
    }

    let after = hostile_wait_for_stats(&mut stats_client, STATS_LIMIT, |r| {
        delta(&before, r, "closed_protocol") >= 3
    });
    assert_eq!(after.value("decode_errors_FRAME_TOO_LARGE"), 3);
    assert_eq!(
        decode_errors_total(&after),
        3,
        "no other decode error: {after:?}"
    );
    assert_eq!(delta(&before, &after, "closed_protocol"), 3);
    assert_serving(addr);
}

/// Stray and corrupt bytes: a bad magic, a bad version, a bad header CRC, an HTTP request
/// line and a TLS ClientHello each get the ERROR status of PROTOCOL.md §9.3 (request id 0:
/// the header cannot be trusted) and a close, counted as `closed_protocol` and under the
/// matching `decode_errors_*`. A bad body CRC under a valid header is a frame error: it is
/// answered DATA_LOSS and the same connection answers the next request.
#[test]
fn corrupt_and_foreign_bytes_get_the_documented_error_and_are_counted() {
    let server = start(Server::builder(), bundled_router());
    let addr = server.local_addr();
    let mut stats_client = hostile_stats_client(addr);
    let before = hostile_stats(&mut stats_client);

    let valid = echo_request(77, b"hello").to_vec();
    let mut bad_magic = valid.clone();
    bad_magic[0] = b'X';
    let mut bad_version = valid.clone();
    bad_version[4] = 2;
    fix_header_crc(&mut bad_version);
    let mut bad_header_crc = valid.clone();
    bad_header_crc[33] ^= 0xFF;
    let http = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
    let tls = tls_client_hello();

    let fatal: [(&str, Vec<u8>, Code, &str); 5] = [
        ("bad magic", bad_magic, Code::INVALID_ARGUMENT, "BAD_MAGIC"),
        (
            "bad version",
            bad_version,
            Code::UNIMPLEMENTED,
            "UNSUPPORTED_VERSION",
        ),
        (
            "bad header CRC",
            bad_header_crc,
            Code::DATA_LOSS,
            "HEADER_CHECKSUM",
        ),
        ("HTTP request", http, Code::INVALID_ARGUMENT, "BAD_MAGIC"),
        ("TLS ClientHello", tls, Code::INVALID_ARGUMENT, "BAD_MAGIC"),
    ];
    let mut expected_errors: Vec<(String, u64)> = Vec::new();
    for (i, (name, bytes, code, counter)) in fatal.iter().enumerate() {
        let frames = send_and_read_until_close(addr, bytes);
        let message = expect_single_error(&frames, 0, *code);
        let counter = format!("decode_errors_{counter}");
        match expected_errors.iter_mut().find(|(n, _)| *n == counter) {
            Some((_, count)) => *count += 1,
            None => expected_errors.push((counter.clone(), 1)),
        }
        let want_closed = i as u64 + 1;
        let report = hostile_wait_for_stats(&mut stats_client, STATS_LIMIT, |r| {
            delta(&before, r, "closed_protocol") >= want_closed
        });
        for (counter, count) in &expected_errors {
            assert_eq!(
                report.value(counter),
                *count,
                "{counter} after the {name} (ERROR message {message:?})"
            );
        }
        assert_eq!(
            delta(&before, &report, "closed_protocol"),
            want_closed,
            "closed_protocol after the {name}"
        );
    }

    // A bad body CRC under a valid header: DATA_LOSS for that request, and the next request
    // on the same connection is answered.
    let mut bad_body = echo_request(7, b"corrupted on the way").to_vec();
    bad_body[28] ^= 0x01;
    fix_header_crc(&mut bad_body);
    let mut stream = raw_connect(addr);
    let mut wire = bad_body;
    wire.extend_from_slice(&echo_request(8, b"next one"));
    send_raw(&mut stream, &wire);
    match &read_frames(&mut stream, 2)[..] {
        [Frame::Response(bad), Frame::Response(next)] => {
            assert_eq!((bad.request_id, bad.code), (7, Code::DATA_LOSS), "{bad:?}");
            expect_single_echo(&[Frame::Response(next.clone())], 8, b"next one");
        }
        other => panic!("expected two RESPONSEs (DATA_LOSS, then OK), got {other:?}"),
    }
    send_raw(&mut stream, &echo_request(9, b"and another"));
    expect_single_echo(&read_frames(&mut stream, 1), 9, b"and another");

    let after = hostile_stats(&mut stats_client);
    assert_eq!(after.value("decode_errors_BODY_CHECKSUM"), 1);
    assert_eq!(after.value("decode_errors_BAD_MAGIC"), 3);
    assert_eq!(after.value("decode_errors_UNSUPPORTED_VERSION"), 1);
    assert_eq!(after.value("decode_errors_HEADER_CHECKSUM"), 1);
    assert_eq!(
        decode_errors_total(&after),
        6,
        "no other decode error: {after:?}"
    );
    assert_eq!(delta(&before, &after, "requests_DATA_LOSS"), 1);
    assert_eq!(
        delta(&before, &after, "closed_protocol"),
        5,
        "the body CRC error did not close its connection"
    );
    drop(stream);
    assert_serving(addr);
}

/// Slowloris: 1,000 connections start a valid echo REQUEST and never finish it. A third send
/// its header's first 10 bytes and then one more header byte every 100 ms; a third send those
/// 10 bytes and nothing more; a third send the whole header and 5 body bytes, then one more
/// body byte every 100 ms. With a 500 ms frame timeout every one of them is sent ERROR
/// DEADLINE_EXCEEDED and closed (`closed_frame_timeout`), `connections_open` returns to its
/// baseline, and a normal client calling echo meanwhile is served every time.
#[test]
fn a_thousand_slowloris_connections_are_timed_out_while_a_normal_client_is_served() {
    const SLOW: usize = 1000;
    const HEADER_PREFIX: usize = 10;
    const WITH_BODY_PREFIX: usize = HEADER_LEN + 5;
    const ROUNDS: usize = 12;
    raise_fd_limit();
    let server = start(
        Server::builder()
            .frame_timeout(Duration::from_millis(500))
            .linger(Duration::from_millis(250)),
        bundled_router(),
    );
    let addr = server.local_addr();
    let mut stats_client = hostile_stats_client(addr);
    let mut normal = Client::connect(addr).expect("connect the normal client");
    echo_call(&mut normal, "before the slowloris");
    let before = hostile_stats(&mut stats_client);

    let frame = echo_request(1, &[0x42; 64]);
    // The header is never completed.
    const _: () = assert!(HEADER_PREFIX + ROUNDS < HEADER_LEN);
    assert!(
        WITH_BODY_PREFIX + ROUNDS < frame.len(),
        "the body is never completed"
    );
    // The bytes each connection has sent so far; index % 3 picks its style.
    let mut slow: Vec<(TcpStream, usize)> = Vec::with_capacity(SLOW);
    for i in 0..SLOW {
        let mut stream = raw_connect(addr);
        let sent = if i % 3 == 2 {
            WITH_BODY_PREFIX
        } else {
            HEADER_PREFIX
        };
        send_raw(&mut stream, &frame[..sent]);
        slow.push((stream, sent));
    }
    for round in 0..ROUNDS {
        for (i, (stream, sent)) in slow.iter_mut().enumerate() {
            if i % 3 == 1 {
                continue; // the silent third
            }
            // Fails once the server has given up on the connection, which is the point.
            let _ = stream.write_all(&frame[*sent..*sent + 1]);
            *sent += 1;
        }
        echo_call(&mut normal, &format!("during the slowloris, round {round}"));
        thread::sleep(Duration::from_millis(100));
    }

    let base_open = before.value("connections_open");
    let after = hostile_wait_for_stats(&mut stats_client, STATS_LIMIT, |r| {
        delta(&before, r, "closed_frame_timeout") >= SLOW as u64
            && r.value("connections_open") == base_open
    });
    assert_eq!(
        delta(&before, &after, "closed_frame_timeout"),
        SLOW as u64,
        "every slowloris connection timed out: {after:?}"
    );
    assert_eq!(
        after.value("connections_open"),
        base_open,
        "connections_open back to its baseline"
    );
    // The silent third never wrote after their first bytes: each was sent exactly one ERROR
    // DEADLINE_EXCEEDED and then an orderly close.
    for (stream, _) in slow.iter_mut().skip(1).step_by(3) {
        expect_single_error(&read_until_close(stream), 0, Code::DEADLINE_EXCEEDED);
    }
    echo_call(&mut normal, "after the slowloris");
    assert_serving(addr);
}

/// A client that pipelines 64 KiB echo requests and never reads its responses: the server
/// stops reading it above the output high-water mark (`output_paused`), never queues more
/// than the hard cap (`output_peak`), and closes it when its output makes no progress for the
/// write timeout (`closed_write_timeout`, not `closed_output_cap`); `buffered_bytes` returns
/// to its baseline, and a normal client is served throughout.
#[test]
fn pipelining_client_that_never_reads_is_paused_then_closed_for_write_timeout() {
    const HIGH_WATER: usize = 256 * 1024;
    const HARD_CAP: usize = 4 * 1024 * 1024;
    const MAX_WRITTEN: usize = 256 * 1024 * 1024;
    let server = start(
        Server::builder()
            .output_high_water(HIGH_WATER)
            .output_hard_cap(HARD_CAP)
            .write_timeout(Duration::from_millis(500)),
        bundled_router(),
    );
    let addr = server.local_addr();
    let mut stats_client = hostile_stats_client(addr);
    let mut normal = Client::connect(addr).expect("connect the normal client");
    echo_call(&mut normal, "before the flood");
    let before = hostile_stats(&mut stats_client);

    let flood = raw_connect(addr);
    flood
        .set_write_timeout(Some(Duration::from_secs(2)))
        .expect("set the flood's write timeout");
    let writer = thread::spawn(move || {
        let mut stream = flood;
        // One request encoded once; each copy gets its own id and a fixed header CRC (the
        // body, and so its CRC, is the same).
        let mut wire = echo_request(0, &vec![0x5A; 64 * 1024]).to_vec();
        let mut written = 0usize;
        let mut request_id = 0u64;
        while written < MAX_WRITTEN {
            request_id += 1;
            wire[8..16].copy_from_slice(&request_id.to_be_bytes());
            fix_header_crc(&mut wire);
            if stream.write_all(&wire).is_err() {
                break;
            }
            written += wire.len();
        }
        (written, stream)
    });
    for i in 0..20 {
        echo_call(&mut normal, &format!("during the flood, call {i}"));
        thread::sleep(Duration::from_millis(25));
    }
    let (written, flood) = writer.join().expect("the flood writer thread");
    println!("the flood wrote {written} bytes before its writes stopped");
    assert!(
        written < MAX_WRITTEN,
        "the server pushed back before {MAX_WRITTEN} bytes"
    );

    let after = hostile_wait_for_stats(&mut stats_client, STATS_LIMIT, |r| {
        delta(&before, r, "closed_write_timeout") >= 1
            && r.value("connections_open") == before.value("connections_open")
            && r.value("buffered_bytes") == before.value("buffered_bytes")
    });
    drop(flood);
    assert!(
        delta(&before, &after, "output_paused") >= 1,
        "reading paused above the high-water mark: {after:?}"
    );
    assert!(
        after.value("output_peak") <= HARD_CAP as u64,
        "output_peak {} over the hard cap",
        after.value("output_peak")
    );
    assert_eq!(delta(&before, &after, "closed_write_timeout"), 1);
    assert_eq!(delta(&before, &after, "closed_output_cap"), 0);
    assert_eq!(
        after.value("connections_open"),
        before.value("connections_open")
    );
    assert_eq!(
        after.value("buffered_bytes"),
        before.value("buffered_bytes"),
        "buffered_bytes back to its baseline"
    );
    echo_call(&mut normal, "after the flood");
}

/// An empty-frame flood: a client that sends nothing but PONG frames (which ask for nothing)
/// is cut off after `max_empty_frames` of them with ERROR RESOURCE_EXHAUSTED, which names
/// the PONG that tripped the limit (`closed_flood`).
#[test]
fn pong_flood_is_cut_off_with_resource_exhausted() {
    let server = start(Server::builder(), bundled_router());
    let addr = server.local_addr();
    let mut stats_client = hostile_stats_client(addr);
    let before = hostile_stats(&mut stats_client);

    let mut flooder = raw_connect(addr);
    let mut sent = 0u32;
    for id in 0..1_000u64 {
        if flooder.write_all(&encode(&Frame::Pong(id))).is_err() {
            break;
        }
        sent += 1;
    }
    assert!(sent > 100, "more PONGs sent than the default limit of 100");
    // The 101st PONG (id 100) trips the limit; its header was valid, so the ERROR carries its
    // id (PROTOCOL.md Section 4.6).
    expect_single_error(
        &read_until_close(&mut flooder),
        100,
        Code::RESOURCE_EXHAUSTED,
    );
    drop(flooder);

    let after = hostile_wait_for_stats(&mut stats_client, STATS_LIMIT, |r| {
        delta(&before, r, "closed_flood") >= 1
    });
    assert_eq!(delta(&before, &after, "closed_flood"), 1);
    assert_serving(addr);
}

/// The other side of the flood limit: a legitimate client pipelining 20,000 small echo
/// requests at full speed (one thread writes, another reads the same socket) gets every
/// response, is not counted as a flood and stays open. Frames-per-turn yields are allowed.
#[test]
fn full_speed_pipelining_is_not_mistaken_for_a_flood() {
    const REQUESTS: u64 = 20_000;
    let server = start(Server::builder(), bundled_router());
    let addr = server.local_addr();
    let mut stats_client = hostile_stats_client(addr);
    let before = hostile_stats(&mut stats_client);

    let stream = raw_connect(addr);
    let mut reader = stream.try_clone().expect("clone the socket for reading");
    let writer = thread::spawn(move || {
        let mut stream = stream;
        let mut wire = BytesMut::new();
        for id in 1..=REQUESTS {
            wire.extend_from_slice(&echo_request(id, &id.to_be_bytes()));
            if wire.len() >= 64 * 1024 {
                send_raw(&mut stream, &wire);
                wire.clear();
            }
        }
        send_raw(&mut stream, &wire);
    });
    let frames = read_frames(&mut reader, REQUESTS as usize);
    writer.join().expect("the pipelining writer thread");

    let mut seen = vec![false; REQUESTS as usize + 1];
    for frame in &frames {
        let Frame::Response(response) = frame else {
            panic!("expected only RESPONSE frames, got {frame:?}");
        };
        assert_eq!(response.code, Code::OK, "{response:?}");
        let id = response.request_id;
        assert!((1..=REQUESTS).contains(&id), "response to unknown id {id}");
        assert!(!seen[id as usize], "two responses to request {id}");
        seen[id as usize] = true;
        assert_eq!(&response.payload[..], &id.to_be_bytes(), "echo of {id}");
    }

    // Still open: a PING on the same connection is answered.
    send_raw(&mut reader, &encode(&Frame::Ping(424_242)));
    assert_eq!(read_frames(&mut reader, 1), vec![Frame::Pong(424_242)]);

    let after = hostile_stats(&mut stats_client);
    assert_eq!(delta(&before, &after, "closed_flood"), 0);
    assert_eq!(
        after.value("connections_open"),
        before.value("connections_open") + 1,
        "the pipelining connection is still open"
    );
    println!(
        "turn_yields during 20,000 pipelined requests: {}",
        delta(&before, &after, "turn_yields")
    );
}

/// Connections over `max_connections` are refused: with a limit of 8 and 8 connections open
/// (the STATS client and 7 idle raw sockets, each proven accepted by a PING), the next 5 each
/// get ERROR RESOURCE_EXHAUSTED and a close, `connections_rejected` counts exactly 5, and once
/// the idle ones close new clients are served.
#[test]
fn connections_over_the_limit_are_rejected_and_counted() {
    const MAX: usize = 8;
    const EXTRA: u64 = 5;
    let server = start(Server::builder().max_connections(MAX), bundled_router());
    let addr = server.local_addr();
    // The STATS client holds the first slot; its own call proves it was accepted.
    let mut stats_client = hostile_stats_client(addr);
    let before = hostile_stats(&mut stats_client);
    assert_eq!(before.value("connections_open"), 1);

    let idle: Vec<TcpStream> = (0..MAX as u64 - 1)
        .map(|i| {
            let mut stream = raw_connect(addr);
            send_raw(&mut stream, &encode(&Frame::Ping(i)));
            assert_eq!(
                read_frames(&mut stream, 1),
                vec![Frame::Pong(i)],
                "idle connection {i} is accepted and answers a PING"
            );
            stream
        })
        .collect();
    let full = hostile_stats(&mut stats_client);
    assert_eq!(full.value("connections_open"), MAX as u64);

    for i in 0..EXTRA {
        let mut stream = raw_connect(addr);
        let frames = read_until_close(&mut stream);
        match &frames[..] {
            [Frame::Error { code, message, .. }] => assert_eq!(
                *code,
                Code::RESOURCE_EXHAUSTED,
                "connection {i} over the limit: {message:?}"
            ),
            other => panic!("connection {i} over the limit: expected one ERROR, got {other:?}"),
        }
    }
    let rejected = hostile_stats(&mut stats_client);
    assert_eq!(delta(&before, &rejected, "connections_rejected"), EXTRA);
    assert_eq!(rejected.value("connections_open"), MAX as u64);
    assert_eq!(
        delta(&before, &rejected, "connections_accepted"),
        MAX as u64 - 1,
        "the rejected connections were never accepted as connections"
    );

    drop(idle);
    let drained = hostile_wait_for_stats(&mut stats_client, STATS_LIMIT, |r| {
        r.value("connections_open") == 1
    });
    assert_eq!(drained.value("connections_open"), 1);

    let mut clients: Vec<Client> = (0..MAX - 1)
        .map(|i| {
            let mut client = Client::connect(addr).expect("connect a new client");
            echo_call(&mut client, &format!("new client {i}"));
            client
        })
        .collect();
    for (i, client) in clients.iter_mut().enumerate() {
        echo_call(client, &format!("new client {i}, second call"));
    }
    let after = hostile_stats(&mut stats_client);
    assert_eq!(delta(&before, &after, "connections_rejected"), EXTRA);
    assert_eq!(after.value("connections_open"), MAX as u64);
}

/// Half-closed, reading: a client pipelines 100 echo requests and shuts down its write side;
/// it receives all 100 responses, then end of stream.
#[test]
fn half_closed_client_that_reads_gets_every_response_then_eof() {
    const REQUESTS: u64 = 100;
    let server = start(Server::builder(), bundled_router());
    let addr = server.local_addr();
    let mut stats_client = hostile_stats_client(addr);
    let before = hostile_stats(&mut stats_client);

    let mut stream = raw_connect(addr);
    let mut wire = BytesMut::new();
    for id in 1..=REQUESTS {
        wire.extend_from_slice(&echo_request(id, format!("request {id}").as_bytes()));
    }
    send_raw(&mut stream, &wire);
    stream
        .shutdown(Shutdown::Write)
        .expect("shut down our write side");
    let frames = read_until_close(&mut stream);
    assert_eq!(frames.len(), REQUESTS as usize, "all responses before EOF");
    let mut ids: Vec<u64> = frames
        .iter()
        .map(|frame| match frame {
            Frame::Response(r) if r.code == Code::OK => {
                assert_eq!(
                    &r.payload[..],
                    format!("request {}", r.request_id).as_bytes()
                );
                r.request_id
            }
            other => panic!("expected only OK RESPONSEs, got {other:?}"),
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=REQUESTS).collect::<Vec<u64>>());

    let after = hostile_wait_for_stats(&mut stats_client, STATS_LIMIT, |r| {
        delta(&before, r, "closed_peer") >= 1
    });
    assert_eq!(delta(&before, &after, "closed_peer"), 1);
}

/// Half-closed, not reading: a client asks for 16 values of 1 MiB (kv GET, 16 MiB of
/// responses for under 1 KiB of requests), shuts down its write side and never reads. The
/// high-water mark is above 16 MiB so that the server decodes every request and reads the end
/// of stream before its output stalls: the connection is truly half-closed. With a 300 ms
/// write timeout the server closes it as `closed_write_timeout`, not as an orderly peer close.
#[test]
fn half_closed_client_that_never_reads_is_closed_for_write_timeout() {
    const VALUE_LEN: usize = 1024 * 1024;
    const GETS: u64 = 16;
    let server = start(
        Server::builder()
            .output_high_water(32 * 1024 * 1024)
            .output_hard_cap(32 * 1024 * 1024)
            .write_timeout(Duration::from_millis(300)),
        bundled_router(),
    );
    let addr = server.local_addr();
    let mut stats_client = hostile_stats_client(addr);
    let mut setter = Client::connect(addr).expect("connect the SET client");
    let set = SetRequest {
        key: Bytes::from_static(b"big"),
        value: Bytes::from(vec![0xC3; VALUE_LEN]),
    };
    setter.call(&kv::SET, &set).expect("SET a 1 MiB value");
    // The SET's answer can reach us before its loop updates the gauge for that connection:
    // wait until nothing is counted as buffered.
    let before = hostile_wait_for_stats(&mut stats_client, STATS_LIMIT, |r| {
        r.value("buffered_bytes") == 0
    });

    let mut stream = raw_connect(addr);
    let mut wire = BytesMut::new();
    for request_id in 1..=GETS {
        wire.extend_from_slice(&encode(&request(
            request_id,
            kv::GET.service,
            kv::GET.method,
            b"big",
        )));
    }
    send_raw(&mut stream, &wire);
    stream
        .shutdown(Shutdown::Write)
        .expect("shut down our write side");

    let after = hostile_wait_for_stats(&mut stats_client, STATS_LIMIT, |r| {
        delta(&before, r, "closed_write_timeout") >= 1
            && r.value("connections_open") == before.value("connections_open")
    });
    assert_eq!(delta(&before, &after, "closed_write_timeout"), 1);
    assert_eq!(
        delta(&before, &after, "closed_peer"),
        0,
        "a half-closed peer that stops reading is closed for that, not as a peer close"
    );
    assert_eq!(
        after.value("connections_open"),
        before.value("connections_open")
    );
    assert_eq!(
        after.value("buffered_bytes"),
        before.value("buffered_bytes"),
        "the 16 MiB of unsent output was freed"
    );
    drop(stream);
    assert_serving(addr);
}

/// Idle timeout: with a 1.5 s idle timeout, a connection that sends nothing is sent GOAWAY
/// UNAVAILABLE (last request id 0) and closed (`closed_idle_timeout` exactly 1), while a
/// connection that sends a PING every 100 ms for 2.5 s (longer than the timeout) is answered
/// every time and stays open. The gap between pings leaves 1.4 s of slack for a busy machine.
#[test]
fn idle_connection_gets_goaway_while_a_pinging_one_stays_open() {
    let server = start(
        Server::builder().idle_timeout(Duration::from_millis(1500)),
        bundled_router(),
    );
    let addr = server.local_addr();
    // STATS over fresh connections: a kept-open STATS client would itself time out.
    let before = stats(addr);

    let pinger = thread::spawn(move || {
        let mut stream = raw_connect(addr);
        for id in 0..25u64 {
            send_raw(&mut stream, &encode(&Frame::Ping(id)));
            assert_eq!(
                read_frames(&mut stream, 1),
                vec![Frame::Pong(id)],
                "PING {id} answered (and no GOAWAY)"
            );
            thread::sleep(Duration::from_millis(100));
        }
        send_raw(&mut stream, &echo_request(1, b"still open"));
        expect_single_echo(&read_frames(&mut stream, 1), 1, b"still open");
        stream
    });

    let mut idle = raw_connect(addr);
    match &read_until_close(&mut idle)[..] {
        [Frame::GoAway {
            last_request_id,
            code,
            message,
        }] => {
            assert_eq!(*code, Code::UNAVAILABLE, "GOAWAY status ({message:?})");
            assert_eq!(*last_request_id, 0, "no request was received");
        }
        other => panic!("expected one GOAWAY before the close, got {other:?}"),
    }
    drop(idle);
    let pinging = pinger
        .join()
        .expect("the pinging connection was answered throughout");

    let after = wait_for_stats(addr, STATS_LIMIT, |r| {
        delta(&before, r, "closed_idle_timeout") >= 1
    });
    assert_eq!(delta(&before, &after, "closed_idle_timeout"), 1);
    drop(pinging);
}
