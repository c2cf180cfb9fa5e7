mod support;

use std::collections::{HashMap, HashSet};
use std::thread;

use bytes::{Bytes, BytesMut};
use courier_rpc::client::{Client, ClientError, Pending};
use courier_rpc::echo::ECHO;
use courier_rpc::kv::{Key, SetRequest, Value, GET, SET};
use courier_rpc::proto::{Code, Frame};

use support::{encode, raw_connect, read_frames, request, send_raw, start_default};

const CLIENTS: usize = 64;
const REQUESTS_PER_CLIENT: usize = 1_000;

/// An echo payload unique to (client, i), of a length that varies with `i` (0 to 300 bytes of
/// filler after the unique prefix), so frames straddle read and write boundaries differently.
fn echo_payload(client: usize, i: usize) -> Bytes {
    let mut payload = format!("client {client} request {i} ").into_bytes();
    let filler = (client * 31 + i * 17) % 301;
    payload.extend((0..filler).map(|k| b'a' + ((client + i + k) % 26) as u8));
    Bytes::from(payload)
}

fn kv_key(client: usize, i: usize) -> Bytes {
    Bytes::from(format!("pipelining/client-{client}/key-{i}"))
}

fn kv_value(client: usize, i: usize) -> Bytes {
    Bytes::from(format!("value of client {client} set at request {i}"))
}

/// One pipelined request and what its response must be.
enum Sent {
    Echo(Pending<Bytes>, Bytes),
    Set(Pending<()>),
    Get(Pending<Value>, Bytes),
}

/// Sends `REQUESTS_PER_CLIENT` requests without waiting (echo, kv SET, kv GET of the key just
/// set), then waits for each response and checks it. Returns how many responses were checked.
fn pipeline_one_client(addr: std::net::SocketAddr, client_no: usize) -> usize {
    let mut client = Client::connect(addr).expect("connect a pipelining client");
    let mut sent = Vec::with_capacity(REQUESTS_PER_CLIENT);
    let mut ids = HashSet::new();
    for i in 0..REQUESTS_PER_CLIENT {
        let entry = match i % 4 {
            // SET a key unique to this client and request.
            1 => {
                let pending = client
                    .send(
                        &SET,
                        &SetRequest {
                            key: kv_key(client_no, i),
                            value: kv_value(client_no, i),
                        },
                    )
                    .expect("queue a kv SET");
                Sent::Set(pending)
            }
            // GET the key the previous request set: same connection, so it was processed first.
            2 => {
                let pending = client
                    .send(&GET, &Key(kv_key(client_no, i - 1)))
                    .expect("queue a kv GET");
                Sent::Get(pending, kv_value(client_no, i - 1))
            }
            _ => {
                let payload = echo_payload(client_no, i);
                let pending = client.send(&ECHO, &payload).expect("queue an echo");
                Sent::Echo(pending, payload)
            }
        };
        let id = match &entry {
            Sent::Echo(p, _) => p.request_id(),
            Sent::Set(p) => p.request_id(),
            Sent::Get(p, _) => p.request_id(),
        };
        assert!(ids.insert(id), "client {client_no}: request id {id} reused");
        sent.push(entry);
    }
    let mut checked = 0;
    for (i, entry) in sent.into_iter().enumerate() {
        match entry {
            Sent::Echo(pending, payload) => {
                let reply = client
                    .wait(pending)
                    .unwrap_or_else(|e| panic!("client {client_no} request {i}: echo failed: {e}"));
                assert_eq!(
                    reply, payload,
                    "client {client_no} request {i}: echo reply is another request's payload"
                );
            }
            Sent::Set(pending) => {
                client.wait(pending).unwrap_or_else(|e| {
                    panic!("client {client_no} request {i}: kv SET failed: {e}")
                });
            }
            Sent::Get(pending, value) => {
                let Value(got) = client.wait(pending).unwrap_or_else(|e| {
                    panic!("client {client_no} request {i}: kv GET failed: {e}")
                });
                assert_eq!(
                    got, value,
                    "client {client_no} request {i}: GET returned the wrong value"
                );
            }
        }
        checked += 1;
    }
    checked
}

#[test]
fn sixty_four_clients_pipelining_a_thousand_mixed_requests_each_get_matching_responses() {
    let server = start_default();
    let addr = server.local_addr();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|client_no| {
            thread::Builder::new()
                .name(format!("pipelining-client-{client_no}"))
                .spawn(move || pipeline_one_client(addr, client_no))
                .expect("spawn a client thread")
        })
        .collect();
    let mut total = 0;
    for (client_no, thread) in threads.into_iter().enumerate() {
        total += thread
            .join()
            .unwrap_or_else(|_| panic!("client thread {client_no} panicked (see its message)"));
    }
    assert_eq!(total, CLIENTS * REQUESTS_PER_CLIENT);
    // Every key set by every client is still there with its own value.
    let mut client = Client::connect(addr).expect("connect a checking client");
    for client_no in [0, CLIENTS / 2, CLIENTS - 1] {
        for i in (1..REQUESTS_PER_CLIENT).step_by(4).take(5) {
            let Value(got) = client
                .call(&GET, &Key(kv_key(client_no, i)))
                .expect("GET a key set during the pipelining");
            assert_eq!(got, kv_value(client_no, i));
        }
    }
}

