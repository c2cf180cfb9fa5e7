//! `courier-bench`: a load generator for courier servers, in the spirit of `redis-benchmark`
//! and `memtier_benchmark`.
//!
//! It opens `--clients` connections, spreads them over `--threads` threads, and sends requests
//! of one workload until `--requests` have completed (or for `--duration` seconds). Each thread
//! drives its clients round-robin with the blocking client's pipelining (`Client::send`, then
//! `Client::wait`), the way `redis-benchmark -P` does: a round writes `--pipeline` requests on
//! every client, then collects every response of every client before the next round. With
//! `--window` a round collects only each client's oldest response and the next tops it up
//! again, so `--pipeline` requests stay in flight (memtier_benchmark's way).
//!
//! Workloads: `echo` (echo service, a `--value-size` body), `set` (kv SET of a `--value-size`
//! value), `get` (kv GET) and `mixed` (GET with probability `--read-ratio`, SET otherwise).
//! Keys are `key:NNNNNNNNNN`, drawn uniformly from `--keyspace` keys by a per-client
//! xorshift64* generator, seeded from the run's seed (random per run unless `--seed` gives
//! one; the report prints it, so a run can be repeated key for key). GET does not find a key
//! nobody has set: `--prefill` sets every key of the keyspace once before the measurement
//! starts.
//!
//! # Example
//!
//! ```sh
//! cargo run --release --bin kv-server &
//! cargo run --release --bin courier-bench -- --workload mixed --prefill --clients 50 --pipeline 16
//! ```
//!
//! # The figures
//!
//! - `requests`: requests completed: answered (whatever the status) or failed.
//! - `seconds`: wall time from the first request to the last response.
//! - `throughput`: `requests / seconds`.
//! - `latency`: for each request answered by the server (any status), the time from the
//!   `send` call to the moment its response was collected, in milliseconds (HDR histogram,
//!   microsecond resolution, 3 significant digits). It includes client-side queueing: with
//!   pipelining a request waits behind the earlier ones of its connection, and a response that
//!   has arrived waits until its thread gets round to that client. Requests lost with their
//!   connection have no latency.
//! - `misses`: GETs answered NOT_FOUND. They are successful requests, not errors.
//! - `errors`: failed requests, by status name for a non-OK answer (`UNAVAILABLE`, ...) and by
//!   kind otherwise: `timeout`, `closed`, `io`, `connection` (the server sent an ERROR frame),
//!   `protocol`, `encode`, `tls` (a TLS error), `not_tls`, `auth` (the token refused). When a
//!   connection fails, its outstanding requests count as errors
//!   of the same kind and the client reconnects (up to 5 times in a row without an answer in
//!   between, then it gives up and the run goes on without it).
//!
//! With `--tls` (and `--tls-ca`, `--tls-server-name`, `--tls-cert`, `--tls-key`) every
//! connection speaks TLS; with `--token-file FILE` or the environment variable
//! `COURIER_TOKEN` every connection starts with admin AUTH. The handshake and AUTH are part
//! of connecting, not of the measured requests.
//!
//! With `--reconnect N` every connection is closed after N requests and a new one opened
//! (TCP connect, the TLS handshake with `--tls`, AUTH with a token) for the next N:
//! `--reconnect 1` opens a connection per request, as `redis-benchmark -k 0` does. A request's
//! latency still starts at its `send`, after the connection is up, but the run's `seconds`
//! (hence `throughput`) include every connect. Each connection builds its TLS configuration
//! afresh, with an empty session cache, so every handshake is a full one (no session
//! resumption), as with a new client process. The report adds `connections` (opened during
//! the run, the first `--clients` ones, opened before it starts, not included),
//! `connections_per_second` (`connections / seconds`) and `connect_failures`.
//!
//! A live progress line goes to stderr about once a second when stderr is a terminal. Exit
//! codes, so that a script can trust a run:
//!
//! - 0: the run finished, with no more failed requests than `--max-error-rate` allows (by
//!   default none) and no client that gave up;
//! - 1: the run finished and its report is printed, but more requests failed than allowed, or
//!   a client gave up reconnecting; one line on stderr says which;
//! - 2: it could not start (no connection, bad flags, failed prefill); one line on stderr.

