//! The sans-IO server connection fed arbitrary input chunks, end of stream and time steps
//! never panics, and its output is always a valid stream of frames.
#![no_main]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use courier::connection::{Connection, ConnectionConfig};
use courier::proto::Decoder;
use courier::service::{Method, Router};
use libfuzzer_sys::fuzz_target;

const ECHO: Method<Bytes, Bytes> = Method::new(1, 1, "echo.Echo");

fuzz_target!(|input: &[u8]| {
    let mut router = Router::new();
    router.register(ECHO, |_, body: Bytes| Ok(body));
    let config = ConnectionConfig {
        max_body_len: 4096,
        linger: Duration::from_secs(2),
    };
    let mut conn = Connection::new(config);
    let mut now = Instant::now();
    let mut output = Vec::new();
    // Each step: an op byte, then for "receive" a length byte and that many bytes.
    let mut rest = input;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op % 4 {
            0 | 1 => {
                let n = rest.first().map_or(0, |&n| usize::from(n)).min(rest.len().saturating_sub(1));
                let chunk = rest.get(1..1 + n).unwrap_or(&[]);
                rest = rest.get(1 + n..).unwrap_or(&[]);
                if conn.wants_read() {
                    let _ = conn.read_from(&mut &chunk[..]);
                }
            }
            2 => conn.receive_eof(),
            _ => {
                now += Duration::from_millis(500);
                conn.handle_timeout(now);
            }
        }
        conn.process(now, &router);
        conn.flush_to(&mut output).expect("a Vec never fails");
        if conn.wants_write_shutdown() {
            conn.write_closed(now);
        }
        assert!(conn.buffered_input() <= 36 + 4096 + 16 * 1024);
    }
    // Whatever the server wrote decodes as frames, with nothing left over.
    let mut buf = BytesMut::from(&output[..]);
    let mut decoder = Decoder::new(u32::MAX);
    while let Some(_frame) = decoder.decode(&mut buf).expect("server output decodes") {}
    assert!(buf.is_empty(), "server output ends mid-frame");
});
