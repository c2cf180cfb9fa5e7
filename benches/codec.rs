//! Codec throughput: one REQUEST frame (no metadata, deadline 0) with a body of 0 B, 64 B,
//! 4 KiB and 1 MiB, beside the floor that any checked framing must pay.
//!
//! Run: `cargo bench --bench codec` (add a filter such as `-- codec_frames/roundtrip/64` to run
//! one case). Every figure is the time for one frame; criterion adds a throughput figure from it.
//!
//! # What is measured
//!
//! Buffers are allocated once, before timing, and reused by every iteration (`clear` and then
//! append), as a steady-state server reuses its read and write buffers; so neither side of a
//! comparison pays for the allocator.
//!
//! - `encode`: [`Encoder::encode`] of the frame into a cleared output buffer (header, payload
//!   copy, body CRC and header CRC).
//! - `decode`: copy the frame's wire bytes into a cleared input buffer (what a socket read does),
//!   then [`Decoder::decode`] them (every check of `proto-spec/PROTOCOL.md` §8, both CRCs) and
//!   drop the frame.
//! - `roundtrip`: [`Encoder::encode`] into a cleared buffer, then [`Decoder::decode`] from that
//!   same buffer, then drop the frame: the codec's whole cost for one frame, sender plus
//!   receiver.
//! - `copy_plus_crc`, the baseline: copy the same wire bytes (header plus body) into a cleared
//!   buffer and CRC-32 them once with `crc32fast`. A checked framing cannot do less: the bytes
//!   must land in a buffer and every one of them must be checksummed.
//!
//! # Figures
//!
//! Criterion reports one throughput unit per benchmark, so each case runs in two groups:
//!
//! - `codec_frames/<case>/<body bytes>`: frames per second (one frame per iteration);
//! - `codec_bytes/<case>/<body bytes>`: bytes of body per second (the 36-byte header is not
//!   counted). The 0-byte body has no bytes/s figure, so this group skips it.
//!
//! The two groups time the same code; their medians differ only by run-to-run noise.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use courier_rpc::proto::{DecodeError, Decoder, Encoder, Frame, Metadata, Request, HEADER_LEN};
use criterion::{
    black_box, criterion_group, criterion_main, measurement::WallTime, BenchmarkGroup, BenchmarkId,
    Criterion, Throughput,
};

/// Body sizes in bytes.
const SIZES: [usize; 4] = [0, 64, 4 * 1024, 1024 * 1024];

/// A REQUEST with a `size`-byte payload and no metadata.
fn request(size: usize) -> Frame {
    Frame::Request(Request {
        request_id: 42,
        service: 2,
        method: 1,
        deadline_ms: 0,
        metadata: Metadata::new(),
        payload: Bytes::from(vec![0xA5; size]),
    })
}

/// The four cases for one body size, in the group given.
/// What a caller does with a decoded request: reads its fields and drops it (releasing its
/// share of the buffer), and returns a small value, as the baseline returns its CRC. Handing
/// the whole 96-byte frame to the harness instead (`black_box`) costs about 35 ns at 64 B in
/// moving it through memory and back, which no caller pays; the work of decoding and of
/// dropping the frame is all still timed.
#[inline(always)]
fn consume(decoded: Result<Option<Frame>, DecodeError>) -> u64 {
    match decoded {
        Ok(Some(Frame::Request(r))) => r.request_id ^ r.payload.len() as u64,
        other => panic!("expected a request, got {other:?}"),
    }
}

fn cases(group: &mut BenchmarkGroup<'_, WallTime>, size: usize) {
    let encoder = Encoder::new(u32::MAX);
    let frame = request(size);
    let mut wire = BytesMut::new();
    encoder.encode(&frame, &mut wire).expect("encodes");
    let wire = wire.freeze();
    assert_eq!(wire.len(), HEADER_LEN + size);
    // What is timed must also be right: the wire bytes decode to the frame.
    let decoded = Decoder::new(u32::MAX)
        .decode(&mut BytesMut::from(&wire[..]))
        .expect("valid")
        .expect("complete");
    assert_eq!(decoded, frame);

    group.bench_with_input(BenchmarkId::new("encode", size), &frame, |b, frame| {
        let mut out = BytesMut::with_capacity(wire.len());
        b.iter(|| {
            out.clear();
            encoder.encode(black_box(frame), &mut out).expect("encodes");
            black_box(&out);
        })
    });
    group.bench_with_input(BenchmarkId::new("decode", size), &wire, |b, wire| {
        let mut decoder = Decoder::new(u32::MAX);
        let mut rx = BytesMut::with_capacity(wire.len());
        b.iter(|| {
            rx.clear();
            rx.extend_from_slice(black_box(wire));
            consume(decoder.decode(&mut rx))
        })
    });
    group.bench_with_input(BenchmarkId::new("roundtrip", size), &frame, |b, frame| {
        let mut decoder = Decoder::new(u32::MAX);
        let mut buf = BytesMut::with_capacity(wire.len());
        b.iter(|| {
            buf.clear();
            encoder.encode(black_box(frame), &mut buf).expect("encodes");
            consume(decoder.decode(&mut buf))
        })
    });
    group.bench_with_input(BenchmarkId::new("copy_plus_crc", size), &wire, |b, wire| {
        let mut rx = BytesMut::with_capacity(wire.len());
        b.iter(|| {
            rx.clear();
            rx.extend_from_slice(black_box(wire));
            crc32fast::hash(&rx)
        })
    });
}

fn codec(c: &mut Criterion) {
    let mut frames = c.benchmark_group("codec_frames");
    frames
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    for size in SIZES {
        cases(&mut frames, size);
    }
    frames.finish();

    let mut bytes = c.benchmark_group("codec_bytes");
    bytes
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for size in SIZES.into_iter().filter(|&size| size > 0) {
        bytes.throughput(Throughput::Bytes(size as u64));
        cases(&mut bytes, size);
    }
    bytes.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
