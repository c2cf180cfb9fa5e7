//! Conformance of the codec against the protocol test vectors in
//! `proto-spec/vectors/frames.json` (schema: `proto-spec/vectors/README.md`).
//!
//! Each test checks every vector of its category and reports all failing
//! vectors at once, each message starting with the vector's name.

use std::collections::BTreeSet;

use anyhow::{anyhow, bail, ensure, Context, Result};
use bytes::{Bytes, BytesMut};
use courier_rpc::proto::{
    Code, DecodeError, Decoder, Encoder, Frame, Metadata, DEFAULT_MAX_BODY_LEN, HEADER_LEN,
};
use serde_json::Value;

const VECTORS_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/proto-spec/vectors/frames.json"
);

const MAGIC: &[u8; 4] = b"COUR";

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

struct Vectors {
    default_max_body_len: u32,
    all: Vec<Vector>,
}

struct Vector {
    name: String,
    json: Value,
    input: Vec<u8>,
    max_body_len: u32,
}

impl Vector {
    fn is_valid(&self) -> bool {
        self.json.get("frame").is_some()
    }
    fn is_invalid(&self) -> bool {
        self.json.get("error").is_some()
    }
    fn is_incomplete(&self) -> bool {
        self.json.get("incomplete").and_then(Value::as_bool) == Some(true)
    }
}

fn load() -> Vectors {
    let text = std::fs::read_to_string(VECTORS_PATH)
        .unwrap_or_else(|e| panic!("cannot read {VECTORS_PATH}: {e}"));
    let doc: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{VECTORS_PATH} is not valid JSON: {e}"));
    let default_max_body_len = doc["default_max_body_len"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .expect("frames.json: default_max_body_len must be a u32");
    let list = doc["vectors"]
        .as_array()
        .expect("frames.json: \"vectors\" must be an array");
    let mut all = Vec::with_capacity(list.len());
    for (i, json) in list.iter().enumerate() {
        let name = json["name"]
            .as_str()
            .unwrap_or_else(|| panic!("frames.json: vector #{i} has no name"))
            .to_owned();
        let input = json["hex"]
            .as_str()
            .ok_or_else(|| anyhow!("no \"hex\" string"))
            .and_then(unhex)
            .unwrap_or_else(|e| panic!("vector {name}: bad hex: {e:#}"));
        let max_body_len = match json.get("max_body_len") {
            None | Some(Value::Null) => default_max_body_len,
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or_else(|| panic!("vector {name}: max_body_len must be a u32")),
        };
        let vector = Vector {
            name,
            json: json.clone(),
            input,
            max_body_len,
        };
        let kinds = [
            vector.is_valid(),
            vector.is_invalid(),
            vector.is_incomplete(),
        ];
        assert_eq!(
            kinds.iter().filter(|k| **k).count(),
            1,
            "vector {}: must be exactly one of valid / invalid / incomplete",
            vector.name
        );
        all.push(vector);
    }
    Vectors {
        default_max_body_len,
        all,
    }
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    ensure!(s.len().is_multiple_of(2), "odd number of hex digits");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).with_context(|| format!("bad hex at {i}")))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `check` on every vector selected by `filter`; panics listing every failure.
fn for_each(filter: fn(&Vector) -> bool, check: impl Fn(&Vectors, &Vector) -> Result<()>) {
    let vectors = load();
    let mut failures = Vec::new();
    let mut checked = 0;
    for v in vectors.all.iter().filter(|v| filter(v)) {
        checked += 1;
        if let Err(e) = check(&vectors, v) {
            failures.push(format!("vector {}: {e:#}", v.name));
        }
    }
    assert!(checked > 0, "no vectors of this category in frames.json");
    assert!(
        failures.is_empty(),
        "{} of {checked} vectors failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

fn decode_error_text(e: &DecodeError) -> String {
    format!(
        "{} (fatal: {}, status: {})",
        e.code_name(),
        e.is_fatal(),
        e.status().0
    )
}

// ---------------------------------------------------------------------------
// Comparing a decoded frame with its JSON description
// ---------------------------------------------------------------------------

fn json_u64(obj: &Value, field: &str) -> Result<u64> {
    obj.get(field)
        .and_then(Value::as_u64)
        .ok_or_else(|| anyhow!("frame.{field} missing or not an unsigned integer"))
}

fn json_str<'a>(obj: &'a Value, field: &str) -> Result<&'a str> {
    obj.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("frame.{field} missing or not a string"))
}

