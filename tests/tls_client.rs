//! The blocking client over TLS against small rustls servers on threads, and the test
//! certificates of `support::tls`.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use courier_rpc::client::{CallOptions, Client, ClientError};
use courier_rpc::echo::ECHO;
use courier_rpc::proto::{
    Code, Decoder, Encoder, Frame, FrameKind, Metadata, DEFAULT_MAX_BODY_LEN,
};
use courier_rpc::tls::{ClientTlsConfig, ServerTlsConfig, ALPN};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Connection, ServerConnection, StreamOwned};
use support::tls::{generate, TestPki, EXPIRED_CN, STRANGER_CN};
use support::IO_TIMEOUT;

/// Moves TLS records between two in-memory ends until both finish the handshake; the error
/// is the side that failed and its rustls error.
fn handshake_in_memory(client: &ClientTlsConfig, server: &ServerTlsConfig) -> Result<(), String> {
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let mut c = Connection::Client(
        ClientConnection::new(Arc::clone(client.rustls()), name).expect("client"),
    );
    let mut s =
        Connection::Server(ServerConnection::new(Arc::clone(server.rustls())).expect("server"));
    for _ in 0..20 {
        transfer(&mut c, &mut s).map_err(|e| format!("server: {e:?}"))?;
        transfer(&mut s, &mut c).map_err(|e| format!("client: {e:?}"))?;
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok(());
        }
    }
    Err("handshake did not finish".to_owned())
}

fn transfer(from: &mut Connection, to: &mut Connection) -> Result<(), rustls::Error> {
    let mut bytes = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut bytes).expect("write_tls to a Vec");
    }
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        to.read_tls(&mut rest).expect("read_tls from a slice");
        to.process_new_packets()?;
    }
    Ok(())
}

#[test]
fn test_certificates_verify_as_they_say() {
    let pki = generate(&["alice", "bob"]);
    assert_eq!(pki.client("bob").name, "bob");
    for file in [&pki.ca, &pki.other_ca, &pki.server.cert, &pki.server.key] {
        assert_eq!(std::fs::read(&file.path).expect("read"), file.pem);
    }
    let mtls = pki.server_config(true);
    handshake_in_memory(&pki.client_config_as(pki.client("alice")), &mtls).expect("alice");
    handshake_in_memory(&pki.client_config(), &pki.server_config(false)).expect("no client cert");

    let err = handshake_in_memory(&pki.client_config(), &mtls).expect_err("no certificate");
    assert!(err.contains("NoCertificatesPresented"), "{err}");
    assert_eq!(pki.expired_client.name, EXPIRED_CN);
    let err = handshake_in_memory(&pki.client_config_as(&pki.expired_client), &mtls)
        .expect_err("expired client");
    assert!(
        err.starts_with("server:") && err.contains("Expired"),
        "{err}"
    );
    assert_eq!(pki.stranger.name, STRANGER_CN);
    let err =
        handshake_in_memory(&pki.client_config_as(&pki.stranger), &mtls).expect_err("other CA");
    assert!(
        err.starts_with("server:") && err.contains("UnknownIssuer"),
        "{err}"
    );

    let expired = ServerTlsConfig::from_pem(
        &pki.expired_server.cert.pem,
        &pki.expired_server.key.pem,
        None,
    )
    .expect("config");
    let err = handshake_in_memory(&pki.client_config(), &expired).expect_err("expired server");
    assert!(
        err.starts_with("client:") && err.contains("Expired"),
        "{err}"
    );
    let other = ServerTlsConfig::from_pem_files(
        &pki.other_server.cert.path,
        &pki.other_server.key.path,
        None,
    )
    .expect("config");
    let err = handshake_in_memory(&pki.client_config(), &other).expect_err("other CA");
    assert!(
        err.starts_with("client:") && err.contains("UnknownIssuer"),
        "{err}"
    );
    let trusting_other = ClientTlsConfig::builder()
        .ca_pem(&pki.other_ca.pem)
        .build()
        .expect("config");
    handshake_in_memory(&trusting_other, &other).expect("other CA trusted");

    let mut subject = rcgen::DistinguishedName::new();
    subject.push(rcgen::DnType::OrganizationName, "courier tests");
    let no_cn = pki.client_with_subject("no-cn", subject);
    handshake_in_memory(&pki.client_config_as(&no_cn), &mtls).expect("no CN is still valid");
    let dir = pki.dir().to_owned();
    assert!(dir.join("no-cn.pem").exists());
    drop(pki);
    assert!(!dir.exists(), "removed on drop");
}

/// The token the fake servers know, and the name it proves.
const TOKEN: &[u8] = b"s3cret-token";
const TOKEN_NAME: &str = "alice";

