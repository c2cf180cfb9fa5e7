//! The one place a socket is read into a buffer's spare capacity, for the server loop and the
//! blocking client alike: no zero-filling of the room first (safe `Read` needs an initialised
//! slice, which costs a `memset` of every byte before the kernel overwrites it).

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use bytes::BytesMut;

/// Reads once from `fd` into the spare capacity of `buf` (reserve first), at most `limit`
/// bytes, and appends what was read. Returns the bytes read, 0 at end of stream.
///
/// # Errors
/// The `read(2)` error: `WouldBlock` for a non-blocking socket with nothing to read, or a
/// blocking one whose read timeout passed; `Interrupted`; a socket error.
pub(crate) fn read_spare(fd: impl AsFd, buf: &mut BytesMut, limit: usize) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let room = spare.len().min(limit);
    // No room would read 0 bytes, which callers take for the end of stream.
    debug_assert!(
        room > 0,
        "read_spare needs spare capacity and a limit above 0"
    );
    // SAFETY: `read(2)` writes at most `room` bytes, starting at the pointer, into memory we
    // own: the spare capacity of `buf`, at least `room` bytes long and borrowed mutably for
    // the call. Writing bytes into uninitialised `MaybeUninit<u8>` memory is sound. The
    // descriptor is `fd`'s own, open for as long as `fd` is borrowed.
    let read = unsafe { libc::read(fd.as_fd().as_raw_fd(), spare.as_mut_ptr().cast(), room) };
    let Ok(n) = usize::try_from(read) else {
        return Err(io::Error::last_os_error());
    };
    // `read` returns how many bytes it wrote: never more than `room`.
    let n = n.min(room);
    // SAFETY: the first `n` bytes of the spare capacity were initialised by `read` above, and
    // `len + n` is within the capacity, so they may become part of the buffer.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// [`read_spare`] that never waits, whatever the socket's mode: `recv(2)` with
/// `MSG_DONTWAIT` (one syscall, where switching the socket to non-blocking and back costs two
/// more). For sockets only.
///
/// # Errors
/// `WouldBlock` when nothing is there to read; otherwise as [`read_spare`].
pub(crate) fn read_spare_nowait(
    fd: impl AsFd,
    buf: &mut BytesMut,
    limit: usize,
) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let room = spare.len().min(limit);
    debug_assert!(
        room > 0,
        "read_spare_nowait needs spare capacity and a limit above 0"
    );
    // SAFETY: as in `read_spare`: `recv(2)` writes at most `room` bytes, starting at the
    // pointer, into the spare capacity of `buf`, at least `room` bytes long and borrowed
    // mutably for the call; the descriptor is `fd`'s own, open while `fd` is borrowed.
    let read = unsafe {
        libc::recv(
            fd.as_fd().as_raw_fd(),
            spare.as_mut_ptr().cast(),
            room,
            libc::MSG_DONTWAIT,
        )
    };
    let Ok(n) = usize::try_from(read) else {
        return Err(io::Error::last_os_error());
    };
    let n = n.min(room);
    // SAFETY: the first `n` bytes of the spare capacity were initialised by `recv` above, and
    // `len + n` is within the capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn appends_what_was_read_and_reports_end_of_stream() {
        let (mut tx, rx) = UnixStream::pair().expect("socket pair");
        tx.write_all(b"hello").expect("write");
        let mut buf = BytesMut::from(&b"> "[..]);
        buf.reserve(64);
        assert_eq!(read_spare(&rx, &mut buf, usize::MAX).expect("read"), 5);
        assert_eq!(&buf[..], b"> hello");
        drop(tx);
        buf.reserve(64);
        assert_eq!(read_spare(&rx, &mut buf, usize::MAX).expect("read"), 0);
        assert_eq!(&buf[..], b"> hello");
    }

    #[test]
    fn a_read_never_passes_the_room_it_was_given() {
        let (mut tx, rx) = UnixStream::pair().expect("socket pair");
        tx.write_all(&[7; 100]).expect("write");
        let mut buf = BytesMut::with_capacity(10);
        let room = buf.capacity();
        let n = read_spare(&rx, &mut buf, usize::MAX).expect("read");
        assert_eq!(n, room);
        assert_eq!(&buf[..], &vec![7u8; room][..]);
    }

    #[test]
    fn a_read_takes_no_more_than_its_limit() {
        let (mut tx, rx) = UnixStream::pair().expect("socket pair");
        tx.write_all(&[9; 100]).expect("write");
        let mut buf = BytesMut::with_capacity(256);
        assert_eq!(read_spare(&rx, &mut buf, 10).expect("read"), 10);
        assert_eq!(&buf[..], &[9u8; 10][..]);
        assert_eq!(read_spare(&rx, &mut buf, 1000).expect("read"), 90);
    }

    #[test]
    fn nothing_to_read_on_a_non_blocking_socket_is_would_block() {
        let (_tx, rx) = UnixStream::pair().expect("socket pair");
        rx.set_nonblocking(true).expect("non-blocking");
        let mut buf = BytesMut::with_capacity(16);
        let err = read_spare(&rx, &mut buf, usize::MAX).expect_err("nothing to read");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_nowait_read_of_a_blocking_socket_does_not_wait() {
        let (mut tx, rx) = UnixStream::pair().expect("socket pair");
        let mut buf = BytesMut::with_capacity(16);
        let err = read_spare_nowait(&rx, &mut buf, usize::MAX).expect_err("nothing to read");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        tx.write_all(b"abc").expect("write");
        assert_eq!(
            read_spare_nowait(&rx, &mut buf, usize::MAX).expect("read"),
            3
        );
        assert_eq!(&buf[..], b"abc");
        drop(tx);
        assert_eq!(
            read_spare_nowait(&rx, &mut buf, usize::MAX).expect("eof"),
            0
        );
    }
}
