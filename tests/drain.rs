//! Group commit and graceful drain, over real sockets: held responses wait for one commit per
//! loop turn and fail with its status; a drain sends GOAWAY naming the last request it will
//! answer, answers those, closes, refuses new connections, and ends at its deadline.

mod support;

use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use courier_rpc::client::{Client, ClientError};
use courier_rpc::proto::{Code, Frame, Status};
use courier_rpc::server::Server;
use courier_rpc::service::{Commit, Method, Router};

use support::{encode, raw_connect, read_until_close, request, send_raw, start};

/// Answers with the request's body once commit ticket = its request id is committed.
const HOLD: Method<Bytes, Bytes> = Method::new(20, 1, "test.Hold");
/// Sleeps for the number of milliseconds in its body (a decimal string), on a worker.
const SLEEP: Method<Bytes, Bytes> = Method::new(20, 2, "test.Sleep");

/// Counts commits and the tickets they covered; fails once `fail` is set; each commit takes
/// 2 ms, about an fsync.
#[derive(Default)]
struct CountingCommit {
    commits: AtomicU64,
    largest: AtomicU64,
    fail: Mutex<Option<Status>>,
}

impl Commit for CountingCommit {
    fn commit(&self, ticket: u64) -> Result<(), Status> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.largest.fetch_max(ticket, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(2));
        match &*self.fail.lock().expect("lock") {
            Some(status) => Err(status.clone()),
            None => Ok(()),
        }
    }
}

fn router(commit: Arc<CountingCommit>) -> Router {
    let mut router = Router::new();
    router.register(HOLD, |ctx, body: Bytes| {
        ctx.hold_until_committed(ctx.request_id);
        Ok(body)
    });
    router.register_blocking(SLEEP, |_ctx, body: Bytes| {
        let ms: u64 = std::str::from_utf8(&body)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Status::invalid_argument("body must be milliseconds"))?;
        thread::sleep(Duration::from_millis(ms));
        Ok(body)
    });
    router.set_commit(commit);
    router
}

#[test]
fn pipelined_writes_share_commits_and_each_is_answered_after_its_own() {
    let commit = Arc::new(CountingCommit::default());
    let server = start(Server::builder().loops(1), router(Arc::clone(&commit)));
    let mut client = Client::connect(server.local_addr()).expect("connect");
    let body = Bytes::from_static(b"value");
    let pending: Vec<_> = (0..200)
        .map(|_| client.send(&HOLD, &body).expect("send"))
        .collect();
    for p in pending {
        assert_eq!(client.wait(p).expect("held write answered"), body);
    }
    let commits = commit.commits.load(Ordering::SeqCst);
    assert!(commits >= 1);
    assert!(
        commits * 4 <= 200,
        "200 pipelined writes took {commits} commits; a turn's writes should share one"
    );
    assert_eq!(
        commit.largest.load(Ordering::SeqCst),
        200,
        "every ticket committed"
    );
}

