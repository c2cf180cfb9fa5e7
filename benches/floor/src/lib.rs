//! The reference servers of `benches/compare.sh`, beside which courier's kv-server's CPU per
//! request is shown, and the load driver for both:
//!
//! - [`floor`]: a bare mio server that does only what any server of length-prefixed frames
//!   must: read, find each frame's 4-byte length, write a canned answer of the right size.
//!   No checksum, no map, no allocation per request.
//! - [`ldc`]: what a user writes in an afternoon: tokio, tokio-util's `LengthDelimitedCodec`,
//!   a `HashMap` store, a 1-byte opcode, no checks and no limits, one flush per batch of
//!   requests read.
//! - [`bench`]: `raw-bench`, the load for both: mio-driven like courier-bench, each
//!   connection keeping a batch of requests outstanding.
//!
//! The wire format of all three is in [`wire`]. This crate has a workspace of its own, so the
//! courier-rpc crate's builds never compile tokio for it.

pub mod bench;
pub mod floor;
pub mod ldc;
pub mod wire;
