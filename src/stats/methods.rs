//! Per-method counters: requests by method and status, and a latency histogram per method.
//!
//! Each event loop's [`Stats`](super::Stats) holds one [`MethodCell`] per method its router
//! serves, in the router's order ([`Router::methods`](crate::service::Router::methods)), plus
//! one for requests that name no served method, or whose body or metadata failed to decode
//! (the decode error does not carry the frame's ids): the method `unknown`. A request is counted once it is answered, under the status it was answered with.
//!
//! **Latency** is the server's part of a request's life: from the event-loop turn that read
//! the request's last byte ([`Context::received_at`](crate::service::Context::received_at))
//! to the moment its answer is queued for the socket:
//!
//! - an inline handler's answer: the end of the connection's batch of requests in that turn
//!   (the answers of a batch are written together once it is served, so each waited for it);
//! - an answer held for a group commit: after the commit (the `fsync` under `--fsync always`);
//! - a blocking handler's answer: when the worker's answer reaches the event loop.
//!
//! It does not include the time a request waits in the kernel's buffers before its turn, nor
//! the time its answer takes to reach the client.
//!
//! **Cost:** the loop reads the clock once per connection batch, not once per request (a
//! clock read costs about 40 ns on a virtual machine's TSC), and every counter here is written
//! by one thread only (the loop's), so an update is a load and a store, not a locked
//! read-modify-write. Nothing is allocated per request: the cells are allocated once, when the
//! server is built.
//!
//! **Buckets** ([`LATENCY_BOUNDS`]): 10 µs to 10 s in steps of 1, 2.5 and 5 (the steps of the
//! Prometheus client libraries' default buckets, 5 ms to 10 s, extended down to 10 µs for an
//! in-memory server), and +Inf.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bump;
use crate::proto::Code;

/// The upper bounds of the latency buckets, in seconds, ascending; a last bucket, +Inf,
/// counts the rest. A latency equal to a bound falls in that bound's bucket (Prometheus's
/// `le`, less than or equal).
pub const LATENCY_BOUNDS: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// [`LATENCY_BOUNDS`] in nanoseconds, for the comparison the loop makes (rounded: the
/// bounds are whole nanoseconds).
const BOUNDS_NS: [u64; LATENCY_BOUNDS.len()] = {
    let mut ns = [0; LATENCY_BOUNDS.len()];
    let mut i = 0;
    while i < ns.len() {
        ns[i] = (LATENCY_BOUNDS[i] * 1e9 + 0.5) as u64;
        i += 1;
    }
    ns
};

/// Buckets, +Inf included.
pub const BUCKETS: usize = BOUNDS_NS.len() + 1;

/// Status codes counted per method: the 17 named ones; others count as UNKNOWN.
const CODES: usize = Code::ALL.len();

/// The name under which requests for no served method are counted.
pub const UNKNOWN_METHOD: &str = "unknown";

// Code `i` is at `Code::ALL[i]`, so a cell's `codes` is indexed by the code's number.
const _: () = {
    let mut i = 0;
    while i < CODES {
        assert!(Code::ALL[i].0 as usize == i);
        i += 1;
    }
};

/// One method's counters in one event loop.
#[derive(Debug, Default)]
pub(crate) struct MethodCell {
    /// Requests answered, by status code.
    codes: [AtomicU64; CODES],
    /// Latencies, by bucket (not cumulative).
    buckets: [AtomicU64; BUCKETS],
    /// Sum of the latencies, in nanoseconds.
    sum_ns: AtomicU64,
    /// Requests answered whose latency is not yet in the histogram
    /// ([`MethodTable::clock`]).
    unclocked: AtomicU64,
}

impl MethodCell {
    fn record(&self, latency: Duration, n: u64) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NS
            .iter()
            .position(|&b| ns <= b)
            .unwrap_or(BUCKETS - 1);
        bump(&self.buckets[bucket], n);
        bump(&self.sum_ns, ns.wrapping_mul(n));
    }
}

