//! A scripted fake server on 127.0.0.1 that speaks the crate's own codec, for client tests
//! that decide exactly when responses, GOAWAY and the close arrive.

use std::net::{Shutdown, TcpListener, TcpStream};

use bytes::BytesMut;
use courier_rpc::proto::{Code, Frame, Metadata, Request, Response};

use super::{accept_within, encode, read_frames, read_until_close, send_raw, IO_TIMEOUT};

/// A listener on a free port of 127.0.0.1.
pub fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

/// The next connection the client opens (fails the test if none comes within
/// [`IO_TIMEOUT`]).
pub fn accept(listener: &TcpListener) -> TcpStream {
    accept_within(listener, IO_TIMEOUT).expect("the client connects")
}

/// Reads exactly `count` frames and asserts that they are all REQUESTs.
pub fn read_requests(stream: &mut TcpStream, count: usize) -> Vec<Request> {
    read_frames(stream, count)
        .into_iter()
        .map(|frame| match frame {
            Frame::Request(request) => request,
            other => panic!("expected a REQUEST, got {other:?}"),
        })
        .collect()
}

/// An OK response carrying the request's own payload.
pub fn echo_response(request: &Request) -> Frame {
    Frame::Response(Response {
        request_id: request.request_id,
        code: Code::OK,
        metadata: Metadata::new(),
        payload: request.payload.clone(),
    })
}

/// GOAWAY with status OK and the message "draining".
pub fn goaway(last_request_id: u64) -> Frame {
    Frame::GoAway {
        last_request_id,
        code: Code::OK,
        message: "draining".to_owned(),
    }
}

/// Writes `frames` in one write.
pub fn send_frames(stream: &mut TcpStream, frames: &[Frame]) {
    let mut wire = BytesMut::new();
    for frame in frames {
        wire.extend_from_slice(&encode(frame));
    }
    send_raw(stream, &wire);
}

/// Answers one echo call; returns its request.
pub fn serve_echo_call(stream: &mut TcpStream) -> Request {
    let request = read_requests(stream, 1).remove(0);
    send_frames(stream, &[echo_response(&request)]);
    request
}

/// Ends a drained connection as the server does: shuts its write side (the client reads end
/// of stream), then reads until the client closes, asserting that it sent nothing more.
pub fn close_and_expect_silence(mut stream: TcpStream) {
    stream
        .shutdown(Shutdown::Write)
        .expect("shut the write side");
    let after = read_until_close(&mut stream);
    assert!(
        after.is_empty(),
        "the client sent frames on a connection after its GOAWAY: {after:?}"
    );
}
