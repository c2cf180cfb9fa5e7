mod support;

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr};
use std::thread;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use courier_rpc::client::Client;
use courier_rpc::echo::ECHO;
use courier_rpc::proto::{Code, Frame, HEADER_LEN};
use courier_rpc::server::Server;

use support::{
    assert_serving, bundled_router, encode, raw_connect, read_until_close, request, send_raw,
    start, start_default,
};

/// A limit low enough that leaked connections (never closed after their peer left: 300 of
/// them below) would make the server refuse every new client, and high enough that a burst of
/// not-yet-noticed closes rarely hits it.
const MAX_CONNECTIONS: usize = 64;

fn long_lived_call(client: &mut Client, text: &'static str) {
    let reply = client
        .call(&ECHO, &Bytes::from_static(text.as_bytes()))
        .unwrap_or_else(|e| panic!("echo {text:?} on the long-lived client: {e}"));
    assert_eq!(&reply[..], text.as_bytes());
}

/// A fresh client is served, retrying a bounded number of times: the server notices closed
/// connections asynchronously, so a slot may still be taken for a moment.
fn assert_eventually_serving(addr: SocketAddr) {
    let mut last_err = String::new();
    for _ in 0..100 {
        let attempt = Client::connect(addr)
            .and_then(|mut client| client.call(&ECHO, &Bytes::from_static(b"a slot is free")));
        match attempt {
            Ok(reply) => {
                assert_eq!(&reply[..], b"a slot is free");
                return;
            }
            Err(err) => last_err = err.to_string(),
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!("no fresh client was served after 100 attempts; last error: {last_err}");
}

#[test]
fn clients_leaving_mid_frame_or_mid_header_do_not_disturb_the_server() {
    let server = start(
        Server::builder().max_connections(MAX_CONNECTIONS),
        bundled_router(),
    );
    let addr = server.local_addr();
    let mut long_lived = Client::connect(addr).expect("connect the long-lived client");
    long_lived_call(&mut long_lived, "before the disconnects");

    // Header plus part of the body, then close.
    let frame = encode(&request(1, ECHO.service, ECHO.method, &[0x5A; 200]));
    let half_frame = &frame[..HEADER_LEN + 100];
    for _ in 0..200 {
        let mut stream = raw_connect(addr);
        send_raw(&mut stream, half_frame);
        drop(stream);
    }

    // Half a header, then both directions shut down and the socket dropped.
    for _ in 0..50 {
        let mut stream = raw_connect(addr);
        send_raw(&mut stream, &frame[..HEADER_LEN / 2]);
        match stream.shutdown(Shutdown::Both) {
            Ok(()) => {}
            // A burst of connections can briefly exceed the limit before the server has
            // noticed earlier closes: it then rejects us, and our half header draws a reset.
            Err(e) if e.kind() == std::io::ErrorKind::NotConnected => {}
            Err(e) => panic!("shut down both directions: {e}"),
        }
        drop(stream);
    }

    // Half a header, then a real reset: a socket closed with unread input (the PONG, seen with
    // peek but not read) makes the kernel send RST instead of FIN.
    for i in 0..50u64 {
        let mut stream = raw_connect(addr);
        let mut wire = encode(&Frame::Ping(i));
        wire.extend_from_slice(&frame[..HEADER_LEN / 2]);
        send_raw(&mut stream, &wire);
        let mut peeked = [0u8; 1];
        match stream.peek(&mut peeked) {
            Ok(n) => assert_eq!(
                n, 1,
                "the server answers (PONG, or ERROR when at its limit)"
            ),
            // Over the limit the server rejects and closes; our PING then draws a reset.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("peek at the server's answer: {e}"),
        }
        drop(stream);
    }

    assert_eventually_serving(addr);
    assert_serving(addr);
    long_lived_call(&mut long_lived, "after the disconnects");
}

#[test]
fn three_requests_then_write_shutdown_get_three_responses_then_eof() {
    let server = start_default();
    let mut stream = raw_connect(server.local_addr());
    let payloads: HashMap<u64, &[u8]> = [(1, &b"one"[..]), (2, &b"two"[..]), (3, &b"three"[..])]
        .into_iter()
        .collect();
    let mut wire = BytesMut::new();
    for id in 1..=3 {
        wire.extend_from_slice(&encode(&request(
            id,
            ECHO.service,
            ECHO.method,
            payloads[&id],
        )));
    }
    send_raw(&mut stream, &wire);
    stream
        .shutdown(Shutdown::Write)
        .expect("shut down our write side");
    // `read_until_close` returns at EOF and fails if the server closed mid-frame.
    let frames = read_until_close(&mut stream);
    assert_eq!(
        frames.len(),
        3,
        "three responses before EOF, got {frames:?}"
    );
    let mut answered: Vec<u64> = Vec::new();
    for frame in frames {
        let Frame::Response(response) = frame else {
            panic!("expected only RESPONSE frames, got {frame:?}");
        };
        assert_eq!(response.code, Code::OK, "{response:?}");
        let want = payloads
            .get(&response.request_id)
            .unwrap_or_else(|| panic!("response for unknown id {}", response.request_id));
        assert_eq!(&response.payload[..], *want);
        answered.push(response.request_id);
    }
    answered.sort_unstable();
    assert_eq!(answered, vec![1, 2, 3]);
}