mod addr;
mod client_flags;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use courier_rpc::client::{Client, ClientBuilder, ClientError, Pending};
use courier_rpc::echo::ECHO;
use courier_rpc::kv::{Key, SetRequest, Value, GET, MAX_VALUE_LEN, SET};
use courier_rpc::proto::Code;
use courier_rpc::tls::{ClientTlsBuilder, ClientTlsConfig};
use hdrhistogram::Histogram;

use client_flags::ClientSecurity;

/// Consecutive connection failures (no answer in between) after which a client gives up.
const MAX_RECONNECTS: u32 = 5;
/// Time to establish a connection, at start and when reconnecting; with --tls the handshake
/// gets as long again, and with a token so does AUTH's answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests kept outstanding while prefilling.
const PREFILL_WINDOW: u64 = 1024;
/// Largest latency the histograms hold, in microseconds (one hour); longer ones saturate.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Load generator for courier's echo and kv services.
#[derive(Parser, Debug)]
#[command(name = "courier-bench", version)]
struct Args {
    /// Address of the server: IP:PORT, or HOST:PORT (the first address the name resolves to).
    #[arg(long, value_parser = addr::parse, default_value = "127.0.0.1:7878")]
    addr: SocketAddr,
    /// Connections to open.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Threads driving the connections (default: the number of cores); at most --clients.
    #[arg(long)]
    threads: Option<usize>,
    /// Requests each connection keeps outstanding.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Keep --pipeline requests in flight on every connection at all times (collect the
    /// oldest response, send one more: memtier_benchmark's pipelining) instead of writing
    /// them as a batch and collecting the whole batch (redis-benchmark's -P). Streams large
    /// frames without a bubble between batches.
    #[arg(long)]
    window: bool,
    /// Total requests to complete.
    #[arg(long, default_value_t = 100_000)]
    requests: u64,
    /// Run for this many seconds instead of a number of requests.
    #[arg(long, value_name = "SECS", conflicts_with = "requests")]
    duration: Option<f64>,
    /// What to send. `get` finds no key unless --prefill is given (its NOT_FOUND answers
    /// are counted as misses, not errors).
    #[arg(long, value_enum, default_value_t = Workload::Set)]
    workload: Workload,
    /// With --workload mixed: the fraction of requests that are GETs (0 to 1).
    #[arg(long, default_value_t = 0.9)]
    read_ratio: f64,
    /// Bytes per SET value and per echo body.
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    value_size: usize,
    /// Distinct keys, drawn uniformly: key:0000000000 to key:<keyspace - 1>.
    #[arg(long, default_value_t = 100_000)]
    keyspace: u64,
    /// Before measuring, SET every key of the keyspace once (pipelined).
    #[arg(long)]
    prefill: bool,
    /// Print the results as one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Close each connection after N requests and open a new one for the next N: TCP
    /// connect, then with --tls a full TLS handshake (every connection builds its own TLS
    /// configuration, so no session is resumed; needs --tls-ca), then AUTH when a token is
    /// set. 1: a new connection per request (redis-benchmark -k 0). Latency is measured from
    /// each request's send, after its connection is up; the run's seconds include the
    /// connects. Reports the connections opened and connections per second.
    #[arg(long, value_name = "N")]
    reconnect: Option<u64>,
    /// Seed of the key generators, to repeat a run's keys (default: a random one, printed in
    /// the report).
    #[arg(long)]
    seed: Option<u64>,
    /// The largest fraction of requests (0 to 1) that may fail, answered with a status other
    /// than OK (NOT_FOUND of a GET is a miss, not a failure) or lost with their connection,
    /// for the run to exit 0; above it the exit code is 1. Default 0: any failure is one.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = error_rate)]
    max_error_rate: f64,
    #[command(flatten)]
    security: ClientSecurity,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
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
    fn name(self) -> &'static str {
        match self {
            Workload::Echo => "echo",
            Workload::Get => "get",
            Workload::Set => "set",
            Workload::Mixed => "mixed",
        }
    }
}

/// xorshift64* (Vigna, 2016): small, fast, and good enough to pick keys.
struct Rng(u64);

