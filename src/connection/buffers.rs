//! The buffers an event loop lends its connections while they have bytes to move.

use bytes::BytesMut;

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
