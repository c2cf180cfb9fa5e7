//! The kv server's append-only log: durability, recovery on start, compaction, fail-stop.
//!
//! Every SET and DELETE the kv service applies is appended to `<data dir>/kv.log` as one
//! record ([`record`] gives the byte layout and the recovery rules). A write is
//! acknowledged only once its record has been written to the file, and under
//! [`FsyncPolicy::Always`] only once it has also been `fsync`ed. The records of one event-loop
//! turn are written with one `write` and made durable with one `fsync` (group commit,
//! [`Commit`](crate::service::Commit)); the server holds their responses until then.
//!
//! ```text
//!  event loop turn                                    background thread (every 100 ms)
//!  ───────────────                                    ────────────────────────────────
//!  SET/DELETE: shard lock, append record to the       everysec: fsync what was written,
//!              pending buffer, apply in memory,                 at most 1 s after it
//!              hold the response (ticket)             compaction due? start it on a
//!  end of turn: Commit::commit(largest ticket):                   thread of its own
//!              write(pending); fsync if `always`;
//!              release (or fail) the held responses
//! ```
//!
//! # Files in the data directory
//!
//! | file | what |
//! | --- | --- |
//! | `kv.log` | the log: an 8-byte file header, then records |
//! | `kv.log.compact` | a compaction in progress; removed on start (the old log is whole) |
//! | `kv.log.damaged-<offset>-<unix time>` | with `--repair`: what followed a damaged record |
//! | `LOCK` | held with `flock` while a server uses the directory |
//!
//! # Recovery
//!
//! [`Log::open`] replays the log into the store. A torn tail (a last record cut short or
//! with a bad CRC, as a crash while writing leaves it) is truncated with a warning naming its
//! offset. Damage before the tail means the file was corrupted after it was written: the
//! server refuses to start ([`LogError::Corrupt`]) unless [`LogConfig::repair`] is set, which
//! keeps the valid prefix and moves the rest aside. This is Redis's `appendonly` behaviour
//! (`aof-load-truncated yes`, and `redis-check-aof --fix` for damage in the middle).
//!
//! # Compaction
//!
//! When the log is at least [`LogConfig::compact_min_size`] bytes and
//! [`LogConfig::compact_ratio`] times the size the live data would take as records, it is
//! rewritten without stopping service, as Redis's AOF rewrite does:
//!
//! 1. note the log's end, and write every live key as a SET record to `kv.log.compact`
//!    (one shard at a time under its read lock, so reads and writes go on);
//! 2. copy the records appended to the old log since step 1 after them (SETs and DELETEs
//!    that happened during the snapshot replay over it to the same state);
//! 3. `fsync` the new file, and with writes paused copy the last records, `fsync` again,
//!    `rename` it over `kv.log`, and `fsync` the directory.
//!
//! A crash before the rename leaves the old log whole (the partial `kv.log.compact` is
//! deleted on start); after it, the new one, which was complete and durable before it got
//! the name.
//!
//! # Fail-stop
//!
//! When a write of the log fails (disk full, EIO, a file size limit), the log is failed for
//! the life of the process, and what the failed write did is undone before anything else, as
//! Redis does after a partial AOF write (`flushAppendOnlyFile`):
//!
//! - the file is cut back (`ftruncate`, then `fsync`) to the end of the last good write, so
//!   no record of the failed batch survives a restart, though `write` may have stored a prefix
//!   of whole records before it failed;
//! - each write of the batch is undone in memory: every key it wrote goes back to its last
//!   state in the log before the batch (read from the file once, at the failure), so reads
//!   never show it and memory matches what a restart replays;
//! - its answers, held for the commit, are UNAVAILABLE: not stored, safe to retry;
//! - every later SET and DELETE is refused (UNAVAILABLE) without being applied; reads go on,
//!   and so do `fsync`s of what was written before the failure.
//!
//! If the file cannot be cut back, the batch's records may be replayed by the next start: its
//! answers say so (UNKNOWN, outcome unknown) instead of "not stored".
//!
//! When an `fsync` fails, the writes it covered may or may not be on stable storage: the
//! kernel may have dropped the dirty pages it failed to write (the PostgreSQL "fsyncgate"
//! lesson, 2018), so a failed `fsync` is never retried as a success. Under
//! [`FsyncPolicy::Always`] the answers waiting for it are UNKNOWN (outcome unknown), writes
//! are refused from then on, and reads that would show one of those writes are answered
//! UNKNOWN too, until the restart.
//!
//! # What a reader sees
//!
//! A read (GET, or DELETE of an absent key) shows only writes the log has made as safe as its
//! policy makes an acknowledged write ([`Log::visible`]): written to the file under
//! `everysec` and `never` (a crash of the process cannot take them back), written and
//! `fsync`ed under `always` (a power failure cannot either). A read whose key's shard holds a
//! newer write waits for that write's commit, like the write's own answer.
//!
//! # Layers
//!
//! The log sits on the [`Store`], which knows nothing of it: it replays its records into the
//! store on open, snapshots it for a compaction, undoes a failed batch in it, and adds to it
//! the logged writes ([`Store::set_logged`], [`Store::delete_logged`], in `writes.rs`) on top
//! of the store's ticketed writes. The kv service
//! ([`register_logged`](crate::kv::register_logged)) sits on both; the log uses nothing of
//! it. [`record`], the record format, uses only the key and value limits of the kv messages.

mod background;
mod commit;
mod compact;
mod config;
mod error;
mod open;
pub mod record;
mod writes;