impl Rng {
    /// A generator for client `index` of a run seeded with `seed`: the pair through
    /// splitmix64 (never 0).
    fn for_client(seed: u64, index: usize) -> Rng {
        let mut z = (seed ^ index as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is below 2^-64 * n).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The key `key:NNNNNNNNNN` (ten digits, zero-padded; the lowest ten digits of `n`), built
/// without the formatting machinery: it runs once per request.
fn key(n: u64) -> Bytes {
    let mut key = *b"key:0000000000";
    let mut rest = n;
    for digit in key[4..].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    Bytes::copy_from_slice(&key)
}

/// How connections are opened.
struct Connector {
    /// Timeouts, TLS, token.
    builder: ClientBuilder,
    /// With --reconnect and --tls: the TLS settings (the files' contents, read once), built
    /// into a configuration of its own for every connection, with an empty session cache.
    fresh_tls: Option<ClientTlsBuilder>,
}

impl Connector {
    fn connect(&self, addr: SocketAddr) -> Result<Client, ClientError> {
        let builder = self.builder.clone();
        match &self.fresh_tls {
            // The same bytes built once at start: building them again cannot fail.
            Some(tls) => builder.tls(tls.clone().build().expect("built once at start")),
            None => builder,
        }
        .connect(addr)
    }
}

/// What the threads share: the plan and the live counters.
struct Shared {
    addr: SocketAddr,
    /// How every connection is made.
    connector: Connector,
    workload: Workload,
    read_ratio: f64,
    pipeline: usize,
    /// Collect one response per client per round instead of all (`--window`).
    window: bool,
    keyspace: u64,
    /// The run's seed, from which every client's key generator starts.
    seed: u64,
    value: Bytes,
    /// Requests per connection (`--reconnect`); `u64::MAX` without it.
    per_connection: u64,
    /// Total requests to issue, when the run is not timed.
    total: u64,
    /// When a timed run stops issuing.
    end: Option<Instant>,
    /// Requests claimed so far (may run past `total`).
    issued: AtomicU64,
    /// Requests completed so far, for the progress line.
    done: AtomicU64,
}

impl Shared {
    /// Claims one request to send; false when the run has issued all it should.
    fn claim(&self) -> bool {
        match self.end {
            Some(end) => Instant::now() < end,
            None => self.issued.fetch_add(1, Ordering::Relaxed) < self.total,
        }
    }

    /// Whether more requests may still be issued.
    fn open(&self) -> bool {
        match self.end {
            Some(end) => Instant::now() < end,
            None => self.issued.load(Ordering::Relaxed) < self.total,
        }
    }
}

/// A request sent and not yet collected.
enum Call {
    Echo(Pending<Bytes>),
    Get(Pending<Value>),
    Set(Pending<()>),
}

/// How a collected request ended when the server answered OK (or NOT_FOUND to a GET).
enum Answer {
    Hit,
    Miss,
}

/// One connection and its outstanding requests.
struct Slot {
    client: Option<Client>,
    in_flight: VecDeque<(Call, Instant)>,
    rng: Rng,
    /// Requests the connection may still carry before it is replaced (`--reconnect`).
    left: u64,
    /// Connection failures since the last answer.
    failures: u32,
    retry_at: Instant,
    retired: bool,
}

/// What one thread measured.
struct Tally {
    histogram: Histogram<u64>,
    requests: u64,
    misses: u64,
    errors: HashMap<String, u64>,
    clients_lost: u64,
    /// Connections opened during the run, and connects that failed.
    connections: u64,
    connect_failures: u64,
    /// When the (last) thread collected its last response.
    finished: Instant,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            histogram: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("valid histogram bounds"),
            requests: 0,
            misses: 0,
            errors: HashMap::new(),
            clients_lost: 0,
            connections: 0,
            connect_failures: 0,
            finished: Instant::now(),
        }
    }

    fn error(&mut self, name: String, count: u64) {
        *self.errors.entry(name).or_insert(0) += count;
    }

