//! `kv-cli`: talks to a kv-server, in plaintext or over TLS (`--tls`), with a token for
//! AUTH from `--token-file` or `COURIER_TOKEN`. `get` exits 1 when the key is missing; any
//! other error is one line on stderr and exit code 2.

mod client_flags;
mod generate;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use courier_rpc::admin::STATS;
use courier_rpc::client::{Client, ClientError};
use courier_rpc::kv::{Key, SetRequest, DELETE, GET, SET};
use courier_rpc::proto::Code;

use client_flags::ClientSecurity;

/// Command-line client of courier's key-value server.
#[derive(Parser, Debug)]
#[command(name = "kv-cli", version)]
struct Args {
    /// Address of the kv-server.
    #[arg(long, default_value = "127.0.0.1:7878")]
    addr: String,
    /// Seconds to wait for the connection, for each of the TLS handshake and AUTH, and for the
    /// answer.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    #[command(flatten)]
    security: ClientSecurity,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Store VALUE under KEY.
    Set {
        /// The key (1 to 1024 bytes).
        key: String,
        /// The value (up to 1 MiB).
        value: String,
    },
    /// Print the value of KEY; exit 1 if it is missing.
    Get {
        /// The key.
        key: String,
    },
    /// Remove KEY; exit 1 if it was missing.
    Del {
        /// The key.
        key: String,
    },
    /// Check the server answers; print the round-trip time.
    Ping,
    /// Print the server's counters, one "name value" per line.
    Stats,
}

/// What a successful command found.
enum Outcome {
    Done,
    Missing,
}

fn run(args: Args) -> Result<Outcome> {
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .context("--timeout must be a positive number of seconds")?;
    let builder = Client::builder()
        .connect_timeout(timeout)
        .read_timeout(timeout)
        .write_timeout(timeout);
    let mut client = args
        .security
        .apply(builder)?
        .connect(&args.addr)
        .map_err(|err| client_flags::connect_error(err, &args.addr, "is kv-server running?"))?;
    let mut stdout = std::io::stdout().lock();
    match args.command {
        Command::Set { key, value } => {
            let request = SetRequest {
                key: Bytes::from(key),
                value: Bytes::from(value),
            };
            client.call(&SET, &request)?;
            writeln!(stdout, "OK")?;
        }
        Command::Get { key } => match client.call(&GET, &Key(Bytes::from(key.clone()))) {
            Ok(value) => {
                stdout.write_all(&value.0)?;
                writeln!(stdout)?;
            }
            Err(ClientError::Status(s)) if s.code == Code::NOT_FOUND => {
                eprintln!("kv-cli: key not found: {key}");
                return Ok(Outcome::Missing);
            }
            Err(err) => return Err(err.into()),
        },
        Command::Del { key } => {
            if client.call(&DELETE, &Key(Bytes::from(key.clone())))?.0 {
                writeln!(stdout, "deleted")?;
            } else {
                eprintln!("kv-cli: key not found: {key}");
                return Ok(Outcome::Missing);
            }
        }
        Command::Ping => {
            let rtt = client.ping()?;
            writeln!(stdout, "PONG in {:.3} ms", rtt.as_secs_f64() * 1e3)?;
        }
        Command::Stats => {
            for (name, value) in client.call(&STATS, &())?.0 {
                writeln!(stdout, "{name} {value}")?;
            }
        }
    }
    stdout.flush()?;
    Ok(Outcome::Done)
}

fn main() -> ExitCode {
    generate::handle::<Args>();
    let args = Args::parse();
    // Quiet unless RUST_LOG asks: the answer goes to stdout, errors are one line on stderr.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(args) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Missing) => ExitCode::from(1),
        Err(err) => {
            eprintln!("kv-cli: {err:#}");
            ExitCode::from(2)
        }
    }
}
