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
//! METHODS request (method 4): empty payload
//! METHODS response:           UTF-8 text, one line per registered method, ordered by
//!                             service id then method id:
//!                             +---------+-----+--------+-----+------+-----+
//!                             | service | ' ' | method | ' ' | name | ' ' |
//!                             +---------+-----+--------+-----+------+-----+
//!                             +---------+-----+----------+-----+
//!                             | request | ' ' | response | LF  |   ... repeated
//!                             +---------+-----+----------+-----+
//!                             service, method: decimal, 0 to 65535; name: 1 to 128
//!                             printable ASCII bytes but space; request, response: the
//!                             encodings' names ([`Message::FORMAT`]: bytes, utf8, cbor ...)
//! ```
//!
//! The STATS names and their meaning are those of
//! [`Stats::snapshot`](crate::stats::Stats::snapshot). A text report in the style of Redis's
//! `INFO` and memcached's `stats` is readable by eye and by any language. The report is about
//! 2.9 KB (more as counters grow), so a server configured with a `max_body_len` below about
//! 3 KiB answers STATS with RESOURCE_EXHAUSTED.
//!
//! METHODS is the server's reflection (gRPC's server reflection does the same job with
//! protobuf descriptors): it lets a generic client list what a server serves and build
//! requests for methods it has no types for, from the encodings' names.
//!
//! AUTH and WHOAMI are answered by the connection itself (it owns the identity), before the
//! router and its access control: see [`crate::connection`]'s `auth` rules and
//! `proto-spec/SERVICES.md`.

use bytes::{BufMut, Bytes};

use crate::auth::{Identity, IdentitySource};
use crate::proto::Status;
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

/// METHODS (method 4): the server's reflection, every method it serves (admin's own too),
/// with each method's request and response encodings. Subject to access control like STATS.
pub const METHODS: Method<(), MethodList> = Method::new(SERVICE, 4, "admin.Methods");

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
    const FORMAT: &'static str = "utf8";

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

/// One line of the answer to METHODS: a method a server serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodEntry {
    /// Service id.
    pub service: u16,
    /// Method id.
    pub method: u16,
    /// The method's name, by convention `"service.Method"`.
    pub name: String,
    /// The request's encoding ([`Message::FORMAT`]): `empty`, `bytes`, `utf8`, `bool`, an
    /// integer type (`u32` ...), `cbor`, `json` or `custom`; a client shows a name it does not
    /// know as is and treats the payload as bytes.
    pub request: String,
    /// The response's encoding, as `request`.
    pub response: String,
}

/// The answer to METHODS: the methods a server serves, ordered by service then method id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MethodList(pub Vec<MethodEntry>);

impl MethodList {
    /// The entry named `name`, if the server serves it.
    pub fn find(&self, name: &str) -> Option<&MethodEntry> {
        self.0.iter().find(|m| m.name == name)
    }

    /// The list a router serves ([`Router::methods`]).
    pub fn of(router: &Router) -> Self {
        MethodList(
            router
                .methods()
                .into_iter()
                .map(|m| MethodEntry {
                    service: m.service,
                    method: m.method,
                    name: m.name.to_string(),
                    request: m.request.to_string(),
                    response: m.response.to_string(),
                })
                .collect(),
        )
    }
}

impl Message for MethodList {
    const FORMAT: &'static str = "utf8";

    fn encode<B: BufMut>(&self, dst: &mut B) -> Result<(), MessageError> {
        for m in &self.0 {
            let fields = [m.name.as_str(), &m.request, &m.response];
            if let Some(bad) = fields.iter().find(|f| !is_token(f)) {
                return Err(MessageError::invalid(format!(
                    "{bad:?} is not a METHODS field (printable ASCII, no spaces)"
                )));
            }
            let line = format!(
                "{} {} {} {} {}\n",
                m.service, m.method, m.name, m.request, m.response
            );
            dst.put_slice(line.as_bytes());
        }
        Ok(())
    }

    fn decode(src: Bytes) -> Result<Self, MessageError> {
        let text = std::str::from_utf8(&src)
            .map_err(|_| MessageError::invalid("method list is not UTF-8"))?;
        let body = if text.is_empty() {
            text
        } else {
            text.strip_suffix('\n')
                .ok_or_else(|| MessageError::invalid("method list does not end with LF"))?
        };
        let mut entries = Vec::new();
        for line in body.split('\n').filter(|_| !body.is_empty()) {
            let bad = || MessageError::invalid(format!("bad METHODS line {line:?}"));
            if ![line.split(' ').next(), line.split(' ').nth(1)]
                .iter()
                .all(|n| n.is_some_and(is_decimal))
            {
                return Err(bad());
            }
            let fields: Vec<&str> = line.split(' ').collect();
            let [service, method, name, request, response] = fields[..] else {
                return Err(bad());
            };
            if ![name, request, response].iter().all(|f| is_token(f)) {
                return Err(bad());
            }
            entries.push(MethodEntry {
                service: service.parse().map_err(|_| bad())?,
                method: method.parse().map_err(|_| bad())?,
                name: name.to_string(),
                request: request.to_string(),
                response: response.to_string(),
            });
        }
        Ok(MethodList(entries))
    }
}

