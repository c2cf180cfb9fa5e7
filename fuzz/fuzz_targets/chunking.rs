//! How bytes arrive does not change what the decoder makes of them.
//!
//! Input: a count byte `n`, then `n % 16` chunk sizes (one byte each, cycled, 0 read as 1),
//! then the stream. The stream is decoded three ways, with a 4096-byte body limit so that
//! FRAME_TOO_LARGE is reachable: as one buffer, in the chosen chunks, and one byte at a time.
//! In each, the decoder is called until it needs more bytes; a frame error (BODY_CHECKSUM,
//! INVALID_METADATA, INVALID_UTF8) is recorded and decoding goes on, a fatal error is
//! recorded and ends the stream. Properties:
//!
//! - The three give the same sequence of frames and errors, each with the same number of
//!   bytes consumed, and, when no fatal error ended the stream, the same unconsumed tail and
//!   the same decoder state (idle or inside a frame).
//! - `Ok(None)` never consumes bytes; a frame error always consumes its whole frame (at least
//!   a header); a fatal error consumes nothing.
//! - After a fatal error the decoder is poisoned: it returns the same error again, even with
//!   more bytes appended.
#![no_main]

use bytes::BytesMut;
use courier_rpc::proto::{DecodeError, Decoder, Frame, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

/// A small limit so that "too large" and "complete" are both reachable.
const MAX: u32 = 4096;

/// What one `decode` call returned, and how many bytes it removed from the buffer.
type Event = (Result<Frame, DecodeError>, usize);

#[derive(Debug, PartialEq)]
struct Outcome {
    events: Vec<Event>,
    /// Unconsumed bytes and whether the decoder was idle, when no fatal error ended it.
    tail: Option<(Vec<u8>, bool)>,
}

/// Decodes `data` delivered in the chunk sizes `cuts` (cycled; empty means one buffer).
fn decode(data: &[u8], cuts: &[u8]) -> Outcome {
    let mut decoder = Decoder::new(MAX);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
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
            let before = buf.len();
            let result = decoder.decode(&mut buf);
            let used = before - buf.len();
            match result {
                Ok(Some(frame)) => events.push((Ok(frame), used)),
                Ok(None) => {
                    assert_eq!(used, 0, "Ok(None) consumed bytes");
                    break;
                }
                Err(err) if err.is_fatal() => {
                    assert_eq!(used, 0, "a fatal error consumed bytes");
                    // Poisoned: the same error again, whatever arrives next.
                    assert_eq!(decoder.decode(&mut buf), Err(err.clone()));
                    buf.extend_from_slice(&data[pos..]);
                    assert_eq!(decoder.decode(&mut buf), Err(err.clone()));
                    events.push((Err(err), used));
                    return Outcome { events, tail: None };
                }
                Err(err) => {
                    assert!(used >= HEADER_LEN, "a frame error left its frame behind");
                    events.push((Err(err), used));
                }
            }
        }
    }
    Outcome {
        events,
        tail: Some((buf.to_vec(), decoder.is_idle())),
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&n, rest)) = input.split_first() else {
        return;
    };
    let (cuts, data) = rest.split_at(usize::from(n % 16).min(rest.len()));
    let whole = decode(data, &[]);
    let chunked = decode(data, cuts);
    assert_eq!(whole, chunked, "chunking changed the result");
    let bytewise = decode(data, &[1]);
    assert_eq!(
        whole, bytewise,
        "byte-at-a-time delivery changed the result"
    );
});
