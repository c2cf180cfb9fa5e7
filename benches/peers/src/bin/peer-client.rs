//! `peer-client`: the load client of `benches/clients.sh` and `benches/balancer.sh`. One
//! connection to an echo server (or, for the balancer kinds, courier's balancing client over
//! several), `--calls` unary echo calls of a `--payload-size`-byte body, `--concurrency` at a
//! time (one at a time for courier-call and courier-balancer), every reply checked; prints
//! one JSON line with the calls, the seconds, the calls per second and the CPU time this
//! process spent (user + system, `getrusage(RUSAGE_SELF)`) over the timed part, and for the
//! balancer kinds the attempts each server got and the retries in the timed part. Exit
//! status: 0 when every call was answered with its payload, 1 when one failed (the JSON line
//! is printed, the first failure goes to stderr), 2 when it could not start (bad flags, no
//! connection, a failed warm-up).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Instant;

use bytes::Bytes;
use clap::builder::TypedValueParser;
use clap::{Parser, ValueEnum};
use serde::Serialize;

use courier_peers::client::{self, Caller, Outcome};
use courier_peers::cpu_seconds;
use courier_rpc::client::balance::{Balancer, BalancerStats, DEFAULT_CONNECTIONS_PER_SERVER};

/// Load client for benches/clients.sh and benches/balancer.sh: unary echo calls over one
/// connection, or through courier's balancing client over several servers.
#[derive(Parser, Debug)]
#[command(name = "peer-client")]
struct Args {
    /// The client: courier-blocking (one courier Client pipelining --concurrency calls on
    /// this thread); courier-call (one courier Client, Client::call one at a time on this
    /// thread; --concurrency is ignored); courier-balancer (one blocking Balancer over every
    /// --addr, Balancer::call one at a time on this thread; --concurrency is ignored); or
    /// courier-async, tonic, tarpc (--concurrency tasks on a tokio current-thread runtime
    /// sharing one connection); courier-async-balancer (--concurrency tasks on a
    /// current-thread runtime sharing one AsyncBalancer over every --addr).
    #[arg(long, value_enum)]
    client: Kind,
    /// The echo server (courier's echo-server, or peer-server tonic / tarpc): exactly one,
    /// except for courier-balancer and courier-async-balancer, which take a comma-separated
    /// list of servers (IP:PORT,IP:PORT,...), each given once.
    #[arg(long, value_delimiter = ',', required = true)]
    addr: Vec<SocketAddr>,
    /// Calls in the timed part.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    calls: u64,
    /// Calls in flight at once (tasks, or the blocking client's pipeline depth).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    concurrency: u32,
    /// Bytes of each call's body.
    #[arg(long, default_value_t = 64)]
    payload_size: usize,
    /// Calls made after connecting and before the clock starts, not counted.
    #[arg(long, default_value_t = 1000)]
    warmup: u64,
    /// courier-async-balancer: connections per server (BalancerBuilder::connections_per_server;
    /// the default is the balancer's own).
    #[arg(long, default_value_t = DEFAULT_CONNECTIONS_PER_SERVER,
          value_parser = clap::value_parser!(u16).range(1..).map(usize::from))]
    connections_per_server: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Kind {
    CourierBlocking,
    CourierCall,
    CourierBalancer,
    CourierAsync,
    CourierAsyncBalancer,
    Tonic,
    Tarpc,
}

impl Kind {
    /// Whether it balances over a list of servers.
    fn balancer(self) -> bool {
        matches!(self, Kind::CourierBalancer | Kind::CourierAsyncBalancer)
    }

    /// Whether it makes one call at a time, whatever --concurrency says.
    fn one_at_a_time(self) -> bool {
        matches!(self, Kind::CourierCall | Kind::CourierBalancer)
    }
}

