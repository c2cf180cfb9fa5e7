//! courier-rpc: a TCP request/response framework on mio, with a blocking client and, with
//! feature `tokio`, an async one.
//!
//! A server runs one event loop per core; each decodes length-prefixed, CRC-32-checked frames
//! (the wire protocol is specified in `proto-spec/PROTOCOL.md`, shipped with the crate),
//! dispatches each request to the handler registered for its (service id, method id), and
//! writes the framed answer back. A blocking [`Client`] speaks the same frames, and so does
//! `AsyncClient` (feature `tokio`, see [`client`]), whose clones let any number of tokio tasks
//! call through one connection. There is no async runtime in the server.
//!
//! In `Cargo.toml`:
//!
//! ```toml
//! [dependencies]
//! courier-rpc = "0.1"
//! ```
//!
//! and in code, `use courier_rpc::...`. What a service author needs is at the crate root;
//! the modules hold the rest.
//!
//! # Writing a service
//!
//! Declare the service once with [`service!`]: its id, and each method's id, name, request
//! and response types. Messages are any [`Message`]: integers (big-endian), `bool`, `String`,
//! [`Bytes`], `()`, any serde type wrapped in [`Cbor`] (RFC 8949) or [`Json`], or a type
//! that encodes itself. The macro gives the [`Method`] constants, a trait the server
//! implements, and a typed client stub.
//!
//! ```
//! use std::collections::HashMap;
//! use std::sync::Mutex;
//! use courier_rpc::{service, Cbor, Code, Context, Router, Server, Status};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! pub struct Note { pub title: String, pub text: String }
//!
//! service! {
//!     /// Notes by id.
//!     pub mod notes(service = 30, name = "notes") {
//!         /// A notes server.
//!         trait Notes;
//!         /// A typed notes client.
//!         client NotesClient;
//!         /// Stores a note; answers its id.
//!         rpc PUT = 1: put(Cbor<Note>) -> u64;
//!         /// A note by id, or NOT_FOUND.
//!         rpc GET = 2: get(u64) -> Cbor<Note>;
//!     }
//! }
//!
//! /// The implementation owns its state; handlers take `&self` from many threads.
//! #[derive(Default)]
//! struct Store(Mutex<HashMap<u64, Note>>);
//!
//! impl notes::Notes for Store {
//!     fn put(&self, _ctx: &Context, Cbor(note): Cbor<Note>) -> Result<u64, Status> {
//!         let mut map = self.0.lock().map_err(|_| Status::internal("poisoned"))?;
//!         let id = map.len() as u64 + 1;
//!         map.insert(id, note);
//!         Ok(id)
//!     }
//!     fn get(&self, _ctx: &Context, id: u64) -> Result<Cbor<Note>, Status> {
//!         let map = self.0.lock().map_err(|_| Status::internal("poisoned"))?;
//!         let note = map.get(&id).ok_or_else(|| Status::not_found(format!("no note {id}")))?;
//!         Ok(Cbor(Note { title: note.title.clone(), text: note.text.clone() }))
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut router = Router::new();
//! router.add_service(notes::service(Store::default()));
//! let server = Server::builder()
//!     .addr("127.0.0.1:0".parse()?) // port 0: any free port
//!     .bind(router)?
//!     .spawn()?;
//!
//! let mut client = notes::NotesClient::connect(server.local_addr())?;
//! let id = client.put(&Cbor(Note { title: "hi".into(), text: "there".into() }))?;
//! assert_eq!(client.get(&id)?.title, "hi");
//! let missing = client.get(&99).unwrap_err();
//! assert_eq!(missing.status().map(|s| s.code), Some(Code::NOT_FOUND));
//! server.shutdown()?;
//! # Ok(())
//! # }
//! ```
//!
//! A handler answers `Err(Status)` with one of gRPC's canonical [`Code`]s; `?` works on an
//! `io::Error` (mapped by kind, as tonic does) and on a [`MessageError`] (INVALID_ARGUMENT).
//! Handlers run inline on the event loop and must not block; a method declared
//! `rpc(blocking)` runs on the server's worker pool instead, and may check
//! [`Context::deadline`] to give up when its caller has. The server answers UNIMPLEMENTED for
//! an unknown method, INVALID_ARGUMENT for a request that does not decode, DEADLINE_EXCEEDED
//! without calling the handler when the deadline has passed, and INTERNAL when a handler
//! panics, and goes on serving. Without the macro, register closures on a [`Router`] for
//! [`Method`] constants of your own ([`Router::register`]).
//!
//! # Testing a service
//!
//! [`Router::call`] runs a method as a server would, through the message encodings, without
//! a socket; a test that wants the real thing binds port 0 and connects, as above.
//!
//! ```
//! use courier_rpc::{Code, Method, Router, Status};
//!
//! const HALF: Method<u64, u64> = Method::new(40, 2, "math.half");
//!
//! let mut router = Router::new();
//! router.register(HALF, |_ctx, n: u64| {
//!     if n % 2 == 1 {
//!         return Err(Status::invalid_argument(format!("{n} is odd")));
//!     }
//!     Ok(n / 2)
//! });
//! assert_eq!(router.call(&HALF, &10), Ok(5));
//! assert_eq!(router.call(&HALF, &3).unwrap_err().code, Code::INVALID_ARGUMENT);
//! ```
//!
//! # Shutting down
//!
//! [`RunningServer::shutdown`] stops a server started with [`Server::spawn`]. A server that
//! runs for good drains on SIGTERM and SIGINT with [`Server::run_until_signal`] (feature
//! `signal`): it stops accepting, sends every connection GOAWAY, answers what it has read,
//! and returns; a second signal stops it at once. Clients see UNAVAILABLE, safe to retry, for
//! requests the server did not take.
//!
//! ```no_run
//! use std::time::Duration;
//! use courier_rpc::{Router, Server};
//!
//! # fn main() -> std::io::Result<()> {
//! let server = Server::builder().bind(Router::new())?;
//! println!("listening on {}", server.local_addr());
//! server.run_until_signal(Duration::from_secs(10))
//! # }
//! ```
//!
//! # Features
//!
//! | feature | default | what |
//! | --- | --- | --- |
//! | `serde` | on | [`Cbor`] and [`Json`] (ciborium, serde_json) |
//! | `signal` | on | [`server::drain_on_signals`], [`Server::run_until_signal`] (signal-hook) |
//! | `metrics` | on | [`metrics::MetricsServer`]: a Prometheus `/metrics` endpoint (tiny_http) |
//! | `kv`, `echo` | on | the bundled services ([`kv`], [`echo`]) |
//! | `cli` | on | the binaries `kv-server`, `kv-cli`, `echo-server`, `courier-cli`, `courier-bench` (clap, env_logger, anyhow, hdrhistogram, rustyline) |
//! | `tokio` | off | `client::AsyncClient`, the async client for tokio applications; `proto::FrameCodec`, the frame codec for tokio-util's `Framed` (tokio, tokio-util) |
//!
//! A library user who wants none of them writes
//! `courier-rpc = { version = "0.1", default-features = false }` and names the ones to keep.
//!
//! # Modules
//!
//! From pure data to IO:
//!
//! - [`proto`]: frames, the streaming [`Decoder`](proto::Decoder) and the
//!   [`Encoder`](proto::Encoder), status codes, metadata. No IO, no clock, no threads.
//! - [`service`](mod@service): [`Message`], [`Method`], the [`Router`], [`service!`].
//! - [`server`] (the mio event loops, their limits and security settings) and [`client`]
//!   (the blocking client, and the async one with feature `tokio`): the only modules that
//!   touch sockets.
//! - [`auth`] (identities, tokens, the access-control list) and [`tls`] (rustls settings).
//! - [`admin`] (the built-in service 0: STATS, AUTH, WHOAMI, and METHODS, the reflection),
//!   [`stats`] (the counters every server keeps, per method too, and their Prometheus text)
//!   and [`metrics`] (an HTTP `/metrics` endpoint serving them).
//! - [`kv`] and [`echo`]: the bundled services.
//! - `connection`: one server connection's sans-IO protocol state. Hidden from these docs:
//!   public only for the fuzz targets and the crate's own tests, with no stability promise.
#![deny(missing_docs, missing_debug_implementations)]
#![doc(test(attr(deny(warnings))))]

pub mod admin;
pub mod auth;
pub mod client;
#[doc(hidden)]
pub mod connection;
#[cfg(feature = "echo")]
pub mod echo;
#[cfg(feature = "kv")]
pub mod kv;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod proto;
pub mod server;
pub mod service;
pub mod stats;
mod sys;
pub mod tls;

/// The `tokio` crate, for the code [`service!`] generates with feature `tokio`, so that a
/// crate using a stub's `connect_async` need not name tokio in its own `Cargo.toml`.
#[cfg(feature = "tokio")]
#[doc(hidden)]
pub use tokio as __tokio;

/// The `bytes` crate, whose [`Bytes`] and `BufMut` messages are read from and written to,
/// re-exported so that a service needs no dependency of its own on it.
pub use bytes;
pub use bytes::Bytes;

#[cfg(feature = "tokio")]
pub use client::AsyncClient;
pub use client::{CallOptions, Client, ClientBuilder, ClientError};
pub use proto::{Code, Metadata, Status};
pub use server::{RunningServer, Server, ServerBuilder};
#[cfg(feature = "serde")]
pub use service::{Cbor, Json};
pub use service::{Context, Message, MessageError, Method, Router};

/// README.md's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
