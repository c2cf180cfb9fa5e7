//! The blocking client and a draining server (`proto-spec/PROTOCOL.md` Section 14): requests
//! after the GOAWAY's last request id fail UNAVAILABLE, those up to it are still answered, and
//! the next new request goes out on a new connection. The server is a fake on 127.0.0.1 that
//! speaks the crate's own codec, so each test scripts exactly when GOAWAY, responses and the
//! close arrive.
//!
//! The same binary counts the client's allocations on a connection that never sees a GOAWAY
//! (with the counting allocator of `tests/support/counting.rs`): the draining machinery costs
//! the normal path nothing.

mod support;

#[path = "support/counting.rs"]
mod counting;

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use courier_rpc::client::{Client, ClientError};
use courier_rpc::echo::ECHO;
use courier_rpc::proto::{Code, Frame};
use support::fake_server::{
    accept, bind, close_and_expect_silence, echo_response, goaway, read_requests, send_frames,
};
use support::{accept_within, read_frames, IO_TIMEOUT};

/// The client's connect and read timeouts: below the fake server's `IO_TIMEOUT`, so a client
/// that waits for something that never comes fails before the server thread gives up.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

fn connect(listener: &TcpListener) -> Client {
    Client::builder()
        .connect_timeout(CLIENT_TIMEOUT)
        .read_timeout(CLIENT_TIMEOUT)
        .connect(listener.local_addr().expect("listener address"))
        .expect("connect")
}

/// Reads one frame and asserts that it is a PING; returns its id.
fn read_ping(stream: &mut TcpStream) -> u64 {
    match read_frames(stream, 1).as_slice() {
        [Frame::Ping(id)] => *id,
        other => panic!("expected one PING, got {other:?}"),
    }
}

/// Answers `count` echo calls one at a time; returns their request ids.
fn serve_echo_calls(stream: &mut TcpStream, count: usize) -> Vec<u64> {
    (0..count)
        .map(|_| {
            let request = read_requests(stream, 1).remove(0);
            send_frames(stream, &[echo_response(&request)]);
            request.request_id
        })
        .collect()
}

fn payload(i: u64) -> Bytes {
    Bytes::from(format!("request {i}"))
}

fn assert_unavailable<T: std::fmt::Debug>(result: Result<T, ClientError>, what: &str) {
    match result {
        Err(ClientError::Status(status)) => {
            assert_eq!(status.code, Code::UNAVAILABLE, "{what}: {status}");
        }
        other => panic!("{what}: expected UNAVAILABLE, got {other:?}"),
    }
}

#[test]
fn pipelined_requests_past_the_goaway_fail_unavailable_and_a_new_call_reconnects() {
    let listener = bind();
    let mut client = connect(&listener);
    let server = thread::spawn(move || {
        let mut a = accept(&listener);
        let requests = read_requests(&mut a, 5);
        let ids: Vec<u64> = requests.iter().map(|r| r.request_id).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5], "pipelined ids on connection A");
        send_frames(&mut a, &[echo_response(&requests[0])]);
        send_frames(&mut a, &[echo_response(&requests[1])]);
        send_frames(&mut a, &[goaway(3)]);
        send_frames(&mut a, &[echo_response(&requests[2])]);
        close_and_expect_silence(a);
        let mut b = accept(&listener);
        serve_echo_calls(&mut b, 1)
    });

    let pending: Vec<_> = (1..=5)
        .map(|i| client.send(&ECHO, &payload(i)).expect("send"))
        .collect();
    client.flush().expect("flush");
    for (i, p) in (1..=5).zip(pending) {
        assert_eq!(p.request_id(), i);
        let result = client.wait(p);
        if i <= 3 {
            assert_eq!(result.expect("answered before the close"), payload(i));
        } else {
            assert_unavailable(result, &format!("request {i}, after GOAWAY(3)"));
        }
    }
    assert!(client.is_draining(), "the server sent GOAWAY");
    let reply = client
        .call(&ECHO, &Bytes::from_static(b"after the drain"))
        .expect("a new call after GOAWAY goes out on a new connection");
    assert_eq!(reply, Bytes::from_static(b"after the drain"));
    assert!(!client.is_draining(), "the new connection is not draining");

    let ids_on_b = server.join().expect("fake server");
    assert_eq!(ids_on_b.len(), 1, "connection B served the new call");
    assert!(
        ids_on_b[0] > 5,
        "ids keep increasing across connections, got {ids_on_b:?}"
    );
}

