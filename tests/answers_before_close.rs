//! Every request before the frame that ends a connection is answered before the close, over
//! real sockets: SETs and DELETEs whose answers wait for the kv log's group commit, a GET and
//! an ECHO, followed in the same write by the client's GOAWAY, the client's ERROR, a frame that
//! is a connection error (a RESPONSE, or bytes that are no frame), under every fsync policy and
//! in memory (`proto-spec/PROTOCOL.md` Sections 9.1 and 9.4). After a connection error the
//! server's ERROR comes last. The writes are applied and survive a restart of the log.

mod support;

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use courier_rpc::echo;
use courier_rpc::kv::log::{FsyncPolicy, Log};
use courier_rpc::kv::{self, Store};
use courier_rpc::proto::{Code, Frame, Response};
use courier_rpc::server::Server;
use courier_rpc::service::Router;
use support::{encode, raw_connect, read_until_close, request, send_raw, start, TempDir};

/// Where the kv service keeps its data in one case.
#[derive(Clone, Copy, Debug)]
enum Storage {
    Log(FsyncPolicy),
    InMemory,
}

/// How the client ends the connection after its requests.
#[derive(Clone, Copy, Debug)]
enum Ending {
    GoAway,
    Error,
    /// A RESPONSE, which a server never receives (Section 9.4): a connection error.
    Response,
    /// Bytes that are no frame (bad magic): a connection error.
    Garbage,
}

fn set_payload(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut payload = BytesMut::new();
    payload.put_u16(key.len() as u16);
    payload.put_slice(key);
    payload.put_slice(value);
    payload.to_vec()
}

fn ending_bytes(ending: Ending) -> BytesMut {
    match ending {
        Ending::GoAway => encode(&Frame::GoAway {
            last_request_id: 0,
            code: Code::OK,
            message: "client done".into(),
        }),
        Ending::Error => encode(&Frame::Error {
            request_id: 0,
            code: Code::CANCELLED,
            message: "client gives up".into(),
        }),
        Ending::Response => encode(&Frame::Response(Response {
            request_id: 77,
            code: Code::OK,
            metadata: Default::default(),
            payload: Bytes::new(),
        })),
        Ending::Garbage => BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]),
    }
}

fn router(store: &Arc<Store>, log: Option<&Arc<Log>>) -> Router {
    let mut router = Router::new();
    echo::register(&mut router);
    match log {
        Some(log) => kv::register_logged(&mut router, Arc::clone(store), Arc::clone(log)),
        None => kv::register(&mut router, Arc::clone(store)),
    }
    router
}

fn open_log(dir: &TempDir, fsync: FsyncPolicy) -> (Arc<Store>, Arc<Log>) {
    support::open_kv_log(dir.path(), fsync)
}

/// One case: `old` is stored first; then, in one write, SET a, SET b, DELETE old, GET a, ECHO
/// and the ending. Returns what the server sent before it closed.
fn run_case(storage: Storage, ending: Ending, loops: usize) -> Vec<Frame> {
    let dir = TempDir::new("answers-before-close");
    let (store, log) = match storage {
        Storage::Log(fsync) => {
            let (store, log) = open_log(&dir, fsync);
            (store, Some(log))
        }
        Storage::InMemory => (Arc::new(Store::new()), None),
    };
    let server = start(Server::builder().loops(loops), router(&store, log.as_ref()));
    {
        let mut client =
            courier_rpc::client::Client::connect(server.local_addr()).expect("connect");
        client
            .call(
                &kv::SET,
                &kv::SetRequest {
                    key: Bytes::from_static(b"old"),
                    value: Bytes::from_static(b"to be deleted"),
                },
            )
            .expect("SET old");
    }
    let mut stream = raw_connect(server.local_addr());
    let mut wire = BytesMut::new();
    let (kv_service, set, get, delete) = (
        kv::SERVICE,
        kv::SET.method,
        kv::GET.method,
        kv::DELETE.method,
    );
    for frame in [
        request(1, kv_service, set, &set_payload(b"a", b"alpha")),
        request(2, kv_service, set, &set_payload(b"b", b"beta")),
        request(3, kv_service, delete, b"old"),
        request(4, kv_service, get, b"a"),
        request(5, echo::ECHO.service, echo::ECHO.method, b"echo"),
    ] {
        wire.extend_from_slice(&encode(&frame));
    }
    wire.extend_from_slice(&ending_bytes(ending));
    // A request after the ending frame is not read, and not answered.
    wire.extend_from_slice(&encode(&request(
        6,
        kv_service,
        set,
        &set_payload(b"c", b"late"),
    )));
    send_raw(&mut stream, &wire);
    let frames = read_until_close(&mut stream);
    drop(server);
    let context = format!("{storage:?}, {ending:?}, {loops} loop(s)");
    assert_eq!(store.get(b"a").as_deref(), Some(&b"alpha"[..]), "{context}");
    assert_eq!(store.get(b"old"), None, "{context}");
    assert_eq!(store.get(b"c"), None, "{context}: after the ending frame");
    if let Some(log) = log {
        log.close().expect("close the log");
        drop(log);
        drop(store);
        let Storage::Log(fsync) = storage else {
            unreachable!("a log is opened only for Storage::Log")
        };
        let (again, log) = open_log(&dir, fsync);
        assert_eq!(
            again.get(b"a").as_deref(),
            Some(&b"alpha"[..]),
            "{context}: replayed"
        );
        assert_eq!(
            again.get(b"b").as_deref(),
            Some(&b"beta"[..]),
            "{context}: replayed"
        );
        assert_eq!(
            again.get(b"old"),
            None,
            "{context}: the DELETE was replayed"
        );
        log.close().expect("close the log");
    }
    frames
}