/// The JSON line.
#[derive(Serialize)]
struct Report {
    client: Kind,
    /// Calls in flight at once: 1 for courier-call and courier-balancer.
    concurrency: u32,
    /// The servers called (more than one only for the balancer kinds).
    servers: usize,
    payload_size: usize,
    /// Calls answered with their payload in the timed part.
    calls: u64,
    seconds: f64,
    calls_per_second: f64,
    /// User + system CPU seconds of this process over the timed part.
    client_cpu_seconds: f64,
    client_cpu_us_per_call: f64,
    errors: u64,
    /// The balancer kinds: attempts each server got in the timed part, in --addr order.
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts_per_server: Option<Vec<u64>>,
    /// The balancer kinds: retries in the timed part (0 unless a server refused or failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    retries: Option<u64>,
}

/// A run's result: the outcome of the timed part, its wall-clock and CPU seconds, and a
/// balancer's figures before and after it.
struct Timed {
    outcome: Outcome,
    seconds: f64,
    cpu_seconds: f64,
    stats: Option<(BalancerStats, BalancerStats)>,
}

impl Timed {
    fn with_stats(mut self, before: BalancerStats, after: BalancerStats) -> Timed {
        self.stats = Some((before, after));
        self
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    // A recognisable body: bytes 0, 1, 2, ... wrapping at 256.
    let payload = Bytes::from((0..args.payload_size).map(|i| i as u8).collect::<Vec<u8>>());
    let timed = check_addrs(&args).and_then(|()| match args.client {
        Kind::CourierBlocking => run_blocking(&args, &payload),
        Kind::CourierCall => run_call(&args, &payload),
        Kind::CourierBalancer => run_balancer(&args, &payload),
        kind => run_async(kind, &args, &payload),
    });
    let timed = match timed {
        Ok(timed) => timed,
        Err(e) => {
            eprintln!("peer-client: {e}");
            return ExitCode::from(2);
        }
    };
    let Timed {
        outcome,
        seconds,
        cpu_seconds,
        stats,
    } = timed;
    let attempts_per_server = stats.as_ref().map(|(before, after)| {
        (after.servers.iter().zip(&before.servers))
            .map(|(a, b)| a.attempts - b.attempts)
            .collect()
    });
    let report = Report {
        client: args.client,
        concurrency: if args.client.one_at_a_time() {
            1
        } else {
            args.concurrency
        },
        servers: args.addr.len(),
        payload_size: args.payload_size,
        calls: outcome.ok,
        seconds,
        calls_per_second: outcome.ok as f64 / seconds,
        client_cpu_seconds: cpu_seconds,
        client_cpu_us_per_call: cpu_seconds / outcome.ok.max(1) as f64 * 1e6,
        errors: outcome.errors,
        attempts_per_server,
        retries: stats.map(|(before, after)| after.retries - before.retries),
    };
    match serde_json::to_string(&report) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("peer-client: cannot write the report: {e}");
            return ExitCode::from(1);
        }
    }
    match outcome.first_error {
        Some(first) => {
            eprintln!(
                "peer-client: {} call(s) failed; the first: {first}",
                outcome.errors
            );
            ExitCode::from(1)
        }
        None => ExitCode::SUCCESS,
    }
}

/// Times `run` between two readings of the clock and of this process's CPU time.
fn timed(run: impl FnOnce() -> Outcome) -> Result<Timed, String> {
    let cpu_before = cpu_seconds().map_err(|e| format!("getrusage: {e}"))?;
    let start = Instant::now();
    let outcome = run();
    let seconds = start.elapsed().as_secs_f64();
    let cpu_after = cpu_seconds().map_err(|e| format!("getrusage: {e}"))?;
    Ok(Timed {
        outcome,
        seconds,
        cpu_seconds: cpu_after - cpu_before,
        stats: None,
    })
}

/// The balancer kinds take one or more servers, the others exactly one.
fn check_addrs(args: &Args) -> Result<(), String> {
    if !args.client.balancer() && args.addr.len() != 1 {
        return Err(format!(
            "--client {} takes one --addr, not {}",
            args.client
                .to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_owned()),
            args.addr.len()
        ));
    }
    Ok(())
}

fn warmed(outcome: Outcome) -> Result<(), String> {
    match outcome.first_error {
        None => Ok(()),
        Some(first) => Err(format!("the warm-up failed: {first}")),
    }
}

