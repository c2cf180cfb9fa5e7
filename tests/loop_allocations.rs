//! The server's event loop, over a real socket, makes no heap allocation per request once
//! warm: batches of pipelined echo requests are read, answered and written with the buffers
//! and lists the loop already holds.
//!
//! A counting global allocator (`tests/support/counting.rs`) counts every allocation in the
//! process while the measured batches run. The only other thread then working is this test's, which writes pre-encoded
//! bytes and reads into a buffer it already has, so it allocates nothing: a count of 0 is the
//! loop's. This file holds one test so that no other test runs beside it.

mod support;

use std::io::{Read, Write};

use bytes::BytesMut;
use courier_rpc::server::Server;
use support::{bundled_router, echo_request, raw_connect, start};

#[path = "support/counting.rs"]
mod counting;

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

#[test]
fn the_loop_allocates_nothing_per_request_once_warm() {
    let server = start(Server::builder().loops(1), bundled_router());
    let mut stream = raw_connect(server.local_addr());
    let mut batch = BytesMut::new();
    let mut answers_len = 0;
    for id in 1..=16u64 {
        let payload = [id as u8; 64];
        batch.extend_from_slice(&echo_request(id, &payload));
        // An OK echo answer is the request with its kind and status changed: same length.
        answers_len += echo_request(id, &payload).len();
    }
    let mut answers = vec![0u8; answers_len];
    let mut round = |stream: &mut std::net::TcpStream| {
        stream.write_all(&batch).expect("write a batch");
        stream.read_exact(&mut answers).expect("read its answers");
    };
    for _ in 0..200 {
        round(&mut stream);
    }
    let allocations = counting::in_process(|| {
        for _ in 0..2_000 {
            round(&mut stream);
        }
    });
    // The answers were real: the last batch's last frame is request 16's OK response.
    let last = answers.len() - (answers_len / 16);
    assert_eq!(&answers[last..last + 4], b"COUR");
    assert_eq!(
        allocations, 0,
        "{allocations} allocations over 32,000 requests"
    );
    assert_eq!(
        server.stats().get("requests_OK"),
        Some(2_200 * 16),
        "every request answered OK"
    );
}
