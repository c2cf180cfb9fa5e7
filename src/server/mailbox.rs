//! What other threads hand to an event loop: newly accepted connections (from the loop that
//! accepts), finished blocking calls (from the worker pool), and the waker that tells it.
//!
//! Each loop owns one [`Mailbox`]; senders push under a short lock and wake the loop only
//! when the list was empty, so a burst costs one wake-up. The loop empties both lists when
//! its waker fires.
//!
//! Dependency: this module uses no other server module; the worker pool
//! ([`workers`](super::workers)) uses it, to deliver each [`Completed`] call to its loop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::BytesMut;
use mio::net::TcpStream;
use mio::Waker;

use crate::service::{CallId, Failure};
use crate::stats::Stats;

/// Which connection a call came from: its loop, its slab key in that loop and its unique id
/// (keys are reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) event_loop: usize,
    pub(crate) key: usize,
    pub(crate) id: u64,
}

/// A finished call, for the loop to give to its connection.
#[derive(Debug)]
pub(crate) struct Completed {
    pub(crate) origin: Origin,
    pub(crate) call: CallId,
    pub(crate) result: Result<BytesMut, Failure>,
}

/// A connection accepted by one loop for another to serve.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
}

/// One loop's inbox. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Mailbox {
    waker: Waker,
    /// The loop's counters, also written by worker threads for the loop's calls.
    pub(crate) stats: Arc<Stats>,
    completed: Mutex<Vec<Completed>>,
    accepted: Mutex<Inbox>,
}

/// Connections handed over, and whether the loop has stopped taking them.
#[derive(Debug, Default)]
struct Inbox {
    list: Vec<Accepted>,
    closed: bool,
}

fn lock<T>(list: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section is one push or one swap, so a poisoned list is still whole.
    list.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Mailbox {
    pub(crate) fn new(waker: Waker, stats: Arc<Stats>) -> Self {
        Mailbox {
            waker,
            stats,
            completed: Mutex::new(Vec::new()),
            accepted: Mutex::new(Inbox::default()),
        }
    }

    /// Wakes the loop (to stop, or to look at its lists).
    pub(crate) fn wake(&self) {
        if let Err(err) = self.waker.wake() {
            log::error!("cannot wake a server loop: {err}");
        }
    }

    /// Hands the loop a finished blocking call; wakes it if the list was empty.
    pub(crate) fn push_completed(&self, done: Completed) {
        let was_empty = {
            let mut list = lock(&self.completed);
            list.push(done);
            list.len() == 1
        };
        if was_empty {
            self.wake();
        }
    }

    /// Hands the loop accepted connections (emptying `batch`); wakes it if its list was
    /// empty. Once the loop has stopped ([`Mailbox::close`]) they are closed at once instead
    /// and taken off `open`, the server's count of open connections.
    pub(crate) fn push_accepted(&self, batch: &mut Vec<Accepted>, open: &AtomicUsize) {
        if batch.is_empty() {
            return;
        }
        let was_empty = {
            let mut inbox = lock(&self.accepted);
            if inbox.closed {
                open.fetch_sub(batch.len(), Ordering::Relaxed);
                batch.clear();
                return;
            }
            let was_empty = inbox.list.is_empty();
            inbox.list.append(batch);
            was_empty
        };
        if was_empty {
            self.wake();
        }
    }

    /// Moves every finished call into `out`.
    pub(crate) fn take_completed(&self, out: &mut Vec<Completed>) {
        out.append(&mut lock(&self.completed));
    }

    /// Moves every connection handed over into `out`.
    pub(crate) fn take_accepted(&self, out: &mut Vec<Accepted>) {
        out.append(&mut lock(&self.accepted).list);
    }

    /// The loop stops: moves the connections handed over into `out`, and refuses any more.
    pub(crate) fn close(&self, out: &mut Vec<Accepted>) {
        let mut inbox = lock(&self.accepted);
        inbox.closed = true;
        out.append(&mut inbox.list);
    }
}
