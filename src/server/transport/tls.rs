//! TLS over TCP with rustls, which is itself sans-IO: bytes from the socket go in through
//! `read_tls` and `process_new_packets`, plaintext comes out of its `reader`; plaintext goes in
//! through its `writer` and records come out through `write_tls` (rustls's `tls-server-mio`
//! example has the same shape).
//!
//! What this adds to rustls, for a server that faces hostile peers:
//!
//! - **A plaintext courier client on a TLS port** is told so: its first byte is the courier
//!   magic's `C` (0x43), which no TLS record starts with (record types are 20 to 24), so it
//!   is sent one plaintext ERROR frame (INVALID_ARGUMENT, "this port requires TLS") and
//!   closed, counted as `closed_not_tls` (`proto-spec/PROTOCOL.md`, TLS section).
//! - **Deadlines**: a handshake must complete, and after it each TLS record must arrive
//!   whole, within the frame timeout of its start, or the connection is closed
//!   (`closed_handshake_timeout`, `closed_frame_timeout`): slowloris at the record layer is
//!   cut as it is at the frame layer. The record boundaries are followed from each record's
//!   5-byte header (RFC 8446 Section 5.1: type, version, 16-bit length) as bytes are read.
//! - **Bounded work**: each read does at most one `read_tls` and one `process_new_packets`;
//!   one that yields no plaintext returns `Interrupted`, so the connection's read budget
//!   bounds the handshake and record work per loop turn.
//! - **Bounded output**: plaintext is taken for encryption only once the records before it
//!   are on the socket, at most [`WRITE_CHUNK`] at a time, so what waits inside rustls is at
//!   most one chunk; the rest stays in the connection's own output buffer, where its
//!   high-water mark, hard cap and write timeout apply.
//! - **Counting**: handshakes, and alerts sent and received by kind (`tls_alerts_sent_<kind>`,
//!   `tls_alerts_received_<kind>`, RFC 8446 Section 6).

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mio::net::TcpStream;
use rustls::{AlertDescription, PeerIncompatible, ServerConfig, ServerConnection};

use super::Established;
use crate::proto::{Code, MAGIC};
use crate::stats::{self, CloseCause, Stats, TlsAlert};

/// Plaintext handed to rustls for encryption at once, at most: 64 KiB (four full records).
pub(crate) const WRITE_CHUNK: usize = 64 * 1024;

/// The ERROR frame's message for a plaintext courier client on a TLS port.
pub(crate) const NOT_TLS_MESSAGE: &str = "this port requires TLS (ALPN courier/1)";

/// One TLS connection's transport. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct TlsTransport {
    socket: TcpStream,
    tls: ServerConnection,
    stats: Arc<Stats>,
    frame_timeout: Duration,
    write_timeout: Duration,
    /// Since when records held by rustls have found no room on the socket.
    write_stalled_since: Option<Instant>,
    /// When the handshake must be done by; `None` once it is.
    handshake_deadline: Option<Instant>,
    /// Where the bytes read so far stand in the record stream.
    records: Records,
    /// When the record now partly read began to arrive.
    record_started: Option<Instant>,
    /// Plaintext rustls holds, decrypted and not yet taken.
    plaintext: usize,
    /// The first byte was looked at (a plaintext courier client is told to use TLS).
    sniffed: bool,
    /// The peer sent close_notify, or the socket reached its end of stream.
    peer_closed: bool,
    /// close_notify was queued.
    close_sent: bool,
    /// The handshake completed and the loop has not been told yet.
    established: bool,
    /// Once the connection is done: when the records still held must be on the socket by.
    finish_deadline: Option<Instant>,
    failure: Option<CloseCause>,
}