    fn merge(&mut self, other: Tally) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms with the same bounds");
        self.requests += other.requests;
        self.misses += other.misses;
        self.clients_lost += other.clients_lost;
        self.connections += other.connections;
        self.connect_failures += other.connect_failures;
        self.finished = self.finished.max(other.finished);
        for (name, count) in other.errors {
            self.error(name, count);
        }
    }
}

/// The name an error is counted under: the status name for a non-OK answer, else the kind.
fn error_name(err: &ClientError) -> String {
    match err {
        ClientError::Status(s) => s.code.to_string(),
        ClientError::Connection(_) => "connection".into(),
        ClientError::Timeout => "timeout".into(),
        ClientError::Protocol(_) => "protocol".into(),
        ClientError::Encode(_) => "encode".into(),
        ClientError::Closed => "closed".into(),
        ClientError::Io(_) => "io".into(),
        ClientError::Tls(_) => "tls".into(),
        ClientError::NotTls { .. } => "not_tls".into(),
        ClientError::Auth(_) => "auth".into(),
        _ => "other".into(),
    }
}

/// Queues one request of the workload on `client`.
fn send(shared: &Shared, client: &mut Client, rng: &mut Rng) -> Result<Call, ClientError> {
    let read = match shared.workload {
        Workload::Echo => return client.send(&ECHO, &shared.value).map(Call::Echo),
        Workload::Get => true,
        Workload::Set => false,
        Workload::Mixed => rng.unit() < shared.read_ratio,
    };
    let key = key(rng.below(shared.keyspace));
    if read {
        client.send(&GET, &Key(key)).map(Call::Get)
    } else {
        let request = SetRequest {
            key,
            value: shared.value.clone(),
        };
        client.send(&SET, &request).map(Call::Set)
    }
}

/// Collects the response to `call`.
fn wait(client: &mut Client, call: Call) -> Result<Answer, ClientError> {
    match call {
        Call::Echo(p) => client.wait(p).map(|_| Answer::Hit),
        Call::Set(p) => client.wait(p).map(|()| Answer::Hit),
        Call::Get(p) => match client.wait(p) {
            Ok(_) => Ok(Answer::Hit),
            Err(ClientError::Status(s)) if s.code == Code::NOT_FOUND => Ok(Answer::Miss),
            Err(err) => Err(err),
        },
    }
}

/// The connection of `slot` failed with `err`: count every outstanding request, and `extra`
/// more (the one being sent or collected), as errors, drop the connection and schedule a
/// reconnect.
fn lose_connection(
    shared: &Shared,
    slot: &mut Slot,
    tally: &mut Tally,
    err: &ClientError,
    extra: u64,
) {
    let lost = extra + slot.in_flight.len() as u64;
    slot.in_flight.clear();
    tally.error(error_name(err), lost);
    tally.requests += lost;
    shared.done.fetch_add(lost, Ordering::Relaxed);
    if let Some(client) = slot.client.take() {
        client.close();
    }
    slot.failures += 1;
    slot.retry_at = Instant::now() + Duration::from_millis(100) * slot.failures;
}

