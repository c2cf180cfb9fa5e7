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

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use bytes::{Bytes, BytesMut};

use super::table::{Entry, Table};

/// Shards of a [`Store`]: 64, a power of two well above the event loops of any machine this
/// runs on, so two loops seldom want the same lock at once.
pub const SHARDS: usize = 64;

/// One shard: its own lock and map, alone on its cache lines (128 bytes, the unit the
/// adjacent-line prefetcher pulls in) so that locking one never slows another.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    map: RwLock<Table>,
    /// The log ticket of the last logged write applied to this shard (0: none since start),
    /// set under the write lock ([`Store::set_ticketed`], [`Store::delete_ticketed`]). A read
    /// of the shard waits for the commit of this ticket before it answers, so that it never
    /// shows a write that a crash could take back
    /// ([`register_logged`](crate::kv::register_logged)).
    last_write: AtomicU64,
}

impl Shard {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        // A panic while holding the lock cannot leave the map half-updated (each operation is
        // one Table call, which indexes only within its slots and cannot panic partway), so a
        // poisoned lock is still consistent.
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The in-memory store behind the kv service. Cheap to share: clone the `Arc`.
///
/// Keys are spread over [`SHARDS`] shards, each a reader-writer lock around an
/// open-addressing hash table of entries (key and value in one allocation), so event loops on
/// different cores work on different locks and no one lock serialises the server. Each key
/// is hashed once, with std's [`RandomState`] (SipHash-1-3 today, its keys drawn at random
/// when the store is made): the top 6 bits pick the shard, the low bits the slot. Keys chosen
/// to collide cannot be found without those keys, so no client can crowd one shard or make a
/// table's lookups linear.
#[derive(Debug)]
pub struct Store {
    shards: Box<[Shard]>,
    hasher: RandomState,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

/// Keys [`Store::prefetch`] looks at per call: 32, as many as the server gives a prefetch hint
/// at once.
const PREFETCH_MAX: usize = 32;

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Store::default()
    }

    /// The hash of `key` and its shard (the hash's top bits; [`SHARDS`] is 2^6).
    fn locate(&self, key: &[u8]) -> (u64, &Shard) {
        // One write of the key's bytes, without `Hash for [u8]`'s length prefix: SipHash
        // already folds the length of what it hashed into its last block.
        let mut hasher = self.hasher.build_hasher();
        hasher.write(key);
        let hash = hasher.finish();
        (hash, &self.shards[(hash >> 58) as usize])
    }

