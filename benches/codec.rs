//! Codec throughput: encode and decode of one frame for several body sizes, beside the floor
//! of what any checked framing must do (copy the bytes and CRC-32 them).
//!
//! Run: `cargo bench --bench codec`. Figures are frames/s and bytes/s of body.

use bytes::{Bytes, BytesMut};
use courier::proto::{Decoder, Encoder, Frame, Metadata, Request};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SIZES: [usize; 4] = [0, 64, 4 * 1024, 1024 * 1024];

fn frame(size: usize) -> Frame {
    Frame::Request(Request {
        request_id: 42,
        service: 2,
        method: 1,
        deadline_ms: 0,
        metadata: Metadata::new(),
        payload: Bytes::from(vec![0xA5; size]),
    })
}

fn codec(c: &mut Criterion) {
    let encoder = Encoder::new(u32::MAX);
    let mut group = c.benchmark_group("codec");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size.max(1) as u64));
        let f = frame(size);
        let mut wire = BytesMut::new();
        encoder.encode(&f, &mut wire).expect("encodes");
        let wire = wire.freeze();

        group.bench_with_input(BenchmarkId::new("encode", size), &f, |b, f| {
            let mut out = BytesMut::with_capacity(wire.len());
            b.iter(|| {
                out.clear();
                encoder.encode(black_box(f), &mut out).expect("encodes");
            })
        });
        group.bench_with_input(BenchmarkId::new("decode", size), &wire, |b, wire| {
            let mut decoder = Decoder::new(u32::MAX);
            b.iter(|| {
                let mut buf = BytesMut::from(&wire[..]);
                black_box(decoder.decode(&mut buf).expect("valid").expect("complete"));
            })
        });
        group.bench_with_input(BenchmarkId::new("copy_plus_crc", size), &wire, |b, wire| {
            b.iter(|| {
                let buf = BytesMut::from(&wire[..]);
                black_box(crc32fast::hash(&buf));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
