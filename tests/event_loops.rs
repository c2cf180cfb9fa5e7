//! Several event loops: connections are dealt out to every loop in turn, each loop counts
//! its own, blocking calls come back to the loop of their connection, the connection limit
//! holds across loops, and shutdown stops them all.
//!
//! Per-loop figures are read in process (`RunningServer::stats().loops()`), so no extra
//! STATS connection lands on a loop and skews the count.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use bytes::Bytes;
use courier_rpc::client::Client;
use courier_rpc::echo::ECHO;
use courier_rpc::proto::{Code, Frame};
use courier_rpc::server::Server;
use courier_rpc::service::{Method, Router};
use courier_rpc::stats::Stats;

use support::{
    bundled_router, echo_request, raw_connect, read_frames, read_until_close, send_raw, start,
};

/// A blocking method that answers `done:` + body.
const QUICK: Method<Bytes, Bytes> = Method::new(63, 1, "test.Quick");

fn value(stats: &Stats, name: &str) -> u64 {
    stats
        .snapshot()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

fn echo(client: &mut Client, text: &str) {
    let reply = client
        .call(&ECHO, &Bytes::copy_from_slice(text.as_bytes()))
        .expect("echo answered");
    assert_eq!(&reply[..], text.as_bytes());
}

#[test]
fn connections_are_dealt_out_to_every_loop_in_turn() {
    let server = start(Server::builder().loops(3), bundled_router());
    let mut clients: Vec<Client> = (0..6)
        .map(|i| {
            let mut client = Client::connect(server.local_addr()).expect("connect");
            // Answered, so its loop has taken it in.
            echo(&mut client, &format!("client {i}"));
            client
        })
        .collect();
    let loops = server.stats().loops();
    assert_eq!(loops.len(), 3);
    for (i, stats) in loops.iter().enumerate() {
        assert_eq!(value(stats, "connections_open"), 2, "loop {i}");
        assert_eq!(value(stats, "requests_OK"), 2, "loop {i}");
    }
    // Only the accepting loop counts accepts.
    assert_eq!(value(&loops[0], "connections_accepted"), 6);
    assert_eq!(value(&loops[1], "connections_accepted"), 0);
    assert_eq!(server.stats().get("connections_open"), Some(6));

    for client in &mut clients {
        echo(client, "again");
    }
    assert_eq!(server.stats().get("requests_OK"), Some(12));
}

#[test]
fn blocking_calls_come_back_to_the_loop_of_their_connection() {
    let mut router = Router::new();
    courier_rpc::echo::register(&mut router);
    router.register_blocking(QUICK, |_ctx, body: Bytes| {
        let mut out = b"done:".to_vec();
        out.extend_from_slice(&body);
        Ok(Bytes::from(out))
    });
    let server = start(Server::builder().loops(3).workers(4), router);
    let addr = server.local_addr();
    let answered = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let answered = Arc::clone(&answered);
            thread::spawn(move || {
                let mut client = Client::connect(addr).expect("connect");
                for i in 0..50 {
                    let body = format!("{t}/{i}");
                    let reply = client
                        .call(&QUICK, &Bytes::copy_from_slice(body.as_bytes()))
                        .expect("blocking call answered");
                    assert_eq!(&reply[..], format!("done:{body}").as_bytes());
                    echo(&mut client, &body);
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("client thread");
    }
    assert_eq!(answered.load(Ordering::Relaxed), 300);
    for (i, stats) in server.stats().loops().iter().enumerate() {
        // Two clients per loop, each 50 blocking and 50 inline calls, all counted where the
        // connection lives.
        assert_eq!(value(stats, "requests_OK"), 200, "loop {i}");
        assert_eq!(value(stats, "blocking_in_flight"), 0, "loop {i}");
    }
}

#[test]
fn the_connection_limit_holds_across_loops() {
    let server = start(
        Server::builder().loops(3).max_connections(4),
        bundled_router(),
    );
    let addr = server.local_addr();
    let mut clients: Vec<Client> = (0..4)
        .map(|i| {
            let mut client = Client::connect(addr).expect("connect");
            echo(&mut client, &format!("client {i}"));
            client
        })
        .collect();
    let mut fifth = raw_connect(addr);
    let frames = read_until_close(&mut fifth);
    match &frames[..] {
        [Frame::Error { code, .. }] => assert_eq!(*code, Code::RESOURCE_EXHAUSTED),
        other => panic!("expected one ERROR RESOURCE_EXHAUSTED, got {other:?}"),
    }
    assert_eq!(server.stats().get("connections_rejected"), Some(1));
    for client in &mut clients {
        echo(client, "still served");
    }
}

#[test]
fn one_loop_serves_every_connection() {
    let server = start(Server::builder().loops(1), bundled_router());
    let mut clients: Vec<Client> = (0..4)
        .map(|_| Client::connect(server.local_addr()).expect("connect"))
        .collect();
    for client in &mut clients {
        echo(client, "one loop");
    }
    let loops = server.stats().loops();
    assert_eq!(loops.len(), 1);
    assert_eq!(value(&loops[0], "connections_open"), 4);
}

#[test]
fn shutdown_stops_every_loop_and_sends_goaway_on_each() {
    let server = start(Server::builder().loops(3), bundled_router());
    let mut streams: Vec<_> = (0..3u64)
        .map(|i| {
            let mut stream = raw_connect(server.local_addr());
            send_raw(&mut stream, &echo_request(i + 1, b"before"));
            let answer = read_frames(&mut stream, 1);
            assert!(matches!(&answer[..], [Frame::Response(r)] if r.code == Code::OK));
            stream
        })
        .collect();
    server.shutdown().expect("every loop stops cleanly");
    for (i, stream) in streams.iter_mut().enumerate() {
        match &read_until_close(stream)[..] {
            [Frame::GoAway {
                last_request_id,
                code,
                ..
            }] => {
                assert_eq!((*last_request_id, *code), (i as u64 + 1, Code::UNAVAILABLE));
            }
            other => panic!("expected GOAWAY then EOF, got {other:?}"),
        }
    }
}
