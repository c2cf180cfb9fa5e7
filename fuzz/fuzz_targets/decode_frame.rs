//! Arbitrary bytes, fed to the decoder in arbitrary chunks, never panic; every frame accepted
//! re-encodes to exactly the bytes it was decoded from; and chunked delivery decodes the same
//! frames and errors as one buffer. Run with `-malloc_limit_mb` to catch an allocation
//! driven by a claimed length.
#![no_main]

use bytes::BytesMut;
use courier::proto::{DecodeError, Decoder, Encoder, Frame};
use libfuzzer_sys::fuzz_target;

/// A small limit so that "too large" and "complete" are both reachable.
const MAX: u32 = 4096;

/// Decodes `data` delivered in the chunk sizes `cuts` (cycled), until the first fatal error.
fn decode(data: &[u8], cuts: &[u8]) -> (Vec<Frame>, Vec<DecodeError>) {
    let mut decoder = Decoder::new(MAX);
    let mut buf = BytesMut::new();
    let (mut frames, mut errors) = (Vec::new(), Vec::new());
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
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(err) => {
                    let fatal = err.is_fatal();
                    errors.push(err);
                    if fatal {
                        return (frames, errors);
                    }
                }
            }
        }
    }
    (frames, errors)
}

fuzz_target!(|input: &[u8]| {
    // The first byte chooses how many of the next bytes are chunk sizes.
    let (cuts, data) = match input.split_first() {
        Some((&n, rest)) => rest.split_at(usize::from(n % 16).min(rest.len())),
        None => return,
    };
    let whole = decode(data, &[]);
    let chunked = decode(data, cuts);
    assert_eq!(whole, chunked, "chunking changed the result");
});
