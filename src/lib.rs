//! courier: a TCP request/response framework.
#![deny(missing_docs, missing_debug_implementations)]
#![doc(test(attr(deny(warnings))))]

pub mod client;
pub mod connection;
pub mod echo;
pub mod kv;
pub mod proto;
pub mod server;
pub mod service;
