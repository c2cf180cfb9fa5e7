//! Counters and gauges of a server, readable while it runs.
//!
//! Each event loop of a server has its own [`Stats`], shared (in an `Arc`) by the loop, its
//! connections and the worker pool's calls from them, so that loops on different cores never
//! write the same cache line. [`ServerStats`] holds every loop's and sums them when read.
//! Every field is a relaxed atomic: a reading is a consistent value of each counter, not a
//! snapshot of all of them at one instant. Counters only grow (they wrap at 2^64); gauges go
//! up and down.
//!
//! [`Stats::snapshot`] and [`ServerStats::snapshot`] list every value by name; the built-in
//! admin service ([`crate::admin`]) sends the server's list to any client that asks
//! (`kv-cli stats`). The names are part of the interface and documented in
//! `proto-spec/SERVICES.md`, "admin".
//!
//! # Per-method counters
//!
//! Each loop also counts requests by method and status and keeps a latency histogram per
//! method ([`Stats::methods`], [`ServerStats::methods`], [`MethodSnapshot`]); the
//! `requests_<CODE>` counters are their sums. Latency is the server's part of a request's
//! life, from the turn that read it to when its answer is queued; the loop reads the clock
//! once per connection's batch of requests and allocates nothing per request; the buckets are
//! [`LATENCY_BOUNDS`]. These counters are written by the loop's thread alone.
//!
//! # Prometheus
//!
//! [`render_prometheus`] writes a server's counters, the per-method ones included, in the
//! Prometheus text exposition format (version 0.0.4), for an HTTP `/metrics` endpoint:
//! [`crate::metrics`] serves one (feature `metrics`).

mod methods;
mod prometheus;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::proto::{Code, DecodeError};
use methods::MethodTable;
pub use methods::{MethodSnapshot, BUCKETS, LATENCY_BOUNDS, UNKNOWN_METHOD};
pub use prometheus::render_prometheus;

/// Defines `CloseCause` from one list of `Variant => "name"`, so that its `ALL`, `COUNT` and
/// `name` cannot leave a variant out: a cause added to the list is counted, named and
/// reported with no other change.
macro_rules! close_causes {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// Why the server closed (or finished) a connection, one counter each.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum CloseCause {
            $($(#[$doc])* $variant,)*
        }

        impl CloseCause {
            /// How many causes there are (the length of [`CloseCause::ALL`]).
            pub const COUNT: usize = [$($name),*].len();

            /// Every cause, in the order of [`Stats::snapshot`].
            pub const ALL: [CloseCause; CloseCause::COUNT] = [$(CloseCause::$variant),*];

            /// The counter's name suffix: `closed_<name>`.
            pub fn name(self) -> &'static str {
                match self {
                    $(CloseCause::$variant => $name,)*
                }
            }
        }
    };
}

close_causes! {
    /// The peer ended the connection in order (end of stream or GOAWAY) and was answered.
    Peer => "peer",
    /// The peer broke the protocol (a fatal decode error or an unexpected frame).
    Protocol => "protocol",
    /// The peer sent an ERROR frame.
    PeerError => "peer_error",
    /// The server shut down and sent GOAWAY.
    Shutdown => "shutdown",
    /// A frame was not complete within the frame timeout (slowloris).
    FrameTimeout => "frame_timeout",
    /// No frame arrived within the idle timeout.
    IdleTimeout => "idle_timeout",
    /// Queued output made no progress within the write timeout (a peer that does not read).
    WriteTimeout => "write_timeout",
    /// Queued output passed the hard cap.
    OutputCap => "output_cap",
    /// Too many frames that ask for nothing in a row (an empty-frame flood).
    Flood => "flood",
    /// The socket failed (reset, broken pipe ...).
    Io => "io",
    /// TLS failed: a handshake that did not complete (bad or missing certificate, no common
    /// protocol ...) or a TLS record that broke the protocol; the alert sent or received is
    /// counted in `tls_alerts_sent_<kind>` or `tls_alerts_received_<kind>`.
    Tls => "tls",
    /// The TLS handshake was not complete within the frame timeout (a stalled handshake).
    HandshakeTimeout => "handshake_timeout",
    /// A plaintext courier client on a TLS port (sent one plaintext ERROR frame).
    NotTls => "not_tls",
    /// Too many failed AUTH calls on one connection (brute force).
    AuthFailures => "auth_failures",
}

