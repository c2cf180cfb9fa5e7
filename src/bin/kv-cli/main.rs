//! `kv-cli`: talks to a kv-server, in plaintext or over TLS (`--tls`), with a token for
//! AUTH from `--token-file` or `COURIER_TOKEN`.
//!
//! - `kv-cli set|get|del|ping|stats ...`: one command. `get` and `del` exit 1 when the key
//!   is missing; any other error is one line on stderr and exit code 2.
//! - `kv-cli` alone: a prompt with line editing and history when stdin is a terminal
//!   (`repl::prompt`), else the commands of stdin, one per line (`repl::from_stdin`).
//! - `kv-cli --latency`: PING round trips (`latency`).

#[path = "../client_flags/mod.rs"]
mod client_flags;
mod command;
#[path = "../generate/mod.rs"]
mod generate;
mod latency;
mod line;
mod output;
mod repl;
mod session;

use std::ffi::OsString;
use std::io::{IsTerminal, Read};
use std::os::unix::ffi::OsStringExt;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use courier_rpc::client::Client;

use client_flags::ClientSecurity;
use command::{Answer, Command};
use latency::LatencyArgs;
use output::Values;
use session::Session;

/// Command-line client of courier's key-value server. Without a command: a prompt when
/// stdin is a terminal, else the commands of stdin, one per line.
#[derive(Parser, Debug)]
#[command(name = "kv-cli", version, after_help = AFTER_HELP)]
struct Args {
    /// Address of the kv-server, HOST:PORT. Several, comma-separated or the flag repeated:
    /// shards, each key on the server that owns it by rendezvous hashing of the addresses
    /// exactly as typed (give every client the same list); ping and stats ask every server.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:7878")]
    addr: Vec<String>,
    /// Seconds to wait for the connection, for each of the TLS handshake and AUTH, and for the
    /// answer.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    #[command(flatten)]
    security: ClientSecurity,
    /// Read the last argument, set's VALUE, from stdin: every byte up to its end, as it is
    /// (a trailing newline included), like redis-cli -x.
    #[arg(short = 'x')]
    value_from_stdin: bool,
    /// Print values as their bytes, then a newline (the default when stdout is not a
    /// terminal).
    #[arg(long, overrides_with = "no_raw")]
    raw: bool,
    /// Print values that are not printable UTF-8 in double quotes with escapes ("\x00\xff")
    /// (the default when stdout is a terminal).
    #[arg(long, overrides_with = "raw")]
    no_raw: bool,
    #[command(flatten)]
    latency: LatencyArgs,
    #[command(subcommand)]
    command: Option<OneShot>,
}

const AFTER_HELP: &str = "\
Exit codes: 0 done; 1 get or del found no such key; 2 any other error (one line on stderr).
Reading commands from stdin, the first of those codes other than 0 that a line gave.
The prompt keeps its history in $KV_CLI_HISTFILE, else ~/.kv_cli_history; type help there.";

/// One command, given on the command line.
#[derive(Subcommand, Debug)]
enum OneShot {
    /// Store VALUE under KEY; print OK.
    Set {
        /// The key (1 to 1024 bytes).
        key: OsString,
        /// The value (up to 1 MiB); with -x, read from stdin instead.
        value: Option<OsString>,
    },
    /// Print the value of KEY; exit 1 if it is missing.
    Get {
        /// The key.
        key: OsString,
    },
    /// Remove KEY and print deleted; exit 1 if it was missing.
    Del {
        /// The key.
        key: OsString,
    },
    /// Check the server answers; print the round-trip time.
    Ping,
    /// Print the server's counters, one "name value" per line.
    Stats,
}

/// kv-cli's exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: done.
    Ok,
    /// 1: get or del found no such key.
    Missing,
    /// 2: any other error.
    Error,
}

impl Exit {
    /// `self` unless it is [`Exit::Ok`], else `next`: the first code other than 0.
    pub fn or(self, next: Exit) -> Exit {
        match self {
            Exit::Ok => next,
            other => other,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(match exit {
            Exit::Ok => 0,
            Exit::Missing => 1,
            Exit::Error => 2,
        })
    }
}

fn bytes(text: OsString) -> Bytes {
    Bytes::from(text.into_vec())
}

impl OneShot {
    /// The command to send; `stdin_value`: set's value, read from stdin (-x).
    fn command(self, stdin_value: Option<Bytes>) -> Result<Command> {
        Ok(match (self, stdin_value) {
            (OneShot::Set { value: Some(_), .. }, Some(_)) => {
                bail!("with -x, set takes KEY only: the value is read from stdin")
            }
            (OneShot::Set { value: None, .. }, None) => {
                bail!("set needs KEY and VALUE (or -x to read VALUE from stdin)")
            }
            (OneShot::Set { key, value }, stdin) => Command::Set {
                key: bytes(key),
                value: stdin.or(value.map(bytes)).unwrap_or_default(),
            },
            (_, Some(_)) => bail!("-x goes with set only: kv-cli -x set KEY < file"),
            (OneShot::Get { key }, None) => Command::Get { key: bytes(key) },
            (OneShot::Del { key }, None) => Command::Del { key: bytes(key) },
            (OneShot::Ping, None) => Command::Ping,
            (OneShot::Stats, None) => Command::Stats,
        })
    }
}

fn run(args: Args) -> Result<Exit> {
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .context("--timeout must be a positive number of seconds")?;
    let latency = args.latency.enabled()?;
    if latency && (args.command.is_some() || args.value_from_stdin) {
        bail!("--latency takes no command and no -x");
    }
    let builder = Client::builder()
        .connect_timeout(timeout)
        .read_timeout(timeout)
        .write_timeout(timeout);
    if latency && args.addr.len() > 1 {
        bail!("--latency measures one server: give one --addr");
    }
    let mut session = Session::with_servers(args.security.apply(builder)?, args.addr)?;
    let stdout_is_terminal = std::io::stdout().is_terminal();
    let values = Values::choose(args.raw, args.no_raw, stdout_is_terminal);
    if latency {
        latency::run(&mut session, &args.latency, stdout_is_terminal)?;
        return Ok(Exit::Ok);
    }
    let Some(one_shot) = args.command else {
        if args.value_from_stdin {
            bail!("-x needs a command: kv-cli -x set KEY < file");
        }
        return if std::io::stdin().is_terminal() {
            repl::prompt(session, values)
        } else {
            repl::from_stdin(session, values)
        };
    };
    let stdin_value = if args.value_from_stdin {
        let mut value = Vec::new();
        std::io::stdin()
            .read_to_end(&mut value)
            .context("cannot read the value from stdin")?;
        Some(Bytes::from(value))
    } else {
        None
    };
    let command = one_shot.command(stdin_value)?;
    let answer = session.run(&command)?;
    if answer == Answer::Missing {
        let key = command.key().map(output::readable).unwrap_or_default();
        eprintln!("kv-cli: key not found: {key}");
        return Ok(Exit::Missing);
    }
    values.write(&mut std::io::stdout().lock(), &answer)?;
    Ok(Exit::Ok)
}

fn main() -> ExitCode {
    generate::handle::<Args>();
    let args = Args::parse();
    // Quiet unless RUST_LOG asks: the answer goes to stdout, errors are one line on stderr.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(args) {
        Ok(exit) => exit.into(),
        Err(err) => {
            eprintln!("kv-cli: {err:#}");
            Exit::Error.into()
        }
    }
}