#[test]
fn a_failed_commit_answers_the_held_writes_with_its_status_and_others_still_work() {
    let commit = Arc::new(CountingCommit::default());
    *commit.fail.lock().expect("lock") = Some(Status::unavailable("log write failed: EIO"));
    let server = start(Server::builder().loops(1), router(Arc::clone(&commit)));
    let mut client = Client::connect(server.local_addr()).expect("connect");
    match client.call(&HOLD, &Bytes::from_static(b"x")) {
        Err(ClientError::Status(status)) => {
            assert_eq!(status.code, Code::UNAVAILABLE);
            assert_eq!(status.message, "log write failed: EIO");
        }
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    // The connection is still good for requests that hold nothing.
    let slept = client
        .call(&SLEEP, &Bytes::from_static(b"1"))
        .expect("a blocking call after the failed commit");
    assert_eq!(&slept[..], b"1");
}

fn sleep_request(id: u64, ms: u64) -> BytesMut {
    encode(&request(
        id,
        SLEEP.service,
        SLEEP.method,
        ms.to_string().as_bytes(),
    ))
}

#[test]
fn a_drain_sends_goaway_answers_the_requests_before_it_then_closes_and_refuses_new_ones() {
    let commit = Arc::new(CountingCommit::default());
    let server = start(Server::builder().loops(2), router(commit));
    let addr = server.local_addr();
    let handle = server.handle();
    let mut stream = raw_connect(addr);
    let mut wire = sleep_request(1, 300);
    wire.extend_from_slice(&sleep_request(2, 300));
    wire.extend_from_slice(&encode(&request(3, HOLD.service, HOLD.method, b"held")));
    send_raw(&mut stream, &wire);
    // Wait for the held write's answer: by then all three have been read.
    let started = Instant::now();
    let first = support::read_frames(&mut stream, 1);
    assert!(matches!(&first[..], [Frame::Response(r)] if r.request_id == 3));
    handle.drain(Duration::from_secs(10));
    let frames = read_until_close(&mut stream);
    match &frames[..] {
        [Frame::GoAway {
            last_request_id: 3,
            code: Code::OK,
            ..
        }, rest @ ..] => {
            let mut ids: Vec<u64> = rest
                .iter()
                .map(|f| match f {
                    Frame::Response(r) if r.code == Code::OK => r.request_id,
                    other => panic!("expected an OK RESPONSE, got {other:?}"),
                })
                .collect();
            ids.sort_unstable();
            assert_eq!(ids, [1, 2], "both blocking calls answered after the GOAWAY");
        }
        other => panic!("expected GOAWAY(3) then two responses, got {other:?}"),
    }
    // The listener is closed: a new connection is refused.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => break,
            Ok(_) | Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            other => panic!("a connect after the drain began should be refused: {other:?}"),
        }
    }
    server.shutdown().expect("the drained server stops cleanly");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the drain ended when the work did, not at its deadline"
    );
}

#[test]
fn a_drain_ends_at_its_deadline_even_with_work_still_running() {
    let commit = Arc::new(CountingCommit::default());
    let server = Server::builder()
        .addr("127.0.0.1:0".parse().expect("address"))
        .loops(1)
        .bind(router(commit))
        .expect("bind");
    let addr = server.local_addr();
    let handle = server.handle();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let runner = thread::spawn(move || {
        let result = server.run();
        let _ = done_tx.send(Instant::now());
        result
    });
    let mut stream = raw_connect(addr);
    send_raw(&mut stream, &sleep_request(1, 3_000));
    // Give the loop a moment to read the request (a drain before it would just close).
    thread::sleep(Duration::from_millis(100));
    let asked = Instant::now();
    handle.drain(Duration::from_millis(300));
    let finished = done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("run returns at the drain deadline");
    let took = finished - asked;
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(2_500),
        "run returned {took:?} after the drain began; the deadline was 300 ms"
    );
    runner
        .join()
        .expect("server thread")
        .expect("run returns Ok");
    let frames = read_until_close(&mut stream);
    assert!(
        matches!(
            frames.first(),
            Some(Frame::GoAway {
                last_request_id: 1,
                ..
            })
        ),
        "{frames:?}"
    );
    assert!(
        !frames.iter().any(|f| matches!(f, Frame::Response(_))),
        "the 3 s call was cut off at the deadline: {frames:?}"
    );
}

#[test]
fn a_client_of_a_drained_server_retries_safely_and_reconnects_to_its_successor() {
    let first = start(
        Server::builder().loops(1),
        router(Arc::new(CountingCommit::default())),
    );
    let addr = first.local_addr();
    let mut client = Client::connect(addr).expect("connect");
    let body = Bytes::from_static(b"before");
    assert_eq!(client.call(&HOLD, &body).expect("call"), body);
    first.handle().drain(Duration::from_secs(5));
    first.shutdown().expect("drained");
    // The client learns of the GOAWAY only when it next reads: this request went out on the
    // drained connection after the GOAWAY's last id, so it was not processed.
    match client.call(&HOLD, &Bytes::from_static(b"lost")) {
        Err(ClientError::Status(status)) => assert_eq!(status.code, Code::UNAVAILABLE),
        other => panic!("expected UNAVAILABLE (safe to retry), got {other:?}"),
    }
    // A successor on the same address: the retry goes out on a new connection.
    let second = Server::builder()
        .addr(addr)
        .loops(1)
        .bind(router(Arc::new(CountingCommit::default())))
        .expect("bind the drained server's address again")
        .spawn()
        .expect("spawn");
    let retried = Bytes::from_static(b"retried");
    assert_eq!(client.call(&HOLD, &retried).expect("retry"), retried);
    second.shutdown().expect("stop");
}
