//! raw-bench: the load driver for floor-server and ldc-server (see `courier_floor::bench`).
//! Prints one JSON line: requests, seconds, requests_per_second, p50_ms, p99_ms, errors.
//! Exits 1 when any request failed (a wrong answer or a lost connection), 2 when the run
//! could not start.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use courier_floor::bench::{self, Config, Workload};
use courier_floor::wire;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    Get,
    Set,
}

/// GETs or SETs against floor-server or ldc-server, each connection keeping a batch of
/// `--pipeline` requests outstanding.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The server.
    #[arg(long)]
    addr: SocketAddr,
    /// Connections.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    clients: u64,
    /// Requests each connection sends per batch, waiting for the whole batch's answers
    /// before the next.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pipeline: u64,
    /// Requests in all (0 with --prefill: only the prefill).
    #[arg(long, default_value_t = 100_000)]
    requests: u64,
    /// What each request is.
    #[arg(long, value_enum, default_value_t = Kind::Get)]
    workload: Kind,
    /// Bytes of every value (SET's, and GET's answer's).
    #[arg(long, default_value_t = wire::DEFAULT_VALUE_SIZE)]
    value_size: usize,
    /// Keys are drawn uniformly from this many.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    keyspace: u64,
    /// SET every key of the keyspace once first (pipelined, one connection, not timed).
    #[arg(long)]
    prefill: bool,
    /// Driver threads (at most --clients).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    threads: u64,
    /// Seed of the key generators (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Seconds a thread waits for an answer before its outstanding requests count as lost.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let config = Config {
        addr: args.addr,
        clients: args.clients as usize,
        pipeline: args.pipeline as usize,
        requests: args.requests,
        workload: match args.workload {
            Kind::Get => Workload::Get,
            Kind::Set => Workload::Set,
        },
        value_size: args.value_size,
        keyspace: args.keyspace,
        prefill: args.prefill,
        threads: args.threads as usize,
        seed,
        timeout: Duration::from_secs(args.timeout),
    };
    match bench::run(&config) {
        Ok(report) => {
            println!("{}", report.json());
            if report.errors > 0 {
                eprintln!(
                    "raw-bench: {} of {} requests failed",
                    report.errors, report.requests
                );
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(err) => {
            eprintln!("raw-bench: {err}");
            ExitCode::from(2)
        }
    }
}
