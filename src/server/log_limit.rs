//! Rate-limited log lines, for events a peer can repeat at will.
//!
//! A line that a hostile or unlucky peer can trigger once per connection or per frame (a
//! refused connection, a protocol error) would let a flood of them fill the disk with logs:
//! 15,000 connections against a server at its connection limit once wrote 5,002 lines. Each
//! such kind of line gets a [`LogLimit`], a `static` shared by every event loop: it lets one
//! line through per [`INTERVAL`] and counts the rest, and the next line written says how many
//! were suppressed. A burst followed by silence still reports its count: the loops call
//! [`LogLimit::flush`] from their timer sweep, which writes one line with the count once the
//! interval has passed.
//!
//! Redis does the same for lines it could repeat at will: a failing AOF write is logged at
//! most once per `AOF_WRITE_LOG_ERROR_RATE` (30 s, `aof.c`), and a replica that cannot fail
//! over repeats its reason at most once per `CLUSTER_CANT_FAILOVER_RELOG_PERIOD` (5 min,
//! `cluster.c`). Reporting the count of the lines suppressed is the Linux kernel's
//! `printk_ratelimit` (`lib/ratelimit.c`: "N callbacks suppressed"). nginx, by contrast,
//! writes its `accept() failed` and `worker_connections are not enough` lines each time;
//! what bounds them is that it stops accepting for a while (`accept_mutex_delay`, 500 ms)
//! when out of file descriptors, as the event loop's own accept backoff does.
//!
//! Lock-free and allocation-free until a line is written: one load of the process's epoch
//! and one or two atomic operations per event.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use log::Level;

/// How often one kind of line may be written: once a second. Often enough to see when a flood
/// starts and stops; rare enough that a flood writes at most 86,400 lines a day of each kind
/// (Redis's limits on its repeated lines are 30 s and 5 min, for rarer events).
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);

/// `last` before any line was written.
const NEVER: u64 = u64::MAX;

/// The instant all limits count their milliseconds from: the first `now` any of them saw.
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Milliseconds from the epoch to `now` (0 for an instant before it).
fn millis(now: Instant) -> u64 {
    let epoch = *EPOCH.get_or_init(|| now);
    u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(NEVER - 1)
}

/// At most one line per interval for one kind of event, with a count of the lines it
/// suppressed. Usable as a `static` shared by threads: `const` constructor, atomics only.
/// Write through [`limited!`](crate::server::log_limit::limited).
#[derive(Debug)]
pub(crate) struct LogLimit {
    level: Level,
    /// The log target of the lines [`LogLimit::flush`] writes (the module of the lines it
    /// limits, so that a filter on that module keeps both).
    target: &'static str,
    /// What the lines are about, for the line [`LogLimit::flush`] writes alone.
    what: &'static str,
    interval_ms: u64,
    /// Milliseconds from the epoch to when the last line was written, or [`NEVER`].
    last: AtomicU64,
    /// Lines suppressed since the last one written.
    suppressed: AtomicU64,
}

impl LogLimit {
    /// A limit of one line per `interval` at `level` ([`INTERVAL`] for the server's lines).
    /// `target` is the module whose lines it limits (`module_path!()`); `what` names the
    /// event in the line [`LogLimit::flush`] writes, `"{what}: N more like this suppressed in
    /// the last S s"` (`"rejecting connections at the connection limit"`).
    pub(crate) const fn new(
        level: Level,
        target: &'static str,
        what: &'static str,
        interval: Duration,
    ) -> Self {
        let ms = interval.as_millis();
        LogLimit {
            level,
            target,
            what,
            interval_ms: if ms > u64::MAX as u128 {
                u64::MAX
            } else {
                ms as u64
            },
            last: AtomicU64::new(NEVER),
            suppressed: AtomicU64::new(0),
        }
    }

    /// The level its lines are written at.
    pub(crate) fn level(&self) -> Level {
        self.level
    }

    /// Whether a line of this kind may be written at `now`: `Some` with the lines suppressed
    /// since the last one written (to report with it), or `None` if it is suppressed, and
    /// counted, because a line was written less than an interval ago. Each event is either
    /// admitted or counted exactly once, so the lines written plus the counts they report
    /// (with [`LogLimit::flush`]'s) add up to the events.
    pub(crate) fn admit(&self, now: Instant) -> Option<Suppressed> {
        let t = millis(now);
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            if last != NEVER && t < last.saturating_add(self.interval_ms) {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match self
                .last
                .compare_exchange_weak(last, t, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(self.take(last, t)),
                Err(current) => last = current,
            }
        }
    }

    /// Writes one line with the count of suppressed lines if there are any and an interval
    /// has passed since the last line written (which they would otherwise wait for the next
    /// event to report). Called by every loop's timer sweep; cheap when there is nothing to
    /// report.
    pub(crate) fn flush(&self, now: Instant) {
        if !log::log_enabled!(target: self.target, self.level) {
            return;
        }
        if let Some(suppressed) = self.take_pending(now) {
            log::log!(target: self.target, self.level, "{}: {}", self.what, suppressed.flushed());
        }
    }

    /// Whether lines were suppressed that no line has reported yet ([`LogLimit::flush`] will).
    pub(crate) fn has_pending(&self) -> bool {
        self.suppressed.load(Ordering::Relaxed) > 0
    }

