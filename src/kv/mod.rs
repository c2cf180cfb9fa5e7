//! The bundled key-value service: GET, SET and DELETE of byte strings, in memory, made
//! durable by an append-only log ([`log`], record layout in [`log::record`]).
//!
//! Wire layouts: `proto-spec/SERVICES.md`, "kv". Service id 2.
//!
//! ```text
//! GET request:     key bytes (the whole payload)         OK: value bytes    NOT_FOUND: absent
//! SET request:     +-----------------+-----------+-------------------+
//!                  | key length (u16)| key bytes | value bytes (rest)|   OK: empty payload
//!                  +-----------------+-----------+-------------------+
//! DELETE request:  key bytes (the whole payload)         OK: 1 byte, 1 if a value was removed
//! INFO request:    empty          OK: "storage memory|log\nfsync none|never|everysec|always\nkeys N\n"
//! ```
//!
//! Keys are 1 to [`MAX_KEY_LEN`] bytes, values 0 to [`MAX_VALUE_LEN`] bytes; a request outside
//! those limits is answered INVALID_ARGUMENT.
//!
//! # Layers
//!
//! One file per concern; each uses only those below it, so the dependencies go one way:
//!
//! ```text
//!  service.rs   the service: method ids, handlers, register(_logged)   uses log, store, messages, info
//!  info.rs      KvInfo, the answer of INFO                              uses log's FsyncPolicy
//!  log/         the log file, and the logged writes (set_logged, ...)   uses store, messages
//!  store.rs     the in-memory Store, 64 shards                          uses table
//!  table.rs     one shard's table of entries (Entry)                    uses nothing of kv
//!  messages.rs  Key, Value, SetRequest, Deleted and their limits        uses nothing of kv
//! ```
//!
//! The store knows nothing of the log: the log replays its records into the store, snapshots
//! it for a compaction, undoes a failed batch in it, and adds to it the logged writes
//! ([`Store::set_logged`], [`Store::delete_logged`]). The log's record format
//! ([`log::record`]) takes its limits from the messages.

mod info;
pub mod log;
mod messages;
mod service;
mod store;
mod table;

pub use info::{KvInfo, Storage};
pub use messages::{Deleted, Key, SetRequest, Value, MAX_KEY_LEN, MAX_VALUE_LEN};
pub use service::{register, register_logged, DELETE, GET, INFO, SERVICE, SET};
pub use store::{Store, SHARDS};
