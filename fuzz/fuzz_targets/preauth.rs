//! A server connection that requires authentication (a token table knowing `fuzz-token` as
//! `fuzzer`; an ACL allowing `fuzzer` only `echo.*`), fed an arbitrary mix of raw bytes and
//! well-formed AUTH (right or wrong token), echo (up to 40 KiB, across the 16 KiB pre-auth
//! limit), kv-like, WHOAMI and PING requests, in arbitrary reads, with ends of stream, time
//! steps, drains and partial flushes.
//!
//! Invariants, after every step:
//! - no handler runs for a connection without an identity, and the method the ACL does not
//!   allow never runs (each handler records a violation, then panics);
//! - while the connection has no identity, it buffers at most
//!   `PRE_AUTH_MAX_BODY + HEADER_LEN + READ_CHUNK` bytes of input;
//! - everything it writes decodes as frames, and nothing follows an ERROR frame;
//! - until the AUTH answer (OK, payload `fuzzer`) appears in the output, no RESPONSE is OK but
//!   WHOAMI's anonymous answer, and none has a status other than UNAUTHENTICATED or one a
//!   malformed REQUEST gets (DATA_LOSS, INVALID_ARGUMENT): no PERMISSION_DENIED, INTERNAL,
//!   UNIMPLEMENTED or DEADLINE_EXCEEDED, which would mean the router or a handler was reached;
//! - once that answer is out, the connection's identity is `fuzzer`.
//!
//! At the end (after the connection has been run until it has nothing left to do), for every
//! request this target built (ids answered more than once are skipped: raw bytes reused the
//! id): an echo or kv request answered before the AUTH answer got UNAUTHENTICATED; after it, an
//! echo got OK with exactly its payload and a kv request PERMISSION_DENIED; WHOAMI told the
//! identity of the moment; at most `MAX_AUTH_FAILURES - 1` AUTHs were answered
//! UNAUTHENTICATED (the last failure is answered with ERROR and the close).
//!
//! Input: steps of one op byte and its arguments. The op's low nibble picks the op; bits 4-5
//! cap the step's socket read (the connection's own limit, 1, 37 or 1000 bytes) and bits 6-7
//! the room of its flush (everything, nothing, 64 or 4096 bytes). A zero op byte followed by
//! a length and that many bytes is a receive step, as in the `connection` target.
#![no_main]

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use courier_rpc::admin;
use courier_rpc::auth::{Acl, TokenTable};
use courier_rpc::connection::{
    Authentication, Connection, ConnectionConfig, MAX_AUTH_FAILURES, PRE_AUTH_MAX_BODY, READ_CHUNK,
};
use courier_rpc::proto::{Code, Decoder, Encoder, Frame, Metadata, Status, HEADER_LEN};
use courier_rpc::service::{Context, Method, Router};
use courier_rpc::stats::Stats;
use libfuzzer_sys::fuzz_target;

const ECHO: Method<Bytes, Bytes> = Method::new(1, 1, "echo.Echo");
/// Registered, but the ACL does not allow it to `fuzzer`.
const KV_SET: Method<Bytes, Bytes> = Method::new(2, 1, "kv.Set");

const TOKEN: &[u8] = b"fuzz-token";
const NAME: &str = "fuzzer";

/// Request ids this target chooses: far from the small ids of the seed vectors.
const ID_BASE: u64 = 0x5eed_0000_0000_0000;
/// Largest echo payload built: 40 KiB, well past the pre-auth limit.
const MAX_ECHO: usize = 40 * 1024;
/// Bytes the client may write in one input, so that an input of many large echoes stays fast.
const MAX_WIRE: usize = 2 * 1024 * 1024;

/// A body limit above the pre-auth one, so that only the missing identity refuses a 40 KiB
/// echo.
fn config() -> ConnectionConfig {
    ConnectionConfig::default()
        .with_max_body_len(64 * 1024)
        .with_output_high_water(128 * 1024)
        .with_output_hard_cap(1024 * 1024)
        .with_max_in_flight(4)
        .with_max_frames_per_turn(8)
        .with_max_empty_frames(3)
}

thread_local! {
    /// Set by a handler that ran when it must not have.
    static VIOLATION: Cell<Option<&'static str>> = const { Cell::new(None) };
}

fn violation(what: &'static str) -> ! {
    VIOLATION.with(|v| v.set(Some(what)));
    panic!("{what}");
}

