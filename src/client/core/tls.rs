//! TLS inside the client core: rustls's own sans-IO `ClientConnection` between the socket's
//! bytes and the frames. Ciphertext in, plaintext out; plaintext in, ciphertext out. Also
//! the two checks a courier client makes of its first TLS exchange
//! (`proto-spec/PROTOCOL.md` Section 17): a server that answers the ClientHello in
//! plaintext courier, and the ALPN protocol it chose.

use std::io::{self, BufRead, Write};
use std::net::SocketAddr;

use bytes::{Buf, BufMut, BytesMut};
use rustls::ClientConnection;

use crate::client::ClientError;
use crate::proto::{Decoder, Frame, Status, MAGIC};
use crate::tls::{ClientTlsConfig, ALPN};

/// What the first bytes from the server turned out to be.
#[derive(Debug)]
enum Sniff {
    /// Too few bytes yet to tell (a prefix of the courier magic).
    Unknown,
    /// TLS records: they go to rustls.
    Tls,
    /// Plaintext courier (the magic "COUR"): the server's ERROR frame is decoded for the
    /// error, and nothing goes to rustls.
    Plaintext(Decoder),
}

/// A TLS client connection inside the core.
pub(super) struct TlsLayer {
    conn: ClientConnection,
    sniff: Sniff,
    /// Whether the negotiated ALPN protocol has been checked (once, when the handshake ends).
    alpn_checked: bool,
    peer: SocketAddr,
    /// The core's body limit: a plaintext answer's frame is held to it too.
    max_body_len: u32,
}

impl std::fmt::Debug for TlsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsLayer")
            .field("handshaking", &self.conn.is_handshaking())
            .field("sniff", &self.sniff)
            .finish_non_exhaustive()
    }
}

/// What feeding ciphertext gave.
pub(super) enum Received {
    /// Fine; plaintext (if any) was appended.
    Open,
    /// The server closed the TLS session (close_notify), after the plaintext appended.
    Closed,
}

impl TlsLayer {
    /// A client connection to `peer` with `config` (its server name, or `peer`'s address),
    /// for a core whose body limit is `max_body_len` bytes. Its ClientHello waits in
    /// [`TlsLayer::transmit`].
    pub(super) fn new(
        config: &ClientTlsConfig,
        peer: SocketAddr,
        max_body_len: u32,
    ) -> Result<Self, ClientError> {
        let name = config.server_name_for(peer.ip());
        let mut conn =
            ClientConnection::new(config.rustls().clone(), name).map_err(ClientError::Tls)?;
        // The core bounds what it queues itself (the caller's flushes); rustls is not to
        // refuse part of it.
        conn.set_buffer_limit(None);
        Ok(TlsLayer {
            conn,
            sniff: Sniff::Unknown,
            alpn_checked: false,
            peer,
            max_body_len,
        })
    }

    pub(super) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Feeds the ciphertext in `received` (all of it is consumed) and appends the plaintext
    /// it gives to `plaintext`.
    ///
    /// # Errors
    /// [`ClientError::NotTls`] when the server speaks plaintext courier (once its ERROR frame
    /// is whole); [`ClientError::Tls`] for a record that breaks TLS, an alert, a failed
    /// handshake or an ALPN protocol other than `courier/1` (the alert that says why, if
    /// any, is queued for [`TlsLayer::transmit`]).
    pub(super) fn receive(
        &mut self,
        received: &mut BytesMut,
        plaintext: &mut BytesMut,
    ) -> Result<Received, ClientError> {
        if let Some(result) = self.sniff(received) {
            return result;
        }
        while !received.is_empty() {
            // rustls takes what its buffer holds; what it has must be processed first. An
            // empty slice would tell it the stream ended, so it is never given one.
            let n = self
                .conn
                .read_tls(&mut &received[..])
                .map_err(|e| ClientError::Io(io::Error::new(e.kind(), format!("TLS read: {e}"))))?;
            received.advance(n);
            let state = self.conn.process_new_packets().map_err(ClientError::Tls)?;
            self.check_alpn()?;
            if self.take_plaintext(plaintext)? || state.peer_has_closed() {
                received.clear();
                return Ok(Received::Closed);
            }
        }
        Ok(Received::Open)
    }