/// Whether `n` is a decimal number as SERVICES.md 0.5 writes one: digits, no sign, no
/// leading zero.
fn is_decimal(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && (n == "0" || !n.starts_with('0'))
}

/// Whether `field` is 1 or more printable ASCII bytes, none a space.
fn is_token(field: &str) -> bool {
    !field.is_empty() && field.bytes().all(|b| b.is_ascii_graphic())
}

/// Registers the admin service's methods on `router`: STATS reporting `stats` (summed over
/// the server's event loops) and METHODS listing the router's methods as they are once this
/// returns. AUTH and WHOAMI are registered so that reflection lists them; a server's
/// connection answers them before the router (their handlers here answer
/// FAILED_PRECONDITION, for [`Router::call`] outside a server).
pub fn register(router: &mut Router, stats: ServerStats) {
    register_reporting(router, move || stats.snapshot());
}

/// [`register`], with STATS answered by `report` (for a server whose counters are made once
/// its router, and so the admin service, is complete).
pub(crate) fn register_reporting(
    router: &mut Router,
    report: impl Fn() -> Vec<(String, u64)> + Send + Sync + 'static,
) {
    router.register(STATS, move |_, ()| Ok(StatsReport(report())));
    let by_connection = |name: &str| {
        Status::failed_precondition(format!(
            "{name} is answered by a server's connection, not by the router"
        ))
    };
    router.register(AUTH, move |_, _: Bytes| Err(by_connection(AUTH.name)));
    router.register(WHOAMI, move |_, ()| Err(by_connection(WHOAMI.name)));
    // The list includes METHODS itself: it is registered below with the list built here.
    let mut list = MethodList::of(router);
    list.0.push(MethodEntry {
        service: SERVICE,
        method: METHODS.method,
        name: METHODS.name.to_string(),
        request: <() as Message>::FORMAT.to_string(),
        response: MethodList::FORMAT.to_string(),
    });
    list.0.sort_by_key(|m| (m.service, m.method));
    let mut encoded = Vec::new();
    // Every name passed Router::check, and the formats are the library's tokens.
    let reply = match list.encode(&mut encoded) {
        Ok(()) => Ok(Bytes::from(encoded)),
        Err(err) => Err(Status::internal(format!("method list: {err}"))),
    };
    router.register_encoded(METHODS, move |_, (), out| match &reply {
        Ok(bytes) => {
            out.extend_from_slice(bytes);
            Ok(())
        }
        Err(status) => Err(status.clone()),
    });
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
    fn methods_lists_every_route_with_its_encodings_and_itself() {
        let mut router = Router::new();
        crate::echo::register(&mut router);
        const HALVE: Method<u32, crate::service::Cbor<Vec<u8>>> = Method::new(7, 2, "math.Halve");
        router.register(HALVE, |_, n: u32| Ok(crate::service::Cbor(vec![n as u8])));
        register(&mut router, ServerStats::new(Vec::new()));
        let list = router.call(&METHODS, &()).expect("METHODS answers");
        let names: Vec<&str> = list.0.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "admin.Stats",
                "admin.Auth",
                "admin.WhoAmI",
                "admin.Methods",
                "echo.Echo",
                "math.Halve"
            ]
        );
        let halve = list.find("math.Halve").expect("listed");
        assert_eq!(
            (halve.service, halve.method, halve.request.as_str()),
            (7, 2, "u32")
        );
        assert_eq!(halve.response, "cbor");
        let mut wire = Vec::new();
        list.encode(&mut wire).expect("encodes");
        assert!(wire.ends_with(b"7 2 math.Halve u32 cbor\n"));
        assert_eq!(MethodList::decode(Bytes::from(wire)), Ok(list));
        // AUTH and WHOAMI are listed, and answered by a connection, not the router.
        let auth = router.call(&AUTH, &Bytes::from_static(b"t")).unwrap_err();
        assert_eq!(auth.code, crate::proto::Code::FAILED_PRECONDITION);
    }

    #[test]
    fn a_method_list_with_a_bad_line_does_not_decode() {
        for bad in [
            &b"1 1 echo.Echo bytes\n"[..],
            b"1 1 echo.Echo bytes bytes extra\n",
            b"x 1 echo.Echo bytes bytes\n",
            b"70000 1 echo.Echo bytes bytes\n",
            b"1 1  bytes bytes\n",
            b"1 1 echo\x01 bytes bytes\n",
            b"\xff\n",
            b"+1 1 echo.Echo bytes bytes\n",
            b"1 01 echo.Echo bytes bytes\n",
            b"1 1 echo.Echo bytes bytes",
            b"1 1 echo.Echo bytes bytes\r\n",
        ] {
            assert!(
                MethodList::decode(Bytes::from_static(bad)).is_err(),
                "{bad:?}"
            );
        }
        let mut out = Vec::new();
        let spaced = MethodList(vec![MethodEntry {
            service: 1,
            method: 1,
            name: "two words".into(),
            request: "bytes".into(),
            response: "bytes".into(),
        }]);
        assert!(spaced.encode(&mut out).is_err());
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
