//! The server over TLS, driven by a bare rustls client (so that every byte the server sends
//! is seen): kv methods, mutual TLS and the identity it gives, the refusals of a missing,
//! foreign or expired client certificate, a plaintext client on the TLS port, and the
//! deadlines that cut a stalled handshake and a stalled record.

mod support;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use courier_rpc::admin::{WhoAmI, WHOAMI};
use courier_rpc::auth::IdentitySource;
use courier_rpc::kv;
use courier_rpc::proto::{Code, Frame};
use courier_rpc::server::{RunningServer, Server, ServerBuilder};
use courier_rpc::service::{Message, Method, Router};
use courier_rpc::tls::ClientTlsConfig;

use support::tls::TestPki;
use support::tls_raw::{call, connect};

/// A handler that answers with the caller's identity, to show it reaches handlers.
const CALLER: Method<(), String> = Method::new(20, 1, "test.Caller");

fn router() -> Router {
    let mut router = support::bundled_router();
    router.register(CALLER, |ctx, ()| {
        Ok(ctx
            .identity
            .as_ref()
            .map_or_else(|| "anonymous".to_string(), |id| id.name().to_string()))
    });
    router
}

fn start_tls(pki: &TestPki, mutual: bool, builder: ServerBuilder) -> RunningServer {
    support::start(builder.tls(pki.server_config(mutual)), router())
}

fn ok_payload(frame: Frame) -> Bytes {
    match frame {
        Frame::Response(r) if r.code == Code::OK => r.payload,
        other => panic!("expected an OK response, got {other:?}"),
    }
}

fn code_of(frame: &Frame) -> Code {
    match frame {
        Frame::Response(r) => r.code,
        other => panic!("expected a response, got {other:?}"),
    }
}

fn encoded(message: &impl Message) -> Vec<u8> {
    let mut out = Vec::new();
    message.encode(&mut out).expect("encodes");
    out
}

#[test]
fn every_kv_method_works_over_tls() {
    let pki = support::tls::generate(&[]);
    let server = start_tls(&pki, false, Server::builder());
    let mut tls = connect(server.local_addr(), &pki.client_config()).expect("handshake");
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"courier/1"[..]));
    let set = kv::SetRequest {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"v over tls"),
    };
    let set = call(&mut tls, 1, kv::SERVICE, kv::SET.method, &encoded(&set)).expect("SET");
    assert_eq!(code_of(&set), Code::OK);
    let got = call(&mut tls, 2, kv::SERVICE, kv::GET.method, b"k").expect("GET");
    assert_eq!(&ok_payload(got)[..], b"v over tls");
    let deleted = call(&mut tls, 3, kv::SERVICE, kv::DELETE.method, b"k").expect("DELETE");
    assert_eq!(code_of(&deleted), Code::OK);
    let gone = call(&mut tls, 4, kv::SERVICE, kv::GET.method, b"k").expect("GET");
    assert_eq!(code_of(&gone), Code::NOT_FOUND);
    // Without a client certificate the connection is anonymous.
    let me = call(&mut tls, 5, 0, WHOAMI.method, b"").expect("WHOAMI");
    let me = WhoAmI::decode(ok_payload(me)).expect("decodes");
    assert_eq!((me.source(), me.name.as_str()), (None, ""));
    assert_eq!(support::counter(&server, "tls_handshakes"), 1);
    // A clean close sends close_notify, which the server counts.
    tls.conn.send_close_notify();
    tls.flush().expect("close_notify");
    assert_eq!(
        support::wait_for_counter(&server, "tls_alerts_received_close_notify", 1),
        1
    );
}

#[test]
fn mutual_tls_gives_the_certificate_subject_as_identity() {
    let pki = support::tls::generate(&["alice"]);
    let server = start_tls(&pki, true, Server::builder());
    let config = pki.client_config_as(pki.client("alice"));
    let mut tls = connect(server.local_addr(), &config).expect("handshake");
    let caller = call(&mut tls, 1, CALLER.service, CALLER.method, b"").expect("call");
    assert_eq!(&ok_payload(caller)[..], b"alice");
    let me = call(&mut tls, 2, 0, WHOAMI.method, b"").expect("WHOAMI");
    let me = WhoAmI::decode(ok_payload(me)).expect("decodes");
    assert_eq!(me.source(), Some(IdentitySource::Certificate));
    assert_eq!(me.name, "alice");
}

