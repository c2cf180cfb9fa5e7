//! The buffers an event loop lends its connections while they have bytes to move: the
//! shared [`BufferPool`], and a connection's side of the lending
//! ([`Connection::lend_buffers`], [`Connection::return_buffers`]).

use bytes::BytesMut;

use super::Connection;

/// A free list of empty buffers that an event loop shares among its connections, so that an
/// idle connection holds no buffer and a busy one allocates none in steady state.
///
/// Holds at most [`BufferPool::MAX_BUFFERS`] buffers of at most [`BufferPool::MAX_CAPACITY`]
/// bytes each; larger ones are freed instead.
#[derive(Debug, Default)]
pub struct BufferPool {
    free: Vec<BytesMut>,
}

impl BufferPool {
    /// Most buffers kept: 64.
    pub const MAX_BUFFERS: usize = 64;
    /// Largest buffer kept, in bytes: 64 KiB.
    pub const MAX_CAPACITY: usize = 64 * 1024;

    /// An empty pool.
    pub fn new() -> Self {
        BufferPool::default()
    }

    /// An empty buffer: a kept one, or a new one that has allocated nothing yet.
    pub fn take(&mut self) -> BytesMut {
        self.free.pop().unwrap_or_default()
    }

    /// Gives back an empty buffer.
    pub fn give(&mut self, mut buf: BytesMut) {
        if buf.capacity() > 0
            && buf.capacity() <= Self::MAX_CAPACITY
            && self.free.len() < Self::MAX_BUFFERS
        {
            buf.clear();
            self.free.push(buf);
        }
    }

    /// Buffers kept.
    pub fn len(&self) -> usize {
        self.free.len()
    }

    /// Whether no buffer is kept.
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }
}

impl Connection {
    /// Lends the connection empty buffers from `pool` if it holds none. Optional: without it
    /// the connection allocates its own.
    pub fn lend_buffers(&mut self, pool: &mut BufferPool) {
        if self.read_buf.capacity() == 0 && self.wants_read() {
            self.read_buf = pool.take();
        }
        if self.write_buf.capacity() == 0 {
            self.write_buf = pool.take();
        }
    }

    /// Gives the connection's empty buffers back to `pool`, so that an idle connection holds
    /// none.
    pub fn return_buffers(&mut self, pool: &mut BufferPool) {
        for buf in [&mut self.read_buf, &mut self.write_buf] {
            if buf.is_empty() {
                // A buffer whose bytes were all written or split off reports only the room
                // after them; take the whole allocation back (unless a split-off frame still
                // holds part of it), so that the pool keeps it instead of dropping it. When
                // that fails the room left is still worth keeping, so the result is not needed.
                let _ = buf.try_reclaim(1);
                if buf.capacity() > 0 {
                    pool.give(std::mem::take(buf));
                }
            }
        }
    }
}