impl TlsTransport {
    /// A TLS server connection over `socket`, accepted at `now`; the handshake and every
    /// record must complete within `frame_timeout`, and records waiting for room on the
    /// socket must make progress within `write_timeout`.
    ///
    /// # Errors
    /// rustls's, if `config` cannot start a connection.
    pub(crate) fn new(
        socket: TcpStream,
        config: Arc<ServerConfig>,
        stats: Arc<Stats>,
        (frame_timeout, write_timeout): (Duration, Duration),
        now: Instant,
    ) -> Result<Self, rustls::Error> {
        Ok(TlsTransport {
            socket,
            tls: ServerConnection::new(config)?,
            stats,
            frame_timeout,
            write_timeout,
            write_stalled_since: None,
            handshake_deadline: Some(now + frame_timeout),
            records: Records::default(),
            record_started: None,
            plaintext: 0,
            sniffed: false,
            peer_closed: false,
            close_sent: false,
            established: false,
            finish_deadline: None,
            failure: None,
        })
    }

    pub(super) fn socket(&mut self) -> &mut TcpStream {
        &mut self.socket
    }

    pub(super) fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    pub(super) fn failure(&self) -> Option<CloseCause> {
        self.failure
    }

    pub(super) fn has_pending(&self) -> bool {
        self.tls.wants_write()
    }

