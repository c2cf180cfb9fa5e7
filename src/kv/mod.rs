//! The bundled key-value service: GET, SET and DELETE of byte strings, in memory, made
//! durable by an append-only log ([`logfile`], record layout in [`record`]).
//!
//! Wire layouts: `proto-spec/SERVICES.md`, "kv". Service id 2.
//!
//! ```text
//! GET request:     key bytes (the whole payload)         OK: value bytes    NOT_FOUND: absent
//! SET request:     +-----------------+-----------+-------------------+
//!                  | key length (u16)| key bytes | value bytes (rest)|   OK: empty payload
//!                  +-----------------+-----------+-------------------+
//! DELETE request:  key bytes (the whole payload)         OK: 1 byte, 1 if a value was removed
//! ```
//!
//! Keys are 1 to [`MAX_KEY_LEN`] bytes, values 0 to [`MAX_VALUE_LEN`] bytes; a request outside
//! those limits is answered INVALID_ARGUMENT.

pub mod logfile;
pub mod record;

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::proto::Status;
use logfile::Log;

use crate::service::{Message, MessageError, Method, Router};

/// Service id of kv: 2.
pub const SERVICE: u16 = 2;

/// Longest key in bytes: 1 KiB.
pub const MAX_KEY_LEN: usize = 1024;

/// Longest value in bytes: 1 MiB (memcached's default item size limit, `-I 1m`).
pub const MAX_VALUE_LEN: usize = 1024 * 1024;

/// GET (method 1): the value of a key, or NOT_FOUND.
pub const GET: Method<Key, Value> = Method::new(SERVICE, 1, "kv.Get");
/// SET (method 2): stores a value under a key, replacing any.
pub const SET: Method<SetRequest, ()> = Method::new(SERVICE, 2, "kv.Set");
/// DELETE (method 3): removes a key; says whether it existed.
pub const DELETE: Method<Key, Deleted> = Method::new(SERVICE, 3, "kv.Delete");

/// A key: the whole payload of GET and DELETE requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key(pub Bytes);

impl Message for Key {
    fn encode<B: BufMut>(&self, dst: &mut B) -> Result<(), MessageError> {
        dst.put_slice(&self.0);
        Ok(())
    }
    fn decode(src: Bytes) -> Result<Self, MessageError> {
        check_key(&src)?;
        Ok(Key(src))
    }
}

/// A value: the payload of an OK GET response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value(pub Bytes);

impl Message for Value {
    fn encode<B: BufMut>(&self, dst: &mut B) -> Result<(), MessageError> {
        dst.put_slice(&self.0);
        Ok(())
    }
    fn decode(src: Bytes) -> Result<Self, MessageError> {
        Ok(Value(src))
    }
}

/// A SET request: `u16` key length, key, value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetRequest {
    /// The key, 1 to [`MAX_KEY_LEN`] bytes.
    pub key: Bytes,
    /// The value, 0 to [`MAX_VALUE_LEN`] bytes.
    pub value: Bytes,
}

impl Message for SetRequest {
    fn encode<B: BufMut>(&self, dst: &mut B) -> Result<(), MessageError> {
        // The server refuses keys over MAX_KEY_LEN; one over the u16 prefix cannot be sent.
        let len = u16::try_from(self.key.len()).map_err(|_| {
            MessageError::invalid(format!(
                "key is {} bytes; its u16 length prefix counts at most {}",
                self.key.len(),
                u16::MAX
            ))
        })?;
        dst.put_u16(len);
        dst.put_slice(&self.key);
        dst.put_slice(&self.value);
        Ok(())
    }
    fn decode(mut src: Bytes) -> Result<Self, MessageError> {
        if src.len() < 2 {
            return Err(MessageError::length(2, src.len()));
        }
        let key_len = usize::from(src.get_u16());
        if src.len() < key_len {
            return Err(MessageError::invalid(format!(
                "key length {key_len} runs past the {} bytes that follow",
                src.len()
            )));
        }
        let key = src.split_to(key_len);
        check_key(&key)?;
        if src.len() > MAX_VALUE_LEN {
            return Err(MessageError::invalid(format!(
                "value is {} bytes; the limit is {MAX_VALUE_LEN}",
                src.len()
            )));
        }
        Ok(SetRequest { key, value: src })
    }
}

