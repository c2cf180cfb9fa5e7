//! How the log is kept: the fsync policy and the log's settings.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::{DEFAULT_COMPACT_MIN_SIZE, DEFAULT_COMPACT_RATIO, DEFAULT_DATA_DIR};

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
