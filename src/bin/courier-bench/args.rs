//! The command line: flags, their defaults, and the checks clap cannot make.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use courier_rpc::kv::MAX_VALUE_LEN;

use crate::addr;
use crate::client_flags::ClientSecurity;

/// Default of `--timeout`: 10 s, far above any answer of a live server on a LAN, short
/// enough that a dead one ends the run soon.
pub const DEFAULT_TIMEOUT_SECS: f64 = 10.0;

/// Load generator for courier's echo and kv services.
#[derive(Parser, Debug)]
#[command(name = "courier-bench", version)]
pub struct Args {
    /// Address of the server: IP:PORT, or HOST:PORT (the first address the name resolves
    /// to). Several kv servers (shards): --addr given again, or addresses separated by commas.
    ///
    /// With several servers the keys are partitioned over them: each client keeps a
    /// connection to every server and sends each GET and SET to the server that owns its key
    /// (rendezvous hashing of the addresses exactly as written here, so write them as the
    /// clients of those servers are given them; proto-spec/SERVICES.md Section 2.7), and its
    /// echoes to each server in turn. A request waits for its key's server, never goes to
    /// another. The report counts the requests of each server.
    #[arg(
        long,
        value_name = "ADDR",
        value_parser = server,
        value_delimiter = ',',
        default_value = "127.0.0.1:7878"
    )]
    pub addr: Vec<Server>,
    /// Clients, each with a connection (to each --addr).
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Threads driving the connections, each with its own event loop (default: the number of
    /// cores); at most --clients.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Requests each client keeps outstanding (with several --addr, over all its
    /// connections together).
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// Keep --pipeline requests in flight on every client at all times (send one more as
    /// soon as a response arrives: memtier_benchmark's pipelining) instead of writing them as
    /// a batch and sending the next batch when the whole batch is answered (redis-benchmark's
    /// -P). Streams large frames without a bubble between batches.
    #[arg(long)]
    pub window: bool,
    /// Total requests to complete.
    #[arg(long, default_value_t = 100_000)]
    pub requests: u64,
    /// Run for this many seconds instead of a number of requests.
    #[arg(long, value_name = "SECS", conflicts_with = "requests")]
    pub duration: Option<f64>,
    /// What to send. `get` finds no key unless --prefill is given (its NOT_FOUND answers
    /// are counted as misses, not errors). `set`, `mixed` and --prefill write: see
    /// --allow-durable.
    #[arg(long, value_enum, default_value_t = Workload::Set)]
    pub workload: Workload,
    /// With --workload mixed: the fraction of requests that are GETs (0 to 1).
    #[arg(long, default_value_t = 0.9)]
    pub read_ratio: f64,
    /// Bytes per SET value and per echo body.
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    pub value_size: usize,
    /// Distinct keys, drawn uniformly: key:0000000000 to key:<keyspace - 1>.
    #[arg(long, default_value_t = 100_000)]
    pub keyspace: u64,
    /// Before measuring, SET every key of the keyspace once (pipelined; with several --addr,
    /// each on the server that owns it).
    #[arg(long)]
    pub prefill: bool,
    /// Write into a kv server that keeps its data (kv INFO says `storage log`), or one that
    /// cannot say (no kv INFO). Without it, a workload that writes (set, mixed, --prefill)
    /// asks every server first and refuses to run if one is such a server (exit 2): a
    /// benchmark would fill the log of a server someone relies on with keys nobody wants.
    #[arg(long)]
    pub allow_durable: bool,
    /// Seconds a connection may wait for the server (to connect, or for any byte of an
    /// answer while requests are outstanding) before it is given up: its outstanding
    /// requests count as `timeout` errors, the client as lost, and the run exits 1.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT_SECS)]
    pub timeout: f64,
    /// Print the results as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Close each connection after N requests and open a new one for the next N: TCP
    /// connect, then with --tls a full TLS handshake (every connection builds its own TLS
    /// configuration, so no session is resumed; needs --tls-ca), then AUTH when a token is
    /// set. 1: a new connection per request (redis-benchmark -k 0). Latency is measured from
    /// each request's write, after its connection is up; the run's seconds include the
    /// connects. Reports the connections opened and connections per second. One --addr only.
    #[arg(long, value_name = "N")]
    pub reconnect: Option<u64>,
    /// Seed of the key generators, to repeat a run's keys (default: a random one, printed in
    /// the report).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The largest fraction of requests (0 to 1) that may fail, answered with a status other
    /// than OK (NOT_FOUND of a GET is a miss, not a failure) or lost with their connection,
    /// for the run to exit 0; above it the exit code is 1. Default 0: any failure is one.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = error_rate)]
    pub max_error_rate: f64,
    #[command(flatten)]
    pub security: ClientSecurity,
}