    /// The earliest of: the handshake's deadline, the partly received record's (counted only
    /// while the connection reads: a pause for a limit stops that clock, as it does not
    /// start one), the stalled write's, and the last flush's after the connection ended.
    pub(super) fn deadline(&self) -> Option<Instant> {
        if self.failure.is_some() {
            return None;
        }
        let record = self
            .record_started
            .map(|started| started + self.frame_timeout);
        let stalled = self
            .write_stalled_since
            .map(|since| since + self.write_timeout);
        [
            self.finish_deadline,
            self.handshake_deadline,
            record,
            stalled,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Called by every timer sweep: while the connection does not read, the clock of a
    /// partly received record is held where it is (moved on by the time that passed).
    pub(super) fn hold_record_clock(&mut self, reading: bool, now: Instant, last_sweep: Instant) {
        if reading {
            return;
        }
        if let Some(started) = &mut self.record_started {
            *started += now.saturating_duration_since(last_sweep.max(*started));
        }
    }

    pub(super) fn time_out(&mut self, now: Instant) -> CloseCause {
        let due = |at: Option<Instant>| at.is_some_and(|at| at <= now);
        let stalled = self
            .write_stalled_since
            .map(|since| since + self.write_timeout);
        let cause = if due(self.finish_deadline) || due(stalled) {
            CloseCause::WriteTimeout
        } else if self.handshake_deadline.is_some() {
            CloseCause::HandshakeTimeout
        } else {
            CloseCause::FrameTimeout
        };
        self.failure = Some(cause);
        cause
    }

    pub(super) fn take_established(&mut self) -> Option<Established> {
        if !std::mem::take(&mut self.established) {
            return None;
        }
        let identity = self
            .tls
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| crate::auth::certificate_identity(leaf));
        Some(Established { identity })
    }

    /// Reads once: plaintext rustls already holds, else one `read_tls` from the socket and
    /// one `process_new_packets`. See [`Transport::read`](super::Transport::read).
    pub(super) fn read(
        &mut self,
        buf: &mut BytesMut,
        limit: usize,
        short_read_drains: bool,
        drained: &mut bool,
        now: Instant,
    ) -> io::Result<usize> {
        let n = self.take_plaintext(buf, limit)?;
        if n > 0 {
            return Ok(n);
        }
        if self.peer_closed {
            *drained = true;
            return Ok(0);
        }
        if !self.sniffed && self.plaintext_courier_client(drained)? {
            return Err(io::Error::new(io::ErrorKind::InvalidData, NOT_TLS_MESSAGE));
        }
        let mut reader = Tracked {
            socket: &self.socket,
            records: &mut self.records,
            short: false,
        };
        match self.tls.read_tls(&mut reader) {
            Ok(0) => {
                *drained = true;
                self.peer_closed = true;
                if !self.tls.is_handshaking() {
                    // The stream ended without close_notify: a truncated TLS stream, a
                    // transport failure, not an orderly close (PROTOCOL.md Section 17.5).
                    self.failure = Some(CloseCause::Io);
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                return Ok(0);
            }
            Ok(_) => {
                // As for plain TCP: a read that got less than it asked for emptied the socket.
                if short_read_drains && reader.short {
                    *drained = true;
                }
            }
            Err(err) => {
                if err.kind() == io::ErrorKind::WouldBlock {
                    *drained = true;
                }
                return Err(err);
            }
        }
        if self.records.mid_record() {
            self.record_started.get_or_insert(now);
        } else {
            self.record_started = None;
        }
        match self.tls.process_new_packets() {
            Ok(state) => {
                self.plaintext = state.plaintext_bytes_to_read();
                if state.peer_has_closed() {
                    self.peer_closed = true;
                    self.stats.tls_alert_received(TlsAlert::CloseNotify);
                }
            }
            Err(err) => {
                self.count_error(&err);
                self.failure = Some(CloseCause::Tls);
                // The alert rustls queued for the peer; the socket may refuse it.
                let _ = self.write_pending();
                return Err(io::Error::new(io::ErrorKind::InvalidData, err));
            }
        }
        if self.handshake_deadline.is_some() && !self.tls.is_handshaking() {
            self.handshake_deadline = None;
            self.established = true;
            stats::inc(&self.stats.tls_handshakes);
        }
        match self.write_pending() {
            Err(err) if err.kind() != io::ErrorKind::WouldBlock => return Err(err),
            _ => {}
        }
        let n = self.take_plaintext(buf, limit)?;
        if self.plaintext > 0 {
            // Decrypted bytes wait beyond `limit`: the next read takes them, socket or not.
            *drained = false;
        }
        if n > 0 || self.peer_closed {
            return Ok(n);
        }
        // Progress, but no plaintext yet: the caller reads again (within its budget).
        Err(io::ErrorKind::Interrupted.into())
    }

    /// Moves up to `limit` bytes of decrypted plaintext into `buf`.
    fn take_plaintext(&mut self, buf: &mut BytesMut, limit: usize) -> io::Result<usize> {
        let want = self.plaintext.min(limit);
        if want == 0 {
            return Ok(0);
        }
        let len = buf.len();
        buf.resize(len + want, 0);
        let result = self.tls.reader().read(&mut buf[len..]);
        let n = *result.as_ref().unwrap_or(&0);
        buf.truncate(len + n);
        self.plaintext -= n.min(self.plaintext);
        match result {
            Ok(n) => Ok(n),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                self.plaintext = 0;
                Ok(0)
            }
            Err(err) => Err(err),
        }
    }

    /// Looks at the first byte without taking it: the courier magic's first byte means a
    /// plaintext courier client, which is sent a plaintext ERROR frame. Returns whether it
    /// was one.
    fn plaintext_courier_client(&mut self, drained: &mut bool) -> io::Result<bool> {
        let mut first = [0u8; 1];
        match self.socket.peek(&mut first) {
            Ok(0) => return Ok(false),
            Ok(_) => {}
            Err(err) => {
                if err.kind() == io::ErrorKind::WouldBlock {
                    *drained = true;
                }
                return Err(err);
            }
        }
        self.sniffed = true;
        if first[0] != MAGIC[0] {
            return Ok(false);
        }
        super::refuse(&mut self.socket, Code::INVALID_ARGUMENT, NOT_TLS_MESSAGE);
        // Take in what the client sent (up to 64 KiB), so that closing the socket sends a FIN,
        // not the reset that unread input causes, which could destroy the ERROR in flight.
        let mut sink = [0u8; 4096];
        for _ in 0..16 {
            match (&self.socket).read(&mut sink) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        self.failure = Some(CloseCause::NotTls);
        Ok(true)
    }

    /// Writes out the records rustls holds.
    ///
    /// # Errors
    /// The socket's; `WouldBlock` when it is full.
    pub(super) fn write_pending(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut &self.socket) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => self.write_stalled_since = None,
                Err(err) => {
                    if err.kind() == io::ErrorKind::WouldBlock {
                        // The clock is read only when a stall begins.
                        self.write_stalled_since.get_or_insert_with(Instant::now);
                    }
                    return Err(err);
                }
            }
        }
        self.write_stalled_since = None;
        Ok(())
    }

    /// Queues close_notify once, then writes out everything and shuts the socket's write
    /// side. `Ok(false)` while the socket is full.
    pub(super) fn shutdown_write(&mut self) -> io::Result<bool> {
        if !self.say_goodbye()? {
            return Ok(false);
        }
        self.socket.shutdown(std::net::Shutdown::Write)?;
        Ok(true)
    }

    /// The connection is done: sends close_notify (once) and what rustls holds. `Ok(false)`
    /// while records remain, which must be on the socket by `until` (else
    /// [`TlsTransport::deadline`] passes and the connection is closed as a write timeout).
    pub(super) fn finish(&mut self, until: Instant) -> io::Result<bool> {
        if self.failure.is_some() {
            return Ok(true);
        }
        let done = self.say_goodbye()?;
        if !done {
            self.finish_deadline.get_or_insert(until);
        }
        Ok(done)
    }

    /// Queues close_notify once (not to a peer gone mid-handshake) and writes out what
    /// rustls holds: `Ok(false)` while the socket is full.
    fn say_goodbye(&mut self) -> io::Result<bool> {
        if self.peer_closed_abruptly() {
            return Ok(true);
        }
        if !self.close_sent {
            self.close_sent = true;
            self.tls.send_close_notify();
            self.stats.tls_alert_sent(TlsAlert::CloseNotify);
        }
        match self.write_pending() {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Whether the socket ended before the handshake did (nothing to say to it).
    fn peer_closed_abruptly(&self) -> bool {
        self.peer_closed && self.tls.is_handshaking()
    }

    /// Encrypts up to [`WRITE_CHUNK`] bytes of `data` once the records before them are on
    /// the socket, and writes what it can. Returns the plaintext bytes taken.
    pub(super) fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_pending()?;
        let n = self
            .tls
            .writer()
            .write(&data[..data.len().min(WRITE_CHUNK)])?;
        match self.write_pending() {
            Err(err) if err.kind() != io::ErrorKind::WouldBlock => Err(err),
            _ => Ok(n),
        }
    }

    /// As [`TlsTransport::write`], over several slices.
    pub(super) fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match bufs.iter().find(|buf| !buf.is_empty()) {
            Some(buf) => self.write(buf),
            None => Ok(0),
        }
    }

    /// Counts the alert a TLS failure sent or received, as rustls sends them: certificate
    /// and message errors by rustls's own mapping, a client that offers no TLS 1.3 as
    /// protocol_version (rustls's `server/hs.rs`), the rest by the error's class.
    fn count_error(&self, err: &rustls::Error) {
        use rustls::Error;
        let sent = match err {
            Error::AlertReceived(alert) => {
                self.stats.tls_alert_received(alert_kind(*alert));
                return;
            }
            Error::InvalidCertificate(cert) => AlertDescription::from(cert.clone()),
            Error::InvalidMessage(message) => AlertDescription::from(*message),
            Error::NoCertificatesPresented => AlertDescription::CertificateRequired,
            Error::NoApplicationProtocol => AlertDescription::NoApplicationProtocol,
            Error::DecryptError => AlertDescription::BadRecordMac,
            Error::InappropriateMessage { .. } | Error::InappropriateHandshakeMessage { .. } => {
                AlertDescription::UnexpectedMessage
            }
            Error::PeerIncompatible(
                PeerIncompatible::Tls12NotOffered
                | PeerIncompatible::Tls12NotOfferedOrEnabled
                | PeerIncompatible::SupportedVersionsExtensionRequired
                | PeerIncompatible::ServerDoesNotSupportTls12Or13
                | PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig,
            ) => AlertDescription::ProtocolVersion,
            Error::PeerIncompatible(_) => AlertDescription::HandshakeFailure,
            Error::PeerMisbehaved(_) => AlertDescription::IllegalParameter,
            _ => AlertDescription::InternalError,
        };
        self.stats.tls_alert_sent(alert_kind(sent));
    }
}