/// One thread: drives `clients` round-robin until the run has issued all it should and every
/// response is in.
fn drive(shared: &Shared, clients: Vec<(usize, Client)>) -> Tally {
    let mut tally = Tally::new();
    let mut slots: Vec<Slot> = clients
        .into_iter()
        .map(|(index, client)| Slot {
            client: Some(client),
            in_flight: VecDeque::with_capacity(shared.pipeline),
            rng: Rng::for_client(shared.seed, index),
            left: shared.per_connection,
            failures: 0,
            retry_at: Instant::now(),
            retired: false,
        })
        .collect();
    loop {
        // Top every client up to the pipeline depth and write its requests.
        let mut waiting_to_reconnect = false;
        for slot in slots.iter_mut().filter(|s| !s.retired) {
            if slot.client.is_none() {
                if !shared.open() || slot.failures > MAX_RECONNECTS {
                    slot.retired = true;
                    tally.clients_lost += u64::from(shared.open());
                    continue;
                }
                if Instant::now() < slot.retry_at {
                    waiting_to_reconnect = true;
                    continue;
                }
                match shared.connector.connect(shared.addr) {
                    Ok(client) => {
                        slot.client = Some(client);
                        slot.left = shared.per_connection;
                        tally.connections += 1;
                    }
                    Err(_) => {
                        tally.connect_failures += 1;
                        slot.failures += 1;
                        slot.retry_at = Instant::now() + Duration::from_millis(100) * slot.failures;
                        waiting_to_reconnect = true;
                        continue;
                    }
                }
            }
            let client = slot.client.as_mut().expect("connected above");
            let mut failed = None;
            // One clock reading for the batch: its requests go out together, in the flush below.
            let sent = Instant::now();
            while slot.in_flight.len() < shared.pipeline && slot.left > 0 && shared.claim() {
                slot.left -= 1;
                match send(shared, client, &mut slot.rng) {
                    Ok(call) => slot.in_flight.push_back((call, sent)),
                    Err(err) => {
                        failed = Some((err, 1));
                        break;
                    }
                }
            }
            if failed.is_none() {
                failed = client.flush().err().map(|err| (err, 0));
            }
            if let Some((err, extra)) = failed {
                lose_connection(shared, slot, &mut tally, &err, extra);
            }
        }
        // Collect every client's outstanding responses, as redis-benchmark does before it
        // writes the next batch; with --window, only the oldest.
        let mut outstanding = false;
        for slot in slots.iter_mut() {
            let collect = if shared.window {
                slot.in_flight.len().min(1)
            } else {
                slot.in_flight.len()
            };
            for _ in 0..collect {
                let Some((call, sent)) = slot.in_flight.pop_front() else {
                    break;
                };
                let client = slot
                    .client
                    .as_mut()
                    .expect("requests in flight on a client");
                let result = wait(client, call);
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                match result {
                    Ok(answer) => {
                        tally.histogram.saturating_record(micros.max(1));
                        tally.requests += 1;
                        tally.misses += u64::from(matches!(answer, Answer::Miss));
                        shared.done.fetch_add(1, Ordering::Relaxed);
                        slot.failures = 0;
                    }
                    Err(ClientError::Status(s)) => {
                        // Answered, with a non-OK status: the connection is fine.
                        tally.histogram.saturating_record(micros.max(1));
                        tally.requests += 1;
                        tally.error(s.code.to_string(), 1);
                        shared.done.fetch_add(1, Ordering::Relaxed);
                        slot.failures = 0;
                    }
                    Err(err) => {
                        lose_connection(shared, slot, &mut tally, &err, 1);
                        break;
                    }
                }
            }
            outstanding |= !slot.in_flight.is_empty();
            // --reconnect: the connection has carried its requests; the next round opens
            // another.
            if slot.left == 0 && slot.in_flight.is_empty() {
                if let Some(client) = slot.client.take() {
                    client.close();
                }
            }
        }
        if !outstanding && !shared.open() || slots.iter().all(|s| s.retired) {
            break;
        }
        if waiting_to_reconnect && !outstanding {
            thread::sleep(Duration::from_millis(10));
        }
    }
    tally.finished = Instant::now();
    tally
}

/// Sets every key of the keyspace once, `PREFILL_WINDOW` requests at a time.
fn prefill(shared: &Shared, show_progress: bool) -> Result<()> {
    let mut client = shared
        .connector
        .connect(shared.addr)
        .with_context(|| format!("cannot connect to {} to prefill", shared.addr))?;
    let mut next = 0;
    while next < shared.keyspace {
        let end = (next + PREFILL_WINDOW).min(shared.keyspace);
        let pending = (next..end)
            .map(|n| {
                let request = SetRequest {
                    key: key(n),
                    value: shared.value.clone(),
                };
                client.send(&SET, &request)
            })
            .collect::<Result<Vec<_>, _>>()
            .context("prefill failed")?;
        for p in pending {
            client.wait(p).context("prefill failed")?;
        }
        next = end;
        if show_progress {
            eprint!("\rprefill: {next} of {} keys", shared.keyspace);
        }
    }
    if show_progress {
        eprint!("\r{:60}\r", "");
    }
    client.close();
    Ok(())
}

