//! [`AsyncClient`]: the client for tokio applications (feature `tokio`), a driver of
//! [`ClientCore`] on one socket at a time, shared by every task that calls through it.

mod conn;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use self::conn::{Connection, Start};
use super::error::draining;
use super::{later, typed_response, CallOptions, ClientBuilder, ClientCore, ClientError};
use crate::service::{Message, Method};

/// Times a call looks for a connection that takes it, before it returns UNAVAILABLE: the
/// current one, then (after its GOAWAY) the one replacing it, twice, as a GOAWAY can arrive
/// between finding the connection and queuing the request.
const START_ATTEMPTS: usize = 4;

/// An async client connection for tokio: `call(...).await` from any number of tasks, all
/// multiplexed on one connection by request id. Clones are cheap and share the connection.
///
/// Needs feature `tokio`, and a tokio runtime with IO and time enabled
/// (`#[tokio::main]`'s, or a `Builder` with `enable_all`): connecting spawns a task that
/// drives the socket.
///
/// # How calls share the connection
///
/// Each connection has one task, spawned with `tokio::spawn` when it opens, that owns the
/// socket: it writes the requests every caller has queued (many calls made at once leave in
/// one write), reads the responses in whatever order the server sends them, and wakes the
/// task waiting for each. A call's future does no IO: it queues its request and waits for its
/// response. Dropping that future (a `select!` that took another branch, an aborted task, a
/// timeout around it) abandons the call safely: the client forgets it, and its response, if
/// it comes later, is dropped. The request may still be processed by the server.
///
/// The connection task ends, closing the socket, when every clone of the client is dropped
/// and no call waits, when the server closes the connection, and on
/// [`AsyncClient::close`].
///
/// # Backpressure
///
/// Requests wait in memory until the socket takes them, up to a high-water mark of 1 MiB
/// queued and not yet written (the courier server's own mark for a connection's output).
/// Above it, a new call waits before it queues its request, until the connection task has
/// written below the mark, so a server that reads slower than calls come slows the callers
/// down instead of growing the queue. A call waiting so has sent nothing. Its deadline counts
/// from the call, the wait included (without one, the read timeout bounds the wait, and again
/// the answer once the request is queued); a call whose deadline passes while it waits fails
/// with [`ClientError::Timeout`], unsent. Dropping its future
/// leaves nothing behind. A server that stops reading altogether keeps the queued requests;
/// their calls fail at their deadlines.
///
/// # Deadlines
///
/// A call waits until its [`CallOptions::deadline`] (sent to the server too), or the
/// [`read_timeout`](ClientBuilder::read_timeout) (default 30 s) when it sets none, then fails
/// with [`ClientError::Timeout`]; the connection goes on serving the other calls. The
/// builder's [`write_timeout`](ClientBuilder::write_timeout) is the blocking client's: here
/// no caller waits on a write, and a request the server does not read in time fails at its
/// deadline.
///
/// # GOAWAY and reconnecting
///
/// As the blocking [`Client`](super::Client) (`proto-spec/PROTOCOL.md` Section 14): after a
/// GOAWAY, calls with a request id above its last id fail with [`ClientError::Status`]
/// UNAVAILABLE (not processed, safe to make again); calls up to it are still answered on the
/// old connection, whose task runs until no call waits on it, then closes it. The next new
/// call (or [`ping`](AsyncClient::ping)) opens a new connection to the addresses resolved at
/// connect, with the same options (TLS handshake and AUTH included), request ids going on
/// from the old connection's; when many tasks call at once, one connects and the others wait
/// for it. If the new connection cannot be made, that call fails with the connect error and
/// the next one tries again. A call's deadline (or the read timeout) bounds its wait for the
/// new connection too: past it, the call fails with [`ClientError::Timeout`], unsent.
///
/// A connection that ends without a GOAWAY, or with an ERROR frame, a protocol error or a TLS
/// error, is broken: every call waiting on it and every later call fails with its error
/// ([`ClientError::Closed`], [`ClientError::Connection`], [`ClientError::Protocol`],
/// [`ClientError::Tls`]), and a new client is needed.
///
/// # Examples
///
/// A hundred tasks calling through one client, on one connection:
///
/// ```no_run
/// use courier_rpc::client::AsyncClient;
/// use courier_rpc::echo::ECHO;
/// use courier_rpc::Bytes;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = AsyncClient::connect("127.0.0.1:7879").await?;
/// let mut tasks = Vec::new();
/// for i in 0..100 {
///     let client = client.clone();
///     tasks.push(tokio::spawn(async move {
///         let body = Bytes::from(format!("task {i}"));
///         let echoed = client.call(&ECHO, &body).await?;
///         assert_eq!(echoed, body);
///         Ok::<_, courier_rpc::ClientError>(())
///     }));
/// }
/// for task in tasks {
///     task.await??;
/// }
/// # Ok(())
/// # }
/// ```
///
/// With a deadline, over TLS with a token (the same [`ClientBuilder`] as the blocking
/// client's):
///
/// ```no_run
/// use std::time::Duration;
/// use courier_rpc::client::{AsyncClient, CallOptions, ClientError};
/// use courier_rpc::echo::ECHO;
/// use courier_rpc::tls::ClientTlsConfig;
/// use courier_rpc::Bytes;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tls = ClientTlsConfig::builder().ca_file("ca.pem").server_name("kv.example").build()?;
/// let token = std::env::var("COURIER_TOKEN")?;
/// let client = AsyncClient::builder()
///     .tls(tls)
///     .token(token)
///     .connect_async("kv.example:7879")
///     .await?;
/// println!("authenticated as {:?}", client.identity());
/// let options = CallOptions::default().with_deadline(Duration::from_millis(250));
/// match client.call_with(&ECHO, &Bytes::from("hi"), &options).await {
///     Ok(body) => println!("{body:?}"),
///     Err(ClientError::Timeout) => println!("no answer within 250 ms"),
///     Err(e) => return Err(e.into()),
/// }
/// # Ok(())
/// # }
/// ```
///
/// `Debug` shows the current connection's state and the sizes of its buffers, never their
/// bytes (nor the token).
#[derive(Clone)]
pub struct AsyncClient {
    shared: Arc<Shared>,
}

