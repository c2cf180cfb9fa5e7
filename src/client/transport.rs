//! The client's byte stream: a plain `TcpStream`, or TLS through rustls over one; and the
//! TLS handshake that makes the second from the first.

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rustls::{ClientConnection, StreamOwned};

use super::error::ClientError;
use crate::proto::{Decoder, Frame, Status, DEFAULT_MAX_BODY_LEN, MAGIC};
use crate::tls::{ClientTlsConfig, ALPN};

/// Bytes of the handshake's first read, where a plaintext courier server is recognised.
const FIRST_READ: usize = 16 * 1024;

/// A connection's byte stream.
#[derive(Debug)]
pub(super) enum Transport {
    /// Reads go straight into the read buffer's spare capacity (`sys::read_spare`).
    Plain(TcpStream),
    /// rustls over the socket, which keeps its read and write timeouts: a read that times
    /// out in the middle of a record leaves the rest to the next read.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Transport {
    /// The socket under the stream.
    pub(super) fn socket(&self) -> &TcpStream {
        match self {
            Transport::Plain(stream) => stream,
            Transport::Tls(tls) => &tls.sock,
        }
    }

    /// One read from the socket (waiting up to its read timeout) appended to `buf`, which has
    /// spare capacity; 0 at the end of the stream.
    ///
    /// For TLS: the plaintext rustls already holds, if any, without touching the socket;
    /// else at most one read of the socket and one pass of rustls over what it brought, and
    /// every byte of plaintext that gave (which may be more than the spare capacity: the
    /// buffer grows). When it gave none (part of a record, or records without application
    /// data), an `Interrupted` error: the caller checks its deadline and reads again. So a
    /// server that sends a byte at a time cannot hold a read past the deadline, as it could
    /// if this read until a record was whole.
    ///
    /// # Errors
    /// The socket's errors (`WouldBlock` past the read timeout); for TLS, `Interrupted` as
    /// above, and an `InvalidData` error whose inner error is the [`rustls::Error`] (see
    /// [`tls_error`]).
    pub(super) fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let tls = match self {
            Transport::Plain(stream) => return crate::sys::read_spare(stream, buf, usize::MAX),
            Transport::Tls(tls) => &mut **tls,
        };
        let StreamOwned { conn, sock } = tls;
        if let Some(n) = take_plaintext(conn, buf)? {
            return Ok(n);
        }
        // What rustls has queued to send (an answer to a KeyUpdate, say) goes out first.
        while conn.wants_write() {
            if conn.write_tls(sock)? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        // One read of the socket: 0 at its end, which rustls notes and `take_plaintext`
        // reports below.
        conn.read_tls(sock)?;
        if let Err(err) = conn.process_new_packets() {
            // The alert that says why, if rustls queued one; the error is what counts.
            let _ = conn.write_tls(sock);
            return Err(io::Error::new(io::ErrorKind::InvalidData, err));
        }
        match take_plaintext(conn, buf)? {
            Some(n) => Ok(n),
            None => Err(io::ErrorKind::Interrupted.into()),
        }
    }

