//! Appending, group commit and fail-stop: records appended under the store's shard locks,
//! written and synced once per event-loop turn ([`Commit`]), and what a failed write or
//! `fsync` leaves: the file cut back, the batch undone, the answers "not stored" or "outcome
//! unknown".

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::record::{self, Op, FILE_HEADER};
use super::{lock, Failure, FsyncPolicy, Inner, Log, Rollback};
use crate::proto::{Code, Status};
use crate::service::Commit;

impl Log {
    /// UNAVAILABLE with the first storage error, once the log has failed: writes are refused
    /// (and not applied) from then on.
    ///
    /// # Errors
    /// That status.
    pub fn check(&self) -> Result<(), Status> {
        if !self.failed.load(Ordering::SeqCst) {
            return Ok(());
        }
        Err(self.refusal())
    }

    /// The first storage error, for the answers ("storage error" before any), and whether the
    /// file could not be cut back after it.
    fn why(&self) -> (String, bool) {
        let failure = lock(&self.failure);
        match failure.as_ref() {
            Some(f) => (f.why.clone(), f.cut_failed),
            None => ("storage error".to_owned(), false),
        }
    }

    /// The answer to a write refused because the log has failed.
    pub(super) fn refusal(&self) -> Status {
        let (why, _) = self.why();
        Status::unavailable(format!(
            "writes are refused: the kv log failed ({why}); reads are still served"
        ))
    }

    /// The answer to a write whose record was in a batch whose write failed: not stored
    /// (UNAVAILABLE), or UNKNOWN when the file could not be cut back.
    pub(super) fn lost(&self) -> Status {
        let (why, cut_failed) = self.why();
        if cut_failed {
            Status::new(
                Code::UNKNOWN,
                format!(
                    "outcome unknown: the kv log failed ({why}) and could not be cut back, so \
                     this write may be replayed after a restart; writes are refused from now on"
                ),
            )
        } else {
            Status::unavailable(format!(
                "not stored: the kv log failed ({why}); the writes this answer waited for were \
                 undone; writes are refused from now on"
            ))
        }
    }

    /// The answer to a write (or a read that shows one) that waited for an `fsync` that
    /// failed, now or before: outcome unknown.
    pub(super) fn unsynced(&self) -> Status {
        let (why, _) = self.why();
        Status::new(
            Code::UNKNOWN,
            format!(
                "outcome unknown: the kv log's fsync failed ({why}); the writes it covered may \
                 or may not survive a restart; writes are refused from now on"
            ),
        )
    }

    /// Records the first failure (later ones keep the first message) and fails the log.
    pub(super) fn fail(&self, action: &str, err: &io::Error, cut_failed: bool, fsync_failed: bool) {
        let mut failure = lock(&self.failure);
        let failure = failure.get_or_insert_with(|| {
            let why = format!("{action} {}: {err}", self.path.display());
            log::error!("{why}; refusing writes from now on, serving reads");
            Failure {
                why,
                cut_failed: false,
                fsync_failed: false,
            }
        });
        failure.cut_failed |= cut_failed;
        failure.fsync_failed |= fsync_failed;
        self.failed.store(true, Ordering::SeqCst);
    }

    /// Whether an `fsync` has failed: nothing past `synced` can be confirmed any more.
    pub(super) fn fsync_failed(&self) -> bool {
        lock(&self.failure).as_ref().is_some_and(|f| f.fsync_failed)
    }

    /// Appends a SET record (to be written by the next commit) and returns its ticket.
    /// Called by the store under the key's shard lock, so that the log's order of writes to a
    /// key is the order they were applied in.
    ///
    /// # Errors
    /// The refusal, once the log has failed: the caller undoes its write.
    pub(super) fn append_set(&self, key: &[u8], value: &[u8]) -> Result<u64, Status> {
        self.append(|pending| record::encode_set(pending, key, value))
    }

    /// Appends a DELETE record; as [`Log::append_set`].
    ///
    /// # Errors
    /// As [`Log::append_set`].
    pub(super) fn append_delete(&self, key: &[u8]) -> Result<u64, Status> {
        self.append(|pending| record::encode_delete(pending, key))
    }

