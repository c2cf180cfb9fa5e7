//! The blocking client's features over loopback: PING, deadlines, metadata, timeouts,
//! pipelining out of order, and typed errors.

mod support;

use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use courier_rpc::client::{CallOptions, Client, ClientError};
use courier_rpc::proto::{Code, Metadata};
use courier_rpc::server::Server;
use courier_rpc::service::{Method, Router};

/// Answers with what the handler saw: the deadline in whole ms (0 if none) and the metadata.
const INSPECT: Method<(), String> = Method::new(9, 1, "test.Inspect");

fn inspect_router() -> Router {
    let mut router = Router::new();
    router.register(INSPECT, |ctx, ()| {
        let deadline_ms = ctx
            .deadline
            .map_or(0, |d| d.duration_since(ctx.received_at).as_millis());
        let pairs: Vec<String> = ctx
            .metadata
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    String::from_utf8_lossy(k),
                    String::from_utf8_lossy(v)
                )
            })
            .collect();
        Ok(format!("{deadline_ms};{}", pairs.join(",")))
    });
    router
}

#[test]
fn ping_gets_a_pong() {
    let server = support::start_default();
    let mut client = Client::connect(server.local_addr()).expect("connect");
    for _ in 0..3 {
        client.ping().expect("pong");
    }
}

#[test]
fn deadline_and_metadata_reach_the_handler() {
    let server = support::start(Server::builder(), inspect_router());
    let mut client = Client::connect(server.local_addr()).expect("connect");
    assert_eq!(client.call(&INSPECT, &()).expect("call"), "0;");
    let options = CallOptions::default()
        .with_deadline(Duration::from_millis(1500))
        .with_metadata(
            Metadata::from_pairs([("trace-id", "abc123"), ("tenant", "7")])
                .expect("valid metadata"),
        );
    assert_eq!(
        client.call_with(&INSPECT, &(), &options).expect("call"),
        "1500;trace-id=abc123,tenant=7"
    );
}

#[test]
fn a_deadline_under_a_millisecond_is_sent_as_one_and_a_passed_one_is_not_sent() {
    let server = support::start(Server::builder(), inspect_router());
    let mut client = Client::connect(server.local_addr()).expect("connect");
    let soon = CallOptions::default().with_deadline(Duration::from_micros(300));
    // 0.3 ms is sent as 1 ms, not 0 (none); the handler may or may not run in time.
    match client.call_with(&INSPECT, &(), &soon) {
        Ok(seen) => assert_eq!(seen, "1;"),
        Err(ClientError::Timeout) => {}
        Err(ClientError::Status(s)) => assert_eq!(s.code, Code::DEADLINE_EXCEEDED),
        Err(other) => panic!("unexpected {other}"),
    }
    let before = support::stats(server.local_addr()).value("frames_in");
    let passed = CallOptions::default().with_deadline(Duration::ZERO);
    assert!(matches!(
        client.call_with(&INSPECT, &(), &passed),
        Err(ClientError::Timeout)
    ));
    let after = support::stats(server.local_addr()).value("frames_in");
    assert_eq!(
        after - before,
        1,
        "only the STATS request arrived: the call was not sent"
    );
}

#[test]
fn responses_are_matched_by_request_id_when_waited_in_reverse() {
    let server = support::start_default();
    let mut client = Client::connect(server.local_addr()).expect("connect");
    let pending: Vec<_> = (0..200u32)
        .map(|i| {
            client
                .send(
                    &courier_rpc::echo::ECHO,
                    &Bytes::from(i.to_be_bytes().to_vec()),
                )
                .map(|p| (i, p))
        })
        .collect::<Result<_, _>>()
        .expect("send");
    for (i, p) in pending.into_iter().rev() {
        assert_eq!(
            client.wait(p).expect("wait"),
            Bytes::from(i.to_be_bytes().to_vec())
        );
    }
}

#[test]
fn a_silent_server_times_out_and_a_closing_one_is_closed() {
    // A listener that accepts and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    let acceptor = std::thread::spawn(move || {
        let (silent, _) = listener.accept().expect("accept the silent connection");
        let (closing, _) = listener.accept().expect("accept the closing connection");
        drop(closing);
        // Hold the silent connection until the test is done with it.
        let _ = rx.recv();
        drop(silent);
    });

    let mut client = Client::builder()
        .read_timeout(Duration::from_millis(200))
        .connect(addr)
        .expect("connect");
    let result = client.call(&courier_rpc::echo::ECHO, &Bytes::from_static(b"hello?"));
    assert!(
        matches!(result, Err(ClientError::Timeout)),
        "got {result:?}"
    );

    let mut closing = Client::connect(addr).expect("connect");
    let result = closing.call(&courier_rpc::echo::ECHO, &Bytes::from_static(b"hello?"));
    assert!(
        matches!(result, Err(ClientError::Closed) | Err(ClientError::Io(_))),
        "got {result:?}"
    );
    tx.send(()).expect("release the acceptor");
    acceptor.join().expect("acceptor thread");
}

#[test]
fn a_request_over_the_limit_is_refused_before_sending() {
    let server = support::start_default();
    let mut client = Client::builder()
        .max_body_len(16)
        .connect(server.local_addr())
        .expect("connect");
    let result = client.call(&courier_rpc::echo::ECHO, &Bytes::from(vec![0; 17]));
    assert!(
        matches!(result, Err(ClientError::Encode(_))),
        "got {result:?}"
    );
    // Nothing was sent, so the connection is still good.
    assert_eq!(
        client
            .call(&courier_rpc::echo::ECHO, &Bytes::from(vec![1; 16]))
            .expect("within the limit"),
        Bytes::from(vec![1; 16])
    );
}

#[test]
fn connecting_to_a_closed_port_is_an_io_error() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    match Client::connect(addr) {
        Err(ClientError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
        other => panic!("expected connection refused, got {other:?}"),
    }
}

#[test]
fn server_error_frame_is_a_connection_error() {
    let server = support::start(
        Server::builder().max_body_len(64),
        support::bundled_router(),
    );
    // The client allows large frames, the server does not: the server answers ERROR.
    let mut client = Client::connect(server.local_addr()).expect("connect");
    let result = client.call(&courier_rpc::echo::ECHO, &Bytes::from(vec![0; 65]));
    match result {
        Err(ClientError::Connection(s)) => assert_eq!(s.code, Code::RESOURCE_EXHAUSTED),
        other => panic!("expected a connection error, got {other:?}"),
    }
    // The connection is gone; the client says so without touching the socket.
    assert!(matches!(
        client.call(&courier_rpc::echo::ECHO, &Bytes::new()),
        Err(ClientError::Connection(_))
    ));
}
