//! The process's limit on open files.

use std::io;

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) towards `wanted`, as far as the hard
/// limit allows (Redis does the same at start-up for its `maxclients`). Returns the soft limit
/// in force afterwards, which may be below `wanted`; never lowers it.
///
/// # Errors
/// The `getrlimit(2)` error. A refused `setrlimit(2)` is not an error: the old limit is
/// returned.
// `rlim_t` is `u64` on Linux but not on every Unix, so the conversions stay.
#[allow(clippy::useless_conversion)]
pub fn raise_open_file_limit(wanted: u64) -> io::Result<u64> {
    let wanted = libc::rlim_t::try_from(wanted).unwrap_or(libc::rlim_t::MAX);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let current = limit.rlim_cur;
    if current >= wanted {
        return Ok(u64::from(current));
    }
    let raised = libc::rlimit {
        rlim_cur: wanted.min(limit.rlim_max),
        rlim_max: limit.rlim_max,
    };
    // SAFETY: `raised` is a valid rlimit, read for the duration of the call.
    let ok = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0;
    Ok(u64::from(if ok { raised.rlim_cur } else { current }))
}
