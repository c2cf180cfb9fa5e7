//! A bare rustls client for tests that must see every byte the server sends over TLS.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use bytes::BytesMut;
use courier::proto::{Decoder, Frame, DEFAULT_MAX_BODY_LEN};
use courier::tls::ClientTlsConfig;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

/// A TLS stream over a blocking socket (with the support module's timeouts).
pub type Tls = StreamOwned<ClientConnection, TcpStream>;

/// Connects and completes the handshake. A TLS 1.3 client finishes before the server has
/// checked its certificate, so a refusal of it shows at the first read.
pub fn connect(addr: SocketAddr, config: &ClientTlsConfig) -> io::Result<Tls> {
    let socket = super::raw_connect(addr);
    let name = ServerName::IpAddress(addr.ip().into());
    let conn = ClientConnection::new(Arc::clone(config.rustls()), name)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut tls = StreamOwned::new(conn, socket);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// Sends raw bytes through TLS.
pub fn send(tls: &mut Tls, bytes: &[u8]) -> io::Result<()> {
    tls.write_all(bytes)?;
    tls.flush()
}

/// Sends one request and reads one frame back.
pub fn call(
    tls: &mut Tls,
    id: u64,
    service: u16,
    method: u16,
    payload: &[u8],
) -> io::Result<Frame> {
    send(
        tls,
        &super::encode(&super::request(id, service, method, payload)),
    )?;
    read_frames(tls, 1).map(|mut frames| frames.remove(0))
}

/// Reads `count` frames.
pub fn read_frames(tls: &mut Tls, count: usize) -> io::Result<Vec<Frame>> {
    let mut decoder = Decoder::new(DEFAULT_MAX_BODY_LEN);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    while frames.len() < count {
        while let Some(frame) = decoder.decode(&mut buf).expect("server sends valid frames") {
            frames.push(frame);
        }
        if frames.len() >= count {
            break;
        }
        let n = tls.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(frames)
}

/// Reads frames until the server ends the TLS stream (close_notify or end of stream, or a
/// reset after it); returns every frame received.
pub fn read_until_close(tls: &mut Tls) -> Vec<Frame> {
    let mut decoder = Decoder::new(DEFAULT_MAX_BODY_LEN);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match tls.read(&mut chunk) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
                ) =>
            {
                0
            }
            Err(e) => panic!("reading from the server: {e}"),
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(frame) = decoder.decode(&mut buf).expect("server sends valid frames") {
            frames.push(frame);
        }
        if n == 0 {
            return frames;
        }
    }
}