fn json_request_id(obj: &Value) -> Result<u64> {
    json_str(obj, "request_id")?
        .parse::<u64>()
        .context("frame.request_id is not a decimal u64 string")
}

fn check_u64(field: &str, got: u64, want: u64) -> Result<()> {
    ensure!(got == want, "{field}: decoded {got}, expected {want}");
    Ok(())
}

fn check_code(code: &Code, obj: &Value) -> Result<()> {
    check_u64("status", u64::from(code.0), json_u64(obj, "status")?)?;
    let want = match obj.get("status_name") {
        Some(Value::String(s)) => Some(s.as_str()),
        Some(Value::Null) => None,
        _ => bail!("frame.status_name missing"),
    };
    ensure!(
        code.name() == want,
        "status name: decoded {:?}, expected {want:?}",
        code.name()
    );
    Ok(())
}

fn check_metadata(md: &Metadata, obj: &Value) -> Result<()> {
    let want: Vec<(Vec<u8>, Vec<u8>)> = obj
        .get("metadata")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("frame.metadata missing"))?
        .iter()
        .map(|e| {
            let key = json_str(e, "key")?.as_bytes().to_vec();
            let value = unhex(json_str(e, "value_hex")?)?;
            Ok((key, value))
        })
        .collect::<Result<_>>()?;
    let got: Vec<(Vec<u8>, Vec<u8>)> = md.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
    let show = |list: &[(Vec<u8>, Vec<u8>)]| {
        list.iter()
            .map(|(k, v)| format!("{}={}", String::from_utf8_lossy(k), hex(v)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    ensure!(
        got == want,
        "metadata: decoded [{}], expected [{}]",
        show(&got),
        show(&want)
    );
    ensure!(md.len() == want.len(), "metadata.len() is {}", md.len());
    ensure!(
        md.is_empty() == want.is_empty(),
        "metadata.is_empty() is {}",
        md.is_empty()
    );
    Ok(())
}

fn check_payload(payload: &Bytes, obj: &Value) -> Result<()> {
    let want = json_str(obj, "payload_hex")?;
    ensure!(
        hex(payload) == want,
        "payload: decoded {}, expected {want}",
        hex(payload)
    );
    Ok(())
}

fn check_message(message: &str, obj: &Value) -> Result<()> {
    let want = json_str(obj, "message")?;
    ensure!(
        message == want,
        "message: decoded {message:?}, expected {want:?}"
    );
    Ok(())
}

/// Every field of `frame` equals the vector's JSON "frame" object.
fn check_frame(frame: &Frame, obj: &Value) -> Result<()> {
    let kind = json_str(obj, "kind")?;
    ensure!(
        frame.kind_name() == kind,
        "kind: decoded {}, expected {kind}",
        frame.kind_name()
    );
    check_u64("flags", u64::from(frame.flags()), json_u64(obj, "flags")?)?;
    let rid = json_request_id(obj)?;
    match frame {
        Frame::Request(r) => {
            check_u64("request_id", r.request_id, rid)?;
            check_u64("service", u64::from(r.service), json_u64(obj, "service")?)?;
            check_u64("method", u64::from(r.method), json_u64(obj, "method")?)?;
            check_u64(
                "deadline_ms",
                u64::from(r.deadline_ms),
                json_u64(obj, "deadline_ms")?,
            )?;
            check_metadata(&r.metadata, obj)?;
            check_payload(&r.payload, obj)?;
        }
        Frame::Response(r) => {
            check_u64("request_id", r.request_id, rid)?;
            check_code(&r.code, obj)?;
            check_metadata(&r.metadata, obj)?;
            check_payload(&r.payload, obj)?;
            if r.code.0 != 0 {
                let text = std::str::from_utf8(&r.payload)
                    .context("non-OK RESPONSE payload is not UTF-8")?;
                check_message(text, obj)?;
            }
        }
        Frame::Ping(id) | Frame::Pong(id) => check_u64("request_id", *id, rid)?,
        Frame::GoAway {
            last_request_id,
            code,
            message,
        } => {
            check_u64("request_id (last_request_id)", *last_request_id, rid)?;
            check_code(code, obj)?;
            check_message(message, obj)?;
        }
        Frame::Error {
            request_id,
            code,
            message,
        } => {
            check_u64("request_id", *request_id, rid)?;
            check_code(code, obj)?;
            check_message(message, obj)?;
        }
    }
    Ok(())
}

/// Decodes a complete valid vector with a fresh decoder.
fn decode_whole(v: &Vector) -> Result<Frame> {
    let mut dec = Decoder::new(v.max_body_len);
    let mut buf = BytesMut::from(&v.input[..]);
    let frame = match dec.decode(&mut buf) {
        Ok(Some(frame)) => frame,
        Ok(None) => bail!("decoder asked for more bytes on a complete frame"),
        Err(e) => bail!("unexpected decode error {}", decode_error_text(&e)),
    };
    ensure!(
        buf.is_empty(),
        "{} bytes left in the buffer after decoding",
        buf.len()
    );
    Ok(frame)
}

// ---------------------------------------------------------------------------
// Valid vectors
// ---------------------------------------------------------------------------

#[test]
fn vector_file_matches_crate_constants() {
    let vectors = load();
    assert_eq!(
        vectors.default_max_body_len, DEFAULT_MAX_BODY_LEN,
        "frames.json default_max_body_len differs from proto::DEFAULT_MAX_BODY_LEN"
    );
    assert_eq!(HEADER_LEN, 36, "proto::HEADER_LEN");
    let names: BTreeSet<&str> = vectors.all.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names.len(), vectors.all.len(), "duplicate vector names");
}

#[test]
fn valid_vectors_decode_whole() {
    for_each(Vector::is_valid, |_, v| {
        let frame = decode_whole(v)?;
        check_frame(&frame, &v.json["frame"])?;
        let enc = Encoder::new(v.max_body_len);
        let mut out = BytesMut::new();
        enc.encode(&frame, &mut out)
            .map_err(|e| anyhow!("re-encoding the decoded frame failed: {e:?}"))?;
        ensure!(
            out[..] == v.input[..],
            "re-encoding differs from the input:\n    encoded {}\n    input   {}",
            hex(&out),
            hex(&v.input)
        );
        Ok(())
    });
}

#[test]
fn valid_vectors_decode_one_byte_at_a_time() {
    for_each(Vector::is_valid, |_, v| {
        let whole = decode_whole(v)?;
        let mut dec = Decoder::new(v.max_body_len);
        let mut buf = BytesMut::new();
        let n = v.input.len();
        for (i, byte) in v.input.iter().enumerate() {
            buf.extend_from_slice(&[*byte]);
            let fed = i + 1;
            match dec.decode(&mut buf) {
                Ok(None) if fed < n => ensure!(
                    buf.len() == fed,
                    "Ok(None) after {fed} bytes but the buffer shrank to {}",
                    buf.len()
                ),
                Ok(None) => bail!("still Ok(None) after all {n} bytes"),
                Ok(Some(frame)) => {
                    ensure!(fed == n, "got a frame after only {fed} of {n} bytes");
                    ensure!(
                        frame == whole,
                        "frame differs from the one decoded whole:\n    {frame:?}\n    {whole:?}"
                    );
                    check_frame(&frame, &v.json["frame"])?;
                    ensure!(buf.is_empty(), "{} bytes left in the buffer", buf.len());
                }
                Err(e) => bail!(
                    "decode error {} after {fed} of {n} bytes",
                    decode_error_text(&e)
                ),
            }
        }
        Ok(())
    });
}

#[test]
fn valid_vectors_decode_all_in_one_buffer() {
    let vectors = load();
    let valid: Vec<&Vector> = vectors.all.iter().filter(|v| v.is_valid()).collect();
    assert!(!valid.is_empty(), "no valid vectors");
    // One decoder for the whole stream: its limit must admit every vector.
    let limit = valid
        .iter()
        .map(|v| v.max_body_len)
        .chain([vectors.default_max_body_len])
        .max()
        .unwrap_or(DEFAULT_MAX_BODY_LEN);
    let mut buf = BytesMut::new();
    for v in &valid {
        buf.extend_from_slice(&v.input);
    }
    let mut dec = Decoder::new(limit);
    for v in &valid {
        let before = buf.len();
        let frame = match dec.decode(&mut buf) {
            Ok(Some(frame)) => frame,
            Ok(None) => panic!("vector {}: Ok(None) in the concatenated stream", v.name),
            Err(e) => panic!(
                "vector {}: decode error {} in the concatenated stream",
                v.name,
                decode_error_text(&e)
            ),
        };
        if let Err(e) = check_frame(&frame, &v.json["frame"]) {
            panic!("vector {}: in the concatenated stream: {e:#}", v.name);
        }
        assert_eq!(
            before - buf.len(),
            v.input.len(),
            "vector {}: consumed the wrong number of bytes from the stream",
            v.name
        );
    }
    assert!(
        buf.is_empty(),
        "{} bytes left after the last vector",
        buf.len()
    );
    match dec.decode(&mut buf) {
        Ok(None) => {}
        Ok(Some(frame)) => panic!("a frame from an empty buffer: {frame:?}"),
        Err(e) => panic!("error on an empty buffer: {}", decode_error_text(&e)),
    }
}

// ---------------------------------------------------------------------------
// Invalid vectors
// ---------------------------------------------------------------------------

struct Expected<'a> {
    error: &'a str,
    fatal: bool,
    status: u32,
    consumed: Option<usize>,
}

