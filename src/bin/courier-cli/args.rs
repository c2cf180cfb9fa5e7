//! The command line: global flags, and one subcommand.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::addr;
use crate::client_flags::ClientSecurity;

/// Calls any method of a courier server, by the name its reflection (admin.Methods) lists,
/// with a body typed as text: JSON for CBOR and JSON methods, decimal for integers, hex for
/// bytes.
///
/// Exit codes: 0 the call was answered OK; 1 the server answered another status (printed
/// as "ERROR CODE: message" on stderr); 2 anything else (usage, connection, TLS, a body
/// that does not parse, a response that does not decode).
#[derive(Parser, Debug)]
#[command(name = "courier-cli", version)]
pub struct Args {
    /// Address of the server: IP:PORT, or HOST:PORT resolved to its first address.
    #[arg(long, default_value = "127.0.0.1:7878", value_parser = addr::parse)]
    pub addr: SocketAddr,
    /// Seconds to wait for the connection, for each of the TLS handshake and AUTH, and for
    /// each answer (unless --deadline sets another wait for the call).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub timeout: f64,
    #[command(flatten)]
    pub security: ClientSecurity,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the methods the server serves: name, SERVICE/METHOD ids, request and response
    /// encodings.
    #[command(visible_alias = "ls")]
    List {
        /// Only the methods whose name starts with this (ASCII case-insensitive), such as
        /// "kv" or "kv.G".
        prefix: Option<String>,
        /// Print a JSON array of {service, method, name, request, response} instead.
        #[arg(long)]
        json: bool,
    },
    /// Call METHOD with BODY and print its answer.
    Call(CallArgs),
    /// Check the server answers (a PING frame); print the round-trip time.
    Ping,
    /// Print the server's counters (admin.Stats), one "name value" per line.
    Stats,
    /// Print the identity the connection has (admin.WhoAmI): "anonymous", or the name and
    /// how it was proved.
    Whoami,
}

/// The arguments of `call`.
#[derive(clap::Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct CallArgs {
    /// The method: a name `list` shows (ASCII case-insensitive), or SERVICE/METHOD ids
    /// such as 2/1.
    pub method: String,
    /// The request, read by the request's encoding: JSON for cbor and json, decimal for
    /// integers, true/false for bool, the text for utf8, hex for bytes and custom; "-" reads
    /// stdin.
    pub body: Option<String>,
    /// Read the body from FILE: its bytes as they are for bytes and custom (hex with
    /// --hex), the text otherwise.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["body", "stdin"])]
    pub file: Option<PathBuf>,
    /// Read the body from stdin, as --file reads a file (same as BODY "-").
    #[arg(long, conflicts_with = "body")]
    pub stdin: bool,
    /// The body is hex digits (whitespace and a leading 0x ignored), whatever the request's
    /// encoding: how to send CBOR that JSON cannot spell (byte strings, tags).
    #[arg(long, conflicts_with = "raw_body")]
    pub hex: bool,
    /// Send the body's bytes as they are, whatever the request's encoding.
    #[arg(long)]
    pub raw_body: bool,
    /// How to print the answer: auto (by the response's encoding: text, decimal, JSON for
    /// cbor, indented on a terminal; hex for bytes and custom), hex, or raw (the bytes as
    /// they are, no newline: for a file or a pipe).
    #[arg(long, value_enum, default_value_t = Output::Auto)]
    pub output: Output,
    /// Same as --output raw.
    #[arg(long, conflicts_with = "output")]
    pub raw: bool,
    /// Milliseconds the server has for the call, sent with the request (the server answers
    /// DEADLINE_EXCEEDED past it); also how long this client waits, instead of --timeout.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub deadline: Option<u64>,
    /// Metadata entry sent with the request (repeatable): a key of 1 to 255 visible ASCII
    /// characters, "=", a value of up to 65,535 bytes.
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
    pub metadata: Vec<(String, String)>,
}

/// How to print a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// By the response's encoding.
    Auto,
    /// Hex digits, whatever the encoding.
    Hex,
    /// The payload's bytes as they are.
    Raw,
}

/// Parses `KEY=VALUE` (the value may hold "=").
fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}