/// What the clones of one client share.
struct Shared {
    /// The connection new calls go to.
    current: Mutex<Arc<Connection>>,
    /// Held by the task that replaces a drained connection; the others wait on it.
    reconnecting: tokio::sync::Mutex<()>,
    /// [`AsyncClient::close`] was called: no call starts again, not even on a new connection.
    closed: AtomicBool,
    /// What `connect` resolved: where a reconnection after GOAWAY goes.
    addrs: Vec<SocketAddr>,
    /// The options the client was built with, for a reconnection.
    config: ClientBuilder,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last clone is gone: the connection ends once no call waits on it.
        self.current
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .release();
    }
}

impl fmt::Debug for AsyncClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncClient")
            .field("connection", &self.current())
            .field("addrs", &self.shared.addrs)
            .field("config", &self.shared.config)
            .finish()
    }
}

impl AsyncClient {
    /// A builder with every default; finish with
    /// [`connect_async`](ClientBuilder::connect_async).
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Connects with every default (no TLS, no token, 5 s to connect, 30 s per call).
    ///
    /// # Errors
    /// As [`ClientBuilder::connect_async`].
    ///
    /// # Panics
    /// Outside a tokio runtime with IO and time enabled, as
    /// [`ClientBuilder::connect_async`].
    pub async fn connect(addr: impl tokio::net::ToSocketAddrs) -> Result<AsyncClient, ClientError> {
        ClientBuilder::default().connect_async(addr).await
    }

    pub(super) async fn open(
        addrs: Vec<SocketAddr>,
        config: ClientBuilder,
    ) -> Result<AsyncClient, ClientError> {
        let conn = Connection::open(&config, &addrs, 1).await?;
        Ok(AsyncClient {
            shared: Arc::new(Shared {
                current: Mutex::new(conn),
                reconnecting: tokio::sync::Mutex::new(()),
                closed: AtomicBool::new(false),
                addrs,
                config,
            }),
        })
    }