impl CloseCause {
    /// Its counter's index: its place in [`CloseCause::ALL`] (the variants carry no explicit
    /// discriminants, so `as usize` is the declaration order, which is the order of `ALL`).
    fn index(self) -> usize {
        self as usize
    }
}

// Every cause's index is its place in `ALL`, so within the `closed` array and distinct.
const _: () = {
    let mut i = 0;
    while i < CloseCause::COUNT {
        assert!(CloseCause::ALL[i] as usize == i);
        i += 1;
    }
};

/// One event loop's counters and gauges (or a standalone connection's). See the
/// [module docs](self).
///
/// Aligned to 128 bytes (two cache lines, the unit the adjacent-line prefetcher pulls in) so
/// that two loops' counters never share a line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Stats {
    /// Gauge: connections open now.
    pub connections_open: AtomicI64,
    /// Connections accepted.
    pub connections_accepted: AtomicU64,
    /// Connections refused because `max_connections` were open (sent RESOURCE_EXHAUSTED).
    pub connections_rejected: AtomicU64,
    /// Connections refused because the process ran out of file descriptors (EMFILE, ENFILE).
    pub connections_rejected_fd: AtomicU64,
    /// Other `accept` failures.
    pub accept_errors: AtomicU64,
    closed: [AtomicU64; CloseCause::COUNT],
    /// Frames decoded, including frames that failed to decode. Written by the loop's thread
    /// alone, added once per connection's batch.
    pub frames_in: AtomicU64,
    /// Frames queued for peers. Written by the loop's thread alone.
    pub frames_out: AtomicU64,
    /// Bytes read from sockets. Written by the loop's thread alone.
    pub bytes_in: AtomicU64,
    /// Bytes written to sockets.
    pub bytes_out: AtomicU64,
    decode_errors: [AtomicU64; DecodeError::CODE_NAMES.len()],
    /// Requests by method and status, and latency histograms (the `requests_<CODE>` totals
    /// are their sums).
    methods: MethodTable,
    /// Handlers that panicked (each answered INTERNAL).
    pub handler_panics: AtomicU64,
    /// Gauge: bytes buffered by all connections, received and not yet decoded plus queued
    /// and not yet written.
    pub buffered_bytes: AtomicI64,
    /// The most output ever queued on one connection, in bytes.
    pub output_peak: AtomicU64,
    /// Times a connection stopped being read because its output passed the high-water mark.
    pub output_paused: AtomicU64,
    /// Times a connection stopped being read because `max_in_flight` requests were running.
    pub in_flight_paused: AtomicU64,
    /// Times a connection used up its frames-per-turn budget and yielded to the others.
    pub turn_yields: AtomicU64,
    /// Gauge: blocking requests queued or running on the worker pool.
    pub blocking_in_flight: AtomicI64,
    /// Blocking requests answered UNAVAILABLE because the worker pool's queue was full.
    pub blocking_rejected: AtomicU64,
    /// Blocking requests answered DEADLINE_EXCEEDED because their deadline passed in the queue.
    pub blocking_expired: AtomicU64,
    /// Requests answered DEADLINE_EXCEEDED without running, because their deadline (counted
    /// from when the server received the request) had passed when they were dispatched:
    /// inline and blocking requests (the blocking ones are also in `blocking_expired`).
    pub deadline_expired: AtomicU64,
    /// The most input ever buffered by one connection (received and not yet decoded), in
    /// bytes.
    pub input_peak: AtomicU64,
    /// TLS handshakes completed.
    pub tls_handshakes: AtomicU64,
    tls_alerts_sent: [AtomicU64; TlsAlert::COUNT],
    tls_alerts_received: [AtomicU64; TlsAlert::COUNT],
    /// TLS ClientHellos (or other TLS records) received on a plaintext port, each answered
    /// with an ERROR frame and closed (also in `decode_errors_BAD_MAGIC`).
    pub tls_on_plain_port: AtomicU64,
    /// AUTH calls that gave the connection an identity.
    pub auth_ok: AtomicU64,
    /// AUTH calls refused (a token that proves no identity).
    pub auth_failed: AtomicU64,
}

