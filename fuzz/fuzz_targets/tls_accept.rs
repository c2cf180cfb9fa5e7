//! The first bytes a port receives, read by both kinds of port.
//!
//! A TLS port: a `rustls::ServerConnection` made from a [`ServerTlsConfig`] (a self-signed
//! rcgen certificate, made once per process; with or without a client CA) is fed the stream in
//! the input's chunks through `read_tls` and `process_new_packets`, its output drained with
//! `write_tls` after every step, until the first error (whose alert is drained too). It never
//! panics, its output stays within 64 KiB (rustls's default buffer limit; a server sends a
//! few KiB before the client's Finished), and the handshake never completes nor yields
//! plaintext: completing it needs keys the input cannot have.
//!
//! A plaintext port: a [`Connection`] is fed the same chunks. Everything it writes decodes as
//! frames, and a stream whose first byte is 0x16 (a TLS handshake record) is answered with
//! exactly one frame: an ERROR, INVALID_ARGUMENT, whose message says that the port speaks
//! plaintext courier, not TLS.
//!
//! Input: byte 0 picks the TLS configuration (bit 0: with a client CA) and the number `n` of
//! chunk sizes (bits 1-4), then `n` chunk sizes (one byte each, cycled, 0 read as 1; none
//! means one chunk), then the stream.
#![no_main]

use std::io::Read;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::BytesMut;
use courier_rpc::connection::{Connection, ConnectionConfig};
use courier_rpc::proto::{Code, Decoder, Frame};
use courier_rpc::stats::Stats;
use courier_rpc::tls::ServerTlsConfig;
use libfuzzer_sys::fuzz_target;

/// The most a server may have written: rustls's default buffer limit.
const MAX_TLS_OUTPUT: usize = 64 * 1024;

/// [without a client CA, with one].
fn configs() -> &'static [Arc<rustls::ServerConfig>; 2] {
    static CONFIGS: OnceLock<[Arc<rustls::ServerConfig>; 2]> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let server = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("a self-signed certificate");
        let cert = server.cert.pem();
        let key = server.signing_key.serialize_pem();
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "courier fuzz clients CA");
        let ca_key = rcgen::KeyPair::generate().expect("a CA key");
        let ca = ca_params
            .self_signed(&ca_key)
            .expect("a CA certificate")
            .pem();
        let plain = ServerTlsConfig::from_pem(cert.as_bytes(), key.as_bytes(), None)
            .expect("a server configuration");
        let mutual =
            ServerTlsConfig::from_pem(cert.as_bytes(), key.as_bytes(), Some(ca.as_bytes()))
                .expect("a server configuration with a client CA");
        assert!(mutual.requires_client_certificate());
        [plain.rustls().clone(), mutual.rustls().clone()]
    })
}

/// The stream cut into the chunk sizes `cuts` (cycled, 0 read as 1; none: one chunk).
fn chunks<'a>(stream: &'a [u8], cuts: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut pos = 0;
    let mut i = 0;
    std::iter::from_fn(move || {
        if pos >= stream.len() {
            return None;
        }
        let step = match cuts {
            [] => stream.len(),
            _ => usize::from(cuts[i % cuts.len()]).max(1),
        };
        i += 1;
        let end = (pos + step).min(stream.len());
        let chunk = &stream[pos..end];
        pos = end;
        Some(chunk)
    })
}

fn drain(tls: &mut rustls::ServerConnection, out: &mut Vec<u8>) {
    while tls.wants_write() {
        match tls.write_tls(out) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    assert!(
        out.len() <= MAX_TLS_OUTPUT,
        "{} bytes written before the handshake completed",
        out.len()
    );
}

fn tls_port(config: &Arc<rustls::ServerConfig>, stream: &[u8], cuts: &[u8]) {
    let mut tls = rustls::ServerConnection::new(config.clone()).expect("a server connection");
    let mut out = Vec::new();
    let mut plaintext = [0u8; 4096];
    'feed: for chunk in chunks(stream, cuts) {
        let mut rest = chunk;
        while !rest.is_empty() {
            match tls.read_tls(&mut rest) {
                Ok(0) | Err(_) => break 'feed,
                Ok(_) => {}
            }
            let state = tls.process_new_packets();
            drain(&mut tls, &mut out);
            let Ok(state) = state else {
                break 'feed;
            };
            assert_eq!(
                state.plaintext_bytes_to_read(),
                0,
                "plaintext from a handshake the input cannot complete"
            );
            // Nothing to read: `WouldBlock` while handshaking.
            if let Ok(n) = tls.reader().read(&mut plaintext) {
                assert_eq!(n, 0, "plaintext from a handshake the input cannot complete");
            }
            assert!(
                tls.is_handshaking(),
                "the handshake completed without the client's keys"
            );
        }
    }
    drain(&mut tls, &mut out);
}

fn plaintext_port(stream: &[u8], cuts: &[u8]) {
    let config = ConnectionConfig::default().with_max_body_len(4096);
    let now = Instant::now();
    let mut conn = Connection::new(config, Arc::new(Stats::new()), now);
    let mut output = Vec::new();
    for chunk in chunks(stream, cuts) {
        conn.begin_turn();
        if !conn.wants_read() {
            // Reading stopped: the rest stays in the socket.
            break;
        }
        let _ = conn.read_from(&mut &chunk[..]);
        conn.process(now, &courier_rpc::service::Router::new());
        let _ = conn.flush_to(&mut output, now);
    }
    conn.begin_turn();
    conn.process(now, &courier_rpc::service::Router::new());
    let _ = conn.flush_to(&mut output, now);

    let mut buf = BytesMut::from(&output[..]);
    let mut decoder = Decoder::new(u32::MAX);
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode(&mut buf).expect("server output decodes") {
        frames.push(frame);
    }
    assert!(buf.is_empty(), "server output ends mid-frame");
    if stream.first() == Some(&0x16) {
        match &frames[..] {
            [Frame::Error {
                request_id: 0,
                code: Code::INVALID_ARGUMENT,
                message,
            }] if message.contains("TLS") => {}
            other => panic!("a TLS ClientHello on a plaintext port was answered {other:?}"),
        }
        assert!(conn.wants_write_shutdown() || conn.is_closed());
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, rest)) = input.split_first() else {
        return;
    };
    let n = usize::from(first >> 1 & 0x0f).min(rest.len());
    let (cuts, stream) = rest.split_at(n);
    tls_port(&configs()[usize::from(first & 1)], stream, cuts);
    plaintext_port(stream, cuts);
});
