//! The clients: [`Client`], blocking, on one `std::net::TcpStream` (plain, or TLS through
//! rustls); with feature `tokio`, `AsyncClient` for tokio applications, many tasks' calls
//! multiplexed on one connection. Both drive the same sans-IO [`ClientCore`] (module
//! [`core`]), which holds the protocol: request ids, calls in flight, deadlines, PING,
//! GOAWAY, AUTH and TLS; and both use the server's codec.
//!
//! # The blocking client
//!
//! [`Client::call`] sends one request and waits for its response. For pipelining,
//! [`Client::send`] queues requests (written in one batch by [`Client::flush`] or by the first
//! wait) and [`Client::wait`] collects each response by its request id, in any order: responses
//! that arrive for other requests are kept until they are asked for.
//!
//! When the server drains a connection with GOAWAY, the client finishes what the server still
//! owes on it and sends new requests on a new connection: see [`Client`].
//!
//! With [`ClientBuilder::tls`] every connection speaks TLS 1.3 (ALPN `courier/1`, see
//! [`crate::tls`]); with [`ClientBuilder::token`] every connection starts with admin AUTH,
//! which gives it the identity the token proves ([`Client::identity`]).
//!
//! # The async client
//!
//! With feature `tokio`, `AsyncClient::connect(addr).await` (or
//! `ClientBuilder::connect_async`, with every option of the builder) gives a client whose
//! clones share one connection: `client.call(&method, &request).await` from any number of
//! tasks, each response matched to its call by request id, deadlines, GOAWAY, TLS and AUTH as
//! above. One task per connection owns the socket; a call's future only queues its request
//! and waits. See `AsyncClient`'s documentation.
//!
//! # Several servers
//!
//! [`balance::Balancer`] (and, with feature `tokio`, `balance::AsyncBalancer`) spreads
//! requests over several servers by the power of two choices, or sends each to the server
//! that owns its key; takes servers out on failures, GOAWAY or an unanswered health-check
//! PING; and retries the requests known not processed, within a retry budget. See
//! [`balance`].
//!
//! # Examples
//!
//! ```no_run
//! use bytes::Bytes;
//! use courier_rpc::client::Client;
//! use courier_rpc::echo::ECHO;
//!
//! let mut client = Client::connect("127.0.0.1:7879")?;
//! let pending: Vec<_> = (0..100)
//!     .map(|i| client.send(&ECHO, &Bytes::from(format!("msg {i}"))))
//!     .collect::<Result<_, _>>()?;
//! for (i, p) in pending.into_iter().enumerate() {
//!     assert_eq!(client.wait(p)?, Bytes::from(format!("msg {i}")));
//! }
//! # Ok::<(), courier_rpc::client::ClientError>(())
//! ```
//!
//! Over TLS, with a token read from the environment (never from the command line, where
//! `ps` shows it):
//!
//! ```no_run
//! use bytes::Bytes;
//! use courier_rpc::client::Client;
//! use courier_rpc::echo::ECHO;
//! use courier_rpc::tls::ClientTlsConfig;
//!
//! let tls = ClientTlsConfig::builder().ca_file("ca.pem").server_name("kv.example").build()?;
//! let token = std::env::var("COURIER_TOKEN")?;
//! let mut client = Client::builder().tls(tls).token(token).connect("kv.example:7879")?;
//! println!("authenticated as {:?}", client.identity());
//! assert_eq!(client.call(&ECHO, &Bytes::from("hi"))?, Bytes::from("hi"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "tokio")]
mod asynchronous;
pub mod balance;
mod blocking;
mod builder;
mod caller;
pub mod core;
mod error;

use std::marker::PhantomData;
use std::time::{Duration, Instant};

#[cfg(feature = "tokio")]
pub use self::asynchronous::AsyncClient;
pub use self::blocking::Client;
pub use self::builder::ClientBuilder;
#[cfg(feature = "tokio")]
pub use self::caller::AsyncCall;
pub use self::caller::Caller;
pub use self::core::{ClientCore, CoreConfig};
pub use self::error::{ClientError, ProtocolError};
use crate::proto::{Metadata, Response, Status};
use crate::service::Message;

/// The longest wait the client keeps track of: `u32::MAX` milliseconds (about 49.7 days),
/// the longest deadline a frame carries (`proto-spec/PROTOCOL.md` Section 12). A longer
/// timeout or deadline (`Duration::MAX` for "no limit") is taken as this one.
pub const MAX_WAIT: Duration = Duration::from_millis(u32::MAX as u64);

/// `now` plus `wait`, with `wait` at most [`MAX_WAIT`], so that no instant overflows.
pub(crate) fn later(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait.min(MAX_WAIT)).unwrap_or(now)
}

/// Default time to establish a connection: 5 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time a call waits for its response when it sets no deadline: 30 s.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time the blocking client's writes may go without progress: 30 s.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Per-call options: `CallOptions::default()` (no deadline, no metadata), then
/// [`CallOptions::with_deadline`] and [`CallOptions::with_metadata`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use courier_rpc::{CallOptions, Metadata};
///
/// let metadata = Metadata::from_pairs([("trace-id", "4bf92f35")])?;
/// let options = CallOptions::default()
///     .with_deadline(Duration::from_millis(250))
///     .with_metadata(metadata);
/// assert_eq!(options.deadline, Some(Duration::from_millis(250)));
/// # Ok::<(), courier_rpc::proto::MetadataError>(())
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct CallOptions {
    /// How long the client waits; sent to the server as the frame's deadline in milliseconds
    /// (rounded up, at least 1, capped at `u32::MAX`: `proto-spec/PROTOCOL.md` Section 12),
    /// so the server does not start the request once it has passed. `Some(Duration::ZERO)`
    /// has passed already: the request is not sent, and fails with [`ClientError::Timeout`].
    /// `None`: no deadline is sent and the client waits up to its read timeout.
    pub deadline: Option<Duration>,
    /// Metadata entries sent with the request.
    pub metadata: Metadata,
}

impl CallOptions {
    /// These options with `deadline` (see [`CallOptions::deadline`]).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// These options with `metadata` sent with the request.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }
}

/// A response that was sent for and not yet collected: pass it to [`Client::wait`], or to
/// [`Client::abandon`] to give it up. One dropped otherwise keeps its answer in the client
/// until the client is dropped ([`ClientCore::held`] counts it).
#[must_use = "a sent request's response is only read by Client::wait (or dropped by Client::abandon)"]
#[derive(Debug)]
pub struct Pending<Resp> {
    request_id: u64,
    types: PhantomData<fn() -> Resp>,
}

impl<Resp> Pending<Resp> {
    /// The request id the request was sent with.
    pub fn request_id(&self) -> u64 {
        self.request_id
    }
}

impl<Resp> Pending<Resp> {
    pub(crate) fn new(request_id: u64) -> Self {
        Pending {
            request_id,
            types: PhantomData,
        }
    }
}

/// A call's typed result from its response: an OK response's message decoded as `Resp`, a
/// non-OK one as [`ClientError::Status`].
pub(crate) fn typed_response<Resp: Message>(
    response: Result<Response, ClientError>,
) -> Result<Resp, ClientError> {
    let response = response?;
    if response.code.is_ok() {
        Resp::decode(response.payload).map_err(|e| ClientError::Protocol(ProtocolError::Message(e)))
    } else {
        let message = response.message().unwrap_or_default().to_owned();
        Err(ClientError::Status(Status::new(response.code, message)))
    }
}
