//! The subcommands: each connects, asks, and prints its answer to stdout.

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use courier_rpc::admin::{MethodEntry, MethodList, METHODS, STATS, WHOAMI};
use courier_rpc::client::{Client, ClientError};
use courier_rpc::{Bytes, CallOptions, Metadata, Method};

use crate::args::{Args, CallArgs, Command, Output};
use crate::client_flags;
use crate::encodings::{encode_body, Body, BodyMode, Encoding};
use crate::output;

/// Runs the command `args` name against the server.
///
/// # Errors
/// Anything that stopped it: a [`ClientError::Status`] (inside the error) when the server
/// answered a non-OK status, else one line saying what went wrong.
pub fn run(args: Args) -> Result<()> {
    // Read before connecting: a file or stdin that cannot be read needs no server.
    let body = match &args.command {
        Command::Call(call) => read_body(call)?,
        _ => None,
    };
    let mut client = connect(&args)?;
    let mut stdout = std::io::stdout().lock();
    match args.command {
        Command::List { prefix, json } => {
            let list = methods(&mut client)?;
            let shown: Vec<&MethodEntry> = list
                .0
                .iter()
                .filter(|m| {
                    prefix
                        .as_deref()
                        .is_none_or(|p| starts_with_ignore_case(&m.name, p))
                })
                .collect();
            if shown.is_empty() {
                if let Some(prefix) = prefix {
                    bail!(
                        "no method name starts with {prefix:?} (`courier-cli list` shows them all)"
                    );
                }
            }
            let text = if json {
                output::method_json(&shown)
            } else {
                output::method_lines(&shown)
            };
            stdout.write_all(text.as_bytes())?;
        }
        Command::Call(call) => return call_method(&mut client, &call, body.as_ref(), &mut stdout),
        Command::Ping => {
            let rtt = client.ping()?;
            writeln!(stdout, "PONG in {:.3} ms", rtt.as_secs_f64() * 1e3)?;
        }
        Command::Stats => {
            for (name, value) in client.call(&STATS, &())?.0 {
                writeln!(stdout, "{name} {value}")?;
            }
        }
        Command::Whoami => {
            let who = client.call(&WHOAMI, &())?;
            writeln!(stdout, "{}", output::identity(&who))?;
        }
    }
    stdout.flush()?;
    Ok(())
}

/// A client connected to `--addr`, with the TLS and token flags, and `--timeout` for the
/// connection, its handshakes and each answer.
fn connect(args: &Args) -> Result<Client> {
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .context("--timeout must be a positive number of seconds")?;
    let builder = Client::builder()
        .connect_timeout(timeout)
        .read_timeout(timeout)
        .write_timeout(timeout);
    let addr = args.addr.to_string();
    args.security
        .apply(builder)?
        .connect(args.addr)
        .map_err(|err| client_flags::connect_error(err, &addr, "is a server listening there?"))
}

/// The body of `call`, from the argument, --file, or stdin (--stdin or the argument "-").
fn read_body(call: &CallArgs) -> Result<Option<Body>> {
    if let Some(path) = &call.file {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read the body file {}", path.display()))?;
        return Ok(Some(Body::Read(bytes)));
    }
    if call.stdin || call.body.as_deref() == Some("-") {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read the body from stdin")?;
        return Ok(Some(Body::Read(bytes)));
    }
    Ok(call.body.clone().map(Body::Arg))
}

/// The server's method list (admin.Methods).
fn methods(client: &mut Client) -> Result<MethodList> {
    Ok(client.call(&METHODS, &())?)
}

/// A method to call: its ids, a name for messages, and its encodings.
struct Target {
    service: u16,
    method: u16,
    name: String,
    request: Encoding,
    response: Encoding,
}

impl Target {
    fn of(entry: &MethodEntry) -> Target {
        Target {
            service: entry.service,
            method: entry.method,
            name: entry.name.clone(),
            request: Encoding::from_name(&entry.request),
            response: Encoding::from_name(&entry.response),
        }
    }
}

