//! The commands kv-cli sends, whether from its command line or typed at its prompt, and what
//! each answer is.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use courier_rpc::admin::STATS;
use courier_rpc::client::balance::Balancer;
use courier_rpc::client::{Client, ClientError};
use courier_rpc::kv::{Deleted, Key, SetRequest, Value, DELETE, GET, SET};
use courier_rpc::proto::Code;

/// One request to the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// kv SET: store `value` under `key`.
    Set {
        /// 1 to 1024 bytes (the server refuses others with INVALID_ARGUMENT).
        key: Bytes,
        /// Up to 1 MiB.
        value: Bytes,
    },
    /// kv GET.
    Get {
        /// The key.
        key: Bytes,
    },
    /// kv DELETE.
    Del {
        /// The key.
        key: Bytes,
    },
    /// A PING frame.
    Ping,
    /// admin STATS.
    Stats,
}

/// What a command got back, when the server did not refuse it.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// SET stored the value.
    Stored,
    /// GET found this value.
    Value(Bytes),
    /// DELETE removed the key.
    Deleted,
    /// GET or DELETE found no such key.
    Missing,
    /// PONG, after this round trip.
    Pong(Duration),
    /// The server's counters, by name.
    Stats(Vec<(String, u64)>),
    /// With several servers (shards), a ping's or stats' answer from each, by address: the
    /// answer, or the error as one line.
    PerServer(Vec<(String, Result<Answer, String>)>),
}

/// What a keyed command is sent through: one connection, or the shards of a [`Balancer`],
/// where each key goes to the server that owns it.
pub trait Kv {
    /// kv SET.
    fn set(&mut self, request: &SetRequest) -> Result<(), ClientError>;
    /// kv GET.
    fn get(&mut self, key: &Key) -> Result<Value, ClientError>;
    /// kv DELETE.
    fn del(&mut self, key: &Key) -> Result<Deleted, ClientError>;
}

impl Kv for Client {
    fn set(&mut self, request: &SetRequest) -> Result<(), ClientError> {
        self.call(&SET, request)
    }
    fn get(&mut self, key: &Key) -> Result<Value, ClientError> {
        self.call(&GET, key)
    }
    fn del(&mut self, key: &Key) -> Result<Deleted, ClientError> {
        self.call(&DELETE, key)
    }
}

impl Kv for &Balancer {
    fn set(&mut self, request: &SetRequest) -> Result<(), ClientError> {
        self.call_key(&request.key, &SET, request)
    }
    fn get(&mut self, key: &Key) -> Result<Value, ClientError> {
        self.call_key(&key.0, &GET, key)
    }
    fn del(&mut self, key: &Key) -> Result<Deleted, ClientError> {
        self.call_key(&key.0, &DELETE, key)
    }
}

impl Command {
    /// Sends the command on `client` and waits for its answer.
    ///
    /// # Errors
    /// The server refused it (a status other than NOT_FOUND for GET), or the connection's
    /// error ([`ClientError`]).
    pub fn execute(&self, client: &mut Client) -> Result<Answer, ClientError> {
        match self {
            Command::Ping => client.ping().map(Answer::Pong),
            Command::Stats => client
                .call(&STATS, &())
                .map(|report| Answer::Stats(report.0)),
            _ => self
                .execute_keyed(client)
                .unwrap_or(Err(ClientError::Closed)),
        }
    }

    /// Sends a keyed command (set, get, del) through `kv`; `None` for the others.
    pub fn execute_keyed(&self, kv: &mut impl Kv) -> Option<Result<Answer, ClientError>> {
        Some(match self {
            Command::Set { key, value } => {
                let request = SetRequest {
                    key: key.clone(),
                    value: value.clone(),
                };
                kv.set(&request).map(|()| Answer::Stored)
            }
            Command::Get { key } => match kv.get(&Key(key.clone())) {
                Ok(value) => Ok(Answer::Value(value.0)),
                Err(ClientError::Status(s)) if s.code == Code::NOT_FOUND => Ok(Answer::Missing),
                Err(err) => Err(err),
            },
            Command::Del { key } => kv.del(&Key(key.clone())).map(|deleted| {
                if deleted.0 {
                    Answer::Deleted
                } else {
                    Answer::Missing
                }
            }),
            Command::Ping | Command::Stats => return None,
        })
    }

    /// The key the command names, if any.
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Command::Set { key, .. } | Command::Get { key } | Command::Del { key } => Some(key),
            Command::Ping | Command::Stats => None,
        }
    }
}

/// A line typed at the prompt (or read from stdin), once split into words.
#[derive(Debug, PartialEq, Eq)]
pub enum Typed {
    /// Nothing but whitespace.
    Nothing,
    /// A command for the server.
    Command(Command),
    /// `help`.
    Help,
    /// `quit` or `exit`.
    Quit,
}