/// What a fake TLS server does after its first echo on a connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    /// Keeps serving.
    Serve,
    /// Sends GOAWAY (last request id: that echo's), close_notify, and closes.
    GoAway,
}

/// What one connection of a fake TLS server saw.
#[derive(Debug, Default)]
struct Seen {
    /// (service, method, payload) of each REQUEST, in order.
    requests: Vec<(u16, u16, Vec<u8>)>,
    /// The negotiated ALPN protocol.
    alpn: Option<Vec<u8>>,
    /// Whether the client certificate was presented.
    client_certificate: bool,
    /// Whether the client ended with close_notify (a clean TLS end of stream).
    close_notify: bool,
}

/// A courier server over rustls on a thread: serves `connections` connections, one after
/// the other, answering admin AUTH (TOKEN proves TOKEN_NAME, anything else is
/// UNAUTHENTICATED) and echo. The handle gives each connection's record, or the error that
/// ended it.
fn tls_server(
    config: Arc<rustls::ServerConfig>,
    connections: usize,
    after: After,
) -> (SocketAddr, JoinHandle<Vec<Result<Seen, String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handle = std::thread::spawn(move || {
        (0..connections)
            .map(|_| {
                let stream = support::accept_within(&listener, IO_TIMEOUT)
                    .ok_or_else(|| "no connection came".to_owned())?;
                serve_tls(stream, Arc::clone(&config), after)
            })
            .collect()
    });
    (addr, handle)
}

fn serve_tls(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    after: After,
) -> Result<Seen, String> {
    let conn = ServerConnection::new(config).map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(conn, stream);
    let mut seen = Seen::default();
    let mut decoder = Decoder::new(DEFAULT_MAX_BODY_LEN);
    let encoder = Encoder::new(DEFAULT_MAX_BODY_LEN);
    let mut input = BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match tls.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(seen),
            Err(e) => return Err(format!("{e:?}")),
        };
        if seen.alpn.is_none() {
            seen.alpn = tls.conn.alpn_protocol().map(<[u8]>::to_vec);
            seen.client_certificate = tls.conn.peer_certificates().is_some();
        }
        if n == 0 {
            seen.close_notify = true;
            return Ok(seen);
        }
        input.extend_from_slice(&chunk[..n]);
        while let Some(frame) = decoder.decode(&mut input).map_err(|e| e.to_string())? {
            let request = match frame {
                Frame::Request(request) => request,
                Frame::Ping(id) => {
                    let mut out = BytesMut::new();
                    encoder.encode_simple(&mut out, FrameKind::Pong, id, Code::OK, "");
                    tls.write_all(&out).map_err(|e| e.to_string())?;
                    continue;
                }
                other => return Err(format!("unexpected {other:?}")),
            };
            seen.requests
                .push((request.service, request.method, request.payload.to_vec()));
            let mut out = BytesMut::new();
            let id = request.request_id;
            let mut end = false;
            if (request.service, request.method) == (0, 2) {
                if request.payload == TOKEN {
                    respond(&encoder, &mut out, id, TOKEN_NAME.as_bytes());
                } else {
                    encoder.encode_status(&mut out, id, Code::UNAUTHENTICATED, "invalid token");
                }
            } else {
                respond(&encoder, &mut out, id, &request.payload);
                if after == After::GoAway {
                    encoder.encode_simple(&mut out, FrameKind::GoAway, id, Code::OK, "draining");
                    end = true;
                }
            }
            tls.write_all(&out).map_err(|e| e.to_string())?;
            tls.flush().map_err(|e| e.to_string())?;
            if end {
                tls.conn.send_close_notify();
                tls.flush().map_err(|e| e.to_string())?;
                return Ok(seen);
            }
        }
    }
}

/// The record of the one connection a [`tls_server`] of one connection served.
fn served_once(server: JoinHandle<Vec<Result<Seen, String>>>) -> Seen {
    server
        .join()
        .expect("server thread")
        .pop()
        .expect("one")
        .expect("served")
}

fn respond(encoder: &Encoder, out: &mut BytesMut, id: u64, payload: &[u8]) {
    encoder
        .encode_response_with(out, id, Code::OK, &Metadata::new(), |o| {
            o.extend_from_slice(payload)
        })
        .expect("encode a response");
}

fn builder() -> courier_rpc::client::ClientBuilder {
    Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(IO_TIMEOUT)
}

fn echo(client: &mut Client, text: &'static str) -> Result<Bytes, ClientError> {
    client.call(&ECHO, &Bytes::from_static(text.as_bytes()))
}

fn server_config(pki: &TestPki, mtls: bool) -> Arc<rustls::ServerConfig> {
    Arc::clone(pki.server_config(mtls).rustls())
}