/// `SERVICE/METHOD` as two ids, if `text` is that.
fn ids(text: &str) -> Option<(u16, u16)> {
    let (service, method) = text.split_once('/')?;
    Some((service.parse().ok()?, method.parse().ok()?))
}

fn starts_with_ignore_case(name: &str, prefix: &str) -> bool {
    name.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// The method `text` names: by name through reflection (an exact match first, else the one
/// match ignoring ASCII case); by ids, with the encodings reflection gives when it answers,
/// else `bytes` both ways.
fn resolve(client: &mut Client, text: &str) -> Result<Target> {
    if let Some((service, method)) = ids(text) {
        let listed = match client.call(&METHODS, &()) {
            Ok(list) => list
                .0
                .iter()
                .find(|m| (m.service, m.method) == (service, method))
                .map(Target::of),
            Err(ClientError::Status(status)) => {
                log::info!("admin.Methods answered {status}: {text} is sent and shown as bytes");
                None
            }
            Err(err) => return Err(err.into()),
        };
        return Ok(listed.unwrap_or(Target {
            service,
            method,
            name: text.to_string(),
            request: Encoding::Bytes,
            response: Encoding::Bytes,
        }));
    }
    let list = methods(client).context(
        "a METHOD name is looked up with admin.Methods; without it, call SERVICE/METHOD ids",
    )?;
    if let Some(entry) = list.find(text) {
        return Ok(Target::of(entry));
    }
    let matches: Vec<&MethodEntry> = list
        .0
        .iter()
        .filter(|m| m.name.eq_ignore_ascii_case(text))
        .collect();
    match matches[..] {
        [entry] => Ok(Target::of(entry)),
        [] => bail!(
            "the server has no method named {text:?} (`courier-cli list` shows the methods it serves)"
        ),
        _ => {
            let names: Vec<&str> = matches.iter().map(|m| m.name.as_str()).collect();
            bail!("{text:?} names {} methods, {}: give the exact name", names.len(), names.join(", "))
        }
    }
}

/// `call`: resolves the method, encodes the body, calls, prints the answer.
fn call_method(
    client: &mut Client,
    call: &CallArgs,
    body: Option<&Body>,
    out: &mut impl Write,
) -> Result<()> {
    let target = resolve(client, &call.method)?;
    let mode = match (call.hex, call.raw_body) {
        (true, _) => BodyMode::Hex,
        (_, true) => BodyMode::Raw,
        _ => BodyMode::Auto,
    };
    let payload = encode_body(&target.request, body, mode)
        .with_context(|| format!("{}: bad request body", target.name))?;
    let mut options = CallOptions::default();
    if let Some(ms) = call.deadline {
        options = options.with_deadline(Duration::from_millis(ms));
    }
    if !call.metadata.is_empty() {
        let pairs = call
            .metadata
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()));
        options = options.with_metadata(Metadata::from_pairs(pairs).context("--metadata")?);
    }
    // A method descriptor made at run time; its name shows in the client's logs. Leaked
    // once: the process makes one call.
    let name: &'static str = Box::leak(target.name.clone().into_boxed_str());
    let method: Method<Bytes, Bytes> = Method::new(target.service, target.method, name);
    let response = client.call_with(&method, &Bytes::from(payload), &options)?;
    let mode = if call.raw { Output::Raw } else { call.output };
    let pretty = std::io::stdout().is_terminal();
    output::write_response(out, &target.response, &response, mode, pretty)
        .with_context(|| format!("{} answered OK", target.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_prefixes() {
        assert_eq!(ids("2/1"), Some((2, 1)));
        assert_eq!(ids("0/65535"), Some((0, 65535)));
        assert_eq!(ids("kv.Get"), None);
        assert_eq!(ids("2/65536"), None);
        assert_eq!(ids("2/"), None);
        assert!(starts_with_ignore_case("kv.Get", "KV."));
        assert!(starts_with_ignore_case("kv.Get", ""));
        assert!(!starts_with_ignore_case("kv", "kv.Get"));
        assert!(!starts_with_ignore_case("é", "\u{e9}x"));
    }
}