/// A refused client: its handshake or its first call fails, with the alert named.
fn refused(addr: SocketAddr, config: &ClientTlsConfig) -> String {
    let result = connect(addr, config).and_then(|mut tls| call(&mut tls, 1, 0, WHOAMI.method, b""));
    match result {
        Ok(frame) => panic!("a refused client was answered: {frame:?}"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn mutual_tls_refuses_no_certificate_a_foreign_one_and_an_expired_one() {
    let pki = support::tls::generate(&["alice"]);
    let server = start_tls(&pki, true, Server::builder());
    let addr = server.local_addr();

    let err = refused(addr, &pki.client_config());
    assert!(err.contains("CertificateRequired"), "{err}");
    assert_eq!(
        support::wait_for_counter(&server, "tls_alerts_sent_certificate_required", 1),
        1
    );

    let stranger = pki.client_config_as(&pki.stranger);
    let err = refused(addr, &stranger);
    assert!(err.contains("UnknownCA"), "{err}");
    assert_eq!(
        support::wait_for_counter(&server, "tls_alerts_sent_unknown_ca", 1),
        1
    );

    let expired = pki.client_config_as(&pki.expired_client);
    let err = refused(addr, &expired);
    assert!(err.contains("CertificateExpired"), "{err}");
    assert_eq!(
        support::wait_for_counter(&server, "tls_alerts_sent_certificate_expired", 1),
        1
    );

    assert_eq!(support::wait_for_counter(&server, "closed_tls", 3), 3);
    assert_eq!(support::counter(&server, "tls_handshakes"), 0);
    // The server goes on serving a good client.
    let good = pki.client_config_as(pki.client("alice"));
    let mut tls = connect(addr, &good).expect("handshake");
    call(&mut tls, 1, 0, WHOAMI.method, b"").expect("answered");
}

#[test]
fn a_plaintext_client_on_the_tls_port_is_told_to_use_tls() {
    let pki = support::tls::generate(&[]);
    let server = start_tls(&pki, false, Server::builder());
    let mut plain = support::raw_connect(server.local_addr());
    support::send_raw(&mut plain, &support::echo_request(1, b"hello"));
    let frames = support::read_until_close(&mut plain);
    match &frames[..] {
        [Frame::Error { code, message, .. }] => {
            assert_eq!(*code, Code::INVALID_ARGUMENT);
            assert!(message.contains("requires TLS"), "{message}");
        }
        other => panic!("expected one ERROR frame, got {other:?}"),
    }
    assert_eq!(support::wait_for_counter(&server, "closed_not_tls", 1), 1);
}

#[test]
fn a_stalled_handshake_is_cut_at_the_frame_timeout() {
    let pki = support::tls::generate(&[]);
    let builder = Server::builder().frame_timeout(Duration::from_millis(300));
    let server = start_tls(&pki, false, builder);
    // One says nothing at all; one sends half a ClientHello and stops.
    let mut silent = support::raw_connect(server.local_addr());
    let mut half = support::raw_connect(server.local_addr());
    let hello = support::tls_client_hello();
    support::send_raw(&mut half, &hello[..hello.len() / 2]);
    for stream in [&mut silent, &mut half] {
        let mut buf = [0u8; 64];
        // Closed by the server: end of stream (or a reset), never a timeout of ours.
        match stream.read(&mut buf) {
            Ok(0) => {}
            Err(err) if err.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!("expected the server to close, got {other:?}"),
        }
    }
    assert_eq!(
        support::wait_for_counter(&server, "closed_handshake_timeout", 2),
        2
    );
}

#[test]
fn a_stalled_record_after_the_handshake_is_cut_at_the_frame_timeout() {
    let pki = support::tls::generate(&[]);
    let builder = Server::builder().frame_timeout(Duration::from_millis(300));
    let server = start_tls(&pki, false, builder);
    let mut tls = connect(server.local_addr(), &pki.client_config()).expect("handshake");
    call(&mut tls, 1, 0, WHOAMI.method, b"").expect("answered");
    // The header of a 100-byte application-data record, and 10 of its bytes.
    let mut partial = vec![23, 3, 3, 0, 100];
    partial.extend_from_slice(&[0; 10]);
    tls.sock.write_all(&partial).expect("write");
    let mut buf = [0u8; 64];
    match tls.sock.read(&mut buf) {
        Ok(0) => {}
        Err(err) if err.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the server to close, got {other:?}"),
    }
    assert_eq!(
        support::wait_for_counter(&server, "closed_frame_timeout", 1),
        1
    );
}

#[test]
fn a_tls_stream_cut_without_close_notify_is_a_transport_failure() {
    let pki = support::tls::generate(&[]);
    let server = start_tls(&pki, false, Server::builder());
    let addr = server.local_addr();
    // An orderly end: close_notify, then the end of the stream.
    let mut orderly = connect(addr, &pki.client_config()).expect("handshake");
    call(&mut orderly, 1, 0, WHOAMI.method, b"").expect("answered");
    orderly.conn.send_close_notify();
    orderly.flush().expect("close_notify");
    orderly
        .sock
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    assert_eq!(support::wait_for_counter(&server, "closed_peer", 1), 1);
    // A cut one: the socket ends with no close_notify (a truncation, RFC 8446 Section 6.1).
    let mut cut = connect(addr, &pki.client_config()).expect("handshake");
    call(&mut cut, 1, 0, WHOAMI.method, b"").expect("answered");
    cut.sock
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    assert_eq!(support::wait_for_counter(&server, "closed_io", 1), 1);
    assert_eq!(support::counter(&server, "closed_peer"), 1);
}
