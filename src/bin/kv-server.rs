//! `kv-server`: the bundled key-value service (GET, SET, DELETE), in memory.

mod common;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use courier::service::Router;
use courier::{echo, kv};

/// courier's key-value server: GET, SET and DELETE of byte strings, kept in memory.
/// Also answers the echo service. Logs to stderr; set RUST_LOG=debug for more.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7878")]
    addr: SocketAddr,
    #[command(flatten)]
    limits: common::Limits,
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::init_logging();
    let mut router = Router::new();
    kv::register(&mut router, Arc::new(kv::Store::new()));
    echo::register(&mut router);
    common::run("kv-server", args.addr, &args.limits, router)
}
