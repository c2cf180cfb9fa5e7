//! Request bodies and response payloads per encoding name (`proto-spec/SERVICES.md` Section
//! 4.5): text typed on a command line, or bytes from a file or stdin, to a payload; and a
//! payload to what is printed.

use std::fmt;

use anyhow::{anyhow, bail, Context, Result};
use courier_rpc::service::{Cbor, Message};
use courier_rpc::Bytes;

/// A message encoding, by the name reflection gives it (admin.Methods).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `empty`: no bytes.
    Empty,
    /// `bytes`: the bytes as they are.
    Bytes,
    /// `utf8`: UTF-8 text.
    Utf8,
    /// `bool`: one byte, 0 or 1.
    Bool,
    /// `u8` ... `u128`, `i8` ... `i128`: big-endian, exactly the type's width.
    Int(Int),
    /// `cbor`: one CBOR data item.
    Cbor,
    /// `json`: one JSON text.
    Json,
    /// `custom`: a layout of the service's own.
    Custom,
    /// A name this client does not know: treated as bytes (Section 0.5).
    Unknown(String),
}

/// An integer type of the `Int` encodings: its width and signedness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Int {
    /// Width in bits: 8, 16, 32, 64 or 128.
    bits: u32,
    /// Two's complement (`i8` ...) or unsigned (`u8` ...).
    signed: bool,
}

impl Int {
    fn width(self) -> usize {
        (self.bits / 8) as usize
    }

    /// The smallest and largest value, as i128 and u128 cannot each hold both ends.
    fn range(self) -> (i128, u128) {
        if self.signed {
            let max = (1u128 << (self.bits - 1)) - 1;
            // -(max + 1), which for i128 is i128::MIN.
            (-1 - max as i128, max)
        } else {
            (0, u128::MAX >> (128 - self.bits))
        }
    }
}

impl fmt::Display for Int {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", if self.signed { 'i' } else { 'u' }, self.bits)
    }
}

impl Encoding {
    /// The encoding named `name`; any name but the library's is [`Encoding::Unknown`].
    pub fn from_name(name: &str) -> Encoding {
        let int = |signed: bool, bits: &str| {
            let bits = bits
                .parse()
                .ok()
                .filter(|b| [8, 16, 32, 64, 128].contains(b))?;
            Some(Encoding::Int(Int { bits, signed }))
        };
        let found = match name {
            "empty" => Some(Encoding::Empty),
            "bytes" => Some(Encoding::Bytes),
            "utf8" => Some(Encoding::Utf8),
            "bool" => Some(Encoding::Bool),
            "cbor" => Some(Encoding::Cbor),
            "json" => Some(Encoding::Json),
            "custom" => Some(Encoding::Custom),
            _ => match name.split_at_checked(1) {
                Some(("u", bits)) => int(false, bits),
                Some(("i", bits)) => int(true, bits),
                _ => None,
            },
        };
        found.unwrap_or_else(|| Encoding::Unknown(name.to_string()))
    }

    /// Whether a body typed on the command line is hex by default: bytes, custom and
    /// unknown encodings, which have no text form.
    fn is_binary(&self) -> bool {
        matches!(
            self,
            Encoding::Bytes | Encoding::Custom | Encoding::Unknown(_)
        )
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Encoding::Empty => f.write_str("empty"),
            Encoding::Bytes => f.write_str("bytes"),
            Encoding::Utf8 => f.write_str("utf8"),
            Encoding::Bool => f.write_str("bool"),
            Encoding::Int(int) => int.fmt(f),
            Encoding::Cbor => f.write_str("cbor"),
            Encoding::Json => f.write_str("json"),
            Encoding::Custom => f.write_str("custom"),
            Encoding::Unknown(name) => f.write_str(name),
        }
    }
}

/// Where a request body came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// The BODY argument, as typed.
    Arg(String),
    /// The bytes of `--file` or stdin.
    Read(Vec<u8>),
}