    /// A copy of the value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        let (hash, shard) = self.locate(key);
        let map = shard.read();
        map.get(hash, key)
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
        let (hash, shard) = self.locate(entry.key());
        let old = shard.write().replace(hash, entry);
        // The replaced entry is freed after the lock is released.
        drop(old);
    }

    /// Removes `key`; `true` if it was there.
    pub fn delete(&self, key: &[u8]) -> bool {
        // Taken out under the lock, freed after it is released.
        let (hash, shard) = self.locate(key);
        let old = shard.write().take(hash, key);
        old.is_some()
    }

    /// Number of keys (each shard counted in turn, so not one instant's count while writes
    /// go on).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Pulls into the CPU's cache the memory that reading or writing each of `keys` (the
    /// first 32 of them) will touch, so that the cache misses of many keys overlap instead of
    /// following one another: a hint, with no effect on what the store holds or answers.
    /// The kv service registers it as the prefetch hint
    /// ([`Router::register_prefetch`](crate::service::Router::register_prefetch)) of GET, SET
    /// and DELETE, so the server calls it with the keys of a batch of pipelined requests
    /// before it serves them.
    ///
    /// Two passes: the first asks for each key's table slot; the second, once those have had
    /// time to arrive, reads them and asks for the entry whose hash is the key's (no key is
    /// compared: that would wait for the entry). Each key's read lock is
    /// taken for a moment in each pass. Does nothing on targets other than x86-64.
    pub fn prefetch<'a>(&self, keys: impl IntoIterator<Item = &'a [u8]>) {
        if cfg!(not(target_arch = "x86_64")) {
            // No prefetch to ask for: spare the hashing and the locks.
            return;
        }
        let mut hashes = [0u64; PREFETCH_MAX];
        let mut n = 0;
        for key in keys.into_iter().take(PREFETCH_MAX) {
            let (hash, shard) = self.locate(key);
            if let Some(address) = shard.read().slot_address(hash) {
                prefetch(address);
            }
            hashes[n] = hash;
            n += 1;
        }
        for &hash in &hashes[..n] {
            let shard = &self.shards[(hash >> 58) as usize];
            if let Some((address, len)) = shard.read().entry_extent(hash) {
                // Every cache line from the allocator's header before it (glibc's malloc
                // keeps a chunk's size in the 8 bytes before it, which `free` reads when a
                // SET replaces the entry) to its end, up to its first 128 bytes: a small
                // entry's key and value (64-byte values make 80-byte entries, across two or
                // three lines). A longer value is copied in order, which the CPU's own
                // prefetcher follows. Points 48 bytes apart, and the last byte, miss no line.
                let end = len.min(128);
                let mut offset = 0;
                while offset < end + 8 {
                    prefetch(address.wrapping_add(offset).wrapping_sub(8));
                    offset += 48;
                }
                prefetch(address.wrapping_add(end.saturating_sub(1)));
            }
        }
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
        let (hash, shard) = self.locate(key);
        let mut map = shard.write();
        let old = map.replace(hash, entry);
        match ticket(key) {
            Ok(ticket) => {
                shard.last_write.store(ticket, Ordering::Relaxed);
                drop(map);
                Ok((ticket, old))
            }
            Err(err) => {
                // The log failed before this record (the ticket was refused): undo the
                // replace under the same lock.
                let undone = put_back(&mut map, hash, key, old);
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
        let (hash, shard) = self.locate(key);
        let mut map = shard.write();
        let Some(old) = map.take(hash, key) else {
            return Ok((None, shard.last_write.load(Ordering::Relaxed)));
        };
        match ticket() {
            Ok(ticket) => {
                shard.last_write.store(ticket, Ordering::Relaxed);
                drop(map);
                Ok((Some(old), ticket))
            }
            Err(err) => {
                map.replace(hash, old);
                Err(err)
            }
        }
    }

    /// Appends the value of `key` to `out` as [`Store::get_into`] does, and returns with it
    /// the ticket of the shard's last logged write, read under the same lock: what a reader
    /// must wait for before it shows the answer.
    pub fn get_into_logged(&self, key: &[u8], out: &mut BytesMut) -> (bool, u64) {
        let (hash, shard) = self.locate(key);
        let map = shard.read();
        let found = match map.get(hash, key) {
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
        let (hash, shard) = self.locate(key);
        let mut map = shard.write();
        let undone = put_back(&mut map, hash, key, old);
        drop(map);
        drop(undone);
    }

    /// Lowers the last-write ticket of `key`'s shard to `durable_end`, where the log's
    /// surviving records end, once a rollback has undone every write past it: reads of the
    /// shard no longer wait for writes that are gone.
    pub(in crate::kv) fn lower_last_write(&self, key: &[u8], durable_end: u64) {
        let (_, shard) = self.locate(key);
        let _map = shard.write();
        shard.last_write.fetch_min(durable_end, Ordering::Relaxed);
    }

    /// Calls `f` with each shard's entries in turn, under that shard's read lock.
    pub(in crate::kv) fn for_each_shard(&self, mut f: impl FnMut(&Table)) {
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
fn put_back(map: &mut Table, hash: u64, key: &[u8], old: Option<Entry>) -> Option<Entry> {
    match old {
        Some(old) => map.replace(hash, old),
        None => map.take(hash, key),
    }
}

/// Asks the CPU to bring the cache line at `address` into every level of its cache.
#[inline]
fn prefetch(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it reads nothing the program can observe, changes no
    // memory and never faults, whatever the address (Intel SDM, PREFETCHh: "does not affect
    // program behavior"), so any pointer value is sound.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
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
        store.prefetch([&b"key:42"[..], b"key:none", b""]);
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