    /// Writes some of `bytes`. For TLS, rustls takes them and writes what it can; the rest
    /// goes out with the next write or [`Transport::flush`].
    pub(super) fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.write(bytes),
            Transport::Tls(tls) => tls.write(bytes),
        }
    }

    /// Writes out every byte taken by [`Transport::write`] (TLS buffers some).
    pub(super) fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(tls) => tls.flush(),
        }
    }

    /// Ends the connection: for TLS, a close_notify alert first (best effort, within the
    /// write timeout), then both directions of the socket are shut down.
    pub(super) fn close(&mut self) {
        if let Transport::Tls(tls) = self {
            tls.conn.send_close_notify();
            while tls.conn.wants_write() {
                match tls.conn.write_tls(&mut tls.sock) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        let _ = self.socket().shutdown(Shutdown::Both);
    }
}

/// Moves the plaintext `conn` holds to `buf`: `Some(n)` for `n` bytes, `Some(0)` at the end
/// of the stream (a close_notify, or TCP closed without one: the frames' lengths and
/// checksums, not TLS, tell a whole frame from a cut one, so that is an end of stream like any
/// other), `None` when it holds none and the stream goes on.
fn take_plaintext(conn: &mut ClientConnection, buf: &mut BytesMut) -> io::Result<Option<usize>> {
    let mut total = 0;
    loop {
        let mut reader = conn.reader();
        match reader.fill_buf() {
            Ok(chunk) if !chunk.is_empty() => {
                let n = chunk.len();
                buf.extend_from_slice(chunk);
                reader.consume(n);
                total += n;
            }
            // Closed with a close_notify, after what was read.
            Ok(_) => return Ok(Some(total)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Some(total)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Ok((total > 0).then_some(total))
            }
            Err(e) => return Err(e),
        }
    }
}

/// The [`rustls::Error`] inside an IO error from a TLS stream (rustls reports a record that
/// breaks TLS, or an alert from the peer, as an `InvalidData` error wrapping it).
pub(super) fn tls_error(err: &io::Error) -> Option<rustls::Error> {
    err.get_ref()?.downcast_ref::<rustls::Error>().cloned()
}

/// Runs the TLS handshake on `stream`, connected to `peer`, within `timeout`; checks the
/// negotiated ALPN protocol (if any) is `courier/1`. The socket keeps `write_timeout` after.
pub(super) fn handshake(
    mut stream: TcpStream,
    peer: SocketAddr,
    config: &ClientTlsConfig,
    timeout: Duration,
    write_timeout: Duration,
) -> Result<Transport, ClientError> {
    let deadline = Instant::now() + timeout;
    let name = config.server_name_for(peer.ip());
    let mut conn =
        ClientConnection::new(config.rustls().clone(), name).map_err(ClientError::Tls)?;
    let mut first_read = true;
    while conn.is_handshaking() {
        while conn.wants_write() {
            stream.set_write_timeout(Some(remaining(deadline)?))?;
            conn.write_tls(&mut stream)?;
        }
        if !conn.is_handshaking() {
            break;
        }
        stream.set_read_timeout(Some(remaining(deadline)?))?;
        let read = if first_read {
            first_read = false;
            first_bytes(&mut stream, peer, deadline, &mut conn)?
        } else {
            conn.read_tls(&mut stream)?
        };
        if read == 0 {
            return Err(ClientError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the server at {peer} closed the connection during the TLS handshake"),
            )));
        }
        if let Err(err) = conn.process_new_packets() {
            // The alert that says why, if rustls queued one; the error is what counts.
            let _ = conn.write_tls(&mut stream);
            return Err(ClientError::Tls(err));
        }
    }
    // The client's Finished (and anything else queued) goes out now, not with the first
    // request.
    while conn.wants_write() {
        stream.set_write_timeout(Some(remaining(deadline)?))?;
        conn.write_tls(&mut stream)?;
    }
    if let Some(protocol) = conn.alpn_protocol() {
        if protocol != ALPN {
            // rustls refuses a protocol it did not offer first; this holds whatever it offered.
            return Err(ClientError::Tls(rustls::Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SelectedUnofferedApplicationProtocol,
            )));
        }
    }
    stream.set_write_timeout(Some(write_timeout))?;
    Ok(Transport::Tls(Box::new(StreamOwned::new(conn, stream))))
}

/// The time left before `deadline`; `Timeout` once it has passed.
fn remaining(deadline: Instant) -> Result<Duration, ClientError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(ClientError::Timeout)
    } else {
        Ok(left)
    }
}

/// The handshake's first read from the server. A TLS record starts with its content type
/// (20 to 24); a plaintext courier server answers a ClientHello with an ERROR frame, which
/// starts with the magic "COUR": that is [`ClientError::NotTls`]. Anything else goes to
/// rustls. Returns the bytes read (0: end of stream).
fn first_bytes(
    stream: &mut TcpStream,
    peer: SocketAddr,
    deadline: Instant,
    conn: &mut ClientConnection,
) -> Result<usize, ClientError> {
    let mut bytes = vec![0; FIRST_READ];
    let mut len = read_some(stream, &mut bytes)?;
    // The magic may come in pieces.
    while len > 0 && len < MAGIC.len() && bytes[..len] == MAGIC[..len] {
        stream.set_read_timeout(Some(remaining(deadline)?))?;
        match read_some(stream, &mut bytes[len..])? {
            0 => break,
            n => len += n,
        }
    }
    bytes.truncate(len);
    if bytes.starts_with(&MAGIC) {
        let status = plaintext_error(stream, bytes, deadline);
        return Err(ClientError::NotTls { addr: peer, status });
    }
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        conn.read_tls(&mut rest)?;
        if !rest.is_empty() {
            // rustls takes what it can buffer; what it has must be processed first.
            if let Err(err) = conn.process_new_packets() {
                // The alert that says why, as in `handshake` (`proto-spec/PROTOCOL.md` 17.3).
                let _ = conn.write_tls(stream);
                return Err(ClientError::Tls(err));
            }
        }
    }
    Ok(len)
}

fn read_some(stream: &mut TcpStream, into: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.read(into) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            result => return result,
        }
    }
}

/// The status of the ERROR frame a plaintext courier server sent (it closes after it), read
/// until the frame is whole, the stream ends, or `deadline`; `None` if it does not decode.
fn plaintext_error(stream: &mut TcpStream, bytes: Vec<u8>, deadline: Instant) -> Option<Status> {
    let mut decoder = Decoder::new(DEFAULT_MAX_BODY_LEN);
    let mut buf = BytesMut::from(&bytes[..]);
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(Frame::Error { code, message, .. })) => {
                return Some(Status::new(code, message))
            }
            Ok(None) => {}
            Ok(Some(_)) | Err(_) => return None,
        }
        let left = remaining(deadline).ok()?;
        stream.set_read_timeout(Some(left)).ok()?;
        buf.reserve(FIRST_READ);
        match crate::sys::read_spare(&*stream, &mut buf, usize::MAX) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}
