//! Spreading requests over several servers: [`Balancer`] (blocking) and, with feature
//! `tokio`, `AsyncBalancer`; and [`Rendezvous`], which server owns a key.
//!
//! A TCP load balancer in front of courier servers (HAProxy, see `deploy/haproxy.cfg`)
//! spreads *connections*; courier multiplexes many requests on a long-lived connection, so
//! a client with a few busy connections can load one server and leave another idle. A
//! balancer here spreads *requests*, and fails over, as Finagle's and tower's balancers and
//! gRPC's client-side balancing do. It is built on the clients of this crate: each server
//! gets a small pool of connections, each of them a [`Client`](super::Client) (or an
//! `AsyncClient`) with every option of the [`ClientBuilder`] given
//! (TLS, token, timeouts).
//!
//! # Which server
//!
//! - [`Balancer::call`]: any server. Two servers are drawn at random among those up, and the
//!   request goes to the one with fewer requests outstanding (the "power of two choices",
//!   Mitzenmacher 2001; Finagle's `p2c` and tower's `p2c::Balance`). A slow server keeps
//!   more requests outstanding and so gets fewer new ones, without any server being
//!   measured against the others.
//! - [`Balancer::call_key`]: the server that owns the key, by rendezvous hashing of the key
//!   and the servers' names ([`Rendezvous`]; `proto-spec/SERVICES.md`, "Sharding"). Data is
//!   partitioned, not replicated: such a request never goes to another server.
//!
//! # Health: taken out and brought back
//!
//! A server is [`Health::Up`] until:
//! - a connection to it cannot be made, or breaks (closed without GOAWAY, a socket, TLS or
//!   protocol error): it is [`Health::Ejected`];
//! - it drains: a connection brought a GOAWAY, and then a new connection is refused (a
//!   draining courier server closes its listener at once): it is [`Health::Draining`]. A
//!   connection that brings a GOAWAY is retired at once, and no new request goes out on it;
//!   the GOAWAY alone does not take the server out, since a server also sends one to a
//!   connection left idle past its idle timeout (300 s by default);
//! - a health check fails: each [`BalancerBuilder::health_interval`] (1 s), and at once
//!   after a server goes out, the balancer sends a PING (`proto-spec/PROTOCOL.md` Section
//!   13) to each server on a connection of its own; a PING not answered within
//!   [`BalancerBuilder::health_timeout`] (1 s), or a connection that cannot be made, takes
//!   the server out.
//!
//! It comes back when a health check connects to it and its PING is answered. A server that
//! drains and restarts is therefore back within about one interval of listening again.
//!
//! While some servers are up, requests go only to them. When none is, a request that may go
//! anywhere is sent to any of them all the same (Envoy's "panic mode"), and one that succeeds
//! brings its server back, so that a cluster that failed as a whole serves again as soon as
//! it can; a keyed request whose server is out
//! fails at once with UNAVAILABLE naming the server and why, without being sent, unless
//! [`BalancerBuilder::wait_for_ready`] is set (gRPC's `wait_for_ready`): it then waits for
//! its server to come back, up to its deadline.
//!
//! # Retries
//!
//! Only a request known not to have been processed is tried again (`proto-spec/PROTOCOL.md`
//! Sections 10, 14 and 15):
//! - answered UNAVAILABLE, by the server (its worker queue was full, or kv refuses writes)
//!   or by the client itself for a request above a GOAWAY's last request id;
//! - not sent, because no connection to its server could be made.
//!
//! A request whose connection broke after it was sent, or whose deadline passed, may have
//! been processed: it is never retried, and its error says so ([`ClientError::Closed`],
//! [`ClientError::Io`], [`ClientError::Timeout`]). Retries are bounded three ways: at most
//! [`BalancerBuilder::max_attempts`] attempts per request (3, counting the first, as gRPC's
//! default retry policies); the request's deadline, or else the read timeout, counted from
//! the call, which every pause and retry must fit in (each attempt sends the time left as its
//! deadline, measured once its connection is in hand; the first attempt of a call without a
//! deadline sends none and waits up to the read timeout); and a [`RetryBudget`] shared by the
//! balancer's calls, which allows retries of about 20% of the requests, so that when every
//! server fails, clients do not multiply the load on them. A retry goes to another server
//! when one is up; one that goes back to the same server (a keyed request, or the only server
//! up) waits first: 10 ms, doubling up to 1 s. A connect cut short by the call's deadline
//! fails the call with [`ClientError::Timeout`] and does not take the server out.
//!
//! # Examples
//!
//! Three kv shards; each key is read and written on its own server:
//!
//! ```no_run
//! use bytes::Bytes;
//! use courier_rpc::client::balance::Balancer;
//! use courier_rpc::kv::{Key, SetRequest, Value, GET, SET};
//!
//! let shards = Balancer::builder().build(["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"])?;
//! let key = Bytes::from("user:42");
//! let set = SetRequest { key: key.clone(), value: Bytes::from("Ada") };
//! shards.call_key(&key, &SET, &set)?;
//! let Value(value) = shards.call_key(&key, &GET, &Key(key.clone()))?;
//! assert_eq!(value, Bytes::from("Ada"));
//! println!("user:42 lives on {}", shards.names()[shards.owner(&key)]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "tokio")]
mod asynchronous;
mod blocking;
mod budget;
mod policy;
mod shard;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

