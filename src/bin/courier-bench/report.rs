//! What a run measured ([`Tally`], one per thread, merged), and the report: text, or one
//! JSON object serialized by serde_json from [`JsonReport`].

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::args::Workload;
use crate::driver::MAX_RECONNECTS;
use crate::workload::Answer;

/// Largest latency the histograms hold, in microseconds (one hour); longer ones saturate.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// What one thread measured.
#[derive(Debug)]
pub struct Tally {
    /// Latency of every answered request, in microseconds.
    pub histogram: Histogram<u64>,
    /// Requests completed: answered (any status) or failed with their connection.
    pub requests: u64,
    /// GETs answered NOT_FOUND.
    pub misses: u64,
    /// Failed requests by status name or error kind.
    pub errors: HashMap<String, u64>,
    /// Clients given up: their server stopped answering, or reconnecting failed too often.
    pub clients_lost: u64,
    /// Connections opened during the run, and connects that failed.
    pub connections: u64,
    /// Connections that failed before they were ready.
    pub connect_failures: u64,
    /// Requests completed (as in `requests`) by each server, in the order of `--addr`.
    pub per_server: Vec<u64>,
    /// When the (last) thread was done.
    pub finished: Instant,
}

impl Tally {
    /// An empty tally of a run against `servers` servers.
    pub fn new(servers: usize) -> Tally {
        Tally {
            histogram: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("valid histogram bounds"),
            requests: 0,
            misses: 0,
            errors: HashMap::new(),
            clients_lost: 0,
            connections: 0,
            connect_failures: 0,
            per_server: vec![0; servers],
            finished: Instant::now(),
        }
    }

    fn error(&mut self, name: &str, count: u64) {
        if count > 0 {
            *self.errors.entry(name.to_string()).or_insert(0) += count;
        }
    }

    /// Counts one completed request: its answer, and its latency when the server answered.
    pub fn record(&mut self, answer: Answer, latency: Option<Duration>) {
        self.requests += 1;
        if let Some(latency) = latency {
            let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            self.histogram.saturating_record(micros.max(1));
        }
        match answer {
            Answer::Hit => {}
            Answer::Miss => self.misses += 1,
            Answer::Failed(code) => self.error(&code.to_string(), 1),
            Answer::Malformed => self.error("message", 1),
        }
    }

    /// Counts `count` requests lost with their connection, under `kind`.
    pub fn lose(&mut self, kind: &str, count: u64) {
        self.requests += count;
        self.error(kind, count);
    }

    /// Adds `other` to this tally.
    pub fn merge(&mut self, other: Tally) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms with the same bounds");
        self.requests += other.requests;
        self.misses += other.misses;
        self.clients_lost += other.clients_lost;
        self.connections += other.connections;
        self.connect_failures += other.connect_failures;
        self.finished = self.finished.max(other.finished);
        for (mine, theirs) in self.per_server.iter_mut().zip(other.per_server) {
            *mine += theirs;
        }
        for (name, count) in other.errors {
            self.error(&name, count);
        }
    }
}

/// The run's results.
#[derive(Debug)]
pub struct Report {
    /// The settings shown in the report.
    pub workload: Workload,
    pub read_ratio: f64,
    pub clients: usize,
    /// The servers' names (`--addr` as written), in order.
    pub servers: Vec<String>,
    pub threads: usize,
    pub pipeline: usize,
    pub value_size: usize,
    /// `--reconnect`: the figures about connections are reported.
    pub reconnect: bool,
    pub seed: u64,
    /// From the first request to the last response.
    pub seconds: f64,
    pub tally: Tally,
}

/// The `--json` report: one object, these fields in this order. `servers` only with several
/// `--addr`; `connections`, `connections_per_second` and `connect_failures` only with
/// `--reconnect`.
#[derive(Debug, Serialize)]
pub struct JsonReport<'a> {
    workload: &'static str,
    clients: usize,
    threads: usize,
    pipeline: usize,
    value_size: usize,
    seed: u64,
    requests: u64,
    /// Three decimals.
    seconds: f64,
    /// Requests per second, one decimal.
    throughput: f64,
    latency_ms: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    servers: Option<Vec<ServerCount<'a>>>,
    misses: u64,
    clients_lost: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    connections: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connections_per_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connect_failures: Option<u64>,
    /// Failed requests by status name or error kind, sorted by name.
    errors: BTreeMap<&'a str, u64>,
}

