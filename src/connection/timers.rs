//! A connection's clocks, all driven by the `now` its caller passes in: the frame timeout
//! (a frame trickled in too slowly), the idle timeout, the write-stall timeout (and the
//! output hard cap checked with it), the linger deadline ([`Connection::timeout`],
//! [`Connection::handle_timeout`]), and each request's deadline, counted from when its input
//! arrived (the Deadlines section of the [module docs](super)).

use std::time::{Duration, Instant};

use super::{CloseReason, Connection, Phase};
use crate::proto::{Code, FrameKind, Status};
use crate::service::Failure;
use crate::stats;

impl Connection {
    /// When [`Connection::handle_timeout`] should next be called, if ever: the earliest of the
    /// linger deadline, the write timeout (output queued), the frame timeout (a frame
    /// incomplete) and the idle timeout (nothing in progress).
    pub fn timeout(&self) -> Option<Instant> {
        let linger = match self.phase {
            Phase::Lingering { until, .. } => Some(until),
            Phase::Closed => return None,
            _ => None,
        };
        let write = (!self.write_buf.is_empty())
            .then(|| self.write_progress_at + self.config.write_timeout);
        let frame = self
            .frame_started
            .filter(|_| self.phase == Phase::Open && self.awaiting_bytes)
            .map(|t| t + self.config.frame_timeout);
        let idle = self
            .is_idle()
            .then(|| self.last_active + self.config.idle_timeout);
        [linger, write, frame, idle].into_iter().flatten().min()
    }

    /// Advances timers to `now`: closes a lingering connection past its deadline or one whose
    /// output stalled past the write timeout; sends ERROR DEADLINE_EXCEEDED to one whose frame
    /// is late, and GOAWAY to one idle too long.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Phase::Lingering { until, .. } = self.phase {
            if now >= until {
                self.phase = Phase::Closed;
            }
        }
        if self.phase == Phase::Closed {
            return;
        }
        if !self.write_buf.is_empty() && now >= self.write_progress_at + self.config.write_timeout {
            log::debug!(
                "{} bytes of output made no progress in {:?}",
                self.write_buf.len(),
                self.config.write_timeout
            );
            self.close_now(CloseReason::WriteTimeout);
            return;
        }
        if self.phase != Phase::Open {
            return;
        }
        // Only while the decoder waits for the peer's bytes: a frame that sits whole in the
        // buffer while a limit holds decoding back is not late.
        if let Some(started) = self.frame_started.filter(|_| self.awaiting_bytes) {
            if now >= started + self.config.frame_timeout {
                let message = format!(
                    "frame not complete within {} ms of its first byte",
                    self.config.frame_timeout.as_millis()
                );
                // Request id 0: the late frame never arrived whole (Section 7.1).
                let error = (0, Code::DEADLINE_EXCEEDED, message.as_str());
                self.end(CloseReason::FrameTimeout, Some(error), now);
                return;
            }
        }
        if self.is_idle() && now >= self.last_active + self.config.idle_timeout {
            let message = format!(
                "idle for {} s",
                self.config.idle_timeout.as_secs_f64().round()
            );
            self.queue_simple(
                FrameKind::GoAway,
                self.last_request_id,
                Code::UNAVAILABLE,
                &message,
            );
            // Idle: nothing is pending, so nothing is left to answer.
            self.stop_reading(CloseReason::IdleTimeout);
            self.check_output(now);
        }
    }

    pub(super) fn is_idle(&self) -> bool {
        self.phase == Phase::Open
            && self.read_buf.is_empty()
            && self.write_buf.is_empty()
            && self.nothing_pending()
    }

    /// Starts the write timer when output appears, and closes a connection over the hard cap.
    pub(super) fn check_output(&mut self, now: Instant) {
        let queued = self.write_buf.len();
        if queued == 0 {
            return;
        }
        self.stats.output_queued(queued);
        if queued > self.config.output_hard_cap && self.phase != Phase::Closed {
            log::debug!("{queued} bytes of output queued, over the hard cap");
            self.close_now(CloseReason::OutputCap);
        }
        if !self.write_timer_armed && !self.write_buf.is_empty() {
            // Output that appeared since the buffer was last empty: its timer starts now.
            self.write_timer_armed = true;
            self.write_progress_at = now;
        }
    }

    /// When a request received with `deadline_ms` (0: none) must be answered by: counted from
    /// when the input that carried it arrived (`proto-spec/PROTOCOL.md` Section 12).
    pub(super) fn request_deadline(&self, deadline_ms: u32) -> Option<Instant> {
        (deadline_ms != 0).then(|| self.input_at + Duration::from_millis(u64::from(deadline_ms)))
    }

    /// If `deadline` (from `deadline_ms`) passed by `now`, answers request `request_id`
    /// DEADLINE_EXCEEDED without running it, counts it in `deadline_expired`, and returns
    /// `true`.
    pub(super) fn refuse_expired(
        &mut self,
        (request_id, slot): (u64, usize),
        deadline_ms: u32,
        deadline: Option<Instant>,
        now: Instant,
    ) -> bool {
        if deadline.is_none_or(|deadline| deadline > now) {
            return false;
        }
        stats::inc(&self.stats.deadline_expired);
        let status = Status::deadline_exceeded(format!(
            "deadline of {deadline_ms} ms passed before the request was dispatched; not \
             processed"
        ));
        self.answer_failure(request_id, &Failure::status(status), slot);
        true
    }
}
