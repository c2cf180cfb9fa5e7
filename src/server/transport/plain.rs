//! Plain TCP: bytes go to and from the socket as they are.

use std::io;

use bytes::BytesMut;
use mio::net::TcpStream;

/// Reads at most `limit` bytes from `stream` into the spare capacity of `buf`
/// ([`crate::sys::read_spare`]), and sets `drained` when the socket has nothing more:
/// `WouldBlock`, end of stream, or (if `short_read_drains`) fewer bytes than there was room
/// for (the kernel hands over everything it holds, so a short read emptied it).
pub(super) fn read(
    stream: &TcpStream,
    buf: &mut BytesMut,
    limit: usize,
    short_read_drains: bool,
    drained: &mut bool,
) -> io::Result<usize> {
    let room = (buf.capacity() - buf.len()).min(limit);
    match crate::sys::read_spare(stream, buf, limit) {
        Ok(n) => {
            if n == 0 || (short_read_drains && n < room) {
                *drained = true;
            }
            Ok(n)
        }
        Err(err) => {
            if err.kind() == io::ErrorKind::WouldBlock {
                *drained = true;
            }
            Err(err)
        }
    }
}