#[test]
fn calls_go_through_tls_and_close_sends_close_notify() {
    let pki = generate(&[]);
    let (addr, server) = tls_server(server_config(&pki, false), 1, After::Serve);
    let mut client = builder()
        .tls(pki.client_config())
        .connect(addr)
        .expect("connect");
    assert!(client.is_tls());
    assert_eq!(client.identity(), None);
    assert_eq!(echo(&mut client, "hello").expect("echo"), "hello");
    // A frame larger than a TLS record (16 KiB) and than one read.
    let big = Bytes::from(vec![7u8; 300_000]);
    assert_eq!(client.call(&ECHO, &big).expect("big echo"), big);
    let pending: Vec<_> = (0..50)
        .map(|i| {
            client
                .send(&ECHO, &Bytes::from(format!("p{i}")))
                .expect("send")
        })
        .collect();
    for (i, p) in pending.into_iter().enumerate() {
        assert_eq!(client.wait(p).expect("wait"), Bytes::from(format!("p{i}")));
    }
    client.ping().expect("ping");
    client.close();
    let seen = served_once(server);
    assert_eq!(seen.alpn.as_deref(), Some(ALPN));
    assert!(!seen.client_certificate);
    assert!(
        seen.requests.iter().all(|r| (r.0, r.1) == (1, 1)),
        "no AUTH without a token"
    );
    assert!(seen.close_notify, "Client::close sends close_notify");
}

#[test]
fn a_dropped_client_sends_close_notify_too() {
    let pki = generate(&[]);
    let (addr, server) = tls_server(server_config(&pki, false), 1, After::Serve);
    let mut client = builder()
        .tls(pki.client_config())
        .connect(addr)
        .expect("connect");
    assert_eq!(echo(&mut client, "hello").expect("echo"), "hello");
    drop(client);
    let seen = served_once(server);
    assert!(seen.close_notify, "dropping the client sends close_notify");
}

#[test]
fn a_token_is_sent_with_auth_first_on_every_connection_also_after_goaway() {
    let pki = generate(&["alice"]);
    let (addr, server) = tls_server(server_config(&pki, true), 2, After::GoAway);
    let tls = pki.client_config_as(pki.client("alice"));
    let mut client = builder()
        .tls(tls)
        .token(TOKEN)
        .connect(addr)
        .expect("connect");
    assert_eq!(client.identity(), Some(TOKEN_NAME));
    assert_eq!(echo(&mut client, "one").expect("first"), "one");
    // The server sent GOAWAY and closed: this call goes out on a new connection, after AUTH.
    assert_eq!(echo(&mut client, "two").expect("after GOAWAY"), "two");
    assert_eq!(client.identity(), Some(TOKEN_NAME));
    assert!(client.is_tls());
    drop(client);
    let seen = server.join().expect("server thread");
    assert_eq!(seen.len(), 2);
    for (conn, (seen, payload)) in seen.into_iter().zip(["one", "two"]).enumerate() {
        let seen = seen.unwrap_or_else(|e| panic!("connection {conn}: {e}"));
        assert!(seen.client_certificate, "connection {conn}");
        let expected = vec![(0, 2, TOKEN.to_vec()), (1, 1, payload.as_bytes().to_vec())];
        assert_eq!(seen.requests, expected, "connection {conn}: AUTH first");
    }
}

#[test]
fn a_refused_token_fails_connect() {
    let pki = generate(&[]);
    let (addr, server) = tls_server(server_config(&pki, false), 1, After::Serve);
    let err = builder()
        .tls(pki.client_config())
        .token("wrong")
        .connect(addr)
        .expect_err("refused");
    match &err {
        ClientError::Auth(status) => {
            assert_eq!(status.code, Code::UNAUTHENTICATED);
            assert_eq!(status.message, "invalid token");
        }
        other => panic!("expected Auth, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "authentication refused: UNAUTHENTICATED: invalid token"
    );
    assert_eq!(err.status().map(|s| s.code), Some(Code::UNAUTHENTICATED));
    let seen = served_once(server);
    assert_eq!(seen.requests, vec![(0, 2, b"wrong".to_vec())]);
    assert!(
        seen.close_notify,
        "a failed connect closes with close_notify"
    );
}

#[test]
fn a_plaintext_courier_server_is_named_as_such() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let mut stream = support::accept_within(&listener, IO_TIMEOUT).expect("a client");
        let mut hello = [0u8; 5];
        stream
            .read_exact(&mut hello)
            .expect("the ClientHello's record header");
        let mut out = BytesMut::new();
        Encoder::new(DEFAULT_MAX_BODY_LEN).encode_simple(
            &mut out,
            FrameKind::Error,
            0,
            Code::INVALID_ARGUMENT,
            "bad magic: this looks like TLS",
        );
        // In two writes, so the client meets the magic cut in the middle.
        stream.write_all(&out[..2]).expect("write");
        std::thread::sleep(Duration::from_millis(20));
        stream.write_all(&out[2..]).expect("write");
        hello[0]
    });
    let pki = generate(&[]);
    let err = builder()
        .tls(pki.client_config())
        .connect(addr)
        .expect_err("not TLS");
    assert_eq!(
        server.join().expect("server thread"),
        0x16,
        "a TLS handshake record"
    );
    match &err {
        ClientError::NotTls { addr: at, status } => {
            assert_eq!(*at, addr);
            let status = status.as_ref().expect("the ERROR frame decoded");
            assert_eq!(status.code, Code::INVALID_ARGUMENT);
        }
        other => panic!("expected NotTls, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "the server at {addr} speaks plaintext courier, not TLS, on that port \
             (it answered INVALID_ARGUMENT: bad magic: this looks like TLS)"
        )
    );
}

