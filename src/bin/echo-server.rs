//! `echo-server`: answers every request with its own body.

mod common;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use courier::echo;
use courier::proto::DEFAULT_MAX_BODY_LEN;
use courier::server::DEFAULT_MAX_CONNECTIONS;
use courier::service::Router;

/// courier's echo server: the response to every echo request is its own body.
/// Logs to stderr; set RUST_LOG=debug for more.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7879")]
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
    echo::register(&mut router);
    match common::serve(
        "echo-server",
        args.addr,
        args.max_connections,
        args.max_body_len,
        router,
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("echo-server: {err:#}");
            ExitCode::FAILURE
        }
    }
}