/// The counted kind of a TLS alert.
fn alert_kind(alert: AlertDescription) -> TlsAlert {
    match alert {
        AlertDescription::CloseNotify => TlsAlert::CloseNotify,
        AlertDescription::UnexpectedMessage => TlsAlert::UnexpectedMessage,
        AlertDescription::BadRecordMac => TlsAlert::BadRecordMac,
        AlertDescription::HandshakeFailure => TlsAlert::HandshakeFailure,
        AlertDescription::BadCertificate => TlsAlert::BadCertificate,
        AlertDescription::UnsupportedCertificate => TlsAlert::UnsupportedCertificate,
        AlertDescription::CertificateRevoked => TlsAlert::CertificateRevoked,
        AlertDescription::CertificateExpired => TlsAlert::CertificateExpired,
        AlertDescription::CertificateUnknown => TlsAlert::CertificateUnknown,
        AlertDescription::IllegalParameter => TlsAlert::IllegalParameter,
        AlertDescription::UnknownCA => TlsAlert::UnknownCa,
        AlertDescription::DecodeError => TlsAlert::DecodeError,
        AlertDescription::DecryptError => TlsAlert::DecryptError,
        AlertDescription::ProtocolVersion => TlsAlert::ProtocolVersion,
        AlertDescription::InternalError => TlsAlert::InternalError,
        AlertDescription::MissingExtension => TlsAlert::MissingExtension,
        AlertDescription::UnrecognisedName => TlsAlert::UnrecognizedName,
        AlertDescription::CertificateRequired => TlsAlert::CertificateRequired,
        AlertDescription::NoApplicationProtocol => TlsAlert::NoApplicationProtocol,
        _ => TlsAlert::Other,
    }
}