/// How the body is read, whatever the request's encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyMode {
    /// By the request's encoding (see [`encode_body`]).
    Auto,
    /// Hex digits (`--hex`).
    Hex,
    /// The bytes as they are (`--raw-body`).
    Raw,
}

/// The request payload for `body` in `encoding`.
///
/// With [`BodyMode::Auto`]: `empty` takes no body; `bytes`, `custom` and unknown names take
/// hex digits from the argument and the bytes as they are from a file or stdin; `utf8` the
/// text; `bool` `true` or `false`; an integer type a decimal number in its range; `json` a
/// JSON text (checked, sent as given); `cbor` a JSON text converted to CBOR. A missing body is
/// the empty payload where that is a valid message (`empty`, `bytes`, `custom`, `utf8`,
/// unknown), else an error.
///
/// # Errors
/// A body that is not what the encoding takes, one line saying why.
pub fn encode_body(encoding: &Encoding, body: Option<&Body>, mode: BodyMode) -> Result<Vec<u8>> {
    let Some(body) = body else {
        return match encoding {
            Encoding::Empty | Encoding::Bytes | Encoding::Custom | Encoding::Utf8 => Ok(Vec::new()),
            Encoding::Unknown(_) => Ok(Vec::new()),
            _ => bail!("the request is {encoding}: give it as BODY, with --file PATH or --stdin"),
        };
    };
    let bytes = match body {
        Body::Arg(text) => text.as_bytes(),
        Body::Read(bytes) => bytes.as_slice(),
    };
    match mode {
        BodyMode::Raw => return Ok(bytes.to_vec()),
        BodyMode::Hex => return parse_hex(text_of(bytes)?),
        BodyMode::Auto => {}
    }
    if encoding.is_binary() {
        return match body {
            Body::Arg(text) => parse_hex(text).with_context(|| {
                format!(
                    "the request is {encoding}, typed as hex (--raw-body sends the text as it is)"
                )
            }),
            Body::Read(bytes) => Ok(bytes.clone()),
        };
    }
    let text = text_of(bytes)?;
    match encoding {
        Encoding::Empty if bytes.is_empty() => Ok(Vec::new()),
        Encoding::Empty => bail!("the request is empty: this method takes no body"),
        Encoding::Utf8 => Ok(bytes.to_vec()),
        Encoding::Bool => match text.trim() {
            "true" => Ok(vec![1]),
            "false" => Ok(vec![0]),
            other => bail!("the request is bool: true or false, not {other:?}"),
        },
        Encoding::Int(int) => encode_int(*int, text.trim()),
        Encoding::Json => {
            parse_json(text, encoding)?;
            Ok(text.trim_end().as_bytes().to_vec())
        }
        Encoding::Cbor => {
            let value = parse_json(text, encoding)?;
            let mut payload = Vec::new();
            Cbor(value)
                .encode(&mut payload)
                .map_err(|err| anyhow!("the request does not encode as CBOR: {err}"))?;
            Ok(payload)
        }
        Encoding::Bytes | Encoding::Custom | Encoding::Unknown(_) => Ok(bytes.to_vec()),
    }
}

/// `bytes` as UTF-8 text.
fn text_of(bytes: &[u8]) -> Result<&str> {
    std::str::from_utf8(bytes)
        .map_err(|_| anyhow!("the body is not UTF-8 text (--raw-body sends bytes as they are)"))
}

/// One JSON text (what `cbor` and `json` requests are typed as).
fn parse_json(text: &str, encoding: &Encoding) -> Result<serde_json::Value> {
    serde_json::from_str(text).with_context(|| {
        format!("the request is {encoding}, typed as JSON, and the body is not JSON")
    })
}

