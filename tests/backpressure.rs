//! Requests held back by a limit are answered once the limit lifts, with no new bytes from the
//! client to wake the server: the loop is edge-triggered, so nothing else would.

mod support;

use std::net::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use courier_rpc::proto::{Code, Frame};
use courier_rpc::server::Server;
use courier_rpc::service::Method;
use support::*;

/// Eight pipelined echo requests in one write, with a 100-byte high-water mark: decoding
/// stops after the first answers pass the mark; once they are written (at once, the socket
/// has room), the rest are decoded from the read buffer and answered, with no new bytes from
/// the client to wake the server.
#[test]
fn pipelined_requests_held_by_the_high_water_mark_are_all_answered() {
    let server = start(Server::builder().output_high_water(100), bundled_router());
    let mut batch = BytesMut::new();
    for id in 1..=8 {
        batch.extend_from_slice(&echo_request(id, &[id as u8; 200]));
    }
    let mut stream = raw_connect(server.local_addr());
    send_raw(&mut stream, &batch);
    let frames = read_frames(&mut stream, 8);
    for (i, frame) in frames.iter().enumerate() {
        let id = i as u64 + 1;
        match frame {
            Frame::Response(r) => {
                assert_eq!((r.request_id, r.code), (id, Code::OK));
                assert_eq!(&r.payload[..], &[id as u8; 200][..]);
            }
            other => panic!("expected RESPONSE, got {other:?}"),
        }
    }
    let report = stats(server.local_addr());
    assert!(report.value("output_paused") >= 1, "the mark was reached");
}

/// The same with the write side shut after the batch: every answer arrives, then the close
/// (the connection is not left open with frames in its buffer).
#[test]
fn a_half_closed_client_held_by_the_high_water_mark_gets_every_answer_then_eof() {
    let server = start(Server::builder().output_high_water(100), bundled_router());
    let mut batch = BytesMut::new();
    for id in 1..=8 {
        batch.extend_from_slice(&echo_request(id, &[7; 200]));
    }
    let mut stream = raw_connect(server.local_addr());
    send_raw(&mut stream, &batch);
    stream.shutdown(Shutdown::Write).expect("shutdown");
    let frames = read_until_close(&mut stream);
    let ids: Vec<u64> = frames
        .iter()
        .map(|f| match f {
            Frame::Response(r) if r.code == Code::OK => r.request_id,
            other => panic!("expected OK RESPONSE, got {other:?}"),
        })
        .collect();
    assert_eq!(ids, (1..=8).collect::<Vec<_>>());
    let report = wait_for_stats(server.local_addr(), Duration::from_secs(10), |r| {
        r.value("connections_open") == 1
    });
    assert_eq!(
        report.value("connections_open"),
        1,
        "only the STATS connection"
    );
}

const HOLD: Method<Bytes, Bytes> = Method::new(61, 1, "test.Hold");

/// Blocking calls refused by a full worker queue free their in-flight slots: a PING that the
/// in-flight limit held back in the same write is still answered.
#[test]
fn frames_held_by_max_in_flight_are_answered_after_refusals() {
    let (release, gate) = mpsc::channel::<()>();
    let gate = Arc::new(Mutex::new(gate));
    let started = Arc::new(AtomicUsize::new(0));
    let mut router = bundled_router();
    let counter = Arc::clone(&started);
    router.register_blocking(HOLD, move |_, body: Bytes| {
        counter.fetch_add(1, Ordering::SeqCst);
        let _ = gate
            .lock()
            .expect("gate")
            .recv_timeout(Duration::from_secs(30));
        Ok(body)
    });
    let server = start(
        Server::builder()
            .workers(1)
            .worker_queue(1)
            .max_in_flight(2),
        router,
    );
    let addr = server.local_addr();
    // Occupy the worker (wait until it runs the call), then the one queue slot.
    let mut holder = raw_connect(addr);
    send_raw(
        &mut holder,
        &encode(&request(1, HOLD.service, HOLD.method, b"a")),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while started.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        started.load(Ordering::SeqCst),
        1,
        "the worker took the first call"
    );
    send_raw(
        &mut holder,
        &encode(&request(2, HOLD.service, HOLD.method, b"b")),
    );
    let report = wait_for_stats(addr, Duration::from_secs(10), |r| {
        r.value("blocking_in_flight") == 2
    });
    assert_eq!(
        report.value("blocking_in_flight"),
        2,
        "one running, one queued"
    );

    // Two blocking requests (both refused: the queue is full) and a PING, in one write. The
    // in-flight limit of 2 holds the PING back until the refusals free their slots.
    let mut stream = raw_connect(addr);
    let mut batch = BytesMut::new();
    batch.extend_from_slice(&encode(&request(10, HOLD.service, HOLD.method, b"x")));
    batch.extend_from_slice(&encode(&request(11, HOLD.service, HOLD.method, b"y")));
    batch.extend_from_slice(&encode(&Frame::Ping(99)));
    send_raw(&mut stream, &batch);
    let frames = read_frames(&mut stream, 3);
    let unavailable = frames
        .iter()
        .filter(|f| matches!(f, Frame::Response(r) if r.code == Code::UNAVAILABLE))
        .count();
    assert_eq!(unavailable, 2, "{frames:?}");
    assert!(frames.contains(&Frame::Pong(99)), "{frames:?}");
    assert_eq!(started.load(Ordering::SeqCst), 1, "refused calls never ran");

    release.send(()).expect("release");
    release.send(()).expect("release");
    assert_eq!(read_frames(&mut holder, 2).len(), 2);
}

/// An inline handler that holds its loop for a while, so that bytes pile up unread.
const STALL: Method<Bytes, Bytes> = Method::new(62, 1, "test.Stall");

/// A frame with TCP urgent data in its middle is still answered. Linux stops a read short at
/// the urgent mark though the rest of the frame has arrived, so a short read does not prove
/// the socket drained; the loop must read on when the poller reports urgent data. The loop is
/// held by a slow inline handler while the frame arrives, so that one read would see it all.
#[test]
fn a_frame_split_by_urgent_data_is_still_answered() {
    use std::os::fd::AsRawFd;

    let mut router = bundled_router();
    router.register(STALL, |_ctx, body: Bytes| {
        std::thread::sleep(Duration::from_millis(300));
        Ok(body)
    });
    let server = start(Server::builder().loops(1), router);
    let mut staller = raw_connect(server.local_addr());
    send_raw(
        &mut staller,
        &encode(&request(1, STALL.service, STALL.method, b"hold")),
    );
    // Give the loop time to start the slow handler (if it has not, the frame below is read in
    // pieces as it arrives, and the test passes without exercising the case).
    std::thread::sleep(Duration::from_millis(50));

    let mut stream = raw_connect(server.local_addr());
    let frame = echo_request(7, b"split by an urgent byte");
    send_raw(&mut stream, &frame[..20]);
    // SAFETY: `send` reads one byte from a live local, on the stream's own open descriptor.
    let sent = unsafe { libc::send(stream.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
    assert_eq!(sent, 1, "urgent byte sent");
    send_raw(&mut stream, &frame[20..]);

    match &read_frames(&mut stream, 1)[..] {
        [Frame::Response(r)] => {
            assert_eq!((r.request_id, r.code), (7, Code::OK));
            assert_eq!(&r.payload[..], b"split by an urgent byte");
        }
        other => panic!("expected the echo answer, got {other:?}"),
    }
    assert!(
        matches!(&read_frames(&mut staller, 1)[..], [Frame::Response(r)] if r.code == Code::OK)
    );
}
