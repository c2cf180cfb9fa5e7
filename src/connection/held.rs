//! Responses held until a commit ticket is durable ([`Context::hold_until_committed`]).
//!
//! A handler that changed state the log must commit (a SET) answers with a ticket; its
//! encoded response waits in [`Held`] instead of the output, and goes out only after the
//! event loop has run the commit ([`Connection::held_ticket`], [`Connection::committed`]).
//! When the commit fails each held response is replaced by the commit's status, so no
//! write whose commit failed is acknowledged. [`Held`] also keeps the ERROR frame that ends
//! a finishing connection once everything before it is answered (see `drain.rs`).
//!
//! [`Context::hold_until_committed`]: crate::service::Context::hold_until_committed

use std::time::Instant;

use bytes::BytesMut;

use super::config::HELD_KEEP_CAPACITY;
use super::Connection;
use crate::proto::{Code, Status};
use crate::stats;

/// Encoded responses that wait for a commit, and what to answer instead if it fails; and the
/// ERROR frame that ends a connection once everything before it is answered.
#[derive(Debug, Default)]
pub(super) struct Held {
    /// The response frames, in the order they were encoded.
    pub(super) frames: BytesMut,
    /// The request id of each frame in `frames`, the status it answers with, its method's
    /// counters' slot, and when it was received (the start of its latency).
    pub(super) request_ids: Vec<(u64, Code, usize, Instant)>,
    /// The largest ticket they wait for.
    pub(super) ticket: u64,
    /// While [`Phase::Finishing`](super::Phase::Finishing): the ERROR frame to send after the last answer.
    pub(super) last: BytesMut,
}

impl Held {
    /// Records one held answer, already encoded into `frames`, for request `request_id`,
    /// answering with `code`, waiting for commit `ticket`, counted under method `slot` with
    /// its latency from `received_at`.
    pub(super) fn push(
        &mut self,
        request_id: u64,
        code: Code,
        ticket: u64,
        (slot, received_at): (usize, Instant),
    ) {
        self.request_ids.push((request_id, code, slot, received_at));
        self.ticket = self.ticket.max(ticket);
    }
}

impl Connection {
    /// The largest commit ticket a held response waits for, if any response is held
    /// ([`Context::hold_until_committed`](crate::service::Context::hold_until_committed)). The
    /// caller runs the commit, then calls [`Connection::committed`].
    pub fn held_ticket(&self) -> Option<u64> {
        self.held
            .as_ref()
            .filter(|held| !held.request_ids.is_empty())
            .map(|held| held.ticket)
    }

    /// Releases the held responses after their commit: queued as encoded on `Ok`, each
    /// replaced by a RESPONSE carrying the status on `Err` (so no write whose commit failed is
    /// acknowledged). The caller must have committed at least [`Connection::held_ticket`].
    pub fn committed(&mut self, result: Result<(), &Status>, now: Instant) {
        let answering = self.answering();
        let Some(held) = self.held.as_mut() else {
            return;
        };
        if held.request_ids.is_empty() {
            return;
        }
        match result {
            Ok(()) if answering => {
                self.write_buf.extend_from_slice(&held.frames);
                for &(_, code, slot, received_at) in &held.request_ids {
                    self.stats.answered(slot, code);
                    self.stats.clock_answers(received_at, now);
                    stats::bump(&self.stats.frames_out, 1);
                }
            }
            Err(status) if answering => {
                for &(request_id, _, slot, received_at) in &held.request_ids {
                    self.stats.answered(slot, status.code);
                    self.stats.clock_answers(received_at, now);
                    stats::bump(&self.stats.frames_out, 1);
                    self.encoder.encode_status(
                        &mut self.write_buf,
                        request_id,
                        status.code,
                        &status.message,
                    );
                }
            }
            _ => {}
        }
        held.request_ids.clear();
        held.ticket = 0;
        if held.frames.capacity() > HELD_KEEP_CAPACITY {
            held.frames = BytesMut::new();
        } else {
            held.frames.clear();
        }
        self.last_active = now;
        self.check_finished();
        self.check_output(now);
    }
}