#[test]
fn a_new_request_after_goaway_first_collects_the_responses_still_owed() {
    let listener = bind();
    let mut client = connect(&listener);
    let (go, go_rx) = mpsc::channel::<()>();
    let server = thread::spawn(move || {
        let mut a = accept(&listener);
        let requests = read_requests(&mut a, 5);
        send_frames(&mut a, &[goaway(3)]);
        // The owed responses go out only once the client has seen the GOAWAY and is about to
        // send a new request, so that request's reconnection is what must read them.
        go_rx.recv_timeout(IO_TIMEOUT).expect("the test's go");
        send_frames(
            &mut a,
            &[
                echo_response(&requests[1]),
                echo_response(&requests[0]),
                echo_response(&requests[2]),
            ],
        );
        close_and_expect_silence(a);
        let mut b = accept(&listener);
        serve_echo_calls(&mut b, 1)
    });

    let mut pending: Vec<_> = (1..=5)
        .map(|i| client.send(&ECHO, &payload(i)).expect("send"))
        .collect();
    let fifth = pending.pop().expect("five sent");
    assert_unavailable(client.wait(fifth), "request 5, after GOAWAY(3)");
    go.send(()).expect("the server waits for go");
    let reply = client
        .call(&ECHO, &Bytes::from_static(b"new"))
        .expect("a new call after GOAWAY");
    assert_eq!(reply, Bytes::from_static(b"new"));

    // The old connection is closed by now, yet what it owed is collected, and request 4,
    // not processed, still fails rather than waiting on the new connection.
    let fourth = pending.pop().expect("four left");
    assert_unavailable(client.wait(fourth), "request 4, after the reconnection");
    for (i, p) in (1..=3).zip(pending) {
        assert_eq!(
            client.wait(p).expect("collected before the reconnection"),
            payload(i)
        );
    }
    let ids_on_b = server.join().expect("fake server");
    assert!(ids_on_b[0] > 5, "got {ids_on_b:?}");
}

#[test]
fn an_owed_response_that_never_comes_fails_closed_after_the_reconnection() {
    let listener = bind();
    let mut client = connect(&listener);
    let server = thread::spawn(move || {
        let mut a = accept(&listener);
        let requests = read_requests(&mut a, 2);
        // GOAWAY(2) promises both, but only the first is answered before the close.
        send_frames(&mut a, &[goaway(2), echo_response(&requests[0])]);
        close_and_expect_silence(a);
        let mut b = accept(&listener);
        serve_echo_calls(&mut b, 1)
    });

    let first = client.send(&ECHO, &payload(1)).expect("send");
    let second = client.send(&ECHO, &payload(2)).expect("send");
    assert_eq!(client.wait(first).expect("answered"), payload(1));
    // The new call reconnects once the old connection has ended without the second response.
    assert_eq!(
        client.call(&ECHO, &payload(3)).expect("new call"),
        payload(3)
    );
    let result = client.wait(second);
    assert!(
        matches!(result, Err(ClientError::Closed)),
        "expected Closed, got {result:?}"
    );
    server.join().expect("fake server");
}

#[test]
fn goaway_with_nothing_outstanding_then_close_the_next_call_and_ping_reconnect() {
    let listener = bind();
    let addr = listener.local_addr().expect("listener address");
    let mut client = connect(&listener);
    let server = thread::spawn(move || {
        let mut a = accept(&listener);
        // The GOAWAY comes before the PONG, so the client has read it when its ping returns.
        let ping = read_ping(&mut a);
        send_frames(&mut a, &[goaway(0), Frame::Pong(ping)]);
        drop(a);
        let mut b = accept(&listener);
        let call_ids = serve_echo_calls(&mut b, 1);
        let ping = read_ping(&mut b);
        send_frames(&mut b, &[goaway(call_ids[0]), Frame::Pong(ping)]);
        drop(b);
        let mut c = accept(&listener);
        let last_ping = read_ping(&mut c);
        send_frames(&mut c, &[Frame::Pong(last_ping)]);
        (call_ids[0], last_ping)
    });

    client.ping().expect("PONG on connection A");
    assert_eq!(
        client.call(&ECHO, &payload(1)).expect("call on B"),
        payload(1)
    );
    client.ping().expect("PONG on connection B");
    client.ping().expect("a ping after GOAWAY goes out on C");
    assert_eq!(client.peer_addr(), addr);
    let (call_id, last_ping) = server.join().expect("fake server");
    assert!(call_id > 1, "the first ping took id 1, got {call_id}");
    assert!(last_ping > call_id + 1, "got {last_ping} after {call_id}");
}

#[test]
fn goaway_then_the_server_gone_the_next_call_returns_the_connect_error() {
    let listener = bind();
    let addr = listener.local_addr().expect("listener address");
    let mut client = connect(&listener);
    let server = thread::spawn(move || {
        let mut a = accept(&listener);
        let ping = read_ping(&mut a);
        send_frames(&mut a, &[goaway(0), Frame::Pong(ping)]);
        // The connection and the listener both go.
    });
    client.ping().expect("PONG");
    server.join().expect("fake server");

    for attempt in 1..=2 {
        match client.call(&ECHO, &payload(attempt)) {
            Err(ClientError::Io(e)) => {
                assert_eq!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused,
                    "attempt {attempt}"
                );
            }
            other => panic!("attempt {attempt}: expected connection refused, got {other:?}"),
        }
    }

    // A server back on the same address is reached by the next call. (The port may have been
    // taken by another process meanwhile: then there is nothing more to check.)
    let Ok(listener) = TcpListener::bind(addr) else {
        eprintln!("{addr} taken meanwhile; the reconnection to a returning server is not checked");
        return;
    };
    let server = thread::spawn(move || {
        let mut b = accept(&listener);
        serve_echo_calls(&mut b, 1)
    });
    assert_eq!(
        client.call(&ECHO, &payload(3)).expect("the server is back"),
        payload(3)
    );
    server.join().expect("fake server");
}

