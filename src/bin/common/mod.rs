//! What the bundled servers share: logging, binding with a clear error, serving.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::ValueHint;
use courier_rpc::auth::Acl;
use courier_rpc::metrics::MetricsServer;
use courier_rpc::proto::DEFAULT_MAX_BODY_LEN;
use courier_rpc::server::{
    default_loops, Server, ServerBuilder, DEFAULT_FRAME_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_IN_FLIGHT, DEFAULT_OUTPUT_HARD_CAP,
    DEFAULT_OUTPUT_HIGH_WATER, DEFAULT_WORKERS, DEFAULT_WRITE_TIMEOUT,
};
use courier_rpc::service::Router;
use courier_rpc::stats::ServerStats;
use courier_rpc::tls::ServerTlsConfig;

/// The limits every bundled server takes on its command line; the defaults are the
/// library's (`courier_rpc::server::ServerBuilder` documents each).
#[derive(clap::Args, Debug)]
pub struct Limits {
    /// Most connections open at once; one more is refused with RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Largest frame body accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_LEN)]
    pub max_body_len: u32,
    /// Seconds from a frame's first byte to its last before the connection is closed.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = DEFAULT_FRAME_TIMEOUT.as_secs_f64(),
        value_parser = positive_seconds
    )]
    pub frame_timeout: f64,
    /// Seconds a connection may stay idle before it is sent GOAWAY and closed.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs_f64(),
        value_parser = positive_seconds
    )]
    pub idle_timeout: f64,
    /// Seconds queued output may make no progress before the connection is closed.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = DEFAULT_WRITE_TIMEOUT.as_secs_f64(),
        value_parser = positive_seconds
    )]
    pub write_timeout: f64,
    /// Queued output, in bytes, above which a connection is not read until it drains.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_OUTPUT_HIGH_WATER)]
    pub output_high_water: usize,
    /// Queued output, in bytes, above which a connection is closed.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_OUTPUT_HARD_CAP)]
    pub output_hard_cap: usize,
    /// Most blocking requests in flight per connection.
    #[arg(long, default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// Worker threads for blocking handlers.
    #[arg(long, default_value_t = DEFAULT_WORKERS)]
    pub workers: usize,
    /// Event loops, each on its own thread (default: the number of available cores); at
    /// least 1.
    #[arg(long, default_value_t = default_loops(), value_parser = at_least_one)]
    pub loops: usize,
    /// Seconds a graceful drain (on SIGTERM or SIGINT) waits for in-flight requests before
    /// closing what is left; a second signal stops at once.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = DEFAULT_DRAIN_TIMEOUT.as_secs_f64(),
        value_parser = positive_seconds
    )]
    pub drain_timeout: f64,
}

/// TLS and access control, the same for every bundled server.
#[derive(clap::Args, Debug)]
pub struct Security {
    /// Serve TLS 1.3 (ALPN courier/1) with this certificate chain (PEM, leaf first);
    /// needs --tls-key.
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require every client to present a certificate issued by a CA in this PEM bundle
    /// (mutual TLS); the certificate's subject CN becomes the connection's identity.
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Access-control list (TOML): identities, the SHA-256 of their AUTH tokens, and the
    /// methods each may call. With it, every connection must authenticate (AUTH or a client
    /// certificate) before calling anything.
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub acl: Option<PathBuf>,
    /// Listen on an address beyond loopback with no access control (no --acl and no
    /// --tls-client-ca): anyone who can reach the port may call every method. Refused
    /// without this flag.
    #[arg(long)]
    pub insecure_no_access_control: bool,
}

/// The Prometheus endpoint, the same for every bundled server.
#[derive(clap::Args, Debug)]
pub struct Metrics {
    /// Serve the server's counters, requests by method and status, and a latency histogram
    /// per method at http://ADDR/metrics in the Prometheus text format (IP:PORT or
    /// HOST:PORT). Off by default.
    #[arg(long, value_name = "ADDR", value_parser = crate::addr::parse)]
    pub metrics_addr: Option<SocketAddr>,
    /// Serve --metrics-addr beyond loopback: the endpoint has no TLS and no access control,
    /// so anyone who can reach it reads the counters and method names. Refused without this
    /// flag.
    #[arg(long, requires = "metrics_addr")]
    pub metrics_open_access: bool,
}

impl Metrics {
    /// Refuses an endpoint beyond loopback without --metrics-open-access (protected mode, as
    /// for the server's own port).
    fn check(&self) -> Result<()> {
        match self.metrics_addr {
            Some(addr) if !addr.ip().is_loopback() && !self.metrics_open_access => {
                anyhow::bail!(
                    "refusing to serve metrics on {addr}, beyond loopback: the endpoint has no \
                     TLS and no access control; add --metrics-open-access to serve it anyway"
                )
            }
            _ => Ok(()),
        }
    }

