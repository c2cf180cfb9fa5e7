//! `peer-client`: the load client of `benches/clients.sh`. One connection to an echo server,
//! `--calls` unary echo calls of a `--payload-size`-byte body, `--concurrency` at a time,
//! every reply checked; prints one JSON line with the calls, the seconds, the calls per
//! second and the CPU time this process spent (user + system, `getrusage(RUSAGE_SELF)`)
//! over the timed part. Exit status: 0 when every call was answered with its payload, 1 when
//! one failed (the JSON line is printed, the first failure goes to stderr), 2 when it could
//! not start (bad flags, no connection, a failed warm-up).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Instant;

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use serde::Serialize;

use courier_peers::client::{self, Caller, Outcome};
use courier_peers::cpu_seconds;

/// Load client for benches/clients.sh: unary echo calls over one connection.
#[derive(Parser, Debug)]
#[command(name = "peer-client")]
struct Args {
    /// The client: courier-blocking (one courier Client pipelining --concurrency calls on
    /// this thread), or courier-async, tonic, tarpc (--concurrency tasks on a tokio
    /// current-thread runtime sharing one connection).
    #[arg(long, value_enum)]
    client: Kind,
    /// The echo server: courier's echo-server, or peer-server tonic / tarpc.
    #[arg(long)]
    addr: SocketAddr,
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Kind {
    CourierBlocking,
    CourierAsync,
    Tonic,
    Tarpc,
}

/// The JSON line.
#[derive(Serialize)]
struct Report {
    client: Kind,
    concurrency: u32,
    payload_size: usize,
    /// Calls answered with their payload in the timed part.
    calls: u64,
    seconds: f64,
    calls_per_second: f64,
    /// User + system CPU seconds of this process over the timed part.
    client_cpu_seconds: f64,
    client_cpu_us_per_call: f64,
    errors: u64,
}

/// A run's result: the outcome of the timed part, its wall-clock and CPU seconds.
struct Timed {
    outcome: Outcome,
    seconds: f64,
    cpu_seconds: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // A recognisable body: bytes 0, 1, 2, ... wrapping at 256.
    let payload = Bytes::from((0..args.payload_size).map(|i| i as u8).collect::<Vec<u8>>());
    let timed = match args.client {
        Kind::CourierBlocking => run_blocking(&args, &payload),
        kind => run_async(kind, &args, &payload),
    };
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
    } = timed;
    let report = Report {
        client: args.client,
        concurrency: args.concurrency,
        payload_size: args.payload_size,
        calls: outcome.ok,
        seconds,
        calls_per_second: outcome.ok as f64 / seconds,
        client_cpu_seconds: cpu_seconds,
        client_cpu_us_per_call: cpu_seconds / outcome.ok.max(1) as f64 * 1e6,
        errors: outcome.errors,
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
    })
}

fn warmed(outcome: Outcome) -> Result<(), String> {
    match outcome.first_error {
        None => Ok(()),
        Some(first) => Err(format!("the warm-up failed: {first}")),
    }
}

fn run_blocking(args: &Args, payload: &Bytes) -> Result<Timed, String> {
    let mut client = courier_rpc::Client::connect(args.addr)
        .map_err(|e| format!("cannot connect to {}: {e}", args.addr))?;
    let depth = args.concurrency as usize;
    warmed(client::courier_blocking(
        &mut client,
        args.warmup,
        depth,
        payload,
    ))?;
    timed(|| client::courier_blocking(&mut client, args.calls, depth, payload))
}

fn run_async(kind: Kind, args: &Args, payload: &Bytes) -> Result<Timed, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    let connect_error = |e: &dyn std::fmt::Display| format!("cannot connect to {}: {e}", args.addr);
    match kind {
        Kind::Tonic => {
            let caller = runtime
                .block_on(client::Tonic::connect(args.addr))
                .map_err(|e| connect_error(&e))?;
            load(&runtime, caller, args, payload)
        }
        Kind::Tarpc => {
            let caller = runtime
                .block_on(client::Tarpc::connect(args.addr))
                .map_err(|e| connect_error(&e))?;
            load(&runtime, caller, args, payload)
        }
        Kind::CourierAsync => {
            let caller = runtime
                .block_on(client::CourierAsync::connect(args.addr))
                .map_err(|e| connect_error(&e))?;
            load(&runtime, caller, args, payload)
        }
        Kind::CourierBlocking => Err("courier-blocking is not an async client".to_owned()),
    }
}

fn load<C: Caller>(
    runtime: &tokio::runtime::Runtime,
    caller: C,
    args: &Args,
    payload: &Bytes,
) -> Result<Timed, String> {
    let concurrency = args.concurrency as usize;
    warmed(runtime.block_on(client::drive(
        caller.clone(),
        args.warmup,
        concurrency,
        payload.clone(),
    )))?;
    timed(|| {
        runtime.block_on(client::drive(
            caller,
            args.calls,
            concurrency,
            payload.clone(),
        ))
    })
}
