//! One connection of the blocking client: a `std::net::TcpStream` driving a [`ClientCore`]
//! with blocking reads and writes under the socket's timeouts.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::client::builder::ClientBuilder;
use crate::client::core::ClientCore;
use crate::client::{later, ClientError};

/// Bytes read per `read` call at least: 16 KiB.
const READ_CHUNK: usize = 16 * 1024;

/// Reads at most, each time a waiting write reads what the server sent.
const READS_WHILE_WRITING: usize = 64;

/// What one read gave.
enum Read {
    /// Bytes, now in the core's receive buffer.
    Data,
    /// The end of the stream.
    Eof,
    /// The deadline passed.
    TimedOut,
    /// Nothing yet (a signal, or the socket's timeout was shorter than the deadline): read
    /// again.
    Nothing,
}

/// The longest one blocking write waits before the writer reads what the server sent: 10 ms
/// (the socket's `SO_SNDTIMEO`, or the write timeout when that is shorter).
const WRITE_SLICE: Duration = Duration::from_millis(10);

/// A socket and the protocol state of the connection on it.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) socket: TcpStream,
    pub(super) core: ClientCore,
    /// The read timeout the socket has now (`None`: unknown or to be set).
    socket_timeout: Option<Duration>,
    /// How long a write may make no progress before it fails with
    /// [`ClientError::Timeout`]: the builder's write timeout.
    write_timeout: Duration,
}

impl Conn {
    /// Connects to the first of `addrs` that accepts; with TLS runs the handshake, with a
    /// token authenticates (each within the connect timeout). Its first request id is
    /// `first_id`. A TLS or AUTH failure is returned at once: the next address is only tried
    /// when TCP fails.
    pub(super) fn open(
        config: &ClientBuilder,
        addrs: &[SocketAddr],
        first_id: u64,
    ) -> Result<Conn, ClientError> {
        let mut last_err = io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to");
        for &addr in addrs {
            match TcpStream::connect_timeout(&addr, config.connect_timeout) {
                Ok(socket) => {
                    socket.set_nodelay(true)?;
                    socket.set_write_timeout(Some(
                        config
                            .write_timeout
                            .min(WRITE_SLICE)
                            .max(Duration::from_millis(1)),
                    ))?;
                    let core = ClientCore::new(&config.core_config(), addr, first_id)?;
                    let mut conn = Conn {
                        socket,
                        core,
                        socket_timeout: None,
                        write_timeout: config.write_timeout,
                    };
                    if let Err(err) = conn.start(config) {
                        conn.close();
                        return Err(err);
                    }
                    return Ok(conn);
                }
                Err(err) => last_err = err,
            }
        }
        Err(last_err.into())
    }

    fn start(&mut self, config: &ClientBuilder) -> Result<(), ClientError> {
        if self.core.is_tls() {
            self.handshake(later(Instant::now(), config.connect_timeout))?;
        }
        if let Some(token) = &config.token {
            self.authenticate(&token.0, config.connect_timeout)?;
        }
        Ok(())
    }

    /// Runs the TLS handshake until it ends or `deadline` passes; the client's Finished is
    /// written before this returns, not with the first request.
    fn handshake(&mut self, deadline: Instant) -> Result<(), ClientError> {
        loop {
            self.flush()?;
            if !self.core.is_handshaking() {
                return Ok(());
            }
            match self.read_once(deadline)? {
                Read::Data => {
                    if let Err(err) = self.core.handle_received(Instant::now()) {
                        // The alert that says why, if rustls queued one; the error is what
                        // counts.
                        let _ = self.flush();
                        return Err(err);
                    }
                }
                Read::Eof => {
                    self.core.handle_eof()?;
                    return Err(ClientError::Closed);
                }
                Read::TimedOut => return Err(ClientError::Timeout),
                Read::Nothing => {}
            }
        }
    }

    /// Sends AUTH with `token` and waits for its answer up to `timeout`
    /// (`proto-spec/SERVICES.md`, admin.Auth). On failure nothing of the AUTH frame, which
    /// holds the token, stays queued.
    pub(super) fn authenticate(
        &mut self,
        token: &[u8],
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let result = self.try_authenticate(token, timeout);
        if result.is_err() {
            self.core.discard_unsent();
        }
        result
    }