fn expected(v: &Vector) -> Result<Expected<'_>> {
    let error = v.json["error"]
        .as_str()
        .ok_or_else(|| anyhow!("\"error\" is not a string"))?;
    let fatal = v.json["fatal"]
        .as_bool()
        .ok_or_else(|| anyhow!("\"fatal\" is not a boolean"))?;
    let status = v.json["status"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| anyhow!("\"status\" is not a u32"))?;
    let consumed = match &v.json["consumed"] {
        Value::Null => None,
        c => Some(
            c.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| anyhow!("\"consumed\" is not an integer"))?,
        ),
    };
    ensure!(
        fatal == consumed.is_none(),
        "\"consumed\" must be null exactly for fatal errors"
    );
    Ok(Expected {
        error,
        fatal,
        status,
        consumed,
    })
}

fn check_error(e: &DecodeError, want: &Expected<'_>) -> Result<()> {
    ensure!(
        e.code_name() == want.error && e.is_fatal() == want.fatal && e.status().0 == want.status,
        "decode error {}, expected {} (fatal: {}, status: {})",
        decode_error_text(e),
        want.error,
        want.fatal,
        want.status
    );
    Ok(())
}

/// The number of input bytes after which the error can first be known
/// (PROTOCOL.md, receiver checks): magic bytes one by one, the version at
/// byte 4, the kind at byte 5, the other header checks once the 36 header
/// bytes are in, the body checks once the whole frame is in.
fn decisive_prefix_len(v: &Vector, want: &Expected<'_>) -> Result<usize> {
    Ok(match want.error {
        "BAD_MAGIC" => {
            1 + v
                .input
                .iter()
                .zip(MAGIC)
                .position(|(a, b)| a != b)
                .ok_or_else(|| anyhow!("BAD_MAGIC vector with a correct magic"))?
        }
        "UNSUPPORTED_VERSION" => 5,
        "UNKNOWN_KIND" => 6,
        _ if want.fatal => HEADER_LEN,
        _ => want
            .consumed
            .ok_or_else(|| anyhow!("frame error without \"consumed\""))?,
    })
}