struct Fixture {
    router: Router,
    authentication: Arc<Authentication>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut tokens = TokenTable::new();
        tokens.insert_token(NAME, TOKEN);
        let acl = Acl::from_toml(&format!(
            "[[identity]]\nname = \"{NAME}\"\nallow = [\"echo.*\"]\n"
        ))
        .expect("the ACL parses");
        let mut router = Router::new();
        router.register(ECHO, |ctx: &Context, body: Bytes| {
            match ctx.identity.as_deref() {
                None => violation("echo ran before the connection had an identity"),
                Some(id) if id.name() != NAME => violation("echo ran for another identity"),
                Some(_) => Ok(body),
            }
        });
        router.register(
            KV_SET,
            |ctx: &Context, _body: Bytes| -> Result<Bytes, Status> {
                if ctx.identity.is_none() {
                    violation("kv.Set ran before the connection had an identity");
                }
                violation("kv.Set ran although the ACL does not allow it (PERMISSION_DENIED)")
            },
        );
        router.set_authorizer(Arc::new(acl));
        Fixture {
            router,
            authentication: Arc::new(Authentication {
                authenticator: Some(Arc::new(tokens)),
                required: true,
            }),
        }
    })
}

/// A socket that accepts at most `room` bytes, then would block.
struct Sink<'a> {
    out: &'a mut BytesMut,
    room: usize,
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.room);
        self.out.extend_from_slice(&buf[..n]);
        self.room -= n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The client's side of the socket: bytes written and not yet read by the server, and the
/// requests this target built among them.
struct Wire {
    bytes: Vec<u8>,
    read: usize,
    encoder: Encoder,
    next_id: u64,
    sent: HashMap<u64, Sent>,
}

impl Wire {
    fn pending(&self) -> usize {
        self.bytes.len() - self.read
    }

    /// Writes raw bytes, unless that would pass [`MAX_WIRE`].
    fn write(&mut self, bytes: &[u8]) {
        if self.bytes.len() + bytes.len() <= MAX_WIRE {
            self.bytes.extend_from_slice(bytes);
        }
    }

    /// Writes one well-formed REQUEST, unless that would pass [`MAX_WIRE`], and remembers it.
    fn request(&mut self, service: u16, method: u16, payload: &[u8], what: Sent) {
        if self.bytes.len() + HEADER_LEN + payload.len() > MAX_WIRE {
            return;
        }
        self.next_id += 1;
        let mut frame = BytesMut::new();
        self.encoder
            .encode_request_with(
                &mut frame,
                self.next_id,
                service,
                method,
                0,
                &Metadata::new(),
                |b| b.extend_from_slice(payload),
            )
            .expect("the request encodes");
        self.bytes.extend_from_slice(&frame);
        self.sent.insert(self.next_id, what);
    }
}

/// One read of the socket, of at most `cap` bytes.
struct Capped<'a> {
    wire: &'a mut Wire,
    cap: usize,
}

impl Read for Capped<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.cap).min(self.wire.pending());
        buf[..n].copy_from_slice(&self.wire.bytes[self.wire.read..self.wire.read + n]);
        self.wire.read += n;
        Ok(n)
    }
}

/// What this target sent with one of its request ids.
#[derive(Clone, Copy, Debug)]
enum Sent {
    Auth,
    Echo { len: usize, fill: u8 },
    Kv,
    WhoAmI,
}

/// A RESPONSE to one of this target's requests, and whether the AUTH answer preceded it.
struct Answer {
    id: u64,
    code: Code,
    payload: Bytes,
    authed: bool,
}

/// Reads the server's output as it comes.
struct Checker {
    decoder: Decoder,
    buf: BytesMut,
    /// The AUTH answer (OK, payload `fuzzer`) has been seen.
    authed: bool,
    /// An ERROR frame has been seen.
    ended: bool,
    answers: Vec<Answer>,
}

