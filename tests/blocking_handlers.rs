//! Blocking handlers (`Router::register_blocking`) on the worker pool: they delay no inline
//! request, a full queue is answered UNAVAILABLE at once, a call whose deadline passed in the
//! queue is answered DEADLINE_EXCEEDED without running, `max_in_flight` bounds what one
//! connection hands to the pool, responses overtake each other and are matched by id, and a
//! panicking blocking handler is answered INTERNAL while its worker lives on.
//!
//! Every test asserts on answers and STATS counters, never on how long something took; the
//! bounded waits below only keep a broken server from hanging the suite.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use courier_rpc::client::{Client, ClientError};
use courier_rpc::echo::ECHO;
use courier_rpc::proto::{Code, Frame, Metadata, Request, Response};
use courier_rpc::server::Server;
use courier_rpc::service::{Method, Router};

use support::{encode, raw_connect, read_frames, request, send_raw, start, stats, wait_for_stats};

/// A blocking method that sleeps (test 1).
const SLEEPY: Method<Bytes, Bytes> = Method::new(60, 1, "test.Sleepy");
/// A blocking method that waits at a [`Gate`] the test opens, then answers `done:` + body.
const GATED: Method<Bytes, Bytes> = Method::new(61, 1, "test.Gated");
/// A blocking method that panics on the body `boom` and echoes anything else.
const PANICKY: Method<Bytes, Bytes> = Method::new(62, 1, "test.Panicky");
/// A blocking method that answers `done:` + body at once.
const QUICK: Method<Bytes, Bytes> = Method::new(63, 1, "test.Quick");

/// Upper bound of every wait for something the server must do: generous, never reached when
/// the server works; reaching it fails the test instead of hanging it.
const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// Longest a gated handler waits for the test to open its gate, so that a failed test leaves
/// no worker blocked for ever.
const GATE_LIMIT: Duration = Duration::from_secs(20);

/// A barrier the test controls: handlers count themselves in, then wait until it opens.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
    entered: AtomicUsize,
}

impl Gate {
    fn new() -> Arc<Gate> {
        Arc::new(Gate::default())
    }

    /// Called by a handler: counts the invocation, then waits for the gate to open.
    fn pass(&self) {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let _unused = self
            .opened
            .wait_timeout_while(open, GATE_LIMIT, |open| !*open)
            .unwrap_or_else(|e| e.into_inner());
    }

    fn open(&self) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.opened.notify_all();
    }

    /// Handler invocations so far.
    fn entered(&self) -> usize {
        self.entered.load(Ordering::SeqCst)
    }
}

/// A router with the echo service and [`GATED`] waiting at `gate`.
fn gated_router(gate: &Arc<Gate>) -> Router {
    let mut router = Router::new();
    courier_rpc::echo::register(&mut router);
    let gate = Arc::clone(gate);
    router.register_blocking(GATED, move |_ctx, body: Bytes| {
        gate.pass();
        Ok(done(&body))
    });
    router
}

