//! Server settings and their defaults, and the [`ServerBuilder`] setters of per-connection
//! limits. Those limits and their defaults live once, in [`ConnectionConfig`]: the builder
//! keeps one (from [`ConnectionConfig::default`]) and each setter here writes one field of it
//! through the field's `with_*` setter.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use super::workers::{DEFAULT_WORKERS, DEFAULT_WORKER_QUEUE};
use super::ServerBuilder;
use crate::auth::{Authenticator, Authorizer};
use crate::connection::ConnectionConfig;
use crate::tls::ServerTlsConfig;

/// Default bind address: `127.0.0.1:7878`, loopback only, so a server started without thought
/// is not reachable from the network.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7878));

/// Default most connections open at once: 10,000 (Redis's default `maxclients`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Default listen backlog: 511 connections completed by the kernel and waiting to be
/// accepted (Redis's `tcp-backlog` and nginx's default on Linux).
pub const DEFAULT_BACKLOG: u32 = 511;

/// Default number of event loops: the cores this process may use
/// (`std::thread::available_parallelism`, which honours CPU affinity and cgroup quotas), or 1
/// when that is unknown.
pub fn default_loops() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Settings of a [`Server`](super::Server), built with [`ServerBuilder`] (which starts from
/// [`ServerConfig::default`]) and read with the accessors below. Non-exhaustive: settings may
/// be added.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    pub(crate) addr: SocketAddr,
    pub(crate) max_connections: usize,
    pub(crate) backlog: u32,
    pub(crate) connection: ConnectionConfig,
    pub(crate) workers: usize,
    pub(crate) worker_queue: usize,
    pub(crate) loops: usize,
    pub(crate) tls: Option<ServerTlsConfig>,
    pub(crate) authenticator: Option<Arc<dyn Authenticator>>,
    pub(crate) authorizer: Option<Arc<dyn Authorizer>>,
    pub(crate) insecure_open_access: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: DEFAULT_ADDR,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            backlog: DEFAULT_BACKLOG,
            connection: ConnectionConfig::default(),
            workers: DEFAULT_WORKERS,
            worker_queue: DEFAULT_WORKER_QUEUE,
            loops: default_loops(),
            tls: None,
            authenticator: None,
            authorizer: None,
            insecure_open_access: false,
        }
    }
}

impl ServerConfig {
    /// The address to bind.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The connection limit.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// The listen backlog.
    pub fn backlog(&self) -> u32 {
        self.backlog
    }

    /// The body limit in bytes.
    pub fn max_body_len(&self) -> u32 {
        self.connection.max_body_len
    }

    /// How long a connection lingers after ERROR or GOAWAY.
    pub fn linger(&self) -> Duration {
        self.connection.linger
    }

    /// Every per-connection limit.
    pub fn connection(&self) -> &ConnectionConfig {
        &self.connection
    }

    /// Worker threads for blocking handlers.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Blocking calls that may wait for a worker.
    pub fn worker_queue(&self) -> usize {
        self.worker_queue
    }

    /// Event loops.
    pub fn loops(&self) -> usize {
        self.loops
    }
}

/// `ServerBuilder` setters that each set one field of the builder's [`ConnectionConfig`]
/// through that field's `with_*` setter; the field's docs give its unit, default and effect.
macro_rules! connection_setters {
    ($($(#[$extra:meta])* $field:ident($arg:ident: $ty:ty) => $with:ident, $summary:literal;)*) => {
        $(
            #[doc = concat!(
                $summary, ": sets [`ConnectionConfig::", stringify!($field),
                "`], whose docs give its unit, default and effect."
            )]
            $(#[$extra])*
            pub fn $field(mut self, $arg: $ty) -> Self {
                self.config.connection = self.config.connection.$with($arg);
                self
            }
        )*
    };
}

impl ServerBuilder {
    /// Every per-connection limit at once, replacing those set so far; default
    /// [`ConnectionConfig::default`]. The setters below change one limit each.
    pub fn connection(mut self, connection: ConnectionConfig) -> Self {
        self.config.connection = connection;
        self
    }

    connection_setters! {
        max_body_len(max: u32) => with_max_body_len,
            "Largest frame body accepted and sent, in bytes, metadata included";
        linger(linger: Duration) => with_linger,
            "How long a connection that was sent ERROR or GOAWAY keeps reading (and discarding) \
             before it is closed";
        /// Timers are checked every 1/8 of the shortest timeout, at least every 10 ms and at
        /// most every second.
        frame_timeout(timeout: Duration) => with_frame_timeout,
            "Time from a frame's first byte to its last";
        idle_timeout(timeout: Duration) => with_idle_timeout,
            "Time a connection may sit with no frame arriving and nothing in progress";
        write_timeout(timeout: Duration) => with_write_timeout,
            "Time queued output may make no progress";
        output_high_water(bytes: usize) => with_output_high_water,
            "Queued output, in bytes, above which a connection is not read until the peer \
             drains it";
        output_hard_cap(bytes: usize) => with_output_hard_cap,
            "Queued output, in bytes, above which a connection is closed at once (not below \
             the high-water mark: [`ServerBuilder::bind`] refuses that)";
        max_in_flight(max: usize) => with_max_in_flight,
            "Most blocking requests running or queued per connection";
        max_frames_per_turn(max: u32) => with_max_frames_per_turn,
            "Frames handled per connection per loop turn, at least 1";
        max_empty_frames(max: u32) => with_max_empty_frames,
            "Frames in a row that ask for nothing (PONG) before the connection is closed as a \
             flood";
    }
}