/// Why typed words are not a command.
#[derive(Debug, PartialEq, Eq)]
pub enum TypedError {
    /// No such command (its name as typed, lossily decoded).
    Unknown(String),
    /// The right command with the wrong number of arguments; its usage.
    Arity(&'static str),
}

impl fmt::Display for TypedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypedError::Unknown(name) => write!(f, "unknown command '{name}' (try help)"),
            TypedError::Arity(usage) => write!(f, "wrong number of arguments: {usage}"),
        }
    }
}

impl std::error::Error for TypedError {}

/// What `help` prints: every command the prompt takes and how to quote.
pub const HELP: &str = "\
set KEY VALUE   store VALUE under KEY (OK)
get KEY         the value of KEY, or (nil)
del KEY         remove KEY (deleted), or (nil) if it was missing
ping            a PING frame's round-trip time
stats           the server's counters, one \"name value\" a line
help            this list
quit, exit      leave (Ctrl-D and Ctrl-C too)
Command names are case-insensitive. Quote a word with spaces or any bytes in it:
\"a b\", \"line\\n\", \"\\x00\\xff\" (escapes \\n \\r \\t \\a \\b \\\\ \\\" \\xHH), or 'as typed'.";

/// The command `words` name (split by `crate::line::split`); the command's name is
/// case-insensitive.
///
/// # Errors
/// An unknown command, or the wrong number of arguments.
pub fn parse(words: Vec<Vec<u8>>) -> Result<Typed, TypedError> {
    let mut words = words.into_iter();
    let Some(name) = words.next() else {
        return Ok(Typed::Nothing);
    };
    let args: Vec<Bytes> = words.map(Bytes::from).collect();
    let name = String::from_utf8_lossy(&name).to_ascii_lowercase();
    let typed = match (name.as_str(), args.as_slice()) {
        ("set", [key, value]) => Typed::Command(Command::Set {
            key: key.clone(),
            value: value.clone(),
        }),
        ("set", _) => return Err(TypedError::Arity("set KEY VALUE")),
        ("get", [key]) => Typed::Command(Command::Get { key: key.clone() }),
        ("get", _) => return Err(TypedError::Arity("get KEY")),
        ("del", [key]) => Typed::Command(Command::Del { key: key.clone() }),
        ("del", _) => return Err(TypedError::Arity("del KEY")),
        ("ping", []) => Typed::Command(Command::Ping),
        ("ping", _) => return Err(TypedError::Arity("ping")),
        ("stats", []) => Typed::Command(Command::Stats),
        ("stats", _) => return Err(TypedError::Arity("stats")),
        ("help", _) => Typed::Help,
        ("quit" | "exit", _) => Typed::Quit,
        _ => return Err(TypedError::Unknown(name)),
    };
    Ok(typed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::split;

    fn typed(line: &str) -> Result<Typed, TypedError> {
        parse(split(line.as_bytes()).expect("splits"))
    }

    #[test]
    fn commands_parse_whatever_their_case() {
        assert_eq!(
            typed(r#"SeT "a key" "\x00""#),
            Ok(Typed::Command(Command::Set {
                key: Bytes::from_static(b"a key"),
                value: Bytes::from_static(b"\x00"),
            }))
        );
        assert_eq!(
            typed("GET k"),
            Ok(Typed::Command(Command::Get {
                key: Bytes::from_static(b"k")
            }))
        );
        assert_eq!(
            typed("del k"),
            Ok(Typed::Command(Command::Del {
                key: Bytes::from_static(b"k")
            }))
        );
        assert_eq!(typed("PING"), Ok(Typed::Command(Command::Ping)));
        assert_eq!(typed("stats"), Ok(Typed::Command(Command::Stats)));
        assert_eq!(typed("Help"), Ok(Typed::Help));
        assert_eq!(typed("QUIT"), Ok(Typed::Quit));
        assert_eq!(typed("exit"), Ok(Typed::Quit));
        assert_eq!(typed("  "), Ok(Typed::Nothing));
    }

    #[test]
    fn wrong_arity_and_unknown_names_are_errors() {
        assert_eq!(typed("set k"), Err(TypedError::Arity("set KEY VALUE")));
        assert_eq!(typed("set k v w"), Err(TypedError::Arity("set KEY VALUE")));
        assert_eq!(typed("get"), Err(TypedError::Arity("get KEY")));
        assert_eq!(typed("del a b"), Err(TypedError::Arity("del KEY")));
        assert_eq!(typed("ping x"), Err(TypedError::Arity("ping")));
        assert_eq!(typed("stats x"), Err(TypedError::Arity("stats")));
        assert_eq!(typed("incr k"), Err(TypedError::Unknown("incr".into())));
    }
}
