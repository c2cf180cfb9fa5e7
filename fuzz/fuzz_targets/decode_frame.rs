//! Arbitrary bytes, fed to the decoder in arbitrary chunks, never panic, and every frame
//! accepted re-encodes to exactly the bytes it was decoded from. Run with `-malloc_limit_mb`
//! to catch an allocation sized by a length the input merely claims: the body limit is 4096
//! bytes, so no legitimate allocation comes near a megabyte. (That chunking does not change
//! the result is the `chunking` target's property.) Before each decode, `peek_requests` (the
//! server's prefetch walk) runs over the same bytes: it must not panic, and each payload range
//! it gives must lie within them.
//!
//! Input: a count byte `n`, then `n % 16` chunk sizes (one byte each, cycled, 0 read as 1;
//! none means one buffer), then the stream.
#![no_main]

use bytes::BytesMut;
use courier_rpc::proto::{peek_requests, Decoder, Encoder};
use libfuzzer_sys::fuzz_target;

/// A small limit so that "too large" and "complete" are both reachable.
const MAX: u32 = 4096;

/// Decodes `data` delivered in the chunk sizes `cuts` (cycled), until the first fatal error.
fn decode(data: &[u8], cuts: &[u8]) {
    let mut decoder = Decoder::new(MAX);
    let mut buf = BytesMut::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < data.len() {
        let step = if cuts.is_empty() {
            data.len()
        } else {
            usize::from(cuts[i % cuts.len()]).max(1)
        };
        i += 1;
        let end = (pos + step).min(data.len());
        buf.extend_from_slice(&data[pos..end]);
        pos = end;
        // The prefetch walk over the same bytes: never a panic, every range within them.
        peek_requests(&buf, 64, |_, _, payload| {
            assert!(payload.start <= payload.end && payload.end <= buf.len());
        });
        loop {
            let before = buf.clone();
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    // Property: the consumed bytes are exactly the frame's canonical encoding.
                    let used = before.len() - buf.len();
                    let mut again = BytesMut::new();
                    Encoder::new(MAX)
                        .encode(&frame, &mut again)
                        .expect("a decoded frame re-encodes");
                    assert_eq!(&again[..], &before[..used], "re-encoding differs");
                }
                Ok(None) => break,
                Err(err) if err.is_fatal() => return,
                Err(_) => {}
            }
        }
    }
}

fuzz_target!(|input: &[u8]| {
    // The first byte chooses how many of the next bytes are chunk sizes.
    let (cuts, data) = match input.split_first() {
        Some((&n, rest)) => rest.split_at(usize::from(n % 16).min(rest.len())),
        None => return,
    };
    decode(data, cuts);
});