/// The smallest valid vector: appended after invalid ones to check that
/// framing stays in sync after a frame error.
fn follower(vectors: &Vectors) -> &Vector {
    vectors
        .all
        .iter()
        .filter(|v| v.is_valid())
        .min_by_key(|v| v.input.len())
        .expect("frames.json has no valid vector")
}

#[test]
fn invalid_vectors_report_their_error_whole() {
    for_each(Vector::is_invalid, |vectors, v| {
        let want = expected(v)?;
        let next = follower(vectors);
        let next_frame = decode_whole(next).with_context(|| format!("follower {}", next.name))?;

        // The vector alone.
        let mut dec = Decoder::new(v.max_body_len);
        let mut buf = BytesMut::from(&v.input[..]);
        match dec.decode(&mut buf) {
            Ok(Some(frame)) => bail!("decoded a frame, expected {}: {frame:?}", want.error),
            Ok(None) => bail!("Ok(None), expected {}", want.error),
            Err(e) => check_error(&e, &want)?,
        }
        let removed = v.input.len() - buf.len();
        match want.consumed {
            None => ensure!(
                removed == 0,
                "fatal error but {removed} bytes were consumed"
            ),
            Some(c) => ensure!(removed == c, "consumed {removed} bytes, expected {c}"),
        }

        // The vector followed by a valid frame in the same buffer.
        let mut dec = Decoder::new(v.max_body_len);
        let mut buf = BytesMut::from(&v.input[..]);
        buf.extend_from_slice(&next.input);
        let total = buf.len();
        match dec.decode(&mut buf) {
            Ok(Some(frame)) => bail!("(with a follower) decoded a frame: {frame:?}"),
            Ok(None) => bail!("(with a follower) Ok(None), expected {}", want.error),
            Err(e) => check_error(&e, &want).context("with a following frame")?,
        }
        let removed = total - buf.len();
        match want.consumed {
            None => ensure!(
                removed == 0,
                "(with a follower) fatal error but {removed} bytes were consumed"
            ),
            Some(c) => {
                ensure!(
                    removed == c,
                    "(with a follower) consumed {removed} bytes, expected {c}"
                );
                match dec.decode(&mut buf) {
                    Ok(Some(frame)) => ensure!(
                        frame == next_frame,
                        "the frame after the skipped one decoded as {frame:?}, expected {next_frame:?}"
                    ),
                    Ok(None) => bail!("the frame after the skipped one: Ok(None)"),
                    Err(e) => bail!(
                        "the frame after the skipped one: decode error {}",
                        decode_error_text(&e)
                    ),
                }
                ensure!(
                    buf.is_empty(),
                    "{} bytes left after the follower",
                    buf.len()
                );
            }
        }
        Ok(())
    });
}

