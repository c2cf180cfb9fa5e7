//! Compaction: the log rewritten as the live keys of its store, beside the old one, while
//! the server keeps serving (see the [module docs](super), "Compaction").

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::Instant;

use super::error::io_err;
use super::open::sync_dir;
use super::record::{self, FILE_HEADER};
use super::{lock, FsyncPolicy, Inner, Log, LogError, CATCH_UP, COMPACT_FILE};
use crate::kv::Store;

impl Log {
    /// Rewrites the log as the live keys of its store (see the [module docs](super)), now,
    /// on this thread; the background thread does it when the log has grown past
    /// [`LogConfig::compact_min_size`](super::LogConfig::compact_min_size) and [`LogConfig::compact_ratio`](super::LogConfig::compact_ratio). Service goes on;
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
            for entry in entries.iter() {
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
