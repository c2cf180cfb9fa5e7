//! Every limit of a connection in one place: the fixed ones, each `DEFAULT_*` value of the
//! settable ones (with its unit and, where there is one, where it comes from), and
//! [`ConnectionConfig`], which holds the settable ones. The server's builder keeps a
//! [`ConnectionConfig`] and its setters write into it, so these defaults are the server's.

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

/// Most input discarded while lingering before the connection is closed anyway: 16 MiB.
pub const LINGER_MAX_DISCARD: usize = 16 * 1024 * 1024;

/// Largest frame body a connection without an identity may send while the server requires
/// authentication: 16,384 bytes (Redis's limit on unauthenticated input).
pub const PRE_AUTH_MAX_BODY: u32 = 16 * 1024;

/// Failed AUTHs on one connection before it is closed: 3.
pub const MAX_AUTH_FAILURES: u8 = 3;

/// Held responses above this many bytes give their buffer back once sent: 64 KiB.
pub(super) const HELD_KEEP_CAPACITY: usize = 64 * 1024;

/// Default time a connection lingers after sending ERROR or GOAWAY: 2 seconds.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(2);

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

/// Settings of one connection. Every field has a `DEFAULT_*` constant in this module, which
/// [`ConnectionConfig::default`] uses; each counter named below is one of
/// [`Stats`](crate::stats::Stats).
///
/// Non-exhaustive: outside this crate, start from [`ConnectionConfig::default`] and change
/// fields with the `with_*` setters (or by assignment), as in
/// `ConnectionConfig::default().with_max_body_len(4096)`.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct ConnectionConfig {
    /// Largest frame body accepted and sent, in bytes, metadata included; default
    /// [`DEFAULT_MAX_BODY_LEN`] (4 MiB, gRPC's default). A larger incoming frame is answered
    /// with an ERROR frame carrying RESOURCE_EXHAUSTED and its connection is closed; a larger
    /// response is replaced by a RESOURCE_EXHAUSTED response. The read buffer can grow to
    /// about this size plus 16 KiB ([`ConnectionConfig::max_buffered_input`]).
    pub max_body_len: u32,
    /// How long a connection that was sent ERROR or GOAWAY keeps reading (and discarding)
    /// before it is closed, so that the frame is not destroyed by a reset; default
    /// [`DEFAULT_LINGER`] (2 s).
    pub linger: Duration,
    /// Time from a frame's first byte to its last; default [`DEFAULT_FRAME_TIMEOUT`] (30 s).
    /// A late frame (slowloris) gets ERROR DEADLINE_EXCEEDED and its connection is closed
    /// (`closed_frame_timeout`).
    pub frame_timeout: Duration,
    /// Time a connection may sit with no frame arriving and nothing in progress; default
    /// [`DEFAULT_IDLE_TIMEOUT`] (300 s). It is then sent GOAWAY UNAVAILABLE and closed
    /// (`closed_idle_timeout`).
    pub idle_timeout: Duration,
    /// Time queued output may make no progress; default [`DEFAULT_WRITE_TIMEOUT`] (30 s). A
    /// peer that stops reading, half-closed or not, is closed at once after it
    /// (`closed_write_timeout`).
    pub write_timeout: Duration,
    /// Queued output, in bytes, above which the connection is not read until the peer drains
    /// it; default [`DEFAULT_OUTPUT_HIGH_WATER`] (1 MiB). Each pause is counted
    /// (`output_paused`).
    pub output_high_water: usize,
    /// Queued output, in bytes, above which the connection is closed at once; default
    /// [`DEFAULT_OUTPUT_HARD_CAP`] (32 MiB) (`closed_output_cap`). Must not be below
    /// `output_high_water` (a server refuses to bind otherwise).
    pub output_hard_cap: usize,
    /// Most blocking requests running or queued; default [`DEFAULT_MAX_IN_FLIGHT`] (100).
    /// The connection is not read while that many are out (`in_flight_paused`).
    pub max_in_flight: usize,
    /// Frames handled per loop turn; default [`DEFAULT_MAX_FRAMES_PER_TURN`] (64). A
    /// connection with more waiting yields to the others and is served again next turn
    /// (`turn_yields`). At least 1.
    pub max_frames_per_turn: u32,
    /// Frames in a row that ask for nothing (PONG; the server sends no PING) before the
    /// connection is sent ERROR RESOURCE_EXHAUSTED and closed; default
    /// [`DEFAULT_MAX_EMPTY_FRAMES`] (100) (`closed_flood`).
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

/// One `with_*` setter per field, each documented as "this config with `field` set": what the
/// field means, its unit and its default are on the field.
macro_rules! with_setters {
    ($($with:ident => $field:ident: $ty:ty, $unit:literal;)*) => {
        $(
            #[doc = concat!(
                "This config with [`", stringify!($field), "`](Self::", stringify!($field),
                ") set to `", stringify!($field), "`", $unit, "."
            )]
            #[must_use]
            pub fn $with(mut self, $field: $ty) -> Self {
                self.$field = $field;
                self
            }
        )*
    };
}

impl ConnectionConfig {
    with_setters! {
        with_max_body_len => max_body_len: u32, ", in bytes";
        with_linger => linger: Duration, " (`Duration::MAX`: never)";
        with_frame_timeout => frame_timeout: Duration, " (`Duration::MAX`: never)";
        with_idle_timeout => idle_timeout: Duration, " (`Duration::MAX`: never)";
        with_write_timeout => write_timeout: Duration, " (`Duration::MAX`: never)";
        with_output_high_water => output_high_water: usize, ", in bytes";
        with_output_hard_cap => output_hard_cap: usize, ", in bytes";
        with_max_in_flight => max_in_flight: usize, ", in requests";
        with_max_empty_frames => max_empty_frames: u32, ", in frames";
    }

    /// This config with [`max_frames_per_turn`](Self::max_frames_per_turn) set to
    /// `max_frames_per_turn` frames, at least 1.
    #[must_use]
    pub fn with_max_frames_per_turn(mut self, max_frames_per_turn: u32) -> Self {
        self.max_frames_per_turn = max_frames_per_turn.max(1);
        self
    }

    /// Most bytes the read buffer holds: one whole frame (the 36-byte header and
    /// `max_body_len`) plus one [`READ_CHUNK`]. The connection keeps this bound: it reads only
    /// while no complete frame waits, and at most what the incomplete one lacks plus
    /// [`READ_CHUNK`] per read. The `input_peak` counter shows the most any connection held.
    pub fn max_buffered_input(&self) -> usize {
        HEADER_LEN + self.max_body_len as usize + READ_CHUNK
    }
}
