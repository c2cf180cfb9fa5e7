//! The in-memory store behind the kv service: [`Store`], its keys spread over [`SHARDS`]
//! shards.
//!
//! The store is the bottom of the kv layers beside the messages: it knows nothing of the log
//! or the service. The log ([`log`](super::log)) is built on it: it replays records into it,
//! snapshots it for a compaction ([`Store::for_each_shard`]), undoes a failed batch in it
//! ([`Store::restore`], [`Store::lower_last_write`]), and adds the logged writes
//! (`Store::set_logged`, `Store::delete_logged`) on top of the ticketed ones here
//! ([`Store::set_ticketed`], [`Store::delete_ticketed`]). The service sits on both. All the
//! store keeps for the log is a number per shard, the ticket of its last ticketed write,
//! which the caller picks.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use bytes::{Bytes, BytesMut};

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
pub(in crate::kv) struct Entry(Box<[u8]>);

impl Entry {
    /// `key` must be at most [`MAX_KEY_LEN`](crate::kv::MAX_KEY_LEN) bytes (well within `u16`).
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

    pub(in crate::kv) fn key(&self) -> &[u8] {
        &self.0[2..self.key_end()]
    }

    pub(in crate::kv) fn value(&self) -> &[u8] {
        &self.0[self.key_end()..]
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
    /// set under the write lock ([`Store::set_ticketed`], [`Store::delete_ticketed`]). A read
    /// of the shard waits for the commit of this ticket before it answers, so that it never
    /// shows a write that a crash could take back
    /// ([`register_logged`](crate::kv::register_logged)).
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
    /// buffer. A key longer than [`MAX_KEY_LEN`](crate::kv::MAX_KEY_LEN) is the caller's error (the kv service
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

    /// Stores `value` under `key` as [`Store::set`] does, and under the key's shard lock calls
    /// `ticket` with the key as stored (cut as `set` cuts it): the write's ticket, which the
    /// caller picks (the log appends the write's record and returns its commit ticket). `Ok`
    /// keeps the write and makes the ticket the shard's last write
    /// ([`Store::get_into_logged`]); `Err` undoes the write under the same lock and is
    /// returned. On success returns the ticket and the replaced entry, which the caller frees
    /// after the lock is released.
    ///
    /// # Errors
    /// `ticket`'s error, with nothing stored.
    pub(in crate::kv) fn set_ticketed<E>(
        &self,
        key: &[u8],
        value: &[u8],
        ticket: impl FnOnce(&[u8]) -> Result<u64, E>,
    ) -> Result<(u64, Option<Entry>), E> {
        let entry = Entry::new(key, value);
        let key = &key[..entry.key().len()];
        let shard = self.shard(key);
        let mut map = shard.write();
        let old = map.replace(entry);
        match ticket(key) {
            Ok(ticket) => {
                shard.last_write.store(ticket, Ordering::Relaxed);
                drop(map);
                Ok((ticket, old))
            }
            Err(err) => {
                // The log failed before this record (the ticket was refused): undo the
                // replace under the same lock.
                let undone = put_back(&mut map, key, old);
                drop(map);
                drop(undone);
                Err(err)
            }
        }
    }

    /// Removes `key` and, if it was there, under the key's shard lock calls `ticket` for the
    /// removal's ticket, as [`Store::set_ticketed`] does. Returns the removed entry (`None`
    /// when the key was absent), which the caller frees after the lock is released, and the
    /// ticket to wait for: the removal's, or when the key was absent the shard's last write
    /// (its absence may be that write's doing).
    ///
    /// # Errors
    /// `ticket`'s error, with the entry put back.
    pub(in crate::kv) fn delete_ticketed<E>(
        &self,
        key: &[u8],
        ticket: impl FnOnce() -> Result<u64, E>,
    ) -> Result<(Option<Entry>, u64), E> {
        let shard = self.shard(key);
        let mut map = shard.write();
        let Some(old) = map.take(key) else {
            return Ok((None, shard.last_write.load(Ordering::Relaxed)));
        };
        match ticket() {
            Ok(ticket) => {
                shard.last_write.store(ticket, Ordering::Relaxed);
                drop(map);
                Ok((Some(old), ticket))
            }
            Err(err) => {
                map.insert(old);
                Err(err)
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
    /// batch that wrote it (the log's rollback): `value`, or no entry when `None`.
    pub(in crate::kv) fn restore(&self, key: &[u8], value: Option<&[u8]>) {
        let old = value.map(|value| Entry::new(key, value));
        let mut map = self.shard(key).write();
        let undone = put_back(&mut map, key, old);
        drop(map);
        drop(undone);
    }

    /// Lowers the last-write ticket of `key`'s shard to `durable_end`, where the log's
    /// surviving records end, once a rollback has undone every write past it: reads of the
    /// shard no longer wait for writes that are gone.
    pub(in crate::kv) fn lower_last_write(&self, key: &[u8], durable_end: u64) {
        let shard = self.shard(key);
        let _map = shard.write();
        shard.last_write.fetch_min(durable_end, Ordering::Relaxed);
    }

    /// Calls `f` with each shard's entries in turn, under that shard's read lock.
    pub(in crate::kv) fn for_each_shard(&self, mut f: impl FnMut(&HashSet<Entry>)) {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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
