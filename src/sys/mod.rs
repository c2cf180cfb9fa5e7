//! Every call into the C library, one file per concern, each taking [`AsFd`](std::os::fd::AsFd)
//! where it works on a descriptor and proving its `unsafe` block sound beside it. Nothing else
//! in the crate calls `libc`.

// The kv log's lock on its data directory: the only user.
#[cfg(feature = "kv")]
mod file;
mod limits;
mod read;
mod socket;

#[cfg(feature = "kv")]
pub(crate) use file::lock_exclusive;
pub use limits::raise_open_file_limit;
pub(crate) use read::{read_spare, read_spare_nowait};
pub(crate) use socket::{is_out_of_fds, listen};
