//! The logged writes: [`Store::set_logged`] and [`Store::delete_logged`], which apply a write
//! to the store and append its record under the key's shard lock, and what the live keys
//! take in the log (the compaction trigger's measure).
//!
//! Defined here, on the store's ticketed writes ([`Store::set_ticketed`],
//! [`Store::delete_ticketed`]), so that the store needs nothing of the log.

use super::record;
use super::Log;
use crate::kv::store::Store;
use crate::kv::table::Entry;
use crate::proto::Status;

impl Store {
    /// Stores `value` under `key` and appends a SET record to `log`, under the key's shard
    /// lock (so the log orders a key's writes as they were applied); returns the record's
    /// commit ticket, which the response must wait for
    /// ([`Context::hold_until_committed`](crate::service::Context::hold_until_committed)).
    /// If the record's write fails, the log undoes the write in memory ([`log`](super)'s
    /// fail-stop), so that memory never holds a write the log does not.
    ///
    /// # Errors
    /// UNAVAILABLE, without storing anything, once the log has failed.
    pub fn set_logged(&self, key: &[u8], value: &[u8], log: &Log) -> Result<u64, Status> {
        log.check()?;
        let mut added = 0;
        let (ticket, old) = self.set_ticketed(key, value, |key| {
            added = record::set_len(key.len(), value.len()) as u64;
            log.append_set(key, value)
        })?;
        // The replaced entry is freed after the lock is released.
        log.account(added, old.as_ref().map_or(0, record_len));
        drop(old);
        Ok(ticket)
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
        let (old, ticket) = self.delete_ticketed(key, || log.append_delete(key))?;
        let Some(old) = old else {
            return Ok((false, ticket));
        };
        log.account(0, record_len(&old));
        drop(old);
        Ok((true, ticket))
    }
}

/// Bytes the SET record of `entry` takes in the log.
fn record_len(entry: &Entry) -> u64 {
    record::set_len(entry.key().len(), entry.value().len()) as u64
}

/// Bytes the live keys of `store` take as SET records in the log.
pub(super) fn live_record_bytes(store: &Store) -> u64 {
    let mut total = 0;
    store.for_each_shard(|entries| {
        total += entries.iter().map(record_len).sum::<u64>();
    });
    total
}