    /// Classifies the first bytes; `Some` when the answer is known and final for this call.
    fn sniff(&mut self, received: &mut BytesMut) -> Option<Result<Received, ClientError>> {
        if let Sniff::Unknown = self.sniff {
            let n = received.len().min(MAGIC.len());
            if received[..n] != MAGIC[..n] {
                self.sniff = Sniff::Tls;
            } else if n < MAGIC.len() {
                // The magic may come in pieces.
                return Some(Ok(Received::Open));
            } else {
                // Within the core's body limit, as every frame it buffers: a larger one is
                // refused (NotTls without a status) instead of waited for.
                self.sniff = Sniff::Plaintext(Decoder::new(self.max_body_len));
            }
        }
        let Sniff::Plaintext(decoder) = &mut self.sniff else {
            return None;
        };
        // A plaintext courier server answers a ClientHello with an ERROR frame and closes.
        match decoder.decode(received) {
            Ok(None) => Some(Ok(Received::Open)),
            Ok(Some(Frame::Error { code, message, .. })) => {
                Some(Err(self.not_tls(Some(Status::new(code, message)))))
            }
            Ok(Some(_)) | Err(_) => Some(Err(self.not_tls(None))),
        }
    }

    /// The error for a server that speaks plaintext courier, with the ERROR frame's status
    /// if it decoded.
    pub(super) fn not_tls(&self, status: Option<Status>) -> ClientError {
        ClientError::NotTls {
            addr: self.peer,
            status,
        }
    }

    /// The stream ended without close_notify: the error when that cuts the handshake short
    /// (`None` after it: the frames' lengths and checksums, not TLS, tell a whole frame from
    /// a cut one, so that is an end of stream like any other).
    pub(super) fn eof_error(&self) -> Option<ClientError> {
        match self.sniff {
            Sniff::Plaintext(_) => Some(self.not_tls(None)),
            _ if self.conn.is_handshaking() => Some(ClientError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the server at {} closed the connection during the TLS handshake",
                    self.peer
                ),
            ))),
            _ => None,
        }
    }

    /// Once the handshake is over: a server that negotiated ALPN must have chosen
    /// `courier/1`.
    fn check_alpn(&mut self) -> Result<(), ClientError> {
        if self.alpn_checked || self.conn.is_handshaking() {
            return Ok(());
        }
        self.alpn_checked = true;
        match self.conn.alpn_protocol() {
            Some(protocol) if protocol != ALPN => {
                // rustls refuses a protocol it did not offer first; this holds whatever it
                // offered.
                Err(ClientError::Tls(rustls::Error::PeerMisbehaved(
                    rustls::PeerMisbehaved::SelectedUnofferedApplicationProtocol,
                )))
            }
            _ => Ok(()),
        }
    }

    /// Moves the plaintext rustls holds to `plaintext`; `true` when the server closed the
    /// session with close_notify.
    fn take_plaintext(&mut self, plaintext: &mut BytesMut) -> Result<bool, ClientError> {
        loop {
            let mut reader = self.conn.reader();
            match reader.fill_buf() {
                Ok([]) => return Ok(true),
                Ok(chunk) => {
                    let n = chunk.len();
                    plaintext.extend_from_slice(chunk);
                    reader.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(true),
                Err(e) => return Err(ClientError::Io(e)),
            }
        }
    }

    /// Encrypts `plaintext` (all of it is taken) and appends every TLS record rustls has to
    /// send (the handshake's, alerts, application data) to `out`.
    pub(super) fn transmit(&mut self, plaintext: &mut BytesMut, out: &mut BytesMut) {
        if !plaintext.is_empty() {
            // With no buffer limit (set in `new`) rustls takes every byte, before the
            // handshake ends too (it sends them once it does).
            let _ = self.conn.writer().write_all(plaintext);
            plaintext.clear();
        }
        let mut writer = out.writer();
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut writer) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Queues a close_notify alert (sent by the next [`TlsLayer::transmit`]).
    pub(super) fn close(&mut self) {
        self.conn.send_close_notify();
    }
}
