mod support;

use std::net::TcpStream;

use bytes::BytesMut;
use courier_rpc::echo::ECHO;
use courier_rpc::proto::{Code, Frame};

use support::{
    encode, raw_connect, read_frames, read_until_close, request, send_raw, start_default,
};

/// Sends echo requests with `ids` in one write and checks each is answered.
fn send_and_answer(stream: &mut TcpStream, ids: &[u64]) {
    let mut wire = BytesMut::new();
    for &id in ids {
        let payload = format!("request {id}");
        wire.extend_from_slice(&encode(&request(
            id,
            ECHO.service,
            ECHO.method,
            payload.as_bytes(),
        )));
    }
    send_raw(stream, &wire);
    let mut answered: Vec<u64> = read_frames(stream, ids.len())
        .into_iter()
        .map(|frame| match frame {
            Frame::Response(r) if r.code == Code::OK => {
                assert_eq!(r.payload, format!("request {}", r.request_id).as_bytes());
                r.request_id
            }
            other => panic!("expected an OK RESPONSE, got {other:?}"),
        })
        .collect();
    answered.sort_unstable();
    let mut want = ids.to_vec();
    want.sort_unstable();
    assert_eq!(answered, want, "every request answered once");
}

/// Reads until the server closes; asserts that the frames are exactly one GOAWAY naming
/// `last_request_id`.
fn assert_goaway_then_close(stream: &mut TcpStream, last_request_id: u64) {
    let frames = read_until_close(stream);
    match frames.last() {
        Some(Frame::GoAway {
            last_request_id: got,
            code,
            message,
        }) => {
            assert_eq!(
                *got, last_request_id,
                "GOAWAY names the last request received and answered ({message:?})"
            );
            assert!(
                *code == Code::OK || *code == Code::UNAVAILABLE,
                "a shutdown GOAWAY carries OK or UNAVAILABLE, got {code}"
            );
        }
        other => panic!("the last frame before the close must be a GOAWAY, got {other:?}"),
    }
    assert_eq!(
        frames.len(),
        1,
        "every response was already read: only the GOAWAY follows, got {frames:?}"
    );
}

#[test]
fn shutdown_sends_goaway_naming_the_last_answered_request_then_closes_and_returns_ok() {
    let server = start_default();
    let mut stream = raw_connect(server.local_addr());
    send_and_answer(&mut stream, &[1, 2, 3]);
    send_and_answer(&mut stream, &[4, 5]);
    server.shutdown().expect("shutdown returns Ok");
    assert_goaway_then_close(&mut stream, 5);
}

#[test]
fn shutdown_goaway_names_the_last_request_in_arrival_order_not_the_largest_id() {
    let server = start_default();
    let mut stream = raw_connect(server.local_addr());
    send_and_answer(&mut stream, &[900, 30]);
    send_and_answer(&mut stream, &[77]);
    server.shutdown().expect("shutdown returns Ok");
    assert_goaway_then_close(&mut stream, 77);
}

#[test]
fn shutdown_sends_each_connection_its_own_last_request_id() {
    let server = start_default();
    let addr = server.local_addr();
    let mut busy = raw_connect(addr);
    let mut other = raw_connect(addr);
    let mut idle = raw_connect(addr);
    send_and_answer(&mut busy, &[10, 11, 12]);
    send_and_answer(&mut other, &[40]);
    // The idle connection must be accepted before the shutdown: a PING round trip proves it.
    send_raw(&mut idle, &encode(&Frame::Ping(3)));
    assert_eq!(read_frames(&mut idle, 1), vec![Frame::Pong(3)]);
    server.shutdown().expect("shutdown returns Ok");
    assert_goaway_then_close(&mut busy, 12);
    assert_goaway_then_close(&mut other, 40);
    // No request received: the GOAWAY names id 0.
    assert_goaway_then_close(&mut idle, 0);
}