/// A DELETE response: whether a value was removed (1 byte, 1 or 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deleted(pub bool);

impl Message for Deleted {
    fn encode<B: BufMut>(&self, dst: &mut B) -> Result<(), MessageError> {
        dst.put_u8(u8::from(self.0));
        Ok(())
    }
    fn decode(src: Bytes) -> Result<Self, MessageError> {
        match src[..] {
            [0] => Ok(Deleted(false)),
            [1] => Ok(Deleted(true)),
            [_] => Err(MessageError::invalid("deleted flag must be 0 or 1")),
            _ => Err(MessageError::length(1, src.len())),
        }
    }
}

fn check_key(key: &[u8]) -> Result<(), MessageError> {
    if key.is_empty() {
        return Err(MessageError::invalid("key is empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(MessageError::invalid(format!(
            "key is {} bytes; the limit is {MAX_KEY_LEN}",
            key.len()
        )));
    }
    Ok(())
}

/// Shards of a [`Store`]: 64, a power of two well above the event loops of any machine this
/// runs on, so two loops seldom want the same lock at once.
pub const SHARDS: usize = 64;

/// One stored key and its value, in one allocation:
///
/// ```text
/// +------------------+-----------+-------------+
/// | key length (u16) | key bytes | value bytes |
/// +------------------+-----------+-------------+
/// ```
///
/// Hashed and compared by its key alone, and borrowable as the key, so a shard is a
/// `HashSet<Entry>` looked up by `&[u8]`: a lookup touches the table slot and this one
/// allocation, nothing else.
#[derive(Debug)]
struct Entry(Box<[u8]>);

impl Entry {
    /// `key` must be at most [`MAX_KEY_LEN`] bytes (well within `u16`).
    fn new(key: &[u8], value: &[u8]) -> Entry {
        let key_len = u16::try_from(key.len()).unwrap_or(u16::MAX);
        let key = &key[..usize::from(key_len)];
        let mut bytes = Vec::with_capacity(2 + key.len() + value.len());
        bytes.extend_from_slice(&key_len.to_be_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
        Entry(bytes.into_boxed_slice())
    }

    fn key_end(&self) -> usize {
        2 + usize::from(u16::from_be_bytes([self.0[0], self.0[1]]))
    }

    fn key(&self) -> &[u8] {
        &self.0[2..self.key_end()]
    }

    fn value(&self) -> &[u8] {
        &self.0[self.key_end()..]
    }

    /// Bytes its SET record takes in the log.
    fn record_len(&self) -> u64 {
        record::set_len(self.key().len(), self.value().len()) as u64
    }
}

impl Borrow<[u8]> for Entry {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

// Hash and equality are those of the key, as `Borrow` requires.
impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Entry {}

/// One shard: its own lock and map, alone on its cache lines (128 bytes, the unit the
/// adjacent-line prefetcher pulls in) so that locking one never slows another.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    map: RwLock<HashSet<Entry>>,
    /// The log ticket of the last logged write applied to this shard (0: none since start),
    /// set under the write lock. A read of the shard waits for the commit of this ticket
    /// before it answers, so that it never shows a write that a crash could take back
    /// ([`register_logged`]).
    last_write: AtomicU64,
}

impl Shard {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashSet<Entry>> {
        // A panic while holding the lock cannot leave the map half-updated (each operation is
        // one HashSet call), so a poisoned lock is still consistent.
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<Entry>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The in-memory store behind the kv service. Cheap to share: clone the `Arc`.
///
/// Keys are spread over [`SHARDS`] shards, each a reader-writer lock around a hash set of
/// entries (key and value in one allocation), so
/// event loops on different cores work on different locks and no one lock serialises the
/// server. The shard is picked by FNV-1a over the key; each map still hashes with std's
/// randomly keyed SipHash, so keys chosen to collide can at worst crowd one shard's lock,
/// never turn a map's lookups linear.
#[derive(Debug)]
pub struct Store {
    shards: Box<[Shard]>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }
}

/// The shard of `key`: FNV-1a (64-bit; offset basis and prime from the FNV specification,
/// draft-eastlake-fnv), high bits folded in.
fn shard_of(key: &[u8]) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in key {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    ((hash ^ (hash >> 32)) as usize) & (SHARDS - 1)
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Store::default()
    }

    fn shard(&self, key: &[u8]) -> &Shard {
        &self.shards[shard_of(key)]
    }

