//! Deadlines count from receipt and are checked at dispatch, over real sockets: requests
//! read in one batch and held back behind a limit (here the in-flight limit, behind a slow
//! blocking call) past their deadline are answered DEADLINE_EXCEEDED without running, inline
//! handlers and kv SETs included, and counted (`deadline_expired`); one without a deadline
//! runs (`proto-spec/PROTOCOL.md` Section 12).

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use courier_rpc::kv::{self, Store};
use courier_rpc::proto::{Code, Frame, Metadata, Request};
use courier_rpc::server::Server;
use courier_rpc::service::{Method, Router};
use support::{encode, raw_connect, read_frames, send_raw, start, stats};

/// Sleeps 300 ms on a worker, then answers with its body.
const SLOW: Method<Bytes, Bytes> = Method::new(30, 1, "test.Slow");
/// Counts its runs, inline.
const COUNT: Method<Bytes, Bytes> = Method::new(30, 2, "test.Count");

fn with_deadline(id: u64, service: u16, method: u16, deadline_ms: u32, payload: &[u8]) -> Frame {
    Frame::Request(Request {
        request_id: id,
        service,
        method,
        deadline_ms,
        metadata: Metadata::new(),
        payload: Bytes::copy_from_slice(payload),
    })
}

#[test]
fn requests_held_back_past_their_deadline_are_not_run() {
    let runs = Arc::new(AtomicU64::new(0));
    let store = Arc::new(Store::new());
    let mut router = Router::new();
    router.register_blocking(SLOW, |_ctx, body: Bytes| {
        thread::sleep(Duration::from_millis(300));
        Ok(body)
    });
    let counted = Arc::clone(&runs);
    router.register(COUNT, move |_ctx, body: Bytes| {
        counted.fetch_add(1, Ordering::SeqCst);
        Ok(body)
    });
    kv::register(&mut router, Arc::clone(&store));
    let server = start(Server::builder().max_in_flight(1), router);
    let addr = server.local_addr();

    // One write, read by the server in one read: the slow call takes the one in-flight slot,
    // and everything after it waits in the read buffer until it is done, 300 ms later.
    let mut set = BytesMut::new();
    set.put_u16(3);
    set.put_slice(b"key");
    set.put_slice(b"value");
    let mut wire = encode(&with_deadline(1, SLOW.service, SLOW.method, 0, b"slow"));
    for id in 2..=6 {
        wire.extend_from_slice(&encode(&with_deadline(
            id,
            COUNT.service,
            COUNT.method,
            100,
            b"c",
        )));
    }
    wire.extend_from_slice(&encode(&with_deadline(
        7,
        COUNT.service,
        COUNT.method,
        0,
        b"c",
    )));
    wire.extend_from_slice(&encode(&with_deadline(
        8,
        kv::SERVICE,
        kv::SET.method,
        100,
        &set,
    )));
    // A generous deadline that has not passed when the slow call ends.
    wire.extend_from_slice(&encode(&with_deadline(
        9,
        COUNT.service,
        COUNT.method,
        60_000,
        b"c",
    )));
    let mut stream = raw_connect(addr);
    send_raw(&mut stream, &wire);
    let mut answers: Vec<(u64, Code)> = read_frames(&mut stream, 9)
        .into_iter()
        .map(|frame| match frame {
            Frame::Response(r) => (r.request_id, r.code),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    answers.sort_unstable();
    let mut expected = vec![(1, Code::OK)];
    expected.extend((2..=6).map(|id| (id, Code::DEADLINE_EXCEEDED)));
    expected.extend([(7, Code::OK), (8, Code::DEADLINE_EXCEEDED), (9, Code::OK)]);
    assert_eq!(answers, expected);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "only the requests whose deadline had not passed ran"
    );
    assert_eq!(store.get(b"key"), None, "the expired SET was not applied");
    let report = stats(addr);
    assert_eq!(report.get("deadline_expired"), Some(6), "{report:?}");
    assert_eq!(report.get("requests_DEADLINE_EXCEEDED"), Some(6));
}
