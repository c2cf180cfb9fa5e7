//! Advisory file locks.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// Takes an exclusive `flock(2)` lock on `file` without waiting; the lock lasts until the
/// descriptor is closed.
///
/// # Errors
/// `WouldBlock` when another open file description holds the lock; any other `flock` error.
pub(crate) fn lock_exclusive(file: impl AsFd) -> io::Result<()> {
    // SAFETY: `flock` takes a descriptor and flags and touches no memory of ours; the
    // descriptor is `file`'s, open for the duration of the call.
    if unsafe { libc::flock(file.as_fd().as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
