//! Spreading requests over several servers: which server owns a key ([`Rendezvous`]).

mod shard;

pub use self::shard::{fnv1a64, mix64, score, Rendezvous};