    /// Appends the record `encode` writes; its ticket is the logical end of the log after it.
    fn append(&self, encode: impl FnOnce(&mut Vec<u8>)) -> Result<u64, Status> {
        let mut inner = lock(&self.inner);
        if self.failed.load(Ordering::SeqCst) {
            drop(inner);
            return Err(self.refusal());
        }
        let at = inner.pending.len();
        encode(&mut inner.pending);
        inner.appended += (inner.pending.len() - at) as u64;
        Ok(inner.appended)
    }

    /// Adds `added` and removes `removed` bytes of live records (SET records of live keys).
    pub(super) fn account(&self, added: u64, removed: u64) {
        if added >= removed {
            self.live_bytes
                .fetch_add(added - removed, Ordering::Relaxed);
        } else {
            self.live_bytes
                .fetch_sub(removed - added, Ordering::Relaxed);
        }
    }

    /// Writes the pending records to the file. On failure the file is cut back to the end of
    /// the last good write (and synced), the log is failed, and the batch is returned: the
    /// caller must pass it to [`Log::roll_back`] once it has released `inner` (the store's
    /// shard locks are taken before `inner`, never after). Records appended before the log
    /// failed some other way (an `fsync`, on another thread) are not written: they are
    /// returned the same way, to be undone.
    pub(super) fn write_pending(&self, inner: &mut Inner) -> Result<(), Rollback> {
        if inner.pending.is_empty() {
            return Ok(());
        }
        if self.failed.load(Ordering::SeqCst) {
            // A failed log is never written again.
            inner.appended = inner.written;
            return Err(Rollback::of(inner));
        }
        let result = (&*inner.file).write_all(&inner.pending);
        let len = inner.pending.len() as u64;
        match result {
            Ok(()) => {
                inner.pending.clear();
                if inner.pending.capacity() > 1024 * 1024 {
                    inner.pending = Vec::new();
                }
                inner.written = inner.appended;
                inner.file_len += len;
                if self.config.fsync != FsyncPolicy::Always {
                    self.visible.fetch_max(inner.written, Ordering::Release);
                }
                Ok(())
            }
            Err(err) => {
                // `write_all` may have stored a prefix of whole records before it failed: cut
                // it off, so that recovery cannot replay a write answered "not stored". A cut
                // that is not synced may not survive a power failure; an fsync that fails is
                // an fsync failure like any other (nothing past `synced` is durable for sure).
                let cut = inner.file.set_len(inner.file_len);
                let sync = cut.as_ref().ok().map(|()| inner.file.sync_data());
                let cut_err = match (&cut, &sync) {
                    (Err(err), _) | (Ok(()), Some(Err(err))) => Some(err),
                    _ => None,
                };
                if let Some(cut_err) = cut_err {
                    log::error!(
                        "{}: cannot cut the log back to byte {} after a failed write: {cut_err}; \
                         the writes of that batch may be replayed by the next start",
                        self.path.display(),
                        inner.file_len
                    );
                }
                let fsync_failed = matches!(sync, Some(Err(_)));
                self.fail("write", &err, cut_err.is_some(), fsync_failed);
                inner.appended = inner.written;
                Err(Rollback::of(inner))
            }
        }
    }

    /// Undoes in the store every write of a batch whose write failed: each key it wrote goes
    /// back to its last state in the log before the batch (read from the file once: failures
    /// are rare, and this keeps the writes' own path free of any undo bookkeeping). Only once
    /// all are back are the shards' last-write tickets lowered, so that until then a read of a
    /// key not yet undone still waits (and fails with the batch). Call without holding
    /// `inner`. If the log cannot be read, the tickets stay up: reads of those shards go on
    /// failing with the batch rather than show its writes.
    pub(super) fn roll_back(&self, batch: Rollback) {
        let mut failed = Vec::with_capacity(FILE_HEADER.len() + batch.records.len());
        failed.extend_from_slice(&FILE_HEADER);
        failed.extend_from_slice(&batch.records);
        let mut states: HashMap<&[u8], Option<&[u8]>> = HashMap::new();
        let writes = record::scan(&failed, |_, op| {
            states.insert(op.key(), None);
        })
        .records;
        let mut before = vec![0; usize::try_from(batch.file_len).unwrap_or(usize::MAX)];
        if let Err(err) = batch.file.read_exact_at(&mut before, 0) {
            log::error!(
                "{}: cannot read the log to undo the {writes} writes of the failed batch: {err}; \
                 reads of their keys' shards fail until the restart",
                self.path.display()
            );
            return;
        }
        record::scan(&before, |_, op| {
            if let Some(state) = states.get_mut(op.key()) {
                *state = match op {
                    Op::Set { value, .. } => Some(value),
                    Op::Delete { .. } => None,
                };
            }
        });
        for (key, value) in &states {
            self.store.restore(key, *value);
        }
        for key in states.keys() {
            self.store.lower_last_write(key, batch.written);
        }
        log::warn!(
            "{}: undid the {writes} writes of the failed batch in memory; they are answered as \
             not stored",
            self.path.display()
        );
    }