/// A decimal number in `int`'s range, big-endian in its width.
fn encode_int(int: Int, text: &str) -> Result<Vec<u8>> {
    let (min, max) = int.range();
    let out_of_range =
        || anyhow!("the request is {int}: {text:?} is not a whole number from {min} to {max}");
    let wide: [u8; 16] = if int.signed {
        let n: i128 = text.parse().map_err(|_| out_of_range())?;
        if n < min || n > max as i128 {
            return Err(out_of_range());
        }
        n.to_be_bytes()
    } else {
        let n: u128 = text.parse().map_err(|_| out_of_range())?;
        if n > max {
            return Err(out_of_range());
        }
        n.to_be_bytes()
    };
    Ok(wide[16 - int.width()..].to_vec())
}

/// The bytes of hex digits, two per byte; ASCII whitespace between them and a leading `0x`
/// are ignored.
///
/// # Errors
/// A character that is not a hex digit, or an odd number of digits.
pub fn parse_hex(text: &str) -> Result<Vec<u8>> {
    let text = text.trim();
    let text = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    let digits: Vec<u8> = text
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .map(|c| {
            c.to_digit(16)
                .map(|d| d as u8)
                .ok_or_else(|| anyhow!("{c:?} is not a hex digit"))
        })
        .collect::<Result<_>>()?;
    if !digits.len().is_multiple_of(2) {
        bail!("{} hex digits: a byte takes two", digits.len());
    }
    Ok(digits
        .chunks(2)
        .map(|pair| pair[0] << 4 | pair[1])
        .collect())
}

/// Lowercase hex digits, two per byte.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What is printed for a response `payload` in `encoding`, with its final newline (none for
/// `empty`): `utf8` and `json` as they are, `bool` as `true`/`false`, integers in decimal,
/// `cbor` as JSON (indented when `pretty`, see [`cbor_to_json`]), anything else as hex. When
/// `pretty` (a terminal), control characters of `utf8` and `json` answers are escaped.
///
/// # Errors
/// A payload that is not a valid message of its encoding.
pub fn render(encoding: &Encoding, payload: &[u8], pretty: bool) -> Result<Vec<u8>> {
    let mut out = match encoding {
        Encoding::Empty if payload.is_empty() => return Ok(Vec::new()),
        Encoding::Empty => bail!("{} bytes, where none were expected", payload.len()),
        Encoding::Utf8 | Encoding::Json => {
            let text = std::str::from_utf8(payload).map_err(|_| anyhow!("not UTF-8"))?;
            if pretty {
                terminal_safe(text).into_bytes()
            } else {
                text.as_bytes().to_vec()
            }
        }
        Encoding::Bool => match payload {
            [0] => b"false".to_vec(),
            [1] => b"true".to_vec(),
            _ => bail!("not a bool (one byte, 0 or 1)"),
        },
        Encoding::Int(int) => decode_int(*int, payload)?.into_bytes(),
        Encoding::Cbor => {
            let Cbor(value) = Cbor::<ciborium::Value>::decode(Bytes::copy_from_slice(payload))?;
            let json = cbor_to_json(value);
            if pretty {
                serde_json::to_vec_pretty(&json)?
            } else {
                serde_json::to_vec(&json)?
            }
        }
        Encoding::Bytes | Encoding::Custom | Encoding::Unknown(_) => hex(payload).into_bytes(),
    };
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    Ok(out)
}

