//! `courier-bench`: a load generator for courier servers, in the spirit of `redis-benchmark`
//! and `memtier_benchmark`.
//!
//! It opens `--clients` connections, spreads them over `--threads` threads, and sends requests
//! of one workload until `--requests` have completed (or for `--duration` seconds). Each thread
//! runs a `mio` event loop over its connections (nonblocking sockets, [`driver`]), as
//! memtier_benchmark and redis-benchmark do: every connection writes when its socket takes
//! bytes, reads and decodes (with the crate's own codec) when bytes arrive, matches each
//! response to its request by id, and sends its next requests as soon as its own responses
//! are in. So one slow or silent connection holds up no other one on its thread. By default
//! a connection writes `--pipeline` requests as a batch and sends the next batch when the
//! whole batch is answered (redis-benchmark's `-P`); with `--window` it sends one more as
//! each response arrives, so `--pipeline` stay in flight (memtier_benchmark's way).
//!
//! Workloads: `echo` (echo service, a `--value-size` body), `set` (kv SET of a `--value-size`
//! value), `get` (kv GET) and `mixed` (GET with probability `--read-ratio`, SET otherwise).
//! Keys are `key:NNNNNNNNNN`, drawn uniformly from `--keyspace` keys by a per-client
//! xorshift64* generator, seeded from the run's seed (random per run unless `--seed` gives
//! one; the report prints it, so a run can be repeated key for key). GET does not find a key
//! nobody has set: `--prefill` sets every key of the keyspace once before the measurement
//! starts.
//!
//! Several kv servers over which the keys are partitioned (`--addr A,B,C`, or `--addr`
//! given again): each client keeps a connection to every server, as memtier_benchmark's
//! cluster mode does, and sends each GET and SET to the server that owns its key by
//! rendezvous hashing of the addresses exactly as written
//! ([`courier_rpc::client::balance::Rendezvous`], `proto-spec/SERVICES.md` Section 2.7), and
//! its echoes to each server in turn. `--clients` is the number of clients, so the run opens
//! `--clients` connections to each server; `--pipeline` is what a client keeps outstanding
//! over all its connections, so the same flags put the same load in flight whatever the
//! number of servers. A client sends only while every one of its connections is up: a
//! request waits for the server that owns its key and never goes to another one (which would
//! split the key's history). `--prefill` sets each key on its owner; the kv INFO check
//! (below) asks every server. The report adds each server's requests (`per server`, and
//! `servers` in JSON). `--reconnect` takes one address.
//!
//! # Example
//!
//! ```sh
//! cargo run --release --bin kv-server &
//! cargo run --release --bin courier-bench -- --workload mixed --prefill --clients 50 --pipeline 16
//! # Three shards:
//! cargo run --release --bin courier-bench -- --addr 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 \
//!     --workload mixed --prefill
//! ```
//!
//! # The figures
//!
//! - `requests`: requests completed: answered (whatever the status) or failed.
//! - `seconds`: wall time from the first request to the last response.
//! - `throughput`: `requests / seconds`.
//! - `latency`: for each request answered by the server (any status), the time from the
//!   write of its last byte to the socket (to rustls, with TLS) to the decode of its
//!   response, in milliseconds (HDR histogram, microsecond resolution, 3 significant digits).
//!   With pipelining a request waits behind the earlier ones of its connection at the
//!   server, and a response that has arrived waits while its thread handles the other
//!   sockets that were ready at the same time. Requests lost with their connection have no
//!   latency.
//! - `misses`: GETs answered NOT_FOUND. They are successful requests, not errors.
//! - `errors`: failed requests, by status name for a non-OK answer (`UNAVAILABLE`, ...) and by
//!   kind otherwise: `timeout`, `closed`, `io`, `connection` (the server sent an ERROR frame),
//!   `protocol`, `encode`, `message` (an OK answer whose payload does not decode), `tls` (a
//!   TLS error), `not_tls`, `auth` (the token refused). When a connection fails, its
//!   outstanding requests count as errors of the same kind and the client reconnects (up to 5
//!   times in a row without an answer in between, then it gives up and the run goes on
//!   without it). A connection whose server sends nothing for `--timeout` seconds while it
//!   waits for answers is given up at once: its requests count as `timeout` errors.
//! - `clients_lost`: clients given up, either way (with several servers, a client gives up
//!   when one of its connections does; it waits for the answers outstanding on the others).
//! - `per server` (with several servers): the requests completed by each, in the order of
//!   `--addr`; they add up to `requests`.
//!
//! With `--tls` (and `--tls-ca`, `--tls-server-name`, `--tls-cert`, `--tls-key`) every
//! connection speaks TLS; with `--token-file FILE` or the environment variable
//! `COURIER_TOKEN` every connection starts with admin AUTH. The handshake and AUTH are part
//! of connecting, not of the measured requests.
//!
//! With `--reconnect N` every connection is closed after N requests and a new one opened
//! (TCP connect, the TLS handshake with `--tls`, AUTH with a token) for the next N:
//! `--reconnect 1` opens a connection per request, as `redis-benchmark -k 0` does. The
//! connects, handshakes and AUTHs of a thread's connections proceed at once on its event
//! loop. A request's latency still starts at its write, after the connection is up, but the
//! run's `seconds`
//! (hence `throughput`) include every connect. Each connection builds its TLS configuration
//! afresh, with an empty session cache, so every handshake is a full one (no session
//! resumption), as with a new client process. The report adds `connections` (opened during
//! the run, the first `--clients` ones, opened before it starts, not included),
//! `connections_per_second` (`connections / seconds`) and `connect_failures`.
//!
//! A workload that writes (`set`, `mixed`, or `--prefill`) first asks each server with kv
//! INFO (`proto-spec/SERVICES.md` Section 2.5) where it keeps its data, and refuses to run
//! (exit 2) against a server that keeps a log, or one that cannot say (UNIMPLEMENTED),
//! unless `--allow-durable` is given. `echo` and `get` without `--prefill` do not ask.
//!
//! `--json` prints the report as one JSON object, serialized by serde_json
//! ([`report::JsonReport`]).
//!
//! A live progress line goes to stderr about once a second when stderr is a terminal. Exit
//! codes, so that a script can trust a run:
//!
//! - 0: the run finished, with no more failed requests than `--max-error-rate` allows (by
//!   default none) and no client that gave up;
//! - 1: the run finished and its report is printed, but more requests failed than allowed, or
//!   a client was lost (its server stopped answering, or it gave up reconnecting); one line on
//!   stderr says which;
//! - 2: it could not start (no connection, bad flags, failed prefill, a durable server
//!   without `--allow-durable`); one line on stderr.

