//! [`ClientBuilder`]: timeouts, limits, TLS and the token; opening a connection.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bytes::Bytes;

use super::{
    Client, ClientError, CoreConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT,
    DEFAULT_WRITE_TIMEOUT,
};
use crate::proto::DEFAULT_MAX_BODY_LEN;
use crate::tls::ClientTlsConfig;

/// Builds a [`Client`] with timeouts, limits, and optionally TLS and a token.
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    pub(super) connect_timeout: Duration,
    pub(super) read_timeout: Duration,
    pub(super) write_timeout: Duration,
    pub(super) max_body_len: u32,
    pub(super) tls: Option<ClientTlsConfig>,
    pub(super) token: Option<Token>,
}

/// A token for AUTH. Its `Debug` never shows it.
#[derive(Clone)]
pub(super) struct Token(pub(super) Bytes);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<{} bytes, redacted>)", self.0.len())
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_body_len: DEFAULT_MAX_BODY_LEN,
            tls: None,
            token: None,
        }
    }
}

impl ClientBuilder {
    /// Time to establish the TCP connection, per resolved address. Default 5 s. With
    /// [`tls`](Self::tls) the TLS handshake gets this time again, and with
    /// [`token`](Self::token) so does the answer to AUTH.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time a call without a deadline waits for its response. Default 30 s. A wait may run
    /// up to 1/64 (1.6%) past a deadline or this timeout, which saves a syscall per read.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Time the blocking client's writes may go without the socket taking a byte before
    /// they fail with [`ClientError::Timeout`](super::ClientError::Timeout), leaving the
    /// connection unusable. Default 30 s. While a write waits, the client reads what the
    /// server sent every 10 ms, so a pipeline longer than the buffers on the way (which
    /// makes the server stop reading until its answers are read) goes on. The async client
    /// waits on no write: its calls end at their deadlines.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Largest body sent or accepted, in bytes. Default 4 MiB, as the server's.
    pub fn max_body_len(mut self, max: u32) -> Self {
        self.max_body_len = max;
        self
    }

    /// Speaks TLS (1.3, ALPN `courier/1`; see [`crate::tls`]) on every connection, the
    /// reconnection after a GOAWAY included. After TCP connects, the handshake must finish
    /// within the connect timeout; the server's certificate must chain to `config`'s roots
    /// and carry its server name (by default the IP address connected to), and a server
    /// that negotiates ALPN must choose `courier/1`. Default: plaintext.
    pub fn tls(mut self, config: ClientTlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Proves an identity with this token (1 to 1,024 bytes) on every connection, the
    /// reconnection after a GOAWAY included: right after connecting (and the TLS handshake),
    /// the client sends admin AUTH (`proto-spec/SERVICES.md`) with the token's bytes and
    /// waits for its answer, within the connect timeout, before anything else. A refused
    /// token fails the connect with [`ClientError::Auth`]. [`Client::identity`] is then the
    /// name the server gave. Send tokens over TLS only: plaintext shows them to the network.
    /// Default: none (no AUTH).
    pub fn token(mut self, token: impl Into<Vec<u8>>) -> Self {
        self.token = Some(Token(Bytes::from(token.into())));
        self
    }

    /// Connects to the first address of `addr` that accepts. The addresses are resolved once,
    /// here: a reconnection after a GOAWAY tries the same list again, in the same order. With
    /// [`tls`](Self::tls), then runs the TLS handshake; with [`token`](Self::token), then
    /// authenticates. A TLS or AUTH failure is returned at once: the next address is only
    /// tried when TCP fails.
    ///
    /// # Errors
    /// [`ClientError::Timeout`] or [`ClientError::Io`] of the last address tried. With TLS:
    /// [`ClientError::Tls`] (the handshake failed), [`ClientError::NotTls`] (the server speaks
    /// plaintext courier on that port), [`ClientError::Timeout`] (the handshake did not
    /// finish within the connect timeout), [`ClientError::Io`]. With a token:
    /// [`ClientError::Auth`] (the server refused it), or the error of the AUTH call (for
    /// example [`ClientError::Tls`] when the server refused the client certificate, or
    /// [`ClientError::Timeout`] past the connect timeout).
    pub fn connect(self, addr: impl ToSocketAddrs) -> Result<Client, ClientError> {
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        Client::open(addrs, self)
    }

    /// Connects an [`AsyncClient`](super::AsyncClient) (feature `tokio`), as
    /// [`connect`](Self::connect) does a [`Client`]: to the first address of `addr` that
    /// accepts (resolved once, here, with `tokio::net::lookup_host`; a reconnection after a
    /// GOAWAY tries the same list again), then the TLS handshake and AUTH when set, each
    /// within the connect timeout. Then spawns the task that drives the connection, so it must
    /// run in a tokio runtime with IO and time enabled.
    ///
    /// # Errors
    /// As [`connect`](Self::connect); [`ClientError::Io`] when `addr` does not resolve.
    ///
    /// # Panics
    /// Outside a tokio runtime, or in one without IO or time enabled (as tokio's own
    /// `TcpStream::connect` and `sleep` do).
    #[cfg(feature = "tokio")]
    pub async fn connect_async(
        self,
        addr: impl tokio::net::ToSocketAddrs,
    ) -> Result<super::AsyncClient, ClientError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr).await?.collect();
        super::AsyncClient::open(addrs, self).await
    }

    /// The core's settings from these options.
    pub(super) fn core_config(&self) -> CoreConfig {
        let config = CoreConfig::default()
            .with_max_body_len(self.max_body_len)
            .with_default_timeout(self.read_timeout);
        match &self.tls {
            Some(tls) => config.with_tls(tls.clone()),
            None => config,
        }
    }
}