    /// The connection new calls go to.
    fn current(&self) -> Arc<Connection> {
        Arc::clone(
            &self
                .shared
                .current
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// The address of the server on the current connection.
    pub fn peer_addr(&self) -> SocketAddr {
        self.current().with_core(ClientCore::peer_addr)
    }

    /// The identity's name the server gave in its answer to AUTH on the current connection
    /// ([`ClientBuilder::token`]); `None` without a token. A certificate's identity (mutual
    /// TLS) is the server's to tell: admin WHOAMI.
    pub fn identity(&self) -> Option<String> {
        self.current()
            .with_core(|core| core.identity().map(str::to_owned))
    }

    /// Whether the server sent GOAWAY on the current connection (it is draining): the next
    /// call goes out on a new connection (see [`AsyncClient`]).
    pub fn is_draining(&self) -> bool {
        self.current().with_core(ClientCore::is_draining)
    }

    /// Whether the connection speaks TLS ([`ClientBuilder::tls`]).
    pub fn is_tls(&self) -> bool {
        self.current().with_core(ClientCore::is_tls)
    }

    /// Why the current connection can take no new call, if it cannot: it was closed
    /// ([`AsyncClient::close`]), the server closed it, or it broke. A connection whose
    /// server sent GOAWAY is still usable: the next call reconnects ([`AsyncClient`]); see
    /// [`AsyncClient::is_draining`]. For a pool that keeps connections between calls.
    ///
    /// # Errors
    /// [`ClientError::Closed`] after a close or the end of the stream, or the error that
    /// broke the connection.
    pub fn check_alive(&self) -> Result<(), ClientError> {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(ClientError::Closed);
        }
        self.current().with_core(|core| {
            if core.may_reconnect() {
                Ok(())
            } else {
                core.check_usable()
            }
        })
    }

    /// [`AsyncClient::check_alive`] is `Ok` and [`AsyncClient::is_draining`], read under one
    /// lock: (alive, draining).
    pub(crate) fn alive_and_draining(&self) -> (bool, bool) {
        if self.shared.closed.load(Ordering::SeqCst) {
            return (false, false);
        }
        self.current().with_core(|core| {
            let draining = core.is_draining();
            (
                core.may_reconnect() || core.check_usable().is_ok(),
                draining,
            )
        })
    }

    /// The number of calls outstanding on the current connection: started, and whose future
    /// has neither returned nor been dropped (waiting for an answer, or answered and not yet
    /// polled). A dropped call's future is not counted: the client forgets it at once. Calls
    /// still owed on a connection replaced after a GOAWAY are not counted either.
    pub fn in_flight(&self) -> usize {
        self.current().with_core(ClientCore::held)
    }

    /// Sends one request and waits for its response. After the server sent GOAWAY, the
    /// request goes out on a new connection (see [`AsyncClient`]). Waits up to the read
    /// timeout (default 30 s).
    ///
    /// The future is `Send` when `Req` is `Sync` (every message type of this crate is).
    /// Dropping it before it completes abandons the call (see [`AsyncClient`]).
    ///
    /// # Errors
    /// Any [`ClientError`]: the server's status ([`ClientError::Status`]; UNAVAILABLE for a
    /// request the server did not process after its GOAWAY, safe to make again),
    /// [`ClientError::Timeout`], [`ClientError::Encode`] or [`ClientError::Message`] for a
    /// request that cannot be sent, a protocol error or the connection's error, or the
    /// connect error of a reconnection after GOAWAY.
    pub async fn call<Req: Message, Resp: Message>(
        &self,
        method: &Method<Req, Resp>,
        request: &Req,
    ) -> Result<Resp, ClientError> {
        self.call_with(method, request, &CallOptions::default())
            .await
    }

    /// [`AsyncClient::call`] with a deadline and metadata ([`CallOptions`]). A zero deadline
    /// has passed already: nothing is sent, and the call fails with
    /// [`ClientError::Timeout`].
    ///
    /// # Errors
    /// As [`AsyncClient::call`]; [`ClientError::Timeout`] past the deadline.
    pub async fn call_with<Req: Message, Resp: Message>(
        &self,
        method: &Method<Req, Resp>,
        request: &Req,
        options: &CallOptions,
    ) -> Result<Resp, ClientError> {
        self.call_telling_sent(method, request, options)
            .await
            .map_err(|(err, _)| err)
    }

    /// [`AsyncClient::call_with`], its error paired with whether the request had been
    /// queued for the server when the call failed: `false` when it never was (the deadline
    /// passed first, the connection was already closed or broken, a reconnection after
    /// GOAWAY failed, the request does not encode), so the server cannot have processed it;
    /// `true` when it may have been sent. For the balancing client, which may make an unsent
    /// request on another server.
    pub(crate) async fn call_telling_sent<Req: Message, Resp: Message>(
        &self,
        method: &Method<Req, Resp>,
        request: &Req,
        options: &CallOptions,
    ) -> Result<Resp, (ClientError, bool)> {
        if options.deadline == Some(Duration::ZERO) {
            // PROTOCOL.md Section 12: a deadline already passed is not sent.
            return Err((ClientError::Timeout, false));
        }
        // The deadline runs from here, a wait for room in the queue (backpressure) included.
        // With none, the read timeout bounds that wait, and then the answer's from when the
        // request is queued (a timeout the server is not told of).
        let until = later(
            conn::now(),
            options.deadline.unwrap_or(self.shared.config.read_timeout),
        );
        let (conn, id) = self
            .start(until, |core, now| {
                let deadline = options
                    .deadline
                    .map(|_| until.saturating_duration_since(now));
                core.start_request(method, request, deadline, &options.metadata, now)
            })
            .await
            .map_err(|err| (err, false))?;
        typed_response(conn.wait(id, ClientCore::take_response).await).map_err(|err| (err, true))
    }

    /// Sends a PING and waits for its PONG, up to the read timeout; returns the round-trip
    /// time. After a GOAWAY it goes out on a new connection, as a call.
    ///
    /// # Errors
    /// [`ClientError::Timeout`] past the read timeout, or the connection's error; after a
    /// GOAWAY, the connect error when the new connection cannot be made.
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let until = later(conn::now(), self.shared.config.read_timeout);
        let (conn, id) = self
            .start(until, |core, now| {
                core.start_ping(until.saturating_duration_since(now), now)
            })
            .await?;
        conn.wait(id, ClientCore::take_pong).await
    }