#[path = "../addr/mod.rs"]
mod addr;
mod args;
#[path = "../client_flags/mod.rs"]
mod client_flags;
mod conn;
mod driver;
#[path = "../generate/mod.rs"]
mod generate;
mod preflight;
mod report;
mod workload;

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use courier_rpc::client::balance::Rendezvous;
use courier_rpc::client::Client;
use courier_rpc::tls::{ClientTlsBuilder, ClientTlsConfig};

use args::Args;
use client_flags::ClientSecurity;
use conn::{ConnError, Security, TlsSource};
use driver::{Shared, Slot};
use report::{Report, Tally};
use workload::Plan;

/// Time to establish a connection, at start and when reconnecting; with --tls the handshake
/// gets as long again, and with a token so does AUTH's answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// --reconnect with --tls: the TLS flags' files read into memory, as a builder that every
/// connection builds into a configuration of its own (so that its session cache is empty and
/// its handshake a full one), without reading a file. Built once here, so that a bad file
/// fails the run before it starts.
fn fresh_tls(security: &ClientSecurity) -> Result<ClientTlsBuilder> {
    let read = |path: &Path| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let Some(ca) = &security.tls_ca else {
        bail!("--reconnect with --tls needs --tls-ca (the system's roots would be loaded for every connection)");
    };
    let mut tls = ClientTlsConfig::builder().ca_pem(&read(ca)?);
    if let Some(name) = &security.tls_server_name {
        tls = tls.server_name(name);
    }
    if let (Some(cert), Some(key)) = (&security.tls_cert, &security.tls_key) {
        tls = tls.client_cert_pem(&read(cert)?, &read(key)?);
    }
    tls.clone().build().context("TLS configuration")?;
    Ok(tls)
}

/// A connection that failed before the run started, as one line.
fn start_error(err: ConnError, addr: &str) -> anyhow::Error {
    match err.kind {
        "io" | "timeout" => anyhow!(
            "cannot connect to {addr} (is the server running?): {}",
            err.message
        ),
        _ => anyhow!("cannot connect to {addr}: {}", err.message),
    }
}

