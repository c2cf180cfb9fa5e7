//! The calls a connection has sent and not yet handed back: each waits for its answer until
//! its deadline, then holds its outcome until the driver takes it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use crate::client::ClientError;
use crate::proto::Response;

/// Stale deadline entries allowed beyond twice the waiting calls before the heap is rebuilt.
const STALE_FLOOR: usize = 64;

/// What a call waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A REQUEST: a RESPONSE with the same request id.
    Request,
    /// A PING: the PONG that echoes its id.
    Ping,
}

/// How a call ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// The server's RESPONSE (any status).
    Response(Response),
    /// The PONG arrived this long after the PING was queued.
    Pong(Duration),
    /// No answer: the error says why.
    Failed(ClientError),
}

#[derive(Debug)]
enum Entry {
    Waiting {
        kind: Kind,
        sent: Instant,
        deadline: Instant,
    },
    Done(Outcome),
}

/// The call table: a map by request id, and the deadlines in a min-heap (an entry there whose
/// call has ended or been abandoned is skipped when it comes up).
#[derive(Debug, Default)]
pub(super) struct Calls {
    entries: HashMap<u64, Entry>,
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    /// How many entries are `Waiting`.
    waiting: usize,
    /// Ids whose outcome became ready and that the driver has not yet been told of.
    completed: Vec<u64>,
}

impl Calls {
    pub(super) fn insert(&mut self, id: u64, kind: Kind, sent: Instant, deadline: Instant) {
        let entry = Entry::Waiting {
            kind,
            sent,
            deadline,
        };
        if let Some(old) = self.entries.insert(id, entry) {
            // Ids increase and wrap only after 2^64 - 1 calls; an id still held is replaced.
            if matches!(old, Entry::Waiting { .. }) {
                self.waiting -= 1;
            }
        }
        self.waiting += 1;
        self.deadlines.push(Reverse((deadline, id)));
        // Calls answered before their deadline leave their heap entries behind; once those
        // outnumber the waiting calls (and a floor), the heap keeps the waiting calls'
        // entries alone, so it stays within twice their number: O(1) amortised per call.
        if self.deadlines.len() > 2 * self.waiting + STALE_FLOOR {
            let entries = &self.entries;
            self.deadlines.retain(|Reverse((deadline, id))| {
                matches!(entries.get(id), Some(Entry::Waiting { deadline: d, .. }) if d == deadline)
            });
        }
    }

    /// The kind and send time of the call `id` while it waits.
    pub(super) fn waiting(&self, id: u64) -> Option<(Kind, Instant)> {
        match self.entries.get(&id)? {
            Entry::Waiting { kind, sent, .. } => Some((*kind, *sent)),
            Entry::Done(_) => None,
        }
    }

    /// Ends the waiting call `id` with `outcome`; `false` when no call `id` waits (unknown,
    /// abandoned or already ended: the outcome is dropped).
    pub(super) fn complete(&mut self, id: u64, outcome: Outcome) -> bool {
        match self.entries.get_mut(&id) {
            Some(entry @ Entry::Waiting { .. }) => {
                *entry = Entry::Done(outcome);
                self.waiting -= 1;
                self.completed.push(id);
                true
            }
            _ => false,
        }
    }

    /// Ends every waiting call for which `select(id, kind)` holds, each with `outcome()`.
    pub(super) fn complete_all(
        &mut self,
        mut select: impl FnMut(u64, Kind) -> bool,
        mut outcome: impl FnMut() -> ClientError,
    ) {
        for (&id, entry) in &mut self.entries {
            if let Entry::Waiting { kind, .. } = entry {
                if select(id, *kind) {
                    *entry = Entry::Done(Outcome::Failed(outcome()));
                    self.waiting -= 1;
                    self.completed.push(id);
                }
            }
        }
    }

    /// Takes the outcome of call `id` if it has ended (the entry is gone after).
    pub(super) fn take(&mut self, id: u64) -> Option<Outcome> {
        match self.entries.get(&id)? {
            Entry::Done(_) => match self.entries.remove(&id) {
                Some(Entry::Done(outcome)) => Some(outcome),
                _ => None,
            },
            Entry::Waiting { .. } => None,
        }
    }

    /// Forgets call `id`, ended or not; `true` if it was known.
    pub(super) fn remove(&mut self, id: u64) -> bool {
        match self.entries.remove(&id) {
            Some(Entry::Waiting { .. }) => {
                self.waiting -= 1;
                true
            }
            Some(Entry::Done(_)) => true,
            None => false,
        }
    }

    pub(super) fn contains(&self, id: u64) -> bool {
        self.entries.contains_key(&id)
    }

    pub(super) fn deadline(&self, id: u64) -> Option<Instant> {
        match self.entries.get(&id)? {
            Entry::Waiting { deadline, .. } => Some(*deadline),
            Entry::Done(_) => None,
        }
    }

    pub(super) fn waiting_count(&self) -> usize {
        self.waiting
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// How many entries the deadline heap holds, stale ones included.
    #[cfg(test)]
    pub(super) fn deadline_entries(&self) -> usize {
        self.deadlines.len()
    }

    /// The earliest deadline of a waiting call. Drops the heap's stale entries on the way.
    pub(super) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((deadline, id))) = self.deadlines.peek() {
            if self.deadline(id) == Some(deadline) {
                return Some(deadline);
            }
            self.deadlines.pop();
        }
        None
    }

    /// Ends every waiting call whose deadline is at or before `now` with
    /// [`ClientError::Timeout`].
    pub(super) fn expire(&mut self, now: Instant) {
        while let Some(deadline) = self.next_deadline() {
            if deadline > now {
                break;
            }
            if let Some(Reverse((_, id))) = self.deadlines.pop() {
                self.complete(id, Outcome::Failed(ClientError::Timeout));
            }
        }
    }

    /// Every ended call's id and outcome, removed from the table.
    pub(super) fn drain_done(&mut self) -> Vec<(u64, Outcome)> {
        let ids: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, entry)| matches!(entry, Entry::Done(_)))
            .map(|(&id, _)| id)
            .collect();
        ids.into_iter()
            .filter_map(|id| match self.entries.remove(&id) {
                Some(Entry::Done(outcome)) => Some((id, outcome)),
                _ => None,
            })
            .collect()
    }

    pub(super) fn completed(&mut self) -> std::vec::Drain<'_, u64> {
        self.completed.drain(..)
    }
}