#[test]
fn a_plaintext_server_that_closes_without_a_word_is_an_eof_in_the_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let mut stream = support::accept_within(&listener, IO_TIMEOUT).expect("a client");
        // The whole ClientHello record, so that closing sends FIN, not RST.
        let mut header = [0u8; 5];
        stream.read_exact(&mut header).expect("read");
        let mut body = vec![0u8; usize::from(u16::from_be_bytes([header[3], header[4]]))];
        stream.read_exact(&mut body).expect("read");
    });
    let pki = generate(&[]);
    let err = builder()
        .tls(pki.client_config())
        .connect(addr)
        .expect_err("closed");
    server.join().expect("server thread");
    match &err {
        ClientError::Io(e) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof),
        other => panic!("expected Io, got {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("closed the connection during the TLS handshake"),
        "{err}"
    );
}

#[test]
fn a_silent_server_times_out_the_handshake_within_the_connect_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let pki = generate(&[]);
    let start = Instant::now();
    let err = Client::builder()
        .connect_timeout(Duration::from_millis(300))
        .tls(pki.client_config())
        .connect(addr)
        .expect_err("no handshake");
    let took = start.elapsed();
    assert!(matches!(err, ClientError::Timeout), "{err:?}");
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(3),
        "{took:?}"
    );
    drop(listener);
}

#[test]
fn a_bad_first_server_flight_is_answered_with_an_alert() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let mut stream = support::accept_within(&listener, IO_TIMEOUT).expect("a connection");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let mut hello = [0u8; 4096];
        assert!(stream.read(&mut hello).expect("ClientHello") > 0);
        // A handshake record holding a ServerHello with an empty body, then more bytes than
        // rustls takes in one go, so that the client processes the record while the rest of
        // its first read waits.
        let mut flight = vec![22, 3, 3, 0, 4, 2, 0, 0, 0];
        flight.resize(10_000, 0);
        stream.write_all(&flight).expect("write");
        let mut after = Vec::new();
        let _ = stream.read_to_end(&mut after);
        after
    });
    let pki = generate(&[]);
    let err = builder()
        .tls(pki.client_config())
        .connect(addr)
        .expect_err("a broken ServerHello");
    assert!(matches!(err, ClientError::Tls(_)), "{err:?}");
    let after = server.join().expect("server thread");
    // An alert record (content type 21) in plaintext: the handshake had no keys yet.
    assert!(after.starts_with(&[21, 3, 3, 0, 2, 2]), "{after:?}");
}

/// How a trickling server holds back its answer.
#[derive(Clone, Copy, Debug)]
enum Trickle {
    /// The one TLS record holding the response, a byte every 300 ms: no plaintext until it
    /// is whole.
    RecordBytes,
    /// A KeyUpdate every 300 ms: whole records, none with plaintext.
    KeyUpdates,
}

