//! Server settings and their defaults.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use super::workers::{DEFAULT_WORKERS, DEFAULT_WORKER_QUEUE};
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

/// Settings of a [`Server`](super::Server), built with [`ServerBuilder`](super::ServerBuilder).
#[derive(Clone, Debug)]
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