    fn try_authenticate(&mut self, token: &[u8], timeout: Duration) -> Result<(), ClientError> {
        let id = self.core.start_auth(token, timeout, Instant::now())?;
        self.flush()?;
        loop {
            if let Some(result) = self.core.finish_auth(id) {
                return result;
            }
            let Some(deadline) = self.core.deadline(id) else {
                return Err(ClientError::Closed);
            };
            self.read_some(deadline)?;
        }
    }

    /// Writes every queued byte. While the socket takes nothing, it reads what the server
    /// sent into the core every [`WRITE_SLICE`]: a server stops reading a connection whose
    /// answers the client does not read (its high-water mark), so a client that only wrote
    /// a long pipeline would wait for a server waiting for it.
    ///
    /// # Errors
    /// [`ClientError::Timeout`] when the socket takes no byte for the write timeout,
    /// [`ClientError::Io`], [`ClientError::Closed`] when the socket takes nothing or the
    /// stream ends, or the error the server's bytes broke the connection with; the
    /// connection is then unusable.
    pub(super) fn flush(&mut self) -> Result<(), ClientError> {
        let mut stalled_since = None;
        loop {
            let bytes = self.core.transmit();
            if bytes.is_empty() {
                return Ok(());
            }
            match (&self.socket).write(bytes) {
                Ok(0) => {
                    self.core.handle_io_error();
                    return Err(ClientError::Closed);
                }
                Ok(n) => {
                    self.core.advance_transmit(n);
                    stalled_since = None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    let since = *stalled_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.write_timeout {
                        self.core.handle_io_error();
                        return Err(ClientError::Timeout);
                    }
                    self.read_available()?;
                }
                Err(e) => {
                    self.core.handle_io_error();
                    return Err(e.into());
                }
            }
        }
    }

    /// Reads what the socket holds now, without waiting, into the core (a write is waiting
    /// for the server, which may be waiting for its answers to be read). Each read is
    /// processed before the next, so the receive buffer holds what one read gives at most.
    /// `recv(2)` with `MSG_DONTWAIT`: the socket stays blocking, with no `fcntl` around it.
    fn read_available(&mut self) -> Result<(), ClientError> {
        let result = self.read_available_now();
        // This driver looks calls up by id.
        self.core.completed().for_each(drop);
        result
    }

