//! The async client (feature `tokio`) over real sockets: many tasks' calls multiplexed on one
//! connection, calls dropped in the middle of a pipeline, deadlines, a draining server
//! (GOAWAY, from a scripted fake server on 127.0.0.1 that speaks the crate's own codec), and
//! TLS with a token against a real TLS server.
#![cfg(feature = "tokio")]

mod support;

use std::future::{poll_fn, Future};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::Poll;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use courier_rpc::auth::TokenTable;
use courier_rpc::client::{AsyncClient, CallOptions, ClientError};
use courier_rpc::echo::ECHO;
use courier_rpc::proto::{Code, Frame, Metadata, Response};
use courier_rpc::server::{RunningServer, Server};
use courier_rpc::service::{Method, Router};
use support::fake_server::{
    accept, bind, close_and_expect_silence, echo_response, goaway, read_requests, send_frames,
    serve_echo_call,
};
use support::read_until_close;
use support::{accept_within, counter};

/// How long a client waits for anything: generous, never hit on success, and below the
/// fake servers' `support::IO_TIMEOUT`, so that a client waiting for what never comes fails
/// before the server thread gives up.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a test polls for a condition before it fails.
const WAIT_LIMIT: Duration = Duration::from_secs(20);

/// A blocking method that waits at the test's [`Gate`], then echoes its body.
const GATED: Method<Bytes, Bytes> = Method::new(40, 1, "test.Gated");
/// A blocking method that sleeps 300 ms, then echoes its body.
const SLOW: Method<Bytes, Bytes> = Method::new(40, 2, "test.Slow");

/// How long [`SLOW`] sleeps.
const SLOW_FOR: Duration = Duration::from_millis(300);

/// Holds [`GATED`] calls until the test opens it (or [`WAIT_LIMIT`] passes).
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn pass(&self) {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let _unused = self
            .opened
            .wait_timeout_while(open, WAIT_LIMIT, |open| !*open)
            .unwrap_or_else(|e| e.into_inner());
    }

    fn open(&self) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.opened.notify_all();
    }
}

/// A server with echo, [`GATED`] at `gate`, and [`SLOW`].
fn start_server(gate: &Arc<Gate>) -> RunningServer {
    let mut router = Router::new();
    courier_rpc::echo::register(&mut router);
    let gate = Arc::clone(gate);
    router.register_blocking(GATED, move |_ctx, body: Bytes| {
        gate.pass();
        Ok(body)
    });
    router.register_blocking(SLOW, |_ctx, body: Bytes| {
        thread::sleep(SLOW_FOR);
        Ok(body)
    });
    support::start(Server::builder(), router)
}

async fn connect(addr: std::net::SocketAddr) -> AsyncClient {
    AsyncClient::builder()
        .connect_timeout(CLIENT_TIMEOUT)
        .read_timeout(CLIENT_TIMEOUT)
        .connect_async(addr)
        .await
        .expect("connect")
}

/// Polls `done` every 5 ms until it holds; fails the test after [`WAIT_LIMIT`].
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < WAIT_LIMIT, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs every future of `futures` at once, in this task; their outputs in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    poll_fn(|cx| {
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                if let Poll::Ready(out) = future.as_mut().poll(cx) {
                    *output = Some(out);
                }
            }
        }
        if outputs.iter().all(Option::is_some) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

fn assert_unavailable<T: std::fmt::Debug>(result: &Result<T, ClientError>, what: &str) {
    match result {
        Err(ClientError::Status(status)) => {
            assert_eq!(status.code, Code::UNAVAILABLE, "{what}: {status}");
        }
        other => panic!("{what}: expected UNAVAILABLE, got {other:?}"),
    }
}