/// One server's share of a run over several: its `--addr` as written, and the requests it
/// completed (answered, whatever the status, or lost with its connection).
#[derive(Debug, Serialize)]
struct ServerCount<'a> {
    addr: &'a str,
    requests: u64,
}

/// Latency percentiles in milliseconds, three decimals.
#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

/// `x` rounded to `decimals` places, so that serde_json prints it as the text report does.
fn rounded(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
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

    fn latency(&self) -> Latency {
        let h = &self.tally.histogram;
        let ms = |us: u64| rounded(us as f64 / 1000.0, 3);
        if h.is_empty() {
            return Latency {
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
            };
        }
        Latency {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }

    /// Each server's requests, with several servers.
    fn servers(&self) -> Option<Vec<ServerCount<'_>>> {
        (self.servers.len() > 1).then(|| {
            self.servers
                .iter()
                .zip(&self.tally.per_server)
                .map(|(addr, &requests)| ServerCount { addr, requests })
                .collect()
        })
    }

    fn errors(&self) -> BTreeMap<&str, u64> {
        self.tally
            .errors
            .iter()
            .map(|(name, count)| (name.as_str(), *count))
            .collect()
    }

    /// The report as text, one figure per line.
    pub fn text(&self) -> String {
        let Latency {
            p50,
            p90,
            p99,
            p999,
            max,
        } = self.latency();
        let workload = match self.workload {
            Workload::Mixed => format!("mixed ({:.0}% GET)", self.read_ratio * 100.0),
            w => w.name().to_string(),
        };
        let mut out = String::new();
        let _ = writeln!(out, "workload:    {workload}");
        if self.servers.len() > 1 {
            let _ = writeln!(
                out,
                "clients:     {} (each with a connection to each of {} servers)",
                self.clients,
                self.servers.len()
            );
        } else {
            let _ = writeln!(out, "clients:     {}", self.clients);
        }
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
        if let Some(servers) = self.servers() {
            let list: Vec<String> = servers
                .iter()
                .map(|s| format!("{} {}", s.addr, s.requests))
                .collect();
            let _ = writeln!(out, "per server:  {}", list.join(", "));
        }
        let _ = writeln!(out, "misses:      {}", self.tally.misses);
        if self.tally.clients_lost > 0 {
            let _ = writeln!(out, "clients lost: {}", self.tally.clients_lost);
        }
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

    /// The report as one line of JSON.
    pub fn json(&self) -> String {
        let connections = self.reconnect.then_some(self.tally.connections);
        let report = JsonReport {
            workload: self.workload.name(),
            clients: self.clients,
            threads: self.threads,
            pipeline: self.pipeline,
            value_size: self.value_size,
            seed: self.seed,
            requests: self.tally.requests,
            seconds: rounded(self.seconds, 3),
            throughput: rounded(self.throughput(), 1),
            latency_ms: self.latency(),
            servers: self.servers(),
            misses: self.tally.misses,
            clients_lost: self.tally.clients_lost,
            connections,
            connections_per_second: connections.map(|n| rounded(self.per_second(n), 1)),
            connect_failures: self.reconnect.then_some(self.tally.connect_failures),
            errors: self.errors(),
        };
        // Only numbers, strings and maps of them: serializing cannot fail.
        serde_json::to_string(&report).unwrap_or_else(|err| format!("{{\"error\":\"{err}\"}}"))
    }

    /// Why the run should exit 1, if it should: more failed requests than `max_rate` allows,
    /// or clients lost.
    pub fn failure(&self, max_rate: f64) -> Option<String> {
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
                "{} clients lost: their server stopped answering for --timeout, or they failed \
                 to reconnect {MAX_RECONNECTS} times in a row",
                self.tally.clients_lost
            ));
        }
        None
    }
}
