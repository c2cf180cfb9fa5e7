//! The worker pool that runs blocking handlers off the event loop.
//!
//! One pool serves every event loop of a server. A loop hands each [`BlockingCall`] to
//! [`WorkerPool::submit`]; a bounded queue holds it until one of the worker threads is free.
//! The worker runs the handler (or, if the call's deadline passed while it waited, does not)
//! and pushes the result into the originating loop's [`Mailbox`], which wakes that loop; the
//! loop gives it to its connection.
//!
//! Dependency: this module uses [`mailbox`](super::mailbox) (the [`Mailbox`], and the
//! [`Origin`] and [`Completed`] it carries); the mailbox knows nothing of the pool.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Instant;

use bytes::BytesMut;

use super::mailbox::{Completed, Mailbox, Origin};
use crate::proto::Status;
use crate::service::{BlockingCall, Failure};
use crate::stats;

/// Default worker threads: 16.
pub const DEFAULT_WORKERS: usize = 16;

/// Default calls that may wait for a worker: 1,024.
pub const DEFAULT_WORKER_QUEUE: usize = 1024;

struct Job {
    origin: Origin,
    call: BlockingCall,
}

/// A fixed set of worker threads fed by a bounded queue.
#[derive(Debug)]
pub(crate) struct WorkerPool {
    queue: SyncSender<Job>,
    loops: Arc<[Arc<Mailbox>]>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("call", &self.call).finish()
    }
}

impl WorkerPool {
    /// Starts `workers` threads (at least one) named `courier-worker-N`, with room for
    /// `queue` waiting calls, delivering results to `loops` (indexed by
    /// [`Origin::event_loop`]).
    pub(crate) fn start(
        workers: usize,
        queue: usize,
        loops: Arc<[Arc<Mailbox>]>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..workers.max(1) {
            let rx = Arc::clone(&rx);
            let loops = Arc::clone(&loops);
            thread::Builder::new()
                .name(format!("courier-worker-{n}"))
                .spawn(move || work(&rx, &loops))?;
        }
        Ok(WorkerPool { queue: tx, loops })
    }

    /// Queues `call`; when the queue is full, gives it back so that the caller answers it
    /// UNAVAILABLE. The call is moved back whole, not boxed: a refusal is rare, and a box
    /// would cost every blocking call an allocation.
    #[allow(clippy::result_large_err)]
    pub(crate) fn submit(&self, origin: Origin, call: BlockingCall) -> Result<(), BlockingCall> {
        let stats = &self.loops[origin.event_loop].stats;
        match self.queue.try_send(Job { origin, call }) {
            Ok(()) => {
                stats::shift(&stats.blocking_in_flight, 1);
                Ok(())
            }
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                stats::inc(&stats.blocking_rejected);
                Err(job.call)
            }
        }
    }
}

/// A worker's life: take a call, run it unless it is already late, hand back the result.
/// Ends when the pool (the sending side) is dropped.
fn work(rx: &Mutex<Receiver<Job>>, loops: &[Arc<Mailbox>]) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let mailbox = &loops[job.origin.event_loop];
        let call = job.call.id();
        let result = match job.call.deadline() {
            Some(deadline) if deadline <= Instant::now() => {
                stats::inc(&mailbox.stats.blocking_expired);
                stats::inc(&mailbox.stats.deadline_expired);
                Err(Failure {
                    status: Status::deadline_exceeded("deadline passed before the request ran"),
                    panicked: false,
                })
            }
            _ => {
                let mut out = BytesMut::new();
                job.call.run(&mut out).map(|()| out)
            }
        };
        stats::shift(&mailbox.stats.blocking_in_flight, -1);
        // One wake-up per batch: the loop takes every completion when it wakes.
        mailbox.push_completed(Completed {
            origin: job.origin,
            call,
            result,
        });
    }
}
