//! Why the log could not be opened or kept.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::record::Damage;

/// Why the log could not be opened or kept.
///
/// Marked `#[non_exhaustive]`: a `match` needs a wildcard arm, so that variants can be added.
#[derive(Debug)]
#[non_exhaustive]
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

pub(super) fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> LogError + 'a {
    move |source| LogError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}