#[cfg(feature = "tokio")]
pub use self::asynchronous::AsyncBalancer;
pub use self::blocking::Balancer;
pub use self::budget::RetryBudget;
pub use self::policy::{BalancerStats, Health, ServerStats};
pub use self::shard::{fnv1a64, mix64, score, Rendezvous};
use super::{ClientBuilder, ClientError};

/// Default of [`BalancerBuilder::health_interval`]: 1 s.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// Default of [`BalancerBuilder::health_timeout`]: 1 s.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Default of [`BalancerBuilder::max_attempts`]: 3.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default of [`BalancerBuilder::max_idle_per_server`]: 8.
pub const DEFAULT_MAX_IDLE_PER_SERVER: usize = 8;
/// Default of [`BalancerBuilder::connections_per_server`]: 2.
pub const DEFAULT_CONNECTIONS_PER_SERVER: usize = 2;

/// Builds a [`Balancer`] (or, with feature `tokio`, an `AsyncBalancer`) over several
/// servers.
#[derive(Clone, Debug)]
pub struct BalancerBuilder {
    client: ClientBuilder,
    max_idle_per_server: usize,
    connections_per_server: usize,
    health_interval: Duration,
    health_timeout: Duration,
    max_attempts: u32,
    retry_budget: RetryBudget,
    wait_for_ready: bool,
}

impl Default for BalancerBuilder {
    fn default() -> Self {
        BalancerBuilder {
            client: ClientBuilder::default(),
            max_idle_per_server: DEFAULT_MAX_IDLE_PER_SERVER,
            connections_per_server: DEFAULT_CONNECTIONS_PER_SERVER,
            health_interval: DEFAULT_HEALTH_INTERVAL,
            health_timeout: DEFAULT_HEALTH_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry_budget: RetryBudget::default(),
            wait_for_ready: false,
        }
    }
}

impl BalancerBuilder {
    /// The options of every connection (timeouts, limits, TLS, token): each is opened as
    /// [`ClientBuilder::connect`] opens one. The connect timeout is cut to what is left of a
    /// call's deadline. Default: [`ClientBuilder::default`].
    pub fn client(mut self, client: ClientBuilder) -> Self {
        self.client = client;
        self
    }

    /// [`Balancer`]: idle connections kept open per server between calls (more are opened
    /// while more calls are outstanding, and closed after). Default 8.
    pub fn max_idle_per_server(mut self, max: usize) -> Self {
        self.max_idle_per_server = max;
        self
    }