    /// Writes what is pending and, if `sync`, makes everything written up to `ticket` durable.
    ///
    /// # Errors
    /// UNAVAILABLE (not stored) when `ticket`'s record was in a batch whose write failed, now
    /// or before; UNKNOWN when the outcome cannot be known (the file could not be cut back, or
    /// an `fsync` failed).
    pub(super) fn flush(&self, ticket: u64, sync: bool) -> Result<(), Status> {
        let (file, target) = {
            let mut inner = lock(&self.inner);
            if inner.written < ticket {
                if let Err(batch) = self.write_pending(&mut inner) {
                    drop(inner);
                    self.roll_back(batch);
                    return Err(self.lost());
                }
                if inner.written < ticket && self.failed.load(Ordering::SeqCst) {
                    // Past what was written before the log failed: its batch was undone. (On
                    // a healthy log everything appended is written now; a larger ticket, as
                    // `u64::MAX`, just means all of it.)
                    return Err(self.lost());
                }
            }
            if !sync {
                return Ok(());
            }
            (Arc::clone(&inner.file), inner.written)
        };
        let mut synced = lock(&self.synced);
        if *synced >= ticket {
            // Another commit's fsync (or a compaction's) covered it.
            return Ok(());
        }
        if self.fsync_failed() {
            return Err(self.unsynced());
        }
        match file.sync_data() {
            Ok(()) => {
                *synced = (*synced).max(target);
                if self.config.fsync == FsyncPolicy::Always {
                    self.visible.fetch_max(*synced, Ordering::Release);
                }
                Ok(())
            }
            Err(err) => {
                self.fail("fsync", &err, false, true);
                Err(self.unsynced())
            }
        }
    }

    /// Writes and `fsync`s everything appended so far: for a clean shutdown, and for
    /// `everysec`.
    ///
    /// # Errors
    /// As a commit's ([`Commit::commit`]): UNAVAILABLE or UNKNOWN.
    pub fn sync(&self) -> Result<(), Status> {
        let appended = lock(&self.inner).appended;
        self.flush(appended, true)
    }

    /// Flushes and `fsync`s the log, and stops its background thread and any compaction
    /// (an unfinished compaction is abandoned; its file is removed on the next start). Call
    /// once, after the server has stopped.
    ///
    /// # Errors
    /// UNAVAILABLE (or UNKNOWN) when the log had failed at any time, or the last `fsync`
    /// fails; what was written before a failure is synced all the same.
    pub fn close(&self) -> Result<(), Status> {
        self.stop.store(true, Ordering::SeqCst);
        {
            let _guard = lock(&self.wake_lock);
            self.wake.notify_all();
        }
        let threads = std::mem::take(&mut *lock(&self.threads));
        for thread in threads {
            let _ = thread.join();
        }
        // A compaction thread may have registered itself after the take.
        let threads = std::mem::take(&mut *lock(&self.threads));
        for thread in threads {
            let _ = thread.join();
        }
        // What was written before a failure is still synced; a log that failed is reported.
        self.sync()?;
        self.check()
    }
}

impl Commit for Log {
    /// Writes the pending records and, under [`FsyncPolicy::Always`], `fsync`s them.
    fn commit(&self, ticket: u64) -> Result<(), Status> {
        self.flush(ticket, self.config.fsync == FsyncPolicy::Always)
    }
}

impl Rollback {
    /// Takes the pending records of `inner` as a batch to undo, with the log as it stands
    /// before them.
    fn of(inner: &mut Inner) -> Rollback {
        Rollback {
            records: std::mem::take(&mut inner.pending),
            file: Arc::clone(&inner.file),
            file_len: inner.file_len,
            written: inner.written,
        }
    }
}