    fn read_available_now(&mut self) -> Result<(), ClientError> {
        for _ in 0..READS_WHILE_WRITING {
            let buf = self.core.receive_buffer();
            buf.reserve(READ_CHUNK);
            match crate::sys::read_spare_nowait(&self.socket, buf, usize::MAX) {
                Ok(0) => {
                    self.core.handle_eof()?;
                    // Nothing more can be written on a stream the server ended.
                    return Err(ClientError::Closed);
                }
                Ok(_) => self.core.handle_received(Instant::now())?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.core.handle_io_error();
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// [`Conn::read_available`], then the PONGs (or the alert) it queued written: what the
    /// server sent while the connection sat idle, a GOAWAY and the end of the stream
    /// included.
    ///
    /// # Errors
    /// The connection's error when it is broken or has ended.
    pub(super) fn read_nowait(&mut self) -> Result<(), ClientError> {
        // The core keeps what went wrong; `check_usable` below reports it.
        drop(self.read_available());
        if self.core.wants_transmit() && !self.core.is_ended() {
            // An alert after a broken stream goes out best effort.
            let flushed = self.flush();
            if self.core.check_usable().is_ok() {
                flushed?;
            }
        }
        self.core.check_usable()
    }

    /// One read (waiting until `deadline` at most), then what it gives to the core: the
    /// frames it completes, the end of the stream, or the calls past their deadline. A PONG
    /// the server asked for is written at once. The calls' outcomes wait in the core.
    ///
    /// # Errors
    /// A socket error (the calls wait on; a reset socket reads its end next), or the error
    /// of writing a PONG.
    pub(super) fn read_some(&mut self, deadline: Instant) -> Result<(), ClientError> {
        match self.read_once(deadline)? {
            Read::Data => {
                if self.core.handle_received(Instant::now()).is_err() {
                    // The calls ended with the error; an alert, if any, goes out (best effort).
                    let _ = self.flush();
                }
            }
            // An end of stream in the handshake is the handshake's error, not a call's.
            Read::Eof => drop(self.core.handle_eof()),
            Read::TimedOut => self.core.handle_timeout(Instant::now()),
            Read::Nothing => {}
        }
        // This driver looks calls up by id.
        self.core.completed().for_each(drop);
        if self.core.wants_transmit() && !self.core.is_ended() {
            self.flush()?;
        }
        Ok(())
    }

    fn read_once(&mut self, deadline: Instant) -> Result<Read, ClientError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok(Read::TimedOut);
        }
        // Setting the socket's timeout is a syscall, so it is changed only when the current one
        // would let this read wait more than 1/64 past the deadline. A shorter one just ends a
        // read early (below), and the caller reads again.
        if self
            .socket_timeout
            .is_none_or(|t| t > remaining + remaining / 64)
        {
            self.socket.set_read_timeout(Some(remaining))?;
            self.socket_timeout = Some(remaining);
        }
        // At least READ_CHUNK of room, more while a large frame arrives (the decoder reserves
        // ahead); the read fills as much of it as the socket holds, without zero-filling.
        let buf = self.core.receive_buffer();
        buf.reserve(READ_CHUNK);
        match crate::sys::read_spare(&self.socket, buf, usize::MAX) {
            Ok(0) => Ok(Read::Eof),
            Ok(_) => Ok(Read::Data),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Read::Nothing),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if Instant::now() >= deadline {
                    return Ok(Read::TimedOut);
                }
                // The socket's timeout was shorter than this deadline: set it afresh next read.
                self.socket_timeout = None;
                Ok(Read::Nothing)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Ends the connection: over TLS a close_notify alert first (best effort, within the
    /// write timeout), then both directions of the socket are shut down.
    pub(super) fn close(&mut self) {
        self.core.close();
        let _ = self.flush();
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

impl Drop for Conn {
    /// A connection dropped without [`Conn::close`]: over TLS the close_notify alert a
    /// client sends when done (`proto-spec/PROTOCOL.md` Section 17) goes out if the socket
    /// takes it at once, after whatever was queued before it; a drop never waits on the
    /// socket. The socket closes as it is dropped.
    fn drop(&mut self) {
        if self.core.is_ended() || !self.core.is_tls() {
            return;
        }
        self.core.close();
        if self.socket.set_nonblocking(true).is_ok() {
            while self.core.wants_transmit() {
                match self.socket.write(self.core.transmit()) {
                    Ok(n) if n > 0 => self.core.advance_transmit(n),
                    _ => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use bytes::Bytes;

    use super::*;
    use crate::echo::ECHO;
    use crate::proto::Metadata;

    #[test]
    fn a_failed_auth_leaves_no_token_in_the_send_buffer_or_in_debug() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let socket = TcpStream::connect(addr).expect("connect");
        let _server = listener.accept().expect("accept");
        // Every write fails at once (EPIPE): the AUTH frame stays unsent.
        socket.shutdown(Shutdown::Write).expect("shutdown");
        let token = "secret-token-8d1f";
        let config = ClientBuilder::default().token(token);
        assert!(!format!("{config:?}").contains(token), "{config:?}");
        let core = ClientCore::new(&config.core_config(), addr, 1).expect("core");
        let mut conn = Conn {
            socket,
            core,
            socket_timeout: None,
            write_timeout: Duration::from_secs(5),
        };

        let err = conn
            .authenticate(token.as_bytes(), Duration::from_secs(5))
            .expect_err("the write fails");
        assert!(matches!(err, ClientError::Io(_)), "{err:?}");
        assert!(!conn.core.wants_transmit());
        let debug = format!("{conn:?}");
        assert!(!debug.contains(token), "{debug}");
        assert!(debug.contains("write_buffered: 0"), "{debug}");
    }

    #[test]
    fn debug_shows_the_sizes_of_the_buffers_never_their_bytes() {
        let addr: SocketAddr = "127.0.0.1:9".parse().expect("address");
        let mut core =
            ClientCore::new(&ClientBuilder::default().core_config(), addr, 1).expect("core");
        let secret = "secret-token-8d1f";
        core.start_request(
            &ECHO,
            &Bytes::from(secret),
            None,
            &Metadata::new(),
            Instant::now(),
        )
        .expect("queued");
        core.receive_buffer().extend_from_slice(secret.as_bytes());
        for debug in [format!("{core:?}"), format!("{core:#?}")] {
            assert!(!debug.contains(secret), "{debug}");
        }
        // The 36-byte header and the 17-byte body.
        assert!(
            format!("{core:?}").contains("write_buffered: 53"),
            "{core:?}"
        );
    }
}