    /// Starts the endpoint for `stats`, if one was asked for; prints its address to stdout.
    fn start(&self, name: &str, stats: ServerStats) -> Result<Option<MetricsServer>> {
        let Some(addr) = self.metrics_addr else {
            return Ok(None);
        };
        self.check()?;
        let metrics = MetricsServer::start(addr, stats)
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        let mut stdout = std::io::stdout();
        writeln!(
            stdout,
            "{name} metrics on http://{}{}",
            metrics.local_addr(),
            courier_rpc::metrics::PATH
        )?;
        stdout.flush()?;
        Ok(Some(metrics))
    }
}

impl Security {
    /// Sets TLS and access control on `builder`.
    fn apply(&self, builder: ServerBuilder) -> Result<ServerBuilder> {
        let mut builder = builder.insecure_open_access(self.insecure_no_access_control);
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let tls = ServerTlsConfig::from_pem_files(cert, key, self.tls_client_ca.as_deref())
                .context("cannot set up TLS")?;
            builder = builder.tls(tls);
        }
        if let Some(path) = &self.acl {
            let acl = Acl::load(path).context("cannot load the access-control list")?;
            log::info!(
                "access control: {} identities from {}",
                acl.len(),
                path.display()
            );
            builder = builder.acl(Arc::new(acl));
        }
        Ok(builder)
    }
}

/// Parses a count that must be at least 1.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(err) => Err(err.to_string()),
    }
}

/// Parses a number of seconds that makes a positive `Duration` (not 0, negative, NaN, or
/// too large), so that a bad value is refused where it is parsed, with the flag's (or the
/// config file key's) name, and exits 2 as any bad flag does.
fn positive_seconds(text: &str) -> Result<f64, String> {
    let secs: f64 = text.parse().map_err(|err| format!("{err}"))?;
    match Duration::try_from_secs_f64(secs) {
        Ok(duration) if !duration.is_zero() => Ok(secs),
        _ => Err("must be a positive number of seconds".into()),
    }
}

/// Default `--drain-timeout`: 10 s.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

fn seconds(flag: &str, secs: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("--{flag} must be a positive number of seconds, not {secs}"))
}

/// Raises the soft limit on open files towards the hard limit, so that `max_connections`
/// sockets fit (Redis does the same at start-up). Logs what it could not get.
fn raise_fd_limit(max_connections: usize) {
    // Listener, poller, waker, spare, logging and a margin.
    let wanted = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(32);
    match courier_rpc::server::raise_open_file_limit(wanted) {
        Ok(now) if now < wanted => log::warn!(
            "open-file limit is {now}, below the {wanted} that --max-connections {max_connections} needs; connections beyond it are refused"
        ),
        Ok(_) => {}
        Err(err) => log::warn!("cannot read the open-file limit: {err}"),
    }
}

/// Logs to stderr at `info` unless `RUST_LOG` says otherwise.
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
}

/// Serves until a signal drains the server, then runs `after` (flushing state, say); on
/// failure prints one line to stderr and exits 1.
pub fn run(
    name: &str,
    addr: SocketAddr,
    limits: &Limits,
    router: Router,
    (security, metrics): (&Security, &Metrics),
    after: impl FnOnce() -> Result<()>,
) -> ExitCode {
    match serve(name, addr, limits, (security, metrics), router).and_then(|()| after()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{name}: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Binds `addr`, prints the address to stdout, and serves until SIGTERM or SIGINT has
/// drained the server.
fn serve(
    name: &str,
    addr: SocketAddr,
    limits: &Limits,
    (security, metrics): (&Security, &Metrics),
    router: Router,
) -> Result<()> {
    metrics.check()?;
    raise_fd_limit(limits.max_connections);
    let drain_timeout = seconds("drain-timeout", limits.drain_timeout)?;
    let server = security
        .apply(Server::builder())?
        .addr(addr)
        .max_connections(limits.max_connections)
        .max_body_len(limits.max_body_len)
        .frame_timeout(seconds("frame-timeout", limits.frame_timeout)?)
        .idle_timeout(seconds("idle-timeout", limits.idle_timeout)?)
        .write_timeout(seconds("write-timeout", limits.write_timeout)?)
        .output_high_water(limits.output_high_water)
        .output_hard_cap(limits.output_hard_cap)
        .max_in_flight(limits.max_in_flight)
        .workers(limits.workers)
        .loops(limits.loops)
        .bind(router)
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
                "cannot listen on {addr}: the address is already in use (another server running? pick one with --addr)"
            ),
            // Protected mode: the message says what to add.
            std::io::ErrorKind::PermissionDenied => anyhow::anyhow!("{err}"),
            _ => anyhow::Error::new(err).context(format!("cannot listen on {addr}")),
        })?;
    // Handlers first: a SIGTERM sent as soon as the address is printed must drain, not kill.
    let signals = courier_rpc::server::drain_on_signals(server.handle(), drain_timeout)
        .context("cannot install the SIGTERM/SIGINT handlers")?;
    let mut stdout = std::io::stdout();
    if security.tls_cert.is_some() {
        log::info!("{name}: serving TLS 1.3 (ALPN courier/1)");
    }
    writeln!(stdout, "{name} listening on {}", server.local_addr())?;
    stdout.flush()?;
    let endpoint = metrics.start(name, server.stats())?;
    let result = server.run().context("server loop failed");
    drop(endpoint);
    drop(signals);
    result
}
