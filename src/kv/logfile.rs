//! The kv server's append-only log: durability, recovery on start, compaction, fail-stop.
//!
//! Every SET and DELETE the kv service applies is appended to `<data dir>/kv.log` as one
//! record ([`super::record`] gives the byte layout and the recovery rules). A write is
//! acknowledged only once its record has been written to the file, and under
//! [`FsyncPolicy::Always`] only once it has also been `fsync`ed. The records of one event-loop
//! turn are written with one `write` and made durable with one `fsync` (group commit,
//! [`Commit`]); the server holds their responses until then.
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
//! - each write of the batch is undone in memory (the entry it replaced or removed is put
//!   back), so reads never show it;
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

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::record::{self, Damage, End, Op, FILE_HEADER};
use super::{Entry, Store};
use crate::proto::{Code, Status};
use crate::service::Commit;

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

/// When the log is `fsync`ed (Redis's `appendfsync` settings, with the same names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every commit, before any write of it is acknowledged: no acknowledged write is
    /// lost, even to a power failure.
    Always,
    /// Once a second on a background thread: a power failure or kernel crash loses at most
    /// the last second or two of writes; a crash of the process loses none (the kernel has
    /// them). The default.
    #[default]
    EverySec,
    /// Never but at a clean shutdown: the kernel writes the file back when it likes (about
    /// 30 s on Linux); a process crash loses nothing written.
    Never,
}

impl FromStr for FsyncPolicy {
    type Err = String;

    /// `always`, `everysec` or `never`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "everysec" => Ok(FsyncPolicy::EverySec),
            "never" => Ok(FsyncPolicy::Never),
            other => Err(format!(
                "unknown fsync policy {other:?}: expected always, everysec or never"
            )),
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::EverySec => "everysec",
            FsyncPolicy::Never => "never",
        })
    }
}

/// Where the log lives and how it is kept.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// The data directory, created if missing. Default [`DEFAULT_DATA_DIR`].
    pub dir: PathBuf,
    /// When to `fsync`. Default [`FsyncPolicy::EverySec`].
    pub fsync: FsyncPolicy,
    /// Start even when a record before the tail is damaged: keep the records before it and
    /// move the rest to `kv.log.damaged-<offset>-<unix time>`. Default `false`.
    pub repair: bool,
    /// Smallest log, in bytes, that is compacted. Default [`DEFAULT_COMPACT_MIN_SIZE`].
    pub compact_min_size: u64,
    /// How many times the size of the live records the log must be to be compacted; at least
    /// 1. Default [`DEFAULT_COMPACT_RATIO`].
    pub compact_ratio: f64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            dir: PathBuf::from(DEFAULT_DATA_DIR),
            fsync: FsyncPolicy::default(),
            repair: false,
            compact_min_size: DEFAULT_COMPACT_MIN_SIZE,
            compact_ratio: DEFAULT_COMPACT_RATIO,
        }
    }
}

/// Why the log could not be opened or kept.
#[derive(Debug)]
pub enum LogError {
    /// A file operation failed.
    Io {
        /// What was being done, e.g. "read".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Another process holds the data directory's lock.
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A record before the tail is damaged; the log was left as it is.
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// Offset of the damaged record (0: the file header).
        offset: u64,
        /// What is wrong with it.
        damage: Damage,
        /// The log's length in bytes.
        len: u64,
    },
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Io {
                action,
                path,
                source,
            } => write!(f, "cannot {action} {}: {source}", path.display()),
            LogError::Locked { path } => write!(
                f,
                "{} is locked: another server uses this data directory",
                path.display()
            ),
            LogError::Corrupt {
                path,
                offset,
                damage,
                len,
            } => write!(
                f,
                "{}: the record at byte {offset} is damaged ({damage}) and {} bytes follow it, \
                 so this is not a torn tail; refusing to start. Start with --repair to keep the \
                 {offset} bytes before it and move the rest aside",
                path.display(),
                len - offset
            ),
        }
    }
}

