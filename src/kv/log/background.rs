//! The log's background thread: the `everysec` fsync, and starting compactions (with a
//! back-off that grows while they fail).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::record::FILE_HEADER;
use super::{lock, FsyncPolicy, Log, COMPACT_BACKOFF_FIRST, COMPACT_BACKOFF_MAX, EVERYSEC, TICK};

impl Log {
    /// Whether a compaction is due: the log is past the minimum size and the ratio.
    pub(super) fn compaction_due(&self) -> bool {
        let file_len = lock(&self.inner).file_len;
        let live = self.live_bytes.load(Ordering::Relaxed) + FILE_HEADER.len() as u64;
        file_len >= self.config.compact_min_size
            && file_len as f64 >= self.config.compact_ratio.max(1.0) * live as f64
    }

    /// The background thread: `everysec` fsyncs, and starting compactions. It holds the log
    /// only while it works, so a log dropped without [`Log::close`] still ends it.
    pub(super) fn background(log: &std::sync::Weak<Log>) {
        let mut last_sync = Instant::now();
        loop {
            let Some(this) = log.upgrade() else {
                return;
            };
            {
                let guard = lock(&this.wake_lock);
                if this.stop.load(Ordering::SeqCst) {
                    return;
                }
                let _ = this
                    .wake
                    .wait_timeout(guard, TICK)
                    .map_err(|p| p.into_inner());
            }
            this.tick(&mut last_sync);
        }
    }

    /// One turn of the background thread.
    pub(super) fn tick(self: &Arc<Self>, last_sync: &mut Instant) {
        // After a failed write, what was written before it is still synced every second;
        // after a failed fsync nothing more is.
        if self.stop.load(Ordering::SeqCst) || self.fsync_failed() {
            return;
        }
        if self.config.fsync == FsyncPolicy::EverySec && last_sync.elapsed() >= EVERYSEC {
            *last_sync = Instant::now();
            if let Err(status) = self.sync() {
                log::debug!("everysec fsync: {status}");
            }
        }
        self.maybe_compact();
    }

    /// Starts a compaction on its own thread (`courier-kv-compact`) if one is due and none
    /// is running.
    pub(super) fn maybe_compact(self: &Arc<Self>) {
        let backing_off = lock(&self.compact_after)
            .0
            .is_some_and(|at| Instant::now() < at);
        if self.stop.load(Ordering::SeqCst)
            || self.failed.load(Ordering::SeqCst)
            || self.compacting.load(Ordering::SeqCst)
            || backing_off
            || !self.compaction_due()
        {
            return;
        }
        if self.compacting.swap(true, Ordering::SeqCst) {
            return;
        }
        let log = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name("courier-kv-compact".into())
            .spawn(move || {
                let result = log.compact();
                if result.is_err() && log.stop.load(Ordering::SeqCst) {
                    log::info!("compaction abandoned: the server is stopping; the log is whole");
                } else if let Err(err) = result {
                    let wait = log.back_off_compaction();
                    log::error!(
                        "compaction failed: {err}; the log is unchanged; retrying in {} s",
                        wait.as_secs()
                    );
                } else {
                    *lock(&log.compact_after) = (None, COMPACT_BACKOFF_FIRST);
                }
                log.compacting.store(false, Ordering::SeqCst);
            });
        match spawned {
            Ok(thread) => lock(&self.threads).push(thread),
            Err(err) => {
                let wait = self.back_off_compaction();
                log::error!(
                    "cannot start a compaction: {err}; retrying in {} s",
                    wait.as_secs()
                );
                self.compacting.store(false, Ordering::SeqCst);
            }
        }
    }

    /// Puts off the next compaction after a failed one, and doubles the wait after the next
    /// failure ([`COMPACT_BACKOFF_FIRST`] to [`COMPACT_BACKOFF_MAX`]); returns this wait.
    pub(super) fn back_off_compaction(&self) -> Duration {
        let mut after = lock(&self.compact_after);
        let wait = after.1;
        *after = (
            Some(Instant::now() + wait),
            (wait * 2).min(COMPACT_BACKOFF_MAX),
        );
        wait
    }
}
