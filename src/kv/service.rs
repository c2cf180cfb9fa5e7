//! The kv service: its id, its methods ([`GET`], [`SET`], [`DELETE`], [`INFO`]) and their handlers,
//! registered over a [`Store`] alone ([`register`]) or over a store and its [`Log`]
//! ([`register_logged`]).
//!
//! The top of the kv layers: it uses the messages, the store and the log, and none of them
//! uses it.

use std::sync::Arc;

use super::info::{KvInfo, Storage};
use super::log::Log;
use super::{Deleted, Key, SetRequest, Store, Value};
use crate::proto::Status;
use crate::service::{Method, Router};

/// Service id of kv: 2.
pub const SERVICE: u16 = 2;

/// GET (method 1): the value of a key, or NOT_FOUND.
pub const GET: Method<Key, Value> = Method::new(SERVICE, 1, "kv.Get");
/// SET (method 2): stores a value under a key, replacing any.
pub const SET: Method<SetRequest, ()> = Method::new(SERVICE, 2, "kv.Set");
/// DELETE (method 3): removes a key; says whether it existed.
pub const DELETE: Method<Key, Deleted> = Method::new(SERVICE, 3, "kv.Delete");
/// INFO (method 4): where the server keeps its data, when it fsyncs, and how many keys it
/// holds ([`KvInfo`]). The request payload is empty (a non-empty one is answered
/// INVALID_ARGUMENT). Writes nothing, waits for no commit.
pub const INFO: Method<(), KvInfo> = Method::new(SERVICE, 4, "kv.Info");

/// Holds a read's answer (a GET, or a DELETE that found no key) for `ticket`, the last write
/// to its shard, unless `log` has already made that write visible.
fn hold_unless_visible(ctx: &crate::service::Context, log: &Log, ticket: u64) {
    if ticket > log.visible() {
        ctx.hold_until_committed(ticket);
    }
}

/// Registers GET, SET, DELETE and INFO over `store` and its `log` on `router`, and the log as the
/// router's [`Commit`](crate::service::Commit): each SET and DELETE that changes the store
/// appends a record, and its response waits for the end-of-turn commit of the record (written,
/// and under `--fsync always` synced). Once the log has failed, writes are answered
/// UNAVAILABLE and reads go on. `store` must be the one the log was opened with.
///
/// Reads tell no more than the log keeps: a GET (and a DELETE that finds no key) whose shard
/// holds a write the log has not yet made safe ([`Log::visible`]: written, or under `always`
/// synced) waits for the same commit, on whichever event loop it runs, so that no answer
/// shows a write that a crash could take back. A GET pipelined after a SET on one connection
/// sees that SET.
///
/// INFO answers `storage log` and the log's [`FsyncPolicy`](super::log::FsyncPolicy).
pub fn register_logged(router: &mut Router, store: Arc<Store>, log: Arc<Log>) {
    register_info(
        router,
        Arc::clone(&store),
        Storage::Log,
        Some(log.fsync_policy()),
    );
    register_prefetch(router, &store);
    let (s, l) = (Arc::clone(&store), Arc::clone(&log));
    router.register_encoded(GET, move |ctx, key: Key, out| {
        let (found, ticket) = s.get_into_logged(&key.0, out);
        hold_unless_visible(ctx, &l, ticket);
        if found {
            Ok(())
        } else {
            Err(Status::not_found("key not found"))
        }
    });
    let (s, l) = (Arc::clone(&store), Arc::clone(&log));
    router.register(SET, move |ctx, req: SetRequest| {
        let ticket = s.set_logged(&req.key, &req.value, &l)?;
        ctx.hold_until_committed(ticket);
        Ok(())
    });
    let l = Arc::clone(&log);
    router.register(DELETE, move |ctx, key: Key| {
        let (deleted, ticket) = store.delete_logged(&key.0, &l)?;
        hold_unless_visible(ctx, &l, ticket);
        Ok(Deleted(deleted))
    });
    router.set_commit(log);
}

/// Registers the prefetch hints of GET, SET and DELETE: each batch's keys go to
/// [`Store::prefetch`] before the batch is served. The payloads are unchecked, so a key is
/// found as the decoders find it but through bounds-checked slices: a GET's or DELETE's
/// whole payload; a SET's by [`SetRequest::peek_key`].
fn register_prefetch(router: &mut Router, store: &Arc<Store>) {
    let s = Arc::clone(store);
    router.register_prefetch(GET, move |payloads| s.prefetch(payloads));
    let s = Arc::clone(store);
    router.register_prefetch(DELETE, move |payloads| s.prefetch(payloads));
    let s = Arc::clone(store);
    router.register_prefetch(SET, move |payloads| {
        s.prefetch(payloads.filter_map(SetRequest::peek_key))
    });
}

fn register_get(router: &mut Router, store: Arc<Store>) {
    // The value is copied from the store straight into the response, under the read lock.
    router.register_encoded(GET, move |_ctx, key: Key, out| {
        if store.get_into(&key.0, out) {
            Ok(())
        } else {
            Err(Status::not_found("key not found"))
        }
    });
}

/// Registers INFO: `storage` and `fsync` as given, and the keys `store` holds when asked.
fn register_info(
    router: &mut Router,
    store: Arc<Store>,
    storage: Storage,
    fsync: Option<super::log::FsyncPolicy>,
) {
    router.register(INFO, move |_ctx, ()| {
        Ok(KvInfo {
            storage,
            fsync,
            keys: store.len() as u64,
        })
    });
}

/// Registers GET, SET, DELETE and INFO over `store` on `router`, in memory only: INFO
/// answers `storage memory` and `fsync none`.
pub fn register(router: &mut Router, store: Arc<Store>) {
    register_info(router, Arc::clone(&store), Storage::Memory, None);
    register_prefetch(router, &store);
    register_get(router, Arc::clone(&store));
    let s = Arc::clone(&store);
    router.register(SET, move |_ctx, req: SetRequest| {
        s.set(&req.key, &req.value);
        Ok(())
    });
    router.register(DELETE, move |_ctx, key: Key| {
        Ok(Deleted(store.delete(&key.0)))
    });
}
