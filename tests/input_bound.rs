//! The bound on buffered input holds over real sockets: a connection buffers at most one frame
//! (the 36-byte header and `max_body_len`) plus one 16 KiB read
//! (`ConnectionConfig::max_buffered_input`), however fast a client pipelines large frames.
//! The server's `input_peak` counter is the most any connection held.

mod support;

use std::io::Write;
use std::thread;

use bytes::Bytes;
use courier_rpc::connection::{ConnectionConfig, READ_CHUNK};
use courier_rpc::proto::{Frame, HEADER_LEN};
use courier_rpc::server::Server;
use courier_rpc::service::{Method, Router};
use support::{encode, raw_connect, read_frames, request, start, stats};

/// Takes any body and answers with nothing.
const SINK: Method<Bytes, Bytes> = Method::new(40, 1, "test.Sink");

const MAX_BODY: u32 = 1024 * 1024;

#[test]
fn pipelined_large_frames_never_buffer_more_than_one_frame_plus_one_read() {
    let mut router = Router::new();
    router.register(SINK, |_ctx, _body: Bytes| Ok(Bytes::new()));
    let server = start(Server::builder().max_body_len(MAX_BODY), router);
    let addr = server.local_addr();
    let frames = 24;
    let body = vec![0xA5; MAX_BODY as usize - 64];
    let mut wire = Vec::new();
    for id in 1..=frames {
        wire.extend_from_slice(&encode(&request(id, SINK.service, SINK.method, &body)));
    }
    let mut stream = raw_connect(addr);
    let mut writer = stream.try_clone().expect("clone the stream");
    // All of it at once, from its own thread, as fast as the socket takes it.
    let sender = thread::spawn(move || writer.write_all(&wire).expect("send the frames"));
    let answers = read_frames(&mut stream, frames as usize);
    sender.join().expect("sender thread");
    assert!(answers
        .iter()
        .all(|f| matches!(f, Frame::Response(r) if r.code.is_ok())));

    let config = ConnectionConfig::default().with_max_body_len(MAX_BODY);
    let bound = config.max_buffered_input() as u64;
    assert_eq!(bound, (HEADER_LEN + MAX_BODY as usize + READ_CHUNK) as u64);
    let peak = stats(addr).value("input_peak");
    println!("input_peak {peak} bytes; bound {bound} bytes");
    assert!(
        peak <= bound,
        "a connection buffered {peak} bytes of input, over the bound of {bound}"
    );
    assert!(
        peak > u64::from(MAX_BODY) / 2,
        "the frames were large enough to test the bound: {peak}"
    );
}
