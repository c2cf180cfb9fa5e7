//! The sans-IO server connection fed an arbitrary sequence of input chunks, ends of stream,
//! turns, flushes (whole, partial or refused), time steps, commits (kept or failed) of the
//! responses it holds, and drains never panics; its buffers stay within the configured limits
//! (held responses included); a commit releases everything held; and its output is always a
//! valid stream of frames.
#![no_main]

use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use courier_rpc::connection::{BufferPool, Connection, ConnectionConfig, READ_CHUNK};
use courier_rpc::proto::{Decoder, HEADER_LEN};
use courier_rpc::service::{Method, Router};
use courier_rpc::stats::Stats;
use libfuzzer_sys::fuzz_target;

const ECHO: Method<Bytes, Bytes> = Method::new(1, 1, "echo.Echo");
const SLOW: Method<Bytes, Bytes> = Method::new(1, 2, "echo.Slow");
/// Answers with its body once commit ticket = its request id is committed.
const HOLD: Method<Bytes, Bytes> = Method::new(1, 3, "test.Hold");

/// A commit that does nothing: the target decides whether it succeeds.
struct NoCommit;

impl courier_rpc::service::Commit for NoCommit {
    fn commit(&self, _ticket: u64) -> Result<(), courier_rpc::proto::Status> {
        Ok(())
    }
}

/// A socket that accepts at most `room` bytes, then would block.
struct Sink<'a> {
    out: &'a mut Vec<u8>,
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

fuzz_target!(|input: &[u8]| {
    let mut router = Router::new();
    router.register(ECHO, |_, body: Bytes| Ok(body));
    router.register_blocking(SLOW, |_, body: Bytes| Ok(body));
    router.register(HOLD, |ctx, body: Bytes| {
        ctx.hold_until_committed(ctx.request_id);
        Ok(body)
    });
    router.set_commit(Arc::new(NoCommit));
    let config = ConnectionConfig::default()
        .with_max_body_len(4096)
        .with_output_high_water(8192)
        .with_output_hard_cap(64 * 1024)
        .with_max_in_flight(4)
        .with_max_frames_per_turn(8)
        .with_max_empty_frames(3);
    let start = Instant::now();
    let mut now = start;
    let mut conn = Connection::new(config, Arc::new(Stats::new()), now);
    let mut pool = BufferPool::new();
    let mut output = Vec::new();
    let mut calls = Vec::new();
    let mut pending = Vec::new();
    // Each step: an op byte, then for "receive" a length byte and that many bytes.
    let mut rest = input;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op % 11 {
            0 | 1 => {
                let n = rest
                    .first()
                    .map_or(0, |&n| usize::from(n))
                    .min(rest.len().saturating_sub(1));
                let chunk = rest.get(1..1 + n).unwrap_or(&[]);
                rest = rest.get(1 + n..).unwrap_or(&[]);
                if conn.wants_read() {
                    let _ = conn.read_from(&mut &chunk[..]);
                }
            }
            2 => conn.receive_eof(),
            3 => {
                now += Duration::from_secs(u64::from(op / 8) + 1);
                conn.handle_timeout(now);
            }
            4 => conn.begin_turn(),
            5 => {
                // A worker finishes the oldest blocking call.
                if !pending.is_empty() {
                    let id = pending.remove(0);
                    conn.complete(id, Ok(BytesMut::from(&b"done"[..])), now);
                }
            }
            6 => conn.lend_buffers(&mut pool),
            7 => conn.return_buffers(&mut pool),
            8 | 9 => {
                // The end of a loop turn: the held responses' commit, kept or failed.
                let failed = courier_rpc::proto::Status::unavailable("disk full");
                let result = if op % 11 == 8 { Ok(()) } else { Err(&failed) };
                conn.committed(result, now);
                assert_eq!(
                    conn.held_ticket(),
                    None,
                    "a commit releases everything held"
                );
            }
            _ => conn.drain("draining", now),
        }
        conn.process(now, &router);
        conn.take_blocking(&mut calls);
        pending.extend(calls.drain(..).map(|c| c.id()));
        let room = usize::from(op / 8) * 64;
        let mut sink = Sink {
            out: &mut output,
            room,
        };
        let _ = conn.flush_to(&mut sink, now);
        if conn.wants_write_shutdown() {
            conn.write_closed(now);
        }
        assert!(conn.buffered_input() <= HEADER_LEN + 4096 + READ_CHUNK);
        // Held responses included: they count toward the high-water mark like the rest.
        assert!(conn.queued_output() <= config.output_hard_cap);
        assert!(conn.in_flight() <= config.max_in_flight);
        assert!(pool.len() <= BufferPool::MAX_BUFFERS);
    }
    // Whatever the server wrote decodes as frames; only the last may be cut short by a
    // partial flush.
    let mut rest_out = Vec::new();
    let _ = conn.flush_to(&mut rest_out, now);
    output.extend_from_slice(&rest_out);
    let mut buf = BytesMut::from(&output[..]);
    let mut decoder = Decoder::new(u32::MAX);
    while let Some(_frame) = decoder.decode(&mut buf).expect("server output decodes") {}
    assert!(
        buf.is_empty() || conn.is_closed(),
        "server output ends mid-frame on an open connection"
    );
});
