//! The frames the server sends in the situations `proto-spec/PROTOCOL.md` specifies are, byte
//! for byte, the test vectors that show them (`proto-spec/vectors/frames.json`): a drain
//! before any request (GOAWAY naming 0), a PONG flood (ERROR naming the PONG), a request with
//! the reserved id 0, a request dispatched after its deadline, a response over the body
//! limit, AUTH and WHOAMI and the access-control refusals, reflection (METHODS), and a TLS port's answer to a
//! plaintext client. Over real sockets.

mod support;

use std::thread;
use std::time::Duration;

use bytes::Bytes;
use courier_rpc::proto::{Frame, Metadata, Request};
use courier_rpc::server::Server;
use courier_rpc::service::{Method, Router};
use serde_json::Value;
use support::{
    bundled_router, encode, raw_connect, read_frames, read_until_close, send_raw, start,
};

const VECTORS_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/proto-spec/vectors/frames.json"
);

/// The bytes of the vector named `name`.
fn vector(name: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(VECTORS_PATH).expect("read frames.json");
    let doc: Value = serde_json::from_str(&text).expect("frames.json is JSON");
    let hex = doc["vectors"]
        .as_array()
        .expect("a vector list")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no vector {name}"))["hex"]
        .as_str()
        .expect("hex")
        .to_owned();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digits"))
        .collect()
}

fn assert_sent(frame: &Frame, name: &str) {
    let sent = encode(frame).to_vec();
    assert_eq!(
        sent,
        vector(name),
        "the server's frame is the vector {name}: {frame:?}"
    );
}

#[test]
fn a_drain_before_any_request_names_request_id_zero() {
    let server = start(Server::builder(), bundled_router());
    let mut stream = raw_connect(server.local_addr());
    // A PING answered: the connection is served before the drain begins.
    send_raw(&mut stream, &encode(&Frame::Ping(1)));
    assert_eq!(read_frames(&mut stream, 1), [Frame::Pong(1)]);
    server.handle().drain(Duration::from_secs(5));
    let frames = read_until_close(&mut stream);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_sent(&frames[0], "goaway_none_processed");
}

#[test]
fn a_pong_flood_is_answered_with_an_error_naming_the_pong() {
    let server = start(Server::builder(), bundled_router());
    let mut stream = raw_connect(server.local_addr());
    let mut wire = Vec::new();
    for id in 0..101u64 {
        wire.extend_from_slice(&encode(&Frame::Pong(id)));
    }
    send_raw(&mut stream, &wire);
    let frames = read_until_close(&mut stream);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_sent(&frames[0], "error_flood_names_the_pong");
}

#[test]
fn request_id_zero_and_an_expired_deadline_are_answered_as_their_vectors() {
    /// Sleeps 200 ms on a worker.
    const SLOW: Method<Bytes, Bytes> = Method::new(50, 1, "test.Slow");
    let mut router = bundled_router();
    router.register_blocking(SLOW, |_ctx, body: Bytes| {
        thread::sleep(Duration::from_millis(200));
        Ok(body)
    });
    let server = start(Server::builder().max_in_flight(1), router);
    let mut stream = raw_connect(server.local_addr());
    let request = |id, service, method, deadline_ms| {
        encode(&Frame::Request(Request {
            request_id: id,
            service,
            method,
            deadline_ms,
            metadata: Metadata::new(),
            payload: Bytes::from_static(b"x"),
        }))
    };
    let mut wire = request(0, 1, 1, 0);
    wire.extend_from_slice(&request(1, SLOW.service, SLOW.method, 0));
    // Held back behind the slow call (the in-flight limit is 1) past its 100 ms.
    wire.extend_from_slice(&request(24, 1, 1, 100));
    send_raw(&mut stream, &wire);
    let frames = read_frames(&mut stream, 3);
    assert_sent(&frames[0], "response_request_id_zero_refused");
    assert!(matches!(&frames[1], Frame::Response(r) if r.request_id == 1 && r.code.is_ok()));
    assert_sent(&frames[2], "response_deadline_exceeded_at_dispatch");
}

#[test]
fn a_response_over_the_body_limit_is_answered_resource_exhausted() {
    /// Answers with 5,000 bytes, over the server's 4,096-byte limit.
    const BIG: Method<Bytes, Bytes> = Method::new(50, 2, "test.Big");
    let mut router = Router::new();
    router.register(BIG, |_ctx, _body: Bytes| Ok(Bytes::from(vec![7u8; 5000])));
    let server = start(Server::builder().max_body_len(4096), router);
    let mut stream = raw_connect(server.local_addr());
    send_raw(
        &mut stream,
        &encode(&support::request(25, BIG.service, BIG.method, b"")),
    );
    let frames = read_frames(&mut stream, 1);
    assert_sent(&frames[0], "response_too_large");
}

