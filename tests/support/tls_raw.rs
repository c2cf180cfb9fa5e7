//! A bare rustls client for tests that must see every byte the server sends over TLS.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use courier_rpc::proto::Frame;
use courier_rpc::tls::ClientTlsConfig;
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
    super::try_read_frames(tls, 1).map(|mut frames| frames.remove(0))
}