/// What [`GATED`] answers to `body`.
fn done(body: &[u8]) -> Bytes {
    let mut out = b"done:".to_vec();
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// A client whose waits give up (failing the test) after [`WAIT_LIMIT`].
fn client(addr: std::net::SocketAddr) -> Client {
    Client::builder()
        .read_timeout(WAIT_LIMIT)
        .connect(addr)
        .expect("connect a client")
}

/// Polls `done` every 5 ms until it holds; fails the test after [`WAIT_LIMIT`].
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < WAIT_LIMIT, "gave up waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// The status code of a call that must have failed with a status.
fn status_code<T: std::fmt::Debug>(result: Result<T, ClientError>) -> Code {
    match result {
        Err(ClientError::Status(status)) => status.code,
        other => panic!("expected a status answer, got {other:?}"),
    }
}

#[test]
fn a_sleeping_blocking_handler_delays_no_inline_request() {
    let invoked = Arc::new(AtomicUsize::new(0));
    let mut router = Router::new();
    courier_rpc::echo::register(&mut router);
    let counter = Arc::clone(&invoked);
    router.register_blocking(SLEEPY, move |_ctx, body: Bytes| {
        counter.fetch_add(1, Ordering::SeqCst);
        thread::sleep(Duration::from_secs(2));
        Ok(body)
    });
    let server = start(Server::builder(), router);
    let addr = server.local_addr();

    let slow_returned = Arc::new(AtomicBool::new(false));
    let returned = Arc::clone(&slow_returned);
    let slow = thread::spawn(move || {
        let result = client(addr).call(&SLEEPY, &Bytes::from_static(b"slow"));
        returned.store(true, Ordering::SeqCst);
        result
    });
    // The slow call must be outstanding (its handler running) before the echos start.
    wait_until("the sleeping handler to start", || {
        invoked.load(Ordering::SeqCst) == 1
    });

    let mut fast = client(addr);
    for i in 0..200 {
        let body = Bytes::from(format!("echo {i}"));
        let reply = fast
            .call(&ECHO, &body)
            .unwrap_or_else(|e| panic!("echo {i} while a blocking handler sleeps: {e}"));
        assert_eq!(reply, body);
    }
    assert!(
        !slow_returned.load(Ordering::SeqCst),
        "the 200 echos must all be answered while the 2 s blocking call is still running"
    );

    let reply = slow
        .join()
        .expect("slow caller thread")
        .expect("the slow call is answered OK");
    assert_eq!(&reply[..], b"slow");
    assert_eq!(invoked.load(Ordering::SeqCst), 1);
}

#[test]
fn a_full_worker_queue_answers_unavailable_at_once_without_running() {
    let gate = Gate::new();
    let server = start(
        Server::builder().workers(1).worker_queue(2),
        gated_router(&gate),
    );
    let addr = server.local_addr();
    let mut client = client(addr);

    // First call: occupies the only worker. Waiting for it to enter the handler makes the
    // count below exact (the worker has taken it off the queue).
    let first = client
        .send(&GATED, &Bytes::from_static(b"0"))
        .expect("send the first call");
    client.flush().expect("flush");
    wait_until("the first call to reach the worker", || gate.entered() == 1);

    // Nine more on the same connection, in order: the first two fill the queue (2 slots), the
    // other seven find it full.
    let mut queued: Vec<_> = (1..10)
        .map(|i| {
            client
                .send(&GATED, &Bytes::from(i.to_string()))
                .expect("send")
        })
        .collect();
    client.flush().expect("flush");
    let refused = queued.split_off(2);

    for pending in refused {
        let id = pending.request_id();
        assert_eq!(
            status_code(client.wait(pending)),
            Code::UNAVAILABLE,
            "request {id} finds the queue full"
        );
    }
    // All seven were answered while the handler is still held at the gate.
    assert_eq!(gate.entered(), 1, "refused calls never run");
    let report = stats(addr);
    assert_eq!(report.value("blocking_rejected"), 7);
    assert_eq!(report.value("requests_UNAVAILABLE"), 7);
    assert_eq!(
        report.value("blocking_in_flight"),
        3,
        "1 running + 2 queued"
    );

    gate.open();
    assert_eq!(
        client.wait(first).expect("the running call completes"),
        done(b"0")
    );
    for (i, pending) in queued.into_iter().enumerate() {
        let body = (i + 1).to_string();
        assert_eq!(
            client.wait(pending).expect("a queued call completes"),
            done(body.as_bytes())
        );
    }
    assert_eq!(
        gate.entered(),
        3,
        "exactly the running and the 2 queued calls ran"
    );
    let report = wait_for_stats(addr, WAIT_LIMIT, |r| r.value("blocking_in_flight") == 0);
    assert_eq!(report.value("blocking_in_flight"), 0);
    assert_eq!(report.value("blocking_rejected"), 7);
    assert_eq!(report.value("blocking_expired"), 0);
}

/// The RESPONSE frame for `request_id` among `frames`.
fn response(frames: &[Frame], request_id: u64) -> &Response {
    frames
        .iter()
        .find_map(|f| match f {
            Frame::Response(r) if r.request_id == request_id => Some(r),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no RESPONSE for request {request_id} in {frames:?}"))
}

#[test]
fn a_call_whose_deadline_passed_in_the_queue_is_answered_without_running() {
    let gate = Gate::new();
    let server = start(Server::builder().workers(1), gated_router(&gate));
    let addr = server.local_addr();

    // A raw socket: `Client` gives up by itself at a call's deadline, and this test needs the
    // server's own answer to a request that expired while it waited for a worker.
    let mut stream = raw_connect(addr);
    send_raw(
        &mut stream,
        &encode(&request(1, GATED.service, GATED.method, b"first")),
    );
    wait_until("the first call to occupy the worker", || {
        gate.entered() == 1
    });

    let late = Frame::Request(Request {
        request_id: 2,
        service: GATED.service,
        method: GATED.method,
        deadline_ms: 50,
        metadata: Metadata::new(),
        payload: Bytes::from_static(b"late"),
    });
    send_raw(&mut stream, &encode(&late));
    // Setup, not an assertion: the second call is in the pool's queue, and then certainly
    // past its 50 ms deadline before the worker is freed.
    let report = wait_for_stats(addr, WAIT_LIMIT, |r| r.value("blocking_in_flight") == 2);
    assert_eq!(
        report.value("blocking_in_flight"),
        2,
        "1 running + 1 queued"
    );
    thread::sleep(Duration::from_millis(300));
    gate.open();

    let frames = read_frames(&mut stream, 2);
    let first = response(&frames, 1);
    assert_eq!(first.code, Code::OK);
    assert_eq!(first.payload, done(b"first"));
    let late = response(&frames, 2);
    assert_eq!(late.code, Code::DEADLINE_EXCEEDED, "{:?}", late.message());
    assert_eq!(gate.entered(), 1, "the expired call's handler never ran");

    let report = stats(addr);
    assert_eq!(report.value("blocking_expired"), 1);
    assert_eq!(report.value("requests_DEADLINE_EXCEEDED"), 1);
    assert_eq!(report.value("blocking_in_flight"), 0);

    // The worker is free again: a call without a deadline runs.
    send_raw(
        &mut stream,
        &encode(&request(3, GATED.service, GATED.method, b"after")),
    );
    let frames = read_frames(&mut stream, 1);
    assert_eq!(response(&frames, 3).payload, done(b"after"));
    assert_eq!(gate.entered(), 2);
}

#[test]
fn max_in_flight_bounds_what_one_connection_hands_to_the_pool() {
    let gate = Gate::new();
    let server = start(
        Server::builder().max_in_flight(2).workers(4),
        gated_router(&gate),
    );
    let addr = server.local_addr();
    let mut client = client(addr);

    let pending: Vec<_> = (0..6)
        .map(|i| {
            client
                .send(&GATED, &Bytes::from(i.to_string()))
                .expect("send")
        })
        .collect();
    client.flush().expect("flush");

    let report = wait_for_stats(addr, WAIT_LIMIT, |r| {
        r.value("in_flight_paused") >= 1 && r.value("blocking_in_flight") >= 2
    });
    assert!(report.value("in_flight_paused") >= 1, "{report:?}");
    assert_eq!(
        report.value("blocking_in_flight"),
        2,
        "only max_in_flight requests reach the pool"
    );
    // Four workers are idle, so anything handed to the pool would run: only 2 do.
    wait_until("two handlers to run", || gate.entered() == 2);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(
        gate.entered(),
        2,
        "the other 4 requests are not decoded yet"
    );
    assert_eq!(stats(addr).value("blocking_in_flight"), 2);

    gate.open();
    for (i, pending) in pending.into_iter().enumerate() {
        let body = i.to_string();
        assert_eq!(
            client.wait(pending).expect("every call completes"),
            done(body.as_bytes())
        );
    }
    assert_eq!(gate.entered(), 6);
}

#[test]
fn blocking_responses_come_out_of_order_and_are_matched_by_id() {
    let gate = Gate::new();
    let server = start(Server::builder().workers(2), gated_router(&gate));
    let addr = server.local_addr();
    let mut client = client(addr);

    let slow = client
        .send(&GATED, &Bytes::from_static(b"slow"))
        .expect("send the slow call");
    let echos: Vec<_> = (0..10)
        .map(|i| {
            let body = Bytes::from(format!("fast {i}"));
            (client.send(&ECHO, &body).expect("send an echo"), body)
        })
        .collect();

    // The echos were sent after the slow call, and are all answered while it is held.
    for (pending, body) in echos {
        assert_eq!(client.wait(pending).expect("echo"), body);
    }
    // The slow call is still held at the gate (which has not been opened), so its answer
    // cannot have come before the echos'.
    wait_until("the slow call to reach its handler", || gate.entered() == 1);

    gate.open();
    assert_eq!(client.wait(slow).expect("the slow call"), done(b"slow"));

    // And once more the other way round on the same client: wait for the slow one first
    // while the echos' answers arrive ahead of it and are kept until asked for.
    // The gate is open now: the handler returns at once.
    let slow = client
        .send(&GATED, &Bytes::from_static(b"again"))
        .expect("send");
    let echos: Vec<_> = (0..10)
        .map(|i| {
            let body = Bytes::from(format!("fast again {i}"));
            (client.send(&ECHO, &body).expect("send an echo"), body)
        })
        .collect();
    assert_eq!(client.wait(slow).expect("the slow call"), done(b"again"));
    for (pending, body) in echos {
        assert_eq!(client.wait(pending).expect("echo"), body);
    }
    assert_eq!(gate.entered(), 2);
}

#[test]
fn a_panicking_blocking_handler_is_answered_internal_and_its_worker_survives() {
    let mut router = Router::new();
    router.register_blocking(PANICKY, |_ctx, body: Bytes| {
        if &body[..] == b"boom" {
            panic!("blocking handler exploded on purpose");
        }
        Ok(body)
    });
    let server = start(Server::builder().workers(1), router);
    let addr = server.local_addr();
    let mut client = client(addr);

    for round in 1..=3u64 {
        assert_eq!(
            status_code(client.call(&PANICKY, &Bytes::from_static(b"boom"))),
            Code::INTERNAL,
            "round {round}"
        );
        let report = stats(addr);
        assert_eq!(report.value("handler_panics"), round);
        assert_eq!(report.value("requests_INTERNAL"), round);

        // One worker only: an answer proves that very worker survived the panic.
        let body = Bytes::from(format!("fine {round}"));
        assert_eq!(
            client
                .call(&PANICKY, &body)
                .expect("the worker answers after a panic"),
            body
        );
    }
    assert_eq!(stats(addr).value("blocking_in_flight"), 0);
}

/// A client may pipeline requests and then shut down its write side; it is owed an answer
/// to every request it sent (as `tests/disconnect.rs` checks for inline handlers), also when
/// more blocking requests were sent than `max_in_flight` lets run at once.
///
/// Fails today: with `max_in_flight(1)` the connection stops decoding after request 1. When
/// request 1 completes, the loop reads again and finds the end of stream (`PeerClosed`), then
/// decodes request 2. When request 2 completes, `serve_io` starts with `flush_to`, which sees
/// `PeerClosed`, `in_flight == 0` and no call waiting to be handed out, and moves the
/// connection to `Closed` (src/connection/mod.rs, end of `flush_to`) although requests 3 and 4
/// are still in the read buffer, never decoded: they are never answered (nor run), and the
/// client sees EOF after 2 of its 4 responses.
#[test]
fn a_half_closed_client_gets_every_blocking_answer_beyond_max_in_flight() {
    let invoked = Arc::new(AtomicUsize::new(0));
    let mut router = Router::new();
    let counter = Arc::clone(&invoked);
    router.register_blocking(QUICK, move |_ctx, body: Bytes| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(done(&body))
    });
    let server = start(Server::builder().max_in_flight(1).workers(1), router);

    let mut stream = raw_connect(server.local_addr());
    let mut wire = Vec::new();
    for id in 1..=4u64 {
        wire.extend_from_slice(&encode(&request(
            id,
            QUICK.service,
            QUICK.method,
            id.to_string().as_bytes(),
        )));
    }
    send_raw(&mut stream, &wire);
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shut down our write side");

    let frames = support::read_until_close(&mut stream);
    let answered: Vec<u64> = frames
        .iter()
        .map(|f| match f {
            Frame::Response(r) if r.code == Code::OK => r.request_id,
            other => panic!("expected only OK responses, got {other:?}"),
        })
        .collect();
    assert_eq!(
        answered,
        [1, 2, 3, 4],
        "every request sent before the half-close is answered before EOF ({} handler runs)",
        invoked.load(Ordering::SeqCst)
    );
    for id in 1..=4u64 {
        assert_eq!(
            response(&frames, id).payload,
            done(id.to_string().as_bytes())
        );
    }
}
