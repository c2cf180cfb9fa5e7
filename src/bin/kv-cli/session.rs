//! One connection for a whole session (a one-shot command, the prompt, commands read from
//! stdin, `--latency`): opened when first needed, and opened again, saying so on stderr,
//! after it was lost.

use anyhow::Result;
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
        }
    }

    /// The address as given on the command line.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The connection, made now if there is none; a reconnection prints
    /// `kv-cli: reconnected to ADDR` (and why the last one was lost) on stderr.
    ///
    /// # Errors
    /// The connection cannot be made: one line naming the address and why.
    pub fn client(&mut self) -> Result<&mut Client> {
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

    /// Sends `command` and waits for its answer. When the connection turns out to be lost
    /// (closed, reset, an ERROR frame, the server's GOAWAY), the command is sent once more on
    /// a new connection: every command is idempotent (a DEL that had already removed the key
    /// answers [`Answer::Missing`] the second time). After a protocol or TLS error the
    /// connection is dropped, and the next command makes a new one.
    ///
    /// # Errors
    /// The server refused the command, the connection cannot be made, or the connection's
    /// error.
    pub fn run(&mut self, command: &Command) -> Result<Answer> {
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