/// `text` with every control character but line feed and tab escaped (`\u{1b}`), so that a
/// server's answer cannot move the cursor or recolour a terminal.
fn terminal_safe(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\t' => c.to_string(),
            c if c.is_control() => c.escape_unicode().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// A big-endian integer of exactly `int`'s width, in decimal.
fn decode_int(int: Int, payload: &[u8]) -> Result<String> {
    if payload.len() != int.width() {
        bail!("{} bytes, where {int} takes {}", payload.len(), int.width());
    }
    let unsigned = payload.iter().fold(0u128, |n, &b| n << 8 | u128::from(b));
    if int.signed {
        // Shift the sign bit to the top, and back with sign extension.
        let shift = 128 - int.bits;
        Ok(((unsigned << shift) as i128 >> shift).to_string())
    } else {
        Ok(unsigned.to_string())
    }
}

/// A CBOR value as JSON, for printing. JSON has no byte strings, tags, non-text map keys,
/// integers beyond 64 bits, NaN or infinities, so: a byte string becomes a string of hex
/// digits, a tag its content (the tag number dropped), a map key other than text the
/// compact JSON of the key, an integer outside `i64`/`u64` a string of its digits, and a
/// float NaN or infinity the string `"NaN"`, `"Infinity"` or `"-Infinity"`.
pub fn cbor_to_json(value: ciborium::Value) -> serde_json::Value {
    use ciborium::Value as C;
    use serde_json::Value as J;
    match value {
        C::Integer(n) => {
            let n = i128::from(n);
            if let Ok(n) = i64::try_from(n) {
                J::from(n)
            } else if let Ok(n) = u64::try_from(n) {
                J::from(n)
            } else {
                J::String(n.to_string())
            }
        }
        C::Bytes(bytes) => J::String(hex(&bytes)),
        C::Float(x) => serde_json::Number::from_f64(x).map_or_else(
            || {
                let name = if x.is_nan() {
                    "NaN"
                } else if x > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                };
                J::String(name.to_string())
            },
            J::Number,
        ),
        C::Text(text) => J::String(text),
        C::Bool(b) => J::Bool(b),
        C::Tag(_, inner) => cbor_to_json(*inner),
        C::Array(items) => J::Array(items.into_iter().map(cbor_to_json).collect()),
        C::Map(entries) => J::Object(
            entries
                .into_iter()
                .map(|(key, value)| {
                    let key = match cbor_to_json(key) {
                        J::String(text) => text,
                        other => other.to_string(),
                    };
                    (key, cbor_to_json(value))
                })
                .collect(),
        ),
        // Null, and any kind a later ciborium adds.
        _ => J::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(text: &str) -> Option<Body> {
        Some(Body::Arg(text.to_string()))
    }

    fn encode(name: &str, body: Option<Body>) -> Result<Vec<u8>> {
        encode_body(&Encoding::from_name(name), body.as_ref(), BodyMode::Auto)
    }

    fn shown(name: &str, payload: &[u8]) -> String {
        let out = render(&Encoding::from_name(name), payload, false).expect("renders");
        String::from_utf8(out).expect("UTF-8 output")
    }

    #[test]
    fn names_round_trip_and_unknown_ones_are_kept() {
        for name in [
            "empty", "bytes", "utf8", "bool", "u8", "u16", "u32", "u64", "u128", "i8", "i16",
            "i32", "i64", "i128", "cbor", "json", "custom",
        ] {
            let encoding = Encoding::from_name(name);
            assert!(!matches!(encoding, Encoding::Unknown(_)), "{name}");
            assert_eq!(encoding.to_string(), name);
        }
        for name in ["u7", "i256", "u", "protobuf", "U32"] {
            assert_eq!(
                Encoding::from_name(name),
                Encoding::Unknown(name.to_string())
            );
        }
    }

    #[test]
    fn integers_are_range_checked_big_endian_of_their_width() {
        assert_eq!(encode("u32", arg("5")).unwrap(), [0, 0, 0, 5]);
        assert_eq!(encode("u8", arg(" 255\n")).unwrap(), [255]);
        assert_eq!(encode("i16", arg("-2")).unwrap(), [0xff, 0xfe]);
        assert_eq!(encode("i8", arg("-128")).unwrap(), [0x80]);
        assert_eq!(
            encode("u128", arg(&u128::MAX.to_string())).unwrap(),
            [0xff; 16]
        );
        assert_eq!(
            encode("i128", arg(&i128::MIN.to_string())).unwrap()[0],
            0x80
        );
        for (name, text) in [
            ("u8", "256"),
            ("u8", "-1"),
            ("i8", "128"),
            ("i8", "-129"),
            ("u64", "18446744073709551616"),
            ("u32", "1.5"),
            ("u32", "five"),
        ] {
            let err = encode(name, arg(text)).unwrap_err().to_string();
            assert!(
                err.contains("is not a whole number from"),
                "{name} {text}: {err}"
            );
        }
        assert!(encode("u8", arg("300"))
            .unwrap_err()
            .to_string()
            .contains("from 0 to 255"));
        assert!(encode("i16", None).is_err(), "a number must be given");
    }

    #[test]
    fn integers_print_in_decimal_with_their_sign() {
        assert_eq!(shown("u32", &[0, 0, 0, 5]), "5\n");
        assert_eq!(shown("i32", &[0xff, 0xff, 0xff, 0xfe]), "-2\n");
        assert_eq!(shown("u8", &[0xff]), "255\n");
        assert_eq!(shown("i128", &[0xff; 16]), "-1\n");
        assert_eq!(shown("u128", &[0xff; 16]), format!("{}\n", u128::MAX));
        let wrong = render(&Encoding::from_name("u32"), &[0, 5], false).unwrap_err();
        assert_eq!(wrong.to_string(), "2 bytes, where u32 takes 4");
    }

    #[test]
    fn bools_and_empty() {
        assert_eq!(encode("bool", arg("true")).unwrap(), [1]);
        assert_eq!(encode("bool", arg("false")).unwrap(), [0]);
        assert!(encode("bool", arg("yes")).is_err());
        assert_eq!(shown("bool", &[1]), "true\n");
        assert_eq!(shown("bool", &[0]), "false\n");
        assert!(render(&Encoding::Bool, &[2], false).is_err());
        assert_eq!(encode("empty", None).unwrap(), b"");
        assert!(encode("empty", arg("x")).is_err());
        assert_eq!(shown("empty", b""), "");
        assert!(render(&Encoding::Empty, b"x", false).is_err());
    }

    #[test]
    fn bytes_are_hex_when_typed_and_raw_when_read() {
        assert_eq!(encode("bytes", arg("00ff 10")).unwrap(), [0, 0xff, 0x10]);
        assert_eq!(encode("custom", arg("0x0005")).unwrap(), [0, 5]);
        assert_eq!(encode("protobuf", arg("AbCd")).unwrap(), [0xab, 0xcd]);
        let err = encode("bytes", arg("hello")).unwrap_err();
        assert!(format!("{err:#}").contains("--raw-body"), "{err:#}");
        assert!(encode("bytes", arg("abc")).is_err(), "odd number of digits");
        let read = Some(Body::Read(b"hello\n".to_vec()));
        assert_eq!(encode("bytes", read.clone()).unwrap(), b"hello\n");
        assert_eq!(encode("bytes", None).unwrap(), b"");
        // --hex and --raw-body, whatever the encoding.
        let forced = |name: &str, body: &Option<Body>, mode| {
            encode_body(&Encoding::from_name(name), body.as_ref(), mode)
        };
        assert_eq!(forced("bytes", &arg("hi"), BodyMode::Raw).unwrap(), b"hi");
        assert_eq!(forced("cbor", &arg("a1"), BodyMode::Hex).unwrap(), [0xa1]);
        assert_eq!(
            forced(
                "bytes",
                &Some(Body::Read(b"6869\n".to_vec())),
                BodyMode::Hex
            )
            .unwrap(),
            b"hi"
        );
        assert_eq!(shown("bytes", b"\x00hi"), "006869\n");
        assert_eq!(shown("custom", b""), "\n");
        assert_eq!(shown("protobuf", &[0xab]), "ab\n");
    }

    #[test]
    fn text_is_sent_and_printed_as_it_is() {
        assert_eq!(encode("utf8", arg("héllo")).unwrap(), "héllo".as_bytes());
        assert_eq!(encode("utf8", None).unwrap(), b"");
        assert!(encode("utf8", Some(Body::Read(vec![0xff]))).is_err());
        assert_eq!(shown("utf8", b"a b"), "a b\n");
        assert_eq!(shown("utf8", b"line\n"), "line\n", "no second newline");
        assert!(render(&Encoding::Utf8, &[0xff], false).is_err());
        // On a terminal, control characters from the server are shown, not obeyed.
        let hostile = b"red\x1b[31m\tbell\x07\n";
        let shown = render(&Encoding::Utf8, hostile, true).expect("renders");
        assert_eq!(shown, b"red\\u{1b}[31m\tbell\\u{7}\n");
        let piped = render(&Encoding::Json, hostile, false).expect("renders");
        assert_eq!(piped, hostile, "as sent when piped");
    }

    #[test]
    fn json_requests_are_checked_and_sent_as_typed() {
        assert_eq!(encode("json", arg("{\"a\": 1}\n")).unwrap(), b"{\"a\": 1}");
        let err = encode("json", arg("{a:1}")).unwrap_err();
        assert!(format!("{err:#}").contains("not JSON"), "{err:#}");
        assert_eq!(shown("json", b"{\"a\":1}"), "{\"a\":1}\n");
    }

    #[test]
    fn cbor_requests_are_typed_as_json_and_printed_as_json() {
        // {"a": 2, "b": 3}: a map of 2 entries, text keys, small unsigned values.
        let payload = encode("cbor", arg(r#"{"a":2,"b":3}"#)).unwrap();
        assert_eq!(payload, b"\xa2\x61a\x02\x61b\x03");
        assert_eq!(shown("cbor", &payload), "{\"a\":2,\"b\":3}\n");
        let pretty = render(&Encoding::Cbor, &payload, true).unwrap();
        assert_eq!(pretty, b"{\n  \"a\": 2,\n  \"b\": 3\n}\n");
        // Keys keep the order typed, and the order sent is the order printed.
        let unsorted = encode("cbor", arg(r#"{"b":1,"a":2}"#)).unwrap();
        assert_eq!(unsorted, b"\xa2\x61b\x01\x61a\x02");
        assert_eq!(shown("cbor", &unsorted), "{\"b\":1,\"a\":2}\n");
        assert_eq!(encode("cbor", arg("-1")).unwrap(), [0x20]);
        assert_eq!(
            encode("cbor", arg("[true,null]")).unwrap(),
            [0x82, 0xf5, 0xf6]
        );
        assert_eq!(encode("cbor", arg("\"hi\"")).unwrap(), b"\x62hi");
        let err = encode("cbor", arg("{\"a\":")).unwrap_err();
        assert!(format!("{err:#}").contains("not JSON"), "{err:#}");
        assert!(encode("cbor", None).is_err());
        // Not CBOR, or a value with bytes after it.
        assert!(render(&Encoding::Cbor, &[0xff], false).is_err());
        assert!(render(&Encoding::Cbor, &[0x01, 0x02], false).is_err());
    }

    #[test]
    fn cbor_without_a_json_form_is_shown_as_documented() {
        // {h'0102': 1.5, 1: tag 1(-2^64), "n": NaN, "i": -Infinity (half floats)}
        let mut payload = vec![0xa4];
        payload.extend_from_slice(&[0x42, 1, 2, 0xf9, 0x3e, 0x00]);
        payload.extend_from_slice(&[
            0x01, 0xc1, 0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ]);
        payload.extend_from_slice(&[0x61, b'n', 0xf9, 0x7e, 0x00]);
        payload.extend_from_slice(&[0x61, b'i', 0xf9, 0xfc, 0x00]);
        let json: serde_json::Value =
            serde_json::from_slice(&render(&Encoding::Cbor, &payload, false).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "0102": 1.5,
                "1": "-18446744073709551616",
                "n": "NaN",
                "i": "-Infinity",
            })
        );
    }

    #[test]
    fn hex_parsing() {
        assert_eq!(parse_hex("").unwrap(), b"");
        assert_eq!(
            parse_hex(" 0xDEAD beef\n").unwrap(),
            [0xde, 0xad, 0xbe, 0xef]
        );
        assert!(parse_hex("0g").is_err());
        assert!(parse_hex("é0").is_err());
        assert_eq!(hex(&[0, 0x0f, 0xf0]), "000ff0");
    }
}