#[test]
fn an_end_of_stream_without_goaway_still_breaks_the_connection() {
    let listener = bind();
    let mut client = connect(&listener);
    let (closed, closed_rx) = mpsc::channel::<()>();
    let (done, done_rx) = mpsc::channel::<()>();
    let server = thread::spawn(move || {
        let mut a = accept(&listener);
        serve_echo_calls(&mut a, 1);
        drop(a);
        closed.send(()).expect("the test waits for the close");
        done_rx.recv_timeout(IO_TIMEOUT).expect("the test's done");
        // Had the client reconnected, its connection would be waiting by now.
        accept_within(&listener, Duration::ZERO).is_some()
    });

    assert_eq!(client.call(&ECHO, &payload(1)).expect("call"), payload(1));
    closed_rx
        .recv_timeout(IO_TIMEOUT)
        .expect("the server closes the connection");
    // End of stream (Closed), or a reset if the server's side answered the request with one
    // (Io); as long as the socket has not reported the end, a second call finds it.
    for attempt in 2..=3 {
        let result = client.call(&ECHO, &payload(attempt));
        assert!(
            matches!(result, Err(ClientError::Closed) | Err(ClientError::Io(_))),
            "attempt {attempt}: got {result:?}"
        );
    }
    let result = client.call(&ECHO, &payload(4));
    assert!(
        matches!(result, Err(ClientError::Closed)),
        "the connection stays broken: got {result:?}"
    );
    done.send(()).expect("the server waits for done");
    let reconnected = server.join().expect("fake server");
    assert!(
        !reconnected,
        "an end of stream without GOAWAY is not a drain"
    );
}

#[test]
fn an_error_frame_after_goaway_is_not_a_drain() {
    let listener = bind();
    let mut client = connect(&listener);
    let (go, go_rx) = mpsc::channel::<()>();
    let (done, done_rx) = mpsc::channel::<()>();
    let server = thread::spawn(move || {
        let mut a = accept(&listener);
        read_requests(&mut a, 2);
        send_frames(&mut a, &[goaway(1)]);
        go_rx.recv_timeout(IO_TIMEOUT).expect("the test's go");
        let error = Frame::Error {
            request_id: 0,
            code: Code::INTERNAL,
            message: "broken".to_owned(),
        };
        send_frames(&mut a, &[error]);
        done_rx.recv_timeout(IO_TIMEOUT).expect("the test's done");
        accept_within(&listener, Duration::ZERO).is_some()
    });

    let first = client.send(&ECHO, &payload(1)).expect("send");
    let second = client.send(&ECHO, &payload(2)).expect("send");
    assert_unavailable(client.wait(second), "request 2, after GOAWAY(1)");
    go.send(()).expect("the server waits for go");
    // The new call reads the ERROR while collecting request 1's response, and stops there.
    for attempt in 3..=4 {
        match client.call(&ECHO, &payload(attempt)) {
            Err(ClientError::Connection(status)) => assert_eq!(status.code, Code::INTERNAL),
            other => panic!("attempt {attempt}: expected the ERROR, got {other:?}"),
        }
    }
    match client.wait(first) {
        Err(ClientError::Connection(status)) => assert_eq!(status.code, Code::INTERNAL),
        other => panic!("request 1: expected the ERROR, got {other:?}"),
    }
    done.send(()).expect("the server waits for done");
    assert!(!server.join().expect("fake server"), "no reconnection");
}

#[test]
fn calls_and_pipelined_waits_allocate_nothing_once_warm() {
    let server = support::start_default();
    let mut client = Client::connect(server.local_addr()).expect("connect");
    let message = Bytes::from(vec![7u8; 64]);
    let pipelined = |client: &mut Client| {
        let pending: [_; 16] = std::array::from_fn(|_| client.send(&ECHO, &message));
        for p in pending {
            let reply = client.wait(p.expect("send")).expect("wait");
            assert_eq!(reply.len(), 64);
        }
    };
    // Warm up: the buffers and the request maps reach their working size.
    for _ in 0..200 {
        client.call(&ECHO, &message).expect("call");
    }
    for _ in 0..10 {
        pipelined(&mut client);
    }
    // Counted on this thread only: the client's work, not the server's.
    let allocations = counting::on_this_thread(|| {
        for _ in 0..1000 {
            let reply = client.call(&ECHO, &message).expect("call");
            assert_eq!(reply.len(), 64);
        }
        for _ in 0..100 {
            pipelined(&mut client);
        }
    });
    assert_eq!(
        allocations, 0,
        "{allocations} allocations for 1000 calls and 1600 pipelined requests"
    );
}
