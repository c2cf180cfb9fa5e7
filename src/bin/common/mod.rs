//! What the bundled servers share: logging, binding with a clear error, serving.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::{Context, Result};
use courier::server::Server;
use courier::service::Router;

/// Logs to stderr at `info` unless `RUST_LOG` says otherwise.
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
}

/// Binds `addr`, prints the address to stdout, and serves until the process ends.
pub fn serve(
    name: &str,
    addr: SocketAddr,
    max_connections: usize,
    max_body_len: u32,
    router: Router,
) -> Result<()> {
    let server = Server::builder()
        .addr(addr)
        .max_connections(max_connections)
        .max_body_len(max_body_len)
        .bind(router)
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
                "cannot listen on {addr}: the address is already in use (another server running? pick one with --addr)"
            ),
            _ => anyhow::Error::new(err).context(format!("cannot listen on {addr}")),
        })?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{name} listening on {}", server.local_addr())?;
    stdout.flush()?;
    server.run().context("server loop failed")
}
