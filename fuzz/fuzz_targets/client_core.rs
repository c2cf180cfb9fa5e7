//! The sans-IO client core (plaintext) driven by an arbitrary sequence of operations: requests
//! (deadlines none, zero, sub-millisecond or whole; payloads up to past the body limit; with
//! or without metadata), PINGs, AUTHs, abandons, takes (one by one and `take_all_done`),
//! time steps, timeouts, partial writes, ends of stream, closes, socket errors, and server
//! bytes fed in chunks. It never panics, and after every step:
//!
//! - the core holds exactly the calls started and not taken or abandoned (its `Debug` count,
//!   compared as [`Model::check`] says), and waits for exactly those of them not yet reported by `completed()`, which reports
//!   each call once; a take gives an outcome exactly for a reported call;
//! - outcomes agree with what happened: a response names its call, a timeout comes at or
//!   after its deadline, UNAVAILABLE only above a GOAWAY's last id, a PONG's round trip is
//!   no longer than the time since its PING;
//! - ids are handed out one by one, skipping 0, and a refused call takes none and queues
//!   nothing;
//! - the receive buffer holds at most one frame (header + the 4096-byte body limit);
//! - the bytes queued to send grow only by the frames the target asked for (a REQUEST or PING
//!   of exactly its size) and, while server bytes are processed, by PONGs: no more of them
//!   than the PINGs the server sent; everything written decodes as REQUESTs and PINGs with
//!   the ids the core gave, and PONGs;
//! - after `handle_timeout(now)` no deadline at or before `now` is left.
#![no_main]

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use courier_rpc::client::{ClientCore, ClientError, CoreConfig};
use courier_rpc::proto::{Code, Decoder, Frame, Metadata, HEADER_LEN};
use courier_rpc::service::Method;
use libfuzzer_sys::fuzz_target;

const MAX_BODY: u32 = 4096;
/// The most calls the target keeps at once (enough for the core to rebuild its deadline heap,
/// which it does past 64 stale entries).
const MAX_CALLS: usize = 200;
const ECHO: Method<Bytes, Bytes> = Method::new(1, 1, "echo.Echo");
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// admin.Auth's route (`proto-spec/SERVICES.md`).
const AUTH_ROUTE: (u16, u16) = (0, 2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Request,
    Ping,
    Auth,
}

#[derive(Debug)]
struct Call {
    kind: Kind,
    sent: Instant,
    deadline: Instant,
    /// Reported by `completed()`.
    ended: bool,
}

/// How many calls the core holds, from its `Debug` ("calls: N, waiting: ..."): formatted into
/// a reused buffer, and only as far as the name of the field after it (the writer stops the
/// formatting there).
fn held_calls(core: &ClientCore, buf: &mut String) -> usize {
    struct UpToCalls<'a>(&'a mut String);
    impl fmt::Write for UpToCalls<'_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            if s == "waiting" {
                // The field after `calls`: enough.
                return Err(fmt::Error);
            }
            self.0.push_str(s);
            Ok(())
        }
    }
    buf.clear();
    let _ = write!(UpToCalls(buf), "{core:?}");
    let at = buf.find("calls: ").expect("Debug shows the calls") + "calls: ".len();
    buf[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a count")
}

/// The frames of `bytes`, which must be whole.
fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut buf = BytesMut::from(bytes);
    let mut decoder = Decoder::new(MAX_BODY);
    let mut out = Vec::new();
    while let Some(frame) = decoder.decode(&mut buf).expect("the core's frames decode") {
        out.push(frame);
    }
    assert!(buf.is_empty(), "the core queued part of a frame");
    out
}

/// The server's stream as the target reads it, to count its PINGs: every frame up to the
/// first fatal error (the core reads no further; past an ERROR frame or the end of the stream
/// it reads less, so the count is an upper bound).
struct ServerStream {
    buf: BytesMut,
    decoder: Decoder,
    broken: bool,
    pings: usize,
}

impl ServerStream {
    fn extend(&mut self, chunk: &[u8]) {
        if self.broken {
            return;
        }
        self.buf.extend_from_slice(chunk);
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(Frame::Ping(_))) => self.pings += 1,
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(e) if !e.is_fatal() => {}
                Err(_) => {
                    self.broken = true;
                    self.buf.clear();
                    return;
                }
            }
        }
    }
}

