//! `kv-server`: the bundled key-value service (GET, SET, DELETE), in memory.

mod common;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use courier::proto::DEFAULT_MAX_BODY_LEN;
use courier::server::DEFAULT_MAX_CONNECTIONS;
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
    /// Most connections open at once; one more is refused with RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Largest frame body accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_LEN)]
    max_body_len: u32,
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::init_logging();
    let mut router = Router::new();
    kv::register(&mut router, Arc::new(kv::Store::new()));
    echo::register(&mut router);
    match common::serve(
        "kv-server",
        args.addr,
        args.max_connections,
        args.max_body_len,
        router,
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kv-server: {err:#}");
            ExitCode::FAILURE
        }
    }
}