/// Defines `TlsAlert` from one list of `Variant => "name"` (the alert names of RFC 8446
/// Section 6), so that every kind is counted, named and reported.
macro_rules! tls_alerts {
    ($($variant:ident => $name:literal,)*) => {
        /// The kinds of TLS alert counted, by their RFC 8446 Section 6 names; any other is
        /// `Other`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum TlsAlert {
            $(#[doc = concat!("The `", $name, "` alert.")] $variant,)*
        }

        impl TlsAlert {
            /// How many kinds there are (the length of [`TlsAlert::ALL`]).
            pub const COUNT: usize = [$($name),*].len();

            /// Every kind, in the order of [`Stats::snapshot`].
            pub const ALL: [TlsAlert; TlsAlert::COUNT] = [$(TlsAlert::$variant),*];

            /// The counter's name suffix: `tls_alerts_sent_<name>`, `tls_alerts_received_<name>`.
            pub fn name(self) -> &'static str {
                match self {
                    $(TlsAlert::$variant => $name,)*
                }
            }
        }
    };
}

tls_alerts! {
    CloseNotify => "close_notify",
    UnexpectedMessage => "unexpected_message",
    BadRecordMac => "bad_record_mac",
    HandshakeFailure => "handshake_failure",
    BadCertificate => "bad_certificate",
    UnsupportedCertificate => "unsupported_certificate",
    CertificateRevoked => "certificate_revoked",
    CertificateExpired => "certificate_expired",
    CertificateUnknown => "certificate_unknown",
    IllegalParameter => "illegal_parameter",
    UnknownCa => "unknown_ca",
    DecodeError => "decode_error",
    DecryptError => "decrypt_error",
    ProtocolVersion => "protocol_version",
    InternalError => "internal_error",
    MissingExtension => "missing_extension",
    UnrecognizedName => "unrecognized_name",
    CertificateRequired => "certificate_required",
    NoApplicationProtocol => "no_application_protocol",
    Other => "other",
}

// Every kind's index is its place in `ALL`.
const _: () = {
    let mut i = 0;
    while i < TlsAlert::COUNT {
        assert!(TlsAlert::ALL[i] as usize == i);
        i += 1;
    }
};

