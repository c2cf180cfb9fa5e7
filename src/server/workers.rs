//! The worker pool that runs blocking handlers off the event loop.
//!
//! The loop hands each [`BlockingCall`] to [`WorkerPool::submit`]; a bounded queue holds it
//! until one of the worker threads is free. The worker runs the handler (or, if the call's
//! deadline passed while it waited, does not), pushes the result onto the completion list and
//! wakes the loop through its `Waker`. The loop then takes the results with
//! [`WorkerPool::take_completed`] and gives each to its connection.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Instant;

use bytes::BytesMut;
use mio::Waker;

use crate::proto::Status;
use crate::service::{BlockingCall, Failure};
use crate::stats::{self, Stats};

/// Default worker threads: 16.
pub const DEFAULT_WORKERS: usize = 16;

/// Default calls that may wait for a worker: 1,024.
pub const DEFAULT_WORKER_QUEUE: usize = 1024;

/// Which connection a call came from: its slab key and its unique id (keys are reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) key: usize,
    pub(crate) id: u64,
}

struct Job {
    origin: Origin,
    call: BlockingCall,
}

/// A finished call, for the loop to give to its connection.
#[derive(Debug)]
pub(crate) struct Completed {
    pub(crate) origin: Origin,
    pub(crate) request_id: u64,
    pub(crate) result: Result<BytesMut, Failure>,
}

#[derive(Debug)]
struct Shared {
    completed: Mutex<Vec<Completed>>,
    waker: Arc<Waker>,
    stats: Arc<Stats>,
}

/// A fixed set of worker threads fed by a bounded queue.
#[derive(Debug)]
pub(crate) struct WorkerPool {
    queue: SyncSender<Job>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("call", &self.call).finish()
    }
}

impl WorkerPool {
    /// Starts `workers` threads (at least one) named `courier-worker-N`, with room for
    /// `queue` waiting calls.
    pub(crate) fn start(
        workers: usize,
        queue: usize,
        waker: Arc<Waker>,
        stats: Arc<Stats>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let shared = Arc::new(Shared {
            completed: Mutex::new(Vec::new()),
            waker,
            stats,
        });
        for n in 0..workers.max(1) {
            let rx = Arc::clone(&rx);
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("courier-worker-{n}"))
                .spawn(move || work(&rx, &shared))?;
        }
        Ok(WorkerPool { queue: tx, shared })
    }

    /// Queues `call`; when the queue is full, gives it back so that the caller answers it
    /// UNAVAILABLE.
    pub(crate) fn submit(&self, origin: Origin, call: BlockingCall) -> Result<(), BlockingCall> {
        match self.queue.try_send(Job { origin, call }) {
            Ok(()) => {
                stats::shift(&self.shared.stats.blocking_in_flight, 1);
                Ok(())
            }
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                stats::inc(&self.shared.stats.blocking_rejected);
                Err(job.call)
            }
        }
    }

    /// Moves every finished call into `out`.
    pub(crate) fn take_completed(&self, out: &mut Vec<Completed>) {
        let mut completed = self
            .shared
            .completed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        out.append(&mut completed);
    }
}

/// A worker's life: take a call, run it unless it is already late, hand back the result.
/// Ends when the pool (the sending side) is dropped.
fn work(rx: &Mutex<Receiver<Job>>, shared: &Shared) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let request_id = job.call.request_id();
        let result = match job.call.deadline() {
            Some(deadline) if deadline <= Instant::now() => {
                stats::inc(&shared.stats.blocking_expired);
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
        shared
            .stats
            .blocking_in_flight
            .fetch_sub(1, Ordering::Relaxed);
        let was_empty = {
            let mut completed = shared
                .completed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            completed.push(Completed {
                origin: job.origin,
                request_id,
                result,
            });
            completed.len() == 1
        };
        // One wake-up per batch: the loop takes every completion when it wakes.
        if was_empty {
            if let Err(err) = shared.waker.wake() {
                log::error!("cannot wake the server loop: {err}");
            }
        }
    }
}