/// Reads from the socket for rustls, following the record boundaries in what it reads, and
/// noting whether a read got less than it asked for.
struct Tracked<'a> {
    socket: &'a TcpStream,
    records: &'a mut Records,
    short: bool,
}

impl Read for Tracked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (&*self.socket).read(buf)?;
        self.short = n < buf.len();
        self.records.feed(&buf[..n.min(buf.len())]);
        Ok(n)
    }
}

/// Where a byte stream stands among TLS records (RFC 8446 Section 5.1): each is a 5-byte
/// header (content type, legacy version, 16-bit big-endian length) and that many bytes.
/// Only the boundaries are followed; rustls checks everything else.
#[derive(Debug, Default)]
struct Records {
    header: [u8; 5],
    /// Header bytes of the next record seen so far (0 to 4).
    header_len: u8,
    /// Body bytes of the current record still to come.
    body_left: u16,
}

impl Records {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let take = bytes.len().min(usize::from(self.body_left));
                bytes = &bytes[take..];
                // `take` is at most `body_left`, a u16.
                self.body_left -= take as u16;
                continue;
            }
            let have = usize::from(self.header_len);
            let take = bytes.len().min(5 - have);
            self.header[have..have + take].copy_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            // At most 5.
            self.header_len += take as u8;
            if self.header_len == 5 {
                self.header_len = 0;
                self.body_left = u16::from_be_bytes([self.header[3], self.header[4]]);
            }
        }
    }

    /// Whether a record has begun and not ended.
    fn mid_record(&self) -> bool {
        self.header_len > 0 || self.body_left > 0
    }
}

#[cfg(test)]
mod tests {
    use super::Records;

    #[test]
    fn records_follow_boundaries_across_reads() {
        let mut records = Records::default();
        assert!(!records.mid_record());
        // Header of a 3-byte record, split.
        records.feed(&[23, 3, 3]);
        assert!(records.mid_record());
        records.feed(&[0, 3, 1]);
        assert!(records.mid_record());
        records.feed(&[2, 3]);
        assert!(!records.mid_record());
        // Two whole records and the start of a third in one read.
        records.feed(&[23, 3, 3, 0, 1, 9, 23, 3, 3, 0, 0, 23]);
        assert!(records.mid_record());
        records.feed(&[3, 3, 0, 0]);
        assert!(!records.mid_record());
    }
}