#[test]
fn responses_waited_for_in_reverse_order_are_each_matched_to_their_request() {
    let server = start_default();
    let mut client = Client::connect(server.local_addr()).expect("connect");
    let sent: Vec<(Pending<Bytes>, Bytes)> = (0..1_000)
        .map(|i| {
            let payload = echo_payload(7, i);
            let pending = client.send(&ECHO, &payload).expect("queue an echo");
            (pending, payload)
        })
        .collect();
    for (i, (pending, payload)) in sent.into_iter().enumerate().rev() {
        let id = pending.request_id();
        let reply = client
            .wait(pending)
            .unwrap_or_else(|e| panic!("request {i} (id {id}) waited in reverse: {e}"));
        assert_eq!(reply, payload, "request {i} (id {id}) got another payload");
    }
    // The connection is still usable afterwards.
    let reply = client
        .call(&ECHO, &Bytes::from_static(b"after"))
        .expect("call after the reverse waits");
    assert_eq!(&reply[..], b"after");
}

#[test]
fn five_hundred_requests_in_one_write_get_five_hundred_responses_with_exactly_those_ids() {
    let server = start_default();
    let mut stream = raw_connect(server.local_addr());
    // Ids that are neither consecutive nor starting at 1: the server must copy them, not count.
    let ids: Vec<u64> = (0..500u64)
        .map(|i| 0x0100_0000_0000_0000 + i * 7919)
        .collect();
    let mut payload_of = HashMap::new();
    let mut wire = BytesMut::new();
    for (i, &id) in ids.iter().enumerate() {
        let payload = echo_payload(99, i);
        wire.extend_from_slice(&encode(&request(id, ECHO.service, ECHO.method, &payload)));
        payload_of.insert(id, payload);
    }
    send_raw(&mut stream, &wire);
    let frames = read_frames(&mut stream, ids.len());
    let mut seen = HashSet::new();
    for frame in frames {
        let Frame::Response(response) = frame else {
            panic!("expected only RESPONSE frames, got {frame:?}");
        };
        let id = response.request_id;
        assert!(seen.insert(id), "request id {id} answered twice");
        assert_eq!(response.code, Code::OK, "request id {id}: {response:?}");
        let payload = payload_of
            .get(&id)
            .unwrap_or_else(|| panic!("response for id {id}, which was never sent"));
        assert_eq!(&response.payload, payload, "request id {id}: wrong payload");
    }
    assert_eq!(seen, ids.iter().copied().collect::<HashSet<_>>());
}

#[test]
fn a_pipeline_larger_than_every_buffer_on_the_way_neither_deadlocks_nor_times_out() {
    // 64 MiB of requests sent before any answer is waited for: more than the kernel's
    // buffers and the server's 1 MiB high-water mark hold, so the server stops reading until
    // the client reads its answers, which it does while its own write waits.
    const CALLS: usize = 64;
    let server = start_default();
    let mut client = Client::builder()
        .write_timeout(std::time::Duration::from_secs(5))
        .connect(server.local_addr())
        .expect("connect");
    let payloads: Vec<Bytes> = (0..CALLS)
        .map(|i| Bytes::from(vec![i as u8; 1 << 20]))
        .collect();
    let pending: Vec<Pending<Bytes>> = payloads
        .iter()
        .map(|p| client.send(&ECHO, p).expect("send"))
        .collect();
    for (p, payload) in pending.into_iter().zip(&payloads) {
        assert_eq!(&client.wait(p).expect("answered"), payload);
    }
    assert_eq!(client.core().held(), 0);
    server.shutdown().expect("shutdown");
}

#[test]
fn a_server_that_reads_nothing_fails_the_write_after_the_write_timeout() {
    // Accepts, then neither reads nor writes: the client's writes make no progress once the
    // kernel's buffers are full, and fail after its write timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let (done, done_rx) = std::sync::mpsc::channel::<()>();
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        // Held open, unread, until the test has its answer (or gives up: the sender drops).
        let _ = done_rx.recv_timeout(std::time::Duration::from_secs(60));
        drop(stream);
    });
    let mut client = Client::builder()
        .write_timeout(std::time::Duration::from_millis(300))
        .connect(addr)
        .expect("connect");
    let payload = Bytes::from(vec![7u8; 1 << 20]);
    let mut result = Ok(());
    // The buffers on the way hold some tens of MiB at most; 256 MiB fill them.
    for _ in 0..256 {
        if let Err(e) = client.send(&ECHO, &payload) {
            result = Err(e);
            break;
        }
    }
    assert!(
        matches!(result, Err(ClientError::Timeout)),
        "the write fails with a timeout: {result:?}"
    );
    // The connection is unusable after it.
    assert!(client.send(&ECHO, &payload).is_err());
    drop(done);
    server.join().expect("server");
}

#[test]
fn abandoned_requests_leave_nothing_held_whether_answered_yet_or_not() {
    let server = start_default();
    let mut client = Client::connect(server.local_addr()).expect("connect");
    let mut sent: Vec<(Pending<Bytes>, Bytes)> = (0..10)
        .map(|i| {
            let payload = echo_payload(3, i);
            (client.send(&ECHO, &payload).expect("send"), payload)
        })
        .collect();
    // Waiting for the last reads the answers to all ten: nine are held for their waits.
    let (last, payload) = sent.pop().expect("ten");
    assert_eq!(client.wait(last).expect("the last"), payload);
    assert_eq!(client.core().held(), 9);
    // Abandoning one already answered drops its answer now.
    let (first, _) = sent.remove(0);
    client.abandon(first);
    assert_eq!(client.core().held(), 8);
    // One abandoned before its answer comes: the answer is dropped when it does.
    let early = client
        .send(&ECHO, &Bytes::from_static(b"never waited for"))
        .expect("send");
    client.abandon(early);
    for (pending, payload) in sent {
        assert_eq!(client.wait(pending).expect("answered"), payload);
    }
    // A call after it reads past the abandoned one's answer.
    let reply = client
        .call(&ECHO, &Bytes::from_static(b"after"))
        .expect("call");
    assert_eq!(&reply[..], b"after");
    assert_eq!(
        client.core().held(),
        0,
        "nothing kept for the abandoned requests"
    );
}
