//! `peer-server`: the tonic or tarpc echo server of `benches/clients.sh`, on one thread (a
//! tokio current-thread runtime), as courier's `echo-server --loops 1` runs one event loop.
//! Prints `<kind> echo server listening on <address>` once it listens.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use courier_peers::server;

/// An echo server for benches/clients.sh: every unary call is answered with its own bytes.
#[derive(Parser, Debug)]
#[command(name = "peer-server")]
struct Args {
    /// The RPC framework: tonic (gRPC over HTTP/2) or tarpc (bincode over length-delimited TCP).
    #[arg(value_enum)]
    kind: Kind,
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    Tonic,
    Tarpc,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("peer-server: cannot start the tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.addr).await?;
        let name = match args.kind {
            Kind::Tonic => "tonic",
            Kind::Tarpc => "tarpc",
        };
        println!("{name} echo server listening on {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        match args.kind {
            Kind::Tonic => server::tonic(listener).await,
            Kind::Tarpc => server::tarpc(listener).await,
        }
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer-server: {e}");
            ExitCode::from(1)
        }
    }
}