/// Asserts that every one of requests 1 to 5 got its answer, and returns the frames that are
/// not answers.
fn check_answers(frames: &[Frame], context: &str) -> Vec<Frame> {
    let mut others = Vec::new();
    let mut answers = Vec::new();
    for frame in frames {
        match frame {
            Frame::Response(r) => answers.push(r.clone()),
            other => others.push(other.clone()),
        }
    }
    answers.sort_by_key(|r| r.request_id);
    let got: Vec<(u64, Code, &[u8])> = answers
        .iter()
        .map(|r| (r.request_id, r.code, &r.payload[..]))
        .collect();
    assert_eq!(
        got,
        [
            (1, Code::OK, &b""[..]),
            (2, Code::OK, &b""[..]),
            (3, Code::OK, &b"\x01"[..]),
            (4, Code::OK, &b"alpha"[..]),
            (5, Code::OK, &b"echo"[..]),
        ],
        "{context}: every request before the ending frame is answered"
    );
    others
}

const STORAGES: [Storage; 4] = [
    Storage::Log(FsyncPolicy::Always),
    Storage::Log(FsyncPolicy::EverySec),
    Storage::Log(FsyncPolicy::Never),
    Storage::InMemory,
];

#[test]
fn a_client_goaway_after_writes_gets_every_answer_then_the_close() {
    for storage in STORAGES {
        for loops in [1, 2] {
            let frames = run_case(storage, Ending::GoAway, loops);
            let others = check_answers(&frames, &format!("{storage:?} GOAWAY"));
            assert!(
                others.is_empty(),
                "{storage:?}: nothing but answers: {others:?}"
            );
        }
    }
}

#[test]
fn a_client_error_after_writes_gets_every_answer_then_the_close() {
    for storage in STORAGES {
        let frames = run_case(storage, Ending::Error, 1);
        let others = check_answers(&frames, &format!("{storage:?} ERROR"));
        assert!(
            others.is_empty(),
            "{storage:?}: nothing but answers: {others:?}"
        );
    }
}

#[test]
fn a_connection_error_after_writes_gets_every_answer_then_the_error_last() {
    for storage in STORAGES {
        for (ending, id) in [(Ending::Response, 77), (Ending::Garbage, 0)] {
            let frames = run_case(storage, ending, 1);
            let context = format!("{storage:?} {ending:?}");
            let others = check_answers(&frames, &context);
            assert!(
                matches!(
                    &others[..],
                    [Frame::Error { request_id, code: Code::INVALID_ARGUMENT, .. }] if *request_id == id
                ),
                "{context}: one ERROR: {others:?}"
            );
            assert!(
                matches!(frames.last(), Some(Frame::Error { .. })),
                "{context}: the ERROR is the last frame: {frames:?}"
            );
        }
    }
}
