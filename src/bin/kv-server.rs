//! `kv-server`: the bundled key-value service (GET, SET, DELETE), kept in memory and made
//! durable by an append-only log (`courier_rpc::kv::log`).

mod addr;
mod common;
mod config;
mod generate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, ValueHint};
use courier_rpc::kv::log::{
    FsyncPolicy, Log, LogConfig, DEFAULT_COMPACT_MIN_SIZE, DEFAULT_COMPACT_RATIO, DEFAULT_DATA_DIR,
};
use courier_rpc::service::Router;
use courier_rpc::{echo, kv};

/// courier's key-value server: GET, SET and DELETE of byte strings, kept in memory and
/// logged to an append-only file that is replayed on start. Also answers the echo service.
/// SIGTERM or SIGINT drains it gracefully. Logs to stderr; set RUST_LOG=debug for more.
#[derive(Parser, Debug)]
#[command(name = "kv-server", version)]
struct Args {
    /// Address to listen on: IP:PORT, or HOST:PORT (the first address the name resolves to).
    #[arg(long, value_parser = addr::parse, default_value = "127.0.0.1:7878")]
    addr: SocketAddr,
    /// Directory of the append-only log (created if missing).
    #[arg(
        long,
        value_name = "DIR",
        value_hint = ValueHint::DirPath,
        default_value = DEFAULT_DATA_DIR
    )]
    data_dir: PathBuf,
    /// When the log is fsynced: always (before each write is acknowledged; group commit
    /// per loop turn), everysec (once a second), or never (left to the kernel).
    #[arg(long, value_name = "POLICY", default_value_t = FsyncPolicy::EverySec)]
    fsync: FsyncPolicy,
    /// Keep no log: everything is lost on exit (for benchmarks).
    #[arg(long, conflicts_with_all = ["fsync", "repair"])]
    in_memory: bool,
    /// Start even if a record before the log's tail is damaged: keep the records before it
    /// and move the rest to kv.log.damaged-OFFSET-TIME in the data directory.
    #[arg(long)]
    repair: bool,
    /// Smallest log, in bytes, that is compacted.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_COMPACT_MIN_SIZE)]
    compact_min_size: u64,
    /// Compact when the log is this many times the size of its live records (at least 1).
    #[arg(long, value_name = "RATIO", default_value_t = DEFAULT_COMPACT_RATIO)]
    compact_ratio: f64,
    #[command(flatten)]
    limits: common::Limits,
    #[command(flatten)]
    security: common::Security,
    #[command(flatten)]
    metrics: common::Metrics,
    #[command(flatten)]
    config: config::ConfigFile,
}

fn main() -> ExitCode {
    generate::handle::<Args>();
    // Before the parse, which logs what it took from a --config file.
    common::init_logging();
    let args: Args = config::parse();
    let mut router = Router::new();
    let store = Arc::new(kv::Store::new());
    echo::register(&mut router);
    if args.in_memory {
        kv::register(&mut router, store);
        return common::run(
            "kv-server",
            args.addr,
            &args.limits,
            router,
            (&args.security, &args.metrics),
            || Ok(()),
        );
    }
    let config = LogConfig {
        dir: args.data_dir.clone(),
        fsync: args.fsync,
        repair: args.repair,
        compact_min_size: args.compact_min_size,
        compact_ratio: args.compact_ratio,
    };
    let log = match Log::open(config, &store) {
        Ok((log, _recovery)) => log,
        Err(err) => {
            eprintln!("kv-server: {err}");
            return ExitCode::FAILURE;
        }
    };
    kv::register_logged(&mut router, store, Arc::clone(&log));
    common::run(
        "kv-server",
        args.addr,
        &args.limits,
        router,
        (&args.security, &args.metrics),
        move || {
            log.close()
                .map_err(|status| anyhow::anyhow!("{}", status.message))
                .context(
                    "the kv log failed during this run or at its last fsync; exiting with an error",
                )?;
            log::info!("kv-server: log flushed and synced; bye");
            Ok(())
        },
    )
}