/// A TLS server on a thread that completes the handshake, reads one request and then
/// trickles its response as `how` says, for up to 20 steps or until the client is gone.
fn trickling_server(
    config: Arc<rustls::ServerConfig>,
    how: Trickle,
) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handle = std::thread::spawn(move || {
        let stream = support::accept_within(&listener, IO_TIMEOUT).expect("a connection");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let conn = ServerConnection::new(config).expect("server");
        let mut tls = StreamOwned::new(conn, stream);
        let mut decoder = Decoder::new(DEFAULT_MAX_BODY_LEN);
        let mut input = BytesMut::new();
        let mut chunk = [0u8; 4096];
        let id = loop {
            let n = tls.read(&mut chunk).expect("read the request");
            assert!(n > 0, "the client closed before its request");
            input.extend_from_slice(&chunk[..n]);
            if let Some(Frame::Request(request)) = decoder.decode(&mut input).expect("decode") {
                break request.request_id;
            }
        };
        let step = Duration::from_millis(300);
        match how {
            Trickle::RecordBytes => {
                let mut out = BytesMut::new();
                respond(&Encoder::new(DEFAULT_MAX_BODY_LEN), &mut out, id, b"late");
                tls.conn.writer().write_all(&out).expect("plaintext");
                let mut record = Vec::new();
                while tls.conn.wants_write() {
                    tls.conn.write_tls(&mut record).expect("write_tls to a Vec");
                }
                for byte in record.into_iter().take(20) {
                    std::thread::sleep(step);
                    if tls.sock.write_all(&[byte]).is_err() {
                        return;
                    }
                }
            }
            Trickle::KeyUpdates => {
                for _ in 0..20 {
                    std::thread::sleep(step);
                    tls.conn.refresh_traffic_keys().expect("KeyUpdate");
                    if tls.flush().is_err() {
                        return;
                    }
                }
            }
        }
    });
    (addr, handle)
}

#[test]
fn a_trickling_tls_server_cannot_hold_a_call_past_its_deadline() {
    let pki = generate(&[]);
    for how in [Trickle::RecordBytes, Trickle::KeyUpdates] {
        let (addr, server) = trickling_server(server_config(&pki, false), how);
        let mut client = builder()
            .tls(pki.client_config())
            .connect(addr)
            .expect("connect");
        let options = CallOptions::default().with_deadline(Duration::from_secs(1));
        let start = Instant::now();
        let err = client
            .call_with(&ECHO, &Bytes::from_static(b"late"), &options)
            .expect_err("no answer within the deadline");
        let took = start.elapsed();
        assert!(matches!(err, ClientError::Timeout), "{how:?}: {err:?}");
        // A bound, not a measurement: before, each byte or record restarted the wait.
        assert!(
            took >= Duration::from_millis(990) && took < Duration::from_secs(3),
            "{how:?}: {took:?}"
        );
        drop(client);
        server.join().expect("server thread");
    }
}

