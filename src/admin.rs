//! The built-in admin service: service id 0, which every courier server answers.
//!
//! Wire layout (`proto-spec/SERVICES.md`, "admin"):
//!
//! ```text
//! STATS request (method 1):   empty payload
//! STATS response:             UTF-8 text, one line per counter, in a fixed order:
//!                             +------+-----+---------------+-----+
//!                             | name | ' ' | decimal value | LF  |  ... repeated
//!                             +------+-----+---------------+-----+
//!                             name: [a-z0-9_A-Z]+, value: 0 to 2^64-1
//! ```
//!
//! The names and their meaning are those of [`Stats::snapshot`](crate::stats::Stats::snapshot). A text report in the style
//! of Redis's `INFO` and memcached's `stats` is readable by eye and by any language. The
//! report is about 1.3 KiB (more as counters grow), so a server configured with a
//! `max_body_len` below about 2 KiB answers STATS with RESOURCE_EXHAUSTED.

use bytes::{BufMut, Bytes};

use crate::service::{Message, MessageError, Method, Router};
use crate::stats::ServerStats;

/// Service id of the admin service: 0 (reserved; a user's handlers for it are replaced).
pub const SERVICE: u16 = 0;

/// STATS (method 1): every counter and gauge of the server.
pub const STATS: Method<(), StatsReport> = Method::new(SERVICE, 1, "admin.Stats");

/// The answer to STATS: counters by name, in the server's order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsReport(pub Vec<(String, u64)>);

impl StatsReport {
    /// The value of the counter `name`, if the report has it.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// The value of `name`, or 0 when absent (a counter an older server does not know).
    pub fn value(&self, name: &str) -> u64 {
        self.get(name).unwrap_or(0)
    }
}

impl Message for StatsReport {
    fn encode<B: BufMut>(&self, dst: &mut B) {
        for (name, value) in &self.0 {
            dst.put_slice(name.as_bytes());
            dst.put_u8(b' ');
            dst.put_slice(value.to_string().as_bytes());
            dst.put_u8(b'\n');
        }
    }

    fn decode(src: Bytes) -> Result<Self, MessageError> {
        let text = std::str::from_utf8(&src)
            .map_err(|_| MessageError::invalid("stats report is not UTF-8"))?;
        let mut entries = Vec::new();
        for line in text.lines() {
            let (name, value) = line
                .split_once(' ')
                .ok_or_else(|| MessageError::invalid(format!("bad stats line {line:?}")))?;
            let value = value
                .parse()
                .map_err(|_| MessageError::invalid(format!("bad stats value in {line:?}")))?;
            entries.push((name.to_string(), value));
        }
        Ok(StatsReport(entries))
    }
}

/// Registers the admin service's methods on `router`, reporting `stats` (summed over the
/// server's event loops).
pub fn register(router: &mut Router, stats: ServerStats) {
    router.register(STATS, move |_, ()| Ok(StatsReport(stats.snapshot())));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips_and_rejects_garbage() {
        let report = StatsReport(vec![("frames_in".into(), 7), ("closed_io".into(), 0)]);
        let mut buf = Vec::new();
        report.encode(&mut buf);
        assert_eq!(buf, b"frames_in 7\nclosed_io 0\n");
        let back = StatsReport::decode(Bytes::from(buf)).expect("decodes");
        assert_eq!(back, report);
        assert_eq!(back.get("frames_in"), Some(7));
        assert!(StatsReport::decode(Bytes::from_static(b"frames_in seven\n")).is_err());
        assert!(StatsReport::decode(Bytes::from_static(b"novalue\n")).is_err());
    }
}
