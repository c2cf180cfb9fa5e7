//! floor-server: the floor of benches/compare.sh, a bare mio server on one thread that only
//! frames and answers canned bytes (see `courier_floor::floor`).
//!
//! Usage: floor-server --addr 127.0.0.1:PORT [--value-size 64]

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use courier_floor::{floor, wire};

/// A bare mio server answering every frame with a canned answer the size of the afternoon
/// server's.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on (port 0: any free port; the chosen one is printed).
    #[arg(long)]
    addr: SocketAddr,
    /// Bytes of the value in the canned answer to a GET.
    #[arg(long, default_value_t = wire::DEFAULT_VALUE_SIZE)]
    value_size: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let listener = match mio::net::TcpListener::bind(args.addr) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("floor-server: cannot listen on {}: {err}", args.addr);
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => eprintln!("floor-server listening on {addr}"),
        Err(err) => eprintln!("floor-server: listening (address unknown: {err})"),
    }
    match floor::serve(listener, args.value_size) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("floor-server: {err}");
            ExitCode::FAILURE
        }
    }
}