/// The error of a connect whose handshake the client refuses; the server's side ends too.
fn refused(
    pki: &TestPki,
    server: Arc<rustls::ServerConfig>,
    tls: ClientTlsConfig,
) -> rustls::Error {
    let (addr, handle) = tls_server(server, 1, After::Serve);
    let err = builder().tls(tls).connect(addr).expect_err("refused");
    let _ = handle.join().expect("server thread");
    let _ = pki;
    match err {
        ClientError::Tls(e) => e,
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

#[test]
fn certificates_the_client_does_not_accept_are_tls_errors() {
    let pki = generate(&[]);
    let other =
        ServerTlsConfig::from_pem(&pki.other_server.cert.pem, &pki.other_server.key.pem, None)
            .expect("config");
    let e = refused(&pki, Arc::clone(other.rustls()), pki.client_config());
    assert!(format!("{e:?}").contains("UnknownIssuer"), "{e:?}");
    let err = ClientError::Tls(e);
    assert!(
        err.to_string()
            .starts_with("TLS error: invalid peer certificate"),
        "{err}"
    );

    let expired = ServerTlsConfig::from_pem(
        &pki.expired_server.cert.pem,
        &pki.expired_server.key.pem,
        None,
    )
    .expect("config");
    let e = refused(&pki, Arc::clone(expired.rustls()), pki.client_config());
    assert!(format!("{e:?}").contains("Expired"), "{e:?}");

    let wrong_name = ClientTlsConfig::builder()
        .ca_pem(&pki.ca.pem)
        .server_name("kv.example")
        .build()
        .expect("config");
    let e = refused(&pki, server_config(&pki, false), wrong_name);
    assert!(format!("{e:?}").contains("NotValidForName"), "{e:?}");

    // The right name, by DNS.
    let (addr, server) = tls_server(server_config(&pki, false), 1, After::Serve);
    let localhost = ClientTlsConfig::builder()
        .ca_pem(&pki.ca.pem)
        .server_name("localhost")
        .build()
        .expect("config");
    let mut client = builder().tls(localhost).connect(addr).expect("connect");
    assert_eq!(echo(&mut client, "dns").expect("echo"), "dns");
    client.close();
    served_once(server);
}

#[test]
fn a_server_without_courier_alpn_is_refused_and_one_without_alpn_is_accepted() {
    let pki = generate(&[]);
    let mut h2 = (*server_config(&pki, false)).clone();
    h2.alpn_protocols = vec![b"h2".to_vec()];
    let e = refused(&pki, Arc::new(h2), pki.client_config());
    assert!(
        matches!(
            e,
            rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol)
        ),
        "{e:?}"
    );

    let mut none = (*server_config(&pki, false)).clone();
    none.alpn_protocols.clear();
    let (addr, server) = tls_server(Arc::new(none), 1, After::Serve);
    let mut client = builder()
        .tls(pki.client_config())
        .connect(addr)
        .expect("connect");
    assert_eq!(echo(&mut client, "no alpn").expect("echo"), "no alpn");
    client.close();
    let seen = served_once(server);
    assert_eq!(seen.alpn, None);
}

#[test]
fn a_client_certificate_the_server_refuses_fails_auth_or_the_first_call() {
    let pki = generate(&[]);
    // No certificate, with a token: the server's alert arrives in place of AUTH's answer.
    let (addr, server) = tls_server(server_config(&pki, true), 1, After::Serve);
    let err = builder()
        .tls(pki.client_config())
        .token(TOKEN)
        .connect(addr)
        .expect_err("no client certificate");
    assert!(
        matches!(err, ClientError::Tls(rustls::Error::AlertReceived(_))),
        "{err:?}"
    );
    let seen = server.join().expect("server thread").pop().expect("one");
    assert!(seen.is_err(), "the server refused the handshake");

    // An expired certificate, no token: connect succeeds (TLS 1.3: the client is done
    // first); the first call gets the alert, and every later one the same error.
    let (addr, server) = tls_server(server_config(&pki, true), 1, After::Serve);
    let mut client = builder()
        .tls(pki.client_config_as(&pki.expired_client))
        .connect(addr)
        .expect("connect");
    let err = echo(&mut client, "x").expect_err("refused certificate");
    assert!(
        matches!(err, ClientError::Tls(rustls::Error::AlertReceived(_))),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("TLS error: received fatal alert"),
        "{err}"
    );
    let again = echo(&mut client, "y").expect_err("broken");
    assert!(matches!(again, ClientError::Tls(_)), "{again:?}");
    let seen = server.join().expect("server thread").pop().expect("one");
    assert!(seen.is_err(), "the server refused the handshake");
}

/// The real server over mutual TLS with a token table: "bob" by token, "alice" by
/// certificate.
fn start_real(pki: &TestPki) -> courier_rpc::server::RunningServer {
    let mut tokens = courier_rpc::auth::TokenTable::new();
    tokens.insert_token("bob", TOKEN);
    support::start(
        courier_rpc::server::Server::builder()
            .tls(pki.server_config(true))
            .authenticator(Arc::new(tokens)),
        support::bundled_router(),
    )
}

fn whoami(client: &mut Client) -> courier_rpc::admin::WhoAmI {
    client
        .call(&courier_rpc::admin::WHOAMI, &())
        .expect("WHOAMI")
}

#[test]
fn the_real_server_over_mutual_tls_with_a_token() {
    let pki = generate(&["alice"]);
    let server = start_real(&pki);
    let tls = pki.client_config_as(pki.client("alice"));

    // The certificate alone: its CN is the identity, AUTH is not sent.
    let mut client = builder()
        .tls(tls.clone())
        .connect(server.local_addr())
        .expect("connect");
    assert_eq!(client.identity(), None);
    let me = whoami(&mut client);
    assert_eq!(
        me.source(),
        Some(courier_rpc::auth::IdentitySource::Certificate)
    );
    assert_eq!(me.name, "alice");
    assert_eq!(echo(&mut client, "as alice").expect("echo"), "as alice");
    client.close();

    // With a token: AUTH replaces the certificate's identity.
    let mut client = builder()
        .tls(tls.clone())
        .token(TOKEN)
        .connect(server.local_addr())
        .expect("connect");
    assert_eq!(client.identity(), Some("bob"));
    let me = whoami(&mut client);
    assert_eq!(me.source(), Some(courier_rpc::auth::IdentitySource::Token));
    assert_eq!(me.name, "bob");
    let value = Bytes::from(vec![b'v'; 100_000]);
    let set = courier_rpc::kv::SetRequest {
        key: Bytes::from_static(b"k"),
        value: value.clone(),
    };
    client.call(&courier_rpc::kv::SET, &set).expect("SET");
    let got = client
        .call(
            &courier_rpc::kv::GET,
            &courier_rpc::kv::Key(Bytes::from_static(b"k")),
        )
        .expect("GET");
    assert_eq!(got.0, value);
    client.close();

    let err = builder()
        .tls(tls)
        .token("not the token")
        .connect(server.local_addr())
        .expect_err("wrong token");
    match &err {
        ClientError::Auth(status) => assert_eq!(status.code, Code::UNAUTHENTICATED),
        other => panic!("expected Auth, got {other:?}"),
    }

    // No certificate: the server's refusal arrives in place of AUTH's answer.
    let err = builder()
        .tls(pki.client_config())
        .token(TOKEN)
        .connect(server.local_addr())
        .expect_err("no client certificate");
    assert!(matches!(err, ClientError::Tls(_)), "{err:?}");
}

#[test]
fn a_tls_client_on_a_real_plaintext_port_and_a_plaintext_client_on_a_tls_port() {
    let pki = generate(&[]);
    let plain = support::start_default();
    let err = builder()
        .tls(pki.client_config())
        .connect(plain.local_addr())
        .expect_err("plaintext server");
    match &err {
        ClientError::NotTls { addr, status } => {
            assert_eq!(*addr, plain.local_addr());
            let status = status.as_ref().expect("the server's ERROR decoded");
            assert_eq!(status.code, Code::INVALID_ARGUMENT);
            assert!(status.message.contains("TLS"), "{status}");
        }
        other => panic!("expected NotTls, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("speaks plaintext courier, not TLS, on that port"),
        "{text}"
    );

    let tls = support::start(
        courier_rpc::server::Server::builder().tls(pki.server_config(false)),
        support::bundled_router(),
    );
    let mut client = builder().connect(tls.local_addr()).expect("TCP connects");
    match echo(&mut client, "plain") {
        Err(ClientError::Connection(status)) => {
            assert_eq!(status.code, Code::INVALID_ARGUMENT);
            assert!(status.message.contains("requires TLS"), "{status}");
        }
        other => panic!("expected the server's ERROR, got {other:?}"),
    }
}

/// The SHA-256 of `token` in hex, as an ACL file holds it.
fn token_hash_hex(token: &[u8]) -> String {
    courier_rpc::auth::hash_token(token)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs a bundled client binary with `args` and `COURIER_TOKEN` set to `env_token` (or
/// unset); returns its exit code, stdout and stderr.
fn run_client(binary: &str, args: &[&str], env_token: Option<&str>) -> (i32, String, String) {
    let mut command = std::process::Command::new(binary);
    command.args(args).env_remove("COURIER_TOKEN");
    if let Some(token) = env_token {
        command.env("COURIER_TOKEN", token);
    }
    let out = command.output().expect("run the client binary");
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn kv_cli_and_courier_bench_speak_tls_with_a_certificate_and_a_token() {
    let pki = generate(&["alice"]);
    let dir = pki.dir();
    let acl = dir.join("acl.toml");
    std::fs::write(
        &acl,
        format!(
            "[[identity]]\nname = \"ops\"\ntoken_sha256 = \"{}\"\nallow = [\"kv.*\", \"admin.*\"]\n\n\
             [[identity]]\nname = \"alice\"\nallow = [\"kv.Get\"]\n",
            token_hash_hex(b"ops-token")
        ),
    )
    .expect("write the ACL");
    let token_file = dir.join("token");
    std::fs::write(&token_file, "ops-token\n").expect("write the token file");
    let path = |p: &std::path::Path| p.to_str().expect("UTF-8 path").to_owned();
    let server = support::kv_process::Server::start(
        dir,
        &[
            "--in-memory",
            "--tls-cert",
            &path(&pki.server.cert.path),
            "--tls-key",
            &path(&pki.server.key.path),
            "--tls-client-ca",
            &path(&pki.ca.path),
            "--acl",
            &path(&acl),
        ],
    );
    let addr = server.addr.to_string();
    let alice = pki.client("alice");
    let tls: Vec<String> = [
        "--addr",
        &addr,
        "--tls",
        "--tls-ca",
        &path(&pki.ca.path),
        "--tls-cert",
        &path(&alice.cert.path),
        "--tls-key",
        &path(&alice.key.path),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let with = |extra: &[&str]| -> Vec<String> {
        tls.iter()
            .cloned()
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };
    let kv_cli = |args: Vec<String>, env_token: Option<&str>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_client(env!("CARGO_BIN_EXE_kv-cli"), &args, env_token)
    };
    let token_arg = path(&token_file);

    // The token from a file: "ops" may set.
    let (code, out, err) = kv_cli(with(&["--token-file", &token_arg, "set", "k", "v"]), None);
    assert_eq!((code, out.as_str()), (0, "OK\n"), "{err}");
    // The token from the environment, and the server named by DNS.
    let (code, out, err) = kv_cli(
        with(&["--tls-server-name", "localhost", "get", "k"]),
        Some("ops-token"),
    );
    assert_eq!((code, out.as_str()), (0, "v\n"), "{err}");
    // The certificate alone: "alice" may get, not set.
    let (code, out, err) = kv_cli(with(&["get", "k"]), None);
    assert_eq!((code, out.as_str()), (0, "v\n"), "{err}");
    let (code, _, err) = kv_cli(with(&["set", "k", "w"]), None);
    assert_eq!(code, 2);
    assert!(err.contains("PERMISSION_DENIED"), "{err}");
    // A wrong token: refused at connect, said so.
    let (code, _, err) = kv_cli(with(&["get", "k"]), Some("guess"));
    assert_eq!(code, 2);
    assert_eq!(
        err,
        format!(
            "kv-cli: cannot connect to {addr}: authentication refused: UNAUTHENTICATED: \
             invalid token\n"
        )
    );
    assert!(!err.contains("guess"));
    // A name the certificate does not carry.
    let (code, _, err) = kv_cli(with(&["--tls-server-name", "kv.example", "ping"]), None);
    assert_eq!(code, 2);
    assert!(
        err.starts_with(&format!("kv-cli: cannot connect to {addr}: TLS error: ")),
        "{err}"
    );
    // Plaintext on the TLS port.
    let (code, _, err) = kv_cli(vec!["--addr".into(), addr.clone(), "ping".into()], None);
    assert_eq!(code, 2);
    assert!(err.contains("requires TLS"), "{err}");
    // TLS flags without --tls, and a key without a certificate, are refused by the parser.
    let (code, _, err) = kv_cli(
        vec![
            "--addr".into(),
            addr.clone(),
            "--tls-ca".into(),
            path(&pki.ca.path),
            "ping".into(),
        ],
        None,
    );
    assert_eq!(code, 2);
    assert!(err.contains("--tls"), "{err}");
    // An empty token file.
    let empty = dir.join("empty-token");
    std::fs::write(&empty, "\n").expect("write");
    let (code, _, err) = kv_cli(with(&["--token-file", &path(&empty), "ping"]), None);
    assert_eq!(code, 2);
    assert!(err.contains("is empty"), "{err}");

    let bench_args = with(&[
        "--token-file",
        &token_arg,
        "--clients",
        "4",
        "--threads",
        "2",
        "--pipeline",
        "4",
        "--requests",
        "400",
        "--workload",
        "mixed",
        "--json",
    ]);
    let bench_args: Vec<&str> = bench_args.iter().map(String::as_str).collect();
    let (code, out, err) = run_client(env!("CARGO_BIN_EXE_courier-bench"), &bench_args, None);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(report["requests"], 400, "{out}");
    assert_eq!(report["errors"], serde_json::json!({}), "{out}");
}

/// The balancing client takes every option of the client builder: over TLS with a client
/// certificate and a token, each of its connections (and its health checks) shakes hands,
/// authenticates, and proves the token's identity, on every server.
#[test]
fn a_balancer_speaks_tls_with_a_token_to_every_server() {
    use courier_rpc::client::balance::{Balancer, Health};

    let pki = generate(&["alice"]);
    let servers = [start_real(&pki), start_real(&pki)];
    let names: Vec<String> = servers.iter().map(|s| s.local_addr().to_string()).collect();
    let tls = pki.client_config_as(pki.client("alice"));
    let balancer = Balancer::builder()
        .client(builder().tls(tls.clone()).token(TOKEN))
        .build(names.clone())
        .expect("build");
    // Keys spread over both servers, each read back from its owner.
    for i in 0..40 {
        let key = Bytes::from(format!("k{i}"));
        let set = courier_rpc::kv::SetRequest {
            key: key.clone(),
            value: key.clone(),
        };
        balancer
            .call_key(&key, &courier_rpc::kv::SET, &set)
            .expect("SET");
        let got = balancer
            .call_key(
                &key,
                &courier_rpc::kv::GET,
                &courier_rpc::kv::Key(key.clone()),
            )
            .expect("GET");
        assert_eq!(got.0, key);
    }
    let me = balancer
        .call(&courier_rpc::admin::WHOAMI, &())
        .expect("WHOAMI");
    assert_eq!(me.name, "bob");
    let stats = balancer.stats();
    assert!(stats.servers.iter().all(|s| s.attempts > 10), "{stats:?}");
    assert!(
        stats.servers.iter().all(|s| s.health == Health::Up),
        "{stats:?}"
    );

    // A token no server knows: every connect is refused at AUTH, and the call says so.
    let refused = Balancer::builder()
        .client(builder().tls(tls).token("not the token"))
        .build(names)
        .expect("build");
    match refused.call(&ECHO, &Bytes::from_static(b"hi")) {
        Err(ClientError::Auth(status)) => assert_eq!(status.code, Code::UNAUTHENTICATED),
        other => panic!("expected Auth, got {other:?}"),
    }
}