    /// Closes the current connection, for every clone: calls waiting on it fail with
    /// [`ClientError::Closed`], and so does every later call. Over TLS a close_notify alert
    /// goes out first. Returns once the connection's task has closed the socket. Calls still
    /// owed on a connection replaced after a GOAWAY are answered all the same.
    pub async fn close(&self) {
        // Not while a reconnection is replacing the connection.
        let _turn = self.shared.reconnecting.lock().await;
        self.shared.closed.store(true, Ordering::SeqCst);
        self.current().close().await;
    }

    /// Queues a call with `start` on a connection that takes it, reconnecting after a
    /// GOAWAY, once the connection's queue has room for it; returns the connection and the
    /// call's request id. Waits until `until` at most, then fails with
    /// [`ClientError::Timeout`], nothing sent.
    async fn start(
        &self,
        until: Instant,
        mut start: impl FnMut(&mut ClientCore, Instant) -> Result<u64, ClientError>,
    ) -> Result<(Arc<Connection>, u64), ClientError> {
        // A call whose deadline passes while it waits (for a reconnection after GOAWAY, or
        // for room in the queue) ends unsent.
        let until = tokio::time::Instant::from_std(until);
        for attempt in 0..START_ATTEMPTS {
            if self.shared.closed.load(Ordering::SeqCst) {
                // Even after a GOAWAY, which would otherwise open a new connection.
                return Err(ClientError::Closed);
            }
            // First the current connection as it is; after it said Moved, the one that
            // replaces it.
            let conn = if attempt == 0 {
                self.current()
            } else {
                match tokio::time::timeout_at(until, self.connection()).await {
                    Ok(conn) => conn?,
                    Err(_) => return Err(ClientError::Timeout),
                }
            };
            loop {
                match conn.start(&mut start)? {
                    Start::Queued(id) => return Ok((conn, id)),
                    Start::Moved => break,
                    Start::Full => {
                        if tokio::time::timeout_at(until, conn.room()).await.is_err() {
                            return Err(ClientError::Timeout);
                        }
                    }
                }
            }
        }
        Err(ClientError::Status(draining()))
    }

    /// The connection for a new call: the current one, or after its GOAWAY a new one (opened
    /// by one task while the others wait).
    async fn connection(&self) -> Result<Arc<Connection>, ClientError> {
        let conn = self.current();
        if !conn.with_core(ClientCore::is_draining) {
            return Ok(conn);
        }
        let _turn = self.shared.reconnecting.lock().await;
        if self.shared.closed.load(Ordering::SeqCst) {
            // Closed while this task waited for its turn.
            return Err(ClientError::Closed);
        }
        // Another task may have reconnected meanwhile.
        let conn = self.current();
        let (draining, may_reconnect, usable, first_id) = conn.with_core(|core| {
            (
                core.is_draining(),
                core.may_reconnect(),
                core.check_usable(),
                core.next_request_id(),
            )
        });
        if !draining {
            return Ok(conn);
        }
        if !may_reconnect {
            // An ERROR frame, a protocol or TLS error after the GOAWAY: broken.
            usable?;
            return Err(ClientError::Closed);
        }
        // On failure the old connection stays current and the next call tries again.
        let new = Connection::open(&self.shared.config, &self.shared.addrs, first_id).await?;
        log::debug!(
            "{}: reconnected after GOAWAY, now {}",
            conn.with_core(ClientCore::peer_addr),
            new.with_core(ClientCore::peer_addr)
        );
        *self
            .shared
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Arc::clone(&new);
        // Its task ends once the calls it still owes are answered.
        conn.release();
        Ok(new)
    }
}
