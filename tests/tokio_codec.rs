//! `proto::FrameCodec` (feature `tokio`) in tokio-util's `Framed` over real sockets: pipelined
//! requests to a real server and its responses, a peer's bad bytes, a frame over the limit,
//! and a stream that ends in the middle of a frame.
#![cfg(feature = "tokio")]

mod support;

use std::future::poll_fn;
use std::io::Write;
use std::net::TcpListener;
use std::pin::Pin;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use courier_rpc::echo::ECHO;
use courier_rpc::proto::{CodecError, DecodeError, EncodeError, Frame, FrameCodec};
use futures_core::Stream;
use futures_sink::Sink;
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedRead};

/// How long a read may wait before the test fails: generous, never hit on success.
const LIMIT: Duration = Duration::from_secs(10);

/// Queues `frame` in `framed`'s write buffer (written by [`flush`]).
async fn feed<T: Sink<Frame, Error = CodecError> + Unpin>(framed: &mut T, frame: Frame) {
    poll_fn(|cx| Pin::new(&mut *framed).poll_ready(cx))
        .await
        .expect("ready");
    Pin::new(&mut *framed).start_send(frame).expect("queued");
}

async fn flush<T: Sink<Frame, Error = CodecError> + Unpin>(framed: &mut T) {
    poll_fn(|cx| Pin::new(&mut *framed).poll_flush(cx))
        .await
        .expect("flushed");
}

/// The next item of `stream`, within [`LIMIT`].
async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    tokio::time::timeout(LIMIT, poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)))
        .await
        .expect("an item (or the end) within the limit")
}

#[tokio::test]
async fn pipelined_requests_through_framed_are_answered_by_a_real_server() {
    let server = support::start_default();
    let socket = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let mut framed = Framed::new(socket, FrameCodec::default());
    assert_eq!(framed.codec().max_body_len(), 4 * 1024 * 1024);

    for id in 1..=100u64 {
        let body = format!("framed {id}");
        feed(
            &mut framed,
            support::request(id, ECHO.service, ECHO.method, body.as_bytes()),
        )
        .await;
    }
    feed(&mut framed, Frame::Ping(101)).await;
    flush(&mut framed).await;

    let mut answered = Vec::new();
    while answered.len() < 100 {
        match next(&mut framed).await {
            Some(Ok(Frame::Response(response))) => {
                assert!(response.code.is_ok(), "{response:?}");
                let expected = format!("framed {}", response.request_id);
                assert_eq!(response.payload, Bytes::from(expected));
                answered.push(response.request_id);
            }
            other => panic!("expected a RESPONSE, got {other:?}"),
        }
    }
    answered.sort_unstable();
    assert_eq!(answered, (1..=100).collect::<Vec<u64>>());
    // The PONG comes after the responses to the requests before its PING.
    assert!(matches!(
        next(&mut framed).await,
        Some(Ok(Frame::Pong(101)))
    ));
}

#[tokio::test]
async fn bad_bytes_from_the_peer_are_a_decode_error_and_end_the_stream() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let peer = thread::spawn(move || {
        let mut stream = support::accept_within(&listener, support::IO_TIMEOUT).expect("accept");
        // One valid frame, then a header that is not a courier frame.
        let mut wire = support::encode(&Frame::Pong(7)).to_vec();
        wire.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n                    ");
        stream.write_all(&wire).expect("write");
        // Held open: the error, not the end of the stream, ends the reader.
        thread::sleep(Duration::from_millis(500));
    });
    let socket = TcpStream::connect(addr).await.expect("connect");
    let mut frames = FramedRead::new(socket, FrameCodec::default());
    assert!(matches!(next(&mut frames).await, Some(Ok(Frame::Pong(7)))));
    match next(&mut frames).await {
        Some(Err(CodecError::Decode(DecodeError::BadMagic { .. }))) => {}
        other => panic!("expected a bad magic, got {other:?}"),
    }
    assert!(next(&mut frames).await.is_none(), "the stream ends");
    peer.join().expect("peer");
}

#[tokio::test]
async fn a_frame_over_the_limit_is_refused_and_a_cut_stream_is_an_io_error() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let peer = thread::spawn(move || {
        let mut stream = support::accept_within(&listener, support::IO_TIMEOUT).expect("accept");
        let frames = support::read_frames(&mut stream, 1);
        // Half a frame, then the end of the stream.
        let wire = support::encode(&frames[0]);
        stream.write_all(&wire[..wire.len() / 2]).expect("write");
        frames
    });
    let socket = TcpStream::connect(addr).await.expect("connect");
    let mut framed = Framed::new(socket, FrameCodec::new(16));
    let over = support::request(1, ECHO.service, ECHO.method, &[0u8; 17]);
    poll_fn(|cx| Pin::new(&mut framed).poll_ready(cx))
        .await
        .expect("ready");
    match Pin::new(&mut framed).start_send(over) {
        Err(CodecError::Encode(EncodeError::FrameTooLarge { .. })) => {}
        other => panic!("expected the body refused, got {other:?}"),
    }
    let fits = support::request(2, ECHO.service, ECHO.method, &[1u8; 16]);
    feed(&mut framed, fits.clone()).await;
    flush(&mut framed).await;

    match next(&mut framed).await {
        Some(Err(CodecError::Io(e))) => assert!(e.to_string().contains("remaining"), "{e}"),
        other => panic!("expected the cut frame as an io error, got {other:?}"),
    }
    let received = peer.join().expect("peer");
    assert_eq!(received, [fits], "only the frame within the limit was sent");
}
