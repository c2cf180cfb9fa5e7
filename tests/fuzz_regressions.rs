//! Replays the inputs kept under `fuzz/regressions/<target>/` (see `fuzz/README.md`) through
//! the decode properties the fuzz targets assert, using only the public codec API, so a
//! fixed crash stays fixed without a nightly toolchain.
//!
//! Input formats, as the targets read them:
//!
//! - `decode_frame/` and `chunking/`: a count byte `n`, then `n % 16` chunk sizes (cycled,
//!   0 read as 1), then the stream; body limit 4096.
//! - `roundtrip/`: a branch byte, then the stream; body limit 32 KiB. An even branch byte is
//!   the raw branch, which these properties cover completely. An odd one is the structured
//!   branch, whose frame only `arbitrary` can rebuild: its bytes are still replayed here as a
//!   stream (the properties hold for any bytes), and the input itself is replayed with
//!   `cargo +nightly fuzz run roundtrip <file>`.
//!
//! For every input the stream is decoded as one buffer, in the input's chunks and one byte
//! at a time. Properties: the decoder never panics; every frame it accepts re-encodes to
//! exactly the bytes it consumed; `Ok(None)` consumes nothing, a frame error consumes its
//! whole frame and decoding goes on, a fatal error consumes nothing and poisons the decoder;
//! and the three deliveries give the same frames, errors, bytes consumed and unconsumed tail.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use bytes::BytesMut;
use courier_rpc::proto::{DecodeError, Decoder, Encoder, Frame, HEADER_LEN};

const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/regressions");

/// The body limit of the `decode_frame` and `chunking` targets.
const CHUNKED_MAX: u32 = 4096;

/// The body limit of the `roundtrip` target's raw branch.
const ROUNDTRIP_MAX: u32 = 32 * 1024;

/// What one `decode` call returned, and how many bytes it removed from the buffer.
type Event = (Result<Frame, DecodeError>, usize);

#[derive(Debug, PartialEq)]
struct Outcome {
    events: Vec<Event>,
    /// Unconsumed bytes and whether the decoder was idle, when no fatal error ended it.
    tail: Option<(Vec<u8>, bool)>,
}

/// Decodes `data` delivered in the chunk sizes `cuts` (cycled; empty means one buffer),
/// checking each call's result against the decoder contract.
fn decode(data: &[u8], cuts: &[u8], max: u32) -> Result<Outcome, String> {
    let mut decoder = Decoder::new(max);
    let encoder = Encoder::new(max);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let (mut pos, mut i) = (0, 0);
    while pos < data.len() {
        let step = match cuts {
            [] => data.len(),
            _ => usize::from(cuts[i % cuts.len()]).max(1),
        };
        i += 1;
        let end = (pos + step).min(data.len());
        buf.extend_from_slice(&data[pos..end]);
        pos = end;
        loop {
            let before = buf.clone();
            let result = decoder.decode(&mut buf);
            let used = before.len() - buf.len();
            match result {
                Ok(Some(frame)) => {
                    let mut again = BytesMut::new();
                    encoder
                        .encode(&frame, &mut again)
                        .map_err(|e| format!("decoded {frame:?} does not re-encode: {e}"))?;
                    if again[..] != before[..used] {
                        return Err(format!(
                            "{frame:?} re-encodes to {:02x?}, decoded from {:02x?}",
                            &again[..],
                            &before[..used]
                        ));
                    }
                    events.push((Ok(frame), used));
                }
                Ok(None) if used == 0 => break,
                Ok(None) => return Err(format!("Ok(None) consumed {used} bytes")),
                Err(err) if err.is_fatal() => {
                    if used != 0 {
                        return Err(format!("fatal {err:?} consumed {used} bytes"));
                    }
                    buf.extend_from_slice(&data[pos..]);
                    let again = decoder.decode(&mut buf);
                    if again != Err(err.clone()) {
                        return Err(format!("after fatal {err:?} the decoder gave {again:?}"));
                    }
                    events.push((Err(err), used));
                    return Ok(Outcome { events, tail: None });
                }
                Err(err) => {
                    if used < HEADER_LEN {
                        return Err(format!("frame error {err:?} consumed only {used} bytes"));
                    }
                    events.push((Err(err), used));
                }
            }
        }
    }
    Ok(Outcome {
        events,
        tail: Some((buf.to_vec(), decoder.is_idle())),
    })
}