impl std::error::Error for LogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LogError + 'a {
    move |source| LogError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// What [`Log::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records replayed.
    pub records: u64,
    /// Bytes of the log kept (file header and records).
    pub bytes: u64,
    /// A torn tail that was truncated: its offset and what was wrong.
    pub torn_tail: Option<(u64, Damage)>,
    /// With `repair`: the offset of the damaged record and where the rest was moved.
    pub repaired: Option<(u64, PathBuf)>,
}

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
    /// For each record in `pending`, in order: the entry its write replaced or removed in the
    /// store (`None`: the key was absent), put back if the record's write fails.
    undo: Vec<Option<Entry>>,
    /// Logical end of everything appended (tickets are logical offsets: they keep growing
    /// across compactions, which change the file).
    appended: u64,
    /// Logical end of what was written to the file.
    written: u64,
    file: Arc<File>,
    file_len: u64,
}

/// The kv log. Shared by the kv handlers (append), the event loops ([`Commit`]) and its
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

/// What a failed write leaves to undo in memory: the batch's records and their undo
/// entries, for [`Log::roll_back`] once the log's lock is released.
#[derive(Debug)]
struct Rollback {
    records: Vec<u8>,
    undo: Vec<Option<Entry>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent before anything can panic in it.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// `fsync`s a directory, so that a file created or renamed in it stays after a crash.
fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Takes the directory's lock file with `flock(LOCK_EX | LOCK_NB)`.
fn lock_dir(dir: &Path) -> Result<File, LogError> {
    use std::os::fd::AsRawFd;
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("open", &path))?;
    // SAFETY: `flock` takes a descriptor and flags and touches no memory of ours; the
    // descriptor is `file`'s, open for the duration of the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = io::Error::last_os_error();
        return Err(if err.kind() == io::ErrorKind::WouldBlock {
            LogError::Locked { path }
        } else {
            LogError::Io {
                action: "lock",
                path,
                source: err,
            }
        });
    }
    Ok(file)
}

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Log {
    /// Opens (or creates) the log in `config.dir`, replays it into `store` (which should be
    /// empty, and which compactions snapshot from then on), and starts its background thread
    /// (`courier-kv-log`).
    ///
    /// # Errors
    /// [`LogError::Locked`] when another server uses the directory; [`LogError::Corrupt`]
    /// when a record before the tail is damaged and `repair` is off; [`LogError::Io`] when a
    /// file cannot be created, read, written or synced.
    pub fn open(config: LogConfig, store: &Arc<Store>) -> Result<(Arc<Log>, Recovery), LogError> {
        let dir = config.dir.clone();
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let dir_lock = lock_dir(&dir)?;
        let compact = dir.join(COMPACT_FILE);
        match fs::remove_file(&compact) {
            Ok(()) => log::warn!(
                "{}: removed an unfinished compaction; the log is whole",
                compact.display()
            ),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_err("remove", &compact)(err)),
        }
        let path = dir.join(LOG_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(err) => return Err(io_err("read", &path)(err)),
        };
        let mut recovery = Recovery::default();
        let scan = record::scan(&bytes, |_, op| match op {
            Op::Set { key, value } => store.set(key, value),
            Op::Delete { key } => {
                store.delete(key);
            }
        });
        recovery.records = scan.records;
        let mut keep = scan.valid_len;
        match scan.end {
            End::Clean => {}
            End::TornTail { offset, damage } => {
                log::warn!(
                    "{}: torn tail at byte {offset} ({damage}): truncating the {} bytes from there \
                     (a write cut short by a crash; it was never acknowledged)",
                    path.display(),
                    bytes.len() as u64 - offset
                );
                recovery.torn_tail = Some((offset, damage));
                keep = offset;
            }
            End::Corrupt { offset, damage } if config.repair => {
                let aside = dir.join(format!("{LOG_FILE}.damaged-{offset}-{}", unix_time()));
                let rest = bytes.get(offset as usize..).unwrap_or_default();
                let mut file = File::create(&aside).map_err(io_err("create", &aside))?;
                file.write_all(rest).map_err(io_err("write", &aside))?;
                file.sync_all().map_err(io_err("fsync", &aside))?;
                log::warn!(
                    "{}: the record at byte {offset} is damaged ({damage}); --repair kept the {offset} \
                     bytes before it ({} records) and moved the {} bytes from it to {}",
                    path.display(),
                    scan.records,
                    rest.len(),
                    aside.display()
                );
                recovery.repaired = Some((offset, aside));
                keep = offset;
            }
            End::Corrupt { offset, damage } => {
                return Err(LogError::Corrupt {
                    path,
                    offset,
                    damage,
                    len: bytes.len() as u64,
                });
            }
        }
        // A log shorter than its header (new, or torn while being created) starts afresh.
        let fresh = keep < FILE_HEADER.len() as u64;
        let file = if fresh {
            // Read too: a compaction copies from the log with `pread`.
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(io_err("create", &path))?;
            file.write_all(&FILE_HEADER)
                .map_err(io_err("write", &path))?;
            file.sync_all().map_err(io_err("fsync", &path))?;
            sync_dir(&dir)?;
            keep = FILE_HEADER.len() as u64;
            file
        } else {
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&path)
                .map_err(io_err("open", &path))?;
            if keep < bytes.len() as u64 {
                file.set_len(keep).map_err(io_err("truncate", &path))?;
            }
            // What was replayed may still be only in the page cache (a crash of a server
            // under everysec): made durable before any read shows it.
            file.sync_all().map_err(io_err("fsync", &path))?;
            if keep < bytes.len() as u64 {
                sync_dir(&dir)?;
            }
            file
        };
        recovery.bytes = keep;
        drop(bytes);
        let live = store.live_record_bytes();
        let log = Arc::new(Log {
            path,
            inner: Mutex::new(Inner {
                pending: Vec::new(),
                undo: Vec::new(),
                appended: keep,
                written: keep,
                file: Arc::new(file),
                file_len: keep,
            }),
            synced: Mutex::new(keep),
            visible: AtomicU64::new(keep),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            live_bytes: AtomicU64::new(live),
            compactions: AtomicU64::new(0),
            compacting: AtomicBool::new(false),
            compact_after: Mutex::new((None, COMPACT_BACKOFF_FIRST)),
            stop: AtomicBool::new(false),
            wake: Condvar::new(),
            wake_lock: Mutex::new(()),
            threads: Mutex::new(Vec::new()),
            store: Arc::clone(store),
            config,
            _lock: dir_lock,
        });
        let background = Arc::downgrade(&log);
        let thread = thread::Builder::new()
            .name("courier-kv-log".into())
            .spawn(move || Log::background(&background))
            .map_err(io_err("start the log thread for", &log.path))?;
        lock(&log.threads).push(thread);
        log::info!(
            "{}: replayed {} records ({} bytes), {} keys; fsync {}",
            log.path.display(),
            recovery.records,
            recovery.bytes,
            store.len(),
            log.config.fsync
        );
        Ok((log, recovery))
    }

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

    /// The answer to a write refused because the log has failed.
    fn refusal(&self) -> Status {
        let failure = lock(&self.failure);
        let why = failure.as_ref().map_or("storage error", |f| f.why.as_str());
        Status::unavailable(format!(
            "writes are refused: the kv log failed ({why}); reads are still served"
        ))
    }

    /// The answer to a write whose record was in a batch whose write failed: not stored
    /// (UNAVAILABLE), or UNKNOWN when the file could not be cut back.
    fn lost(&self) -> Status {
        let failure = lock(&self.failure);
        let why = failure.as_ref().map_or("storage error", |f| f.why.as_str());
        if failure.as_ref().is_some_and(|f| f.cut_failed) {
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
    fn unsynced(&self) -> Status {
        let failure = lock(&self.failure);
        let why = failure.as_ref().map_or("storage error", |f| f.why.as_str());
        Status::new(
            Code::UNKNOWN,
            format!(
                "outcome unknown: the kv log's fsync failed ({why}); the writes it covered may \
                 or may not survive a restart; writes are refused from now on"
            ),
        )
    }

    /// Records the first failure (later ones keep the first message) and fails the log.
    fn fail(&self, action: &str, err: &io::Error, cut_failed: bool, fsync_failed: bool) {
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
    fn fsync_failed(&self) -> bool {
        lock(&self.failure).as_ref().is_some_and(|f| f.fsync_failed)
    }

    /// Appends a SET record (to be written by the next commit) and returns its ticket; `old`
    /// is what the write replaced in the store, put back if the record's write fails. Called
    /// by the store under the key's shard lock, so that the log's order of writes to a key is
    /// the order they were applied in.
    ///
    /// # Errors
    /// The refusal, with `old` given back, once the log has failed: the caller undoes its
    /// write.
    #[allow(clippy::result_large_err)]
    pub(super) fn append_set(
        &self,
        key: &[u8],
        value: &[u8],
        old: Option<Entry>,
    ) -> Result<u64, (Status, Option<Entry>)> {
        let mut inner = lock(&self.inner);
        if self.failed.load(Ordering::SeqCst) {
            drop(inner);
            return Err((self.refusal(), old));
        }
        record::encode_set(&mut inner.pending, key, value);
        inner.undo.push(old);
        inner.appended += record::set_len(key.len(), value.len()) as u64;
        Ok(inner.appended)
    }

    /// Appends a DELETE record of the removed entry `old`; as [`Log::append_set`].
    ///
    /// # Errors
    /// As [`Log::append_set`].
    #[allow(clippy::result_large_err)]
    pub(super) fn append_delete(&self, key: &[u8], old: Entry) -> Result<u64, (Status, Entry)> {
        let mut inner = lock(&self.inner);
        if self.failed.load(Ordering::SeqCst) {
            drop(inner);
            return Err((self.refusal(), old));
        }
        record::encode_delete(&mut inner.pending, key);
        inner.undo.push(Some(old));
        inner.appended += record::delete_len(key.len()) as u64;
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
    /// shard locks are taken before `inner`, never after).
    fn write_pending(&self, inner: &mut Inner) -> Result<(), Rollback> {
        if inner.pending.is_empty() {
            return Ok(());
        }
        let result = (&*inner.file).write_all(&inner.pending);
        let len = inner.pending.len() as u64;
        match result {
            Ok(()) => {
                inner.pending.clear();
                if inner.pending.capacity() > 1024 * 1024 {
                    inner.pending = Vec::new();
                }
                // The replaced entries are freed here, under the log's lock: one `free` each.
                inner.undo.clear();
                inner.written = inner.appended;
                inner.file_len += len;
                if self.config.fsync != FsyncPolicy::Always {
                    self.visible.fetch_max(inner.written, Ordering::Release);
                }
                Ok(())
            }
            Err(err) => {
                // `write_all` may have stored a prefix of whole records before it failed: cut
                // it off, so that recovery cannot replay a write answered "not stored".
                let cut = inner
                    .file
                    .set_len(inner.file_len)
                    .and_then(|()| inner.file.sync_data());
                if let Err(cut_err) = &cut {
                    log::error!(
                        "{}: cannot cut the log back to byte {} after a failed write: {cut_err}; \
                         the writes of that batch may be replayed by the next start",
                        self.path.display(),
                        inner.file_len
                    );
                }
                self.fail("write", &err, cut.is_err(), false);
                inner.appended = inner.written;
                Err(Rollback {
                    records: std::mem::take(&mut inner.pending),
                    undo: std::mem::take(&mut inner.undo),
                })
            }
        }
    }

    /// Undoes in the store, newest first, every write of a batch whose write failed: the
    /// entry each replaced or removed is put back (a key that was absent is removed again).
    /// Call without holding `inner`.
    fn roll_back(&self, batch: Rollback) {
        let durable_end = lock(&self.inner).written;
        let mut bytes = Vec::with_capacity(FILE_HEADER.len() + batch.records.len());
        bytes.extend_from_slice(&FILE_HEADER);
        bytes.extend_from_slice(&batch.records);
        let mut keys = Vec::with_capacity(batch.undo.len());
        record::scan(&bytes, |_, op| {
            keys.push(match op {
                Op::Set { key, .. } | Op::Delete { key } => key,
            })
        });
        debug_assert_eq!(keys.len(), batch.undo.len(), "one undo entry per record");
        let writes = keys.len();
        for (key, old) in keys.into_iter().zip(batch.undo).rev() {
            self.store.restore(key, old, durable_end);
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
    fn flush(&self, ticket: u64, sync: bool) -> Result<(), Status> {
        let (file, target) = {
            let mut inner = lock(&self.inner);
            if inner.written < ticket {
                if self.failed.load(Ordering::SeqCst) {
                    // Past what was written before the failure: its batch was undone.
                    return Err(self.lost());
                }
                if let Err(batch) = self.write_pending(&mut inner) {
                    drop(inner);
                    self.roll_back(batch);
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

    /// Whether a compaction is due: the log is past the minimum size and the ratio.
    fn compaction_due(&self) -> bool {
        let file_len = lock(&self.inner).file_len;
        let live = self.live_bytes.load(Ordering::Relaxed) + FILE_HEADER.len() as u64;
        file_len >= self.config.compact_min_size
            && file_len as f64 >= self.config.compact_ratio.max(1.0) * live as f64
    }

    /// The background thread: `everysec` fsyncs, and starting compactions. It holds the log
    /// only while it works, so a log dropped without [`Log::close`] still ends it.
    fn background(log: &std::sync::Weak<Log>) {
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
    fn tick(self: &Arc<Self>, last_sync: &mut Instant) {
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
    fn maybe_compact(self: &Arc<Self>) {
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
    fn back_off_compaction(&self) -> Duration {
        let mut after = lock(&self.compact_after);
        let wait = after.1;
        *after = (
            Some(Instant::now() + wait),
            (wait * 2).min(COMPACT_BACKOFF_MAX),
        );
        wait
    }

    /// Rewrites the log as the live keys of its store (see the [module docs](self)), now,
    /// on this thread; the background thread does it when the log has grown past
    /// [`LogConfig::compact_min_size`] and [`LogConfig::compact_ratio`]. Service goes on;
    /// writes pause only for the last copy, `fsync` and rename.
    ///
    /// # Errors
    /// The first file error. Before the rename the old log is untouched and the partial file
    /// is removed; an error renaming or syncing the directory fails the log (fail-stop).
    pub fn compact(&self) -> Result<(), LogError> {
        let store = Arc::clone(&self.store);
        let dir = self.config.dir.clone();
        let tmp_path = dir.join(COMPACT_FILE);
        let started = Instant::now();
        // 1. The old log's end, with everything appended before it written.
        let (old, mut copied, old_len) = {
            let inner = self.write_or_undo(lock(&self.inner))?;
            (Arc::clone(&inner.file), inner.file_len, inner.file_len)
        };
        let result = self.write_compacted(&store, &tmp_path, &old, &mut copied);
        let tmp = match result {
            Ok(tmp) => tmp,
            Err(err) => {
                let _ = fs::remove_file(&tmp_path);
                return Err(err);
            }
        };
        // 3. With writes paused: the last records, fsync, rename, fsync the directory. A log
        // that failed meanwhile is not compacted: the snapshot may hold writes since undone.
        let mut inner = match self.write_or_undo(lock(&self.inner)) {
            Ok(inner) if !self.failed.load(Ordering::SeqCst) => inner,
            Ok(inner) => {
                drop(inner);
                let _ = fs::remove_file(&tmp_path);
                return Err(self.failed_log_error());
            }
            Err(err) => {
                let _ = fs::remove_file(&tmp_path);
                return Err(err);
            }
        };
        let end = inner.file_len;
        let finish = copy_range(&old, &self.path, copied, end, &tmp, &tmp_path)
            .and_then(|()| tmp.sync_all().map_err(io_err("fsync", &tmp_path)));
        if let Err(err) = finish {
            drop(inner);
            let _ = fs::remove_file(&tmp_path);
            return Err(err);
        }
        if self.stop.load(Ordering::SeqCst) {
            drop(inner);
            let _ = fs::remove_file(&tmp_path);
            return Ok(());
        }
        if let Err(err) = fs::rename(&tmp_path, &self.path) {
            drop(inner);
            let _ = fs::remove_file(&tmp_path);
            return Err(io_err("rename", &tmp_path)(err));
        }
        // From here the new file is the log; an error now cannot be undone: fail-stop.
        if let Err(err) = sync_dir(&dir) {
            let source = match &err {
                LogError::Io { source, .. } => io::Error::new(source.kind(), source.to_string()),
                _ => io::Error::other(err.to_string()),
            };
            // Whether the rename survives a crash is unknown, as after a failed fsync.
            self.fail("fsync the directory of", &source, false, true);
            return Err(err);
        }
        let new_len = tmp.metadata().map(|m| m.len()).unwrap_or(0);
        inner.file = Arc::new(tmp);
        inner.file_len = new_len;
        let written = inner.written;
        {
            // Every record written so far is in the new file, which was synced.
            let mut synced = lock(&self.synced);
            *synced = (*synced).max(written);
            if self.config.fsync == FsyncPolicy::Always {
                self.visible.fetch_max(*synced, Ordering::Release);
            }
        }
        drop(inner);
        self.compactions.fetch_add(1, Ordering::Relaxed);
        log::info!(
            "compacted {}: {old_len} -> {new_len} bytes in {} ms",
            self.path.display(),
            started.elapsed().as_millis()
        );
        Ok(())
    }

    /// [`Log::write_pending`] for a compaction: on failure, releases the lock, undoes the
    /// batch and returns the error (the compaction is abandoned).
    fn write_or_undo<'a>(
        &self,
        mut inner: MutexGuard<'a, Inner>,
    ) -> Result<MutexGuard<'a, Inner>, LogError> {
        match self.write_pending(&mut inner) {
            Ok(()) => Ok(inner),
            Err(batch) => {
                drop(inner);
                self.roll_back(batch);
                Err(self.failed_log_error())
            }
        }
    }

    /// The error of a compaction abandoned because the log has failed.
    fn failed_log_error(&self) -> LogError {
        LogError::Io {
            action: "write",
            path: self.path.clone(),
            source: io::Error::other(self.refusal().message),
        }
    }

    /// Steps 1 and 2 of a compaction: the snapshot, then the old log's records from `copied`
    /// on until fewer than [`CATCH_UP`] bytes are left; the file is `fsync`ed.
    fn write_compacted(
        &self,
        store: &Store,
        tmp_path: &Path,
        old: &File,
        copied: &mut u64,
    ) -> Result<File, LogError> {
        // Read too: once renamed it is the log, which the next compaction reads.
        let mut tmp = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(tmp_path)
            .map_err(io_err("create", tmp_path))?;
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(&FILE_HEADER);
        let mut failed = None;
        store.for_each_shard(|entries| {
            if failed.is_some() || self.stop.load(Ordering::SeqCst) {
                return;
            }
            for entry in entries {
                record::encode_set(&mut buf, entry.key(), entry.value());
            }
            if buf.len() >= 64 * 1024 {
                if let Err(err) = tmp.write_all(&buf) {
                    failed = Some(err);
                }
                buf.clear();
            }
        });
        if let Some(err) = failed {
            return Err(io_err("write", tmp_path)(err));
        }
        tmp.write_all(&buf).map_err(io_err("write", tmp_path))?;
        if self.stop.load(Ordering::SeqCst) {
            return Err(LogError::Io {
                action: "finish",
                path: tmp_path.to_owned(),
                source: io::Error::other("the server is stopping"),
            });
        }
        loop {
            let end = self.write_or_undo(lock(&self.inner))?.file_len;
            if end.saturating_sub(*copied) < CATCH_UP {
                break;
            }
            copy_range(old, &self.path, *copied, end, &tmp, tmp_path)?;
            *copied = end;
        }
        tmp.sync_all().map_err(io_err("fsync", tmp_path))?;
        Ok(tmp)
    }
}

/// Appends `from[start..end]` to `to`.
fn copy_range(
    from: &File,
    from_path: &Path,
    start: u64,
    end: u64,
    mut to: &File,
    to_path: &Path,
) -> Result<(), LogError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut at = start;
    while at < end {
        let want = usize::try_from(end - at)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = from
            .read_at(&mut buf[..want], at)
            .map_err(io_err("read", from_path))?;
        if n == 0 {
            return Err(io_err("read", from_path)(
                io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        to.write_all(&buf[..n]).map_err(io_err("write", to_path))?;
        at += n as u64;
    }
    Ok(())
}

impl Commit for Log {
    /// Writes the pending records and, under [`FsyncPolicy::Always`], `fsync`s them.
    fn commit(&self, ticket: u64) -> Result<(), Status> {
        self.flush(ticket, self.config.fsync == FsyncPolicy::Always)
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