/// One server of `--addr`: its address as written (its name, by which keys are placed) and
/// what it resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// The text given, exactly: `127.0.0.1:7001`, `kv-a.example:7879`.
    pub name: String,
    /// Where to connect.
    pub addr: SocketAddr,
}

/// Parses one address of `--addr` (see [`addr::parse`]), keeping the text as its name.
fn server(text: &str) -> Result<Server, String> {
    Ok(Server {
        name: text.to_string(),
        addr: addr::parse(text)?,
    })
}

/// The request mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Echo service: the body comes back.
    Echo,
    /// kv GET of random keys.
    Get,
    /// kv SET of random keys.
    Set,
    /// kv GET (--read-ratio of the requests) and SET.
    Mixed,
}

impl Workload {
    /// The name in the report: `echo`, `get`, `set` or `mixed`.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Echo => "echo",
            Workload::Get => "get",
            Workload::Set => "set",
            Workload::Mixed => "mixed",
        }
    }

    /// Whether the workload writes into the store (with a read ratio of 1, mixed still
    /// counts: the flag says what may be sent).
    pub fn writes(self) -> bool {
        matches!(self, Workload::Set | Workload::Mixed)
    }
}

impl Args {
    /// Checks what clap does not: every count at least 1, the ratio and the value size in
    /// range; returns `--duration` and `--timeout` as durations.
    ///
    /// # Errors
    /// A one-line reason naming the flag.
    pub fn checked(&self) -> Result<(Option<Duration>, Duration)> {
        if self.clients == 0 || self.pipeline == 0 || self.keyspace == 0 {
            bail!("--clients, --pipeline and --keyspace must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            bail!(
                "--read-ratio must be between 0 and 1, not {}",
                self.read_ratio
            );
        }
        if self.reconnect == Some(0) {
            bail!("--reconnect must be at least 1");
        }
        for (i, server) in self.addr.iter().enumerate() {
            if self.addr[..i].iter().any(|s| s.name == server.name) {
                bail!("--addr {} is given twice", server.name);
            }
        }
        if self.reconnect.is_some() && self.addr.len() > 1 {
            bail!("--reconnect takes one --addr");
        }
        if self.value_size > MAX_VALUE_LEN {
            bail!("--value-size is at most {MAX_VALUE_LEN} bytes (the kv limit)");
        }
        let positive = |secs: f64, flag: &str| {
            Duration::try_from_secs_f64(secs)
                .ok()
                .filter(|d| !d.is_zero())
                .with_context(|| format!("{flag} must be a positive number of seconds"))
        };
        let duration = match self.duration {
            Some(secs) => Some(positive(secs, "--duration")?),
            None => None,
        };
        Ok((duration, positive(self.timeout, "--timeout")?))
    }

    /// Whether the run writes into the store: a writing workload, or --prefill.
    pub fn writes(&self) -> bool {
        self.workload.writes() || self.prefill
    }
}

/// Parses `--max-error-rate`: a number from 0 to 1.
fn error_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("{text:?} is not a fraction from 0 to 1")),
    }
}
