//! Authentication and access control over real sockets: AUTH with right, wrong and missing
//! tokens, what an unauthenticated connection may send, PERMISSION_DENIED per method, brute
//! force, protected mode, and the kv server's logs holding no token.

mod support;

use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use courier_rpc::admin::{WhoAmI, AUTH, MAX_TOKEN_LEN, WHOAMI};
use courier_rpc::auth::{hash_token, Acl, IdentitySource, TokenTable};
use courier_rpc::connection::{MAX_AUTH_FAILURES, PRE_AUTH_MAX_BODY};
use courier_rpc::kv;
use courier_rpc::proto::{Code, Frame};
use courier_rpc::server::{RunningServer, Server};
use courier_rpc::service::Message;
use support::kv_process;

const ALICE: &str = "alice-s3cret-token";
const READER: &str = "reader-s3cret-token";

fn hex(hash: [u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// alice may do anything with kv; reader may only GET and read STATS.
fn acl_text() -> String {
    format!(
        "[[identity]]\nname = \"alice\"\ntoken_sha256 = \"{}\"\nallow = [\"kv.*\", \"echo.*\"]\n\n\
         [[identity]]\nname = \"reader\"\ntoken_sha256 = \"{}\"\nallow = [\"kv.GET\", \"admin.Stats\"]\n",
        hex(hash_token(ALICE.as_bytes())),
        hex(hash_token(READER.as_bytes())),
    )
}

fn start_with_acl() -> RunningServer {
    let acl = Acl::from_toml(&acl_text()).expect("valid ACL");
    support::start(
        Server::builder().acl(Arc::new(acl)),
        support::bundled_router(),
    )
}

/// One request, one frame back.
fn call(stream: &mut TcpStream, id: u64, service: u16, method: u16, payload: &[u8]) -> Frame {
    support::send_raw(
        stream,
        &support::encode(&support::request(id, service, method, payload)),
    );
    support::read_frames(stream, 1).remove(0)
}

fn response(frame: Frame) -> (Code, Bytes) {
    match frame {
        Frame::Response(r) => (r.code, r.payload),
        other => panic!("expected a response, got {other:?}"),
    }
}

fn auth(stream: &mut TcpStream, id: u64, token: &str) -> (Code, Bytes) {
    response(call(stream, id, 0, AUTH.method, token.as_bytes()))
}

fn set_payload(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    kv::SetRequest {
        key: Bytes::copy_from_slice(key),
        value: Bytes::copy_from_slice(value),
    }
    .encode(&mut out)
    .expect("encodes");
    out
}

fn whoami(stream: &mut TcpStream, id: u64) -> WhoAmI {
    let (code, payload) = response(call(stream, id, 0, WHOAMI.method, b""));
    assert_eq!(code, Code::OK);
    WhoAmI::decode(payload).expect("WHOAMI answer decodes")
}

#[test]
fn nothing_but_auth_whoami_and_ping_runs_before_authentication() {
    let server = start_with_acl();
    let mut conn = support::raw_connect(server.local_addr());
    let (code, message) = response(call(&mut conn, 1, kv::SERVICE, kv::GET.method, b"k"));
    assert_eq!(code, Code::UNAUTHENTICATED);
    assert!(String::from_utf8_lossy(&message).contains("admin.Auth"));
    // Unknown methods say the same: nothing is learnt before authenticating.
    let (code, _) = response(call(&mut conn, 2, 77, 1, b""));
    assert_eq!(code, Code::UNAUTHENTICATED);
    let (code, _) = response(call(&mut conn, 3, 0, courier_rpc::admin::STATS.method, b""));
    assert_eq!(code, Code::UNAUTHENTICATED);
    assert_eq!(whoami(&mut conn, 4).source(), None);
    support::send_raw(&mut conn, &support::encode(&Frame::Ping(9)));
    assert_eq!(support::read_frames(&mut conn, 1), vec![Frame::Pong(9)]);
    // Then AUTH, and the same GET runs.
    let (code, name) = auth(&mut conn, 5, ALICE);
    assert_eq!((code, &name[..]), (Code::OK, &b"alice"[..]));
    let me = whoami(&mut conn, 6);
    assert_eq!(
        (me.source(), me.name.as_str()),
        (Some(IdentitySource::Token), "alice")
    );
    let (code, _) = response(call(&mut conn, 7, kv::SERVICE, kv::GET.method, b"k"));
    assert_eq!(code, Code::NOT_FOUND);
    assert_eq!(support::counter(&server, "auth_ok"), 1);
    assert_eq!(support::counter(&server, "requests_UNAUTHENTICATED"), 3);
}

#[test]
fn a_wrong_token_is_refused_and_changes_nothing() {
    let server = start_with_acl();
    let mut conn = support::raw_connect(server.local_addr());
    let (code, message) = auth(&mut conn, 1, "not-a-token");
    assert_eq!(code, Code::UNAUTHENTICATED);
    assert_eq!(&message[..], b"invalid token");
    // Empty and over-long tokens are refused the same way.
    let (code, _) = response(call(&mut conn, 2, 0, AUTH.method, b""));
    assert_eq!(code, Code::UNAUTHENTICATED);
    assert_eq!(whoami(&mut conn, 3).source(), None);
    // A good AUTH, then a wrong one: the identity stays.
    let mut other = support::raw_connect(server.local_addr());
    assert_eq!(auth(&mut other, 1, READER).0, Code::OK);
    assert_eq!(
        auth(&mut other, 2, &"x".repeat(MAX_TOKEN_LEN + 1)).0,
        Code::UNAUTHENTICATED
    );
    assert_eq!(whoami(&mut other, 3).name, "reader");
    assert_eq!(support::counter(&server, "auth_failed"), 3);
}

#[test]
fn each_identity_may_call_only_what_the_acl_allows() {
    let server = start_with_acl();
    let mut reader = support::raw_connect(server.local_addr());
    assert_eq!(auth(&mut reader, 1, READER).0, Code::OK);
    let (code, message) = response(call(
        &mut reader,
        2,
        kv::SERVICE,
        kv::SET.method,
        &set_payload(b"k", b"v"),
    ));
    assert_eq!(code, Code::PERMISSION_DENIED);
    assert!(String::from_utf8_lossy(&message).contains("reader may not call kv.Set"));
    let (code, _) = response(call(&mut reader, 3, kv::SERVICE, kv::DELETE.method, b"k"));
    assert_eq!(code, Code::PERMISSION_DENIED);
    let (code, _) = response(call(&mut reader, 4, courier_rpc::echo::SERVICE, 1, b"hi"));
    assert_eq!(code, Code::PERMISSION_DENIED);
    // The refused SET did not happen; alice's does.
    let mut alice = support::raw_connect(server.local_addr());
    assert_eq!(auth(&mut alice, 1, ALICE).0, Code::OK);
    let (code, _) = response(call(&mut reader, 5, kv::SERVICE, kv::GET.method, b"k"));
    assert_eq!(code, Code::NOT_FOUND);
    let (code, _) = response(call(
        &mut alice,
        2,
        kv::SERVICE,
        kv::SET.method,
        &set_payload(b"k", b"v"),
    ));
    assert_eq!(code, Code::OK);
    let (code, value) = response(call(&mut reader, 6, kv::SERVICE, kv::GET.method, b"k"));
    assert_eq!((code, &value[..]), (Code::OK, &b"v"[..]));
    // alice's ACL entry has no admin.*: STATS is refused to her, allowed to reader.
    let (code, _) = response(call(
        &mut alice,
        3,
        0,
        courier_rpc::admin::STATS.method,
        b"",
    ));
    assert_eq!(code, Code::PERMISSION_DENIED);
    let (code, _) = response(call(
        &mut reader,
        7,
        0,
        courier_rpc::admin::STATS.method,
        b"",
    ));
    assert_eq!(code, Code::OK);
    assert_eq!(support::counter(&server, "requests_PERMISSION_DENIED"), 4);
}

#[test]
fn repeated_failed_auths_close_the_connection() {
    let server = start_with_acl();
    let mut conn = support::raw_connect(server.local_addr());
    for id in 1..u64::from(MAX_AUTH_FAILURES) {
        assert_eq!(auth(&mut conn, id, "guess").0, Code::UNAUTHENTICATED);
    }
    let last = u64::from(MAX_AUTH_FAILURES);
    support::send_raw(
        &mut conn,
        &support::encode(&support::request(last, 0, AUTH.method, b"guess")),
    );
    match &support::read_until_close(&mut conn)[..] {
        [Frame::Error {
            request_id, code, ..
        }] => assert_eq!((*request_id, *code), (last, Code::UNAUTHENTICATED)),
        other => panic!("expected one ERROR, got {other:?}"),
    }
    let closed = support::wait_for_counter(&server, "closed_auth_failures", 1);
    assert_eq!(closed, 1);
    // Another connection is not affected.
    let mut next = support::raw_connect(server.local_addr());
    assert_eq!(auth(&mut next, 1, ALICE).0, Code::OK);
}

#[test]
fn unauthenticated_frames_are_limited_to_16_kib() {
    let server = start_with_acl();
    let big = vec![7u8; PRE_AUTH_MAX_BODY as usize + 1];
    let mut anonymous = support::raw_connect(server.local_addr());
    support::send_raw(
        &mut anonymous,
        &support::encode(&support::request(1, courier_rpc::echo::SERVICE, 1, &big)),
    );
    match &support::read_until_close(&mut anonymous)[..] {
        [Frame::Error { code, .. }] => assert_eq!(*code, Code::RESOURCE_EXHAUSTED),
        other => panic!("expected one ERROR, got {other:?}"),
    }
    // Once authenticated, the server's own limit (4 MiB) applies.
    let mut alice = support::raw_connect(server.local_addr());
    assert_eq!(auth(&mut alice, 1, ALICE).0, Code::OK);
    let (code, echoed) = response(call(&mut alice, 2, courier_rpc::echo::SERVICE, 1, &big));
    assert_eq!((code, echoed.len()), (Code::OK, big.len()));
}

#[test]
fn auth_without_an_authenticator_is_a_failed_precondition() {
    let server = support::start_default();
    let mut conn = support::raw_connect(server.local_addr());
    let (code, _) = auth(&mut conn, 1, ALICE);
    assert_eq!(code, Code::FAILED_PRECONDITION);
    // And nothing is required: requests run anonymously.
    let (code, _) = response(call(&mut conn, 2, kv::SERVICE, kv::GET.method, b"k"));
    assert_eq!(code, Code::NOT_FOUND);
}

#[test]
fn a_custom_authenticator_alone_requires_an_identity_and_allows_all() {
    let mut tokens = TokenTable::new();
    tokens.insert_token("svc", b"t0ken");
    let builder = Server::builder().authenticator(Arc::new(tokens));
    let server = support::start(builder, support::bundled_router());
    let mut conn = support::raw_connect(server.local_addr());
    let (code, _) = response(call(&mut conn, 1, kv::SERVICE, kv::GET.method, b"k"));
    assert_eq!(code, Code::UNAUTHENTICATED);
    assert_eq!(auth(&mut conn, 2, "t0ken").0, Code::OK);
    let (code, _) = response(call(&mut conn, 3, kv::SERVICE, kv::GET.method, b"k"));
    assert_eq!(code, Code::NOT_FOUND);
}

#[test]
fn protected_mode_refuses_a_bind_beyond_loopback_without_access_control() {
    // Refused before any socket is bound.
    let err = Server::builder()
        .addr("0.0.0.0:0".parse().expect("address"))
        .bind(support::bundled_router())
        .expect_err("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("--acl"), "{err}");
    // The binary says the same, and exits with an error.
    let out = Command::new(env!("CARGO_BIN_EXE_kv-server"))
        .args(["--addr", "0.0.0.0:0", "--in-memory"])
        .output()
        .expect("run kv-server");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--insecure-no-access-control"), "{stderr}");
    // What these tests may not do (listen beyond loopback with the flag) is checked by the
    // decision's own unit tests in src/server/security.rs.
}

#[test]
fn the_kv_server_logs_no_token() {
    let dir = support::TempDir::new("auth-logs");
    let acl_path = dir.path().join("acl.toml");
    std::fs::write(&acl_path, acl_text()).expect("write ACL");
    let acl_arg = acl_path.to_str().expect("UTF-8 path");
    let mut command = kv_process::Server::command(dir.path(), &["--in-memory", "--acl", acl_arg]);
    command.env("RUST_LOG", "trace");
    let server = kv_process::Server::launch_or_panic(command);
    let mut conn = support::raw_connect(server.addr);
    assert_eq!(
        auth(&mut conn, 1, "wrong-guess-token").0,
        Code::UNAUTHENTICATED
    );
    assert_eq!(auth(&mut conn, 2, ALICE).0, Code::OK);
    for id in 3..=5 {
        support::send_raw(
            &mut conn,
            &support::encode(&support::request(id, 0, AUTH.method, b"wrong-guess-token")),
        );
    }
    let _ = support::read_until_close(&mut conn);
    server
        .wait_for_line("closing", Duration::from_secs(5))
        .expect("the close is logged");
    let stderr = server.stderr_lines().join("\n");
    assert!(stderr.contains("access control: 2 identities"), "{stderr}");
    for secret in [ALICE, "wrong-guess-token"] {
        assert!(!stderr.contains(secret), "a token in the log:\n{stderr}");
    }
    let hash = hex(hash_token(ALICE.as_bytes()));
    assert!(!stderr.contains(&hash), "a token hash in the log");
}