/// The next argument byte (0 once the input is used up).
fn byte(rest: &mut &[u8]) -> u8 {
    let (&b, tail) = rest.split_first().unwrap_or((&0, &[]));
    *rest = tail;
    b
}

struct Model {
    core: ClientCore,
    now: Instant,
    calls: BTreeMap<u64, Call>,
    /// Every id the core handed out.
    issued: HashSet<u64>,
    /// The server's stream as fed so far (to count its PINGs).
    server: ServerStream,
    /// PONGs the core queued so far.
    pongs: usize,
    /// The bytes written, decoded as they go out.
    wire: BytesMut,
    wire_decoder: Decoder,
    /// A buffer for the core's `Debug`.
    debug: String,
}

impl Model {
    fn outgoing(&mut self) -> usize {
        self.core.transmit().len()
    }

    /// Runs `start`, which queues one frame of `frame_len` bytes on success, and checks the
    /// id, the bytes queued and the call the core now holds.
    fn start(
        &mut self,
        kind: Kind,
        wait: Duration,
        frame_len: usize,
        start: impl FnOnce(&mut ClientCore, Instant) -> Result<u64, ClientError>,
    ) {
        if self.calls.len() >= MAX_CALLS {
            // Every step checks every call: a bounded table keeps a step cheap.
            return;
        }
        let before = self.outgoing();
        let expected_id = self.core.next_request_id();
        assert_ne!(expected_id, 0);
        match start(&mut self.core, self.now) {
            Ok(id) => {
                assert_eq!(id, expected_id);
                let next = id.wrapping_add(1).max(1);
                assert_eq!(self.core.next_request_id(), next);
                assert!(self.issued.insert(id), "id {id} handed out twice");
                let out = self.core.transmit();
                assert_eq!(out.len(), before + frame_len, "one frame of its size");
                let frame = frames(&out[before..]);
                match (&frame[..], kind) {
                    ([Frame::Request(r)], Kind::Request) => {
                        assert_eq!((r.request_id, r.service, r.method), (id, 1, 1));
                    }
                    ([Frame::Request(r)], Kind::Auth) => {
                        assert_eq!((r.request_id, r.service, r.method), (id, 0, 2));
                        assert_eq!(r.deadline_ms, 0);
                    }
                    ([Frame::Ping(p)], Kind::Ping) => assert_eq!(*p, id),
                    (other, _) => panic!("{kind:?} queued {other:?}"),
                }
                let deadline = self.now.checked_add(wait).unwrap_or(self.now);
                assert_eq!(self.core.deadline(id), Some(deadline));
                self.calls.insert(
                    id,
                    Call {
                        kind,
                        sent: self.now,
                        deadline,
                        ended: false,
                    },
                );
            }
            Err(_) => {
                assert_eq!(self.outgoing(), before, "a refused call queues nothing");
                assert_eq!(self.core.next_request_id(), expected_id, "nor takes an id");
            }
        }
    }

    /// Feeds `chunk` as server bytes; the only bytes it may queue are PONGs, one per PING.
    fn receive(&mut self, chunk: &[u8]) {
        let before = self.outgoing();
        self.core.receive_buffer().extend_from_slice(chunk);
        let result = self.core.handle_received(self.now);
        if result.is_err() {
            assert!(self.core.check_usable().is_err(), "an error breaks it");
        }
        self.server.extend(chunk);
        let out = self.core.transmit();
        assert!(out.len() >= before);
        for frame in frames(&out[before..]) {
            assert!(matches!(frame, Frame::Pong(_)), "only PONGs: {frame:?}");
            self.pongs += 1;
        }
        assert!(
            self.pongs <= self.server.pings,
            "a PONG for every PING, no more"
        );
    }