/// The run's results.
struct Report {
    workload: Workload,
    clients: usize,
    threads: usize,
    pipeline: usize,
    value_size: usize,
    /// `--reconnect`: the figures about connections are reported.
    reconnect: bool,
    seed: u64,
    seconds: f64,
    tally: Tally,
}

impl Report {
    fn throughput(&self) -> f64 {
        self.per_second(self.tally.requests)
    }

    fn per_second(&self, count: u64) -> f64 {
        if self.seconds > 0.0 {
            count as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Latency percentiles and max in milliseconds: p50, p90, p99, p99.9, max.
    fn latencies(&self) -> [f64; 5] {
        let h = &self.tally.histogram;
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return [0.0; 5];
        }
        [
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.9)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max()),
        ]
    }

    fn errors(&self) -> BTreeMap<&str, u64> {
        self.tally
            .errors
            .iter()
            .map(|(name, count)| (name.as_str(), *count))
            .collect()
    }

    fn text(&self, read_ratio: f64) -> String {
        let [p50, p90, p99, p999, max] = self.latencies();
        let workload = match self.workload {
            Workload::Mixed => format!("mixed ({:.0}% GET)", read_ratio * 100.0),
            w => w.name().to_string(),
        };
        let mut out = String::new();
        let _ = writeln!(out, "workload:    {workload}");
        let _ = writeln!(out, "clients:     {}", self.clients);
        let _ = writeln!(out, "threads:     {}", self.threads);
        let _ = writeln!(out, "pipeline:    {}", self.pipeline);
        let _ = writeln!(out, "value size:  {} bytes", self.value_size);
        let _ = writeln!(out, "seed:        {}", self.seed);
        let _ = writeln!(out, "requests:    {}", self.tally.requests);
        let _ = writeln!(out, "seconds:     {:.3}", self.seconds);
        let _ = writeln!(out, "throughput:  {:.1} req/s", self.throughput());
        let _ = writeln!(
            out,
            "latency ms:  p50 {p50:.3}  p90 {p90:.3}  p99 {p99:.3}  p99.9 {p999:.3}  max {max:.3}"
        );
        let _ = writeln!(out, "misses:      {}", self.tally.misses);
        if self.reconnect {
            let _ = writeln!(
                out,
                "connections: {} opened ({:.1}/s), {} failed",
                self.tally.connections,
                self.per_second(self.tally.connections),
                self.tally.connect_failures
            );
        }
        let errors = self.errors();
        if errors.is_empty() {
            let _ = writeln!(out, "errors:      none");
        } else {
            let list: Vec<String> = errors.iter().map(|(n, c)| format!("{n} {c}")).collect();
            let _ = writeln!(out, "errors:      {}", list.join(", "));
        }
        out
    }

    fn json(&self) -> String {
        let [p50, p90, p99, p999, max] = self.latencies();
        let errors: Vec<String> = self
            .errors()
            .iter()
            .map(|(name, count)| format!("{}:{count}", json_string(name)))
            .collect();
        let connections = if self.reconnect {
            format!(
                ",\"connections\":{},\"connections_per_second\":{:.1},\"connect_failures\":{}",
                self.tally.connections,
                self.per_second(self.tally.connections),
                self.tally.connect_failures
            )
        } else {
            String::new()
        };
        format!(
            concat!(
                "{{\"workload\":{},\"clients\":{},\"threads\":{},\"pipeline\":{},",
                "\"value_size\":{},\"seed\":{},\"requests\":{},\"seconds\":{:.3},\"throughput\":{:.1},",
                "\"latency_ms\":{{\"p50\":{:.3},\"p90\":{:.3},\"p99\":{:.3},\"p999\":{:.3},",
                "\"max\":{:.3}}},\"misses\":{}{},\"errors\":{{{}}}}}"
            ),
            json_string(self.workload.name()),
            self.clients,
            self.threads,
            self.pipeline,
            self.value_size,
            self.seed,
            self.tally.requests,
            self.seconds,
            self.throughput(),
            p50,
            p90,
            p99,
            p999,
            max,
            self.tally.misses,
            connections,
            errors.join(",")
        )
    }
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

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

