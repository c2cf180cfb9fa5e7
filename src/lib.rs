//! courier: a TCP request/response framework on mio, with a blocking client.
//!
//! Frames are length-prefixed and CRC-32-checked (`proto-spec/PROTOCOL.md`); typed methods
//! tie a (service id, method id) to a request and a response type, shared by the server that
//! handles them and the client that calls them.
//!
//! The layers, from pure data to IO:
//!
//! - [`proto`]: frames, the streaming [`Decoder`](proto::Decoder) and the
//!   [`Encoder`](proto::Encoder), status [`Code`](proto::Code)s. No IO, no clock, no threads.
//! - [`connection`]: one server connection's protocol state, sans-IO.
//! - [`service`]: [`Message`](service::Message), [`Method`](service::Method) and the
//!   [`Router`](service::Router).
//! - [`server`] (the mio event loop) and [`client`] (the blocking client): the only modules
//!   that touch sockets.
//! - [`echo`] and [`kv`]: the bundled services; [`admin`]: the built-in STATS service.
//! - [`stats`]: the counters every server keeps.
//!
//! README.md has the two commands that run the kv server and the tests, and a complete small
//! service.
#![deny(missing_docs, missing_debug_implementations)]
#![doc(test(attr(deny(warnings))))]

pub mod admin;
pub mod auth;
pub mod client;
pub mod connection;
pub mod echo;
pub mod kv;
pub mod proto;
pub mod server;
pub mod service;
pub mod stats;
mod sys;
pub mod tls;

/// README.md's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