    /// Writes `n` bytes of what the core queued; they decode as the core's frames.
    fn write(&mut self, n: usize) {
        let out = self.core.transmit();
        let n = n.min(out.len());
        self.wire.extend_from_slice(&out[..n]);
        self.core.advance_transmit(n);
        while let Some(frame) = self
            .wire_decoder
            .decode(&mut self.wire)
            .expect("what the core writes decodes")
        {
            match frame {
                Frame::Request(r) => {
                    assert!(self.issued.contains(&r.request_id));
                    assert!(
                        (r.service, r.method) == (ECHO.service, ECHO.method)
                            || (r.service, r.method) == AUTH_ROUTE
                    );
                }
                Frame::Ping(id) => assert!(self.issued.contains(&id)),
                Frame::Pong(_) => {}
                other => panic!("a client sends no {other:?}"),
            }
        }
    }

    /// Takes call `id`'s outcome: there is one exactly when `completed()` reported it.
    fn take(&mut self, id: u64) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let (kind, sent, deadline, ended) = (call.kind, call.sent, call.deadline, call.ended);
        let outcome: Option<Result<(), ClientError>> = match kind {
            Kind::Request => self.core.take_response(id).map(|r| {
                r.map(|response| {
                    assert_eq!(response.request_id, id);
                })
            }),
            Kind::Ping => self.core.take_pong(id).map(|r| {
                r.map(|rtt| {
                    assert!(rtt <= self.now.duration_since(sent));
                })
            }),
            Kind::Auth => self.core.finish_auth(id).inspect(|r| {
                if r.is_ok() {
                    assert!(self.core.identity().is_some());
                }
            }),
        };
        assert_eq!(outcome.is_some(), ended, "call {id}: {outcome:?}");
        let Some(outcome) = outcome else {
            return;
        };
        self.calls.remove(&id);
        match outcome {
            Err(ClientError::Timeout) => assert!(self.now >= deadline, "timed out early"),
            Err(ClientError::Status(status)) => {
                assert_eq!(status.code, Code::UNAVAILABLE);
                assert_ne!(kind, Kind::Ping, "GOAWAY ends requests (AUTH is one) only");
                let last = self
                    .core
                    .goaway_last_id()
                    .expect("UNAVAILABLE after a GOAWAY");
                assert!(id > last);
            }
            _ => {}
        }
    }

    /// Everything that must hold between steps. The count of calls the core holds comes from
    /// its `Debug`, which costs more than the rest: it is compared when `count` (after every
    /// step that starts, takes or forgets a call, every 16th step and the last). An entry the
    /// model does not know of can only leave the core by such a step, so it is seen.
    fn check(&mut self, count: bool) {
        for id in self.core.completed().collect::<Vec<_>>() {
            assert!(self.issued.contains(&id), "completed {id}, never started");
            if let Some(call) = self.calls.get_mut(&id) {
                assert!(!call.ended, "{id} reported twice");
                call.ended = true;
            }
        }
        if count {
            assert_eq!(held_calls(&self.core, &mut self.debug), self.calls.len());
        }
        let waiting = self.calls.values().filter(|c| !c.ended).count();
        assert_eq!(self.core.waiting(), waiting);
        for (&id, call) in &self.calls {
            assert!(self.core.holds(id));
            assert_eq!(self.core.deadline(id).is_some(), !call.ended);
        }
        assert!(self.core.receive_buffer().len() <= HEADER_LEN + MAX_BODY as usize);
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&config, mut rest)) = input.split_first() else {
        return;
    };
    // Bit 0: ids start just below the wrap.
    let first_id = if config & 1 == 1 { u64::MAX - 2 } else { 1 };
    let core_config = CoreConfig::default()
        .with_max_body_len(MAX_BODY)
        .with_default_timeout(DEFAULT_TIMEOUT);
    let peer = SocketAddr::from(([127, 0, 0, 1], 1));
    let core = ClientCore::new(&core_config, peer, first_id).expect("a plaintext core");
    let mut m = Model {
        core,
        now: Instant::now(),
        calls: BTreeMap::new(),
        issued: HashSet::new(),
        server: ServerStream {
            buf: BytesMut::new(),
            decoder: Decoder::new(MAX_BODY),
            broken: false,
            pings: 0,
        },
        pongs: 0,
        wire: BytesMut::new(),
        wire_decoder: Decoder::new(MAX_BODY),
        debug: String::new(),
    };
    // Each step: an op byte (low nibble: the op; high nibble: its variant), then its
    // arguments.
    let mut step = 0u32;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        step = step.wrapping_add(1);
        let high = op >> 4;
        match op & 0x0f {
            0 | 1 => {
                // Server bytes: a length byte (times 32 for op 1), then that many.
                let n = usize::from(byte(&mut rest)) * if op & 0x0f == 1 { 32 } else { 1 };
                let n = n.min(rest.len());
                let (chunk, tail) = rest.split_at(n);
                rest = tail;
                m.receive(chunk);
            }
            2 | 3 => {
                // A request: deadline byte, payload length byte (times 20: past 4096 too).
                let d = byte(&mut rest);
                let len = usize::from(byte(&mut rest)) * 20;
                let deadline = match d {
                    0 => None,
                    255 => Some(Duration::ZERO),
                    d if high & 1 == 1 => Some(Duration::from_micros(u64::from(d) * 700)),
                    d => Some(Duration::from_millis(u64::from(d) * 4)),
                };
                let metadata = if op & 0x0f == 3 {
                    Metadata::from_pairs([("trace", "fuzz"), ("k", "v")]).expect("metadata")
                } else {
                    Metadata::new()
                };
                let payload = Bytes::from(vec![high; len]);
                let frame_len = HEADER_LEN + metadata.encoded_len() + len;
                m.start(
                    Kind::Request,
                    deadline.unwrap_or(DEFAULT_TIMEOUT),
                    frame_len,
                    |core, now| core.start_request(&ECHO, &payload, deadline, &metadata, now),
                );
            }
            4 => {
                let timeout = Duration::from_millis(u64::from(byte(&mut rest)) * 4);
                m.start(Kind::Ping, timeout, HEADER_LEN, |core, now| {
                    core.start_ping(timeout, now)
                });
            }
            5 => {
                let token = vec![b't'; usize::from(byte(&mut rest))];
                let timeout = Duration::from_millis(u64::from(high) * 50);
                m.start(
                    Kind::Auth,
                    timeout,
                    HEADER_LEN + token.len(),
                    |core, now| core.start_auth(&token, timeout, now),
                );
            }
            6 | 7 => {
                // A call chosen by index (or an id never handed out).
                let pick = usize::from(byte(&mut rest));
                let id = if m.calls.is_empty() || high == 15 {
                    m.core.next_request_id().wrapping_add(u64::from(high))
                } else {
                    *m.calls.keys().nth(pick % m.calls.len()).expect("in range")
                };
                if op & 0x0f == 6 {
                    m.core.abandon(id);
                    m.calls.remove(&id);
                } else {
                    m.take(id);
                }
            }
            8 => m.now += Duration::from_millis(u64::from(byte(&mut rest)) * (u64::from(high) + 1)),
            9 => {
                m.core.handle_timeout(m.now);
                if let Some(next) = m.core.next_timeout() {
                    assert!(next > m.now, "a deadline at or before now is left");
                }
            }
            10 => {
                let n = match byte(&mut rest) {
                    0 => usize::MAX,
                    n => usize::from(n) * 4,
                };
                m.write(n);
            }
            11 => {
                let _ = m.core.handle_eof();
                assert!(m.core.is_ended());
            }
            12 => {
                for (id, _) in m.core.take_all_done() {
                    let call = m.calls.remove(&id).expect("a call it held");
                    assert!(call.ended, "{id} was taken before it was reported");
                }
            }
            13 => {
                m.core.discard_unsent();
                assert!(!m.core.wants_transmit());
                // The cut stream ends here; a real driver closes the connection after it.
                m.wire.clear();
                m.wire_decoder = Decoder::new(MAX_BODY);
            }
            14 => m.core.close(),
            _ => m.core.handle_io_error(),
        }
        m.check(matches!(op & 0x0f, 2..=7 | 12) || step.is_multiple_of(16));
        if m.core.is_ended() {
            assert!(m.core.check_usable().is_err());
            assert_eq!(m.core.waiting(), 0, "nothing waits on an ended connection");
        }
    }
    m.check(true);
    // Everything still queued goes out and decodes.
    m.write(usize::MAX);
    assert!(m.wire.is_empty(), "a frame was cut short");
});
