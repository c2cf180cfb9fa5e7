//! Listening sockets: the backlog, and telling out-of-descriptor errors apart.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// Sets the listen backlog of `listener`, a socket already listening: the connections the
/// kernel completes and queues before they are accepted (mio binds with 128). Linux and the
/// BSDs let `listen(2)` be called again on a listening socket to change it; the kernel caps
/// the value at `net.core.somaxconn`. Values above `c_int::MAX` are taken as `c_int::MAX`.
///
/// # Errors
/// The `listen(2)` error.
pub(crate) fn listen(listener: impl AsFd, backlog: u32) -> io::Result<()> {
    let backlog = libc::c_int::try_from(backlog).unwrap_or(libc::c_int::MAX);
    // SAFETY: `listen` takes a descriptor and an integer and touches no memory of ours; the
    // descriptor is the listener's own, open for as long as `listener` is borrowed.
    if unsafe { libc::listen(listener.as_fd().as_raw_fd(), backlog) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `err` says the process (`EMFILE`) or the system (`ENFILE`) has no file descriptor
/// left.
pub(crate) fn is_out_of_fds(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}
