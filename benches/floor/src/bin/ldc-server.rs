//! ldc-server: the afternoon server of benches/compare.sh, tokio with tokio-util's
//! LengthDelimitedCodec and a HashMap store on one thread (see `courier_floor::ldc`).
//!
//! Usage: ldc-server --addr 127.0.0.1:PORT

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use courier_floor::ldc;

/// A key-value server as written in an afternoon with tokio and LengthDelimitedCodec.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on (port 0: any free port; the chosen one is printed).
    #[arg(long)]
    addr: SocketAddr,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let listener = match std::net::TcpListener::bind(args.addr) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("ldc-server: cannot listen on {}: {err}", args.addr);
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => eprintln!("ldc-server listening on {addr}"),
        Err(err) => eprintln!("ldc-server: listening (address unknown: {err})"),
    }
    match ldc::run(listener) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ldc-server: {err}");
            ExitCode::FAILURE
        }
    }
}