    /// A copy of the value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        let shard = self.shard(key).read();
        shard
            .get(key)
            .map(|entry| Bytes::copy_from_slice(entry.value()))
    }

    /// Appends the value of `key` to `out`, copied under the shard's read lock; `false` (and
    /// nothing appended) when the key is absent. Allocates nothing but what `out` needs to
    /// grow.
    pub fn get_into(&self, key: &[u8], out: &mut BytesMut) -> bool {
        self.get_into_logged(key, out).0
    }

    /// Stores `value` under `key`, replacing any value. Key and value are copied into one
    /// allocation (made outside the lock), so the store never pins a connection's read
    /// buffer. A key longer than [`MAX_KEY_LEN`] is the caller's error (the kv service
    /// refuses it); it is cut to 65,535 bytes.
    pub fn set(&self, key: &[u8], value: &[u8]) {
        let entry = Entry::new(key, value);
        let old = self.shard(entry.key()).write().replace(entry);
        // The replaced entry is freed after the lock is released.
        drop(old);
    }

    /// Removes `key`; `true` if it was there.
    pub fn delete(&self, key: &[u8]) -> bool {
        // Taken out under the lock, freed after it is released.
        let old = self.shard(key).write().take(key);
        old.is_some()
    }

    /// Number of keys (each shard counted in turn, so not one instant's count while writes
    /// go on).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Stores `value` under `key` and appends a SET record to `log`, under the key's shard
    /// lock (so the log orders a key's writes as they were applied); returns the record's
    /// commit ticket, which the response must wait for
    /// ([`Context::hold_until_committed`](crate::service::Context::hold_until_committed)).
    /// If the record's write fails, the log undoes the write in memory ([`logfile`]'s
    /// fail-stop), so that memory never holds a write the log does not.
    ///
    /// # Errors
    /// UNAVAILABLE, without storing anything, once the log has failed.
    pub fn set_logged(&self, key: &[u8], value: &[u8], log: &Log) -> Result<u64, Status> {
        log.check()?;
        let entry = Entry::new(key, value);
        let key = &key[..entry.key().len()];
        let added = entry.record_len();
        let shard = self.shard(key);
        let mut map = shard.write();
        let old = map.replace(entry);
        match log.append_set(key, value) {
            Ok(ticket) => {
                shard.last_write.store(ticket, Ordering::Relaxed);
                drop(map);
                // The replaced entry is freed after the lock is released.
                log.account(added, old.as_ref().map_or(0, Entry::record_len));
                drop(old);
                Ok(ticket)
            }
            Err(status) => {
                // The log failed before this record: undo the replace under the same lock.
                let undone = put_back(&mut map, key, old);
                drop(map);
                drop(undone);
                Err(status)
            }
        }
    }

    /// Removes `key` and appends a DELETE record to `log` if it was there; returns whether
    /// it was, and the ticket to wait for: the record's, or when the key was absent the
    /// shard's last logged write (its absence may be that write's doing). As
    /// [`Store::set_logged`].
    ///
    /// # Errors
    /// UNAVAILABLE, without removing anything, once the log has failed.
    pub fn delete_logged(&self, key: &[u8], log: &Log) -> Result<(bool, u64), Status> {
        log.check()?;
        let shard = self.shard(key);
        let mut map = shard.write();
        let Some(old) = map.take(key) else {
            return Ok((false, shard.last_write.load(Ordering::Relaxed)));
        };
        match log.append_delete(key) {
            Ok(ticket) => {
                shard.last_write.store(ticket, Ordering::Relaxed);
                drop(map);
                log.account(0, old.record_len());
                drop(old);
                Ok((true, ticket))
            }
            Err(status) => {
                map.insert(old);
                Err(status)
            }
        }
    }

    /// Appends the value of `key` to `out` as [`Store::get_into`] does, and returns with it
    /// the ticket of the shard's last logged write, read under the same lock: what a reader
    /// must wait for before it shows the answer.
    pub fn get_into_logged(&self, key: &[u8], out: &mut BytesMut) -> (bool, u64) {
        let shard = self.shard(key);
        let map = shard.read();
        let found = match map.get(key) {
            Some(entry) => {
                out.extend_from_slice(entry.value());
                true
            }
            None => false,
        };
        (found, shard.last_write.load(Ordering::Relaxed))
    }