/// The per-method counters of one event loop: a cell per served method, in the router's
/// order, and a last one for [`UNKNOWN_METHOD`].
#[derive(Debug)]
pub(crate) struct MethodTable {
    names: Arc<[&'static str]>,
    cells: Box<[MethodCell]>,
    /// Slots with unclocked answers, one bit each (slot 63 and above share bit 63).
    dirty: AtomicU64,
}

impl Default for MethodTable {
    /// No served method: every request is counted as unknown.
    fn default() -> Self {
        MethodTable::new(Arc::from(Vec::new()))
    }
}

impl MethodTable {
    /// Cells for `names` (the router's methods in order) and the unknown method.
    pub(crate) fn new(names: Arc<[&'static str]>) -> Self {
        let cells = (0..=names.len()).map(|_| MethodCell::default()).collect();
        MethodTable {
            names,
            cells,
            dirty: AtomicU64::new(0),
        }
    }

    /// The cell of `slot`: a router's method index, or any larger number for the unknown
    /// method.
    fn cell(&self, slot: usize) -> &MethodCell {
        let last = self.cells.len() - 1;
        &self.cells[slot.min(last)]
    }

    /// Counts a request of `slot` answered with `code`, its latency to be measured by the
    /// next [`MethodTable::clock`].
    pub(crate) fn answered(&self, slot: usize, code: Code) {
        let cell = self.cell(slot);
        bump(&cell.codes[code_index(code)], 1);
        bump(&cell.unclocked, 1);
        let bit = 1u64 << slot.min(self.cells.len() - 1).min(63);
        let dirty = self.dirty.load(Ordering::Relaxed);
        if dirty & bit == 0 {
            self.dirty.store(dirty | bit, Ordering::Relaxed);
        }
    }

    /// Whether answers wait for [`MethodTable::clock`].
    pub(crate) fn has_unclocked(&self) -> bool {
        self.dirty.load(Ordering::Relaxed) != 0
    }

    /// Puts every answer counted since the last call in the histogram, each with the latency
    /// `now - received_at`.
    pub(crate) fn clock(&self, received_at: Instant, now: Instant) {
        let dirty = self.dirty.load(Ordering::Relaxed);
        if dirty == 0 {
            return;
        }
        self.dirty.store(0, Ordering::Relaxed);
        let latency = now.saturating_duration_since(received_at);
        for (slot, cell) in self.cells.iter().enumerate() {
            if dirty & (1 << slot.min(63)) == 0 {
                continue;
            }
            let n = cell.unclocked.load(Ordering::Relaxed);
            if n != 0 {
                cell.unclocked.store(0, Ordering::Relaxed);
                cell.record(latency, n);
            }
        }
    }

    /// Requests answered with `code`, over every method.
    pub(crate) fn code_total(&self, code: usize) -> u64 {
        self.cells.iter().fold(0u64, |sum, cell| {
            sum.wrapping_add(cell.codes[code].load(Ordering::Relaxed))
        })
    }

    /// Every method's readings, unknown last.
    pub(crate) fn snapshot(&self) -> Vec<MethodSnapshot> {
        let names = self.names.iter().copied().chain([UNKNOWN_METHOD]);
        names
            .zip(self.cells.iter())
            .map(|(name, cell)| MethodSnapshot {
                name,
                codes: cell.codes.each_ref().map(|c| c.load(Ordering::Relaxed)),
                buckets: cell.buckets.each_ref().map(|c| c.load(Ordering::Relaxed)),
                sum_ns: cell.sum_ns.load(Ordering::Relaxed),
            })
            .collect()
    }
}

/// A code's counter: its number, or UNKNOWN's for a number above 16.
pub(crate) fn code_index(code: Code) -> usize {
    let unknown = Code::UNKNOWN.0 as usize;
    usize::try_from(code.0).map_or(unknown, |i| if i < CODES { i } else { unknown })
}

/// One method's counters at one moment ([`ServerStats::methods`](super::ServerStats::methods)):
/// summed over a server's event loops.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MethodSnapshot {
    /// The method's name (`kv.Get`), or [`UNKNOWN_METHOD`] for requests that named no served
    /// method.
    pub name: &'static str,
    /// Requests answered, indexed by status code number (`codes[0]` is OK; a code above 16
    /// counts as UNKNOWN, 2).
    pub codes: [u64; CODES],
    /// Answers by latency bucket, not cumulative: `buckets[i]` counts latencies above
    /// `LATENCY_BOUNDS[i - 1]` and at most `LATENCY_BOUNDS[i]`; the last counts those above
    /// 10 s.
    pub buckets: [u64; BUCKETS],
    /// The sum of the latencies, in nanoseconds (wraps at 2^64, after 584 years).
    pub sum_ns: u64,
}

impl MethodSnapshot {
    /// Requests answered, every status.
    pub fn count(&self) -> u64 {
        self.codes.iter().fold(0, |a, &b| a.wrapping_add(b))
    }

