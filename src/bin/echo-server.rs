//! `echo-server`: answers every request with its own body.

mod addr;
mod common;
mod config;
mod generate;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use courier_rpc::echo;
use courier_rpc::service::Router;

/// courier's echo server: the response to every echo request is its own body.
/// Logs to stderr; set RUST_LOG=debug for more.
#[derive(Parser, Debug)]
#[command(name = "echo-server", version)]
struct Args {
    /// Address to listen on: IP:PORT, or HOST:PORT (the first address the name resolves to).
    #[arg(long, value_parser = addr::parse, default_value = "127.0.0.1:7879")]
    addr: SocketAddr,
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
    echo::register(&mut router);
    common::run(
        "echo-server",
        args.addr,
        &args.limits,
        router,
        (&args.security, &args.metrics),
        || Ok(()),
    )
}
