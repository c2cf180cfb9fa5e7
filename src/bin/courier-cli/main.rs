//! `courier-cli`: calls any method of any courier server, by the name its reflection
//! (admin.Methods) lists, turning a body typed as text into the request's encoding and the
//! response into text (grpcurl's job, for courier). In plaintext or over TLS (`--tls`), with
//! a token for AUTH from `--token-file` or `COURIER_TOKEN`.
//!
//! Exit codes: 0 OK; 1 the server answered a non-OK status (`ERROR CODE: message` on
//! stderr); 2 any other error, one line on stderr.

#[path = "../addr/mod.rs"]
mod addr;
mod args;
#[path = "../client_flags/mod.rs"]
mod client_flags;
mod commands;
mod encodings;
#[path = "../generate/mod.rs"]
mod generate;
mod output;

use std::process::ExitCode;

use clap::Parser;
use courier_rpc::client::ClientError;

fn main() -> ExitCode {
    generate::handle::<args::Args>();
    let args = args::Args::parse();
    // Quiet unless RUST_LOG asks: the answer goes to stdout, errors are one line on stderr.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match commands::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => match err.downcast_ref::<ClientError>() {
            Some(ClientError::Status(status)) => {
                eprintln!("ERROR {}: {}", status.code, status.message);
                // What the call was for, when the status is not the answer to the call
                // itself (admin.Methods refused while looking up a name).
                if err.chain().count() > 1 {
                    eprintln!("courier-cli: {err}");
                }
                ExitCode::from(1)
            }
            _ => {
                eprintln!("courier-cli: {err:#}");
                ExitCode::from(2)
            }
        },
    }
}