    /// Answers in the histogram: `count` less those answered in a batch whose clock has not
    /// yet been read (a moment's difference, while the server runs).
    pub fn observed(&self) -> u64 {
        self.buckets.iter().fold(0, |a, &b| a.wrapping_add(b))
    }

    /// Adds `other`'s counts (another loop's readings of the same method).
    pub(crate) fn add(&mut self, other: &MethodSnapshot) {
        for (a, b) in self.codes.iter_mut().zip(other.codes) {
            *a = a.wrapping_add(b);
        }
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a = a.wrapping_add(b);
        }
        self.sum_ns = self.sum_ns.wrapping_add(other.sum_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> MethodTable {
        MethodTable::new(vec!["a.One", "a.Two"].into())
    }

    #[test]
    fn answers_land_in_their_method_and_code_and_the_bucket_of_their_latency() {
        assert_eq!(BOUNDS_NS[..3], [10_000, 25_000, 50_000]);
        assert_eq!(BOUNDS_NS[18], 10_000_000_000);
        assert!(BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
        let t = table();
        let start = Instant::now();
        t.answered(0, Code::OK);
        t.answered(0, Code::NOT_FOUND);
        t.answered(1, Code::OK);
        assert!(t.has_unclocked());
        // 30 µs: the 50 µs bucket (index 2).
        t.clock(start, start + Duration::from_micros(30));
        assert!(!t.has_unclocked());
        // Exactly a bound falls in that bound's bucket.
        t.answered(1, Code::OK);
        t.clock(start, start + Duration::from_millis(1));
        // An unknown slot, a code above 16, and a latency beyond the last bound.
        t.answered(99, Code(40));
        t.clock(start, start + Duration::from_secs(11));
        let snap = t.snapshot();
        assert_eq!(snap.len(), 3);
        let (one, two, unknown) = (&snap[0], &snap[1], &snap[2]);
        assert_eq!(
            (one.name, two.name, unknown.name),
            ("a.One", "a.Two", "unknown")
        );
        assert_eq!((one.codes[0], one.codes[5], one.count()), (1, 1, 2));
        assert_eq!(one.buckets[2], 2);
        assert_eq!(one.sum_ns, 60_000);
        assert_eq!((two.buckets[2], two.buckets[6], two.observed()), (1, 1, 2));
        assert_eq!(two.sum_ns, 30_000 + 1_000_000);
        assert_eq!((unknown.codes[2], unknown.buckets[BUCKETS - 1]), (1, 1));
        assert_eq!(t.code_total(0), 3);
    }

    #[test]
    fn more_than_63_methods_share_the_last_dirty_bit_and_are_all_clocked() {
        let names: Vec<&'static str> = (0..70).map(|_| "m").collect();
        let t = MethodTable::new(names.into());
        let start = Instant::now();
        for slot in [0, 62, 63, 64, 69, 70] {
            t.answered(slot, Code::OK);
        }
        t.clock(start, start + Duration::from_micros(5));
        let snap = t.snapshot();
        for slot in [0, 62, 63, 64, 69, 70] {
            assert_eq!(snap[slot].buckets[0], 1, "slot {slot}");
        }
        assert_eq!(snap.iter().map(MethodSnapshot::observed).sum::<u64>(), 6);
    }
}
