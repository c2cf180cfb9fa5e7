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
//! AUTH request (method 2):    the token's bytes (1 to 1,024)
//! AUTH response:              the identity's name, UTF-8
//! WHOAMI request (method 3):  empty payload
//! WHOAMI response:
//!                             +--------+--------------------------+
//!                             | source | name (UTF-8, rest of it) |
//!                             +--------+--------------------------+
//!                             source: u8, 0 anonymous (name empty), 1 certificate, 2 token,
//!                             3 set by a custom authenticator
//! ```
//!
//! The STATS names and their meaning are those of
//! [`Stats::snapshot`](crate::stats::Stats::snapshot). A text report in the style of Redis's
//! `INFO` and memcached's `stats` is readable by eye and by any language. The report is about
//! 2.9 KB (more as counters grow), so a server configured with a `max_body_len` below about
//! 3 KiB answers STATS with RESOURCE_EXHAUSTED.
//!
//! AUTH and WHOAMI are answered by the connection itself (it owns the identity), before the
//! router and its access control: see [`crate::connection`]'s `auth` rules and
//! `proto-spec/SERVICES.md`.

use bytes::{BufMut, Bytes};

use crate::auth::{Identity, IdentitySource};
use crate::service::{Message, MessageError, Method, Router};
use crate::stats::ServerStats;

/// Service id of the admin service: 0 (reserved; a user's handlers for it are replaced).
pub const SERVICE: u16 = 0;

/// STATS (method 1): every counter and gauge of the server.
pub const STATS: Method<(), StatsReport> = Method::new(SERVICE, 1, "admin.Stats");

/// AUTH (method 2): gives the connection the identity a token proves, once per connection
/// (Redis's `AUTH`). Request: the token's bytes, 1 to [`MAX_TOKEN_LEN`]. Answers: OK with the
/// identity's name; UNAUTHENTICATED for a token that proves nothing (the identity is
/// unchanged; the [`MAX_AUTH_FAILURES`](crate::connection::MAX_AUTH_FAILURES)th failure on a
/// connection closes it with ERROR UNAUTHENTICATED); FAILED_PRECONDITION when the server has
/// no authenticator.
pub const AUTH: Method<Bytes, String> = Method::new(SERVICE, 2, "admin.Auth");

/// WHOAMI (method 3): the connection's identity, if any. Allowed to every connection.
pub const WHOAMI: Method<(), WhoAmI> = Method::new(SERVICE, 3, "admin.WhoAmI");

/// Longest token AUTH accepts: 1,024 bytes (longer ones are refused like a wrong one).
pub const MAX_TOKEN_LEN: usize = 1024;

/// The answer to WHOAMI: how the connection got its identity, and its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhoAmI {
    /// The source byte as sent: 0 anonymous, 1 certificate, 2 token, 3 custom; a client
    /// accepts other values, from later versions, and shows them as a number
    /// (`proto-spec/SERVICES.md` Section 0.3). [`WhoAmI::source`] reads it.
    pub source_code: u8,
    /// The identity's name; empty when anonymous.
    pub name: String,
}

impl WhoAmI {
    /// Appends the answer's encoding, which cannot fail: the source byte, then the name.
    pub(crate) fn put<B: BufMut>(&self, dst: &mut B) {
        dst.put_u8(self.source_code);
        dst.put_slice(self.name.as_bytes());
    }

    /// The answer for `identity` (`None`: anonymous).
    pub fn of(identity: Option<&Identity>) -> Self {
        WhoAmI {
            source_code: identity.map_or(0, |id| id.source().wire()),
            name: identity.map_or_else(String::new, |id| id.name().to_string()),
        }
    }

    /// How the connection got its identity; `None` for a connection with no identity
    /// (anonymous), and for a source this version does not know (see `source_code`).
    pub fn source(&self) -> Option<IdentitySource> {
        IdentitySource::from_wire(self.source_code)
    }
}

impl Message for WhoAmI {
    fn encode<B: BufMut>(&self, dst: &mut B) -> Result<(), MessageError> {
        self.put(dst);
        Ok(())
    }

    fn decode(src: Bytes) -> Result<Self, MessageError> {
        let (&source_code, name) = src
            .split_first()
            .ok_or_else(|| MessageError::invalid("empty WHOAMI answer"))?;
        let name = std::str::from_utf8(name)
            .map_err(|_| MessageError::invalid("identity name is not UTF-8"))?
            .to_string();
        Ok(WhoAmI { source_code, name })
    }
}

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
    fn encode<B: BufMut>(&self, dst: &mut B) -> Result<(), MessageError> {
        for (name, value) in &self.0 {
            dst.put_slice(name.as_bytes());
            dst.put_u8(b' ');
            dst.put_slice(value.to_string().as_bytes());
            dst.put_u8(b'\n');
        }
        Ok(())
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
    fn whoami_keeps_a_source_it_does_not_know() {
        let later = WhoAmI::decode(Bytes::from_static(b"\x09svc")).expect("decodes");
        assert_eq!(
            (later.source(), later.source_code, later.name.as_str()),
            (None, 9, "svc")
        );
        let mut again = Vec::new();
        later.encode(&mut again).expect("encodes");
        assert_eq!(again, b"\x09svc");
        let anonymous = WhoAmI::decode(Bytes::from_static(b"\x00")).expect("decodes");
        assert_eq!((anonymous.source(), anonymous.source_code), (None, 0));
        assert!(WhoAmI::decode(Bytes::new()).is_err());
    }

    #[test]
    fn report_round_trips_and_rejects_garbage() {
        let report = StatsReport(vec![("frames_in".into(), 7), ("closed_io".into(), 0)]);
        let mut buf = Vec::new();
        report.encode(&mut buf).expect("encodes");
        assert_eq!(buf, b"frames_in 7\nclosed_io 0\n");
        let back = StatsReport::decode(Bytes::from(buf)).expect("decodes");
        assert_eq!(back, report);
        assert_eq!(back.get("frames_in"), Some(7));
        assert!(StatsReport::decode(Bytes::from_static(b"frames_in seven\n")).is_err());
        assert!(StatsReport::decode(Bytes::from_static(b"novalue\n")).is_err());
    }
}
