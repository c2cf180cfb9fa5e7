//! What happens before the clock starts, over the library's blocking client: the check that
//! a run that writes does not write into a durable server unasked (kv INFO), and the
//! prefill.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use courier_rpc::client::balance::Rendezvous;
use courier_rpc::client::{ClientBuilder, ClientError};
use courier_rpc::kv::{SetRequest, Storage, INFO, SET};
use courier_rpc::proto::Code;

use crate::args::Server;
use crate::client_flags;
use crate::workload::{key, Plan};

/// Requests kept outstanding while prefilling.
const PREFILL_WINDOW: u64 = 1024;

/// Asks the server at `addr` with kv INFO where it keeps its data, and refuses (an error,
/// exit 2) unless it says `storage memory`: a server with a log, or one that cannot say
/// (UNIMPLEMENTED: not a kv server, or one older than INFO). `what` names the writes, for
/// the message.
///
/// # Errors
/// The refusal, naming the server's storage and fsync policy and `--allow-durable`; or the
/// connection's error.
pub fn refuse_durable(builder: &ClientBuilder, addr: SocketAddr, what: &str) -> Result<()> {
    let mut client = builder.clone().connect(addr).map_err(|err| {
        client_flags::connect_error(err, &addr.to_string(), "is the server running?")
    })?;
    let answer = client.call(&INFO, &());
    client.close();
    match answer {
        Ok(info) if info.storage == Storage::Memory => Ok(()),
        Ok(info) => {
            let fsync = info
                .fsync
                .map_or_else(|| "none".to_string(), |p| p.to_string());
            bail!(
                "the server at {addr} keeps its data (kv.Info: storage {}, fsync {fsync}, {} keys) \
                 and {what} would write into it; pass --allow-durable to write anyway, or \
                 benchmark a kv-server started with --in-memory",
                info.storage,
                info.keys
            )
        }
        Err(ClientError::Status(status)) if status.code == Code::UNIMPLEMENTED => bail!(
            "the server at {addr} does not answer kv.Info (not a kv server, or an older one), \
             so courier-bench cannot tell whether {what} would write into data it keeps; pass \
             --allow-durable to write anyway"
        ),
        Err(err) => {
            Err(anyhow::Error::new(err)).with_context(|| format!("kv.Info to {addr} failed"))
        }
    }
}

/// Sets every key of the keyspace once, on the server of `servers` that `shards` says owns
/// it, `PREFILL_WINDOW` requests at a time.
///
/// # Errors
/// A connection's, or the first SET that is not answered OK.
pub fn prefill(
    builder: &ClientBuilder,
    servers: &[Server],
    shards: &Rendezvous,
    plan: &Plan,
    show_progress: bool,
) -> Result<()> {
    let mut clients = servers
        .iter()
        .map(|server| {
            builder
                .clone()
                .connect(server.addr)
                .with_context(|| format!("cannot connect to {} to prefill", server.addr))
        })
        .collect::<Result<Vec<_>>>()?;
    let failed = |s: usize| match servers.len() {
        1 => "prefill failed".to_string(),
        _ => format!("prefill of {} failed", servers[s].addr),
    };
    let mut next = 0;
    while next < plan.keyspace {
        let end = (next + PREFILL_WINDOW).min(plan.keyspace);
        let pending = (next..end)
            .map(|n| {
                let key = key(n);
                let s = if clients.len() == 1 {
                    0
                } else {
                    shards.owner(&key)
                };
                let request = SetRequest {
                    key,
                    value: plan.value.clone(),
                };
                clients[s]
                    .send(&SET, &request)
                    .with_context(|| failed(s))
                    .map(|p| (s, p))
            })
            .collect::<Result<Vec<_>>>()?;
        for (s, p) in pending {
            clients[s].wait(p).with_context(|| failed(s))?;
        }
        next = end;
        if show_progress {
            eprint!("\rprefill: {next} of {} keys", plan.keyspace);
        }
    }
    if show_progress {
        eprint!("\r{:60}\r", "");
    }
    for client in clients {
        client.close();
    }
    Ok(())
}
