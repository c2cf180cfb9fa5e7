//! Opening the log: the directory's lock, recovery (replay, torn tails, damage, `--repair`)
//! and the background thread.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::io_err;
use super::record::{self, Damage, End, Op, FILE_HEADER};
use super::writes::live_record_bytes;
use super::{
    lock, Inner, Log, LogConfig, LogError, COMPACT_BACKOFF_FIRST, COMPACT_FILE, LOCK_FILE, LOG_FILE,
};
use crate::kv::Store;

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

/// `fsync`s a directory, so that a file created or renamed in it stays after a crash.
pub(super) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Takes the directory's lock file with `flock(LOCK_EX | LOCK_NB)`.
fn lock_dir(dir: &Path) -> Result<File, LogError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("open", &path))?;
    if let Err(err) = crate::sys::lock_exclusive(&file) {
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

pub(super) fn unix_time() -> u64 {
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
        let live = live_record_bytes(store);
        let log = Arc::new(Log {
            path,
            inner: Mutex::new(Inner {
                pending: Vec::new(),
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
}