/// An ACL with one identity, "alice", whose token is the vectors' "s3cret-token", allowed
/// the kv service only.
fn alice_acl() -> std::sync::Arc<courier_rpc::auth::Acl> {
    let hash: String = courier_rpc::auth::hash_token(b"s3cret-token")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let text =
        format!("[[identity]]\nname = \"alice\"\ntoken_sha256 = \"{hash}\"\nallow = [\"kv.*\"]\n");
    std::sync::Arc::new(courier_rpc::auth::Acl::from_toml(&text).expect("valid ACL"))
}

fn echo(request_id: u64) -> Frame {
    Frame::Request(Request {
        request_id,
        service: courier_rpc::echo::SERVICE,
        method: courier_rpc::echo::ECHO.method,
        deadline_ms: 0,
        metadata: Metadata::new(),
        payload: Bytes::from_static(b"hi"),
    })
}

#[test]
fn auth_whoami_and_access_control_answer_as_their_vectors() {
    let server = start(Server::builder().acl(alice_acl()), bundled_router());
    let mut stream = raw_connect(server.local_addr());
    // Before AUTH: anonymous, and anything else is refused.
    send_raw(&mut stream, &vector("request_admin_whoami"));
    assert_sent(
        &read_frames(&mut stream, 1)[0],
        "response_admin_whoami_anonymous",
    );
    send_raw(&mut stream, &encode(&echo(1)));
    assert_sent(
        &read_frames(&mut stream, 1)[0],
        "response_unauthenticated_before_auth",
    );
    // AUTH with the vector's token, then WHOAMI names alice.
    send_raw(&mut stream, &vector("request_admin_auth"));
    assert_sent(&read_frames(&mut stream, 1)[0], "response_admin_auth_ok");
    send_raw(&mut stream, &vector("request_admin_whoami"));
    assert_sent(
        &read_frames(&mut stream, 1)[0],
        "response_admin_whoami_token",
    );
    // alice may not call echo.
    send_raw(&mut stream, &encode(&echo(3)));
    assert_sent(
        &read_frames(&mut stream, 1)[0],
        "response_permission_denied",
    );
}

#[test]
fn reflection_lists_an_echo_servers_methods_as_its_vector() {
    let mut router = Router::new();
    courier_rpc::echo::register(&mut router);
    let server = start(Server::builder(), router);
    let mut stream = raw_connect(server.local_addr());
    send_raw(&mut stream, &vector("request_admin_methods"));
    assert_sent(
        &read_frames(&mut stream, 1)[0],
        "response_admin_methods_echo_server",
    );
}

#[test]
fn failed_auths_answer_as_their_vectors() {
    let server = start(Server::builder().acl(alice_acl()), bundled_router());
    let mut stream = raw_connect(server.local_addr());
    let wrong = |id: u64| {
        encode(&Frame::Request(Request {
            request_id: id,
            service: courier_rpc::admin::SERVICE,
            method: courier_rpc::admin::AUTH.method,
            deadline_ms: 0,
            metadata: Metadata::new(),
            payload: Bytes::from_static(b"wrong"),
        }))
    };
    send_raw(&mut stream, &wrong(1));
    assert_sent(
        &read_frames(&mut stream, 1)[0],
        "response_admin_auth_invalid_token",
    );
    send_raw(&mut stream, &wrong(2));
    read_frames(&mut stream, 1);
    send_raw(&mut stream, &wrong(3));
    let frames = read_until_close(&mut stream);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_sent(&frames[0], "error_admin_auth_third_failure");
    // A server with no authenticator.
    let open = start(Server::builder(), bundled_router());
    let mut stream = raw_connect(open.local_addr());
    send_raw(&mut stream, &vector("request_admin_auth"));
    assert_sent(
        &read_frames(&mut stream, 1)[0],
        "response_admin_auth_not_enabled",
    );
}

#[test]
fn a_tls_port_answers_a_plaintext_client_as_its_vector() {
    let pki = support::tls::generate(&[]);
    let server = start(
        Server::builder().tls(pki.server_config(false)),
        bundled_router(),
    );
    let mut stream = raw_connect(server.local_addr());
    send_raw(&mut stream, &vector("request_admin_whoami"));
    let frames = read_until_close(&mut stream);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_sent(&frames[0], "error_tls_required");
}
