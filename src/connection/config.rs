//! A connection's limits: every `DEFAULT_*` value with where it comes from, and
//! [`ConnectionConfig`], which the server builder fills in.

use std::time::Duration;

use crate::proto::{DEFAULT_MAX_BODY_LEN, HEADER_LEN};

/// Bytes read from the socket per `read` call: 16 KiB (Redis reads 16 KiB per call too,
/// `PROTO_IOBUF_LEN`).
pub const READ_CHUNK: usize = 16 * 1024;

/// Reads granted to one connection per loop turn: 16, that is at most 256 KiB.
pub const MAX_READS_PER_TURN: u32 = 16;

/// Longest timeout honoured: 100 years. Longer ones (`Duration::MAX` for "never") are
/// clamped to it, so that no deadline overflows an `Instant`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Default time a connection lingers after sending ERROR or GOAWAY: 2 seconds.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(2);

/// Most input discarded while lingering before the connection is closed anyway: 16 MiB.
pub const LINGER_MAX_DISCARD: usize = 16 * 1024 * 1024;

/// Default time from a frame's first byte to its last: 30 s. A peer that trickles a frame
/// (slowloris) is sent ERROR DEADLINE_EXCEEDED and closed.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// Default time a connection may sit with no frame arriving and nothing in progress: 300 s
/// (the keep-alive interval Redis recommends, `tcp-keepalive 300`). It is then sent GOAWAY
/// and closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Default time queued output may make no progress (the peer does not read): 30 s.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Default output high-water mark: 1 MiB queued stops reading the connection.
pub const DEFAULT_OUTPUT_HIGH_WATER: usize = 1024 * 1024;

/// Default output hard cap: 32 MiB queued closes the connection (the hard limit Redis sets
/// for its pub/sub clients, `client-output-buffer-limit pubsub 32mb`).
pub const DEFAULT_OUTPUT_HARD_CAP: usize = 32 * 1024 * 1024;

/// Default most blocking requests in flight per connection: 100 (the least
/// `SETTINGS_MAX_CONCURRENT_STREAMS` HTTP/2 recommends, RFC 9113 §6.5.2).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 100;

/// Default frames handled per connection per loop turn: 64.
pub const DEFAULT_MAX_FRAMES_PER_TURN: u32 = 64;

/// Default most frames in a row that ask for nothing (PONG) before the connection is closed
/// as a flood: 100.
pub const DEFAULT_MAX_EMPTY_FRAMES: u32 = 100;

/// Settings of one connection; the server builder fills them in. Every field has a
/// `DEFAULT_*` constant in this module.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionConfig {
    /// Largest body accepted and sent, in bytes; default [`DEFAULT_MAX_BODY_LEN`] (4 MiB).
    pub max_body_len: u32,
    /// How long to linger after ERROR or GOAWAY; default [`DEFAULT_LINGER`] (2 s).
    pub linger: Duration,
    /// Time from a frame's first byte to its last; default [`DEFAULT_FRAME_TIMEOUT`] (30 s).
    pub frame_timeout: Duration,
    /// Time with no frame and nothing in progress; default [`DEFAULT_IDLE_TIMEOUT`] (300 s).
    pub idle_timeout: Duration,
    /// Time queued output may make no progress; default [`DEFAULT_WRITE_TIMEOUT`] (30 s).
    pub write_timeout: Duration,
    /// Queued output above which the connection is not read, in bytes; default
    /// [`DEFAULT_OUTPUT_HIGH_WATER`] (1 MiB).
    pub output_high_water: usize,
    /// Queued output above which the connection is closed, in bytes; default
    /// [`DEFAULT_OUTPUT_HARD_CAP`] (32 MiB).
    pub output_hard_cap: usize,
    /// Most blocking requests in flight; default [`DEFAULT_MAX_IN_FLIGHT`] (100).
    pub max_in_flight: usize,
    /// Frames handled per loop turn; default [`DEFAULT_MAX_FRAMES_PER_TURN`] (64).
    pub max_frames_per_turn: u32,
    /// Frames in a row that ask for nothing before closing; default
    /// [`DEFAULT_MAX_EMPTY_FRAMES`] (100).
    pub max_empty_frames: u32,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            max_body_len: DEFAULT_MAX_BODY_LEN,
            linger: DEFAULT_LINGER,
            frame_timeout: DEFAULT_FRAME_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            output_high_water: DEFAULT_OUTPUT_HIGH_WATER,
            output_hard_cap: DEFAULT_OUTPUT_HARD_CAP,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_frames_per_turn: DEFAULT_MAX_FRAMES_PER_TURN,
            max_empty_frames: DEFAULT_MAX_EMPTY_FRAMES,
        }
    }
}

impl ConnectionConfig {
    /// Most bytes the read buffer holds: one whole frame (the 36-byte header and
    /// `max_body_len`) plus one [`READ_CHUNK`]. The connection keeps this bound: it reads only
    /// while no complete frame waits, and at most what the incomplete one lacks plus
    /// [`READ_CHUNK`] per read. The `input_peak` counter shows the most any connection held.
    pub fn max_buffered_input(&self) -> usize {
        HEADER_LEN + self.max_body_len as usize + READ_CHUNK
    }
}