/// Checks one stream; returns how many frames it decoded.
fn check(data: &[u8], cuts: &[u8], max: u32) -> Result<usize, String> {
    let whole = decode(data, &[], max).map_err(|e| format!("one buffer: {e}"))?;
    let chunked = decode(data, cuts, max).map_err(|e| format!("chunks {cuts:?}: {e}"))?;
    let bytewise = decode(data, &[1], max).map_err(|e| format!("byte at a time: {e}"))?;
    if chunked != whole {
        return Err(format!(
            "chunks {cuts:?} differ from one buffer:\n{chunked:?}\n{whole:?}"
        ));
    }
    if bytewise != whole {
        return Err(format!(
            "byte at a time differs from one buffer:\n{bytewise:?}\n{whole:?}"
        ));
    }
    Ok(whole.events.iter().filter(|(r, _)| r.is_ok()).count())
}

/// Splits an input into its chunk sizes, stream and body limit, as `target` reads it.
fn parse(target: &str, input: &[u8]) -> (Vec<u8>, Vec<u8>, u32) {
    let Some((&first, rest)) = input.split_first() else {
        return (Vec::new(), Vec::new(), CHUNKED_MAX);
    };
    if target == "roundtrip" {
        return (Vec::new(), rest.to_vec(), ROUNDTRIP_MAX);
    }
    let (cuts, data) = rest.split_at(usize::from(first % 16).min(rest.len()));
    (cuts.to_vec(), data.to_vec(), CHUNKED_MAX)
}

#[test]
fn regression_inputs_keep_the_decode_properties() {
    let (mut inputs, mut frames) = (0, 0);
    let mut failures = Vec::new();
    for target in ["decode_frame", "chunking", "roundtrip"] {
        let dir = Path::new(REGRESSIONS).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<_> = entries
            .map(|e| e.expect("readable directory entry").path())
            .filter(|p| p.is_file())
            .filter(|p| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                !name.starts_with('.') && name != "README.md"
            })
            .collect();
        paths.sort();
        for path in paths {
            let input = std::fs::read(&path).expect("readable regression input");
            let (cuts, data, max) = parse(target, &input);
            inputs += 1;
            match catch_unwind(AssertUnwindSafe(|| check(&data, &cuts, max))) {
                Ok(Ok(n)) => frames += n,
                Ok(Err(e)) => failures.push(format!("{}: {e}", path.display())),
                Err(_) => failures.push(format!("{}: the decoder panicked", path.display())),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(inputs > 0, "no regression inputs found under {REGRESSIONS}");
    assert!(
        frames > 0,
        "{inputs} regression inputs decoded no frame at all: the replay checks nothing"
    );
}

/// The seed input kept for `chunking` decodes to the frames and errors it was built from
/// (vectors of `proto-spec/vectors/frames.json`): the replay reads the input format the way
/// the target does, since a misread prefix would shift the stream and fail here.
#[test]
fn chunking_seed_decodes_to_its_vectors() {
    // In order: a non-OK RESPONSE with metadata, a REQUEST with key "a b", a GOAWAY, a PONG,
    // then an HTTP request line.
    let path = Path::new(REGRESSIONS)
        .join("chunking")
        .join("error-response-bad-metadata-goaway-pong-then-http");
    let input =
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let (cuts, data, max) = parse("chunking", &input);
    let outcome = decode(&data, &cuts, max).expect("decodes");
    let kinds: Vec<&str> = outcome
        .events
        .iter()
        .map(|(r, _)| match r {
            Ok(frame) => frame.kind_name(),
            Err(err) => err.code_name(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "RESPONSE",
            "INVALID_METADATA",
            "GOAWAY",
            "PONG",
            "BAD_MAGIC"
        ]
    );
    assert_eq!(outcome.tail, None, "the HTTP request ends the stream");
}