    /// Gives `key` back the state the log holds for it, after the log failed to write a
    /// batch that wrote it ([`logfile`]'s rollback): `value`, or no entry when `None`.
    fn restore(&self, key: &[u8], value: Option<&[u8]>) {
        let old = value.map(|value| Entry::new(key, value));
        let mut map = self.shard(key).write();
        let undone = put_back(&mut map, key, old);
        drop(map);
        drop(undone);
    }

    /// Lowers the last-write ticket of `key`'s shard to `durable_end`, where the log's
    /// surviving records end, once a rollback has undone every write past it: reads of the
    /// shard no longer wait for writes that are gone.
    fn lower_last_write(&self, key: &[u8], durable_end: u64) {
        let shard = self.shard(key);
        let _map = shard.write();
        shard.last_write.fetch_min(durable_end, Ordering::Relaxed);
    }

    /// Bytes the live keys take as SET records in the log.
    fn live_record_bytes(&self) -> u64 {
        let mut total = 0;
        self.for_each_shard(|entries| {
            total += entries.iter().map(Entry::record_len).sum::<u64>();
        });
        total
    }

    /// Calls `f` with each shard's entries in turn, under that shard's read lock.
    fn for_each_shard(&self, mut f: impl FnMut(&HashSet<Entry>)) {
        for shard in self.shards.iter() {
            f(&shard.read());
        }
    }

    /// `true` when the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.read().is_empty())
    }
}

/// Undoes a write to `key` in a shard's map: `old` goes back (or, `None`, the key is removed).
/// Returns the entry the write had put there, to be freed once the lock is released.
fn put_back(map: &mut HashSet<Entry>, key: &[u8], old: Option<Entry>) -> Option<Entry> {
    match old {
        Some(old) => map.replace(old),
        None => map.take(key),
    }
}

/// Holds a read's answer (a GET, or a DELETE that found no key) for `ticket`, the last write
/// to its shard, unless `log` has already made that write visible.
fn hold_unless_visible(ctx: &crate::service::Context, log: &Log, ticket: u64) {
    if ticket > log.visible() {
        ctx.hold_until_committed(ticket);
    }
}

/// Registers GET, SET and DELETE over `store` and its `log` on `router`, and the log as the
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
pub fn register_logged(router: &mut Router, store: Arc<Store>, log: Arc<Log>) {
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

/// Registers GET, SET and DELETE over `store` on `router`, in memory only.
pub fn register(router: &mut Router, store: Arc<Store>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_over_every_shard_and_each_is_found_in_its_own() {
        let store = Store::new();
        for i in 0..10_000u32 {
            store.set(format!("key:{i}").as_bytes(), &i.to_be_bytes());
        }
        assert_eq!(store.len(), 10_000);
        let per_shard: Vec<usize> = store.shards.iter().map(|s| s.read().len()).collect();
        let mut out = BytesMut::new();
        assert!(store.get_into(b"key:42", &mut out));
        assert!(!store.get_into(b"key:none", &mut out));
        assert_eq!(&out[..], &42u32.to_be_bytes()[..]);
        store.set(b"key:42", b"replaced");
        assert_eq!(store.get(b"key:42").as_deref(), Some(&b"replaced"[..]));
        assert_eq!(store.len(), 10_000);
        // 10,000 keys over 64 shards: about 156 each; none empty, none more than twice that.
        assert!(per_shard.iter().all(|&n| n > 0 && n < 313), "{per_shard:?}");
        for i in (0..10_000u32).step_by(997) {
            let key = format!("key:{i}");
            assert_eq!(
                store.get(key.as_bytes()).as_deref(),
                Some(&i.to_be_bytes()[..])
            );
            assert!(store.delete(key.as_bytes()));
            assert_eq!(store.get(key.as_bytes()), None);
            assert!(!store.delete(key.as_bytes()));
        }
    }

    #[test]
    fn threads_writing_at_once_lose_nothing() {
        let store = Arc::new(Store::new());
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for i in 0..2_000u32 {
                        let key = [&[t][..], &i.to_be_bytes()[..]].concat();
                        store.set(&key, &key);
                        assert_eq!(store.get(&key).as_deref(), Some(&key[..]));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("writer thread");
        }
        assert_eq!(store.len(), 8_000);
        assert!(!store.is_empty());
    }
}