fn run_blocking(args: &Args, payload: &Bytes) -> Result<Timed, String> {
    let addr = args.addr[0];
    let mut client =
        courier_rpc::Client::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let depth = args.concurrency as usize;
    warmed(client::courier_blocking(
        &mut client,
        args.warmup,
        depth,
        payload,
    ))?;
    timed(|| client::courier_blocking(&mut client, args.calls, depth, payload))
}

fn run_call(args: &Args, payload: &Bytes) -> Result<Timed, String> {
    let addr = args.addr[0];
    let mut client =
        courier_rpc::Client::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    warmed(client::one_at_a_time(args.warmup, payload, |p| {
        client::courier_call(&mut client, p)
    }))?;
    timed(|| {
        client::one_at_a_time(args.calls, payload, |p| {
            client::courier_call(&mut client, p)
        })
    })
}

/// The blocking balancer over every --addr, with its defaults; its first calls (the
/// warm-up) open its connections.
fn run_balancer(args: &Args, payload: &Bytes) -> Result<Timed, String> {
    let balancer = Balancer::builder()
        .build(args.addr.iter().map(ToString::to_string))
        .map_err(|e| format!("cannot build the balancer: {e}"))?;
    warmed(client::one_at_a_time(args.warmup, payload, |p| {
        client::courier_balancer_call(&balancer, p)
    }))?;
    let before = balancer.stats();
    let timed = timed(|| {
        client::one_at_a_time(args.calls, payload, |p| {
            client::courier_balancer_call(&balancer, p)
        })
    })?;
    Ok(timed.with_stats(before, balancer.stats()))
}

fn run_async(kind: Kind, args: &Args, payload: &Bytes) -> Result<Timed, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    let addr = args.addr[0];
    let connect_error = |e: &dyn std::fmt::Display| format!("cannot connect to {addr}: {e}");
    match kind {
        Kind::Tonic => {
            let caller = runtime
                .block_on(client::Tonic::connect(addr))
                .map_err(|e| connect_error(&e))?;
            load(&runtime, caller, args, payload, None)
        }
        Kind::Tarpc => {
            let caller = runtime
                .block_on(client::Tarpc::connect(addr))
                .map_err(|e| connect_error(&e))?;
            load(&runtime, caller, args, payload, None)
        }
        Kind::CourierAsync => {
            let caller = runtime
                .block_on(client::CourierAsync::connect(addr))
                .map_err(|e| connect_error(&e))?;
            load(&runtime, caller, args, payload, None)
        }
        Kind::CourierAsyncBalancer => {
            let caller = runtime
                .block_on(client::CourierAsyncBalancer::build(
                    &args.addr,
                    args.connections_per_server,
                ))
                .map_err(|e| format!("cannot build the balancer: {e}"))?;
            let stats = || caller.stats();
            load(&runtime, caller.clone(), args, payload, Some(&stats))
        }
        Kind::CourierBlocking | Kind::CourierCall | Kind::CourierBalancer => {
            Err(format!("{kind:?} is not an async client"))
        }
    }
}

/// Runs the warm-up, then the timed calls, on `runtime`; with `stats` (a balancer's), takes
/// its figures after the warm-up and after the timed part.
fn load<C: Caller>(
    runtime: &tokio::runtime::Runtime,
    caller: C,
    args: &Args,
    payload: &Bytes,
    stats: Option<&dyn Fn() -> BalancerStats>,
) -> Result<Timed, String> {
    let concurrency = args.concurrency as usize;
    warmed(runtime.block_on(client::drive(
        caller.clone(),
        args.warmup,
        concurrency,
        payload.clone(),
    )))?;
    let before = stats.map(|stats| stats());
    let timed = timed(|| {
        runtime.block_on(client::drive(
            caller,
            args.calls,
            concurrency,
            payload.clone(),
        ))
    })?;
    Ok(match (before, stats) {
        (Some(before), Some(stats)) => timed.with_stats(before, stats()),
        _ => timed,
    })
}