#[test]
fn the_client_and_its_call_futures_are_send_and_sync() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    fn check(client: &AsyncClient) {
        send_sync(client);
        let body = Bytes::new();
        let call = client.call(&ECHO, &body);
        send(&call);
        let ping = client.ping();
        send(&ping);
    }
    let _ = check;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_from_a_thousand_tasks_share_one_connection() {
    const TASKS: usize = 1_000;
    const CALLS_PER_TASK: usize = 10;
    let server = support::start_default();
    let client = connect(server.local_addr()).await;

    let mut tasks = Vec::with_capacity(TASKS);
    for task in 0..TASKS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            // Each task's calls run at once too: 10,000 calls outstanding together.
            let bodies: Vec<Bytes> = (0..CALLS_PER_TASK)
                .map(|call| Bytes::from(format!("task {task} call {call}")))
                .collect();
            let results = join_all(bodies.iter().map(|b| client.call(&ECHO, b)).collect()).await;
            for (body, result) in bodies.iter().zip(results) {
                let echoed = result.unwrap_or_else(|e| panic!("{body:?}: {e}"));
                assert_eq!(echoed, body, "each response is matched to its own request");
            }
            CALLS_PER_TASK
        }));
    }
    let mut answered = 0;
    for task in tasks {
        answered += task.await.expect("task");
    }
    assert_eq!(answered, TASKS * CALLS_PER_TASK);
    assert_eq!(client.in_flight(), 0, "every call's entry is gone");
    assert_eq!(
        counter(&server, "connections_accepted"),
        1,
        "every call went over the one connection"
    );
    assert_eq!(
        counter(&server, "requests_OK"),
        (TASKS * CALLS_PER_TASK) as u64
    );
    assert!(!client.is_draining());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_dropped_mid_pipeline_leave_nothing_behind_and_the_rest_complete() {
    const CALLS: usize = 60;
    let gate = Arc::new(Gate::default());
    let server = start_server(&gate);
    let client = connect(server.local_addr()).await;

    // Every call waits at the gate: all are in flight when half of them are dropped.
    let mut tasks = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let body = Bytes::from(format!("pipelined {i}"));
            let result = client.call(&GATED, &body).await;
            (body, result)
        }));
    }
    wait_until("every call to be started", || client.in_flight() == CALLS).await;
    // Half the futures go: every other task aborted, and a few more dropped by a select.
    let mut kept = Vec::new();
    let mut aborted = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        if i % 2 == 0 {
            kept.push(task);
        } else {
            task.abort();
            aborted.push(task);
        }
    }
    for task in aborted {
        let err = task.await.expect_err("aborted");
        assert!(err.is_cancelled(), "{err}");
    }
    assert_eq!(
        client.in_flight(),
        CALLS / 2,
        "a dropped call is forgotten at once"
    );
    let body = Bytes::from_static(b"given up by a select");
    tokio::select! {
        result = client.call(&GATED, &body) => panic!("the gate is shut, yet {result:?}"),
        () = tokio::time::sleep(Duration::from_millis(20)) => {}
    }
    assert_eq!(client.in_flight(), CALLS / 2);

    gate.open();
    for task in kept {
        let (body, result) = task.await.expect("task");
        assert_eq!(result.expect("a kept call is answered"), body);
    }
    // The dropped calls were still processed: their responses come late and are dropped.
    // Once the server has sent every response, a new call's response comes after them on
    // the stream, so the client has read them all when it returns.
    let sent = support::wait_for_counter(&server, "requests_OK", CALLS as u64 + 1);
    assert_eq!(sent, CALLS as u64 + 1);
    let after = Bytes::from_static(b"after the cancellations");
    assert_eq!(client.call(&ECHO, &after).await.expect("later call"), after);
    assert_eq!(
        client.in_flight(),
        0,
        "late responses to dropped calls left no entry"
    );
    assert_eq!(counter(&server, "connections_accepted"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_passes_fails_the_call_and_the_connection_goes_on() {
    let gate = Arc::new(Gate::default());
    let server = start_server(&gate);
    let client = connect(server.local_addr()).await;

    let options = CallOptions::default().with_deadline(Duration::from_millis(50));
    let started = Instant::now();
    let slow = Bytes::from_static(b"slow");
    let (timed_out, unhurried) = tokio::join!(
        client.call_with(&SLOW, &slow, &options),
        client.call(&SLOW, &slow)
    );
    assert!(
        matches!(timed_out, Err(ClientError::Timeout)),
        "{timed_out:?}"
    );
    assert_eq!(
        unhurried.expect("a call without a deadline waits for the answer"),
        slow
    );
    assert!(started.elapsed() >= SLOW_FOR);

    // The timed-out call's late response was dropped; the connection serves on.
    for i in 0..10 {
        let body = Bytes::from(format!("after the timeout {i}"));
        assert_eq!(client.call(&ECHO, &body).await.expect("echo"), body);
    }
    assert!(client.ping().await.expect("ping") < CLIENT_TIMEOUT);
    assert_eq!(client.in_flight(), 0);
    assert_eq!(counter(&server, "connections_accepted"), 1);

    // A deadline that has passed already sends nothing.
    let zero = CallOptions::default().with_deadline(Duration::ZERO);
    let result = client.call_with(&ECHO, &slow, &zero).await;
    assert!(matches!(result, Err(ClientError::Timeout)), "{result:?}");
    gate.open();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_task_ends_when_the_last_clone_is_dropped_and_on_close() {
    let server = support::start_default();
    let client = connect(server.local_addr()).await;
    let clone = client.clone();
    assert_eq!(
        clone
            .call(&ECHO, &Bytes::from_static(b"x"))
            .await
            .expect("call"),
        Bytes::from_static(b"x")
    );
    drop(client);
    // One clone left: the connection stays open.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(counter(&server, "connections_open"), 1);
    drop(clone);
    wait_until("the server to see the connection closed", || {
        counter(&server, "connections_open") == 0
    })
    .await;
    assert_eq!(counter(&server, "closed_peer"), 1);

    let client = connect(server.local_addr()).await;
    client.close().await;
    wait_until("the server to see the closed connection", || {
        counter(&server, "connections_open") == 0
    })
    .await;
    let result = client.call(&ECHO, &Bytes::from_static(b"late")).await;
    assert!(matches!(result, Err(ClientError::Closed)), "{result:?}");
    assert!(matches!(client.ping().await, Err(ClientError::Closed)));
}

// --- GOAWAY, against a scripted fake server ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_answers_calls_up_to_the_last_id_fails_the_rest_and_the_next_call_reconnects() {
    const CALLS: usize = 5;
    let listener = bind();
    let client = connect(listener.local_addr().expect("address")).await;
    let server = thread::spawn(move || {
        let mut a = accept(&listener);
        let requests = read_requests(&mut a, CALLS);
        let mut ids: Vec<u64> = requests.iter().map(|r| r.request_id).collect();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2, 3, 4, 5], "one id per call, from 1");
        let by_id = |id: u64| {
            requests
                .iter()
                .find(|r| r.request_id == id)
                .expect("an id sent")
        };
        send_frames(&mut a, &[echo_response(by_id(2)), echo_response(by_id(1))]);
        send_frames(&mut a, &[goaway(3)]);
        send_frames(&mut a, &[echo_response(by_id(3))]);
        close_and_expect_silence(a);
        let mut b = accept(&listener);
        let on_b = serve_echo_call(&mut b);
        let payloads: Vec<(u64, Bytes)> = requests
            .iter()
            .map(|r| (r.request_id, r.payload.clone()))
            .collect();
        (payloads, on_b.request_id)
    });

    let bodies: Vec<Bytes> = (0..CALLS)
        .map(|i| Bytes::from(format!("call {i}")))
        .collect();
    let results = join_all(bodies.iter().map(|b| client.call(&ECHO, b)).collect()).await;
    assert!(client.is_draining(), "the server sent GOAWAY");
    let (payloads, id_on_b) = {
        let after = Bytes::from_static(b"after the drain");
        let reply = client
            .call(&ECHO, &after)
            .await
            .expect("a new call after GOAWAY goes out on a new connection");
        assert_eq!(reply, after);
        assert!(!client.is_draining(), "the new connection is not draining");
        server.join().expect("fake server")
    };
    for (body, result) in bodies.iter().zip(&results) {
        let id = payloads
            .iter()
            .find(|(_, p)| p == body)
            .map(|(id, _)| *id)
            .expect("every call was sent");
        if id <= 3 {
            assert_eq!(result.as_ref().expect("answered before the close"), body);
        } else {
            assert_unavailable(result, &format!("request {id}, after GOAWAY(3)"));
        }
    }
    assert_eq!(id_on_b, CALLS as u64 + 1, "ids go on across connections");
    assert_eq!(client.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_owed_by_a_draining_connection_are_answered_while_new_calls_use_the_next() {
    let listener = bind();
    let client = connect(listener.local_addr().expect("address")).await;
    let (answer_owed, answer_owed_rx) = std::sync::mpsc::channel::<()>();
    let new_call_served = Arc::new(AtomicUsize::new(0));
    let served = Arc::clone(&new_call_served);
    let server = thread::spawn(move || {
        let mut a = accept(&listener);
        let owed = read_requests(&mut a, 3);
        // Every request is promised an answer, which comes only after the new connection
        // has served a call.
        send_frames(&mut a, &[goaway(3)]);
        let mut b = accept(&listener);
        let on_b = read_requests(&mut b, 1).remove(0);
        // Before the answer, which the client may act on at once.
        served.store(1, Ordering::SeqCst);
        send_frames(&mut b, &[echo_response(&on_b)]);
        answer_owed_rx
            .recv_timeout(support::IO_TIMEOUT)
            .expect("the test's go");
        let answers: Vec<Frame> = owed.iter().rev().map(echo_response).collect();
        send_frames(&mut a, &answers);
        close_and_expect_silence(a);
        // The client keeps connection B until it is dropped.
        let rest = read_until_close(&mut b);
        assert!(rest.is_empty(), "{rest:?}");
        on_b.request_id
    });

    let owed_calls: Vec<_> = (1..=3)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let body = Bytes::from(format!("owed {i}"));
                (client.call(&ECHO, &body).await, body)
            })
        })
        .collect();
    wait_until("the GOAWAY", || client.is_draining()).await;
    let new = Bytes::from_static(b"on the new connection");
    assert_eq!(
        client.call(&ECHO, &new).await.expect("new call"),
        new,
        "served on the new connection while the old one still owes three"
    );
    assert_eq!(new_call_served.load(Ordering::SeqCst), 1);
    answer_owed.send(()).expect("the server waits");
    for call in owed_calls {
        let (result, body) = call.await.expect("task");
        assert_eq!(
            result.expect("answered on the old connection after the switch"),
            body
        );
    }
    drop(client);
    let id_on_b = server.join().expect("fake server");
    assert_eq!(id_on_b, 4, "ids go on across connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_frame_fails_every_waiting_call_and_every_later_one() {
    let listener = bind();
    let client = connect(listener.local_addr().expect("address")).await;
    let server = thread::spawn(move || {
        let mut a = accept(&listener);
        let requests = read_requests(&mut a, 2);
        send_frames(
            &mut a,
            &[Frame::Error {
                request_id: requests[0].request_id,
                code: Code::RESOURCE_EXHAUSTED,
                message: "too much".to_owned(),
            }],
        );
        let _ = read_until_close(&mut a);
        // No reconnection: a broken connection is not a drain.
        assert!(accept_within(&listener, Duration::from_millis(200)).is_none());
    });
    let (one, two) = (Bytes::from_static(b"1"), Bytes::from_static(b"2"));
    let (first, second) = tokio::join!(client.call(&ECHO, &one), client.call(&ECHO, &two));
    for result in [first, second] {
        match result {
            Err(ClientError::Connection(status)) => {
                assert_eq!(status.code, Code::RESOURCE_EXHAUSTED);
            }
            other => panic!("expected the ERROR frame's status, got {other:?}"),
        }
    }
    let later = client.call(&ECHO, &one).await;
    assert!(
        matches!(&later, Err(ClientError::Connection(s)) if s.code == Code::RESOURCE_EXHAUSTED),
        "{later:?}"
    );
    drop(client);
    server.join().expect("fake server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_client_does_not_reconnect_after_a_goaway() {
    let listener = bind();
    let client = connect(listener.local_addr().expect("address")).await;
    let server = thread::spawn(move || {
        let mut a = accept(&listener);
        send_frames(&mut a, &[goaway(0)]);
        // The client closes; it opens no new connection.
        let after = read_until_close(&mut a);
        assert!(after.is_empty(), "{after:?}");
        accept_within(&listener, Duration::from_millis(300)).is_none()
    });
    wait_until("the GOAWAY", || client.is_draining()).await;
    client.close().await;
    let result = client
        .call(&ECHO, &Bytes::from_static(b"after close"))
        .await;
    assert!(matches!(result, Err(ClientError::Closed)), "{result:?}");
    assert!(matches!(client.ping().await, Err(ClientError::Closed)));
    assert!(
        server.join().expect("fake server"),
        "no new connection after close"
    );
}

// --- TLS and a token, against a real server ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_a_token_through_the_async_client() {
    let pki = support::tls::generate(&[]);
    let mut tokens = TokenTable::new();
    tokens.insert_token("svc", b"t0ken-for-svc");
    let builder = Server::builder()
        .tls(pki.server_config(false))
        .authenticator(Arc::new(tokens));
    let server = support::start(builder, support::bundled_router());
    let addr = server.local_addr();

    let client = AsyncClient::builder()
        .connect_timeout(CLIENT_TIMEOUT)
        .read_timeout(CLIENT_TIMEOUT)
        .tls(pki.client_config())
        .token("t0ken-for-svc")
        .connect_async(addr)
        .await
        .expect("connect over TLS with the token");
    assert!(client.is_tls());
    assert_eq!(client.identity().as_deref(), Some("svc"));
    assert_eq!(client.peer_addr(), addr);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let body = Bytes::from(format!("over TLS {i}"));
                assert_eq!(client.call(&ECHO, &body).await.expect("echo"), body);
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    client.ping().await.expect("ping over TLS");
    assert_eq!(counter(&server, "auth_ok"), 1);
    assert_eq!(counter(&server, "tls_handshakes"), 1);
    client.close().await;
    // close_notify, then the close: the server counts a peer's orderly close.
    wait_until("the server to see the close", || {
        counter(&server, "connections_open") == 0
    })
    .await;

    let refused = AsyncClient::builder()
        .connect_timeout(CLIENT_TIMEOUT)
        .tls(pki.client_config())
        .token("not-the-token")
        .connect_async(addr)
        .await;
    match refused {
        Err(ClientError::Auth(status)) => assert_eq!(status.code, Code::UNAUTHENTICATED),
        other => panic!("expected the token refused, got {other:?}"),
    }

    // A TLS client at a plaintext courier port.
    let plain = support::start_default();
    let not_tls = AsyncClient::builder()
        .connect_timeout(CLIENT_TIMEOUT)
        .tls(pki.client_config())
        .connect_async(plain.local_addr())
        .await;
    assert!(
        matches!(not_tls, Err(ClientError::NotTls { .. })),
        "{not_tls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_to_a_closed_port_fails_with_an_io_error() {
    let listener = bind();
    let addr = listener.local_addr().expect("address");
    drop(listener);
    let result = AsyncClient::connect(addr).await;
    match result {
        Err(ClientError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
        other => panic!("expected connection refused, got {other:?}"),
    }
}

// --- backpressure ---

/// The most bytes the kernel can hold for a connection whose server does not read: the
/// client's send buffer and the server's receive buffer at their largest
/// (`net.ipv4.tcp_wmem` and `tcp_rmem`, third figure), or 64 MiB if they cannot be read.
fn kernel_buffers() -> usize {
    let max = |path: &str| -> Option<usize> {
        std::fs::read_to_string(path)
            .ok()?
            .split_whitespace()
            .nth(2)?
            .parse()
            .ok()
    };
    match (
        max("/proc/sys/net/ipv4/tcp_wmem"),
        max("/proc/sys/net/ipv4/tcp_rmem"),
    ) {
        (Some(w), Some(r)) => w + r,
        _ => 64 << 20,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_wait_for_room_while_the_server_does_not_read_and_all_complete_once_it_does() {
    const CALLS: usize = 100;
    const PAYLOAD: usize = 1 << 20;
    let bound = (kernel_buffers() + (1 << 20)) / PAYLOAD + 2;
    assert!(
        bound < CALLS,
        "the kernel's buffers ({} bytes) hold every request of the test",
        kernel_buffers()
    );
    let listener = bind();
    let addr = listener.local_addr().expect("address");
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let server = thread::spawn(move || {
        let mut stream = accept(&listener);
        // Reads nothing until told.
        go_rx.recv().expect("the test goes on");
        for request in read_requests(&mut stream, CALLS) {
            assert_eq!(request.payload.len(), PAYLOAD);
            send_frames(&mut stream, &[echo_response(&request)]);
        }
        // Nothing more comes: not the call that timed out while it waited for room.
        let after = read_until_close(&mut stream);
        assert!(after.is_empty(), "sent after the {CALLS} calls: {after:?}");
    });
    let client = AsyncClient::builder()
        .connect_timeout(CLIENT_TIMEOUT)
        .read_timeout(Duration::from_secs(120))
        .connect_async(addr)
        .await
        .expect("connect");
    let payload = Bytes::from(vec![0x5a; PAYLOAD]);
    let calls: Vec<_> = (0..CALLS)
        .map(|_| {
            let client = client.clone();
            let payload = payload.clone();
            tokio::spawn(async move { client.call(&ECHO, &payload).await })
        })
        .collect();

    // The queue fills, the socket stops taking bytes, and the calls still to queue wait:
    // once the count of calls started stays put for half a second, fewer than all started.
    let mut last = (usize::MAX, Instant::now());
    wait_until("the started calls to stop growing", || {
        let now = client.in_flight();
        if now != last.0 {
            last = (now, Instant::now());
        }
        last.1.elapsed() >= Duration::from_millis(500)
    })
    .await;
    let started = client.in_flight();
    assert!(
        started <= bound,
        "{started} of {CALLS} calls of {PAYLOAD} bytes queued; the queue's 1 MiB and the \
         kernel's buffers hold at most {bound}"
    );
    // A call whose deadline passes while it waits for room fails, and is never sent.
    let options = CallOptions::default().with_deadline(Duration::from_millis(100));
    let result = client.call_with(&ECHO, &payload, &options).await;
    assert!(matches!(result, Err(ClientError::Timeout)), "{result:?}");
    assert_eq!(
        client.in_flight(),
        started,
        "the timed-out call queued nothing"
    );

    // The server reads: every waiting call is woken in turn, sent and answered.
    go.send(()).expect("the server waits");
    for call in calls {
        let body = call.await.expect("the task").expect("the call");
        assert_eq!(body, payload);
    }
    assert_eq!(client.in_flight(), 0);
    client.close().await;
    drop(client);
    tokio::task::spawn_blocking(move || server.join())
        .await
        .expect("join")
        .expect("the server's checks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_deadline_passes_while_it_waits_for_a_reconnection_fails_unsent() {
    let listener = bind();
    let addr = listener.local_addr().expect("address");
    let (done, done_rx) = std::sync::mpsc::channel::<()>();
    let server = thread::spawn(move || {
        // The first connection: AUTH answered, one call answered, then GOAWAY.
        let mut a = accept(&listener);
        let auth = read_requests(&mut a, 1).remove(0);
        assert_eq!((auth.service, auth.method), (0, 2), "AUTH comes first");
        send_frames(
            &mut a,
            &[Frame::Response(Response {
                request_id: auth.request_id,
                code: Code::OK,
                metadata: Metadata::new(),
                payload: Bytes::from_static(b"tester"),
            })],
        );
        let call = serve_echo_call(&mut a);
        send_frames(&mut a, &[goaway(call.request_id)]);
        // The reconnection: its AUTH is read and never answered, so the new connection
        // takes the whole connect timeout (a minute) to fail.
        let mut b = accept(&listener);
        let auth = read_requests(&mut b, 1).remove(0);
        assert_eq!((auth.service, auth.method), (0, 2));
        done_rx.recv().expect("the test ends");
        // Nothing but that AUTH came: the call that gave up was never sent.
        b.shutdown(Shutdown::Write).expect("shut the write side");
        let after = read_until_close(&mut b);
        assert!(after.is_empty(), "sent on the new connection: {after:?}");
        drop(a);
    });
    let client = AsyncClient::builder()
        .connect_timeout(Duration::from_secs(60))
        .read_timeout(CLIENT_TIMEOUT)
        .token("secret")
        .connect_async(addr)
        .await
        .expect("connect");
    let hello = Bytes::from_static(b"hello");
    assert_eq!(client.call(&ECHO, &hello).await.expect("answered"), hello);
    wait_until("the GOAWAY", || client.is_draining()).await;
    let started = Instant::now();
    let options = CallOptions::default().with_deadline(Duration::from_millis(200));
    let result = client.call_with(&ECHO, &hello, &options).await;
    assert!(matches!(result, Err(ClientError::Timeout)), "{result:?}");
    // Its own deadline ended it, not the connect timeout the reconnection waits for.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "ended after {:?}",
        started.elapsed()
    );
    drop(client);
    done.send(()).expect("the server waits");
    tokio::task::spawn_blocking(move || server.join())
        .await
        .expect("join")
        .expect("the server's checks");
}