#[test]
fn invalid_vectors_report_their_error_one_byte_at_a_time() {
    for_each(Vector::is_invalid, |_, v| {
        let want = expected(v)?;
        let decisive = decisive_prefix_len(v, &want)?;
        let mut dec = Decoder::new(v.max_body_len);
        let mut buf = BytesMut::new();
        let n = v.input.len();
        for (i, byte) in v.input.iter().enumerate() {
            buf.extend_from_slice(&[*byte]);
            let fed = i + 1;
            match dec.decode(&mut buf) {
                Ok(None) => {
                    ensure!(
                        buf.len() == fed,
                        "Ok(None) after {fed} bytes but the buffer shrank to {}",
                        buf.len()
                    );
                }
                Ok(Some(frame)) => bail!("decoded a frame after {fed} of {n} bytes: {frame:?}"),
                Err(e) => {
                    check_error(&e, &want).with_context(|| format!("after {fed} of {n} bytes"))?;
                    ensure!(
                        fed == decisive,
                        "{} reported after {fed} bytes; it is decided by byte {decisive}",
                        want.error
                    );
                    let removed = fed - buf.len();
                    match want.consumed {
                        None => ensure!(removed == 0, "fatal error but {removed} bytes consumed"),
                        Some(c) => ensure!(removed == c, "consumed {removed} bytes, expected {c}"),
                    }
                    return Ok(());
                }
            }
        }
        bail!("no error after all {n} bytes, expected {}", want.error)
    });
}

// ---------------------------------------------------------------------------
// Incomplete vectors and coverage
// ---------------------------------------------------------------------------

#[test]
fn incomplete_vectors_need_more_bytes() {
    for_each(Vector::is_incomplete, |_, v| {
        // Whole, then every prefix (fed byte by byte into one buffer).
        let mut dec = Decoder::new(v.max_body_len);
        let mut buf = BytesMut::from(&v.input[..]);
        match dec.decode(&mut buf) {
            Ok(None) => ensure!(
                buf.len() == v.input.len(),
                "Ok(None) but {} bytes were consumed",
                v.input.len() - buf.len()
            ),
            Ok(Some(frame)) => bail!("decoded a frame from an incomplete input: {frame:?}"),
            Err(e) => bail!("decode error {}", decode_error_text(&e)),
        }
        let mut dec = Decoder::new(v.max_body_len);
        let mut buf = BytesMut::new();
        for (i, byte) in v.input.iter().enumerate() {
            buf.extend_from_slice(&[*byte]);
            match dec.decode(&mut buf) {
                Ok(None) => ensure!(buf.len() == i + 1, "bytes consumed on Ok(None)"),
                Ok(Some(frame)) => bail!("decoded a frame after {} bytes: {frame:?}", i + 1),
                Err(e) => bail!(
                    "decode error {} after {} bytes",
                    decode_error_text(&e),
                    i + 1
                ),
            }
        }
        Ok(())
    });
}

#[test]
fn every_decode_error_has_a_vector() {
    let vectors = load();
    let in_file: BTreeSet<&str> = vectors
        .all
        .iter()
        .filter_map(|v| v.json.get("error").and_then(Value::as_str))
        .collect();
    let in_crate: BTreeSet<&str> = DecodeError::CODE_NAMES.iter().copied().collect();
    assert_eq!(
        in_crate.len(),
        DecodeError::CODE_NAMES.len(),
        "DecodeError::CODE_NAMES has duplicates"
    );
    assert_eq!(
        in_crate.len(),
        10,
        "the protocol defines ten decode error codes"
    );
    assert_eq!(
        in_file, in_crate,
        "error names in frames.json vs DecodeError::CODE_NAMES"
    );
}