/// Adds one to a counter.
pub(crate) fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter that only the calling thread writes (a loop's per-request counters):
/// a plain load and store, where [`add`]'s read-modify-write is a locked instruction, paid per
/// request on the hot path. A write from any other thread could be lost.
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Moves a gauge by `delta`.
pub(crate) fn shift(gauge: &AtomicI64, delta: i64) {
    if delta != 0 {
        gauge.fetch_add(delta, Ordering::Relaxed);
    }
}

impl Stats {
    /// All zero, with no method of its own: every request is counted under
    /// [`UNKNOWN_METHOD`]. A server's loops use [`Stats::with_methods`].
    pub fn new() -> Self {
        Stats::default()
    }

    /// All zero, with a cell of per-method counters for each of `methods`: the names of
    /// [`Router::methods`](crate::service::Router::methods), in its order.
    pub fn with_methods(methods: Arc<[&'static str]>) -> Self {
        Stats {
            methods: MethodTable::new(methods),
            ..Stats::default()
        }
    }

    /// Counts a connection closed for `cause`.
    pub fn closed(&self, cause: CloseCause) {
        inc(&self.closed[cause.index()]);
    }

    /// Connections closed for `cause` so far.
    pub fn closed_count(&self, cause: CloseCause) -> u64 {
        self.closed[cause.index()].load(Ordering::Relaxed)
    }

    /// Counts a TLS alert of `kind` sent to a peer.
    pub fn tls_alert_sent(&self, kind: TlsAlert) {
        inc(&self.tls_alerts_sent[kind as usize]);
    }

    /// Counts a TLS alert of `kind` received from a peer.
    pub fn tls_alert_received(&self, kind: TlsAlert) {
        inc(&self.tls_alerts_received[kind as usize]);
    }

    /// TLS alerts of `kind` sent so far.
    pub fn tls_alerts_sent_count(&self, kind: TlsAlert) -> u64 {
        self.tls_alerts_sent[kind as usize].load(Ordering::Relaxed)
    }

    /// Counts a decode error by its kind.
    pub fn decode_error(&self, err: &DecodeError) {
        inc(&self.decode_errors[err.code_index()]);
    }

    /// Counts a request for the router's method `slot` (its index in
    /// [`Router::methods`](crate::service::Router::methods); any larger number is the unknown
    /// method) answered with `code` (codes above 16 count as UNKNOWN). Its latency is
    /// measured by the next [`Stats::clock_answers`]. Only the loop that owns these counters
    /// may call it (see [Per-method counters](self#per-method-counters)).
    pub(crate) fn answered(&self, slot: usize, code: Code) {
        self.methods.answered(slot, code);
    }

    /// Whether answers wait for [`Stats::clock_answers`].
    pub(crate) fn has_unclocked(&self) -> bool {
        self.methods.has_unclocked()
    }

    /// Puts the answers counted since the last call in the latency histograms, each with the
    /// latency `now - received_at`.
    pub(crate) fn clock_answers(&self, received_at: Instant, now: Instant) {
        self.methods.clock(received_at, now);
    }

    /// Every method's counters: the served methods in the router's order, then
    /// [`UNKNOWN_METHOD`].
    pub fn methods(&self) -> Vec<MethodSnapshot> {
        self.methods.snapshot()
    }

    /// Raises the output peak to `queued` if it is higher.
    pub(crate) fn output_queued(&self, queued: usize) {
        self.output_peak.fetch_max(queued as u64, Ordering::Relaxed);
    }

    /// Raises the input peak to `bytes` (one connection's input received and not yet
    /// decoded) if it is higher.
    pub(crate) fn input_buffered(&self, bytes: usize) {
        self.input_peak.fetch_max(bytes as u64, Ordering::Relaxed);
    }

    /// Every counter and gauge by name, in a fixed order:
    ///
    /// - `connections_open`, `connections_accepted`, `connections_rejected`,
    ///   `connections_rejected_fd`, `accept_errors`;
    /// - `closed_<cause>` for each [`CloseCause`];
    /// - `frames_in`, `frames_out`, `bytes_in`, `bytes_out`;
    /// - `decode_errors_<KIND>` for each of [`DecodeError::CODE_NAMES`];
    /// - `requests_<CODE>` for each gRPC status code name (`requests_OK` ...);
    /// - `handler_panics`, `buffered_bytes`, `output_peak`, `output_paused`,
    ///   `in_flight_paused`, `turn_yields`, `blocking_in_flight`, `blocking_rejected`,
    ///   `blocking_expired`;
    /// - `deadline_expired` (counter): requests answered DEADLINE_EXCEEDED without running,
    ///   because their deadline, counted from when the server received the request, had
    ///   passed when they were dispatched; inline and blocking ones (blocking ones are also
    ///   in `blocking_expired`);
    /// - `input_peak` (peak, bytes): the most input one connection ever held received and not
    ///   yet decoded; like `output_peak`, a server reports the largest over its loops;
    /// - `tls_handshakes`; `tls_alerts_sent_<kind>` and `tls_alerts_received_<kind>` for each
    ///   [`TlsAlert`]; `tls_on_plain_port`; `auth_ok`, `auth_failed`.
    ///
    /// Gauges that dip below zero for an instant (counted by two threads) read as 0.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        self.values()
            .into_iter()
            .map(|(n, v)| (n, v.read()))
            .collect()
    }

    /// Every value by name, in the order of [`Stats::snapshot`], with how to combine it.
    fn values(&self) -> Vec<(String, Value)> {
        let get = |c: &AtomicU64| Value::Count(c.load(Ordering::Relaxed));
        let gauge = |g: &AtomicI64| Value::Gauge(g.load(Ordering::Relaxed));
        let mut out = vec![
            (
                "connections_open".to_string(),
                gauge(&self.connections_open),
            ),
            (
                "connections_accepted".into(),
                get(&self.connections_accepted),
            ),
            (
                "connections_rejected".into(),
                get(&self.connections_rejected),
            ),
            (
                "connections_rejected_fd".into(),
                get(&self.connections_rejected_fd),
            ),
            ("accept_errors".into(), get(&self.accept_errors)),
        ];
        for cause in CloseCause::ALL {
            out.push((
                format!("closed_{}", cause.name()),
                Value::Count(self.closed_count(cause)),
            ));
        }
        out.extend([
            ("frames_in".to_string(), get(&self.frames_in)),
            ("frames_out".into(), get(&self.frames_out)),
            ("bytes_in".into(), get(&self.bytes_in)),
            ("bytes_out".into(), get(&self.bytes_out)),
        ]);
        for (name, counter) in DecodeError::CODE_NAMES.iter().zip(&self.decode_errors) {
            out.push((format!("decode_errors_{name}"), get(counter)));
        }
        for (i, code) in Code::ALL.iter().enumerate() {
            let name = code.name().unwrap_or("UNKNOWN");
            out.push((
                format!("requests_{name}"),
                Value::Count(self.methods.code_total(i)),
            ));
        }
        out.extend([
            ("handler_panics".to_string(), get(&self.handler_panics)),
            ("buffered_bytes".into(), gauge(&self.buffered_bytes)),
            (
                "output_peak".into(),
                Value::Peak(self.output_peak.load(Ordering::Relaxed)),
            ),
            ("output_paused".into(), get(&self.output_paused)),
            ("in_flight_paused".into(), get(&self.in_flight_paused)),
            ("turn_yields".into(), get(&self.turn_yields)),
            ("blocking_in_flight".into(), gauge(&self.blocking_in_flight)),
            ("blocking_rejected".into(), get(&self.blocking_rejected)),
            ("blocking_expired".into(), get(&self.blocking_expired)),
            ("deadline_expired".into(), get(&self.deadline_expired)),
            (
                "input_peak".into(),
                Value::Peak(self.input_peak.load(Ordering::Relaxed)),
            ),
            ("tls_handshakes".into(), get(&self.tls_handshakes)),
        ]);
        for (kind, counter) in TlsAlert::ALL.iter().zip(&self.tls_alerts_sent) {
            out.push((format!("tls_alerts_sent_{}", kind.name()), get(counter)));
        }
        for (kind, counter) in TlsAlert::ALL.iter().zip(&self.tls_alerts_received) {
            out.push((format!("tls_alerts_received_{}", kind.name()), get(counter)));
        }
        out.extend([
            (
                "tls_on_plain_port".to_string(),
                get(&self.tls_on_plain_port),
            ),
            ("auth_ok".into(), get(&self.auth_ok)),
            ("auth_failed".into(), get(&self.auth_failed)),
        ]);
        out
    }
}

/// One reading, and how readings of several loops combine.
#[derive(Clone, Copy, Debug)]
enum Value {
    /// Summed, wrapping like the counters.
    Count(u64),
    /// Summed; a total that dips below zero for an instant (counted by two threads) reads 0.
    Gauge(i64),
    /// The largest.
    Peak(u64),
}

impl Value {
    fn combine(self, other: Value) -> Value {
        match (self, other) {
            (Value::Count(a), Value::Count(b)) => Value::Count(a.wrapping_add(b)),
            (Value::Gauge(a), Value::Gauge(b)) => Value::Gauge(a.saturating_add(b)),
            (Value::Peak(a), Value::Peak(b)) => Value::Peak(a.max(b)),
            (a, _) => a,
        }
    }

    fn read(self) -> u64 {
        match self {
            Value::Count(v) | Value::Peak(v) => v,
            Value::Gauge(v) => u64::try_from(v).unwrap_or(0),
        }
    }
}

/// The counters of a whole server: one [`Stats`] per event loop, summed when read (the
/// largest for `output_peak` and `input_peak`). Cheap to clone; readable from any thread
/// while the server runs.
#[derive(Clone, Debug)]
pub struct ServerStats {
    loops: Arc<[Arc<Stats>]>,
}

impl ServerStats {
    /// A server's counters over its loops' `Stats`, in loop order.
    pub fn new(loops: Vec<Arc<Stats>>) -> Self {
        ServerStats {
            loops: loops.into(),
        }
    }

    /// Each loop's own counters, in loop order.
    pub fn loops(&self) -> &[Arc<Stats>] {
        &self.loops
    }

    /// Every counter and gauge by name, summed over the loops, in the order and with the
    /// names of [`Stats::snapshot`].
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let total = self.values();
        total.into_iter().map(|(n, v)| (n, v.read())).collect()
    }

    /// Every value by name, combined over the loops, with its kind.
    fn values(&self) -> Vec<(String, Value)> {
        let mut loops = self.loops.iter();
        let mut total = match loops.next() {
            Some(first) => first.values(),
            None => Stats::new().values(),
        };
        for stats in loops {
            for ((_, sum), (_, value)) in total.iter_mut().zip(stats.values()) {
                *sum = sum.combine(value);
            }
        }
        total
    }

    /// Every method's counters summed over the loops: the served methods in the router's
    /// order, then [`UNKNOWN_METHOD`].
    pub fn methods(&self) -> Vec<MethodSnapshot> {
        let mut loops = self.loops.iter();
        let mut total = match loops.next() {
            Some(first) => first.methods(),
            None => Stats::new().methods(),
        };
        for stats in loops {
            for (sum, one) in total.iter_mut().zip(stats.methods()) {
                sum.add(&one);
            }
        }
        total
    }

    /// The value of `name` summed over the loops, or `None` for a name
    /// [`Stats::snapshot`] does not list.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.snapshot()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_every_counter_once() {
        let stats = Stats::new();
        stats.closed(CloseCause::Flood);
        stats.answered(0, Code::NOT_FOUND);
        stats.answered(0, Code(99));
        let snap = stats.snapshot();
        let mut names: Vec<&str> = snap.iter().map(|(n, _)| n.as_str()).collect();
        let value = |name: &str| snap.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        assert_eq!(value("closed_flood"), Some(1));
        assert_eq!(value("requests_NOT_FOUND"), Some(1));
        assert_eq!(value("requests_UNKNOWN"), Some(1));
        assert_eq!(value("decode_errors_BAD_MAGIC"), Some(0));
        let total = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), total, "duplicate names");
        // Connections, close causes, bytes and frames, decode errors, codes, the rest, TLS
        // alerts both ways, and the TLS and AUTH counters.
        let alerts = TlsAlert::COUNT;
        assert_eq!(total, 5 + 14 + 4 + 10 + 17 + 12 + 2 * alerts + 3);
        let tail: Vec<&str> = snap[total - 3..].iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(tail, ["tls_on_plain_port", "auth_ok", "auth_failed"]);
        stats.tls_alert_sent(TlsAlert::UnknownCa);
        stats.tls_alert_received(TlsAlert::CertificateRequired);
        let snap = stats.snapshot();
        assert_eq!(value_of(&snap, "tls_alerts_sent_unknown_ca"), 1);
        assert_eq!(
            value_of(&snap, "tls_alerts_received_certificate_required"),
            1
        );
        assert_eq!(value_of(&snap, "tls_alerts_received_unknown_ca"), 0);
    }

    fn value_of(snap: &[(String, u64)], name: &str) -> u64 {
        value(snap, name)
    }

    fn value(snap: &[(String, u64)], name: &str) -> u64 {
        let found = snap.iter().find(|(n, _)| n == name);
        found
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{name} is not in the snapshot"))
    }

    #[test]
    fn every_close_cause_lands_in_its_own_counter_and_is_named_once() {
        let stats = Stats::new();
        // Cause i is counted i + 1 times, so a cause counted in another's slot shows.
        for (i, cause) in CloseCause::ALL.into_iter().enumerate() {
            for _ in 0..=i {
                stats.closed(cause);
            }
        }
        let snap = stats.snapshot();
        for (i, cause) in CloseCause::ALL.into_iter().enumerate() {
            let name = format!("closed_{}", cause.name());
            assert_eq!(snap.iter().filter(|(n, _)| *n == name).count(), 1, "{name}");
            assert_eq!(value(&snap, &name), i as u64 + 1, "{name}");
            assert_eq!(stats.closed_count(cause), i as u64 + 1, "{name}");
        }
        let closed = snap
            .iter()
            .filter(|(n, _)| n.starts_with("closed_"))
            .count();
        assert_eq!(closed, CloseCause::COUNT);
    }

    #[test]
    fn every_decode_error_kind_is_counted_under_its_own_name() {
        let stats = Stats::new();
        let all = DecodeError::one_of_each();
        assert_eq!(all.len(), DecodeError::CODE_NAMES.len());
        for (i, err) in all.iter().enumerate() {
            for _ in 0..=i {
                stats.decode_error(err);
            }
        }
        let snap = stats.snapshot();
        for (i, err) in all.iter().enumerate() {
            let name = format!("decode_errors_{}", err.code_name());
            assert_eq!(value(&snap, &name), i as u64 + 1, "{name}");
        }
    }

    #[test]
    fn every_code_and_an_unknown_one_are_counted() {
        let stats = Stats::new();
        for code in 0..=16 {
            stats.answered(0, Code(code));
        }
        stats.answered(0, Code(99));
        stats.answered(0, Code(u32::MAX));
        let snap = stats.snapshot();
        for code in 0..=16 {
            let name = format!("requests_{}", Code(code).name().expect("named"));
            // UNKNOWN also counts the two unknown codes.
            let want = if Code(code) == Code::UNKNOWN { 3 } else { 1 };
            assert_eq!(value(&snap, &name), want, "{name}");
        }
        let requests = snap.iter().filter(|(n, _)| n.starts_with("requests_"));
        assert_eq!(requests.count(), 17);
    }

    #[test]
    fn server_stats_sum_counters_and_gauges_and_take_the_largest_peak() {
        let a = Arc::new(Stats::new());
        let b = Arc::new(Stats::new());
        inc(&a.frames_in);
        add(&b.frames_in, 2);
        shift(&a.connections_open, 3);
        shift(&b.connections_open, -1);
        // A gauge one loop took below zero still adds up to the true total.
        shift(&a.blocking_in_flight, -1);
        shift(&b.blocking_in_flight, 2);
        a.output_queued(10);
        b.output_queued(7);
        a.input_buffered(3);
        b.input_buffered(40);
        b.input_buffered(5);
        inc(&a.deadline_expired);
        inc(&b.deadline_expired);
        let server = ServerStats::new(vec![Arc::clone(&a), Arc::clone(&b)]);
        assert_eq!(server.get("frames_in"), Some(3));
        assert_eq!(server.get("connections_open"), Some(2));
        assert_eq!(server.get("blocking_in_flight"), Some(1));
        assert_eq!(server.get("output_peak"), Some(10));
        assert_eq!(server.get("input_peak"), Some(40));
        assert_eq!(server.get("deadline_expired"), Some(2));
        assert_eq!(server.get("no_such_counter"), None);
        assert_eq!(server.snapshot().len(), a.snapshot().len());
    }
}
