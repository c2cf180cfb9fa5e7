//! The hot path allocates nothing per frame in steady state: a connection that decodes,
//! dispatches and answers a stream of echo requests, kv GETs and PINGs, with buffers lent from
//! a pool and written out after every read, makes no heap allocation once it is warm. (A kv
//! SET allocates its stored copy of the key and the value, by design: see `kv::Store::set`.)
//!
//! A counting global allocator (`tests/support/counting.rs`) counts the allocations made on
//! the test's own thread while the measured frames are processed (other threads of the test
//! harness are not counted).

use std::io;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use courier_rpc::connection::{BufferPool, Connection, ConnectionConfig};
use courier_rpc::proto::{Encoder, Frame, Metadata, Request};
use courier_rpc::service::Router;
use courier_rpc::stats::Stats;

#[path = "support/counting.rs"]
mod counting;

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

use counting::on_this_thread as allocations_in;

#[test]
fn the_counter_counts() {
    assert_eq!(
        allocations_in(|| drop(std::hint::black_box(vec![1u8; 10]))),
        1
    );
    assert_eq!(allocations_in(|| {}), 0);
}

/// What one read's worth of input asks for.
#[derive(Clone, Copy)]
enum Load {
    /// 16 echo requests of this many bytes.
    Echo(usize),
    /// 16 kv GETs of a key that is set.
    Get,
}

/// One read's worth of input: 16 requests and a PING.
fn batch(first_id: u64, load: Load) -> BytesMut {
    let encoder = Encoder::new(u32::MAX);
    let mut out = BytesMut::new();
    for i in 0..16 {
        let (service, payload) = match load {
            Load::Echo(size) => (courier_rpc::echo::SERVICE, Bytes::from(vec![i as u8; size])),
            Load::Get => (
                courier_rpc::kv::SERVICE,
                Bytes::from_static(b"key:0000000001"),
            ),
        };
        let frame = Frame::Request(Request {
            request_id: first_id + i,
            service,
            method: 1,
            deadline_ms: 0,
            metadata: Metadata::new(),
            payload,
        });
        encoder.encode(&frame, &mut out).expect("encodes");
    }
    encoder
        .encode(&Frame::Ping(first_id + 16), &mut out)
        .expect("encodes");
    out
}

/// Serves `batches` as one connection would be served by the loop, turn by turn: lend
/// buffers, read one batch, process, flush, return buffers. Returns the frames decoded.
fn serve(
    conn: &mut Connection,
    pool: &mut BufferPool,
    router: &Router,
    batches: &[BytesMut],
) -> usize {
    let mut frames = 0;
    for input in batches {
        conn.begin_turn();
        conn.lend_buffers(pool);
        let mut src: &[u8] = input;
        let n = conn.read_from(&mut src).expect("reads from a slice");
        assert_eq!(n, input.len(), "one read takes the whole batch");
        frames += conn.process(Instant::now(), router);
        conn.flush_to(&mut io::sink(), Instant::now())
            .expect("the sink takes everything");
        assert_eq!(conn.queued_output(), 0);
        conn.return_buffers(pool);
    }
    frames
}

fn steady_state_allocations(load: Load) -> (usize, u64) {
    let mut router = Router::new();
    courier_rpc::echo::register(&mut router);
    let store = Arc::new(courier_rpc::kv::Store::new());
    store.set(b"key:0000000001", &[7; 64]);
    courier_rpc::kv::register(&mut router, store);
    let stats = Arc::new(Stats::new());
    let mut conn = Connection::new(
        ConnectionConfig::default(),
        Arc::clone(&stats),
        Instant::now(),
    );
    let mut pool = BufferPool::new();
    // Built before counting: the test's input, not the server's work.
    let warm: Vec<BytesMut> = (0..8).map(|b| batch(b * 17 + 1, load)).collect();
    let measured: Vec<BytesMut> = (8..208).map(|b| batch(b * 17 + 1, load)).collect();
    let warmed = serve(&mut conn, &mut pool, &router, &warm);
    assert_eq!(warmed, 8 * 17);
    let mut frames = 0;
    let allocations = allocations_in(|| {
        frames = serve(&mut conn, &mut pool, &router, &measured);
    });
    assert!(!conn.is_closed());
    // Every request was answered OK (a GET found its key), warm-up included.
    let ok = stats
        .snapshot()
        .into_iter()
        .find(|(name, _)| name == "requests_OK")
        .map(|(_, v)| v);
    assert_eq!(ok, Some(208 * 16));
    (frames, allocations)
}

#[test]
fn small_frames_allocate_nothing_once_warm() {
    let (frames, allocations) = steady_state_allocations(Load::Echo(64));
    assert_eq!(frames, 200 * 17);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations for {frames} frames of 64 B"
    );
}

#[test]
fn frames_of_a_few_hundred_bytes_allocate_nothing_once_warm() {
    let (frames, allocations) = steady_state_allocations(Load::Echo(600));
    assert_eq!(frames, 200 * 17);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations for {frames} frames of 600 B"
    );
}

#[test]
fn kv_gets_allocate_nothing_once_warm() {
    let (frames, allocations) = steady_state_allocations(Load::Get);
    assert_eq!(frames, 200 * 17);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations for {frames} GETs"
    );
}