fn run(args: &Args) -> Result<Report> {
    let (duration, timeout) = args.checked()?;
    let threads = args
        .threads
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, args.clients);
    let servers = args.addr.clone();
    let shards = Rendezvous::new(servers.iter().map(|s| s.name.clone()));
    let show_progress = std::io::stderr().is_terminal();

    let builder = args
        .security
        .apply(Client::builder().connect_timeout(CONNECT_TIMEOUT))?;
    let tls = match (args.reconnect, args.security.tls_config()?) {
        (Some(_), Some(_)) => Some(TlsSource::Fresh(fresh_tls(&args.security)?)),
        (_, config) => config.map(TlsSource::Shared),
    };
    let token = args.security.token()?.map(Bytes::from);
    // Connecting, then the TLS handshake, then AUTH's answer: each gets the connect timeout.
    let steps = 1 + u32::from(tls.is_some()) + u32::from(token.is_some());
    let security = Security { tls, token };
    let plan = Plan {
        workload: args.workload,
        read_ratio: args.read_ratio,
        keyspace: args.keyspace,
        value: Bytes::from(vec![b'x'; args.value_size]),
    };
    if args.writes() && !args.allow_durable {
        let what = if args.workload.writes() {
            format!("--workload {}", args.workload.name())
        } else {
            "--prefill".to_string()
        };
        for server in &servers {
            preflight::refuse_durable(&builder, server.addr, &what)?;
        }
    }

    let seed = args.seed.unwrap_or_else(random_seed);
    let mut shared = Shared {
        servers,
        shards,
        security,
        plan,
        pipeline: args.pipeline,
        window: args.window,
        seed,
        per_connection: args.reconnect,
        total: args.requests,
        end: None,
        timeout,
        connect_timeout: CONNECT_TIMEOUT * steps,
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
    };
    // Connect every client first: a server that is not there fails the run before it starts.
    let conns = driver::connect_all(&shared, args.clients)
        .map_err(|(err, server)| start_error(err, &server))?;
    if args.prefill {
        preflight::prefill(
            &builder,
            &shared.servers,
            &shared.shards,
            &shared.plan,
            show_progress,
        )?;
    }

    let start = Instant::now();
    shared.end = duration.map(|d| start + d);
    let mut per_thread: Vec<Vec<Slot>> = (0..threads).map(|_| Vec::new()).collect();
    for (index, conns) in conns.into_iter().enumerate() {
        per_thread[index % threads].push(Slot::new(&shared, index, conns));
    }
    let shared = Arc::new(shared);
    let handles: Vec<_> = per_thread
        .into_iter()
        .map(|slots| {
            let shared = Arc::clone(&shared);
            thread::spawn(move || driver::drive(&shared, slots))
        })
        .collect();

    // The progress line, about once a second, until every thread is done.
    let mut last = (start, 0);
    while !handles.iter().all(|h| h.is_finished()) {
        thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        if show_progress && now - last.0 >= Duration::from_secs(1) {
            let done = shared.done.load(Ordering::Relaxed);
            let rate = (done - last.1) as f64 / (now - last.0).as_secs_f64();
            eprint!("\r{done} requests, {rate:.0} req/s    ");
            last = (now, done);
        }
    }
    if show_progress {
        eprint!("\r{:60}\r", "");
    }
    let mut tally = Tally::new(shared.servers.len());
    tally.finished = start;
    for handle in handles {
        tally.merge(handle.join().expect("a benchmark thread panicked"));
    }
    let seconds = (tally.finished - start).as_secs_f64();
    Ok(Report {
        workload: args.workload,
        read_ratio: args.read_ratio,
        clients: args.clients,
        servers: shared.servers.iter().map(|s| s.name.clone()).collect(),
        threads,
        pipeline: args.pipeline,
        value_size: args.value_size,
        reconnect: args.reconnect.is_some(),
        seed,
        seconds,
        tally,
    })
}

/// A seed that differs from run to run: std's per-process random hash keys (drawn from the
/// operating system), mixed with the time.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(now);
    hasher.finish()
}

fn main() -> ExitCode {
    generate::handle::<Args>();
    let args = Args::parse();
    // Quiet unless RUST_LOG asks: the results go to stdout, errors are one line on stderr.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(&args) {
        Ok(report) => {
            let out = if args.json {
                report.json() + "\n"
            } else {
                report.text()
            };
            let mut stdout = std::io::stdout().lock();
            let _ = stdout
                .write_all(out.as_bytes())
                .and_then(|()| stdout.flush());
            match report.failure(args.max_error_rate) {
                Some(why) => {
                    eprintln!("courier-bench: {why}");
                    ExitCode::FAILURE
                }
                None => ExitCode::SUCCESS,
            }
        }
        Err(err) => {
            eprintln!("courier-bench: {err:#}");
            ExitCode::from(2)
        }
    }
}