impl Checker {
    fn read(&mut self, sent: &HashMap<u64, Sent>) {
        loop {
            let frame = match self.decoder.decode(&mut self.buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(err) => panic!("server output does not decode: {err}"),
            };
            assert!(!self.ended, "{frame:?} follows an ERROR frame");
            match frame {
                Frame::Response(r) => {
                    if !self.authed {
                        let anonymous_whoami = r.code == Code::OK && r.payload[..] == [0];
                        let auth_ok = r.code == Code::OK && r.payload[..] == *NAME.as_bytes();
                        assert!(
                            anonymous_whoami
                                || auth_ok
                                || [
                                    Code::UNAUTHENTICATED,
                                    Code::DATA_LOSS,
                                    Code::INVALID_ARGUMENT
                                ]
                                .contains(&r.code),
                            "before authentication: {r:?}"
                        );
                        if auth_ok {
                            self.authed = true;
                            // This RESPONSE is the AUTH answer itself.
                            if sent.contains_key(&r.request_id) {
                                self.answers.push(Answer {
                                    id: r.request_id,
                                    code: r.code,
                                    payload: r.payload,
                                    authed: false,
                                });
                            }
                            continue;
                        }
                    }
                    if sent.contains_key(&r.request_id) {
                        self.answers.push(Answer {
                            id: r.request_id,
                            code: r.code,
                            payload: r.payload,
                            authed: self.authed,
                        });
                    }
                }
                Frame::Error { .. } => self.ended = true,
                _ => {}
            }
        }
    }

    /// The per-request checks, once everything has been read.
    fn finish(&self, sent: &HashMap<u64, Sent>) {
        let mut count: HashMap<u64, usize> = HashMap::new();
        for a in &self.answers {
            *count.entry(a.id).or_default() += 1;
        }
        let mut failures = 0;
        for a in self.answers.iter().filter(|a| count[&a.id] == 1) {
            let what = sent[&a.id];
            match what {
                Sent::Auth if a.code == Code::OK => {
                    assert_eq!(a.payload, NAME.as_bytes(), "AUTH answer names the identity")
                }
                Sent::Auth => {
                    assert_eq!(a.code, Code::UNAUTHENTICATED, "a failed AUTH's answer");
                    failures += 1;
                }
                Sent::Echo { .. } | Sent::Kv if !a.authed => assert_eq!(
                    a.code,
                    Code::UNAUTHENTICATED,
                    "{what:?} (id {:#x}) answered before the AUTH answer",
                    a.id
                ),
                Sent::Echo { len, fill } => {
                    assert_eq!(a.code, Code::OK, "echo after AUTH: {:?}", a.payload);
                    assert_eq!(a.payload.len(), len, "echo answer's length");
                    assert!(a.payload.iter().all(|&b| b == fill), "echo answer's bytes");
                }
                Sent::Kv => assert_eq!(
                    a.code,
                    Code::PERMISSION_DENIED,
                    "kv.Set after AUTH: {:?}",
                    a.payload
                ),
                Sent::WhoAmI => {
                    assert_eq!(a.code, Code::OK, "WHOAMI is always answered");
                    let mut expected = vec![if a.authed { 2 } else { 0 }];
                    if a.authed {
                        expected.extend_from_slice(NAME.as_bytes());
                    }
                    assert_eq!(a.payload[..], expected[..], "WHOAMI answer");
                }
            }
        }
        assert!(
            failures < usize::from(MAX_AUTH_FAILURES),
            "{failures} failed AUTHs answered with a RESPONSE; the {MAX_AUTH_FAILURES}th must \
             close the connection"
        );
    }
}

/// Takes `n` argument bytes from the front of `rest` (fewer at its end).
fn take<'a>(rest: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, tail) = rest.split_at(n.min(rest.len()));
    *rest = tail;
    head
}

fn arg(rest: &mut &[u8]) -> u8 {
    take(rest, 1).first().copied().unwrap_or(0)
}

