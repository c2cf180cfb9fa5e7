//! What the bundled servers share: logging, binding with a clear error, serving.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, Result};
use courier::proto::DEFAULT_MAX_BODY_LEN;
use courier::server::{Server, DEFAULT_MAX_CONNECTIONS};
use courier::service::Router;

/// The limits every bundled server takes on its command line.
#[derive(clap::Args, Debug)]
pub struct Limits {
    /// Most connections open at once; one more is refused with RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Largest frame body accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_LEN)]
    pub max_body_len: u32,
}

/// Logs to stderr at `info` unless `RUST_LOG` says otherwise.
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
}

/// Serves until the process ends; on failure prints one line to stderr and exits 1.
pub fn run(name: &str, addr: SocketAddr, limits: &Limits, router: Router) -> ExitCode {
    match serve(name, addr, limits, router) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{name}: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Binds `addr`, prints the address to stdout, and serves.
fn serve(name: &str, addr: SocketAddr, limits: &Limits, router: Router) -> Result<()> {
    let server = Server::builder()
        .addr(addr)
        .max_connections(limits.max_connections)
        .max_body_len(limits.max_body_len)
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
