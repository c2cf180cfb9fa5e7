//! Every call into the C library, one file per concern, each taking [`AsFd`](std::os::fd::AsFd)
//! where it works on a descriptor and proving its `unsafe` block sound beside it. Nothing else
//! in the crate calls `libc`.

mod file;
mod limits;
mod read;
mod socket;

pub(crate) use file::lock_exclusive;
pub use limits::raise_open_file_limit;
pub(crate) use read::read_spare;
pub(crate) use socket::{is_out_of_fds, listen};