fuzz_target!(|input: &[u8]| {
    let fixture = fixture();
    VIOLATION.with(|v| v.set(None));
    let start = Instant::now();
    let mut now = start;
    let mut conn = Connection::new(config(), Arc::new(Stats::new()), now);
    conn.set_authentication(fixture.authentication.clone());
    let mut wire = Wire {
        bytes: Vec::new(),
        read: 0,
        encoder: Encoder::new(u32::MAX),
        next_id: ID_BASE,
        sent: HashMap::new(),
    };
    let mut checker = Checker {
        decoder: Decoder::new(u32::MAX),
        buf: BytesMut::new(),
        authed: false,
        ended: false,
        answers: Vec::new(),
    };

    let mut rest = input;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op & 0x0f {
            0 | 1 => {
                let n = usize::from(arg(&mut rest));
                wire.write(take(&mut rest, n));
            }
            2 => wire.request(0, admin::AUTH.method, TOKEN, Sent::Auth),
            3 => {
                // A wrong token: up to 63 bytes of the input (perhaps empty, perhaps even the
                // right one: the answer, not this op, says which), or one around the
                // 1,024-byte limit.
                let t = arg(&mut rest);
                let token = if t < 0x80 {
                    take(&mut rest, usize::from(t % 64)).to_vec()
                } else {
                    vec![b'A'; 1000 + usize::from(t & 0x7f)]
                };
                wire.request(0, admin::AUTH.method, &token, Sent::Auth);
            }
            4 | 5 => {
                let size = take(&mut rest, 2);
                let size = size.iter().fold(0usize, |n, &b| n << 8 | usize::from(b));
                let len = size % (MAX_ECHO + 1);
                let fill = arg(&mut rest);
                let payload = vec![fill; len];
                wire.request(
                    ECHO.service,
                    ECHO.method,
                    &payload,
                    Sent::Echo { len, fill },
                );
            }
            6 => wire.request(KV_SET.service, KV_SET.method, b"\x00\x01kv", Sent::Kv),
            7 => wire.request(0, admin::WHOAMI.method, b"", Sent::WhoAmI),
            8 => {
                let mut frame = BytesMut::new();
                let id = u64::from(arg(&mut rest));
                wire.encoder
                    .encode(&Frame::Ping(id), &mut frame)
                    .expect("PING encodes");
                wire.write(&frame);
            }
            9 => {
                // One more read in the same turn.
                let cap = usize::from(arg(&mut rest)) + 1;
                if conn.wants_read() && wire.pending() > 0 {
                    let _ = conn.read_from(&mut Capped {
                        wire: &mut wire,
                        cap,
                    });
                }
            }
            10 => conn.receive_eof(),
            11 => {
                now += Duration::from_secs(u64::from(arg(&mut rest)));
                conn.handle_timeout(now);
            }
            12 => conn.drain("draining", now),
            _ => {}
        }
        // The rest of a loop turn: one read, the frames it completed, a flush.
        conn.begin_turn();
        let cap = [usize::MAX, 1, 37, 1000][usize::from(op >> 4 & 3)];
        if conn.wants_read() && wire.pending() > 0 {
            let _ = conn.read_from(&mut Capped {
                wire: &mut wire,
                cap,
            });
        }
        check_input_bound(&conn);
        conn.process(now, &fixture.router);
        let room = [usize::MAX, 0, 64, 4096][usize::from(op >> 6)];
        flush(&mut conn, &mut checker, room, now);
        check_step(&conn, &mut checker, &wire.sent);
    }

    // Then the loop runs until the connection has nothing left to do with what was sent.
    for _ in 0..10_000 {
        let readable = conn.wants_read() && wire.pending() > 0;
        if !readable && !conn.has_decodable_input() && !conn.wants_write() {
            break;
        }
        conn.begin_turn();
        if readable {
            let _ = conn.read_from(&mut Capped {
                wire: &mut wire,
                cap: usize::MAX,
            });
        }
        check_input_bound(&conn);
        conn.process(now, &fixture.router);
        flush(&mut conn, &mut checker, usize::MAX, now);
        check_step(&conn, &mut checker, &wire.sent);
    }
    checker.finish(&wire.sent);
});

fn flush(conn: &mut Connection, checker: &mut Checker, room: usize, now: Instant) {
    let mut sink = Sink {
        out: &mut checker.buf,
        room,
    };
    let _ = conn.flush_to(&mut sink, now);
    if conn.wants_write_shutdown() {
        conn.write_closed(now);
    }
}

fn check_input_bound(conn: &Connection) {
    if conn.identity().is_none() {
        let bound = PRE_AUTH_MAX_BODY as usize + HEADER_LEN + READ_CHUNK;
        assert!(
            conn.buffered_input() <= bound,
            "{} bytes buffered without an identity (bound {bound})",
            conn.buffered_input()
        );
    }
}

fn check_step(conn: &Connection, checker: &mut Checker, sent: &HashMap<u64, Sent>) {
    if let Some(what) = VIOLATION.with(Cell::get) {
        panic!("{what}");
    }
    check_input_bound(conn);
    checker.read(sent);
    if checker.authed {
        let identity = conn
            .identity()
            .expect("the AUTH answer went out: an identity");
        assert_eq!(identity.name(), NAME);
    }
}
