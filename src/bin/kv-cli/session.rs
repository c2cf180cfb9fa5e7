//! One connection for a whole session (a one-shot command, the prompt, commands read from
//! stdin, `--latency`): opened when first needed, and opened again, saying so on stderr,
//! after it was lost. With several servers, shards: each key's command goes to the server
//! that owns the key, through a [`Balancer`]; ping and stats go to every server.

use anyhow::{bail, Context, Result};
use courier_rpc::client::balance::Balancer;
use courier_rpc::client::{Client, ClientBuilder, ClientError};
use courier_rpc::proto::Code;

use crate::client_flags;
use crate::command::{Answer, Command};

/// A connection to one server, made again when it breaks.
pub struct Session {
    builder: ClientBuilder,
    addr: String,
    client: Option<Client>,
    /// A connection was made before, so the next one is a reconnection.
    connected_once: bool,
    /// Why the last connection was dropped, said when the next one is made.
    lost: Option<String>,
    /// With several servers: the shards.
    shards: Option<Shards>,
}

/// Several servers, each owning the keys rendezvous hashing gives it.
struct Shards {
    /// Keyed commands: to each key's server, retried there when known not processed.
    balancer: Balancer,
    /// Ping and stats: one session per server.
    servers: Vec<Session>,
}

impl Session {
    /// A session with `addr` (`HOST:PORT`), connecting with `builder`'s options (timeouts,
    /// TLS, token). Nothing is connected yet.
    pub fn new(builder: ClientBuilder, addr: String) -> Session {
        Session {
            builder,
            addr,
            client: None,
            connected_once: false,
            lost: None,
            shards: None,
        }
    }

    /// A session with every server of `addrs`: one server as [`Session::new`]; several as
    /// shards, each key on the server rendezvous hashing of the addresses as given places it
    /// on (`proto-spec/SERVICES.md`, kv, "Sharding").
    ///
    /// # Errors
    /// An address that does not resolve, or one given twice.
    pub fn with_servers(builder: ClientBuilder, addrs: Vec<String>) -> Result<Session> {
        if addrs.len() == 1 {
            let addr = addrs.into_iter().next().unwrap_or_default();
            return Ok(Session::new(builder, addr));
        }
        let balancer = Balancer::builder()
            .client(builder.clone())
            .build(addrs.clone())
            .with_context(|| format!("cannot use the servers {}", addrs.join(",")))?;
        let mut session = Session::new(builder.clone(), addrs.join(","));
        session.shards = Some(Shards {
            balancer,
            servers: addrs
                .into_iter()
                .map(|addr| Session::new(builder.clone(), addr))
                .collect(),
        });
        Ok(session)
    }

    /// Whether the session has several servers (shards).
    pub fn is_sharded(&self) -> bool {
        self.shards.is_some()
    }

    /// The address as given on the command line (with several servers, the list).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The connection, made now if there is none; a reconnection prints
    /// `kv-cli: reconnected to ADDR` (and why the last one was lost) on stderr.
    ///
    /// # Errors
    /// The connection cannot be made: one line naming the address and why.
    pub fn client(&mut self) -> Result<&mut Client> {
        if self.shards.is_some() {
            bail!(
                "one connection is for one server, and {} are several",
                self.addr
            );
        }
        let client = match self.client.take() {
            Some(client) => client,
            None => {
                let client = self.builder.clone().connect(&self.addr).map_err(|err| {
                    client_flags::connect_error(err, &self.addr, "is kv-server running?")
                })?;
                if self.connected_once {
                    match self.lost.take() {
                        Some(why) => eprintln!("kv-cli: reconnected to {} ({why})", self.addr),
                        None => eprintln!("kv-cli: reconnected to {}", self.addr),
                    }
                }
                self.connected_once = true;
                client
            }
        };
        Ok(self.client.insert(client))
    }

    /// Sends `command` and waits for its answer. With several servers, a keyed command goes
    /// to its key's server (the balancer retries it there when it is known not processed,
    /// and refuses it at once, UNAVAILABLE naming the server, while that server is out), and
    /// ping and stats to each server, each answer or error kept apart
    /// ([`Answer::PerServer`]). With one server: when the connection turns out to be lost
    /// (closed, reset, an ERROR frame, the server's GOAWAY), the command is sent once more on
    /// a new connection: every command is idempotent (a DEL that had already removed the key
    /// answers [`Answer::Missing`] the second time). After a protocol or TLS error the
    /// connection is dropped, and the next command makes a new one.
    ///
    /// # Errors
    /// The server refused the command, the connection cannot be made, or the connection's
    /// error.
    pub fn run(&mut self, command: &Command) -> Result<Answer> {
        if let Some(shards) = &mut self.shards {
            if let Some(answer) = command.execute_keyed(&mut &shards.balancer) {
                return Ok(answer?);
            }
            let answers = shards
                .servers
                .iter_mut()
                .map(|server| {
                    let answer = server.run(command).map_err(|err| format!("{err:#}"));
                    (server.addr.clone(), answer)
                })
                .collect();
            return Ok(Answer::PerServer(answers));
        }
        match command.execute(self.client()?) {
            Ok(answer) => Ok(answer),
            Err(err) => match self.forget(&err) {
                Retry::Yes => Ok(command.execute(self.client()?).inspect_err(|err| {
                    self.forget(err);
                })?),
                Retry::No => Err(err.into()),
            },
        }
    }

    /// Drops the connection when `err` says it can carry no more requests; whether the
    /// request is worth sending again on a new one.
    fn forget(&mut self, err: &ClientError) -> Retry {
        // UNAVAILABLE on a connection the server is draining: not processed, safe to send again.
        let draining = self.client.as_ref().is_some_and(Client::is_draining);
        let (retry, why) = match err {
            ClientError::Closed | ClientError::Io(_) | ClientError::Connection(_) => {
                (Retry::Yes, format!("the connection was lost: {err}"))
            }
            ClientError::Status(status) if status.code == Code::UNAVAILABLE && draining => {
                (Retry::Yes, "the server sent GOAWAY".to_owned())
            }
            ClientError::Protocol(_) | ClientError::Tls(_) => {
                (Retry::No, format!("the connection broke: {err}"))
            }
            _ => return Retry::No,
        };
        self.client = None;
        self.lost = Some(why);
        retry
    }
}

/// Whether a failed request is sent again on a new connection.
enum Retry {
    Yes,
    No,
}