fn run(args: &Args) -> Result<Report> {
    if args.clients == 0 || args.pipeline == 0 || args.keyspace == 0 {
        bail!("--clients, --pipeline and --keyspace must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.read_ratio) {
        bail!(
            "--read-ratio must be between 0 and 1, not {}",
            args.read_ratio
        );
    }
    if args.reconnect == Some(0) {
        bail!("--reconnect must be at least 1");
    }
    if args.value_size > MAX_VALUE_LEN {
        bail!("--value-size is at most {MAX_VALUE_LEN} bytes (the kv limit)");
    }
    let duration = match args.duration {
        Some(secs) => Some(
            Duration::try_from_secs_f64(secs)
                .ok()
                .filter(|d| !d.is_zero())
                .context("--duration must be a positive number of seconds")?,
        ),
        None => None,
    };
    let threads = args
        .threads
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, args.clients);
    let addr = args.addr;
    let show_progress = std::io::stderr().is_terminal();

    let builder = args
        .security
        .apply(Client::builder().connect_timeout(CONNECT_TIMEOUT))?;
    let fresh_tls = match args.reconnect {
        Some(_) if args.security.tls => Some(fresh_tls(&args.security)?),
        _ => None,
    };
    let connector = Connector { builder, fresh_tls };

    // Connect every client first: a server that is not there fails the run before it starts.
    let mut per_thread: Vec<Vec<(usize, Client)>> = (0..threads).map(|_| Vec::new()).collect();
    for index in 0..args.clients {
        let client = connector.connect(addr).map_err(|err| {
            client_flags::connect_error(err, &addr.to_string(), "is the server running?")
        })?;
        per_thread[index % threads].push((index, client));
    }

    let seed = args.seed.unwrap_or_else(random_seed);
    let mut shared = Shared {
        addr,
        connector,
        workload: args.workload,
        read_ratio: args.read_ratio,
        pipeline: args.pipeline,
        window: args.window,
        keyspace: args.keyspace,
        seed,
        value: Bytes::from(vec![b'x'; args.value_size]),
        per_connection: args.reconnect.unwrap_or(u64::MAX),
        total: args.requests,
        end: None,
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
    };
    if args.prefill {
        prefill(&shared, show_progress)?;
    }

    let start = Instant::now();
    shared.end = duration.map(|d| start + d);
    let shared = Arc::new(shared);
    let handles: Vec<_> = per_thread
        .into_iter()
        .map(|clients| {
            let shared = Arc::clone(&shared);
            thread::spawn(move || drive(&shared, clients))
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
    let mut tally = Tally::new();
    tally.finished = start;
    for handle in handles {
        tally.merge(handle.join().expect("a benchmark thread panicked"));
    }
    let seconds = (tally.finished - start).as_secs_f64();
    Ok(Report {
        workload: args.workload,
        clients: args.clients,
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

/// Parses `--max-error-rate`: a number from 0 to 1.
fn error_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("{text:?} is not a fraction from 0 to 1")),
    }
}

impl Report {
    /// Why the run should exit 1, if it should: more failed requests than `max_rate` allows,
    /// or clients that gave up.
    fn failure(&self, max_rate: f64) -> Option<String> {
        let failed: u64 = self.tally.errors.values().sum();
        let requests = self.tally.requests.max(1);
        let rate = failed as f64 / requests as f64;
        if rate > max_rate {
            return Some(format!(
                "{failed} of {} requests failed ({:.2}%), above --max-error-rate {max_rate}",
                self.tally.requests,
                rate * 100.0
            ));
        }
        if self.tally.clients_lost > 0 {
            return Some(format!(
                "{} clients gave up after {MAX_RECONNECTS} failed reconnects",
                self.tally.clients_lost
            ));
        }
        None
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Quiet unless RUST_LOG asks: the results go to stdout, errors are one line on stderr.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(&args) {
        Ok(report) => {
            let out = if args.json {
                report.json() + "\n"
            } else {
                report.text(args.read_ratio)
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

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_ten_zero_padded_digits() {
        assert_eq!(&super::key(0)[..], b"key:0000000000");
        assert_eq!(&super::key(42)[..], b"key:0000000042");
        assert_eq!(&super::key(9_876_543_210)[..], b"key:9876543210");
    }
}