    /// The suppressed lines [`LogLimit::flush`] reports at `now`, if there are any and an
    /// interval has passed since the last line written; they count as a line written.
    fn take_pending(&self, now: Instant) -> Option<Suppressed> {
        if self.suppressed.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let t = millis(now);
        let last = self.last.load(Ordering::Relaxed);
        if last != NEVER && t < last.saturating_add(self.interval_ms) {
            return None;
        }
        // Lost to another thread that wrote a line (or flushed) meanwhile: it took the count.
        self.last
            .compare_exchange(last, t, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        let suppressed = self.take(last, t);
        (suppressed.count > 0).then_some(suppressed)
    }

    /// Takes the suppressed count for a line written at `t`, the last one having been
    /// written at `last`.
    fn take(&self, last: u64, t: u64) -> Suppressed {
        let count = self.suppressed.swap(0, Ordering::Relaxed);
        let span_ms = if last == NEVER {
            0
        } else {
            t.saturating_sub(last)
        };
        Suppressed { count, span_ms }
    }
}

/// The lines of one kind suppressed since the last one written, reported by the next line.
/// Displays as `" (N more like this suppressed in the last S s)"`, or as nothing when none
/// were.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Suppressed {
    /// Lines suppressed.
    pub(crate) count: u64,
    /// Milliseconds since the last line written.
    pub(crate) span_ms: u64,
}

impl Suppressed {
    /// The text of a line written only to report the count: `"N more like this suppressed in
    /// the last S s"`.
    fn flushed(self) -> impl fmt::Display {
        struct Flushed(Suppressed);
        impl fmt::Display for Flushed {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "{} more like this suppressed in the last {:.1} s",
                    self.0.count,
                    self.0.span_ms as f64 / 1000.0
                )
            }
        }
        Flushed(self)
    }
}

impl fmt::Display for Suppressed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            return Ok(());
        }
        write!(f, " ({})", self.flushed())
    }
}

/// Logs a line through a [`LogLimit`]: `limited!(LIMIT, now, "format", args...)` writes it at
/// the limit's level if the limit admits it at `now`, with
/// `" (N more like this suppressed in the last S s)"` appended when N > 0, and otherwise
/// only counts it. Nothing is formatted for a suppressed line or a disabled level.
macro_rules! limited {
    ($limit:expr, $now:expr, $($arg:tt)+) => {{
        let limit: &$crate::server::log_limit::LogLimit = &$limit;
        if log::log_enabled!(limit.level()) {
            if let Some(suppressed) = limit.admit($now) {
                log::log!(limit.level(), "{}{}", format_args!($($arg)+), suppressed);
            }
        }
    }};
}
pub(crate) use limited;

#[cfg(test)]
mod tests {
    use super::*;

    fn limit() -> LogLimit {
        LogLimit::new(Level::Warn, module_path!(), "test events", INTERVAL)
    }

    /// Tests' instants count from the epoch itself, so that `at(ms)` is `ms` for every limit
    /// whichever test set the epoch.
    fn at(ms: u64) -> Instant {
        *EPOCH.get_or_init(Instant::now) + Duration::from_millis(ms)
    }

    #[test]
    fn one_line_per_interval_reports_what_it_suppressed() {
        let limit = limit();
        let admitted = |count, span_ms| Some(Suppressed { count, span_ms });
        assert_eq!(limit.admit(at(0)), admitted(0, 0));
        for ms in [1, 10, 500, 999] {
            assert_eq!(limit.admit(at(ms)), None, "{ms} ms");
        }
        assert_eq!(limit.admit(at(1000)), admitted(4, 1000));
        assert_eq!(limit.admit(at(1500)), None);
        assert_eq!(limit.admit(at(5000)), admitted(1, 4000));
        assert_eq!(limit.admit(at(6000)), admitted(0, 1000));
    }

    #[test]
    fn flush_takes_the_count_only_once_the_interval_has_passed() {
        let limit = limit();
        assert_eq!(limit.take_pending(at(0)), None, "nothing written yet");
        assert!(limit.admit(at(0)).is_some());
        assert_eq!(limit.take_pending(at(2000)), None, "nothing suppressed");
        assert_eq!(limit.admit(at(2000)).map(|s| s.count), Some(0));
        assert_eq!(limit.admit(at(2100)), None);
        assert_eq!(limit.admit(at(2200)), None);
        assert_eq!(limit.take_pending(at(2999)), None, "too soon");
        let flushed = Suppressed {
            count: 2,
            span_ms: 1000,
        };
        assert_eq!(limit.take_pending(at(3000)), Some(flushed));
        assert_eq!(limit.take_pending(at(9000)), None, "taken");
        // The flushed line counts as a line written: the next event waits an interval.
        assert_eq!(limit.admit(at(3500)), None);
        assert_eq!(limit.admit(at(4000)).map(|s| s.count), Some(1));
    }

    #[test]
    fn suppressed_count_is_appended_only_when_there_is_one() {
        let none = Suppressed {
            count: 0,
            span_ms: 1000,
        };
        assert_eq!(none.to_string(), "");
        let some = Suppressed {
            count: 2998,
            span_ms: 1234,
        };
        assert_eq!(
            some.to_string(),
            " (2998 more like this suppressed in the last 1.2 s)"
        );
        assert_eq!(
            some.flushed().to_string(),
            "2998 more like this suppressed in the last 1.2 s"
        );
    }

    #[test]
    fn threads_sharing_a_limit_lose_no_event() {
        static SHARED: LogLimit =
            LogLimit::new(Level::Warn, module_path!(), "test events", INTERVAL);
        let written: u64 = std::thread::scope(|s| {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let mut reported = 0;
                        for ms in 0..2_000u64 {
                            if let Some(sup) = SHARED.admit(at(ms)) {
                                reported += 1 + sup.count;
                            }
                        }
                        reported
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().expect("thread")).sum()
        });
        let pending = SHARED.take_pending(at(10_000)).map_or(0, |s| s.count);
        assert_eq!(written + pending, 4 * 2_000);
    }
}