    /// `AsyncBalancer`: connections per server, each multiplexing any number of calls; calls
    /// take them in turn. At least 1. Default 2.
    pub fn connections_per_server(mut self, connections: usize) -> Self {
        self.connections_per_server = connections.max(1);
        self
    }

    /// Time between two health checks of a server (a PING on a connection of the check's
    /// own). A server that went out is checked at once as well. Default 1 s.
    pub fn health_interval(mut self, interval: Duration) -> Self {
        self.health_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Time a health check waits to connect, and then for its PONG. Default 1 s.
    pub fn health_timeout(mut self, timeout: Duration) -> Self {
        self.health_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Attempts per request at most, the first included (1: no retries). Default 3.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The retry budget shared by the balancer's calls. Default [`RetryBudget::default`]:
    /// retries of at most 20% of the requests, plus 10.
    pub fn retry_budget(mut self, budget: RetryBudget) -> Self {
        self.retry_budget = budget;
        self
    }

    /// A keyed call whose server is out waits for it to come back, up to the call's deadline
    /// (or the read timeout), instead of failing at once (gRPC's `wait_for_ready`). For a
    /// rolling restart of shards without failed requests. Default: false.
    pub fn wait_for_ready(mut self, wait: bool) -> Self {
        self.wait_for_ready = wait;
        self
    }

    /// Builds a [`Balancer`] over the servers named, each an address `HOST:PORT` (resolved
    /// once, here; a connection goes to the first of its addresses that accepts). The names,
    /// exactly as given, place keys ([`Rendezvous`]): give every client the same strings. No
    /// connection is opened here: the first call to a server opens one, and the health
    /// thread (`courier-balancer-health`) checks every server from the first interval on.
    ///
    /// # Errors
    /// [`ClientError::Io`] (`InvalidInput`) when no name is given or a name is given twice;
    /// the resolver's error ([`ClientError::Io`]) for a name that does not resolve.
    pub fn build<S: Into<String>>(
        self,
        names: impl IntoIterator<Item = S>,
    ) -> Result<Balancer, ClientError> {
        let names = check_names(names)?;
        let addrs = names
            .iter()
            .map(|name| Ok(name.to_socket_addrs()?.collect::<Vec<SocketAddr>>()))
            .collect::<Result<Vec<_>, ClientError>>()?;
        Ok(Balancer::open(self, names, addrs))
    }

    /// Builds an `AsyncBalancer` (feature `tokio`), as [`build`](Self::build) builds a
    /// [`Balancer`]: the names are resolved here (`tokio::net::lookup_host`), no connection
    /// is opened, and the health task is spawned on the current runtime.
    ///
    /// # Errors
    /// As [`build`](Self::build).
    ///
    /// # Panics
    /// Outside a tokio runtime with IO and time enabled.
    #[cfg(feature = "tokio")]
    pub async fn build_async<S: Into<String>>(
        self,
        names: impl IntoIterator<Item = S>,
    ) -> Result<AsyncBalancer, ClientError> {
        let names = check_names(names)?;
        let mut addrs = Vec::with_capacity(names.len());
        for name in &names {
            addrs.push(tokio::net::lookup_host(name.as_str()).await?.collect());
        }
        Ok(AsyncBalancer::open(self, names, addrs))
    }
}

fn check_names<S: Into<String>>(
    names: impl IntoIterator<Item = S>,
) -> Result<Vec<String>, ClientError> {
    let names: Vec<String> = names.into_iter().map(Into::into).collect();
    let invalid =
        |what: String| ClientError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, what));
    if names.is_empty() {
        return Err(invalid("a balancer needs at least one server".to_owned()));
    }
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(invalid(format!("server {name} is given twice")));
        }
    }
    Ok(names)
}

/// A seed for a balancer's random draws: std's per-process random hash keys, hashed with
/// the time.
fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    if let Ok(since) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(since.as_nanos());
    }
    hasher.finish()
}
