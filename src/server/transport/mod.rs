//! Transports: what carries a connection's bytes between its socket and its sans-IO
//! [`Connection`](crate::connection::Connection). The event loop reads, writes, shuts down and
//! times out through a [`Transport`] and never looks inside it, so the connection's state
//! machine is the same over plain TCP ([`plain`]) and over TLS ([`tls`]); a new transport is
//! one new file and one variant here.
//!
//! Every transport reads into the connection's buffer with the same contract as
//! [`Connection::read_with`](crate::connection::Connection::read_with) (at most `limit`
//! bytes, `Ok(0)` for the end of stream), and reports through `drained` when its socket had
//! nothing more to give, since mio's readiness is edge-triggered. A transport that did work
//! without producing bytes (a TLS handshake message, a partial record) returns
//! `Interrupted`: the caller reads again, and each read counts against the connection's
//! read budget for the turn, which bounds the work one connection gets per turn.

mod plain;
mod tls;

use std::io::{self, Write};
use std::net::Shutdown;
use std::time::Instant;

use bytes::BytesMut;
use mio::net::TcpStream;

use crate::auth::Identity;
use crate::proto::{Code, Encoder, FrameKind};
use crate::stats::CloseCause;

pub(super) use tls::TlsTransport;

/// A connection's transport: plain TCP or TLS over it.
#[derive(Debug)]
pub(super) enum Transport {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS (rustls) over TCP. Boxed: rustls's state is a few KiB, and a plain connection
    /// pays only for the pointer.
    Tls(Box<TlsTransport>),
}

/// What a transport learnt when its handshake completed.
#[derive(Debug)]
pub(super) struct Established {
    /// The identity the peer's verified certificate gives, if it sent one.
    pub(super) identity: Option<Identity>,
}

impl Transport {
    /// The socket, to register with the poller.
    pub(super) fn socket(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(stream) => stream,
            Transport::Tls(tls) => tls.socket(),
        }
    }

    /// Reads once into `buf` (at most `limit` bytes). `short_read_drains`: whether a read
    /// that fills less than its room proves the socket drained (plain TCP, unless the poller
    /// reported the end of stream or urgent data). Sets `drained` when the socket has nothing
    /// more.
    ///
    /// # Errors
    /// The socket's error (`WouldBlock` when it has nothing); `Interrupted` when work was done
    /// but no byte is ready yet (read again); `InvalidData` when TLS failed, with
    /// [`Transport::failure`] saying how.
    pub(super) fn read(
        &mut self,
        buf: &mut BytesMut,
        limit: usize,
        short_read_drains: bool,
        drained: &mut bool,
        now: Instant,
    ) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => plain::read(stream, buf, limit, short_read_drains, drained),
            Transport::Tls(tls) => tls.read(buf, limit, short_read_drains, drained, now),
        }
    }

    /// Writes out what the transport itself still holds (TLS records already encrypted).
    ///
    /// # Errors
    /// The socket's error; `WouldBlock` when it is full.
    pub(super) fn flush_pending(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(tls) => tls.write_pending(),
        }
    }

    /// Whether the transport holds bytes for the socket (so the loop must wait for it to be
    /// writable).
    pub(super) fn has_pending(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(tls) => tls.has_pending(),
        }
    }

    /// Ends the write side: TLS sends close_notify first. `Ok(false)` when the socket is full
    /// and this must be called again once it is writable.
    ///
    /// # Errors
    /// The socket's error.
    pub(super) fn shutdown_write(&mut self) -> io::Result<bool> {
        match self {
            Transport::Plain(stream) => stream.shutdown(std::net::Shutdown::Write).map(|()| true),
            Transport::Tls(tls) => tls.shutdown_write(),
        }
    }

    /// The connection is done: a last flush of what the transport holds (TLS: close_notify
    /// and the records not yet written). `Ok(false)` while some remain: call again when the
    /// socket is writable; they must be out by `until`, else [`Transport::deadline`] passes.
    ///
    /// # Errors
    /// The socket's error.
    pub(super) fn finish(&mut self, until: Instant) -> io::Result<bool> {
        match self {
            Transport::Plain(_) => Ok(true),
            Transport::Tls(tls) => tls.finish(until),
        }
    }

    /// When the transport gives up on its peer: a TLS handshake or record not complete
    /// within the frame timeout, or TLS records that found no room on the socket within the
    /// write timeout.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self {
            Transport::Plain(_) => None,
            Transport::Tls(tls) => tls.deadline(),
        }
    }

    /// Why the transport failed, if it did: it then closes the connection with this cause.
    pub(super) fn failure(&self) -> Option<CloseCause> {
        match self {
            Transport::Plain(_) => None,
            Transport::Tls(tls) => tls.failure(),
        }
    }

    /// Times the transport out at `now` (its [`Transport::deadline`] passed): the cause to
    /// close with.
    pub(super) fn time_out(&mut self, now: Instant) -> CloseCause {
        match self {
            Transport::Plain(_) => CloseCause::FrameTimeout,
            Transport::Tls(tls) => tls.time_out(now),
        }
    }

    /// Called by every timer sweep with whether the connection reads now: a transport's
    /// clock of partly received input stops while it does not (see [`Transport::deadline`]).
    pub(super) fn hold_clocks(&mut self, reading: bool, now: Instant, last_sweep: Instant) {
        if let Transport::Tls(tls) = self {
            tls.hold_record_clock(reading, now, last_sweep);
        }
    }

    /// Whether a handshake is still under way (the loop bounds how many it serves per turn).
    pub(super) fn is_handshaking(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(tls) => tls.is_handshaking(),
        }
    }

    /// What the handshake established, once, the first time this is called after it
    /// completed.
    pub(super) fn take_established(&mut self) -> Option<Established> {
        match self {
            Transport::Plain(_) => None,
            Transport::Tls(tls) => tls.take_established(),
        }
    }
}

/// Refuses a peer before anything else is said: one plaintext ERROR frame (`code`, request
/// id 0, `message`) in one non-blocking write, then the write side shut. The caller drops
/// the socket.
pub(super) fn refuse(socket: &mut TcpStream, code: Code, message: &str) {
    let mut frame = BytesMut::new();
    Encoder::new(1024).encode_simple(&mut frame, FrameKind::Error, 0, code, message);
    let _ = socket.write(&frame);
    let _ = socket.shutdown(Shutdown::Write);
}

/// Writes go through the transport: plain bytes to the socket, or encrypted by TLS first.
impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.write(buf),
            Transport::Tls(tls) => tls.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.write_vectored(bufs),
            Transport::Tls(tls) => tls.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_pending()
    }
}