pub use config::{FsyncPolicy, LogConfig};
pub use error::LogError;
pub use open::Recovery;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::kv::Store;

/// The log's file name in the data directory.
pub const LOG_FILE: &str = "kv.log";
/// The file a compaction writes before renaming it over the log.
pub const COMPACT_FILE: &str = "kv.log.compact";
/// The lock file held while a server uses the data directory.
pub const LOCK_FILE: &str = "LOCK";
/// Default data directory: `./kv-data`.
pub const DEFAULT_DATA_DIR: &str = "kv-data";
/// Default smallest log that is compacted: 64 MiB (Redis's `auto-aof-rewrite-min-size`).
pub const DEFAULT_COMPACT_MIN_SIZE: u64 = 64 * 1024 * 1024;
/// Default growth that triggers a compaction: the log is twice the size of its live records
/// (Redis's `auto-aof-rewrite-percentage 100`).
pub const DEFAULT_COMPACT_RATIO: f64 = 2.0;
/// How often the background thread looks at the log: 100 ms.
const TICK: Duration = Duration::from_millis(100);
/// The `everysec` interval: 1 s (Redis's `appendfsync everysec`).
const EVERYSEC: Duration = Duration::from_secs(1);
/// Wait after a failed compaction before the next: 1 s, doubled after each failure in a row
/// up to [`COMPACT_BACKOFF_MAX`]. A failure that passes (out of file descriptors for a
/// moment) costs a second, not a minute, while the log keeps growing.
const COMPACT_BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between compaction attempts that keep failing: 60 s.
const COMPACT_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A compaction copies the old log's new records without pausing writes until fewer than
/// this many are left: 1 MiB.
const CATCH_UP: u64 = 1024 * 1024;

/// Counters of a [`Log`], for operators and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Bytes in `kv.log` now.
    pub file_len: u64,
    /// Bytes the live keys would take as SET records (what a compaction leaves, less the
    /// file header).
    pub live_bytes: u64,
    /// Bytes appended since start, written or not.
    pub appended: u64,
    /// Bytes written to the file since start.
    pub written: u64,
    /// Bytes known durable since start (`fsync`ed).
    pub synced: u64,
    /// Compactions finished since start.
    pub compactions: u64,
    /// Whether the log has failed (writes refused).
    pub failed: bool,
}

/// The append side, under one lock.
#[derive(Debug)]
struct Inner {
    /// Records appended and not yet written.
    pending: Vec<u8>,
    /// Logical end of everything appended (tickets are logical offsets: they keep growing
    /// across compactions, which change the file).
    appended: u64,
    /// Logical end of what was written to the file.
    written: u64,
    file: Arc<File>,
    file_len: u64,
}

/// The kv log. Shared by the kv handlers (append), the event loops ([`Commit`](crate::service::Commit)) and its
/// background threads; see the [module docs](self).
#[derive(Debug)]
pub struct Log {
    config: LogConfig,
    path: PathBuf,
    inner: Mutex<Inner>,
    /// Logical end of what is known durable; also serialises `fsync`s.
    synced: Mutex<u64>,
    /// Logical end of what reads may show: what was written (`everysec`, `never`) or synced
    /// (`always`). Read without a lock by every GET.
    visible: AtomicU64,
    /// Set once a write or `fsync` failed: writes are refused from then on.
    failed: AtomicBool,
    failure: Mutex<Option<Failure>>,
    live_bytes: AtomicU64,
    compactions: AtomicU64,
    compacting: AtomicBool,
    /// After a failed compaction: none is started before this, and the wait after the next
    /// failure.
    compact_after: Mutex<(Option<Instant>, Duration)>,
    /// Stops the background thread and any compaction.
    stop: AtomicBool,
    wake: Condvar,
    wake_lock: Mutex<()>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// What a compaction snapshots.
    store: Arc<Store>,
    /// Held for the log's life: the directory's `flock`.
    _lock: File,
}

/// How the log failed: the first error, and what is unknown since.
#[derive(Debug)]
struct Failure {
    /// The first error, for every answer after it: "write /data/kv.log: No space left".
    why: String,
    /// A write failed and the file could not be cut back: the failed batch may be replayed.
    cut_failed: bool,
    /// An `fsync` failed: what was written after the last good one may or may not be durable.
    fsync_failed: bool,
}

/// What a failed write leaves to undo in memory, for [`Log::roll_back`] once the log's lock
/// is released: the batch's records, and the log as it was before them (the file, its
/// length, and the logical end of what was written), which holds what their keys go back to.
#[derive(Debug)]
struct Rollback {
    records: Vec<u8>,
    file: Arc<File>,
    file_len: u64,
    written: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent before anything can panic in it.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Log {
    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The fsync policy.
    pub fn fsync_policy(&self) -> FsyncPolicy {
        self.config.fsync
    }

    /// The log's counters now.
    pub fn stats(&self) -> LogStats {
        let inner = lock(&self.inner);
        let (file_len, appended, written) = (inner.file_len, inner.appended, inner.written);
        drop(inner);
        LogStats {
            file_len,
            live_bytes: self.live_bytes.load(Ordering::Relaxed),
            appended,
            written,
            synced: *lock(&self.synced),
            compactions: self.compactions.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::SeqCst),
        }
    }

    /// Where reads may look: the logical end of what the log has written (`everysec`,
    /// `never`) or written and synced (`always`). A read that would show a write past it waits
    /// for that write's commit (see the [module docs](self), "What a reader sees").
    pub fn visible(&self) -> u64 {
        self.visible.load(Ordering::Acquire)
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
